/* vm-start-debug VM [HOST-AGENT-OPTION]...: run the VM with the VMM in
 * the foreground, its output and serial console on this terminal: execs
 * qubes-lite-host-agent --vm VM --foreground, which still serves the VM's
 * command socket (vm-run works) and exits with the VMM's status. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "host/common/paths.h"
#include "hostctl.h"
#include "util.h"

#define HOST_AGENT "qubes-lite-host-agent"

static void help(void) {
    printf("Usage: vm-start-debug VM [HOST-AGENT-OPTION]...\n"
           "Run VM with its VMM in the foreground: the VMM's output and the serial\n"
           "console are on this terminal, vm-run still works, and the exit status\n"
           "is the VMM's (128+N when killed by signal N), 1 when the host agent\n"
           "fails (a bad configuration or option), 255 for vm-start-debug's own\n"
           "errors. Refused while anything listens on the VM's socket (its host\n"
           "agent, or its systemd socket unit).\n"
           "Options after VM go to %s (e.g. --log-level debug).\n"
           "\n"
           "  -h, --help   show this help\n",
           HOST_AGENT);
}

int main(int argc, char **argv) {
    ErrorText err;
    int fd, r;

    /* Our own errors are told apart from the VMM's exit status. */
    client_setup("vm-start-debug", CLIENT_EXIT_OWN_ERROR);
    /* Only our own options before VM; everything after it is passed on. */
    if (argc >= 2 && (streq(argv[1], "-h") || streq(argv[1], "--help"))) {
        help();
        return EXIT_SUCCESS;
    }
    if (argc < 2) {
        client_fail("no VM given (see --help)");
    }
    if (argv[1][0] == '-') {
        client_fail("unknown option '%s' (see --help)", argv[1]);
    }
    const char *vm = argv[1];
    hostctl_require_vm(vm);

    /* Anything that answers on the VM's socket owns it: a host agent
     * (with the VM up or not) or systemd's socket unit, whose socket file
     * the foreground agent must not replace. */
    r = hostctl_connect(vm, HOSTCTL_STATUS_TIMEOUT_MS, &fd, &err);
    if (r >= 0) {
        Msg req = {.type = MSG_HOST_STATUS_REQUEST}, untrusted_reply;
        r = hostctl_request(fd, &req, HOSTCTL_STATUS_TIMEOUT_MS, NULL, 0, &untrusted_reply);
        close(fd);
        if (r >= 0 && untrusted_reply.type == MSG_HOST_STATUS &&
            untrusted_reply.host_status.state != VM_STOPPED) {
            client_fail("VM '%s' is %s: stop it first (vm-stop %s)", vm,
                        hostctl_state_name(untrusted_reply.host_status.state), vm);
        }
        if (r >= 0) {
            msg_done(&untrusted_reply);
        }
        client_fail("the host agent of VM '%s' (or its socket unit) listens on its socket: "
                    "stop it first (systemctl stop qubes-lite-%s.socket)",
                    vm, vm);
    } else if (r != -ENOENT && r != -ECONNREFUSED) {
        client_fail("%s", err.message);
    }

    /* The host agent beside this program (a build tree, or an installed
     * prefix), else from PATH. */
    char *agent = config_program_or_path(HOST_AGENT);
    size_t extra = (size_t)argc - 2;
    char **args = calloc(extra + 5, sizeof(char *));
    if (!agent || !args) {
        client_fail("out of memory");
    }
    args[0] = agent;
    args[1] = "--vm";
    args[2] = (char *)vm;
    args[3] = "--foreground";
    for (size_t i = 0; i < extra; i++) {
        args[4 + i] = argv[2 + i];
    }
    execvp(agent, args);
    client_fail("cannot execute %s: %s", agent, strerror(errno));
}
