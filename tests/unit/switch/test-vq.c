/* switch/vq: the split virtqueue walker over guest memory we write as a
 * hostile guest would; switch/vu-mem's translation underneath. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <linux/virtio_ring.h>
#include <sys/mman.h>
#include <unistd.h>

#include "switch/vhost/vq.h"
#include "switch/vhost/vu-mem.h"
#include "util.h"

#define MEM_SIZE (1u << 20)
#define HALF (MEM_SIZE / 2)
#define N 8
#define DESC 0x1000
#define AVAIL 0x2000
#define USED 0x3000
#define IND 0x4000
#define BUF 0x10000

typedef struct Fixture {
    int memfd;
    uint8_t *g; /* the guest's view: guest physical address == offset */
    VuMem *mem;
    Vq *vq;
    VqElem e;
} Fixture;

static struct vring_desc *desc(Fixture *f) {
    return (struct vring_desc *)(f->g + DESC);
}
static struct vring_avail *avail(Fixture *f) {
    return (struct vring_avail *)(f->g + AVAIL);
}
static struct vring_used *used(Fixture *f) {
    return (struct vring_used *)(f->g + USED);
}

static Vq *make_vq(Fixture *f, unsigned num, bool event_idx, bool indirect, uint16_t base) {
    void *d, *a, *u;
    Vq *vq;
    assert_int_equal(vu_mem_gpa_whole(f->mem, DESC, vq_desc_size(num), &d), 0);
    assert_int_equal(vu_mem_gpa_whole(f->mem, AVAIL, vq_avail_size(num), &a), 0);
    assert_int_equal(vu_mem_gpa_whole(f->mem, USED, vq_used_size(num), &u), 0);
    VqConfig c = {.mem = f->mem,
                  .desc = d,
                  .avail = a,
                  .used = u,
                  .last_avail = base,
                  .event_idx = event_idx,
                  .indirect = indirect};
    assert_int_equal(vq_new(&c, num, &vq), 0);
    return vq;
}

static int setup_opts(void **state, bool event_idx, bool indirect) {
    Fixture *f = calloc(1, sizeof(*f));
    f->memfd = memfd_create("guest", MFD_CLOEXEC);
    assert_int_equal(ftruncate(f->memfd, MEM_SIZE), 0);
    f->g = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
    assert_true(f->g != MAP_FAILED);
    /* Two regions, contiguous in guest space, separate mappings here. */
    VuMemRegionDesc r[2] = {
        {.guest_addr = 0, .size = HALF, .user_addr = 0x10000000, .mmap_offset = 0},
        {.guest_addr = HALF, .size = HALF, .user_addr = 0x20000000, .mmap_offset = HALF},
    };
    int fds[2] = {f->memfd, f->memfd};
    assert_int_equal(vu_mem_new(r, fds, 2, &f->mem), 0);
    f->vq = make_vq(f, N, event_idx, indirect, 0);
    *state = f;
    return 0;
}

static int setup(void **state) {
    return setup_opts(state, false, false);
}
static int setup_event_idx(void **state) {
    return setup_opts(state, true, false);
}
static int setup_indirect(void **state) {
    return setup_opts(state, false, true);
}

static int teardown(void **state) {
    Fixture *f = *state;
    vq_free(f->vq);
    vu_mem_free(f->mem);
    munmap(f->g, MEM_SIZE);
    close(f->memfd);
    free(f);
    return 0;
}

static void set_desc(Fixture *f, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
                     uint16_t next) {
    desc(f)[i] = (struct vring_desc){.addr = addr, .len = len, .flags = flags, .next = next};
}

static void offer(Fixture *f, uint16_t head) {
    struct vring_avail *a = avail(f);
    a->ring[a->idx % N] = head;
    a->idx++;
}

/* ---- the good path ---------------------------------------------------------- */

static void test_empty(void **state) {
    Fixture *f = *state;
    assert_int_equal(vq_pop(f->vq, &f->e), 0);
    assert_int_equal(vq_broken(f->vq), 0);
}

static void test_chain_out_then_in(void **state) {
    Fixture *f = *state;
    memcpy(f->g + BUF, "hello", 5);
    set_desc(f, 2, BUF, 5, VRING_DESC_F_NEXT, 5);
    set_desc(f, 5, BUF + 100, 0, VRING_DESC_F_NEXT, 6); /* empty: skipped */
    set_desc(f, 6, BUF + 200, 1000, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 0);
    set_desc(f, 0, BUF + 4000, 24, VRING_DESC_F_WRITE, 0);
    offer(f, 2);
    assert_int_equal(vq_pop(f->vq, &f->e), 1);
    assert_int_equal(f->e.head, 2);
    assert_int_equal(f->e.n_out, 1);
    assert_int_equal(f->e.n_in, 2);
    assert_true(f->e.out_len == 5);
    assert_true(f->e.in_len == 1024);
    assert_memory_equal(f->e.seg[0].base, "hello", 5);
    assert_ptr_equal(f->e.seg[1].base, (void *)((uint8_t *)f->e.seg[0].base + 200));
    assert_int_equal(f->e.seg[2].len, 24);
    assert_int_equal(vq_last_avail(f->vq), 1);
    assert_int_equal(vq_pop(f->vq, &f->e), 0);

    /* Used entries become visible with one flush. */
    assert_int_equal(vq_push(f->vq, 2, 77), 0);
    assert_int_equal(used(f)->idx, 0);
    vq_flush(f->vq);
    assert_int_equal(used(f)->idx, 1);
    assert_int_equal(used(f)->ring[0].id, 2);
    assert_int_equal(used(f)->ring[0].len, 77);
    /* Never more used entries than chains taken. */
    assert_int_equal(vq_push(f->vq, 2, 0), -EINVAL);
    assert_int_equal(vq_broken(f->vq), 0);
}

static void test_chain_of_num(void **state) {
    Fixture *f = *state;
    for (unsigned i = 0; i < N; i++) {
        set_desc(f, i, BUF + 64 * i, 64, i + 1 < N ? VRING_DESC_F_NEXT : 0, i + 1);
    }
    offer(f, 0);
    assert_int_equal(vq_pop(f->vq, &f->e), 1);
    assert_int_equal(f->e.n_out, N);
    assert_true(f->e.out_len == 64 * N);
}

static void test_buffer_split_at_region_boundary(void **state) {
    Fixture *f = *state;
    set_desc(f, 0, HALF - 10, 30, 0, 0);
    offer(f, 0);
    assert_int_equal(vq_pop(f->vq, &f->e), 1);
    assert_int_equal(f->e.n_out, 2);
    assert_int_equal(f->e.seg[0].len, 10);
    assert_int_equal(f->e.seg[1].len, 20);
    /* Each piece is in its own mapping, and both reach the same bytes. */
    f->g[HALF - 1] = 0xaa;
    f->g[HALF] = 0xbb;
    assert_int_equal(((uint8_t *)f->e.seg[0].base)[9], 0xaa);
    assert_int_equal(((uint8_t *)f->e.seg[1].base)[0], 0xbb);
}

static void test_rewind(void **state) {
    Fixture *f = *state;
    set_desc(f, 0, BUF, 10, VRING_DESC_F_WRITE, 0);
    set_desc(f, 1, BUF, 10, VRING_DESC_F_WRITE, 0);
    offer(f, 0);
    offer(f, 1);
    assert_int_equal(vq_pop(f->vq, &f->e), 1);
    assert_int_equal(vq_pop(f->vq, &f->e), 1);
    assert_int_equal(vq_rewind(f->vq, 3), -EINVAL);
    assert_int_equal(vq_rewind(f->vq, 1), 0);
    assert_int_equal(vq_pop(f->vq, &f->e), 1);
    assert_int_equal(f->e.head, 1);
    assert_int_equal(vq_push(f->vq, 0, 10), 0);
    /* Pushed chains cannot be given back. */
    assert_int_equal(vq_rewind(f->vq, 2), -EINVAL);
    assert_int_equal(vq_rewind(f->vq, 1), 0);
}

static void test_base(void **state) {
    Fixture *f = *state;
    vq_free(f->vq);
    f->vq = make_vq(f, N, false, false, 65534);
    avail(f)->idx = 65535;
    avail(f)->ring[65534 % N] = 3;
    set_desc(f, 3, BUF, 1, 0, 0);
    assert_int_equal(vq_pop(f->vq, &f->e), 1);
    assert_int_equal(f->e.head, 3);
    assert_int_equal(vq_last_avail(f->vq), 65535);
    assert_int_equal(vq_push(f->vq, 3, 0), 0);
    vq_flush(f->vq);
    assert_int_equal(used(f)->idx, 65535);
}

/* ---- violations ----------------------------------------------------------------- */

static void expect_broken(Fixture *f, int err) {
    assert_int_equal(vq_pop(f->vq, &f->e), err);
    assert_int_equal(vq_broken(f->vq), err);
    /* Sticky: nothing more is taken, pushed or rewound. */
    assert_int_equal(vq_pop(f->vq, &f->e), err);
    assert_int_equal(vq_push(f->vq, 0, 0), err);
    assert_int_equal(vq_rewind(f->vq, 0), err);
}

static void test_head_out_of_range(void **state) {
    Fixture *f = *state;
    offer(f, N);
    expect_broken(f, -EPROTO);
}

static void test_avail_idx_too_far(void **state) {
    Fixture *f = *state;
    avail(f)->idx = N + 1;
    expect_broken(f, -EPROTO);
}

static void test_next_out_of_range(void **state) {
    Fixture *f = *state;
    set_desc(f, 0, BUF, 10, VRING_DESC_F_NEXT, N);
    offer(f, 0);
    expect_broken(f, -EPROTO);
}

static void test_loop(void **state) {
    Fixture *f = *state;
    set_desc(f, 0, BUF, 10, VRING_DESC_F_NEXT, 1);
    set_desc(f, 1, BUF, 10, VRING_DESC_F_NEXT, 0);
    offer(f, 0);
    expect_broken(f, -EPROTO);
}

static void test_self_loop(void **state) {
    Fixture *f = *state;
    set_desc(f, 4, BUF, 0, VRING_DESC_F_NEXT, 4);
    offer(f, 4);
    expect_broken(f, -EPROTO);
}

static void test_readable_after_writable(void **state) {
    Fixture *f = *state;
    set_desc(f, 0, BUF, 10, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1);
    set_desc(f, 1, BUF, 10, 0, 0);
    offer(f, 0);
    expect_broken(f, -EPROTO);
}

static void test_unmapped_buffer(void **state) {
    Fixture *f = *state;
    set_desc(f, 0, MEM_SIZE, 10, 0, 0);
    offer(f, 0);
    expect_broken(f, -EPROTO);
}

static void test_buffer_past_end(void **state) {
    Fixture *f = *state;
    set_desc(f, 0, MEM_SIZE - 10, 11, 0, 0);
    offer(f, 0);
    expect_broken(f, -EPROTO);
}

static void test_huge_buffer(void **state) {
    Fixture *f = *state;
    set_desc(f, 0, 0xfffffffffffff000ull, 0xffffffff, VRING_DESC_F_WRITE, 0);
    offer(f, 0);
    expect_broken(f, -EPROTO);
}

static void test_too_many_segments(void **state) {
    Fixture *f = *state;
    vq_free(f->vq);
    /* A ring larger than VQ_MAX_SEGS, one chain through all of it. */
    unsigned num = 512;
    f->vq = make_vq(f, num, false, false, 0);
    struct vring_desc *d = (struct vring_desc *)(f->g + BUF);
    void *p;
    assert_int_equal(vu_mem_gpa_whole(f->mem, BUF, vq_desc_size(num), &p), 0);
    VqConfig c = {.mem = f->mem, .desc = p};
    assert_int_equal(vu_mem_gpa_whole(f->mem, AVAIL, vq_avail_size(num), &c.avail), 0);
    assert_int_equal(vu_mem_gpa_whole(f->mem, USED, vq_used_size(num), &c.used), 0);
    vq_free(f->vq);
    assert_int_equal(vq_new(&c, num, &f->vq), 0);
    for (unsigned i = 0; i < num; i++) {
        d[i] = (struct vring_desc){
            .addr = 0x40000, .len = 1, .flags = VRING_DESC_F_NEXT, .next = (uint16_t)(i + 1)};
    }
    d[num - 1].flags = 0;
    avail(f)->ring[0] = 0;
    avail(f)->idx = 1;
    expect_broken(f, -E2BIG);
}

static void test_indirect_not_negotiated(void **state) {
    Fixture *f = *state;
    set_desc(f, 0, IND, 32, VRING_DESC_F_INDIRECT, 0);
    offer(f, 0);
    expect_broken(f, -EPROTO);
}

static void test_indirect(void **state) {
    Fixture *f = *state;
    struct vring_desc *t = (struct vring_desc *)(f->g + IND);
    t[0] = (struct vring_desc){.addr = BUF, .len = 12, .flags = VRING_DESC_F_NEXT, .next = 2};
    t[2] = (struct vring_desc){.addr = BUF + 64, .len = 1500, .flags = VRING_DESC_F_WRITE};
    set_desc(f, 1, IND, 3 * sizeof(struct vring_desc), VRING_DESC_F_INDIRECT, 0);
    offer(f, 1);
    assert_int_equal(vq_pop(f->vq, &f->e), 1);
    assert_int_equal(f->e.head, 1);
    assert_int_equal(f->e.n_out, 1);
    assert_int_equal(f->e.n_in, 1);
    assert_true(f->e.in_len == 1500);
}

static void indirect_case(void **state, uint64_t addr, uint32_t len, uint16_t flags) {
    Fixture *f = *state;
    set_desc(f, 0, addr, len, flags, 1);
    set_desc(f, 1, BUF, 10, 0, 0);
    offer(f, 0);
    expect_broken(f, -EPROTO);
}

static void test_indirect_bad_len(void **state) {
    indirect_case(state, IND, 20, VRING_DESC_F_INDIRECT);
}
static void test_indirect_empty(void **state) {
    indirect_case(state, IND, 0, VRING_DESC_F_INDIRECT);
}
static void test_indirect_too_long(void **state) {
    indirect_case(state, IND, (N + 1) * 16, VRING_DESC_F_INDIRECT);
}
static void test_indirect_with_next(void **state) {
    indirect_case(state, IND, 32, VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT);
}
static void test_indirect_unmapped(void **state) {
    indirect_case(state, MEM_SIZE - 16, 32, VRING_DESC_F_INDIRECT);
}

static void test_indirect_nested(void **state) {
    Fixture *f = *state;
    struct vring_desc *t = (struct vring_desc *)(f->g + IND);
    t[0] = (struct vring_desc){.addr = IND, .len = 16, .flags = VRING_DESC_F_INDIRECT};
    set_desc(f, 0, IND, 16, VRING_DESC_F_INDIRECT, 0);
    offer(f, 0);
    expect_broken(f, -EPROTO);
}

static void test_indirect_loop(void **state) {
    Fixture *f = *state;
    struct vring_desc *t = (struct vring_desc *)(f->g + IND);
    t[0] = (struct vring_desc){.addr = BUF, .len = 1, .flags = VRING_DESC_F_NEXT, .next = 1};
    t[1] = (struct vring_desc){.addr = BUF, .len = 1, .flags = VRING_DESC_F_NEXT, .next = 0};
    set_desc(f, 0, IND, 32, VRING_DESC_F_INDIRECT, 0);
    offer(f, 0);
    expect_broken(f, -EPROTO);
}

static void test_indirect_next_out_of_table(void **state) {
    Fixture *f = *state;
    struct vring_desc *t = (struct vring_desc *)(f->g + IND);
    t[0] = (struct vring_desc){.addr = BUF, .len = 1, .flags = VRING_DESC_F_NEXT, .next = 2};
    set_desc(f, 0, IND, 32, VRING_DESC_F_INDIRECT, 0);
    offer(f, 0);
    expect_broken(f, -EPROTO);
}

/* ---- notifications ----------------------------------------------------------------- */

static void test_notify_flags(void **state) {
    Fixture *f = *state;
    vq_disable_notify(f->vq);
    assert_int_equal(used(f)->flags, VRING_USED_F_NO_NOTIFY);
    assert_false(vq_enable_notify(f->vq));
    assert_int_equal(used(f)->flags, 0);
    assert_false(vq_has_avail(f->vq));
    set_desc(f, 0, BUF, 1, 0, 0);
    offer(f, 0);
    /* Seen without touching the notification flags. */
    assert_true(vq_has_avail(f->vq));
    assert_int_equal(used(f)->flags, 0);
    /* A buffer arrived: the caller must look again. */
    assert_true(vq_enable_notify(f->vq));
    assert_int_equal(vq_pop(f->vq, &f->e), 1);
    assert_false(vq_has_avail(f->vq));
    assert_int_equal(vq_push(f->vq, 0, 0), 0);
    vq_flush(f->vq);
    assert_true(vq_need_notify(f->vq));
    avail(f)->flags = VRING_AVAIL_F_NO_INTERRUPT;
    assert_false(vq_need_notify(f->vq));
}

static void test_event_idx(void **state) {
    Fixture *f = *state;
    uint16_t *used_event = &avail(f)->ring[N];
    uint16_t *avail_event = (uint16_t *)&used(f)->ring[N];

    for (unsigned i = 0; i < 4; i++) {
        set_desc(f, i, BUF, 1, 0, 0);
        offer(f, i);
    }
    /* Flags mean nothing with EVENT_IDX. */
    avail(f)->flags = VRING_AVAIL_F_NO_INTERRUPT;
    vq_disable_notify(f->vq);
    assert_int_equal(used(f)->flags, 0);

    /* First completion: always notify. */
    assert_int_equal(vq_pop(f->vq, &f->e), 1);
    assert_int_equal(vq_push(f->vq, f->e.head, 0), 0);
    vq_flush(f->vq);
    assert_true(vq_need_notify(f->vq));
    /* The driver wants to hear when used passes index 2 (used_event 2). */
    *used_event = 2;
    assert_int_equal(vq_pop(f->vq, &f->e), 1);
    assert_int_equal(vq_push(f->vq, f->e.head, 0), 0);
    vq_flush(f->vq);
    assert_false(vq_need_notify(f->vq)); /* used idx 2: entry 2 not written yet */
    assert_int_equal(vq_pop(f->vq, &f->e), 1);
    assert_int_equal(vq_push(f->vq, f->e.head, 0), 0);
    vq_flush(f->vq);
    assert_true(vq_need_notify(f->vq));  /* used idx 3 crossed 2 */
    assert_false(vq_need_notify(f->vq)); /* nothing new since */

    /* Kicks wanted from avail index 3 on; one is still pending. */
    assert_true(vq_enable_notify(f->vq));
    assert_int_equal(*avail_event, 3);
    assert_int_equal(vq_pop(f->vq, &f->e), 1);
    assert_false(vq_enable_notify(f->vq));
    assert_int_equal(*avail_event, 4);
}

/* Chains taken and given back because they were too few: the kick wanted
 * is for the next chain, past the ones given back. */
static void test_event_idx_after_rewind(void **state) {
    Fixture *f = *state;
    uint16_t *avail_event = (uint16_t *)&used(f)->ring[N];

    set_desc(f, 0, BUF, 1, VRING_DESC_F_WRITE, 0);
    offer(f, 0);
    assert_int_equal(vq_pop(f->vq, &f->e), 1);
    assert_int_equal(vq_pop(f->vq, &f->e), 0);
    uint16_t seen = vq_last_avail(f->vq);
    assert_int_equal(vq_rewind(f->vq, 1), 0);
    /* The rewound chain is still available... */
    assert_true(vq_has_avail(f->vq));
    /* ...but nothing beyond what was seen: sleep, with the kick armed there. */
    assert_false(vq_enable_notify_after(f->vq, seen));
    assert_int_equal(*avail_event, 1);
    assert_false(vq_avail_moved(f->vq, seen));
    set_desc(f, 1, BUF, 1, VRING_DESC_F_WRITE, 0);
    offer(f, 1);
    assert_true(vq_avail_moved(f->vq, seen));
    assert_true(vq_enable_notify_after(f->vq, seen));
    assert_int_equal(vq_size(f->vq), N);
}

static void test_new_rejects(void **state) {
    Fixture *f = *state;
    Vq *vq = NULL;
    void *d, *a, *u;
    assert_int_equal(vu_mem_gpa_whole(f->mem, DESC, 64, &d), 0);
    assert_int_equal(vu_mem_gpa_whole(f->mem, AVAIL, 64, &a), 0);
    assert_int_equal(vu_mem_gpa_whole(f->mem, USED, 64, &u), 0);
    VqConfig c = {.mem = f->mem, .desc = d, .avail = a, .used = u};
    assert_int_equal(vq_new(&c, 0, &vq), -EINVAL);
    assert_int_equal(vq_new(&c, 3, &vq), -EINVAL);
    assert_int_equal(vq_new(&c, VQ_MAX_SIZE * 2, &vq), -EINVAL);
    c.desc = (uint8_t *)d + 8;
    assert_int_equal(vq_new(&c, 4, &vq), -EINVAL);
    c.desc = d;
    c.used = (uint8_t *)u + 2;
    assert_int_equal(vq_new(&c, 4, &vq), -EINVAL);
    c.used = u;
    c.avail = (uint8_t *)a + 1;
    assert_int_equal(vq_new(&c, 4, &vq), -EINVAL);
    c.avail = NULL;
    assert_int_equal(vq_new(&c, 4, &vq), -EINVAL);
    assert_null(vq);
    c.avail = a;
    assert_int_equal(vq_new(&c, VQ_MAX_SIZE, &vq), 0);
    vq_free(vq);
}

/* ---- vu-mem translation --------------------------------------------------------------- */

static void test_mem_translate(void **state) {
    Fixture *f = *state;
    void *p;
    uint64_t len;
    assert_int_equal(vu_mem_n_regions(f->mem), 2);
    assert_int_equal(vu_mem_gpa(f->mem, 0, 1, &p, &len), 0);
    assert_true(len == 1);
    /* Clamped to the region it starts in. */
    assert_int_equal(vu_mem_gpa(f->mem, HALF - 4, 100, &p, &len), 0);
    assert_true(len == 4);
    assert_int_equal(vu_mem_gpa(f->mem, MEM_SIZE - 1, UINT64_MAX, &p, &len), 0);
    assert_true(len == 1);
    assert_int_equal(vu_mem_gpa(f->mem, MEM_SIZE, 1, &p, &len), -EFAULT);
    assert_int_equal(vu_mem_gpa(f->mem, UINT64_MAX, 1, &p, &len), -EFAULT);
    assert_int_equal(vu_mem_gpa(f->mem, 0, 0, &p, &len), -EINVAL);
    assert_int_equal(vu_mem_gpa_whole(f->mem, HALF - 4, 8, &p), -EFAULT);
    /* Frontend virtual addresses: whole objects only. */
    assert_int_equal(vu_mem_uva(f->mem, 0x10000000, HALF, &p), 0);
    assert_int_equal(vu_mem_uva(f->mem, 0x10000000, HALF + 1, &p), -EFAULT);
    assert_int_equal(vu_mem_uva(f->mem, 0x20000000 + HALF - 2, 4, &p), -EFAULT);
    assert_int_equal(vu_mem_uva(f->mem, 0x0fffffff, 1, &p), -EFAULT);
    assert_int_equal(vu_mem_uva(f->mem, 0x20000000 + 8, UINT64_MAX, &p), -EFAULT);
    assert_int_equal(vu_mem_uva(f->mem, 0x20000000, 0, &p), -EINVAL);
    /* The same byte through both kinds of address. */
    void *q;
    assert_int_equal(vu_mem_uva(f->mem, 0x20000000 + 5, 1, &p), 0);
    assert_int_equal(vu_mem_gpa_whole(f->mem, HALF + 5, 1, &q), 0);
    assert_ptr_equal(p, q);
}

static void test_mem_check_table(void **state) {
    VuMemRegionDesc r[VU_MEM_MAX_REGIONS + 1];
    for (unsigned i = 0; i < ELEMENTSOF(r); i++) {
        r[i] = (VuMemRegionDesc){
            .guest_addr = (uint64_t)i << 32, .size = 4096, .user_addr = (uint64_t)(i + 1) << 32};
    }
    assert_int_equal(vu_mem_check_table(r, 0), -EINVAL);
    assert_int_equal(vu_mem_check_table(r, VU_MEM_MAX_REGIONS), 0);
    assert_int_equal(vu_mem_check_table(r, VU_MEM_MAX_REGIONS + 1), -EINVAL);
    /* Touching is not overlapping. */
    r[1].guest_addr = 4096;
    r[1].user_addr = r[0].user_addr + 4096;
    assert_int_equal(vu_mem_check_table(r, 2), 0);
    r[1].guest_addr = 4095;
    assert_int_equal(vu_mem_check_table(r, 2), -EINVAL);
    r[1].guest_addr = 4096;
    r[1].user_addr = r[0].user_addr + 4095;
    assert_int_equal(vu_mem_check_table(r, 2), -EINVAL);
    /* A region inside another. */
    r[1] = (VuMemRegionDesc){.guest_addr = 100, .size = 10, .user_addr = 1ull << 40};
    assert_int_equal(vu_mem_check_table(r, 2), -EINVAL);
    /* An end exactly at 2^64 overflows. */
    r[0] = (VuMemRegionDesc){.guest_addr = 0 - 4096ull, .size = 4096, .user_addr = 0};
    assert_int_equal(vu_mem_check_table(r, 1), -EINVAL);
}

/* ---- prefetch: a hint that judges nothing and breaks nothing ----------------- */

static void test_prefetch(void **state) {
    Fixture *f = *state;
    assert_int_equal(vq_prefetch(f->vq, 0, 4, false), 0);
    for (unsigned i = 0; i < 3; i++) {
        set_desc(f, i, BUF + 100 * i, 60, VRING_DESC_F_WRITE, 0);
        offer(f, (uint16_t)i);
    }
    assert_int_equal(vq_prefetch(f->vq, 0, 8, true), 3);
    assert_int_equal(vq_prefetch(f->vq, 2, 8, false), 3);
    assert_int_equal(vq_prefetch(f->vq, 3, 8, false), 3); /* nothing past the last */
    assert_int_equal(vq_last_avail(f->vq), 0);
    assert_int_equal(vq_pop(f->vq, &f->e), 1);
    assert_int_equal(f->e.head, 0);
    /* avail->idx is read again only when the chains seen are all taken. */
    set_desc(f, 3, BUF + 300, 60, VRING_DESC_F_WRITE, 0);
    offer(f, 3);
    assert_int_equal(vq_prefetch(f->vq, 0, 8, false), 2);
    assert_int_equal(vq_pop(f->vq, &f->e), 1);
    assert_int_equal(vq_pop(f->vq, &f->e), 1);
    assert_int_equal(vq_prefetch(f->vq, 0, 8, false), 1);
    assert_int_equal(vq_pop(f->vq, &f->e), 1);
    assert_int_equal(f->e.head, 3);
    assert_int_equal(vq_pop(f->vq, &f->e), 0);
    assert_int_equal(vq_broken(f->vq), 0);
}

static void test_prefetch_hostile(void **state) {
    Fixture *f = *state;
    /* Heads out of the table, buffers outside guest memory, huge, empty,
     * indirect: only hints, nothing is judged, nothing breaks... */
    set_desc(f, 1, MEM_SIZE, 10, 0, 0);
    set_desc(f, 2, 0xfffffffffffff000ull, 0xffffffff, VRING_DESC_F_WRITE, 0);
    set_desc(f, 3, BUF, 0, 0, 0);
    set_desc(f, 4, IND, 16, VRING_DESC_F_INDIRECT, 0);
    set_desc(f, 5, HALF - 64, 4096, 0, 0); /* straddles two regions */
    offer(f, N + 3);
    offer(f, 0xffff);
    for (uint16_t i = 1; i <= 5; i++) {
        offer(f, i);
    }
    assert_int_equal(vq_prefetch(f->vq, 0, N, false), 7);
    assert_int_equal(vq_prefetch(f->vq, 1, 100, true), 7);
    assert_int_equal(vq_broken(f->vq), 0);
    assert_int_equal(vq_last_avail(f->vq), 0);
    /* ...until vq_pop judges the first chain. */
    expect_broken(f, -EPROTO);
    assert_int_equal(vq_prefetch(f->vq, 0, N, false), -EPROTO);
}

static void test_prefetch_avail_idx_too_far(void **state) {
    Fixture *f = *state;
    avail(f)->idx = N + 1;
    assert_int_equal(vq_prefetch(f->vq, 0, N, false), -EPROTO);
    assert_int_equal(vq_broken(f->vq), -EPROTO);
    expect_broken(f, -EPROTO);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
#define TE(name) cmocka_unit_test_setup_teardown(name, setup_event_idx, teardown)
#define TI(name) cmocka_unit_test_setup_teardown(name, setup_indirect, teardown)

int main(void) {
    const struct CMUnitTest tests[] = {
        T(test_empty),
        T(test_chain_out_then_in),
        T(test_chain_of_num),
        T(test_buffer_split_at_region_boundary),
        T(test_rewind),
        T(test_base),
        T(test_head_out_of_range),
        T(test_avail_idx_too_far),
        T(test_next_out_of_range),
        T(test_loop),
        T(test_self_loop),
        T(test_readable_after_writable),
        T(test_unmapped_buffer),
        T(test_buffer_past_end),
        T(test_huge_buffer),
        T(test_too_many_segments),
        T(test_indirect_not_negotiated),
        TI(test_indirect),
        TI(test_indirect_bad_len),
        TI(test_indirect_empty),
        TI(test_indirect_too_long),
        TI(test_indirect_with_next),
        TI(test_indirect_unmapped),
        TI(test_indirect_nested),
        TI(test_indirect_loop),
        TI(test_indirect_next_out_of_table),
        T(test_notify_flags),
        TE(test_event_idx),
        TE(test_event_idx_after_rewind),
        T(test_new_rejects),
        T(test_mem_translate),
        T(test_prefetch),
        T(test_prefetch_hostile),
        T(test_prefetch_avail_idx_too_far),
        cmocka_unit_test(test_mem_check_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
