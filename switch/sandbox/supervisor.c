/* The supervisor of a sandbox with a pid namespace, and the notifications
 * to the service manager (supervisor.h). */
#include "supervisor.h"

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "sandbox.h"
#include "util.h"

/* The supervisor's own limits: a few descriptors, no process. */
#define SUPERVISOR_MAX_FDS 16

/* The main process's end of the relay to the supervisor. */
static int relay_fd = -EBADF;
/* Without a supervisor: a datagram socket connected to $NOTIFY_SOCKET. */
static int notify_fd = -EBADF;

/* The supervisor waits outside the pid namespace for the main process,
 * forwards signals to it and relays its notifications to systemd. */
static const FilterRule supervisor_rules[] = {
    FILTER_ALLOW("ppoll", "waits for a signal or a message from the main process"),
    FILTER_ALLOW("read", "reads the signalfd and the relay socket"),
    FILTER_ALLOW("write", "logs to stderr"),
    FILTER_ALLOW("kill", "forwards a signal to the main process"),
    FILTER_ALLOW("wait4", "reaps the main process and learns its status"),
    FILTER_ALLOW_IF_EQ("socket", 0, AF_UNIX, "a datagram socket to systemd's notification socket"),
    FILTER_ALLOW("sendto", "relays a notification"),
    FILTER_ALLOW("close", "closes that socket"),
    FILTER_ALLOW("brk", "malloc"),
    FILTER_ALLOW_IF_CLEAR("mmap", 2, PROT_EXEC, "malloc; never executable"),
    FILTER_ALLOW("munmap", "free"),
    FILTER_ALLOW("newfstatat", "stdio on stderr"),
    FILTER_ALLOW("clock_gettime", "timestamps where the vDSO is not used"),
    FILTER_ALLOW("exit_group", "exits with the main process's status"),
    FILTER_ALLOW("restart_syscall", "the kernel resumes an interrupted call"),
};

static const FilterTable supervisor_filter = FILTER_TABLE("supervisor", supervisor_rules);

const FilterTable *sandbox_supervisor_filter(void) {
    return &supervisor_filter;
}

static const int forwarded_signals[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

/* One relayed notification: known assignments only, one per line, so that
 * a compromised main process cannot speak for the service (MAINPID=,
 * FDSTORE=, …). */
static bool notify_state_valid(const char *s, size_t n) {
    static const char *const exact[] = {"READY=1", "STOPPING=1", "RELOADING=1"};
    size_t i = 0;
    while (i < n) {
        const char *line = s + i;
        const char *nl = memchr(line, '\n', n - i);
        size_t len = nl ? (size_t)(nl - line) : n - i;
        bool ok = false;
        for (size_t k = 0; k < ELEMENTSOF(exact) && !ok; k++) {
            ok = len == strlen(exact[k]) && memcmp(line, exact[k], len) == 0;
        }
        if (!ok && len >= 7 && memcmp(line, "STATUS=", 7) == 0) {
            ok = true;
            for (size_t k = 7; k < len; k++) {
                ok = ok && (unsigned char)line[k] >= 0x20 && line[k] != 0x7f;
            }
        }
        if (!ok) {
            return false;
        }
        i += len + 1;
    }
    return n > 0;
}

/* $NOTIFY_SOCKET's address (a path, or "@" for the abstract namespace):
 * 1, or 0 when there is none. */
static int notify_address(struct sockaddr_un *ret, socklen_t *ret_len) {
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || (path[0] != '/' && path[0] != '@')) {
        return 0;
    }
    size_t n = strlen(path);
    if (n >= sizeof(ret->sun_path)) {
        return -ENAMETOOLONG;
    }
    *ret = (struct sockaddr_un){.sun_family = AF_UNIX};
    memcpy(ret->sun_path, path, n);
    if (path[0] == '@') {
        ret->sun_path[0] = '\0';
    }
    *ret_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    return 1;
}

/* A datagram socket for $NOTIFY_SOCKET (connected to it when asked) and
 * its address: 1, or 0 when there is no service manager to tell. */
static int notify_open(bool connected, int *ret_fd, struct sockaddr_un *ret_sa,
                       socklen_t *ret_len) {
    int r = notify_address(ret_sa, ret_len);
    if (r <= 0) {
        return r;
    }
    _cleanup_close_ int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    if (connected && connect(fd, (struct sockaddr *)ret_sa, *ret_len) < 0) {
        return -errno;
    }
    *ret_fd = TAKE_FD(fd);
    return 1;
}

/* One datagram to $NOTIFY_SOCKET: the whole of the protocol we use,
 * without a library (whose own libraries would all have to be in the
 * root). */
static int notify_send(const char *state) {
    _cleanup_close_ int fd = -EBADF;
    struct sockaddr_un sa;
    socklen_t len;
    int r = notify_open(false, &fd, &sa, &len);
    if (r <= 0) {
        return r;
    }
    if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, len) < 0) {
        return -errno;
    }
    return 1;
}

int notify_connect(void) {
    struct sockaddr_un sa;
    socklen_t len;
    int r = notify_open(true, &notify_fd, &sa, &len);
    return r < 0 ? r : 0;
}

/* The process that called sandbox_enter(), outside the new pid namespace:
 * systemd's main PID. It forwards signals (PID 1 only gets those it
 * handles, and the main process does), relays notifications and mirrors the
 * main process's exit. It is locked down like the rest: no capabilities,
 * its own small filter. */
static _noreturn_ void supervise(pid_t main_pid, int relay, const sigset_t *mask, FilterMode mode) {
    int sfd = signalfd(-1, mask, SFD_CLOEXEC);
    if (sfd < 0) {
        log_error_errno(-errno, "Failed to create the supervisor's signalfd: %m");
        kill(main_pid, SIGKILL);
        _exit(1);
    }
    const SandboxLimits limits = {.max_fds = SUPERVISOR_MAX_FDS, .max_procs = 0};
    int r = sandbox_lockdown(&supervisor_filter, mode, &limits);
    if (r < 0) {
        log_error_errno(r, "Failed to lock the supervisor down: %m");
        kill(main_pid, SIGKILL);
        _exit(1);
    }
    struct pollfd p[2] = {{.fd = sfd, .events = POLLIN}, {.fd = relay, .events = POLLIN}};
    for (;;) {
        if (ppoll(p, 2, NULL, NULL) < 0) {
            if (errno == EINTR) {
                continue;
            }
            kill(main_pid, SIGKILL);
            _exit(1);
        }
        if (p[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(sfd, &si, sizeof(si)) == sizeof(si)) {
                if (si.ssi_signo != SIGCHLD) {
                    kill(main_pid, (int)si.ssi_signo);
                }
            }
            int status;
            pid_t pid = wait4(main_pid, &status, WNOHANG, NULL);
            if (pid == main_pid) {
                if (WIFEXITED(status)) {
                    _exit(WEXITSTATUS(status));
                }
                _exit(128 + WTERMSIG(status));
            }
        }
        if (p[1].revents & (POLLIN | POLLHUP)) {
            char buf[256];
            ssize_t n = read(relay, buf, sizeof(buf) - 1);
            if (n <= 0) {
                /* The main process closed its end (exiting); wait for it. */
                p[1].fd = -1;
            } else if (notify_state_valid(buf, (size_t)n)) {
                buf[n] = '\0';
                r = notify_send(buf);
                if (r < 0) {
                    log_warning_errno(r, "Failed to notify the service manager: %m");
                }
            } else {
                log_warning("Dropped a notification the supervisor does not relay");
            }
        }
    }
}

int supervisor_split(FilterMode mode, const int *main_fds, size_t n_main_fds) {
    if (unshare(CLONE_NEWPID) < 0) {
        return -errno;
    }
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) {
        return -errno;
    }
    sigset_t mask, old;
    sigemptyset(&mask);
    for (size_t i = 0; i < ELEMENTSOF(forwarded_signals); i++) {
        sigaddset(&mask, forwarded_signals[i]);
    }
    sigaddset(&mask, SIGCHLD);
    /* Blocked before the fork so that none is lost in between. */
    if (sigprocmask(SIG_BLOCK, &mask, &old) < 0) {
        int r = -errno;
        close_pair(pair);
        return r;
    }
    pid_t pid = fork();
    if (pid < 0) {
        int r = -errno;
        sigprocmask(SIG_SETMASK, &old, NULL);
        close_pair(pair);
        return r;
    }
    if (pid > 0) {
        close(pair[1]);
        for (size_t i = 0; i < n_main_fds; i++) {
            safe_close(main_fds[i]);
        }
        supervise(pid, pair[0], &mask, mode);
    }
    close(pair[0]);
    relay_fd = pair[1];
    if (sigprocmask(SIG_SETMASK, &old, NULL) < 0) {
        return -errno;
    }
    /* Die with the supervisor; if it is already gone, its end of the relay
     * has hung up. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) {
        return -errno;
    }
    struct pollfd p = {.fd = relay_fd, .events = POLLIN};
    if (poll(&p, 1, 0) > 0 && (p.revents & POLLHUP)) {
        _exit(1);
    }
    return 0;
}

int sandbox_notify(const char *state) {
    int fd = relay_fd >= 0 ? relay_fd : notify_fd;
    if (fd < 0) {
        return notify_send(state);
    }
    if (send(fd, state, strlen(state), MSG_NOSIGNAL) < 0) {
        return -errno;
    }
    return fd == notify_fd ? 1 : 0;
}
