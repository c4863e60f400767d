/* vm-shell's command line, escape key and ssh command line. */
#include "vmshell-opts.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/common/opts.h"
#include "rules.h"
#include "util.h"

const char vmshell_usage[] =
    "Usage: vm-shell VM\n"
    "       vm-shell --ssh [--root | --user USER] VM [COMMAND [ARG]...]\n"
    "Attach to the serial console of the running VM named VM, or log in to it\n"
    "with ssh over vsock.\n"
    "\n"
    "      --ssh     ssh to the VM over vsock (port 22) as the configured user,\n"
    "                running COMMAND when given (parsed by the remote shell,\n"
    "                as with ssh)\n"
    "      --root    with --ssh: log in as root\n"
    "  -u, --user USER  with --ssh: log in as USER (the VM's user by default:\n"
    "                the configured user)\n"
    "  -h, --help    show this help\n"
    "\n"
    "On the console, Ctrl-] leaves. When stdin is not a terminal, it is sent\n"
    "to the console as it is, and vm-shell leaves at its end once the console\n"
    "has been quiet for half a second (after 5 s at most).\n"
    "With --ssh, nothing is forwarded to the VM whatever ssh_config says (no\n"
    "agent, X11, ports or environment), and the VM is held in use while ssh\n"
    "runs.\n"
    "Exit status: 0 when leaving the console, ssh's with --ssh, 128+N when\n"
    "a signal N ends it, 255 for vm-shell's own errors.\n";

int vmshell_parse_args(int argc, char **argv, VmShellOptions *ret, ErrorText *err) {
    enum { ARG_SSH = 0x100, ARG_ROOT };
    static const struct option longopts[] = {
        {"ssh", no_argument, NULL, ARG_SSH},
        {"root", no_argument, NULL, ARG_ROOT},
        {"user", required_argument, NULL, 'u'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    VmShellOptions o = {0};
    int c;

    /* Keep getopt quiet: errors are reported once, in our own words. '+':
     * options after VM belong to the remote command. */
    opterr = 0;
    optind = 0;
    while ((c = getopt_long(argc, argv, "+:hu:", longopts, NULL)) >= 0) {
        switch (c) {
        case ARG_SSH:
            o.ssh = true;
            break;
        case ARG_ROOT:
            o.root = true;
            break;
        case 'u':
            if (!user_name_valid(optarg)) {
                return error_set(err, -EINVAL, "--user: '%.32s' is not a user name", optarg);
            }
            o.user = optarg;
            break;
        case 'h':
            o.help = true;
            *ret = o;
            return 0;
        default:
            return opts_error(err, c, argv);
        }
    }
    if (o.root && !o.ssh) {
        return error_set(err, -EINVAL, "--root goes with --ssh (the console has no user)");
    }
    if (o.user && !o.ssh) {
        return error_set(err, -EINVAL, "--user goes with --ssh (the console has no user)");
    }
    if (o.root && o.user) {
        return error_set(err, -EINVAL, "--root and --user exclude each other");
    }
    if (optind >= argc) {
        return error_set(err, -EINVAL, "no VM given (see --help)");
    }
    o.vm = argv[optind++];
    if (optind < argc) {
        if (!o.ssh) {
            return error_set(err, -EINVAL, "a command needs --ssh (the console takes none)");
        }
        if (argv[optind][0] == '\0') {
            return error_set(err, -EINVAL, "the command is empty");
        }
        o.argv = argv + optind;
        o.argc = (size_t)(argc - optind);
    }
    *ret = o;
    return 0;
}

ssize_t vmshell_find_escape(const uint8_t *buf, size_t n) {
    const uint8_t *p = memchr(buf, VMSHELL_ESCAPE, n);
    return p ? (ssize_t)(p - buf) : -1;
}

/* 'path' for sh -c, with ' as '\'', and every % doubled: ssh expands
 * %-tokens in ProxyCommand before the shell sees it. */
static char *proxy_quote(const char *path) {
    if (!path) {
        return NULL;
    }
    size_t n = 2;
    for (const char *p = path; *p; p++) {
        n += *p == '\'' ? 4 : *p == '%' ? 2 : 1;
    }
    char *q = malloc(n + 1), *o = q;
    if (!q) {
        return NULL;
    }
    *o++ = '\'';
    for (const char *p = path; *p; p++) {
        if (*p == '\'') {
            memcpy(o, "'\\''", 4);
            o += 4;
        } else if (*p == '%') {
            *o++ = '%';
            *o++ = '%';
        } else {
            *o++ = *p;
        }
    }
    *o++ = '\'';
    *o = '\0';
    return q;
}

int vmshell_ssh_argv(const char *proxy, const char *device, unsigned cid, const char *user,
                     const char *vm, char *const *cmd, size_t cmdc, char ***ret_argv) {
    _cleanup_free_ char *quoted = proxy_quote(proxy), *address = NULL, *target = NULL;
    char **v;
    size_t n = 0, max;

    if (device) {
        if (asprintf(&address, "hvsock:%s:%u", device, VMSHELL_SSH_PORT) < 0) {
            return -ENOMEM;
        }
        target = proxy_quote(address);
    } else if (asprintf(&target, "%u %u", cid, VMSHELL_SSH_PORT) < 0) {
        target = NULL;
    }
    if (!quoted || !target) {
        return -ENOMEM;
    }
    /* ssh, 18 * (-o VALUE), -l USER, the host, --, the command, NULL. */
    if (__builtin_add_overflow(cmdc, 1 + 36 + 2 + 1 + 1 + 1, &max)) {
        return -ENOMEM;
    }
    v = calloc(max, sizeof(char *));
    if (!v) {
        return -ENOMEM;
    }
#define ADD(...)                                                                                   \
    do {                                                                                           \
        if (asprintf(&v[n], __VA_ARGS__) < 0) {                                                    \
            v[n] = NULL;                                                                           \
            strv_free(v);                                                                          \
            return -ENOMEM;                                                                        \
        }                                                                                          \
        n++;                                                                                       \
    } while (0)
    ADD("ssh");
    ADD("-o");
    ADD("ProxyCommand=%s %s", quoted, target);
    /* The host name ssh shows and would look keys up under. */
    ADD("-o");
    ADD("HostKeyAlias=qubes-lite-%s", vm);
    /* The vsock CID is the VM's identity: the host kernel delivers a
     * connection to CID N only to the VM its host agent started with that
     * CID, so nothing on a network can stand in for it. Its host key adds
     * nothing to that and changes whenever the VM's root is fresh, so it
     * is neither checked nor recorded. */
    ADD("-o");
    ADD("StrictHostKeyChecking=no");
    ADD("-o");
    ADD("UserKnownHostsFile=/dev/null");
    ADD("-o");
    ADD("GlobalKnownHostsFile=/dev/null");
    ADD("-o");
    ADD("CheckHostIP=no");
    /* Not "Permanently added ... to the list of known hosts" every time. */
    ADD("-o");
    ADD("LogLevel=ERROR");
    /* The VM is not trusted: whatever the user's ssh_config says (options
     * on the command line come first, and ssh keeps the first value it
     * gets), it gets nothing of the host. No agent (it could sign with
     * the user's keys for as long as the session lasts), no X11, no port
     * forwarding of any kind (ClearAllForwardings drops the configured
     * ones), no tunnel device, no environment (SendEnv=-* drops the
     * configured patterns); no ControlMaster socket that would let later
     * sessions ride this one, and no LocalCommand run on the host. */
    static const char *const forced[] = {
        "ForwardAgent=no",
        "ForwardX11=no",
        "ForwardX11Trusted=no",
        "ClearAllForwardings=yes",
        "Tunnel=no",
        "ControlMaster=no",
        "ControlPath=none",
        "ControlPersist=no",
        "PermitLocalCommand=no",
        "SendEnv=-*",
    };
    for (size_t i = 0; i < ELEMENTSOF(forced); i++) {
        ADD("-o");
        ADD("%s", forced[i]);
    }
    ADD("-l");
    ADD("%s", user);
    ADD("qubes-lite-%s", vm);
    if (cmdc > 0) {
        ADD("--");
        for (size_t i = 0; i < cmdc; i++) {
            ADD("%s", cmd[i]);
        }
    }
#undef ADD
    v[n] = NULL;
    *ret_argv = v;
    return 0;
}
