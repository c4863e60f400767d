/* Logging: one convention for every program.
 *
 * Text. A message is one sentence without a final period. It starts with
 * a capital letter, or with its context and ": ", after which it goes on
 * in lower case ("Session 3: grace over, killing process group 42",
 * "Console of VM 'work': pid 12 detached", "--kill-grace: not a number of
 * seconds: x"). An error's reason comes last, after ": " (%m). Words that
 * are lower case of their own (systemd, crosvm, an --option) keep it.
 * Strings from a peer are quoted and sanitised (str_sanitize()). Library
 * code does not log: the caller that decides logs once, with context.
 *
 * Where it goes. A program that can reach the journal calls
 * log_use_journal() after log_setup(): then, when stderr is the journal
 * (systemd's JOURNAL_STREAM names our stderr), each record goes to the
 * journal through sd_journal_send() with MESSAGE, PRIORITY,
 * SYSLOG_IDENTIFIER (the program), CODE_FILE, CODE_LINE, CODE_FUNC, ERRNO
 * (with an error), the fields set once for the process (log_set_field():
 * QUBES_LITE_VM=<name> in the host agent) and those of the call's context
 * (a LogContext: QUBES_LITE_SESSION and QUBES_LITE_PID for a guest
 * session). Should the journal refuse a record, and in a program that
 * does not call log_use_journal() (a sandboxed one: the journal's socket
 * is outside its sandbox and socket() outside its allowlist), a record on
 * a journal stderr is "<priority>message", which journald reads from the
 * stream with its priority. Otherwise each record is one line on stderr,
 * "program: message". The text is the same everywhere: a context's prefix
 * is part of the message, the program's name is the journal's identifier.
 */
#pragma once

#include <errno.h>
#include <stddef.h>
#include <syslog.h>

#include "util.h"

/* A journal field is NAME=value; NAME is [A-Z0-9_], not starting with '_',
 * at most LOG_FIELD_NAME_MAX characters. */
#define LOG_FIELD_NAME_MAX 64u
/* Fields set for the whole process, and one "NAME=value" of them. */
#define LOG_FIELDS_MAX 8u
#define LOG_FIELD_SIZE 256u
/* A context's fields, one "NAME=value" of them, and its prefix. */
#define LOG_CONTEXT_FIELDS_MAX 4u
#define LOG_CONTEXT_FIELD_SIZE 96u
#define LOG_CONTEXT_PREFIX_MAX 64u
_Static_assert(LOG_FIELD_NAME_MAX + 1 < LOG_CONTEXT_FIELD_SIZE, "a name and '=' fit a field");
/* A message, its context's prefix included; longer ones are cut. */
#define LOG_MESSAGE_MAX 2048u

void log_setup(const char *program);
void log_set_max_level(int level);
int log_get_max_level(void);
/* Parses "error", "warning", "info", "debug" (or "trace" = debug). */
int log_level_from_string(const char *s);
/* Records go to the journal natively (with fields) when stderr is the
 * journal; see above. Defined in log-journal.c: a program that does not
 * call it links no sd-journal. */
void log_use_journal(void);
/* Whether they do: log_use_journal() was called and stderr is the
 * journal. */
bool log_to_journal(void);

/* Sets (or, with value NULL, removes) a field attached to every journal
 * record of this process from now on. A name that is not a valid journal
 * field name is ignored; a value is cut to fit LOG_FIELD_SIZE. */
void log_set_field(const char *name, const char *value);

/* The context of a series of records (one session, one client): a prefix
 * put before each message with ": ", and journal fields of its own. */
typedef struct LogContext {
    char prefix[LOG_CONTEXT_PREFIX_MAX];
    size_t n_fields;
    char fields[LOG_CONTEXT_FIELDS_MAX][LOG_CONTEXT_FIELD_SIZE]; /* "NAME=value" */
} LogContext;

/* Starts a context with this prefix (printf-style; "" for none) and no
 * fields. */
_printf_(2, 3) void log_context_init(LogContext *ctx, const char *prefix_fmt, ...);
/* Sets a field of the context (replacing one of the same name). A name
 * that is not valid, or a field beyond LOG_CONTEXT_FIELDS_MAX, is ignored;
 * a value is cut to fit LOG_CONTEXT_FIELD_SIZE. */
_printf_(3, 4) void log_context_set(LogContext *ctx, const char *name, const char *value_fmt, ...);

/* Logs at level with context ctx (NULL: none) from the code location
 * given; when error is negative, errno is set to -error for %m. Returns
 * error (so that callers can `return log_error_errno(r, ...)`). The macros
 * below fill in the location. */
_printf_(7, 8) int log_internal_at(const LogContext *ctx, int level, int error, const char *file,
                                   int line, const char *func, const char *fmt, ...);
/* The same without a context or a code location. */
_printf_(3, 4) int log_internal(int level, int error, const char *fmt, ...);

#define log_ctx_full_errno(ctx, level, r, ...)                                                     \
    log_internal_at((ctx), (level), (r), __FILE__, __LINE__, __func__, __VA_ARGS__)
#define log_full_errno(level, r, ...) log_ctx_full_errno(NULL, level, r, __VA_ARGS__)
#define log_full(level, ...) log_full_errno(level, 0, __VA_ARGS__)

#define log_debug(...) log_full_errno(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...) log_full_errno(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...) log_full_errno(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) log_full_errno(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...) log_full_errno(LOG_ERR, 0, __VA_ARGS__)
#define log_debug_errno(r, ...) log_full_errno(LOG_DEBUG, (r), __VA_ARGS__)
#define log_info_errno(r, ...) log_full_errno(LOG_INFO, (r), __VA_ARGS__)
#define log_warning_errno(r, ...) log_full_errno(LOG_WARNING, (r), __VA_ARGS__)
#define log_error_errno(r, ...) log_full_errno(LOG_ERR, (r), __VA_ARGS__)

#define log_ctx_debug(ctx, ...) log_ctx_full_errno((ctx), LOG_DEBUG, 0, __VA_ARGS__)
#define log_ctx_info(ctx, ...) log_ctx_full_errno((ctx), LOG_INFO, 0, __VA_ARGS__)
#define log_ctx_warning(ctx, ...) log_ctx_full_errno((ctx), LOG_WARNING, 0, __VA_ARGS__)
#define log_ctx_error(ctx, ...) log_ctx_full_errno((ctx), LOG_ERR, 0, __VA_ARGS__)
#define log_ctx_debug_errno(ctx, r, ...) log_ctx_full_errno((ctx), LOG_DEBUG, (r), __VA_ARGS__)
#define log_ctx_info_errno(ctx, r, ...) log_ctx_full_errno((ctx), LOG_INFO, (r), __VA_ARGS__)
#define log_ctx_warning_errno(ctx, r, ...) log_ctx_full_errno((ctx), LOG_WARNING, (r), __VA_ARGS__)
#define log_ctx_error_errno(ctx, r, ...) log_ctx_full_errno((ctx), LOG_ERR, (r), __VA_ARGS__)

/* One-shot setup failures before the event loop only. */
_noreturn_ void die(const char *fmt, ...) _printf_(1, 2);
