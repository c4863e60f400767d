/* Frames on non-blocking sockets: see wire-stream.h. */
#include "wire-stream.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util.h"
#include "wire.h"

/* ---- the reader --------------------------------------------------------- */

/* A whole body is in: a plain Data frame is taken as it lies (its payload
 * where it is, the body going with the message: msg_done()), anything else
 * is decoded. Returns 1, or wire_decode()'s error. */
static int reader_take_frame(WireReader *r, Msg *ret) {
    uint8_t *untrusted_body = TAKE_PTR(r->untrusted_body);
    uint32_t body_size = r->body_size;
    WireStream stream;
    uint32_t size;

    r->hdr_got = 0;
    size_t pre = wire_data_body_prefix(untrusted_body, body_size, body_size, WIRE_STREAMS_ALL,
                                       &stream, &size);
    if (pre > 0) {
        *ret = (Msg){
            .type = MSG_DATA,
            .data = {.stream = stream, .data = untrusted_body + pre, .size = size},
            ._env = untrusted_body,
        };
        return 1;
    }
    int r_decode = wire_decode(untrusted_body, body_size, ret);
    free(untrusted_body);
    return r_decode < 0 ? r_decode : 1;
}

/* The header is in: allocate its body, once the cap allows it. */
static int reader_begin_body(WireReader *r) {
    int q = wire_header_parse(r->untrusted_hdr, &r->body_size);
    if (q < 0) {
        return q;
    }
    r->untrusted_body = malloc(r->body_size ? r->body_size : 1);
    if (!r->untrusted_body) {
        return -ENOMEM;
    }
    r->body_got = 0;
    return 0;
}

int wire_reader_read(WireReader *r, int fd, Msg *ret) {
    for (;;) {
        ssize_t k;
        if (r->hdr_got < WIRE_HEADER_SIZE) {
            k = read(fd, r->untrusted_hdr + r->hdr_got, WIRE_HEADER_SIZE - r->hdr_got);
        } else {
            if (!r->untrusted_body) {
                int q = reader_begin_body(r);
                if (q < 0) {
                    return q;
                }
            }
            if (r->body_got == r->body_size) {
                return reader_take_frame(r, ret);
            }
            k = read(fd, r->untrusted_body + r->body_got, r->body_size - r->body_got);
        }
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                return 0;
            }
            return -errno;
        }
        if (k == 0) {
            return (r->hdr_got == 0 && !r->untrusted_body) ? -ECONNRESET : -EPIPE;
        }
        if (r->hdr_got < WIRE_HEADER_SIZE) {
            r->hdr_got += (size_t)k;
        } else {
            r->body_got += (size_t)k;
        }
    }
}

void wire_reader_done(WireReader *r) {
    free(r->untrusted_body);
    *r = (WireReader){0};
}

/* ---- the writer --------------------------------------------------------- */

/* Room for n more bytes at the end of the queue. */
static int writer_reserve(WireWriter *w, size_t n) {
    if (w->start == w->end) {
        w->start = w->end = 0;
    }
    if (w->alloc - w->end >= n) {
        return 0;
    }
    /* Compact first; grow only when that is not enough. */
    if (w->start > 0) {
        memmove(w->buf, w->buf + w->start, w->end - w->start);
        w->end -= w->start;
        w->start = 0;
    }
    if (w->alloc - w->end >= n) {
        return 0;
    }
    size_t want = MAX(w->alloc * 2, w->end + n);
    uint8_t *nb = realloc(w->buf, want);
    if (!nb) {
        return -ENOMEM;
    }
    w->buf = nb;
    w->alloc = want;
    return 0;
}

int wire_writer_queue(WireWriter *w, const Msg *m) {
    _cleanup_free_ uint8_t *buf = NULL;
    size_t n;
    int r = wire_encode(m, &buf, &n);
    if (r < 0) {
        return r;
    }
    r = writer_reserve(w, n);
    if (r < 0) {
        return r;
    }
    memcpy(w->buf + w->end, buf, n);
    w->end += n;
    return 0;
}

int wire_writer_queue_fds(WireWriter *w, const Msg *m, const int *fds, size_t n) {
    if (n == 0 || n > WIRE_WRITER_FDS_MAX) {
        return -EINVAL;
    }
    if (w->n_fds > 0) {
        return -EBUSY;
    }
    size_t ahead = wire_writer_pending(w);
    int r = wire_writer_queue(w, m);
    if (r < 0) {
        return r;
    }
    memcpy(w->fds, fds, n * sizeof(int));
    w->n_fds = n;
    w->fds_ahead = ahead;
    return 0;
}

/* k more bytes went out: the fds' frame comes that much closer. */
static void writer_sent(WireWriter *w, size_t k) {
    w->sent += k;
    if (w->n_fds > 0) {
        w->fds_ahead -= MIN(w->fds_ahead, k);
    }
}

static void writer_close_fds(WireWriter *w) {
    for (size_t i = 0; i < w->n_fds; i++) {
        safe_close(w->fds[i]);
    }
    w->n_fds = 0;
}

ssize_t wire_writer_read_data(WireWriter *w, int fd, WireStream stream, size_t max) {
    uint8_t hdr[WIRE_DATA_HEADER_MAX];
    ssize_t k;

    max = MIN(max, (size_t)WIRE_DATA_MAX);
    if (max == 0) {
        return -EINVAL;
    }
    int r = writer_reserve(w, WIRE_DATA_HEADER_MAX + max);
    if (r < 0) {
        return r;
    }
    /* Read behind room for the longest header, then slide the payload
     * down to the header's real length. */
    uint8_t *base = w->buf + w->end;
    do {
        k = read(fd, base + WIRE_DATA_HEADER_MAX, max);
    } while (k < 0 && errno == EINTR);
    if (k <= 0) {
        return k < 0 ? -errno : 0;
    }
    size_t h = wire_data_header(hdr, stream, (uint32_t)k);
    if (h < WIRE_DATA_HEADER_MAX) {
        memmove(base + h, base + WIRE_DATA_HEADER_MAX, (size_t)k);
    }
    memcpy(base, hdr, h);
    w->end += h + (size_t)k;
    return k;
}

int wire_writer_splice_data(WireWriter *w, int pipe_fd, WireStream stream, uint32_t size) {
    if (wire_writer_pending(w) > 0 || w->broken) {
        return -EBUSY;
    }
    if (size == 0 || size > WIRE_DATA_MAX) {
        return -EINVAL;
    }
    w->sp_hdr_len = (uint8_t)wire_data_header(w->sp_hdr, stream, size);
    w->sp_hdr_off = 0;
    w->sp_left = size;
    w->sp_fd = pipe_fd;
    w->sp_active = true;
    return 0;
}

void wire_writer_splice_abort(WireWriter *w, int pipe_fd) {
    if (w->sp_active && w->sp_fd == pipe_fd) {
        /* Mid-frame: the connection cannot carry anything coherent now. */
        w->sp_active = false;
        w->broken = true;
    }
}

bool wire_writer_splicing(const WireWriter *w) {
    return w->sp_active;
}

/* Sends the spliced frame in progress. 0 when it is out, 1 when the socket
 * is full, negative errno on failure. */
static int writer_flush_splice(WireWriter *w, int fd) {
    while (w->sp_active) {
        ssize_t k;
        if (w->sp_hdr_off < w->sp_hdr_len) {
            k = send(fd, w->sp_hdr + w->sp_hdr_off, w->sp_hdr_len - w->sp_hdr_off,
                     MSG_NOSIGNAL | MSG_DONTWAIT | MSG_MORE);
            if (k > 0) {
                w->sp_hdr_off += (uint8_t)k;
                writer_sent(w, (size_t)k);
            }
        } else {
            k = splice(w->sp_fd, NULL, fd, NULL, w->sp_left, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
            if (k == 0) {
                /* The pipe lost bytes it announced. */
                w->sp_active = false;
                w->broken = true;
                return -EIO;
            }
            if (k > 0) {
                w->sp_left -= (uint32_t)k;
                w->sp_active = w->sp_left > 0;
                writer_sent(w, (size_t)k);
            }
        }
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno == EAGAIN ? 1 : -errno;
        }
    }
    return 0;
}

/* One send of queued bytes: the fds' frame starts a send of its own, with
 * the fds, and no send runs into it. Bytes sent, or a negative errno. */
static ssize_t writer_send_some(WireWriter *w, int fd) {
    size_t n = w->end - w->start;
    ssize_t k;

    if (w->n_fds > 0 && w->fds_ahead == 0) {
        k = sendmsg_fds(fd, w->buf + w->start, n, w->fds, w->n_fds, MSG_DONTWAIT);
        if (k > 0) {
            writer_close_fds(w); /* the peer holds them now */
        }
        return k;
    }
    if (w->n_fds > 0) {
        n = MIN(n, w->fds_ahead);
    }
    k = send(fd, w->buf + w->start, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k < 0 && errno == ENOTSOCK) {
        k = write(fd, w->buf + w->start, n);
    }
    return k < 0 ? -errno : k;
}

int wire_writer_flush(WireWriter *w, int fd) {
    if (w->broken) {
        return -EPIPE;
    }
    int r = writer_flush_splice(w, fd);
    if (r != 0) {
        return r;
    }
    while (w->start < w->end) {
        ssize_t k = writer_send_some(w, fd);
        if (k == -EINTR) {
            continue;
        }
        if (k == -EAGAIN) {
            return 1;
        }
        if (k < 0) {
            return (int)k;
        }
        w->start += (size_t)k;
        writer_sent(w, (size_t)k);
    }
    w->start = w->end = 0;
    return 0;
}

size_t wire_writer_pending(const WireWriter *w) {
    size_t n = w->end - w->start;
    if (w->sp_active) {
        n += (size_t)(w->sp_hdr_len - w->sp_hdr_off) + w->sp_left;
    }
    return n;
}

uint64_t wire_writer_sent(const WireWriter *w) {
    return w->sent;
}

void wire_writer_done(WireWriter *w) {
    writer_close_fds(w);
    free(w->buf);
    *w = (WireWriter){0};
}
