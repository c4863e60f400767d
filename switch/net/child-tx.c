/* Guest TX: guest -> policy -> rings. */
#include "child-tx.h"

#include <errno.h>
#include <sched.h>
#include <string.h>

#include "child-rings.h"
#include "child-vhost.h"
#include "log.h"
#include "util.h"

/* The length of the frame of the chain in hand (past the virtio-net
 * header), or a drop reason as a negative CtlDrop - 1. */
static long frame_len(const VqElem *e, size_t hdr) {
    if (e->out_len < hdr) {
        return -(long)CTL_DROP_MALFORMED - 1;
    }
    if (e->out_len - hdr > RING_FRAME_MAX) {
        return -(long)CTL_DROP_OVERSIZE - 1;
    }
    return (long)(e->out_len - hdr);
}

/* Copies len bytes of the chain in hand, from skip bytes into its
 * device-readable segments, to dst. */
static void gather(const VqElem *e, size_t skip, uint8_t *dst, size_t len) {
    for (unsigned i = 0; i < e->n_out && len > 0; i++) {
        const uint8_t *b = e->seg[i].base;
        size_t sl = e->seg[i].len;
        if (skip >= sl) {
            skip -= sl;
            continue;
        }
        size_t k = MIN(sl - skip, len);
        memcpy(dst, b + skip, k);
        dst += k;
        len -= k;
        skip = 0;
    }
}

/* The ring towards port is full: let its consumer see what we have, then
 * wait (a client) or give it a moment (the router). A slot, or -ENOBUFS
 * (the router drops), -EAGAIN (a client waits) or -EPROTO (broken). */
static int slot_when_full(Child *c, unsigned port, void **ret_slot) {
    Peer *p = &c->peer[port];
    /* The guest learns first that those chains are done: a crash between
     * the two then loses frames rather than sending them twice (a new
     * child would take the chains again from the last used index). */
    if (p->out_dirty) {
        Vq *tx = c->dev ? vu_dev_queue(c->dev, VU_NET_TX) : NULL;
        if (tx) {
            vq_flush(tx);
        }
        publish_ring(p);
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
    int r = ring_producer_slot(p->out.ring, ret_slot);
    if (r == -ENOBUFS && c->role == VM_ROLE_CLIENT) {
        /* prepare_wait saw room, then it was gone: not possible with one
         * producer, but never spin on it. */
        c->work_pending = true;
        return -EAGAIN;
    }
    return r;
}

/* Puts the frame of the chain in hand (len bytes past its virtio-net
 * header of hdr bytes) into the ring towards port: the Ethernet header the
 * policy judged from our copy, the rest straight from the guest's buffers.
 * 1: queued; 0: dropped (counted); -EAGAIN: a client's ring to the router
 * is full and the caller must leave the frame in the guest's queue. */
static int forward_to(Child *c, unsigned port, size_t hdr, size_t len) {
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
        r = slot_when_full(c, port, &slot);
        if (r == -EAGAIN) {
            return r;
        }
        if (r == -ENOBUFS) {
            p->out_full = true;
            goto full;
        }
    }
    if (r < 0) {
        log_warning("%s: ring towards port %u is broken: dropping it", c->name, port);
        peer_ring_drop(c, port, false);
        c->counters.drops[CTL_DROP_PEER_DOWN]++;
        return 0;
    }
    size_t judged = MIN(len, POLICY_HDR_LEN);
    memcpy(slot, c->eth_hdr, judged);
    gather(&c->elem, hdr + judged, (uint8_t *)slot + judged, len - judged);
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

/* Routes the chain in hand. false when a client's ring is full and the
 * chain must go back to the guest's queue. */
static bool route_chain(Child *c, size_t hdr) {
    long len = frame_len(&c->elem, hdr);
    if (len < 0) {
        c->counters.drops[-len - 1]++;
        return true;
    }
    /* The policy judges our copy of the Ethernet header, and that copy is
     * what the rings get: the guest may change its buffers meanwhile, but
     * only the payload it sends is its own to change. One copy of the rest
     * of the frame, from the guest's buffers into each ring's slot. */
    gather(&c->elem, hdr, c->eth_hdr, MIN((size_t)len, POLICY_HDR_LEN));
    uint64_t mask = 0;
    PolicyDrop reason;
    int k = policy_route(c->policy, c->port, c->eth_hdr, (size_t)len, &mask, &reason);
    if (k == 0) {
        c->counters.drops[reason]++;
    }
    /* The destinations' bits only: a frame has one or a few of them, and
     * testing all CTL_MAX_PORTS bits took a tenth of a child's time at 64 B. */
    for (; k > 0 && mask != 0; mask &= mask - 1) {
        unsigned d = (unsigned)__builtin_ctzll(mask);
        if (forward_to(c, d, hdr, (size_t)len) == -EAGAIN) {
            /* Only a client blocks, and a client has one destination:
             * nothing was queued for this frame. */
            return false;
        }
    }
    return true;
}

void process_tx(Child *c) {
    Vq *tx = c->dev ? vu_dev_queue(c->dev, VU_NET_TX) : NULL;
    if (!tx || c->tx_blocked) {
        return;
    }
    size_t hdr = net_hdr_len(c);
    unsigned n = 0;
    bool pushed = false;
    vq_disable_notify(tx);
    while (n < BUDGET) {
        if (n % PREFETCH_BATCH == 0) {
            /* The batch after this one, and at first this one too: each
             * chain is asked for a batch before it is taken. A violation
             * shows again in vq_pop. */
            unsigned skip = n == 0 ? 0 : PREFETCH_BATCH;
            (void)vq_prefetch(tx, skip, 2 * PREFETCH_BATCH - skip, false);
        }
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
        if (!route_chain(c, hdr)) {
            (void)vq_rewind(tx, 1);
            break;
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
