/* switch/vsock/mux: the connection state machine and flow control,
 * driven from both sides in memory: a fake host side behind VsockMuxOps
 * and a guest made of headers. Connections both ways, refusals, credit
 * both ways with a slow host, every close sequence, timeouts, protocol
 * violations that reset one connection only, a full reply ring, port
 * allocation, and more than a thousand connections at once. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "switch/vsock/mux.h"
#include "util.h"

#define GUEST_CID 7
#define BUF 65536u
#define SEC 1000000ull

/* ---- a fake host side ------------------------------------------------------ */

typedef struct Side {
    VsockConn *conn;
    uint8_t *out; /* what the host side was written */
    size_t n_out;
    size_t write_room; /* bytes it takes before it is full */
    int write_err;
    const uint8_t *in; /* what it has for the guest */
    size_t n_in, in_off;
    bool eof;
    int read_err;
    bool established, closed, shut_rd, shut_wr;
} Side;

typedef struct World {
    VsockMux *m;
    Side sides[4096];
    unsigned n_sides;
    bool listening[70000]; /* host ports with a "listener" */
    int open_err;
    uint64_t now;
} World;

static Side *side_new(World *w) {
    assert_true(w->n_sides < ELEMENTSOF(w->sides));
    Side *s = &w->sides[w->n_sides++];
    memset(s, 0, sizeof(*s));
    s->write_room = SIZE_MAX;
    return s;
}

static int op_open(void *ctx, VsockConn *c, uint32_t port) {
    World *w = ctx;
    if (w->open_err) {
        return w->open_err;
    }
    if (port >= ELEMENTSOF(w->listening) || !w->listening[port]) {
        return -ECONNREFUSED;
    }
    Side *s = side_new(w);
    s->conn = c;
    vsock_conn_set_userdata(c, s);
    return 0;
}

static int op_established(void *ctx, VsockConn *c) {
    Side *s = vsock_conn_userdata(c);
    assert_false(s->closed);
    s->established = true;
    return s->write_err;
}

static ssize_t op_write(void *ctx, VsockConn *c, const struct iovec *iov, int n) {
    Side *s = vsock_conn_userdata(c);
    assert_false(s->closed);
    if (s->write_err) {
        return s->write_err;
    }
    size_t done = 0;
    for (int i = 0; i < n && s->write_room > 0; i++) {
        size_t k = MIN(iov[i].iov_len, s->write_room);
        s->out = realloc(s->out, s->n_out + k);
        memcpy(s->out + s->n_out, iov[i].iov_base, k);
        s->n_out += k;
        s->write_room -= k;
        done += k;
    }
    return (ssize_t)done;
}

static ssize_t op_read(void *ctx, VsockConn *c, const struct iovec *iov, int n) {
    Side *s = vsock_conn_userdata(c);
    assert_false(s->closed);
    if (s->read_err) {
        return s->read_err;
    }
    if (s->in_off == s->n_in) {
        return s->eof ? 0 : -EAGAIN;
    }
    size_t done = 0;
    for (int i = 0; i < n && s->in_off < s->n_in; i++) {
        size_t k = MIN(iov[i].iov_len, s->n_in - s->in_off);
        memcpy(iov[i].iov_base, s->in + s->in_off, k);
        s->in_off += k;
        done += k;
    }
    return (ssize_t)done;
}

static void op_shutdown(void *ctx, VsockConn *c, int how) {
    Side *s = vsock_conn_userdata(c);
    assert_false(s->closed);
    if (how == SHUT_RD) {
        s->shut_rd = true;
    } else {
        assert_int_equal(how, SHUT_WR);
        assert_false(s->shut_wr); /* once */
        s->shut_wr = true;
    }
}

static void op_close(void *ctx, VsockConn *c) {
    Side *s = vsock_conn_userdata(c);
    assert_false(s->closed); /* once */
    s->closed = true;
    s->conn = NULL;
}

static const VsockMuxOps ops = {
    .host_open = op_open,
    .host_established = op_established,
    .host_write = op_write,
    .host_read = op_read,
    .host_shutdown = op_shutdown,
    .host_close = op_close,
};

static World *world(unsigned max_conns) {
    World *w = calloc(1, sizeof(*w));
    VsockMuxConfig cfg = {
        .guest_cid = GUEST_CID,
        .max_conns = max_conns,
        .buf_size = BUF,
        .connect_timeout_usec = 5 * SEC,
        .close_timeout_usec = 8 * SEC,
    };
    assert_int_equal(vsock_mux_new(&cfg, &ops, w, &w->m), 0);
    w->now = 1000 * SEC;
    return w;
}

static void world_free(World *w) {
    vsock_mux_free(w->m);
    for (unsigned i = 0; i < w->n_sides; i++) {
        assert_true(w->sides[i].closed); /* every host side closed */
        free(w->sides[i].out);
    }
    free(w);
}

/* ---- the guest ---------------------------------------------------------------- */

typedef struct Pkt {
    uint16_t op, type;
    uint32_t src_port, dst_port, len, flags, buf_alloc, fwd_cnt;
    uint8_t data[VSOCK_MAX_PAYLOAD];
} Pkt;

static int guest_send_full(World *w, uint16_t op, uint32_t gport, uint32_t hport,
                           const void *data, uint32_t len, uint32_t flags, uint32_t buf_alloc,
                           uint32_t fwd_cnt) {
    struct virtio_vsock_hdr h = {
        .src_cid = htole64(GUEST_CID),
        .dst_cid = htole64(VSOCK_HOST_CID),
        .src_port = htole32(gport),
        .dst_port = htole32(hport),
        .len = htole32(len),
        .type = htole16(VIRTIO_VSOCK_TYPE_STREAM),
        .op = htole16(op),
        .flags = htole32(flags),
        .buf_alloc = htole32(buf_alloc),
        .fwd_cnt = htole32(fwd_cnt),
    };
    /* The payload in two segments, as a chain may hold it. */
    size_t half = len / 2;
    struct iovec iov[2] = {
        {.iov_base = (void *)data, .iov_len = half},
        {.iov_base = (uint8_t *)data + half, .iov_len = len - half},
    };
    return vsock_mux_guest_packet(w->m, &h, iov, 2, len, w->now);
}

static void guest_send(World *w, uint16_t op, uint32_t gport, uint32_t hport, uint32_t fwd_cnt) {
    uint32_t flags = op == VIRTIO_VSOCK_OP_SHUTDOWN ? 3 : 0;
    assert_int_equal(guest_send_full(w, op, gport, hport, NULL, 0, flags, 256 * 1024, fwd_cnt), 0);
}

/* The next packet for the guest (payload room: room bytes), or false. */
static bool guest_recv_room(World *w, Pkt *p, size_t room) {
    struct virtio_vsock_hdr h;
    size_t len = 99;
    struct iovec iov[2] = {
        {.iov_base = p->data, .iov_len = MIN(room, (size_t)100)},
        {.iov_base = p->data + MIN(room, (size_t)100), .iov_len = room - MIN(room, (size_t)100)},
    };
    int r = vsock_mux_next_packet(w->m, iov, 2, room, &h, &len, w->now);
    assert_true(r >= 0);
    if (r == 0) {
        return false;
    }
    assert_int_equal(le64toh(h.src_cid), VSOCK_HOST_CID);
    assert_int_equal(le64toh(h.dst_cid), GUEST_CID);
    p->op = le16toh(h.op);
    p->type = le16toh(h.type);
    p->src_port = le32toh(h.src_port);
    p->dst_port = le32toh(h.dst_port);
    p->len = le32toh(h.len);
    p->flags = le32toh(h.flags);
    p->buf_alloc = le32toh(h.buf_alloc);
    p->fwd_cnt = le32toh(h.fwd_cnt);
    assert_int_equal(p->len, len);
    assert_true(len <= room);
    return true;
}

static bool guest_recv(World *w, Pkt *p) {
    return guest_recv_room(w, p, 4096);
}

static Pkt pkt;

/* The next packet for the guest must be op from hport to gport (reported
 * at the caller's line). */
#define expect(w, op, hport, gport) expect_at(w, op, hport, gport, __LINE__)
static void expect_at(World *w, uint16_t op, uint32_t hport, uint32_t gport, int line) {
    if (!guest_recv(w, &pkt)) {
        fail_msg("line %d: no packet, expected %s", line, vsock_op_name(op));
    }
    if (pkt.op != op || pkt.src_port != hport || pkt.dst_port != gport) {
        fail_msg("line %d: got %s %u -> %u, expected %s %u -> %u", line, vsock_op_name(pkt.op),
                 pkt.src_port, pkt.dst_port, vsock_op_name(op), hport, gport);
    }
}

#define expect_nothing(w) expect_nothing_at(w, __LINE__)
static void expect_nothing_at(World *w, int line) {
    if (guest_recv(w, &pkt)) {
        fail_msg("line %d: unexpected %s %u -> %u", line, vsock_op_name(pkt.op), pkt.src_port,
                 pkt.dst_port);
    }
}

/* A guest connection to the host's port 5000, established. */
static Side *guest_connects(World *w, uint32_t gport) {
    w->listening[5000] = true;
    guest_send(w, VIRTIO_VSOCK_OP_REQUEST, gport, 5000, 0);
    expect(w, VIRTIO_VSOCK_OP_RESPONSE, 5000, gport);
    assert_int_equal(pkt.buf_alloc, BUF);
    Side *s = &w->sides[w->n_sides - 1];
    assert_ptr_equal(vsock_conn_peer_port(s->conn), gport);
    return s;
}

/* A host connection to the guest's port 5200, accepted. */
static Side *host_connects(World *w, bool privileged, uint32_t *ret_port) {
    Side *s = side_new(w);
    assert_int_equal(vsock_mux_connect(w->m, 5200, privileged, s, w->now, &s->conn), 0);
    uint32_t port = vsock_conn_local_port(s->conn);
    expect(w, VIRTIO_VSOCK_OP_REQUEST, port, 5200);
    assert_int_equal(pkt.type, VIRTIO_VSOCK_TYPE_STREAM);
    guest_send(w, VIRTIO_VSOCK_OP_RESPONSE, 5200, port, 0);
    assert_true(s->established);
    *ret_port = port;
    return s;
}

/* ---- tests ------------------------------------------------------------------------ */

static void test_guest_connects(void **state) {
    World *w = world(16);
    Side *s = guest_connects(w, 40000);
    assert_int_equal(vsock_mux_n_conns(w->m), 1);
    assert_int_equal(vsock_mux_stats(w->m)->guest_conns, 1);
    assert_false(s->closed);
    expect_nothing(w);

    /* Nobody listens on 6000: refused at once. */
    guest_send(w, VIRTIO_VSOCK_OP_REQUEST, 40001, 6000, 0);
    expect(w, VIRTIO_VSOCK_OP_RST, 6000, 40001);
    assert_int_equal(vsock_mux_n_conns(w->m), 1);
    assert_int_equal(vsock_mux_stats(w->m)->refused, 1);

    /* SEQPACKET is refused cleanly, answered in its own type. */
    assert_int_equal(guest_send_full(w, VIRTIO_VSOCK_OP_REQUEST, 40002, 5000, NULL, 0, 0, 4096, 0)
                     , 0);
    expect(w, VIRTIO_VSOCK_OP_RESPONSE, 5000, 40002);
    struct virtio_vsock_hdr h = {
        .src_cid = htole64(GUEST_CID),
        .dst_cid = htole64(VSOCK_HOST_CID),
        .src_port = htole32(40003),
        .dst_port = htole32(5000),
        .type = htole16(VIRTIO_VSOCK_TYPE_SEQPACKET),
        .op = htole16(VIRTIO_VSOCK_OP_REQUEST),
    };
    assert_int_equal(vsock_mux_guest_packet(w->m, &h, NULL, 0, 0, w->now), 0);
    expect(w, VIRTIO_VSOCK_OP_RST, 5000, 40003);
    assert_int_equal(pkt.type, VIRTIO_VSOCK_TYPE_SEQPACKET);
    assert_int_equal(vsock_mux_n_conns(w->m), 2);

    /* The host side cannot be opened for another reason. */
    w->open_err = -EMFILE;
    guest_send(w, VIRTIO_VSOCK_OP_REQUEST, 40004, 5000, 0);
    expect(w, VIRTIO_VSOCK_OP_RST, 5000, 40004);
    w->open_err = 0;

    /* A second REQUEST for a pair in use resets it. */
    guest_send(w, VIRTIO_VSOCK_OP_REQUEST, 40000, 5000, 0);
    expect(w, VIRTIO_VSOCK_OP_RST, 5000, 40000);
    assert_true(s->closed);
    assert_int_equal(vsock_mux_stats(w->m)->violations, 1);
    world_free(w);
}

static void test_host_connects(void **state) {
    World *w = world(16);
    uint32_t p1, p2, p3;
    Side *a = host_connects(w, true, &p1);
    Side *b = host_connects(w, true, &p2);
    Side *c = host_connects(w, false, &p3);
    /* Privileged ports from 1023 down; the others above 1023. */
    assert_int_equal(p1, 1023);
    assert_int_equal(p2, 1022);
    assert_true(p3 > 1023);
    assert_int_equal(vsock_mux_stats(w->m)->host_conns, 3);
    assert_false(a->closed || b->closed || c->closed);

    /* Refused: the guest answers the REQUEST with an RST. */
    Side *d = side_new(w);
    assert_int_equal(vsock_mux_connect(w->m, 5201, true, d, w->now, &d->conn), 0);
    expect(w, VIRTIO_VSOCK_OP_REQUEST, 1021, 5201);
    guest_send(w, VIRTIO_VSOCK_OP_RST, 5201, 1021, 0);
    assert_true(d->closed);
    assert_false(d->established);
    expect_nothing(w);

    /* No answer at all: the connect timeout resets it, the guest is told
     * in case it answers late. */
    Side *e = side_new(w);
    assert_int_equal(vsock_mux_connect(w->m, 5202, true, e, w->now, &e->conn), 0);
    expect(w, VIRTIO_VSOCK_OP_REQUEST, 1020, 5202);
    assert_int_equal(vsock_mux_next_deadline(w->m), w->now + 5 * SEC);
    w->now += 5 * SEC - 1;
    vsock_mux_tick(w->m, w->now);
    assert_false(e->closed);
    w->now += 1;
    vsock_mux_tick(w->m, w->now);
    assert_true(e->closed);
    expect(w, VIRTIO_VSOCK_OP_RST, 1020, 5202);
    assert_int_equal(vsock_mux_stats(w->m)->timeouts, 1);
    assert_int_equal(vsock_mux_next_deadline(w->m), UINT64_MAX);
    /* ... and a late RESPONSE is answered with an RST. */
    guest_send(w, VIRTIO_VSOCK_OP_RESPONSE, 5202, 1020, 0);
    expect(w, VIRTIO_VSOCK_OP_RST, 1020, 5202);

    /* The client leaves before the guest answers. */
    Side *f = side_new(w);
    assert_int_equal(vsock_mux_connect(w->m, 5203, true, f, w->now, &f->conn), 0);
    vsock_conn_host_events(f->conn, EPOLLIN | EPOLLRDHUP | EPOLLHUP);
    assert_true(f->closed);
    /* The REQUEST never went: only the RST does. */
    expect(w, VIRTIO_VSOCK_OP_RST, 1019, 5203);
    expect_nothing(w);

    /* The client is gone when the RESPONSE comes. */
    Side *g = side_new(w);
    assert_int_equal(vsock_mux_connect(w->m, 5204, true, g, w->now, &g->conn), 0);
    expect(w, VIRTIO_VSOCK_OP_REQUEST, 1018, 5204);
    g->write_err = -EPIPE;
    guest_send(w, VIRTIO_VSOCK_OP_RESPONSE, 5204, 1018, 0);
    assert_true(g->closed);
    expect(w, VIRTIO_VSOCK_OP_RST, 1018, 5204);

    assert_int_equal(vsock_mux_connect(w->m, VSOCK_PORT_ANY, true, NULL, w->now, &g->conn),
                     -EINVAL);
    world_free(w);
}

static void test_guest_to_host_flow(void **state) {
    World *w = world(16);
    Side *s = guest_connects(w, 40000);
    static uint8_t data[3 * BUF];
    for (size_t i = 0; i < sizeof(data); i++) {
        data[i] = (uint8_t)(i * 7 + i / 251);
    }

    /* A host side that takes everything: straight through, no buffer. */
    assert_int_equal(guest_send_full(w, VIRTIO_VSOCK_OP_RW, 40000, 5000, data, 1000, 0, BUF, 0), 0);
    assert_int_equal(s->n_out, 1000);
    assert_memory_equal(s->out, data, 1000);
    assert_int_equal(vsock_mux_n_buffers(w->m), 0);
    expect_nothing(w); /* no credit update for a trickle */

    /* A slow host: what it does not take waits in the buffer, up to
     * buf_size and no more. */
    s->write_room = 500;
    uint32_t sent = 1000;
    while (sent < 1000 + BUF) {
        uint32_t k = MIN(4096u, 1000 + BUF - sent);
        assert_int_equal(guest_send_full(w, VIRTIO_VSOCK_OP_RW, 40000, 5000, data + sent, k, 0,
                                         BUF, 0),
                         0);
        sent += k;
    }
    assert_int_equal(s->n_out, 1500);
    assert_int_equal(vsock_mux_n_buffers(w->m), 1);
    /* The guest was told of the first 1500 bytes only when it had to be:
     * half a buffer not yet taken. */
    expect_nothing(w);
    /* The host takes some: the buffer drains as it does. */
    s->write_room = 20000;
    vsock_conn_host_events(s->conn, EPOLLOUT);
    assert_int_equal(s->n_out, 21500);
    expect_nothing(w);
    s->write_room = 20000;
    vsock_conn_host_events(s->conn, EPOLLOUT);
    assert_int_equal(s->n_out, 41500);
    /* 40500 taken since the guest last heard (>= BUF / 2): it hears now. */
    expect(w, VIRTIO_VSOCK_OP_CREDIT_UPDATE, 5000, 40000);
    assert_int_equal(pkt.fwd_cnt, 41500);
    assert_int_equal(pkt.buf_alloc, BUF);
    s->write_room = SIZE_MAX;
    vsock_conn_host_events(s->conn, EPOLLOUT);
    assert_int_equal(s->n_out, 1000 + BUF);
    assert_memory_equal(s->out, data, 1000 + BUF);
    assert_int_equal(vsock_mux_n_buffers(w->m), 0); /* drained: given back */
    /* 25036 since it last heard: not yet worth a packet. */
    expect_nothing(w);

    /* CREDIT_REQUEST is answered. */
    guest_send(w, VIRTIO_VSOCK_OP_CREDIT_REQUEST, 40000, 5000, 0);
    expect(w, VIRTIO_VSOCK_OP_CREDIT_UPDATE, 5000, 40000);
    assert_int_equal(pkt.fwd_cnt, 1000 + BUF);
    expect_nothing(w);

    /* More than the credit allows: reset, the buffer freed. */
    s->write_room = 0;
    assert_int_equal(guest_send_full(w, VIRTIO_VSOCK_OP_RW, 40000, 5000, data, 60000, 0, BUF, 0),
                     0);
    assert_int_equal(vsock_mux_n_buffers(w->m), 1);
    assert_int_equal(guest_send_full(w, VIRTIO_VSOCK_OP_RW, 40000, 5000, data, 6000, 0, BUF, 0),
                     0);
    assert_true(s->closed);
    assert_int_equal(vsock_mux_n_buffers(w->m), 0);
    expect(w, VIRTIO_VSOCK_OP_RST, 5000, 40000);
    assert_int_equal(vsock_mux_n_conns(w->m), 0);
    world_free(w);
}

static void test_host_to_guest_flow(void **state) {
    World *w = world(16);
    uint32_t port;
    Side *s = host_connects(w, true, &port);
    static uint8_t data[300000];
    for (size_t i = 0; i < sizeof(data); i++) {
        data[i] = (uint8_t)(i ^ (i >> 8));
    }
    s->in = data;
    s->n_in = sizeof(data);
    /* Nothing is read before the host side says it is readable. */
    expect_nothing(w);
    vsock_conn_host_events(s->conn, EPOLLIN | EPOLLOUT);

    /* The guest's window: 256 KiB (guest_send's buf_alloc), 4 KiB rx
     * buffers: 64 packets, then it must say it took some. */
    static uint8_t got[sizeof(data)];
    size_t n_got = 0;
    unsigned packets = 0;
    while (guest_recv(w, &pkt)) {
        assert_int_equal(pkt.op, VIRTIO_VSOCK_OP_RW);
        memcpy(got + n_got, pkt.data, pkt.len);
        n_got += pkt.len;
        packets++;
    }
    assert_int_equal(n_got, 256 * 1024);
    assert_int_equal(packets, 64);
    /* It read 100 KiB: CREDIT_UPDATE, and the data goes on. */
    guest_send(w, VIRTIO_VSOCK_OP_CREDIT_UPDATE, 5200, port, 100 * 1024);
    while (guest_recv(w, &pkt)) {
        assert_int_equal(pkt.op, VIRTIO_VSOCK_OP_RW);
        memcpy(got + n_got, pkt.data, pkt.len);
        n_got += pkt.len;
    }
    assert_int_equal(n_got, sizeof(data));
    assert_memory_equal(got, data, sizeof(data));

    /* The end: SHUTDOWN(SEND); the guest closes both ways: RST, done. */
    s->eof = true;
    vsock_conn_host_events(s->conn, EPOLLIN | EPOLLRDHUP);
    expect(w, VIRTIO_VSOCK_OP_SHUTDOWN, port, 5200);
    assert_int_equal(pkt.flags, VIRTIO_VSOCK_SHUTDOWN_SEND);
    guest_send(w, VIRTIO_VSOCK_OP_SHUTDOWN, 5200, port, sizeof(data));
    assert_true(s->shut_wr);
    assert_true(s->closed);
    expect(w, VIRTIO_VSOCK_OP_RST, port, 5200);
    assert_int_equal(vsock_mux_n_conns(w->m), 0);

    /* A guest that claims to have taken more than it was sent. */
    Side *t = host_connects(w, true, &port);
    t->in = data;
    t->n_in = 10;
    vsock_conn_host_events(t->conn, EPOLLIN);
    expect(w, VIRTIO_VSOCK_OP_RW, port, 5200);
    assert_int_equal(pkt.len, 10);
    guest_send(w, VIRTIO_VSOCK_OP_CREDIT_UPDATE, 5200, port, 11);
    assert_true(t->closed);
    expect(w, VIRTIO_VSOCK_OP_RST, port, 5200);
    assert_int_equal(vsock_mux_stats(w->m)->violations, 1);
    world_free(w);
}

static void test_close_sequences(void **state) {
    World *w = world(16);

    /* The guest shuts its sending side with data still buffered: the
     * host side's write side is shut once that data went. */
    Side *a = guest_connects(w, 41000);
    a->write_room = 3;
    assert_int_equal(guest_send_full(w, VIRTIO_VSOCK_OP_RW, 41000, 5000, "hello", 5, 0, BUF, 0),
                     0);
    assert_int_equal(guest_send_full(w, VIRTIO_VSOCK_OP_SHUTDOWN, 41000, 5000, NULL, 0,
                                     VIRTIO_VSOCK_SHUTDOWN_SEND, BUF, 0),
                     0);
    assert_false(a->shut_wr);
    a->write_room = 100;
    vsock_conn_host_events(a->conn, EPOLLOUT);
    assert_true(a->shut_wr);
    assert_int_equal(a->n_out, 5);
    assert_memory_equal(a->out, "hello", 5);
    /* Data after its own end breaks the protocol. */
    assert_int_equal(guest_send_full(w, VIRTIO_VSOCK_OP_RW, 41000, 5000, "x", 1, 0, BUF, 0), 0);
    assert_true(a->closed);
    expect(w, VIRTIO_VSOCK_OP_RST, 5000, 41000);

    /* The guest stops reading: the host side's read side is shut. */
    Side *b = guest_connects(w, 41001);
    assert_int_equal(guest_send_full(w, VIRTIO_VSOCK_OP_SHUTDOWN, 41001, 5000, NULL, 0,
                                     VIRTIO_VSOCK_SHUTDOWN_RCV, BUF, 0),
                     0);
    assert_true(b->shut_rd);
    b->in = (const uint8_t *)"ignored";
    b->n_in = 7;
    vsock_conn_host_events(b->conn, EPOLLIN);
    expect_nothing(w);

    /* The host side closes while the guest still sends: SHUTDOWN both
     * ways, the guest's data dropped, the guest's RST ends it. */
    Side *c = guest_connects(w, 41002);
    c->in = (const uint8_t *)"bye";
    c->n_in = 3;
    c->eof = true;
    vsock_conn_host_events(c->conn, EPOLLIN | EPOLLRDHUP | EPOLLHUP);
    expect(w, VIRTIO_VSOCK_OP_RW, 5000, 41002);
    assert_int_equal(pkt.len, 3);
    assert_memory_equal(pkt.data, "bye", 3);
    expect(w, VIRTIO_VSOCK_OP_SHUTDOWN, 5000, 41002);
    assert_int_equal(pkt.flags, VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND);
    assert_int_equal(guest_send_full(w, VIRTIO_VSOCK_OP_RW, 41002, 5000, "late", 4, 0, BUF, 3), 0);
    assert_int_equal(c->n_out, 0);
    assert_false(c->closed);
    guest_send(w, VIRTIO_VSOCK_OP_RST, 41002, 5000, 3);
    assert_true(c->closed);
    expect_nothing(w);

    /* ... and when the guest never answers, the close timeout does. */
    Side *d = guest_connects(w, 41003);
    d->eof = true;
    vsock_conn_host_events(d->conn, EPOLLHUP);
    expect(w, VIRTIO_VSOCK_OP_SHUTDOWN, 5000, 41003);
    assert_int_equal(vsock_mux_next_deadline(w->m), w->now + 8 * SEC);
    w->now += 8 * SEC;
    vsock_mux_tick(w->m, w->now);
    assert_true(d->closed);
    expect(w, VIRTIO_VSOCK_OP_RST, 5000, 41003);

    /* A half close from the host: only SHUTDOWN(SEND); the guest goes on
     * sending and its data arrives. */
    Side *e = guest_connects(w, 41004);
    e->eof = true;
    vsock_conn_host_events(e->conn, EPOLLIN | EPOLLRDHUP);
    expect(w, VIRTIO_VSOCK_OP_SHUTDOWN, 5000, 41004);
    assert_int_equal(pkt.flags, VIRTIO_VSOCK_SHUTDOWN_SEND);
    assert_int_equal(guest_send_full(w, VIRTIO_VSOCK_OP_RW, 41004, 5000, "more", 4, 0, BUF, 0), 0);
    assert_int_equal(e->n_out, 4);
    /* Then the host closes all the way: SHUTDOWN(RCV) follows. */
    vsock_conn_host_events(e->conn, EPOLLHUP);
    expect(w, VIRTIO_VSOCK_OP_SHUTDOWN, 5000, 41004);
    assert_int_equal(pkt.flags, VIRTIO_VSOCK_SHUTDOWN_RCV);
    guest_send(w, VIRTIO_VSOCK_OP_RST, 41004, 5000, 0);
    assert_true(e->closed);

    /* The host side fails. */
    Side *f = guest_connects(w, 41005);
    f->read_err = -ECONNRESET;
    vsock_conn_host_events(f->conn, EPOLLIN);
    expect(w, VIRTIO_VSOCK_OP_RST, 5000, 41005);
    assert_true(f->closed);
    Side *g = guest_connects(w, 41006);
    g->write_err = -EPIPE;
    assert_int_equal(guest_send_full(w, VIRTIO_VSOCK_OP_RW, 41006, 5000, "x", 1, 0, BUF, 0), 0);
    expect(w, VIRTIO_VSOCK_OP_RST, 5000, 41006);
    assert_true(g->closed);
    Side *h = guest_connects(w, 41007);
    vsock_conn_host_events(h->conn, EPOLLERR);
    expect(w, VIRTIO_VSOCK_OP_RST, 5000, 41007);
    assert_true(h->closed);
    Side *i = guest_connects(w, 41008);
    vsock_conn_host_gone(i->conn);
    expect(w, VIRTIO_VSOCK_OP_RST, 5000, 41008);
    assert_true(i->closed);
    expect_nothing(w);

    /* b is still there, untouched by all of this. */
    assert_false(b->closed);
    assert_int_equal(vsock_mux_n_conns(w->m), 1);
    world_free(w);
}

static void test_hostile(void **state) {
    World *w = world(16);
    Side *keep = guest_connects(w, 40000);

    /* Spoofed CIDs: dropped unanswered. */
    struct virtio_vsock_hdr h = {
        .src_cid = htole64(GUEST_CID + 1),
        .dst_cid = htole64(VSOCK_HOST_CID),
        .src_port = htole32(40000),
        .dst_port = htole32(5000),
        .type = htole16(VIRTIO_VSOCK_TYPE_STREAM),
        .op = htole16(VIRTIO_VSOCK_OP_RST),
    };
    assert_int_equal(vsock_mux_guest_packet(w->m, &h, NULL, 0, 0, w->now), 0);
    h.src_cid = htole64(GUEST_CID);
    h.dst_cid = htole64(GUEST_CID + 1);
    assert_int_equal(vsock_mux_guest_packet(w->m, &h, NULL, 0, 0, w->now), 0);
    assert_false(keep->closed);
    assert_int_equal(vsock_mux_stats(w->m)->dropped, 2);
    expect_nothing(w);

    /* Packets for no connection get an RST, an RST gets nothing. */
    guest_send(w, VIRTIO_VSOCK_OP_RW, 40001, 5000, 0);
    expect(w, VIRTIO_VSOCK_OP_RST, 5000, 40001);
    guest_send(w, VIRTIO_VSOCK_OP_RST, 40001, 5000, 0);
    guest_send(w, VIRTIO_VSOCK_OP_RESPONSE, 40001, 1023, 0);
    expect(w, VIRTIO_VSOCK_OP_RST, 1023, 40001);
    expect_nothing(w);

    /* Ops out of place reset that connection only. */
    static const uint16_t bad_ops[] = {VIRTIO_VSOCK_OP_RESPONSE, VIRTIO_VSOCK_OP_REQUEST};
    for (size_t i = 0; i < ELEMENTSOF(bad_ops); i++) {
        Side *s = guest_connects(w, 42000 + (uint32_t)i);
        guest_send(w, bad_ops[i], 42000 + (uint32_t)i, 5000, 0);
        assert_true(s->closed);
        expect(w, VIRTIO_VSOCK_OP_RST, 5000, 42000 + (uint32_t)i);
    }
    uint32_t port;
    Side *s = host_connects(w, false, &port);
    guest_send(w, VIRTIO_VSOCK_OP_RESPONSE, 5200, port, 0);
    assert_true(s->closed);
    expect(w, VIRTIO_VSOCK_OP_RST, port, 5200);
    /* A malformed header on a connection: reset. */
    s = guest_connects(w, 42010);
    assert_int_equal(guest_send_full(w, VIRTIO_VSOCK_OP_CREDIT_UPDATE, 42010, 5000, NULL, 0, 1,
                                     BUF, 0),
                     0);
    assert_true(s->closed);
    expect(w, VIRTIO_VSOCK_OP_RST, 5000, 42010);
    /* A length beyond the chain. */
    s = guest_connects(w, 42011);
    h = (struct virtio_vsock_hdr){
        .src_cid = htole64(GUEST_CID),
        .dst_cid = htole64(VSOCK_HOST_CID),
        .src_port = htole32(42011),
        .dst_port = htole32(5000),
        .len = htole32(100),
        .type = htole16(VIRTIO_VSOCK_TYPE_STREAM),
        .op = htole16(VIRTIO_VSOCK_OP_RW),
    };
    uint8_t few[10] = {0};
    struct iovec iov = {.iov_base = few, .iov_len = sizeof(few)};
    assert_int_equal(vsock_mux_guest_packet(w->m, &h, &iov, 1, sizeof(few), w->now), 0);
    assert_true(s->closed);
    assert_int_equal(s->n_out, 0);
    expect(w, VIRTIO_VSOCK_OP_RST, 5000, 42011);
    /* fwd_cnt going backwards. */
    s = host_connects(w, true, &port);
    s->in = few;
    s->n_in = sizeof(few);
    vsock_conn_host_events(s->conn, EPOLLIN);
    expect(w, VIRTIO_VSOCK_OP_RW, port, 5200);
    guest_send(w, VIRTIO_VSOCK_OP_CREDIT_UPDATE, 5200, port, 10);
    assert_false(s->closed);
    guest_send(w, VIRTIO_VSOCK_OP_CREDIT_UPDATE, 5200, port, 5);
    assert_true(s->closed);
    expect(w, VIRTIO_VSOCK_OP_RST, port, 5200);
    /* Anything after our RST is decided, before it went: no second one. */
    s = guest_connects(w, 42012);
    guest_send(w, VIRTIO_VSOCK_OP_REQUEST, 42012, 5000, 0);
    guest_send(w, VIRTIO_VSOCK_OP_RW, 42012, 5000, 0);
    guest_send(w, VIRTIO_VSOCK_OP_SHUTDOWN, 42012, 5000, 0);
    expect(w, VIRTIO_VSOCK_OP_RST, 5000, 42012);
    expect_nothing(w);

    assert_false(keep->closed);
    assert_int_equal(vsock_mux_n_conns(w->m), 1);
    world_free(w);
}

/* Replies to packets for no connection wait in a bounded ring: once full,
 * the guest's queue waits (-ENOBUFS) and nothing grows. */
static void test_reply_ring(void **state) {
    World *w = world(16);
    unsigned taken = 0;
    for (uint32_t i = 0; i < 1000; i++) {
        int r = guest_send_full(w, VIRTIO_VSOCK_OP_RW, 50000 + i, 5000, NULL, 0, 0, BUF, 0);
        if (r == -ENOBUFS) {
            break;
        }
        assert_int_equal(r, 0);
        taken++;
    }
    assert_int_equal(taken, 64);
    /* RSTs and REQUESTs to nowhere alike. */
    assert_int_equal(guest_send_full(w, VIRTIO_VSOCK_OP_REQUEST, 1, 6000, NULL, 0, 0, BUF, 0),
                     -ENOBUFS);
    /* An RST needs no reply: taken even now. */
    guest_send(w, VIRTIO_VSOCK_OP_RST, 1, 6000, 0);
    for (uint32_t i = 0; i < taken; i++) {
        expect(w, VIRTIO_VSOCK_OP_RST, 5000, 50000 + i);
    }
    expect_nothing(w);
    world_free(w);
}

static void test_ports(void **state) {
    World *w = world(2048);
    /* 1023 privileged connections to one guest port, then no more. */
    for (unsigned i = 0; i < 1023; i++) {
        Side *s = side_new(w);
        assert_int_equal(vsock_mux_connect(w->m, 5200, true, s, w->now, &s->conn), 0);
        assert_int_equal(vsock_conn_local_port(s->conn), 1023 - i);
    }
    VsockConn *c;
    assert_int_equal(vsock_mux_connect(w->m, 5200, true, NULL, w->now, &c), -EADDRNOTAVAIL);
    /* To another port they are free again. */
    Side *s = side_new(w);
    assert_int_equal(vsock_mux_connect(w->m, 5201, true, s, w->now, &s->conn), 0);
    assert_int_equal(vsock_conn_local_port(s->conn), 1023);
    /* Unprivileged ones never fall below 1024. */
    s = side_new(w);
    assert_int_equal(vsock_mux_connect(w->m, 5200, false, s, w->now, &s->conn), 0);
    assert_true(vsock_conn_local_port(s->conn) >= 1024);
    /* A freed port is not taken again at once. */
    while (guest_recv(w, &pkt)) {
        assert_int_equal(pkt.op, VIRTIO_VSOCK_OP_REQUEST);
    }
    guest_send(w, VIRTIO_VSOCK_OP_RST, 5200, 1000, 0);
    guest_send(w, VIRTIO_VSOCK_OP_RST, 5201, 1023, 0);
    s = side_new(w);
    assert_int_equal(vsock_mux_connect(w->m, 5201, true, s, w->now, &s->conn), 0);
    assert_int_equal(vsock_conn_local_port(s->conn), 1022);
    s = side_new(w);
    assert_int_equal(vsock_mux_connect(w->m, 5200, true, s, w->now, &s->conn), 0);
    assert_int_equal(vsock_conn_local_port(s->conn), 1000);
    world_free(w);
}

/* More than a thousand connections at once, both ways, every one moving
 * data; idle, they hold no buffer. Then the guest goes away. */
static void test_many(void **state) {
    World *w = world(2200);
    enum { N = 1100 };
    uint32_t ports[N];
    Side *host[N], *guest[N];
    for (unsigned i = 0; i < N; i++) {
        host[i] = host_connects(w, i % 2 == 0, &ports[i]);
        guest[i] = guest_connects(w, 30000 + i);
    }
    assert_int_equal(vsock_mux_n_conns(w->m), 2 * N);
    /* A full table refuses. */
    for (unsigned i = 0; vsock_mux_n_conns(w->m) < 2200; i++) {
        guest_connects(w, 20000 + i);
    }
    guest_send(w, VIRTIO_VSOCK_OP_REQUEST, 10000, 5000, 0);
    expect(w, VIRTIO_VSOCK_OP_RST, 5000, 10000);
    VsockConn *c;
    assert_int_equal(vsock_mux_connect(w->m, 5200, false, NULL, w->now, &c), -EMFILE);

    char msg[32];
    for (unsigned i = 0; i < N; i++) {
        snprintf(msg, sizeof(msg), "to host %u", i);
        assert_int_equal(guest_send_full(w, VIRTIO_VSOCK_OP_RW, 30000 + i, 5000, msg,
                                         (uint32_t)strlen(msg), 0, BUF, 0),
                         0);
        host[i]->in = (const uint8_t *)"to guest";
        host[i]->n_in = 8;
        vsock_conn_host_events(host[i]->conn, EPOLLIN);
    }
    unsigned rw = 0;
    while (guest_recv(w, &pkt)) {
        assert_int_equal(pkt.op, VIRTIO_VSOCK_OP_RW);
        assert_int_equal(pkt.len, 8);
        rw++;
    }
    assert_int_equal(rw, N);
    for (unsigned i = 0; i < N; i++) {
        snprintf(msg, sizeof(msg), "to host %u", i);
        assert_int_equal(guest[i]->n_out, strlen(msg));
        assert_memory_equal(guest[i]->out, msg, strlen(msg));
    }
    assert_int_equal(vsock_mux_n_buffers(w->m), 0);

    vsock_mux_reset_all(w->m);
    assert_int_equal(vsock_mux_n_conns(w->m), 0);
    for (unsigned i = 0; i < N; i++) {
        assert_true(host[i]->closed && guest[i]->closed);
    }
    expect_nothing(w);
    world_free(w);
}

/* Receive buffers with no room past the header: control packets still
 * go, data waits for a bigger buffer without being lost. */
static void test_small_buffers(void **state) {
    World *w = world(16);
    uint32_t port;
    Side *s = host_connects(w, true, &port);
    s->in = (const uint8_t *)"abcdef";
    s->n_in = 6;
    vsock_conn_host_events(s->conn, EPOLLIN);
    assert_false(guest_recv_room(w, &pkt, 0));
    guest_send(w, VIRTIO_VSOCK_OP_CREDIT_REQUEST, 5200, port, 0);
    assert_true(guest_recv_room(w, &pkt, 0));
    assert_int_equal(pkt.op, VIRTIO_VSOCK_OP_CREDIT_UPDATE);
    assert_true(guest_recv_room(w, &pkt, 4));
    assert_int_equal(pkt.op, VIRTIO_VSOCK_OP_RW);
    assert_int_equal(pkt.len, 4);
    assert_true(guest_recv_room(w, &pkt, 4));
    assert_int_equal(pkt.len, 2);
    assert_memory_equal(pkt.data, "ef", 2);
    expect_nothing(w);
    world_free(w);
}

/* A guest sending whatever it likes: random headers over a few ports,
 * with random host behaviour. Nothing may crash, every connection ends
 * with its host side closed, memory stays within its bounds. */
static void test_random(void **state) {
    World *w = world(64);
    static uint8_t data[VSOCK_MAX_PAYLOAD];
    uint64_t x = 0x243F6A8885A308D3ull;
    memset(data, 'r', sizeof(data));
    w->listening[5000] = w->listening[5001] = true;
    for (unsigned round = 0; round < 200000; round++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        unsigned what = (unsigned)(x % 16);
        uint32_t gport = 40000 + (uint32_t)((x >> 8) % 4);
        uint32_t hport = (x >> 16) % 3 == 0 ? 1023 - (uint32_t)((x >> 20) % 3)
                                            : 5000 + (uint32_t)((x >> 20) % 2);
        if (what < 8) {
            uint16_t op = (uint16_t)(1 + (x >> 24) % 7);
            uint32_t len = op == VIRTIO_VSOCK_OP_RW ? (uint32_t)((x >> 32) % 5000) : 0;
            uint32_t flags = op == VIRTIO_VSOCK_OP_SHUTDOWN ? 1 + (uint32_t)((x >> 40) % 3) : 0;
            (void)guest_send_full(w, op, gport, hport, data, len, flags,
                                  (uint32_t)((x >> 44) % 300000), (uint32_t)((x >> 50) % 4));
        } else if (what < 12) {
            (void)guest_recv_room(w, &pkt, (x >> 8) % 2 ? 4096 : (x >> 9) % 64);
        } else if (what == 12 && w->n_sides < ELEMENTSOF(w->sides) - 1) {
            Side *s = side_new(w);
            VsockConn *c;
            if (vsock_mux_connect(w->m, gport, (x >> 30) & 1, s, w->now, &c) == 0) {
                s->conn = c;
            } else {
                s->closed = true; /* never opened */
            }
        } else if (what == 13) {
            w->now += (x >> 8) % (3 * SEC);
            vsock_mux_tick(w->m, w->now);
        } else {
            /* Some host side does something. */
            for (unsigned i = 0; i < w->n_sides; i++) {
                Side *s = &w->sides[(i + (unsigned)(x >> 12)) % w->n_sides];
                if (s->closed || !s->conn) {
                    continue;
                }
                static const uint32_t evs[] = {EPOLLIN, EPOLLOUT, EPOLLIN | EPOLLRDHUP,
                                               EPOLLHUP, EPOLLERR};
                s->in = data;
                s->n_in = (x >> 20) % 10000;
                s->in_off = 0;
                s->eof = (x >> 40) & 1;
                s->write_room = (x >> 41) % 20000;
                vsock_conn_host_events(s->conn, evs[(x >> 44) % ELEMENTSOF(evs)]);
                break;
            }
        }
        assert_true(vsock_mux_n_conns(w->m) <= 64);
        assert_true(vsock_mux_n_buffers(w->m) <= vsock_mux_n_conns(w->m));
    }
    world_free(w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_guest_connects),
        cmocka_unit_test(test_host_connects),
        cmocka_unit_test(test_guest_to_host_flow),
        cmocka_unit_test(test_host_to_guest_flow),
        cmocka_unit_test(test_close_sequences),
        cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_reply_ring),
        cmocka_unit_test(test_ports),
        cmocka_unit_test(test_many),
        cmocka_unit_test(test_small_buffers),
        cmocka_unit_test(test_random),
    };
    return cmocka_run_group_tests_name("vsock-mux", tests, NULL, NULL);
}
