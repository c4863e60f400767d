/* The ring consumer (and producer) facing a hostile peer: the input is
 * what the peer left in shared memory (indexes, wait flags, slot headers,
 * frames), changed again between rounds. Nothing read may go past a slot,
 * no length past RING_FRAME_MAX, and a broken ring stays broken.
 *
 * Input: [shared memory image...]; the last 16 bytes, when present, are
 * head/tail values written in the middle of the run. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "switch/net/ring.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int ring_fd(uint8_t **ret_raw) {
    static int fd = -1;
    static uint8_t *raw;
    if (fd < 0) {
        if (ring_memfd_new(&fd) < 0) {
            abort();
        }
        raw = mmap(NULL, ring_shm_size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (raw == MAP_FAILED) {
            abort();
        }
    }
    *ret_raw = raw;
    return fd;
}

static void drain(Ring *c) {
    static uint8_t buf[RING_FRAME_MAX];
    volatile uint8_t sink = 0;
    for (int i = 0; i < 2 * (int)RING_SLOTS; i++) {
        RingFrame f;
        /* Never more than a ring, and nothing once broken. */
        unsigned ready = ring_consumer_ready(c);
        if (ready > RING_SLOTS || (ready > 0 && ring_broken(c))) {
            abort();
        }
        int k = ring_consumer_peek(c, &f);
        if (ready > 0 && k == 0) {
            abort();
        }
        if (k == -EBADMSG) {
            ring_consumer_next(c);
            continue;
        }
        if (k < 0) {
            if (ring_broken(c) != k || ring_consumer_peek(c, &f) != k) {
                abort();
            }
            return;
        }
        if (k == 0) {
            ring_consumer_release(c);
            ring_consumer_prepare_wait(c);
            return;
        }
        if (f.len > RING_FRAME_MAX) {
            abort();
        }
        if (f.len > 0) {
            sink ^= f.data[0];
            sink ^= f.data[f.len - 1];
        }
        size_t len;
        if (ring_consumer_pop_copy(c, buf, i % 3 ? sizeof(buf) : 64, &len, NULL) == -ENOBUFS) {
            ring_consumer_next(c);
        }
        if (i % 8 == 7) {
            ring_consumer_release(c);
        }
    }
    (void)sink;
}

static void fill(Ring *p) {
    for (int i = 0; i < (int)RING_SLOTS + 2; i++) {
        void *slot;
        int k = ring_producer_slot(p, &slot);
        if (k < 0) {
            ring_producer_prepare_wait(p);
            break;
        }
        memset(slot, i, 32);
        ring_producer_commit(p, 32, 0);
        if (i % 5 == 4) {
            ring_producer_publish(p);
        }
    }
    ring_producer_publish(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *raw;
    int fd = ring_fd(&raw);
    uint32_t later[4] = {0};
    bool have_later = size >= sizeof(later);
    if (have_later) {
        memcpy(later, data + size - sizeof(later), sizeof(later));
        size -= sizeof(later);
    }
    memset(raw, 0, ring_shm_size());
    memcpy(raw, data, size < ring_shm_size() ? size : ring_shm_size());

    Ring *c = NULL, *p = NULL;
    if (ring_attach(fd, RING_CONSUMER, &c) == 0) {
        drain(c);
    }
    if (ring_attach(fd, RING_PRODUCER, &p) == 0) {
        fill(p);
    }
    if (have_later) {
        /* The peer moves the indexes under us. */
        memcpy(raw, &later[0], 4);      /* head */
        memcpy(raw + 64, &later[1], 4); /* tail */
        memcpy(raw + 128, &later[2], 4);
        memcpy(raw + 192, &later[3], 4);
        if (c) {
            drain(c);
        }
        if (p) {
            fill(p);
        }
    }
    ring_free(c);
    ring_free(p);
    return 0;
}
