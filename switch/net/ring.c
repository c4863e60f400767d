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
    uint8_t unused[RING_SLOT_SIZE - RING_SLOT_HDR - RING_FRAME_MAX]; /* ring.h */
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

/* One side's half of the wakeup protocol (ring.h): its index stored
 * (release: the slots before the index that covers them), a full fence,
 * then the other side's wait flag read. true, the flag cleared, when the
 * other side sleeps and must be woken. */
static bool store_and_check_waiter(uint32_t *index, uint32_t value, uint32_t *peer_waiting) {
    store_release(index, value);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(peer_waiting, __ATOMIC_RELAXED)) {
        __atomic_store_n(peer_waiting, 0, __ATOMIC_RELAXED);
        return true;
    }
    return false;
}

/* The other half, before sleeping: our wait flag raised, a full fence,
 * then refresh() looks at the other side's index again; the flag goes
 * down again when still_blocked() no longer holds (or the ring broke).
 * true when we may sleep. */
static bool raise_wait_flag(Ring *r, uint32_t *waiting, int (*refresh)(Ring *r),
                            bool (*still_blocked)(const Ring *r)) {
    __atomic_store_n(waiting, 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (refresh(r) < 0 || !still_blocked(r)) {
        __atomic_store_n(waiting, 0, __ATOMIC_RELAXED);
        return false;
    }
    return true;
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
    r->published = r->pos;
    return store_and_check_waiter(&r->sh->head, r->pos, &r->sh->consumer_waiting);
}

static bool producer_full(const Ring *r) {
    return r->pos - r->peer >= RING_SLOTS;
}

bool ring_producer_prepare_wait(Ring *r) {
    if (r->broken || r->role != RING_PRODUCER) {
        return false;
    }
    return raise_wait_flag(r, &r->sh->producer_waiting, refresh_tail, producer_full);
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

unsigned ring_consumer_ready(Ring *r) {
    if (r->broken || r->role != RING_CONSUMER) {
        return 0;
    }
    if (r->pos == r->peer && refresh_head(r) < 0) {
        return 0;
    }
    return r->peer - r->pos; /* refresh_head kept it within a ring */
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
    r->published = r->pos;
    return store_and_check_waiter(&r->sh->tail, r->pos, &r->sh->producer_waiting);
}

static bool consumer_empty(const Ring *r) {
    return r->pos == r->peer;
}

bool ring_consumer_prepare_wait(Ring *r) {
    if (r->broken || r->role != RING_CONSUMER) {
        return false;
    }
    return raise_wait_flag(r, &r->sh->consumer_waiting, refresh_head, consumer_empty);
}
