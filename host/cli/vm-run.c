/* vm-run: run a command in a VM as if it ran here. Asks the VM's host
 * agent for connections to the guest agent (received over SCM_RIGHTS),
 * keeps the host-agent connection open as a lease, and relays stdio,
 * signals and the terminal size until the command exits.
 *
 * Without a pty the command's stdin and stdout are a second connection of
 * ours (a stream connection, see proto/qubes-lite.proto): bytes go
 * between it and our stdin and stdout with splice() where the fds allow,
 * never framed and never through the guest agent. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client.h"
#include "host/common/paths.h"
#include "rules.h"
#include "util.h"
#include "vmrun-opts.h"
#include "wire.h"

#define SOFTWARE "vm-run 0.1"
#define EXIT_OWN_ERROR 255
#define STDIN_WINDOW (256u * 1024u)
#define CHUNK WIRE_DATA_MAX
/* Incoming frames are read in bulk: room for the largest frame and more. */
#define RBUF_SIZE (2u * (WIRE_FRAME_MAX + WIRE_HEADER_SIZE))
/* Stop reading stdin while this much is queued for the guest. */
#define OUT_HIGH (4u * WIRE_DATA_MAX)
#define STDIN_CHUNKS_PER_ROUND 4
#define WAIT_NOTICE_MS 1000
#define EXIT_ACK_TIMEOUT_MS 5000
/* After SIGHUP or SIGTERM (or any signal before Started), how long the
 * guest has to end the command before we give up on it: the guest
 * agent's kill grace (5 s) and a margin. */
#define GIVE_UP_MS 8000
/* The guest agent's frames on a stream connection (Hello, Attached) fit. */
#define STREAM_HEAD_MAX 1024u
/* Bytes per splice() or read() on a stream connection. */
#define STREAM_CHUNK (1024u * 1024u)
#define STREAM_BUF_SIZE (64u * 1024u)
#define STREAM_ROUNDS 8

typedef struct Timing {
    uint64_t start, host, connected, guest_ready, started, first_byte, exited;
    uint64_t vm_start_us, guest_wait_us;
} Timing;

/* The stream connection: the command's stdin and stdout. */
typedef struct Stream {
    int fd; /* -EBADF: none (a pty, or a host agent without them) */
    /* Until Attached: the guest agent's frames on it. */
    uint8_t head[STREAM_HEAD_MAX];
    size_t head_len;
    bool got_hello, attached;
    bool out_eof;               /* the command's stdout ended */
    bool out_blocked;           /* our stdout is full: wait for it */
    bool in_done;               /* our stdin ended, or the command takes no more */
    bool in_blocked;            /* the connection is full: wait for it */
    bool splice_in, splice_out; /* not known not to work */
    uint8_t *buf;               /* the read/write path's buffer (stdin) */
    size_t buf_off, buf_len;
    uint8_t *obuf; /* ... and stdout's */
} Stream;

typedef struct Session {
    const VmRunOptions *opts;
    int sock; /* the guest agent connection */
    Stream st;
    WireWriter out;
    uint8_t *rbuf;
    size_t rstart, rend;
    bool got_hello, started, exited, acked;
    bool sock_gone;           /* after Exited: the connection hung up */
    bool stdin_done;          /* EOF seen and StdinClose queued */
    uint32_t credit;          /* stdin bytes we may still send */
    uint32_t pending_signals; /* arrived before Started */
    uint64_t give_up_at;      /* CLOCK_MONOTONIC usec; 0: no deadline */
    int give_up_signo;
    MsgExited result;
    Timing *timing;
} Session;

static const char *vm_name = "?";

/* Peer text, printable and bounded. */
static const char *peer_text(const char *s, char *buf, size_t size) {
    return str_sanitize(s, strlen(s), buf, size);
}

/* ---- host agent --------------------------------------------------------- */

static void check_vm_known(const char *vm, const char *sock_path) {
    if (!client_vm_known(vm, sock_path)) {
        client_fail("no VM named '%s'", vm);
    }
}

/* Fails with one line telling the host agent's Error. */
_noreturn_ static void host_error(const Msg *m) {
    char buf[512];
    peer_text(m->error.message, buf, sizeof(buf));
    if (m->error.code == WIRE_ERR_DENIED) {
        client_fail("the host agent of VM '%s' denied access: %s (DENIED)", vm_name, buf);
    }
    client_fail_error(vm_name, m);
}

/* Hello and Connect go out together, and the host agent's Hello must
 * come back; fails with one line otherwise. */
static void host_hello(int fd, bool stream) {
    Msg connect = {.type = MSG_CONNECT, .connect = {.streams = stream ? 1 : 0}};
    ClientHelloFailure failure;
    Msg m;
    int r = client_hello(fd, SOFTWARE, &connect, -1, &failure, &m);

    if (r >= 0) {
        return;
    }
    errno = -r;
    switch (failure) {
    case CLIENT_HELLO_SEND:
        client_fail("cannot write to the host agent of VM '%s': %m", vm_name);
    case CLIENT_HELLO_TIMEOUT:
    case CLIENT_HELLO_RECV:
        client_fail("the host agent of VM '%s' closed the connection: %m", vm_name);
    case CLIENT_HELLO_ERROR:
        host_error(&m);
    case CLIENT_HELLO_NOT_HELLO:
        client_fail("protocol error: the host agent sent %s instead of Hello",
                    msg_type_name(m.type));
    case CLIENT_HELLO_VERSION:
        client_fail("the host agent speaks protocol version %u, vm-run %u", m.hello.major,
                    WIRE_VERSION_MAJOR);
    }
    client_fail("the host agent of VM '%s' closed the connection: %m", vm_name);
}

/* Connects to the host agent and returns the guest agent connection;
 * *ret_host is the lease, kept open until we exit. */
static int host_connect(const char *sock_path, Timing *t, bool stream, int *ret_host,
                        int *ret_stream) {
    _cleanup_close_ int fd = -EBADF;
    Msg m;
    int guest_fd[2] = {-EBADF, -EBADF};
    size_t n_fds = 0;
    char notice[128];
    int r;

    /* vm-run talks to nothing but the host agent directly, so it needs
     * neither the address parser nor the libraries behind it (a short
     * start matters for `vm-run VM true`). */
    r = client_unix_connect(sock_path, &fd);
    if (r < 0) {
        errno = -r;
        client_fail("cannot reach the host agent of VM '%s' at %s: %m", vm_name, sock_path);
    }
    t->host = now_usec(CLOCK_MONOTONIC);
    host_hello(fd, stream);

    snprintf(notice, sizeof(notice), "waiting for VM '%s' to start...", vm_name);
    (void)client_wait_readable(fd, -1, notice, WAIT_NOTICE_MS);
    r = wire_recv_fds(fd, &m, guest_fd, stream ? 2 : 1, &n_fds);
    if (r < 0) {
        errno = -r;
        client_fail("the host agent of VM '%s' closed the connection: %m", vm_name);
    }
    if (m.type == MSG_ERROR) {
        host_error(&m);
    }
    if (m.type != MSG_CONNECTED) {
        client_fail("protocol error: the host agent sent %s instead of Connected",
                    msg_type_name(m.type));
    }
    if (n_fds == 0) {
        client_fail("protocol error: the host agent sent no connection with Connected");
    }
    /* One only: a host agent without stream connections; all is relayed. */
    *ret_stream = guest_fd[1];
    t->connected = now_usec(CLOCK_MONOTONIC);
    t->vm_start_us = m.connected.vm_start_us;
    t->guest_wait_us = m.connected.guest_wait_us;
    msg_done(&m);
    *ret_host = TAKE_FD(fd);
    return guest_fd[0];
}

/* The guest agent's Hello on the stream connection, read before Attach
 * is sent: true when it knows stream connections (protocol 1.1 on). An
 * older agent gets none and the session relays all stdio. */
static bool stream_hello(int fd) {
    Msg m;
    /* The host agent's non-blocking socket: wait for the frame here. */
    int r = fd_nonblock(fd, false);
    if (r >= 0) {
        r = wire_recv(fd, &m, NULL);
    }
    if (r < 0) {
        return false; /* closed or refused: the Exec's connection says why */
    }
    bool ok = m.type == MSG_HELLO && wire_check_hello(&m) == 0 && m.hello.minor >= 1;
    msg_done(&m);
    return ok;
}

/* ---- terminal ----------------------------------------------------------- */

/* The local window size; 24x80 when no terminal tells. */
static void window_size(uint16_t *rows, uint16_t *cols) {
    if (!client_window_size(rows, cols)) {
        *rows = 24;
        *cols = 80;
    }
}

/* ---- the session -------------------------------------------------------- */

static int session_queue(Session *s, const Msg *m) {
    int r = wire_writer_queue(&s->out, m);
    if (r < 0) {
        errno = -r;
        client_fail("cannot queue %s: %m", msg_type_name(m->type));
    }
    return 0;
}

static void session_flush(Session *s) {
    int r = wire_writer_flush(&s->out, s->sock);
    if (r < 0 && r != -EPIPE && r != -ECONNRESET) {
        errno = -r;
        client_fail("cannot write to the guest agent of VM '%s': %m", vm_name);
    }
    /* A closed connection shows up on the reading side, with any
     * Error the agent sent before closing. */
    if (r < 0) {
        wire_writer_done(&s->out);
    }
}

static void session_send_signal(Session *s, int signo) {
    Msg m = {.type = MSG_SIGNAL, .signo = (uint32_t)signo};
    session_queue(s, &m);
}

/* The guest did not end the command within GIVE_UP_MS of a signal that
 * asks us to end: close the connection (and the lease with our exit) and
 * exit as if killed by that signal. */
static void session_check_give_up(Session *s) {
    if (s->give_up_at == 0 || now_usec(CLOCK_MONOTONIC) < s->give_up_at) {
        return;
    }
    client_terminal_restore();
    s->sock = safe_close(s->sock);
    exit(128 + s->give_up_signo);
}

/* Milliseconds until the give-up deadline, for poll(); -1 without one. */
static int session_give_up_timeout(const Session *s) {
    if (s->give_up_at == 0) {
        return -1;
    }
    uint64_t now = now_usec(CLOCK_MONOTONIC);
    return now >= s->give_up_at ? 0 : (int)((s->give_up_at - now + 999) / 1000);
}

/* Forwards the signals that arrived. SIGHUP and SIGTERM, and any signal
 * before Started, also start the give-up deadline: a hung or hostile
 * guest must not keep us (and our lease) alive for ever. */
static void session_signals(Session *s) {
    uint8_t buf[64];
    ssize_t n;

    while ((n = client_signals_read(buf, sizeof(buf))) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            int signo = buf[i];
            if (signo == SIGWINCH) {
                if (s->opts->tty && s->started) {
                    Msg m = {.type = MSG_RESIZE};
                    window_size(&m.resize.rows, &m.resize.cols);
                    session_queue(s, &m);
                }
            } else {
                if (s->started) {
                    session_send_signal(s, signo);
                } else {
                    s->pending_signals |= 1u << signo;
                }
                if (s->give_up_at == 0 && (signo == SIGHUP || signo == SIGTERM || !s->started)) {
                    s->give_up_at = now_usec(CLOCK_MONOTONIC) + GIVE_UP_MS * 1000ULL;
                    s->give_up_signo = signo;
                }
            }
        }
    }
    session_flush(s);
}

/* Whoever read our output is gone: end as a local program in a pipeline
 * would, which also ends the session. */
static void stdout_reader_gone(void) {
    client_terminal_restore();
    signal(SIGPIPE, SIG_DFL);
    raise(SIGPIPE);
}

/* Writes all of a Data chunk to fd 1 or 2, blocking: the socket is not
 * read meanwhile (backpressure), but signals still interrupt the write
 * and are forwarded. */
static void session_output(Session *s, int fd, const uint8_t *p, size_t n) {
    while (n > 0) {
        if (client_signal_seen()) {
            session_signals(s);
        }
        session_check_give_up(s);
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                /* Our stdout was handed to us non-blocking: wait for it. */
                struct pollfd pf[2] = {
                    {.fd = fd, .events = POLLOUT},
                    {.fd = client_signal_fd(), .events = POLLIN},
                };
                (void)poll(pf, 2, session_give_up_timeout(s));
                session_check_give_up(s);
                continue;
            }
            if (errno == EPIPE && fd == STDOUT_FILENO) {
                stdout_reader_gone();
            }
            /* stderr unwritable: nowhere to report it; drop the output. */
            return;
        }
        p += k;
        n -= (size_t)k;
    }
}

static void session_started(Session *s) {
    s->started = true;
    for (int signo = 1; signo < 32; signo++) {
        if (s->pending_signals & (1u << signo)) {
            session_send_signal(s, signo);
        }
    }
    s->pending_signals = 0;
}

static void guest_error(const Msg *m) {
    char buf[512];
    peer_text(m->error.message, buf, sizeof(buf));
    if (m->error.code == WIRE_ERR_DENIED) {
        client_fail("the guest agent of VM '%s' denied access: %s (DENIED)", vm_name, buf);
    }
    client_fail("the guest agent of VM '%s' reported an error: %s (%s)", vm_name, buf,
                client_error_name(m->error.code));
}

static void session_handle(Session *s, const Msg *m) {
    uint64_t now = now_usec(CLOCK_MONOTONIC);

    if (m->type == MSG_ERROR) {
        guest_error(m);
    }
    if (!s->got_hello) {
        if (m->type != MSG_HELLO) {
            client_fail("protocol error: the guest agent sent %s before Hello",
                        msg_type_name(m->type));
        }
        if (wire_check_hello(m) < 0) {
            client_fail("the guest agent of VM '%s' speaks protocol version %u, vm-run %u", vm_name,
                        m->hello.major, WIRE_VERSION_MAJOR);
        }
        s->got_hello = true;
        s->timing->guest_ready = now;
        return;
    }
    switch (m->type) {
    case MSG_STARTED:
        if (s->started) {
            break;
        }
        s->timing->started = now;
        session_started(s);
        return;
    case MSG_DATA:
        /* Output may come before Started: the reason a program could not
         * be started, as a shell would print it. */
        if (m->data.stream == WIRE_STDIN) {
            break;
        }
        if (!s->timing->first_byte) {
            s->timing->first_byte = now;
        }
        session_output(s, m->data.stream == WIRE_STDOUT ? STDOUT_FILENO : STDERR_FILENO,
                       m->data.data, m->data.size);
        return;
    case MSG_STDIN_ACK:
        if (!s->started || m->stdin_ack > STDIN_WINDOW - s->credit) {
            client_fail("protocol error: the guest agent acknowledged more stdin than was sent");
        }
        s->credit += m->stdin_ack;
        return;
    case MSG_EXITED:
        s->exited = true;
        s->result = m->exited;
        s->timing->exited = now;
        return;
    default:
        break;
    }
    client_fail("protocol error: unexpected %s from the guest agent", msg_type_name(m->type));
}

/* Reads what the socket has and handles every whole frame. */
static void session_read(Session *s) {
    if (RBUF_SIZE - s->rend < WIRE_FRAME_MAX + WIRE_HEADER_SIZE) {
        memmove(s->rbuf, s->rbuf + s->rstart, s->rend - s->rstart);
        s->rend -= s->rstart;
        s->rstart = 0;
    }
    ssize_t k = read(s->sock, s->rbuf + s->rend, RBUF_SIZE - s->rend);
    if (k < 0) {
        if (errno == EINTR || errno == EAGAIN) {
            return;
        }
        if (errno != ECONNRESET) {
            client_fail("cannot read from the guest agent of VM '%s': %m", vm_name);
        }
        k = 0;
    }
    if (k == 0) {
        client_fail("the guest agent of VM '%s' closed the connection before the command exited",
                    vm_name);
    }
    s->rend += (size_t)k;

    while (!s->exited && s->rend - s->rstart >= WIRE_HEADER_SIZE) {
        uint32_t n;
        Msg m;
        if (wire_header_parse(s->rbuf + s->rstart, &n) < 0) {
            client_fail("protocol error: the guest agent sent a frame over %u bytes",
                        WIRE_FRAME_MAX);
        }
        if (s->rend - s->rstart < WIRE_HEADER_SIZE + n) {
            break;
        }
        /* Output in a plain Data frame is taken where it lies; anything
         * else is decoded. */
        WireStream stream;
        uint32_t size;
        int h = wire_data_header_parse(s->rbuf + s->rstart, s->rend - s->rstart,
                                       WIRE_STREAM_BIT(WIRE_STDOUT) | WIRE_STREAM_BIT(WIRE_STDERR),
                                       &stream, &size);
        if (h > 0 && s->got_hello) {
            m = (Msg){
                .type = MSG_DATA,
                .data = {.stream = stream, .data = s->rbuf + s->rstart + h, .size = size},
            };
            s->rstart += WIRE_HEADER_SIZE + n;
            session_handle(s, &m);
            continue;
        }
        int r = wire_decode(s->rbuf + s->rstart + WIRE_HEADER_SIZE, n, &m);
        if (r < 0) {
            errno = -r;
            client_fail("protocol error: undecodable frame from the guest agent: %m");
        }
        s->rstart += WIRE_HEADER_SIZE + n;
        session_handle(s, &m);
        msg_done(&m);
    }
    if (s->rstart == s->rend) {
        s->rstart = s->rend = 0;
    }
}

/* Reads stdin straight into Data frames in the output queue, several
 * while the window and the queue allow, so that one send carries them. */
static void session_read_stdin(Session *s) {
    for (int i = 0; i < STDIN_CHUNKS_PER_ROUND; i++) {
        size_t want = MIN((size_t)CHUNK, (size_t)s->credit);
        int avail = 0;
        /* poll() said one read would not block; stdin may well be a
         * blocking fd, so read again only what is there. */
        if (i > 0 && (ioctl(STDIN_FILENO, FIONREAD, &avail) < 0 || avail <= 0)) {
            return;
        }
        ssize_t k = wire_writer_read_data(&s->out, STDIN_FILENO, WIRE_STDIN, want);

        if (k == -EINTR || k == -EAGAIN) {
            return;
        }
        if (k == -ENOMEM) {
            client_fail("cannot queue Data: %s", strerror(ENOMEM));
        }
        if (k <= 0) {
            /* EOF, or an error (closed stdin, hung-up terminal): no more input. */
            Msg m = {.type = MSG_STDIN_CLOSE};
            session_queue(s, &m);
            s->stdin_done = true;
            return;
        }
        s->credit -= (uint32_t)k;
        if (s->credit == 0 || wire_writer_pending(&s->out) >= OUT_HIGH || (size_t)k < want) {
            /* A short read: the pipe is empty for now (a terminal gives a
             * line at a time); do not wait in read() for more. */
            return;
        }
    }
}

/* ---- the stream connection ---------------------------------------------- */

static void stream_first_byte(Session *s) {
    if (!s->timing->first_byte) {
        s->timing->first_byte = now_usec(CLOCK_MONOTONIC);
    }
}

/* Whether fd would take a write now. */
static bool fd_writable(int fd) {
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    return poll(&p, 1, 0) > 0 && (p.revents & POLLOUT);
}

/* Before Attached: the guest agent's Hello and Attached, read frame by
 * frame out of what came; the bytes after them are the command's first
 * output. */
static void stream_head(Session *s) {
    Stream *st = &s->st;
    ssize_t k = read(st->fd, st->head + st->head_len, sizeof(st->head) - st->head_len);
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
        Msg m;
        if (wire_header_parse(st->head + off, &n) < 0 || n > sizeof(st->head) - WIRE_HEADER_SIZE) {
            client_fail("protocol error: the guest agent sent a frame over %zu bytes on the "
                        "stream connection",
                        sizeof(st->head) - WIRE_HEADER_SIZE);
        }
        if (st->head_len - off < WIRE_HEADER_SIZE + n) {
            break;
        }
        int r = wire_decode(st->head + off + WIRE_HEADER_SIZE, n, &m);
        if (r < 0) {
            errno = -r;
            client_fail("protocol error: undecodable frame from the guest agent: %m");
        }
        off += WIRE_HEADER_SIZE + n;
        if (m.type == MSG_ERROR) {
            guest_error(&m);
        }
        if (!st->got_hello && m.type == MSG_HELLO && wire_check_hello(&m) == 0) {
            st->got_hello = true;
        } else if (st->got_hello && m.type == MSG_ATTACHED) {
            st->attached = true;
        } else {
            client_fail("protocol error: unexpected %s on the stream connection",
                        msg_type_name(m.type));
        }
        msg_done(&m);
    }
    memmove(st->head, st->head + off, st->head_len - off);
    st->head_len -= off;
    if (st->attached && st->head_len > 0) {
        stream_first_byte(s);
        session_output(s, STDOUT_FILENO, st->head, st->head_len);
        st->head_len = 0;
    }
    if (!st->attached && st->head_len == sizeof(st->head)) {
        client_fail("protocol error: no Attached on the stream connection");
    }
}

/* Our stdout failed with errno e: as session_output() would. */
static void stream_stdout_error(Session *s) {
    if (errno == EPIPE) {
        stdout_reader_gone();
    }
    /* Unwritable otherwise: the output is dropped; the command goes on. */
    s->st.splice_out = false;
}

/* The command's output: the stream connection to our stdout. */
static void stream_output(Session *s) {
    Stream *st = &s->st;

    if (!st->attached) {
        stream_head(s);
        return;
    }
    for (int i = 0; i < STREAM_ROUNDS && !st->out_eof; i++) {
        ssize_t k;
        if (st->splice_out) {
            k = splice(st->fd, NULL, STDOUT_FILENO, NULL, STREAM_CHUNK,
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
            k = read(st->fd, st->obuf, STREAM_BUF_SIZE);
            if (k > 0) {
                stream_first_byte(s);
                session_output(s, STDOUT_FILENO, st->obuf, (size_t)k);
                continue;
            }
            if (k < 0 && errno == EAGAIN) {
                return;
            }
        }
        if (k > 0) {
            stream_first_byte(s);
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

/* Our stdin to the stream connection. */
static void stream_input(Session *s) {
    Stream *st = &s->st;

    for (int i = 0; i < STREAM_ROUNDS && !st->in_done; i++) {
        ssize_t k;
        if (st->buf_len == 0 && st->splice_in) {
            k = splice(STDIN_FILENO, NULL, st->fd, NULL, STREAM_CHUNK,
                       SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
            if (k > 0) {
                continue;
            }
            if (k == 0) {
                stream_input_end(s);
                return;
            }
            if (errno == EAGAIN) {
                /* Nothing in stdin, or the connection is full. */
                st->in_blocked = !fd_writable(st->fd);
                return;
            }
            if (errno == EINTR) {
                return;
            }
            if (errno != EINVAL) {
                goto failed; /* the connection failed, or stdin did */
            }
            st->splice_in = false; /* stdin is no pipe: read and write */
        }
        if (st->buf_len == 0) {
            k = read(STDIN_FILENO, st->buf, STREAM_BUF_SIZE);
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

/* Whether the stream connection still has work: output to pass on, or
 * input while the command runs. */
static bool stream_busy(const Session *s) {
    return s->st.fd >= 0 && !s->st.out_eof;
}

static void session_run(Session *s) {
    Stream *st = &s->st;

    for (;;) {
        struct pollfd pf[5];
        nfds_t n = 0;
        int i_sock, i_sig, i_in = -1, i_st = -1, i_out = -1;

        /* Signals first, then the check: a signal may be what ends us. */
        if (client_signal_seen()) {
            session_signals(s);
        }
        /* With a stream connection the command's output may outlast its
         * exit (a process it left holds stdout), as with a pipe. */
        if (s->exited && !stream_busy(s)) {
            break;
        }
        /* After Exited the connection only takes what we send (signals). */
        i_sock = (int)n;
        pf[n++] = (struct pollfd){
            .fd = s->sock_gone ? -1 : s->sock,
            .events = (s->exited ? 0 : POLLIN) | (wire_writer_pending(&s->out) ? POLLOUT : 0),
        };
        i_sig = (int)n;
        pf[n++] = (struct pollfd){.fd = client_signal_fd(), .events = POLLIN};
        if (st->fd >= 0) {
            bool in = s->started && !s->exited && !st->in_done;
            short ev = (!st->out_eof && !st->out_blocked ? POLLIN : 0) |
                       (in && st->in_blocked ? POLLOUT : 0);
            if (ev) {
                i_st = (int)n;
                pf[n++] = (struct pollfd){.fd = st->fd, .events = ev};
            }
            if (in && !st->in_blocked) {
                i_in = (int)n;
                pf[n++] = (struct pollfd){.fd = STDIN_FILENO, .events = POLLIN};
            }
            if (!st->out_eof && st->out_blocked) {
                i_out = (int)n;
                pf[n++] = (struct pollfd){.fd = STDOUT_FILENO, .events = POLLOUT};
            }
        } else if (s->started && !s->stdin_done && s->credit > 0 &&
                   wire_writer_pending(&s->out) < OUT_HIGH) {
            i_in = (int)n;
            pf[n++] = (struct pollfd){.fd = STDIN_FILENO, .events = POLLIN};
        }
        if (poll(pf, n, session_give_up_timeout(s)) < 0) {
            if (errno == EINTR) {
                continue;
            }
            client_fail("poll() failed: %m");
        }
        session_check_give_up(s);
        if (pf[i_sig].revents) {
            session_signals(s);
        }
        if (i_in >= 0 && pf[i_in].revents) {
            if (st->fd >= 0) {
                if (pf[i_in].revents & POLLNVAL) {
                    stream_input_end(s);
                } else {
                    stream_input(s);
                }
            } else if (pf[i_in].revents & POLLNVAL) {
                Msg m = {.type = MSG_STDIN_CLOSE};
                session_queue(s, &m);
                s->stdin_done = true;
            } else {
                session_read_stdin(s);
            }
        }
        if (i_st >= 0 && (pf[i_st].revents & POLLOUT)) {
            st->in_blocked = false;
            stream_input(s);
        }
        if (i_out >= 0 && pf[i_out].revents) {
            st->out_blocked = false;
            if (pf[i_out].revents & (POLLERR | POLLNVAL)) {
                errno = EPIPE;
                stream_stdout_error(s);
            }
        }
        if (i_st >= 0 && (pf[i_st].revents & (POLLIN | POLLHUP | POLLERR)) && !st->out_blocked) {
            stream_output(s);
        } else if (i_out >= 0 && !st->out_blocked) {
            stream_output(s);
        }
        if (wire_writer_pending(&s->out)) {
            session_flush(s);
        }
        if (!s->exited && (pf[i_sock].revents & (POLLIN | POLLHUP | POLLERR))) {
            session_read(s);
        } else if (s->exited && (pf[i_sock].revents & (POLLHUP | POLLERR))) {
            /* The guest agent closed first (it went away): nothing more
             * can be said on it; the output may still come. */
            s->sock_gone = true;
            wire_writer_done(&s->out);
        }
    }
}

/* ExitAck, best effort and bounded: the result is ours already. */
static void session_ack(Session *s) {
    Msg m = {.type = MSG_EXIT_ACK};
    uint64_t deadline = now_usec(CLOCK_MONOTONIC) + EXIT_ACK_TIMEOUT_MS * 1000ULL;

    if (s->acked) {
        return;
    }
    s->acked = true;
    if (wire_writer_queue(&s->out, &m) < 0) {
        return;
    }
    while (wire_writer_pending(&s->out)) {
        int r = wire_writer_flush(&s->out, s->sock);
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        if (r <= 0 || now >= deadline) {
            return;
        }
        struct pollfd p = {.fd = s->sock, .events = POLLOUT};
        (void)poll(&p, 1, (int)((deadline - now) / 1000) + 1);
    }
}

static int exit_status(const MsgExited *e) {
    switch (e->kind) {
    case EXIT_CODE:
        return (int)e->code;
    case EXIT_SIGNAL:
        return 128 + (int)e->signo;
    case EXIT_START_FAILED:
        return e->start_errno == ENOENT ? 127 : 126;
    }
    return EXIT_OWN_ERROR;
}

static void print_ms(const char *what, uint64_t start, uint64_t at, const char *note) {
    if (!at) {
        fprintf(stderr, "vm-run:   %-18s %9s   %s\n", what, "-", note ? note : "");
        return;
    }
    fprintf(stderr, "vm-run:   %-18s %9.3f ms%s\n", what, (double)(at - start) / 1000.0,
            note ? note : "");
}

static void print_timing(const Timing *t) {
    char note[96];
    fprintf(stderr, "vm-run: timing (since vm-run started):\n");
    print_ms("connect", t->start, t->host, NULL);
    if (t->vm_start_us) {
        snprintf(note, sizeof(note), " (VM start took %.3f ms)", (double)t->vm_start_us / 1000.0);
        print_ms("VM start", t->start, t->connected, note);
    } else {
        print_ms("VM start", t->start, 0, "(already running)");
    }
    snprintf(note, sizeof(note), " (host agent waited %.3f ms for it)",
             (double)t->guest_wait_us / 1000.0);
    print_ms("guest agent ready", t->start, t->guest_ready, note);
    print_ms("exec", t->start, t->started, NULL);
    print_ms("first byte", t->start, t->first_byte, t->first_byte ? NULL : "(no output)");
    print_ms("exit", t->start, t->exited, NULL);
}

int main(int argc, char **argv) {
    VmRunOptions opts;
    Timing timing = {.start = now_usec(CLOCK_MONOTONIC)};
    ErrorText err;
    _cleanup_free_ char *sock_path = NULL;
    _cleanup_close_ int host_fd = -EBADF;
    int r;

    client_setup("vm-run", EXIT_OWN_ERROR);
    r = vmrun_parse_args(argc, argv, &opts, &err);
    if (r < 0) {
        client_fail("%s", err.message);
    }
    if (opts.help) {
        fputs(vmrun_usage, stdout);
        return 0;
    }
    vm_name = opts.vm;
    /* Broken connections are errors we report, not signals. */
    signal(SIGPIPE, SIG_IGN);

    if (asprintf(&sock_path, "%s/%s.sock", config_runtime_dir(), opts.vm) < 0) {
        client_fail("out of memory");
    }
    check_vm_known(opts.vm, sock_path);

    int stream_fd = -EBADF;
    int guest_fd = host_connect(sock_path, &timing, !opts.tty, &host_fd, &stream_fd);
    if (stream_fd >= 0 && !stream_hello(stream_fd)) {
        stream_fd = safe_close(stream_fd);
    }

    Session s = {
        .opts = &opts,
        .sock = guest_fd,
        .st = {.fd = stream_fd, .got_hello = true, .splice_in = true, .splice_out = true},
        .credit = STDIN_WINDOW,
        .timing = &timing,
        .rbuf = malloc(RBUF_SIZE),
    };
    if (!s.rbuf) {
        client_fail("out of memory");
    }
    r = fd_nonblock(guest_fd, true);
    if (r >= 0 && stream_fd >= 0) {
        r = fd_nonblock(stream_fd, true);
    }
    if (r < 0) {
        errno = -r;
        client_fail("cannot set up the guest connection: %m");
    }

    Msg hello = msg_hello(SOFTWARE);
    Msg exec = {
        .type = MSG_EXEC,
        .exec =
            {
                .argc = opts.argc,
                .argv = opts.argv,
                .envc = opts.envc,
                .env = opts.env,
                .cwd = opts.cwd,
                .user = opts.user,
                .stdin_window = STDIN_WINDOW,
            },
    };
    if (opts.tty) {
        const char *term = getenv("TERM");
        exec.exec.pty = true;
        window_size(&exec.exec.rows, &exec.exec.cols);
        exec.exec.term = (term && term_name_valid(term)) ? term : NULL;
    }
    if (stream_fd >= 0) {
        /* The key pairs the Exec with the stream connection; Hello and
         * Attach go out on that one at once (a few bytes into an empty
         * socket buffer). */
        if (getrandom(exec.exec.stream_key, WIRE_STREAM_KEY_SIZE, 0) != WIRE_STREAM_KEY_SIZE) {
            client_fail("cannot make a stream key: %m");
        }
        exec.exec.has_stream_key = true;
        Msg attach = {.type = MSG_ATTACH};
        memcpy(attach.attach_key, exec.exec.stream_key, WIRE_STREAM_KEY_SIZE);
        r = client_send_pair(stream_fd, &hello, &attach);
        /* A refused or closed connection: the Exec's connection says why. */
        if (r < 0 && r != -EPIPE && r != -ECONNRESET) {
            errno = -r;
            client_fail("cannot write to the guest agent of VM '%s': %m", vm_name);
        }
        s.st.buf = malloc(STREAM_BUF_SIZE);
        s.st.obuf = malloc(STREAM_BUF_SIZE);
        if (!s.st.buf || !s.st.obuf) {
            client_fail("out of memory");
        }
    }
    /* Hello and Exec go out together; the agent's Hello is checked first
     * when the replies come in. */
    session_queue(&s, &hello);
    if (wire_writer_queue(&s.out, &exec) < 0) {
        client_fail("the command line is too long");
    }
    client_signals_setup();
    if (opts.tty) {
        atexit(client_terminal_restore);
        client_terminal_raw();
    }
    session_flush(&s);
    session_run(&s);

    session_ack(&s);
    client_terminal_restore();
    s.sock = safe_close(s.sock);
    s.st.fd = safe_close(s.st.fd);
    if (opts.timing) {
        print_timing(&timing);
    }
    wire_writer_done(&s.out);
    free(s.rbuf);
    free(s.st.buf);
    free(s.st.obuf);
    vmrun_options_done(&opts);
    return exit_status(&s.result);
}
