/* Sessions: see session.h.
 *
 * A session has two lifetimes: the connection's (Hello → request → reply
 * or Exec stream → close: conn.h) and the program's (spawn → exit →
 * reaped: child.h). The session is freed once both are over. Between the
 * two it relays: the client's stdin to the program (stdin-queue.h) with
 * StdinAck credit, the program's output to the client (output.h) with
 * backpressure, signals, window sizes, and Exited once the program exited
 * and its output ended. */
#include "session.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <termios.h>

#include "child.h"
#include "conn.h"
#include "log.h"
#include "output.h"
#include "spawn.h"
#include "stdin-queue.h"
#include "util.h"
#include "wire.h"

#define HELLO_TIMEOUT_USEC (10ULL * 1000000ULL) /* Hello and the request */
/* An Exec and its stream connection wait this long for each other. */
#define STREAM_WAIT_USEC (10ULL * 1000000ULL)
#define EXIT_ACK_TIMEOUT_USEC (10ULL * 1000000ULL)
#define LINGER_USEC (2ULL * 1000000ULL) /* flushing a last reply */
/* The connection's bound: the output's, one Data frame beyond it, and room
 * for the few small control frames (one StdinAck in flight, Started,
 * Exited, a start failure's report). */
#define SESSION_OUT_MAX (OUTPUT_PENDING_MAX + 2u * WIRE_DATA_MAX)
#define STDIN_UNWINDOWED_MAX (4u * WIRE_DATA_MAX) /* without a window: stop reading */
#define TIMER_ACCURACY_USEC 10000ULL

/* The session's states on its connection (conn.h); once the connection
 * is closing the state is 0. */
enum {
    S_HELLO = CONN_STATE_HELLO, /* waiting for the client's Hello */
    S_REQUEST = 1u << 1,        /* waiting for the one request */
    S_RUNNING = 1u << 2,        /* Exec accepted, Exited not sent yet */
    S_EXITED = 1u << 3,         /* Exited sent, waiting for ExitAck */
    S_STREAM_WAIT = 1u << 4,    /* Exec with a stream key, its Attach not here yet */
    S_PARKED = 1u << 5,         /* a stream connection waiting for its Exec */
};

struct Session {
    Agent *agent;
    Session *prev, *next;
    unsigned id;
    uint64_t peer;  /* who connected (session.h) */
    LogContext log; /* "Session <id>", QUBES_LITE_SESSION, QUBES_LITE_PID */

    Conn *conn;

    /* The program. */
    Child child;
    bool live; /* counted as a live session (idle tracking) */
    bool pty;
    int out_fd[2]; /* stdout (or the pty master), stderr */
    sd_event_source *out_src[2];
    StdinQueue in;
    uint32_t window; /* the stdin window; 0: none asked */
    /* Stdin written (or dropped) and not acknowledged yet, and where the
     * StdinAck frame last queued ends in what the connection sends
     * (conn_sent()). One ack frame at a time: a client that does not read
     * cannot make us queue one per write. */
    size_t ack_bytes;
    uint64_t ack_end;

    /* Stream connections: the key of a parked Attach or of an Exec in
     * STREAM_WAIT (kept in exec until its Attach comes); stream: the
     * program's stdin and stdout are that connection, not relayed. */
    uint8_t untrusted_key[WIRE_STREAM_KEY_SIZE]; /* the peer's: only ever compared */
    Msg exec;
    bool stream;
    bool client_hello; /* the handed-over client's Hello came (below) */
};

static unsigned session_next_id;

static void session_maybe_free(Session *s);

/* ---- small helpers --------------------------------------------------------- */

static unsigned session_state(const Session *s) {
    return conn_state(s->conn);
}

static int session_queue(Session *s, const Msg *m) {
    return conn_queue(s->conn, m);
}

/* The end of every handler of the session's own sources: a failure loses
 * the connection, otherwise it is flushed and everything re-armed. May
 * free s. */
static void session_settle(Session *s, int r) {
    conn_settle(s->conn, r);
}

/* Fails the connection for r, with err's text when there is one. */
static int session_fail(Session *s, int r, const ErrorText *err) {
    return conn_fail(s->conn, conn_wire_error(r),
                     err && err->message[0] ? err->message : strerror(-r));
}

static void stdin_end(Session *s) {
    stdin_queue_discard(&s->in);
    stdin_queue_close(&s->in);
}

static void output_close(Session *s, int i) {
    if (s->out_fd[i] >= 0) {
        /* A frame spliced from it cannot be completed any more. */
        conn_splice_abort(s->conn, s->out_fd[i]);
    }
    s->out_src[i] = sd_event_source_disable_unref(s->out_src[i]);
    s->out_fd[i] = safe_close(s->out_fd[i]);
}

static void session_live_end(Session *s) {
    if (s->live) {
        s->live = false;
        agent_live_end(s->agent);
    }
}

/* The client is gone (or broke the protocol) before acknowledging the
 * exit: nothing more is relayed, and the program's group is hung up. */
static void session_abort(Session *s) {
    if (!s->child.present || s->child.hung_up) {
        return;
    }
    session_live_end(s);
    stdin_end(s);
    output_close(s, 0);
    output_close(s, 1);
    child_hang_up(&s->child, (uint64_t)s->agent->opt.kill_grace_s * 1000000ULL);
}

/* ---- acknowledgements --------------------------------------------------------- */

/* Queues a StdinAck for the stdin acknowledged so far. */
static int ack_queue(Session *s) {
    Msg m = {.type = MSG_STDIN_ACK, .stdin_ack = (uint32_t)s->ack_bytes};
    int r = session_queue(s, &m);
    if (r < 0) {
        return r;
    }
    s->ack_bytes = 0;
    s->ack_end = conn_sent(s->conn) + conn_pending(s->conn);
    return 0;
}

/* Before each flush: the stdin acknowledged so far, once no StdinAck is
 * on its way any more. A failure to queue it leaves the bytes for the
 * next time. */
static void session_before_flush(void *userdata) {
    Session *s = userdata;
    if (s->ack_bytes > 0 && conn_sent(s->conn) >= s->ack_end) {
        (void)ack_queue(s);
    }
}

/* ---- Exited ---------------------------------------------------------------- */

static int on_exit_ack_timeout(void *userdata) {
    Session *s = userdata;
    log_ctx_debug(&s->log, "no ExitAck came in time");
    return -ETIMEDOUT; /* the client counts as gone */
}

/* Sends Exited once the program exited (or failed to start) and its output
 * reached EOF. */
static int session_try_finish(Session *s) {
    Msg m = {.type = MSG_EXITED};

    if (session_state(s) != S_RUNNING || s->child.hung_up || !s->child.exited ||
        child_report_pending(&s->child) || s->out_fd[0] >= 0 || s->out_fd[1] >= 0) {
        return 0;
    }
    child_exit_status(&s->child, &m.exited);
    stdin_end(s);
    int r = 0;
    if (s->ack_bytes > 0) {
        r = ack_queue(s); /* before Exited, so at most two at this point */
    }
    if (r >= 0) {
        r = session_queue(s, &m);
    }
    if (r < 0) {
        return r;
    }
    conn_set_state(s->conn, S_EXITED);
    if (s->stream) {
        /* The program's stdout may still be open (a process it left
         * behind holds it), and only the client sees it end: the session
         * stays live, and signals reach the group, until the client
         * acknowledges or goes away (which hangs the group up as before
         * the exit). */
        return 0;
    }
    session_live_end(s);
    return conn_timer_arm(s->conn, EXIT_ACK_TIMEOUT_USEC, on_exit_ack_timeout);
}

/* ---- the program's stdin and output -------------------------------------------- */

/* Writes queued stdin to the program; what it consumed is acknowledged
 * with the next flush. */
static void stdin_pump(Session *s) {
    int error;
    size_t done = stdin_queue_pump(&s->in, &error);
    if (error < 0) {
        log_ctx_debug_errno(&s->log, error, "the program's stdin is gone: %m");
    }
    if (s->window > 0) {
        s->ack_bytes += done;
    }
}

static int on_stdin_writable(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
    Session *s = userdata;
    stdin_pump(s);
    session_settle(s, conn_flush(s->conn)); /* the StdinAck: credit back at once */
    return 0;
}

static int on_output(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
    Session *s = userdata;
    int i = fd == s->out_fd[0] ? 0 : 1;
    int error;

    int r = output_pump(s->conn, fd, i == 0 ? WIRE_STDOUT : WIRE_STDERR, s->pty, &error);
    if (r > 0) {
        if (error < 0) {
            log_ctx_debug_errno(&s->log, error, "reading the program's output failed: %m");
        }
        output_close(s, i);
        r = 0;
    }
    /* One send for what this round read: fewer, larger writes mean fewer
     * wake-ups on both ends. */
    if (r >= 0) {
        r = conn_flush(s->conn);
    }
    if (r >= 0) {
        r = session_try_finish(s);
    }
    session_settle(s, r);
    return 0;
}

/* ---- the program's start and exit (child.h) ---------------------------------- */

/* Sends m, then Exited if nothing else was left. May free s. */
static void session_tell(Session *s, const Msg *m) {
    int r = session_queue(s, m);
    if (r >= 0) {
        r = conn_flush(s->conn);
    }
    if (r >= 0) {
        r = session_try_finish(s);
    }
    session_settle(s, r);
}

static void on_program_started(void *userdata) {
    Session *s = userdata;
    Msg m = {.type = MSG_STARTED, .started_pid = s->child.pid};
    session_tell(s, &m);
}

/* The reason goes to the program's stderr, as a shell would print it. */
static void on_program_start_failed(void *userdata, int error, const char *msg, size_t len) {
    Session *s = userdata;
    output_close(s, 0);
    output_close(s, 1);
    stdin_end(s);
    Msg m = {.type = MSG_DATA,
             .data = {.stream = WIRE_STDERR, .data = (const uint8_t *)msg, .size = len}};
    session_tell(s, &m);
}

static void on_program_exited(void *userdata) {
    Session *s = userdata;
    int r = session_try_finish(s);
    if (r >= 0) {
        r = conn_flush(s->conn);
    }
    session_settle(s, r);
}

static void on_program_gone(void *userdata) {
    session_maybe_free(userdata);
}

static const ChildOps child_ops = {
    .started = on_program_started,
    .start_failed = on_program_start_failed,
    .exited = on_program_exited,
    .gone = on_program_gone,
};

/* ---- Exec -------------------------------------------------------------------- */

/* A program that could not be spawned at all: its reason on stderr, then
 * Exited {start_errno}. */
static int session_spawn_failed(Session *s, const MsgExec *x, int error) {
    char buf[256];
    log_ctx_error_errno(&s->log, error, "cannot start a program: %m");
    snprintf(buf, sizeof(buf), "qubes-lite: cannot start %s: %s\n", x->argv[0], strerror(-error));
    Msg d = {.type = MSG_DATA,
             .data = {.stream = WIRE_STDERR, .data = (const uint8_t *)buf, .size = strlen(buf)}};
    Msg e = {.type = MSG_EXITED,
             .exited = {.kind = EXIT_START_FAILED, .start_errno = (uint32_t)-error}};
    int r;
    if ((r = session_queue(s, &d)) < 0 || (r = session_queue(s, &e)) < 0) {
        return r;
    }
    conn_set_state(s->conn, S_EXITED);
    return conn_timer_arm(s->conn, EXIT_ACK_TIMEOUT_USEC, on_exit_ack_timeout);
}

/* Takes what the spawned program gave us over and watches it: its exit
 * and start report, its stdin and its output (each source off until
 * session_settled()). On failure everything is the session's already, to
 * be wound down. */
static int session_watch(Session *s, const Spawned *sp) {
    sd_event *e = s->agent->event;
    s->out_fd[0] = sp->stdout_fd;
    s->out_fd[1] = sp->stderr_fd;
    stdin_queue_take(&s->in, sp->stdin_fd, s->pty);
    int r = child_watch(&s->child, e, sp, &child_ops, s, &s->log);
    if (r >= 0) {
        r = stdin_queue_watch(&s->in, e, on_stdin_writable, s);
    }
    for (int i = 0; i < 2 && r >= 0; i++) {
        if (s->out_fd[i] >= 0) {
            r = sd_event_add_io(e, &s->out_src[i], s->out_fd[i], EPOLLIN, on_output, s);
            if (r >= 0) {
                r = sd_event_source_set_enabled(s->out_src[i], SD_EVENT_OFF);
            }
        }
    }
    return r;
}

/* Starts the Exec x; with stream_fd >= 0 that socket is the program's
 * stdin and stdout. A refusal's text goes to err. */
static int session_exec(Session *s, const MsgExec *x, int stream_fd, ErrorText *err) {
    Agent *a = s->agent;
    Spawned sp;

    conn_timer_disarm(s->conn);
    if (a->powering_off) {
        return error_set(err, -ESHUTDOWN, "the VM is shutting down");
    }
    SpawnOptions o = {
        .default_user = a->opt.default_user,
        .wayland_timeout_usec = (uint64_t)a->opt.wayland_timeout_s * 1000000ULL,
        .user = user_cache_get(a->users, x->user ? x->user : a->opt.default_user),
        .stream = stream_fd >= 0,
        .stream_fd = stream_fd,
    };
    int r = spawn_start(x, &o, &sp);
    if (r < 0) {
        return session_spawn_failed(s, x, r);
    }
    s->pty = x->pty;
    s->stream = stream_fd >= 0;
    s->window = x->stdin_window;
    conn_set_state(s->conn, S_RUNNING);
    s->live = true;
    agent_live_begin(a);
    log_context_set(&s->log, "QUBES_LITE_PID", "%d", (int)sp.pid);
    if (log_get_max_level() >= LOG_DEBUG) {
        char name[64];
        log_ctx_debug(&s->log, "exec \"%s\" as pid %d%s",
                      str_sanitize(x->argv[0], strlen(x->argv[0]), name, sizeof(name)), (int)sp.pid,
                      s->stream ? " on a stream connection" : "");
    }
    /* From here on every failure is handled by winding the child down. */
    return session_watch(s, &sp);
}

/* ---- stream connections --------------------------------------------------------
 *
 * An Exec with a stream key and the connection that sends Attach with the
 * same key (from the same peer) meet here, whichever comes first; the
 * first waits STREAM_WAIT_USEC for the other. */

/* The session of the same peer waiting in state with this key. */
static Session *stream_find(Session *s, unsigned state, const uint8_t *untrusted_key) {
    for (Session *o = s->agent->sessions; o; o = o->next) {
        if (o != s && session_state(o) == state && o->peer == s->peer &&
            memcmp(o->untrusted_key, untrusted_key, WIRE_STREAM_KEY_SIZE) == 0) {
            return o;
        }
    }
    return NULL;
}

/* Starts s's Exec x on b's connection: Attached goes out on b, then b's
 * socket (blocking again) becomes the program's stdin and stdout and our
 * copy is closed. b's connection is over either way (and b freed, unless
 * this runs in its handler). */
static int stream_pair(Session *s, const MsgExec *x, Session *b, ErrorText *err) {
    Msg m = {.type = MSG_ATTACHED};
    int r = conn_queue(b->conn, &m);
    if (r >= 0) {
        /* Hello and Attached are all we ever send: they fit an empty
         * socket buffer, or the client is not reading (1). */
        r = conn_flush(b->conn);
    }
    if (r == 0) {
        r = fd_nonblock(conn_fd(b->conn), false);
    }
    if (r == 0) {
        log_ctx_debug(&s->log, "stream connection from session %u", b->id);
        r = session_exec(s, x, conn_fd(b->conn), err);
    } else {
        log_ctx_debug_errno(&s->log, r > 0 ? -EAGAIN : r, "stream connection unusable: %m");
        r = error_set(err, r > 0 ? -EIO : r, "the stream connection could not be set up");
    }
    conn_close(b->conn, 0);
    return r;
}

static int on_stream_wait_timeout(void *userdata) {
    Session *s = userdata;
    msg_done(&s->exec);
    return conn_fail(s->conn, WIRE_ERR_UNAVAILABLE, "no stream connection came for the Exec");
}

static int on_parked_timeout(void *userdata) {
    Session *s = userdata;
    return conn_fail(s->conn, WIRE_ERR_PROTOCOL, "no Exec came for this stream connection");
}

/* ---- requests ---------------------------------------------------------------- */

static int handle_exec(void *userdata, Msg *m) {
    Session *s = userdata;
    ErrorText err = {};
    int r;

    if (!m->exec.has_stream_key) {
        r = session_exec(s, &m->exec, -EBADF, &err);
        return r < 0 ? session_fail(s, r, &err) : 0;
    }
    conn_timer_disarm(s->conn);
    memcpy(s->untrusted_key, m->exec.stream_key, WIRE_STREAM_KEY_SIZE);
    if (stream_find(s, S_STREAM_WAIT, s->untrusted_key)) {
        return conn_fail(s->conn, WIRE_ERR_PROTOCOL, "stream key in use");
    }
    Session *b = stream_find(s, S_PARKED, s->untrusted_key);
    if (b) {
        r = stream_pair(s, &m->exec, b, &err);
        return r < 0 ? session_fail(s, r, &err) : 0;
    }
    /* Wait for the Attach, not reading further meanwhile. */
    s->exec = *m;
    m->_storage = m->_env = NULL; /* moved */
    conn_set_state(s->conn, S_STREAM_WAIT);
    return conn_timer_arm(s->conn, STREAM_WAIT_USEC, on_stream_wait_timeout);
}

static int handle_attach(void *userdata, Msg *m) {
    Session *s = userdata;
    ErrorText err = {};

    conn_timer_disarm(s->conn);
    memcpy(s->untrusted_key, m->attach_key, WIRE_STREAM_KEY_SIZE);
    if (stream_find(s, S_PARKED, s->untrusted_key)) {
        return conn_fail(s->conn, WIRE_ERR_PROTOCOL, "stream key in use");
    }
    Session *x = stream_find(s, S_STREAM_WAIT, s->untrusted_key);
    if (!x) {
        conn_set_state(s->conn, S_PARKED);
        return conn_timer_arm(s->conn, STREAM_WAIT_USEC, on_parked_timeout);
    }
    /* This connection is the program's now: closed once paired. */
    int r = stream_pair(x, &x->exec.exec, s, &err);
    msg_done(&x->exec);
    if (r < 0) {
        (void)session_fail(x, r, &err);
    } else {
        conn_settle(x->conn, 0);
    }
    return 0;
}

static int handle_data(void *userdata, Msg *m) {
    Session *s = userdata;
    if (s->stream) {
        return conn_fail(s->conn, WIRE_ERR_PROTOCOL, "stdin goes on the stream connection");
    }
    if (m->data.stream != WIRE_STDIN) {
        return conn_fail(s->conn, WIRE_ERR_INVALID, "Data from the client must be stdin");
    }
    if (s->in.close_wanted) {
        return conn_fail(s->conn, WIRE_ERR_PROTOCOL, "stdin Data after StdinClose");
    }
    if (session_state(s) == S_EXITED) {
        return 0; /* raced with the exit */
    }
    if (s->window > 0 && s->in.buffered + m->data.size > s->window) {
        return conn_fail(s->conn, WIRE_ERR_PROTOCOL, "stdin window exceeded");
    }
    if (!stdin_queue_is_open(&s->in) || s->child.start_failed) {
        /* Nobody reads it any more: consumed. */
        if (s->window > 0) {
            s->ack_bytes += m->data.size;
        }
        return 0;
    }
    int r = stdin_queue_push(&s->in, m);
    if (r < 0) {
        return r;
    }
    stdin_pump(s);
    return 0;
}

static int handle_stdin_close(void *userdata, Msg *m) {
    Session *s = userdata;
    if (s->stream) {
        return conn_fail(s->conn, WIRE_ERR_PROTOCOL, "stdin goes on the stream connection");
    }
    if (s->in.close_wanted) {
        return conn_fail(s->conn, WIRE_ERR_PROTOCOL, "StdinClose twice");
    }
    stdin_queue_want_close(&s->in);
    if (session_state(s) != S_EXITED) {
        stdin_pump(s);
    }
    return 0;
}

static int handle_resize(void *userdata, Msg *m) {
    Session *s = userdata;
    if (session_state(s) != S_RUNNING || !s->pty || s->out_fd[0] < 0) {
        return 0;
    }
    struct winsize ws = {.ws_row = m->resize.rows, .ws_col = m->resize.cols};
    if (ioctl(s->out_fd[0], TIOCSWINSZ, &ws) < 0) {
        log_ctx_debug_errno(&s->log, -errno, "cannot set the window size: %m");
    }
    return 0;
}

static int handle_signal(void *userdata, Msg *m) {
    Session *s = userdata;
    /* Also after the leader exited while others in its group still hold
     * the output open: the unreaped leader keeps the group id ours. With
     * a stream connection that is after Exited too. */
    unsigned state = session_state(s);
    if (state == S_RUNNING || (s->stream && state == S_EXITED)) {
        child_forward_signal(&s->child, (int)m->signo);
    }
    return 0;
}

static int handle_exit_ack(void *userdata, Msg *m) {
    Session *s = userdata;
    child_reap(&s->child);
    conn_close(s->conn, 0); /* s is freed once the engine is done with it */
    return 0;
}

/* A control request's reply: queued, then the connection half-closes. */
static int session_reply(Session *s, const Msg *reply) {
    int r = session_queue(s, reply);
    if (r < 0) {
        return r;
    }
    conn_finish(s->conn);
    return 0;
}

static int handle_status(void *userdata, Msg *m) {
    Session *s = userdata;
    Agent *a = s->agent;
    uint64_t now = agent_now();
    Msg r = {
        .type = MSG_STATUS,
        .status =
            {
                .uptime_ms = now / 1000,
                .live_sessions = idle_live(&a->idle),
                .idle_ms = idle_elapsed_usec(&a->idle, now) / 1000,
                .idle_timeout_s = a->opt.idle_timeout_s,
            },
    };
    return session_reply(s, &r);
}

static int handle_ping(void *userdata, Msg *m) {
    Msg r = {.type = MSG_PONG, .nonce = m->nonce};
    return session_reply(userdata, &r);
}

static int handle_shutdown(void *userdata, Msg *m) {
    Session *s = userdata;
    Msg r = {.type = MSG_SHUTDOWN_REPLY};
    int q = session_reply(s, &r);
    if (q < 0) {
        return q;
    }
    (void)agent_power_off(s->agent, "a Shutdown request");
    return 0;
}

/* The first Hello is the one that made the connection: the engine checks
 * its version and agent_check_hello() its secret. A client the host
 * agent handed the connection to (vm-run) then sends a Hello of its own,
 * without a secret: its version is checked here, once. */
static int session_on_hello(void *userdata, const Msg *m) {
    Session *s = userdata;
    return agent_check_hello(s->agent, m, s->id);
}

static int handle_client_hello(void *userdata, Msg *m) {
    Session *s = userdata;
    if (s->client_hello || wire_check_hello(m) < 0) {
        return s->client_hello ? -EPROTO : -EPROTONOSUPPORT;
    }
    s->client_hello = true;
    return 0;
}

/* Which message is accepted in which state (the first Hello is the
 * engine's): checked before any handler. */
static const ConnHandler session_handlers[] = {
    {MSG_HELLO, S_REQUEST, handle_client_hello},
    {MSG_EXEC, S_REQUEST, handle_exec},
    {MSG_ATTACH, S_REQUEST, handle_attach},
    {MSG_STATUS_REQUEST, S_REQUEST, handle_status},
    {MSG_PING, S_REQUEST, handle_ping},
    {MSG_SHUTDOWN, S_REQUEST, handle_shutdown},
    {MSG_DATA, S_RUNNING | S_EXITED, handle_data},
    {MSG_STDIN_CLOSE, S_RUNNING | S_EXITED, handle_stdin_close},
    {MSG_RESIZE, S_RUNNING | S_EXITED, handle_resize},
    {MSG_SIGNAL, S_RUNNING | S_EXITED, handle_signal},
    {MSG_EXIT_ACK, S_EXITED, handle_exit_ack},
};

/* ---- the connection ------------------------------------------------------------ */

/* Whether to read the connection now. */
static ConnInput session_input(void *userdata) {
    Session *s = userdata;
    switch (session_state(s)) {
    case S_RUNNING:
        /* Without a window, stop while enough stdin waits for the program
         * (a client that goes away still ends the session). */
        return s->window > 0 || s->in.buffered < STDIN_UNWINDOWED_MAX ? CONN_INPUT_READ
                                                                      : CONN_INPUT_PAUSE;
    case S_STREAM_WAIT:
        return CONN_INPUT_PAUSE; /* what follows is for the program */
    case S_PARKED:
        /* What follows Attach is the program's stdin and a half-close its
         * EOF: only a hang-up ends a parked connection. */
        return CONN_INPUT_HOLD;
    default:
        return CONN_INPUT_READ;
    }
}

/* Re-arms the program's sources for what the session waits for now. */
static void session_settled(void *userdata) {
    Session *s = userdata;
    bool reading = session_state(s) == S_RUNNING && s->child.started && output_wanted(s->conn);
    for (int i = 0; i < 2; i++) {
        if (s->out_src[i]) {
            (void)sd_event_source_set_enabled(s->out_src[i], reading ? SD_EVENT_ON : SD_EVENT_OFF);
        }
    }
    stdin_queue_update(&s->in);
}

/* An Error is about to go out: it is the last word, and the program is
 * wound down. */
static void session_failing(void *userdata, const ConnFailure *f) {
    Session *s = userdata;
    log_ctx_info(&s->log, "%s", f->message);
    s->ack_bytes = 0;
    session_abort(s);
}

/* The connection is over: the program, if any, is wound down (a client
 * that goes away before ExitAck ends its session). May free s. */
static void session_closed(void *userdata, int error) {
    Session *s = userdata;
    if (error < 0 && error != -ECONNRESET && error != -EPIPE) {
        log_ctx_debug_errno(&s->log, error, "connection lost: %m");
    }
    session_abort(s);
    agent_conn_closed(s->agent);
    session_maybe_free(s);
}

static const ConnOps session_ops = {
    .handlers = session_handlers,
    .n_handlers = ELEMENTSOF(session_handlers),
    .closed = session_closed,
    .failing = session_failing,
    .hello = session_on_hello,
    .input = session_input,
    .before_flush = session_before_flush,
    .settled = session_settled,
};

static int on_hello_timeout(void *userdata) {
    Session *s = userdata;
    return conn_fail(s->conn, WIRE_ERR_PROTOCOL, "timed out waiting for Hello and a request");
}

/* ---- lifetime ---------------------------------------------------------------- */

static void session_free(Session *s) {
    if (!s) {
        return;
    }
    Agent *a = s->agent;
    child_done(&s->child);
    session_live_end(s);
    stdin_end(s);
    output_close(s, 0);
    output_close(s, 1);
    conn_free(s->conn);
    msg_done(&s->exec);
    if (s->prev) {
        s->prev->next = s->next;
    } else {
        a->sessions = s->next;
    }
    if (s->next) {
        s->next->prev = s->prev;
    }
    free(s);
}

static void session_maybe_free(Session *s) {
    if (conn_is_closed(s->conn) && !s->child.present) {
        log_ctx_debug(&s->log, "done");
        session_free(s);
    }
}

int session_new(Agent *a, int fd, uint64_t peer) {
    ConnOptions o = {
        .role = CONN_SERVER,
        .software = "qubes-lite-guest-agent 0.1",
        .after_hello = S_REQUEST,
        .out_max = SESSION_OUT_MAX,
        .close_mode = CONN_CLOSE_HALF,
        .linger_usec = LINGER_USEC,
        .timer_accuracy_usec = TIMER_ACCURACY_USEC,
    };
    Session *s = calloc(1, sizeof(*s));
    int r;

    if (!s) {
        safe_close(fd);
        return -ENOMEM;
    }
    s->agent = a;
    s->id = ++session_next_id;
    s->peer = peer;
    log_context_init(&s->log, "Session %u", s->id);
    log_context_set(&s->log, "QUBES_LITE_SESSION", "%u", s->id);
    s->child = CHILD_NONE;
    s->in = STDIN_QUEUE_NONE;
    s->out_fd[0] = s->out_fd[1] = -EBADF;
    r = conn_new(a->event, fd, &o, &session_ops, s, &s->conn);
    if (r < 0) {
        free(s);
        return r;
    }
    s->next = a->sessions;
    if (a->sessions) {
        a->sessions->prev = s;
    }
    a->sessions = s;
    a->n_conns++;
    /* Our Hello goes out at once; theirs and the request have a while. */
    r = conn_timer_arm(s->conn, HELLO_TIMEOUT_USEC, on_hello_timeout);
    conn_settle(s->conn, r); /* a failure frees s */
    return r;
}

void session_free_all(Agent *a) {
    while (a->sessions) {
        session_free(a->sessions);
    }
}
