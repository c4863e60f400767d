/* vm-start VM: start the VM unless it runs, and wait until its guest
 * agent answers. */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "hostctl.h"
#include "util.h"

#define NOTICE_MS 1000

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
    Msg reply;

    client_setup("vm-start", EXIT_FAILURE);
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) >= 0) {
        if (c == 'h') {
            help();
            return EXIT_SUCCESS;
        }
        fprintf(stderr, "Try 'vm-start --help'.\n");
        return EXIT_FAILURE;
    }
    const char *vm = hostctl_vm_operand(argc, argv);
    r = hostctl_connect(vm, 30000, &fd, &err);
    if (r < 0) {
        client_fail("%s", err.message);
    }
    snprintf(notice, sizeof(notice), "waiting for VM '%s' to start...", vm);
    Msg req = {.type = MSG_HOST_START};
    r = hostctl_request(fd, &req, -1, notice, NOTICE_MS, &reply);
    hostctl_check_reply(vm, r, &reply, MSG_HOST_STATUS);
    if (reply.host_status.state != VM_RUNNING) {
        client_fail("VM '%s' is %s, not running", vm, hostctl_state_name(reply.host_status.state));
    }
    msg_done(&reply);
    close(fd);
    return EXIT_SUCCESS;
}
