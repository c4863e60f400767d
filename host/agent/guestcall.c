/* One control request to the guest agent, on the connection engine (a
 * client of it): see guestcall.h. */
#include "guestcall.h"

#include <errno.h>
#include <stdlib.h>

#include "conn.h"
#include "util.h"

#define SOFTWARE "qubes-lite-host-agent 0.1"

/* The connection's states (conn.h): Hello, then the reply. */
enum {
    GC_HELLO = CONN_STATE_HELLO,
    GC_REPLY = 1u << 1,
};

struct GuestCall {
    Conn *conn;
    MsgType reply;
    bool done;
    GuestCallDone callback;
    void *userdata;
};

void guest_call_free(GuestCall *call) {
    if (!call) {
        return;
    }
    conn_free(call->conn);
    free(call);
}

/* Reports once. The connection is over either way; the callback may free
 * the call. */
static void call_finish(GuestCall *call, int r, const Msg *reply) {
    if (call->done) {
        return;
    }
    call->done = true;
    conn_close(call->conn, r);
    call->callback(call, r, reply, call->userdata);
}

static int on_reply(void *userdata, Msg *m) {
    GuestCall *call = userdata;
    if (m->type == call->reply) {
        call_finish(call, 0, m);
    } else {
        call_finish(call, -EPROTO, NULL);
    }
    return 0;
}

/* Also before Hello: a refused peer gets an Error and nothing else. */
static int on_error(void *userdata, Msg *m) {
    call_finish(userdata, -EREMOTEIO, NULL);
    return 0;
}

static const ConnHandler call_handlers[] = {
    {MSG_PONG, GC_REPLY, on_reply},
    {MSG_STATUS, GC_REPLY, on_reply},
    {MSG_SHUTDOWN_REPLY, GC_REPLY, on_reply},
    {MSG_ERROR, GC_HELLO | GC_REPLY, on_error},
};

/* Anything else ended it: a connect or I/O error, an unexpected or
 * undecodable message, a wrong version, the timeout. */
static void on_closed(void *userdata, int error) {
    call_finish(userdata, error == -ECONNRESET || error == 0 ? -EPIPE : error, NULL);
}

static const ConnOps call_ops = {
    .handlers = call_handlers,
    .n_handlers = ELEMENTSOF(call_handlers),
    .closed = on_closed,
};

static int on_timeout(void *userdata) {
    return -ETIMEDOUT;
}

int guest_call_start(sd_event *e, const Addr *guest, const uint8_t *secret, MsgType request,
                     uint64_t timeout_usec, GuestCallDone done, void *userdata,
                     GuestCall **ret) {
    static const struct {
        MsgType request, reply;
    } pairs[] = {
        {MSG_PING, MSG_PONG},
        {MSG_STATUS_REQUEST, MSG_STATUS},
        {MSG_SHUTDOWN, MSG_SHUTDOWN_REPLY},
    };
    GuestCall *call;
    int fd = -EBADF;
    int r;

    call = calloc(1, sizeof(*call));
    if (!call) {
        return -ENOMEM;
    }
    call->callback = done;
    call->userdata = userdata;
    for (size_t i = 0; i < ELEMENTSOF(pairs); i++) {
        if (pairs[i].request == request) {
            call->reply = pairs[i].reply;
        }
    }
    if (call->reply == 0) {
        guest_call_free(call);
        return -EINVAL;
    }
    r = addr_connect(guest, ADDR_NONBLOCK | ADDR_RESERVED_PORT, &fd);
    if (r < 0 && r != -EINPROGRESS) {
        guest_call_free(call);
        return r;
    }
    ConnOptions o = {
        .role = CONN_CLIENT,
        .software = SOFTWARE,
        .hello_secret = secret,
        .after_hello = GC_REPLY,
        .close_mode = CONN_CLOSE_FLUSHED,
        .connecting = r == -EINPROGRESS,
        .connecting_to = guest,
    };
    r = conn_new(e, fd, &o, &call_ops, call, &call->conn);
    if (r >= 0) {
        Msg req = {.type = request, .nonce = 1};
        r = conn_queue(call->conn, &req);
    }
    if (r >= 0) {
        r = conn_timer_arm(call->conn, timeout_usec, on_timeout);
    }
    if (r < 0) {
        guest_call_free(call);
        return r;
    }
    *ret = call;
    return 0;
}
