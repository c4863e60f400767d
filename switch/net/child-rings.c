/* A child's rings with its peers' children. */
#include "child-rings.h"

#include "util.h"

void peer_ring_drop(Child *c, unsigned port, bool consumer) {
    Peer *p = &c->peer[port];
    PeerRing *pr = consumer ? &p->in : &p->out;
    if (!consumer) {
        p->out_dirty = false;
        if (c->tx_blocked && c->tx_blocked_on == port) {
            c->tx_blocked = false;
        }
    }
    if (!pr->ring) {
        return;
    }
    child_epoll_del(c, consumer ? pr->data_efd : pr->space_efd);
    ring_free(pr->ring);
    pr->ring = NULL;
    pr->data_efd = safe_close(pr->data_efd);
    pr->space_efd = safe_close(pr->space_efd);
}

void peer_drop_rings(Child *c, unsigned port, uint32_t upto_gen, bool all) {
    Peer *p = &c->peer[port];
    if (p->in.ring && (all || p->in.gen <= upto_gen)) {
        peer_ring_drop(c, port, true);
    }
    if (p->out.ring && (all || p->out.gen <= upto_gen)) {
        peer_ring_drop(c, port, false);
    }
    c->work_pending = true;
}

void publish_ring(Peer *p) {
    p->out_dirty = false;
    if (ring_producer_publish(p->out.ring)) {
        efd_signal(p->out.data_efd);
    }
}

void publish_rings(Child *c) {
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        Peer *p = &c->peer[i];
        p->out_full = false;
        if (p->out_dirty) {
            publish_ring(p);
        }
    }
}
