/* The clients of the VM's command socket (clients.h), each a connection
 * on the engine (proto/conn.h): Hello, the table below, the bounded
 * writer, closing after the last reply and the one timer are its.
 *
 * A client's states (bits of the connection's state), and what moves it
 * on:
 *   hello → request                            its Hello (checked by the engine)
 *   request → wait VM → connecting → lease     Connect (VM not running)
 *   request → connecting → lease               Connect (VM running)
 *   request → wait VM → status                 HostStart
 *   request → status                           HostStatusRequest
 *   request → stop wait                        HostStop
 *   any → closing (state 0)                    its last reply or an Error queued
 * client_handlers[] says which message each state takes; anything else,
 * during a lease too, gets Error(PROTOCOL) and closes the connection.
 *
 * The connection's timer is the handshake's (CLIENT_HANDSHAKE_TIMEOUT_USEC
 * for Hello and the request), then the wait for the VM's start; the
 * engine lingers as long for an unread last reply. The hand-off's backoff
 * and deadline are its own (handoff.c).
 *
 * The replies end the connection (client_reply(), client_fail()). Called
 * from outside the engine's callbacks (the lifecycle's events, the
 * hand-off, the guest call), they may close it and free the client before
 * they return: they return CLIENT_DONE, and client_settle() then leaves
 * the client alone. */
#include "clients.h"

#include <errno.h>
#include <malloc.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "acceptor.h"
#include "conn.h"
#include "guestcall.h"
#include "handoff.h"
#include "idle.h"
#include "log.h"

#define SOFTWARE "qubes-lite-host-agent 0.1"

typedef struct Client Client;

/* A client's states on its connection (conn.h). */
enum {
    CLIENT_HELLO = CONN_STATE_HELLO, /* waiting for the client's Hello */
    CLIENT_REQUEST = 1u << 1,        /* waiting for its request */
    CLIENT_WAIT_VM = 1u << 2,        /* Connect or HostStart: the VM is starting */
    CLIENT_CONNECTING = 1u << 3,     /* Connect: reaching the guest agent */
    CLIENT_LEASE = 1u << 4,          /* Connected queued; the connection is a lease */
    CLIENT_STATUS = 1u << 5,         /* HostStatus: asking the guest agent */
    CLIENT_STOP_WAIT = 1u << 6,      /* HostStop: the VM is stopping */
};

/* What the replies return: the last word is queued and the connection
 * ends; from outside the engine's callbacks the client may be gone. A
 * handler may return it too (the engine only looks for errors). */
#define CLIENT_DONE 1

struct Client {
    Clients *clients;
    Agent *agent;
    Client *prev, *next;
    Conn *conn;
    uid_t uid;
    pid_t pid;
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
    Clients *cl = c->clients;
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
    conn_free(c->conn);
    handoff_free(c->handoff);
    guest_call_free(c->status_call);
    free(c);
    /* The last client gone: what a crowd of them took goes back to the
     * system (glibc keeps freed heap pages for itself otherwise). */
    if (!cl->list) {
        (void)malloc_trim(0);
    }
    if (leased) {
        idle_update(a->idle);
    }
    idle_linger_update(a->idle);
}

/* The connection's state; 0 once it is closing. */
static unsigned client_state(const Client *c) {
    return conn_state(c->conn);
}

/* The end of a change made outside the engine's callbacks, r its result:
 * r < 0 drops the client, CLIENT_DONE leaves it alone (it may be gone),
 * else what is queued is sent. */
static void client_settle(Client *c, int r) {
    if (r != CLIENT_DONE) {
        conn_settle(c->conn, r);
    }
}

/* Queues a last reply; the connection closes once it is written. */
static int client_reply(Client *c, const Msg *m) {
    int r = conn_queue(c->conn, m);
    if (r < 0) {
        return r;
    }
    conn_finish(c->conn);
    return CLIENT_DONE;
}

/* Error(code, message) as the last reply; the failing hook drops what the
 * client waited for. */
static int client_fail(Client *c, WireError code, const char *message) {
    (void)conn_fail(c->conn, code, message);
    return CLIENT_DONE;
}

static int client_send_stopped(Client *c, StopMethod method, uint64_t stop_ms) {
    Msg m = {.type = MSG_HOST_STOPPED, .host_stopped = {.method = method, .stop_ms = stop_ms}};
    return client_reply(c, &m);
}

static int on_client_timer(void *userdata);

/* Waits for the VM's start until `deadline` (CLOCK_MONOTONIC). */
static int client_wait_until(Client *c, uint64_t deadline) {
    conn_set_state(c->conn, CLIENT_WAIT_VM);
    return conn_timer_arm_at(c->conn, deadline, on_client_timer);
}

/* ---- Connect: the guest connections ----------------------------------------- */

/* The hand-off is over: Connected with the guest connections is queued
 * (the connection takes them over) and the lease begins, or the guest
 * agent did not answer in time. */
static int client_handoff_over(Client *c) {
    ErrorText err;
    int r = handoff_result(c->handoff, &err);
    if (r < 0) {
        return client_fail(c, WIRE_ERR_UNAVAILABLE, err.message);
    }
    log_debug("Handing %u guest connection(s) to pid %d (uid %u) after %u attempt(s)",
              handoff_sockets(c->handoff), (int)c->pid, (unsigned)c->uid,
              handoff_attempts(c->handoff));
    r = handoff_queue(c->handoff, c->conn);
    if (r < 0) {
        return r;
    }
    c->handoff = handoff_free(c->handoff);
    conn_set_state(c->conn, CLIENT_LEASE);
    conn_timer_disarm(c->conn);
    return 0;
}

static void on_handoff_done(void *userdata, int r) {
    Client *c = userdata;
    client_settle(c, r < 0 ? r : client_handoff_over(c));
}

/* Connect, once the guest agent may answer. */
static int client_begin_guest(Client *c) {
    conn_set_state(c->conn, CLIENT_CONNECTING);
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
    client_settle(c, client_send_status(c, untrusted_live));
}

/* HostStatus, with the guest agent's live sessions when it runs (asked
 * with a short timeout; 0 when it does not answer). */
static int client_request_status(Client *c) {
    Agent *a = c->agent;
    bool ask = a->no_vmm ? a->guest_up : lifecycle_state(a->life) == VM_RUNNING;

    conn_timer_disarm(c->conn);
    if (!ask) {
        return client_send_status(c, 0);
    }
    conn_set_state(c->conn, CLIENT_STATUS);
    int r = guest_call_start(a->event, &a->guest, agent_secret(a), MSG_STATUS_REQUEST,
                             CLIENT_STATUS_TIMEOUT_USEC, on_status_done, c, &c->status_call);
    if (r < 0) {
        return client_send_status(c, 0);
    }
    return 0;
}

/* ---- the connection's hooks and timer ------------------------------------------ */

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

/* The handshake's timeout, or the backstop of a wait for the VM. */
static int on_client_timer(void *userdata) {
    Client *c = userdata;

    if (client_state(c) == CLIENT_WAIT_VM) {
        return client_vm_wait_timeout(c);
    }
    log_info("Client pid %d sent no request in time, dropping it", (int)c->pid);
    return -ETIMEDOUT;
}

/* An Error is about to end the connection: it is the answer, so nothing
 * the client waited for may follow it (no Connected, no HostStatus). */
static void on_client_failing(void *userdata, const ConnFailure *f) {
    Client *c = userdata;

    c->handoff = handoff_free(c->handoff);
    guest_call_free(TAKE_PTR(c->status_call));
    if (f->refused) {
        log_info("Client pid %d sent %s out of order, dropping it", (int)c->pid,
                 msg_type_name(f->refused->type));
    } else if (f->error < 0) {
        log_info_errno(f->error, "Client pid %d: %s, dropping it", (int)c->pid, f->message);
    }
}

static void on_client_closed(void *userdata, int error) {
    client_free(userdata); /* a lease ends here */
}

/* ---- requests ----------------------------------------------------------------- */

static int client_no_vmm(Client *c) {
    char msg[160];
    snprintf(msg, sizeof(msg), "the host agent of VM '%s' does not manage its VMM (--no-vmm)",
             c->agent->vm_name);
    return client_fail(c, WIRE_ERR_UNAVAILABLE, msg);
}

/* Every request first: no handshake timeout any more, and which request
 * it is. A request that needs the VMM (vmm_only) is refused with
 * --no-vmm: false then, its Error queued. */
static bool client_request_begins(Client *c, const Msg *m, bool vmm_only) {
    conn_timer_disarm(c->conn);
    c->request = m->type;
    if (vmm_only && c->agent->no_vmm) {
        (void)client_no_vmm(c);
        return false;
    }
    return true;
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
    c->vm_wait_start = now_mono();
    return client_wait_until(c, c->vm_wait_start + a->shutdown_timeout + a->vmm_stop_timeout +
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
    c->vm_wait_start = now_mono();
    /* The VM's own start bound (lifecycle.c) ends the wait first, with the
     * reason; this one is only a backstop. */
    return client_wait_until(c, c->vm_wait_start + a->guest_timeout + USEC_PER_SEC);
}

static int handle_connect(void *userdata, Msg *m) {
    Client *c = userdata;
    Agent *a = c->agent;

    (void)client_request_begins(c, m, false);
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

static int handle_host_start(void *userdata, Msg *m) {
    Client *c = userdata;

    if (!client_request_begins(c, m, true)) {
        return CLIENT_DONE;
    }
    if (lifecycle_state(c->agent->life) == VM_RUNNING) {
        return client_request_status(c);
    }
    return client_wait_vm(c, false);
}

static int handle_host_stop(void *userdata, Msg *m) {
    Client *c = userdata;
    Agent *a = c->agent;

    if (!client_request_begins(c, m, true)) {
        return CLIENT_DONE;
    }
    if (lifecycle_state(a->life) == VM_STOPPED) {
        return client_send_stopped(c, STOP_NOT_RUNNING, 0);
    }
    conn_set_state(c->conn, CLIENT_STOP_WAIT);
    lifecycle_stop(a->life, "asked to");
    return 0;
}

static int handle_host_status(void *userdata, Msg *m) {
    Client *c = userdata;
    Agent *a = c->agent;

    (void)client_request_begins(c, m, false);
    log_debug("Status asked by pid %d: VM '%s' %s, %u lease(s)", (int)c->pid, a->vm_name,
              vm_state_name(lifecycle_state(a->life)), idle_leases(a->idle));
    return client_request_status(c);
}

/* What a client may send, and when (its Hello is the engine's); anything
 * else ends the connection with Error(PROTOCOL). HostStart and HostStop
 * need the VMM: refused with --no-vmm (client_request_begins()). */
static const ConnHandler client_handlers[] = {
    {MSG_CONNECT, CLIENT_REQUEST, handle_connect},
    {MSG_HOST_STATUS_REQUEST, CLIENT_REQUEST, handle_host_status},
    {MSG_HOST_START, CLIENT_REQUEST, handle_host_start},
    {MSG_HOST_STOP, CLIENT_REQUEST, handle_host_stop},
};

static const ConnOps client_ops = {
    .handlers = client_handlers,
    .n_handlers = ELEMENTSOF(client_handlers),
    .closed = on_client_closed,
    .failing = on_client_failing,
};

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
    conn_refuse_fd(fd, WIRE_ERR_DENIED, msg);
}

/* A new connection (fd is taken), in this order: the peer's credentials
 * (SO_PEERCRED) and the check of its uid, the client on the engine with
 * our Hello queued and its handshake timer, then what it sent right away
 * served at once. */
static void clients_accept_one(Clients *cs, int fd) {
    Agent *a = cs->agent;
    uid_t uid;
    pid_t pid = 0;
    int r;

    r = peer_ucred(fd, &uid, NULL, &pid);
    if (r < 0) {
        log_warning_errno(r, "Cannot identify a new client, closing it: %m");
        safe_close(fd);
        return;
    }
    if (!peer_allowed(a, uid)) {
        peer_refuse(a, fd, uid, pid);
        return;
    }
    Client *c = calloc(1, sizeof(*c));
    if (!c) {
        log_error_errno(-ENOMEM, "Cannot accept a client: %m");
        safe_close(fd);
        return;
    }
    *c = (Client){.clients = cs, .agent = a, .uid = uid, .pid = pid};
    ConnOptions o = {
        .role = CONN_SERVER,
        .software = SOFTWARE,
        .after_hello = CLIENT_REQUEST,
        .out_max = CLIENT_OUT_MAX,
        .close_mode = CONN_CLOSE_FLUSHED,
        .linger_usec = CLIENT_HANDSHAKE_TIMEOUT_USEC,
    };
    r = conn_new(a->event, fd, &o, &client_ops, c, &c->conn);
    if (r < 0) {
        free(c);
        log_error_errno(r, "Cannot set up a client: %m");
        return;
    }
    c->next = cs->list;
    if (cs->list) {
        cs->list->prev = c;
    }
    cs->list = c;
    r = conn_timer_arm(c->conn, CLIENT_HANDSHAKE_TIMEOUT_USEC, on_client_timer);
    if (r < 0) {
        log_error_errno(r, "Cannot set up a client: %m");
        client_free(c);
        return;
    }
    log_debug("Client pid %d (uid %u) connected", (int)pid, (unsigned)uid);
    /* Clients send their request right after connecting: serve it (and
     * send our Hello) now rather than one loop iteration later. */
    conn_kick(c->conn); /* may free c */
}

static void on_accept(void *userdata, int fd) {
    Clients *cs = userdata;

    if (fd >= 0) {
        clients_accept_one(cs, fd);
    } else if (acceptor_paused(cs->acceptor)) {
        log_warning_errno(fd, "Cannot accept a client, pausing: %m");
    } else if (fd != -ECONNABORTED) {
        log_warning_errno(fd, "accept() failed: %m");
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

/* Each walk below keeps the next client before it handles one: handling a
 * client may free it (client_settle()), never another. */

void clients_vm_running(Clients *cs) {
    for (Client *c = cs->list, *next; c; c = next) {
        next = c->next;
        if (client_state(c) != CLIENT_WAIT_VM) {
            continue;
        }
        conn_timer_disarm(c->conn);
        client_settle(c,
                      c->request == MSG_CONNECT ? client_begin_guest(c) : client_request_status(c));
    }
}

void clients_refuse_waiting(Clients *cs, WireError code, const char *message) {
    for (Client *c = cs->list, *next; c; c = next) {
        next = c->next;
        if (client_state(c) == CLIENT_WAIT_VM) {
            (void)client_fail(c, code, message);
        }
    }
}

void clients_vm_gave_up(Clients *cs, const char *message) {
    for (Client *c = cs->list, *next; c; c = next) {
        next = c->next;
        switch (client_state(c)) {
        case CLIENT_STOP_WAIT:
        case CLIENT_WAIT_VM:
        case CLIENT_CONNECTING:
            (void)client_fail(c, WIRE_ERR_UNAVAILABLE, message);
            break;
        default:
            break;
        }
    }
}

/* A client waiting for the VM, or connecting to the guest that went,
 * waits for the fresh start: what it connected goes. */
static int client_wait_restart(Client *c, uint64_t now) {
    c->handoff = handoff_free(c->handoff);
    c->restarted = true;
    if (client_state(c) != CLIENT_CONNECTING) {
        return 0; /* waiting already, with its deadline */
    }
    c->vm_wait_start = now;
    return client_wait_until(c, now + c->agent->guest_timeout + USEC_PER_SEC);
}

/* One client's share of the VMM's exit; true when it waits for the VM to
 * be started again. */
static bool client_vm_exited(Client *c, const LifecycleExit *e) {
    switch (client_state(c)) {
    case CLIENT_WAIT_VM:
    case CLIENT_CONNECTING:
        if (e->restart_ok && !c->restarted &&
            (c->request == MSG_CONNECT || c->request == MSG_HOST_START)) {
            client_settle(c, client_wait_restart(c, e->now));
            return true;
        }
        (void)client_fail(c, WIRE_ERR_UNAVAILABLE, e->message);
        return false;
    case CLIENT_STOP_WAIT:
        client_settle(c, client_send_stopped(c, e->method, e->stop_ms));
        return false;
    case CLIENT_STATUS:
        guest_call_free(TAKE_PTR(c->status_call));
        /* A HostStart that was being answered: the VM did not stay up. */
        client_settle(c, c->request == MSG_HOST_START
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
