/* The vm-* commands' side of the host agent's socket: see hostctl.h. */
#include "hostctl.h"

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "host/common/paths.h"
#include "rules.h"
#include "util.h"

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
        client_fail("no VM named '%s' (no %s/vms/%s.json)", vm, config_dir(),
                    vm_name_valid(vm) ? vm : "NAME");
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
    int n = snprintf(buf, size, "%s/%s.sock", config_runtime_dir(), vm);
    return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* Waits until fd is readable; -ETIMEDOUT after timeout_ms (-1: never). */
static int wait_readable(int fd, int timeout_ms) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r;
    do {
        r = poll(&p, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        return -errno;
    }
    return r == 0 ? -ETIMEDOUT : 0;
}

static int recv_reply(int fd, int timeout_ms, Msg *ret) {
    int r = wait_readable(fd, timeout_ms);
    if (r < 0) {
        return r;
    }
    return wire_recv(fd, ret, NULL);
}

int hostctl_connect(const char *vm, int timeout_ms, int *ret_fd, ErrorText *err) {
    char path[4096];
    _cleanup_close_ int fd = -EBADF;
    Msg m;
    int r;

    r = hostctl_socket_path(vm, path, sizeof(path));
    if (r == 0) {
        r = client_unix_connect(path, &fd);
    }
    if (r == -ENAMETOOLONG) {
        return error_set(err, r, "the socket path of VM '%s' is too long", vm);
    }
    if (r < 0) {
        return error_set(err, r, "cannot reach the host agent of VM '%s' at %s: %s", vm, path,
                         strerror(-r));
    }
    Msg hello = msg_hello("vm-commands 0.1");
    r = wire_send(fd, &hello);
    if (r < 0 && r != -EPIPE && r != -ECONNRESET) {
        return error_set(err, r, "cannot talk to the host agent of VM '%s': %s", vm, strerror(-r));
    }
    /* A refused peer still gets the agent's Error: read it. */
    r = recv_reply(fd, timeout_ms, &m);
    if (r < 0) {
        return error_set(err, r == -ETIMEDOUT ? r : -EPIPE, "the host agent of VM '%s' %s", vm,
                         r == -ETIMEDOUT ? "does not answer" : "closed the connection");
    }
    if (m.type == MSG_ERROR) {
        client_error_text(vm, &m, err->message, sizeof(err->message));
        msg_done(&m);
        return -EACCES;
    }
    if (m.type != MSG_HELLO || wire_check_hello(&m) < 0) {
        msg_done(&m);
        return error_set(err, -EPROTO, "the host agent of VM '%s' speaks another protocol", vm);
    }
    msg_done(&m);
    *ret_fd = TAKE_FD(fd);
    return 0;
}

int hostctl_request(int fd, const Msg *req, int timeout_ms, const char *notice, int notice_ms,
                    Msg *ret_reply) {
    int r = wire_send(fd, req);
    if (r < 0) {
        return r;
    }
    if (notice) {
        r = wait_readable(fd, timeout_ms >= 0 ? MIN(notice_ms, timeout_ms) : notice_ms);
        if (r == -ETIMEDOUT) {
            fprintf(stderr, "%s: %s\n", client_program(), notice);
            if (timeout_ms >= 0) {
                timeout_ms = timeout_ms > notice_ms ? timeout_ms - notice_ms : 0;
            }
        } else if (r < 0) {
            return r;
        }
    }
    return recv_reply(fd, timeout_ms, ret_reply);
}

void hostctl_check_reply(const char *vm, int r, const Msg *reply, MsgType want) {
    if (r < 0) {
        client_fail("the host agent of VM '%s' closed the connection: %s", vm, strerror(-r));
    }
    if (reply->type == MSG_ERROR) {
        client_fail_error(vm, reply);
    }
    if (reply->type != want) {
        client_fail("protocol error: the host agent sent %s", msg_type_name(reply->type));
    }
}
