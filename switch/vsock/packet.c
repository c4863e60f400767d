/* virtio-vsock packet headers: validation and building. */
#include "packet.h"

#include <endian.h>

#include "util.h"

VsockVerdict vsock_pkt_check(const struct virtio_vsock_hdr *untrusted, uint64_t guest_cid,
                             uint64_t payload_avail, VsockPkt *ret) {
    /* Each field once, into host order; only these copies are judged. */
    uint64_t src_cid = le64toh(untrusted->src_cid);
    uint64_t dst_cid = le64toh(untrusted->dst_cid);
    VsockPkt p = {
        .op = le16toh(untrusted->op),
        .type = le16toh(untrusted->type),
        .local_port = le32toh(untrusted->dst_port),
        .peer_port = le32toh(untrusted->src_port),
        .len = le32toh(untrusted->len),
        .flags = le32toh(untrusted->flags),
        .buf_alloc = le32toh(untrusted->buf_alloc),
        .fwd_cnt = le32toh(untrusted->fwd_cnt),
    };

    /* A guest speaks only as itself, and only to the host. */
    if (src_cid != guest_cid || dst_cid != VSOCK_HOST_CID) {
        return VSOCK_PKT_DROP;
    }
    *ret = p;
    if (p.local_port == VSOCK_PORT_ANY || p.peer_port == VSOCK_PORT_ANY) {
        return VSOCK_PKT_RESET;
    }
    if (p.type != VIRTIO_VSOCK_TYPE_STREAM) {
        /* SEQPACKET was not offered; a REQUEST for it is refused. */
        return VSOCK_PKT_RESET;
    }
    if (p.op < VIRTIO_VSOCK_OP_REQUEST || p.op > VIRTIO_VSOCK_OP_CREDIT_REQUEST) {
        return VSOCK_PKT_RESET;
    }
    if (p.len > payload_avail || p.len > VSOCK_MAX_PAYLOAD) {
        return VSOCK_PKT_RESET;
    }
    if (p.op != VIRTIO_VSOCK_OP_RW && p.len != 0) {
        return VSOCK_PKT_RESET;
    }
    if (p.op == VIRTIO_VSOCK_OP_SHUTDOWN) {
        uint32_t both = VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND;
        if (p.flags == 0 || (p.flags & ~both) != 0) {
            return VSOCK_PKT_RESET;
        }
    } else if (p.flags != 0) {
        /* Stream RW carries no EOM/EOR; no other op has flags. */
        return VSOCK_PKT_RESET;
    }
    return VSOCK_PKT_OK;
}

void vsock_hdr_build(struct virtio_vsock_hdr *h, uint64_t guest_cid, const VsockPkt *p) {
    *h = (struct virtio_vsock_hdr){
        .src_cid = htole64(VSOCK_HOST_CID),
        .dst_cid = htole64(guest_cid),
        .src_port = htole32(p->local_port),
        .dst_port = htole32(p->peer_port),
        .len = htole32(p->len),
        .type = htole16(p->type),
        .op = htole16(p->op),
        .flags = htole32(p->flags),
        .buf_alloc = htole32(p->buf_alloc),
        .fwd_cnt = htole32(p->fwd_cnt),
    };
}

const char *vsock_op_name(uint16_t op) {
    static const char *const names[] = {
        [VIRTIO_VSOCK_OP_INVALID] = "INVALID",
        [VIRTIO_VSOCK_OP_REQUEST] = "REQUEST",
        [VIRTIO_VSOCK_OP_RESPONSE] = "RESPONSE",
        [VIRTIO_VSOCK_OP_RST] = "RST",
        [VIRTIO_VSOCK_OP_SHUTDOWN] = "SHUTDOWN",
        [VIRTIO_VSOCK_OP_RW] = "RW",
        [VIRTIO_VSOCK_OP_CREDIT_UPDATE] = "CREDIT_UPDATE",
        [VIRTIO_VSOCK_OP_CREDIT_REQUEST] = "CREDIT_REQUEST",
    };
    return op < ELEMENTSOF(names) ? names[op] : "op?";
}
