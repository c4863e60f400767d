/* vm-switch's command line: its own options (the directories, --user,
 * --stats, the internal --child) on top of what every sandboxed device
 * program takes (switch/sandbox/cli.h); one function per concern (the
 * usage text, one option's value, the options that must come together). */
#include "options.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "confine.h"
#include "main-stats.h"
#include "rules.h"
#include "switch/sandbox/cli.h"
#include "util.h"

enum {
    OPT_CONFIG_DIR = 256,
    OPT_SOCKET_DIR,
    OPT_USER,
    OPT_STATS,
    OPT_CHILD,
};

static const struct option longopts[] = {
    {"config-dir", required_argument, NULL, OPT_CONFIG_DIR},
    {"socket-dir", required_argument, NULL, OPT_SOCKET_DIR},
    {"user", required_argument, NULL, OPT_USER},
    {"stats", no_argument, NULL, OPT_STATS},
    {"child", required_argument, NULL, OPT_CHILD}, /* internal */
    {0},
};

static void usage(FILE *f) {
    fprintf(f, "Usage: " PROGRAM " --config-dir DIR --socket-dir DIR [--log-level LEVEL]\n"
               "                 [--no-sandbox] [--seccomp-mode kill|trap|log|disabled]\n"
               "                 [--user NAME]\n"
               "       " PROGRAM " --stats --socket-dir DIR\n"
               "       " PROGRAM " --print-seccomp supervisor|main|child\n"
               "\n"
               "The L2 switch between the VMs of one network: one vhost-user-net backend\n"
               "process per VM (DIR/<vm>.conf), listening on <socket dir>/<vm>.sock.\n"
               "\n"
               "  --config-dir DIR     the <vm>.conf files (watched: changes apply at once)\n"
               "  --socket-dir DIR     where the vhost-user sockets and " STATS_FILE " live\n"
               "  --log-level LEVEL    error, warning, info (default) or debug\n"
               "  --no-sandbox         run without namespaces and seccomp (debugging)\n"
               "  --seccomp-mode MODE  kill (default), trap, log or disabled\n"
               "  --user NAME          started as root: the unprivileged user to run as\n"
               "  --stats              print the per-VM counters of a running switch\n"
               "  --print-seccomp ROLE print a process role's system call allowlist\n"
               "  --help               this text\n");
}

/* One of vm-switch's own options and its value into o (an Options);
 * values are checked here, one by one. */
static void option_set(void *ctx, int opt, const char *arg) {
    Options *o = ctx;
    switch (opt) {
    case OPT_CONFIG_DIR:
        o->config_dir = arg;
        break;
    case OPT_SOCKET_DIR:
        o->socket_dir = arg;
        break;
    case OPT_USER:
        if (!user_name_valid(arg)) {
            cli_usage_error("bad user name '%s'", arg);
        }
        o->user = arg;
        break;
    case OPT_STATS:
        o->stats = true;
        break;
    case OPT_CHILD: {
        unsigned long long fd;
        if (parse_uint(arg, 0, CHILD_FD_MAX, &fd) < 0) {
            cli_usage_error("bad --child '%s'", arg);
        }
        o->child_fd = (int)fd;
        break;
    }
    }
}

/* What each way of running needs besides its options. */
static void options_check(const Options *o) {
    if (o->child_fd >= 0 || o->print_filter) {
        return;
    }
    if (!o->socket_dir) {
        cli_usage_error("--socket-dir is required");
    }
    if (!o->stats && !o->config_dir) {
        cli_usage_error("--config-dir is required");
    }
}

static const CliProgram program = {
    .name = PROGRAM,
    .usage = usage,
    .role = confine_role,
    .roles = "supervisor, main, child",
};

void options_parse(int argc, char **argv, Options *ret) {
    CliOptions common;
    *ret = (Options){.child_fd = -1};
    cli_parse(&program, argc, argv, longopts, option_set, ret, &common);
    ret->log_level = common.log_level;
    ret->no_sandbox = common.no_sandbox;
    ret->seccomp_mode = common.seccomp_mode;
    ret->print_filter = common.print_filter;
    options_check(ret);
}
