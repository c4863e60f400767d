/* proto/log: the text of a record (prefix, context, %m), levels, the
 * stderr forms, and the journal's fields. journald does not run on every
 * machine the tests run on, so the journal's side is checked against a
 * socket of our own at journald's address, in a private mount namespace:
 * what sd_journal_send() delivers there is what journald would get. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define JOURNAL_SOCKET "/run/systemd/journal/socket"

/* Runs fn with stderr going to a fresh file; returns what it wrote. */
static char *capture_stderr(void (*fn)(void)) {
    static char out[8192];
    char path[] = "/tmp/test-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
    fn();
    fflush(stderr);
    assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
    close(saved);
    ssize_t n = pread(fd, out, sizeof(out) - 1, 0);
    assert_true(n >= 0);
    out[n] = '\0';
    close(fd);
    return out;
}

/* JOURNAL_STREAM naming (or not) what stderr is now. */
static void set_journal_stream(bool ours) {
    struct stat st;
    char buf[64];
    assert_int_equal(fstat(STDERR_FILENO, &st), 0);
    snprintf(buf, sizeof(buf), "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino + (ours ? 0 : 1));
    assert_int_equal(setenv("JOURNAL_STREAM", buf, 1), 0);
}

/* ---- the text on stderr ------------------------------------------------ */

static void log_lines(void) {
    LogContext ctx;

    log_setup("test-log");
    log_set_max_level(LOG_INFO);
    log_info("Listening on %s", "vsock::5200");
    log_debug("Not shown at info");
    log_context_init(&ctx, "Session %u", 3u);
    log_ctx_info(&ctx, "grace over, killing process group %d", 42);
    errno = EAGAIN;
    int r = log_ctx_warning_errno(&ctx, -EPIPE, "connection lost: %m");
    assert_int_equal(r, -EPIPE);
    assert_int_equal(errno, EAGAIN); /* %m did not cost the caller its errno */
    assert_int_equal(log_error_errno(-ENOENT, "Failed to open %s: %m", "x"), -ENOENT);
    log_internal(LOG_WARNING, 0, "Without a location");
}

static void test_stderr_lines(void **state) {
    unsetenv("JOURNAL_STREAM");
    const char *out = capture_stderr(log_lines);
    assert_string_equal(out, "test-log: Listening on vsock::5200\n"
                             "test-log: Session 3: grace over, killing process group 42\n"
                             "test-log: Session 3: connection lost: Broken pipe\n"
                             "test-log: Failed to open x: No such file or directory\n"
                             "test-log: Without a location\n");
}

static void log_debug_lines(void) {
    log_setup("test-log");
    log_set_max_level(LOG_DEBUG);
    log_debug("Shown at debug");
    log_set_max_level(LOG_ERR);
    log_warning("Not shown at error");
    log_set_max_level(LOG_INFO);
}

static void test_levels(void **state) {
    unsetenv("JOURNAL_STREAM");
    assert_string_equal(capture_stderr(log_debug_lines), "test-log: Shown at debug\n");
    assert_int_equal(log_level_from_string("debug"), LOG_DEBUG);
    assert_int_equal(log_level_from_string("trace"), LOG_DEBUG);
    assert_int_equal(log_level_from_string("warn"), LOG_WARNING);
    assert_int_equal(log_level_from_string("loud"), -EINVAL);
}

/* stderr is the journal, but this program does not send records itself
 * (as a sandboxed one does not): the journal reads the priority prefix. */
static void log_prefixed(void) {
    LogContext ctx;
    set_journal_stream(true);
    log_setup("test-log");
    assert_false(log_to_journal());
    log_context_init(&ctx, "Session %u", 7u);
    log_ctx_warning(&ctx, "no grace timer");
    log_error("Failed");
    set_journal_stream(false);
    log_setup("test-log");
    log_info("Not the journal");
}

static void test_journal_stream_prefix(void **state) {
    const char *out = capture_stderr(log_prefixed);
    assert_string_equal(out, "<4>Session 7: no grace timer\n"
                             "<3>Failed\n"
                             "test-log: Not the journal\n");
    unsetenv("JOURNAL_STREAM");
}

/* A message too long for LOG_MESSAGE_MAX is cut, not overflowed. */
static void log_long(void) {
    char big[LOG_MESSAGE_MAX * 2];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    log_setup("t");
    log_info("%s", big);
}

static void test_long_message(void **state) {
    unsetenv("JOURNAL_STREAM");
    const char *out = capture_stderr(log_long);
    assert_int_equal(strlen(out), strlen("t: ") + LOG_MESSAGE_MAX - 1 + 1);
}

static void test_context_fields(void **state) {
    LogContext ctx;
    log_context_init(&ctx, "%s", "");
    assert_string_equal(ctx.prefix, "");
    log_context_set(&ctx, "QUBES_LITE_SESSION", "%u", 3u);
    log_context_set(&ctx, "QUBES_LITE_PID", "%d", 100);
    log_context_set(&ctx, "QUBES_LITE_PID", "%d", 101); /* replaced */
    assert_int_equal(ctx.n_fields, 2);
    assert_string_equal(ctx.fields[0], "QUBES_LITE_SESSION=3");
    assert_string_equal(ctx.fields[1], "QUBES_LITE_PID=101");
    /* Not journal field names: ignored. */
    log_context_set(&ctx, "lower", "x");
    log_context_set(&ctx, "_TRUSTED", "x");
    log_context_set(&ctx, "", "x");
    log_context_set(&ctx, "A-B", "x");
    assert_int_equal(ctx.n_fields, 2);
    /* Beyond the limit: ignored; a long value is cut. */
    log_context_set(&ctx, "F3", "%0200d", 1);
    log_context_set(&ctx, "F4", "y");
    log_context_set(&ctx, "F5", "z");
    assert_int_equal(ctx.n_fields, LOG_CONTEXT_FIELDS_MAX);
    assert_int_equal(strlen(ctx.fields[2]), LOG_CONTEXT_FIELD_SIZE - 1);
    assert_true(startswith(ctx.fields[2], "F3=0000"));
}

/* ---- the journal ---------------------------------------------------------- */

/* Field NAME's value in a native-protocol datagram (text form), or NULL. */
static const char *field(char *dgram, const char *name, char *buf, size_t size) {
    size_t len = strlen(name);
    for (char *line = dgram; *line;) {
        char *end = strchr(line, '\n');
        size_t n = end ? (size_t)(end - line) : strlen(line);
        if (n > len && strncmp(line, name, len) == 0 && line[len] == '=') {
            snprintf(buf, size, "%.*s", (int)(n - len - 1), line + len + 1);
            return buf;
        }
        if (!end) {
            break;
        }
        line = end + 1;
    }
    return NULL;
}

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stdout, "%s:%d: %s\n", __FILE__, __LINE__, #cond);                             \
            _exit(1);                                                                              \
        }                                                                                          \
    } while (0)

static void check_field(char *dgram, const char *name, const char *want) {
    char buf[512];
    const char *got = field(dgram, name, buf, sizeof(buf));
    if (!got || !streq(got, want)) {
        fprintf(stdout, "%s: got %s, want %s\nrecord:\n%s\n", name, got ? got : "(none)", want,
                dgram);
        _exit(1);
    }
}

/* In a private mount namespace: our socket at journald's address. 0, or
 * 77 when namespaces are not ours to make here. */
static int journal_socket_here(int *ret_fd) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX, .sun_path = JOURNAL_SOCKET};
    if (unshare(CLONE_NEWNS) < 0 && unshare(CLONE_NEWUSER | CLONE_NEWNS) < 0) {
        return 77;
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
        mount("tmpfs", "/run", "tmpfs", 0, "mode=0755") < 0) {
        return 77;
    }
    CHECK(mkdir("/run/systemd", 0755) == 0 && mkdir("/run/systemd/journal", 0755) == 0);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    CHECK(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    *ret_fd = fd;
    return 0;
}

static void journal_child(void) {
    char dgram[16384], line[32];
    LogContext ctx;
    int fd;

    int r = journal_socket_here(&fd);
    if (r != 0) {
        _exit(r);
    }
    set_journal_stream(true);
    log_setup("test-log");
    log_use_journal();
    CHECK(log_to_journal());
    log_set_field("QUBES_LITE_VM", "work");
    log_set_field("QUBES_LITE_GONE", "x");
    log_set_field("QUBES_LITE_GONE", NULL); /* removed */
    log_set_field("not valid", "x");        /* ignored */
    log_context_init(&ctx, "Session %u", 3u);
    log_context_set(&ctx, "QUBES_LITE_SESSION", "%u", 3u);
    log_context_set(&ctx, "QUBES_LITE_PID", "%d", 4242);
    snprintf(line, sizeof(line), "%d", __LINE__ + 1);
    log_ctx_warning_errno(&ctx, -EPIPE, "connection lost: %m");

    ssize_t n = recv(fd, dgram, sizeof(dgram) - 1, MSG_DONTWAIT);
    CHECK(n > 0);
    dgram[n] = '\0';
    check_field(dgram, "MESSAGE", "Session 3: connection lost: Broken pipe");
    check_field(dgram, "PRIORITY", "4");
    check_field(dgram, "SYSLOG_IDENTIFIER", "test-log");
    check_field(dgram, "CODE_FILE", __FILE__);
    check_field(dgram, "CODE_LINE", line);
    check_field(dgram, "CODE_FUNC", "journal_child");
    check_field(dgram, "ERRNO", "32");
    check_field(dgram, "QUBES_LITE_VM", "work");
    check_field(dgram, "QUBES_LITE_SESSION", "3");
    check_field(dgram, "QUBES_LITE_PID", "4242");
    char buf[64];
    CHECK(field(dgram, "QUBES_LITE_GONE", buf, sizeof(buf)) == NULL);

    /* Without a context or an error: the process's fields only. */
    log_info("Listening on %s", "vsock::5200");
    n = recv(fd, dgram, sizeof(dgram) - 1, MSG_DONTWAIT);
    CHECK(n > 0);
    dgram[n] = '\0';
    check_field(dgram, "MESSAGE", "Listening on vsock::5200");
    check_field(dgram, "PRIORITY", "6");
    check_field(dgram, "QUBES_LITE_VM", "work");
    CHECK(field(dgram, "ERRNO", buf, sizeof(buf)) == NULL);
    CHECK(field(dgram, "QUBES_LITE_SESSION", buf, sizeof(buf)) == NULL);

    /* The journal refuses (nobody reads its socket): the record goes to
     * stderr, prefixed. */
    CHECK(close(fd) == 0);
    log_error("Still said");
    _exit(0);
}

static void test_journal_fields(void **state) {
    char path[] = "/tmp/test-log-XXXXXX";
    int out = mkstemp(path);
    assert_true(out >= 0);
    unlink(path);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(out, STDERR_FILENO);
        journal_child();
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == 77) {
        close(out);
        skip();
    }
    assert_int_equal(WEXITSTATUS(status), 0);
    char buf[256];
    ssize_t n = pread(out, buf, sizeof(buf) - 1, 0);
    assert_true(n >= 0);
    buf[n] = '\0';
    assert_string_equal(buf, "<3>Still said\n");
    close(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stderr_lines),          cmocka_unit_test(test_levels),
        cmocka_unit_test(test_journal_stream_prefix), cmocka_unit_test(test_long_message),
        cmocka_unit_test(test_context_fields),        cmocka_unit_test(test_journal_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
