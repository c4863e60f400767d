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
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "users.h"
#include "util.h"
#include "wayland.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
/* The children's stack is shared memory reused by one child after the
 * other, none of which returns: AddressSanitizer's shadow of it still holds
 * the last child's redzones. */
#define CHILD_STACK_UNPOISON(p, n) __asan_unpoison_memory_region((p), (n))
#else
#define CHILD_STACK_UNPOISON(p, n) ((void)0)
#endif

#define DEFAULT_PATH_ROOT "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#define DEFAULT_PATH_USER "/usr/local/bin:/usr/bin:/bin"
#define DEFAULT_TERM "xterm-256color"
#define ERR_FD 3
#define SPAWN_PIPE_SIZE (256 * 1024)
/* The stack a child started with CLONE_VM runs on until it execs: execvp
 * may put a copy of argv (up to WIRE_ARGV_MAX pointers) on it. */
#define CHILD_STACK_SIZE (256 * 1024)

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
        /* Close-on-exec: the program must not get a second copy. */
        tmp[i] = fcntl(stdio[i], F_DUPFD_CLOEXEC, 10);
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
    int r = fd_close_from(ERR_FD + 1);
    if (r < 0) {
        child_fail(-r, "qubes-lite: cannot close inherited fds: %s", strerror(-r));
    }
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
    struct passwd *pw = user_lookup(name);
    if (!pw && !name) {
        child_fail(errno ?: ESRCH, "qubes-lite: uid %u: no such user", (unsigned)geteuid());
    }
    if (!pw) {
        child_fail(errno ?: ESRCH, "qubes-lite: %s: no such user", name);
    }
    return pw;
}

/* The ids checked after the switch: all three must be the user's now. */
static void child_verify_ids(const struct passwd *pw) {
    uid_t ru, eu, su;
    gid_t rg, eg, sg;
    if (getresuid(&ru, &eu, &su) < 0 || getresgid(&rg, &eg, &sg) < 0 || ru != pw->pw_uid ||
        eu != pw->pw_uid || su != pw->pw_uid || rg != pw->pw_gid || eg != pw->pw_gid ||
        sg != pw->pw_gid) {
        child_fail(EPERM, "qubes-lite: cannot run as %s: %s", pw->pw_name, strerror(EPERM));
    }
}

/* Whether a refused setgroups() may be passed over: where the group list
 * is fixed (a user namespace with setgroups denied) and the program runs
 * as the agent's own uid and gid, it keeps the agent's groups; nothing
 * changes hands. Anywhere else the refusal stands. */
static bool groups_fixed_for_self(int e, uid_t uid, gid_t gid) {
    return e == EPERM && uid == geteuid() && gid == getegid();
}

/* A root agent's child switching to a user whose record (groups included)
 * the agent has: no lookup. Raw system calls: they change this task's ids
 * only, which is what a child sharing the agent's memory must do (the libc
 * wrappers would try to change every thread of the process it believes it
 * is). */
#ifdef SYS_setgroups32
#define SYS_SETGROUPS SYS_setgroups32
#define SYS_SETRESGID SYS_setresgid32
#define SYS_SETRESUID SYS_setresuid32
#else
#define SYS_SETGROUPS SYS_setgroups
#define SYS_SETRESGID SYS_setresgid
#define SYS_SETRESUID SYS_setresuid
#endif
static void child_become_record(const UserRecord *u, const struct passwd *pw) {
    if ((syscall(SYS_SETGROUPS, u->n_groups, u->groups) < 0 &&
         !groups_fixed_for_self(errno, u->uid, u->gid)) ||
        syscall(SYS_SETRESGID, u->gid, u->gid, u->gid) < 0 ||
        syscall(SYS_SETRESUID, u->uid, u->uid, u->uid) < 0) {
        int e = errno;
        child_fail(e, "qubes-lite: cannot run as %s: %s", u->name, strerror(e));
    }
    child_verify_ids(pw);
}

static void child_become(const struct passwd *pw) {
    if (geteuid() != 0) {
        /* Unprivileged: only as ourselves, groups and all. */
        if (pw->pw_uid == geteuid() && pw->pw_gid == getegid()) {
            return;
        }
        child_fail(EPERM, "qubes-lite: cannot run as %s: %s", pw->pw_name, strerror(EPERM));
    }
    /* Groups first, while we still may set them, also when the user is
     * ours (the program gets its user's groups, not the agent's); then
     * gid, then uid. */
    if ((initgroups(pw->pw_name, pw->pw_gid) < 0 &&
         !groups_fixed_for_self(errno, pw->pw_uid, pw->pw_gid)) ||
        setresgid(pw->pw_gid, pw->pw_gid, pw->pw_gid) < 0 ||
        setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid) < 0) {
        int e = errno;
        child_fail(e, "qubes-lite: cannot run as %s: %s", pw->pw_name, strerror(e));
    }
    /* Trust but verify. */
    child_verify_ids(pw);
}

/* The login-like environment. The strings it allocates are also listed in
 * owned[] (at most ENV_OWNED_MAX, NULL-terminated) so that a caller that
 * outlives the child can free them. NULL when out of memory. */
#define ENV_OWNED_MAX 8
static char **environment_build(const MsgExec *x, const struct passwd *pw,
                                char *owned[ENV_OWNED_MAX]) {
    char **envp = calloc(8 + x->envc + 1, sizeof(char *));
    size_t n = 0, n_owned = 0;
    const char *path = getenv("PATH");
    const char *shell = pw->pw_shell && pw->pw_shell[0] ? pw->pw_shell : "/bin/sh";
    char *e[7] = {NULL};
    size_t ne = 0;
    int r = 0;

    if (!envp) {
        return NULL;
    }
    if (!path || !path[0]) {
        path = pw->pw_uid == 0 ? DEFAULT_PATH_ROOT : DEFAULT_PATH_USER;
    }
    r |= asprintf(&e[ne++], "HOME=%s", pw->pw_dir);
    r |= asprintf(&e[ne++], "USER=%s", pw->pw_name);
    r |= asprintf(&e[ne++], "LOGNAME=%s", pw->pw_name);
    r |= asprintf(&e[ne++], "SHELL=%s", shell);
    r |= asprintf(&e[ne++], "PATH=%s", path);
    r |= asprintf(&e[ne++], "XDG_RUNTIME_DIR=/run/user/%u", (unsigned)pw->pw_uid);
    if (x->pty) {
        r |= asprintf(&e[ne++], "TERM=%s", x->term ? x->term : DEFAULT_TERM);
    }
    if (r < 0) {
        /* asprintf leaves a failed pointer undefined: free only what the
         * successful calls gave, which we cannot tell apart; give up and
         * let the caller report it (a leak only when memory ran out). */
        free(envp);
        return NULL;
    }
    for (size_t i = 0; i < ne; i++) {
        env_set(envp, &n, e[i]);
        owned[n_owned++] = e[i];
    }
    owned[n_owned] = NULL;
    for (size_t i = 0; i < x->envc; i++) {
        env_set(envp, &n, x->env[i]);
    }
    envp[n] = NULL;
    return envp;
}

static char **child_environment(const MsgExec *x, const struct passwd *pw) {
    char *owned[ENV_OWNED_MAX];
    char **envp = environment_build(x, pw, owned);
    if (!envp) {
        child_fail(ENOMEM, "qubes-lite: out of memory");
    }
    return envp;
}

typedef struct ChildArgs {
    const MsgExec *x;
    const SpawnOptions *o;
    const int *stdio;
    int err_fd;
    /* Set by the parent when it has the user: from the agent's record of
     * it (rec, for a root agent), or the agent's own user (unprivileged).
     * The environment is built by the parent for a child that shares its
     * memory (CLONE_VM): such a child neither allocates nor looks anything
     * up. pw NULL: the child does it all. */
    const struct passwd *pw;
    const UserRecord *rec;
    char **envp;
} ChildArgs;

_noreturn_ static void child_run(const ChildArgs *a) {
    extern char **environ;
    const MsgExec *x = a->x;
    const SpawnOptions *o = a->o;

    child_reset_signals();
    child_setup_fds(a->stdio, a->err_fd);
    /* The agent's own fd limit is raised for its many sessions; the
     * program gets the one the agent was started with (after the fds
     * above it were closed). */
    fd_limit_restore();
    if (setsid() < 0) {
        child_fail(errno, "qubes-lite: setsid: %s", strerror(errno));
    }
    if (x->pty && ioctl(0, TIOCSCTTY, 0) < 0) {
        child_fail(errno, "qubes-lite: cannot take the terminal: %s", strerror(errno));
    }

    const struct passwd *pw = a->pw;
    char **envp = a->envp;
    if (pw && a->rec) {
        child_become_record(a->rec, pw);
        if (!envp) {
            envp = child_environment(x, pw);
        }
    } else if (!pw) {
        struct passwd *looked_up = child_lookup_user(x->user ? x->user : o->default_user);
        child_become(looked_up);
        envp = child_environment(x, looked_up);
        pw = looked_up;
    }

    if (x->cwd) {
        if (chdir(x->cwd) < 0) {
            int e = errno;
            /* The start_errno tells a missing program (ENOENT, 127) from
             * one that could not be started (126): a directory that does
             * not exist is the latter, so it goes as ENOTDIR; the line on
             * stderr keeps the real reason. */
            child_fail(e == ENOENT ? ENOTDIR : e, "qubes-lite: cd: %s: %s", x->cwd, strerror(e));
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

static int child_trampoline(void *arg) {
    child_run(arg);
}

/* ---- in the agent ---------------------------------------------------------- */

/* A child that runs no Wayland wait and keeps the agent's uid is started
 * the way posix_spawn() does: sharing our memory (CLONE_VM) while we wait
 * for it to exec or fail (CLONE_VFORK). No page tables are copied and no
 * page is copied on write afterwards. Since we are suspended until then,
 * the child runs only steps that cannot block for long, and everything it
 * would allocate or look up is done here first. A child that switches to
 * another uid is forked instead: from the switch to its exec, that user's
 * processes may signal it, and one that stopped it (SIGSTOP) would hold
 * the agent suspended for as long as it liked.
 *
 * The user comes from the agent's record of it (a root agent, users.h:
 * the groups are in it, nobody looks anything up), else, for an
 * unprivileged agent, from a lookup here: such an agent runs programs as
 * itself only, groups and all, and needs none of the group modules. Sets
 * a->pw (and a->rec) when the user is known here; returns whether the
 * child may share our memory. Otherwise the child looks the user up and
 * reports any failure itself. */
static bool spawn_plan(const MsgExec *x, const SpawnOptions *o, struct passwd *rec_pw,
                       ChildArgs *a) {
    if (geteuid() == 0) {
        const UserRecord *u = o->user;
        if (!u) {
            return false;
        }
        *rec_pw = (struct passwd){
            .pw_name = (char *)u->name,
            .pw_uid = u->uid,
            .pw_gid = u->gid,
            .pw_dir = (char *)u->dir,
            .pw_shell = (char *)u->shell,
        };
        a->pw = rec_pw;
        a->rec = u;
        return !x->wait_wayland && u->uid == geteuid();
    }
    if (x->wait_wayland) {
        return false;
    }
    struct passwd *pw = user_lookup(x->user ? x->user : o->default_user);
    if (!pw || pw->pw_uid != geteuid() || pw->pw_gid != getegid()) {
        return false;
    }
    a->pw = pw;
    return true;
}

static uint8_t *child_stack(void) {
    static uint8_t *stack;
    if (!stack) {
        /* One guard page below; only the pages a child touches are used. */
        void *p = mmap(NULL, CHILD_STACK_SIZE + 4096, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) {
            return NULL;
        }
        if (mprotect(p, 4096, PROT_NONE) < 0) {
            munmap(p, CHILD_STACK_SIZE + 4096);
            return NULL;
        }
        stack = p;
    }
    return stack + 4096 + CHILD_STACK_SIZE;
}

/* Starts the child sharing our memory; returns its pid, or -1 when this
 * way is not available (then fork()). */
static pid_t spawn_clone_vm(ChildArgs *a) {
    extern char **environ;
    char *owned[ENV_OWNED_MAX];
    uint8_t *stack_top = child_stack();
    sigset_t all, old;

    if (!stack_top) {
        return -1;
    }
    CHILD_STACK_UNPOISON(stack_top - CHILD_STACK_SIZE, CHILD_STACK_SIZE);
    a->envp = environment_build(a->x, a->pw, owned);
    if (!a->envp) {
        return -1;
    }
    /* No handler of ours may run in the child on our memory: everything
     * is blocked until it has reset its dispositions to the defaults. */
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    char **saved_environ = environ;
    pid_t pid = clone(child_trampoline, stack_top, CLONE_VM | CLONE_VFORK | SIGCHLD, a);
    int e = errno;
    environ = saved_environ; /* the child pointed it at its environment */
    sigprocmask(SIG_SETMASK, &old, NULL);
    for (size_t i = 0; owned[i]; i++) {
        free(owned[i]);
    }
    free(a->envp);
    a->envp = NULL;
    errno = e;
    return pid;
}

/* ---- in the agent ---------------------------------------------------------- */

int spawn_parse_report(const uint8_t *untrusted, size_t n, int *ret_errno, const char **ret_msg,
                       size_t *ret_msg_len) {
    int32_t e;
    if (n < sizeof(e) + 1 || n > SPAWN_REPORT_MAX) {
        return -EBADMSG;
    }
    memcpy(&e, untrusted, sizeof(e));
    if (e <= 0 || e > (int32_t)WIRE_ERRNO_MAX) {
        return -EBADMSG;
    }
    *ret_errno = e;
    *ret_msg = (const char *)untrusted + sizeof(e);
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
    } else if (o->stream) {
        if (pipe2(err, O_CLOEXEC) < 0) {
            return -errno;
        }
        stdio[0] = stdio[1] = o->stream_fd;
        stdio[2] = err[1];
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

    ChildArgs a = {.x = x, .o = o, .stdio = stdio, .err_fd = errp[1]};
    struct passwd rec_pw;
    pid_t pid = -1;
    if (spawn_plan(x, o, &rec_pw, &a)) {
        pid = spawn_clone_vm(&a);
    }
    if (pid < 0) {
        if (!a.rec) {
            a.pw = NULL; /* the child looks the user up */
        }
        pid = fork();
        if (pid < 0) {
            return -errno;
        }
        if (pid == 0) {
            child_run(&a);
        }
    }

    /* The child is ours and unreaped until we wait for it: the pidfd
     * cannot refer to anything else. */
    int pidfd = pidfd_open_(pid);
    if (pidfd < 0) {
        kill(pid, SIGKILL);
        (void)waitpid(pid, NULL, 0);
        return pidfd;
    }

    Spawned s = {.pid = pid, .pidfd = pidfd, .stdin_fd = -EBADF, .stdout_fd = -EBADF,
                 .stderr_fd = -EBADF};
    s.err_fd = TAKE_FD(errp[0]);
    if (x->pty) {
        s.stdout_fd = TAKE_FD(master);
        s.stdin_fd = TAKE_FD(master2);
    } else if (o->stream) {
        s.stderr_fd = TAKE_FD(err[0]);
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
