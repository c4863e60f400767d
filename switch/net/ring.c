/* SPSC frame ring over a sealed memfd.
 *
 * The peer writes the shared indexes and slots: each is read once into an
 * untrusted_ local and checked against what it can possibly be (an index
 * moves forward only, by at most a ring; a length fits a slot) before it
 * is kept. The wait flags are the peer's too, but any value of them only
 * decides whether an eventfd is written. */
#include "ring.h"

#include <errno.h>
#include <fcntl.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

#define CACHE_LINE 64
#define RING_SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

typedef struct RingSlot {
    uint32_t len;
    uint32_t flags;
    uint8_t data[RING_FRAME_MAX];
} RingSlot;

/* Each index and each wait flag alone on its cache line: the producer's
 * stores do not evict the consumer's line and the other way round. */
typedef struct RingShared {
    alignas(CACHE_LINE) uint32_t head; /* frames published (producer writes) */
    alignas(CACHE_LINE) uint32_t tail; /* frames released (consumer writes) */
    alignas(CACHE_LINE) uint32_t consumer_waiting;
    alignas(CACHE_LINE) uint32_t producer_waiting;
    alignas(CACHE_LINE) RingSlot slot[RING_SLOTS];
} RingShared;

_Static_assert(sizeof(RingSlot) == RING_SLOT_SIZE, "slot size");
_Static_assert((RING_SLOTS & (RING_SLOTS - 1)) == 0, "slots: a power of two");

struct Ring {
    RingShared *sh;
    size_t map_len;
    RingRole role;
    /* Producer: next to write, last published, cached tail.
     * Consumer: next to read, last released, cached head. */
    uint32_t pos;
    uint32_t published;
    uint32_t peer;
    int broken;
};

size_t ring_shm_size(void) {
    size_t page = 4096;
    return (sizeof(RingShared) + page - 1) / page * page;
}

int ring_memfd_new(int *ret_fd) {
    _cleanup_close_ int fd = memfd_create("vm-switch-ring", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0) {
        return -errno;
    }
    if (ftruncate(fd, (off_t)ring_shm_size()) < 0) {
        return -errno;
    }
    if (fcntl(fd, F_ADD_SEALS, RING_SEALS) < 0) {
        return -errno;
    }
    *ret_fd = TAKE_FD(fd);
    return 0;
}

static uint32_t load_acquire(const uint32_t *p) {
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static void store_release(uint32_t *p, uint32_t v) {
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

int ring_attach(int fd, RingRole role, Ring **ret) {
    struct stat st;
    if (role != RING_PRODUCER && role != RING_CONSUMER) {
        return -EINVAL;
    }
    if (fstat(fd, &st) < 0) {
        return -errno;
    }
    if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != ring_shm_size()) {
        return -EINVAL;
    }
    int seals = fcntl(fd, F_GET_SEALS);
    if (seals < 0) {
        return -errno;
    }
    if ((seals & RING_SEALS) != RING_SEALS) {
        return -EPERM;
    }
    void *p = mmap(NULL, ring_shm_size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        return -errno;
    }
    Ring *r = calloc(1, sizeof(*r));
    if (!r) {
        munmap(p, ring_shm_size());
        return -ENOMEM;
    }
    r->sh = p;
    r->map_len = ring_shm_size();
    r->role = role;
    /* The other child may have written the indexes before us. */
    uint32_t untrusted_head = load_acquire(&r->sh->head);
    uint32_t untrusted_tail = load_acquire(&r->sh->tail);
    if (untrusted_head - untrusted_tail > RING_SLOTS) {
        ring_free(r);
        return -EPROTO;
    }
    uint32_t head = untrusted_head, tail = untrusted_tail;
    if (role == RING_PRODUCER) {
        r->pos = r->published = head;
        r->peer = tail;
    } else {
        r->pos = r->published = tail;
        r->peer = head;
    }
    *ret = r;
    return 0;
}

void ring_free(Ring *r) {
    if (!r) {
        return;
    }
    munmap(r->sh, r->map_len);
    free(r);
}

int ring_broken(const Ring *r) {
    return r->broken;
}

static int ring_break(Ring *r) {
    r->broken = -EPROTO;
    return r->broken;
}

/* ---- producer ------------------------------------------------------------- */

/* Reads the consumer's tail again. It may only move forward, and never
 * past what we published. */
static int refresh_tail(Ring *r) {
    uint32_t untrusted_tail = load_acquire(&r->sh->tail);
    if (untrusted_tail - r->peer > r->published - r->peer) {
        return ring_break(r);
    }
    r->peer = untrusted_tail;
    return 0;
}

int ring_producer_slot(Ring *r, void **ret_data) {
    if (r->broken) {
        return r->broken;
    }
    if (r->role != RING_PRODUCER) {
        return -EINVAL;
    }
    if (r->pos - r->peer >= RING_SLOTS) {
        int k = refresh_tail(r);
        if (k < 0) {
            return k;
        }
        if (r->pos - r->peer >= RING_SLOTS) {
            return -ENOBUFS;
        }
    }
    *ret_data = r->sh->slot[r->pos % RING_SLOTS].data;
    return 0;
}

int ring_producer_commit(Ring *r, uint32_t len, uint32_t flags) {
    if (r->broken) {
        return r->broken;
    }
    if (r->role != RING_PRODUCER || len > RING_FRAME_MAX || r->pos - r->peer >= RING_SLOTS) {
        return -EINVAL;
    }
    RingSlot *s = &r->sh->slot[r->pos % RING_SLOTS];
    __atomic_store_n(&s->len, len, __ATOMIC_RELAXED);
    __atomic_store_n(&s->flags, flags, __ATOMIC_RELAXED);
    r->pos++;
    return 0;
}

bool ring_producer_publish(Ring *r) {
    if (r->broken || r->role != RING_PRODUCER || r->pos == r->published) {
        return false;
    }
    /* Release: slot contents before the index that covers them. */
    store_release(&r->sh->head, r->pos);
    r->published = r->pos;
    /* Our head store before reading the consumer's flag (it does the
     * mirror image): one of us sees the other. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(&r->sh->consumer_waiting, __ATOMIC_RELAXED)) {
        __atomic_store_n(&r->sh->consumer_waiting, 0, __ATOMIC_RELAXED);
        return true;
    }
    return false;
}

bool ring_producer_prepare_wait(Ring *r) {
    if (r->broken || r->role != RING_PRODUCER) {
        return false;
    }
    __atomic_store_n(&r->sh->producer_waiting, 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (refresh_tail(r) < 0 || r->pos - r->peer < RING_SLOTS) {
        __atomic_store_n(&r->sh->producer_waiting, 0, __ATOMIC_RELAXED);
        return false;
    }
    return true;
}

/* ---- consumer -------------------------------------------------------------- */

/* Reads the producer's head again: forward only, at most a ring ahead. */
static int refresh_head(Ring *r) {
    uint32_t untrusted_head = load_acquire(&r->sh->head);
    if (untrusted_head - r->published > RING_SLOTS || untrusted_head - r->peer > RING_SLOTS) {
        return ring_break(r);
    }
    r->peer = untrusted_head;
    return 0;
}

int ring_consumer_peek(Ring *r, RingFrame *ret) {
    if (r->broken) {
        return r->broken;
    }
    if (r->role != RING_CONSUMER) {
        return -EINVAL;
    }
    if (r->pos == r->peer) {
        int k = refresh_head(r);
        if (k < 0) {
            return k;
        }
        if (r->pos == r->peer) {
            return 0;
        }
    }
    const RingSlot *s = &r->sh->slot[r->pos % RING_SLOTS];
    /* Read once; the producer may be rewriting it. */
    uint32_t untrusted_len = __atomic_load_n(&s->len, __ATOMIC_RELAXED);
    uint32_t untrusted_flags = __atomic_load_n(&s->flags, __ATOMIC_RELAXED);
    if (untrusted_len > RING_FRAME_MAX) {
        return -EBADMSG;
    }
    /* The length is checked; the flags and the bytes stay the peer's. */
    *ret = (RingFrame){.data = s->data, .len = untrusted_len, .untrusted_flags = untrusted_flags};
    return 1;
}

void ring_consumer_next(Ring *r) {
    if (r->role == RING_CONSUMER && !r->broken && r->pos != r->peer) {
        r->pos++;
    }
}

int ring_consumer_pop_copy(Ring *r, void *buf, size_t bufsize, size_t *ret_len,
                           uint32_t *ret_flags) {
    RingFrame f;
    int k = ring_consumer_peek(r, &f);
    if (k <= 0) {
        return k;
    }
    if (f.len > bufsize) {
        return -ENOBUFS;
    }
    memcpy(buf, f.data, f.len);
    ring_consumer_next(r);
    *ret_len = f.len;
    if (ret_flags) {
        *ret_flags = f.untrusted_flags;
    }
    return 1;
}

bool ring_consumer_release(Ring *r) {
    if (r->broken || r->role != RING_CONSUMER || r->pos == r->published) {
        return false;
    }
    store_release(&r->sh->tail, r->pos);
    r->published = r->pos;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(&r->sh->producer_waiting, __ATOMIC_RELAXED)) {
        __atomic_store_n(&r->sh->producer_waiting, 0, __ATOMIC_RELAXED);
        return true;
    }
    return false;
}

bool ring_consumer_prepare_wait(Ring *r) {
    if (r->broken || r->role != RING_CONSUMER) {
        return false;
    }
    __atomic_store_n(&r->sh->consumer_waiting, 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (refresh_head(r) < 0 || r->pos != r->peer) {
        __atomic_store_n(&r->sh->consumer_waiting, 0, __ATOMIC_RELAXED);
        return false;
    }
    return true;
}
