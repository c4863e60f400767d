/* The clients of the VM's command socket (clients.h).
 *
 * A client's states, and what moves it on:
 *   hello → request                            its Hello
 *   request → wait VM → connecting → lease     Connect (VM not running)
 *   request → connecting → lease               Connect (VM running)
 *   request → wait VM → status                 HostStart
 *   request → status                           HostStatusRequest
 *   request → stop wait                        HostStop
 *   any → closing                              its last reply queued
 * client_dispatch[] says which message each state takes. */
#include "clients.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "acceptor.h"
#include "guestcall.h"
#include "handoff.h"
#include "idle.h"
#include "log.h"

#define SOFTWARE "qubes-lite-host-agent 0.1"

typedef struct Client Client;

typedef enum ClientState {
    CLIENT_HELLO,      /* waiting for the client's Hello */
    CLIENT_REQUEST,    /* waiting for its request */
    CLIENT_WAIT_VM,    /* Connect or HostStart: the VM is starting */
    CLIENT_CONNECTING, /* Connect: reaching the guest agent, handing over */
    CLIENT_LEASE,      /* Connected sent; the connection is a lease */
    CLIENT_STATUS,     /* HostStatusRequest: asking the guest agent */
    CLIENT_STOP_WAIT,  /* HostStop: the VM is stopping */
    CLIENT_CLOSING,    /* last reply queued, then close */
} ClientState;

struct Client {
    Clients *clients;
    Agent *agent;
    Client *prev, *next;
    int fd;
    uid_t uid;
    pid_t pid;
    sd_event_source *io;
    sd_event_source *timer; /* handshake timeout, VM start deadline, unread last reply */
    WireReader reader;
    WireWriter writer;
    ClientState state;
    MsgType request;
    bool leased;
    bool restarted;         /* its wait already outlived one run of the VM */
    uint64_t vm_wait_start; /* waited for the VM to start since; 0: it ran */
    unsigned want_handoff;  /* Connect: 1 + its stream connections */
    Handoff *handoff;       /* Connect: its guest connections */
    GuestCall *status_call;
};

struct Clients {
    Agent *agent;
    Client *list;
    Acceptor *acceptor;
};

static const char *vm_state_name(VmState s) {
    static const char *const names[] = {"stopped", "starting", "running", "stopping"};
    return (size_t)s < ELEMENTSOF(names) ? names[s] : "?";
}

/* ---- one client's connection ------------------------------------------------ */

static void client_free(Client *c) {
    if (!c) {
        return;
    }
    Agent *a = c->agent;
    bool leased = c->leased;
    if (leased) {
        idle_lease_end(a->idle);
        log_debug("Lease of pid %d (uid %u) ended, %u left", (int)c->pid, (unsigned)c->uid,
                  idle_leases(a->idle));
    }
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        c->clients->list = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    sd_event_source_disable_unref(c->io);
    sd_event_source_disable_unref(c->timer);
    handoff_free(c->handoff);
    guest_call_free(c->status_call);
    safe_close(c->fd);
    wire_reader_done(&c->reader);
    wire_writer_done(&c->writer);
    free(c);
    if (leased) {
        idle_update(a->idle);
    }
    idle_linger_update(a->idle);
}

static bool client_handoff_ready(const Client *c) {
    return c->handoff && handoff_ready(c->handoff);
}

/* Sets what we wait for on the client socket from its state. */
static int client_update_events(Client *c) {
    uint32_t ev = 0;

    if (c->state != CLIENT_CLOSING) {
        ev |= EPOLLIN;
    }
    if (wire_writer_pending(&c->writer) > 0 || client_handoff_ready(c)) {
        ev |= EPOLLOUT;
    }
    return sd_event_source_set_io_events(c->io, ev);
}

static int client_queue(Client *c, const Msg *m) {
    if (wire_writer_pending(&c->writer) > CLIENT_OUT_MAX) {
        return -ENOBUFS;
    }
    return wire_writer_queue(&c->writer, m);
}

static int client_arm_timer(Client *c, uint64_t usec) {
    int r = sd_event_source_set_time(c->timer, usec);
    if (r >= 0) {
        r = sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);
    }
    return r;
}

/* The last reply is queued: close once it is written, and bound how long
 * an unread reply keeps the client around. */
static int client_closing(Client *c) {
    c->state = CLIENT_CLOSING;
    return client_arm_timer(c, now_mono() + CLIENT_HANDSHAKE_TIMEOUT_USEC);
}

/* Queues a last reply; the client is closed once it is written. */
static int client_reply(Client *c, const Msg *m) {
    int r = client_queue(c, m);
    return r < 0 ? r : client_closing(c);
}

static int client_fail(Client *c, WireError code, const char *message) {
    Msg m = msg_error(code, message);

    /* The Error is the answer: no Connected after it. */
    c->handoff = handoff_free(c->handoff);
    return client_reply(c, &m);
}

static int client_send_stopped(Client *c, StopMethod method, uint64_t stop_ms) {
    Msg m = {.type = MSG_HOST_STOPPED, .host_stopped = {.method = method, .stop_ms = stop_ms}};
    return client_reply(c, &m);
}

/* Writes what is queued, then the hand-off. Returns <0 when the client
 * must be dropped, 0 otherwise. */
static int client_flush(Client *c) {
    int r = wire_writer_flush(&c->writer, c->fd);
    if (r < 0) {
        return r;
    }
    if (r > 0) {
        return 0;
    }
    if (client_handoff_ready(c)) {
        r = handoff_send(c->handoff, c->fd);
        if (r == -EAGAIN) {
            return 0;
        }
        if (r < 0) {
            return r;
        }
        log_debug("Handed %u guest connection(s) to pid %d (uid %u) after %u attempt(s)",
                  handoff_sockets(c->handoff), (int)c->pid, (unsigned)c->uid,
                  handoff_attempts(c->handoff));
        /* The client holds the guest connections now; ours go. */
        c->handoff = handoff_free(c->handoff);
        c->state = CLIENT_LEASE;
        sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
    }
    if (c->state == CLIENT_CLOSING && wire_writer_pending(&c->writer) == 0) {
        return -ECONNRESET; /* done: close */
    }
    return 0;
}

/* After a change (r: its result): write, and drop the client when that,
 * or the change, failed. */
static void client_kick(Client *c, int r) {
    if (r >= 0) {
        r = client_flush(c);
    }
    if (r >= 0) {
        r = client_update_events(c);
    }
    if (r < 0) {
        client_free(c);
    }
}

/* ---- Connect: the guest connections ----------------------------------------- */

/* The hand-off is over: Connected goes out (client_flush), or the
 * guest agent did not answer in time. */
static int client_handoff_over(Client *c) {
    ErrorText err;
    int r = handoff_result(c->handoff, &err);
    if (r < 0) {
        return client_fail(c, WIRE_ERR_UNAVAILABLE, err.message);
    }
    return client_flush(c);
}

static void on_handoff_done(void *userdata, int r) {
    Client *c = userdata;
    client_kick(c, r < 0 ? r : client_handoff_over(c));
}

/* Connect, once the guest agent may answer. */
static int client_begin_guest(Client *c) {
    c->state = CLIENT_CONNECTING;
    int r = handoff_start(c->agent, c->want_handoff, c->vm_wait_start, c->pid, on_handoff_done, c,
                          &c->handoff);
    if (r <= 0) {
        return r;
    }
    return client_handoff_over(c);
}

/* ---- replies ------------------------------------------------------------------ */

static int client_send_status(Client *c, uint32_t live_sessions) {
    Agent *a = c->agent;
    uint64_t now = now_mono();
    VmState state = lifecycle_state(a->life);

    /* HostStart is answered with HostStatus only when the VM runs. */
    if (c->request == MSG_HOST_START && !a->no_vmm && state != VM_RUNNING) {
        char msg[128];
        snprintf(msg, sizeof(msg), "VM '%s' is %s", a->vm_name, vm_state_name(state));
        return client_fail(c, state == VM_STOPPING ? WIRE_ERR_SHUTTING_DOWN : WIRE_ERR_UNAVAILABLE,
                           msg);
    }
    bool up = a->no_vmm ? a->guest_up : state == VM_RUNNING;
    uint64_t since = a->no_vmm ? a->guest_up_since : lifecycle_started_at(a->life);
    Msg m = {
        .type = MSG_HOST_STATUS,
        .host_status =
            {
                .vm = a->vm_name,
                .running = up,
                .state = a->no_vmm ? (up ? VM_RUNNING : VM_STOPPED) : state,
                .leases = idle_leases(a->idle),
                .uptime_ms = (a->no_vmm ? up : state != VM_STOPPED) ? (now - since) / 1000 : 0,
                .idle_ms = idle_usec(a->idle, now) / 1000,
                .live_sessions = live_sessions,
                .idle_timeout_s = agent_idle_timeout_s(a),
            },
    };
    return client_reply(c, &m);
}

static void on_status_done(GuestCall *call, int r, const Msg *reply, void *userdata) {
    Client *c = userdata;
    /* The guest's own claim, passed on for display and never acted on
     * (the idle backstop counts leases instead): any number will do. */
    uint32_t untrusted_live = r == 0 ? reply->status.live_sessions : 0;

    if (r < 0) {
        log_debug("VM '%s': no Status from the guest agent: %s", c->agent->vm_name, strerror(-r));
    }
    guest_call_free(TAKE_PTR(c->status_call));
    client_kick(c, client_send_status(c, untrusted_live));
}

/* HostStatus, with the guest agent's live sessions when it runs (asked
 * with a short timeout; 0 when it does not answer). */
static int client_request_status(Client *c) {
    Agent *a = c->agent;
    bool ask = a->no_vmm ? a->guest_up : lifecycle_state(a->life) == VM_RUNNING;

    sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
    if (!ask) {
        return client_send_status(c, 0);
    }
    c->state = CLIENT_STATUS;
    int r = guest_call_start(a->event, &a->guest, MSG_STATUS_REQUEST, CLIENT_STATUS_TIMEOUT_USEC,
                             on_status_done, c, &c->status_call);
    if (r < 0) {
        return client_send_status(c, 0);
    }
    return 0;
}

/* ---- requests ----------------------------------------------------------------- */

static int client_vm_wait_timeout(Client *c) {
    Agent *a = c->agent;
    char msg[256];

    log_warning("VM '%s': the guest agent did not answer within %" PRIu64 " s, giving up for "
                "pid %d",
                a->vm_name, a->guest_timeout / USEC_PER_SEC, (int)c->pid);
    snprintf(msg, sizeof(msg),
             "the guest agent of VM '%s' did not answer within %" PRIu64 " s of its start (%s)",
             a->vm_name, a->guest_timeout / USEC_PER_SEC, a->guest_str);
    return client_fail(c, WIRE_ERR_UNAVAILABLE, msg);
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata) {
    Client *c = userdata;
    int r;

    switch (c->state) {
    case CLIENT_WAIT_VM:
        r = client_vm_wait_timeout(c);
        break;
    case CLIENT_HELLO:
    case CLIENT_REQUEST:
        log_info("Client pid %d sent no request in time, dropping it", (int)c->pid);
        r = -ETIMEDOUT;
        break;
    default:
        r = -ETIMEDOUT; /* a closing client that does not read */
        break;
    }
    if (r < 0 || client_update_events(c) < 0) {
        client_free(c);
    }
    return 0;
}

static int handle_hello(Client *c, const Msg *m) {
    char buf[128];

    if (wire_check_hello(m) < 0) {
        snprintf(buf, sizeof(buf), "protocol version %u is not supported (this is %u)",
                 m->hello.major, WIRE_VERSION_MAJOR);
        return client_fail(c, WIRE_ERR_VERSION, buf);
    }
    c->state = CLIENT_REQUEST;
    return 0;
}

static int client_wait_vm_stopping(Client *c, bool no_start) {
    Agent *a = c->agent;
    char msg[128];

    if (a->terminating || a->foreground) {
        snprintf(msg, sizeof(msg), "VM '%s' is stopping and its host agent exits", a->vm_name);
        return client_fail(c, WIRE_ERR_SHUTTING_DOWN, msg);
    }
    if (no_start) {
        snprintf(msg, sizeof(msg), "VM '%s' is stopping", a->vm_name);
        return client_fail(c, WIRE_ERR_UNAVAILABLE, msg);
    }
    /* Wait for it to stop, then start it again (clients_vm_exited): a
     * command that races a poweroff still runs. Bounded by the rest of
     * the stop sequence plus a start. */
    c->state = CLIENT_WAIT_VM;
    c->vm_wait_start = now_mono();
    return client_arm_timer(c, c->vm_wait_start + a->shutdown_timeout + a->vmm_stop_timeout +
                                   a->kill_timeout + a->guest_timeout + USEC_PER_SEC);
}

/* Connect or HostStart while the VM is not running: start it unless
 * no_start, then wait for its guest agent. */
static int client_wait_vm(Client *c, bool no_start) {
    Agent *a = c->agent;

    switch (lifecycle_state(a->life)) {
    case VM_STOPPING:
        return client_wait_vm_stopping(c, no_start);
    case VM_STOPPED:
        if (no_start) {
            char msg[128];
            snprintf(msg, sizeof(msg), "VM '%s' is not running", a->vm_name);
            return client_fail(c, WIRE_ERR_UNAVAILABLE, msg);
        }
        ErrorText err;
        if (lifecycle_start(a->life, &err) < 0) {
            return client_fail(c, WIRE_ERR_UNAVAILABLE, err.message);
        }
        break;
    default:
        break;
    }
    c->state = CLIENT_WAIT_VM;
    c->vm_wait_start = now_mono();
    /* The VM's own start bound (lifecycle.c) ends the wait first, with the
     * reason; this one is only a backstop. */
    return client_arm_timer(c, c->vm_wait_start + a->guest_timeout + USEC_PER_SEC);
}

static int handle_connect(Client *c, const Msg *m) {
    Agent *a = c->agent;

    c->want_handoff = 1 + m->connect.streams;
    c->leased = true;
    idle_lease_begin(a->idle);
    idle_update(a->idle);
    log_debug("Connect from pid %d (uid %u), %u lease(s)", (int)c->pid, (unsigned)c->uid,
              idle_leases(a->idle));
    if (a->no_vmm || lifecycle_state(a->life) == VM_RUNNING) {
        return client_begin_guest(c);
    }
    return client_wait_vm(c, m->connect.no_start);
}

static int handle_host_start(Client *c, const Msg *m) {
    if (lifecycle_state(c->agent->life) == VM_RUNNING) {
        return client_request_status(c);
    }
    return client_wait_vm(c, false);
}

static int handle_host_stop(Client *c, const Msg *m) {
    Agent *a = c->agent;

    if (lifecycle_state(a->life) == VM_STOPPED) {
        return client_send_stopped(c, STOP_NOT_RUNNING, 0);
    }
    c->state = CLIENT_STOP_WAIT;
    lifecycle_stop(a->life, "asked to");
    return 0;
}

static int handle_host_status(Client *c, const Msg *m) {
    Agent *a = c->agent;

    log_debug("Status asked by pid %d: VM '%s' %s, %u lease(s)", (int)c->pid, a->vm_name,
              vm_state_name(lifecycle_state(a->life)), idle_leases(a->idle));
    return client_request_status(c);
}

/* What a client may send, and when. Anything else ends the connection
 * with Error(PROTOCOL). */
static const struct {
    MsgType type;
    ClientState state;
    bool vmm_only; /* refused with --no-vmm */
    int (*handler)(Client *c, const Msg *m);
} client_dispatch[] = {
    {MSG_HELLO, CLIENT_HELLO, false, handle_hello},
    {MSG_CONNECT, CLIENT_REQUEST, false, handle_connect},
    {MSG_HOST_STATUS_REQUEST, CLIENT_REQUEST, false, handle_host_status},
    {MSG_HOST_START, CLIENT_REQUEST, true, handle_host_start},
    {MSG_HOST_STOP, CLIENT_REQUEST, true, handle_host_stop},
};

static int client_no_vmm(Client *c) {
    char msg[160];
    snprintf(msg, sizeof(msg), "the host agent of VM '%s' does not manage its VMM (--no-vmm)",
             c->agent->vm_name);
    return client_fail(c, WIRE_ERR_UNAVAILABLE, msg);
}

static int client_handle(Client *c, const Msg *m) {
    char buf[128];

    for (size_t i = 0; i < ELEMENTSOF(client_dispatch); i++) {
        if (client_dispatch[i].type != m->type || client_dispatch[i].state != c->state) {
            continue;
        }
        if (c->state == CLIENT_REQUEST) {
            /* The request came: no handshake timeout any more. */
            sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
            c->request = m->type;
        }
        if (client_dispatch[i].vmm_only && c->agent->no_vmm) {
            return client_no_vmm(c);
        }
        return client_dispatch[i].handler(c, m);
    }
    snprintf(buf, sizeof(buf), "unexpected %s", msg_type_name(m->type));
    log_info("Client pid %d sent %s out of order, dropping it", (int)c->pid,
             msg_type_name(m->type));
    return client_fail(c, WIRE_ERR_PROTOCOL, buf);
}

static int client_read(Client *c) {
    while (c->state != CLIENT_CLOSING) {
        Msg m;
        int r = wire_reader_read(&c->reader, c->fd, &m);
        if (r == 0) {
            return 0;
        }
        if (r == -ECONNRESET || r == -EPIPE) {
            return r; /* gone; a lease ends here */
        }
        if (r == -E2BIG) {
            return client_fail(c, WIRE_ERR_TOO_LARGE, "frame too large");
        }
        if (r == -EINVAL) {
            return client_fail(c, WIRE_ERR_INVALID, "invalid message");
        }
        if (r == -EBADMSG || r == -ENOMEM) {
            return client_fail(c, WIRE_ERR_PROTOCOL, "undecodable frame");
        }
        if (r < 0) {
            return r;
        }
        r = client_handle(c, &m);
        msg_done(&m);
        if (r < 0) {
            return r;
        }
    }
    return 0;
}

static int on_client_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
    Client *c = userdata;
    int r = 0;

    if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        if (c->state == CLIENT_CLOSING) {
            r = (revents & (EPOLLHUP | EPOLLERR)) ? -ECONNRESET : 0;
        } else {
            r = client_read(c);
        }
    }
    client_kick(c, r);
    return 0;
}

/* ---- accepting ---------------------------------------------------------------- */

/* Root and the configured user; also our own uid, which is root in
 * production and lets the whole stack run unprivileged in tests. */
static bool peer_allowed(const Agent *a, uid_t uid) {
    return uid == 0 || uid == geteuid() || (a->host && a->host->user && uid == a->host->user_uid);
}

static void peer_refuse(const Agent *a, int fd, uid_t uid, pid_t pid) {
    char msg[160];
    snprintf(msg, sizeof(msg), "uid %u may not use VM '%s'", (unsigned)uid, a->vm_name);
    log_warning("Refusing pid %d (uid %u): not root nor the configured user", (int)pid,
                (unsigned)uid);
    Msg m = msg_error(WIRE_ERR_DENIED, msg);
    /* A fresh socket's buffer takes this small frame whole; best effort. */
    (void)wire_send(fd, &m);
}

/* A new connection, in this order: the peer's credentials (SO_PEERCRED)
 * and the check of its uid, the client with our Hello queued, its I/O and
 * handshake timer, then what it sent right away served at once. 1 when fd
 * became a client, 0 or a negative errno when the caller closes it. */
static int clients_accept_one(Clients *cs, int fd) {
    Agent *a = cs->agent;
    uid_t uid;
    pid_t pid = 0;
    int r;

    r = peer_ucred(fd, &uid, NULL, &pid);
    if (r < 0) {
        return log_warning_errno(r, "Cannot identify a new client, closing it: %m");
    }
    if (!peer_allowed(a, uid)) {
        peer_refuse(a, fd, uid, pid);
        return 0;
    }
    Client *c = calloc(1, sizeof(*c));
    if (!c) {
        return log_error_errno(-ENOMEM, "Cannot accept a client: %m");
    }
    *c = (Client){
        .clients = cs, .agent = a, .fd = fd, .uid = uid, .pid = pid, .state = CLIENT_HELLO};
    c->next = cs->list;
    if (cs->list) {
        cs->list->prev = c;
    }
    cs->list = c;

    Msg hello = msg_hello(SOFTWARE);
    r = client_queue(c, &hello);
    if (r >= 0) {
        r = sd_event_add_io(a->event, &c->io, fd, EPOLLIN | EPOLLOUT, on_client_io, c);
    }
    if (r >= 0) {
        r = sd_event_add_time_relative(a->event, &c->timer, CLOCK_MONOTONIC,
                                       CLIENT_HANDSHAKE_TIMEOUT_USEC, 0, on_timer, c);
    }
    if (r < 0) {
        c->fd = -EBADF; /* the caller closes it */
        client_free(c);
        return log_error_errno(r, "Cannot set up a client: %m");
    }
    log_debug("Client pid %d (uid %u) connected", (int)pid, (unsigned)uid);
    /* Clients send their request right after connecting: serve it (and
     * send our Hello) now rather than one loop iteration later. */
    on_client_io(c->io, fd, EPOLLIN | EPOLLOUT, c);
    return 1;
}

static void on_accept(void *userdata, int fd) {
    Clients *cs = userdata;

    if (fd < 0) {
        if (acceptor_paused(cs->acceptor)) {
            log_warning_errno(fd, "Cannot accept a client, pausing: %m");
        } else if (fd != -ECONNABORTED) {
            log_warning_errno(fd, "accept() failed: %m");
        }
        return;
    }
    if (clients_accept_one(cs, fd) <= 0) {
        safe_close(fd);
    }
}

int clients_new(Agent *a, int listen_fd, Clients **ret) {
    Clients *cs = calloc(1, sizeof(*cs));
    if (!cs) {
        return -ENOMEM;
    }
    cs->agent = a;
    int r = acceptor_new(a->event, listen_fd, on_accept, cs, &cs->acceptor);
    if (r < 0) {
        free(cs);
        return r;
    }
    *ret = cs;
    return 0;
}

void clients_free(Clients *cs) {
    if (!cs) {
        return;
    }
    while (cs->list) {
        client_free(cs->list);
    }
    acceptor_free(cs->acceptor);
    free(cs);
}

bool clients_none(const Clients *cs) {
    return !cs || !cs->list;
}

/* ---- what the lifecycle tells ------------------------------------------------- */

void clients_vm_running(Clients *cs) {
    for (Client *c = cs->list, *next; c; c = next) {
        next = c->next;
        if (c->state != CLIENT_WAIT_VM) {
            continue;
        }
        sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
        if (c->request == MSG_CONNECT) {
            client_kick(c, client_begin_guest(c));
        } else {
            client_kick(c, client_request_status(c));
        }
    }
}

void clients_refuse_waiting(Clients *cs, WireError code, const char *message) {
    for (Client *c = cs->list, *next; c; c = next) {
        next = c->next;
        if (c->state == CLIENT_WAIT_VM) {
            client_kick(c, client_fail(c, code, message));
        }
    }
}

void clients_vm_gave_up(Clients *cs, const char *message) {
    for (Client *c = cs->list, *next; c; c = next) {
        next = c->next;
        switch (c->state) {
        case CLIENT_STOP_WAIT:
        case CLIENT_WAIT_VM:
        case CLIENT_CONNECTING:
            client_kick(c, client_fail(c, WIRE_ERR_UNAVAILABLE, message));
            break;
        default:
            break;
        }
    }
}

/* A client waiting for the VM, or connecting to the guest that went,
 * waits for the fresh start: what it connected goes. */
static void client_wait_restart(Client *c, uint64_t now) {
    c->handoff = handoff_free(c->handoff);
    c->restarted = true;
    if (c->state == CLIENT_CONNECTING) {
        c->state = CLIENT_WAIT_VM;
        c->vm_wait_start = now;
        client_kick(c, client_arm_timer(c, now + c->agent->guest_timeout + USEC_PER_SEC));
    }
}

/* One client's share of the VMM's exit; true when it waits for the VM to
 * be started again. */
static bool client_vm_exited(Client *c, const LifecycleExit *e) {
    switch (c->state) {
    case CLIENT_WAIT_VM:
    case CLIENT_CONNECTING:
        if (e->restart_ok && !c->restarted &&
            (c->request == MSG_CONNECT || c->request == MSG_HOST_START)) {
            client_wait_restart(c, e->now);
            return true;
        }
        client_kick(c, client_fail(c, WIRE_ERR_UNAVAILABLE, e->message));
        return false;
    case CLIENT_STOP_WAIT:
        client_kick(c, client_send_stopped(c, e->method, e->stop_ms));
        return false;
    case CLIENT_STATUS:
        guest_call_free(TAKE_PTR(c->status_call));
        /* A HostStart that was being answered: the VM did not stay up. */
        client_kick(c, c->request == MSG_HOST_START
                           ? client_fail(c, WIRE_ERR_UNAVAILABLE, e->message)
                           : client_send_status(c, 0));
        return false;
    default:
        return false;
    }
}

unsigned clients_vm_exited(Clients *cs, const LifecycleExit *e) {
    unsigned restart = 0;

    for (Client *c = cs->list, *next; c; c = next) {
        next = c->next;
        restart += client_vm_exited(c, e);
    }
    return restart;
}
