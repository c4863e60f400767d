/* qubes-lite-vsock's command line:
 *
 *   qubes-lite-vsock --socket VHOST_SOCKET --uds-path PATH --guest-cid CID
 *                    [--uds-group GROUP] [--no-sandbox] [--seccomp-mode kill|trap|log|disabled]
 *                    [--log-level L]
 *   qubes-lite-vsock --print-seccomp supervisor|main
 *
 * What every sandboxed device program takes is switch/sandbox/cli.h's. A
 * bad command line prints one line and a hint on stderr and exits
 * CLI_EXIT_USAGE. */
#pragma once

#include <stdint.h>

#include "switch/sandbox/cli.h"

#define PROGRAM "qubes-lite-vsock"

typedef struct Options {
    const char *socket;   /* VHOST_SOCKET */
    const char *uds_path; /* PATH */
    uint64_t guest_cid;
    const char *uds_group; /* NULL: PATH stays 0600 */
    CliOptions common; /* --log-level, --no-sandbox, --seccomp-mode, --print-seccomp */
} Options;

/* Parses argv into *ret and sets the log level; prints usage and exits 0
 * on --help, exits CLI_EXIT_USAGE on anything it does not take. */
void options_parse(int argc, char **argv, Options *ret);
