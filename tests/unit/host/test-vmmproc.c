/* host/agent/vmmproc: the VMM's environment (what passes from ours, the
 * default PATH, JOURNAL_STREAM), and its process with a real /bin/sh: the
 * exit status, no fd of ours, the environment, its own process group
 * killed whole, stderr relayed line by line and escaped. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "host/agent/vmm.h"
#include "host/agent/vmmproc.h"
#include "log.h"
#include "util.h"

static size_t strv_len(char **v) {
    size_t n = 0;
    while (v[n]) {
        n++;
    }
    return n;
}

static void test_environ_allowlist(void **state) {
    char *from[] = {"PATH=/p",
                    "HOME=/h",
                    "NOTIFY_SOCKET=/n",
                    "LISTEN_FDS=1",
                    "WATCHDOG_USEC=1",
                    "TZ=UTC",
                    "JOURNAL_STREAM=1:2",
                    "WAYLAND_DISPLAY=w",
                    "no-equals-sign",
                    "PATHX=/x",
                    NULL};
    char **env = NULL;

    assert_int_equal(vmm_environ(from, NULL, 0, -1, &env), 0);
    assert_int_equal(strv_len(env), 3);
    assert_string_equal(env[0], "PATH=/p");
    assert_string_equal(env[1], "TZ=UTC");
    assert_string_equal(env[2], "WAYLAND_DISPLAY=w");
    strv_free(env);
}

static void test_environ_default_path(void **state) {
    char *from[] = {"HOME=/h", "DISPLAY=:0", NULL};
    char **env = NULL;

    assert_int_equal(vmm_environ(from, NULL, 0, -1, &env), 0);
    assert_int_equal(strv_len(env), 2);
    assert_string_equal(env[0], "DISPLAY=:0");
    assert_string_equal(env[1], "PATH=" VMM_ENV_DEFAULT_PATH);
    strv_free(env);
}

/* --vmm-env NAME is that name exactly; PREFIX* every name starting with
 * PREFIX; JOURNAL_STREAM never, even when a pattern matches it. */
static void test_environ_extra(void **state) {
    char *from[] = {"MY_VAR=1", "MY_VAR2=2",          "PFX_A=a", "PFX_=b",
                    "PF=c",     "JOURNAL_STREAM=9:9", "PATH=/p", NULL};
    const char *extra[] = {"MY_VAR", "PFX_*", "JOURNAL_*"};
    char **env = NULL;

    assert_int_equal(vmm_environ(from, extra, ELEMENTSOF(extra), -1, &env), 0);
    assert_int_equal(strv_len(env), 4);
    assert_string_equal(env[0], "MY_VAR=1");
    assert_string_equal(env[1], "PFX_A=a");
    assert_string_equal(env[2], "PFX_=b");
    assert_string_equal(env[3], "PATH=/p");
    strv_free(env);
}

/* Its stderr is a journal stream: JOURNAL_STREAM names that stream. */
static void test_environ_journal(void **state) {
    char *from[] = {"PATH=/p", "JOURNAL_STREAM=1:2", NULL};
    char **env = NULL, want[64];
    struct stat st;
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &st), 0);
    snprintf(want, sizeof(want), "JOURNAL_STREAM=%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino);
    assert_int_equal(vmm_environ(from, NULL, 0, fd, &env), 0);
    assert_int_equal(strv_len(env), 2);
    assert_string_equal(env[0], "PATH=/p");
    assert_string_equal(env[1], want);
    strv_free(env);
    close(fd);
}

/* ---- the process ------------------------------------------------------------ */

typedef struct Run {
    VmmProc *proc;
    bool exited;
    siginfo_t si;
    pid_t pgid; /* its process group, seen before it is reaped */
} Run;

static void on_exit_cb(void *userdata, const siginfo_t *si) {
    Run *run = userdata;
    run->exited = true;
    run->si = *si;
    run->pgid = getpgid(si->si_pid);
    vmm_proc_drain(run->proc);
    vmm_proc_free(TAKE_PTR(run->proc));
}

/* Spawns `script` under sh, watched on *ret_event. */
static void spawn_sh(const char *script, const VmmProcSpec *base, Run *run, sd_event **ret_event) {
    char *argv[] = {"sh", "-c", (char *)script, NULL};
    VmmProcSpec spec = *base;
    ErrorText err;

    spec.argv = argv;
    spec.name = "testvmm";
    spec.vm_name = "test";
    *run = (Run){0};
    assert_int_equal(sd_event_new(ret_event), 0);
    assert_int_equal(vmm_proc_spawn(*ret_event, &spec, on_exit_cb, run, &run->proc, &err), 0);
}

/* Runs the loop until it has exited. */
static void wait_exit(Run *run, sd_event *e) {
    while (!run->exited) {
        assert_true(sd_event_run(e, UINT64_MAX) >= 0);
    }
    sd_event_unref(e);
}

static void run_sh(const char *script, const VmmProcSpec *spec, Run *run) {
    sd_event *e = NULL;
    spawn_sh(script, spec, run, &e);
    wait_exit(run, e);
}

/* Whether pid is gone or a zombie. */
static bool dead(pid_t pid) {
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f) {
        return true;
    }
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *paren = strrchr(buf, ')');
    return paren && paren[1] == ' ' && paren[2] == 'Z';
}

static void test_exit_status(void **state) {
    VmmProcSpec spec = {.in = -1, .out = -1};
    Run run;

    run_sh("exit 3", &spec, &run);
    assert_int_equal(run.si.si_code, CLD_EXITED);
    assert_int_equal(run.si.si_status, 3);
}

/* Records about the process carry its pid as a journal field, and no
 * prefix: their text stays what the caller wrote. */
static void test_log_context(void **state) {
    VmmProcSpec spec = {.in = -1, .out = -1};
    char want[64];
    sd_event *e = NULL;
    Run run;

    spawn_sh("exit 0", &spec, &run, &e);
    const LogContext *ctx = vmm_proc_log(run.proc);
    snprintf(want, sizeof(want), "QUBES_LITE_PID=%d", (int)vmm_proc_pid(run.proc));
    assert_string_equal(ctx->prefix, "");
    assert_int_equal(ctx->n_fields, 1);
    assert_string_equal(ctx->fields[0], want);
    wait_exit(&run, e);
}

/* No fd of ours but its stdio, close-on-exec or not; only the variables
 * it may have. */
static void test_fds_and_environment(void **state) {
    const char *extra[] = {"QL_TEST_KEEP"};
    VmmProcSpec spec = {.in = -1, .out = -1, .env_extra = extra, .n_env_extra = 1};
    char script[256];
    Run run;
    int fd = open("/dev/null", O_RDONLY); /* not close-on-exec */

    assert_true(fd > 2);
    setenv("QL_TEST_SECRET", "1", 1);
    setenv("QL_TEST_KEEP", "1", 1);
    snprintf(script, sizeof(script),
             "test ! -e /proc/self/fd/%d || exit 10; test -z \"$QL_TEST_SECRET\" || exit 11; "
             "test \"$QL_TEST_KEEP\" = 1 || exit 12",
             fd);
    run_sh(script, &spec, &run);
    assert_int_equal(run.si.si_code, CLD_EXITED);
    assert_int_equal(run.si.si_status, 0);
    unsetenv("QL_TEST_SECRET");
    unsetenv("QL_TEST_KEEP");
    close(fd);
}

/* Its own session and process group, killed whole: what it started
 * (the background sleep) goes too. */
static void test_kill_group(void **state) {
    VmmProcSpec spec = {.in = -1, .out = -1, .own_group = true};
    char dir[] = "/tmp/test-vmmproc-XXXXXX", script[256], pidfile[64], buf[32] = "";
    sd_event *e = NULL;
    Run run;

    assert_non_null(mkdtemp(dir));
    snprintf(pidfile, sizeof(pidfile), "%s/bg", dir);
    snprintf(script, sizeof(script), "sleep 30 & echo $! >%s.tmp && mv %s.tmp %s; wait", pidfile,
             pidfile, pidfile);
    spawn_sh(script, &spec, &run, &e);
    pid_t pid = vmm_proc_pid(run.proc);
    FILE *f = NULL;
    for (int i = 0; i < 500 && !(f = fopen(pidfile, "re")); i++) {
        usleep(10 * 1000);
    }
    assert_non_null(f);
    assert_non_null(fgets(buf, sizeof(buf), f));
    fclose(f);
    pid_t bg = (pid_t)atoi(buf);
    assert_true(bg > 0);
    assert_int_equal(getpgid(pid), pid);
    assert_int_equal(getpgid(bg), pid);

    assert_int_equal(vmm_proc_kill(run.proc), 0);
    wait_exit(&run, e);
    assert_int_equal(run.si.si_code, CLD_KILLED);
    assert_int_equal(run.si.si_status, SIGKILL);
    assert_int_equal(run.pgid, pid);
    for (int i = 0; i < 500 && !dead(bg); i++) {
        usleep(10 * 1000);
    }
    assert_true(dead(bg));
    unlink(pidfile);
    rmdir(dir);
}

/* Without it, the child shares our process group. */
static void test_no_own_group(void **state) {
    VmmProcSpec spec = {.in = -1, .out = -1};
    Run run;

    run_sh("exit 0", &spec, &run);
    assert_int_equal(run.pgid, getpgrp());
}

/* Its stderr comes into our log line by line as "<vmm>: <line>", control
 * characters escaped, a last line without its newline too. */
static void test_stderr_relayed(void **state) {
    VmmProcSpec spec = {.in = -1, .out = -1, .log_stderr = true, .own_group = true};
    char path[] = "/tmp/test-vmmproc-XXXXXX", buf[4096];
    Run run;
    int saved = dup(STDERR_FILENO), fd = mkstemp(path);

    assert_true(saved >= 0 && fd >= 0);
    unsetenv("JOURNAL_STREAM");
    assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
    run_sh("printf 'one\\ntwo\\033\\r\\n' >&2; printf 'last' >&2", &spec, &run);
    assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
    close(saved);
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    assert_true(n > 0);
    buf[n] = '\0';
    close(fd);
    unlink(path);
    assert_non_null(strstr(buf, "testvmm: one\n"));
    assert_non_null(strstr(buf, "testvmm: two\\x1b\n"));
    assert_non_null(strstr(buf, "testvmm: last\n"));
}

static int setup(void **state) {
    sigset_t mask;

    log_setup("test-vmmproc");
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    return sigprocmask(SIG_BLOCK, &mask, NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_environ_allowlist), cmocka_unit_test(test_environ_default_path),
        cmocka_unit_test(test_environ_extra),     cmocka_unit_test(test_environ_journal),
        cmocka_unit_test(test_exit_status),       cmocka_unit_test(test_fds_and_environment),
        cmocka_unit_test(test_kill_group),        cmocka_unit_test(test_no_own_group),
        cmocka_unit_test(test_stderr_relayed),    cmocka_unit_test(test_log_context),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
