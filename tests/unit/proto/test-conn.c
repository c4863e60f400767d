/* proto/conn: the connection engine against a peer played with the
 * blocking helpers on the other end of a socketpair: Hello, the dispatch
 * table and its states, each kind of refusal and its Error, the close
 * modes, the timer, input modes, the bounded writer, fds riding on a
 * frame, a client's connect, and closing or freeing from inside a
 * callback. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "conn.h"
#include "util.h"
#include "wire.h"

enum {
    S_HELLO = CONN_STATE_HELLO,
    S_REQUEST = 1u << 1,
    S_RUNNING = 1u << 2,
};

typedef struct Owner {
    sd_event *event;
    Conn *conn;
    int peer; /* the other end, blocking */
    unsigned closed_calls;
    int closed_error;
    unsigned failing_calls;
    WireError failing_code;
    bool refused_message;
    unsigned pings, timer_calls, settled_calls;
    int timer_result;
    ConnInput input;
    /* What handle_ping does besides answering. */
    enum { PING_ANSWER, PING_CLOSE, PING_FREE, PING_FAIL, PING_ERRNO, PING_FINISH } on_ping;
    unsigned acks_wanted, acks_queued;
    bool free_on_close;
} Owner;

static void owner_closed(void *userdata, int error) {
    Owner *o = userdata;
    o->closed_calls++;
    o->closed_error = error;
    if (o->free_on_close) {
        conn_free(o->conn);
        o->conn = NULL;
    }
}

static void owner_failing(void *userdata, const ConnFailure *f) {
    Owner *o = userdata;
    o->failing_calls++;
    o->failing_code = f->code;
    o->refused_message = f->refused != NULL;
}

static ConnInput owner_input(void *userdata) {
    Owner *o = userdata;
    return o->input;
}

static void owner_settled(void *userdata) {
    Owner *o = userdata;
    o->settled_calls++;
}

/* One acknowledgement in flight at a time, as the guest agent's stdin. */
static void owner_before_flush(void *userdata) {
    Owner *o = userdata;
    if (o->acks_wanted > 0 && conn_pending(o->conn) == 0) {
        Msg m = {.type = MSG_STDIN_ACK, .stdin_ack = 1};
        assert_int_equal(conn_queue(o->conn, &m), 0);
        o->acks_wanted--;
        o->acks_queued++;
    }
}

static int handle_ping(void *userdata, Msg *m) {
    Owner *o = userdata;
    Msg pong = {.type = MSG_PONG, .nonce = m->nonce};
    o->pings++;
    switch (o->on_ping) {
    case PING_CLOSE:
        conn_close(o->conn, -ECANCELED);
        assert_int_equal(o->closed_calls, 0); /* not before we return */
        return 0;
    case PING_FREE:
        conn_free(o->conn);
        o->conn = NULL;
        return 0;
    case PING_FAIL:
        return conn_fail(o->conn, WIRE_ERR_UNAVAILABLE, "not now");
    case PING_ERRNO:
        return -ESHUTDOWN;
    case PING_FINISH:
        assert_int_equal(conn_queue(o->conn, &pong), 0);
        conn_finish(o->conn);
        return 0;
    case PING_ANSWER:
        break;
    }
    return conn_queue(o->conn, &pong);
}

static int handle_exec(void *userdata, Msg *m) {
    Owner *o = userdata;
    conn_set_state(o->conn, S_RUNNING);
    return 0;
}

static const ConnHandler handlers[] = {
    {MSG_PING, S_REQUEST | S_RUNNING, handle_ping},
    {MSG_EXEC, S_REQUEST, handle_exec},
};

static const ConnOps ops = {
    .handlers = handlers,
    .n_handlers = ELEMENTSOF(handlers),
    .closed = owner_closed,
    .failing = owner_failing,
    .input = owner_input,
    .before_flush = owner_before_flush,
    .settled = owner_settled,
};

static ConnOptions server_options(ConnCloseMode mode) {
    return (ConnOptions){
        .role = CONN_SERVER,
        .software = "test-conn",
        .after_hello = S_REQUEST,
        .close_mode = mode,
        .linger_usec = 2000000,
        .timer_accuracy_usec = 1000,
    };
}

static void owner_new(Owner *o, ConnCloseMode mode) {
    int sv[2];
    *o = (Owner){.input = CONN_INPUT_READ};
    assert_int_equal(sd_event_new(&o->event), 0);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(fd_nonblock(sv[0], true), 0);
    o->peer = sv[1];
    ConnOptions opt = server_options(mode);
    assert_int_equal(conn_new(o->event, sv[0], &opt, &ops, o, &o->conn), 0);
}

static void owner_done(Owner *o) {
    conn_free(o->conn);
    safe_close(o->peer);
    sd_event_unref(o->event);
}

/* Runs the loop until cond holds (or fails after a while). */
#define RUN_UNTIL(o, cond)                                                                         \
    do {                                                                                           \
        for (int _i = 0; !(cond); _i++) {                                                          \
            assert_true(_i < 500);                                                                 \
            assert_true(sd_event_run((o)->event, 10000) >= 0);                                     \
        }                                                                                          \
    } while (0)

/* Runs the loop a little. */
static void spin(Owner *o) {
    for (int i = 0; i < 5; i++) {
        assert_true(sd_event_run(o->event, 1000) >= 0);
    }
}

static bool peer_readable(Owner *o) {
    struct pollfd p = {.fd = o->peer, .events = POLLIN};
    return poll(&p, 1, 0) == 1;
}

/* The next frame from the engine (the loop runs until one is there). */
static void peer_recv(Owner *o, Msg *ret) {
    RUN_UNTIL(o, peer_readable(o));
    assert_int_equal(wire_recv(o->peer, ret, NULL), 0);
}

static void peer_expect(Owner *o, MsgType type) {
    Msg m;
    peer_recv(o, &m);
    assert_string_equal(msg_type_name(m.type), msg_type_name(type));
    msg_done(&m);
}

static void peer_expect_error(Owner *o, WireError code, const char *message) {
    Msg m;
    peer_recv(o, &m);
    assert_int_equal(m.type, MSG_ERROR);
    assert_int_equal(m.error.code, code);
    if (message) {
        assert_string_equal(m.error.message, message);
    }
    msg_done(&m);
}

/* EOF from the engine's side: it half-closed or closed. */
static void peer_expect_eof(Owner *o) {
    Msg m;
    RUN_UNTIL(o, peer_readable(o));
    assert_int_equal(wire_recv(o->peer, &m, NULL), -ECONNRESET);
}

static void peer_send(Owner *o, const Msg *m) {
    assert_int_equal(wire_send(o->peer, m), 0);
}

static void peer_hello(Owner *o) {
    Msg hello = msg_hello("peer");
    peer_expect(o, MSG_HELLO);
    peer_send(o, &hello);
}

static int on_owner_timer(void *userdata);

/* ---- the protocol's course ------------------------------------------------ */

static void test_hello_and_dispatch(void **state) {
    Owner o;
    owner_new(&o, CONN_CLOSE_HALF);
    assert_int_equal(conn_state(o.conn), S_HELLO);
    peer_hello(&o);
    Msg ping = {.type = MSG_PING, .nonce = 7};
    peer_send(&o, &ping);
    Msg m;
    peer_recv(&o, &m);
    assert_int_equal(m.type, MSG_PONG);
    assert_int_equal(m.nonce, 7);
    msg_done(&m);
    assert_int_equal(conn_state(o.conn), S_REQUEST);
    assert_true(o.settled_calls > 0);
    /* Exec moves on to RUNNING, where Ping is still allowed. */
    const char *argv[] = {"true", NULL};
    Msg exec = {.type = MSG_EXEC, .exec = {.argc = 1, .argv = (char **)argv}};
    peer_send(&o, &exec);
    peer_send(&o, &ping);
    peer_expect(&o, MSG_PONG);
    assert_int_equal(conn_state(o.conn), S_RUNNING);
    assert_int_equal(o.pings, 2);
    assert_int_equal(o.failing_calls, 0);
    assert_int_equal(o.closed_calls, 0);
    owner_done(&o);
}

static void test_refused_in_state(void **state) {
    Owner o;
    owner_new(&o, CONN_CLOSE_HALF);
    /* Ping before Hello: not allowed in HELLO. */
    Msg ping = {.type = MSG_PING, .nonce = 1};
    peer_expect(&o, MSG_HELLO);
    peer_send(&o, &ping);
    peer_expect_error(&o, WIRE_ERR_PROTOCOL, "unexpected Ping");
    assert_int_equal(o.failing_calls, 1);
    assert_true(o.refused_message);
    assert_int_equal(conn_state(o.conn), 0);
    peer_expect_eof(&o);
    assert_false(conn_is_closed(o.conn)); /* half-closed, waiting for us */
    assert_int_equal(o.pings, 0);
    shutdown(o.peer, SHUT_WR);
    RUN_UNTIL(&o, o.closed_calls == 1);
    assert_int_equal(o.closed_error, 0);
    assert_true(conn_is_closed(o.conn));
    owner_done(&o);
}

static void test_unknown_type_refused(void **state) {
    Owner o;
    owner_new(&o, CONN_CLOSE_FLUSHED);
    peer_hello(&o);
    Msg status = {.type = MSG_STATUS_REQUEST};
    peer_send(&o, &status);
    peer_expect_error(&o, WIRE_ERR_PROTOCOL, "unexpected StatusRequest");
    /* Flushed close: the engine closes without waiting for us. */
    RUN_UNTIL(&o, o.closed_calls == 1);
    assert_int_equal(o.closed_error, 0);
    peer_expect_eof(&o);
    owner_done(&o);
}

static void test_version(void **state) {
    Owner o;
    owner_new(&o, CONN_CLOSE_FLUSHED);
    Msg hello = msg_hello("peer");
    hello.hello.major = WIRE_VERSION_MAJOR + 1;
    peer_expect(&o, MSG_HELLO);
    peer_send(&o, &hello);
    peer_expect_error(&o, WIRE_ERR_VERSION, NULL);
    RUN_UNTIL(&o, o.closed_calls == 1);
    owner_done(&o);
}

/* Each kind of bad frame gets its Error and the connection closes. */
static void test_bad_frames(void **state) {
    static const uint8_t garbage[] = {0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0x0f};
    static const uint8_t too_large[] = {0, 0x20, 0, 0};
    struct {
        const uint8_t *bytes;
        size_t n;
        WireError code;
        const char *message;
    } cases[] = {
        {garbage, sizeof(garbage), WIRE_ERR_PROTOCOL, "undecodable frame"},
        {too_large, sizeof(too_large), WIRE_ERR_TOO_LARGE, "frame too large"},
        {NULL, 0, WIRE_ERR_INVALID, "invalid message"},
        {NULL, 1, WIRE_ERR_PROTOCOL, "undecodable frame"},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        Owner o;
        owner_new(&o, CONN_CLOSE_FLUSHED);
        peer_hello(&o);
        if (cases[i].bytes) {
            assert_int_equal(loop_write(o.peer, cases[i].bytes, cases[i].n), 0);
        } else if (cases[i].n == 0) {
            Msg bad = {.type = MSG_SIGNAL, .signo = 0}; /* encodes, fails validation */
            peer_send(&o, &bad);
        } else {
            /* An Exec of many empty arguments: over the decode budget. */
            size_t n = (WIRE_FRAME_MAX - 64) & ~(size_t)1;
            uint8_t *frame = malloc(4 + 1 + 4 + n);
            assert_non_null(frame);
            uint8_t *p = frame + 4;
            *p++ = (2u << 3) | 2u; /* Envelope.exec */
            uint32_t len = (uint32_t)n;
            while (len >= 0x80) {
                *p++ = (uint8_t)(len | 0x80);
                len >>= 7;
            }
            *p++ = (uint8_t)len;
            for (size_t k = 0; k < n; k += 2) {
                p[k] = 0x0a;
                p[k + 1] = 0;
            }
            uint32_t body = (uint32_t)(p + n - frame - 4);
            frame[0] = (uint8_t)(body >> 24);
            frame[1] = (uint8_t)(body >> 16);
            frame[2] = (uint8_t)(body >> 8);
            frame[3] = (uint8_t)body;
            /* The engine reads while we write. */
            int fl = fcntl(o.peer, F_GETFL);
            fcntl(o.peer, F_SETFL, fl | O_NONBLOCK);
            size_t off = 0, total = 4 + body;
            while (off < total) {
                ssize_t k = write(o.peer, frame + off, total - off);
                if (k > 0) {
                    off += (size_t)k;
                } else {
                    spin(&o);
                }
            }
            fcntl(o.peer, F_SETFL, fl);
            free(frame);
        }
        peer_expect_error(&o, cases[i].code, cases[i].message);
        RUN_UNTIL(&o, o.closed_calls == 1);
        assert_int_equal(o.failing_calls, 1);
        assert_int_equal(o.failing_code, cases[i].code);
        owner_done(&o);
    }
}

static void test_handler_errors(void **state) {
    Owner o;
    Msg ping = {.type = MSG_PING, .nonce = 1};

    /* A negative errno: Error(conn_wire_error(r)) with its text. */
    owner_new(&o, CONN_CLOSE_FLUSHED);
    o.on_ping = PING_ERRNO;
    peer_hello(&o);
    peer_send(&o, &ping);
    peer_expect_error(&o, WIRE_ERR_SHUTTING_DOWN, strerror(ESHUTDOWN));
    RUN_UNTIL(&o, o.closed_calls == 1);
    owner_done(&o);

    /* conn_fail(): the owner's code and text. */
    owner_new(&o, CONN_CLOSE_FLUSHED);
    o.on_ping = PING_FAIL;
    peer_hello(&o);
    peer_send(&o, &ping);
    peer_expect_error(&o, WIRE_ERR_UNAVAILABLE, "not now");
    RUN_UNTIL(&o, o.closed_calls == 1);
    assert_int_equal(o.failing_calls, 1);
    assert_false(o.refused_message);
    owner_done(&o);
}

/* A control reply: queued, then the connection half-closes after it. */
static void test_finish_half_close(void **state) {
    Owner o;
    owner_new(&o, CONN_CLOSE_HALF);
    o.on_ping = PING_FINISH;
    peer_hello(&o);
    Msg ping = {.type = MSG_PING, .nonce = 3};
    Msg more = {.type = MSG_PING, .nonce = 4};
    peer_send(&o, &ping);
    peer_send(&o, &more); /* drained, never answered */
    peer_expect(&o, MSG_PONG);
    peer_expect_eof(&o);
    spin(&o);
    assert_int_equal(o.pings, 1);
    assert_int_equal(o.closed_error, 0);
    assert_int_equal(o.closed_calls, 0);
    close(o.peer);
    o.peer = -EBADF;
    RUN_UNTIL(&o, o.closed_calls == 1);
    assert_int_equal(o.closed_error, 0);
    owner_done(&o);
}

/* A peer that never closes is given linger_usec. */
static void test_linger(void **state) {
    Owner o;
    owner_new(&o, CONN_CLOSE_HALF);
    ConnOptions opt = server_options(CONN_CLOSE_HALF);
    opt.linger_usec = 50000;
    conn_free(o.conn);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv), 0);
    safe_close(o.peer);
    o.peer = sv[1];
    assert_int_equal(fd_nonblock(o.peer, false), 0);
    assert_int_equal(conn_new(o.event, sv[0], &opt, &ops, &o, &o.conn), 0);
    conn_finish(o.conn);
    uint64_t start = now_usec(CLOCK_MONOTONIC);
    /* Closing, the timer is the linger's: the owner's do nothing. */
    conn_timer_disarm(o.conn);
    assert_int_equal(conn_timer_arm(o.conn, 1000, on_owner_timer), 0);
    RUN_UNTIL(&o, o.closed_calls == 1);
    assert_true(now_usec(CLOCK_MONOTONIC) - start >= 40000);
    assert_int_equal(o.timer_calls, 0);
    peer_expect(&o, MSG_HELLO);
    owner_done(&o);
}

/* ---- closing and freeing from a callback ----------------------------------- */

static void test_close_in_handler(void **state) {
    Owner o;
    owner_new(&o, CONN_CLOSE_HALF);
    o.on_ping = PING_CLOSE;
    peer_hello(&o);
    Msg ping = {.type = MSG_PING, .nonce = 1};
    peer_send(&o, &ping);
    peer_send(&o, &ping); /* never dispatched */
    RUN_UNTIL(&o, o.closed_calls == 1);
    assert_int_equal(o.closed_error, -ECANCELED);
    assert_int_equal(o.pings, 1);
    assert_int_equal(conn_fd(o.conn), -EBADF);
    /* Closing again, failing, settling: nothing. */
    conn_close(o.conn, 0);
    conn_settle(o.conn, -EIO);
    assert_int_equal(conn_fail(o.conn, WIRE_ERR_PROTOCOL, "x"), 0);
    assert_int_equal(o.closed_calls, 1);
    owner_done(&o);
}

static void test_free_in_handler(void **state) {
    Owner o;
    owner_new(&o, CONN_CLOSE_HALF);
    o.on_ping = PING_FREE;
    peer_hello(&o);
    Msg ping = {.type = MSG_PING, .nonce = 1};
    peer_send(&o, &ping);
    peer_send(&o, &ping);
    RUN_UNTIL(&o, o.conn == NULL);
    spin(&o);
    assert_int_equal(o.pings, 1);
    assert_int_equal(o.closed_calls, 0); /* freed, not closed */
    owner_done(&o);
}

/* The owner frees itself from closed(), called from conn_close() outside
 * any callback. */
static void test_free_in_closed(void **state) {
    Owner o;
    owner_new(&o, CONN_CLOSE_HALF);
    o.free_on_close = true;
    conn_close(o.conn, -EIO);
    assert_int_equal(o.closed_calls, 1);
    assert_null(o.conn);
    owner_done(&o);
}

/* ---- input modes ------------------------------------------------------------ */

static void test_input_pause(void **state) {
    Owner o;
    owner_new(&o, CONN_CLOSE_HALF);
    peer_hello(&o);
    spin(&o);
    o.input = CONN_INPUT_PAUSE;
    Msg ping = {.type = MSG_PING, .nonce = 1};
    peer_send(&o, &ping);
    spin(&o);
    assert_int_equal(o.pings, 0); /* not read */
    o.input = CONN_INPUT_READ;
    conn_settle(o.conn, 0);
    peer_expect(&o, MSG_PONG);
    o.input = CONN_INPUT_PAUSE;
    conn_settle(o.conn, 0);
    shutdown(o.peer, SHUT_WR); /* a half-close ends a paused connection */
    RUN_UNTIL(&o, o.closed_calls == 1);
    assert_int_equal(o.closed_error, -ECONNRESET);
    owner_done(&o);
}

static void test_input_hold(void **state) {
    Owner o;
    owner_new(&o, CONN_CLOSE_HALF);
    peer_hello(&o);
    spin(&o);
    o.input = CONN_INPUT_HOLD;
    conn_settle(o.conn, 0);
    Msg ping = {.type = MSG_PING, .nonce = 1};
    peer_send(&o, &ping);
    shutdown(o.peer, SHUT_WR); /* not ours: nothing happens */
    spin(&o);
    assert_int_equal(o.pings, 0);
    assert_int_equal(o.closed_calls, 0);
    close(o.peer);
    o.peer = -EBADF;
    RUN_UNTIL(&o, o.closed_calls == 1);
    assert_int_equal(o.closed_error, -ECONNRESET);
    owner_done(&o);
}

/* ---- timer, writer ------------------------------------------------------------ */

static int on_owner_timer(void *userdata) {
    Owner *o = userdata;
    o->timer_calls++;
    return o->timer_result;
}

static void test_timer(void **state) {
    Owner o;
    owner_new(&o, CONN_CLOSE_HALF);
    assert_int_equal(conn_timer_arm(o.conn, 1000, on_owner_timer), 0);
    RUN_UNTIL(&o, o.timer_calls == 1);
    assert_int_equal(o.closed_calls, 0);
    /* Disarmed: nothing. */
    assert_int_equal(conn_timer_arm(o.conn, 1000, on_owner_timer), 0);
    conn_timer_disarm(o.conn);
    spin(&o);
    assert_int_equal(o.timer_calls, 1);
    /* A negative result closes with it. */
    o.timer_result = -ETIMEDOUT;
    assert_int_equal(conn_timer_arm_at(o.conn, now_usec(CLOCK_MONOTONIC), on_owner_timer), 0);
    RUN_UNTIL(&o, o.closed_calls == 1);
    assert_int_equal(o.closed_error, -ETIMEDOUT);
    owner_done(&o);
}

static void test_writer_bound(void **state) {
    Owner o;
    owner_new(&o, CONN_CLOSE_HALF);
    static uint8_t chunk[WIRE_DATA_MAX];
    Msg d = {.type = MSG_DATA,
             .data = {.stream = WIRE_STDOUT, .data = chunk, .size = sizeof(chunk)}};
    int r;
    size_t n = 0;
    while ((r = conn_queue(o.conn, &d)) == 0) {
        n++;
    }
    assert_int_equal(r, -ENOBUFS);
    assert_true(n >= 1);
    assert_true(conn_pending(o.conn) > CONN_OUT_MAX_DEFAULT);
    assert_true(conn_pending(o.conn) <=
                CONN_OUT_MAX_DEFAULT + sizeof(chunk) + WIRE_DATA_HEADER_MAX);
    /* An Error still goes: it is the last word. */
    assert_int_equal(conn_fail(o.conn, WIRE_ERR_INTERNAL, "full"), 0);
    assert_int_equal(o.failing_calls, 1);
    owner_done(&o);
}

/* One acknowledgement in flight: before_flush queues the next once the
 * previous went. */
static void test_before_flush(void **state) {
    Owner o;
    owner_new(&o, CONN_CLOSE_HALF);
    peer_hello(&o);
    spin(&o);
    o.acks_wanted = 3;
    conn_settle(o.conn, 0);
    for (int i = 0; i < 3; i++) {
        peer_expect(&o, MSG_STDIN_ACK);
    }
    assert_int_equal(o.acks_queued, 3);
    owner_done(&o);
}

static void test_fds(void **state) {
    Owner o;
    int p[2], fds[2];
    size_t n = 0;
    owner_new(&o, CONN_CLOSE_HALF);
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    Msg m = {.type = MSG_CONNECTED};
    assert_int_equal(conn_queue_fds(o.conn, &m, p, 2), 0);
    assert_int_equal(conn_queue_fds(o.conn, &m, p, 2), -EBUSY);
    peer_expect(&o, MSG_HELLO);
    RUN_UNTIL(&o, peer_readable(&o));
    Msg got;
    assert_int_equal(wire_recv_fds(o.peer, &got, fds, 2, &n), 0);
    assert_int_equal(got.type, MSG_CONNECTED);
    msg_done(&got);
    assert_int_equal(n, 2);
    /* The engine's copies are closed: the write end we got is the last. */
    assert_int_equal(write(fds[1], "x", 1), 1);
    close(fds[1]);
    char c;
    assert_int_equal(read(fds[0], &c, 1), 1);
    assert_int_equal(read(fds[0], &c, 1), 0);
    close(fds[0]);
    owner_done(&o);
}

/* ---- a client -------------------------------------------------------------------- */

static int handle_pong(void *userdata, Msg *m) {
    Owner *o = userdata;
    o->pings++;
    conn_close(o->conn, 0);
    return 0;
}

static const ConnHandler client_handlers[] = {
    {MSG_PONG, S_REQUEST, handle_pong},
};

static const ConnOps client_ops = {
    .handlers = client_handlers,
    .n_handlers = ELEMENTSOF(client_handlers),
    .closed = owner_closed,
    .failing = owner_failing,
};

/* Connects to a listening unix socket, non-blocking. */
static void client_new(Owner *o, int *ret_listener) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    *o = (Owner){.input = CONN_INPUT_READ};
    assert_int_equal(sd_event_new(&o->event), 0);
    int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(l >= 0);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "/tmp/test-conn-%d", (int)getpid());
    unlink(sa.sun_path);
    assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(l, 4), 0);
    char where[sizeof(sa.sun_path) + 8];
    Addr to;
    snprintf(where, sizeof(where), "unix:%s", sa.sun_path);
    assert_int_equal(addr_parse(where, &to), 0);
    int fd = -EBADF;
    int r = addr_connect(&to, ADDR_NONBLOCK, &fd);
    assert_true(r == 0 || r == -EINPROGRESS);
    unlink(sa.sun_path);
    ConnOptions opt = {
        .role = CONN_CLIENT,
        .software = "test-conn client",
        .after_hello = S_REQUEST,
        .close_mode = CONN_CLOSE_FLUSHED,
        .linger_usec = 1000000,
        .connecting = r != 0,
        .connecting_to = &to,
    };
    assert_int_equal(conn_new(o->event, fd, &opt, &client_ops, o, &o->conn), 0);
    Msg ping = {.type = MSG_PING, .nonce = 9};
    assert_int_equal(conn_queue(o->conn, &ping), 0);
    o->peer = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    assert_true(o->peer >= 0);
    *ret_listener = l;
}

static void test_client(void **state) {
    Owner o;
    int l;
    client_new(&o, &l);
    Msg hello = msg_hello("server");
    Msg pong = {.type = MSG_PONG, .nonce = 9};
    peer_expect(&o, MSG_HELLO);
    peer_expect(&o, MSG_PING);
    peer_send(&o, &hello);
    peer_send(&o, &pong);
    RUN_UNTIL(&o, o.closed_calls == 1);
    assert_int_equal(o.pings, 1);
    assert_int_equal(o.closed_error, 0);
    owner_done(&o);
    close(l);
}

/* A client closes on the server's faults; it sends no Error. */
static void test_client_refuses(void **state) {
    Owner o;
    int l;
    client_new(&o, &l);
    Msg pong = {.type = MSG_PONG, .nonce = 9};
    peer_expect(&o, MSG_HELLO);
    peer_expect(&o, MSG_PING);
    peer_send(&o, &pong); /* before Hello */
    RUN_UNTIL(&o, o.closed_calls == 1);
    assert_int_equal(o.closed_error, -EPROTO);
    assert_int_equal(o.failing_calls, 0);
    Msg m;
    assert_int_equal(wire_recv(o.peer, &m, NULL), -ECONNRESET); /* no Error */
    owner_done(&o);
    close(l);
}

/* Through a vsock device (hvsock:PATH:PORT): the device's OK line is read
 * by the connect itself, nothing is sent before it, and the stream starts
 * right after it (a frame in the same read as the line included). */
static void test_client_hvsock(void **state) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char where[sizeof(sa.sun_path) + 16], line[32];
    Owner o = {.input = CONN_INPUT_READ};
    Addr to;

    assert_int_equal(sd_event_new(&o.event), 0);
    int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(l >= 0);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "/tmp/test-conn-hv-%d", (int)getpid());
    unlink(sa.sun_path);
    assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(l, 4), 0);
    snprintf(where, sizeof(where), "hvsock:%s:5200", sa.sun_path);
    assert_int_equal(addr_parse(where, &to), 0);
    int fd = -EBADF;
    assert_int_equal(addr_connect(&to, ADDR_NONBLOCK, &fd), -EINPROGRESS);
    unlink(sa.sun_path);
    ConnOptions opt = {
        .role = CONN_CLIENT,
        .software = "test-conn client",
        .after_hello = S_REQUEST,
        .close_mode = CONN_CLOSE_FLUSHED,
        .linger_usec = 1000000,
        .connecting = true,
        .connecting_to = &to,
    };
    assert_int_equal(conn_new(o.event, fd, &opt, &client_ops, &o, &o.conn), 0);
    Msg ping = {.type = MSG_PING, .nonce = 9};
    assert_int_equal(conn_queue(o.conn, &ping), 0);
    o.peer = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    assert_true(o.peer >= 0);

    /* The device reads the CONNECT line; the client sends nothing else
     * until the device answers. */
    RUN_UNTIL(&o, peer_readable(&o));
    ssize_t n = read(o.peer, line, sizeof(line));
    assert_int_equal(n, 13);
    assert_memory_equal(line, "CONNECT 5200\n", 13);
    for (int i = 0; i < 20; i++) {
        assert_true(sd_event_run(o.event, 1000) >= 0);
    }
    assert_false(peer_readable(&o));
    /* OK, and the server's Hello right behind it. */
    Msg hello = msg_hello("server");
    assert_int_equal(write(o.peer, "OK 1025\n", 8), 8);
    peer_send(&o, &hello);
    peer_expect(&o, MSG_HELLO);
    peer_expect(&o, MSG_PING);
    Msg pong = {.type = MSG_PONG, .nonce = 9};
    peer_send(&o, &pong);
    RUN_UNTIL(&o, o.closed_calls == 1);
    assert_int_equal(o.pings, 1);
    assert_int_equal(o.closed_error, 0);
    owner_done(&o);
    close(l);
}

/* ---- helpers ------------------------------------------------------------------- */

static void test_wire_error(void **state) {
    assert_int_equal(conn_wire_error(-E2BIG), WIRE_ERR_TOO_LARGE);
    assert_int_equal(conn_wire_error(-EINVAL), WIRE_ERR_INVALID);
    assert_int_equal(conn_wire_error(-EPROTONOSUPPORT), WIRE_ERR_VERSION);
    assert_int_equal(conn_wire_error(-ESHUTDOWN), WIRE_ERR_SHUTTING_DOWN);
    assert_int_equal(conn_wire_error(-EBADMSG), WIRE_ERR_PROTOCOL);
    assert_int_equal(conn_wire_error(-EMSGSIZE), WIRE_ERR_PROTOCOL);
    assert_int_equal(conn_wire_error(-EPROTO), WIRE_ERR_PROTOCOL);
    assert_int_equal(conn_wire_error(-ENOMEM), WIRE_ERR_INTERNAL);
}

static void test_refuse_fd(void **state) {
    int sv[2];
    Msg m;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(fd_nonblock(sv[0], true), 0);
    conn_refuse_fd(sv[0], WIRE_ERR_DENIED, "permission denied");
    assert_int_equal(wire_recv(sv[1], &m, NULL), 0);
    assert_int_equal(m.type, MSG_ERROR);
    assert_int_equal(m.error.code, WIRE_ERR_DENIED);
    assert_string_equal(m.error.message, "permission denied");
    msg_done(&m);
    assert_int_equal(wire_recv(sv[1], &m, NULL), -ECONNRESET);
    close(sv[1]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello_and_dispatch),
        cmocka_unit_test(test_refused_in_state),
        cmocka_unit_test(test_unknown_type_refused),
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_bad_frames),
        cmocka_unit_test(test_handler_errors),
        cmocka_unit_test(test_finish_half_close),
        cmocka_unit_test(test_linger),
        cmocka_unit_test(test_close_in_handler),
        cmocka_unit_test(test_free_in_handler),
        cmocka_unit_test(test_free_in_closed),
        cmocka_unit_test(test_input_pause),
        cmocka_unit_test(test_input_hold),
        cmocka_unit_test(test_timer),
        cmocka_unit_test(test_writer_bound),
        cmocka_unit_test(test_before_flush),
        cmocka_unit_test(test_fds),
        cmocka_unit_test(test_client),
        cmocka_unit_test(test_client_refuses),
        cmocka_unit_test(test_client_hvsock),
        cmocka_unit_test(test_wire_error),
        cmocka_unit_test(test_refuse_fd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
