/* The connection engine: see conn.h. */
#include "conn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util.h"

typedef enum ConnPhase {
    CONN_OPEN,
    CONN_CLOSING,
    CONN_CLOSED,
} ConnPhase;

struct Conn {
    sd_event *event;
    int fd;
    sd_event_source *io;
    sd_event_source *timer;
    ConnTimerFn timer_fn; /* NULL while closing: the linger */
    WireReader rd;
    WireWriter wr;
    ConnOptions opt;
    const ConnOps *ops;
    void *userdata;
    ConnPhase phase;
    unsigned state;
    bool connecting; /* connect() in progress */
    Addr connect_to;         /* where to: finishing needs it (addr_connect_finish) */
    uint32_t connect_events; /* what the connect waits for now */
    bool shut_wr;    /* closing: half-closed, draining */
    /* Inside one of the engine's callbacks (nesting depth): closing and
     * freeing wait until it returns. */
    unsigned busy;
    bool close_pending, free_pending;
    int close_error;
};

/* ---- lifetime ------------------------------------------------------------- */

static int on_io(sd_event_source *src, int fd, uint32_t revents, void *userdata);

int conn_new(sd_event *e, int fd, const ConnOptions *o, const ConnOps *ops, void *userdata,
             Conn **ret) {
    Conn *c = calloc(1, sizeof(*c));
    int r;

    if (!c || (o->connecting && !o->connecting_to)) {
        safe_close(fd);
        free(c);
        return c ? -EINVAL : -ENOMEM;
    }
    c->event = sd_event_ref(e);
    c->fd = fd;
    c->opt = *o;
    if (c->opt.out_max == 0) {
        c->opt.out_max = CONN_OUT_MAX_DEFAULT;
    }
    c->ops = ops;
    c->userdata = userdata;
    c->phase = CONN_OPEN;
    c->state = CONN_STATE_HELLO;
    c->connecting = o->connecting;
    if (o->connecting) {
        c->connect_to = *o->connecting_to;
        c->connect_events = EPOLLOUT;
    }
    r = 0;
    if (o->software) {
        Msg hello = msg_hello(o->software);
        hello.hello.secret = o->hello_secret;
        r = wire_writer_queue(&c->wr, &hello);
    }
    if (r >= 0) {
        r = sd_event_add_io(e, &c->io, fd, EPOLLIN | EPOLLOUT, on_io, c);
    }
    if (r < 0) {
        conn_free(c);
        return r;
    }
    *ret = c;
    return 0;
}

/* Lets go of the socket and everything that serves it. */
static void conn_release(Conn *c) {
    c->io = sd_event_source_disable_unref(c->io);
    c->timer = sd_event_source_disable_unref(c->timer);
    c->fd = safe_close(c->fd);
    wire_reader_done(&c->rd);
    wire_writer_done(&c->wr);
    c->phase = CONN_CLOSED;
    c->state = 0;
}

void conn_free(Conn *c) {
    if (!c) {
        return;
    }
    conn_release(c);
    if (c->busy > 0) {
        c->free_pending = true; /* the callback running holds c */
        return;
    }
    sd_event_unref(c->event);
    free(c);
}

static void conn_enter(Conn *c) {
    c->busy++;
}

static void update_events(Conn *c);

/* The end of every engine callback and of the calls that may close: the
 * deferred close or free, else re-arming and the owner's settled(). c may
 * be gone afterwards. */
static void conn_leave(Conn *c) {
    if (--c->busy > 0) {
        return;
    }
    if (c->free_pending) {
        sd_event_unref(c->event);
        free(c);
        return;
    }
    if (c->close_pending) {
        c->close_pending = false;
        c->ops->closed(c->userdata, c->close_error);
        return;
    }
    if (c->phase != CONN_CLOSED) {
        update_events(c);
        if (c->ops->settled) {
            c->ops->settled(c->userdata);
        }
    }
}

void conn_close(Conn *c, int error) {
    if (c->phase == CONN_CLOSED) {
        return;
    }
    conn_release(c);
    c->close_pending = true;
    c->close_error = error;
    conn_enter(c);
    conn_leave(c);
}

/* ---- accessors -------------------------------------------------------------- */

unsigned conn_state(const Conn *c) {
    return c->state;
}

void conn_set_state(Conn *c, unsigned state) {
    if (c->phase == CONN_OPEN) {
        c->state = state;
    }
}

bool conn_is_open(const Conn *c) {
    return c->phase == CONN_OPEN;
}

bool conn_is_closed(const Conn *c) {
    return c->phase == CONN_CLOSED;
}

int conn_fd(const Conn *c) {
    return c->fd;
}

/* ---- the writer ------------------------------------------------------------- */

static int writer_room(const Conn *c) {
    if (c->phase == CONN_CLOSED) {
        return -EPIPE;
    }
    return wire_writer_pending(&c->wr) > c->opt.out_max ? -ENOBUFS : 0;
}

int conn_queue(Conn *c, const Msg *m) {
    int r = writer_room(c);
    return r < 0 ? r : wire_writer_queue(&c->wr, m);
}

int conn_queue_fds(Conn *c, const Msg *m, const int *fds, size_t n) {
    int r = writer_room(c);
    return r < 0 ? r : wire_writer_queue_fds(&c->wr, m, fds, n);
}

ssize_t conn_queue_read(Conn *c, int fd, WireStream stream, size_t max) {
    int r = writer_room(c);
    return r < 0 ? r : wire_writer_read_data(&c->wr, fd, stream, max);
}

int conn_queue_splice(Conn *c, int pipe_fd, WireStream stream, uint32_t size) {
    int r = writer_room(c);
    return r < 0 ? r : wire_writer_splice_data(&c->wr, pipe_fd, stream, size);
}

void conn_splice_abort(Conn *c, int pipe_fd) {
    wire_writer_splice_abort(&c->wr, pipe_fd);
}

bool conn_splicing(const Conn *c) {
    return wire_writer_splicing(&c->wr);
}

size_t conn_pending(const Conn *c) {
    return wire_writer_pending(&c->wr);
}

uint64_t conn_sent(const Conn *c) {
    return wire_writer_sent(&c->wr);
}

int conn_flush(Conn *c) {
    if (c->phase == CONN_CLOSED) {
        return -EPIPE;
    }
    if (c->connecting) {
        return 1; /* nothing can go before the connection is there */
    }
    for (;;) {
        size_t before = wire_writer_pending(&c->wr);
        if (c->ops->before_flush) {
            c->ops->before_flush(c->userdata);
        }
        bool queued = wire_writer_pending(&c->wr) > before;
        int r = wire_writer_flush(&c->wr, c->fd);
        if (r != 0 || !queued) {
            return r;
        }
        /* before_flush queued something and all went: it may queue the
         * next thing now (the acknowledgement that waited for this one). */
    }
}

/* ---- the timer ---------------------------------------------------------------- */

static void settle(Conn *c, int r);

static int on_timer(sd_event_source *src, uint64_t usec, void *userdata) {
    Conn *c = userdata;
    conn_enter(c);
    if (c->phase == CONN_CLOSING) {
        conn_close(c, 0); /* lingered long enough */
    } else if (c->phase == CONN_OPEN && c->timer_fn) {
        settle(c, c->timer_fn(c->userdata));
    }
    conn_leave(c);
    return 0;
}

static int timer_set(Conn *c, uint64_t when, ConnTimerFn fn) {
    int r;
    if (c->phase == CONN_CLOSED) {
        return -EPIPE;
    }
    c->timer_fn = fn;
    if (!c->timer) {
        return sd_event_add_time(c->event, &c->timer, CLOCK_MONOTONIC, when,
                                 c->opt.timer_accuracy_usec, on_timer, c);
    }
    r = sd_event_source_set_time(c->timer, when);
    if (r >= 0) {
        r = sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);
    }
    return r;
}

int conn_timer_arm_at(Conn *c, uint64_t when, ConnTimerFn fn) {
    if (c->phase != CONN_OPEN) {
        return 0; /* closing: the linger stands */
    }
    return timer_set(c, when, fn);
}

int conn_timer_arm(Conn *c, uint64_t usec, ConnTimerFn fn) {
    return conn_timer_arm_at(c, now_usec(CLOCK_MONOTONIC) + usec, fn);
}

void conn_timer_disarm(Conn *c) {
    if (c->phase != CONN_OPEN) {
        return;
    }
    c->timer_fn = NULL;
    if (c->timer) {
        (void)sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
    }
}

/* ---- closing ------------------------------------------------------------------- */

/* Drains what a half-closed peer still sends; its EOF (or a failure) ends
 * the connection. */
static void closing_drain(Conn *c) {
    static uint8_t scratch[CONN_DRAIN_CHUNK];
    for (int n = 0; n < CONN_FRAMES_PER_WAKE; n++) {
        ssize_t k = read(c->fd, scratch, sizeof(scratch));
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k < 0 && errno == EAGAIN) {
            return;
        }
        if (k <= 0) {
            conn_close(c, k < 0 ? -errno : 0);
            return;
        }
    }
}

/* Sends the last frames, then half-closes (and drains) or closes. */
static void closing_progress(Conn *c, uint32_t revents) {
    if (!c->shut_wr) {
        int r = conn_flush(c);
        if (r < 0) {
            conn_close(c, r);
            return;
        }
        if (r == 0 && c->opt.close_mode == CONN_CLOSE_FLUSHED) {
            conn_close(c, 0);
            return;
        }
        if (r == 0) {
            /* All said: half-close so the peer sees EOF after our last
             * frame, then read what it still sends until it closes too. */
            (void)shutdown(c->fd, SHUT_WR);
            c->shut_wr = true;
        }
    }
    if (c->shut_wr && (revents & (EPOLLIN | EPOLLHUP | EPOLLERR))) {
        closing_drain(c);
    } else if (!c->shut_wr && (revents & (EPOLLHUP | EPOLLERR))) {
        conn_close(c, -ECONNRESET); /* it will never read the rest */
    }
}

void conn_finish(Conn *c) {
    if (c->phase != CONN_OPEN) {
        return;
    }
    conn_enter(c);
    c->phase = CONN_CLOSING;
    c->state = 0;
    c->connecting = false;
    wire_reader_done(&c->rd);
    c->timer_fn = NULL;
    int r = timer_set(c, now_usec(CLOCK_MONOTONIC) + c->opt.linger_usec, NULL);
    if (r < 0) {
        conn_close(c, r);
    } else {
        closing_progress(c, 0);
    }
    conn_leave(c);
}

/* Answers a failure with an Error and closes, or (a client) closes. */
static void conn_refuse(Conn *c, const ConnFailure *f) {
    if (c->phase != CONN_OPEN) {
        return;
    }
    if (c->opt.role == CONN_CLIENT) {
        conn_close(c, f->error < 0 ? f->error : -EPROTO);
        return;
    }
    if (c->ops->failing) {
        c->ops->failing(c->userdata, f);
    }
    if (c->phase != CONN_OPEN) {
        return; /* the owner closed it */
    }
    Msg m = msg_error(f->code, f->message);
    /* The Error is the last word: over the bound too, it is small. */
    int r = wire_writer_queue(&c->wr, &m);
    if (r < 0) {
        conn_close(c, r);
        return;
    }
    conn_finish(c);
}

int conn_fail(Conn *c, WireError code, const char *message) {
    ConnFailure f = {.code = code, .message = message};
    conn_enter(c);
    conn_refuse(c, &f);
    conn_leave(c);
    return 0;
}

/* ---- reading and dispatch ---------------------------------------------------- */

WireError conn_wire_error(int r) {
    switch (r) {
    case -E2BIG:
        return WIRE_ERR_TOO_LARGE;
    case -EINVAL:
        return WIRE_ERR_INVALID;
    case -EPROTONOSUPPORT:
        return WIRE_ERR_VERSION;
    case -ESHUTDOWN:
        return WIRE_ERR_SHUTTING_DOWN;
    case -EBADMSG:
    case -EMSGSIZE:
    case -EPROTO:
        return WIRE_ERR_PROTOCOL;
    default:
        return WIRE_ERR_INTERNAL;
    }
}

static ConnInput conn_input(Conn *c) {
    return c->ops->input ? c->ops->input(c->userdata) : CONN_INPUT_READ;
}

/* The peer's Hello: ours was queued at the start. */
static int conn_hello(Conn *c, const Msg *m) {
    char buf[128];
    if (wire_check_hello(m) < 0) {
        snprintf(buf, sizeof(buf), "protocol version %u is not supported (this is %u)",
                 m->hello.major, WIRE_VERSION_MAJOR);
        ConnFailure f = {.error = -EPROTONOSUPPORT, .code = WIRE_ERR_VERSION, .message = buf};
        conn_refuse(c, &f);
        return 0;
    }
    if (c->ops->hello) {
        int r = c->ops->hello(c->userdata, m);
        if (r < 0) {
            ConnFailure f = {.error = r, .code = WIRE_ERR_DENIED, .message = "permission denied"};
            conn_refuse(c, &f);
            return 0;
        }
    }
    c->state = c->opt.after_hello;
    return 0;
}

static void conn_dispatch(Conn *c, Msg *m) {
    char buf[128];
    int r;

    if (m->type == MSG_HELLO && (c->state & CONN_STATE_HELLO)) {
        (void)conn_hello(c, m);
        return;
    }
    for (size_t i = 0; i < c->ops->n_handlers; i++) {
        const ConnHandler *h = &c->ops->handlers[i];
        if (h->type == m->type && (h->states & c->state)) {
            r = h->handler(c->userdata, m);
            if (r < 0) {
                ConnFailure f = {.error = r, .code = conn_wire_error(r), .message = strerror(-r)};
                conn_refuse(c, &f);
            }
            return;
        }
    }
    snprintf(buf, sizeof(buf), "unexpected %s", msg_type_name(m->type));
    ConnFailure f = {.error = -EPROTO, .code = WIRE_ERR_PROTOCOL, .message = buf, .refused = m};
    conn_refuse(c, &f);
}

/* A frame the reader could not turn into a message. */
static void conn_read_failed(Conn *c, int r) {
    const char *message;
    switch (r) {
    case -E2BIG:
        message = "frame too large";
        break;
    case -EINVAL:
        message = "invalid message";
        break;
    case -EBADMSG:
    case -EMSGSIZE:
        message = "undecodable frame";
        break;
    default:
        conn_close(c, r); /* gone, or our own failure */
        return;
    }
    ConnFailure f = {.error = r, .code = conn_wire_error(r), .message = message};
    conn_refuse(c, &f);
}

static void conn_read(Conn *c) {
    for (int n = 0; n < CONN_FRAMES_PER_WAKE; n++) {
        if (c->phase != CONN_OPEN || c->free_pending || conn_input(c) != CONN_INPUT_READ) {
            return;
        }
        Msg m = {0};
        int r = wire_reader_read(&c->rd, c->fd, &m);
        if (r == 0) {
            return;
        }
        if (r < 0) {
            conn_read_failed(c, r);
            return;
        }
        conn_dispatch(c, &m);
        msg_done(&m);
    }
}

/* ---- the socket --------------------------------------------------------------- */

/* What to wait for on the socket now. Hang-ups (HUP, ERR) are always
 * reported while the source is on. */
static void update_events(Conn *c) {
    uint32_t ev = 0;
    bool pending = wire_writer_pending(&c->wr) > 0;

    if (c->phase == CONN_OPEN && c->connecting) {
        /* Nothing is read nor written before the connection is there: an
         * hvsock connect reads the device's OK line itself. */
        ev = c->connect_events;
    } else if (c->phase == CONN_OPEN) {
        switch (conn_input(c)) {
        case CONN_INPUT_READ:
            ev |= EPOLLIN;
            break;
        case CONN_INPUT_PAUSE:
            ev |= EPOLLRDHUP;
            break;
        case CONN_INPUT_HOLD:
            break;
        }
        if (pending) {
            ev |= EPOLLOUT;
        }
    } else if (c->shut_wr) {
        ev |= EPOLLIN; /* draining */
    } else if (pending) {
        ev |= EPOLLOUT;
    }
    (void)sd_event_source_set_io_events(c->io, ev);
    (void)sd_event_source_set_enabled(c->io, SD_EVENT_ON);
}

/* A connect() in progress went on: 0 when it is done and worked,
 * -EINPROGRESS while it waits for connect_events (an hvsock device's
 * reply), another negative errno when it failed. */
static int connect_result(Conn *c) {
    uint32_t events = 0;
    int r = addr_connect_finish(&c->connect_to, c->fd, &events);
    if (r == -EINPROGRESS) {
        c->connect_events = events;
        return r;
    }
    c->connecting = false;
    return r;
}

static void conn_io(Conn *c, uint32_t revents) {
    int r;

    if (c->connecting) {
        r = connect_result(c);
        if (r == -EINPROGRESS) {
            update_events(c);
            return;
        }
        if (r < 0) {
            conn_close(c, r);
            return;
        }
    }
    if (c->phase == CONN_CLOSING) {
        closing_progress(c, revents);
        return;
    }
    ConnInput in = conn_input(c);
    if ((in == CONN_INPUT_PAUSE && (revents & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) ||
        (in == CONN_INPUT_HOLD && (revents & (EPOLLHUP | EPOLLERR)))) {
        /* Not reading: the peer hung up (or, pausing, half-closed, which
         * ends the connection as EOF does). */
        conn_close(c, -ECONNRESET);
        return;
    }
    if (revents & EPOLLOUT) {
        r = conn_flush(c);
        if (r < 0) {
            conn_close(c, r);
            return;
        }
    }
    if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        conn_read(c);
    }
    if (c->phase == CONN_OPEN && !c->free_pending) {
        /* One send for what this round queued. */
        r = conn_flush(c);
        if (r < 0) {
            conn_close(c, r);
        }
    }
}

static int on_io(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
    Conn *c = userdata;
    conn_enter(c);
    conn_io(c, revents);
    conn_leave(c);
    return 0;
}

void conn_kick(Conn *c) {
    if (c->phase == CONN_CLOSED) {
        return;
    }
    conn_enter(c);
    conn_io(c, EPOLLIN | EPOLLOUT);
    conn_leave(c);
}

/* r < 0 closes with r; else what is queued is sent (or, closing, the
 * close goes on). */
static void settle(Conn *c, int r) {
    if (c->phase == CONN_CLOSED) {
        return;
    }
    if (r < 0) {
        conn_close(c, r);
    } else if (c->phase == CONN_OPEN) {
        r = conn_flush(c);
        if (r < 0) {
            conn_close(c, r);
        }
    } else {
        closing_progress(c, 0);
    }
}

void conn_settle(Conn *c, int r) {
    if (c->phase == CONN_CLOSED) {
        return;
    }
    conn_enter(c);
    settle(c, r);
    conn_leave(c);
}

void conn_refuse_fd(int fd, WireError code, const char *message) {
    Msg m = msg_error(code, message);
    (void)wire_send(fd, &m);
    safe_close(fd);
}
