/* The control channel between vm-switch's main process and each per-VM
 * child: one SOCK_SEQPACKET socket pair, one fixed-size message per
 * packet, fds passed with SCM_RIGHTS.
 *
 * Every message has an exact length and an exact number of fds, and only
 * one sender; the receiver checks length, fds, reserved fields and value
 * ranges (ports below CTL_MAX_PORTS, roles, states, unicast MACs,
 * NUL-padded names) before any handler sees it, as OpenBSD ntpd's imsg
 * does. A message refused has all its fds closed. The main process never
 * trusts a child: a child that sends anything refused is killed and
 * restarted; a child dies on a bad message from the main process, which
 * only a bug can send.
 *
 * main -> child:
 *   SETUP         who the child is (port, generation, MAC, role, name)
 *                 + the VM's listening vhost-user socket
 *   PEER          a VM on the network (added or replaced): port, MAC, role
 *   PEER_REMOVE   a VM left the network
 *   PEER_DOWN     a peer's child of that generation (or older) is gone:
 *                 drop the rings shared with it
 *   GET_BUFFER    a ring to consume frames from a peer
 *                 + memfd, "data" eventfd, "space" eventfd
 *   PUT_BUFFER    a ring to produce frames towards a peer (same fds)
 *   PING          heartbeat, once a second
 * child -> main:
 *   BUFFER_READY  the ring of a GET_BUFFER is mapped: the producer may
 *                 have it now
 *   PONG          heartbeat answer with the child's state and counters */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h"

#define CTL_MAX_PORTS POLICY_MAX_PORTS
#define CTL_MAX_FDS 3
#define CTL_NAME_SIZE 16

typedef enum CtlType {
    CTL_SETUP = 1,
    CTL_PEER = 2,
    CTL_PEER_REMOVE = 3,
    CTL_PEER_DOWN = 4,
    CTL_GET_BUFFER = 5,
    CTL_PUT_BUFFER = 6,
    CTL_PING = 7,
    CTL_BUFFER_READY = 64,
    CTL_PONG = 65,
} CtlType;

/* Who sent a message: what a receiver accepts depends on it. */
typedef enum CtlDir {
    CTL_FROM_MAIN,
    CTL_FROM_CHILD,
} CtlDir;

/* What a child's vhost-user side is doing. */
typedef enum CtlState {
    CTL_STATE_WAITING, /* no frontend connected */
    CTL_STATE_SERVING, /* a frontend is connected */
    CTL_STATE_BROKEN,  /* the last frontend broke the rules; waiting for the next */
    CTL_STATE_MAX,
} CtlState;

/* Drop reasons: the policy's, then the datapath's. */
typedef enum CtlDrop {
    CTL_DROP_OVERSIZE = POLICY_DROP_MAX, /* longer than a ring slot or the guest's buffers */
    CTL_DROP_MALFORMED,                  /* a TX chain without a virtio-net header */
    CTL_DROP_PEER_DOWN,                  /* no ring to the destination (its child is not up) */
    CTL_DROP_RING_FULL,                  /* the destination's ring stayed full (router to client) */
    CTL_DROP_BAD_SLOT,                   /* a peer's ring slot with an impossible length */
    CTL_DROP_GUEST_DOWN,                 /* for this VM while its guest receives nothing */
    CTL_DROP_MAX,
} CtlDrop;

typedef struct CtlCounters {
    uint64_t rx_frames; /* received from the guest (its TX queue) */
    uint64_t rx_bytes;
    uint64_t tx_frames; /* delivered to the guest (its RX queue) */
    uint64_t tx_bytes;
    uint64_t drops[CTL_DROP_MAX];
} CtlCounters;

typedef struct CtlHdr {
    uint32_t type;
    uint32_t reserved; /* 0 */
} CtlHdr;

typedef struct CtlSetup {
    CtlHdr hdr;
    uint32_t port; /* < CTL_MAX_PORTS */
    uint32_t gen;  /* this child's generation */
    uint8_t mac[6];
    uint8_t role; /* VmRole */
    uint8_t pad;
    char name[CTL_NAME_SIZE]; /* NUL-terminated VM name */
} CtlSetup;

typedef struct CtlPeer {
    CtlHdr hdr;
    uint32_t port;
    uint8_t mac[6];
    uint8_t role;
    uint8_t pad;
} CtlPeer;

typedef struct CtlPeerRef {
    CtlHdr hdr;
    uint32_t port;
    uint32_t gen; /* PEER_DOWN: rings of this generation and older go */
} CtlPeerRef;

/* GET_BUFFER, PUT_BUFFER and BUFFER_READY. */
typedef struct CtlBuffer {
    CtlHdr hdr;
    uint32_t peer;     /* the other end's port */
    uint32_t peer_gen; /* the other end's generation */
    uint32_t gen;      /* the receiver's own generation (stale messages are refused) */
    uint32_t pad;
} CtlBuffer;

typedef struct CtlPing {
    CtlHdr hdr;
    uint64_t seq;
} CtlPing;

typedef struct CtlPong {
    CtlHdr hdr;
    uint64_t seq;
    uint32_t state; /* CtlState */
    uint32_t pad;
    CtlCounters counters;
    /* Frames this child dropped because the ring towards that port stayed
     * full: counted against the destination. */
    uint64_t ring_full_to[CTL_MAX_PORTS];
    /* Frames from that port's ring this child refused on the policy's
     * grounds (another source MAC than the peer's, a destination the peer
     * may not reach): counted against that port. */
    uint64_t refused_from[CTL_MAX_PORTS][POLICY_DROP_MAX];
} CtlPong;

/* Both ends are the same program, but the layouts are fixed all the same
 * (the fuzz corpus and the tests write them byte by byte). */
_Static_assert(sizeof(CtlSetup) == 40, "CtlSetup layout");
_Static_assert(sizeof(CtlPeer) == 20, "CtlPeer layout");
_Static_assert(sizeof(CtlPeerRef) == 16, "CtlPeerRef layout");
_Static_assert(sizeof(CtlBuffer) == 24, "CtlBuffer layout");
_Static_assert(sizeof(CtlPing) == 16, "CtlPing layout");
_Static_assert(sizeof(CtlPong) ==
                   24 + 8 * (4 + CTL_DROP_MAX) + 8 * CTL_MAX_PORTS * (1 + POLICY_DROP_MAX),
               "CtlPong layout");

typedef union CtlMsg {
    CtlHdr hdr;
    CtlSetup setup;
    CtlPeer peer;
    CtlPeerRef ref;
    CtlBuffer buffer;
    CtlPing ping;
    CtlPong pong;
} CtlMsg;

/* The size and fd count a message of this type has, from this sender:
 * 0, or -EBADMSG when the sender may not send that type. */
int ctl_msg_shape(CtlDir from, uint32_t type, size_t *ret_size, unsigned *ret_n_fds);

/* The validator: len bytes as received (untrusted) with n_fds fds. Checks
 * type for the sender, exact length, exact fd count, reserved fields and
 * value ranges (ports, roles, states, MACs, names), then copies the
 * message into *ret. 0 or -EBADMSG; touches no fd. */
int ctl_msg_validate(CtlDir from, const void *untrusted, size_t len, unsigned n_fds, CtlMsg *ret);

/* Receives and validates one message from a non-blocking SEQPACKET socket.
 * 1 with *ret and fds[0..*ret_n_fds) filled (born close-on-exec), 0 on
 * EOF, -EAGAIN when nothing is there, -EBADMSG for a message refused (all
 * its fds closed), other negative errnos from the socket. */
int ctl_recv(int sock, CtlDir from, CtlMsg *ret, int fds[CTL_MAX_FDS], unsigned *ret_n_fds);
/* Sends one message (its size from its type) with n_fds fds, without
 * blocking: -EAGAIN when the peer does not read its socket. */
int ctl_send(int sock, const CtlMsg *m, const int *fds, unsigned n_fds);
/* Fills the header: type and zeroed fields. */
void ctl_msg_init(CtlMsg *m, CtlType type);

/* "runt" ... "bad_slot": the names used in logs and the counters file. */
const char *ctl_drop_name(unsigned reason);
/* "waiting", "serving", "broken". */
const char *ctl_state_name(unsigned state);
/* a += b. */
void ctl_counters_add(CtlCounters *a, const CtlCounters *b);
