/* The vsock device's protocol core: a hostile guest's packet headers
 * through the validator into the connection state machine, interleaved
 * with the host side's events (data, ends, failures, slow writes), host
 * connects, receive buffers of any size and time passing. Whatever comes,
 * every packet for the guest is well formed and within the buffer it
 * goes to, memory stays within max_conns buffers, each host side is
 * closed exactly once and never used after, and freeing closes them all.
 *
 * Input: records, each [op byte][arguments]:
 *   op % 8 = 0, 1, 2: a guest packet: 44 header bytes and 2 payload length
 *            bytes (little-endian, at most 8 KiB of zeros); op bit 3 puts
 *            the right CIDs in, bit 4 takes the ports from a small set
 *            (guest 40000..40003; host 5000 (listening), 5001 (not), 1023,
 *            1022, 1024, 1025), so that packets meet connections.
 *   3: the guest takes a packet: [room / 64]
 *   4: the host connects: [guest port: 5200 + b % 4, privileged: b & 0x80]
 *   5: a host side's event: [side][events][what it then has: bit 0 data,
 *      bit 1 its end, bit 2 a read error, bit 3 a write error, bits 4-7
 *      write room in KiB]
 *   6: time passes: [tenths of a second], then the timeouts
 *   7: the guest goes away (reset_all) */
#include <endian.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "switch/vsock/mux.h"

#define GUEST_CID 3
#define MAX_CONNS 8
#define BUF 4096
#define MAX_SIDES 256
#define MAX_ROOM (255 * 64)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct Side {
    VsockConn *conn;
    bool used, closed, shut_wr;
    size_t write_room;
    size_t readable;
    bool eof;
    int read_err, write_err;
} Side;

static Side sides[MAX_SIDES];
static unsigned n_sides;
static uint8_t scratch[VSOCK_MAX_PAYLOAD];

static Side *side_new(void) {
    if (n_sides == MAX_SIDES) {
        return NULL;
    }
    Side *s = &sides[n_sides++];
    *s = (Side){.used = true, .write_room = SIZE_MAX};
    return s;
}

static Side *side_of(VsockConn *c) {
    Side *s = vsock_conn_userdata(c);
    if (!s || s->closed || s->conn != c) {
        abort(); /* used after host_close, or not ours */
    }
    return s;
}

static int op_open(void *ctx, VsockConn *c, uint32_t port) {
    if (port != 5000) {
        return -ECONNREFUSED;
    }
    Side *s = side_new();
    if (!s) {
        return -EMFILE;
    }
    s->conn = c;
    vsock_conn_set_userdata(c, s);
    return 0;
}

static int op_established(void *ctx, VsockConn *c) {
    return side_of(c)->write_err;
}

static ssize_t op_write(void *ctx, VsockConn *c, const struct iovec *iov, int n) {
    Side *s = side_of(c);
    size_t total = 0;
    if (s->shut_wr) {
        abort(); /* written after its write side was shut */
    }
    if (s->write_err) {
        return s->write_err;
    }
    for (int i = 0; i < n; i++) {
        volatile const uint8_t *p = iov[i].iov_base;
        if (iov[i].iov_len > 0) {
            (void)p[0]; /* ASan: the iovec is real memory */
            (void)p[iov[i].iov_len - 1];
        }
        total += iov[i].iov_len;
    }
    size_t k = total < s->write_room ? total : s->write_room;
    s->write_room -= k;
    return (ssize_t)k;
}

static ssize_t op_read(void *ctx, VsockConn *c, const struct iovec *iov, int n) {
    Side *s = side_of(c);
    size_t total = 0;
    if (s->read_err) {
        return s->read_err;
    }
    if (s->readable == 0) {
        return s->eof ? 0 : -EAGAIN;
    }
    for (int i = 0; i < n && s->readable > 0; i++) {
        size_t k = iov[i].iov_len < s->readable ? iov[i].iov_len : s->readable;
        memset(iov[i].iov_base, 'h', k);
        s->readable -= k;
        total += k;
    }
    return (ssize_t)total;
}

static void op_shutdown(void *ctx, VsockConn *c, int how) {
    Side *s = side_of(c);
    if (how == SHUT_WR) {
        if (s->shut_wr) {
            abort(); /* twice */
        }
        s->shut_wr = true;
    } else if (how != SHUT_RD) {
        abort();
    }
}

static void op_close(void *ctx, VsockConn *c) {
    Side *s = side_of(c);
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

static void guest_packet(VsockMux *m, uint8_t op, const uint8_t *arg, uint64_t now) {
    static const uint32_t host_ports[] = {5000, 5001, 1023, 1022, 1024, 1025};
    struct virtio_vsock_hdr h;
    memcpy(&h, arg, sizeof(h));
    if (op & 0x08) {
        h.src_cid = htole64(GUEST_CID);
        h.dst_cid = htole64(VSOCK_HOST_CID);
    }
    if (op & 0x10) {
        h.src_port = htole32(40000 + (le32toh(h.src_port) & 3));
        h.dst_port = htole32(host_ports[le32toh(h.dst_port) % 6]);
    }
    size_t avail = (size_t)(arg[sizeof(h)] | arg[sizeof(h) + 1] << 8) % (8192 + 1);
    memset(scratch, 'g', avail);
    /* Three segments, one of them empty, as a chain may give. */
    struct iovec iov[3] = {
        {.iov_base = scratch, .iov_len = avail / 3},
        {.iov_base = scratch + avail / 3, .iov_len = 0},
        {.iov_base = scratch + avail / 3, .iov_len = avail - avail / 3},
    };
    int r = vsock_mux_guest_packet(m, &h, iov, 3, avail, now);
    if (r != 0 && r != -ENOBUFS) {
        abort();
    }
}

static void guest_take(VsockMux *m, uint8_t room_64, uint64_t now) {
    size_t room = (size_t)room_64 * 64;
    static uint8_t buf[MAX_ROOM];
    struct iovec iov[2] = {
        {.iov_base = buf, .iov_len = room / 2},
        {.iov_base = buf + room / 2, .iov_len = room - room / 2},
    };
    struct virtio_vsock_hdr h;
    size_t len;
    bool pending = vsock_mux_rx_pending(m);
    int r = vsock_mux_next_packet(m, iov, 2, room, &h, &len, now);
    if (r < 0 || r > 1 || (r == 1 && !pending)) {
        abort();
    }
    if (r == 0) {
        return;
    }
    uint16_t op = le16toh(h.op);
    uint16_t type = le16toh(h.type);
    uint32_t flags = le32toh(h.flags);
    if (le64toh(h.src_cid) != VSOCK_HOST_CID || le64toh(h.dst_cid) != GUEST_CID ||
        le32toh(h.len) != len || len > room || len > VSOCK_MAX_PAYLOAD ||
        op < VIRTIO_VSOCK_OP_REQUEST || op > VIRTIO_VSOCK_OP_CREDIT_UPDATE) {
        abort();
    }
    if ((op == VIRTIO_VSOCK_OP_RW) != (len > 0) || (op == VIRTIO_VSOCK_OP_SHUTDOWN) != (flags != 0) ||
        flags > 3) {
        abort();
    }
    /* Only an RST may answer a SEQPACKET request in its own type. */
    if (type != VIRTIO_VSOCK_TYPE_STREAM &&
        (type != VIRTIO_VSOCK_TYPE_SEQPACKET || op != VIRTIO_VSOCK_OP_RST)) {
        abort();
    }
    if (op != VIRTIO_VSOCK_OP_RST && le32toh(h.buf_alloc) != BUF) {
        abort();
    }
}

static void host_event(const uint8_t *arg) {
    if (n_sides == 0) {
        return;
    }
    Side *s = &sides[arg[0] % n_sides];
    if (s->closed || !s->conn) {
        return;
    }
    static const uint32_t events[] = {EPOLLIN, EPOLLOUT, EPOLLIN | EPOLLOUT, EPOLLIN | EPOLLRDHUP,
                                      EPOLLHUP | EPOLLIN, EPOLLERR, EPOLLRDHUP, 0};
    uint8_t what = arg[2];
    s->readable = (what & 1) ? 10000 : 0;
    s->eof = what & 2;
    s->read_err = (what & 4) ? -ECONNRESET : 0;
    s->write_err = (what & 8) ? -EPIPE : 0;
    s->write_room = (size_t)(what >> 4) * 1024;
    vsock_conn_host_events(s->conn, events[arg[1] % 8]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    VsockMuxConfig cfg = {
        .guest_cid = GUEST_CID,
        .max_conns = MAX_CONNS,
        .buf_size = BUF,
        .connect_timeout_usec = 2000000,
        .close_timeout_usec = 8000000,
    };
    VsockMux *m;
    uint64_t now = 1000000;

    n_sides = 0;
    if (vsock_mux_new(&cfg, &ops, NULL, &m) < 0) {
        abort();
    }
    size_t i = 0;
    while (i < size) {
        uint8_t op = data[i++];
        switch (op % 8) {
        case 0:
        case 1:
        case 2:
            if (size - i < sizeof(struct virtio_vsock_hdr) + 2) {
                i = size;
                break;
            }
            guest_packet(m, op, data + i, now);
            i += sizeof(struct virtio_vsock_hdr) + 2;
            break;
        case 3:
            if (i < size) {
                guest_take(m, data[i++], now);
            }
            break;
        case 4:
            if (i < size) {
                Side *s = side_new();
                VsockConn *c;
                if (s && vsock_mux_connect(m, 5200 + data[i] % 4, data[i] & 0x80, s, now, &c) == 0) {
                    s->conn = c;
                } else if (s) {
                    s->closed = true; /* never opened */
                }
                i++;
            }
            break;
        case 5:
            if (size - i >= 3) {
                host_event(data + i);
            }
            i += 3;
            break;
        case 6:
            if (i < size) {
                now += (uint64_t)data[i++] * 100000;
                vsock_mux_tick(m, now);
                if (vsock_mux_next_deadline(m) <= now) {
                    abort(); /* a timeout due and not handled */
                }
            }
            break;
        case 7:
            vsock_mux_reset_all(m);
            if (vsock_mux_n_conns(m) != 0 || vsock_mux_rx_pending(m)) {
                abort();
            }
            break;
        }
        if (vsock_mux_n_conns(m) > MAX_CONNS || vsock_mux_n_buffers(m) > vsock_mux_n_conns(m)) {
            abort();
        }
    }
    vsock_mux_free(m);
    for (unsigned k = 0; k < n_sides; k++) {
        if (!sides[k].closed) {
            abort(); /* a host side never closed */
        }
    }
    return 0;
}
