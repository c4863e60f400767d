/* switch/sandbox: a description the sandbox refuses, and a process
 * sandboxed without a supervisor (the shape of a one-process device
 * backend): no new pid namespace, the binds and nothing else of the host,
 * its own host name, the limits, no_new_privs, its filter loaded, and
 * READY=1 reaching $NOTIFY_SOCKET from inside. vm-switch's shape, with a
 * supervisor, is tests/integration/test_sandbox.py's. Each sandbox is
 * entered in a process of its own: there is no way back out. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "switch/sandbox/sandbox.h"
#include "util.h"

#define HOSTNAME "sbx-test"
#define MAX_FDS 64

/* What the sandboxed process does after sandbox_enter(), and what glibc
 * does for it. */
static const FilterRule inside_rules[] = {
    FILTER_ALLOW("openat", "probes the root and writes into the bind"),
    FILTER_ALLOW("write", "writes that file"),
    FILTER_ALLOW("close", "closes it"),
    FILTER_ALLOW("uname", "gethostname()"),
    FILTER_ALLOW("getpid", "not PID 1: no pid namespace"),
    FILTER_ALLOW("prlimit64", "reads its limits"),
    FILTER_ALLOW_IF_EQ("prctl", 0, PR_GET_NO_NEW_PRIVS, "reads no_new_privs"),
    FILTER_ALLOW("sendto", "sandbox_notify() on the socket connected before"),
    FILTER_ALLOW("exit_group", "reports by its exit status"),
    FILTER_ALLOW("brk", "malloc"),
    FILTER_ALLOW_IF_CLEAR("mmap", 2, PROT_EXEC, "malloc"),
    FILTER_ALLOW("munmap", "free"),
};
static const FilterTable inside_filter = FILTER_TABLE("inside", inside_rules);

static bool userns_available(void) {
    char buf[32] = "";
    int fd = open("/proc/sys/user/max_user_namespaces", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return false;
    }
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    return n > 0 && atoi(buf) > 0;
}

/* Started as root, the sandbox needs someone to become. */
static const char *sandbox_user(void) {
    return geteuid() == 0 ? "nobody" : NULL;
}

/* Runs fn in a process of its own; its exit status (or 128 + signal). */
static int in_child(int (*fn)(void *), void *arg) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        _exit(fn(arg));
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int enter_refused(void *arg) {
    int r = sandbox_enter(arg);
    return r == -EINVAL ? 0 : 1;
}

static void test_description_refused(void **state) {
    SandboxBind binds[SANDBOX_MAX_BINDS + 1];
    for (size_t i = 0; i < ELEMENTSOF(binds); i++) {
        binds[i] = (SandboxBind){.source = "/tmp"};
    }
    SandboxConfig c = {
        .hostname = HOSTNAME,
        .filter = &inside_filter,
        .filter_mode = FILTER_DISABLED,
        .user = sandbox_user(),
        .limits = {.max_fds = MAX_FDS},
    };
    /* No filter, no host name, too many binds, a bind without a source. */
    SandboxConfig bad = c;
    bad.filter = NULL;
    assert_int_equal(in_child(enter_refused, &bad), 0);
    bad = c;
    bad.hostname = NULL;
    assert_int_equal(in_child(enter_refused, &bad), 0);
    bad = c;
    bad.binds = binds;
    bad.n_binds = ELEMENTSOF(binds);
    assert_int_equal(in_child(enter_refused, &bad), 0);
    SandboxBind no_source = {.target = "/x"};
    bad = c;
    bad.binds = &no_source;
    bad.n_binds = 1;
    assert_int_equal(in_child(enter_refused, &bad), 0);
    /* Root kept and a user to become; main-only descriptors too many, or
     * counted without any. */
    bad = c;
    bad.keep_root = true;
    bad.user = "nobody";
    assert_int_equal(in_child(enter_refused, &bad), 0);
    int fds[SANDBOX_MAX_MAIN_FDS + 1] = {0};
    bad = c;
    bad.main_fds = fds;
    bad.n_main_fds = ELEMENTSOF(fds);
    assert_int_equal(in_child(enter_refused, &bad), 0);
    bad = c;
    bad.n_main_fds = 1;
    assert_int_equal(in_child(enter_refused, &bad), 0);
    if (!userns_available()) {
        return;
    }
    /* Where the sandbox puts its own things, or the root itself. */
    const char *targets[] = {"/proc", "/dev/x", "/", "relative"};
    for (size_t i = 0; i < ELEMENTSOF(targets); i++) {
        SandboxBind b = {.source = "/tmp", .target = targets[i]};
        bad = c;
        bad.binds = &b;
        bad.n_binds = 1;
        assert_int_equal(in_child(enter_refused, &bad), 0);
    }
    /* A directory at its own path under a target the description chose. */
    SandboxBind nested[] = {{.source = "/usr", .target = "/etc"}, {.source = "/etc/ssl"}};
    bad = c;
    bad.binds = nested;
    bad.n_binds = ELEMENTSOF(nested);
    assert_int_equal(in_child(enter_refused, &bad), 0);
}

typedef struct Inside {
    const SandboxConfig *config;
    const char *dir; /* bound read-write at its own path */
} Inside;

/* In the sandbox: each fact checked, the first that is wrong named by the
 * exit status. */
static int inside(void *arg) {
    const Inside *in = arg;
    int r = sandbox_enter(in->config);
    if (r < 0) {
        return 10;
    }
    if (getpid() == 1) {
        return 11; /* no pid namespace without a supervisor */
    }
    char host[64] = "";
    if (gethostname(host, sizeof(host)) < 0 || !streq(host, HOSTNAME)) {
        return 12;
    }
    /* The bind is there and writable; the host's files are not. */
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/inside", in->dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, "ok", 2) != 2) {
        return 13;
    }
    close(fd);
    if (open("/etc/passwd", O_RDONLY | O_CLOEXEC) >= 0 || errno != ENOENT) {
        return 14;
    }
    if (open("/proc/self/status", O_RDONLY | O_CLOEXEC) >= 0) {
        return 15; /* no /proc without a pid namespace of our own */
    }
    /* The root itself is read-only. */
    if (open("/new", O_WRONLY | O_CREAT | O_CLOEXEC, 0644) >= 0 || errno != EROFS) {
        return 16;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_max != MAX_FDS ||
        getrlimit(RLIMIT_CORE, &rl) < 0 || rl.rlim_max != 0) {
        return 17;
    }
    if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1 || !filter_applied()) {
        return 18;
    }
    if (sandbox_notify("READY=1") != 1) {
        return 19;
    }
    return 0;
}

static void test_no_supervisor(void **state) {
    if (!userns_available()) {
        skip();
    }
    char top[] = "/tmp/qlsbx-unit.XXXXXX";
    assert_non_null(mkdtemp(top));
    assert_int_equal(chmod(top, 0755), 0);
    char dir[64], notify[64];
    snprintf(dir, sizeof(dir), "%s/dir", top);
    snprintf(notify, sizeof(notify), "%s/notify", top);
    assert_int_equal(mkdir(dir, 0777), 0);
    assert_int_equal(chmod(dir, 0777), 0);

    /* Standing in for systemd's notification socket. */
    int ns = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", notify);
    assert_true(ns >= 0);
    assert_int_equal(bind(ns, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(chmod(notify, 0777), 0);
    assert_int_equal(setenv("NOTIFY_SOCKET", notify, 1), 0);

    const SandboxBind binds[] = {{.source = dir, .writable = true}};
    const SandboxConfig c = {
        .hostname = HOSTNAME,
        .binds = binds,
        .n_binds = ELEMENTSOF(binds),
        .supervisor = false,
        .limits = {.max_fds = MAX_FDS, .max_procs = 0},
        .filter = &inside_filter,
        .filter_mode = FILTER_KILL,
        .user = sandbox_user(),
    };
    Inside in = {.config = &c, .dir = dir};
    assert_int_equal(in_child(inside, &in), 0);
    unsetenv("NOTIFY_SOCKET");

    char buf[32] = "";
    assert_int_equal(recv(ns, buf, sizeof(buf) - 1, MSG_DONTWAIT), 7);
    assert_string_equal(buf, "READY=1");
    char path[96];
    snprintf(path, sizeof(path), "%s/inside", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    memset(buf, 0, sizeof(buf));
    assert_int_equal(read(fd, buf, sizeof(buf)), 2);
    assert_string_equal(buf, "ok");
    close(fd);
    close(ns);
    unlink(path);
    unlink(notify);
    rmdir(dir);
    rmdir(top);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_description_refused),
        cmocka_unit_test(test_no_supervisor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
