/* The main process's side of the control channel: messages to the
 * children, ring set-up, messages from them. */
#include "main-ctl.h"

#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include "log.h"
#include "main-children.h"
#include "main-heartbeat.h"
#include "ring.h"

int vm_send(Switch *s, Vm *v, const CtlMsg *m, const int *fds, unsigned n_fds) {
    if (!vm_running(v)) {
        return -ESRCH;
    }
    int r = ctl_send(v->ctl, m, fds, n_fds);
    if (r < 0) {
        log_warning("%s: control message %u not sent: %s", v->name, m->hdr.type, strerror(-r));
        child_kill(s, v, "its control socket is stuck");
    }
    return r;
}

void pending_clear(PendingRing *p) {
    if (p->active) {
        for (int i = 0; i < 3; i++) {
            p->fds[i] = safe_close(p->fds[i]);
        }
        p->active = false;
    }
}

static void close_ring_fds(int fds[3]) {
    for (int i = 0; i < 3; i++) {
        fds[i] = safe_close(fds[i]);
    }
}

/* A sealed ring memfd and its data and space eventfds. */
static int ring_fds_new(Vm *producer, Vm *consumer, int fds[3]) {
    int r = ring_memfd_new(&fds[0]);
    if (r < 0) {
        return log_error_errno(r, "%s -> %s: cannot create a ring: %m", producer->name,
                               consumer->name);
    }
    fds[1] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    fds[2] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fds[1] < 0 || fds[2] < 0) {
        r = -errno;
        log_error("%s -> %s: cannot create eventfds: %m", producer->name, consumer->name);
        close_ring_fds(fds);
        return r;
    }
    return 0;
}

void ring_offer(Switch *s, Vm *producer, Vm *consumer) {
    PendingRing *p = &consumer->pending[vm_port(s, producer)];
    int fds[3] = {-EBADF, -EBADF, -EBADF};
    CtlMsg m;
    pending_clear(p);
    if (ring_fds_new(producer, consumer, fds) < 0) {
        return;
    }
    ctl_msg_init(&m, CTL_GET_BUFFER);
    m.buffer.peer = vm_port(s, producer);
    m.buffer.peer_gen = producer->gen;
    m.buffer.gen = consumer->gen;
    if (vm_send(s, consumer, &m, fds, 3) < 0) {
        close_ring_fds(fds);
        return;
    }
    *p = (PendingRing){.active = true,
                       .fds = {fds[0], fds[1], fds[2]},
                       .producer_gen = producer->gen,
                       .consumer_gen = consumer->gen};
}

/* The consumer mapped the ring: the producer gets it now. */
static void on_buffer_ready(Switch *s, Vm *consumer, const CtlBuffer *b) {
    Vm *producer = &s->vm[b->peer];
    PendingRing *p = &consumer->pending[b->peer];
    CtlMsg m;
    /* Only the answer to a ring we offered, for the children now running:
     * anything else is stale (a restart crossed it) or made up. */
    if (!p->active || !vm_running(producer) || b->gen != consumer->gen ||
        b->peer_gen != producer->gen || p->producer_gen != producer->gen ||
        p->consumer_gen != consumer->gen) {
        log_debug("%s: BUFFER_READY for port %u ignored", consumer->name, b->peer);
        return;
    }
    ctl_msg_init(&m, CTL_PUT_BUFFER);
    m.buffer.peer = vm_port(s, consumer);
    m.buffer.peer_gen = consumer->gen;
    m.buffer.gen = producer->gen;
    (void)vm_send(s, producer, &m, p->fds, 3);
    pending_clear(p);
    log_debug("ring %s -> %s (generations %u, %u) set up", producer->name, consumer->name,
              producer->gen, consumer->gen);
}

void send_peer(Switch *s, Vm *to, Vm *about) {
    CtlMsg m;
    ctl_msg_init(&m, CTL_PEER);
    m.peer.port = vm_port(s, about);
    memcpy(m.peer.mac, about->conf.mac, 6);
    m.peer.role = (uint8_t)about->conf.role;
    (void)vm_send(s, to, &m, NULL, 0);
}

void announce_peer(Switch *s, Vm *about) {
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        Vm *p = &s->vm[i];
        if (vm_running(p) && p != about) {
            send_peer(s, p, about);
        }
    }
}

static void send_peer_ref(Switch *s, Vm *to, CtlType type, Vm *about) {
    CtlMsg m;
    ctl_msg_init(&m, type);
    m.ref.port = vm_port(s, about);
    m.ref.gen = about->gen;
    (void)vm_send(s, to, &m, NULL, 0);
}

void tell_peers(Switch *s, CtlType type, Vm *about) {
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        Vm *p = &s->vm[i];
        if (vm_running(p) && p != about) {
            send_peer_ref(s, p, type, about);
        }
    }
}

void on_ctl(Switch *s, Vm *v) {
    for (unsigned n = 0; n < CTL_BATCH && vm_running(v); n++) {
        CtlMsg m;
        int fds[CTL_MAX_FDS];
        unsigned n_fds = 0;
        int r = ctl_recv(v->ctl, CTL_FROM_CHILD, &m, fds, &n_fds);
        if (r == -EAGAIN) {
            return;
        }
        if (r == 0) {
            /* It closed its control socket: it is dying (its pidfd says
             * so next), or it is lost, which the next ping finds out. */
            epoll_ctl(s->epoll, EPOLL_CTL_DEL, v->ctl, NULL);
            return;
        }
        if (r < 0) {
            child_kill(s, v,
                       r == -EBADMSG ? "sent a malformed control message"
                                     : "broke its control socket");
            return;
        }
        switch (m.hdr.type) {
        case CTL_BUFFER_READY:
            on_buffer_ready(s, v, &m.buffer);
            break;
        case CTL_PONG:
            on_pong(s, v, &m.pong);
            break;
        default:
            child_kill(s, v, "sent an unexpected control message");
            return;
        }
    }
}
