/* virtio-vsock packet headers: the one validator of what a guest sends,
 * and the headers the device writes for it. Pure functions, no state. */
#pragma once

#include <linux/virtio_vsock.h>
#include <stdint.h>

/* The host's CID, as every guest sees it. */
#define VSOCK_HOST_CID 2u
#define VSOCK_HDR_SIZE ((uint32_t)sizeof(struct virtio_vsock_hdr))
/* The most payload one packet carries either way: what Linux sends at
 * most (VIRTIO_VSOCK_MAX_PKT_BUF_SIZE). */
#define VSOCK_MAX_PAYLOAD (64u * 1024u)
/* Not a port: "any" in Linux's vsock addresses. */
#define VSOCK_PORT_ANY UINT32_MAX

/* A header from the guest, validated, in host byte order. Ports are named
 * from the host's side: local is the host's (the guest's destination),
 * peer the guest's (its source). */
typedef struct VsockPkt {
    uint16_t op;
    uint16_t type;
    uint32_t local_port;
    uint32_t peer_port;
    uint32_t len;
    uint32_t flags;
    uint32_t buf_alloc;
    uint32_t fwd_cnt;
} VsockPkt;

typedef enum VsockVerdict {
    /* Every field is valid: handle it. */
    VSOCK_PKT_OK,
    /* Addressed correctly (this guest to the host, ports usable) but
     * otherwise wrong: the connection it names is reset, and only it. */
    VSOCK_PKT_RESET,
    /* Not this guest's to send (another source CID, a destination other
     * than the host): dropped unanswered, as the kernel's vhost-vsock
     * does, so that no reply ever goes to an address the guest made up. */
    VSOCK_PKT_DROP,
} VsockVerdict;

/* Judges the header a guest sent. untrusted is the caller's own copy of
 * it (taken out of guest memory once: the guest cannot change it after
 * the check); payload_avail is how many payload bytes the descriptor
 * chain holds after the header. Checks the CIDs (the guest's own as
 * source, the host as destination), the ports (not VSOCK_PORT_ANY), the
 * type (stream only: SEQPACKET is not offered), the op, the length
 * (payload only in RW, within the chain and VSOCK_MAX_PAYLOAD) and the
 * flags (SHUTDOWN: RCV and/or SEND; none elsewhere). *ret is written for
 * VSOCK_PKT_OK and VSOCK_PKT_RESET. */
VsockVerdict vsock_pkt_check(const struct virtio_vsock_hdr *untrusted, uint64_t guest_cid,
                             uint64_t payload_avail, VsockPkt *ret);

/* A header from the host to the guest, little-endian, ready to copy into
 * a receive buffer. */
void vsock_hdr_build(struct virtio_vsock_hdr *h, uint64_t guest_cid, const VsockPkt *p);

/* "REQUEST" and so on, for logs; "op?" for what is not an op. */
const char *vsock_op_name(uint16_t op);
