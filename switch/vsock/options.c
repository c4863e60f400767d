/* qubes-lite-vsock's command line (options.h): its own options on top of
 * what every sandboxed device program takes (switch/sandbox/cli.h). */
#include "options.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "confine.h"
#include "util.h"

enum {
    OPT_SOCKET = 256,
    OPT_UDS,
    OPT_CID,
    OPT_GROUP,
};

static const struct option longopts[] = {
    {"socket", required_argument, NULL, OPT_SOCKET},
    {"uds-path", required_argument, NULL, OPT_UDS},
    {"guest-cid", required_argument, NULL, OPT_CID},
    {"uds-group", required_argument, NULL, OPT_GROUP},
    {0},
};

static void usage(FILE *f) {
    fprintf(f, "Usage: " PROGRAM " --socket VHOST_SOCKET --uds-path PATH --guest-cid CID\n"
               "                         [--uds-group GROUP] [--no-sandbox]\n"
               "                         [--seccomp-mode kill|trap|log|disabled]\n"
               "                         [--log-level LEVEL]\n"
               "       " PROGRAM " --print-seccomp supervisor|main\n"
               "\n"
               "One VM's virtio-vsock device over vhost-user: the VMM connects to\n"
               "VHOST_SOCKET. Host programs reach the guest's port P by connecting to the\n"
               "unix socket PATH and writing \"CONNECT P\\n\" (answered \"OK <host-port>\\n\");\n"
               "the guest's connections to the host's port P go to the unix socket PATH_P.\n"
               "\n"
               "  --socket VHOST_SOCKET  the vhost-user socket to listen on (mode 0600)\n"
               "  --uds-path PATH        the host side's unix socket (mode 0600)\n"
               "  --guest-cid CID        the guest's CID (3 to 4294967294)\n"
               "  --uds-group GROUP      PATH belongs to GROUP, mode 0660: its members may\n"
               "                         connect (ports above 1023)\n"
               "  --no-sandbox           run without namespaces and seccomp (debugging)\n"
               "  --seccomp-mode MODE    kill (default), trap, log or disabled\n"
               "  --log-level LEVEL      error, warning, info (default) or debug\n"
               "  --print-seccomp ROLE   print a process role's system call allowlist\n"
               "  --help                 this text\n");
}

/* One of the device's own options and its value into o (an Options). */
static void option_set(void *ctx, int opt, const char *arg) {
    Options *o = ctx;
    unsigned long long v;
    switch (opt) {
    case OPT_SOCKET:
        o->socket = arg;
        break;
    case OPT_UDS:
        o->uds_path = arg;
        break;
    case OPT_CID:
        /* 0, 1 and 2 are the hypervisor, the local CID and the host; the
         * highest is "any". */
        if (parse_uint(arg, 3, UINT32_MAX - 1, &v) < 0) {
            cli_usage_error("bad --guest-cid '%s' (3 to 4294967294)", arg);
        }
        o->guest_cid = v;
        break;
    case OPT_GROUP:
        if (!*arg) {
            cli_usage_error("bad --uds-group '' (a group name or number)");
        }
        o->uds_group = arg;
        break;
    }
}

static const CliProgram program = {
    .name = PROGRAM,
    .usage = usage,
    .role = vsock_confine_role,
    .roles = "supervisor, main",
};

void options_parse(int argc, char **argv, Options *ret) {
    *ret = (Options){0};
    cli_parse(&program, argc, argv, longopts, option_set, ret, &ret->common);
    if (ret->common.print_filter) {
        return;
    }
    if (!ret->socket) {
        cli_usage_error("--socket is required");
    }
    if (!ret->uds_path) {
        cli_usage_error("--uds-path is required");
    }
    if (ret->guest_cid == 0) {
        cli_usage_error("--guest-cid is required");
    }
}
