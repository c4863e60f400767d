/* vhost-user backend core: messages with their fds, the one validator that
 * runs before any handler, the dispatch table, memory table, vring set-up
 * and feature negotiation. Device specifics (features offered, number of
 * queues, config space) come from a VuDevInfo, so that devices other than
 * virtio-net can reuse this module.
 *
 * Every negative return from vu_dev_handle() or vu_dev_serve() means the
 * frontend broke the protocol or the device cannot go on: the caller drops
 * the connection (the frontend reconnects to a fresh device).
 *
 * Protocol notes:
 * - Rings start on SET_VRING_KICK (a kick fd is required: we never poll)
 *   and stop on GET_VRING_BASE, which reports the next avail index; their
 *   set-up stays, so a new SET_VRING_KICK starts them again on the same
 *   connection. With PROTOCOL_FEATURES acked a ring also needs
 *   SET_VRING_ENABLE 1; without, it starts enabled. The enabled state
 *   survives a stop: qemu 7.2 enables the rings when the device is
 *   realized, before any SET_FEATURES, and not again when it starts them,
 *   so SET_VRING_ENABLE is accepted whenever the device offers
 *   PROTOCOL_FEATURES. qemu warns once that it does not use the CONFIG
 *   protocol feature (crosvm does).
 * - SET_MEM_TABLE while rings run moves them to the new mapping, all or
 *   none.
 * - GET_CONFIG honours any offset and size (crosvm reads the MAC byte by
 *   byte); a read outside the config space gets an empty reply rather
 *   than a disconnect.
 * - GET_QUEUE_NUM answers the number of virtqueues, which is what crosvm
 *   means (qemu means pairs, but neither asks without MQ).
 * - RESET_OWNER stops and forgets every ring and the acked features.
 * - Call fds are made non-blocking on arrival: a frontend that passes a
 *   pipe or lets its eventfd saturate cannot block the backend (EAGAIN
 *   means a notification is pending anyway).
 *
 * Known limits, for whoever builds on this:
 * - vu_dev_serve() reads a whole message from a blocking socket: a
 *   frontend that stops in the middle of a message stalls its own
 *   process, no one else's (vm-switch replaces such a child at its next
 *   ping).
 * - Guest memory files are not sealed by qemu or crosvm: a frontend that
 *   shrinks one after SET_MEM_TABLE turns our next access into SIGBUS.
 *   That kills only the process serving that VM.
 * - A chain of more than VQ_MAX_SEGS segments is treated as a violation;
 *   Linux uses at most about 19 for a frame.
 * - Call vu_dev_serve() only with no chain popped and not yet pushed: a
 *   new memory table or a stop rebuilds the walkers from the next avail
 *   index. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "vq.h"
#include "vu-mem.h"

enum {
    VU_GET_FEATURES = 1,
    VU_SET_FEATURES = 2,
    VU_SET_OWNER = 3,
    VU_RESET_OWNER = 4,
    VU_SET_MEM_TABLE = 5,
    VU_SET_LOG_BASE = 6,
    VU_SET_LOG_FD = 7,
    VU_SET_VRING_NUM = 8,
    VU_SET_VRING_ADDR = 9,
    VU_SET_VRING_BASE = 10,
    VU_GET_VRING_BASE = 11,
    VU_SET_VRING_KICK = 12,
    VU_SET_VRING_CALL = 13,
    VU_SET_VRING_ERR = 14,
    VU_GET_PROTOCOL_FEATURES = 15,
    VU_SET_PROTOCOL_FEATURES = 16,
    VU_GET_QUEUE_NUM = 17,
    VU_SET_VRING_ENABLE = 18,
    VU_GET_CONFIG = 24,
    VU_SET_CONFIG = 25,
    VU_REQUEST_MAX = 64, /* requests are looked up below this */
};

/* Header flags. */
#define VU_VERSION 0x1u
#define VU_VERSION_MASK 0x3u
#define VU_FLAG_REPLY 0x4u
#define VU_FLAG_NEED_REPLY 0x8u

/* Feature bits this module knows about. */
#define VU_F_PROTOCOL_FEATURES 30
#define VU_PROTOCOL_F_MQ 0
#define VU_PROTOCOL_F_REPLY_ACK 3
#define VU_PROTOCOL_F_CONFIG 9

/* Vring kick/call/err payload: queue index in the low byte, "no fd" flag. */
#define VU_VRING_IDX_MASK 0xffu
#define VU_VRING_NOFD_MASK 0x100u

/* Limits a message is checked against (vu_msg_validate()). */
#define VU_MAX_QUEUES 8               /* virtqueues a device may have */
#define VU_MAX_FDS VU_MEM_MAX_REGIONS /* fds one message may carry */
#define VU_CONFIG_MAX 256             /* bytes of config space */
#define VU_VRING_BASE_MAX UINT16_MAX  /* split rings: a 16-bit index */
/* GET_CONFIG flags: WRITABLE and LIVE_MIGRATION, the only ones defined. */
#define VU_CONFIG_FLAGS_KNOWN UINT32_C(3)

typedef struct __attribute__((packed)) VuMsgHdr {
    uint32_t request;
    uint32_t flags;
    uint32_t size;
} VuMsgHdr;

typedef struct VuVringState {
    uint32_t index;
    uint32_t num;
} VuVringState;

typedef struct VuVringAddr {
    uint32_t index;
    uint32_t flags;
    uint64_t desc;
    uint64_t used;
    uint64_t avail;
    uint64_t log;
} VuVringAddr;

/* SET_MEM_TABLE: nregions and padding, then nregions descriptors. */
#define VU_MEM_TABLE_HDR_SIZE 8u

typedef struct VuMemTable {
    uint32_t nregions;
    uint32_t padding;
    VuMemRegionDesc regions[VU_MEM_MAX_REGIONS];
} VuMemTable;

typedef struct VuConfigMsg {
    uint32_t offset;
    uint32_t size;
    uint32_t flags;
    uint8_t data[VU_CONFIG_MAX];
} VuConfigMsg;

#define VU_CONFIG_HDR_SIZE 12u
#define VU_PAYLOAD_MAX (VU_CONFIG_HDR_SIZE + VU_CONFIG_MAX)

/* One message as received: header, payload bytes (hdr.size of them) and
 * the fds that came with it (born close-on-exec). Untrusted until
 * vu_msg_validate() accepted it. */
typedef struct VuMsg {
    VuMsgHdr hdr;
    union {
        uint64_t u64;
        VuVringState state;
        VuVringAddr addr;
        VuMemTable mem;
        VuConfigMsg config;
        uint8_t raw[VU_PAYLOAD_MAX];
    } payload;
    int fds[VU_MAX_FDS];
    unsigned n_fds;
} VuMsg;

/* Receives one message from a blocking stream socket (proto's
 * recv_exact_fds(), strict). 1 on success, 0 on EOF before a message,
 * negative errno otherwise (-EPIPE: EOF inside a message; -EMSGSIZE:
 * payload larger than any request has; -EPROTO: more fds than any request
 * carries, or control data that is not fds). On failure every fd received
 * is closed. */
int vu_msg_recv(int sock, VuMsg *ret);
/* Sends a reply (header and hdr.size payload bytes, no fds). */
int vu_msg_send(int sock, const VuMsg *m);
/* Closes the fds a message still holds. */
void vu_msg_close_fds(VuMsg *m);

/* What a device is: offered features, queues, config space. */
typedef struct VuDevInfo {
    uint64_t features;          /* virtio and vhost-user feature bits offered */
    uint64_t protocol_features; /* vhost-user protocol features offered */
    unsigned n_queues;          /* virtqueues, 1..VU_MAX_QUEUES (GET_QUEUE_NUM) */
    const uint8_t *config;      /* device config space, read-only for the guest */
    size_t config_len;          /* 0..VU_CONFIG_MAX */
} VuDevInfo;

typedef struct VuDev VuDev;

int vu_dev_new(const VuDevInfo *info, VuDev **ret);
void vu_dev_free(VuDev *d);

/* The validator: header (version, flags, size), payload size exact for the
 * request, fd count for the request, queue index, ring size, ring
 * addresses, memory table, feature subsets, and what must have been
 * negotiated or set before. 0 or a negative errno; touches nothing. */
int vu_msg_validate(const VuDev *d, const VuMsg *untrusted);

/* Validates m, then calls its handler from the dispatch table. The fds of
 * m are consumed (kept by the device or closed) whatever happens. When the
 * request has a reply (or asked for a REPLY_ACK), *reply is filled and
 * *ret_has_reply set; the reply may be sent even when this fails (a
 * negative REPLY_ACK). */
int vu_dev_handle(VuDev *d, VuMsg *untrusted_msg, VuMsg *reply, bool *ret_has_reply);

/* The name of a request this backend serves ("SET_MEM_TABLE"), or
 * "unknown": for the caller's log lines. */
const char *vu_request_name(uint32_t request);

/* Receives one message from sock, handles it, sends its reply. 1 when a
 * message was handled, 0 on EOF, negative errno otherwise. Call it (and
 * vu_dev_handle) only when no chain is popped and not yet pushed: a new
 * memory table or a stop rebuilds the walkers from the next avail index. */
int vu_dev_serve(VuDev *d, int sock);

/* Acked features (SET_FEATURES) and protocol features. */
uint64_t vu_dev_features(const VuDev *d);
uint64_t vu_dev_protocol_features(const VuDev *d);
/* The queue's walker when the ring is started and enabled, else NULL. */
Vq *vu_dev_queue(VuDev *d, unsigned idx);
/* The ring's kick and call eventfds (-EBADF when there is none). */
int vu_dev_kick_fd(const VuDev *d, unsigned idx);
int vu_dev_call_fd(const VuDev *d, unsigned idx);
