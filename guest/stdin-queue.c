/* A program's stdin: see stdin-queue.h. */
#include "stdin-queue.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <termios.h>
#include <unistd.h>

#include "util.h"

struct StdinChunk {
    StdinChunk *next;
    Msg msg; /* a decoded Data frame (no copy), unless a buffer */
    const uint8_t *data;
    size_t size, off;
    size_t cap; /* a buffer (> 0): buf holds size bytes of cap */
    uint8_t buf[];
};

void stdin_queue_take(StdinQueue *q, int fd, bool pty) {
    q->fd = fd;
    q->pty = pty;
}

int stdin_queue_watch(StdinQueue *q, sd_event *e, sd_event_io_handler_t writable, void *userdata) {
    if (q->fd < 0) {
        return 0;
    }
    int r = sd_event_add_io(e, &q->src, q->fd, EPOLLOUT, writable, userdata);
    if (r < 0) {
        return r;
    }
    return sd_event_source_set_enabled(q->src, SD_EVENT_OFF);
}

bool stdin_queue_is_open(const StdinQueue *q) {
    return q->fd >= 0;
}

/* A chunk for n bytes: the room left in the last buffer, a new buffer for
 * a small one, or the frame itself. NULL when out of memory. */
static StdinChunk *chunk_for(StdinQueue *q, Msg *m) {
    size_t n = m->data.size;
    StdinChunk *t = q->tail, *c;

    if (t && t->cap > 0 && t->cap - t->size >= n) {
        /* Room in the last buffer (only buffers have a cap). */
        memcpy(t->buf + t->size, m->data.data, n);
        t->size += n;
        return t;
    }
    if (n < STDIN_COPY_MAX) {
        c = calloc(1, sizeof(*c) + STDIN_BUF_SIZE);
        if (!c) {
            return NULL;
        }
        c->cap = STDIN_BUF_SIZE;
        c->data = c->buf;
        memcpy(c->buf, m->data.data, n);
    } else {
        c = calloc(1, sizeof(*c));
        if (!c) {
            return NULL;
        }
        c->msg = *m;
        m->_storage = m->_env = NULL; /* moved */
        c->data = c->msg.data.data;
    }
    c->size = n;
    if (t) {
        t->next = c;
    } else {
        q->head = c;
    }
    q->tail = c;
    return c;
}

int stdin_queue_push(StdinQueue *q, Msg *m) {
    if (!chunk_for(q, m)) {
        return -ENOMEM;
    }
    q->buffered += m->data.size;
    return 0;
}

void stdin_queue_want_close(StdinQueue *q) {
    q->close_wanted = true;
}

void stdin_queue_discard(StdinQueue *q) {
    while (q->head) {
        StdinChunk *c = q->head;
        q->head = c->next;
        msg_done(&c->msg);
        free(c);
    }
    q->tail = NULL;
    q->buffered = 0;
}

void stdin_queue_close(StdinQueue *q) {
    q->src = sd_event_source_disable_unref(q->src);
    q->fd = safe_close(q->fd);
    q->veof_pending = 0;
}

void stdin_queue_update(StdinQueue *q) {
    if (q->src) {
        bool want = q->head || q->veof_pending > 0;
        (void)sd_event_source_set_enabled(q->src, want ? SD_EVENT_ON : SD_EVENT_OFF);
    }
}

static int write_veof(StdinQueue *q) {
    struct termios t;
    uint8_t c[2];
    while (q->veof_pending > 0) {
        if (tcgetattr(q->fd, &t) < 0) {
            return -errno;
        }
        c[0] = t.c_cc[VEOF] ? t.c_cc[VEOF] : 4;
        ssize_t k = write(q->fd, c, 1);
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        q->veof_pending--;
    }
    return 0;
}

/* Everything written and the end wanted: EOF for the program. */
static void pass_eof(StdinQueue *q) {
    if (!q->pty) {
        stdin_queue_close(q);
        return;
    }
    if (!q->veof_armed) {
        /* On a pty, EOF is VEOF at the start of a line; after a partial
         * line the first VEOF only pushes the line. */
        q->veof_armed = true;
        q->veof_pending = q->last_newline ? 1 : 2;
    }
    if (write_veof(q) != -EAGAIN) {
        stdin_queue_close(q);
    }
}

size_t stdin_queue_pump(StdinQueue *q, int *ret_error) {
    size_t done = 0;

    *ret_error = 0;
    while (q->fd >= 0 && q->head) {
        StdinChunk *c = q->head;
        ssize_t k = write(q->fd, c->data + c->off, c->size - c->off);
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                break;
            }
            /* The program closed its stdin: what is queued is consumed. */
            *ret_error = -errno;
            done += q->buffered;
            stdin_queue_discard(q);
            stdin_queue_close(q);
            break;
        }
        done += (size_t)k;
        q->buffered -= (size_t)k;
        c->off += (size_t)k;
        if (c->off == c->size) {
            q->last_newline = c->data[c->size - 1] == '\n';
            q->head = c->next;
            if (!q->head) {
                q->tail = NULL;
            }
            msg_done(&c->msg);
            free(c);
        }
    }
    if (q->fd >= 0 && !q->head && q->close_wanted) {
        pass_eof(q);
    }
    return done;
}
