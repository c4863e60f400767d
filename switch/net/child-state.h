/* The state of a vm-switch child (one VM's vhost-user-net backend), shared
 * by its modules:
 *
 *   child.c        set-up, the event loop, sleeping and spinning
 *   child-ctl.c    the control channel from the main process
 *   child-vhost.c  the vhost-user side: the frontend and the device
 *   child-rings.c  the rings shared with the peers' children
 *   child-tx.c     guest TX: guest -> policy -> rings
 *   child-rx.c     guest RX: rings -> policy -> guest
 *
 * A peer is another VM on the network, known by its port; the child keeps
 * one ring from it (we consume) and one towards it (we produce) when
 * frames may flow between the two (a router and a client). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "ctl.h"
#include "policy.h"
#include "ring.h"
#include "switch/sandbox/filter.h"
#include "switch/vhost/vhost-user.h"
#include "vmconf.h"
#include "vu-net.h"

/* Frames handled per queue before the event loop looks at everything else
 * again (then it comes back at once, without sleeping). Also the most a
 * ring batch holds (ring.h). */
#define BUDGET 256
/* Chains (and ring slots) whose memory is asked for at once, ahead of
 * handling them (vq_prefetch): the other CPU wrote it, and misses that
 * overlap cost about as much as one. */
#define PREFETCH_BATCH 32
/* Receive buffers one frame may take (MRG_RXBUF): a frame needs one or two
 * buffers of any sane driver. More is refused as oversize. */
#define RX_MAX_BUFS 64
/* After a round that moved frames, more usually follows within a few
 * microseconds: look for it this many times, yielding the CPU in between,
 * before paying for a sleep and a wakeup. Only a round that moved frames
 * starts this, so an idle child sleeps at once. */
#define SPIN_ROUNDS 64

/* What an epoll event is about: kind in the high half, index in the low. */
enum {
    EV_CTL = 1,
    EV_LISTEN,
    EV_CONN,
    EV_KICK,       /* index: queue */
    EV_RING_DATA,  /* index: peer whose ring towards us has frames */
    EV_RING_SPACE, /* index: peer whose ring from us has room */
};
#define EV(kind, idx) (((uint64_t)(kind) << 32) | (uint32_t)(idx))

typedef struct PeerRing {
    Ring *ring;
    int data_efd;  /* the producer writes it: frames published */
    int space_efd; /* the consumer writes it: slots released */
    uint32_t gen;  /* the peer's generation this ring was made for */
} PeerRing;

typedef struct Peer {
    bool present;
    PeerRing in;    /* peer -> us (we consume) */
    PeerRing out;   /* us -> peer (we produce) */
    bool out_dirty; /* committed frames not yet published */
    bool out_full;  /* router: full in this batch, drop without retrying */
} Peer;

typedef struct Child {
    int ctl;
    int epoll;
    int listen_fd;
    int conn;
    bool set_up;
    bool lockdown;
    FilterMode mode;
    uint32_t port;
    uint32_t gen;
    uint8_t mac[6];
    VmRole role;
    char name[CTL_NAME_SIZE];

    VuDev *dev;
    int kick_reg[VU_NET_N_QUEUES]; /* fd numbers registered with epoll */
    CtlState state;
    Policy *policy;
    Peer peer[CTL_MAX_PORTS];

    bool tx_blocked; /* client: the ring to tx_blocked_on is full */
    unsigned tx_blocked_on;
    bool rx_waiting;  /* out of guest receive buffers: waiting for a kick */
    uint16_t rx_seen; /* avail->idx when they ran out, in the middle of a frame */
    bool work_pending;
    bool moved; /* the last round moved frames */

    CtlCounters counters;
    uint64_t ring_full_to[CTL_MAX_PORTS];
    uint64_t refused_from[CTL_MAX_PORTS][POLICY_DROP_MAX];

    VqElem elem;                     /* the chain in hand */
    VqElem rx_first;                 /* first receive buffer of a frame (holds its header) */
    uint8_t eth_hdr[POLICY_HDR_LEN]; /* our copy of the Ethernet header the policy judges */
} Child;

/* Watches fd for input; dies when it cannot (a bug of ours). */
void child_epoll_add(Child *c, int fd, uint64_t tag);
/* Stops watching fd (it may be closed already by its owner). */
void child_epoll_del(Child *c, int fd);
/* Wakes an eventfd's reader; a full counter means a wakeup is pending. */
void efd_signal(int fd);
/* Consumes an eventfd's wakeups. */
void efd_drain(int fd);
