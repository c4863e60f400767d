/* Logging: stderr, with a syslog priority prefix the journal understands
 * when stderr is connected to it. Library code does not log; callers do,
 * once, with context. */
#pragma once

#include <errno.h>
#include <syslog.h>

#include "util.h"

void log_setup(const char *program);
void log_set_max_level(int level);
int log_get_max_level(void);
/* Parses "error", "warning", "info", "debug" (or "trace" = debug). */
int log_level_from_string(const char *s);

/* Logs at level; when error is negative, errno is set to -error for %m.
 * Returns error (so callers can `return log_error_errno(r, ...)`). */
int log_internal(int level, int error, const char *fmt, ...) _printf_(3, 4);

#define log_debug(...) log_internal(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...) log_internal(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...) log_internal(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) log_internal(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...) log_internal(LOG_ERR, 0, __VA_ARGS__)
#define log_debug_errno(r, ...) log_internal(LOG_DEBUG, (r), __VA_ARGS__)
#define log_info_errno(r, ...) log_internal(LOG_INFO, (r), __VA_ARGS__)
#define log_warning_errno(r, ...) log_internal(LOG_WARNING, (r), __VA_ARGS__)
#define log_error_errno(r, ...) log_internal(LOG_ERR, (r), __VA_ARGS__)

/* One-shot setup failures before the event loop only. */
_noreturn_ void die(const char *fmt, ...) _printf_(1, 2);
