/* vm-run's session with the guest agent: see vmrun-session.h.
 *
 * One poll() loop (session_run()) relays our stdin to the command as Data
 * frames within the guest agent's stdin window (or, with a stream
 * connection, through vmrun-stream.c), its output to our stdout and
 * stderr, our signals and window size to it, until Exited came and its
 * output ended. Output is written blocking: while our stdout is slow the
 * connection is not read, and the guest agent stops reading the command
 * (backpressure), but signals still reach it. */
#include "vmrun-session.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <unistd.h>

#include "client.h"
#include "rules.h"
#include "util.h"

#define CHUNK WIRE_DATA_MAX
/* Incoming frames are read in bulk: room for the largest frame and more. */
#define RBUF_SIZE (2u * (WIRE_FRAME_MAX + WIRE_HEADER_SIZE))
/* Stop reading stdin while this much is queued for the guest. */
#define OUT_HIGH (4u * WIRE_DATA_MAX)
#define STDIN_CHUNKS_PER_ROUND 4
#define EXIT_ACK_TIMEOUT_MS 5000
/* -t: keystrokes held while the guest may not take them, read at most
 * this much at once, and how long those before ~. may take to go. */
#define KEYS_HOLD (64u * 1024u)
#define KEYS_READ_MAX 4096u
#define ESCAPE_FLUSH_MS 500
/* Output is filtered for a terminal this much at a time (on the stack). */
#define FILTER_PIECE 4096
/* The window size a pty gets when no terminal of ours tells. */
#define DEFAULT_ROWS 24
#define DEFAULT_COLS 80

/* The local window size; 24x80 when no terminal tells. */
static void window_size(uint16_t *rows, uint16_t *cols) {
    if (!client_window_size(rows, cols)) {
        *rows = DEFAULT_ROWS;
        *cols = DEFAULT_COLS;
    }
}

/* ---- sending -------------------------------------------------------------------------------- */

static void session_queue(Session *s, const Msg *m) {
    client_queue(&s->out, m);
}

static void session_flush(Session *s) {
    client_flush(&s->out, s->sock, "the guest agent", s->vm);
}

static void session_send_signal(Session *s, int signo) {
    Msg m = {.type = MSG_SIGNAL, .signo = (uint32_t)signo};
    session_queue(s, &m);
}

/* Our stdin ended, or is gone: StdinClose, once. */
static void session_stdin_close(Session *s) {
    Msg m = {.type = MSG_STDIN_CLOSE};
    session_queue(s, &m);
    s->stdin_done = true;
}

/* ---- signals and giving up ----------------------------------------------------------------- */

/* The guest did not end the command within VMRUN_GIVE_UP_MS of a signal
 * that asks us to end: close the connection (and the lease with our exit)
 * and exit as if killed by that signal. */
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

/* One caught signal: SIGWINCH resizes the pty, any other goes to the
 * command (or waits for Started). SIGHUP and SIGTERM, and any signal
 * before Started, also start the give-up deadline: a hung or hostile
 * guest must not keep us (and our lease) alive for ever. After Exited,
 * only output the command left keeps us (a process still holding its
 * stdout, or a guest that keeps the stream open): any of them is
 * forwarded and ends that wait within VMRUN_EXITED_GIVE_UP_MS, a second
 * one at once; the guest agent hangs up what is left when we go. */
static void session_signal(Session *s, int signo) {
    if (signo == SIGWINCH) {
        if (s->opts->tty && s->started) {
            Msg m = {.type = MSG_RESIZE};
            window_size(&m.resize.rows, &m.resize.cols);
            session_queue(s, &m);
        }
        return;
    }
    if (s->exited) {
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        uint64_t end = now + VMRUN_EXITED_GIVE_UP_MS * 1000ULL;
        if (!s->sock_gone) {
            session_send_signal(s, signo);
        }
        if (s->give_up_at == 0 || s->give_up_at > end || s->exited_signalled) {
            s->give_up_at = s->exited_signalled ? now : end;
            s->give_up_signo = signo;
        }
        s->exited_signalled = true;
        return;
    }
    if (s->started) {
        session_send_signal(s, signo);
    } else {
        s->pending_signals |= 1u << signo;
    }
    if (s->give_up_at == 0 && (signo == SIGHUP || signo == SIGTERM || !s->started)) {
        s->give_up_at = now_usec(CLOCK_MONOTONIC) + VMRUN_GIVE_UP_MS * 1000ULL;
        s->give_up_signo = signo;
    }
}

/* Forwards the signals that arrived. */
static void session_signals(Session *s) {
    uint8_t buf[64];
    ssize_t n;

    while ((n = client_signals_read(buf, sizeof(buf))) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            session_signal(s, buf[i]);
        }
    }
    session_flush(s);
}

/* ---- output -------------------------------------------------------------------------------- */

void session_first_byte(Session *s) {
    if (!s->timing->first_byte) {
        s->timing->first_byte = now_usec(CLOCK_MONOTONIC);
    }
}

/* Blocking, so that the socket is not read meanwhile (backpressure);
 * signals still interrupt the write and are forwarded. */
static void output_raw(Session *s, int fd, const uint8_t *p, size_t n) {
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
                client_stdout_gone();
            }
            /* stderr unwritable: nowhere to report it; drop the output. */
            return;
        }
        p += k;
        n -= (size_t)k;
    }
}

void session_output(Session *s, int fd, const uint8_t *p, size_t n) {
    if (!s->filter_on[fd]) {
        output_raw(s, fd, p, n);
        return;
    }
    /* Filtered a piece at a time: what is held of a cut UTF-8 sequence
     * comes out first, hence the room beyond the piece. */
    uint8_t buf[FILTER_PIECE + TERM_FILTER_HELD_MAX];
    while (n > 0) {
        size_t k = MIN(n, (size_t)FILTER_PIECE);
        output_raw(s, fd, buf, term_filter(&s->filter[fd], p, k, buf));
        p += k;
        n -= k;
    }
}

/* The output ended: a UTF-8 sequence cut short is replaced too. */
static void session_output_end(Session *s) {
    for (int fd = STDOUT_FILENO; fd <= STDERR_FILENO; fd++) {
        uint8_t buf[TERM_FILTER_HELD_MAX];
        if (s->filter_on[fd]) {
            output_raw(s, fd, buf, term_filter_end(&s->filter[fd], buf));
        }
    }
}

/* Without -t a terminal gets the command's output through the filter
 * (termfilter.h), unless --raw-output; -t is a terminal session, raw. */
static void session_filter_setup(Session *s) {
    if (s->opts->tty || s->opts->raw_output) {
        return;
    }
    for (int fd = STDOUT_FILENO; fd <= STDERR_FILENO; fd++) {
        s->filter_on[fd] = isatty(fd) == 1;
    }
    /* The stream connection then goes through our buffer, not splice(). */
    if (s->filter_on[STDOUT_FILENO]) {
        s->st.splice_out = false;
    }
}

/* ---- the guest agent's frames -------------------------------------------------------------- */

void session_guest_error(const Session *s, const Msg *untrusted) {
    char text[CLIENT_PEER_TEXT_MAX];
    client_peer_message(untrusted, text);
    if (untrusted->error.code == WIRE_ERR_DENIED) {
        client_fail("the guest agent of VM '%s' denied access: %s (DENIED)", s->vm, text);
    }
    client_fail("the guest agent of VM '%s' reported an error: %s (%s)", s->vm, text,
                client_error_name(untrusted->error.code));
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

/* The first frame must be the guest agent's Hello, of our major version. */
static void session_hello(Session *s, const Msg *untrusted, uint64_t now) {
    if (untrusted->type != MSG_HELLO) {
        client_fail("protocol error: the guest agent sent %s before Hello",
                    msg_type_name(untrusted->type));
    }
    if (wire_check_hello(untrusted) < 0) {
        client_fail("the guest agent of VM '%s' speaks protocol version %u, vm-run %u", s->vm,
                    untrusted->hello.major, WIRE_VERSION_MAJOR);
    }
    s->got_hello = true;
    s->timing->guest_ready = now;
}

/* One frame from the guest agent, judged against the session's state. */
static void session_handle(Session *s, const Msg *untrusted) {
    uint64_t now = now_usec(CLOCK_MONOTONIC);

    if (untrusted->type == MSG_ERROR) {
        session_guest_error(s, untrusted);
    }
    if (!s->got_hello) {
        session_hello(s, untrusted, now);
        return;
    }
    switch (untrusted->type) {
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
        if (untrusted->data.stream == WIRE_STDIN) {
            break;
        }
        if (!s->timing->first_byte) {
            s->timing->first_byte = now;
        }
        session_output(s, untrusted->data.stream == WIRE_STDOUT ? STDOUT_FILENO : STDERR_FILENO,
                       untrusted->data.data, untrusted->data.size);
        return;
    case MSG_STDIN_ACK:
        if (!s->started || untrusted->stdin_ack > VMRUN_STDIN_WINDOW - s->credit) {
            client_fail("protocol error: the guest agent acknowledged more stdin than was sent");
        }
        s->credit += untrusted->stdin_ack;
        return;
    case MSG_EXITED:
        s->exited = true;
        s->result = untrusted->exited;
        s->timing->exited = now;
        return;
    default:
        break;
    }
    client_fail("protocol error: unexpected %s from the guest agent",
                msg_type_name(untrusted->type));
}

/* Reads what the socket has into the buffer; fails with one line when
 * the connection ends before Exited. */
static void session_read_socket(Session *s) {
    if (RBUF_SIZE - s->rend < WIRE_FRAME_MAX + WIRE_HEADER_SIZE) {
        memmove(s->untrusted_buf, s->untrusted_buf + s->rstart, s->rend - s->rstart);
        s->rend -= s->rstart;
        s->rstart = 0;
    }
    ssize_t k = read(s->sock, s->untrusted_buf + s->rend, RBUF_SIZE - s->rend);
    if (k < 0) {
        if (errno == EINTR || errno == EAGAIN) {
            return;
        }
        if (errno != ECONNRESET) {
            client_fail("cannot read from the guest agent of VM '%s': %m", s->vm);
        }
        k = 0;
    }
    if (k == 0) {
        client_fail("the guest agent of VM '%s' closed the connection before the command exited",
                    s->vm);
    }
    s->rend += (size_t)k;
}

/* Handles every whole frame in the buffer. Output in a plain Data frame
 * is taken where it lies; anything else is decoded first. */
static void session_frames(Session *s) {
    while (!s->exited && s->rend - s->rstart >= WIRE_HEADER_SIZE) {
        const uint8_t *untrusted_frame = s->untrusted_buf + s->rstart;
        size_t avail = s->rend - s->rstart;
        uint32_t n, size;
        WireStream stream;
        Msg untrusted;

        if (wire_header_parse(untrusted_frame, &n) < 0) {
            client_fail("protocol error: the guest agent sent a frame over %u bytes",
                        WIRE_FRAME_MAX);
        }
        if (avail < WIRE_HEADER_SIZE + n) {
            break;
        }
        int h = wire_data_header_parse(untrusted_frame, avail,
                                       WIRE_STREAM_BIT(WIRE_STDOUT) | WIRE_STREAM_BIT(WIRE_STDERR),
                                       &stream, &size);
        s->rstart += WIRE_HEADER_SIZE + n;
        if (h > 0 && s->got_hello) {
            untrusted = (Msg){
                .type = MSG_DATA,
                .data = {.stream = stream, .data = untrusted_frame + h, .size = size},
            };
            session_handle(s, &untrusted);
            continue;
        }
        int r = wire_decode(untrusted_frame + WIRE_HEADER_SIZE, n, &untrusted);
        if (r < 0) {
            errno = -r;
            client_fail("protocol error: undecodable frame from the guest agent: %m");
        }
        session_handle(s, &untrusted);
        msg_done(&untrusted);
    }
    if (s->rstart == s->rend) {
        s->rstart = s->rend = 0;
    }
}

/* ---- our stdin as Data frames -------------------------------------------------------------- */

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
            session_stdin_close(s);
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

/* ---- -t: keystrokes and the escape --------------------------------------------------------- */

/* Leaves on ~.: what was typed before it goes first (bounded: the guest
 * may take nothing), the connections close (the guest agent hangs the
 * command up) and vm-run exits with 255, as ssh does. */
_noreturn_ static void session_escape_leave(Session *s) {
    if (s->started && s->n_keys > 0 && s->credit > 0) {
        Msg m = {
            .type = MSG_DATA,
            .data = {.stream = WIRE_STDIN, .data = s->keys, .size = MIN(s->n_keys, s->credit)}};
        session_queue(s, &m);
    }
    client_flush_bounded(&s->out, s->sock, ESCAPE_FLUSH_MS);
    client_terminal_restore();
    fputs("\r\n", stderr);
    client_warn("left the session of VM '%s' (~.)", s->vm);
    exit(CLIENT_EXIT_OWN_ERROR);
}

/* Keystrokes held to the guest, as its window and our queue allow. */
static void session_keys_push(Session *s) {
    while (s->started && s->n_keys > 0 && s->credit > 0 &&
           wire_writer_pending(&s->out) < OUT_HIGH) {
        size_t k = MIN(MIN(s->n_keys, (size_t)s->credit), (size_t)CHUNK);
        Msg m = {.type = MSG_DATA, .data = {.stream = WIRE_STDIN, .data = s->keys, .size = k}};
        session_queue(s, &m);
        s->credit -= (uint32_t)k;
        s->n_keys -= k;
        memmove(s->keys, s->keys + k, s->n_keys);
    }
    if (s->stdin_eof && s->n_keys == 0 && !s->stdin_done) {
        session_stdin_close(s);
    }
}

/* The terminal has keystrokes: read whatever the guest does (so that ~.
 * is always seen), held while it may not take them. When the hold is
 * full, keystrokes are only watched for the escape. */
static void session_read_keys(Session *s) {
    uint8_t in[KEYS_READ_MAX], keys[KEYS_READ_MAX + 1];
    bool leave;
    ssize_t k = read(STDIN_FILENO, in, sizeof(in));

    if (k < 0 && (errno == EINTR || errno == EAGAIN)) {
        return;
    }
    if (k <= 0) {
        /* EOF, or an error (a hung-up terminal): no more input. */
        s->stdin_eof = true;
        session_keys_push(s);
        return;
    }
    size_t n = tty_escape_scan(&s->escape, in, (size_t)k, keys, &leave);
    n = MIN(n, KEYS_HOLD - s->n_keys);
    memcpy(s->keys + s->n_keys, keys, n);
    s->n_keys += n;
    if (leave) {
        session_escape_leave(s);
    }
    session_keys_push(s);
}

/* ---- the loop ------------------------------------------------------------------------------ */

/* What this round waits for: the guest agent connection (to read until
 * Exited, to write while frames are queued), the signal pipe, and our
 * stdin and the stream connection while they have work. */
static void session_poll_build(const Session *s, SessionPoll *ps) {
    *ps = (SessionPoll){.i_in = -1, .i_st = -1, .i_out = -1};
    /* After Exited the connection only takes what we send (signals). */
    ps->i_sock = (int)ps->n;
    ps->pf[ps->n++] = (struct pollfd){
        .fd = s->sock_gone ? -1 : s->sock,
        .events = (s->exited ? 0 : POLLIN) | (wire_writer_pending(&s->out) ? POLLOUT : 0),
    };
    ps->i_sig = (int)ps->n;
    ps->pf[ps->n++] = (struct pollfd){.fd = client_signal_fd(), .events = POLLIN};
    if (s->st.fd >= 0) {
        stream_poll_add(s, ps);
    } else if (s->escape_on ? !s->stdin_eof
                            : s->started && !s->stdin_done && s->credit > 0 &&
                                  wire_writer_pending(&s->out) < OUT_HIGH) {
        ps->i_in = (int)ps->n;
        ps->pf[ps->n++] = (struct pollfd){.fd = STDIN_FILENO, .events = POLLIN};
    }
}

/* Our stdin said something: to the stream connection, or as Data. */
static void session_stdin(Session *s, short revents) {
    if (s->st.fd >= 0) {
        stream_stdin(s, revents);
    } else if (revents & POLLNVAL) {
        s->stdin_eof = true;
        if (s->escape_on) {
            session_keys_push(s);
        } else {
            session_stdin_close(s);
        }
    } else if (s->escape_on) {
        session_read_keys(s);
    } else {
        session_read_stdin(s);
    }
}

/* The guest agent connection said something: frames before Exited; after
 * it, a hang-up (the agent went away first) ends what we can say there,
 * while the output may still come on the stream connection. */
static void session_socket(Session *s, short revents) {
    if (!s->exited && (revents & (POLLIN | POLLHUP | POLLERR))) {
        session_read_socket(s);
        session_frames(s);
    } else if (s->exited && (revents & (POLLHUP | POLLERR))) {
        s->sock_gone = true;
        wire_writer_done(&s->out);
    }
}

/* The session's one loop, after sending what session_start() queued:
 * until Exited came and, with a stream connection, the command's output
 * ended too (a process it left may hold its stdout, as with a pipe). Each
 * round: signals first (one may be what ends us), then stdin, the stream
 * connection, our queued frames, and the guest agent's frames. */
void session_run(Session *s) {
    session_flush(s);
    for (;;) {
        SessionPoll ps;

        if (client_signal_seen()) {
            session_signals(s);
        }
        if (s->exited && !stream_busy(s)) {
            session_output_end(s);
            break;
        }
        session_poll_build(s, &ps);
        if (poll(ps.pf, ps.n, session_give_up_timeout(s)) < 0) {
            if (errno == EINTR) {
                continue;
            }
            client_fail("poll() failed: %m");
        }
        session_check_give_up(s);
        if (ps.pf[ps.i_sig].revents) {
            session_signals(s);
        }
        if (ps.i_in >= 0 && ps.pf[ps.i_in].revents) {
            session_stdin(s, ps.pf[ps.i_in].revents);
        }
        if (s->st.fd >= 0) {
            stream_events(s, &ps);
        }
        if (s->escape_on) {
            session_keys_push(s);
        }
        if (wire_writer_pending(&s->out)) {
            session_flush(s);
        }
        session_socket(s, ps.pf[ps.i_sock].revents);
    }
}

/* ---- start and end ------------------------------------------------------------------------- */

/* The Exec for the command line. */
static Msg exec_request(const VmRunOptions *opts) {
    Msg exec = {
        .type = MSG_EXEC,
        .exec =
            {
                .argc = opts->argc,
                .argv = opts->argv,
                .envc = opts->envc,
                .env = opts->env,
                .cwd = opts->cwd,
                .user = opts->user,
                .wait_wayland = opts->wait_wayland,
                .stdin_window = VMRUN_STDIN_WINDOW,
            },
    };
    if (opts->tty) {
        const char *term = getenv("TERM");
        exec.exec.pty = true;
        window_size(&exec.exec.rows, &exec.exec.cols);
        exec.exec.term = (term && term_name_valid(term)) ? term : NULL;
    }
    return exec;
}

/* The stream connection: a random key pairs it with the Exec; Hello and
 * Attach go out on it at once (a few bytes into an empty socket buffer). */
static void stream_attach(Session *s, const Msg *hello, Msg *exec) {
    if (getrandom(exec->exec.stream_key, WIRE_STREAM_KEY_SIZE, 0) != WIRE_STREAM_KEY_SIZE) {
        client_fail("cannot make a stream key: %m");
    }
    exec->exec.has_stream_key = true;
    Msg attach = {.type = MSG_ATTACH};
    memcpy(attach.attach_key, exec->exec.stream_key, WIRE_STREAM_KEY_SIZE);
    int r = client_send_pair(s->st.fd, hello, &attach);
    /* A refused or closed connection: the Exec's connection says why. */
    if (r < 0 && r != -EPIPE && r != -ECONNRESET) {
        errno = -r;
        client_fail("cannot write to the guest agent of VM '%s': %m", s->vm);
    }
    s->st.buf = malloc(VMRUN_STREAM_BUF_SIZE);
    s->st.obuf = malloc(VMRUN_STREAM_BUF_SIZE);
    if (!s->st.buf || !s->st.obuf) {
        client_fail("out of memory");
    }
}

void session_start(Session *s, const VmRunOptions *opts, const char *vm, int sock, int stream_fd,
                   VmRunTiming *timing) {
    *s = (Session){
        .opts = opts,
        .vm = vm,
        .sock = sock,
        .st = {.fd = stream_fd, .got_hello = true, .splice_in = true, .splice_out = true},
        .credit = VMRUN_STDIN_WINDOW,
        .timing = timing,
        .untrusted_buf = malloc(RBUF_SIZE),
    };
    if (!s->untrusted_buf) {
        client_fail("out of memory");
    }
    session_filter_setup(s);
    /* As ssh's: only for keys typed at a terminal, never in piped data. */
    if (opts->tty && !opts->no_escape && isatty(STDIN_FILENO) == 1) {
        s->escape_on = true;
        s->keys = malloc(KEYS_HOLD);
        if (!s->keys) {
            client_fail("out of memory");
        }
    }
    int r = fd_nonblock(sock, true);
    if (r >= 0 && stream_fd >= 0) {
        r = fd_nonblock(stream_fd, true);
    }
    if (r < 0) {
        errno = -r;
        client_fail("cannot set up the guest connection: %m");
    }

    Msg hello = msg_hello(VMRUN_SOFTWARE);
    Msg exec = exec_request(opts);
    if (stream_fd >= 0) {
        stream_attach(s, &hello, &exec);
    }
    /* Hello and Exec go out together; the agent's Hello is checked first
     * when the replies come in. */
    session_queue(s, &hello);
    if (wire_writer_queue(&s->out, &exec) < 0) {
        client_fail("the command line is too long");
    }
}

void session_ack(Session *s) {
    Msg m = {.type = MSG_EXIT_ACK};

    if (s->acked) {
        return;
    }
    s->acked = true;
    if (wire_writer_queue(&s->out, &m) < 0) {
        return;
    }
    client_flush_bounded(&s->out, s->sock, EXIT_ACK_TIMEOUT_MS);
}

int session_exit_status(const Session *s) {
    const MsgExited *e = &s->result;
    switch (e->kind) {
    case EXIT_CODE:
        return (int)e->code;
    case EXIT_SIGNAL:
        return 128 + (int)e->signo;
    case EXIT_START_FAILED:
        return e->start_errno == ENOENT ? 127 : 126;
    }
    return CLIENT_EXIT_OWN_ERROR;
}

void session_done(Session *s) {
    s->sock = safe_close(s->sock);
    s->st.fd = safe_close(s->st.fd);
    wire_writer_done(&s->out);
    free(s->untrusted_buf);
    free(s->keys);
    free(s->st.buf);
    free(s->st.obuf);
}
