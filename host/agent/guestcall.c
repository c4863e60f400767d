/* One control request to the guest agent: see guestcall.h. */
#include "guestcall.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "util.h"

#define SOFTWARE "qubes-lite-host-agent 0.1"

struct GuestCall {
    int fd;
    sd_event_source *io, *timer;
    WireReader reader;
    WireWriter writer;
    MsgType request, reply;
    bool connected, got_hello, done;
    GuestCallDone callback;
    void *userdata;
};

void guest_call_free(GuestCall *call) {
    if (!call) {
        return;
    }
    sd_event_source_disable_unref(call->io);
    sd_event_source_disable_unref(call->timer);
    safe_close(call->fd);
    wire_reader_done(&call->reader);
    wire_writer_done(&call->writer);
    free(call);
}

static void call_finish(GuestCall *call, int r, const Msg *reply) {
    if (call->done) {
        return;
    }
    call->done = true;
    sd_event_source_set_enabled(call->io, SD_EVENT_OFF);
    sd_event_source_set_enabled(call->timer, SD_EVENT_OFF);
    call->callback(call, r, reply, call->userdata);
}

/* 1 when finished, 0 to go on. */
static int call_read(GuestCall *call) {
    for (;;) {
        Msg m;
        int r = wire_reader_read(&call->reader, call->fd, &m);
        if (r == 0) {
            return 0;
        }
        if (r < 0) {
            call_finish(call, r == -ECONNRESET ? -EPIPE : r, NULL);
            return 1;
        }
        if (m.type == MSG_HELLO && !call->got_hello) {
            call->got_hello = true;
            r = wire_check_hello(&m) < 0 ? -EPROTONOSUPPORT : 0;
            msg_done(&m);
            if (r < 0) {
                call_finish(call, r, NULL);
                return 1;
            }
            continue;
        }
        if (m.type == call->reply && call->got_hello) {
            call_finish(call, 0, &m);
        } else {
            call_finish(call, m.type == MSG_ERROR ? -EREMOTEIO : -EPROTO, NULL);
        }
        msg_done(&m);
        return 1;
    }
}

static int on_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
    GuestCall *call = userdata;
    int r;

    if (!call->connected) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) {
            err = errno;
        }
        if (err != 0) {
            call_finish(call, -err, NULL);
            return 0;
        }
        call->connected = true;
    }
    if ((revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) && call_read(call)) {
        return 0;
    }
    r = wire_writer_flush(&call->writer, call->fd);
    if (r < 0) {
        call_finish(call, r, NULL);
        return 0;
    }
    (void)sd_event_source_set_io_events(call->io, r > 0 ? EPOLLIN | EPOLLOUT : EPOLLIN);
    return 0;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
    call_finish(userdata, -ETIMEDOUT, NULL);
    return 0;
}

int guest_call_start(sd_event *e, const Addr *guest, MsgType request, uint64_t timeout_usec,
                     GuestCallDone done, void *userdata, GuestCall **ret) {
    static const struct {
        MsgType request, reply;
    } pairs[] = {
        {MSG_PING, MSG_PONG},
        {MSG_STATUS_REQUEST, MSG_STATUS},
        {MSG_SHUTDOWN, MSG_SHUTDOWN_REPLY},
    };
    GuestCall *call;
    int r;

    call = calloc(1, sizeof(*call));
    if (!call) {
        return -ENOMEM;
    }
    call->fd = -EBADF;
    call->request = request;
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
    Msg hello = msg_hello(SOFTWARE);
    Msg req = {.type = request, .nonce = 1};
    r = wire_writer_queue(&call->writer, &hello);
    if (r >= 0) {
        r = wire_writer_queue(&call->writer, &req);
    }
    if (r >= 0) {
        r = addr_connect(guest, ADDR_NONBLOCK | ADDR_RESERVED_PORT, &call->fd);
        call->connected = r == 0;
        if (r == -EINPROGRESS) {
            r = 0;
        }
    }
    if (r >= 0) {
        r = sd_event_add_io(e, &call->io, call->fd, EPOLLIN | EPOLLOUT, on_io, call);
    }
    if (r >= 0) {
        r = sd_event_add_time_relative(e, &call->timer, CLOCK_MONOTONIC, timeout_usec, 0, on_timer,
                                       call);
    }
    if (r < 0) {
        guest_call_free(call);
        return r;
    }
    *ret = call;
    return 0;
}
