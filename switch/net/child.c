/* A vm-switch child: one VM's vhost-user-net backend and datapath. */
#include "child.h"

#include <errno.h>
#include <linux/virtio_config.h>
#include <linux/virtio_net.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ctl.h"
#include "log.h"
#include "policy.h"
#include "ring.h"
#include "switch/sandbox/sandbox.h"
#include "switch/vhost/vhost-user.h"
#include "util.h"
#include "vmconf.h"
#include "vu-net.h"

/* Frames handled per queue before the event loop looks at everything else
 * again (then it comes back at once, without sleeping). */
#define BUDGET 256
/* Receive buffers one frame may take (MRG_RXBUF): a frame needs one or two
 * buffers of any sane driver. More is refused as oversize. */
#define RX_MAX_BUFS 64
/* After a round that moved frames, more usually follows within a few
 * microseconds: look for it this many times, yielding the CPU in between,
 * before paying for a sleep and a wakeup. Only a round that moved frames
 * starts this, so an idle child sleeps at once. */
#define SPIN_ROUNDS 64

/* What an epoll event is about: kind in the high half, index in the low. */
enum {
    EV_CTL = 1,
    EV_LISTEN,
    EV_CONN,
    EV_KICK,       /* index: queue */
    EV_RING_DATA,  /* index: peer whose ring towards us has frames */
    EV_RING_SPACE, /* index: peer whose ring from us has room */
};
#define EV(kind, idx) (((uint64_t)(kind) << 32) | (uint32_t)(idx))

typedef struct PeerRing {
    Ring *ring;
    int data_efd;  /* the producer writes it: frames published */
    int space_efd; /* the consumer writes it: slots released */
    uint32_t gen;  /* the peer's generation this ring was made for */
} PeerRing;

typedef struct Peer {
    bool present;
    PeerRing in;    /* peer -> us (we consume) */
    PeerRing out;   /* us -> peer (we produce) */
    bool out_dirty; /* committed frames not yet published */
    bool out_full;  /* router: full in this batch, drop without retrying */
} Peer;

typedef struct Child {
    int ctl;
    int epoll;
    int listen_fd;
    int conn;
    bool set_up;
    bool lockdown;
    FilterMode mode;
    uint32_t port;
    uint32_t gen;
    uint8_t mac[6];
    VmRole role;
    char name[CTL_NAME_SIZE];

    VuDev *dev;
    int kick_reg[VU_NET_N_QUEUES]; /* fd numbers registered with epoll */
    CtlState state;
    Policy *policy;
    Peer peer[CTL_MAX_PORTS];

    bool tx_blocked; /* client: the ring to tx_blocked_on is full */
    unsigned tx_blocked_on;
    bool rx_waiting; /* out of guest receive buffers: waiting for a kick */
    uint16_t rx_seen; /* avail->idx when they ran out, in the middle of a frame */
    bool work_pending;
    bool moved; /* the last round moved frames */

    CtlCounters counters;
    uint64_t ring_full_to[CTL_MAX_PORTS];
    uint64_t refused_from[CTL_MAX_PORTS][POLICY_DROP_MAX];

    VqElem elem;     /* the chain in hand */
    VqElem rx_first; /* first receive buffer of a frame (holds its header) */
    uint8_t frame[RING_FRAME_MAX];    /* guest TX: the frame being routed */
    uint8_t rx_frame[RING_FRAME_MAX]; /* from a ring: our own copy */
} Child;

static void epoll_add(Child *c, int fd, uint64_t tag) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag};
    if (epoll_ctl(c->epoll, EPOLL_CTL_ADD, fd, &ev) < 0) {
        /* Nothing we were given can fail this but by our own bug. */
        die("%s: epoll_ctl(ADD): %m", c->name);
    }
}

static void epoll_del(Child *c, int fd) {
    /* The fd may already be closed by its owner (a replaced kick fd). */
    (void)epoll_ctl(c->epoll, EPOLL_CTL_DEL, fd, NULL);
}

static void efd_signal(int fd) {
    uint64_t one = 1;
    /* Non-blocking; a full counter means a wakeup is pending anyway. */
    if (write(fd, &one, sizeof(one)) < 0 && errno != EAGAIN) {
        log_debug("eventfd write: %m");
    }
}

static void efd_drain(int fd) {
    uint64_t v;
    if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN) {
        log_debug("eventfd read: %m");
    }
}

/* ---- rings ---------------------------------------------------------------- */

static void peer_ring_drop(Child *c, PeerRing *pr, bool consumer) {
    if (!pr->ring) {
        return;
    }
    epoll_del(c, consumer ? pr->data_efd : pr->space_efd);
    ring_free(pr->ring);
    pr->ring = NULL;
    pr->data_efd = safe_close(pr->data_efd);
    pr->space_efd = safe_close(pr->space_efd);
}

static void peer_drop_rings(Child *c, unsigned port, uint32_t upto_gen, bool all) {
    Peer *p = &c->peer[port];
    if (p->in.ring && (all || p->in.gen <= upto_gen)) {
        peer_ring_drop(c, &p->in, true);
    }
    if (p->out.ring && (all || p->out.gen <= upto_gen)) {
        peer_ring_drop(c, &p->out, false);
        p->out_dirty = false;
        if (c->tx_blocked && c->tx_blocked_on == port) {
            c->tx_blocked = false;
        }
    }
    c->work_pending = true;
}

static void publish_rings(Child *c) {
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        Peer *p = &c->peer[i];
        p->out_full = false;
        if (p->out_dirty) {
            p->out_dirty = false;
            if (ring_producer_publish(p->out.ring)) {
                efd_signal(p->out.data_efd);
            }
        }
    }
}

/* ---- the vhost-user side -------------------------------------------------- */

/* Registers the device's kick fds. They are the frontend's: one epoll
 * cannot watch (a regular file, a memfd) is refused, -EPERM and the like. */
static int sync_kick_fds(Child *c) {
    int ret = 0;
    for (unsigned q = 0; q < VU_NET_N_QUEUES; q++) {
        if (c->kick_reg[q] >= 0) {
            epoll_del(c, c->kick_reg[q]);
            c->kick_reg[q] = -EBADF;
        }
        int fd = c->dev ? vu_dev_kick_fd(c->dev, q) : -EBADF;
        if (fd >= 0 && ret == 0) {
            /* Never block on a frontend's eventfd. */
            (void)fd_nonblock(fd, true);
            struct epoll_event ev = {.events = EPOLLIN, .data.u64 = EV(EV_KICK, q)};
            if (epoll_ctl(c->epoll, EPOLL_CTL_ADD, fd, &ev) < 0) {
                ret = -errno;
                continue;
            }
            c->kick_reg[q] = fd;
        }
    }
    return ret;
}

static void device_reset(Child *c) {
    vu_dev_free(c->dev);
    c->dev = NULL;
    int r = vu_net_new(c->mac, &c->dev);
    if (r < 0) {
        die("%s: cannot create the device: %s", c->name, strerror(-r));
    }
}

/* The frontend is gone (or we dropped it): forget the device and accept
 * the next connection. */
static void frontend_drop(Child *c, CtlState state) {
    if (c->conn >= 0) {
        epoll_del(c, c->conn);
        c->conn = safe_close(c->conn);
        epoll_add(c, c->listen_fd, EV(EV_LISTEN, 0));
    }
    device_reset(c);
    (void)sync_kick_fds(c); /* a new device has none */
    c->state = state;
    c->tx_blocked = false;
    c->rx_waiting = false;
}

static void device_broken(Child *c, const char *what, int r) {
    log_warning("%s: the guest broke its %s queue (%s): dropping the frontend", c->name, what,
                strerror(-r));
    frontend_drop(c, CTL_STATE_BROKEN);
}

static void on_listen(Child *c) {
    int fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
            log_warning("%s: accept: %m", c->name);
        }
        return;
    }
    /* vu_dev_serve() reads whole messages from a blocking socket. */
    (void)fd_nonblock(fd, false);
    epoll_del(c, c->listen_fd);
    c->conn = fd;
    epoll_add(c, fd, EV(EV_CONN, 0));
    c->state = CTL_STATE_SERVING;
    log_info("%s: frontend connected", c->name);
}

static void on_conn(Child *c) {
    int r = vu_dev_serve(c->dev, c->conn);
    if (r == 0) {
        log_info("%s: frontend disconnected", c->name);
        frontend_drop(c, CTL_STATE_WAITING);
        return;
    }
    if (r == -ECONNRESET || r == -EPIPE) {
        log_info("%s: frontend disconnected: %s", c->name, strerror(-r));
        frontend_drop(c, CTL_STATE_WAITING);
        return;
    }
    if (r < 0) {
        /* A message the validator or a handler refused: the frontend broke
         * the protocol, as a guest breaks it with a bad descriptor. */
        log_warning("%s: vhost-user: %s: dropping the frontend", c->name, strerror(-r));
        frontend_drop(c, CTL_STATE_BROKEN);
        return;
    }
    r = sync_kick_fds(c);
    if (r < 0) {
        log_warning("%s: vhost-user: a kick fd that cannot be polled (%s): dropping the frontend",
                    c->name, strerror(-r));
        frontend_drop(c, CTL_STATE_BROKEN);
        return;
    }
    /* A ring may have started (or restarted): look at everything. */
    c->work_pending = true;
    c->rx_waiting = false;
}

static size_t net_hdr_len(const Child *c) {
    uint64_t f = vu_dev_features(c->dev);
    if (f & ((1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_NET_F_MRG_RXBUF))) {
        return sizeof(struct virtio_net_hdr_mrg_rxbuf);
    }
    return sizeof(struct virtio_net_hdr);
}

static void guest_notify(Child *c, unsigned q, Vq *vq) {
    if (vq_need_notify(vq)) {
        int fd = vu_dev_call_fd(c->dev, q);
        if (fd >= 0) {
            efd_signal(fd);
        }
    }
}

/* ---- guest TX: guest -> policy -> rings ----------------------------------- */

/* Copies the frame of the chain in hand (past the virtio-net header) into
 * c->frame. Its length, or a drop reason as a negative CtlDrop - 1. */
static long gather_frame(Child *c, size_t hdr) {
    const VqElem *e = &c->elem;
    if (e->out_len < hdr) {
        return -(long)CTL_DROP_MALFORMED - 1;
    }
    if (e->out_len - hdr > RING_FRAME_MAX) {
        return -(long)CTL_DROP_OVERSIZE - 1;
    }
    size_t skip = hdr, done = 0;
    for (unsigned i = 0; i < e->n_out; i++) {
        const uint8_t *b = e->seg[i].base;
        size_t len = e->seg[i].len;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        b += skip;
        len -= skip;
        skip = 0;
        memcpy(c->frame + done, b, len);
        done += len;
    }
    return (long)done;
}

/* Puts the frame into the ring towards port. 1: queued; 0: dropped
 * (counted); -EAGAIN: a client's ring to the router is full and the caller
 * must leave the frame in the guest's queue. */
static int forward_to(Child *c, unsigned port, size_t len) {
    Peer *p = &c->peer[port];
    void *slot;
    if (!p->out.ring) {
        c->counters.drops[CTL_DROP_PEER_DOWN]++;
        return 0;
    }
    if (p->out_full) {
        goto full;
    }
    int r = ring_producer_slot(p->out.ring, &slot);
    if (r == -ENOBUFS) {
        /* Let the consumer see what we have, then look once more. The
         * guest learns first that those chains are done: a crash between
         * the two then loses frames rather than sending them twice (a new
         * child would take the chains again from the last used index). */
        if (p->out_dirty) {
            Vq *tx = c->dev ? vu_dev_queue(c->dev, VU_NET_TX) : NULL;
            if (tx) {
                vq_flush(tx);
            }
            p->out_dirty = false;
            if (ring_producer_publish(p->out.ring)) {
                efd_signal(p->out.data_efd);
            }
        }
        if (c->role == VM_ROLE_CLIENT) {
            if (ring_producer_prepare_wait(p->out.ring)) {
                c->tx_blocked = true;
                c->tx_blocked_on = port;
                return -EAGAIN;
            }
        } else {
            /* The router does not wait for one client: one yield for its
             * consumer to run, then the frame is dropped. */
            sched_yield();
        }
        r = ring_producer_slot(p->out.ring, &slot);
        if (r == -ENOBUFS) {
            if (c->role == VM_ROLE_CLIENT) {
                /* prepare_wait saw room, then it was gone: not possible
                 * with one producer, but never spin on it. */
                c->work_pending = true;
                return -EAGAIN;
            }
            p->out_full = true;
            goto full;
        }
    }
    if (r < 0) {
        log_warning("%s: ring towards port %u is broken: dropping it", c->name, port);
        peer_ring_drop(c, &p->out, false);
        p->out_dirty = false;
        c->counters.drops[CTL_DROP_PEER_DOWN]++;
        return 0;
    }
    memcpy(slot, c->frame, len);
    if (ring_producer_commit(p->out.ring, (uint32_t)len, 0) < 0) {
        c->counters.drops[CTL_DROP_PEER_DOWN]++;
        return 0;
    }
    p->out_dirty = true;
    return 1;
full:
    /* Counted against the destination (the main process adds it there). */
    c->ring_full_to[port]++;
    return 0;
}

static void process_tx(Child *c) {
    Vq *tx = c->dev ? vu_dev_queue(c->dev, VU_NET_TX) : NULL;
    if (!tx || c->tx_blocked) {
        return;
    }
    size_t hdr = net_hdr_len(c);
    unsigned n = 0;
    bool pushed = false;
    vq_disable_notify(tx);
    while (n < BUDGET) {
        int r = vq_pop(tx, &c->elem);
        if (r < 0) {
            /* What this round queued for the peers still goes to them. */
            publish_rings(c);
            device_broken(c, "transmit", r);
            return;
        }
        if (r == 0) {
            break; /* kicks are asked for only before sleeping: arm_wakeups() */
        }
        n++;
        long len = gather_frame(c, hdr);
        if (len < 0) {
            c->counters.drops[-len - 1]++;
        } else {
            uint64_t mask = 0;
            PolicyDrop reason;
            int k = policy_route(c->policy, c->port, c->frame, (size_t)len, &mask, &reason);
            if (k == 0) {
                c->counters.drops[reason]++;
            }
            bool blocked = false;
            for (unsigned d = 0; k > 0 && d < CTL_MAX_PORTS; d++) {
                if (!(mask & (1ull << d))) {
                    continue;
                }
                if (forward_to(c, d, (size_t)len) == -EAGAIN) {
                    /* Only a client blocks, and a client has one
                     * destination: nothing was queued for this frame. */
                    blocked = true;
                    break;
                }
            }
            if (blocked) {
                (void)vq_rewind(tx, 1);
                break;
            }
        }
        c->counters.rx_frames++;
        c->counters.rx_bytes += c->elem.out_len - MIN(c->elem.out_len, hdr);
        if (vq_push(tx, c->elem.head, 0) < 0) {
            publish_rings(c);
            device_broken(c, "transmit", -EINVAL);
            return;
        }
        pushed = true;
    }
    if (pushed) {
        vq_flush(tx);
        guest_notify(c, VU_NET_TX, tx);
    }
    publish_rings(c);
    if (n > 0) {
        c->moved = true;
    }
    if (n >= BUDGET) {
        c->work_pending = true;
    }
}

/* ---- guest RX: rings -> guest --------------------------------------------- */

/* Copies len bytes from src into the device-writable segments of e,
 * starting off bytes in. Returns the bytes copied. */
static size_t scatter(const VqElem *e, size_t off, const uint8_t *src, size_t len) {
    size_t done = 0;
    for (unsigned i = e->n_out; i < e->n_out + e->n_in && done < len; i++) {
        size_t sl = e->seg[i].len;
        if (off >= sl) {
            off -= sl;
            continue;
        }
        size_t k = MIN(sl - off, len - done);
        memcpy((uint8_t *)e->seg[i].base + off, src + done, k);
        done += k;
        off = 0;
    }
    return done;
}

/* Delivers one frame (len bytes at data) into the guest's receive buffers. 1: delivered; 0: not enough buffers (nothing
 * consumed); -EMSGSIZE: the frame can never fit; < 0 otherwise: broken. */
static int deliver(Child *c, Vq *rx, const uint8_t *data, size_t len) {
    size_t hdr = net_hdr_len(c);
    bool mrg = vu_dev_features(c->dev) & (1ull << VIRTIO_NET_F_MRG_RXBUF);
    size_t total = hdr + len, off = 0;
    uint16_t heads[RX_MAX_BUFS];
    uint32_t lens[RX_MAX_BUFS];
    unsigned n = 0;
    /* off counts header and frame bytes placed so far; the header itself
     * is written last, once the number of buffers is known. */
    while (off < total) {
        /* Every buffer of the ring is not enough: it never will be. */
        if (n == RX_MAX_BUFS || n == vq_size(rx) || (n == 1 && !mrg)) {
            (void)vq_rewind(rx, n);
            return -EMSGSIZE;
        }
        VqElem *e = n == 0 ? &c->rx_first : &c->elem;
        int r = vq_pop(rx, e);
        if (r < 0) {
            return r;
        }
        if (r == 0) {
            /* The buffers taken go back, but the guest has already made
             * them available: what we wait for is beyond this index. */
            c->rx_seen = vq_last_avail(rx);
            (void)vq_rewind(rx, n);
            return 0;
        }
        size_t room = e->in_len > UINT32_MAX ? UINT32_MAX : (size_t)e->in_len;
        heads[n++] = e->head;
        if (n == 1 && room < hdr) {
            /* The header must fit the first buffer. */
            (void)vq_rewind(rx, n);
            return -EMSGSIZE;
        }
        size_t k = MIN(room, total - off);
        size_t start = MAX(off, hdr);
        if (start < off + k) {
            (void)scatter(e, start - off, data + (start - hdr), off + k - start);
        }
        lens[n - 1] = (uint32_t)k;
        off += k;
    }
    struct virtio_net_hdr_mrg_rxbuf h = {.num_buffers = htole16((uint16_t)n)};
    (void)scatter(&c->rx_first, 0, (const uint8_t *)&h, hdr);
    for (unsigned i = 0; i < n; i++) {
        int r = vq_push(rx, heads[i], lens[i]);
        if (r < 0) {
            return r;
        }
    }
    return 1;
}

/* Frames for us while the guest cannot take any: gone, as on a link that
 * is down (the peers' rings must not fill up with stale frames). */
static void discard_rings(Child *c) {
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        PeerRing *pr = &c->peer[i].in;
        RingFrame f;
        int r;
        unsigned n = 0;
        if (!pr->ring) {
            continue;
        }
        while ((r = ring_consumer_peek(pr->ring, &f)) != 0) {
            if ((r < 0 && r != -EBADMSG) || n++ >= BUDGET) {
                /* Broken, or a producer that never stops: come back later. */
                if (r > 0 || r == -EBADMSG) {
                    c->work_pending = true;
                }
                break;
            }
            c->counters.drops[r == -EBADMSG ? CTL_DROP_BAD_SLOT : CTL_DROP_GUEST_DOWN]++;
            ring_consumer_next(pr->ring);
        }
        if (ring_consumer_release(pr->ring)) {
            efd_signal(pr->space_efd);
        }
        if (r == 0) {
            (void)ring_consumer_prepare_wait(pr->ring);
        }
    }
}

static void process_rx(Child *c) {
    Vq *rx = c->dev ? vu_dev_queue(c->dev, VU_NET_RX) : NULL;
    if (!rx) {
        discard_rings(c);
        return;
    }
    if (c->rx_waiting) {
        return; /* until the guest kicks with new buffers */
    }
    /* Kicks on the receive queue matter only when we run out of buffers. */
    vq_disable_notify(rx);
    unsigned n = 0;
    bool pushed = false;
    for (unsigned i = 0; i < CTL_MAX_PORTS && !c->rx_waiting; i++) {
        PeerRing *pr = &c->peer[i].in;
        while (pr->ring && n < BUDGET) {
            RingFrame f;
            int r = ring_consumer_peek(pr->ring, &f);
            if (r == -EBADMSG) {
                /* Counted against the budget like a frame: a producer
                 * publishing nothing but bad slots gets no longer rounds. */
                c->counters.drops[CTL_DROP_BAD_SLOT]++;
                ring_consumer_next(pr->ring);
                n++;
                continue;
            }
            if (r < 0) {
                log_warning("%s: ring from port %u is broken: dropping it", c->name, i);
                peer_ring_drop(c, pr, true);
                break;
            }
            if (r == 0) {
                break; /* a wakeup is asked for only before sleeping */
            }
            /* The peer's child may be compromised: what it wrote is judged
             * again, on our own copy (it could change the bytes after the
             * check), as the policy would judge it from the peer's guest. */
            memcpy(c->rx_frame, f.data, f.len);
            uint64_t mask = 0;
            PolicyDrop reason = POLICY_DROP_UNKNOWN_UNICAST;
            int k = policy_route(c->policy, i, c->rx_frame, f.len, &mask, &reason);
            if (k <= 0 || !(mask & (UINT64_C(1) << c->port))) {
                if (k < 0) {
                    reason = POLICY_DROP_UNKNOWN_UNICAST; /* a peer we do not know */
                }
                c->refused_from[i][reason]++;
                ring_consumer_next(pr->ring);
                n++;
                continue;
            }
            r = deliver(c, rx, c->rx_frame, f.len);
            if (r < 0 && r != -EMSGSIZE) {
                device_broken(c, "receive", r);
                return;
            }
            if (r == 0) {
                /* Out of buffers: the frame stays; a kick brings more. */
                if (ring_consumer_release(pr->ring)) {
                    efd_signal(pr->space_efd);
                }
                if (vq_enable_notify_after(rx, c->rx_seen)) {
                    continue;
                }
                c->rx_waiting = true;
                break;
            }
            if (r == -EMSGSIZE) {
                c->counters.drops[CTL_DROP_OVERSIZE]++;
            } else {
                c->counters.tx_frames++;
                c->counters.tx_bytes += f.len;
                pushed = true;
            }
            ring_consumer_next(pr->ring);
            n++;
        }
        if (pr->ring && ring_consumer_release(pr->ring)) {
            efd_signal(pr->space_efd);
        }
    }
    if (pushed) {
        vq_flush(rx);
        guest_notify(c, VU_NET_RX, rx);
    }
    if (n > 0) {
        c->moved = true;
    }
    if (n >= BUDGET) {
        c->work_pending = true;
    }
}

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
        RingFrame f;
        if (c->peer[i].in.ring && ring_consumer_peek(c->peer[i].in.ring, &f) != 0) {
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

/* ---- control channel ------------------------------------------------------ */

static void send_ctl(Child *c, const CtlMsg *m) {
    int r = ctl_send(c->ctl, m, NULL, 0);
    if (r < 0) {
        /* The main process reads its sockets; if it does not, it is gone. */
        die("%s: control socket: %s", c->name, strerror(-r));
    }
}

static void on_setup(Child *c, const CtlSetup *s, int listen_fd) {
    if (c->set_up) {
        safe_close(listen_fd);
        die("%s: a second SETUP", c->name);
    }
    c->set_up = true;
    c->port = s->port;
    c->gen = s->gen;
    memcpy(c->mac, s->mac, 6);
    c->role = (VmRole)s->role;
    memcpy(c->name, s->name, CTL_NAME_SIZE);
    c->name[CTL_NAME_SIZE - 1] = '\0';
    int r = policy_set_port(c->policy, c->port, c->mac, c->role);
    if (r < 0) {
        die("%s: cannot set our own port: %s", c->name, strerror(-r));
    }
    c->listen_fd = listen_fd;
    (void)fd_nonblock(listen_fd, true);
    device_reset(c);
    epoll_add(c, listen_fd, EV(EV_LISTEN, 0));
    log_debug("%s: port %u, generation %u, %s", c->name, c->port, c->gen,
              c->role == VM_ROLE_ROUTER ? "router" : "client");
    /* Everything this child will ever need is here or comes as fds: from
     * now on it creates no process, socket or file, executes nothing and
     * maps nothing executable. */
    if (c->lockdown) {
        r = sandbox_lockdown_child(c->mode);
        if (r < 0) {
            die("%s: cannot lock down: %s", c->name, strerror(-r));
        }
    }
}

static void on_buffer(Child *c, const CtlMsg *m, int fds[3]) {
    bool consumer = m->hdr.type == CTL_GET_BUFFER;
    unsigned port = m->buffer.peer;
    Peer *p = &c->peer[port];
    PeerRing *pr = consumer ? &p->in : &p->out;
    _cleanup_close_ int memfd = fds[0];
    _cleanup_close_ int data_efd = fds[1];
    _cleanup_close_ int space_efd = fds[2];
    Ring *ring;

    if (m->buffer.gen != c->gen || port == c->port) {
        return; /* meant for an earlier one of us */
    }
    if (pr->ring && pr->gen > m->buffer.peer_gen) {
        return; /* older than the ring we have */
    }
    /* The other child had the memfd before us (the consumer maps it before
     * the producer gets it): what it holds is that child's word, and a
     * compromised one may have written anything. A ring we cannot use
     * breaks only the link with that peer, never this child. */
    int r = ring_attach(memfd, consumer ? RING_CONSUMER : RING_PRODUCER, &ring);
    peer_ring_drop(c, pr, consumer);
    if (!consumer) {
        p->out_dirty = false;
        if (c->tx_blocked && c->tx_blocked_on == port) {
            c->tx_blocked = false;
        }
    }
    if (r < 0) {
        log_warning("%s: ring %s port %u refused (%s): no link with it until it restarts",
                    c->name, consumer ? "from" : "towards", port, strerror(-r));
        return;
    }
    (void)fd_nonblock(data_efd, true);
    (void)fd_nonblock(space_efd, true);
    pr->ring = ring;
    pr->gen = m->buffer.peer_gen;
    pr->data_efd = TAKE_FD(data_efd);
    pr->space_efd = TAKE_FD(space_efd);
    epoll_add(c, consumer ? pr->data_efd : pr->space_efd,
              EV(consumer ? EV_RING_DATA : EV_RING_SPACE, port));
    c->work_pending = true;
    if (consumer) {
        CtlMsg reply;
        ctl_msg_init(&reply, CTL_BUFFER_READY);
        reply.buffer.peer = port;
        reply.buffer.peer_gen = m->buffer.peer_gen;
        reply.buffer.gen = c->gen;
        send_ctl(c, &reply);
    }
}

static void on_ping(Child *c, const CtlPing *ping) {
    CtlMsg m;
    ctl_msg_init(&m, CTL_PONG);
    m.pong.seq = ping->seq;
    m.pong.state = c->state;
    m.pong.counters = c->counters;
    memcpy(m.pong.ring_full_to, c->ring_full_to, sizeof(c->ring_full_to));
    memcpy(m.pong.refused_from, c->refused_from, sizeof(c->refused_from));
    send_ctl(c, &m);
}

/* 1: go on; 0: the main process is gone. */
static int on_ctl(Child *c) {
    for (;;) {
        CtlMsg m;
        int fds[CTL_MAX_FDS];
        unsigned n_fds = 0;
        int r = ctl_recv(c->ctl, CTL_FROM_MAIN, &m, fds, &n_fds);
        if (r == -EAGAIN) {
            return 1;
        }
        if (r == 0) {
            return 0;
        }
        if (r < 0) {
            die("%s: control message refused: %s", c->name, strerror(-r));
        }
        if (!c->set_up && m.hdr.type != CTL_SETUP) {
            die("%s: control message before SETUP", c->name);
        }
        switch (m.hdr.type) {
        case CTL_SETUP:
            on_setup(c, &m.setup, fds[0]);
            break;
        case CTL_PEER:
            if (m.peer.port != c->port) {
                int k = policy_set_port(c->policy, m.peer.port, m.peer.mac, (VmRole)m.peer.role);
                if (k < 0) {
                    log_warning("%s: peer port %u refused: %s", c->name, m.peer.port, strerror(-k));
                }
                c->peer[m.peer.port].present = k >= 0;
            }
            break;
        case CTL_PEER_REMOVE:
            if (m.ref.port != c->port) {
                (void)policy_remove_port(c->policy, m.ref.port);
                c->peer[m.ref.port].present = false;
                /* The port's next VM starts from zero. */
                c->ring_full_to[m.ref.port] = 0;
                memset(c->refused_from[m.ref.port], 0, sizeof(c->refused_from[m.ref.port]));
                peer_drop_rings(c, m.ref.port, 0, true);
            }
            break;
        case CTL_PEER_DOWN:
            if (m.ref.port != c->port) {
                peer_drop_rings(c, m.ref.port, m.ref.gen, false);
            }
            break;
        case CTL_GET_BUFFER:
        case CTL_PUT_BUFFER:
            on_buffer(c, &m, fds);
            break;
        case CTL_PING:
            on_ping(c, &m.ping);
            break;
        default:
            die("%s: unexpected control message %u", c->name, m.hdr.type);
        }
    }
}

/* ---- event loop ----------------------------------------------------------- */

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

int child_run(int ctl_fd, bool lockdown, FilterMode mode) {
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
    signal(SIGUSR1, forbidden_call);
#endif
    /* Created before the first message: once serving, nothing is opened. */
    c->epoll = epoll_create1(EPOLL_CLOEXEC);
    if (c->epoll < 0) {
        die("epoll_create1: %m");
    }
    epoll_add(c, ctl_fd, EV(EV_CTL, 0));

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
            uint32_t kind = (uint32_t)(evs[i].data.u64 >> 32);
            uint32_t idx = (uint32_t)evs[i].data.u64;
            switch (kind) {
            case EV_CTL:
                if (on_ctl(c) == 0) {
                    log_debug("%s: the main process is gone", c->name);
                    child_free(c);
                    return 0;
                }
                break;
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
        }
        if (c->set_up) {
            process_rx(c);
            process_tx(c);
        }
    }
}
