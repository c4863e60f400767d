/* vm-run's stream connection: see vmrun-stream.h. */
#include "vmrun-stream.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client.h"
#include "util.h"
#include "vmrun-session.h"
#include "wire.h"

/* Reads exactly n more bytes into buf by the deadline (CLOCK_MONOTONIC
 * usec): nothing beyond what is asked for is taken from the socket. */
static int read_by(int fd, uint8_t *buf, size_t n, uint64_t deadline) {
    while (n > 0) {
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        if (now >= deadline) {
            return -ETIMEDOUT;
        }
        int r = client_wait_readable(fd, (int)((deadline - now + 999) / 1000), NULL, 0);
        if (r < 0) {
            return r;
        }
        ssize_t k = read(fd, buf, n);
        if (k < 0 && (errno == EINTR || errno == EAGAIN)) {
            continue;
        }
        if (k <= 0) {
            return k < 0 ? -errno : -ECONNRESET;
        }
        buf += k;
        n -= (size_t)k;
    }
    return 0;
}

bool stream_hello(int fd) {
    uint8_t untrusted_frame[VMRUN_STREAM_HEAD_MAX];
    uint64_t deadline = now_usec(CLOCK_MONOTONIC) + VMRUN_STREAM_HELLO_MS * 1000ULL;
    Msg untrusted;
    uint32_t n;

    /* The guest is not trusted to send its Hello, nor all of it: the
     * whole frame must be here by the deadline (SIGINT and SIGTERM keep
     * their default action meanwhile: no handler exists yet). A frame
     * larger than a Hello can be is refused. What follows it (Attached,
     * the command's output) stays in the socket for stream_head(). */
    if (read_by(fd, untrusted_frame, WIRE_HEADER_SIZE, deadline) < 0 ||
        wire_header_parse(untrusted_frame, &n) < 0 ||
        n > sizeof(untrusted_frame) - WIRE_HEADER_SIZE ||
        read_by(fd, untrusted_frame + WIRE_HEADER_SIZE, n, deadline) < 0 ||
        wire_decode(untrusted_frame + WIRE_HEADER_SIZE, n, &untrusted) < 0) {
        return false; /* closed, refused or silent: the Exec's connection says why */
    }
    bool ok = untrusted.type == MSG_HELLO && wire_check_hello(&untrusted) == 0 &&
              untrusted.hello.minor >= 1;
    msg_done(&untrusted);
    return ok;
}

/* Whether fd would take a write now. */
static bool fd_writable(int fd) {
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    return poll(&p, 1, 0) > 0 && (p.revents & POLLOUT);
}

/* One frame of the head, decoded: Hello, then Attached, else the session
 * fails. */
static void head_frame(Session *s, const uint8_t *untrusted_body, uint32_t n) {
    VmRunStream *st = &s->st;
    Msg untrusted;
    int r = wire_decode(untrusted_body, n, &untrusted);

    if (r < 0) {
        errno = -r;
        client_fail("protocol error: undecodable frame from the guest agent: %m");
    }
    if (untrusted.type == MSG_ERROR) {
        session_guest_error(s, &untrusted);
    }
    if (!st->got_hello && untrusted.type == MSG_HELLO && wire_check_hello(&untrusted) == 0) {
        st->got_hello = true;
    } else if (st->got_hello && untrusted.type == MSG_ATTACHED) {
        st->attached = true;
    } else {
        client_fail("protocol error: unexpected %s on the stream connection",
                    msg_type_name(untrusted.type));
    }
    msg_done(&untrusted);
}

/* Before Attached: the guest agent's Hello and Attached, read frame by
 * frame out of what came; the bytes after them are the command's first
 * output. */
static void stream_head(Session *s) {
    VmRunStream *st = &s->st;
    uint8_t *head = st->untrusted_head;
    ssize_t k = read(st->fd, head + st->head_len, sizeof(st->untrusted_head) - st->head_len);
    if (k < 0) {
        if (errno == EINTR || errno == EAGAIN) {
            return;
        }
        k = 0; /* a reset before Attached: the session's own connection says why */
    }
    if (k == 0) {
        st->out_eof = true;
        return;
    }
    st->head_len += (size_t)k;
    size_t off = 0;
    while (!st->attached && st->head_len - off >= WIRE_HEADER_SIZE) {
        uint32_t n;
        if (wire_header_parse(head + off, &n) < 0 || n > VMRUN_STREAM_HEAD_MAX - WIRE_HEADER_SIZE) {
            client_fail("protocol error: the guest agent sent a frame over %u bytes on the "
                        "stream connection",
                        VMRUN_STREAM_HEAD_MAX - WIRE_HEADER_SIZE);
        }
        if (st->head_len - off < WIRE_HEADER_SIZE + n) {
            break;
        }
        head_frame(s, head + off + WIRE_HEADER_SIZE, n);
        off += WIRE_HEADER_SIZE + n;
    }
    memmove(head, head + off, st->head_len - off);
    st->head_len -= off;
    if (st->attached && st->head_len > 0) {
        session_first_byte(s);
        session_output(s, STDOUT_FILENO, head, st->head_len);
        st->head_len = 0;
    }
    if (!st->attached && st->head_len == VMRUN_STREAM_HEAD_MAX) {
        client_fail("protocol error: no Attached on the stream connection");
    }
}

/* Our stdout failed (errno): as session_output() would. */
static void stream_stdout_error(Session *s) {
    if (errno == EPIPE) {
        client_stdout_gone();
    }
    /* Unwritable otherwise: the output is dropped; the command goes on. */
    s->st.splice_out = false;
}

/* The command's output: the stream connection to our stdout. */
static void stream_output(Session *s) {
    VmRunStream *st = &s->st;

    if (!st->attached) {
        stream_head(s);
        return;
    }
    for (int i = 0; i < VMRUN_STREAM_ROUNDS && !st->out_eof; i++) {
        ssize_t k;
        if (st->splice_out) {
            k = splice(st->fd, NULL, STDOUT_FILENO, NULL, VMRUN_STREAM_CHUNK,
                       SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
            if (k < 0 && errno == EAGAIN) {
                /* Nothing to read, or our stdout is full. */
                st->out_blocked = !fd_writable(STDOUT_FILENO);
                return;
            }
            if (k < 0 && errno == EINVAL) {
                st->splice_out = false; /* not a pipe: read and write */
                continue;
            }
            if (k < 0 && (errno == EPIPE || errno == EIO || errno == ENOSPC || errno == EFBIG)) {
                stream_stdout_error(s);
                continue;
            }
        } else {
            k = read(st->fd, st->obuf, VMRUN_STREAM_BUF_SIZE);
            if (k > 0) {
                session_first_byte(s);
                session_output(s, STDOUT_FILENO, st->obuf, (size_t)k);
                continue;
            }
            if (k < 0 && errno == EAGAIN) {
                return;
            }
        }
        if (k > 0) {
            session_first_byte(s);
            continue;
        }
        if (k < 0 && errno == EINTR) {
            return; /* a signal: handled in the loop */
        }
        /* EOF, or the connection failed (reset): no more output. */
        st->out_eof = true;
    }
}

/* Our stdin ended (or failed): EOF for the command. */
static void stream_input_end(Session *s) {
    s->st.in_done = true;
    (void)shutdown(s->st.fd, SHUT_WR);
}

/* One splice() of stdin into the connection. 1: go on (with the read and
 * write path when stdin is no pipe), 0: done for now, -1: failed. */
static int stream_splice_in(Session *s) {
    VmRunStream *st = &s->st;
    ssize_t k = splice(STDIN_FILENO, NULL, st->fd, NULL, VMRUN_STREAM_CHUNK,
                       SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
    if (k > 0) {
        return 1;
    }
    if (k == 0) {
        stream_input_end(s);
        return 0;
    }
    if (errno == EAGAIN) {
        /* Nothing in stdin, or the connection is full. */
        st->in_blocked = !fd_writable(st->fd);
        return 0;
    }
    if (errno == EINTR) {
        return 0;
    }
    if (errno != EINVAL) {
        return -1; /* the connection failed, or stdin did */
    }
    st->splice_in = false; /* stdin is no pipe: read and write */
    return 1;
}

/* Our stdin to the stream connection. */
static void stream_input(Session *s) {
    VmRunStream *st = &s->st;

    for (int i = 0; i < VMRUN_STREAM_ROUNDS && !st->in_done; i++) {
        ssize_t k;
        if (st->buf_len == 0 && st->splice_in) {
            int r = stream_splice_in(s);
            if (r < 0) {
                goto failed;
            }
            if (r == 0) {
                return;
            }
            if (st->splice_in) {
                continue;
            }
        }
        if (st->buf_len == 0) {
            k = read(STDIN_FILENO, st->buf, VMRUN_STREAM_BUF_SIZE);
            if (k < 0 && (errno == EINTR || errno == EAGAIN)) {
                return;
            }
            if (k <= 0) {
                /* EOF, or an error (closed stdin, hung-up terminal). */
                stream_input_end(s);
                return;
            }
            st->buf_off = 0;
            st->buf_len = (size_t)k;
        }
        k = send(st->fd, st->buf + st->buf_off, st->buf_len - st->buf_off, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EAGAIN) {
                st->in_blocked = true;
                return;
            }
            if (errno == EINTR) {
                return;
            }
            goto failed;
        }
        st->buf_off += (size_t)k;
        if (st->buf_off == st->buf_len) {
            st->buf_len = 0;
        } else {
            /* A short send: the connection is full; the rest goes once it
             * has room, whatever stdin does meanwhile. */
            st->in_blocked = true;
        }
        /* Stdin may be blocking: read again only once poll() says so. */
        return;
    }
    return;

failed:
    /* The connection failed (the command's end is closed: it takes no
     * more), or our stdin did: either way no more input. */
    st->buf_len = 0;
    stream_input_end(s);
}

bool stream_busy(const Session *s) {
    return s->st.fd >= 0 && !s->st.out_eof;
}

void stream_poll_add(const Session *s, SessionPoll *ps) {
    const VmRunStream *st = &s->st;
    bool in = s->started && !s->exited && !st->in_done;
    short ev =
        (!st->out_eof && !st->out_blocked ? POLLIN : 0) | (in && st->in_blocked ? POLLOUT : 0);

    if (ev) {
        ps->i_st = (int)ps->n;
        ps->pf[ps->n++] = (struct pollfd){.fd = st->fd, .events = ev};
    }
    if (in && !st->in_blocked) {
        ps->i_in = (int)ps->n;
        ps->pf[ps->n++] = (struct pollfd){.fd = STDIN_FILENO, .events = POLLIN};
    }
    if (!st->out_eof && st->out_blocked) {
        ps->i_out = (int)ps->n;
        ps->pf[ps->n++] = (struct pollfd){.fd = STDOUT_FILENO, .events = POLLOUT};
    }
}

void stream_stdin(Session *s, short revents) {
    if (revents & POLLNVAL) {
        stream_input_end(s);
    } else {
        stream_input(s);
    }
}

void stream_events(Session *s, const SessionPoll *ps) {
    VmRunStream *st = &s->st;
    short ev_st = ps->i_st >= 0 ? ps->pf[ps->i_st].revents : 0;

    if (ev_st & POLLOUT) {
        st->in_blocked = false;
        stream_input(s);
    }
    if (ps->i_out >= 0 && ps->pf[ps->i_out].revents) {
        st->out_blocked = false;
        if (ps->pf[ps->i_out].revents & (POLLERR | POLLNVAL)) {
            errno = EPIPE;
            stream_stdout_error(s);
        }
    }
    if (ps->i_st >= 0 && (ev_st & (POLLIN | POLLHUP | POLLERR)) && !st->out_blocked) {
        stream_output(s);
    } else if (ps->i_out >= 0 && !st->out_blocked) {
        stream_output(s);
    }
}
