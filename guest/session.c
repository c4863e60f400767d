/* Sessions: see session.h.
 *
 * A session has two lifetimes: the connection's (Hello → request → reply
 * or Exec stream → close) and the program's (spawn → exit → reaped). The
 * session is freed once both are over. The program's leader is kept as a
 * zombie until then, so that its pid (and thus its process group id)
 * cannot be reused while we might still signal the group. */
#include "session.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <termios.h>

#include "conn.h"
#include "log.h"
#include "spawn.h"
#include "util.h"
#include "wire.h"

#define HELLO_TIMEOUT_USEC (10ULL * 1000000ULL) /* Hello and the request */
/* An Exec and its stream connection wait this long for each other. */
#define STREAM_WAIT_USEC (10ULL * 1000000ULL)
#define EXIT_ACK_TIMEOUT_USEC (10ULL * 1000000ULL)
#define LINGER_USEC (2ULL * 1000000ULL)           /* flushing a last reply */
#define OUTPUT_PENDING_MAX (2u * WIRE_DATA_MAX)   /* stop reading the program above */
/* The connection's bound: the output's, one Data frame beyond it, and room
 * for the few small control frames (one StdinAck in flight, Started,
 * Exited, a start failure's report). */
#define SESSION_OUT_MAX (OUTPUT_PENDING_MAX + 2u * WIRE_DATA_MAX)
#define STDIN_UNWINDOWED_MAX (4u * WIRE_DATA_MAX) /* without a window: stop reading */
#define TIMER_ACCURACY_USEC 10000ULL
/* Stdin chunks under STDIN_COPY_MAX bytes are copied into buffers of
 * STDIN_BUF_SIZE rather than kept as decoded frames: a frame costs some
 * hundred bytes besides its payload, and queued stdin must cost about
 * what the window allows, whatever the chunk sizes. */
#define STDIN_COPY_MAX 1024u
#define STDIN_BUF_SIZE (16u * 1024u)
#define CHUNKS_PER_DISPATCH 4

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

typedef struct StdinChunk {
    struct StdinChunk *next;
    Msg msg; /* a decoded Data frame (no copy), unless a buffer */
    const uint8_t *data;
    size_t size, off;
    size_t cap;    /* a buffer (> 0): buf holds size bytes of cap */
    uint8_t buf[];
} StdinChunk;

struct Session {
    Agent *agent;
    Session *prev, *next;
    unsigned id;
    uint64_t peer; /* who connected (session.h) */
    LogContext log; /* "Session <id>", QUBES_LITE_SESSION, QUBES_LITE_PID */

    Conn *conn;

    /* The program. */
    bool has_child, live, aborting, grace_done, reaped, exited;
    pid_t pid;
    int pidfd;
    sd_event_source *pid_src;
    siginfo_t si;
    int err_fd;
    sd_event_source *err_src;
    uint8_t untrusted_report[SPAWN_REPORT_MAX]; /* spawn's, from a child that may be the user */
    size_t report_len;
    bool started, start_failed;
    int start_errno;
    bool pty;
    int out_fd[2]; /* stdout (or the pty master), stderr */
    sd_event_source *out_src[2];
    int in_fd;
    sd_event_source *in_src;
    StdinChunk *in_head, *in_tail;
    size_t in_buffered;
    uint32_t window;
    /* Stdin written (or dropped) and not acknowledged yet, and where the
     * StdinAck frame last queued ends in what the connection sends
     * (conn_sent()). One ack frame at a time: a client that does not read
     * cannot make us queue one per write. */
    size_t ack_bytes;
    uint64_t ack_end;
    bool in_close_wanted, in_last_newline;
    unsigned veof_pending;
    bool veof_armed;
    sd_event_source *grace;

    /* Stream connections: the key of a parked Attach or of an Exec in
     * STREAM_WAIT (kept in exec until its Attach comes); stream: the
     * program's stdin and stdout are that connection, not relayed. */
    uint8_t untrusted_key[WIRE_STREAM_KEY_SIZE]; /* the peer's: only ever compared */
    Msg exec;
    bool stream;
};

static unsigned session_next_id;

static void session_maybe_free(Session *s);
static int ack_queue(Session *s);

/* ---- small helpers --------------------------------------------------------- */

static sd_event *session_event(Session *s) {
    return s->agent->event;
}

static unsigned session_state(const Session *s) {
    return conn_state(s->conn);
}

static int session_queue(Session *s, const Msg *m) {
    return conn_queue(s->conn, m);
}

/* The end of every handler of the session's own sources: a failure loses
 * the connection, otherwise it is flushed and everything re-armed. May
 * free s. Returns 0, as sd-event wants from a handler that dealt with its
 * error. */
static int session_settle(Session *s, int r) {
    conn_settle(s->conn, r);
    return 0;
}

/* Fails the connection for r, with err's text when there is one. */
static int session_fail(Session *s, int r, const ErrorText *err) {
    return conn_fail(s->conn, conn_wire_error(r),
                     err && err->message[0] ? err->message : strerror(-r));
}

static void stdin_discard(Session *s) {
    while (s->in_head) {
        StdinChunk *c = s->in_head;
        s->in_head = c->next;
        msg_done(&c->msg);
        free(c);
    }
    s->in_tail = NULL;
    s->in_buffered = 0;
}

static void stdin_close(Session *s) {
    s->in_src = sd_event_source_disable_unref(s->in_src);
    s->in_fd = safe_close(s->in_fd);
    s->veof_pending = 0;
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

/* Kills the group and the leader itself (before setsid() in the child the
 * group does not exist yet). The leader is unreaped, so both ids are ours. */
static void child_signal(Session *s, int signo) {
    if (!s->has_child || s->reaped) {
        return;
    }
    (void)kill(-s->pid, signo);
    (void)kill(s->pid, signo);
}

static void child_reap(Session *s) {
    if (!s->has_child || s->reaped) {
        return;
    }
    siginfo_t si = {0};
    (void)waitid(P_PIDFD, s->pidfd, &si, WEXITED | WNOHANG);
    s->reaped = true;
    s->pid_src = sd_event_source_disable_unref(s->pid_src);
    s->pidfd = safe_close(s->pidfd);
}

/* ---- the program's end ------------------------------------------------------ */

static int on_grace(sd_event_source *src, uint64_t usec, void *userdata) {
    Session *s = userdata;
    s->grace = sd_event_source_disable_unref(s->grace);
    s->grace_done = true;
    log_ctx_debug(&s->log, "grace over, killing process group %d", (int)s->pid);
    child_signal(s, SIGKILL);
    if (s->exited) {
        child_reap(s);
    }
    session_maybe_free(s);
    return 0;
}

/* The client is gone (or broke the protocol) before acknowledging the
 * exit: the program's group gets SIGHUP now and SIGKILL after the grace
 * period. */
static void child_abort(Session *s) {
    if (!s->has_child || s->reaped || s->aborting) {
        return;
    }
    s->aborting = true;
    session_live_end(s);
    stdin_discard(s);
    stdin_close(s);
    output_close(s, 0);
    output_close(s, 1);
    s->err_src = sd_event_source_disable_unref(s->err_src);
    s->err_fd = safe_close(s->err_fd);
    log_ctx_debug(&s->log, "client gone, hanging up process group %d", (int)s->pid);
    child_signal(s, SIGHUP);
    child_signal(s, SIGCONT); /* a stopped group must see the HUP */
    s->grace = sd_event_source_disable_unref(s->grace);
    int r = sd_event_add_time_relative(session_event(s), &s->grace, CLOCK_MONOTONIC,
                                       (uint64_t)s->agent->opt.kill_grace_s * 1000000ULL,
                                       TIMER_ACCURACY_USEC, on_grace, s);
    if (r < 0) {
        log_ctx_warning_errno(&s->log, r, "no grace timer, killing now: %m");
        s->grace_done = true;
        child_signal(s, SIGKILL);
        if (s->exited) {
            child_reap(s);
        }
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

    if (session_state(s) != S_RUNNING || s->aborting || !s->exited || s->err_fd >= 0 ||
        s->out_fd[0] >= 0 || s->out_fd[1] >= 0) {
        return 0;
    }
    if (s->start_failed) {
        m.exited.kind = EXIT_START_FAILED;
        m.exited.start_errno = (uint32_t)s->start_errno;
    } else if (s->si.si_code == CLD_EXITED) {
        m.exited.kind = EXIT_CODE;
        m.exited.code = (uint32_t)s->si.si_status & 0xff;
    } else {
        m.exited.kind = EXIT_SIGNAL;
        m.exited.signo = (uint32_t)s->si.si_status;
        m.exited.core_dumped = s->si.si_code == CLD_DUMPED;
        if (m.exited.signo == 0 || m.exited.signo > 64) {
            m.exited.signo = SIGKILL;
        }
    }
    stdin_discard(s);
    stdin_close(s);
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

/* ---- the program's stdin ----------------------------------------------------- */

static int stdin_write_veof(Session *s) {
    struct termios t;
    uint8_t c[2];
    while (s->veof_pending > 0) {
        if (tcgetattr(s->in_fd, &t) < 0) {
            return -errno;
        }
        c[0] = t.c_cc[VEOF] ? t.c_cc[VEOF] : 4;
        ssize_t k = write(s->in_fd, c, 1);
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        s->veof_pending--;
    }
    return 0;
}

/* Writes queued stdin to the program, acknowledging what was written. */
static int stdin_pump(Session *s) {
    size_t done = 0;
    int r = 0;

    while (s->in_fd >= 0 && s->in_head) {
        StdinChunk *c = s->in_head;
        ssize_t k = write(s->in_fd, c->data + c->off, c->size - c->off);
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                break;
            }
            /* The program closed its stdin: what is queued is consumed. */
            log_ctx_debug_errno(&s->log, -errno, "the program's stdin is gone: %m");
            done += s->in_buffered;
            stdin_discard(s);
            stdin_close(s);
            break;
        }
        done += (size_t)k;
        s->in_buffered -= (size_t)k;
        c->off += (size_t)k;
        if (c->off == c->size) {
            s->in_last_newline = c->data[c->size - 1] == '\n';
            s->in_head = c->next;
            if (!s->in_head) {
                s->in_tail = NULL;
            }
            msg_done(&c->msg);
            free(c);
        }
    }
    if (s->in_fd >= 0 && !s->in_head && s->in_close_wanted) {
        if (s->pty) {
            if (!s->veof_armed) {
                /* On a pty, EOF is VEOF at the start of a line; after a
                 * partial line the first VEOF only pushes the line. */
                s->veof_armed = true;
                s->veof_pending = s->in_last_newline ? 1 : 2;
            }
            if (stdin_write_veof(s) != -EAGAIN) {
                stdin_close(s);
            }
        } else {
            stdin_close(s);
        }
    }
    if (s->window > 0) {
        s->ack_bytes += done; /* sent before the next flush */
    }
    return r;
}

static int on_stdin_writable(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
    Session *s = userdata;
    int r = stdin_pump(s);
    if (r >= 0) {
        r = conn_flush(s->conn); /* the StdinAck: credit back at once */
    }
    return session_settle(s, r);
}

/* ---- the program's output ---------------------------------------------------- */

/* Whether splice() from a pipe into a stream socket works here: tried once
 * on a socketpair. */
static bool splice_supported(void) {
    static int cached = -1;
    if (cached >= 0) {
        return cached;
    }
    int sv[2] = {-EBADF, -EBADF}, p[2] = {-EBADF, -EBADF};
    cached = 0;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) == 0 &&
        pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0 && write(p[1], "x", 1) == 1 &&
        splice(p[0], NULL, sv[0], NULL, 1, SPLICE_F_NONBLOCK | SPLICE_F_MOVE) == 1) {
        cached = 1;
    }
    close_pair(sv);
    close_pair(p);
    return cached;
}

/* Starts a spliced Data frame for what the pipe holds now. 1 when one was
 * started, 0 when the read path must be used (EOF, or nothing there). */
static int output_splice_begin(Session *s, int i) {
    int avail = 0;
    if (ioctl(s->out_fd[i], FIONREAD, &avail) < 0 || avail <= 0) {
        return 0;
    }
    uint32_t n = MIN((uint32_t)avail, WIRE_DATA_MAX);
    WireStream stream = i == 0 ? WIRE_STDOUT : WIRE_STDERR;
    return conn_queue_splice(s->conn, s->out_fd[i], stream, n) < 0 ? 0 : 1;
}

/* Reads one chunk of output straight into the connection's output queue
 * as a Data frame. Returns the bytes read, 0 on EOF, -EAGAIN, or an
 * error. */
static ssize_t output_read_frame(Session *s, int i) {
    ssize_t k = conn_queue_read(s->conn, s->out_fd[i], i == 0 ? WIRE_STDOUT : WIRE_STDERR,
                                WIRE_DATA_MAX);
    return k == -EIO ? 0 : k; /* EIO: the pty's last slave closed */
}

static size_t session_pending(const Session *s) {
    return conn_pending(s->conn);
}

/* Queues a StdinAck for the stdin acknowledged so far. */
static int ack_queue(Session *s) {
    Msg m = {.type = MSG_STDIN_ACK, .stdin_ack = (uint32_t)s->ack_bytes};
    int r = session_queue(s, &m);
    if (r < 0) {
        return r;
    }
    s->ack_bytes = 0;
    s->ack_end = conn_sent(s->conn) + session_pending(s);
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

static int on_output(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
    Session *s = userdata;
    int i = fd == s->out_fd[0] ? 0 : 1;
    int r = 0;

    for (int n = 0; n < CHUNKS_PER_DISPATCH; n++) {
        if (conn_splicing(s->conn) || session_pending(s) >= OUTPUT_PENDING_MAX) {
            break;
        }
        /* Nothing queued: the bytes can go pipe to socket without passing
         * through us. Otherwise (or on a pty) read them into the queue. */
        if (!s->pty && session_pending(s) == 0 && splice_supported() &&
            output_splice_begin(s, i) > 0) {
            r = conn_flush(s->conn);
            if (r != 0) {
                break;
            }
            continue;
        }
        ssize_t k = output_read_frame(s, i);
        if (k == -EAGAIN) {
            break;
        }
        if (k <= 0) {
            if (k < 0 && k != -ENOMEM) {
                log_ctx_debug_errno(&s->log, (int)k, "reading the program's output failed: %m");
            }
            if (k == -ENOMEM) {
                r = (int)k;
            }
            output_close(s, i);
            break;
        }
    }
    /* One send for what this round read: fewer, larger writes mean fewer
     * wake-ups on both ends. */
    if (r >= 0) {
        r = conn_flush(s->conn);
    }
    if (r >= 0) {
        r = session_try_finish(s);
    }
    return session_settle(s, r);
}

/* ---- the program's start and exit --------------------------------------------- */

static int on_start_report(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
    Session *s = userdata;
    int r;

    for (;;) {
        ssize_t k = read(s->err_fd, s->untrusted_report + s->report_len,
                         sizeof(s->untrusted_report) - s->report_len);
        if (k < 0 && errno == EINTR) {
            continue;
        }
        if (k < 0 && errno == EAGAIN) {
            return 0;
        }
        if (k > 0) {
            s->report_len += (size_t)k;
            if (s->report_len < sizeof(s->untrusted_report)) {
                continue;
            }
        }
        break; /* EOF, error, or a report too long */
    }
    s->err_src = sd_event_source_disable_unref(s->err_src);
    s->err_fd = safe_close(s->err_fd);

    if (s->report_len == 0) {
        Msg m = {.type = MSG_STARTED, .started_pid = s->pid};
        s->started = true;
        r = session_queue(s, &m);
        log_ctx_debug(&s->log, "started as pid %d", (int)s->pid);
    } else {
        const char *msg;
        size_t len;
        int e;
        if (spawn_parse_report(s->untrusted_report, s->report_len, &e, &msg, &len) < 0) {
            e = EIO;
            msg = "qubes-lite: cannot start the program\n";
            len = strlen(msg);
        }
        s->start_failed = true;
        s->start_errno = e;
        output_close(s, 0);
        output_close(s, 1);
        stdin_discard(s);
        stdin_close(s);
        Msg m = {.type = MSG_DATA,
                 .data = {.stream = WIRE_STDERR, .data = (const uint8_t *)msg, .size = len}};
        r = session_queue(s, &m);
        log_ctx_debug(&s->log, "start failed: %.*s", (int)(len > 0 ? len - 1 : 0), msg);
    }
    if (r >= 0) {
        r = conn_flush(s->conn);
    }
    if (r >= 0) {
        r = session_try_finish(s);
    }
    return session_settle(s, r);
}

static int on_child(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
    Session *s = userdata;
    siginfo_t si = {0};

    /* Peek only: the zombie keeps the pid and group id ours. */
    if (waitid(P_PIDFD, s->pidfd, &si, WEXITED | WNOHANG | WNOWAIT) < 0) {
        log_ctx_warning_errno(&s->log, -errno, "waitid() failed: %m");
        si.si_pid = s->pid;
        si.si_code = CLD_KILLED;
        si.si_status = SIGKILL;
    }
    if (si.si_pid == 0) {
        return 0;
    }
    s->si = si;
    s->exited = true;
    (void)sd_event_source_set_enabled(s->pid_src, SD_EVENT_OFF);
    if (s->aborting) {
        if (s->grace_done) {
            child_reap(s);
            session_maybe_free(s);
        }
        return 0;
    }
    int r = session_try_finish(s);
    if (r >= 0) {
        r = conn_flush(s->conn);
    }
    return session_settle(s, r);
}

/* ---- requests ---------------------------------------------------------------- */

/* Starts the Exec x; with stream_fd >= 0 that socket is the program's
 * stdin and stdout. A refusal's text goes to err. */
static int session_exec(Session *s, const MsgExec *x, int stream_fd, ErrorText *err) {
    Agent *a = s->agent;
    Spawned sp;
    int r;

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
    r = spawn_start(x, &o, &sp);
    if (r < 0) {
        char buf[256];
        log_ctx_error_errno(&s->log, r, "cannot start a program: %m");
        snprintf(buf, sizeof(buf), "qubes-lite: cannot start %s: %s\n", x->argv[0],
                 strerror(-r));
        Msg d = {
            .type = MSG_DATA,
            .data = {.stream = WIRE_STDERR, .data = (const uint8_t *)buf, .size = strlen(buf)}};
        Msg e = {.type = MSG_EXITED,
                 .exited = {.kind = EXIT_START_FAILED, .start_errno = (uint32_t)-r}};
        if ((r = session_queue(s, &d)) < 0 || (r = session_queue(s, &e)) < 0) {
            return r;
        }
        conn_set_state(s->conn, S_EXITED);
        return conn_timer_arm(s->conn, EXIT_ACK_TIMEOUT_USEC, on_exit_ack_timeout);
    }

    s->has_child = true;
    s->pid = sp.pid;
    s->pidfd = sp.pidfd;
    s->err_fd = sp.err_fd;
    s->in_fd = sp.stdin_fd;
    s->out_fd[0] = sp.stdout_fd;
    s->out_fd[1] = sp.stderr_fd;
    s->pty = x->pty;
    s->stream = stream_fd >= 0;
    s->window = x->stdin_window;
    s->in_last_newline = true;
    conn_set_state(s->conn, S_RUNNING);
    s->live = true;
    agent_live_begin(a);
    log_context_set(&s->log, "QUBES_LITE_PID", "%d", (int)s->pid);
    if (log_get_max_level() >= LOG_DEBUG) {
        char name[64];
        log_ctx_debug(&s->log, "exec \"%s\" as pid %d%s",
                  str_sanitize(x->argv[0], strlen(x->argv[0]), name, sizeof(name)), (int)s->pid,
                  s->stream ? " on a stream connection" : "");
    }

    /* From here on every failure is handled by winding the child down. */
    sd_event *e = session_event(s);
    if ((r = sd_event_add_io(e, &s->pid_src, s->pidfd, EPOLLIN, on_child, s)) < 0 ||
        (r = sd_event_add_io(e, &s->err_src, s->err_fd, EPOLLIN, on_start_report, s)) < 0) {
        return r;
    }
    if (s->in_fd >= 0) {
        r = sd_event_add_io(e, &s->in_src, s->in_fd, EPOLLOUT, on_stdin_writable, s);
        if (r < 0) {
            return r;
        }
        (void)sd_event_source_set_enabled(s->in_src, SD_EVENT_OFF);
    }
    for (int i = 0; i < 2; i++) {
        if (s->out_fd[i] < 0) {
            continue;
        }
        r = sd_event_add_io(e, &s->out_src[i], s->out_fd[i], EPOLLIN, on_output, s);
        if (r < 0) {
            return r;
        }
        (void)sd_event_source_set_enabled(s->out_src[i], SD_EVENT_OFF);
    }
    return 0;
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
    if (s->in_close_wanted) {
        return conn_fail(s->conn, WIRE_ERR_PROTOCOL, "stdin Data after StdinClose");
    }
    if (session_state(s) == S_EXITED) {
        return 0; /* raced with the exit */
    }
    if (s->window > 0 && s->in_buffered + m->data.size > s->window) {
        return conn_fail(s->conn, WIRE_ERR_PROTOCOL, "stdin window exceeded");
    }
    if (s->in_fd < 0 || s->start_failed) {
        /* Nobody reads it any more: consumed. */
        if (s->window > 0) {
            s->ack_bytes += m->data.size;
        }
        return 0;
    }
    size_t n = m->data.size;
    StdinChunk *t = s->in_tail;
    if (t && t->cap > 0 && t->cap - t->size >= n) {
        /* Room in the last buffer (only buffers have a cap). */
        memcpy(t->buf + t->size, m->data.data, n);
        t->size += n;
    } else {
        StdinChunk *c;
        if (n < STDIN_COPY_MAX) {
            c = calloc(1, sizeof(*c) + STDIN_BUF_SIZE);
            if (!c) {
                return -ENOMEM;
            }
            c->cap = STDIN_BUF_SIZE;
            c->data = c->buf;
            memcpy(c->buf, m->data.data, n);
        } else {
            c = calloc(1, sizeof(*c));
            if (!c) {
                return -ENOMEM;
            }
            c->msg = *m;
            m->_storage = m->_env = NULL; /* moved */
            c->data = c->msg.data.data;
        }
        c->size = n;
        if (t) {
            t->next = c;
        } else {
            s->in_head = c;
        }
        s->in_tail = c;
    }
    s->in_buffered += n;
    return stdin_pump(s);
}

static int handle_stdin_close(void *userdata, Msg *m) {
    Session *s = userdata;
    if (s->stream) {
        return conn_fail(s->conn, WIRE_ERR_PROTOCOL, "stdin goes on the stream connection");
    }
    if (s->in_close_wanted) {
        return conn_fail(s->conn, WIRE_ERR_PROTOCOL, "StdinClose twice");
    }
    s->in_close_wanted = true;
    if (session_state(s) == S_EXITED) {
        return 0;
    }
    return stdin_pump(s);
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
    bool running = state == S_RUNNING || (s->stream && state == S_EXITED);
    if (!running || !s->has_child || s->reaped) {
        return 0;
    }
    if (s->started) {
        (void)kill(-s->pid, (int)m->signo);
    } else {
        (void)kill(s->pid, (int)m->signo); /* not in its own group yet, maybe */
    }
    return 0;
}

static int handle_exit_ack(void *userdata, Msg *m) {
    Session *s = userdata;
    child_reap(s);
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

/* Which message is accepted in which state (Hello is the engine's):
 * checked before any handler. */
static const ConnHandler session_handlers[] = {
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
        return s->window > 0 || s->in_buffered < STDIN_UNWINDOWED_MAX ? CONN_INPUT_READ
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
    bool reading = session_state(s) == S_RUNNING && s->started &&
                   session_pending(s) < OUTPUT_PENDING_MAX;
    for (int i = 0; i < 2; i++) {
        if (s->out_src[i]) {
            (void)sd_event_source_set_enabled(s->out_src[i], reading ? SD_EVENT_ON : SD_EVENT_OFF);
        }
    }
    if (s->in_src) {
        bool want = s->in_head || s->veof_pending > 0;
        (void)sd_event_source_set_enabled(s->in_src, want ? SD_EVENT_ON : SD_EVENT_OFF);
    }
}

/* An Error is about to go out: it is the last word, and the program is
 * wound down. */
static void session_failing(void *userdata, const ConnFailure *f) {
    Session *s = userdata;
    log_ctx_info(&s->log, "%s", f->message);
    s->ack_bytes = 0;
    child_abort(s);
}

/* The connection is over: the program, if any, is wound down (a client
 * that goes away before ExitAck ends its session). May free s. */
static void session_closed(void *userdata, int error) {
    Session *s = userdata;
    if (error < 0 && error != -ECONNRESET && error != -EPIPE) {
        log_ctx_debug_errno(&s->log, error, "connection lost: %m");
    }
    child_abort(s);
    agent_conn_closed(s->agent);
    session_maybe_free(s);
}

static const ConnOps session_ops = {
    .handlers = session_handlers,
    .n_handlers = ELEMENTSOF(session_handlers),
    .closed = session_closed,
    .failing = session_failing,
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
    if (s->has_child && !s->reaped) {
        /* Only at agent exit: nothing may outlive us. */
        child_signal(s, SIGKILL);
        siginfo_t si;
        (void)waitid(P_PIDFD, s->pidfd, &si, WEXITED);
        s->reaped = true;
    }
    session_live_end(s);
    stdin_discard(s);
    stdin_close(s);
    output_close(s, 0);
    output_close(s, 1);
    conn_free(s->conn);
    s->err_src = sd_event_source_disable_unref(s->err_src);
    s->err_fd = safe_close(s->err_fd);
    s->pid_src = sd_event_source_disable_unref(s->pid_src);
    s->pidfd = safe_close(s->pidfd);
    s->grace = sd_event_source_disable_unref(s->grace);
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
    if (conn_is_closed(s->conn) && (!s->has_child || s->reaped)) {
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
    s->pidfd = s->err_fd = s->in_fd = s->out_fd[0] = s->out_fd[1] = -EBADF;
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
