/* Logging to the journal or stderr: see log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "log-journal.h"

static const char *log_program = "qubes-lite";
static int log_max_level = LOG_INFO;
static bool log_journal;                /* stderr is the journal */
static LogJournalSend log_journal_send; /* log_use_journal() was called */

/* The process-wide fields, each "NAME=value". */
static char log_fields[LOG_FIELDS_MAX][LOG_FIELD_SIZE];
static size_t log_n_fields;

/* systemd sets JOURNAL_STREAM=dev:ino for the stream it connected to
 * stderr; a stderr inherited by a child that redirected it is not that
 * stream, hence the comparison. */
static bool stderr_is_journal(void) {
    const char *e = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2) {
        return false;
    }
    if (fstat(STDERR_FILENO, &st) < 0) {
        return false;
    }
    return st.st_dev == dev && st.st_ino == ino;
}

void log_setup(const char *program) {
    const char *e = getenv("QUBES_LITE_LOG_LEVEL");
    log_program = program;
    log_journal = stderr_is_journal();
    if (e) {
        int l = log_level_from_string(e);
        if (l >= 0) {
            log_max_level = l;
        }
    }
}

void log_set_max_level(int level) {
    log_max_level = level;
}

int log_get_max_level(void) {
    return log_max_level;
}

void log_journal_send_set(LogJournalSend send) {
    log_journal_send = send;
}

bool log_to_journal(void) {
    return log_journal && log_journal_send;
}

int log_level_from_string(const char *s) {
    static const struct {
        const char *name;
        int level;
    } table[] = {
        {"error", LOG_ERR},   {"warning", LOG_WARNING}, {"warn", LOG_WARNING},  {"info", LOG_INFO},
        {"debug", LOG_DEBUG}, {"trace", LOG_DEBUG},     {"notice", LOG_NOTICE},
    };
    for (size_t i = 0; i < ELEMENTSOF(table); i++) {
        if (streq(s, table[i].name)) {
            return table[i].level;
        }
    }
    return -EINVAL;
}

/* ---- fields ------------------------------------------------------------------ */

/* What the journal accepts as a field name a program may set. */
static bool field_name_valid(const char *name) {
    size_t n = 0;
    if (!name || name[0] == '\0' || name[0] == '_') {
        return false;
    }
    for (; name[n]; n++) {
        char c = name[n];
        if (n >= LOG_FIELD_NAME_MAX ||
            !((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) {
            return false;
        }
    }
    return true;
}

/* The index of the field called name among n "NAME=value" strings, or n. */
static size_t field_find(const char *fields, size_t size, size_t n, const char *name) {
    size_t len = strlen(name);
    for (size_t i = 0; i < n; i++) {
        const char *f = fields + i * size;
        if (strncmp(f, name, len) == 0 && f[len] == '=') {
            return i;
        }
    }
    return n;
}

void log_set_field(const char *name, const char *value) {
    if (!field_name_valid(name)) {
        return;
    }
    size_t i = field_find(&log_fields[0][0], LOG_FIELD_SIZE, log_n_fields, name);
    if (!value) {
        if (i < log_n_fields) {
            /* Keep the order of the others; it is only cosmetic. */
            memmove(log_fields[i], log_fields[i + 1], (log_n_fields - i - 1) * LOG_FIELD_SIZE);
            log_n_fields--;
        }
        return;
    }
    if (i == log_n_fields) {
        if (log_n_fields == LOG_FIELDS_MAX) {
            return;
        }
        log_n_fields++;
    }
    snprintf(log_fields[i], LOG_FIELD_SIZE, "%s=%s", name, value);
}

void log_context_init(LogContext *ctx, const char *prefix_fmt, ...) {
    va_list ap;
    *ctx = (LogContext){0};
    va_start(ap, prefix_fmt);
    vsnprintf(ctx->prefix, sizeof(ctx->prefix), prefix_fmt, ap);
    va_end(ap);
}

void log_context_set(LogContext *ctx, const char *name, const char *value_fmt, ...) {
    va_list ap;

    if (!field_name_valid(name)) {
        return;
    }
    size_t i = field_find(&ctx->fields[0][0], LOG_CONTEXT_FIELD_SIZE, ctx->n_fields, name);
    if (i == ctx->n_fields) {
        if (ctx->n_fields == LOG_CONTEXT_FIELDS_MAX) {
            return;
        }
        ctx->n_fields++;
    }
    /* The name fits: LOG_FIELD_NAME_MAX + 1 < LOG_CONTEXT_FIELD_SIZE. */
    size_t k = (size_t)snprintf(ctx->fields[i], LOG_CONTEXT_FIELD_SIZE, "%s=", name);
    va_start(ap, value_fmt);
    vsnprintf(ctx->fields[i] + k, LOG_CONTEXT_FIELD_SIZE - k, value_fmt, ap);
    va_end(ap);
}

/* ---- records ------------------------------------------------------------------ */

/* The record as journal fields, sent. Returns the sender's result. */
static int journal_send(const LogContext *ctx, int level, int error, const char *file, int line,
                        const char *func, const char *message_field) {
    /* MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, CODE_FILE, CODE_LINE,
     * CODE_FUNC, ERRNO, then the process's and the context's fields. */
    struct iovec iov[7 + LOG_FIELDS_MAX + LOG_CONTEXT_FIELDS_MAX];
    char priority[16], identifier[LOG_FIELD_SIZE], code_file[LOG_FIELD_SIZE], code_line[32],
        code_func[LOG_FIELD_SIZE], errno_field[32];
    size_t n = 0;

#define IOV_STR(s) (struct iovec){.iov_base = (void *)(s), .iov_len = strlen(s)}
    iov[n++] = IOV_STR(message_field); /* "MESSAGE=..." */
    snprintf(priority, sizeof(priority), "PRIORITY=%d", level);
    iov[n++] = IOV_STR(priority);
    snprintf(identifier, sizeof(identifier), "SYSLOG_IDENTIFIER=%s", log_program);
    iov[n++] = IOV_STR(identifier);
    if (file) {
        snprintf(code_file, sizeof(code_file), "CODE_FILE=%s", file);
        snprintf(code_line, sizeof(code_line), "CODE_LINE=%d", line);
        snprintf(code_func, sizeof(code_func), "CODE_FUNC=%s", func);
        iov[n++] = IOV_STR(code_file);
        iov[n++] = IOV_STR(code_line);
        iov[n++] = IOV_STR(code_func);
    }
    if (error < 0) {
        snprintf(errno_field, sizeof(errno_field), "ERRNO=%d", -error);
        iov[n++] = IOV_STR(errno_field);
    }
    for (size_t i = 0; i < log_n_fields; i++) {
        iov[n++] = IOV_STR(log_fields[i]);
    }
    for (size_t i = 0; ctx && i < ctx->n_fields; i++) {
        iov[n++] = IOV_STR(ctx->fields[i]);
    }
#undef IOV_STR
    return log_journal_send(iov, (int)n);
}

_printf_(7, 0) static void log_write(const LogContext *ctx, int level, int error, const char *file,
                                     int line, const char *func, const char *fmt, va_list ap) {
    static const char field[] = "MESSAGE=";
    char buf[sizeof(field) - 1 + LOG_MESSAGE_MAX];
    char *msg = buf + sizeof(field) - 1;
    size_t off = 0;
    int saved = errno;

    memcpy(buf, field, sizeof(field) - 1);
    if (ctx && ctx->prefix[0]) {
        int k = snprintf(msg, LOG_MESSAGE_MAX, "%s: ", ctx->prefix);
        off = k > 0 ? MIN((size_t)k, LOG_MESSAGE_MAX - 1) : 0;
    }
    if (error < 0) {
        errno = -error;
    }
    vsnprintf(msg + off, LOG_MESSAGE_MAX - off, fmt, ap);
    if (log_to_journal() && journal_send(ctx, level, error, file, line, func, buf) >= 0) {
        errno = saved;
        return;
    }
    if (log_journal) {
        fprintf(stderr, "<%d>%s\n", level, msg);
    } else {
        fprintf(stderr, "%s: %s\n", log_program, msg);
    }
    errno = saved;
}

int log_internal_at(const LogContext *ctx, int level, int error, const char *file, int line,
                    const char *func, const char *fmt, ...) {
    if (level <= log_max_level) {
        va_list ap;
        va_start(ap, fmt);
        log_write(ctx, level, error, file, line, func, fmt, ap);
        va_end(ap);
    }
    return error;
}

int log_internal(int level, int error, const char *fmt, ...) {
    if (level <= log_max_level) {
        va_list ap;
        va_start(ap, fmt);
        log_write(NULL, level, error, NULL, 0, NULL, fmt, ap);
        va_end(ap);
    }
    return error;
}

void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    log_write(NULL, LOG_ERR, -errno, NULL, 0, NULL, fmt, ap);
    va_end(ap);
    exit(EXIT_FAILURE);
}
