/* The command line and start-up every sandboxed device program shares
 * (cli.h): one function per concern (the option table, one shared
 * option's value, what getopt_long refused). */
#include "cli.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "sandbox.h"

enum {
    OPT_LOG_LEVEL = CLI_OPT_FIRST,
    OPT_NO_SANDBOX,
    OPT_SECCOMP,
    OPT_PRINT_SECCOMP,
    OPT_HELP,
};

static const struct option shared_options[] = {
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"no-sandbox", no_argument, NULL, OPT_NO_SANDBOX},
    {"seccomp-mode", required_argument, NULL, OPT_SECCOMP},
    {"print-seccomp", required_argument, NULL, OPT_PRINT_SECCOMP},
    {"help", no_argument, NULL, OPT_HELP},
};

/* The program whose command line this is, for the messages. */
static const CliProgram *program;

void cli_usage_error(const char *fmt, ...) {
    const char *name = program ? program->name : "";
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: ", name);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nTry '%s --help'.\n", name);
    va_end(ap);
    exit(CLI_EXIT_USAGE);
}

/* getopt_long's answer for an option it does not take. */
static _noreturn_ void option_refused(char **argv) {
    if (optopt) {
        cli_usage_error("option '%s' needs an argument", argv[optind - 1]);
    }
    cli_usage_error("unknown option '%s'", argv[optind - 1]);
}

/* The program's options, then the shared ones, then the end. */
static struct option *option_table(const struct option *own) {
    size_t n = 0;
    while (own && own[n].name) {
        n++;
    }
    struct option *all = calloc(n + ELEMENTSOF(shared_options) + 1, sizeof(*all));
    if (!all) {
        die("out of memory");
    }
    if (n > 0) {
        memcpy(all, own, n * sizeof(*all));
    }
    memcpy(all + n, shared_options, sizeof(shared_options));
    return all;
}

/* One shared option and its value into o; values are checked here. */
static void shared_option_set(CliOptions *o, int opt, const char *arg) {
    switch (opt) {
    case OPT_LOG_LEVEL:
        if (log_level_from_string(arg) < 0) {
            cli_usage_error("unknown log level '%s' (error, warning, info, debug)", arg);
        }
        o->log_level = arg;
        break;
    case OPT_NO_SANDBOX:
        o->no_sandbox = true;
        break;
    case OPT_SECCOMP: {
        int m = filter_mode_from_string(arg);
        if (m < 0) {
            cli_usage_error("unknown seccomp mode '%s' (kill, trap, log, disabled)", arg);
        }
        o->seccomp_mode = (FilterMode)m;
        break;
    }
    case OPT_PRINT_SECCOMP:
        o->print_filter = program->role ? program->role(arg) : NULL;
        if (!o->print_filter) {
            cli_usage_error("unknown role '%s' (%s)", arg, program->roles);
        }
        break;
    case OPT_HELP:
        program->usage(stdout);
        exit(EXIT_SUCCESS);
    }
}

void cli_parse(const CliProgram *p, int argc, char **argv, const struct option *own,
               CliOptionFn own_option, void *ctx, CliOptions *ret) {
    program = p;
    *ret = (CliOptions){.seccomp_mode = FILTER_KILL};
    _cleanup_free_ struct option *all = option_table(own);
    opterr = 0;
    for (;;) {
        int c = getopt_long(argc, argv, "", all, NULL);
        if (c < 0) {
            break;
        }
        if (c >= CLI_OPT_FIRST) {
            shared_option_set(ret, c, optarg);
        } else if (c >= 256) {
            own_option(ctx, c, optarg);
        } else {
            option_refused(argv);
        }
    }
    if (optind < argc) {
        cli_usage_error("unexpected argument '%s'", argv[optind]);
    }
    if (ret->log_level) {
        log_set_max_level(log_level_from_string(ret->log_level));
    }
}

void cli_sandbox_failed(int r, bool root_without_user) {
    if (r == -EPERM && root_without_user) {
        die("started as root: give --user NAME to run as (or --no-sandbox)");
    }
    die("cannot enter the sandbox: %s", strerror(-r));
}

void cli_notify_ready(void) {
    int r = sandbox_notify("READY=1");
    if (r < 0) {
        log_warning_errno(r, "cannot notify readiness: %m");
    }
}
