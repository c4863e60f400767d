/* A vm-switch child: one VM's vhost-user-net backend and its datapath,
 * driven by one epoll set: the control socket, the listening socket
 * (while no frontend is connected) or the connection, the two kick
 * eventfds, the data eventfd of each incoming ring and the space eventfd
 * of each outgoing one.
 *
 * An idle child sleeps in epoll_wait until the next ping. After a round
 * that moved frames it first looks again up to SPIN_ROUNDS times (the
 * avail rings and the peers' ring heads, read-only, with sched_yield() in
 * between) before it sleeps: under load the next frames come within
 * microseconds, and a sleep plus an eventfd wakeup costs more than that.
 * With one testpmd bouncing frames between a router and a client port
 * (macswap, 768 in flight) this took the switch from about 0.2 to about
 * 1.1 Mpps per direction on a 2-CPU machine; an idle child still wakes
 * once a second. Wakeups are asked for only right before the child sleeps
 * (arm_wakeups(): the guest's TX kick, the wait flag of each incoming
 * ring, each followed by one more look); while it works or spins the
 * guest does not kick and the peers do not write its eventfds, which
 * would only cost both sides a system call per batch. The control socket
 * is served between rounds of bounded work (BUDGET frames per queue), so
 * a healthy child answers a ping within far less than a millisecond. */
#include "child.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "child-ctl.h"
#include "child-rings.h"
#include "child-rx.h"
#include "child-state.h"
#include "child-tx.h"
#include "child-vhost.h"
#include "log.h"
#include "util.h"

void child_epoll_add(Child *c, int fd, uint64_t tag) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag};
    if (epoll_ctl(c->epoll, EPOLL_CTL_ADD, fd, &ev) < 0) {
        /* Nothing we were given can fail this but by our own bug. */
        die("%s: epoll_ctl(ADD): %m", c->name);
    }
}

void child_epoll_del(Child *c, int fd) {
    /* The fd may already be closed by its owner (a replaced kick fd). */
    (void)epoll_ctl(c->epoll, EPOLL_CTL_DEL, fd, NULL);
}

void efd_signal(int fd) {
    uint64_t one = 1;
    /* Non-blocking; a full counter means a wakeup is pending anyway. */
    if (write(fd, &one, sizeof(one)) < 0 && errno != EAGAIN) {
        log_debug("eventfd write: %m");
    }
}

void efd_drain(int fd) {
    uint64_t v;
    if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN) {
        log_debug("eventfd read: %m");
    }
}

/* ---- sleeping and spinning --------------------------------------------- */

/* Whether the guest or a peer has given us something to do since we last
 * looked: read-only looks at the queues and rings, no notification armed
 * or disarmed. */
static bool work_visible(Child *c) {
    Vq *tx = c->dev ? vu_dev_queue(c->dev, VU_NET_TX) : NULL;
    Vq *rx = c->dev ? vu_dev_queue(c->dev, VU_NET_RX) : NULL;
    if (c->tx_blocked) {
        Peer *p = &c->peer[c->tx_blocked_on];
        void *slot;
        if (!p->out.ring || ring_producer_slot(p->out.ring, &slot) != -ENOBUFS) {
            c->tx_blocked = false;
            return true;
        }
    } else if (tx && vq_has_avail(tx)) {
        return true;
    }
    if (!rx) {
        return false;
    }
    if (c->rx_waiting) {
        if (vq_avail_moved(rx, c->rx_seen)) {
            c->rx_waiting = false;
            return true;
        }
        return false;
    }
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        RingFrame untrusted;
        if (c->peer[i].in.ring && ring_consumer_peek(c->peer[i].in.ring, &untrusted) != 0) {
            return true;
        }
    }
    return false;
}

/* Before sleeping: asks the guest for a TX kick and the peers for a
 * wakeup on new frames, then looks again. True when something came
 * meanwhile (do not sleep). Nothing is armed while the child works or
 * spins: a kick or an eventfd write then would only cost both sides a
 * system call. A full ring (tx_blocked) and missing receive buffers
 * (rx_waiting) were armed when they were met. */
static bool arm_wakeups(Child *c) {
    Vq *tx = c->dev ? vu_dev_queue(c->dev, VU_NET_TX) : NULL;
    Vq *rx = c->dev ? vu_dev_queue(c->dev, VU_NET_RX) : NULL;
    bool more = false;
    if (tx && !c->tx_blocked && vq_enable_notify(tx)) {
        more = true;
    }
    if (rx && c->rx_waiting) {
        return more;
    }
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        Ring *ring = c->peer[i].in.ring;
        if (ring && !ring_consumer_prepare_wait(ring)) {
            more = true;
        }
    }
    return more;
}

static void spin(Child *c) {
    c->moved = false;
    for (unsigned i = 0; i < SPIN_ROUNDS; i++) {
        if (work_visible(c)) {
            c->work_pending = true;
            return;
        }
        sched_yield();
    }
}

/* ---- set-up and the event loop ------------------------------------------ */

#ifdef VM_SWITCH_TEST_HOOKS
/* Only in the test build of vm-switch (tests/switch/): SIGUSR1 makes a
 * child call what its filter forbids, the way an exploited child would. */
static void forbidden_call(int sig) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        close(fd);
    }
}
#endif

/* A child on its control socket, its epoll set made before the first
 * message: once serving, nothing is opened. */
static Child *child_new(int ctl_fd, bool lockdown, FilterMode mode) {
    Child *c = calloc(1, sizeof(*c));
    if (!c) {
        die("out of memory");
    }
    c->ctl = ctl_fd;
    c->lockdown = lockdown;
    c->mode = mode;
    c->listen_fd = c->conn = -EBADF;
    for (unsigned q = 0; q < VU_NET_N_QUEUES; q++) {
        c->kick_reg[q] = -EBADF;
    }
    strcpy(c->name, "child");
    c->state = CTL_STATE_WAITING;
    if (policy_new(&c->policy) < 0) {
        die("out of memory");
    }
    (void)fd_nonblock(ctl_fd, true);
    /* A frontend gone while we reply is an error code, not a signal. */
    signal(SIGPIPE, SIG_IGN);
#ifdef VM_SWITCH_TEST_HOOKS
    /* The main process (main-children.c) started us with it blocked. */
    signal(SIGUSR1, forbidden_call);
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    sigprocmask(SIG_UNBLOCK, &usr1, NULL);
#endif
    c->epoll = epoll_create1(EPOLL_CLOEXEC);
    if (c->epoll < 0) {
        die("epoll_create1: %m");
    }
    child_epoll_add(c, ctl_fd, EV(EV_CTL, 0));
    return c;
}

static void child_free(Child *c) {
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        peer_drop_rings(c, i, 0, true);
    }
    vu_dev_free(c->dev);
    policy_free(c->policy);
    safe_close(c->conn);
    safe_close(c->listen_fd);
    safe_close(c->epoll);
    safe_close(c->ctl);
    free(c);
}

/* One event. false when the main process is gone. */
static bool dispatch(Child *c, uint64_t tag) {
    uint32_t kind = (uint32_t)(tag >> 32);
    uint32_t idx = (uint32_t)tag;
    switch (kind) {
    case EV_CTL:
        return child_on_ctl(c) != 0;
    case EV_LISTEN:
        if (c->conn < 0) {
            on_listen(c);
        }
        break;
    case EV_CONN:
        if (c->conn >= 0) {
            on_conn(c);
        }
        break;
    case EV_KICK:
        if (idx < VU_NET_N_QUEUES && c->kick_reg[idx] >= 0) {
            efd_drain(c->kick_reg[idx]);
            if (idx == VU_NET_RX) {
                c->rx_waiting = false;
            }
        }
        break;
    case EV_RING_DATA:
        if (idx < CTL_MAX_PORTS && c->peer[idx].in.ring) {
            efd_drain(c->peer[idx].in.data_efd);
        }
        break;
    case EV_RING_SPACE:
        if (idx < CTL_MAX_PORTS && c->peer[idx].out.ring) {
            efd_drain(c->peer[idx].out.space_efd);
            if (c->tx_blocked && c->tx_blocked_on == idx) {
                c->tx_blocked = false;
            }
        }
        break;
    default:
        break;
    }
    return true;
}

int child_run(int ctl_fd, bool lockdown, FilterMode mode) {
    Child *c = child_new(ctl_fd, lockdown, mode);
    for (;;) {
        struct epoll_event evs[16];
        if (!c->work_pending && c->moved) {
            spin(c);
        }
        if (!c->work_pending && c->set_up && arm_wakeups(c)) {
            c->work_pending = true;
        }
        int n = epoll_wait(c->epoll, evs, ELEMENTSOF(evs), c->work_pending ? 0 : -1);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            die("%s: epoll_wait: %m", c->name);
        }
        c->work_pending = false;
        for (int i = 0; i < n; i++) {
            if (!dispatch(c, evs[i].data.u64)) {
                log_debug("%s: the main process is gone", c->name);
                child_free(c);
                return 0;
            }
        }
        if (c->set_up) {
            process_rx(c);
            process_tx(c);
        }
    }
}
