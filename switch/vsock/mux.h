/* The connections of one guest's vsock device: a table keyed by port
 * pair, the stream state machine (REQUEST, RESPONSE, RST, SHUTDOWN each
 * way, RW, CREDIT_UPDATE, CREDIT_REQUEST), credit-based flow control both
 * ways with a bounded buffer per connection, source port allocation for
 * the host's connections, and the timeouts. It does no I/O of its own:
 * the host side of each connection is the caller's, reached through
 * VsockMuxOps, and guest packets come in and go out as headers and
 * iovecs, so that it can be driven by tests and fuzzers alone.
 *
 * What the guest sends cannot break the multiplexer: a packet that
 * breaks the protocol resets the connection it names (an RST to the
 * guest, the host side closed), never another one. Memory is bounded by
 * max_conns connections of at most buf_size buffered bytes each, whatever
 * either side does; idle connections hold no buffer.
 *
 * Callbacks are made from inside the functions below; they must not call
 * back into the multiplexer. After host_close() for a connection nothing
 * more is called for it. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "packet.h"

typedef struct VsockMux VsockMux;
typedef struct VsockConn VsockConn;

typedef struct VsockMuxOps {
    /* The guest asks for the host's port: connect the connection's host
     * side. 0, or a negative errno and the guest gets an RST. */
    int (*host_open)(void *ctx, VsockConn *c, uint32_t port);
    /* The guest accepted a connection the host asked for. 0, or a
     * negative errno when the host side is gone (the guest gets an RST). */
    int (*host_established)(void *ctx, VsockConn *c);
    /* Writes to the host side: bytes written (fewer than asked when its
     * buffer is full: writable again on the next EPOLLOUT), or a negative
     * errno when it failed (the connection is reset). */
    ssize_t (*host_write)(void *ctx, VsockConn *c, const struct iovec *iov, int n);
    /* Reads from the host side: bytes read (fewer than asked when it had
     * no more), 0 at its end, -EAGAIN when it had nothing, another
     * negative errno when it failed (the connection is reset). */
    ssize_t (*host_read)(void *ctx, VsockConn *c, const struct iovec *iov, int n);
    /* The guest will send no more (SHUT_WR) or read no more (SHUT_RD). */
    void (*host_shutdown)(void *ctx, VsockConn *c, int how);
    /* The connection is over: close its host side, once. */
    void (*host_close)(void *ctx, VsockConn *c);
} VsockMuxOps;

typedef struct VsockMuxConfig {
    uint64_t guest_cid;
    unsigned max_conns;            /* 1..VSOCK_MUX_MAX_CONNS */
    uint32_t buf_size;             /* guest -> host buffer, our buf_alloc: 4 KiB..16 MiB */
    uint64_t connect_timeout_usec; /* a host connection's REQUEST unanswered */
    uint64_t close_timeout_usec;   /* our SHUTDOWN of both ways unanswered */
} VsockMuxConfig;

#define VSOCK_MUX_MAX_CONNS 65536u

typedef struct VsockMuxStats {
    uint64_t host_conns;       /* connections the host asked for, accepted */
    uint64_t guest_conns;      /* connections the guest asked for, accepted */
    uint64_t refused;          /* REQUESTs answered with RST */
    uint64_t violations;       /* connections reset for breaking the protocol */
    uint64_t unknown;          /* packets for no connection (answered with RST) */
    uint64_t dropped;          /* packets not this guest's to send, unanswered */
    uint64_t timeouts;         /* connections given up (no RESPONSE, no RST) */
    uint64_t to_host_bytes;    /* payload the host side was given */
    uint64_t to_guest_bytes;   /* payload the guest was given */
} VsockMuxStats;

int vsock_mux_new(const VsockMuxConfig *cfg, const VsockMuxOps *ops, void *ctx, VsockMux **ret);
/* Closes every connection's host side (host_close), frees everything. */
void vsock_mux_free(VsockMux *m);

/* The host connects to the guest's port: a source port is allocated
 * (privileged: 1..1023, which only a privileged process could bind on the
 * kernel's vsock; otherwise above 1023) and the REQUEST waits for the
 * guest's receive queue. -EMFILE: max_conns reached; -EADDRNOTAVAIL: no
 * free port; -EINVAL: port is VSOCK_PORT_ANY. */
int vsock_mux_connect(VsockMux *m, uint32_t guest_port, bool privileged, void *userdata,
                      uint64_t now, VsockConn **ret);

/* One packet from the guest's transmit queue. untrusted: the caller's
 * copy of its header; payload: the n iovecs of the chain's readable bytes
 * after the header (payload_avail bytes in all; only the header's len of
 * them are used). 0 when handled (whatever the guest sent), -ENOBUFS when
 * the packet needs a reply the multiplexer has no room to queue: nothing
 * was done, the caller offers it again once the guest took packets. */
int vsock_mux_guest_packet(VsockMux *m, const struct virtio_vsock_hdr *untrusted,
                           const struct iovec *payload, int n, uint64_t payload_avail,
                           uint64_t now);

/* Whether a packet waits for the guest's receive queue (it may still turn
 * out to be nothing: a host side with no data after all). */
bool vsock_mux_rx_pending(const VsockMux *m);
/* The next packet for the guest: its header into *ret_hdr (little-endian),
 * its payload read from the host side into iov (at most room bytes), its
 * length into *ret_len. 1 when there is a packet, 0 when nothing is to be
 * sent now. */
int vsock_mux_next_packet(VsockMux *m, const struct iovec *iov, int n, size_t room,
                          struct virtio_vsock_hdr *ret_hdr, size_t *ret_len, uint64_t now);

/* The host side's readiness, as epoll reported it (EPOLLIN, EPOLLOUT,
 * EPOLLRDHUP, EPOLLHUP, EPOLLERR). Edge-triggered: readable and writable
 * stay set until a short read or write. */
void vsock_conn_host_events(VsockConn *c, uint32_t events);
/* The host side failed or went away before the stream began: reset. */
void vsock_conn_host_gone(VsockConn *c);

void *vsock_conn_userdata(const VsockConn *c);
/* For host_open(): the caller's object for the host side it opens. */
void vsock_conn_set_userdata(VsockConn *c, void *userdata);
uint32_t vsock_conn_local_port(const VsockConn *c);
uint32_t vsock_conn_peer_port(const VsockConn *c);

/* Timeouts: what is due at now. The next deadline, UINT64_MAX for none. */
void vsock_mux_tick(VsockMux *m, uint64_t now);
uint64_t vsock_mux_next_deadline(const VsockMux *m);

/* The guest's side is gone (the frontend left, the rings stopped): every
 * connection's host side is closed, nothing is sent. */
void vsock_mux_reset_all(VsockMux *m);

unsigned vsock_mux_n_conns(const VsockMux *m);
/* Buffers held now (each buf_size bytes). */
unsigned vsock_mux_n_buffers(const VsockMux *m);
const VsockMuxStats *vsock_mux_stats(const VsockMux *m);
