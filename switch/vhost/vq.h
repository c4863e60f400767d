/* Split virtqueue walker. The rings live in guest memory and the guest may
 * change them at any time: every shared field is read once into a local,
 * every index checked against the ring size, every chain bounded, every
 * buffer address translated and clamped to its memory region: head and
 * next indexes below the ring size, a chain visits at most as many
 * descriptors as its table has (no loops), indirect tables only when
 * negotiated and bounded by the ring size, device-readable buffers before
 * device-writable ones, buffers split at region boundaries. The first
 * violation marks the queue broken: every later call returns the same
 * error, and the caller treats the device as broken.
 *
 * Notifications: EVENT_IDX or the flags, one used->idx publish per batch
 * (vq_flush), and vq_enable_notify() looks again after arming, so that a
 * kick is never lost. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "vu-mem.h"

#define VQ_MAX_SIZE 32768
/* Segments of one element (a descriptor split at a region boundary counts
 * twice). Longer chains are refused as a violation. */
#define VQ_MAX_SEGS 256

typedef struct Vq Vq;

typedef struct VqConfig {
    const VuMem *mem; /* translates buffer addresses; must outlive the Vq */
    void *desc;       /* host pointers to the three parts, sized by vq_*_size() */
    void *avail;
    void *used;
    uint16_t last_avail; /* SET_VRING_BASE: next avail entry to take and next used entry */
    bool event_idx;      /* VIRTIO_RING_F_EVENT_IDX negotiated */
    bool indirect;       /* VIRTIO_RING_F_INDIRECT_DESC negotiated */
} VqConfig;

typedef struct VqSeg {
    void *base;
    uint32_t len;
} VqSeg;

/* One descriptor chain: n_out device-readable segments, then n_in
 * device-writable ones. */
typedef struct VqElem {
    uint16_t head;
    unsigned n_out;
    unsigned n_in;
    uint64_t out_len;
    uint64_t in_len;
    VqSeg seg[VQ_MAX_SEGS];
} VqElem;

/* Bytes each part of a ring of num entries occupies (event fields
 * included). num is 1..VQ_MAX_SIZE. */
uint64_t vq_desc_size(unsigned num);
uint64_t vq_avail_size(unsigned num);
uint64_t vq_used_size(unsigned num);
/* Alignment each part needs (virtio 1.x, split rings). */
#define VQ_DESC_ALIGN 16
#define VQ_AVAIL_ALIGN 2
#define VQ_USED_ALIGN 4

/* num: the ring size, a power of two in 1..VQ_MAX_SIZE. The three parts
 * must be aligned as above. */
int vq_new(const VqConfig *c, unsigned num, Vq **ret);
void vq_free(Vq *vq);

/* Takes the next available chain: 1 and *elem filled, 0 when none is
 * available, or the (sticky) negative errno of a violation. */
int vq_pop(Vq *vq, VqElem *elem);
/* A hint ahead of vq_pop: brings the descriptors and the first bytes of
 * the buffers of n available chains, skip chains past the next one vq_pop
 * takes, into the cache (for writing when write), so that what the guest
 * wrote on another CPU is fetched for a batch at once rather than one
 * miss after the other. Reads avail->idx only when the chains seen at the
 * last read are all taken. The chains available (>= 0, maybe more than
 * skip + n), or the (sticky) negative errno of a violation. */
int vq_prefetch(Vq *vq, unsigned skip, unsigned n, bool write);
/* Gives the last n popped chains back (not yet pushed), e.g. when a frame
 * does not fit the receive buffers the guest offered so far. */
int vq_rewind(Vq *vq, unsigned n);
/* Writes a used entry (not visible to the guest before vq_flush). */
int vq_push(Vq *vq, uint16_t head, uint32_t len);
/* Publishes every pushed entry at once (release). */
void vq_flush(Vq *vq);
/* After vq_flush: whether the guest asked to be interrupted now
 * (EVENT_IDX's used_event, or the NO_INTERRUPT flag). */
bool vq_need_notify(Vq *vq);
/* Asks the guest to kick on new buffers, then looks again: returns true
 * when buffers arrived meanwhile (the caller must go on processing, or a
 * kick could be lost). */
bool vq_enable_notify(Vq *vq);
/* The same when chains were taken and given back (vq_rewind) because they
 * were not enough: seen is vq_last_avail() when vq_pop found no more, i.e.
 * the avail->idx the driver had reached. Asks for a kick once avail->idx
 * moves past seen; returns true when it already has. */
bool vq_enable_notify_after(Vq *vq, uint16_t seen);
/* Tells the guest that kicks are not needed while we are processing. */
void vq_disable_notify(Vq *vq);

/* Whether the driver made chains available that vq_pop has not taken;
 * reads avail->idx only (no notification is armed or disarmed). */
bool vq_has_avail(const Vq *vq);
/* Whether avail->idx is no longer seen (read-only, as vq_has_avail). */
bool vq_avail_moved(const Vq *vq, uint16_t seen);
/* The ring size (entries). */
unsigned vq_size(const Vq *vq);
/* The next avail index to take (GET_VRING_BASE). */
uint16_t vq_last_avail(const Vq *vq);
/* 0, or the negative errno that broke the queue. */
int vq_broken(const Vq *vq);
