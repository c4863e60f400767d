/* switch/vhost-user: the validator, the dispatch table, memory table,
 * vring set-up and stop, feature negotiation, GET_CONFIG, REPLY_ACK and fd
 * hygiene, driven over a socketpair as a frontend would. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/virtio_config.h>
#include <linux/virtio_net.h>
#include <linux/virtio_ring.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "switch/vhost/vhost-user.h"
#include "switch/net/vu-net.h"
#include "util.h"

#define MEM_SIZE (1u << 20)
#define GUEST_BASE 0x100000ull
#define USER_BASE 0x7f0000000000ull
#define QSIZE 8
/* Ring layout inside guest memory (offsets from the region start). */
#define DESC_OFF 0x1000
#define AVAIL_OFF 0x2000
#define USED_OFF 0x3000
#define BUF_OFF 0x10000

static const uint8_t MAC[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};

typedef struct Fixture {
    int front; /* the frontend's end */
    int back;  /* the device's end */
    VuDev *dev;
    int memfd;
    uint8_t *mem; /* our own view of guest memory */
} Fixture;

static int count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    assert_non_null(d);
    while (readdir(d)) {
        n++;
    }
    closedir(d);
    return n;
}

static int setup(void **state) {
    Fixture *f = calloc(1, sizeof(*f));
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    f->front = sv[0];
    f->back = sv[1];
    assert_int_equal(vu_net_new(MAC, &f->dev), 0);
    f->memfd = memfd_create("guest", MFD_CLOEXEC);
    assert_true(f->memfd >= 0);
    assert_int_equal(ftruncate(f->memfd, MEM_SIZE), 0);
    f->mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
    assert_true(f->mem != MAP_FAILED);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    Fixture *f = *state;
    vu_dev_free(f->dev);
    munmap(f->mem, MEM_SIZE);
    close(f->memfd);
    close(f->front);
    close(f->back);
    free(f);
    return 0;
}

static void send_raw(int sock, uint32_t req, uint32_t flags, const void *payload, uint32_t size,
                     const int *fds, unsigned nfds) {
    uint8_t buf[sizeof(VuMsgHdr) + 512];
    VuMsgHdr h = {.request = req, .flags = flags, .size = size};
    assert_true(size <= 512);
    memcpy(buf, &h, sizeof(h));
    if (size) {
        memcpy(buf + sizeof(h), payload, size);
    }
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof(h) + size};
    union {
        struct cmsghdr align;
        char b[CMSG_SPACE(sizeof(int) * 16)];
    } control;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds) {
        mh.msg_control = &control;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    assert_int_equal(sendmsg(sock, &mh, MSG_NOSIGNAL), (ssize_t)(sizeof(h) + size));
}

/* Sends one request and lets the device handle it; returns its result. */
static int req_fds(Fixture *f, uint32_t req, uint32_t flags, const void *payload, uint32_t size,
                   const int *fds, unsigned nfds) {
    send_raw(f->front, req, flags, payload, size, fds, nfds);
    return vu_dev_serve(f->dev, f->back);
}

static int req(Fixture *f, uint32_t r, const void *payload, uint32_t size) {
    return req_fds(f, r, VU_VERSION, payload, size, NULL, 0);
}

static int req_u64(Fixture *f, uint32_t r, uint64_t v) {
    return req(f, r, &v, sizeof(v));
}

static int req_state(Fixture *f, uint32_t r, uint32_t index, uint32_t num) {
    VuVringState s = {.index = index, .num = num};
    return req(f, r, &s, sizeof(s));
}

/* Reads one reply (header + payload) from the frontend side. */
static void read_reply(Fixture *f, uint32_t request, void *payload, uint32_t size) {
    VuMsgHdr h;
    assert_int_equal(read(f->front, &h, sizeof(h)), sizeof(h));
    assert_int_equal(h.request, request);
    assert_int_equal(h.flags, VU_VERSION | VU_FLAG_REPLY);
    assert_int_equal(h.size, size);
    if (size) {
        assert_int_equal(read(f->front, payload, size), size);
    }
}

static bool reply_pending(Fixture *f) {
    char c;
    return recv(f->front, &c, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

static uint64_t get_u64(Fixture *f, uint32_t r) {
    uint64_t v;
    assert_int_equal(req(f, r, NULL, 0), 1);
    read_reply(f, r, &v, sizeof(v));
    return v;
}

/* ---- features ------------------------------------------------------------- */

static void test_features(void **state) {
    Fixture *f = *state;
    uint64_t want = (1ull << VIRTIO_F_VERSION_1) | (1ull << VIRTIO_NET_F_MAC) |
                    (1ull << VIRTIO_NET_F_MRG_RXBUF) | (1ull << VIRTIO_RING_F_EVENT_IDX) |
                    (1ull << VU_F_PROTOCOL_FEATURES);
    assert_true(get_u64(f, VU_GET_FEATURES) == want);
    assert_true(get_u64(f, VU_GET_PROTOCOL_FEATURES) ==
                ((1ull << VU_PROTOCOL_F_REPLY_ACK) | (1ull << VU_PROTOCOL_F_CONFIG)));
    /* crosvm's GET_QUEUE_NUM counts virtqueues. */
    assert_int_equal(get_u64(f, VU_GET_QUEUE_NUM), 2);

    /* Anything not offered is refused. */
    assert_int_equal(req_u64(f, VU_SET_PROTOCOL_FEATURES, 1ull << VU_PROTOCOL_F_MQ), -EINVAL);
    assert_int_equal(req_u64(f, VU_SET_FEATURES, want | (1ull << VIRTIO_NET_F_CSUM)), -EINVAL);
    assert_int_equal(req_u64(f, VU_SET_FEATURES, 1ull << VIRTIO_RING_F_INDIRECT_DESC), -EINVAL);
    assert_true(vu_dev_features(f->dev) == 0);
    assert_int_equal(req_u64(f, VU_SET_FEATURES, want), 1);
    assert_true(vu_dev_features(f->dev) == want);
    assert_int_equal(req_u64(f, VU_SET_PROTOCOL_FEATURES, 1ull << VU_PROTOCOL_F_CONFIG), 1);
    assert_true(vu_dev_protocol_features(f->dev) == (1ull << VU_PROTOCOL_F_CONFIG));
    assert_false(reply_pending(f));
    assert_string_equal(vu_request_name(VU_SET_MEM_TABLE), "SET_MEM_TABLE");
    assert_string_equal(vu_request_name(VU_SET_LOG_BASE), "unknown");
    assert_string_equal(vu_request_name(1000), "unknown");
}

/* ---- header and size validation --------------------------------------------- */

static void test_header(void **state) {
    Fixture *f = *state;
    uint64_t v = 0;
    /* Version 0, 2, 3; the reply bit; unknown bits. */
    assert_int_equal(req_fds(f, VU_GET_FEATURES, 0, NULL, 0, NULL, 0), -EPROTO);
    assert_int_equal(req_fds(f, VU_GET_FEATURES, 2, NULL, 0, NULL, 0), -EPROTO);
    assert_int_equal(req_fds(f, VU_GET_FEATURES, 3, NULL, 0, NULL, 0), -EPROTO);
    assert_int_equal(req_fds(f, VU_GET_FEATURES, VU_VERSION | VU_FLAG_REPLY, NULL, 0, NULL, 0),
                     -EPROTO);
    assert_int_equal(req_fds(f, VU_GET_FEATURES, VU_VERSION | 0x10, NULL, 0, NULL, 0), -EPROTO);
    /* NEED_REPLY before REPLY_ACK was negotiated. */
    assert_int_equal(req_fds(f, VU_SET_OWNER, VU_VERSION | VU_FLAG_NEED_REPLY, NULL, 0, NULL, 0),
                     -EPROTO);
    /* Unknown and unserved requests. */
    assert_int_equal(req(f, 0, NULL, 0), -EOPNOTSUPP);
    assert_int_equal(req(f, VU_SET_LOG_BASE, &v, 8), -EOPNOTSUPP);
    assert_int_equal(req(f, VU_SET_CONFIG, &v, 8), -EOPNOTSUPP);
    assert_int_equal(req(f, 40, NULL, 0), -EOPNOTSUPP);
    assert_int_equal(req(f, 0xffffffff, NULL, 0), -EOPNOTSUPP);
    assert_false(reply_pending(f));
}

static void test_sizes_exact(void **state) {
    Fixture *f = *state;
    uint8_t zero[64] = {0};
    assert_int_equal(req(f, VU_SET_OWNER, NULL, 0), 1);
    /* One byte too many or too few for each payload kind. */
    assert_int_equal(req(f, VU_GET_FEATURES, zero, 8), -EBADMSG);
    assert_int_equal(req(f, VU_SET_OWNER, zero, 1), -EBADMSG);
    assert_int_equal(req(f, VU_SET_FEATURES, zero, 7), -EBADMSG);
    assert_int_equal(req(f, VU_SET_FEATURES, zero, 9), -EBADMSG);
    assert_int_equal(req(f, VU_SET_VRING_NUM, zero, 4), -EBADMSG);
    assert_int_equal(req(f, VU_SET_VRING_NUM, zero, 12), -EBADMSG);
    assert_int_equal(req(f, VU_SET_VRING_ADDR, zero, 32), -EBADMSG);
    assert_int_equal(req(f, VU_SET_VRING_ADDR, zero, 48), -EBADMSG);
    assert_int_equal(req(f, VU_GET_VRING_BASE, zero, 0), -EBADMSG);
    /* Memory table: header only, count 0, count 9, size not matching. */
    assert_int_equal(req(f, VU_SET_MEM_TABLE, zero, 4), -EINVAL);
    uint32_t mt[2] = {0, 0};
    assert_int_equal(req(f, VU_SET_MEM_TABLE, mt, 8), -EINVAL);
    mt[0] = 9;
    assert_int_equal(req(f, VU_SET_MEM_TABLE, mt, 8), -EINVAL);
    mt[0] = 1;
    assert_int_equal(req(f, VU_SET_MEM_TABLE, mt, 8), -EBADMSG);
    assert_false(reply_pending(f));
}

static void test_oversized_message(void **state) {
    Fixture *f = *state;
    VuMsgHdr h = {.request = VU_GET_FEATURES, .flags = VU_VERSION, .size = VU_PAYLOAD_MAX + 1};
    assert_int_equal(write(f->front, &h, sizeof(h)), sizeof(h));
    assert_int_equal(vu_dev_serve(f->dev, f->back), -EMSGSIZE);
    h.size = 0xffffffff;
    assert_int_equal(write(f->front, &h, sizeof(h)), sizeof(h));
    assert_int_equal(vu_dev_serve(f->dev, f->back), -EMSGSIZE);
}

static void test_eof(void **state) {
    Fixture *f = *state;
    VuMsgHdr h = {.request = VU_SET_FEATURES, .flags = VU_VERSION, .size = 8};
    /* A header, then the peer goes away before the payload. */
    assert_int_equal(write(f->front, &h, sizeof(h)), sizeof(h));
    assert_int_equal(write(f->front, "abc", 3), 3);
    shutdown(f->front, SHUT_WR);
    assert_int_equal(vu_dev_serve(f->dev, f->back), -EPIPE);
    assert_int_equal(vu_dev_serve(f->dev, f->back), 0);
}

static void test_eof_clean(void **state) {
    Fixture *f = *state;
    shutdown(f->front, SHUT_WR);
    assert_int_equal(vu_dev_serve(f->dev, f->back), 0);
}

/* ---- fds ------------------------------------------------------------------------- */

static void test_fds_counted_and_closed(void **state) {
    Fixture *f = *state;
    int base = count_fds();
    int efd = eventfd(0, EFD_CLOEXEC);
    int fds[9];
    for (unsigned i = 0; i < ELEMENTSOF(fds); i++) {
        fds[i] = efd;
    }
    assert_int_equal(req(f, VU_SET_OWNER, NULL, 0), 1);
    /* An fd where none belongs. */
    assert_int_equal(req_fds(f, VU_GET_FEATURES, VU_VERSION, NULL, 0, fds, 1), -EBADF);
    assert_int_equal(req_fds(f, VU_SET_OWNER, VU_VERSION, NULL, 0, fds, 2), -EBADF);
    /* Kick: none, two, or NOFD with one. */
    uint64_t v = 0;
    assert_int_equal(req_fds(f, VU_SET_VRING_CALL, VU_VERSION, &v, 8, NULL, 0), -EBADF);
    assert_int_equal(req_fds(f, VU_SET_VRING_CALL, VU_VERSION, &v, 8, fds, 2), -EBADF);
    v = VU_VRING_NOFD_MASK;
    assert_int_equal(req_fds(f, VU_SET_VRING_CALL, VU_VERSION, &v, 8, fds, 1), -EBADF);
    /* More than any message carries: refused at receive. */
    assert_int_equal(req_fds(f, VU_GET_FEATURES, VU_VERSION, NULL, 0, fds, 9), -EPROTO);
    /* Unknown request with fds. */
    assert_int_equal(req_fds(f, 99, VU_VERSION, NULL, 0, fds, 3), -EOPNOTSUPP);
    /* A header-level failure with fds. */
    assert_int_equal(req_fds(f, VU_SET_OWNER, 0, NULL, 0, fds, 3), -EPROTO);
    close(efd);
    assert_int_equal(count_fds(), base);
}

/* ---- memory table ------------------------------------------------------------------- */

typedef struct MemMsg {
    uint32_t nregions;
    uint32_t padding;
    VuMemRegionDesc r[VU_MEM_MAX_REGIONS];
} MemMsg;

static int set_mem(Fixture *f, const MemMsg *mm, const int *fds, unsigned nfds) {
    return req_fds(f, VU_SET_MEM_TABLE, VU_VERSION, mm, 8 + 32 * mm->nregions, fds, nfds);
}

static MemMsg one_region(void) {
    MemMsg mm = {.nregions = 1};
    mm.r[0] = (VuMemRegionDesc){
        .guest_addr = GUEST_BASE, .size = MEM_SIZE, .user_addr = USER_BASE, .mmap_offset = 0};
    return mm;
}

static void test_mem_table_needs_owner(void **state) {
    Fixture *f = *state;
    MemMsg mm = one_region();
    assert_int_equal(set_mem(f, &mm, &f->memfd, 1), -EPROTO);
    assert_int_equal(req_state(f, VU_SET_VRING_NUM, 0, 8), -EPROTO);
}

static void test_mem_table_rejects(void **state) {
    Fixture *f = *state;
    int base = count_fds();
    int fds[2] = {f->memfd, f->memfd};
    assert_int_equal(req(f, VU_SET_OWNER, NULL, 0), 1);

    MemMsg mm = one_region();
    /* fd count must equal the region count. */
    assert_int_equal(set_mem(f, &mm, fds, 2), -EBADF);
    assert_int_equal(set_mem(f, &mm, NULL, 0), -EBADF);
    /* Zero size. */
    mm.r[0].size = 0;
    assert_int_equal(set_mem(f, &mm, fds, 1), -EINVAL);
    /* Guest, user, offset ends overflowing. */
    mm = one_region();
    mm.r[0].guest_addr = UINT64_MAX - 10;
    assert_int_equal(set_mem(f, &mm, fds, 1), -EINVAL);
    mm = one_region();
    mm.r[0].user_addr = UINT64_MAX - 10;
    assert_int_equal(set_mem(f, &mm, fds, 1), -EINVAL);
    mm = one_region();
    mm.r[0].user_addr = 1ull << 63; /* upper half: not a user address */
    assert_int_equal(set_mem(f, &mm, fds, 1), -EINVAL);
    mm = one_region();
    mm.r[0].mmap_offset = UINT64_MAX - 10;
    assert_int_equal(set_mem(f, &mm, fds, 1), -EINVAL);
    /* Overlap in guest space, then in user space. */
    mm = one_region();
    mm.nregions = 2;
    mm.r[1] = mm.r[0];
    mm.r[1].guest_addr += MEM_SIZE - 1;
    mm.r[1].user_addr += 2 * MEM_SIZE;
    assert_int_equal(set_mem(f, &mm, fds, 2), -EINVAL);
    mm.r[1].guest_addr = GUEST_BASE + MEM_SIZE;
    mm.r[1].user_addr = USER_BASE + 4096;
    assert_int_equal(set_mem(f, &mm, fds, 2), -EINVAL);
    /* Larger than the file behind it (would be SIGBUS later). */
    mm = one_region();
    mm.r[0].mmap_offset = 4096;
    assert_int_equal(set_mem(f, &mm, fds, 1), -EINVAL);
    /* Not a regular file. */
    int efd = eventfd(0, EFD_CLOEXEC);
    mm = one_region();
    assert_int_equal(set_mem(f, &mm, &efd, 1), -EINVAL);
    close(efd);
    assert_int_equal(count_fds(), base);
}

static void test_mem_table_two_regions(void **state) {
    Fixture *f = *state;
    int fds[2] = {f->memfd, f->memfd};
    assert_int_equal(req(f, VU_SET_OWNER, NULL, 0), 1);
    MemMsg mm = {.nregions = 2};
    mm.r[0] = (VuMemRegionDesc){.guest_addr = 0, .size = MEM_SIZE / 2, .user_addr = USER_BASE};
    mm.r[1] = (VuMemRegionDesc){.guest_addr = 1ull << 32,
                                .size = MEM_SIZE / 2,
                                .user_addr = USER_BASE + MEM_SIZE,
                                .mmap_offset = MEM_SIZE / 2};
    assert_int_equal(set_mem(f, &mm, fds, 2), 1);
    /* A replacement table while nothing runs. */
    mm = one_region();
    assert_int_equal(set_mem(f, &mm, fds, 1), 1);
}

/* ---- vrings ------------------------------------------------------------------------------ */

static VuVringAddr ring_addr(uint32_t index) {
    return (VuVringAddr){.index = index,
                         .desc = USER_BASE + DESC_OFF,
                         .avail = USER_BASE + AVAIL_OFF,
                         .used = USER_BASE + USED_OFF};
}

/* Features, mem table, and queue 1 set up and kicked. */
static void start_ring_after_owner(Fixture *f, uint64_t features, int kick, int call) {
    MemMsg mm = one_region();
    assert_int_equal(req_u64(f, VU_SET_FEATURES, features), 1);
    assert_int_equal(set_mem(f, &mm, &f->memfd, 1), 1);
    assert_int_equal(req_state(f, VU_SET_VRING_NUM, 1, QSIZE), 1);
    VuVringAddr a = ring_addr(1);
    assert_int_equal(req(f, VU_SET_VRING_ADDR, &a, sizeof(a)), 1);
    assert_int_equal(req_state(f, VU_SET_VRING_BASE, 1, 0), 1);
    uint64_t v = 1;
    assert_int_equal(req_fds(f, VU_SET_VRING_CALL, VU_VERSION, &v, 8, &call, 1), 1);
    assert_int_equal(req_fds(f, VU_SET_VRING_KICK, VU_VERSION, &v, 8, &kick, 1), 1);
}

/* Owner, then as above. */
static void start_ring(Fixture *f, uint64_t features, int kick, int call) {
    assert_int_equal(req(f, VU_SET_OWNER, NULL, 0), 1);
    start_ring_after_owner(f, features, kick, call);
}

/* Puts one device-readable buffer of len bytes at BUF_OFF in the ring. */
static void guest_add_buffer(Fixture *f, uint16_t slot, uint32_t len) {
    struct vring_desc *desc = (struct vring_desc *)(f->mem + DESC_OFF);
    struct vring_avail *avail = (struct vring_avail *)(f->mem + AVAIL_OFF);
    desc[slot] = (struct vring_desc){.addr = GUEST_BASE + BUF_OFF, .len = len};
    avail->ring[avail->idx % QSIZE] = slot;
    avail->idx++;
}

static void test_vring_lifecycle(void **state) {
    Fixture *f = *state;
    int base = count_fds();
    int kick = eventfd(0, EFD_CLOEXEC), call = eventfd(0, EFD_CLOEXEC);
    uint64_t feat = vu_net_features();
    VqElem *e = malloc(sizeof(*e));

    start_ring(f, feat, kick, call);
    /* PROTOCOL_FEATURES acked: the ring waits for SET_VRING_ENABLE. */
    assert_null(vu_dev_queue(f->dev, 1));
    assert_true(vu_dev_kick_fd(f->dev, 1) >= 0);
    assert_true(vu_dev_call_fd(f->dev, 1) >= 0);
    assert_true(vu_dev_kick_fd(f->dev, 0) < 0);
    assert_int_equal(req_state(f, VU_SET_VRING_ENABLE, 1, 1), 1);
    Vq *vq = vu_dev_queue(f->dev, 1);
    assert_non_null(vq);

    memcpy(f->mem + BUF_OFF, "frame", 5);
    guest_add_buffer(f, 3, 5);
    guest_add_buffer(f, 4, 5);
    assert_int_equal(vq_pop(vq, e), 1);
    assert_int_equal(e->head, 3);
    assert_int_equal(e->n_out, 1);
    assert_memory_equal(e->seg[0].base, "frame", 5);
    assert_int_equal(vq_push(vq, e->head, 0), 0);
    vq_flush(vq);

    /* Running: its set-up cannot change. */
    assert_int_equal(req_state(f, VU_SET_VRING_NUM, 1, QSIZE), -EBUSY);
    assert_int_equal(req_state(f, VU_SET_VRING_BASE, 1, 0), -EBUSY);
    VuVringAddr a = ring_addr(1);
    assert_int_equal(req(f, VU_SET_VRING_ADDR, &a, sizeof(a)), -EBUSY);
    assert_int_equal(req_u64(f, VU_SET_FEATURES, feat & ~(1ull << VIRTIO_RING_F_EVENT_IDX)),
                     -EBUSY);

    /* GET_VRING_BASE stops it and says where. */
    VuVringState st;
    assert_int_equal(req_state(f, VU_GET_VRING_BASE, 1, 0), 1);
    read_reply(f, VU_GET_VRING_BASE, &st, sizeof(st));
    assert_int_equal(st.index, 1);
    assert_int_equal(st.num, 1);
    assert_null(vu_dev_queue(f->dev, 1));
    assert_true(vu_dev_kick_fd(f->dev, 1) < 0);

    /* Re-activation on the same connection: a kick fd restarts it where
     * it stopped. */
    uint64_t v = 1;
    assert_int_equal(req_fds(f, VU_SET_VRING_KICK, VU_VERSION, &v, 8, &kick, 1), 1);
    vq = vu_dev_queue(f->dev, 1);
    assert_non_null(vq);
    assert_int_equal(vq_pop(vq, e), 1);
    assert_int_equal(e->head, 4);
    assert_int_equal(vq_push(vq, e->head, 0), 0);
    vq_flush(vq);

    /* Disabled, it is not handed out, but it keeps its place. */
    assert_int_equal(req_state(f, VU_SET_VRING_ENABLE, 1, 0), 1);
    assert_null(vu_dev_queue(f->dev, 1));
    assert_int_equal(req_state(f, VU_GET_VRING_BASE, 1, 0), 1);
    read_reply(f, VU_GET_VRING_BASE, &st, sizeof(st));
    assert_int_equal(st.num, 2);

    /* A new base, then start again. */
    assert_int_equal(req_state(f, VU_SET_VRING_BASE, 1, 2), 1);
    assert_int_equal(req_fds(f, VU_SET_VRING_KICK, VU_VERSION, &v, 8, &kick, 1), 1);
    assert_int_equal(req_state(f, VU_SET_VRING_ENABLE, 1, 1), 1);
    assert_non_null(vu_dev_queue(f->dev, 1));
    assert_int_equal(vq_pop(vu_dev_queue(f->dev, 1), e), 0);

    /* A new memory table moves the running ring. */
    MemMsg mm = one_region();
    assert_int_equal(set_mem(f, &mm, &f->memfd, 1), 1);
    vq = vu_dev_queue(f->dev, 1);
    assert_non_null(vq);
    guest_add_buffer(f, 5, 5);
    assert_int_equal(vq_pop(vq, e), 1);
    assert_int_equal(e->head, 5);
    /* One that no longer holds the ring is refused, the old one kept. */
    mm.r[0].size = 0x2000;
    assert_int_equal(set_mem(f, &mm, &f->memfd, 1), -EFAULT);
    assert_ptr_equal(vu_dev_queue(f->dev, 1), vq);

    vu_dev_free(f->dev);
    f->dev = NULL;
    close(kick);
    close(call);
    free(e);
    assert_int_equal(count_fds(), base);
}

static void test_vring_starts_enabled_without_protocol_features(void **state) {
    Fixture *f = *state;
    int kick = eventfd(0, EFD_CLOEXEC), call = eventfd(0, EFD_CLOEXEC);
    start_ring(f, 1ull << VIRTIO_F_VERSION_1, kick, call);
    assert_non_null(vu_dev_queue(f->dev, 1));
    close(kick);
    close(call);
}

/* qemu 7.2 enables the rings when the device is realized, before any
 * SET_FEATURES, and does not enable them again once they start. */
static void test_vring_enable_before_features(void **state) {
    Fixture *f = *state;
    int kick = eventfd(0, EFD_CLOEXEC), call = eventfd(0, EFD_CLOEXEC);
    assert_int_equal(req(f, VU_SET_OWNER, NULL, 0), 1);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(req_state(f, VU_SET_VRING_ENABLE, 0, 0), 1);
        assert_int_equal(req_state(f, VU_SET_VRING_ENABLE, 1, 1), 1);
    }
    start_ring_after_owner(f, vu_net_features(), kick, call);
    assert_non_null(vu_dev_queue(f->dev, 1));
    /* Stopped and started again, it stays enabled. */
    VuVringState st;
    assert_int_equal(req_state(f, VU_GET_VRING_BASE, 1, 0), 1);
    read_reply(f, VU_GET_VRING_BASE, &st, sizeof(st));
    assert_null(vu_dev_queue(f->dev, 1));
    uint64_t v = 1;
    assert_int_equal(req_fds(f, VU_SET_VRING_KICK, VU_VERSION, &v, 8, &kick, 1), 1);
    assert_non_null(vu_dev_queue(f->dev, 1));
    close(kick);
    close(call);
}

/* A device that does not offer PROTOCOL_FEATURES has no SET_VRING_ENABLE. */
static void test_vring_enable_needs_protocol_features_offered(void **state) {
    Fixture *f = *state;
    VuDevInfo info = {.features = 1ull << VIRTIO_F_VERSION_1, .n_queues = 1};
    vu_dev_free(f->dev);
    assert_int_equal(vu_dev_new(&info, &f->dev), 0);
    assert_int_equal(req(f, VU_SET_OWNER, NULL, 0), 1);
    assert_int_equal(req_state(f, VU_SET_VRING_ENABLE, 0, 1), -EPROTO);
    assert_int_equal(get_u64(f, VU_GET_QUEUE_NUM), 1);
    assert_int_equal(get_u64(f, VU_GET_PROTOCOL_FEATURES), 0);
    /* No config space: every read is empty. */
    uint64_t pf = 0;
    assert_int_equal(req_u64(f, VU_SET_PROTOCOL_FEATURES, 1ull << VU_PROTOCOL_F_CONFIG), -EINVAL);
    assert_int_equal(req_u64(f, VU_SET_PROTOCOL_FEATURES, pf), 1);
}

static void test_vring_rejects(void **state) {
    Fixture *f = *state;
    int efd = eventfd(0, EFD_CLOEXEC);
    assert_int_equal(req(f, VU_SET_OWNER, NULL, 0), 1);
    /* Ring sizes: zero, not a power of two, too large. */
    assert_int_equal(req_state(f, VU_SET_VRING_NUM, 0, 0), -EINVAL);
    assert_int_equal(req_state(f, VU_SET_VRING_NUM, 0, 3), -EINVAL);
    assert_int_equal(req_state(f, VU_SET_VRING_NUM, 0, 65536), -EINVAL);
    assert_int_equal(req_state(f, VU_SET_VRING_NUM, 0, 32768), 1);
    assert_int_equal(req_state(f, VU_SET_VRING_NUM, 0, 1), 1);
    /* Queue index. */
    assert_int_equal(req_state(f, VU_SET_VRING_NUM, 2, 8), -ERANGE);
    assert_int_equal(req_state(f, VU_GET_VRING_BASE, 0xffffffff, 0), -ERANGE);
    assert_int_equal(req_state(f, VU_SET_VRING_BASE, 0, 0x10000), -EINVAL);
    uint64_t v = 2;
    assert_int_equal(req_fds(f, VU_SET_VRING_CALL, VU_VERSION, &v, 8, &efd, 1), -ERANGE);
    v = 0x200; /* bits beyond index and NOFD */
    assert_int_equal(req_fds(f, VU_SET_VRING_CALL, VU_VERSION, &v, 8, &efd, 1), -EINVAL);
    v = VU_VRING_NOFD_MASK;
    assert_int_equal(req(f, VU_SET_VRING_CALL, &v, 8), 1);
    assert_int_equal(req(f, VU_SET_VRING_ERR, &v, 8), 1);
    assert_int_equal(req(f, VU_SET_VRING_KICK, &v, 8), -EOPNOTSUPP);
    /* Addresses: misaligned, a log flag. */
    VuVringAddr a = ring_addr(0);
    a.desc += 8;
    assert_int_equal(req(f, VU_SET_VRING_ADDR, &a, sizeof(a)), -EINVAL);
    a = ring_addr(0);
    a.used += 2;
    assert_int_equal(req(f, VU_SET_VRING_ADDR, &a, sizeof(a)), -EINVAL);
    a = ring_addr(0);
    a.avail += 1;
    assert_int_equal(req(f, VU_SET_VRING_ADDR, &a, sizeof(a)), -EINVAL);
    a = ring_addr(0);
    a.flags = 1;
    assert_int_equal(req(f, VU_SET_VRING_ADDR, &a, sizeof(a)), -EINVAL);
    a = ring_addr(5);
    assert_int_equal(req(f, VU_SET_VRING_ADDR, &a, sizeof(a)), -ERANGE);
    /* A kick before any memory table or address cannot start the ring. */
    v = 0;
    assert_int_equal(req_fds(f, VU_SET_VRING_KICK, VU_VERSION, &v, 8, &efd, 1), -EPROTO);
    /* Addresses outside guest memory. */
    MemMsg mm = one_region();
    assert_int_equal(set_mem(f, &mm, &f->memfd, 1), 1);
    assert_int_equal(req_state(f, VU_SET_VRING_NUM, 0, 256), 1);
    a = ring_addr(0);
    a.used = USER_BASE + MEM_SIZE - 16; /* the used ring runs past the end */
    assert_int_equal(req(f, VU_SET_VRING_ADDR, &a, sizeof(a)), 1);
    assert_int_equal(req_fds(f, VU_SET_VRING_KICK, VU_VERSION, &v, 8, &efd, 1), -EFAULT);
    a.used = GUEST_BASE + USED_OFF; /* a guest address where a user one belongs */
    assert_int_equal(req(f, VU_SET_VRING_ADDR, &a, sizeof(a)), 1);
    assert_int_equal(req_fds(f, VU_SET_VRING_KICK, VU_VERSION, &v, 8, &efd, 1), -EFAULT);
    assert_int_equal(req_state(f, VU_SET_VRING_ENABLE, 2, 1), -ERANGE);
    assert_int_equal(req_state(f, VU_SET_VRING_ENABLE, 0, 2), -EINVAL);
    assert_null(vu_dev_queue(f->dev, 0));
    close(efd);
}

/* ---- config space ------------------------------------------------------------------------ */

static void get_config(Fixture *f, uint32_t off, uint32_t size, uint32_t flags, VuConfigMsg *ret,
                       uint32_t want_size) {
    VuConfigMsg c = {.offset = off, .size = size, .flags = flags};
    assert_int_equal(req(f, VU_GET_CONFIG, &c, VU_CONFIG_HDR_SIZE + size), 1);
    read_reply(f, VU_GET_CONFIG, ret, VU_CONFIG_HDR_SIZE + want_size);
    assert_int_equal(ret->offset, off);
    assert_int_equal(ret->size, want_size);
}

static void test_get_config(void **state) {
    Fixture *f = *state;
    VuConfigMsg c = {.size = 6};
    /* Not before CONFIG was negotiated. */
    assert_int_equal(req(f, VU_GET_CONFIG, &c, VU_CONFIG_HDR_SIZE + 6), -EPROTO);
    assert_int_equal(req_u64(f, VU_SET_PROTOCOL_FEATURES, vu_net_protocol_features()), 1);

    VuConfigMsg r;
    get_config(f, 0, 6, 0, &r, 6);
    assert_memory_equal(r.data, MAC, 6);
    /* crosvm reads byte by byte, with the WRITABLE flag. */
    for (uint32_t i = 0; i < 6; i++) {
        get_config(f, i, 1, 1, &r, 1);
        assert_int_equal(r.data[0], MAC[i]);
    }
    get_config(f, 2, 4, 0, &r, 4);
    assert_memory_equal(r.data, MAC + 2, 4);
    /* Outside the config space: an empty reply, the connection stays. */
    get_config(f, 4, 4, 0, &r, 0);
    get_config(f, 6, 1, 0, &r, 0);
    get_config(f, 0xfffffff0, 32, 0, &r, 0);
    get_config(f, 0, 0, 0, &r, 0);
    /* Size field and payload disagreeing; too large; unknown flags. */
    c = (VuConfigMsg){.size = 6};
    assert_int_equal(req(f, VU_GET_CONFIG, &c, VU_CONFIG_HDR_SIZE + 5), -EBADMSG);
    c.size = VU_CONFIG_MAX + 1;
    assert_int_equal(req(f, VU_GET_CONFIG, &c, VU_CONFIG_HDR_SIZE), -EINVAL);
    c = (VuConfigMsg){.size = 1, .flags = 4};
    assert_int_equal(req(f, VU_GET_CONFIG, &c, VU_CONFIG_HDR_SIZE + 1), -EINVAL);
    assert_false(reply_pending(f));
}

/* ---- REPLY_ACK ------------------------------------------------------------------------------- */

static void test_reply_ack(void **state) {
    Fixture *f = *state;
    uint64_t ack;
    assert_int_equal(req_u64(f, VU_SET_PROTOCOL_FEATURES, 1ull << VU_PROTOCOL_F_REPLY_ACK), 1);
    assert_int_equal(req_fds(f, VU_SET_OWNER, VU_VERSION | VU_FLAG_NEED_REPLY, NULL, 0, NULL, 0),
                     1);
    read_reply(f, VU_SET_OWNER, &ack, sizeof(ack));
    assert_true(ack == 0);
    /* A handler failure is acknowledged as such, then reported. */
    VuVringState s = {.index = 0, .num = 8};
    assert_int_equal(req_fds(f, VU_SET_VRING_NUM, VU_VERSION | VU_FLAG_NEED_REPLY, &s, 8, NULL, 0),
                     1);
    read_reply(f, VU_SET_VRING_NUM, &ack, sizeof(ack));
    assert_true(ack == 0);
    uint64_t v = 0;
    int efd = eventfd(0, EFD_CLOEXEC);
    assert_int_equal(req_fds(f, VU_SET_VRING_KICK, VU_VERSION | VU_FLAG_NEED_REPLY, &v, 8, &efd, 1),
                     -EPROTO);
    read_reply(f, VU_SET_VRING_KICK, &ack, sizeof(ack));
    assert_true(ack != 0);
    close(efd);
    /* Requests with a reply of their own answer only that. */
    assert_int_equal(req_fds(f, VU_GET_FEATURES, VU_VERSION | VU_FLAG_NEED_REPLY, NULL, 0, NULL, 0),
                     1);
    read_reply(f, VU_GET_FEATURES, &v, sizeof(v));
    assert_true(v == vu_net_features());
    assert_false(reply_pending(f));
}

static void test_reset_owner(void **state) {
    Fixture *f = *state;
    int kick = eventfd(0, EFD_CLOEXEC), call = eventfd(0, EFD_CLOEXEC);
    start_ring(f, 1ull << VIRTIO_F_VERSION_1, kick, call);
    assert_non_null(vu_dev_queue(f->dev, 1));
    assert_int_equal(req(f, VU_RESET_OWNER, NULL, 0), 1);
    assert_null(vu_dev_queue(f->dev, 1));
    assert_true(vu_dev_call_fd(f->dev, 1) < 0);
    assert_true(vu_dev_features(f->dev) == 0);
    close(kick);
    close(call);
}

static void test_dev_new_rejects(void **state) {
    VuDev *d = NULL;
    uint8_t cfg[VU_CONFIG_MAX + 1] = {0};
    VuDevInfo info = {.n_queues = 0};
    assert_int_equal(vu_dev_new(&info, &d), -EINVAL);
    info.n_queues = VU_MAX_QUEUES + 1;
    assert_int_equal(vu_dev_new(&info, &d), -EINVAL);
    info = (VuDevInfo){.n_queues = 1, .config = cfg, .config_len = sizeof(cfg)};
    assert_int_equal(vu_dev_new(&info, &d), -EINVAL);
    info.config_len = 4;
    info.config = NULL;
    assert_int_equal(vu_dev_new(&info, &d), -EINVAL);
    assert_null(d);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void) {
    const struct CMUnitTest tests[] = {
        T(test_features),
        T(test_header),
        T(test_sizes_exact),
        T(test_oversized_message),
        T(test_eof),
        T(test_eof_clean),
        T(test_fds_counted_and_closed),
        T(test_mem_table_needs_owner),
        T(test_mem_table_rejects),
        T(test_mem_table_two_regions),
        T(test_vring_lifecycle),
        T(test_vring_starts_enabled_without_protocol_features),
        T(test_vring_enable_before_features),
        T(test_vring_enable_needs_protocol_features_offered),
        T(test_vring_rejects),
        T(test_get_config),
        T(test_reply_ack),
        T(test_reset_owner),
        cmocka_unit_test(test_dev_new_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
