/* guest/spawn: the start-up report, and starting real programs. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "guest/spawn.h"
#include "util.h"

static void test_parse_report(void **state) {
    uint8_t buf[64];
    int32_t e = ENOENT;
    const char *msg;
    size_t len;
    int err;

    memcpy(buf, &e, 4);
    memcpy(buf + 4, "x: not found\n", 13);
    assert_int_equal(spawn_parse_report(buf, 17, &err, &msg, &len), 0);
    assert_int_equal(err, ENOENT);
    assert_int_equal(len, 13);
    assert_memory_equal(msg, "x: not found\n", 13);

    /* Too short, no message, errno out of range. */
    assert_int_equal(spawn_parse_report(buf, 3, &err, &msg, &len), -EBADMSG);
    assert_int_equal(spawn_parse_report(buf, 4, &err, &msg, &len), -EBADMSG);
    e = 0;
    memcpy(buf, &e, 4);
    assert_int_equal(spawn_parse_report(buf, 17, &err, &msg, &len), -EBADMSG);
    e = 5000;
    memcpy(buf, &e, 4);
    assert_int_equal(spawn_parse_report(buf, 17, &err, &msg, &len), -EBADMSG);
    e = -1;
    memcpy(buf, &e, 4);
    assert_int_equal(spawn_parse_report(buf, 17, &err, &msg, &len), -EBADMSG);
    assert_int_equal(spawn_parse_report(buf, SPAWN_REPORT_MAX + 1, &err, &msg, &len), -EBADMSG);
}

/* Reads fd (non-blocking) to EOF. */
static size_t drain(int fd, char *buf, size_t size) {
    size_t got = 0;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        assert_true(poll(&p, 1, 30000) == 1);
        ssize_t k = read(fd, buf + got, size - got);
        if (k < 0 && errno == EAGAIN) {
            continue;
        }
        assert_true(k >= 0);
        if (k == 0 || got + (size_t)k == size) {
            return got + (size_t)k;
        }
        got += (size_t)k;
    }
}

static int wait_status(Spawned *sp) {
    int status;
    assert_int_equal(waitpid(sp->pid, &status, 0), sp->pid);
    return status;
}

static void spawned_close(Spawned *sp) {
    safe_close(sp->pidfd);
    safe_close(sp->err_fd);
    safe_close(sp->stdin_fd);
    safe_close(sp->stdout_fd);
    safe_close(sp->stderr_fd);
}

static void test_start_and_output(void **state) {
    char *argv[] = {"sh", "-c", "echo \"$QL_X\"; echo e >&2; exit 3", NULL};
    char *env[] = {"QL_X=hello", NULL};
    MsgExec x = {.argc = 3, .argv = argv, .envc = 1, .env = env, .cwd = "/"};
    SpawnOptions o = {0};
    Spawned sp;
    char buf[256];

    assert_int_equal(spawn_start(&x, &o, &sp), 0);
    assert_true(sp.pid > 0 && sp.pidfd >= 0 && sp.stderr_fd >= 0);
    /* Exec succeeded: the report pipe closes without a word. */
    assert_int_equal(drain(sp.err_fd, buf, sizeof(buf)), 0);
    assert_int_equal(drain(sp.stdout_fd, buf, sizeof(buf)), 6);
    assert_memory_equal(buf, "hello\n", 6);
    assert_int_equal(drain(sp.stderr_fd, buf, sizeof(buf)), 2);
    int status = wait_status(&sp);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 3);
    spawned_close(&sp);
}

static void test_not_found_report(void **state) {
    char *argv[] = {"no-such-program-ql", NULL};
    char *env[] = {NULL};
    MsgExec x = {.argc = 1, .argv = argv, .env = env};
    SpawnOptions o = {0};
    Spawned sp;
    uint8_t buf[SPAWN_REPORT_MAX];
    const char *msg;
    size_t len;
    int err;

    assert_int_equal(spawn_start(&x, &o, &sp), 0);
    size_t n = drain(sp.err_fd, (char *)buf, sizeof(buf));
    assert_int_equal(spawn_parse_report(buf, n, &err, &msg, &len), 0);
    assert_int_equal(err, ENOENT);
    const char *want = "qubes-lite: no-such-program-ql: command not found\n";
    assert_int_equal(len, strlen(want));
    assert_memory_equal(msg, want, len);
    wait_status(&sp);
    spawned_close(&sp);
}

static void test_own_session(void **state) {
    char *argv[] = {"sleep", "1000", NULL};
    char *env[] = {NULL};
    MsgExec x = {.argc = 2, .argv = argv, .env = env};
    SpawnOptions o = {0};
    Spawned sp;
    char buf[16];

    assert_int_equal(spawn_start(&x, &o, &sp), 0);
    assert_int_equal(drain(sp.err_fd, buf, sizeof(buf)), 0);
    assert_int_equal(getsid(sp.pid), sp.pid);
    assert_int_equal(getpgid(sp.pid), sp.pid);
    assert_int_equal(kill(-sp.pid, SIGTERM), 0);
    int status = wait_status(&sp);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
    spawned_close(&sp);
}

/* In a child of ours, with close_range() failing as before Linux 5.9
 * (ENOSYS): the program still gets only its stdio, neither the temporary
 * copies of it nor a stray inherited fd. 0 when so. */
static int fds_without_close_range(void) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_close_range, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof(f) / sizeof(f[0]), .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0) {
        return 2;
    }
    if (syscall(__NR_close_range, 100, 100, 0) != -1 || errno != ENOSYS) {
        return 3;
    }
    if (dup2(STDERR_FILENO, 20) != 20) { /* inherited, not close-on-exec */
        return 4;
    }
    /* The program's fds are looked at from outside, once exec has
     * succeeded: a shell listing its own would see the fds of its own
     * pipelines and globs. */
    char *argv[] = {"sleep", "30", NULL};
    char *env[] = {NULL};
    MsgExec x = {.argc = 2, .argv = argv, .env = env, .cwd = "/"};
    SpawnOptions o = {0};
    Spawned sp;
    char buf[256] = {0};
    if (spawn_start(&x, &o, &sp) < 0) {
        return 5;
    }
    if (drain(sp.err_fd, buf, sizeof(buf)) != 0) { /* EOF: exec succeeded */
        return 6;
    }
    /* The dynamic loader of the program opens its libraries for a moment
     * after exec: an fd of ours would stay, the loader's go. So look again
     * for a while before calling what is seen a leak. */
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)sp.pid);
    for (int tries = 0; tries < 100; tries++) {
        DIR *d = opendir(path);
        if (!d) {
            return 7;
        }
        size_t n = 0;
        struct dirent *de;
        buf[0] = '\0';
        while ((de = readdir(d))) {
            if (de->d_name[0] != '.') {
                n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s ", de->d_name);
                if (n >= sizeof(buf)) {
                    break;
                }
            }
        }
        closedir(d);
        if (strcmp(buf, "0 1 2 ") == 0) {
            break;
        }
        usleep(20 * 1000);
    }
    (void)kill(sp.pid, SIGKILL);
    int status;
    (void)waitpid(sp.pid, &status, 0);
    if (strcmp(buf, "0 1 2 ") != 0) {
        fprintf(stderr, "the program's fds: %s\n", buf);
        return 1;
    }
    return 0;
}

static void test_only_stdio_without_close_range(void **state) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        _exit(fds_without_close_range());
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* Runs f in a child of ours (it may change the child's credentials or
 * install a seccomp filter) and checks that it returned 0. */
static void in_child(int (*f)(void)) {
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        _exit(f());
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

/* A root agent with a supplementary group its user does not have: the
 * program, run as that same user, has exactly the user's groups. */
static int groups_of_own_user(void) {
    gid_t extra = 54321;
    if (setgroups(1, &extra) < 0) {
        return 2;
    }
    struct passwd *pw = getpwuid(0);
    gid_t want[64];
    int n_want = 64;
    if (!pw || getgrouplist(pw->pw_name, pw->pw_gid, want, &n_want) < 0) {
        return 3;
    }
    char *argv[] = {"id", "-G", NULL};
    char *env[] = {NULL};
    MsgExec x = {.argc = 2, .argv = argv, .env = env, .cwd = "/"};
    SpawnOptions o = {0};
    Spawned sp;
    char buf[1024] = {0};
    if (spawn_start(&x, &o, &sp) < 0) {
        return 4;
    }
    (void)drain(sp.stdout_fd, buf, sizeof(buf) - 1);
    int status;
    (void)waitpid(sp.pid, &status, 0);
    /* id -G: the effective gid first, then the others. */
    int n = 0;
    for (char *tok = strtok(buf, " \n"); tok; tok = strtok(NULL, " \n")) {
        gid_t g = (gid_t)strtoul(tok, NULL, 10);
        bool found = false;
        for (int i = 0; i < n_want; i++) {
            found = found || want[i] == g;
        }
        if (!found) {
            fprintf(stderr, "the program has group %u\n", (unsigned)g);
            return 1;
        }
        n++;
    }
    return n > 0 ? 0 : 5;
}

static void test_own_user_gets_its_groups(void **state) {
    if (geteuid() != 0) {
        skip();
    }
    in_child(groups_of_own_user);
}

/* setresuid() that claims success without changing anything (a seccomp
 * filter returns 0 for it): the program must not start. */
static int setresuid_lies(void) {
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_setresuid, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof(f) / sizeof(f[0]), .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0) {
        return 2;
    }
    char *argv[] = {"true", NULL};
    char *env[] = {NULL};
    MsgExec x = {.argc = 1, .argv = argv, .env = env, .cwd = "/", .user = "nobody"};
    SpawnOptions o = {0};
    Spawned sp;
    uint8_t buf[SPAWN_REPORT_MAX];
    const char *msg;
    size_t len;
    int err;
    if (spawn_start(&x, &o, &sp) < 0) {
        return 3;
    }
    size_t n = drain(sp.err_fd, (char *)buf, sizeof(buf));
    int status;
    (void)waitpid(sp.pid, &status, 0);
    if (n == 0) {
        fprintf(stderr, "the program started with a uid that did not change\n");
        return 1;
    }
    if (spawn_parse_report(buf, n, &err, &msg, &len) < 0 || err != EPERM) {
        return 4;
    }
    return 0;
}

static void test_ids_are_checked_after_the_switch(void **state) {
    if (geteuid() != 0 || !getpwnam("nobody")) {
        skip();
    }
    in_child(setresuid_lies);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_report),
        cmocka_unit_test(test_start_and_output),
        cmocka_unit_test(test_not_found_report),
        cmocka_unit_test(test_own_session),
        cmocka_unit_test(test_only_stdio_without_close_range),
        cmocka_unit_test(test_own_user_gets_its_groups),
        cmocka_unit_test(test_ids_are_checked_after_the_switch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
