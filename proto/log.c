/* Logging to stderr, journal-aware. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static const char *log_program = "qubes-lite";
static int log_max_level = LOG_INFO;
static bool log_to_journal;

/* systemd sets JOURNAL_STREAM=dev:ino for the stream it connected to
 * stderr; then a "<N>" prefix carries the priority and the journal adds
 * the unit, pid and time itself. */
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
    log_to_journal = stderr_is_journal();
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

int log_level_from_string(const char *s) {
    static const struct {
        const char *name;
        int level;
    } table[] = {
        {"error", LOG_ERR},   {"warning", LOG_WARNING}, {"warn", LOG_WARNING},
        {"info", LOG_INFO},   {"debug", LOG_DEBUG},     {"trace", LOG_DEBUG},
        {"notice", LOG_NOTICE},
    };
    for (size_t i = 0; i < ELEMENTSOF(table); i++) {
        if (streq(s, table[i].name)) {
            return table[i].level;
        }
    }
    return -EINVAL;
}

_printf_(3, 0) static void log_write(int level, int error, const char *fmt, va_list ap) {
    char msg[2048];
    int saved = errno;
    if (error < 0) {
        errno = -error;
    }
    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (log_to_journal) {
        fprintf(stderr, "<%d>%s\n", level, msg);
    } else {
        fprintf(stderr, "%s: %s\n", log_program, msg);
    }
    errno = saved;
}

int log_internal(int level, int error, const char *fmt, ...) {
    if (level <= log_max_level) {
        va_list ap;
        va_start(ap, fmt);
        log_write(level, error, fmt, ap);
        va_end(ap);
    }
    return error;
}

void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    log_write(LOG_ERR, -errno, fmt, ap);
    va_end(ap);
    exit(EXIT_FAILURE);
}
