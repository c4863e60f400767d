/* The program as a process: see child.h. */
#include "child.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

#define CHILD_TIMER_ACCURACY_USEC 10000ULL

static int on_start_report(sd_event_source *src, int fd, uint32_t revents, void *userdata);
static int on_leader_exit(sd_event_source *src, int fd, uint32_t revents, void *userdata);

int child_watch(Child *c, sd_event *e, const Spawned *sp, const ChildOps *ops, void *userdata,
                const LogContext *log) {
    *c = CHILD_NONE;
    c->ops = ops;
    c->userdata = userdata;
    c->log = log;
    c->event = e;
    c->present = true;
    c->pid = sp->pid;
    c->pidfd = sp->pidfd;
    c->err_fd = sp->err_fd;
    int r = sd_event_add_io(e, &c->pid_src, c->pidfd, EPOLLIN, on_leader_exit, c);
    if (r >= 0) {
        r = sd_event_add_io(e, &c->err_src, c->err_fd, EPOLLIN, on_start_report, c);
    }
    return r;
}

bool child_report_pending(const Child *c) {
    return c->err_fd >= 0;
}

void child_signal(Child *c, int signo) {
    if (!c->present) {
        return;
    }
    (void)kill(-c->pid, signo);
    (void)kill(c->pid, signo);
}

void child_forward_signal(Child *c, int signo) {
    if (!c->present) {
        return;
    }
    if (c->started) {
        (void)kill(-c->pid, signo);
    } else {
        (void)kill(c->pid, signo); /* not in its own group yet, maybe */
    }
}

void child_reap(Child *c) {
    if (!c->present) {
        return;
    }
    siginfo_t si = {0};
    (void)waitid(P_PIDFD, c->pidfd, &si, WEXITED | WNOHANG);
    c->present = false;
    c->pid_src = sd_event_source_disable_unref(c->pid_src);
    c->pidfd = safe_close(c->pidfd);
}

static void report_close(Child *c) {
    c->err_src = sd_event_source_disable_unref(c->err_src);
    c->err_fd = safe_close(c->err_fd);
}

/* ---- the start report -------------------------------------------------------- */

static int on_start_report(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
    Child *c = userdata;
    const char *msg;
    size_t len;
    int e;

    for (;;) {
        ssize_t k = read(c->err_fd, c->untrusted_report + c->report_len,
                         sizeof(c->untrusted_report) - c->report_len);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k < 0 && errno == EAGAIN) {
            return 0;
        }
        if (k > 0) {
            c->report_len += (size_t)k;
            if (c->report_len < sizeof(c->untrusted_report)) {
                continue;
            }
        }
        break; /* EOF, error, or a report too long */
    }
    report_close(c);
    if (c->report_len == 0) {
        /* The pipe closed on exec, with nothing said. */
        c->started = true;
        log_ctx_debug(c->log, "started as pid %d", (int)c->pid);
        c->ops->started(c->userdata);
        return 0;
    }
    if (spawn_parse_report(c->untrusted_report, c->report_len, &e, &msg, &len) < 0) {
        e = EIO;
        msg = "qubes-lite: cannot start the program\n";
        len = strlen(msg);
    }
    c->start_failed = true;
    c->start_errno = e;
    log_ctx_debug(c->log, "start failed: %.*s", (int)(len > 0 ? len - 1 : 0), msg);
    c->ops->start_failed(c->userdata, e, msg, len);
    return 0;
}

/* ---- the exit ---------------------------------------------------------------------- */

static int on_leader_exit(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
    Child *c = userdata;
    siginfo_t si = {0};

    /* Peek only: the zombie keeps the pid and group id ours. */
    if (waitid(P_PIDFD, c->pidfd, &si, WEXITED | WNOHANG | WNOWAIT) < 0) {
        log_ctx_warning_errno(c->log, -errno, "waitid() failed: %m");
        si.si_pid = c->pid;
        si.si_code = CLD_KILLED;
        si.si_status = SIGKILL;
    }
    if (si.si_pid == 0) {
        return 0;
    }
    c->si = si;
    c->exited = true;
    (void)sd_event_source_set_enabled(c->pid_src, SD_EVENT_OFF);
    if (!c->hung_up) {
        c->ops->exited(c->userdata);
    } else if (c->grace_done) {
        child_reap(c);
        c->ops->gone(c->userdata);
    }
    return 0;
}

void child_exit_status(const Child *c, MsgExited *ret) {
    if (c->start_failed) {
        *ret = (MsgExited){.kind = EXIT_START_FAILED, .start_errno = (uint32_t)c->start_errno};
    } else if (c->si.si_code == CLD_EXITED) {
        *ret = (MsgExited){.kind = EXIT_CODE, .code = (uint32_t)c->si.si_status & 0xff};
    } else {
        *ret = (MsgExited){
            .kind = EXIT_SIGNAL,
            .signo = (uint32_t)c->si.si_status,
            .core_dumped = c->si.si_code == CLD_DUMPED,
        };
        if (ret->signo == 0 || ret->signo > WIRE_SIGNAL_MAX) {
            ret->signo = SIGKILL;
        }
    }
}

/* ---- hanging up -------------------------------------------------------------------- */

/* The grace is over: SIGKILL, and the leader reaped if it exited (else
 * on_leader_exit() will). */
static void grace_end(Child *c) {
    c->grace_done = true;
    child_signal(c, SIGKILL);
    if (c->exited) {
        child_reap(c);
    }
}

static int on_grace(sd_event_source *src, uint64_t usec, void *userdata) {
    Child *c = userdata;
    c->grace = sd_event_source_disable_unref(c->grace);
    log_ctx_debug(c->log, "grace over, killing process group %d", (int)c->pid);
    grace_end(c);
    c->ops->gone(c->userdata);
    return 0;
}

void child_hang_up(Child *c, uint64_t grace_usec) {
    if (!c->present || c->hung_up) {
        return;
    }
    c->hung_up = true;
    report_close(c);
    log_ctx_debug(c->log, "client gone, hanging up process group %d", (int)c->pid);
    child_signal(c, SIGHUP);
    child_signal(c, SIGCONT); /* a stopped group must see the HUP */
    int r = sd_event_add_time_relative(c->event, &c->grace, CLOCK_MONOTONIC, grace_usec,
                                       CHILD_TIMER_ACCURACY_USEC, on_grace, c);
    if (r < 0) {
        log_ctx_warning_errno(c->log, r, "no grace timer, killing now: %m");
        grace_end(c);
    }
}

void child_done(Child *c) {
    if (c->present) {
        /* Only at agent exit: nothing may outlive us. */
        child_signal(c, SIGKILL);
        siginfo_t si;
        (void)waitid(P_PIDFD, c->pidfd, &si, WEXITED);
        c->present = false;
    }
    report_close(c);
    c->pid_src = sd_event_source_disable_unref(c->pid_src);
    c->pidfd = safe_close(c->pidfd);
    c->grace = sd_event_source_disable_unref(c->grace);
}
