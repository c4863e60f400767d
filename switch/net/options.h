/* vm-switch's command line, for both of its processes (what every
 * sandboxed device program takes is switch/sandbox/cli.h's).
 *
 *   vm-switch --config-dir DIR --socket-dir DIR [--log-level L]
 *             [--no-sandbox] [--seccomp-mode kill|trap|log|disabled] [--user NAME]
 *   vm-switch --stats --socket-dir DIR
 *   vm-switch --print-seccomp supervisor|main|child
 *
 * and, internal, `--child FD`: a per-VM child re-executed by the main
 * process with its control socket on FD. A bad command line prints one
 * line and a hint on stderr and exits CLI_EXIT_USAGE. */
#pragma once

#include <stdbool.h>

#include "switch/sandbox/filter.h"

#define PROGRAM "vm-switch"
/* The highest fd --child accepts. */
#define CHILD_FD_MAX 1024

typedef struct Options {
    const char *config_dir;
    const char *socket_dir;
    const char *log_level;
    bool no_sandbox;
    FilterMode seccomp_mode;
    const char *user;
    bool stats;
    const FilterTable *print_filter; /* --print-seccomp's role */
    int child_fd;                    /* --child; -1 when not given */
} Options;

/* Parses argv into *ret and sets the log level; prints usage and exits 0
 * on --help, exits CLI_EXIT_USAGE on anything it does not take. */
void options_parse(int argc, char **argv, Options *ret);
