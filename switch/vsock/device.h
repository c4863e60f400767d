/* The virtio side of qubes-lite-vsock: a virtio-vsock device on the
 * vhost-user core (libvhostuser.a), and the packets between its queues and
 * the connection multiplexer. A frontend (qemu, crosvm) attaches and
 * detaches; while none is attached, or while it has not started the
 * receive and transmit queues, there is no guest to reach. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "mux.h"
#include "switch/vhost/vhost-user.h"

/* Virtqueues: receive (to the guest), transmit (from it), events. qemu
 * keeps the event queue to itself and gives the backend the first two. */
#define VSOCK_QUEUE_RX 0
#define VSOCK_QUEUE_TX 1
#define VSOCK_QUEUE_EVENT 2
#define VSOCK_N_QUEUES 3

/* VERSION_1, EVENT_IDX, INDIRECT_DESC, PROTOCOL_FEATURES (no SEQPACKET). */
uint64_t vu_vsock_features(void);
/* REPLY_ACK, CONFIG: the frontend reads guest_cid with GET_CONFIG. */
uint64_t vu_vsock_protocol_features(void);
/* A vhost-user virtio-vsock device whose config space holds guest_cid. */
int vu_vsock_new(uint64_t guest_cid, VuDev **ret);

typedef struct VsockDeviceStats {
    uint64_t tx_packets;     /* packets the guest sent */
    uint64_t rx_packets;     /* packets the guest was given */
    uint64_t bad_chains;     /* chains too short for a header, or of the wrong direction */
    uint64_t resets_sent;    /* TRANSPORT_RESET events given to the guest */
    uint64_t frontends;      /* frontends attached so far */
} VsockDeviceStats;

typedef struct VsockDevice VsockDevice;

int vsock_device_new(VsockMux *mux, uint64_t guest_cid, VsockDevice **ret);
void vsock_device_free(VsockDevice *d);

/* A frontend connected: a fresh device, and a TRANSPORT_RESET owed on the
 * event queue (when the frontend gives us one) so that the guest drops
 * connections an earlier device had. */
int vsock_device_attach(VsockDevice *d);
/* The frontend is gone: every connection is reset. */
void vsock_device_detach(VsockDevice *d);
bool vsock_device_attached(const VsockDevice *d);

/* One vhost-user message from the frontend's (blocking) socket: 1 when
 * handled, 0 at its end, a negative errno when it broke the protocol (the
 * caller detaches it). When the frontend stops the receive or transmit
 * queue, every connection is reset: the guest's side is gone. */
int vsock_device_serve(VsockDevice *d, int sock);
/* The queue's kick eventfd (-EBADF when none), for the caller's epoll. */
int vsock_device_kick_fd(const VsockDevice *d, unsigned q);
/* A kick came on queue q (its eventfd is drained by the caller). */
void vsock_device_kicked(VsockDevice *d, unsigned q);

/* Moves what can move: the guest's packets into the multiplexer, the
 * multiplexer's into the guest's receive buffers, the event. 1 when work
 * is left (a budget ran out: call again before sleeping), 0 when all is
 * done, a negative errno when the guest broke a queue (the caller detaches
 * the frontend). */
int vsock_device_process(VsockDevice *d, uint64_t now);

/* Whether the guest's driver runs: receive and transmit queues started. */
bool vsock_device_guest_ready(VsockDevice *d);
const VsockDeviceStats *vsock_device_stats(const VsockDevice *d);
