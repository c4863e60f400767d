/* vm-shell's pure parts, kept free of I/O so that they are unit-tested:
 * the command line, the escape key, and the ssh command line. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util.h"

/* Ctrl-], as in telnet: leaves the console. */
#define VMSHELL_ESCAPE 0x1d
/* The guest's sshd listens on this vsock port. */
#define VMSHELL_SSH_PORT 22u

typedef struct VmShellOptions {
    bool help;
    bool ssh;         /* --ssh: ssh over vsock instead of the serial console */
    bool root;        /* --root: as root instead of the configured user */
    const char *user; /* --user: the guest's user, when not the configured one */
    const char *vm;
    char **argv; /* with --ssh: the remote command (may be empty); into argv */
    size_t argc;
} VmShellOptions;

/* Parses argv. Returns 0 (check ->help), or -EINVAL with a one-line reason
 * in err (without the "vm-shell: " prefix). Strings point into argv. */
int vmshell_parse_args(int argc, char **argv, VmShellOptions *ret, ErrorText *err);

/* The offset of the first escape byte in buf, or -1 when there is none. */
ssize_t vmshell_find_escape(const uint8_t *buf, size_t n);

/* ssh's command line for VM (argv[0] "ssh", NULL-terminated, every string
 * its own allocation; free with strv_free()): the connection goes
 * through `proxy CID 22`, or `proxy hvsock:DEVICE:22` when the VM's vsock
 * is the qubes-lite-vsock device whose socket is DEVICE (paths quoted for
 * the shell ssh runs it with, and '%' doubled for ssh's own expansion),
 * logs in as user, and
 * runs the remote command when cmdc > 0. Nothing of the user's is
 * forwarded to the VM, whatever their ssh_config says: no agent, X11,
 * port forwarding, tunnel or environment, no connection sharing, no
 * local command. */
int vmshell_ssh_argv(const char *proxy, const char *device, unsigned cid, const char *user,
                     const char *vm, char *const *cmd, size_t cmdc, char ***ret_argv);

extern const char vmshell_usage[];
