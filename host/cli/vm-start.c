/* vm-start VM: start the VM unless it runs, and wait until its guest
 * agent answers. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "hostctl.h"
#include "util.h"

static void help(void) {
    printf("Usage: vm-start VM\n"
           "Start VM, unless it runs, and wait until its guest agent answers.\n"
           "\n"
           "  -h, --help   show this help\n"
           "\n"
           "Exit status: 0 when the VM runs, 1 with one line on stderr otherwise.\n");
}

int main(int argc, char **argv) {
    static const struct option longopts[] = {{"help", no_argument, NULL, 'h'}, {0}};
    ErrorText err;
    char notice[128];
    int fd, c, r;
    Msg untrusted_reply;

    client_setup("vm-start", EXIT_FAILURE);
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":h", longopts, NULL)) >= 0) {
        if (c == 'h') {
            help();
            return EXIT_SUCCESS;
        }
        client_bad_option(c, argv);
    }
    const char *vm = hostctl_vm_operand(argc, argv);
    r = hostctl_connect(vm, HOSTCTL_HELLO_TIMEOUT_MS, &fd, &err);
    if (r < 0) {
        client_fail("%s", err.message);
    }
    snprintf(notice, sizeof(notice), "waiting for VM '%s' to start...", vm);
    Msg req = {.type = MSG_HOST_START};
    r = hostctl_request(fd, &req, -1, notice, HOSTCTL_NOTICE_MS, &untrusted_reply);
    hostctl_check_reply(vm, r, &untrusted_reply, MSG_HOST_STATUS);
    const MsgHostStatus *status = &untrusted_reply.host_status; /* checked: a HostStatus */
    if (status->state != VM_RUNNING) {
        client_fail("VM '%s' is %s, not running", vm, hostctl_state_name(status->state));
    }
    msg_done(&untrusted_reply);
    close(fd);
    return EXIT_SUCCESS;
}
