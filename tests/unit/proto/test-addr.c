/* proto/addr: parsing and formatting transport addresses, and a unix
 * listener with a client connected to it. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "addr.h"
#include "util.h"

static void test_parse_vsock(void **state) {
    Addr a;
    assert_int_equal(addr_parse("vsock:3:5200", &a), 0);
    assert_int_equal(a.family, AF_VSOCK);
    assert_int_equal(a.vm.svm_family, AF_VSOCK);
    assert_int_equal(a.vm.svm_cid, 3);
    assert_int_equal(a.vm.svm_port, 5200);
    assert_int_equal(a.len, sizeof(struct sockaddr_vm));

    assert_int_equal(addr_parse("vsock::5200", &a), 0);
    assert_int_equal(a.vm.svm_cid, VMADDR_CID_ANY);
    assert_int_equal(a.vm.svm_port, 5200);

    assert_int_equal(addr_parse("vsock:2:1", &a), 0);
    assert_int_equal(a.vm.svm_cid, 2);
    assert_int_equal(addr_parse("vsock:4294967295:4294967294", &a), 0);
    assert_int_equal(a.vm.svm_cid, UINT32_MAX);
    assert_int_equal(a.vm.svm_port, UINT32_MAX - 1);
}

static void test_parse_unix(void **state) {
    char longest[sizeof(((struct sockaddr_un *)0)->sun_path) + 8];
    Addr a;
    assert_int_equal(addr_parse("unix:/x", &a), 0);
    assert_int_equal(a.family, AF_UNIX);
    assert_int_equal(a.un.sun_family, AF_UNIX);
    assert_string_equal(a.un.sun_path, "/x");
    assert_int_equal(a.len, offsetof(struct sockaddr_un, sun_path) + 3);

    assert_int_equal(addr_parse("unix:relative/sock", &a), 0);
    assert_string_equal(a.un.sun_path, "relative/sock");

    /* sun_path holds 107 characters and the terminating NUL. */
    size_t max = sizeof(a.un.sun_path) - 1;
    memcpy(longest, "unix:", 5);
    memset(longest + 5, 'p', max);
    longest[5 + max] = '\0';
    assert_int_equal(addr_parse(longest, &a), 0);
    assert_int_equal(strlen(a.un.sun_path), max);
    longest[5 + max] = 'p';
    longest[5 + max + 1] = '\0';
    assert_int_equal(addr_parse(longest, &a), -EINVAL);
}

static void test_parse_rejects(void **state) {
    const char *bad[] = {
        "",
        "unix:",              /* empty path */
        "vsock:x:1",          /* CID not a number */
        "vsock:1:",           /* no port */
        "vsock:1",            /* no port separator */
        "vsock:",             /* nothing */
        "vsock::",            /* no port, any CID */
        "vsock:1:4294967295", /* VMADDR_PORT_ANY */
        "vsock:1:4294967296", /* over 32 bits */
        "vsock:4294967296:1",
        "vsock:-1:5",
        "vsock:+1:5",
        "vsock: 1:5",
        "vsock:1:5 ",
        "vsock:1:0x10",
        "vsock:1:2:3",
        "vsock:99999999999999999999:1",
        "tcp:127.0.0.1:22", /* unknown scheme */
        "UNIX:/x",
        "/run/sock",
        "unix",
        "vsock",
        "hvsock:",            /* nothing */
        "hvsock:/x",          /* no port */
        "hvsock:/x:",         /* empty port */
        "hvsock::5200",       /* empty path */
        "hvsock:/x:4294967295", /* VMADDR_PORT_ANY */
        "hvsock:/x:52a",
        "hvsock:/x:-1",
        "HVSOCK:/x:1",
    };
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        Addr a = {.family = 12345};
        int r = addr_parse(bad[i], &a);
        if (r != -EINVAL) {
            fail_msg("\"%s\" gave %d, not -EINVAL", bad[i], r);
        }
        assert_int_equal(a.family, 12345); /* ret untouched on failure */
    }
}

static void test_parse_hvsock(void **state) {
    Addr a;
    assert_int_equal(addr_parse("hvsock:/run/qubes-lite/work-vsock.sock:5200", &a), 0);
    assert_int_equal(a.family, AF_UNIX);
    assert_true(a.hvsock);
    assert_int_equal(a.hvsock_port, 5200);
    assert_string_equal(a.un.sun_path, "/run/qubes-lite/work-vsock.sock");
    assert_int_equal(a.len, offsetof(struct sockaddr_un, sun_path) +
                                strlen("/run/qubes-lite/work-vsock.sock") + 1);

    /* The port follows the last colon; the path may hold colons. */
    assert_int_equal(addr_parse("hvsock:/tmp/a:b:0", &a), 0);
    assert_string_equal(a.un.sun_path, "/tmp/a:b");
    assert_int_equal(a.hvsock_port, 0);
    assert_int_equal(addr_parse("hvsock:rel:4294967294", &a), 0);
    assert_int_equal(a.hvsock_port, UINT32_MAX - 1);

    /* unix: and vsock: are not hvsock. */
    assert_int_equal(addr_parse("unix:/x:1", &a), 0);
    assert_false(a.hvsock);
    assert_string_equal(a.un.sun_path, "/x:1");

    /* The path fits sun_path, as for unix:. */
    char longest[8 + sizeof(a.un.sun_path) + 8];
    size_t max = sizeof(a.un.sun_path) - 1;
    memcpy(longest, "hvsock:", 7);
    memset(longest + 7, 'p', max);
    strcpy(longest + 7 + max, ":1");
    assert_int_equal(addr_parse(longest, &a), 0);
    assert_int_equal(strlen(a.un.sun_path), max);
    memset(longest + 7, 'p', max + 1);
    strcpy(longest + 7 + max + 1, ":1");
    assert_int_equal(addr_parse(longest, &a), -EINVAL);

    /* Never listened on. */
    int fd = -EBADF;
    assert_int_equal(addr_parse("hvsock:/tmp/x:1", &a), 0);
    assert_int_equal(addr_listen(&a, &fd), -EAFNOSUPPORT);
    assert_int_equal(fd, -EBADF);
}

static void test_hvsock_line(void **state) {
    static const struct {
        const char *in;
        const char *word;
        int ret;
        uint32_t port;
    } cases[] = {
        {"CONNECT 5200\n", "CONNECT", 13, 5200},
        {"CONNECT 0\n", "CONNECT", 10, 0},
        {"CONNECT 4294967294\n", "CONNECT", 19, UINT32_MAX - 1},
        {"OK 1023\n", "OK", 8, 1023},
        {"OK 1023\nHELLO", "OK", 8, 1023}, /* the stream may follow */
        /* Prefixes of a line ask for more. */
        {"", "CONNECT", 0, 0},
        {"CONN", "CONNECT", 0, 0},
        {"CONNECT", "CONNECT", 0, 0},
        {"CONNECT ", "CONNECT", 0, 0},
        {"CONNECT 52", "CONNECT", 0, 0},
        /* Anything else is refused at once. */
        {"CONNECT 4294967295\n", "CONNECT", -EPROTO, 0}, /* VMADDR_PORT_ANY */
        {"CONNECT 4294967296\n", "CONNECT", -EPROTO, 0},
        {"CONNECT 99999999999\n", "CONNECT", -EPROTO, 0},
        {"CONNECT 052\n", "CONNECT", -EPROTO, 0}, /* leading zero */
        {"CONNECT 00", "CONNECT", -EPROTO, 0},
        {"CONNECT \n", "CONNECT", -EPROTO, 0},
        {"CONNECT  52\n", "CONNECT", -EPROTO, 0},
        {"CONNECT +52\n", "CONNECT", -EPROTO, 0},
        {"CONNECT 52 \n", "CONNECT", -EPROTO, 0},
        {"CONNECT 52\r\n", "CONNECT", -EPROTO, 0},
        {"connect 52\n", "CONNECT", -EPROTO, 0},
        {"CONNECTX 52\n", "CONNECT", -EPROTO, 0},
        {"OK 52\n", "CONNECT", -EPROTO, 0},
        {"CONNECT 52\n", "OK", -EPROTO, 0},
        {"\n", "OK", -EPROTO, 0},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        uint32_t port = 77;
        int r = hvsock_line_parse(cases[i].in, strlen(cases[i].in), cases[i].word, &port);
        if (r != cases[i].ret) {
            fail_msg("\"%s\" gave %d, not %d", cases[i].in, r, cases[i].ret);
        }
        assert_int_equal(port, r > 0 ? cases[i].port : 77); /* untouched unless parsed */
    }
    /* A NUL is just a wrong byte. */
    uint32_t port;
    assert_int_equal(hvsock_line_parse("CONNECT 5\0\n", 11, "CONNECT", &port), -EPROTO);

    char buf[HVSOCK_LINE_MAX];
    assert_int_equal(hvsock_line_format(buf, sizeof(buf), "OK", 1023), 8);
    assert_memory_equal(buf, "OK 1023\n", 8);
    assert_int_equal(hvsock_line_format(buf, sizeof(buf), "CONNECT", UINT32_MAX - 1), 19);
    assert_int_equal(hvsock_line_parse(buf, 19, "CONNECT", &port), 19);
    assert_int_equal(port, UINT32_MAX - 1);
    assert_int_equal(hvsock_line_format(buf, 5, "CONNECT", 1), -ENOBUFS);
}

/* Plays a vsock device on lfd for one client: reads its CONNECT line and
 * answers with reply (NULL: closes), then writes "stream" right behind it
 * and, when the reply was an OK line, reads the client's "hello". Runs in a child; exits 0 when all went
 * as expected. */
static _noreturn_ void fake_device(int lfd, uint32_t want_port, const char *reply) {
    struct pollfd pl = {.fd = lfd, .events = POLLIN};
    if (poll(&pl, 1, 10000) != 1) {
        _exit(9);
    }
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    char buf[64];
    uint32_t port;
    size_t got = 0;
    if (fd < 0) {
        _exit(10);
    }
    (void)fd_nonblock(fd, false);
    for (;;) {
        ssize_t k = read(fd, buf + got, 1);
        if (k != 1) {
            _exit(11);
        }
        got++;
        int r = hvsock_line_parse(buf, got, "CONNECT", &port);
        if (r < 0) {
            _exit(12);
        }
        if (r > 0) {
            break;
        }
    }
    if (port != want_port) {
        _exit(13);
    }
    if (!reply) {
        _exit(0);
    }
    /* The line and the first bytes of the stream in one piece: the client
     * must take the line and leave the rest. */
    snprintf(buf, sizeof(buf), "%sstream", reply);
    if (loop_write(fd, buf, strlen(buf)) < 0) {
        _exit(14);
    }
    if (!startswith(reply, "OK ")) {
        _exit(0); /* the client gives up */
    }
    if (loop_read_exact(fd, buf, 5, NULL) < 0 || memcmp(buf, "hello", 5) != 0) {
        _exit(15);
    }
    _exit(0);
}

static pid_t fork_device(int lfd, uint32_t port, const char *reply) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        fake_device(lfd, port, reply);
    }
    return pid;
}

static void wait_device(pid_t pid) {
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_hvsock_connect(void **state) {
    char dir[] = "/tmp/test-addr-XXXXXX";
    char spec[256], path[200];
    _cleanup_close_ int lfd = -EBADF;
    int fd = -EBADF;
    char buf[6];
    Addr a, u;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/vsock.sock", dir);
    snprintf(spec, sizeof(spec), "unix:%s", path);
    assert_int_equal(addr_parse(spec, &u), 0);
    assert_int_equal(addr_listen(&u, &lfd), 0);
    snprintf(spec, sizeof(spec), "hvsock:%s:5200", path);
    assert_int_equal(addr_parse(spec, &a), 0);

    /* Blocking: the OK line is read, the stream's first bytes stay. */
    pid_t pid = fork_device(lfd, 5200, "OK 1023\n");
    assert_int_equal(addr_connect(&a, ADDR_RESERVED_PORT, &fd), 0);
    assert_false(fcntl(fd, F_GETFL) & O_NONBLOCK);
    assert_int_equal(loop_read_exact(fd, buf, 6, NULL), 0);
    assert_memory_equal(buf, "stream", 6);
    assert_int_equal(loop_write(fd, "hello", 5), 0);
    wait_device(pid);
    fd = safe_close(fd);

    /* The device closes: nothing listens there. */
    pid = fork_device(lfd, 5200, NULL);
    assert_int_equal(addr_connect(&a, 0, &fd), -ECONNRESET);
    assert_int_equal(fd, -EBADF);
    wait_device(pid);

    /* Not a reply. */
    pid = fork_device(lfd, 5200, "NO 1023\n");
    assert_int_equal(addr_connect(&a, 0, &fd), -EPROTO);
    wait_device(pid);

    /* Non-blocking: -EINPROGRESS, then addr_connect_finish() until done,
     * waiting for what it asks. */
    pid = fork_device(lfd, 5200, "OK 7\n");
    assert_int_equal(addr_connect(&a, ADDR_NONBLOCK, &fd), -EINPROGRESS);
    assert_true(fd >= 0);
    assert_true(fcntl(fd, F_GETFL) & O_NONBLOCK);
    uint32_t events = EPOLLOUT;
    int r;
    unsigned rounds = 0;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events == EPOLLIN ? POLLIN : POLLOUT};
        assert_int_equal(poll(&p, 1, 10000), 1);
        r = addr_connect_finish(&a, fd, &events);
        rounds++;
        if (r != -EINPROGRESS) {
            break;
        }
        assert_int_equal(events, EPOLLIN);
    }
    assert_int_equal(r, 0);
    assert_true(rounds >= 1);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 10000), 1);
    assert_int_equal(read(fd, buf, 6), 6);
    assert_memory_equal(buf, "stream", 6);
    assert_int_equal(write(fd, "hello", 5), 5);
    wait_device(pid);
    fd = safe_close(fd);

    /* Non-blocking, refused. */
    pid = fork_device(lfd, 5200, NULL);
    assert_int_equal(addr_connect(&a, ADDR_NONBLOCK, &fd), -EINPROGRESS);
    wait_device(pid);
    assert_int_equal(addr_connect_finish(&a, fd, &events), -ECONNRESET);
    fd = safe_close(fd);

    /* For vsock and unix, finishing is the SO_ERROR check. */
    assert_int_equal(addr_connect(&u, ADDR_NONBLOCK, &fd), 0);
    assert_int_equal(addr_connect_finish(&u, fd, &events), 0);
    fd = safe_close(fd);
    _cleanup_close_ int afd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    assert_true(afd >= 0);

    /* Nobody listening. */
    lfd = safe_close(lfd);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(addr_connect(&a, ADDR_NONBLOCK, &fd), -ENOENT);
    assert_int_equal(fd, -EBADF);
    assert_int_equal(rmdir(dir), 0);
}

static void test_format_roundtrip(void **state) {
    const char *good[] = {"vsock:3:5200",
                          "hvsock:/run/qubes-lite/work-vsock.sock:5200",
                          "hvsock:/a:b:0",
                          "vsock::5200",
                          "vsock:2:1023",
                          "unix:/x",
                          "unix:/run/qubes-lite/banking.sock",
                          "vsock:4294967294:7"};
    char buf[ADDR_STR_MAX];
    for (size_t i = 0; i < ELEMENTSOF(good); i++) {
        Addr a, b;
        assert_int_equal(addr_parse(good[i], &a), 0);
        assert_ptr_equal(addr_format(&a, buf, sizeof(buf)), buf);
        assert_string_equal(buf, good[i]);
        assert_int_equal(addr_parse(buf, &b), 0);
        assert_int_equal(a.family, b.family);
        assert_int_equal(a.len, b.len);
        assert_memory_equal(&a.sa, &b.sa, a.len);
        assert_int_equal(a.hvsock, b.hvsock);
        assert_int_equal(a.hvsock_port, b.hvsock_port);
    }
    /* The longest path still fits ADDR_STR_MAX. */
    char longest[5 + sizeof(((struct sockaddr_un *)0)->sun_path)];
    Addr a;
    memcpy(longest, "unix:", 5);
    memset(longest + 5, 'q', sizeof(longest) - 6);
    longest[sizeof(longest) - 1] = '\0';
    assert_int_equal(addr_parse(longest, &a), 0);
    assert_string_equal(addr_format(&a, buf, sizeof(buf)), longest);

    /* CID 4294967295 is VMADDR_CID_ANY, written the short way. */
    assert_int_equal(addr_parse("vsock:4294967295:7", &a), 0);
    assert_string_equal(addr_format(&a, buf, sizeof(buf)), "vsock::7");

    Addr unknown = {.family = AF_INET};
    assert_string_equal(addr_format(&unknown, buf, sizeof(buf)), "?");
    /* A short buffer truncates, never overflows. */
    char tiny[8];
    assert_int_equal(addr_parse("vsock:3:5200", &a), 0);
    assert_string_equal(addr_format(&a, tiny, sizeof(tiny)), "vsock:3");
}

static void test_listen_connect_unix(void **state) {
    char dir[] = "/tmp/test-addr-XXXXXX";
    char spec[256], path[200];
    _cleanup_close_ int lfd = -EBADF, cfd = -EBADF, afd = -EBADF, lfd2 = -EBADF;
    uid_t uid;
    gid_t gid;
    pid_t pid;
    Addr a;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/agent.sock", dir);
    snprintf(spec, sizeof(spec), "unix:%s", path);
    assert_int_equal(addr_parse(spec, &a), 0);

    assert_int_equal(addr_listen(&a, &lfd), 0);
    assert_true(fcntl(lfd, F_GETFD) & FD_CLOEXEC);
    assert_true(fcntl(lfd, F_GETFL) & O_NONBLOCK);
    assert_int_equal(socket_family(lfd), AF_UNIX);

    assert_int_equal(addr_connect(&a, 0, &cfd), 0);
    assert_true(fcntl(cfd, F_GETFD) & FD_CLOEXEC);
    assert_false(fcntl(cfd, F_GETFL) & O_NONBLOCK);
    afd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    assert_true(afd >= 0);

    assert_int_equal(peer_ucred(afd, &uid, &gid, &pid), 0);
    assert_int_equal(uid, getuid());
    assert_int_equal(gid, getgid());
    assert_int_equal(pid, getpid());
    assert_int_equal(peer_ucred(afd, NULL, NULL, NULL), 0);
    uint32_t cid, port;
    assert_int_equal(peer_vsock(afd, &cid, &port), -EAFNOSUPPORT);

    assert_int_equal(loop_write(cfd, "ping", 4), 0);
    char buf[4];
    assert_int_equal(loop_read_exact(afd, buf, 4, NULL), 0);
    assert_memory_equal(buf, "ping", 4);

    /* A socket somebody listens on is never taken over. */
    assert_int_equal(addr_listen(&a, &lfd2), -EADDRINUSE);
    assert_int_equal(lfd2, -EBADF);
    int probe = -EBADF;
    assert_int_equal(addr_connect(&a, 0, &probe), 0);
    safe_close(probe);

    /* Removed only while it is the file we bound. */
    struct stat bound;
    assert_int_equal(lstat(path, &bound), 0);
    assert_int_equal(addr_unix_unlink_bound(path, &bound), 0);
    struct stat gone;
    assert_int_equal(lstat(path, &gone), -1);
    assert_int_equal(errno, ENOENT);
    lfd = safe_close(lfd);
    assert_int_equal(addr_listen(&a, &lfd), 0);
    struct stat other;
    assert_int_equal(lstat(path, &other), 0);
    assert_int_equal(addr_unix_unlink_bound(path, &bound), -ESTALE);
    assert_int_equal(lstat(path, &other), 0);

    /* A stale socket file from an earlier run is replaced. */
    lfd = safe_close(lfd);
    assert_int_equal(addr_listen(&a, &lfd2), 0);
    cfd = safe_close(cfd);
    assert_int_equal(addr_connect(&a, ADDR_NONBLOCK, &cfd), 0);
    assert_true(fcntl(cfd, F_GETFL) & O_NONBLOCK);
    lfd2 = safe_close(lfd2);

    /* ... but never a file of another kind. */
    assert_int_equal(unlink(path), 0);
    int f = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    assert_true(f >= 0);
    close(f);
    assert_int_equal(addr_listen(&a, &lfd2), -EEXIST);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));

    /* Nobody listening. */
    assert_int_equal(unlink(path), 0);
    cfd = safe_close(cfd);
    assert_int_equal(addr_connect(&a, 0, &cfd), -ENOENT);
    assert_int_equal(cfd, -EBADF);

    assert_int_equal(rmdir(dir), 0);
}

static void test_systemd_none(void **state) {
    int fd = -EBADF;
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_PID");
    assert_int_equal(addr_listen_fd_from_systemd(&fd), -ENOENT);
    assert_int_equal(fd, -EBADF);
}

int main(void) {
    /* clang-format off */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_vsock),
        cmocka_unit_test(test_parse_unix),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_parse_hvsock),
        cmocka_unit_test(test_hvsock_line),
        cmocka_unit_test(test_hvsock_connect),
        cmocka_unit_test(test_format_roundtrip),
        cmocka_unit_test(test_listen_connect_unix),
        cmocka_unit_test(test_systemd_none),
    };
    /* clang-format on */
    return cmocka_run_group_tests_name("addr", tests, NULL, NULL);
}
