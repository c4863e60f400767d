/* The program a session runs, as a process: whether exec succeeded (the
 * start report on spawn's error pipe, read without blocking), its exit,
 * signals to its process group, and the end a client that went away
 * gives it (SIGHUP now, SIGKILL after a grace period).
 *
 * The leader's exit is peeked at, not reaped: the zombie keeps its pid,
 * and so its process group id, ours until the session is over, so that
 * the group we signal is never someone else's. */
#pragma once

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "log.h"
#include "spawn.h"
#include "wire.h"

/* What the child tells its session; each may free the session (and the
 * Child in it). */
typedef struct ChildOps {
    void (*started)(void *userdata); /* exec succeeded */
    /* It did not: error and the shell-like line for the program's stderr. */
    void (*start_failed)(void *userdata, int error, const char *msg, size_t len);
    void (*exited)(void *userdata); /* the leader exited (not once hung up) */
    /* Hung up, the grace is over (the leader reaped if it had exited):
     * the child may no longer keep the session. */
    void (*gone)(void *userdata);
} ChildOps;

typedef struct Child {
    const ChildOps *ops;
    void *userdata;
    const LogContext *log;
    sd_event *event;
    bool present; /* spawned and not reaped */
    bool exited;  /* the leader exited (peeked at) */
    bool started; /* exec succeeded */
    bool start_failed;
    int start_errno;
    bool hung_up, grace_done;
    pid_t pid; /* also its process group and session id */
    int pidfd;
    sd_event_source *pid_src;
    siginfo_t si;
    int err_fd; /* the start report, until it is in */
    sd_event_source *err_src;
    uint8_t untrusted_report[SPAWN_REPORT_MAX]; /* from a child that may be the user by then */
    size_t report_len;
    sd_event_source *grace;
} Child;

#define CHILD_NONE ((Child){.pidfd = -EBADF, .err_fd = -EBADF})

/* Takes the spawned program's pid, pidfd and error pipe over and watches
 * them. */
int child_watch(Child *c, sd_event *e, const Spawned *sp, const ChildOps *ops, void *userdata,
                const LogContext *log);
/* Whether the start report is still to come. */
bool child_report_pending(const Child *c);
/* Kills the group and the leader itself (before setsid() in the child the
 * group does not exist yet). Nothing once reaped. */
void child_signal(Child *c, int signo);
/* A client's signal: to the group once the program started, else to the
 * leader (it may not lead its group yet). */
void child_forward_signal(Child *c, int signo);
/* Reaps the leader (it exited) and stops watching. */
void child_reap(Child *c);
/* The client is gone: SIGHUP (and SIGCONT) to the group now, SIGKILL after
 * grace_usec, then ops->gone(). Once. */
void child_hang_up(Child *c, uint64_t grace_usec);
/* The exit as Exited: a code, a signal with the core flag, or the start
 * failure's errno. Once exited, or the start failed. */
void child_exit_status(const Child *c, MsgExited *ret);
/* Agent exit: kills and reaps a child still there, then releases all. */
void child_done(Child *c);
