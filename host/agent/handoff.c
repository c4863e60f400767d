/* A Connect's guest connections (handoff.h). */
#include "handoff.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "log.h"
#include "wire.h"

#define HANDOFF_SOFTWARE "qubes-lite-host-agent 0.1"

_Static_assert(1 + WIRE_CONNECT_STREAMS_MAX <= WIRE_WRITER_FDS_MAX,
               "a Connected carries every guest connection");

struct Handoff {
    Agent *agent;
    pid_t pid;
    HandoffDoneFn done;
    void *userdata;
    /* Connected guest sockets not queued yet: the Connect's one, then the
     * stream connections it asked for; queued together once all are here. */
    int fds[1 + WIRE_CONNECT_STREAMS_MAX];
    unsigned n, want;
    MsgConnected connected; /* its timing, from the first connection */
    uint64_t vm_wait_start;
    /* The attempt in progress. */
    int attempt_fd;
    sd_event_source *attempt_io;
    sd_event_source *timer; /* the backoff, or the attempt's deadline */
    uint64_t start, deadline, backoff;
    unsigned attempts;
    /* Over: error < 0 when there is nothing to hand over, and why. */
    bool over;
    int error;
    ErrorText message;
};

/* --no-vmm: HostStatus says whether the last attempt reached the guest
 * agent, and since when it does. */
static void guest_seen(Agent *a, bool up) {
    if (!a->no_vmm) {
        return;
    }
    if (up && !a->guest_up) {
        a->guest_up_since = now_mono();
    }
    a->guest_up = up;
}

static void attempt_drop(Handoff *h) {
    h->attempt_io = sd_event_source_disable_unref(h->attempt_io);
    h->attempt_fd = safe_close(h->attempt_fd);
}

/* Over: 1 (what handoff_start() and the handlers pass on). */
static int finish(Handoff *h, int error) {
    h->over = true;
    h->error = error;
    agent_timer_off(h->timer);
    return 1;
}

static int try_connect(Handoff *h);
static int failed(Handoff *h, int r);

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata);

/* The steps below return 1 when the hand-off is over, 0 while it goes
 * on, a negative errno when it failed. */

/* Our Hello goes first on every guest connection we hand over: it carries
 * the VM's secret, which the client never sees (its own Hello follows,
 * without one). The socket was just connected and its send buffer is
 * empty: a frame this small is written at once, never waited for. */
static int send_hello(Handoff *h, int fd) {
    Msg hello = msg_hello(HANDOFF_SOFTWARE);
    hello.hello.secret = agent_secret(h->agent);
    return wire_send(fd, &hello);
}

/* Our Hello could not be sent because the guest agent had already closed:
 * if it said why first (an Error, e.g. a refused peer), the client gets
 * the connection to read it, as it would have without our Hello. */
static bool refused_with_words(int fd, int r) {
    char c;
    return (r == -EPIPE || r == -ECONNRESET) && recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 1;
}

static int connected(Handoff *h, int fd) {
    uint64_t now = now_mono();
    int r = send_hello(h, fd);

    if (r < 0 && !refused_with_words(fd, r)) {
        safe_close(fd);
        return failed(h, r);
    }
    guest_seen(h->agent, true);
    assert(h->n < h->want && h->want <= ELEMENTSOF(h->fds));
    if (h->n == 0) {
        h->connected = (MsgConnected){
            .vm_start_us = h->vm_wait_start ? now - h->vm_wait_start : 0,
            /* Once the VM was up (or at once, when it ran): what the
             * guest agent itself took, not the VM start again. */
            .guest_wait_us = now - h->start,
        };
    }
    h->fds[h->n++] = fd;
    if (h->n < h->want) {
        /* The stream connection(s): the guest agent answers now. */
        return try_connect(h);
    }
    return finish(h, 0);
}

/* One attempt failed with error r: retry after a backoff, or give up at
 * the deadline. */
static int failed(Handoff *h, int r) {
    Agent *a = h->agent;
    uint64_t now = now_mono();

    attempt_drop(h);
    if (h->n > 0) {
        /* A stream connection failed where the first one worked: hand over
         * what we have rather than keep that one waiting. */
        log_info_errno(r, "Guest agent of VM '%s': no stream connection for pid %d: %m", a->vm_name,
                       (int)h->pid);
        return finish(h, 0);
    }
    guest_seen(a, false);
    if (now >= h->deadline) {
        log_warning_errno(r,
                          "Guest agent of VM '%s' at %s did not answer within %" PRIu64
                          " s, giving up for pid %d: %m",
                          a->vm_name, a->guest_str, a->guest_timeout / USEC_PER_SEC, (int)h->pid);
        error_set(&h->message, r,
                  "the guest agent of VM '%s' did not answer within %" PRIu64 " s (%s: %s)",
                  a->vm_name, a->guest_timeout / USEC_PER_SEC, a->guest_str, strerror(-r));
        return finish(h, r);
    }
    if (h->attempts == 1) {
        log_info_errno(r, "Guest agent of VM '%s' at %s not answering yet, retrying: %m",
                       a->vm_name, a->guest_str);
    }
    uint64_t wait = MIN(h->backoff, h->deadline - now);
    h->backoff = MIN(h->backoff * 2, GUEST_BACKOFF_MAX_USEC);
    r = agent_timer_at(a, &h->timer, now + wait, on_timer, h);
    return r < 0 ? r : 0;
}

/* Tells the client when the hand-off is over (or failed); the last thing
 * a handler does, since the client may free the Handoff. */
static void notify(Handoff *h, int r) {
    if (r != 0) {
        h->done(h->userdata, r < 0 ? r : 0);
    }
}

static int on_attempt_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
    Handoff *h = userdata;
    uint32_t events = 0;

    /* The connect goes on (hvsock: the device's OK line) or ends here. */
    int r = addr_connect_finish(&h->agent->guest, fd, &events);
    if (r == -EINPROGRESS) {
        r = sd_event_source_set_io_events(s, events);
        if (r >= 0) {
            return 0;
        }
        r = failed(h, r);
    } else if (r < 0) {
        r = failed(h, r);
    } else {
        h->attempt_io = sd_event_source_disable_unref(h->attempt_io);
        agent_timer_off(h->timer);
        r = connected(h, TAKE_FD(h->attempt_fd));
    }
    notify(h, r);
    return 0;
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
    Handoff *h = userdata;
    /* The attempt in progress reached the deadline, or the backoff is over. */
    int r = h->attempt_io ? failed(h, -ETIMEDOUT) : try_connect(h);
    notify(h, r);
    return 0;
}

static int try_connect(Handoff *h) {
    Agent *a = h->agent;
    int fd = -EBADF;
    int r;

    h->attempts++;
    r = addr_connect(&a->guest, ADDR_NONBLOCK | ADDR_RESERVED_PORT, &fd);
    if (r == 0) {
        return connected(h, fd);
    }
    if (r == -EINPROGRESS) {
        h->attempt_fd = fd;
        r = sd_event_add_io(a->event, &h->attempt_io, fd, EPOLLOUT, on_attempt_io, h);
        if (r < 0) {
            return r;
        }
        /* An attempt in progress is bounded by the deadline. */
        r = agent_timer_at(a, &h->timer, h->deadline, on_timer, h);
        return r < 0 ? r : 0;
    }
    return failed(h, r);
}

int handoff_start(Agent *a, unsigned want, uint64_t vm_wait_start, pid_t pid, HandoffDoneFn done,
                  void *userdata, Handoff **ret) {
    Handoff *h = calloc(1, sizeof(*h));
    if (!h) {
        return -ENOMEM;
    }
    uint64_t now = now_mono();
    *h = (Handoff){
        .agent = a,
        .pid = pid,
        .done = done,
        .userdata = userdata,
        .want = want,
        .vm_wait_start = vm_wait_start,
        .attempt_fd = -EBADF,
        .start = now,
        .deadline = now + a->guest_timeout,
        .backoff = GUEST_BACKOFF_MIN_USEC,
    };
    int r = try_connect(h);
    if (r < 0) {
        handoff_free(h);
        return r;
    }
    *ret = h;
    return r;
}

int handoff_result(const Handoff *h, ErrorText *err) {
    assert(h->over);
    if (h->error < 0) {
        *err = h->message;
    }
    return h->error;
}

int handoff_queue(Handoff *h, Conn *conn) {
    Msg m = {.type = MSG_CONNECTED, .connected = h->connected};

    assert(h->over && h->error == 0 && h->n > 0);
    int r = conn_queue_fds(conn, &m, h->fds, h->n);
    if (r < 0) {
        return r;
    }
    h->n = 0; /* the connection's now: closed there once sent */
    return 0;
}

unsigned handoff_sockets(const Handoff *h) {
    return h->n;
}

unsigned handoff_attempts(const Handoff *h) {
    return h->attempts;
}

Handoff *handoff_free(Handoff *h) {
    if (!h) {
        return NULL;
    }
    attempt_drop(h);
    sd_event_source_disable_unref(h->timer);
    for (unsigned i = 0; i < h->n; i++) {
        safe_close(h->fds[i]);
    }
    free(h);
    return NULL;
}
