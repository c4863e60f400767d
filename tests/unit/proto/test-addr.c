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
#include <sys/stat.h>
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

static void test_format_roundtrip(void **state) {
    const char *good[] = {"vsock:3:5200",
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
        cmocka_unit_test(test_format_roundtrip),
        cmocka_unit_test(test_listen_connect_unix),
        cmocka_unit_test(test_systemd_none),
    };
    /* clang-format on */
    return cmocka_run_group_tests_name("addr", tests, NULL, NULL);
}
