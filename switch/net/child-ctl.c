/* A child's side of the control channel. */
#include "child-ctl.h"

#include <string.h>

#include "child-rings.h"
#include "child-vhost.h"
#include "log.h"
#include "confine.h"
#include "util.h"

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
    child_epoll_add(c, listen_fd, EV(EV_LISTEN, 0));
    log_debug("%s: port %u, generation %u, %s", c->name, c->port, c->gen,
              c->role == VM_ROLE_ROUTER ? "router" : "client");
    /* Everything this child will ever need is here or comes as fds: from
     * now on it creates no process, socket or file, executes nothing and
     * maps nothing executable. */
    if (c->lockdown) {
        r = confine_lockdown_child(c->mode);
        if (r < 0) {
            die("%s: cannot lock down: %s", c->name, strerror(-r));
        }
    }
}

/* GET_BUFFER (a ring from a peer, we consume) or PUT_BUFFER (towards it). */
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
    peer_ring_drop(c, port, consumer);
    if (r < 0) {
        log_warning("%s: ring %s port %u refused (%s): no link with it until it restarts", c->name,
                    consumer ? "from" : "towards", port, strerror(-r));
        return;
    }
    (void)fd_nonblock(data_efd, true);
    (void)fd_nonblock(space_efd, true);
    pr->ring = ring;
    pr->gen = m->buffer.peer_gen;
    pr->data_efd = TAKE_FD(data_efd);
    pr->space_efd = TAKE_FD(space_efd);
    child_epoll_add(c, consumer ? pr->data_efd : pr->space_efd,
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

/* PEER: a VM on the network, added or changed. */
static void on_peer(Child *c, const CtlPeer *peer) {
    if (peer->port == c->port) {
        return;
    }
    int k = policy_set_port(c->policy, peer->port, peer->mac, (VmRole)peer->role);
    if (k < 0) {
        log_warning("%s: peer port %u refused: %s", c->name, peer->port, strerror(-k));
    }
    c->peer[peer->port].present = k >= 0;
}

/* PEER_REMOVE: the VM left; the port's next VM starts from zero. */
static void on_peer_remove(Child *c, const CtlPeerRef *ref) {
    if (ref->port == c->port) {
        return;
    }
    (void)policy_remove_port(c->policy, ref->port);
    c->peer[ref->port].present = false;
    c->ring_full_to[ref->port] = 0;
    memset(c->refused_from[ref->port], 0, sizeof(c->refused_from[ref->port]));
    peer_drop_rings(c, ref->port, 0, true);
}

/* One validated message from the main process. */
static void handle(Child *c, const CtlMsg *m, int fds[CTL_MAX_FDS]) {
    if (!c->set_up && m->hdr.type != CTL_SETUP) {
        die("%s: control message before SETUP", c->name);
    }
    switch (m->hdr.type) {
    case CTL_SETUP:
        on_setup(c, &m->setup, fds[0]);
        break;
    case CTL_PEER:
        on_peer(c, &m->peer);
        break;
    case CTL_PEER_REMOVE:
        on_peer_remove(c, &m->ref);
        break;
    case CTL_PEER_DOWN:
        if (m->ref.port != c->port) {
            peer_drop_rings(c, m->ref.port, m->ref.gen, false);
        }
        break;
    case CTL_GET_BUFFER:
    case CTL_PUT_BUFFER:
        on_buffer(c, m, fds);
        break;
    case CTL_PING:
        on_ping(c, &m->ping);
        break;
    default:
        die("%s: unexpected control message %u", c->name, m->hdr.type);
    }
}

int child_on_ctl(Child *c) {
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
        handle(c, &m, fds);
    }
}
