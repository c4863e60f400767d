/* proto/util: number parsing, sanitizing peer strings for logs, the fd
 * helpers and fd passing. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

/* ---- parse_uint ----------------------------------------------------------- */

static void test_parse_uint(void **state) {
    unsigned long long v = 42;
    assert_int_equal(parse_uint("0", 0, 10, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(parse_uint("10", 0, 10, &v), 0);
    assert_int_equal(v, 10);
    assert_int_equal(parse_uint("007", 0, 10, &v), 0);
    assert_int_equal(v, 7);
    assert_int_equal(parse_uint("18446744073709551615", 0, ULLONG_MAX, &v), 0);
    assert_true(v == ULLONG_MAX);
    assert_int_equal(parse_uint("4294967295", 0, UINT32_MAX, &v), 0);

    v = 42;
    assert_int_equal(parse_uint("11", 0, 10, &v), -ERANGE);
    assert_int_equal(parse_uint("4", 5, 10, &v), -ERANGE);
    assert_int_equal(parse_uint("4294967296", 0, UINT32_MAX, &v), -ERANGE);
    assert_int_equal(v, 42); /* untouched on failure */
}

static void test_parse_uint_rejects(void **state) {
    const char *bad[] = {"",
                         "-1",
                         "+1",
                         " 1",
                         "1 ",
                         "1x",
                         "0x10",
                         "1.0",
                         "abc",
                         "18446744073709551616",
                         "99999999999999999999999",
                         "\n1"};
    unsigned long long v = 42;
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        int r = parse_uint(bad[i], 0, ULLONG_MAX, &v);
        if (r != -EINVAL) {
            fail_msg("\"%s\" gave %d, not -EINVAL", bad[i], r);
        }
    }
    assert_int_equal(parse_uint(NULL, 0, 1, &v), -EINVAL);
    assert_int_equal(v, 42);
}

/* ---- str_sanitize --------------------------------------------------------- */

static const char *san(const char *s, size_t len, size_t bufsize) {
    static char buf[256];
    memset(buf, '#', sizeof(buf));
    assert_true(bufsize <= sizeof(buf));
    assert_ptr_equal(str_sanitize(s, len, buf, bufsize), buf);
    if (bufsize > 0) {
        assert_true(strlen(buf) < bufsize);
    }
    /* Nothing written past bufsize. */
    for (size_t i = bufsize; i < sizeof(buf); i++) {
        assert_int_equal(buf[i], '#');
    }
    return buf;
}

static void test_sanitize_escaping(void **state) {
    assert_string_equal(san("hello world", 11, 64), "hello world");
    assert_string_equal(san("", 0, 64), "");
    assert_string_equal(san("a\nb", 3, 64), "a\\x0ab");
    assert_string_equal(san("\x1b[31m", 5, 64), "\\x1b[31m");
    assert_string_equal(san("back\\slash", 10, 64), "back\\x5cslash");
    assert_string_equal(san("del\x7f", 4, 64), "del\\x7f");
    assert_string_equal(san("caf\xc3\xa9", 5, 64), "caf\\xc3\\xa9");
    assert_string_equal(san("a\0b", 3, 64), "a\\x00b"); /* len, not NUL, ends it */
    assert_string_equal(san("abcdef", 3, 64), "abc");
    assert_string_equal(san("~ !", 3, 64), "~ !");
}

static void test_sanitize_fits_exactly(void **state) {
    /* Output that fits, NUL included, is not marked as truncated. */
    assert_string_equal(san("abc", 3, 4), "abc");
    assert_string_equal(san("abc", 3, 8), "abc");
    assert_string_equal(san("abcdef", 6, 7), "abcdef");
    assert_string_equal(san("\n", 1, 5), "\\x0a");
    assert_string_equal(san("a\n", 2, 6), "a\\x0a");
}

static void test_sanitize_truncation(void **state) {
    const char *s;
    s = san("abcdefghijklmnop", 16, 8);
    assert_string_equal(s, "abcd...");
    s = san("abcdefgh", 8, 8);
    assert_string_equal(s, "abcd...");
    s = san("abcdefg", 7, 8);
    assert_string_equal(s, "abcdefg");
    /* An escape is dropped whole, never cut. */
    s = san("\x01\x02\x03", 3, 10);
    assert_string_equal(s, "\\x01...");
    s = san("a\x01\x02\x03", 4, 10);
    assert_string_equal(s, "a\\x01...");
    s = san("ab\x01\x02", 4, 9);
    assert_string_equal(s, "ab...");
    /* Tiny buffers: always terminated, never overrun. */
    assert_string_equal(san("abc", 3, 1), "");
    assert_string_equal(san("abcdef", 6, 3), "");
    assert_string_equal(san("abcdef", 6, 4), "...");
    assert_string_equal(san("abcdef", 6, 5), "a...");
    assert_string_equal(san("\n\n", 2, 4), "...");
    /* bufsize 0: nothing written at all. */
    san("abc", 3, 0);
    /* Long input, realistic buffer. */
    char big[1000];
    memset(big, 'x', sizeof(big));
    s = san(big, sizeof(big), 128);
    assert_int_equal(strlen(s), 127);
    assert_string_equal(s + 124, "...");
}

/* ---- fd helpers ----------------------------------------------------------- */

static void test_fd_flags(void **state) {
    _cleanup_close_pair_ int p[2] = {-EBADF, -EBADF};
    assert_int_equal(pipe(p), 0);
    assert_int_equal(fd_nonblock(p[0], true), 0);
    assert_true(fcntl(p[0], F_GETFL) & O_NONBLOCK);
    assert_int_equal(fd_nonblock(p[0], true), 0);
    assert_int_equal(fd_nonblock(p[0], false), 0);
    assert_false(fcntl(p[0], F_GETFL) & O_NONBLOCK);
    assert_int_equal(fd_cloexec(p[1], true), 0);
    assert_true(fcntl(p[1], F_GETFD) & FD_CLOEXEC);
    assert_int_equal(fd_cloexec(p[1], false), 0);
    assert_false(fcntl(p[1], F_GETFD) & FD_CLOEXEC);
    assert_int_equal(fd_nonblock(-1, true), -EBADF);
    assert_int_equal(fd_cloexec(-1, true), -EBADF);
}

static void test_take_and_close(void **state) {
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    int taken = TAKE_FD(fd);
    assert_int_equal(fd, -EBADF);
    errno = EXDEV;
    assert_int_equal(safe_close(taken), -EBADF);
    assert_int_equal(errno, EXDEV); /* cleanup keeps errno */
    assert_int_equal(fcntl(taken, F_GETFD), -1);
    assert_int_equal(safe_close(-EBADF), -EBADF);

    char *p = strdup("x");
    char *q = TAKE_PTR(p);
    assert_null(p);
    free(q);
    assert_true(streq("a", "a"));
    assert_false(streq("a", "b"));
    assert_true(startswith("unix:/x", "unix:"));
    assert_false(startswith("uni", "unix:"));
    assert_true(now_usec(CLOCK_MONOTONIC) > 0);
}

/* strv_free() takes the strings with the array; the cleanup form and
 * NULL too (the sanitizer build sees a leak or a double free). */
static void test_strv_free(void **state) {
    char **v = calloc(3, sizeof(char *));
    assert_non_null(v);
    v[0] = strdup("crosvm");
    v[1] = strdup("run");
    strv_free(v);
    strv_free(NULL);
    {
        _cleanup_strv_free_ char **w = calloc(2, sizeof(char *));
        assert_non_null(w);
        w[0] = strdup("ssh");
    }
    {
        _cleanup_strv_free_ char **none = NULL;
        (void)none;
    }
}

static void test_loop_write_read(void **state) {
    _cleanup_close_pair_ int sv[2] = {-EBADF, -EBADF};
    static uint8_t out[1 << 20], in[1 << 20];
    bool eof = true;
    pid_t pid;

    for (size_t i = 0; i < sizeof(out); i++) {
        out[i] = (uint8_t)(i ^ (i >> 8));
    }
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    /* More than a socket buffer: the writer must loop over partial writes
     * while a child reads. */
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(sv[1]);
        int r = loop_read_exact(sv[0], in, sizeof(in), &eof);
        _exit(r == 0 && !eof && memcmp(in, out, sizeof(in)) == 0 ? 0 : 1);
    }
    assert_int_equal(loop_write(sv[1], out, sizeof(out)), 0);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(loop_write(sv[1], out, 0), 0);

    /* EOF before anything: 0 with eof set; in the middle: -EPIPE. */
    assert_int_equal(loop_write(sv[1], "abc", 3), 0);
    sv[1] = safe_close(sv[1]);
    assert_int_equal(loop_read_exact(sv[0], in, 2, &eof), 0);
    assert_false(eof);
    assert_int_equal(loop_read_exact(sv[0], in, 2, &eof), -EPIPE);
    assert_int_equal(loop_read_exact(sv[0], in, 2, &eof), 0);
    assert_true(eof);
    assert_int_equal(loop_read_exact(sv[0], in, 2, NULL), -EPIPE);

    assert_int_equal(loop_write(-1, "x", 1), -EBADF);
    assert_int_equal(loop_read_exact(-1, in, 1, NULL), -EBADF);
}

static void test_loop_write_peer_gone(void **state) {
    _cleanup_close_pair_ int sv[2] = {-EBADF, -EBADF};
    struct sigaction ign = {.sa_handler = SIG_IGN}, old;
    assert_int_equal(sigaction(SIGPIPE, &ign, &old), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    sv[0] = safe_close(sv[0]);
    assert_int_equal(loop_write(sv[1], "x", 1), -EPIPE);
    assert_int_equal(sigaction(SIGPIPE, &old, NULL), 0);
}

/* ---- fd passing ----------------------------------------------------------- */

static int count_fds(void) {
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    while (readdir(d)) {
        n++;
    }
    closedir(d);
    return n;
}

/* Sends buf with nfds fds (copies of the write end of a pipe) in one
 * SCM_RIGHTS message. */
static void send_fds(int sock, const char *buf, size_t n, const int *fds, size_t nfds) {
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * 8)];
    } control = {0};
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = n};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    assert_true(nfds <= 8);
    mh.msg_control = control.buf;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    assert_int_equal(sendmsg(sock, &mh, MSG_NOSIGNAL), (ssize_t)n);
}

static void test_send_recv_one_fd(void **state) {
    _cleanup_close_pair_ int sv[2] = {-EBADF, -EBADF};
    _cleanup_close_pair_ int p[2] = {-EBADF, -EBADF};
    _cleanup_close_ int got = -EBADF;
    char buf[16];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);

    assert_int_equal(send_with_fd(sv[0], "hello", 5, p[1]), 0);
    assert_int_equal(recv_with_fd(sv[1], buf, sizeof(buf), &got), 5);
    assert_memory_equal(buf, "hello", 5);
    assert_true(got >= 0);
    assert_true(fcntl(got, F_GETFD) & FD_CLOEXEC);
    assert_int_equal(write(got, "z", 1), 1);
    assert_int_equal(read(p[0], buf, 1), 1);
    assert_int_equal(buf[0], 'z');

    /* No fd: plain data, ret_fd untouched. */
    int none = -EBADF;
    assert_int_equal(send_with_fd(sv[0], "plain", 5, -EBADF), 0);
    assert_int_equal(recv_with_fd(sv[1], buf, sizeof(buf), &none), 5);
    assert_int_equal(none, -EBADF);

    assert_int_equal(send_with_fd(sv[0], "", 0, p[1]), -EINVAL);
    sv[0] = safe_close(sv[0]);
    assert_int_equal(recv_with_fd(sv[1], buf, sizeof(buf), &none), 0); /* EOF */
    assert_int_equal(recv_with_fd(-1, buf, sizeof(buf), &none), -EBADF);
}

/* One sendmsg() with fds: they arrive with the bytes; too many are
 * refused; a full socket says so instead of blocking (MSG_DONTWAIT). */
static void test_sendmsg_fds(void **state) {
    _cleanup_close_pair_ int sv[2] = {-EBADF, -EBADF};
    _cleanup_close_pair_ int p[2] = {-EBADF, -EBADF};
    int fds[SENDMSG_FDS_MAX + 1], got[2];
    size_t count = 0;
    char buf[64 * 1024];
    int sndbuf = 4096;

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    for (size_t i = 0; i < ELEMENTSOF(fds); i++) {
        fds[i] = p[0];
    }
    assert_int_equal(sendmsg_fds(sv[0], "x", 1, fds, ELEMENTSOF(fds), 0), -EINVAL);
    assert_int_equal(sendmsg_fds(sv[0], "ab", 2, p, 2, 0), 2);
    assert_int_equal(recv_with_fds(sv[1], buf, sizeof(buf), got, 2, &count), 2);
    assert_int_equal(count, 2);
    assert_memory_equal(buf, "ab", 2);
    assert_int_equal(write(got[1], "z", 1), 1);
    assert_int_equal(read(got[0], buf, 1), 1);
    assert_int_equal(buf[0], 'z');
    safe_close(got[0]);
    safe_close(got[1]);

    /* No fds: plain bytes; then fill the socket. */
    assert_int_equal(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
    memset(buf, 'y', sizeof(buf));
    ssize_t k;
    while ((k = sendmsg_fds(sv[0], buf, sizeof(buf), NULL, 0, MSG_DONTWAIT)) > 0) {
    }
    assert_int_equal(k, -EAGAIN);
}

static void test_recv_closes_extra_fds(void **state) {
    _cleanup_close_pair_ int sv[2] = {-EBADF, -EBADF};
    _cleanup_close_pair_ int p[2] = {-EBADF, -EBADF};
    char buf[16];
    int fds[3];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    fds[0] = fds[1] = fds[2] = p[1];
    int before = count_fds();

    /* Three fds, room for one: the first is kept, the others closed. */
    _cleanup_close_ int got = -EBADF;
    send_fds(sv[0], "abc", 3, fds, 3);
    assert_int_equal(recv_with_fd(sv[1], buf, sizeof(buf), &got), 3);
    assert_true(got >= 0);
    assert_int_equal(count_fds(), before + 1);

    /* The caller wants none: all are closed. */
    send_fds(sv[0], "def", 3, fds, 2);
    assert_int_equal(recv_with_fd(sv[1], buf, sizeof(buf), NULL), 3);
    assert_int_equal(count_fds(), before + 1);

    /* The caller already holds one: the new ones are closed, its own kept. */
    int kept = got;
    send_fds(sv[0], "ghi", 3, fds, 1);
    assert_int_equal(recv_with_fd(sv[1], buf, sizeof(buf), &got), 3);
    assert_int_equal(got, kept);
    assert_int_equal(count_fds(), before + 1);

    /* More fds than the control buffer holds: the message is refused and
     * nothing leaks. */
    int many[8] = {p[1], p[1], p[1], p[1], p[1], p[1], p[1], p[1]};
    int extra = -EBADF;
    send_fds(sv[0], "jkl", 3, many, 8);
    assert_int_equal(recv_with_fd(sv[1], buf, sizeof(buf), &extra), -EBADMSG);
    assert_int_equal(extra, -EBADF); /* nothing handed out on failure */
    assert_int_equal(count_fds(), before + 1);

    /* Once every copy of the write end is closed, the pipe reports EOF. */
    got = safe_close(got);
    p[1] = safe_close(p[1]);
    assert_int_equal(read(p[0], buf, 1), 0);
}

/* Strict mode: a message with one fd too many, control data the caller
 * did not ask for or more bytes than the buffer is refused whole, and
 * nothing it brought stays open. */
static void test_recv_fds_strict(void **state) {
    _cleanup_close_pair_ int sv[2] = {-EBADF, -EBADF};
    _cleanup_close_pair_ int p[2] = {-EBADF, -EBADF};
    char buf[4];
    int fds[RECV_FDS_MAX];
    size_t count = 0;
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    int three[3] = {p[1], p[1], p[1]};
    int many[8] = {p[1], p[1], p[1], p[1], p[1], p[1], p[1], p[1]};
    int before = count_fds();

    /* Nothing there yet: a non-blocking receive says so. */
    assert_int_equal(
        recv_fds(sv[1], buf, sizeof(buf), fds, 2, &count, RECV_FDS_STRICT | RECV_FDS_NONBLOCK),
        -EAGAIN);

    /* As many as allowed: kept, close-on-exec. */
    send_fds(sv[0], "ab", 2, three, 2);
    assert_int_equal(recv_fds(sv[1], buf, sizeof(buf), fds, 2, &count, RECV_FDS_STRICT), 2);
    assert_int_equal(count, 2);
    assert_true(fcntl(fds[0], F_GETFD) & FD_CLOEXEC);
    assert_true(fcntl(fds[1], F_GETFD) & FD_CLOEXEC);
    fds[0] = safe_close(fds[0]);
    fds[1] = safe_close(fds[1]);
    count = 0;
    assert_int_equal(count_fds(), before);

    /* One more than allowed: refused, all closed. */
    send_fds(sv[0], "cd", 2, three, 3);
    assert_int_equal(recv_fds(sv[1], buf, sizeof(buf), fds, 2, &count, RECV_FDS_STRICT), -EBADMSG);
    assert_int_equal(count, 0);
    assert_int_equal(count_fds(), before);

    /* Far more than the kernel buffer takes: truncated, refused. */
    send_fds(sv[0], "ef", 2, many, 8);
    assert_int_equal(recv_fds(sv[1], buf, sizeof(buf), fds, 2, &count, RECV_FDS_STRICT), -EBADMSG);
    assert_int_equal(count_fds(), before);

    /* The fds of earlier calls stay the caller's: only this call's go. */
    send_fds(sv[0], "g", 1, three, 1);
    assert_int_equal(recv_fds(sv[1], buf, sizeof(buf), fds, 2, &count, RECV_FDS_STRICT), 1);
    send_fds(sv[0], "h", 1, three, 2);
    assert_int_equal(recv_fds(sv[1], buf, sizeof(buf), fds, 2, &count, RECV_FDS_STRICT), -EBADMSG);
    assert_int_equal(count, 1);
    assert_int_equal(count_fds(), before + 1);
    fds[0] = safe_close(fds[0]);
    count = 0;

    /* A datagram longer than the buffer: refused with its fd in strict
     * mode, cut short without it. */
    send_fds(sv[0], "abcdefgh", 8, three, 1);
    assert_int_equal(recv_fds(sv[1], buf, sizeof(buf), fds, 2, &count, RECV_FDS_STRICT), -EBADMSG);
    assert_int_equal(count_fds(), before);
    send_fds(sv[0], "abcdefgh", 8, three, 1);
    assert_int_equal(recv_fds(sv[1], buf, sizeof(buf), fds, 2, &count, 0), (ssize_t)sizeof(buf));
    assert_int_equal(count, 1);
    fds[0] = safe_close(fds[0]);
    count = 0;

    /* Control data other than fds (credentials, which the sender may
     * attach once the receiver asks for them). */
    int on = 1;
    assert_int_equal(setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)), 0);
    assert_int_equal(send(sv[0], "i", 1, 0), 1);
    assert_int_equal(recv_fds(sv[1], buf, sizeof(buf), fds, 2, &count, RECV_FDS_STRICT), -EBADMSG);
    assert_int_equal(send(sv[0], "j", 1, 0), 1);
    assert_int_equal(recv_fds(sv[1], buf, sizeof(buf), fds, 2, &count, 0), 1);
    assert_int_equal(count, 0);

    /* A caller asking for more than the helper holds. */
    assert_int_equal(recv_fds(sv[1], buf, sizeof(buf), fds, RECV_FDS_MAX + 1, &count, 0), -EINVAL);
    assert_int_equal(count_fds(), before);
}

/* Exact reads with fds: the bytes come in several parts, each with fds;
 * all are gathered, and the limit counts over the whole read. */
static void test_recv_exact_fds(void **state) {
    _cleanup_close_pair_ int sv[2] = {-EBADF, -EBADF};
    _cleanup_close_pair_ int p[2] = {-EBADF, -EBADF};
    char buf[8];
    int fds[4];
    size_t count = 0;
    bool eof = true;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    int two[2] = {p[1], p[1]};
    int before = count_fds();

    send_fds(sv[0], "abc", 3, two, 1);
    send_fds(sv[0], "defgh", 5, two, 2);
    assert_int_equal(recv_exact_fds(sv[1], buf, 8, fds, 4, &count, RECV_FDS_STRICT, &eof), 0);
    assert_false(eof);
    assert_memory_equal(buf, "abcdefgh", 8);
    assert_int_equal(count, 3);
    assert_int_equal(count_fds(), before + 3);
    while (count > 0) {
        count--;
        fds[count] = safe_close(fds[count]);
    }

    /* Over the limit in the second part: that part's fds are closed, the
     * first part's are left to the caller. */
    send_fds(sv[0], "abc", 3, two, 2);
    send_fds(sv[0], "defgh", 5, two, 2);
    assert_int_equal(recv_exact_fds(sv[1], buf, 8, fds, 3, &count, RECV_FDS_STRICT, NULL),
                     -EBADMSG);
    assert_int_equal(count, 2);
    assert_int_equal(count_fds(), before + 2);
    while (count > 0) {
        count--;
        fds[count] = safe_close(fds[count]);
    }
    /* What that part carried is gone with it; start clean. */
    char rest[8];
    (void)recv(sv[1], rest, sizeof(rest), MSG_DONTWAIT);

    /* EOF: before anything, a clean end; in the middle, -EPIPE. */
    assert_int_equal(send(sv[0], "xy", 2, 0), 2);
    sv[0] = safe_close(sv[0]);
    assert_int_equal(recv_exact_fds(sv[1], buf, 4, fds, 4, &count, 0, &eof), -EPIPE);
    assert_int_equal(recv_exact_fds(sv[1], buf, 4, fds, 4, &count, 0, &eof), 0);
    assert_true(eof);
    assert_int_equal(count, 0);
    assert_int_equal(count_fds(), before - 1); /* sv[0] is closed */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_uint),
        cmocka_unit_test(test_parse_uint_rejects),
        cmocka_unit_test(test_sanitize_escaping),
        cmocka_unit_test(test_sanitize_fits_exactly),
        cmocka_unit_test(test_sanitize_truncation),
        cmocka_unit_test(test_fd_flags),
        cmocka_unit_test(test_take_and_close),
        cmocka_unit_test(test_strv_free),
        cmocka_unit_test(test_loop_write_read),
        cmocka_unit_test(test_loop_write_peer_gone),
        cmocka_unit_test(test_send_recv_one_fd),
        cmocka_unit_test(test_sendmsg_fds),
        cmocka_unit_test(test_recv_closes_extra_fds),
        cmocka_unit_test(test_recv_fds_strict),
        cmocka_unit_test(test_recv_exact_fds),
    };
    return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
