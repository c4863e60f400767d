/* The vm-* commands' side of the host agent's socket: see hostctl.h. */
#include "hostctl.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "host/common/paths.h"
#include "rules.h"
#include "util.h"

#define SOFTWARE "vm-commands 0.1"

const char *hostctl_state_name(VmState s) {
    static const char *const names[] = {
        [VM_STOPPED] = "stopped",
        [VM_STARTING] = "starting",
        [VM_RUNNING] = "running",
        [VM_STOPPING] = "stopping",
    };
    return (unsigned)s < ELEMENTSOF(names) ? names[s] : "unknown";
}

void hostctl_require_vm(const char *vm) {
    if (!client_vm_configured(vm)) {
        client_fail_unknown_vm(vm);
    }
}

const char *hostctl_vm_operand(int argc, char **argv) {
    if (optind + 1 != argc) {
        client_fail(optind >= argc ? "no VM given (see --help)" : "one VM only (see --help)");
    }
    hostctl_require_vm(argv[optind]);
    return argv[optind];
}

static int name_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void hostctl_names_free(char **names, size_t n) {
    for (size_t i = 0; i < n; i++) {
        free(names[i]);
    }
    free(names);
}

int hostctl_list_vms(char ***ret_names, size_t *ret_n) {
    ConfigVmFile *files = NULL;
    char **names;
    size_t n_files = 0, n = 0;
    int r;

    r = config_vm_files(config_dir(), &files, &n_files);
    if (r < 0) {
        return r;
    }
    names = calloc(n_files + 1, sizeof(char *));
    for (size_t i = 0; names && i < n_files; i++) {
        /* A regular file: what client_vm_configured() calls a VM. */
        if (!files[i].name[0] || !client_vm_configured(files[i].name)) {
            continue;
        }
        if (!(names[n] = strdup(files[i].name))) {
            hostctl_names_free(names, n);
            names = NULL;
            break;
        }
        n++;
    }
    config_vm_files_free(files, n_files);
    if (!names) {
        return -ENOMEM;
    }
    /* By VM name, not file name: "a" before "a-b". */
    if (n > 0) {
        qsort(names, n, sizeof(char *), name_cmp);
    }
    *ret_names = names;
    *ret_n = n;
    return 0;
}

int hostctl_socket_path(const char *vm, char *buf, size_t size) {
    _cleanup_free_ char *path = config_vm_runtime_file(vm, CONFIG_RUNTIME_COMMAND);
    if (!path) {
        return -EINVAL;
    }
    int n = snprintf(buf, size, "%s", path);
    return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* hostctl_connect()'s words for what client_hello() found. */
static int hello_failed(const char *vm, int r, ClientHelloFailure failure, Msg *untrusted_reply,
                        ErrorText *err) {
    switch (failure) {
    case CLIENT_HELLO_SEND:
        return error_set(err, r, "cannot talk to the host agent of VM '%s': %s", vm, strerror(-r));
    case CLIENT_HELLO_TIMEOUT:
        return error_set(err, r, "the host agent of VM '%s' does not answer", vm);
    case CLIENT_HELLO_RECV:
        break;
    case CLIENT_HELLO_ERROR:
        client_error_text(vm, untrusted_reply, err->message, sizeof(err->message));
        msg_done(untrusted_reply);
        return -EACCES;
    case CLIENT_HELLO_NOT_HELLO:
    case CLIENT_HELLO_VERSION:
        msg_done(untrusted_reply);
        return error_set(err, -EPROTO, "the host agent of VM '%s' speaks another protocol", vm);
    }
    return error_set(err, -EPIPE, "the host agent of VM '%s' closed the connection", vm);
}

int hostctl_connect(const char *vm, int timeout_ms, int *ret_fd, ErrorText *err) {
    char path[PATH_MAX];
    _cleanup_close_ int fd = -EBADF;
    ClientHelloFailure failure;
    Msg untrusted;
    int r;

    r = hostctl_socket_path(vm, path, sizeof(path));
    if (r == 0) {
        r = client_unix_connect(path, &fd);
    }
    if (r == -ENAMETOOLONG) {
        return error_set(err, r, "the socket path of VM '%s' is too long", vm);
    }
    if (r < 0) {
        char why[PATH_MAX + 256];
        client_unreachable_text(vm, path, r, why, sizeof(why));
        return error_set(err, r, "%s", why);
    }
    r = client_hello(fd, SOFTWARE, NULL, timeout_ms, &failure, &untrusted);
    if (r < 0) {
        return hello_failed(vm, r, failure, &untrusted, err);
    }
    *ret_fd = TAKE_FD(fd);
    return 0;
}

int hostctl_request(int fd, const Msg *req, int timeout_ms, const char *notice, int notice_ms,
                    Msg *ret_reply) {
    int r = wire_send(fd, req);
    if (r >= 0) {
        r = client_wait_readable(fd, timeout_ms, notice, notice_ms);
    }
    return r < 0 ? r : wire_recv(fd, ret_reply, NULL);
}

void hostctl_check_reply(const char *vm, int r, const Msg *untrusted, MsgType want) {
    if (r < 0) {
        client_fail("the host agent of VM '%s' closed the connection: %s", vm, strerror(-r));
    }
    if (untrusted->type == MSG_ERROR) {
        client_fail_error(vm, untrusted);
    }
    if (untrusted->type != want) {
        client_fail("protocol error: the host agent sent %s", msg_type_name(untrusted->type));
    }
}
