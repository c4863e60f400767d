/* Seccomp allowlists (libseccomp) built from a program's tables: loading
 * in a mode, counting and printing. The tables are the program's own,
 * next to it (vm-switch's: switch/net/confine.c), one per process role,
 * each system call with the condition on its arguments where one narrows
 * it and the reason it is there; everything else gets the mode's action.
 * The supervisor's table, which only ever runs sandbox.c's code, is
 * sandbox.c's.
 *
 * A program writes a table as
 *
 *   static const FilterRule main_rules[] = {
 *       FILTER_ALLOW("read", "its sockets and eventfds"),
 *       FILTER_ALLOW_IF_EQ("socket", 0, AF_UNIX, "its listening socket"),
 *       FILTER_ALLOW_IF_CLEAR("mmap", 2, PROT_EXEC, "malloc; never executable"),
 *       FILTER_FAIL("clone3", ENOSYS, "glibc falls back to clone()"),
 *   };
 *   const FilterTable my_main_filter = FILTER_TABLE("main", main_rules);
 *
 * Filters stack: one loaded on top of another only narrows it, so a table
 * stacked on another must allow nothing the one below does not. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* What a call outside the allowlist gets. */
typedef enum FilterMode {
    FILTER_KILL,     /* the whole process dies (SIGSYS, not catchable) */
    FILTER_TRAP,     /* SIGSYS is delivered: a debugger or handler sees the call */
    FILTER_LOG,      /* allowed, and the kernel logs it (audit) */
    FILTER_DISABLED, /* no filter at all */
} FilterMode;

typedef enum FilterRuleKind {
    FILTER_RULE_ALLOW,     /* any arguments */
    FILTER_RULE_ARG_EQ,    /* allowed when argument `arg` equals `value` */
    FILTER_RULE_ARG_CLEAR, /* allowed when argument `arg` has none of the bits in `value` */
    FILTER_RULE_ERRNO,     /* fails with errno `value` whatever the mode */
} FilterRuleKind;

typedef struct FilterRule {
    const char *name; /* the system call, as libseccomp names it */
    FilterRuleKind kind;
    unsigned arg;
    uint64_t value;
    const char *why;
} FilterRule;

/* clang-format off */
#define FILTER_ALLOW(n, w) {n, FILTER_RULE_ALLOW, 0, 0, w}
#define FILTER_ALLOW_IF_EQ(n, a, v, w) {n, FILTER_RULE_ARG_EQ, a, (uint64_t)(v), w}
#define FILTER_ALLOW_IF_CLEAR(n, a, m, w) {n, FILTER_RULE_ARG_CLEAR, a, (uint64_t)(m), w}
#define FILTER_FAIL(n, e, w) {n, FILTER_RULE_ERRNO, 0, e, w}
/* clang-format on */

typedef struct FilterTable {
    const char *role; /* its name: what --print-seccomp takes and prints */
    const FilterRule *rules;
    size_t n_rules;
    /* Processes are re-executed while under it (a child before it adds a
     * filter of its own): a sanitizer build adds its runtime's start-up
     * calls. */
    bool reexec;
} FilterTable;

#define FILTER_TABLE(role_name, rule_array, ...)                                                   \
    {                                                                                              \
        .role = (role_name), .rules = (rule_array),                                                \
        .n_rules = sizeof(rule_array) / sizeof((rule_array)[0]), __VA_ARGS__                       \
    }

int filter_mode_from_string(const char *s);
const char *filter_mode_to_string(FilterMode mode);

/* Loads the table's filter on top of any already in place (filters only
 * ever narrow). The caller has set PR_SET_NO_NEW_PRIVS. FILTER_DISABLED
 * loads nothing. In trap mode a refused call is named on stderr and ends
 * the process with 128 + SIGSYS, unless the program handles SIGSYS. */
int filter_apply(const FilterTable *t, FilterMode mode);

/* True once this process has loaded a filter (it is inherited over fork
 * and exec, which the caller tracks itself). */
bool filter_applied(void);

/* How many distinct system calls the table lets through (the production
 * table, without a sanitizer build's additions). */
size_t filter_count(const FilterTable *t);

/* Prints the table: one line per rule, the call, its condition and why it
 * is there; then "ROLE: N system calls allowed". */
void filter_print(const FilterTable *t, FILE *f);
