/* vm-switch's command line: one function per concern (the usage text, one
 * option's value, the options that must come together). */
#include "options.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "confine.h"
#include "log.h"
#include "main-stats.h"
#include "rules.h"
#include "util.h"

enum {
    OPT_CONFIG_DIR = 256,
    OPT_SOCKET_DIR,
    OPT_LOG_LEVEL,
    OPT_NO_SANDBOX,
    OPT_SECCOMP,
    OPT_USER,
    OPT_STATS,
    OPT_PRINT_SECCOMP,
    OPT_CHILD,
    OPT_HELP
};

static const struct option longopts[] = {
    {"config-dir", required_argument, NULL, OPT_CONFIG_DIR},
    {"socket-dir", required_argument, NULL, OPT_SOCKET_DIR},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"no-sandbox", no_argument, NULL, OPT_NO_SANDBOX},
    {"seccomp-mode", required_argument, NULL, OPT_SECCOMP},
    {"user", required_argument, NULL, OPT_USER},
    {"stats", no_argument, NULL, OPT_STATS},
    {"print-seccomp", required_argument, NULL, OPT_PRINT_SECCOMP},
    {"child", required_argument, NULL, OPT_CHILD}, /* internal */
    {"help", no_argument, NULL, OPT_HELP},
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

static _noreturn_ void usage_error(const char *fmt, ...) _printf_(1, 2);
static _noreturn_ void usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, PROGRAM ": ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nTry '" PROGRAM " --help'.\n");
    va_end(ap);
    exit(EXIT_USAGE);
}

/* getopt_long's answer for an option it does not take. */
static _noreturn_ void option_refused(char **argv) {
    if (optopt) {
        usage_error("option '%s' needs an argument", argv[optind - 1]);
    }
    usage_error("unknown option '%s'", argv[optind - 1]);
}

/* One option and its value into o; values are checked here, one by one. */
static void option_set(Options *o, int opt, const char *arg, char **argv) {
    switch (opt) {
    case OPT_CONFIG_DIR:
        o->config_dir = arg;
        break;
    case OPT_SOCKET_DIR:
        o->socket_dir = arg;
        break;
    case OPT_LOG_LEVEL:
        if (log_level_from_string(arg) < 0) {
            usage_error("unknown log level '%s' (error, warning, info, debug)", arg);
        }
        o->log_level = arg;
        break;
    case OPT_NO_SANDBOX:
        o->no_sandbox = true;
        break;
    case OPT_SECCOMP: {
        int m = filter_mode_from_string(arg);
        if (m < 0) {
            usage_error("unknown seccomp mode '%s' (kill, trap, log, disabled)", arg);
        }
        o->seccomp_mode = (FilterMode)m;
        break;
    }
    case OPT_USER:
        if (!user_name_valid(arg)) {
            usage_error("bad user name '%s'", arg);
        }
        o->user = arg;
        break;
    case OPT_STATS:
        o->stats = true;
        break;
    case OPT_PRINT_SECCOMP:
        o->print_filter = confine_role(arg);
        if (!o->print_filter) {
            usage_error("unknown role '%s' (supervisor, main, child)", arg);
        }
        break;
    case OPT_CHILD: {
        unsigned long long fd;
        if (parse_uint(arg, 0, CHILD_FD_MAX, &fd) < 0) {
            usage_error("bad --child '%s'", arg);
        }
        o->child_fd = (int)fd;
        break;
    }
    case OPT_HELP:
        usage(stdout);
        exit(EXIT_SUCCESS);
    default:
        option_refused(argv);
    }
}

/* What each way of running needs besides its options. */
static void options_check(const Options *o) {
    if (o->child_fd >= 0 || o->print_filter) {
        return;
    }
    if (!o->socket_dir) {
        usage_error("--socket-dir is required");
    }
    if (!o->stats && !o->config_dir) {
        usage_error("--config-dir is required");
    }
}

void options_parse(int argc, char **argv, Options *ret) {
    *ret = (Options){.child_fd = -1, .seccomp_mode = FILTER_KILL};
    opterr = 0;
    for (;;) {
        int c = getopt_long(argc, argv, "", longopts, NULL);
        if (c < 0) {
            break;
        }
        option_set(ret, c, optarg, argv);
    }
    if (optind < argc) {
        usage_error("unexpected argument '%s'", argv[optind]);
    }
    options_check(ret);
}
