/* One child process per VM: start, stop, reap, restart. */
#include "main-children.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"
#include "main-ctl.h"

/* The child is gone (reaped): its peers drop the rings shared with it. */
static void child_gone(Switch *s, Vm *v) {
    if (v->pid <= 0) {
        return;
    }
    epoll_ctl(s->epoll, EPOLL_CTL_DEL, v->ctl, NULL);
    epoll_ctl(s->epoll, EPOLL_CTL_DEL, v->pidfd, NULL);
    v->ctl = safe_close(v->ctl);
    v->pidfd = safe_close(v->pidfd);
    v->pid = 0;
    v->ping_outstanding = false;
    v->ping_missed = false;
    ctl_counters_add(&v->base, &v->cur);
    memset(&v->cur, 0, sizeof(v->cur));
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        s->vm[i].ring_full_in += v->ring_full_to[i];
        v->ring_full_to[i] = 0;
        for (unsigned r = 0; r < POLICY_DROP_MAX; r++) {
            s->vm[i].refused_in[r] += v->refused_from[i][r];
            v->refused_from[i][r] = 0;
        }
        pending_clear(&v->pending[i]);
        pending_clear(&s->vm[i].pending[vm_port(s, v)]);
    }
    tell_peers(s, CTL_PEER_DOWN, v);
    s->stats_dirty = true;
}

static void describe_status(int status, char *buf, size_t size) {
    if (WIFEXITED(status)) {
        snprintf(buf, size, "exited with status %d", WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        snprintf(buf, size, "killed by signal %d (%s)%s", WTERMSIG(status),
                 strsignal(WTERMSIG(status)), WCOREDUMP(status) ? ", core dumped" : "");
    } else {
        snprintf(buf, size, "status 0x%x", status);
    }
}

static void reap_report(const char *name, pid_t pid, int status) {
    if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) {
        char what[128];
        describe_status(status, what, sizeof(what));
        log_warning("%s: child %d had %s", name, (int)pid, what);
    }
}

bool dying_reap(Switch *s, Dying *d, bool block) {
    int status;
    pid_t r;
    if (d->pid <= 0) {
        return true;
    }
    while ((r = waitpid(d->pid, &status, block ? 0 : WNOHANG)) < 0 && errno == EINTR) {
    }
    if (r == 0) {
        return false;
    }
    if (r > 0) {
        reap_report(d->name, d->pid, status);
    }
    if (d->pidfd >= 0) {
        epoll_ctl(s->epoll, EPOLL_CTL_DEL, d->pidfd, NULL);
    }
    d->pidfd = safe_close(d->pidfd);
    d->pid = 0;
    return true;
}

/* A free slot for a killed child, its pidfd moved to it in the event
 * loop; NULL when there is none (or the move failed). */
static Dying *dying_slot(Switch *s, int pidfd) {
    for (unsigned i = 0; i < DYING_MAX && pidfd >= 0; i++) {
        if (s->dying[i].pid == 0) {
            struct epoll_event ev = {.events = EPOLLIN, .data.u64 = EV(EV_DYING, i)};
            if (epoll_ctl(s->epoll, EPOLL_CTL_MOD, pidfd, &ev) < 0) {
                return NULL;
            }
            return &s->dying[i];
        }
    }
    return NULL;
}

/* Kills the child; it is the VM's no longer. It holds no state we need:
 * its peers drop the rings shared with it at once, and it is reaped when
 * its pidfd says it has exited, without the event loop waiting for it. */
void child_stop(Switch *s, Vm *v) {
    if (v->pid <= 0) {
        return;
    }
    (void)kill(v->pid, SIGKILL);
    Dying *d = dying_slot(s, v->pidfd);
    if (d) {
        d->pid = v->pid;
        d->pidfd = TAKE_FD(v->pidfd);
        snprintf(d->name, sizeof(d->name), "%s", v->name);
    } else {
        /* More children dying at once than we keep track of: this one
         * is reaped now (SIGKILL: it does not take long). */
        Dying now = {.pid = v->pid, .pidfd = -EBADF};
        snprintf(now.name, sizeof(now.name), "%s", v->name);
        (void)dying_reap(s, &now, true);
    }
    child_gone(s, v);
}

static void schedule_restart(Switch *s, Vm *v) {
    uint64_t now = now_usec(CLOCK_MONOTONIC);
    uint64_t delay = 0;
    if (now - v->started_at < STABLE_USEC) {
        v->quick_crashes++;
    } else {
        v->quick_crashes = 0;
    }
    if (v->quick_crashes > QUICK_FREE) {
        delay = RESTART_FIRST_DELAY_USEC << MIN(v->quick_crashes - QUICK_FREE - 1, 16u);
        delay = MIN(delay, RESTART_MAX_DELAY_USEC);
    }
    v->restarts++;
    v->restart_pending = true;
    v->restart_at = now + delay;
    log_info("%s: restarting in %llu ms", v->name, (unsigned long long)(delay / 1000));
}

void child_kill(Switch *s, Vm *v, const char *why) {
    if (v->pid <= 0) {
        return;
    }
    log_warning("%s: child %d %s: killing it", v->name, (int)v->pid, why);
    child_stop(s, v);
    schedule_restart(s, v);
}

void on_child_exit(Switch *s, Vm *v) {
    int status;
    pid_t r = waitpid(v->pid, &status, WNOHANG);
    if (r == 0 || (r < 0 && errno == EINTR)) {
        return;
    }
    char what[128] = "vanished";
    if (r > 0) {
        describe_status(status, what, sizeof(what));
    }
    log_warning("%s: child %d %s", v->name, (int)v->pid, what);
    child_gone(s, v);
    schedule_restart(s, v);
}

/* In the forked process: the control socket to CHILD_CTL_FD, then the
 * program again from its descriptor. Never returns. */
static _noreturn_ void exec_child(Switch *s, int ctl) {
    char fdbuf[16];
    char *argv[] = {(char *)PROGRAM,
                    (char *)"--child",
                    fdbuf,
                    (char *)"--log-level",
                    (char *)(s->opt->log_level ? s->opt->log_level : "info"),
                    (char *)"--seccomp-mode",
                    (char *)filter_mode_to_string(s->opt->seccomp_mode),
                    s->opt->no_sandbox ? (char *)"--no-sandbox" : NULL,
                    NULL};
    sigset_t none;
    int exe_fd = s->exe_fd;
    extern char **environ;
    /* Dies with the main process, whatever happens to the main's exit path. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) {
        _exit(127);
    }
    /* The blocked signals (signalfd's) survive exec: unblock them. */
    sigemptyset(&none);
#ifdef VM_SWITCH_TEST_HOOKS
    /* The test trigger stays blocked until the child has its handler
     * (child.c): a test that sends it as soon as the child exists must
     * not kill it by the signal's default action. */
    sigaddset(&none, SIGUSR1);
#endif
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (exe_fd == CHILD_CTL_FD) {
        /* Not where the control socket goes. */
        exe_fd = fcntl(exe_fd, F_DUPFD_CLOEXEC, CHILD_CTL_FD + 1);
        if (exe_fd < 0) {
            _exit(127);
        }
    }
    if (ctl == CHILD_CTL_FD) {
        if (fd_cloexec(ctl, false) < 0) {
            _exit(127);
        }
    } else if (dup2(ctl, CHILD_CTL_FD) < 0) {
        _exit(127);
    }
    snprintf(fdbuf, sizeof(fdbuf), "%d", CHILD_CTL_FD);
    syscall(SYS_execveat, exe_fd, "", argv, environ, AT_EMPTY_PATH);
    _exit(127);
}

/* fork() + exec_child(), the child's pidfd and control socket into v
 * (a new generation). Failures schedule a later attempt. */
static int child_spawn(Switch *s, Vm *v) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        schedule_restart(s, v);
        return log_error_errno(-errno, "%s: socketpair: %m", v->name);
    }
    pid_t pid = fork();
    if (pid < 0) {
        int r = -errno;
        close_pair(sv);
        schedule_restart(s, v);
        return log_error_errno(r, "%s: fork: %m", v->name);
    }
    if (pid == 0) {
        close(sv[0]);
        exec_child(s, sv[1]);
    }
    close(sv[1]);
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0) {
        int r = -errno;
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(sv[0]);
        schedule_restart(s, v);
        return log_error_errno(r, "%s: pidfd_open: %m", v->name);
    }
    fd_cloexec(pidfd, true);
    (void)fd_nonblock(sv[0], true);
    v->pid = pid;
    v->pidfd = pidfd;
    v->ctl = sv[0];
    v->gen++;
    v->started_at = now_usec(CLOCK_MONOTONIC);
    v->restart_pending = false;
    v->child_state = CTL_STATE_WAITING;
    v->ping_outstanding = false;
    v->ping_missed = false;
    switch_epoll_add(s, v->ctl, EV(EV_CTL, vm_port(s, v)));
    switch_epoll_add(s, v->pidfd, EV(EV_PIDFD, vm_port(s, v)));
    log_info("%s: child %d started (%s, generation %u)", v->name, (int)pid, role_name(v->conf.role),
             v->gen);
    return 0;
}

/* SETUP: who the child is, and the VM's listening socket. */
static int send_setup(Switch *s, Vm *v) {
    CtlMsg m;
    ctl_msg_init(&m, CTL_SETUP);
    m.setup.port = vm_port(s, v);
    m.setup.gen = v->gen;
    memcpy(m.setup.mac, v->conf.mac, 6);
    m.setup.role = (uint8_t)v->conf.role;
    snprintf(m.setup.name, sizeof(m.setup.name), "%s", v->name);
    return vm_send(s, v, &m, &v->listen_fd, 1);
}

int child_start(Switch *s, Vm *v) {
    int r = child_spawn(s, v);
    if (r < 0) {
        return r;
    }
    if (send_setup(s, v) < 0) {
        return -EIO;
    }
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        Vm *p = &s->vm[i];
        if (p->used && p != v) {
            send_peer(s, v, p);
        }
    }
    /* Rings with every running peer it may talk to, both ways. */
    for (unsigned i = 0; i < CTL_MAX_PORTS && vm_running(v); i++) {
        Vm *p = &s->vm[i];
        if (vm_running(p) && pair_allowed(v, p)) {
            ring_offer(s, v, p);
            /* The first offer may have found p's control socket full and
             * killed p: no ring for a child that is gone. */
            if (vm_running(p) && vm_running(v)) {
                ring_offer(s, p, v);
            }
        }
    }
    s->stats_dirty = true;
    return 0;
}
