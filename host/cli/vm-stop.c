/* vm-stop VM: stop the VM cleanly: the guest powers off, else the VMM's
 * stop command, else it is killed (the host agent's steps). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "hostctl.h"
#include "util.h"

/* Longer than the host agent's whole default sequence (30 s for the
 * guest, 10 s for the stop command, 5 s after SIGKILL). */
#define TIMEOUT_DEFAULT_S 120
#define TIMEOUT_MAX_S (24 * 3600)

static void help(void) {
    printf("Usage: vm-stop [--timeout SECS] VM\n"
           "Stop VM: ask the guest to power off, then the VMM to stop, then kill it,\n"
           "each step with a timeout, and say which one worked.\n"
           "\n"
           "  --timeout SECS   give up waiting after this long (default %d)\n"
           "  -h, --help       show this help\n"
           "\n"
           "Exit status: 0 when the VM is stopped (a VM that was not running too),\n"
           "1 with one line on stderr otherwise.\n",
           TIMEOUT_DEFAULT_S);
}

int main(int argc, char **argv) {
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"timeout", required_argument, NULL, 't'},
        {0},
    };
    unsigned long long timeout_s = TIMEOUT_DEFAULT_S;
    static const char *const how[] = {
        [STOP_NOT_RUNNING] = "was not running",
        [STOP_GUEST_POWEROFF] = "stopped: the guest powered off",
        [STOP_VMM_STOP] = "stopped: the guest did not power off, the VMM stopped on request",
        [STOP_KILLED] = "stopped: killed, it did not stop on request",
    };
    ErrorText err;
    char notice[128];
    int fd, c, r;
    Msg untrusted_reply;

    client_setup("vm-stop", EXIT_FAILURE);
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) >= 0) {
        if (c == 'h') {
            help();
            return EXIT_SUCCESS;
        }
        if (c == 't') {
            if (parse_uint(optarg, 1, TIMEOUT_MAX_S, &timeout_s) < 0) {
                client_fail("--timeout wants seconds from 1 to %d, not '%s'", TIMEOUT_MAX_S,
                            optarg);
            }
            continue;
        }
        client_bad_option(c, argv);
    }
    const char *vm = hostctl_vm_operand(argc, argv);
    r = hostctl_connect(vm, HOSTCTL_HELLO_TIMEOUT_MS, &fd, &err);
    if (r == -ENOENT || r == -ECONNREFUSED) {
        /* Nobody listens: no host agent, so no VM. */
        printf("VM '%s' is not running\n", vm);
        return EXIT_SUCCESS;
    }
    if (r < 0) {
        client_fail("%s", err.message);
    }
    snprintf(notice, sizeof(notice), "stopping VM '%s'...", vm);
    Msg req = {.type = MSG_HOST_STOP};
    r = hostctl_request(fd, &req, (int)timeout_s * 1000, notice, HOSTCTL_NOTICE_MS,
                        &untrusted_reply);
    if (r == -ETIMEDOUT) {
        client_fail("VM '%s' did not stop within %llu s (its host agent may still be at it)", vm,
                    timeout_s);
    }
    hostctl_check_reply(vm, r, &untrusted_reply, MSG_HOST_STOPPED);
    /* Checked: a HostStopped, whose method the decoder bounded. */
    const MsgHostStopped *stopped = &untrusted_reply.host_stopped;
    if (stopped->method == STOP_NOT_RUNNING) {
        printf("VM '%s' is not running\n", vm);
    } else {
        printf("VM '%s' %s (%" PRIu64 ".%01" PRIu64 " s)\n", vm, how[stopped->method],
               stopped->stop_ms / 1000, stopped->stop_ms % 1000 / 100);
    }
    msg_done(&untrusted_reply);
    close(fd);
    return EXIT_SUCCESS;
}
