/* vm-switch's seccomp allowlists: one table per role, built and loaded
 * with libseccomp. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* What a call outside the allowlist gets. */
typedef enum FilterMode {
    FILTER_KILL,     /* the whole process dies (SIGSYS, not catchable) */
    FILTER_TRAP,     /* SIGSYS is delivered: a debugger or handler sees the call */
    FILTER_LOG,      /* allowed, and the kernel logs it (audit) */
    FILTER_DISABLED, /* no filter at all */
} FilterMode;

typedef enum FilterRole {
    FILTER_ROLE_SUPERVISOR, /* the process left outside the pid namespace */
    FILTER_ROLE_MAIN,       /* the main process, PID 1 inside */
    FILTER_ROLE_CHILD,      /* a per-VM child once its vhost set-up is done */
    _FILTER_ROLE_MAX,
} FilterRole;

int filter_mode_from_string(const char *s);
const char *filter_mode_to_string(FilterMode mode);
int filter_role_from_string(const char *s);
const char *filter_role_to_string(FilterRole role);

/* Loads the role's filter on top of any already in place (filters only
 * ever narrow). The caller has set PR_SET_NO_NEW_PRIVS. FILTER_DISABLED
 * loads nothing. */
int filter_apply(FilterRole role, FilterMode mode);

/* True once this process has loaded a filter (it is inherited over fork
 * and exec, which the caller tracks itself). */
bool filter_applied(void);

/* How many distinct system calls the role's table lets through (the
 * production table, without a sanitizer build's additions). */
size_t filter_count(FilterRole role);

/* Prints the role's table: one line per rule, the call, its condition and
 * why it is there; then the count. */
void filter_print(FilterRole role, FILE *f);
