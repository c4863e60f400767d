/* Program start-up for Exec: see spawn.h. */
#include "spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pty.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "util.h"
#include "wayland.h"

#define DEFAULT_PATH_ROOT "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define DEFAULT_PATH_USER "/usr/local/bin:/usr/bin:/bin"
#define DEFAULT_TERM "xterm-256color"
#define ERR_FD 3
#define SPAWN_PIPE_SIZE (256 * 1024)

/* ---- in the child -------------------------------------------------------- */

/* Where child_fail() reports: the error pipe, wherever it is right now. */
static int child_report_fd = ERR_FD;

_printf_(2, 3) _noreturn_ static void child_fail(int err, const char *fmt, ...) {
    uint8_t buf[SPAWN_REPORT_MAX];
    int32_t e = err > 0 ? err : EIO;
    va_list ap;

    memcpy(buf, &e, sizeof(e));
    va_start(ap, fmt);
    int n = vsnprintf((char *)buf + sizeof(e), sizeof(buf) - sizeof(e) - 1, fmt, ap);
    va_end(ap);
    if (n < 0) {
        n = 0;
    }
    size_t len = MIN((size_t)n, sizeof(buf) - sizeof(e) - 2);
    buf[sizeof(e) + len] = '\n';
    /* One write below PIPE_BUF: the parent sees all of it or nothing. */
    (void)!write(child_report_fd, buf, sizeof(e) + len + 1);
    _exit(127);
}

static void child_reset_signals(void) {
    sigset_t all;
    struct sigaction sa = {.sa_handler = SIG_DFL};
    for (int sig = 1; sig < NSIG; sig++) {
        (void)sigaction(sig, &sa, NULL);
    }
    sigemptyset(&all);
    (void)sigprocmask(SIG_SETMASK, &all, NULL);
}

/* Puts fds on 0, 1, 2 and the error pipe on ERR_FD, closes the rest so a
 * child waiting for Wayland does not hold other sessions' fds open. */
static void child_setup_fds(const int stdio[3], int err_fd) {
    int tmp[3];
    /* Move everything above ERR_FD first so the dup2s below cannot clobber
     * a source. */
    child_report_fd = err_fd;
    int e = fcntl(err_fd, F_DUPFD_CLOEXEC, 10);
    if (e < 0) {
        child_fail(errno, "qubes-lite: cannot set up stdio: %s", strerror(errno));
    }
    child_report_fd = e;
    for (int i = 0; i < 3; i++) {
        tmp[i] = fcntl(stdio[i], F_DUPFD, 10);
        if (tmp[i] < 0) {
            child_fail(errno, "qubes-lite: cannot set up stdio: %s", strerror(errno));
        }
    }
    for (int i = 0; i < 3; i++) {
        if (dup2(tmp[i], i) < 0) {
            child_fail(errno, "qubes-lite: cannot set up stdio: %s", strerror(errno));
        }
    }
    if (dup3(e, ERR_FD, O_CLOEXEC) < 0) {
        child_fail(errno, "qubes-lite: cannot set up stdio: %s", strerror(errno));
    }
    child_report_fd = ERR_FD;
    close_range(ERR_FD + 1, ~0U, 0);
}

static int env_set(char **envp, size_t *n, char *entry) {
    size_t klen = strcspn(entry, "=");
    for (size_t i = 0; i < *n; i++) {
        if (strncmp(envp[i], entry, klen) == 0 && envp[i][klen] == '=') {
            envp[i] = entry;
            return 0;
        }
    }
    envp[(*n)++] = entry;
    return 0;
}

static char *xasprintf(const char *fmt, ...) _printf_(1, 2);
static char *xasprintf(const char *fmt, ...) {
    char *s;
    va_list ap;
    va_start(ap, fmt);
    int r = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (r < 0) {
        child_fail(ENOMEM, "qubes-lite: out of memory");
    }
    return s;
}

static const char *env_get(char *const *envp, const char *key) {
    size_t klen = strlen(key);
    for (; *envp; envp++) {
        if (strncmp(*envp, key, klen) == 0 && (*envp)[klen] == '=') {
            return *envp + klen + 1;
        }
    }
    return NULL;
}

static struct passwd *child_lookup_user(const char *name) {
    struct passwd *pw;
    unsigned long long uid;

    errno = 0;
    if (!name) {
        pw = getpwuid(geteuid());
        if (!pw) {
            child_fail(errno ?: ESRCH, "qubes-lite: uid %u: no such user", (unsigned)geteuid());
        }
        return pw;
    }
    if (parse_uint(name, 0, UINT32_MAX - 1, &uid) == 0) {
        pw = getpwuid((uid_t)uid);
    } else {
        pw = getpwnam(name);
    }
    if (!pw) {
        child_fail(errno ?: ESRCH, "qubes-lite: %s: no such user", name);
    }
    return pw;
}

static void child_become(const struct passwd *pw) {
    if (pw->pw_uid == geteuid() && pw->pw_gid == getegid()) {
        return;
    }
    if (geteuid() != 0) {
        child_fail(EPERM, "qubes-lite: cannot run as %s: %s", pw->pw_name, strerror(EPERM));
    }
    /* Groups first, while we still may set them; then gid, then uid. */
    if (initgroups(pw->pw_name, pw->pw_gid) < 0 ||
        setresgid(pw->pw_gid, pw->pw_gid, pw->pw_gid) < 0 ||
        setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid) < 0) {
        int e = errno;
        child_fail(e, "qubes-lite: cannot run as %s: %s", pw->pw_name, strerror(e));
    }
}

static char **child_environment(const MsgExec *x, const struct passwd *pw) {
    char **envp = calloc(8 + x->envc + 1, sizeof(char *));
    size_t n = 0;
    const char *path = getenv("PATH");

    if (!envp) {
        child_fail(ENOMEM, "qubes-lite: out of memory");
    }
    if (!path || !path[0]) {
        path = pw->pw_uid == 0 ? DEFAULT_PATH_ROOT : DEFAULT_PATH_USER;
    }
    env_set(envp, &n, xasprintf("HOME=%s", pw->pw_dir));
    env_set(envp, &n, xasprintf("USER=%s", pw->pw_name));
    env_set(envp, &n, xasprintf("LOGNAME=%s", pw->pw_name));
    const char *shell = pw->pw_shell && pw->pw_shell[0] ? pw->pw_shell : "/bin/sh";
    env_set(envp, &n, xasprintf("SHELL=%s", shell));
    env_set(envp, &n, xasprintf("PATH=%s", path));
    env_set(envp, &n, xasprintf("XDG_RUNTIME_DIR=/run/user/%u", (unsigned)pw->pw_uid));
    if (x->pty) {
        env_set(envp, &n, xasprintf("TERM=%s", x->term ? x->term : DEFAULT_TERM));
    }
    for (size_t i = 0; i < x->envc; i++) {
        env_set(envp, &n, x->env[i]);
    }
    envp[n] = NULL;
    return envp;
}

_noreturn_ static void child_run(const MsgExec *x, const SpawnOptions *o, const int stdio[3],
                                 int err_fd) {
    extern char **environ;

    child_reset_signals();
    child_setup_fds(stdio, err_fd);
    if (setsid() < 0) {
        child_fail(errno, "qubes-lite: setsid: %s", strerror(errno));
    }
    if (x->pty && ioctl(0, TIOCSCTTY, 0) < 0) {
        child_fail(errno, "qubes-lite: cannot take the terminal: %s", strerror(errno));
    }

    struct passwd *pw = child_lookup_user(x->user ? x->user : o->default_user);
    child_become(pw);
    char **envp = child_environment(x, pw);

    if (x->cwd) {
        if (chdir(x->cwd) < 0) {
            int e = errno;
            child_fail(e, "qubes-lite: cd: %s: %s", x->cwd, strerror(e));
        }
    } else if (!pw->pw_dir || chdir(pw->pw_dir) < 0) {
        (void)!chdir("/"); /* as login does without a home */
    }

    if (x->wait_wayland) {
        const char *display = env_get(envp, "WAYLAND_DISPLAY");
        int r = wayland_wait(env_get(envp, "XDG_RUNTIME_DIR"), display, o->wayland_timeout_usec);
        if (r < 0) {
            child_fail(-r, "qubes-lite: Wayland display %s is not answering: %s",
                       display && display[0] ? display : "wayland-0", strerror(-r));
        }
    }

    environ = envp; /* execvp looks PATH up here */
    execvp(x->argv[0], x->argv);
    int e = errno;
    if (e == ENOENT && !strchr(x->argv[0], '/')) {
        child_fail(e, "qubes-lite: %s: command not found", x->argv[0]);
    }
    child_fail(e, "qubes-lite: %s: %s", x->argv[0], strerror(e));
}

/* ---- in the agent ---------------------------------------------------------- */

int spawn_parse_report(const uint8_t *buf, size_t n, int *ret_errno, const char **ret_msg,
                       size_t *ret_msg_len) {
    int32_t e;
    if (n < sizeof(e) + 1 || n > SPAWN_REPORT_MAX) {
        return -EBADMSG;
    }
    memcpy(&e, buf, sizeof(e));
    if (e <= 0 || e > 4095) {
        return -EBADMSG;
    }
    *ret_errno = e;
    *ret_msg = (const char *)buf + sizeof(e);
    *ret_msg_len = n - sizeof(e);
    return 0;
}

static int pidfd_open_(pid_t pid) {
    long fd = syscall(SYS_pidfd_open, pid, 0);
    return fd < 0 ? -errno : (int)fd;
}

int spawn_start(const MsgExec *x, const SpawnOptions *o, Spawned *ret) {
    _cleanup_close_pair_ int errp[2] = {-EBADF, -EBADF};
    _cleanup_close_pair_ int in[2] = {-EBADF, -EBADF};
    _cleanup_close_pair_ int out[2] = {-EBADF, -EBADF};
    _cleanup_close_pair_ int err[2] = {-EBADF, -EBADF};
    _cleanup_close_ int master = -EBADF, slave = -EBADF, master2 = -EBADF;
    int stdio[3];
    int r;

    if (pipe2(errp, O_CLOEXEC) < 0) {
        return -errno;
    }
    if (x->pty) {
        struct winsize ws = {.ws_row = x->rows, .ws_col = x->cols};
        if (openpty(&master, &slave, NULL, NULL, &ws) < 0) {
            return -errno;
        }
        if ((r = fd_cloexec(master, true)) < 0 || (r = fd_cloexec(slave, true)) < 0) {
            return r;
        }
        master2 = fcntl(master, F_DUPFD_CLOEXEC, 3);
        if (master2 < 0) {
            return -errno;
        }
        stdio[0] = stdio[1] = stdio[2] = slave;
    } else {
        if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
            return -errno;
        }
        /* Bigger pipes mean fewer wake-ups on bulk transfers; the default
         * is kept where the system does not allow more. */
        (void)fcntl(in[1], F_SETPIPE_SZ, SPAWN_PIPE_SIZE);
        (void)fcntl(out[0], F_SETPIPE_SZ, SPAWN_PIPE_SIZE);
        stdio[0] = in[0];
        stdio[1] = out[1];
        stdio[2] = err[1];
    }

    pid_t pid = fork();
    if (pid < 0) {
        return -errno;
    }
    if (pid == 0) {
        child_run(x, o, stdio, errp[1]);
    }

    /* The child is ours and unreaped until we wait for it: the pidfd
     * cannot refer to anything else. */
    int pidfd = pidfd_open_(pid);
    if (pidfd < 0) {
        kill(pid, SIGKILL);
        (void)waitpid(pid, NULL, 0);
        return pidfd;
    }

    Spawned s = {.pid = pid, .pidfd = pidfd, .stderr_fd = -EBADF};
    s.err_fd = TAKE_FD(errp[0]);
    if (x->pty) {
        s.stdout_fd = TAKE_FD(master);
        s.stdin_fd = TAKE_FD(master2);
    } else {
        s.stdin_fd = TAKE_FD(in[1]);
        s.stdout_fd = TAKE_FD(out[0]);
        s.stderr_fd = TAKE_FD(err[0]);
    }
    int fds[] = {s.err_fd, s.stdin_fd, s.stdout_fd, s.stderr_fd};
    for (size_t i = 0; i < ELEMENTSOF(fds); i++) {
        if (fds[i] >= 0) {
            (void)fd_nonblock(fds[i], true);
        }
    }
    *ret = s;
    return 0;
}
