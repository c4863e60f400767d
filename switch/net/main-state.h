/* The state of vm-switch's main process, shared by its modules:
 *
 *   main.c            set-up, the event loop, shutdown
 *   main-config.c     the configuration directory: VMs come, change, go
 *   main-children.c   one child per VM: start, stop, reap, restart
 *   main-ctl.c        control messages to and from the children, rings
 *   main-heartbeat.c  pings, pongs and the timers
 *   main-stats.c      the counters file
 *
 * A VM has a port: its slot in Switch.vm, the number the policy, the
 * control messages and the children use for it. No thread anywhere: every
 * function runs from the one event loop. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "ctl.h"
#include "options.h"
#include "policy.h"
#include "rules.h"
#include "util.h"
#include "vmconf.h"

/* Children killed and no longer the VM's, not yet reaped: their pidfd
 * says when (the event loop never waits for a process). */
#define DYING_MAX 64

/* What an epoll event is about: kind in the high half, index in the low. */
enum {
    EV_SIGNAL = 1,
    EV_INOTIFY,
    EV_CTL,   /* index: port */
    EV_PIDFD, /* index: port */
    EV_DYING, /* index: slot in Switch.dying */
};
#define EV(kind, idx) (((uint64_t)(kind) << 32) | (uint32_t)(idx))

/* A ring handed to its consumer (GET_BUFFER), waiting for BUFFER_READY
 * before the producer gets it (PUT_BUFFER). */
typedef struct PendingRing {
    bool active;
    int fds[3]; /* memfd, data eventfd, space eventfd */
    uint32_t producer_gen;
    uint32_t consumer_gen;
} PendingRing;

typedef struct Vm {
    bool used;
    char name[VM_NAME_MAX + 1];
    VmConf conf;
    int listen_fd; /* kept across child restarts: frontends reconnect to it */

    pid_t pid; /* 0: no child */
    int pidfd;
    int ctl;
    uint32_t gen; /* of the current (or last) child */
    uint64_t started_at;
    uint64_t restart_at; /* when pid == 0 and restart_pending */
    bool restart_pending;
    unsigned restarts;
    unsigned quick_crashes;

    uint64_t ping_seq;
    uint64_t ping_sent_at;
    bool ping_outstanding;
    bool ping_missed;        /* a ping went unanswered for 100 ms ... */
    uint64_t ping_missed_at; /* ... this long ago, none answered since */

    CtlState child_state;
    CtlCounters cur;                      /* the current child's, from its last pong */
    CtlCounters base;                     /* earlier children's */
    uint64_t ring_full_to[CTL_MAX_PORTS]; /* the current child's, by destination */
    uint64_t ring_full_in;                /* frames for us dropped by earlier children of others */
    /* The current child's refusals of ring frames, by source port and
     * policy reason; and those of earlier children of others, of our frames. */
    uint64_t refused_from[CTL_MAX_PORTS][POLICY_DROP_MAX];
    uint64_t refused_in[POLICY_DROP_MAX];

    PendingRing pending[CTL_MAX_PORTS]; /* rings from that producer to us */
} Vm;

typedef struct Dying {
    pid_t pid; /* 0: free */
    int pidfd;
    char name[VM_NAME_MAX + 1];
} Dying;

typedef struct Switch {
    const Options *opt;
    int exe_fd;
    int config_fd;
    int socket_fd;
    int inotify_fd;
    int signal_fd;
    int epoll;
    Policy *policy;
    Vm vm[CTL_MAX_PORTS];
    Dying dying[DYING_MAX];
    uint64_t next_tick;
    bool stats_dirty;
} Switch;

static inline const char *role_name(VmRole r) {
    return r == VM_ROLE_ROUTER ? "router" : "client";
}

static inline unsigned vm_port(const Switch *s, const Vm *v) {
    return (unsigned)(v - s->vm);
}

static inline bool vm_running(const Vm *v) {
    return v->used && v->pid > 0;
}

/* Frames may cross between a and b: a router and a client. */
static inline bool pair_allowed(const Vm *a, const Vm *b) {
    return a != b && a->conf.role != b->conf.role;
}

/* A VM's slot as its fds are when it has none. */
static inline void vm_clear(Vm *v) {
    memset(v, 0, sizeof(*v));
    v->listen_fd = v->ctl = v->pidfd = -EBADF;
}

/* The VM of that name on the network, or NULL. */
Vm *vm_find(Switch *s, const char *name);
/* Watches fd for input in the event loop; dies when it cannot (set-up). */
void switch_epoll_add(Switch *s, int fd, uint64_t tag);
