/* Guest memory mapping and address translation.
 *
 * The table is the frontend's until vu_mem_check_table() passed it; each
 * region's fd must then cover what is mapped (fstat), so that no access
 * inside a region can fault. Translations never cross a region's end. */
#include "vu-mem.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "util.h"

typedef struct VuMemRegion {
    uint64_t guest_addr;
    uint64_t size;
    uint64_t user_addr;
    void *map;        /* what mmap returned */
    uint64_t map_len; /* mmap_offset + size */
    uint8_t *host;    /* map + mmap_offset: the byte at guest_addr */
} VuMemRegion;

struct VuMem {
    size_t n;
    VuMemRegion r[VU_MEM_MAX_REGIONS];
};

static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
    /* Both ends are known not to overflow. */
    return a < b + blen && b < a + alen;
}

int vu_mem_check_table(const VuMemRegionDesc *untrusted_regions, size_t n) {
    if (n == 0 || n > VU_MEM_MAX_REGIONS) {
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        const VuMemRegionDesc *d = &untrusted_regions[i];
        uint64_t end;
        if (d->size == 0) {
            return -EINVAL;
        }
        if (__builtin_add_overflow(d->guest_addr, d->size, &end) ||
            __builtin_add_overflow(d->user_addr, d->size, &end) || end > VU_MEM_USER_LIMIT ||
            __builtin_add_overflow(d->mmap_offset, d->size, &end) || end > (uint64_t)INT64_MAX ||
            end > (uint64_t)SIZE_MAX) {
            return -EINVAL;
        }
        for (size_t j = 0; j < i; j++) {
            const VuMemRegionDesc *o = &untrusted_regions[j];
            if (ranges_overlap(d->guest_addr, d->size, o->guest_addr, o->size) ||
                ranges_overlap(d->user_addr, d->size, o->user_addr, o->size)) {
                return -EINVAL;
            }
        }
    }
    return 0;
}

void vu_mem_free(VuMem *m) {
    if (!m) {
        return;
    }
    for (size_t i = 0; i < m->n; i++) {
        munmap(m->r[i].map, m->r[i].map_len);
    }
    free(m);
}

DEFINE_TRIVIAL_CLEANUP_FUNC(VuMem *, vu_mem_free);

int vu_mem_new(const VuMemRegionDesc *untrusted_regions, const int *fds, size_t n, VuMem **ret) {
    int r = vu_mem_check_table(untrusted_regions, n);
    if (r < 0) {
        return r;
    }
    /* Checked: the table is ours to use (it is in our own memory). */
    const VuMemRegionDesc *regions = untrusted_regions;
    _cleanup_(vu_mem_freep) VuMem *m = calloc(1, sizeof(*m));
    if (!m) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const VuMemRegionDesc *d = &regions[i];
        uint64_t map_len = d->mmap_offset + d->size; /* checked above */
        struct stat st;
        if (fstat(fds[i], &st) < 0) {
            return -errno;
        }
        /* Touching a page past the end of the file would be SIGBUS. */
        if (!S_ISREG(st.st_mode) || st.st_size < 0 || (uint64_t)st.st_size < map_len) {
            return -EINVAL;
        }
        /* Map from offset 0: mmap_offset need not be page aligned. */
        void *p =
            mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fds[i], 0);
        if (p == MAP_FAILED) {
            return -errno;
        }
        m->r[m->n++] = (VuMemRegion){
            .guest_addr = d->guest_addr,
            .size = d->size,
            .user_addr = d->user_addr,
            .map = p,
            .map_len = map_len,
            .host = (uint8_t *)p + d->mmap_offset,
        };
    }
    *ret = TAKE_PTR(m);
    return 0;
}

/* The region holding addr, a guest-physical address or (user) one of the
 * frontend's, and addr's offset in it; NULL when no region does. */
static const VuMemRegion *region_find(const VuMem *m, uint64_t addr, bool user, uint64_t *ret_off) {
    for (size_t i = 0; i < m->n; i++) {
        const VuMemRegion *g = &m->r[i];
        uint64_t start = user ? g->user_addr : g->guest_addr;
        if (addr >= start && addr - start < g->size) {
            *ret_off = addr - start;
            return g;
        }
    }
    return NULL;
}

int vu_mem_gpa(const VuMem *m, uint64_t gpa, uint64_t len, void **ret_ptr, uint64_t *ret_len) {
    uint64_t off;
    if (len == 0) {
        return -EINVAL;
    }
    const VuMemRegion *g = region_find(m, gpa, false, &off);
    if (!g) {
        return -EFAULT;
    }
    *ret_ptr = g->host + off;
    *ret_len = MIN(len, g->size - off);
    return 0;
}

int vu_mem_gpa_whole(const VuMem *m, uint64_t gpa, uint64_t len, void **ret_ptr) {
    void *p;
    uint64_t got;
    int r = vu_mem_gpa(m, gpa, len, &p, &got);
    if (r < 0) {
        return r;
    }
    if (got != len) {
        return -EFAULT;
    }
    *ret_ptr = p;
    return 0;
}

int vu_mem_uva(const VuMem *m, uint64_t uva, uint64_t len, void **ret_ptr) {
    uint64_t off;
    if (len == 0) {
        return -EINVAL;
    }
    const VuMemRegion *g = region_find(m, uva, true, &off);
    if (!g || len > g->size - off) {
        return -EFAULT;
    }
    *ret_ptr = g->host + off;
    return 0;
}

size_t vu_mem_n_regions(const VuMem *m) {
    return m ? m->n : 0;
}
