/* Single-producer single-consumer frame ring in a sealed memfd, shared by
 * two vm-switch children. RING_SLOTS slots, each a full frame plus its
 * header. The producer publishes once per batch (release), the consumer
 * releases the slots it took once per batch; each side keeps a cached copy
 * of the other's index and reads it again only when the ring looks full or
 * empty.
 *
 * Wakeups cannot be lost: a side about to sleep raises its "wait" flag,
 * issues a full fence and looks at the ring again; the other side stores
 * its index, issues a full fence and reads the flag. One of them sees the
 * other's store. The eventfds themselves belong to the caller:
 * ring_producer_publish() and ring_consumer_release() say when to signal.
 *
 * The ring is a trust boundary: the peer is another process that may be
 * compromised. Indexes that do not make sense break the ring (-EPROTO);
 * a slot whose length does not fit is reported (-EBADMSG) and skipped. A
 * frame's bytes may change while we read them: copy before inspecting.
 *
 * The memfd is sealed against shrinking, growing and further sealing, and
 * ring_attach() refuses one without those seals: a peer cannot turn our
 * accesses into SIGBUS. Head, tail and both wait flags are on separate
 * cache lines. A producer killed in the middle of a batch leaves frames it
 * never published; the consumer never sees them (the head moves once per
 * batch). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A batch can be as large as a round's budget (child.c): the two children
 * of a pair often share a CPU, and each hand-over between them is a
 * context switch, so the fewer the better. Measured with the bench's load
 * (64-byte frames, both children on one CPU), context switches per frame
 * and the children's CPU time per frame: 64 slots 0.017 and 133-141 ns,
 * 128 slots 0.008-0.010 and 116-119 ns, 256 slots 0.004-0.006 and
 * 108-114 ns, 512 slots the same as 256. 256 slots: 528 KiB of shared
 * memory per ring, two rings per router-client pair. */
#define RING_SLOTS 256u
#define RING_SLOT_HDR 8u
/* Largest frame a slot holds (an Ethernet frame with a VLAN tag fits). */
#define RING_FRAME_MAX 2040u
/* From one slot to the next: a header and the largest frame (2 KiB), and
 * one cache line more. With slots 2 KiB apart, the first lines of all of
 * them (all a 64-byte frame touches) fell into one set in 32 of the
 * cache, and the rings did not stay in the CPU's caches. */
#define RING_SLOT_SIZE (RING_SLOT_HDR + RING_FRAME_MAX + 64u)

typedef enum RingRole {
    RING_PRODUCER,
    RING_CONSUMER,
} RingRole;

typedef struct Ring Ring;

/* Size of the shared memory of one ring. */
size_t ring_shm_size(void);
/* A new ring: a memfd of ring_shm_size() bytes, zeroed, sealed against
 * shrinking, growing and further sealing. */
int ring_memfd_new(int *ret_fd);
/* Maps a ring memfd for one side. Refuses an fd of the wrong size or
 * without the seals (a peer could shrink it under us: SIGBUS), or whose
 * indexes are already inconsistent. The fd is not consumed. */
int ring_attach(int fd, RingRole role, Ring **ret);
void ring_free(Ring *r);

/* 0, or -EPROTO once the peer was caught corrupting the indexes. */
int ring_broken(const Ring *r);

/* Producer. A slot to write the next frame into (RING_FRAME_MAX bytes):
 * 0, -ENOBUFS when the ring is full, -EPROTO when broken. */
int ring_producer_slot(Ring *r, void **ret_data);
/* Finishes the frame written into the slot: len bytes (<= RING_FRAME_MAX)
 * and flags for the consumer. Not visible before ring_producer_publish. */
int ring_producer_commit(Ring *r, uint32_t len, uint32_t flags);
/* Makes every committed frame visible at once. Returns true when the
 * consumer sleeps and must be woken (its eventfd written). */
bool ring_producer_publish(Ring *r);
/* Before sleeping on a full ring: true when still full (sleep until the
 * consumer signals), false when space appeared meanwhile. */
bool ring_producer_prepare_wait(Ring *r);

typedef struct RingFrame {
    const uint8_t *data;      /* in shared memory: the producer may still write */
    uint32_t len;             /* <= RING_FRAME_MAX */
    uint32_t untrusted_flags; /* as the producer wrote them */
} RingFrame;

/* Consumer. The next frame: 1 and *ret filled, 0 when empty, -EBADMSG for
 * a slot with an impossible length (call ring_consumer_next to skip it),
 * -EPROTO when broken. */
int ring_consumer_peek(Ring *r, RingFrame *ret);
/* Frames published and not yet taken (reading the producer's head again
 * only when none are left); 0 also when broken. */
unsigned ring_consumer_ready(Ring *r);
/* Done with the frame peek returned (or the bad slot). */
void ring_consumer_next(Ring *r);
/* Peek, copy the frame into buf (bufsize >= len needed, else -ENOBUFS and
 * the frame stays), next. Same returns as peek. */
int ring_consumer_pop_copy(Ring *r, void *buf, size_t bufsize, size_t *ret_len,
                           uint32_t *ret_flags);
/* Hands the slots taken so far back to the producer. Returns true when the
 * producer waits for space and must be woken. */
bool ring_consumer_release(Ring *r);
/* Before sleeping on an empty ring: true when still empty (sleep until the
 * producer signals), false when a frame arrived meanwhile. */
bool ring_consumer_prepare_wait(Ring *r);
