/* Guest RX: rings -> policy -> guest. */
#include "child-rx.h"

#include <linux/virtio_net.h>
#include <string.h>

#include "child-rings.h"
#include "child-vhost.h"
#include "log.h"
#include "util.h"

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

/* Copies the frame's bytes [from, from + len) into e's writable segments
 * at off: those of the Ethernet header from our judged copy (c->eth_hdr),
 * the rest from the ring's slot (untrusted_data). */
static void scatter_frame(Child *c, const VqElem *e, size_t off, const uint8_t *untrusted_data,
                          size_t from, size_t len) {
    if (from < POLICY_HDR_LEN) {
        size_t k = MIN(len, POLICY_HDR_LEN - from);
        (void)scatter(e, off, c->eth_hdr + from, k);
        off += k;
        from += k;
        len -= k;
    }
    if (len > 0) {
        (void)scatter(e, off, untrusted_data + from, len);
    }
}

/* Delivers one frame (len bytes: its Ethernet header in c->eth_hdr, the
 * rest at untrusted_data + POLICY_HDR_LEN) into the guest's receive
 * buffers. 1: delivered; 0: not enough buffers (nothing consumed);
 * -EMSGSIZE: the frame can never fit; < 0 otherwise: broken. */
static int deliver(Child *c, Vq *rx, const uint8_t *untrusted_data, size_t len) {
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
            scatter_frame(c, e, start - off, untrusted_data, start - hdr, off + k - start);
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
        RingFrame untrusted;
        int r;
        unsigned n = 0;
        if (!pr->ring) {
            continue;
        }
        while ((r = ring_consumer_peek(pr->ring, &untrusted)) != 0) {
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

/* What became of the frame at the head of a ring. */
typedef enum RxStep {
    RX_NEXT,   /* done with it (delivered, refused or dropped): take the next */
    RX_AGAIN,  /* out of buffers, but the guest added some meanwhile: again */
    RX_WAIT,   /* out of buffers: it stays; a kick brings more */
    RX_BROKEN, /* the guest broke its queue: the frontend is gone */
} RxStep;

/* One frame from port's ring, still in shared memory (untrusted: the
 * length is checked, the bytes are the peer's child's). */
static RxStep rx_frame(Child *c, Vq *rx, unsigned port, const RingFrame *untrusted, bool *pushed) {
    PeerRing *pr = &c->peer[port].in;
    /* The peer's child may be compromised: what it wrote is judged again,
     * on our own copy of the Ethernet header (it could change the bytes
     * after the check), as the policy would judge it from the peer's
     * guest, and the guest gets that copy as the frame's header. The rest
     * goes from the slot to the guest in one copy: the payload is the
     * sender's to choose anyway. */
    size_t len = untrusted->len;
    memcpy(c->eth_hdr, untrusted->data, MIN(len, POLICY_HDR_LEN));
    uint64_t mask = 0;
    PolicyDrop reason = POLICY_DROP_UNKNOWN_UNICAST;
    int k = policy_route(c->policy, port, c->eth_hdr, len, &mask, &reason);
    if (k <= 0 || !(mask & (UINT64_C(1) << c->port))) {
        if (k < 0) {
            reason = POLICY_DROP_UNKNOWN_UNICAST; /* a peer we do not know */
        }
        c->refused_from[port][reason]++;
        return RX_NEXT;
    }
    int r = deliver(c, rx, untrusted->data, len);
    if (r < 0 && r != -EMSGSIZE) {
        device_broken(c, "receive", r);
        return RX_BROKEN;
    }
    if (r == 0) {
        /* Out of buffers: the frame stays; a kick brings more. */
        if (ring_consumer_release(pr->ring)) {
            efd_signal(pr->space_efd);
        }
        if (vq_enable_notify_after(rx, c->rx_seen)) {
            return RX_AGAIN;
        }
        c->rx_waiting = true;
        return RX_WAIT;
    }
    if (r == -EMSGSIZE) {
        c->counters.drops[CTL_DROP_OVERSIZE]++;
    } else {
        c->counters.tx_frames++;
        c->counters.tx_bytes += len;
        *pushed = true;
    }
    return RX_NEXT;
}

/* Frames from port's ring until it is empty, the round's budget (*n) is
 * spent or the guest's buffers run out. false when the device broke. */
static bool drain_ring(Child *c, Vq *rx, unsigned port, unsigned *n, bool *pushed) {
    PeerRing *pr = &c->peer[port].in;
    unsigned fetched = 0;
    while (pr->ring && *n < BUDGET) {
        RingFrame untrusted;
        if (fetched < PREFETCH_BATCH) {
            /* The guest's receive buffers for the frames waiting, up to
             * two batches ahead (a violation shows again in vq_pop). */
            unsigned want = MIN(ring_consumer_ready(pr->ring), 2 * PREFETCH_BATCH);
            if (want > fetched) {
                (void)vq_prefetch(rx, fetched, want - fetched, true);
                fetched = want;
            }
        }
        int r = ring_consumer_peek(pr->ring, &untrusted);
        if (r == -EBADMSG) {
            /* Counted against the budget like a frame: a producer
             * publishing nothing but bad slots gets no longer rounds. */
            c->counters.drops[CTL_DROP_BAD_SLOT]++;
            ring_consumer_next(pr->ring);
            (*n)++;
            continue;
        }
        if (r < 0) {
            log_warning("%s: ring from port %u is broken: dropping it", c->name, port);
            peer_ring_drop(c, port, true);
            break;
        }
        if (r == 0) {
            break; /* a wakeup is asked for only before sleeping */
        }
        RxStep step = rx_frame(c, rx, port, &untrusted, pushed);
        if (step == RX_BROKEN) {
            return false;
        }
        if (step == RX_AGAIN) {
            continue;
        }
        if (step == RX_WAIT) {
            break;
        }
        ring_consumer_next(pr->ring);
        (*n)++;
        if (fetched > 0) {
            fetched--;
        }
    }
    if (pr->ring && ring_consumer_release(pr->ring)) {
        efd_signal(pr->space_efd);
    }
    return true;
}

void process_rx(Child *c) {
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
        if (!drain_ring(c, rx, i, &n, &pushed)) {
            return;
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
