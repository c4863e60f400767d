/* The connection multiplexer of a vsock device: see mux.h. */
#include "mux.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "util.h"

#define SHUTDOWN_BOTH (VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND)
/* RSTs owed for packets that named no connection. Full, the guest's
 * transmit queue waits: what a guest sends never grows this. */
#define RST_RING 64
/* Freed buffers kept for the next burst, so that a connection that
 * drains and refills does not map and unmap each time. */
#define POOL_MAX 8
/* Source ports: what Linux reserves for privileged binders, and the rest. */
#define PRIVILEGED_PORT_MIN 1u
#define PRIVILEGED_PORT_MAX 1023u
#define EPHEMERAL_PORT_MIN 1024u
#define EPHEMERAL_PORT_MAX (VSOCK_PORT_ANY - 1)
/* Segments of one guest packet's payload (a descriptor chain's). */
#define MAX_IOV 256

typedef enum ConnState {
    CONN_CONNECTING,  /* the host asked: REQUEST owed or sent, no RESPONSE yet */
    CONN_ESTABLISHED, /* the stream flows */
    CONN_CLOSING,     /* we sent SHUTDOWN of both ways: the guest's RST is due */
    CONN_RESETTING,   /* an RST is owed to the guest; the host side is closed */
    CONN_N_STATES,
} ConnState;

/* Control packets owed to the guest (data is owed when the host side is
 * readable and the guest has credit). */
enum {
    OWE_REQUEST = 1u << 0,
    OWE_RESPONSE = 1u << 1,
    OWE_SHUTDOWN = 1u << 2,
    OWE_CREDIT = 1u << 3,
};

typedef enum TimerKind {
    TIMER_NONE,
    TIMER_CONNECT, /* connect_timeout after vsock_mux_connect() */
    TIMER_CLOSE,   /* close_timeout after our SHUTDOWN of both ways */
    N_TIMERS,
} TimerKind;

struct VsockConn {
    VsockMux *mux;
    void *userdata;
    uint32_t local_port; /* the host's */
    uint32_t peer_port;  /* the guest's */
    ConnState state;
    unsigned owe;
    uint32_t shutdown_sent; /* SHUTDOWN flags we sent */
    uint32_t peer_shutdown; /* SHUTDOWN flags the guest sent */

    bool host_readable, host_writable;
    bool host_rdhup;   /* its end is coming: read until it, whatever a read gives */
    bool host_eof;     /* the host side's end was read */
    bool host_hup;     /* the host side closed: it reads nothing more */
    bool host_wr_shut; /* we shut its write side (the guest sends no more) */
    bool host_closed;  /* host_close() was called */

    /* Host -> guest: the guest's receive window and what we sent into it. */
    uint32_t peer_buf_alloc, peer_fwd_cnt, tx_cnt;
    /* Guest -> host: what came, what the host side took, and how much of
     * that the guest was last told (any packet we send tells it). */
    uint32_t rx_cnt, fwd_cnt, fwd_told;
    uint8_t *buf; /* buf_size bytes while data waits for the host side */
    uint32_t buf_head, buf_len;

    uint64_t deadline;
    TimerKind timer;
    VsockConn *t_prev, *t_next;
    VsockConn *rx_prev, *rx_next; /* waiting to send to the guest */
    bool queued;
    VsockConn *hnext;
};

typedef struct RstReply {
    uint32_t local_port, peer_port;
    uint16_t type;
} RstReply;

typedef struct ConnList {
    VsockConn *head, *tail;
} ConnList;

struct VsockMux {
    VsockMuxConfig cfg;
    VsockMuxOps ops;
    void *ctx;
    VsockConn **buckets;
    unsigned n_buckets; /* a power of two, at least twice max_conns */
    unsigned n_conns;
    unsigned n_buffers;
    ConnList rx;
    unsigned rx_len;
    ConnList timers[N_TIMERS];
    RstReply rst[RST_RING];
    unsigned rst_head, rst_len;
    uint8_t *pool[POOL_MAX];
    unsigned n_pool;
    uint32_t next_privileged, next_ephemeral;
    VsockMuxStats stats;
};

/* ---- lists ------------------------------------------------------------------ */

static void rx_append(VsockMux *m, VsockConn *c) {
    c->rx_prev = m->rx.tail;
    c->rx_next = NULL;
    if (m->rx.tail) {
        m->rx.tail->rx_next = c;
    } else {
        m->rx.head = c;
    }
    m->rx.tail = c;
    c->queued = true;
    m->rx_len++;
}

static void rx_remove(VsockMux *m, VsockConn *c) {
    if (!c->queued) {
        return;
    }
    if (c->rx_prev) {
        c->rx_prev->rx_next = c->rx_next;
    } else {
        m->rx.head = c->rx_next;
    }
    if (c->rx_next) {
        c->rx_next->rx_prev = c->rx_prev;
    } else {
        m->rx.tail = c->rx_prev;
    }
    c->rx_prev = c->rx_next = NULL;
    c->queued = false;
    m->rx_len--;
}

static void timer_remove(VsockMux *m, VsockConn *c) {
    ConnList *l = &m->timers[c->timer];
    if (c->timer == TIMER_NONE) {
        return;
    }
    if (c->t_prev) {
        c->t_prev->t_next = c->t_next;
    } else {
        l->head = c->t_next;
    }
    if (c->t_next) {
        c->t_next->t_prev = c->t_prev;
    } else {
        l->tail = c->t_prev;
    }
    c->t_prev = c->t_next = NULL;
    c->timer = TIMER_NONE;
}

/* Each kind has one timeout, so appending keeps a list in deadline order. */
static void timer_set(VsockMux *m, VsockConn *c, TimerKind kind, uint64_t deadline) {
    timer_remove(m, c);
    if (kind == TIMER_NONE) {
        return;
    }
    ConnList *l = &m->timers[kind];
    c->timer = kind;
    c->deadline = deadline;
    c->t_prev = l->tail;
    c->t_next = NULL;
    if (l->tail) {
        l->tail->t_next = c;
    } else {
        l->head = c;
    }
    l->tail = c;
}

/* ---- the table ---------------------------------------------------------------- */

static unsigned bucket_of(const VsockMux *m, uint32_t local, uint32_t peer) {
    uint64_t h = (((uint64_t)local << 32) | peer) * UINT64_C(0x9E3779B97F4A7C15);
    return (unsigned)(h >> 32) & (m->n_buckets - 1);
}

static VsockConn *conn_find(const VsockMux *m, uint32_t local, uint32_t peer) {
    for (VsockConn *c = m->buckets[bucket_of(m, local, peer)]; c; c = c->hnext) {
        if (c->local_port == local && c->peer_port == peer) {
            return c;
        }
    }
    return NULL;
}

static VsockConn *conn_new(VsockMux *m, uint32_t local, uint32_t peer) {
    VsockConn *c = calloc(1, sizeof(*c));
    if (!c) {
        return NULL;
    }
    c->mux = m;
    c->local_port = local;
    c->peer_port = peer;
    unsigned b = bucket_of(m, local, peer);
    c->hnext = m->buckets[b];
    m->buckets[b] = c;
    m->n_conns++;
    return c;
}

static void conn_unhash(VsockMux *m, VsockConn *c) {
    VsockConn **p = &m->buckets[bucket_of(m, c->local_port, c->peer_port)];
    while (*p && *p != c) {
        p = &(*p)->hnext;
    }
    if (*p) {
        *p = c->hnext;
    }
}

/* ---- buffers ------------------------------------------------------------------- */

static int buf_get(VsockMux *m, VsockConn *c) {
    if (c->buf) {
        return 0;
    }
    c->buf = m->n_pool > 0 ? m->pool[--m->n_pool] : malloc(m->cfg.buf_size);
    if (!c->buf) {
        return -ENOMEM;
    }
    c->buf_head = c->buf_len = 0;
    m->n_buffers++;
    return 0;
}

static void buf_put(VsockMux *m, VsockConn *c) {
    if (!c->buf) {
        return;
    }
    if (m->n_pool < POOL_MAX) {
        m->pool[m->n_pool++] = c->buf;
    } else {
        free(c->buf);
    }
    c->buf = NULL;
    c->buf_head = c->buf_len = 0;
    m->n_buffers--;
}

/* The buffered bytes as at most two iovecs. */
static int buf_iov(const VsockMux *m, const VsockConn *c, struct iovec iov[2]) {
    uint32_t first = MIN(c->buf_len, m->cfg.buf_size - c->buf_head);
    iov[0] = (struct iovec){.iov_base = c->buf + c->buf_head, .iov_len = first};
    if (first == c->buf_len) {
        return 1;
    }
    iov[1] = (struct iovec){.iov_base = c->buf, .iov_len = c->buf_len - first};
    return 2;
}

/* Appends len bytes of the payload, from skip on, behind what is buffered
 * (the caller made sure they fit). */
static void buf_append(VsockMux *m, VsockConn *c, const struct iovec *iov, int n, size_t skip,
                       size_t len) {
    for (int i = 0; i < n && len > 0; i++) {
        size_t sl = iov[i].iov_len;
        if (skip >= sl) {
            skip -= sl;
            continue;
        }
        const uint8_t *src = (const uint8_t *)iov[i].iov_base + skip;
        size_t k = MIN(sl - skip, len);
        skip = 0;
        len -= k;
        while (k > 0) {
            uint32_t tail = (c->buf_head + c->buf_len) % m->cfg.buf_size;
            uint32_t chunk = (uint32_t)MIN(k, (size_t)(m->cfg.buf_size - tail));
            memcpy(c->buf + tail, src, chunk);
            c->buf_len += chunk;
            src += chunk;
            k -= chunk;
        }
    }
}

/* The first len bytes of iov as iovecs in out (at most MAX_IOV). */
static int iov_prefix(const struct iovec *iov, int n, size_t len, struct iovec *out) {
    int k = 0;
    for (int i = 0; i < n && len > 0 && k < MAX_IOV; i++) {
        size_t l = MIN(iov[i].iov_len, len);
        if (l == 0) {
            continue;
        }
        out[k++] = (struct iovec){.iov_base = iov[i].iov_base, .iov_len = l};
        len -= l;
    }
    return k;
}

/* ---- connection life ------------------------------------------------------------- */

static uint32_t peer_credit(const VsockConn *c) {
    uint32_t in_flight = c->tx_cnt - c->peer_fwd_cnt;
    /* A guest may shrink its buffer below what is in flight. */
    return in_flight >= c->peer_buf_alloc ? 0 : c->peer_buf_alloc - in_flight;
}

static bool conn_data_owed(const VsockConn *c) {
    return c->state == CONN_ESTABLISHED && c->host_readable && !c->host_eof &&
           !(c->peer_shutdown & VIRTIO_VSOCK_SHUTDOWN_RCV) && peer_credit(c) > 0;
}

static bool conn_has_work(const VsockConn *c) {
    return c->state == CONN_RESETTING || c->owe != 0 || conn_data_owed(c);
}

static void conn_schedule(VsockConn *c) {
    if (!c->queued && conn_has_work(c)) {
        rx_append(c->mux, c);
    }
}

static void conn_close_host(VsockConn *c) {
    VsockMux *m = c->mux;
    if (!c->host_closed) {
        c->host_closed = true;
        m->ops.host_close(m->ctx, c);
    }
    buf_put(m, c);
}

/* Gone from everything, without a word to the guest. */
static void conn_free(VsockConn *c) {
    VsockMux *m = c->mux;
    conn_close_host(c);
    timer_remove(m, c);
    rx_remove(m, c);
    conn_unhash(m, c);
    m->n_conns--;
    free(c);
}

/* The host side closes now and the guest is sent an RST; the connection
 * is freed once that went. */
static void conn_reset(VsockConn *c) {
    if (c->state == CONN_RESETTING) {
        return;
    }
    conn_close_host(c);
    timer_set(c->mux, c, TIMER_NONE, 0);
    c->state = CONN_RESETTING;
    c->owe = 0;
    conn_schedule(c);
}

static void conn_violation(VsockConn *c) {
    if (c->state != CONN_RESETTING) {
        c->mux->stats.violations++;
    }
    conn_reset(c);
}

/* What we owe the guest about our ends: SEND once the host side's end was
 * read, RCV once the host side closed. Both sent: the guest answers with
 * an RST (or the close timeout does). */
static void conn_update_shutdown(VsockConn *c) {
    uint32_t want = (c->host_eof ? VIRTIO_VSOCK_SHUTDOWN_SEND : 0) |
                    (c->host_hup ? VIRTIO_VSOCK_SHUTDOWN_RCV : 0);
    if (c->state == CONN_ESTABLISHED && (want & ~c->shutdown_sent)) {
        c->owe |= OWE_SHUTDOWN;
    }
}

static void conn_credit_check(VsockConn *c) {
    /* Tell the guest once half the buffer was taken since we last did:
     * a guest out of credit has sent a whole buffer, so it hears in
     * time; a trickle costs an update every buf_size / 2 bytes. */
    if (c->fwd_cnt - c->fwd_told >= c->mux->cfg.buf_size / 2) {
        c->owe |= OWE_CREDIT;
    }
}

/* Once nothing the guest sent waits for the host side: pass its half
 * close on, or end the connection when it closed both ways. */
static void conn_after_drain(VsockConn *c) {
    if (c->buf_len > 0 || c->state == CONN_RESETTING) {
        return;
    }
    buf_put(c->mux, c);
    if ((c->peer_shutdown & VIRTIO_VSOCK_SHUTDOWN_SEND) && !c->host_wr_shut) {
        c->host_wr_shut = true;
        c->mux->ops.host_shutdown(c->mux->ctx, c, SHUT_WR);
    }
    if (c->peer_shutdown == SHUTDOWN_BOTH) {
        /* Linux waits for this RST to let go of its socket. */
        conn_reset(c);
    }
}

static void conn_flush(VsockConn *c) {
    VsockMux *m = c->mux;
    while (c->buf_len > 0 && c->host_writable && c->state != CONN_RESETTING) {
        struct iovec iov[2];
        int n = buf_iov(m, c, iov);
        ssize_t k = m->ops.host_write(m->ctx, c, iov, n);
        if (k < 0) {
            conn_reset(c);
            return;
        }
        if ((size_t)k < (size_t)c->buf_len) {
            c->host_writable = false;
        }
        k = MIN(k, (ssize_t)c->buf_len);
        c->buf_head = (c->buf_head + (uint32_t)k) % m->cfg.buf_size;
        c->buf_len -= (uint32_t)k;
        c->fwd_cnt += (uint32_t)k;
        m->stats.to_host_bytes += (uint64_t)k;
    }
    conn_credit_check(c);
    conn_after_drain(c);
    conn_schedule(c);
}

/* ---- packets from the guest --------------------------------------------------------- */

/* The credit fields every packet carries: the guest's receive window. Its
 * fwd_cnt moves forward only, and never past what we sent. */
static int conn_take_credit(VsockConn *c, const VsockPkt *p) {
    if ((uint32_t)(p->fwd_cnt - c->peer_fwd_cnt) > (uint32_t)(c->tx_cnt - c->peer_fwd_cnt)) {
        return -EPROTO;
    }
    c->peer_buf_alloc = p->buf_alloc;
    c->peer_fwd_cnt = p->fwd_cnt;
    return 0;
}

static void on_response(VsockConn *c, const VsockPkt *p, const struct iovec *iov, int n) {
    VsockMux *m = c->mux;
    c->state = CONN_ESTABLISHED;
    timer_set(m, c, TIMER_NONE, 0);
    m->stats.host_conns++;
    if (m->ops.host_established(m->ctx, c) < 0) {
        conn_reset(c);
    }
}

static void on_shutdown(VsockConn *c, const VsockPkt *p, const struct iovec *iov, int n) {
    VsockMux *m = c->mux;
    uint32_t added = p->flags & ~c->peer_shutdown;
    c->peer_shutdown |= p->flags;
    if ((added & VIRTIO_VSOCK_SHUTDOWN_RCV) && !c->host_hup) {
        /* The guest reads no more: the host side's writes fail from now
         * on rather than fill a buffer nobody empties. */
        m->ops.host_shutdown(m->ctx, c, SHUT_RD);
    }
    conn_after_drain(c);
}

static void on_rw(VsockConn *c, const VsockPkt *p, const struct iovec *iov, int n) {
    VsockMux *m = c->mux;
    size_t written = 0;

    if (c->peer_shutdown & VIRTIO_VSOCK_SHUTDOWN_SEND) {
        conn_violation(c); /* data after its own end */
        return;
    }
    /* Credit: never more than our buffer holds. */
    if ((uint64_t)c->buf_len + p->len > m->cfg.buf_size) {
        conn_violation(c);
        return;
    }
    c->rx_cnt += p->len;
    if (c->host_hup) {
        /* The host side is gone; SHUTDOWN(RCV) is on its way to the
         * guest. What it sent meanwhile has nowhere to go. */
        c->fwd_cnt += p->len;
        conn_credit_check(c);
        conn_schedule(c);
        return;
    }
    if (c->buf_len == 0 && c->host_writable && p->len > 0) {
        /* Straight from guest memory while nothing waits before it. */
        struct iovec part[MAX_IOV];
        int k = iov_prefix(iov, n, p->len, part);
        ssize_t w = m->ops.host_write(m->ctx, c, part, k);
        if (w < 0) {
            conn_reset(c);
            return;
        }
        written = MIN((size_t)w, (size_t)p->len);
        if (written < p->len) {
            c->host_writable = false;
        }
        c->fwd_cnt += (uint32_t)written;
        m->stats.to_host_bytes += written;
    }
    if (written < p->len) {
        if (buf_get(m, c) < 0) {
            conn_reset(c);
            return;
        }
        buf_append(m, c, iov, n, written, p->len - written);
    }
    conn_credit_check(c);
    conn_schedule(c);
}

static void on_credit_update(VsockConn *c, const VsockPkt *p, const struct iovec *iov, int n) {
    conn_schedule(c); /* the new window may let the host side's data go */
}

static void on_credit_request(VsockConn *c, const VsockPkt *p, const struct iovec *iov, int n) {
    c->owe |= OWE_CREDIT;
    conn_schedule(c);
}

typedef void (*OpHandler)(VsockConn *c, const VsockPkt *p, const struct iovec *iov, int n);

#define STATE(s) (1u << (s))

/* What the guest may send on a connection that exists, in which states.
 * Anything else resets it. A REQUEST for a pair in use is never allowed:
 * each connection is asked for once. An RST (refused, aborted, or the
 * answer to our SHUTDOWN) ends it in any state, before this table. */
static const struct {
    unsigned states;
    OpHandler fn;
} op_table[] = {
    [VIRTIO_VSOCK_OP_RESPONSE] = {STATE(CONN_CONNECTING), on_response},
    [VIRTIO_VSOCK_OP_SHUTDOWN] = {STATE(CONN_ESTABLISHED) | STATE(CONN_CLOSING), on_shutdown},
    /* Data may cross our SHUTDOWN on its way: it is dropped then. */
    [VIRTIO_VSOCK_OP_RW] = {STATE(CONN_ESTABLISHED) | STATE(CONN_CLOSING), on_rw},
    [VIRTIO_VSOCK_OP_CREDIT_UPDATE] = {STATE(CONN_ESTABLISHED) | STATE(CONN_CLOSING),
                                       on_credit_update},
    [VIRTIO_VSOCK_OP_CREDIT_REQUEST] = {STATE(CONN_ESTABLISHED) | STATE(CONN_CLOSING),
                                        on_credit_request},
};

static bool rst_ring_full(const VsockMux *m) {
    return m->rst_len == RST_RING;
}

static void rst_ring_push(VsockMux *m, const VsockPkt *p) {
    m->rst[(m->rst_head + m->rst_len) % RST_RING] = (RstReply){
        .local_port = p->local_port,
        .peer_port = p->peer_port,
        .type = p->type,
    };
    m->rst_len++;
}

/* A packet that names no connection. */
static int on_unknown(VsockMux *m, const VsockPkt *p, VsockVerdict v, uint64_t now) {
    bool answerable = p->local_port != VSOCK_PORT_ANY && p->peer_port != VSOCK_PORT_ANY &&
                      (p->type == VIRTIO_VSOCK_TYPE_STREAM ||
                       p->type == VIRTIO_VSOCK_TYPE_SEQPACKET);
    if (p->op == VIRTIO_VSOCK_OP_RST) {
        return 0; /* never an RST for an RST */
    }
    if (!answerable) {
        m->stats.dropped++;
        return 0;
    }
    if (rst_ring_full(m)) {
        return -ENOBUFS;
    }
    if (v == VSOCK_PKT_OK && p->op == VIRTIO_VSOCK_OP_REQUEST && p->fwd_cnt == 0 &&
        m->n_conns < m->cfg.max_conns) {
        VsockConn *c = conn_new(m, p->local_port, p->peer_port);
        if (c) {
            c->state = CONN_ESTABLISHED;
            c->peer_buf_alloc = p->buf_alloc;
            c->host_writable = true; /* until a write says otherwise */
            if (m->ops.host_open(m->ctx, c, p->local_port) >= 0) {
                c->owe = OWE_RESPONSE;
                m->stats.guest_conns++;
                conn_schedule(c);
                return 0;
            }
            c->host_closed = true; /* nothing was opened */
            conn_free(c);
        }
    }
    if (p->op == VIRTIO_VSOCK_OP_REQUEST) {
        m->stats.refused++;
    } else {
        m->stats.unknown++;
    }
    rst_ring_push(m, p);
    return 0;
}

int vsock_mux_guest_packet(VsockMux *m, const struct virtio_vsock_hdr *untrusted,
                           const struct iovec *payload, int n, uint64_t payload_avail,
                           uint64_t now) {
    VsockPkt p;
    VsockVerdict v = vsock_pkt_check(untrusted, m->cfg.guest_cid, payload_avail, &p);
    if (v == VSOCK_PKT_DROP) {
        m->stats.dropped++;
        return 0;
    }
    VsockConn *c = conn_find(m, p.local_port, p.peer_port);
    if (!c) {
        return on_unknown(m, &p, v, now);
    }
    if (p.op == VIRTIO_VSOCK_OP_RST) {
        /* Whatever else it holds, the guest is done with the connection:
         * never an RST in reply to one. */
        conn_free(c);
        return 0;
    }
    if (c->state == CONN_RESETTING) {
        return 0; /* our RST is on its way: it answers everything */
    }
    if (v != VSOCK_PKT_OK || p.op >= ELEMENTSOF(op_table) || !op_table[p.op].fn ||
        !(op_table[p.op].states & STATE(c->state)) || conn_take_credit(c, &p) < 0) {
        conn_violation(c);
        return 0;
    }
    op_table[p.op].fn(c, &p, payload, n);
    return 0;
}

/* ---- packets to the guest ------------------------------------------------------------- */

/* Reads the host side's data into the guest's buffer: the payload's
 * length, 0 when there was none after all. */
static size_t conn_read_data(VsockConn *c, const struct iovec *iov, int n, size_t room) {
    VsockMux *m = c->mux;
    size_t want = MIN(MIN(room, (size_t)peer_credit(c)), (size_t)VSOCK_MAX_PAYLOAD);
    struct iovec part[MAX_IOV];
    int k = iov_prefix(iov, n, want, part);
    if (k == 0) {
        return 0; /* a receive buffer with no room past the header */
    }
    ssize_t r = m->ops.host_read(m->ctx, c, part, k);

    if (r > 0) {
        size_t got = MIN((size_t)r, want);
        if (got < want && !c->host_rdhup) {
            /* Drained: the next edge says more. Once its end is coming,
             * no edge will: read on until it. */
            c->host_readable = false;
        }
        c->tx_cnt += (uint32_t)got;
        m->stats.to_guest_bytes += got;
        return got;
    }
    if (r == 0) {
        c->host_eof = true;
        conn_update_shutdown(c);
    } else if (r == -EAGAIN) {
        c->host_readable = false;
    } else {
        conn_reset(c);
    }
    return 0;
}

/* The next packet of connection c, into *p (its payload already read into
 * iov). false: nothing after all. */
static bool conn_next_packet(VsockConn *c, const struct iovec *iov, int n, size_t room,
                             VsockPkt *p, uint64_t now) {
    VsockMux *m = c->mux;

    *p = (VsockPkt){
        .type = VIRTIO_VSOCK_TYPE_STREAM,
        .local_port = c->local_port,
        .peer_port = c->peer_port,
        .buf_alloc = m->cfg.buf_size,
    };
    if (c->state != CONN_RESETTING && (c->owe & OWE_REQUEST)) {
        c->owe &= ~(unsigned)OWE_REQUEST;
        p->op = VIRTIO_VSOCK_OP_REQUEST;
    } else if (c->state != CONN_RESETTING && (c->owe & OWE_RESPONSE)) {
        c->owe &= ~(unsigned)OWE_RESPONSE;
        p->op = VIRTIO_VSOCK_OP_RESPONSE;
    } else if (conn_data_owed(c) && (p->len = (uint32_t)conn_read_data(c, iov, n, room)) > 0) {
        p->op = VIRTIO_VSOCK_OP_RW;
    }
    /* Reading may have found the end, or failed. */
    if (p->op == 0 && c->state == CONN_RESETTING) {
        p->op = VIRTIO_VSOCK_OP_RST;
        p->buf_alloc = 0;
    } else if (p->op == 0 && (c->owe & OWE_SHUTDOWN)) {
        uint32_t want = (c->host_eof ? VIRTIO_VSOCK_SHUTDOWN_SEND : 0) |
                        (c->host_hup ? VIRTIO_VSOCK_SHUTDOWN_RCV : 0);
        c->owe &= ~(unsigned)OWE_SHUTDOWN;
        p->op = VIRTIO_VSOCK_OP_SHUTDOWN;
        p->flags = want & ~c->shutdown_sent;
        c->shutdown_sent |= p->flags;
        if (c->shutdown_sent == SHUTDOWN_BOTH) {
            c->state = CONN_CLOSING;
            timer_set(m, c, TIMER_CLOSE, now + m->cfg.close_timeout_usec);
        }
    } else if (p->op == 0 && (c->owe & OWE_CREDIT)) {
        p->op = VIRTIO_VSOCK_OP_CREDIT_UPDATE;
    }
    if (p->op == 0) {
        return false;
    }
    /* Every packet tells the guest our window. */
    c->owe &= ~(unsigned)OWE_CREDIT;
    p->fwd_cnt = c->fwd_cnt;
    c->fwd_told = c->fwd_cnt;
    return true;
}

bool vsock_mux_rx_pending(const VsockMux *m) {
    return m->rst_len > 0 || m->rx.head != NULL;
}

int vsock_mux_next_packet(VsockMux *m, const struct iovec *iov, int n, size_t room,
                          struct virtio_vsock_hdr *ret_hdr, size_t *ret_len, uint64_t now) {
    VsockPkt p;

    if (m->rst_len > 0) {
        const RstReply *r = &m->rst[m->rst_head];
        p = (VsockPkt){
            .op = VIRTIO_VSOCK_OP_RST,
            .type = r->type,
            .local_port = r->local_port,
            .peer_port = r->peer_port,
        };
        m->rst_head = (m->rst_head + 1) % RST_RING;
        m->rst_len--;
        vsock_hdr_build(ret_hdr, m->cfg.guest_cid, &p);
        *ret_len = 0;
        return 1;
    }
    /* Each connection waiting is asked once: one that has nothing this
     * buffer can take (data, and no room past the header) goes round. */
    for (unsigned budget = m->rx_len; budget > 0 && m->rx.head; budget--) {
        VsockConn *c = m->rx.head;
        rx_remove(m, c);
        if (!conn_next_packet(c, iov, n, room, &p, now)) {
            conn_schedule(c); /* a reset or an end found while reading */
            continue;
        }
        vsock_hdr_build(ret_hdr, m->cfg.guest_cid, &p);
        *ret_len = p.len;
        if (p.op == VIRTIO_VSOCK_OP_RST) {
            conn_free(c);
        } else {
            conn_schedule(c); /* round robin: more of it after the others */
        }
        return 1;
    }
    return 0;
}

/* ---- the host side ---------------------------------------------------------------------- */

void vsock_conn_host_events(VsockConn *c, uint32_t events) {
    VsockMux *m = c->mux;
    if (c->state == CONN_RESETTING) {
        return;
    }
    if (events & EPOLLERR) {
        conn_reset(c);
        return;
    }
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) {
        c->host_readable = true;
    }
    if (events & (EPOLLRDHUP | EPOLLHUP)) {
        c->host_rdhup = true;
    }
    if (events & EPOLLHUP) {
        if (c->state == CONN_CONNECTING) {
            conn_reset(c); /* the client left before the guest answered */
            return;
        }
        if (!c->host_hup) {
            /* Closed: what the guest sent has nowhere to go. The guest's
             * buffer is then free again. */
            c->host_hup = true;
            c->fwd_cnt += c->buf_len;
            buf_put(m, c);
            conn_update_shutdown(c);
        }
    }
    if ((events & EPOLLOUT) && !c->host_hup) {
        c->host_writable = true;
        conn_flush(c);
        return; /* scheduled there */
    }
    conn_schedule(c);
}

void vsock_conn_host_gone(VsockConn *c) {
    conn_reset(c);
}

void *vsock_conn_userdata(const VsockConn *c) {
    return c->userdata;
}

void vsock_conn_set_userdata(VsockConn *c, void *userdata) {
    c->userdata = userdata;
}

uint32_t vsock_conn_local_port(const VsockConn *c) {
    return c->local_port;
}

uint32_t vsock_conn_peer_port(const VsockConn *c) {
    return c->peer_port;
}

/* A free source port towards peer: the next from a cursor that goes round
 * its range, so that a pair just freed is not used again at once (the
 * guest may still hold its end). */
static int port_alloc(VsockMux *m, uint32_t peer, bool privileged, uint32_t *ret) {
    uint32_t lo = privileged ? PRIVILEGED_PORT_MIN : EPHEMERAL_PORT_MIN;
    uint32_t hi = privileged ? PRIVILEGED_PORT_MAX : EPHEMERAL_PORT_MAX;
    uint32_t *cursor = privileged ? &m->next_privileged : &m->next_ephemeral;
    /* Each connection blocks at most one candidate. */
    uint64_t tries = MIN((uint64_t)m->n_conns + 1, (uint64_t)(hi - lo) + 1);

    for (uint64_t i = 0; i < tries; i++) {
        uint32_t port = *cursor;
        /* Privileged ports downwards from 1023, as a privileged process
         * binds them; the others upwards. */
        if (privileged) {
            *cursor = port == lo ? hi : port - 1;
        } else {
            *cursor = port == hi ? lo : port + 1;
        }
        if (!conn_find(m, port, peer)) {
            *ret = port;
            return 0;
        }
    }
    return -EADDRNOTAVAIL;
}

int vsock_mux_connect(VsockMux *m, uint32_t guest_port, bool privileged, void *userdata,
                      uint64_t now, VsockConn **ret) {
    uint32_t port;
    int r;

    if (guest_port == VSOCK_PORT_ANY) {
        return -EINVAL;
    }
    if (m->n_conns >= m->cfg.max_conns) {
        return -EMFILE;
    }
    r = port_alloc(m, guest_port, privileged, &port);
    if (r < 0) {
        return r;
    }
    VsockConn *c = conn_new(m, port, guest_port);
    if (!c) {
        return -ENOMEM;
    }
    c->userdata = userdata;
    c->state = CONN_CONNECTING;
    c->owe = OWE_REQUEST;
    c->host_writable = true;
    timer_set(m, c, TIMER_CONNECT, now + m->cfg.connect_timeout_usec);
    conn_schedule(c);
    *ret = c;
    return 0;
}

/* ---- the whole ---------------------------------------------------------------------------- */

void vsock_mux_tick(VsockMux *m, uint64_t now) {
    for (TimerKind k = TIMER_CONNECT; k < N_TIMERS; k++) {
        while (m->timers[k].head && m->timers[k].head->deadline <= now) {
            VsockConn *c = m->timers[k].head;
            m->stats.timeouts++;
            conn_reset(c); /* takes it off the list */
        }
    }
}

uint64_t vsock_mux_next_deadline(const VsockMux *m) {
    uint64_t next = UINT64_MAX;
    for (TimerKind k = TIMER_CONNECT; k < N_TIMERS; k++) {
        if (m->timers[k].head) {
            next = MIN(next, m->timers[k].head->deadline);
        }
    }
    return next;
}

void vsock_mux_reset_all(VsockMux *m) {
    for (unsigned b = 0; b < m->n_buckets; b++) {
        while (m->buckets[b]) {
            conn_free(m->buckets[b]);
        }
    }
    m->rst_head = m->rst_len = 0;
}

int vsock_mux_new(const VsockMuxConfig *cfg, const VsockMuxOps *ops, void *ctx, VsockMux **ret) {
    if (cfg->max_conns == 0 || cfg->max_conns > VSOCK_MUX_MAX_CONNS || cfg->buf_size < 4096 ||
        cfg->buf_size > 16u * 1024 * 1024 || cfg->guest_cid <= VSOCK_HOST_CID ||
        cfg->guest_cid >= UINT32_MAX) {
        return -EINVAL;
    }
    VsockMux *m = calloc(1, sizeof(*m));
    if (!m) {
        return -ENOMEM;
    }
    m->cfg = *cfg;
    m->ops = *ops;
    m->ctx = ctx;
    m->n_buckets = 1;
    while (m->n_buckets < 2 * cfg->max_conns) {
        m->n_buckets *= 2;
    }
    m->buckets = calloc(m->n_buckets, sizeof(*m->buckets));
    if (!m->buckets) {
        free(m);
        return -ENOMEM;
    }
    m->next_privileged = PRIVILEGED_PORT_MAX;
    m->next_ephemeral = EPHEMERAL_PORT_MIN;
    *ret = m;
    return 0;
}

void vsock_mux_free(VsockMux *m) {
    if (!m) {
        return;
    }
    vsock_mux_reset_all(m);
    for (unsigned i = 0; i < m->n_pool; i++) {
        free(m->pool[i]);
    }
    free(m->buckets);
    free(m);
}

unsigned vsock_mux_n_conns(const VsockMux *m) {
    return m->n_conns;
}

unsigned vsock_mux_n_buffers(const VsockMux *m) {
    return m->n_buffers;
}

const VsockMuxStats *vsock_mux_stats(const VsockMux *m) {
    return &m->stats;
}
