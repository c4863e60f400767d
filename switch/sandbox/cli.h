/* The command line and start-up that every sandboxed device program
 * shares (vm-switch, qubes-lite-vsock), so that they take the same options
 * the same way and say the same things:
 *
 *   --log-level LEVEL    error, warning, info, debug
 *   --no-sandbox         no namespaces, no seccomp
 *   --seccomp-mode MODE  kill, trap, log, disabled
 *   --print-seccomp ROLE one process role's allowlist
 *   --help               the program's usage on stdout, exit 0
 *
 * A bad command line is one line and a hint on stderr ("PROGRAM: what" and
 * "Try 'PROGRAM --help'."), exit CLI_EXIT_USAGE. A program adds its own
 * options and takes them in a function of its own:
 *
 *   static const struct option own[] = {
 *       {"socket", required_argument, NULL, OPT_SOCKET},
 *       {0},
 *   };
 *   static void own_option(void *ctx, int opt, const char *arg) {
 *       ... cli_usage_error("bad --socket '%s'", arg) ...
 *   }
 *   static const CliProgram program = {
 *       .name = "my-device", .usage = usage,
 *       .role = my_role, .roles = "supervisor, main",
 *   };
 *   CliOptions common;
 *   cli_parse(&program, argc, argv, own, own_option, &mine, &common);
 *   if (common.print_filter) { filter_print(common.print_filter, stdout); return 0; }
 *   ... r = sandbox_enter(&description); if (r < 0) cli_sandbox_failed(r, false);
 *   ... cli_notify_ready();
 */
#pragma once

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>

#include "filter.h"
#include "util.h"

/* Exit status for a bad command line (1 is for failing to start). */
#define CLI_EXIT_USAGE 2
/* The shared options' values for getopt_long; a program's own start at 256
 * and stay below. */
#define CLI_OPT_FIRST 0x1000

/* What a program tells the shared command line about itself. */
typedef struct CliProgram {
    const char *name;                           /* the messages' prefix */
    void (*usage)(FILE *f);                     /* --help */
    const FilterTable *(*role)(const char *name); /* --print-seccomp's table, or NULL */
    const char *roles;                          /* named when a role is unknown */
} CliProgram;

/* The shared options' values. */
typedef struct CliOptions {
    const char *log_level; /* NULL: the default */
    bool no_sandbox;
    FilterMode seccomp_mode; /* FILTER_KILL unless given */
    const FilterTable *print_filter;
} CliOptions;

/* Takes one of the program's own options (opt from its struct option's
 * val, arg its value or NULL); a bad value is cli_usage_error(). */
typedef void (*CliOptionFn)(void *ctx, int opt, const char *arg);

/* Parses argv: the shared options into *ret, the program's own (own, ended
 * by an all-zero entry) through own_option(ctx, ...). Then sets the log
 * level. No argument may be left over. Exits 0 after --help, and
 * CLI_EXIT_USAGE on anything it does not take. */
void cli_parse(const CliProgram *p, int argc, char **argv, const struct option *own,
               CliOptionFn own_option, void *ctx, CliOptions *ret);

/* A bad command line: one line and the hint, exit CLI_EXIT_USAGE. */
_noreturn_ void cli_usage_error(const char *fmt, ...) _printf_(1, 2);

/* The sandbox refused (sandbox_enter()'s r): one line, exit 1. With
 * root_without_user, -EPERM is a process started as root that was not
 * told which user to become (vm-switch's --user). */
_noreturn_ void cli_sandbox_failed(int r, bool root_without_user);

/* READY=1 to the service manager (sandbox_notify(): through the
 * supervisor when there is one); a failure is a warning. */
void cli_notify_ready(void);
