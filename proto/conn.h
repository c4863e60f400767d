/* One connection of the agent protocol on an sd-event loop: the engine
 * every non-blocking endpoint runs on (the guest agent's sessions, the
 * host agent's clients, its console clients and its calls to the guest
 * agent).
 *
 * A Conn owns the socket, its event source and one timer, a reader
 * (frames decoded under the budget and validated into a Msg: wire.h) and a
 * bounded writer, and goes through three phases:
 *
 *   open     Our Hello is queued at once; the peer's is checked by the
 *            engine (another major version: Error(VERSION)), which then
 *            moves to the owner's after_hello state. Every other message
 *            goes through the owner's table {type, states, handler}: a
 *            type not allowed in the current state is refused before any
 *            handler runs. A frame that fails decoding or validation, a
 *            refused message and a handler's error are answered with
 *            Error(conn_wire_error(errno)) and the connection closes (a
 *            client just closes: its peer is a server that answered).
 *   closing  After conn_finish() (the last reply is queued) or conn_fail()
 *            (an Error): nothing more is read, what is queued is sent,
 *            then the socket is either half-closed and what the peer still
 *            sends drained until it closes (CONN_CLOSE_HALF: the peer reads
 *            our last frame before our close, never a reset), or closed
 *            (CONN_CLOSE_FLUSHED); at most linger_usec either way.
 *   closed   The fd is closed and ops->closed() was called, once.
 *
 * The owner's state is a bit of its own per protocol state (one bit each,
 * CONN_STATE_HELLO being the first), so that a table entry can allow
 * several; conn_state() is 0 once the connection is closing.
 *
 * Re-entrancy: a handler, a timer callback and the hooks may call any
 * conn_*() function on any connection, conn_close() and conn_free() on
 * their own included: while the engine runs a callback of a connection,
 * its closing is noted and ops->closed() (or the freeing) happens once the
 * callback has returned, as the engine's last step. Called from outside
 * the engine's callbacks (another source's handler), conn_close(),
 * conn_fail(), conn_finish() and conn_settle() may call ops->closed()
 * before they return: the caller must not touch the owner afterwards. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "addr.h"
#include "wire.h"

typedef struct Conn Conn;

/* The owner's states: CONN_STATE_HELLO is where every connection starts. */
#define CONN_STATE_HELLO (1u << 0)

/* Frames read per wake-up at most, so that other connections get a turn. */
#define CONN_FRAMES_PER_WAKE 16
/* The writer's bound unless the owner sets one: replies are small. */
#define CONN_OUT_MAX_DEFAULT (64u * 1024u)
/* What the drain of a half-closed connection reads per wake-up. */
#define CONN_DRAIN_CHUNK (16u * 1024u)

/* A handler gets a validated message the table allowed in the current
 * state; m's storage may be moved out (then its pointers set to NULL).
 * Returns 0 to go on, or a negative errno: the engine answers
 * Error(conn_wire_error(r)) (a client closes). A handler that wants its
 * own Error text calls conn_fail() and returns 0. */
typedef int (*ConnHandlerFn)(void *userdata, Msg *m);

typedef struct ConnHandler {
    MsgType type;
    unsigned states; /* the owner's states (bits) in which it is accepted */
    ConnHandlerFn handler;
} ConnHandler;

/* What the owner wants from the socket while the connection is open. */
typedef enum ConnInput {
    CONN_INPUT_READ,  /* read frames */
    CONN_INPUT_PAUSE, /* read nothing; EOF (a half-close too) or a hang-up ends it */
    CONN_INPUT_HOLD,  /* read nothing; only a hang-up ends it (what the peer sends and
                       * its half-close belong to someone else) */
} ConnInput;

/* Why the connection is being failed, for the owner's log. */
typedef struct ConnFailure {
    int error;      /* negative errno; 0 when the owner called conn_fail() */
    WireError code; /* what the Error says */
    const char *message;
    const Msg *refused; /* a message not allowed in its state, else NULL */
} ConnFailure;

typedef struct ConnOps {
    const ConnHandler *handlers;
    size_t n_handlers;
    /* The connection is closed: error is 0 after an orderly close (an
     * orderly close after a failure included), else a negative errno
     * (-ECONNRESET: the peer closed between frames, -EPIPE: inside one,
     * -ETIMEDOUT ...). Called once, as the engine's last step; the owner
     * may free itself and the Conn here. Required. */
    void (*closed)(void *userdata, int error);
    /* Optional: an Error is about to be queued and the connection will
     * close (log, wind down what the connection served). */
    void (*failing)(void *userdata, const ConnFailure *f);
    /* Optional: whether to read now (default: CONN_INPUT_READ). */
    ConnInput (*input)(void *userdata);
    /* Optional: called before each flush, to queue what depends on what
     * went out (one acknowledgement in flight at a time). */
    void (*before_flush)(void *userdata);
    /* Optional: the peer's Hello passed the version check. 0 goes on to
     * the after_hello state; a negative errno refuses the peer with
     * Error(DENIED) (the owner logs why). */
    int (*hello)(void *userdata, const Msg *m);
    /* Optional: called after each event the engine handled (the socket,
     * its timer, conn_settle()) while the connection is not closed, to
     * re-arm the owner's other sources. */
    void (*settled)(void *userdata);
} ConnOps;

typedef enum ConnRole {
    CONN_SERVER, /* answers the peer's faults with an Error */
    CONN_CLIENT, /* closes on them */
} ConnRole;

typedef enum ConnCloseMode {
    CONN_CLOSE_HALF,    /* shutdown(SHUT_WR), drain until the peer closes */
    CONN_CLOSE_FLUSHED, /* close once the last frame is out */
} ConnCloseMode;

typedef struct ConnOptions {
    ConnRole role;
    const char *software; /* our Hello's software */
    /* Our Hello's secret (WIRE_SECRET_SIZE bytes), or NULL: the host
     * agent's proof towards the guest agent (proto/secret-file.h). */
    const uint8_t *hello_secret;
    unsigned after_hello; /* the owner's state once the peer's Hello came */
    size_t out_max;       /* queueing is refused (-ENOBUFS) beyond this; 0: the default */
    ConnCloseMode close_mode;
    uint64_t linger_usec;         /* closing takes this long at most */
    uint64_t timer_accuracy_usec; /* 0: sd-event's default */
    bool connecting;              /* fd is a non-blocking connect() in progress */
    const Addr *connecting_to;    /* with connecting: to where (copied) */
} ConnOptions;

/* Takes fd (non-blocking; closed on failure too) and queues our Hello.
 * Nothing is sent before the loop runs, or conn_settle() / conn_kick(). */
int conn_new(sd_event *e, int fd, const ConnOptions *o, const ConnOps *ops, void *userdata,
             Conn **ret);
/* Closes without calling ops->closed(); NULL is fine. */
void conn_free(Conn *c);

unsigned conn_state(const Conn *c);
void conn_set_state(Conn *c, unsigned state);
bool conn_is_open(const Conn *c);
bool conn_is_closed(const Conn *c);
/* The socket (-EBADF once closed): to hand it over, then conn_close(). */
int conn_fd(const Conn *c);

/* Queues a frame. -ENOBUFS when more than out_max bytes wait already. */
int conn_queue(Conn *c, const Msg *m);
/* The same with fds attached (wire_writer_queue_fds(): taken over). */
int conn_queue_fds(Conn *c, const Msg *m, const int *fds, size_t n);
/* A Data frame read (or spliced) from a program's pipe: see wire-stream.h.
 * -ENOBUFS beyond out_max as above. */
ssize_t conn_queue_read(Conn *c, int fd, WireStream stream, size_t max);
int conn_queue_splice(Conn *c, int pipe_fd, WireStream stream, uint32_t size);
void conn_splice_abort(Conn *c, int pipe_fd);
bool conn_splicing(const Conn *c);
size_t conn_pending(const Conn *c);
/* Bytes written so far (wire_writer_sent()). */
uint64_t conn_sent(const Conn *c);
/* Writes what it can (ops->before_flush first). 0 when all is out, 1 when
 * bytes remain, or a negative errno. Closes nothing: conn_settle() does. */
int conn_flush(Conn *c);

/* The connection's one timer: fn runs after usec (relative) or at when
 * (CLOCK_MONOTONIC); a negative return closes the connection with it.
 * Once closing, the timer is the linger's: arming and disarming do
 * nothing. */
typedef int (*ConnTimerFn)(void *userdata);
int conn_timer_arm(Conn *c, uint64_t usec, ConnTimerFn fn);
int conn_timer_arm_at(Conn *c, uint64_t when, ConnTimerFn fn);
void conn_timer_disarm(Conn *c);

/* The last reply is queued: close as the close mode says. */
void conn_finish(Conn *c);
/* Error(code, message) (ops->failing first), then conn_finish(); a client
 * closes with -EPROTO instead. Returns 0, so that a handler can `return
 * conn_fail(...)`. */
int conn_fail(Conn *c, WireError code, const char *message);
/* Closes now (ops->closed(error)). Nothing if already closed. */
void conn_close(Conn *c, int error);
/* After the owner changed something outside the engine's callbacks: r < 0
 * closes with r; else flush (a failure closes), re-arm, ops->settled(). */
void conn_settle(Conn *c, int r);
/* Handles the socket now as if it were readable and writable: a request
 * sent right after connecting is served without a loop iteration. */
void conn_kick(Conn *c);

/* The Error code for an errno: -E2BIG TOO_LARGE, -EINVAL INVALID,
 * -EPROTONOSUPPORT VERSION, -ESHUTDOWN SHUTTING_DOWN, -EBADMSG, -EMSGSIZE
 * (over the decode budget) and -EPROTO PROTOCOL, anything else INTERNAL. */
WireError conn_wire_error(int r);

/* Answers a connection that gets no Conn (a refused peer) with one Error
 * frame into its fresh socket buffer (never waits), and closes fd. */
void conn_refuse_fd(int fd, WireError code, const char *message);
