/* try-syscall ROLE MODE CALL...
 *
 * Tries each CALL under vm-switch's seccomp filter for ROLE (supervisor,
 * main, child) in MODE (kill, trap, log, disabled), each in a fresh
 * process: what the call needs is set up first, then the filter is loaded
 * as the real process loads it (a child stacks its filter on the main's),
 * then the call is made. One line per call on stdout:
 *
 *   CALL ok              the call succeeded
 *   CALL errno:ENAME     the call failed with that errno
 *   CALL signal:SIGNAME  the process was killed
 *   CALL trapped:NR      SIGSYS was delivered for system call NR
 *
 * `try-syscall --list` prints the known calls. */
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "switch/net/confine.h"
#include "switch/sandbox/filter.h"
#include "util.h"

/* What a call may use, set up before the filter. */
typedef struct Prep {
    int efd;     /* an eventfd holding 1 */
    int pair[2]; /* an AF_UNIX SOCK_SEQPACKET pair */
    int memfd;   /* 4 KiB */
    int epfd;    /* epoll with nothing in it */
    int exe;     /* this program, for execveat */
    void *anon;  /* one anonymous read-write page */
    pid_t self;  /* getpid(), which not every role allows */
} Prep;

static const char *self_exe = "/proc/self/exe";

/* Each returns 0 or a negative errno. */
static int t_read(Prep *p) {
    uint64_t v;
    return read(p->efd, &v, sizeof(v)) == sizeof(v) ? 0 : -errno;
}

static int t_write(Prep *p) {
    uint64_t v = 1;
    return write(p->efd, &v, sizeof(v)) == sizeof(v) ? 0 : -errno;
}

static int t_msg_fds(Prep *p) {
    int r = send_with_fd(p->pair[0], "x", 1, p->efd);
    if (r < 0) {
        return r;
    }
    char c;
    int fd = -1;
    ssize_t n = recv_with_fd(p->pair[1], &c, 1, &fd);
    if (n < 0) {
        return (int)n;
    }
    if (fd < 0) {
        return -EBADMSG;
    }
    return close(fd) < 0 ? -errno : 0;
}

static int t_mmap_shared(Prep *p) {
    void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, p->memfd, 0);
    if (m == MAP_FAILED) {
        return -errno;
    }
    ((volatile char *)m)[0] = 1;
    return munmap(m, 4096) < 0 ? -errno : 0;
}

static int t_mmap_exec(Prep *p) {
    void *m = mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return m == MAP_FAILED ? -errno : 0;
}

static int t_mprotect_exec(Prep *p) {
    return mprotect(p->anon, 4096, PROT_READ | PROT_EXEC) < 0 ? -errno : 0;
}

static int t_epoll(Prep *p) {
    struct epoll_event ev = {.events = EPOLLIN}, out;
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->efd, &ev) < 0) {
        return -errno;
    }
    return epoll_wait(p->epfd, &out, 1, 0) == 1 ? 0 : -EAGAIN;
}

static int t_fstat(Prep *p) {
    struct stat st;
    return fstat(p->memfd, &st) < 0 ? -errno : 0;
}

static int t_close(Prep *p) {
    return close(p->efd) < 0 ? -errno : 0;
}

static int t_clock(Prep *p) {
    struct timespec ts;
    /* The system call itself, not the vDSO. */
    return syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &ts) < 0 ? -errno : 0;
}

static int reap(pid_t pid) {
    if (pid < 0) {
        return -errno;
    }
    if (pid == 0) {
        _exit(0);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            return -errno;
        }
    }
    return 0;
}

static int t_fork(Prep *p) {
    return reap(fork());
}

static int t_clone_newuser(Prep *p) {
    return reap((pid_t)syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, NULL, NULL, 0));
}

static int t_clone3(Prep *p) {
    struct clone_args args = {.exit_signal = SIGCHLD};
    return reap((pid_t)syscall(SYS_clone3, &args, sizeof(args)));
}

static int t_unshare(Prep *p) {
    return unshare(CLONE_NEWUSER) < 0 ? -errno : 0;
}

static int t_socket_unix(Prep *p) {
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    return fd < 0 ? -errno : 0;
}

static int t_socket_inet(Prep *p) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    return fd < 0 ? -errno : 0;
}

static int t_socket_netlink(Prep *p) {
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, 0);
    return fd < 0 ? -errno : 0;
}

static int t_socketpair(Prep *p) {
    int pair[2];
    return socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0 ? -errno : 0;
}

static int t_open_read(Prep *p) {
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    return fd < 0 ? -errno : 0;
}

static int t_open_write(Prep *p) {
    int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    return fd < 0 ? -errno : 0;
}

static int t_open_creat(Prep *p) {
    /* Into a directory that does not exist: harmless when allowed. */
    int fd = open("/nonexistent-try-syscall/x", O_RDONLY | O_CREAT | O_CLOEXEC, 0600);
    return fd < 0 ? -errno : 0;
}

static int t_execveat(Prep *p) {
    char *const argv[] = {"try-syscall", "--exec-ok", "execveat", NULL};
    char *const envp[] = {NULL};
    syscall(SYS_execveat, p->exe, "", argv, envp, AT_EMPTY_PATH);
    return -errno;
}

static int t_execve(Prep *p) {
    char *const argv[] = {"try-syscall", "--exec-ok", "execve", NULL};
    char *const envp[] = {NULL};
    execve(self_exe, argv, envp);
    return -errno;
}

static int t_ptrace(Prep *p) {
    return ptrace(PTRACE_TRACEME, 0, NULL, NULL) < 0 ? -errno : 0;
}

static int t_mount(Prep *p) {
    /* A target that does not exist: harmless when allowed. */
    return mount("none", "/nonexistent-try-syscall", "tmpfs", 0, NULL) < 0 ? -errno : 0;
}

static int t_kill(Prep *p) {
    return kill(p->self, 0) < 0 ? -errno : 0;
}

static int t_inotify(Prep *p) {
    int fd = inotify_init1(IN_CLOEXEC);
    return fd < 0 ? -errno : 0;
}

static int t_memfd(Prep *p) {
    int fd = memfd_create("try", MFD_CLOEXEC);
    return fd < 0 ? -errno : 0;
}

static int t_eventfd(Prep *p) {
    int fd = eventfd(0, EFD_CLOEXEC);
    return fd < 0 ? -errno : 0;
}

static int t_setns(Prep *p) {
    return setns(-1, 0) < 0 ? -errno : 0;
}

static int t_bpf(Prep *p) {
    return syscall(SYS_bpf, -1, NULL, 0) < 0 ? -errno : 0;
}

typedef struct Call {
    const char *name;
    int (*fn)(Prep *p);
} Call;

static const Call calls[] = {
    {"read", t_read},
    {"write", t_write},
    {"msg-fds", t_msg_fds},
    {"mmap-shared", t_mmap_shared},
    {"mmap-exec", t_mmap_exec},
    {"mprotect-exec", t_mprotect_exec},
    {"epoll", t_epoll},
    {"fstat", t_fstat},
    {"close", t_close},
    {"clock-gettime", t_clock},
    {"fork", t_fork},
    {"clone-newuser", t_clone_newuser},
    {"clone3", t_clone3},
    {"unshare", t_unshare},
    {"socket-unix", t_socket_unix},
    {"socket-inet", t_socket_inet},
    {"socket-netlink", t_socket_netlink},
    {"socketpair", t_socketpair},
    {"open-read", t_open_read},
    {"open-write", t_open_write},
    {"open-creat", t_open_creat},
    {"execveat", t_execveat},
    {"execve", t_execve},
    {"ptrace", t_ptrace},
    {"mount", t_mount},
    {"kill", t_kill},
    {"inotify", t_inotify},
    {"memfd", t_memfd},
    {"eventfd", t_eventfd},
    {"setns", t_setns},
    {"bpf", t_bpf},
};

/* write() only: dprintf() would lseek, which no filter allows. */
static void say(const char *call, const char *what) {
    char buf[128];
    int n = snprintf(buf, sizeof(buf), "%s %s\n", call, what);
    if (n < 0 || loop_write(STDOUT_FILENO, buf, MIN((size_t)n, sizeof(buf) - 1)) < 0) {
        _exit(3);
    }
}

static const char *current;

/* Only write() and _exit(): the filter is in place. */
static void on_sigsys(int sig, siginfo_t *si, void *uc) {
    char buf[96];
    int n = snprintf(buf, sizeof(buf), "%s trapped:%d\n", current, si->si_syscall);
    if (write(STDOUT_FILENO, buf, (size_t)n) < 0) {
        _exit(3);
    }
    _exit(0);
}

static void prepare(Prep *p) {
    uint64_t one = 1;
    p->self = getpid();
    p->efd = eventfd(0, EFD_CLOEXEC);
    p->memfd = memfd_create("try", MFD_CLOEXEC);
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    p->exe = open(self_exe, O_RDONLY | O_CLOEXEC);
    p->anon = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p->efd < 0 || p->memfd < 0 || p->epfd < 0 || p->exe < 0 || p->anon == MAP_FAILED ||
        socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, p->pair) < 0 ||
        ftruncate(p->memfd, 4096) < 0 || write(p->efd, &one, sizeof(one)) != sizeof(one)) {
        perror("try-syscall: set-up");
        _exit(2);
    }
}

/* In the forked process: set up, filter, call, report. */
static _noreturn_ void try_one(const Call *c, const FilterTable *role, FilterMode mode) {
    Prep p;
    prepare(&p);
    current = c->name;
    struct sigaction sa = {.sa_sigaction = on_sigsys, .sa_flags = SA_SIGINFO};
    sigaction(SIGSYS, &sa, NULL);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
        perror("try-syscall: no_new_privs");
        _exit(2);
    }
    /* A child runs under the main's filter and adds its own. */
    int r = 0;
    if (role == &vm_switch_child_filter) {
        r = filter_apply(&vm_switch_main_filter, mode);
    }
    if (r >= 0) {
        r = filter_apply(role, mode);
    }
    if (r < 0) {
        fprintf(stderr, "try-syscall: loading the filter: %s\n", strerror(-r));
        _exit(2);
    }
    r = c->fn(&p);
    char what[64] = "ok";
    if (r < 0) {
        snprintf(what, sizeof(what), "errno:%s", strerrorname_np(-r));
    }
    say(c->name, what);
    _exit(0);
}

static int run(const Call *c, const FilterTable *role, FilterMode mode) {
    pid_t pid = fork();
    if (pid < 0) {
        return -errno;
    }
    if (pid == 0) {
        try_one(c, role, mode);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            return -errno;
        }
    }
    if (WIFSIGNALED(status)) {
        char what[64];
        snprintf(what, sizeof(what), "signal:%s", sigabbrev_np(WTERMSIG(status)) ?: "?");
        say(c->name, what);
    } else if (WEXITSTATUS(status) != 0) {
        fprintf(stderr, "try-syscall: %s: helper failed (%d)\n", c->name, WEXITSTATUS(status));
        return -EIO;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && streq(argv[1], "--exec-ok")) {
        /* The exec reached us: the call worked. */
        say(argv[2], "ok");
        return 0;
    }
    if (argc == 2 && streq(argv[1], "--list")) {
        for (size_t i = 0; i < ELEMENTSOF(calls); i++) {
            puts(calls[i].name);
        }
        return 0;
    }
    if (argc < 4) {
        fprintf(stderr, "usage: try-syscall ROLE MODE CALL...\n");
        return 2;
    }
    const FilterTable *role = confine_role(argv[1]);
    int mode = filter_mode_from_string(argv[2]);
    if (!role || mode < 0) {
        fprintf(stderr, "try-syscall: unknown role or mode\n");
        return 2;
    }
    for (int i = 3; i < argc; i++) {
        const Call *c = NULL;
        for (size_t k = 0; k < ELEMENTSOF(calls) && !c; k++) {
            if (streq(calls[k].name, argv[i])) {
                c = &calls[k];
            }
        }
        if (!c) {
            fprintf(stderr, "try-syscall: unknown call %s\n", argv[i]);
            return 2;
        }
        if (run(c, role, (FilterMode)mode) < 0) {
            return 1;
        }
    }
    return 0;
}
