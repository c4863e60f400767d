/* The whole decoder: a byte stream of frames, as a peer would send it.
 *
 * Input: byte 0 chooses the size of the chunks the stream is written in
 * (1..256); the rest is the stream. It is decoded three ways, which must
 * agree on every message and on how the stream ends:
 *   - in memory: wire_header_parse + wire_decode, frame after frame;
 *   - through a non-blocking socketpair with a WireReader, the writer
 *     feeding it chunk by chunk;
 *   - through a blocking socketpair with wire_recv (small streams).
 * Every decoded message also goes through the round-trip oracle. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "oracle.h"
#include "util.h"
#include "wire.h"

#define MAX_FRAMES 32
#define STOPPED 1 /* MAX_FRAMES messages decoded; the rest is not looked at */
#define RECV_MAX (32u * 1024u)

typedef struct Outcome {
    Msg msgs[MAX_FRAMES];
    size_t n;
    int end; /* STOPPED or the error that ended the stream */
} Outcome;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

_noreturn_ static void fail(const char *what, long a, long b) {
    fprintf(stderr, "fuzz-frame: %s (%ld vs %ld)\n", what, a, b);
    abort();
}

/* Keeps m; returns true when the outcome is full. */
static bool keep(Outcome *o, Msg *m) {
    oracle_roundtrip(m);
    o->msgs[o->n++] = *m;
    if (o->n == MAX_FRAMES) {
        o->end = STOPPED;
        return true;
    }
    return false;
}

static void decode_in_memory(const uint8_t *p, size_t n, Outcome *o) {
    size_t off = 0;
    for (;;) {
        uint32_t len;
        Msg m;
        if (off == n) {
            o->end = -ECONNRESET;
            return;
        }
        if (n - off < WIRE_HEADER_SIZE) {
            o->end = -EPIPE;
            return;
        }
        oracle_data_fast_path(p + off, n - off);
        int r = wire_header_parse(p + off, &len);
        if (r < 0) {
            o->end = r;
            return;
        }
        off += WIRE_HEADER_SIZE;
        if (n - off < len) {
            o->end = -EPIPE;
            return;
        }
        r = wire_decode(p + off, len, &m);
        oracle_decode_result(r);
        if (r < 0) {
            o->end = r;
            return;
        }
        off += len;
        if (keep(o, &m)) {
            return;
        }
    }
}

static void decode_with_reader(const uint8_t *p, size_t n, size_t chunk, Outcome *o) {
    int sv[2];
    WireReader rd = {0};
    size_t off = 0;
    bool closed = false;

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) {
        abort();
    }
    for (;;) {
        Msg m;
        if (!closed) {
            ssize_t k = off < n ? write(sv[1], p + off, MIN(chunk, n - off)) : 0;
            if (k < 0 && errno != EAGAIN) {
                abort();
            }
            off += k > 0 ? (size_t)k : 0;
            if (off == n) {
                shutdown(sv[1], SHUT_WR);
                closed = true;
            }
        }
        int r = wire_reader_read(&rd, sv[0], &m);
        if (r == 1) {
            if (keep(o, &m)) {
                break;
            }
        } else if (r == 0) {
            if (closed) {
                fail("WireReader wants more after EOF", 0, 0);
            }
        } else {
            o->end = r;
            break;
        }
    }
    wire_reader_done(&rd);
    close(sv[0]);
    close(sv[1]);
}

static void decode_with_recv(const uint8_t *p, size_t n, Outcome *o) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        abort();
    }
    if ((n && loop_write(sv[1], p, n) < 0) || shutdown(sv[1], SHUT_WR) < 0) {
        abort();
    }
    for (;;) {
        Msg m;
        int r = wire_recv(sv[0], &m, NULL);
        if (r < 0) {
            o->end = r;
            break;
        }
        if (keep(o, &m)) {
            break;
        }
    }
    close(sv[0]);
    close(sv[1]);
}

static void compare(const char *how, const Outcome *a, const Outcome *b) {
    if (a->n != b->n) {
        fprintf(stderr, "fuzz-frame: %s: ", how);
        fail("message count differs", (long)a->n, (long)b->n);
    }
    for (size_t i = 0; i < a->n; i++) {
        if (!msg_equal(&a->msgs[i], &b->msgs[i])) {
            fprintf(stderr, "fuzz-frame: %s: ", how);
            fail("message differs at index", (long)i, (long)i);
        }
    }
    if (a->end != b->end) {
        fprintf(stderr, "fuzz-frame: %s: ", how);
        fail("stream end differs", a->end, b->end);
    }
}

static void outcome_done(Outcome *o) {
    for (size_t i = 0; i < o->n; i++) {
        msg_done(&o->msgs[i]);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static Outcome mem, rd, rcv;

    if (size < 1) {
        return 0;
    }
    size_t chunk = (size_t)data[0] + 1;
    data++;
    size--;

    mem = (Outcome){0};
    rd = (Outcome){0};
    decode_in_memory(data, size, &mem);
    decode_with_reader(data, size, chunk, &rd);
    compare("WireReader", &mem, &rd);
    outcome_done(&rd);
    if (size <= RECV_MAX) {
        rcv = (Outcome){0};
        decode_with_recv(data, size, &rcv);
        compare("wire_recv", &mem, &rcv);
        outcome_done(&rcv);
    }
    outcome_done(&mem);
    return 0;
}
