/* Split virtqueue walker over untrusted guest rings.
 *
 * Everything in the rings is the guest's and may change under us: each
 * shared field is read once into an untrusted_ local, checked, and only
 * then used (the checks are vq.h's). A descriptor is copied whole before
 * it is judged; its address and length become trusted only as a segment
 * translated and clamped by vu-mem. */
#include "vq.h"

#include <endian.h>
#include <errno.h>
#include <linux/virtio_ring.h>
#include <stdlib.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "util.h"

struct Vq {
    const VuMem *mem;
    unsigned num; /* 1..VQ_MAX_SIZE */
    struct vring_desc *desc;
    struct vring_avail *avail;
    struct vring_used *used;
    uint16_t last_avail;
    uint16_t avail_idx;      /* avail->idx as last read and judged (<= num ahead) */
    uint16_t used_idx;       /* next used entry we write (shadow of used->idx) */
    uint16_t signalled_used; /* used_idx when we last decided to notify */
    bool signalled_valid;    /* signalled_used means something */
    bool event_idx;
    bool indirect;
    bool prefetchw; /* the CPU fetches a line for writing on a hint */
    int broken;
};

/* Keeps the compiler from re-reading shared memory in place of a local
 * copy it made: everything below acts on values read exactly once. */
#define barrier() __asm__ __volatile__("" ::: "memory")

uint64_t vq_desc_size(unsigned num) {
    return (uint64_t)num * sizeof(struct vring_desc);
}

uint64_t vq_avail_size(unsigned num) {
    return sizeof(struct vring_avail) + (uint64_t)num * sizeof(uint16_t) + sizeof(uint16_t);
}

uint64_t vq_used_size(unsigned num) {
    return sizeof(struct vring_used) + (uint64_t)num * sizeof(struct vring_used_elem) +
           sizeof(uint16_t);
}

/* Whether the CPU has PREFETCHW (every x86-64 CPU from AMD, Intel's since
 * Broadwell; the baseline instruction set has only prefetches for
 * reading, and __builtin_prefetch(p, 1) becomes one of those). */
static bool cpu_has_prefetchw(void) {
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    return __get_cpuid(0x80000001, &a, &b, &c, &d) && (c & bit_PRFCHW);
#else
    return false;
#endif
}

static bool is_pow2(unsigned n) {
    return n != 0 && (n & (n - 1)) == 0;
}

int vq_new(const VqConfig *c, unsigned num, Vq **ret) {
    if (!c->mem || !c->desc || !c->avail || !c->used || !is_pow2(num) || num > VQ_MAX_SIZE) {
        return -EINVAL;
    }
    if ((uintptr_t)c->desc % VQ_DESC_ALIGN || (uintptr_t)c->avail % VQ_AVAIL_ALIGN ||
        (uintptr_t)c->used % VQ_USED_ALIGN) {
        return -EINVAL;
    }
    Vq *vq = calloc(1, sizeof(*vq));
    if (!vq) {
        return -ENOMEM;
    }
    *vq = (Vq){
        .mem = c->mem,
        .num = num,
        .desc = c->desc,
        .avail = c->avail,
        .used = c->used,
        .last_avail = c->last_avail,
        .avail_idx = c->last_avail,
        .used_idx = c->last_avail,
        .event_idx = c->event_idx,
        .indirect = c->indirect,
        .prefetchw = cpu_has_prefetchw(),
    };
    *ret = vq;
    return 0;
}

void vq_free(Vq *vq) {
    free(vq);
}

static int vq_break(Vq *vq, int error) {
    if (vq->broken == 0) {
        vq->broken = error;
    }
    return vq->broken;
}

static uint16_t load16(const uint16_t *p) {
    return le16toh(__atomic_load_n(p, __ATOMIC_RELAXED));
}

static uint16_t load16_acquire(const uint16_t *p) {
    return le16toh(__atomic_load_n(p, __ATOMIC_ACQUIRE));
}

static void store16(uint16_t *p, uint16_t v) {
    __atomic_store_n(p, htole16(v), __ATOMIC_RELAXED);
}

/* The driver's used_event and our avail_event sit after each ring. */
static uint16_t *used_event_ptr(Vq *vq) {
    return &vq->avail->ring[vq->num];
}

static uint16_t *avail_event_ptr(Vq *vq) {
    return (uint16_t *)&vq->used->ring[vq->num];
}

typedef struct Desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
} Desc;

/* One copy of a descriptor: the guest may rewrite it while we look. The
 * table may be unaligned (indirect tables), hence memcpy. Every field of
 * the copy is still the guest's word. */
static void read_desc(const struct vring_desc *table, unsigned i, Desc *ret_untrusted) {
    struct vring_desc raw;
    memcpy(&raw, &table[i], sizeof(raw));
    barrier();
    ret_untrusted->addr = le64toh(raw.addr);
    ret_untrusted->len = le32toh(raw.len);
    ret_untrusted->flags = le16toh(raw.flags);
    ret_untrusted->next = le16toh(raw.next);
}

/* Adds the guest's buffer [addr, addr+len) to elem, split at region
 * boundaries: what lands in elem is translated and clamped, trusted. */
static int add_buffer(Vq *vq, VqElem *elem, uint64_t untrusted_addr, uint32_t untrusted_len,
                      bool writable) {
    if (!writable && elem->n_in > 0) {
        /* Device-readable buffers must all come before writable ones. */
        return -EPROTO;
    }
    uint64_t left = untrusted_len;
    while (left > 0) {
        void *p;
        uint64_t got;
        if (vu_mem_gpa(vq->mem, untrusted_addr, left, &p, &got) < 0) {
            return -EPROTO;
        }
        unsigned n = elem->n_out + elem->n_in;
        if (n >= VQ_MAX_SEGS) {
            return -E2BIG;
        }
        elem->seg[n] = (VqSeg){.base = p, .len = (uint32_t)got};
        if (writable) {
            elem->n_in++;
            elem->in_len += got;
        } else {
            elem->n_out++;
            elem->out_len += got;
        }
        left -= got;
        untrusted_addr += got; /* no overflow: the region held [addr, addr+got) */
    }
    return 0;
}

/* Walks the chain starting at head (already checked < num) into elem.
 * Each descriptor is copied once and judged on the copy: a chain visits
 * each entry of its table at most once (more means a loop), an indirect
 * table only where negotiated, alone in its chain, non-empty, a whole
 * number of descriptors, no larger than the ring and inside one region;
 * every next index stays inside its table. -EPROTO (or add_buffer's
 * error) on the first violation. */
static int walk_chain(Vq *vq, uint16_t head, VqElem *elem) {
    const struct vring_desc *table = vq->desc;
    unsigned table_len = vq->num;
    unsigned i = head;
    unsigned seen = 0;
    bool in_indirect = false;

    /* Only the header: the segments are written as they are found (a
     * compound literal would clear all VQ_MAX_SEGS of them, 4 KiB, for
     * every chain). */
    elem->head = head;
    elem->n_out = elem->n_in = 0;
    elem->out_len = elem->in_len = 0;
    for (;;) {
        Desc untrusted;
        if (seen >= table_len) {
            return -EPROTO;
        }
        seen++;
        read_desc(table, i, &untrusted);

        if (untrusted.flags & VRING_DESC_F_INDIRECT) {
            void *p;
            if (!vq->indirect || in_indirect || (untrusted.flags & VRING_DESC_F_NEXT) ||
                elem->n_out + elem->n_in > 0) {
                return -EPROTO;
            }
            if (untrusted.len == 0 || untrusted.len % sizeof(struct vring_desc) != 0 ||
                untrusted.len / sizeof(struct vring_desc) > vq->num) {
                return -EPROTO;
            }
            if (vu_mem_gpa_whole(vq->mem, untrusted.addr, untrusted.len, &p) < 0) {
                return -EPROTO;
            }
            table = p;
            table_len = untrusted.len / sizeof(struct vring_desc);
            i = 0;
            seen = 0;
            in_indirect = true;
            continue;
        }

        if (untrusted.len > 0) {
            int r = add_buffer(vq, elem, untrusted.addr, untrusted.len,
                               untrusted.flags & VRING_DESC_F_WRITE);
            if (r < 0) {
                return r;
            }
        }
        if (!(untrusted.flags & VRING_DESC_F_NEXT)) {
            return 0;
        }
        if (untrusted.next >= table_len) {
            return -EPROTO;
        }
        i = untrusted.next;
    }
}

/* Reads avail->idx again: the chains available beyond last_avail, or
 * the (sticky) error of an index that is made up. Only when the chains
 * seen at the last read are all taken: one read of the line the driver
 * keeps writing per batch, not per chain. */
static int refresh_avail(Vq *vq) {
    /* Acquire: the entries the driver published before idx are visible. */
    uint16_t untrusted_avail_idx = load16_acquire(&vq->avail->idx);
    uint16_t pending = (uint16_t)(untrusted_avail_idx - vq->last_avail);
    /* More than a ring's worth of new entries: the index is made up. */
    if (pending > vq->num) {
        return vq_break(vq, -EPROTO);
    }
    vq->avail_idx = untrusted_avail_idx;
    return pending;
}

/* Chains known to be available: those of the last read of avail->idx,
 * or of a new read when they are all taken. */
static int avail_pending(Vq *vq) {
    uint16_t pending = (uint16_t)(vq->avail_idx - vq->last_avail);
    /* vq_rewind() may have given back chains taken before the last read:
     * a driver never has more than a ring's worth outstanding. */
    if (pending == 0 || pending > vq->num) {
        return refresh_avail(vq);
    }
    return pending;
}

int vq_pop(Vq *vq, VqElem *elem) {
    if (vq->broken) {
        return vq->broken;
    }
    int pending = avail_pending(vq);
    if (pending <= 0) {
        return pending;
    }
    uint16_t untrusted_head = load16(&vq->avail->ring[vq->last_avail & (vq->num - 1)]);
    barrier();
    if (untrusted_head >= vq->num) {
        return vq_break(vq, -EPROTO);
    }
    uint16_t head = untrusted_head;
    int r = walk_chain(vq, head, elem);
    if (r < 0) {
        return vq_break(vq, r);
    }
    vq->last_avail++;
    return 1;
}

/* Bytes of each buffer vq_prefetch() asks for: a small frame and its
 * virtio-net header; the hardware prefetcher follows a longer one. */
#define PREFETCH_BYTES 128
#define CACHE_LINE 64

/* A receive buffer was last read by the guest's CPU: a line fetched for
 * reading must be fetched again, exclusive, by our first store into it.
 * PREFETCHW asks for it exclusive at once (one transfer instead of two:
 * the children's CPU time per 64-byte frame went from 123-129 to
 * 116-121 ns). */
static void prefetch_range(const Vq *vq, const uint8_t *p, uint64_t len, bool write) {
    const uint8_t *end = p + len;
    for (p = (const uint8_t *)((uintptr_t)p & ~(uintptr_t)(CACHE_LINE - 1)); p < end;
         p += CACHE_LINE) {
#if defined(__x86_64__) || defined(__i386__)
        if (write && vq->prefetchw) {
            __asm__ volatile("prefetchw %0" : : "m"(*p));
            continue;
        }
#endif
        if (write) {
            __builtin_prefetch(p, 1);
        } else {
            __builtin_prefetch(p, 0);
        }
    }
}

int vq_prefetch(Vq *vq, unsigned skip, unsigned n, bool write) {
    if (vq->broken) {
        return vq->broken;
    }
    int pending = avail_pending(vq);
    if (pending <= 0 || skip >= (unsigned)pending) {
        return pending;
    }
    n = MIN(n, (unsigned)pending - skip);
    unsigned mask = vq->num - 1;
    uint16_t first = (uint16_t)(vq->last_avail + skip);
    /* What is read here only chooses which lines to fetch: an index is
     * masked into its table, an address goes through vu_mem like any
     * other (a prefetch never faults, but it stays in guest memory), and
     * nothing else is done with it. vq_pop reads and judges it all again.
     * The descriptors first, all of them in flight at once... */
    for (unsigned i = 0; i < n; i++) {
        uint16_t untrusted_head = load16(&vq->avail->ring[(uint16_t)(first + i) & mask]);
        __builtin_prefetch(&vq->desc[untrusted_head & mask], 0);
    }
    /* ...then the first bytes of the buffers they point to. */
    for (unsigned i = 0; i < n; i++) {
        uint16_t untrusted_head = load16(&vq->avail->ring[(uint16_t)(first + i) & mask]);
        Desc untrusted;
        void *p;
        uint64_t got;
        read_desc(vq->desc, untrusted_head & mask, &untrusted);
        if (untrusted.len == 0 || (untrusted.flags & VRING_DESC_F_INDIRECT) ||
            vu_mem_gpa(vq->mem, untrusted.addr, MIN(untrusted.len, PREFETCH_BYTES), &p, &got) < 0) {
            continue;
        }
        prefetch_range(vq, p, got, write);
    }
    return pending;
}

int vq_rewind(Vq *vq, unsigned n) {
    if (vq->broken) {
        return vq->broken;
    }
    /* Only chains taken since the last used entry can go back. */
    if (n > (uint16_t)(vq->last_avail - vq->used_idx)) {
        return -EINVAL;
    }
    vq->last_avail -= n;
    return 0;
}

int vq_push(Vq *vq, uint16_t head, uint32_t len) {
    if (vq->broken) {
        return vq->broken;
    }
    if (head >= vq->num || vq->used_idx == vq->last_avail) {
        /* More used entries than chains taken: our bug, not the guest's. */
        return -EINVAL;
    }
    struct vring_used_elem *u = &vq->used->ring[vq->used_idx & (vq->num - 1)];
    __atomic_store_n(&u->id, htole32(head), __ATOMIC_RELAXED);
    __atomic_store_n(&u->len, htole32(len), __ATOMIC_RELAXED);
    vq->used_idx++;
    return 0;
}

void vq_flush(Vq *vq) {
    /* Release: the entries are visible before the index that covers them. */
    __atomic_store_n(&vq->used->idx, htole16(vq->used_idx), __ATOMIC_RELEASE);
}

bool vq_need_notify(Vq *vq) {
    /* Our used->idx store must be ordered before reading what the driver
     * asked for, or both sides could miss each other. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    /* What the driver asked for only decides whether it gets an
     * interrupt: any value of it is safe. */
    if (!vq->event_idx) {
        uint16_t untrusted_flags = load16(&vq->avail->flags);
        return !(untrusted_flags & VRING_AVAIL_F_NO_INTERRUPT);
    }
    uint16_t old = vq->signalled_used;
    uint16_t new = vq->used_idx;
    bool valid = vq->signalled_valid;
    vq->signalled_used = new;
    vq->signalled_valid = true;
    if (!valid) {
        return true;
    }
    uint16_t untrusted_used_event = load16(used_event_ptr(vq));
    return (uint16_t)(new - untrusted_used_event - 1) < (uint16_t)(new - old);
}

void vq_disable_notify(Vq *vq) {
    if (!vq->event_idx) {
        store16(&vq->used->flags, VRING_USED_F_NO_NOTIFY);
    }
    /* With EVENT_IDX, an avail_event left behind already suppresses kicks. */
}

bool vq_enable_notify_after(Vq *vq, uint16_t seen) {
    if (vq->event_idx) {
        /* The driver kicks when its avail->idx moves past seen. */
        store16(avail_event_ptr(vq), seen);
    } else {
        store16(&vq->used->flags, 0);
    }
    /* The flag must be visible before we look at avail->idx again. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    uint16_t untrusted_avail_idx = load16_acquire(&vq->avail->idx);
    return untrusted_avail_idx != seen; /* only compared: any value is safe */
}

bool vq_enable_notify(Vq *vq) {
    return vq_enable_notify_after(vq, vq->last_avail);
}

bool vq_has_avail(const Vq *vq) {
    return vq_avail_moved(vq, vq->last_avail);
}

bool vq_avail_moved(const Vq *vq, uint16_t seen) {
    if (vq->broken) {
        return false;
    }
    /* Only compared: vq_pop judges the index when it takes entries. */
    uint16_t untrusted_avail_idx = load16_acquire(&vq->avail->idx);
    return untrusted_avail_idx != seen;
}

unsigned vq_size(const Vq *vq) {
    return vq->num;
}

uint16_t vq_last_avail(const Vq *vq) {
    return vq->last_avail;
}

int vq_broken(const Vq *vq) {
    return vq->broken;
}
