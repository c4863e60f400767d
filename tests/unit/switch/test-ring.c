/* switch/ring: the SPSC frame ring, its wakeup protocol, a consumer and a
 * producer facing a hostile peer, and two processes moving frames through
 * it (one killed in the middle of a batch). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "switch/net/ring.h"
#include "util.h"

/* The shared layout, as the other side sees it. */
#define OFF_HEAD 0
#define OFF_TAIL 64
#define OFF_SLOTS 256
#define SLOT(i) (OFF_SLOTS + (i)*RING_SLOT_SIZE)

typedef struct Fixture {
    int fd;
    uint8_t *raw; /* a hostile peer's view */
    Ring *p;
    Ring *c;
} Fixture;

static int setup(void **state) {
    Fixture *f = calloc(1, sizeof(*f));
    assert_int_equal(ring_memfd_new(&f->fd), 0);
    f->raw = mmap(NULL, ring_shm_size(), PROT_READ | PROT_WRITE, MAP_SHARED, f->fd, 0);
    assert_true(f->raw != MAP_FAILED);
    assert_int_equal(ring_attach(f->fd, RING_PRODUCER, &f->p), 0);
    assert_int_equal(ring_attach(f->fd, RING_CONSUMER, &f->c), 0);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    Fixture *f = *state;
    ring_free(f->p);
    ring_free(f->c);
    munmap(f->raw, ring_shm_size());
    close(f->fd);
    free(f);
    return 0;
}

static uint32_t *u32_at(Fixture *f, size_t off) {
    return (uint32_t *)(f->raw + off);
}

static void produce(Ring *p, const void *data, uint32_t len) {
    void *slot;
    assert_int_equal(ring_producer_slot(p, &slot), 0);
    memcpy(slot, data, len);
    assert_int_equal(ring_producer_commit(p, len, 7), 0);
}

/* ---- memfd and attach -------------------------------------------------------- */

static void test_memfd(void **state) {
    Fixture *f = *state;
    struct stat st;
    assert_int_equal(fstat(f->fd, &st), 0);
    assert_int_equal(st.st_size, ring_shm_size());
    assert_true(ring_shm_size() >= OFF_SLOTS + RING_SLOTS * RING_SLOT_SIZE);
    int seals = fcntl(f->fd, F_GET_SEALS);
    assert_int_equal(seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL),
                     F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
    /* Nobody can shrink it under the mappings. */
    assert_int_equal(ftruncate(f->fd, 4096), -1);
    assert_int_equal(errno, EPERM);
    assert_int_equal(fcntl(f->fd, F_ADD_SEALS, F_SEAL_WRITE), -1);
    assert_int_equal(fd_cloexec(f->fd, true), 0);
    assert_true(fcntl(f->fd, F_GETFD) & FD_CLOEXEC);
}

static void test_attach_rejects(void **state) {
    Ring *r = NULL;
    /* Unsealed, right size. */
    int fd = memfd_create("x", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    assert_int_equal(ftruncate(fd, (off_t)ring_shm_size()), 0);
    assert_int_equal(ring_attach(fd, RING_CONSUMER, &r), -EPERM);
    /* Sealed, wrong size. */
    close(fd);
    fd = memfd_create("x", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    assert_int_equal(ftruncate(fd, 4096), 0);
    assert_int_equal(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), 0);
    assert_int_equal(ring_attach(fd, RING_CONSUMER, &r), -EINVAL);
    close(fd);
    /* Not a file. */
    fd = eventfd(0, EFD_CLOEXEC);
    assert_int_equal(ring_attach(fd, RING_PRODUCER, &r), -EINVAL);
    close(fd);
    assert_int_equal(ring_attach(-1, RING_PRODUCER, &r), -EBADF);
    assert_null(r);
}

static void test_attach_inconsistent(void **state) {
    Fixture *f = *state;
    Ring *r = NULL;
    *u32_at(f, OFF_HEAD) = 10 + RING_SLOTS + 1;
    *u32_at(f, OFF_TAIL) = 10;
    assert_int_equal(ring_attach(f->fd, RING_CONSUMER, &r), -EPROTO);
    assert_int_equal(ring_attach(f->fd, RING_PRODUCER, &r), -EPROTO);
    assert_int_equal(ring_attach(f->fd, 7, &r), -EINVAL);
    /* Consistent, not zero: both sides take it up there. */
    *u32_at(f, OFF_HEAD) = 0xfffffff0u + 70;
    *u32_at(f, OFF_TAIL) = 0xfffffff0u + 10;
    assert_int_equal(ring_attach(f->fd, RING_CONSUMER, &r), 0);
    RingFrame fr;
    assert_int_equal(ring_consumer_peek(r, &fr), 1);
    ring_free(r);
}

/* ---- one process ------------------------------------------------------------- */

static void test_publish_per_batch(void **state) {
    Fixture *f = *state;
    RingFrame fr;
    uint8_t buf[RING_FRAME_MAX];
    size_t len;
    uint32_t flags;

    assert_int_equal(ring_consumer_peek(f->c, &fr), 0);
    produce(f->p, "one", 3);
    produce(f->p, "two!", 4);
    /* Committed is not published. */
    assert_int_equal(ring_consumer_peek(f->c, &fr), 0);
    assert_int_equal(*u32_at(f, OFF_HEAD), 0);
    ring_producer_publish(f->p);
    assert_int_equal(*u32_at(f, OFF_HEAD), 2);
    assert_int_equal(ring_consumer_peek(f->c, &fr), 1);
    assert_int_equal(fr.len, 3);
    assert_int_equal(fr.untrusted_flags, 7);
    assert_memory_equal(fr.data, "one", 3);
    /* Peek again: the same frame until next. */
    assert_int_equal(ring_consumer_peek(f->c, &fr), 1);
    assert_int_equal(fr.len, 3);
    ring_consumer_next(f->c);
    assert_int_equal(ring_consumer_pop_copy(f->c, buf, 3, &len, NULL), -ENOBUFS);
    assert_int_equal(ring_consumer_pop_copy(f->c, buf, sizeof(buf), &len, &flags), 1);
    assert_int_equal(len, 4);
    assert_memory_equal(buf, "two!", 4);
    assert_int_equal(ring_consumer_peek(f->c, &fr), 0);
    /* Released once for the batch. */
    assert_int_equal(*u32_at(f, OFF_TAIL), 0);
    ring_consumer_release(f->c);
    assert_int_equal(*u32_at(f, OFF_TAIL), 2);
    /* Roles. */
    void *slot;
    assert_int_equal(ring_producer_slot(f->c, &slot), -EINVAL);
    assert_int_equal(ring_consumer_peek(f->p, &fr), -EINVAL);
    assert_int_equal(ring_producer_commit(f->p, RING_FRAME_MAX + 1, 0), -EINVAL);
}

static void test_full(void **state) {
    Fixture *f = *state;
    uint8_t frame[RING_FRAME_MAX];
    void *slot;
    memset(frame, 0xab, sizeof(frame));
    for (unsigned i = 0; i < RING_SLOTS; i++) {
        produce(f->p, frame, RING_FRAME_MAX);
    }
    assert_int_equal(ring_producer_slot(f->p, &slot), -ENOBUFS);
    assert_int_equal(ring_producer_commit(f->p, 1, 0), -EINVAL);
    ring_producer_publish(f->p);
    RingFrame fr;
    assert_int_equal(ring_consumer_peek(f->c, &fr), 1);
    assert_int_equal(fr.len, RING_FRAME_MAX);
    ring_consumer_next(f->c);
    /* Taken but not released: still full for the producer. */
    assert_int_equal(ring_producer_slot(f->p, &slot), -ENOBUFS);
    ring_consumer_release(f->c);
    assert_int_equal(ring_producer_slot(f->p, &slot), 0);
}

static void test_wakeups(void **state) {
    Fixture *f = *state;
    RingFrame fr;
    /* Nothing published: no wakeup needed. */
    assert_false(ring_producer_publish(f->p));
    /* The consumer goes to sleep on an empty ring. */
    assert_true(ring_consumer_prepare_wait(f->c));
    produce(f->p, "x", 1);
    assert_true(ring_producer_publish(f->p)); /* it must be woken */
    produce(f->p, "y", 1);
    assert_false(ring_producer_publish(f->p)); /* woken already */
    /* A consumer about to sleep sees the frame instead. */
    assert_false(ring_consumer_prepare_wait(f->c));
    produce(f->p, "z", 1);
    assert_false(ring_producer_publish(f->p));

    /* The producer waits for space. */
    while (ring_consumer_peek(f->c, &fr) == 1) {
        ring_consumer_next(f->c);
    }
    assert_false(ring_consumer_release(f->c)); /* nobody waits */
    for (unsigned i = 0; i < RING_SLOTS; i++) {
        produce(f->p, "f", 1);
    }
    ring_producer_publish(f->p);
    assert_true(ring_producer_prepare_wait(f->p));
    assert_int_equal(ring_consumer_peek(f->c, &fr), 1);
    ring_consumer_next(f->c);
    assert_true(ring_consumer_release(f->c));
    assert_false(ring_producer_prepare_wait(f->p)); /* there is room now */
}

/* ---- hostile peers -------------------------------------------------------------- */

static void test_consumer_head_too_far(void **state) {
    Fixture *f = *state;
    RingFrame fr;
    *u32_at(f, OFF_HEAD) = RING_SLOTS + 1;
    assert_int_equal(ring_consumer_peek(f->c, &fr), -EPROTO);
    assert_int_equal(ring_broken(f->c), -EPROTO);
    /* Sticky, even once the index looks fine again. */
    *u32_at(f, OFF_HEAD) = 1;
    assert_int_equal(ring_consumer_peek(f->c, &fr), -EPROTO);
    assert_false(ring_consumer_prepare_wait(f->c));
    assert_false(ring_consumer_release(f->c));
}

static void test_consumer_ready(void **state) {
    Fixture *f = *state;
    RingFrame fr;
    assert_int_equal(ring_consumer_ready(f->c), 0);
    produce(f->p, "a", 1);
    produce(f->p, "b", 1);
    assert_int_equal(ring_consumer_ready(f->c), 0); /* committed, not published */
    ring_producer_publish(f->p);
    assert_int_equal(ring_consumer_ready(f->c), 2);
    /* The head is read again only once the frames seen are taken. */
    produce(f->p, "c", 1);
    ring_producer_publish(f->p);
    assert_int_equal(ring_consumer_ready(f->c), 2);
    assert_int_equal(ring_consumer_peek(f->c, &fr), 1);
    ring_consumer_next(f->c);
    assert_int_equal(ring_consumer_ready(f->c), 1);
    ring_consumer_next(f->c);
    assert_int_equal(ring_consumer_ready(f->c), 1);
    assert_int_equal(ring_consumer_peek(f->c, &fr), 1);
    assert_memory_equal(fr.data, "c", 1);
    assert_int_equal(ring_consumer_ready(f->p), 0); /* not the producer's */
    /* A made-up head breaks the ring, as peek would. */
    ring_consumer_next(f->c);
    *u32_at(f, OFF_HEAD) = 3 + RING_SLOTS + 1;
    assert_int_equal(ring_consumer_ready(f->c), 0);
    assert_int_equal(ring_broken(f->c), -EPROTO);
}

static void test_consumer_head_backwards(void **state) {
    Fixture *f = *state;
    RingFrame fr;
    *u32_at(f, OFF_HEAD) = 5;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(ring_consumer_peek(f->c, &fr), 1);
        ring_consumer_next(f->c);
    }
    *u32_at(f, OFF_HEAD) = 3;
    assert_int_equal(ring_consumer_peek(f->c, &fr), -EPROTO);
}

static void test_consumer_head_wraps_back(void **state) {
    Fixture *f = *state;
    RingFrame fr;
    *u32_at(f, OFF_HEAD) = 0xffffffff;
    assert_int_equal(ring_consumer_peek(f->c, &fr), -EPROTO);
}

static void test_consumer_bad_len(void **state) {
    Fixture *f = *state;
    RingFrame fr;
    *u32_at(f, SLOT(0)) = RING_FRAME_MAX + 1;
    *u32_at(f, SLOT(1)) = 0xffffffff;
    *u32_at(f, SLOT(2)) = RING_FRAME_MAX;
    memcpy(f->raw + SLOT(2) + RING_SLOT_HDR, "marker", 6);
    *u32_at(f, OFF_HEAD) = 3;
    assert_int_equal(ring_consumer_peek(f->c, &fr), -EBADMSG);
    ring_consumer_next(f->c);
    assert_int_equal(ring_consumer_peek(f->c, &fr), -EBADMSG);
    ring_consumer_next(f->c);
    assert_int_equal(ring_consumer_peek(f->c, &fr), 1);
    assert_int_equal(fr.len, RING_FRAME_MAX);
    assert_memory_equal(fr.data, "marker", 6);
    ring_consumer_next(f->c);
    ring_consumer_next(f->c); /* nothing more to skip: no effect */
    assert_int_equal(ring_consumer_peek(f->c, &fr), 0);
    assert_int_equal(ring_broken(f->c), 0);
}

static void test_producer_tail_beyond_head(void **state) {
    Fixture *f = *state;
    void *slot;
    for (unsigned i = 0; i < RING_SLOTS; i++) {
        produce(f->p, "a", 1);
    }
    ring_producer_publish(f->p);
    *u32_at(f, OFF_TAIL) = RING_SLOTS + 1;
    assert_int_equal(ring_producer_slot(f->p, &slot), -EPROTO);
    assert_int_equal(ring_broken(f->p), -EPROTO);
    assert_int_equal(ring_producer_commit(f->p, 1, 0), -EPROTO);
    assert_false(ring_producer_publish(f->p));
}

static void test_producer_tail_backwards(void **state) {
    Fixture *f = *state;
    void *slot;
    for (unsigned i = 0; i < RING_SLOTS; i++) {
        produce(f->p, "a", 1);
    }
    ring_producer_publish(f->p);
    *u32_at(f, OFF_TAIL) = 10;
    assert_int_equal(ring_producer_slot(f->p, &slot), 0);
    assert_int_equal(ring_producer_commit(f->p, 1, 0), 0);
    ring_producer_publish(f->p);
    for (unsigned i = 0; i < 9; i++) {
        produce(f->p, "a", 1);
    }
    *u32_at(f, OFF_TAIL) = 5;
    assert_int_equal(ring_producer_slot(f->p, &slot), -EPROTO);
}

/* ---- two processes -------------------------------------------------------------- */

#define STRESS_FRAMES 200000u

static uint32_t frame_len(uint32_t seq) {
    return 16 + (seq * 2654435761u) % (RING_FRAME_MAX - 15);
}

static uint32_t checksum(const uint8_t *p, size_t n) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ p[i]) * 16777619u;
    }
    return h;
}

/* seq, then bytes derived from it, then a checksum of all before. */
static void fill_frame(uint8_t *p, uint32_t seq, uint32_t len) {
    memcpy(p, &seq, 4);
    for (uint32_t i = 4; i < len - 4; i++) {
        p[i] = (uint8_t)(seq * 31 + i);
    }
    uint32_t sum = checksum(p, len - 4);
    memcpy(p + len - 4, &sum, 4);
}

static void check_frame(const uint8_t *p, size_t len, uint32_t want_seq) {
    uint32_t seq, sum;
    assert_true(len >= 16);
    memcpy(&seq, p, 4);
    assert_int_equal(seq, want_seq);
    assert_int_equal(len, frame_len(seq));
    memcpy(&sum, p + len - 4, 4);
    assert_int_equal(sum, checksum(p, len - 4));
}

static void wait_fd(int efd) {
    struct pollfd pfd = {.fd = efd, .events = POLLIN};
    uint64_t v;
    if (poll(&pfd, 1, 10000) != 1) {
        _exit(3);
    }
    if (read(efd, &v, sizeof(v)) != sizeof(v)) {
        _exit(4);
    }
}

static void signal_fd(int efd) {
    uint64_t one = 1;
    if (write(efd, &one, sizeof(one)) != sizeof(one)) {
        _exit(5);
    }
}

/* The producer child: frames 0..n-1 in batches of 1..16. With die_after,
 * it commits part of one more batch and kills itself before publishing. */
static _noreturn_ void producer_child(int fd, int wake_consumer, int wake_producer, uint32_t n,
                                      uint32_t die_after) {
    Ring *p;
    if (ring_attach(fd, RING_PRODUCER, &p) < 0) {
        _exit(2);
    }
    uint32_t seq = 0;
    uint32_t batch = 0;
    while (seq < n) {
        uint32_t want = 1 + (batch++ * 7) % 16;
        for (uint32_t k = 0; k < want && seq < n; k++) {
            void *slot;
            int r = ring_producer_slot(p, &slot);
            while (r == -ENOBUFS) {
                /* Publish what we have, then sleep until there is room. */
                if (ring_producer_publish(p)) {
                    signal_fd(wake_consumer);
                }
                if (ring_producer_prepare_wait(p)) {
                    wait_fd(wake_producer);
                }
                r = ring_producer_slot(p, &slot);
            }
            if (r < 0) {
                _exit(6);
            }
            fill_frame(slot, seq, frame_len(seq));
            if (ring_producer_commit(p, frame_len(seq), seq) < 0) {
                _exit(7);
            }
            seq++;
        }
        if (die_after && seq >= die_after) {
            /* Half a batch written into the slots, never published. */
            for (int k = 0; k < 5; k++) {
                void *slot;
                if (ring_producer_slot(p, &slot) == 0) {
                    memset(slot, 0xee, 64);
                    ring_producer_commit(p, 64, 0xdead);
                }
            }
            raise(SIGKILL);
        }
        if (ring_producer_publish(p)) {
            signal_fd(wake_consumer);
        }
    }
    _exit(0);
}

typedef struct Pair {
    int fd;
    int wake_consumer;
    int wake_producer;
    pid_t pid;
} Pair;

static void start_pair(Pair *pp, uint32_t n, uint32_t die_after) {
    assert_int_equal(ring_memfd_new(&pp->fd), 0);
    pp->wake_consumer = eventfd(0, EFD_CLOEXEC);
    pp->wake_producer = eventfd(0, EFD_CLOEXEC);
    pp->pid = fork();
    assert_true(pp->pid >= 0);
    if (pp->pid == 0) {
        producer_child(pp->fd, pp->wake_consumer, pp->wake_producer, n, die_after);
    }
}

static void stop_pair(Pair *pp, int want_status) {
    int status;
    assert_int_equal(waitpid(pp->pid, &status, 0), pp->pid);
    assert_int_equal(status, want_status);
    close(pp->fd);
    close(pp->wake_consumer);
    close(pp->wake_producer);
}

static void test_two_processes(void **state) {
    Pair pp;
    Ring *c;
    static uint8_t buf[RING_FRAME_MAX];
    start_pair(&pp, STRESS_FRAMES, 0);
    assert_int_equal(ring_attach(pp.fd, RING_CONSUMER, &c), 0);
    uint32_t seq = 0, sleeps = 0;
    while (seq < STRESS_FRAMES) {
        size_t len;
        uint32_t flags;
        int r = ring_consumer_pop_copy(c, buf, sizeof(buf), &len, &flags);
        assert_true(r >= 0);
        if (r == 1) {
            check_frame(buf, len, seq);
            assert_int_equal(flags, seq);
            seq++;
            /* Release in batches of 8. */
            if (seq % 8 == 0 && ring_consumer_release(c)) {
                signal_fd(pp.wake_producer);
            }
            continue;
        }
        if (ring_consumer_release(c)) {
            signal_fd(pp.wake_producer);
        }
        if (ring_consumer_prepare_wait(c)) {
            wait_fd(pp.wake_consumer);
            sleeps++;
        }
    }
    RingFrame fr;
    assert_int_equal(ring_consumer_peek(c, &fr), 0);
    ring_free(c);
    stop_pair(&pp, 0);
    print_message("%u frames, the consumer slept %u times\n", seq, sleeps);
}

static void test_producer_killed_mid_batch(void **state) {
    Pair pp;
    Ring *c;
    static uint8_t buf[RING_FRAME_MAX];
    const uint32_t die_after = 1000;
    start_pair(&pp, STRESS_FRAMES, die_after);
    assert_int_equal(ring_attach(pp.fd, RING_CONSUMER, &c), 0);
    uint32_t seq = 0;
    for (;;) {
        size_t len;
        int r = ring_consumer_pop_copy(c, buf, sizeof(buf), &len, NULL);
        assert_true(r >= 0);
        if (r == 1) {
            check_frame(buf, len, seq++);
            continue;
        }
        if (ring_consumer_release(c)) {
            signal_fd(pp.wake_producer);
        }
        /* Once the producer is gone and the ring is drained, stop. */
        int status;
        if (waitpid(pp.pid, &status, WNOHANG) == pp.pid) {
            assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
            while ((r = ring_consumer_pop_copy(c, buf, sizeof(buf), &len, NULL)) == 1) {
                check_frame(buf, len, seq++);
            }
            assert_int_equal(r, 0);
            break;
        }
        if (ring_consumer_prepare_wait(c)) {
            struct pollfd pfd = {.fd = pp.wake_consumer, .events = POLLIN};
            uint64_t v;
            if (poll(&pfd, 1, 50) == 1) {
                assert_int_equal(read(pp.wake_consumer, &v, sizeof(v)), sizeof(v));
            }
        }
    }
    /* Every published frame arrived whole, in order; the half batch
     * after the last one never did (check_frame() refuses its 0xdead
     * frames). The last whole batch was committed but not published at
     * the kill, unless a full ring made the producer publish part of it
     * early: so at least every batch before it, at most up to its end. */
    uint32_t published = 0, batch = 0, next;
    for (;;) {
        next = published + 1 + (batch++ * 7) % 16;
        if (next >= die_after) {
            break;
        }
        published = next;
    }
    assert_in_range(seq, published, next);
    assert_int_equal(ring_broken(c), 0);
    ring_free(c);
    close(pp.fd);
    close(pp.wake_consumer);
    close(pp.wake_producer);
}

/* The producer killed from outside, at whatever point it happens to be
 * (in the middle of writing a slot, between commit and publish, while
 * asleep on a full ring), many times: every frame the consumer sees is
 * whole and in order, nothing it sees afterwards is half-written, and the
 * ring is never judged broken. Each round is a fresh ring, as a restarted
 * vm-switch child gets. */
static void test_producer_killed_from_outside(void **state) {
    static uint8_t buf[RING_FRAME_MAX];
    uint32_t total = 0;
    srand(12345);
    for (int round = 0; round < 25; round++) {
        Pair pp;
        Ring *c;
        uint32_t seq = 0;
        uint32_t kill_at = 1 + (uint32_t)rand() % 3000;
        start_pair(&pp, UINT32_MAX, 0);
        assert_int_equal(ring_attach(pp.fd, RING_CONSUMER, &c), 0);
        bool killed = false;
        for (;;) {
            size_t len;
            uint32_t flags;
            int r = ring_consumer_pop_copy(c, buf, sizeof(buf), &len, &flags);
            assert_true(r >= 0);
            if (r == 1) {
                check_frame(buf, len, seq);
                assert_int_equal(flags, seq);
                seq++;
                if (!killed && seq >= kill_at) {
                    /* No warning: wherever it is now. */
                    assert_int_equal(kill(pp.pid, SIGKILL), 0);
                    killed = true;
                }
                if (seq % 8 == 0 && ring_consumer_release(c)) {
                    signal_fd(pp.wake_producer);
                }
                continue;
            }
            if (ring_consumer_release(c)) {
                signal_fd(pp.wake_producer);
            }
            int status;
            if (killed && waitpid(pp.pid, &status, WNOHANG) == pp.pid) {
                assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
                /* Whatever it published before dying, whole; then nothing. */
                while ((r = ring_consumer_pop_copy(c, buf, sizeof(buf), &len, &flags)) == 1) {
                    check_frame(buf, len, seq);
                    seq++;
                }
                assert_int_equal(r, 0);
                break;
            }
            if (ring_consumer_prepare_wait(c)) {
                struct pollfd pfd = {.fd = pp.wake_consumer, .events = POLLIN};
                uint64_t v;
                if (poll(&pfd, 1, 50) == 1) {
                    assert_int_equal(read(pp.wake_consumer, &v, sizeof(v)), sizeof(v));
                }
            }
        }
        assert_true(seq >= kill_at);
        assert_int_equal(ring_broken(c), 0);
        total += seq;
        ring_free(c);
        close(pp.fd);
        close(pp.wake_consumer);
        close(pp.wake_producer);
    }
    print_message("25 producers killed from outside; %u frames, all whole\n", total);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void) {
    const struct CMUnitTest tests[] = {
        T(test_memfd),
        cmocka_unit_test(test_attach_rejects),
        T(test_attach_inconsistent),
        T(test_publish_per_batch),
        T(test_full),
        T(test_wakeups),
        T(test_consumer_head_too_far),
        T(test_consumer_head_backwards),
        T(test_consumer_ready),
        T(test_consumer_head_wraps_back),
        T(test_consumer_bad_len),
        T(test_producer_tail_beyond_head),
        T(test_producer_tail_backwards),
        cmocka_unit_test(test_two_processes),
        cmocka_unit_test(test_producer_killed_mid_batch),
        cmocka_unit_test(test_producer_killed_from_outside),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
