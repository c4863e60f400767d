/* The virtqueue walker over guest memory the input writes: descriptor
 * table, avail ring and buffers all hostile. Every chain taken must lie in
 * guest memory (ASan checks our accesses; the walker checks the guest's).
 *
 * Input: [log2 ring size][flags: bit 0 EVENT_IDX, bit 1 INDIRECT][base, 2
 * bytes], then guest memory from address 0: descriptor table at 0, avail
 * ring at 0x1000, used ring at 0x2000. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "switch/vhost/vq.h"
#include "switch/vhost/vu-mem.h"

#define MEM_SIZE (64u << 10)
#define DESC 0x0
#define AVAIL 0x1000
#define USED 0x2000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int guest_memfd(void) {
    static int fd = -1;
    if (fd < 0) {
        fd = memfd_create("fuzz-vq", MFD_CLOEXEC);
        if (fd < 0 || ftruncate(fd, MEM_SIZE) < 0) {
            abort();
        }
    }
    return fd;
}

static void check_elem(const VqElem *e, unsigned num) {
    volatile uint8_t sink = 0;
    if (e->head >= num || e->n_out + e->n_in > VQ_MAX_SEGS) {
        abort();
    }
    /* Touch both ends of every segment: ASan catches a bad translation. */
    for (unsigned i = 0; i < e->n_out + e->n_in; i++) {
        const uint8_t *p = e->seg[i].base;
        if (e->seg[i].len == 0) {
            abort();
        }
        sink ^= p[0];
        sink ^= p[e->seg[i].len - 1];
    }
    (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static VqElem e;
    if (size < 4) {
        return 0;
    }
    unsigned num = 1u << (data[0] % 9); /* up to 256: the table fits in 4 KiB */
    bool event_idx = data[1] & 1, indirect = data[1] & 2;
    uint16_t base = (uint16_t)(data[2] | data[3] << 8);
    data += 4;
    size -= 4;

    int fd = guest_memfd();
    if (ftruncate(fd, 0) < 0 || ftruncate(fd, MEM_SIZE) < 0 ||
        pwrite(fd, data, size < MEM_SIZE ? size : MEM_SIZE, 0) < 0) {
        abort();
    }
    /* Three regions: two contiguous halves (buffers may straddle them)
     * and a small one far away, all over the same file. */
    VuMemRegionDesc r[3] = {
        {.guest_addr = 0, .size = MEM_SIZE / 2, .user_addr = 0x1000000, .mmap_offset = 0},
        {.guest_addr = MEM_SIZE / 2,
         .size = MEM_SIZE / 2,
         .user_addr = 0x2000000,
         .mmap_offset = MEM_SIZE / 2},
        {.guest_addr = 1ull << 40, .size = 4096, .user_addr = 0x3000000, .mmap_offset = 4096},
    };
    int fds[3] = {fd, fd, fd};
    VuMem *mem;
    if (vu_mem_new(r, fds, 3, &mem) < 0) {
        abort();
    }
    VqConfig c = {.mem = mem, .last_avail = base, .event_idx = event_idx, .indirect = indirect};
    Vq *vq;
    if (vu_mem_gpa_whole(mem, DESC, vq_desc_size(num), &c.desc) < 0 ||
        vu_mem_gpa_whole(mem, AVAIL, vq_avail_size(num), &c.avail) < 0 ||
        vu_mem_gpa_whole(mem, USED, vq_used_size(num), &c.used) < 0 || vq_new(&c, num, &vq) < 0) {
        abort();
    }

    unsigned taken = 0;
    for (unsigned round = 0; round < num + 2; round++) {
        /* A hint over whatever the guest wrote: it may fail only as
         * vq_pop then fails, and never takes anything. */
        uint16_t before = vq_last_avail(vq);
        int pf = vq_prefetch(vq, round % 3, num, round & 1);
        if (vq_last_avail(vq) != before || (pf < 0 && vq_broken(vq) != pf)) {
            abort();
        }
        int k = vq_pop(vq, &e);
        if (pf > 0 && k == 0) {
            abort();
        }
        if (k < 0) {
            /* Broken stays broken. */
            if (vq_pop(vq, &e) != k || vq_broken(vq) != k) {
                abort();
            }
            break;
        }
        if (k == 0) {
            if (!vq_enable_notify(vq)) {
                break;
            }
            continue;
        }
        check_elem(&e, num);
        taken++;
        if (taken % 3 == 2 && vq_rewind(vq, 1) == 0) {
            continue;
        }
        if (vq_push(vq, e.head, (uint32_t)e.in_len) < 0) {
            abort();
        }
        vq_flush(vq);
        vq_need_notify(vq);
        vq_disable_notify(vq);
    }
    vq_free(vq);
    vu_mem_free(mem);
    return 0;
}
