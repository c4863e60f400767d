/* switch/vsock/packet: every field of a guest's header judged, and the
 * headers the device builds. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <endian.h>
#include <string.h>

#include "switch/vsock/packet.h"
#include "util.h"

#define GUEST_CID 3

/* A valid header from the guest: port 40000 to the host's 5200. */
static struct virtio_vsock_hdr hdr(uint16_t op, uint32_t len) {
    return (struct virtio_vsock_hdr){
        .src_cid = htole64(GUEST_CID),
        .dst_cid = htole64(VSOCK_HOST_CID),
        .src_port = htole32(40000),
        .dst_port = htole32(5200),
        .len = htole32(len),
        .type = htole16(VIRTIO_VSOCK_TYPE_STREAM),
        .op = htole16(op),
        .buf_alloc = htole32(262144),
        .fwd_cnt = htole32(17),
    };
}

static void test_valid(void **state) {
    for (uint16_t op = VIRTIO_VSOCK_OP_REQUEST; op <= VIRTIO_VSOCK_OP_CREDIT_REQUEST; op++) {
        struct virtio_vsock_hdr h = hdr(op, 0);
        if (op == VIRTIO_VSOCK_OP_SHUTDOWN) {
            h.flags = htole32(VIRTIO_VSOCK_SHUTDOWN_SEND);
        }
        VsockPkt p;
        assert_int_equal(vsock_pkt_check(&h, GUEST_CID, 0, &p), VSOCK_PKT_OK);
        assert_int_equal(p.op, op);
        assert_int_equal(p.type, VIRTIO_VSOCK_TYPE_STREAM);
        assert_int_equal(p.local_port, 5200);
        assert_int_equal(p.peer_port, 40000);
        assert_int_equal(p.buf_alloc, 262144);
        assert_int_equal(p.fwd_cnt, 17);
        assert_int_equal(p.len, 0);
    }
    /* RW with a payload the chain holds, up to 64 KiB. */
    struct virtio_vsock_hdr h = hdr(VIRTIO_VSOCK_OP_RW, VSOCK_MAX_PAYLOAD);
    VsockPkt p;
    assert_int_equal(vsock_pkt_check(&h, GUEST_CID, VSOCK_MAX_PAYLOAD, &p), VSOCK_PKT_OK);
    assert_int_equal(p.len, VSOCK_MAX_PAYLOAD);
    h = hdr(VIRTIO_VSOCK_OP_RW, 10);
    assert_int_equal(vsock_pkt_check(&h, GUEST_CID, 4096, &p), VSOCK_PKT_OK);
    assert_int_equal(p.len, 10);
    /* Every SHUTDOWN combination. */
    for (uint32_t f = 1; f <= 3; f++) {
        h = hdr(VIRTIO_VSOCK_OP_SHUTDOWN, 0);
        h.flags = htole32(f);
        assert_int_equal(vsock_pkt_check(&h, GUEST_CID, 0, &p), VSOCK_PKT_OK);
        assert_int_equal(p.flags, f);
    }
}

/* Not this guest's to send: dropped, and *ret untouched. */
static void test_drop(void **state) {
    static const struct {
        uint64_t src, dst;
    } cids[] = {
        {4, VSOCK_HOST_CID},           /* another guest's CID */
        {VSOCK_HOST_CID, VSOCK_HOST_CID}, /* the host's */
        {1, VSOCK_HOST_CID},           /* the local CID */
        {GUEST_CID + (1ull << 32), VSOCK_HOST_CID}, /* the high half counts */
        {GUEST_CID, GUEST_CID},        /* to itself */
        {GUEST_CID, 4},                /* to another guest */
        {GUEST_CID, 1},
        {GUEST_CID, UINT64_MAX},
        {GUEST_CID, VSOCK_HOST_CID + (1ull << 32)},
    };
    for (size_t i = 0; i < ELEMENTSOF(cids); i++) {
        struct virtio_vsock_hdr h = hdr(VIRTIO_VSOCK_OP_REQUEST, 0);
        h.src_cid = htole64(cids[i].src);
        h.dst_cid = htole64(cids[i].dst);
        VsockPkt p = {.op = 99};
        assert_int_equal(vsock_pkt_check(&h, GUEST_CID, 0, &p), VSOCK_PKT_DROP);
        assert_int_equal(p.op, 99);
    }
}

/* Addressed right, wrong otherwise: that connection is reset. */
static void test_reset(void **state) {
    VsockPkt p;
    struct virtio_vsock_hdr h;

    /* Types: SEQPACKET was not offered, nothing else exists. */
    uint16_t types[] = {0, VIRTIO_VSOCK_TYPE_SEQPACKET, 3, UINT16_MAX};
    for (size_t i = 0; i < ELEMENTSOF(types); i++) {
        h = hdr(VIRTIO_VSOCK_OP_REQUEST, 0);
        h.type = htole16(types[i]);
        assert_int_equal(vsock_pkt_check(&h, GUEST_CID, 0, &p), VSOCK_PKT_RESET);
        assert_int_equal(p.type, types[i]); /* the RST answers in kind */
        assert_int_equal(p.local_port, 5200);
    }
    /* Ops. */
    uint16_t ops[] = {VIRTIO_VSOCK_OP_INVALID, 8, 0x105, UINT16_MAX};
    for (size_t i = 0; i < ELEMENTSOF(ops); i++) {
        h = hdr(ops[i], 0);
        assert_int_equal(vsock_pkt_check(&h, GUEST_CID, 0, &p), VSOCK_PKT_RESET);
    }
    /* Ports that are no port. */
    h = hdr(VIRTIO_VSOCK_OP_REQUEST, 0);
    h.src_port = htole32(VSOCK_PORT_ANY);
    assert_int_equal(vsock_pkt_check(&h, GUEST_CID, 0, &p), VSOCK_PKT_RESET);
    h = hdr(VIRTIO_VSOCK_OP_REQUEST, 0);
    h.dst_port = htole32(VSOCK_PORT_ANY);
    assert_int_equal(vsock_pkt_check(&h, GUEST_CID, 0, &p), VSOCK_PKT_RESET);
    /* Lengths: beyond the descriptor chain, beyond 64 KiB, or payload on a
     * control packet. */
    h = hdr(VIRTIO_VSOCK_OP_RW, 4097);
    assert_int_equal(vsock_pkt_check(&h, GUEST_CID, 4096, &p), VSOCK_PKT_RESET);
    h = hdr(VIRTIO_VSOCK_OP_RW, VSOCK_MAX_PAYLOAD + 1);
    assert_int_equal(vsock_pkt_check(&h, GUEST_CID, UINT32_MAX, &p), VSOCK_PKT_RESET);
    h = hdr(VIRTIO_VSOCK_OP_RW, UINT32_MAX);
    assert_int_equal(vsock_pkt_check(&h, GUEST_CID, UINT64_MAX, &p), VSOCK_PKT_RESET);
    for (uint16_t op = VIRTIO_VSOCK_OP_REQUEST; op <= VIRTIO_VSOCK_OP_CREDIT_REQUEST; op++) {
        if (op == VIRTIO_VSOCK_OP_RW) {
            continue;
        }
        h = hdr(op, 1);
        assert_int_equal(vsock_pkt_check(&h, GUEST_CID, 100, &p), VSOCK_PKT_RESET);
    }
    /* Flags: SHUTDOWN needs RCV and/or SEND and nothing else; no other op
     * has any (no EOM/EOR on a stream). */
    uint32_t bad_shutdown[] = {0, 4, 7, 0x80000001};
    for (size_t i = 0; i < ELEMENTSOF(bad_shutdown); i++) {
        h = hdr(VIRTIO_VSOCK_OP_SHUTDOWN, 0);
        h.flags = htole32(bad_shutdown[i]);
        assert_int_equal(vsock_pkt_check(&h, GUEST_CID, 0, &p), VSOCK_PKT_RESET);
    }
    h = hdr(VIRTIO_VSOCK_OP_RW, 1);
    h.flags = htole32(VIRTIO_VSOCK_SEQ_EOM);
    assert_int_equal(vsock_pkt_check(&h, GUEST_CID, 1, &p), VSOCK_PKT_RESET);
    h = hdr(VIRTIO_VSOCK_OP_REQUEST, 0);
    h.flags = htole32(1);
    assert_int_equal(vsock_pkt_check(&h, GUEST_CID, 0, &p), VSOCK_PKT_RESET);
}

static void test_build(void **state) {
    VsockPkt p = {
        .op = VIRTIO_VSOCK_OP_RW,
        .type = VIRTIO_VSOCK_TYPE_STREAM,
        .local_port = 1023,
        .peer_port = 5200,
        .len = 4096,
        .buf_alloc = 65536,
        .fwd_cnt = 0x01020304,
    };
    struct virtio_vsock_hdr h;
    vsock_hdr_build(&h, GUEST_CID, &p);
    assert_int_equal(le64toh(h.src_cid), VSOCK_HOST_CID);
    assert_int_equal(le64toh(h.dst_cid), GUEST_CID);
    assert_int_equal(le32toh(h.src_port), 1023);
    assert_int_equal(le32toh(h.dst_port), 5200);
    assert_int_equal(le32toh(h.len), 4096);
    assert_int_equal(le16toh(h.op), VIRTIO_VSOCK_OP_RW);
    assert_int_equal(le16toh(h.type), VIRTIO_VSOCK_TYPE_STREAM);
    assert_int_equal(le32toh(h.buf_alloc), 65536);
    assert_int_equal(le32toh(h.fwd_cnt), 0x01020304);
    assert_int_equal(sizeof(h), VSOCK_HDR_SIZE);
    assert_int_equal(VSOCK_HDR_SIZE, 44);

    assert_string_equal(vsock_op_name(VIRTIO_VSOCK_OP_CREDIT_REQUEST), "CREDIT_REQUEST");
    assert_string_equal(vsock_op_name(8), "op?");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_drop),
        cmocka_unit_test(test_reset),
        cmocka_unit_test(test_build),
    };
    return cmocka_run_group_tests_name("vsock-packet", tests, NULL, NULL);
}
