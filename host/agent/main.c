/* qubes-lite-host-agent: one per VM. Accepts vm-run and friends on the
 * VM's command socket; starts the VMM (crosvm) on the first Connect or on
 * HostStart, supervises it and stops it (HostStop, the idle backstop of
 * disposable VMs, SIGTERM); connects clients to the guest agent and hands
 * them the connected socket (SCM_RIGHTS), then holds their connection as a
 * lease; relays the serial console (console.c).
 *
 * With --no-vmm it only attaches to a guest agent that is already
 * running. With --foreground the VMM runs at once on our stdio (no console
 * relay) and we exit with its status. Otherwise we exit 0 once the VMM
 * has exited, so that a systemd socket re-arms. */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

#include "addr.h"
#include "host/common/config.h"
#include "console.h"
#include "crosvm.h"
#include "guestcall.h"
#include "log.h"
#include "switchconf.h"
#include "util.h"
#include "vfio.h"
#include "wire.h"

#define SOFTWARE "qubes-lite-host-agent 0.1"
#define BACKOFF_MIN_USEC (20 * 1000ULL)
#define BACKOFF_MAX_USEC (500 * 1000ULL)
#define USEC_PER_SEC UINT64_C(1000000)
#define GUEST_TIMEOUT_DEFAULT_S 60u
#define SHUTDOWN_TIMEOUT_DEFAULT_S 30u
#define VMM_STOP_TIMEOUT_DEFAULT_S 10u
#define KILL_TIMEOUT_DEFAULT_S 5u
#define IDLE_GRACE_DEFAULT_S 30u
/* Socket-activated with the VM stopped and nobody connected: exit after
 * this long, the socket re-arms. */
#define LINGER_USEC (10 * USEC_PER_SEC)
/* One probe of the guest agent, a Status asked for HostStatus, and the
 * Shutdown request are each bounded by these. */
#define PROBE_TIMEOUT_USEC (2 * USEC_PER_SEC)
#define STATUS_TIMEOUT_USEC (500 * 1000ULL)
#define SHUTDOWN_CALL_TIMEOUT_USEC (5 * USEC_PER_SEC)
/* A client that says nothing useful for this long is dropped. */
#define HANDSHAKE_TIMEOUT_USEC (30 * USEC_PER_SEC)
/* Replies are a few dozen bytes; anything beyond this means the client
 * does not read. */
#define CLIENT_OUT_MAX (64u * 1024u)
#define ACCEPT_PAUSE_USEC (200 * 1000ULL)
/* A line of the VMM's stderr longer than this is passed on in pieces. */
#define VMM_LINE_MAX 1024u

typedef struct Agent Agent;
typedef struct Client Client;

typedef enum ClientState {
    CLIENT_HELLO,      /* waiting for the client's Hello */
    CLIENT_REQUEST,    /* waiting for its request */
    CLIENT_WAIT_VM,    /* Connect or HostStart: the VM is starting */
    CLIENT_CONNECTING, /* trying the guest agent */
    CLIENT_LEASE,      /* Connected sent; the connection is a lease */
    CLIENT_STATUS,     /* HostStatusRequest: asking the guest agent */
    CLIENT_STOP_WAIT,  /* HostStop: the VM is stopping */
    CLIENT_CLOSING,    /* last reply queued, then close */
} ClientState;

typedef enum StopPhase {
    STOP_PHASE_NONE,
    STOP_PHASE_SHUTDOWN, /* the guest agent was asked to power off */
    STOP_PHASE_VMM_STOP, /* the VMM's stop command */
    STOP_PHASE_KILL,     /* SIGKILL */
} StopPhase;

struct Client {
    Agent *agent;
    Client *prev, *next;
    int fd;
    uid_t uid;
    pid_t pid;
    sd_event_source *io;
    sd_event_source *timer; /* handshake timeout, VM start deadline, connect backoff */
    WireReader reader;
    WireWriter writer;
    ClientState state;
    MsgType request;
    bool leased;
    bool restarted; /* its wait already outlived one run of the VM */
    /* Guest connection attempt. */
    int guest_fd;
    sd_event_source *guest_io;
    uint64_t connect_start, deadline, backoff;
    uint64_t vm_wait_start; /* waited for the VM to start since; 0: it ran */
    int last_error;
    unsigned attempts;
    /* Connected guest sockets not sent yet: the Connect's one, then the
     * stream connections it asked for; sent together once all are here. */
    int handoff_fd[1 + WIRE_CONNECT_STREAMS_MAX];
    unsigned n_handoff, want_handoff;
    MsgConnected connected;
    GuestCall *status_call;
};

struct Agent {
    sd_event *event;
    const char *vm_name;
    HostConfig *host;
    VmConfig *vm;
    const VmmOps *vmm;
    Addr guest;
    char guest_str[ADDR_STR_MAX];
    uint64_t guest_timeout;
    bool no_vmm, foreground, activated;
    bool terminating; /* SIGTERM/SIGINT: stop the VM and exit, start nothing */
    int listen_fd;
    sd_event_source *listen_src;
    sd_event_source *accept_pause; /* re-enables accepting after EMFILE */
    char *socket_path;             /* a unix socket we created, unlinked at exit */
    struct stat socket_st;         /* ... while it is still the one we bound */
    Client *clients;
    unsigned leases;
    uint64_t start, last_lease_end;
    bool guest_up;
    uint64_t guest_up_since;
    /* The VM. */
    VmState state;
    pid_t vmm_pid;
    bool vmm_group; /* it leads its own process group (not --foreground) */
    sd_event_source *vmm_child;
    uint64_t vmm_start;
    Console *console;
    char *control_path;
    int vmm_stderr;
    sd_event_source *vmm_stderr_src;
    char line[VMM_LINE_MAX];
    size_t line_len;
    GuestCall *probe;
    sd_event_source *probe_timer;
    sd_event_source *start_timer; /* --guest-timeout from the VMM's start */
    uint64_t probe_backoff;
    bool ready_sent;
    /* Stopping it. */
    StopPhase stop_phase;
    uint64_t stop_start;
    sd_event_source *stop_timer;
    pid_t stop_cmd_pid; /* the VMM's stop command while it runs */
    sd_event_source *stop_cmd_child;
    bool vmm_unkillable; /* still there after SIGKILL and --kill-timeout */
    GuestCall *shutdown_call;
    uint64_t shutdown_timeout, vmm_stop_timeout, kill_timeout, idle_grace;
    sd_event_source *idle_timer;
    sd_event_source *linger_timer;
    int exit_code;
};

static uint64_t now_mono(void) {
    return now_usec(CLOCK_MONOTONIC);
}

static const char *vm_state_name(VmState s) {
    static const char *const names[] = {"stopped", "starting", "running", "stopping"};
    return (size_t)s < ELEMENTSOF(names) ? names[s] : "?";
}

static bool agent_vm_up(const Agent *a) {
    return a->state == VM_STARTING || a->state == VM_RUNNING;
}

static void agent_idle_update(Agent *a);
static void agent_linger_update(Agent *a);

/* Whether every connection the Connect asked for is here, to be sent. */
static bool client_handoff_ready(const Client *c) {
    return c->want_handoff > 0 && c->n_handoff == c->want_handoff;
}

/* Ends a guest connection attempt in progress, if any. */
static void client_attempt_drop(Client *c) {
    c->guest_io = sd_event_source_disable_unref(c->guest_io);
    c->guest_fd = safe_close(c->guest_fd);
}

/* Closes the guest connections not handed over (yet). */
static void client_handoff_drop(Client *c) {
    for (unsigned i = 0; i < c->n_handoff; i++) {
        c->handoff_fd[i] = safe_close(c->handoff_fd[i]);
    }
    c->n_handoff = 0;
}

static void client_free(Client *c) {
    Agent *a;

    if (!c) {
        return;
    }
    a = c->agent;
    if (c->leased) {
        a->leases--;
        if (a->leases == 0) {
            a->last_lease_end = now_mono();
        }
        log_debug("Lease of pid %d (uid %u) ended, %u left", (int)c->pid, (unsigned)c->uid,
                  a->leases);
    }
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        a->clients = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    sd_event_source_disable_unref(c->io);
    sd_event_source_disable_unref(c->timer);
    sd_event_source_disable_unref(c->guest_io);
    guest_call_free(c->status_call);
    safe_close(c->guest_fd);
    client_handoff_drop(c);
    safe_close(c->fd);
    wire_reader_done(&c->reader);
    wire_writer_done(&c->writer);
    bool leased = c->leased;
    free(c);
    if (leased) {
        agent_idle_update(a);
    }
    agent_linger_update(a);
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
    return client_arm_timer(c, now_mono() + HANDSHAKE_TIMEOUT_USEC);
}

/* Queues a last reply; the client is closed once it is written. */
static int client_fail(Client *c, WireError code, const char *message) {
    Msg m = msg_error(code, message);
    int r;

    client_attempt_drop(c);
    client_handoff_drop(c); /* the Error is the answer: no Connected after it */
    c->want_handoff = 0;
    r = client_queue(c, &m);
    if (r < 0) {
        return r;
    }
    return client_closing(c);
}

/* Sends Connected with the guest connection riding on its first byte.
 * -EAGAIN when the socket took nothing (try again later). A partial send
 * cannot be resumed by sending the frame again (the fd would go twice, the
 * bytes too) and is as unlikely as a full socket for a first short frame:
 * the client is dropped. */
static int client_send_handoff(Client *c) {
    Msg m = {.type = MSG_CONNECTED, .connected = c->connected};
    _cleanup_free_ uint8_t *buf = NULL;
    size_t n;
    int r = wire_encode(&m, &buf, &n);
    if (r < 0) {
        return r;
    }
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(c->handoff_fd))];
    } control = {0};
    struct iovec iov = {.iov_base = buf, .iov_len = n};
    size_t fds_size = c->n_handoff * sizeof(int);
    struct msghdr mh = {
        .msg_iov = &iov,
        .msg_iovlen = 1,
        .msg_control = control.buf,
        .msg_controllen = CMSG_SPACE(fds_size),
    };
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(fds_size);
    memcpy(CMSG_DATA(cm), c->handoff_fd, fds_size);
    ssize_t k;
    do {
        k = sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (k < 0 && errno == EINTR);
    if (k < 0) {
        return -errno;
    }
    if ((size_t)k < n) {
        log_warning("Client pid %d took only part of Connected, dropping it", (int)c->pid);
        return -EPROTO;
    }
    return 0;
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
        r = client_send_handoff(c);
        if (r == -EAGAIN) {
            return 0;
        }
        if (r < 0) {
            return r;
        }
        /* The client holds the guest connections now; ours go. */
        log_debug("Handed %u guest connection(s) to pid %d (uid %u) after %u attempt(s)",
                  c->n_handoff, (int)c->pid, (unsigned)c->uid, c->attempts);
        client_handoff_drop(c);
        c->state = CLIENT_LEASE;
        sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
    }
    if (c->state == CLIENT_CLOSING && wire_writer_pending(&c->writer) == 0) {
        return -ECONNRESET; /* done: close */
    }
    return 0;
}

/* After a change made outside the client's own event handler: write, and
 * drop the client when that fails. */
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

static void agent_guest_state(Agent *a, bool up) {
    if (up && !a->guest_up) {
        a->guest_up_since = now_mono();
    }
    a->guest_up = up;
}

static int client_try_guest(Client *c);

static int client_guest_connected(Client *c, int fd) {
    Agent *a = c->agent;
    uint64_t now = now_mono();

    if (a->no_vmm) {
        agent_guest_state(a, true);
    }
    assert(c->n_handoff < c->want_handoff && c->want_handoff <= ELEMENTSOF(c->handoff_fd));
    if (c->n_handoff == 0) {
        c->connected = (MsgConnected){
            .vm_start_us = c->vm_wait_start ? now - c->vm_wait_start : 0,
            .guest_wait_us = now - (c->vm_wait_start ? c->vm_wait_start : c->connect_start),
        };
    }
    c->handoff_fd[c->n_handoff++] = fd;
    if (c->n_handoff < c->want_handoff) {
        /* The stream connection(s): the guest agent answers now. */
        return client_try_guest(c);
    }
    return client_flush(c);
}

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata);

/* One attempt failed with error r: retry after a backoff, or give up at
 * the deadline. */
static int client_guest_failed(Client *c, int r) {
    Agent *a = c->agent;
    uint64_t now = now_mono();
    char msg[512];

    client_attempt_drop(c);
    if (c->n_handoff > 0) {
        /* A stream connection failed where the first one worked: hand over
         * what we have rather than keep that one waiting (the client then
         * relays all stdio on it). */
        log_info_errno(r, "Guest agent of VM '%s': no stream connection for pid %d: %m",
                       a->vm_name, (int)c->pid);
        c->want_handoff = c->n_handoff;
        return client_flush(c);
    }

    if (a->no_vmm) {
        agent_guest_state(a, false);
    }
    c->last_error = r;
    if (now >= c->deadline) {
        log_warning_errno(r,
                          "Guest agent of VM '%s' at %s did not answer within %" PRIu64
                          " s, giving up for pid %d: %m",
                          a->vm_name, a->guest_str, a->guest_timeout / USEC_PER_SEC, (int)c->pid);
        snprintf(msg, sizeof(msg),
                 "the guest agent of VM '%s' did not answer within %" PRIu64 " s (%s: %s)",
                 a->vm_name, a->guest_timeout / USEC_PER_SEC, a->guest_str, strerror(-r));
        return client_fail(c, WIRE_ERR_UNAVAILABLE, msg);
    }
    if (c->attempts == 1) {
        log_info_errno(r, "Guest agent of VM '%s' at %s not answering yet, retrying: %m",
                       a->vm_name, a->guest_str);
    }
    uint64_t wait = MIN(c->backoff, c->deadline - now);
    c->backoff = MIN(c->backoff * 2, BACKOFF_MAX_USEC);
    return client_arm_timer(c, now + wait);
}

static int on_guest_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
    Client *c = userdata;
    int err = 0;
    socklen_t len = sizeof(err);
    int r;

    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) {
        err = errno;
    }
    if (err != 0) {
        r = client_guest_failed(c, -err);
    } else {
        sd_event_source_disable_unref(c->guest_io);
        c->guest_io = NULL;
        sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
        r = client_guest_connected(c, TAKE_FD(c->guest_fd));
    }
    if (r < 0 || client_update_events(c) < 0) {
        client_free(c);
    }
    return 0;
}

static int client_try_guest(Client *c) {
    Agent *a = c->agent;
    int fd = -EBADF;
    int r;

    c->attempts++;
    r = addr_connect(&a->guest, ADDR_NONBLOCK | ADDR_RESERVED_PORT, &fd);
    if (r == 0) {
        return client_guest_connected(c, fd);
    }
    if (r == -EINPROGRESS) {
        c->guest_fd = fd;
        r = sd_event_add_io(a->event, &c->guest_io, fd, EPOLLOUT, on_guest_io, c);
        if (r < 0) {
            return r;
        }
        /* An attempt in progress is bounded by the deadline. */
        return client_arm_timer(c, c->deadline);
    }
    return client_guest_failed(c, r);
}

/* Connect once the guest agent may answer. */
static int client_begin_guest(Client *c) {
    Agent *a = c->agent;

    c->state = CLIENT_CONNECTING;
    c->connect_start = now_mono();
    c->deadline = c->connect_start + a->guest_timeout;
    c->backoff = BACKOFF_MIN_USEC;
    return client_try_guest(c);
}

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
    case CLIENT_CONNECTING:
        if (c->guest_io) {
            /* The attempt in progress reached the deadline. */
            r = client_guest_failed(c, -ETIMEDOUT);
        } else {
            r = client_try_guest(c);
        }
        break;
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

static uint32_t agent_idle_timeout_s(const Agent *a) {
    return a->vm->disposable ? a->vm->idle_timeout : 0;
}

static int client_send_status(Client *c, uint32_t live_sessions) {
    Agent *a = c->agent;
    uint64_t now = now_mono();

    /* HostStart is answered with HostStatus only when the VM runs. */
    if (c->request == MSG_HOST_START && !a->no_vmm && a->state != VM_RUNNING) {
        char msg[128];
        snprintf(msg, sizeof(msg), "VM '%s' is %s", a->vm_name, vm_state_name(a->state));
        return client_fail(
            c, a->state == VM_STOPPING ? WIRE_ERR_SHUTTING_DOWN : WIRE_ERR_UNAVAILABLE, msg);
    }
    bool up = a->no_vmm ? a->guest_up : a->state == VM_RUNNING;
    uint64_t since = a->no_vmm ? a->guest_up_since : a->vmm_start;
    Msg m = {
        .type = MSG_HOST_STATUS,
        .host_status =
            {
                .vm = a->vm_name,
                .running = up,
                .state = a->no_vmm ? (up ? VM_RUNNING : VM_STOPPED) : a->state,
                .leases = a->leases,
                .uptime_ms = (a->no_vmm ? up : a->state != VM_STOPPED) ? (now - since) / 1000 : 0,
                .idle_ms = a->leases > 0 ? 0 : (now - a->last_lease_end) / 1000,
                .live_sessions = live_sessions,
                .idle_timeout_s = agent_idle_timeout_s(a),
            },
    };
    int r = client_queue(c, &m);
    if (r < 0) {
        return r;
    }
    return client_closing(c);
}

/* ---- status ------------------------------------------------------------- */

static void on_status_done(GuestCall *call, int r, const Msg *reply, void *userdata) {
    Client *c = userdata;
    uint32_t live = r == 0 ? reply->status.live_sessions : 0;

    if (r < 0) {
        log_debug("VM '%s': no Status from the guest agent: %s", c->agent->vm_name, strerror(-r));
    }
    guest_call_free(TAKE_PTR(c->status_call));
    client_kick(c, client_send_status(c, live));
}

/* HostStatus, with the guest agent's live sessions when it runs (asked
 * with a short timeout; 0 when it does not answer). */
static int client_request_status(Client *c) {
    Agent *a = c->agent;
    bool ask = a->no_vmm ? a->guest_up : a->state == VM_RUNNING;

    sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
    if (!ask) {
        return client_send_status(c, 0);
    }
    c->state = CLIENT_STATUS;
    int r = guest_call_start(a->event, &a->guest, MSG_STATUS_REQUEST, STATUS_TIMEOUT_USEC,
                             on_status_done, c, &c->status_call);
    if (r < 0) {
        return client_send_status(c, 0);
    }
    return 0;
}

/* ---- the VMM's stderr --------------------------------------------------- */

/* One line of the VMM's stderr into our log, control characters escaped. */
static void vmm_log_line(Agent *a, const char *line, size_t len) {
    char buf[4 * VMM_LINE_MAX + 1];
    if (len > 0 && line[len - 1] == '\r') {
        len--;
    }
    log_info("%s: %s", a->vmm->name, str_sanitize(line, len, buf, sizeof(buf)));
}

static void vmm_line(Agent *a, bool flush_partial) {
    char *nl;
    while ((nl = memchr(a->line, '\n', a->line_len))) {
        size_t used = (size_t)(nl - a->line) + 1;
        vmm_log_line(a, a->line, used - 1);
        memmove(a->line, nl + 1, a->line_len - used);
        a->line_len -= used;
    }
    if (a->line_len > 0 && (flush_partial || a->line_len == sizeof(a->line) - 1)) {
        vmm_log_line(a, a->line, a->line_len);
        a->line_len = 0;
    }
}

static void vmm_stderr_close(Agent *a) {
    vmm_line(a, true);
    a->vmm_stderr_src = sd_event_source_disable_unref(a->vmm_stderr_src);
    a->vmm_stderr = safe_close(a->vmm_stderr);
}

/* Reads what the VMM wrote to stderr: 1 when bytes came, 0 at EOF or on
 * an error, -EAGAIN when there is nothing now. */
static int vmm_stderr_read(Agent *a) {
    ssize_t k = read(a->vmm_stderr, a->line + a->line_len, sizeof(a->line) - 1 - a->line_len);
    if (k < 0 && (errno == EAGAIN || errno == EINTR)) {
        return -EAGAIN;
    }
    if (k <= 0) {
        return 0;
    }
    a->line_len += (size_t)k;
    vmm_line(a, false);
    return 1;
}

static int on_vmm_stderr(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
    Agent *a = userdata;
    if (vmm_stderr_read(a) == 0) {
        vmm_stderr_close(a);
    }
    return 0;
}

/* The VMM has exited: log what its stderr still holds, without waiting
 * for processes of its that may still hold the pipe. */
static void vmm_stderr_drain(Agent *a) {
    if (a->vmm_stderr < 0) {
        return;
    }
    while (vmm_stderr_read(a) > 0) {
    }
    vmm_stderr_close(a);
}

/* Where the VMM's stderr goes: the journal (its own stream, tagged with
 * the VMM's name) under systemd, else a pipe whose lines we log. */
static int vmm_stderr_open(Agent *a, int *ret_write, bool *ret_journal) {
    int p[2];
    int r;

    if (getenv("JOURNAL_STREAM")) {
        char ident[64];
        snprintf(ident, sizeof(ident), "%s-%s", a->vmm->name, a->vm_name);
        int fd = sd_journal_stream_fd(ident, LOG_INFO, 0);
        if (fd >= 0) {
            *ret_write = fd;
            *ret_journal = true;
            return 0;
        }
        log_debug_errno(fd, "No journal stream for the VMM, relaying its stderr: %m");
    }
    if (pipe2(p, O_CLOEXEC) < 0) {
        return -errno;
    }
    r = fd_nonblock(p[0], true);
    if (r >= 0) {
        r = sd_event_add_io(a->event, &a->vmm_stderr_src, p[0], EPOLLIN, on_vmm_stderr, a);
    }
    if (r < 0) {
        close_pair(p);
        return r;
    }
    a->vmm_stderr = p[0];
    a->line_len = 0;
    *ret_write = p[1];
    *ret_journal = false;
    return 0;
}

/* ---- starting the VMM ----------------------------------------------------- */

static void agent_vm_answered(Agent *a);

static int on_probe_timer(sd_event_source *s, uint64_t usec, void *userdata);

static void agent_probe_retry(Agent *a, int r);

static void on_probe_done(GuestCall *call, int r, const Msg *reply, void *userdata) {
    Agent *a = userdata;

    guest_call_free(TAKE_PTR(a->probe));
    if (a->state != VM_STARTING) {
        return;
    }
    if (r == 0) {
        agent_vm_answered(a);
        return;
    }
    agent_probe_retry(a, r);
}

/* Arms *src to fire cb once after usec, creating the source on first use
 * (a new time source is one-shot) and re-arming it after. */
static int agent_timer_arm(Agent *a, sd_event_source **src, uint64_t usec,
                           sd_event_time_handler_t cb) {
    int r;
    if (!*src) {
        return sd_event_add_time_relative(a->event, src, CLOCK_MONOTONIC, usec, 0, cb, a);
    }
    r = sd_event_source_set_time_relative(*src, usec);
    return r < 0 ? r : sd_event_source_set_enabled(*src, SD_EVENT_ONESHOT);
}

/* The guest agent did not answer (r): try again after a backoff, as long
 * as the VM is starting. */
static void agent_probe_retry(Agent *a, int r) {
    log_debug("VM '%s': guest agent at %s not answering yet: %s", a->vm_name, a->guest_str,
              strerror(-r));
    a->probe_backoff =
        a->probe_backoff ? MIN(a->probe_backoff * 2, BACKOFF_MAX_USEC) : BACKOFF_MIN_USEC;
    r = agent_timer_arm(a, &a->probe_timer, a->probe_backoff, on_probe_timer);
    if (r < 0) {
        log_error_errno(r, "Cannot schedule a probe of the guest agent: %m");
    }
}

static void agent_probe(Agent *a) {
    int r = guest_call_start(a->event, &a->guest, MSG_PING, PROBE_TIMEOUT_USEC, on_probe_done, a,
                             &a->probe);
    if (r < 0) {
        agent_probe_retry(a, r);
    }
}

static int on_probe_timer(sd_event_source *s, uint64_t usec, void *userdata) {
    Agent *a = userdata;
    if (a->state == VM_STARTING && !a->probe) {
        agent_probe(a);
    }
    return 0;
}

static void agent_probe_stop(Agent *a) {
    guest_call_free(TAKE_PTR(a->probe));
    if (a->probe_timer) {
        sd_event_source_set_enabled(a->probe_timer, SD_EVENT_OFF);
    }
}

static int on_vmm_exit(sd_event_source *s, const siginfo_t *si, void *userdata);

static void agent_stop(Agent *a, const char *why);

/* A VM whose guest agent does not answer within --guest-timeout of the
 * VMM's start is stopped, rather than left starting for ever. */
static int on_start_timer(sd_event_source *s, uint64_t usec, void *userdata) {
    Agent *a = userdata;
    char why[128];

    if (a->state != VM_STARTING) {
        return 0;
    }
    snprintf(why, sizeof(why), "the guest agent never answered within %" PRIu64 " s",
             a->guest_timeout / USEC_PER_SEC);
    log_warning("VM '%s': %s, stopping it", a->vm_name, why);
    agent_stop(a, why);
    return 0;
}

/* What the VMM's environment may hold from ours besides what
 * --vmm-env adds: PATH to find its helpers, the time zone for its log,
 * and where a display or sound server is (--gpu, --virtio-snd). Nothing
 * of systemd's hand-over to us (NOTIFY_SOCKET, LISTEN_*, WATCHDOG_*:
 * READY=1 and the watchdog are ours), nothing else of ours. crosvm's log
 * level is its --log-level. */
static const char *const vmm_env_default[] = {
    "PATH", "TZ", "RUST_BACKTRACE", "XDG_RUNTIME_DIR", "WAYLAND_DISPLAY", "DISPLAY", "PULSE_SERVER",
};
#define VMM_ENV_EXTRA_MAX 32u
#define VMM_ENV_DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static const char *vmm_env_extra[VMM_ENV_EXTRA_MAX];
static size_t vmm_env_extra_n;

/* NAME, or PREFIX* for every variable starting with PREFIX. */
static bool env_pattern_match(const char *pattern, const char *entry, size_t name_len) {
    size_t n = strlen(pattern);
    if (n > 0 && pattern[n - 1] == '*') {
        return name_len >= n - 1 && strncmp(entry, pattern, n - 1) == 0;
    }
    return name_len == n && strncmp(entry, pattern, n) == 0;
}

static void strv_free_ptr(char ***p) {
    if (*p) {
        for (char **e = *p; *e; e++) {
            free(*e);
        }
        free(*p);
    }
}

/* The VMM's environment, built before the fork: the variables above that
 * we have, PATH always, and JOURNAL_STREAM only when its stderr (err_fd)
 * is a journal stream, naming that stream. */
static int vmm_environ(int err_fd, bool err_is_journal, char ***ret) {
    extern char **environ;
    size_t n = 0, max = 2;
    bool have_path = false;
    int r = -ENOMEM;

    for (char **e = environ; *e; e++) {
        max++;
    }
    char **env = calloc(max + 1, sizeof(char *));
    if (!env) {
        return -ENOMEM;
    }
    for (char **e = environ; *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq) {
            continue;
        }
        size_t len = (size_t)(eq - *e);
        bool pass = false;
        for (size_t i = 0; i < ELEMENTSOF(vmm_env_default) && !pass; i++) {
            pass = env_pattern_match(vmm_env_default[i], *e, len);
        }
        for (size_t i = 0; i < vmm_env_extra_n && !pass; i++) {
            pass = env_pattern_match(vmm_env_extra[i], *e, len);
        }
        if (!pass || (len == 14 && strncmp(*e, "JOURNAL_STREAM", 14) == 0)) {
            continue;
        }
        have_path = have_path || (len == 4 && strncmp(*e, "PATH", 4) == 0);
        if (!(env[n++] = strdup(*e))) {
            goto fail;
        }
    }
    if (!have_path && !(env[n++] = strdup("PATH=" VMM_ENV_DEFAULT_PATH))) {
        goto fail;
    }
    struct stat st;
    if (err_is_journal && fstat(err_fd, &st) == 0) {
        if (asprintf(&env[n], "JOURNAL_STREAM=%llu:%llu", (unsigned long long)st.st_dev,
                     (unsigned long long)st.st_ino) < 0) {
            env[n] = NULL;
            goto fail;
        }
        n++;
    }
    *ret = env;
    return 0;
fail:
    strv_free_ptr(&env);
    return r;
}

/* Forks and execs argv with the environment env. stdin/stdout: `in`,
 * `out` or ours when -1; stderr: `err` or ours when -1; nothing else of
 * ours (every other fd is closed, whether or not it is close-on-exec).
 * The child gets a clean signal state; `new_session` detaches it from our
 * terminal and makes it the leader of its own process group, which is
 * what we kill. */
static int spawn(char **argv, char **env, int in, int out, int err, bool new_session,
                 pid_t *ret_pid) {
    pid_t pid = fork();
    if (pid < 0) {
        return -errno;
    }
    if (pid == 0) {
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        signal(SIGPIPE, SIG_DFL);
        if (new_session) {
            (void)setsid();
        }
        if ((in >= 0 && dup2(in, STDIN_FILENO) < 0) || (out >= 0 && dup2(out, STDOUT_FILENO) < 0) ||
            (err >= 0 && dup2(err, STDERR_FILENO) < 0)) {
            _exit(127);
        }
        (void)fd_close_from(3);
        /* execvpe searches our PATH, the one the VMM gets too. */
        execvpe(argv[0], argv, env);
        fprintf(stderr, "cannot execute %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    *ret_pid = pid;
    return 0;
}

/* A directory where we create sockets as root (and remove files): it is
 * created when missing (one level, like /run/qubes-lite under a fresh
 * /run); one that exists must be a directory, not a symlink, owned by us
 * and writable by nobody else, or what we create there could be swapped
 * or what we remove chosen by someone else. Checked on the opened
 * directory, so the check is of the directory we then use. On failure
 * why says so. */
static int runtime_dir_check(const char *dir, char *why, size_t why_size) {
    struct stat st;

    if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
        int r = -errno;
        snprintf(why, why_size, "cannot create %s: %s", dir, strerror(errno));
        return r;
    }
    _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0) {
        int r = -errno;
        snprintf(why, why_size,
                 "%s must be a directory owned by uid %u that only it may write to "
                 "(%s)",
                 dir, (unsigned)geteuid(), strerror(errno));
        return r;
    }
    if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 0022)) {
        snprintf(why, why_size, "%s must be a directory owned by uid %u that only it may write to",
                 dir, (unsigned)geteuid());
        return -EPERM;
    }
    return 0;
}

/* Somebody at the serial console is using the VM as much as a command
 * is: a lease, so that the idle backstop leaves it alone. */
static void on_console_attach(void *userdata, bool attached) {
    Agent *a = userdata;
    if (attached) {
        a->leases++;
    } else if (a->leases > 0 && --a->leases == 0) {
        a->last_lease_end = now_mono();
    }
    log_debug("Console client %s, %u lease(s)", attached ? "attached" : "gone", a->leases);
    agent_idle_update(a);
}

static int agent_start_vm_steps(Agent *a, char *why, size_t why_size) {
    _cleanup_(vmm_argv_freep) char **argv = NULL;
    _cleanup_(strv_free_ptr) char **env = NULL;
    _cleanup_close_ int master = -EBADF, slave = -EBADF, err_fd = -EBADF;
    _cleanup_free_ char *console_path = NULL;
    bool err_journal = false;
    ErrorText cerr;
    ErrorText verr;
    pid_t pid = 0;
    int r;

    r = vfio_check_vm(a->vm, &verr);
    if (r < 0) {
        snprintf(why, why_size, "cannot start VM '%s': %s", a->vm_name, verr.message);
        return log_error_errno(r, "%s", why);
    }
    r = a->vmm->argv(a->host, a->vm, &argv, &cerr);
    if (r < 0) {
        snprintf(why, why_size, "cannot start VM '%s': %s", a->vm_name, cerr.message);
        return log_error_errno(r, "%s", why);
    }
    /* In every mode (socket activation too: then nothing else looked at
     * it): the console socket and the control socket live there. */
    char dir_why[256];
    r = runtime_dir_check(config_runtime_dir(), dir_why, sizeof(dir_why));
    if (r < 0) {
        snprintf(why, why_size, "cannot start VM '%s': %s", a->vm_name, dir_why);
        return log_error_errno(r, "%s", why);
    }
    free(a->control_path);
    a->control_path = a->vmm->control_socket(a->vm);
    if (!a->control_path) {
        snprintf(why, why_size, "out of memory");
        return log_error_errno(-ENOMEM, "Cannot start VM '%s': %m", a->vm_name);
    }
    /* A control socket left by a VMM that did not clean up; one that
     * answers belongs to a VMM we do not know of. */
    r = addr_unix_remove_stale(a->control_path);
    if (r < 0) {
        snprintf(why, why_size, "cannot start VM '%s': %s: %s", a->vm_name, a->control_path,
                 r == -EADDRINUSE ? "another VMM listens on it" : strerror(-r));
        return log_error_errno(r, "%s", why);
    }

    if (!a->foreground) {
        r = console_open_pty(&master, &slave);
        if (r < 0) {
            snprintf(why, why_size, "cannot start VM '%s': no pty for its console: %s", a->vm_name,
                     strerror(-r));
            return log_error_errno(r, "%s", why);
        }
        if (asprintf(&console_path, "%s/%s-console", config_runtime_dir(), a->vm_name) < 0) {
            console_path = NULL;
            snprintf(why, why_size, "out of memory");
            return log_error_errno(-ENOMEM, "Cannot start VM '%s': %m", a->vm_name);
        }
        r = console_new(a->event, a->vm_name, TAKE_FD(master), console_path,
                        a->host && a->host->user ? a->host->user_uid : (uid_t)-1,
                        a->host && a->host->user ? a->host->user_gid : (gid_t)-1, &a->console);
        if (r < 0) {
            snprintf(why, why_size, "cannot start VM '%s': cannot serve its console on %s: %s",
                     a->vm_name, console_path,
                     r == -EADDRINUSE ? "another process listens there" : strerror(-r));
            return log_error_errno(r, "%s", why);
        }
        console_set_attach_cb(a->console, on_console_attach, a);
        r = vmm_stderr_open(a, &err_fd, &err_journal);
        if (r < 0) {
            snprintf(why, why_size, "cannot start VM '%s': %s", a->vm_name, strerror(-r));
            return log_error_errno(r, "%s", why);
        }
    }
    r = vmm_environ(err_fd, err_journal, &env);
    if (r >= 0) {
        r = spawn(argv, env, slave, slave, err_fd, !a->foreground, &pid);
    }
    if (r < 0) {
        snprintf(why, why_size, "cannot start VM '%s': fork: %s", a->vm_name, strerror(-r));
        return log_error_errno(r, "%s", why);
    }
    r = sd_event_add_child(a->event, &a->vmm_child, pid, WEXITED, on_vmm_exit, a);
    if (r < 0) {
        /* Unwatched, it could not be stopped: do not leave it running. */
        if (!a->foreground) {
            (void)kill(-pid, SIGKILL);
        }
        (void)kill(pid, SIGKILL);
        (void)waitpid(pid, NULL, 0);
        snprintf(why, why_size, "cannot start VM '%s': %s", a->vm_name, strerror(-r));
        return log_error_errno(r, "Cannot watch the VMM: %m");
    }
    a->vmm_pid = pid;
    a->vmm_group = !a->foreground;
    a->vmm_start = now_mono();
    a->state = VM_STARTING;
    if (a->leases == 0) {
        a->last_lease_end = a->vmm_start;
    }
    log_info("VM '%s': started %s (pid %d), waiting for the guest agent at %s", a->vm_name, argv[0],
             (int)pid, a->guest_str);
    (void)sd_notifyf(0, "STATUS=Starting VM %s", a->vm_name);
    if (!a->start_timer) {
        r = sd_event_add_time(a->event, &a->start_timer, CLOCK_MONOTONIC,
                              a->vmm_start + a->guest_timeout, 0, on_start_timer, a);
    } else {
        r = sd_event_source_set_time(a->start_timer, a->vmm_start + a->guest_timeout);
        if (r >= 0) {
            r = sd_event_source_set_enabled(a->start_timer, SD_EVENT_ONESHOT);
        }
    }
    if (r < 0) {
        log_error_errno(r, "Cannot bound the start of VM '%s': %m", a->vm_name);
    }
    a->probe_backoff = 0;
    agent_probe(a);
    agent_idle_update(a);
    agent_linger_update(a);
    return 0;
}

/* SIGKILL to the VMM and, when it leads its own process group, to every
 * process of that group (its device and jail processes, which hold the
 * TAP, vfio devices and disks). Until we reap the VMM its pid, and so its
 * group's id, cannot be reused. */
static int agent_kill_vmm(Agent *a) {
    if (a->vmm_pid <= 0) {
        return 0;
    }
    if (a->vmm_group && kill(-a->vmm_pid, SIGKILL) == 0) {
        return 0;
    }
    if (kill(a->vmm_pid, SIGKILL) < 0) {
        return -errno;
    }
    return 0;
}

/* Starts the VMM; on failure fills why (for the clients) and logs, and
 * nothing of the attempt stays (a later one starts afresh). */
static int agent_start_vm(Agent *a, char *why, size_t why_size) {
    int r = agent_start_vm_steps(a, why, why_size);
    if (r < 0) {
        console_free(TAKE_PTR(a->console));
        if (a->vmm_stderr >= 0) {
            vmm_stderr_close(a);
        }
    }
    return r;
}

static void agent_vm_answered(Agent *a) {
    uint64_t now = now_mono();

    a->state = VM_RUNNING;
    agent_probe_stop(a);
    log_info("VM '%s': the guest agent answered after %" PRIu64 " ms", a->vm_name,
             (now - a->vmm_start) / 1000);
    if (!a->ready_sent) {
        (void)sd_notifyf(0, "READY=1\nSTATUS=VM %s running", a->vm_name);
        a->ready_sent = true;
    }
    for (Client *c = a->clients, *next; c; c = next) {
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

/* ---- stopping it ----------------------------------------------------------- */

static void agent_stop_phase(Agent *a, StopPhase phase);

/* The stop command (its own session) did not finish in its time, or is
 * of no use any more: it goes, with whatever it started. */
static void agent_kill_stop_command(Agent *a, bool late) {
    if (a->stop_cmd_pid <= 0) {
        return;
    }
    log_internal(late ? LOG_WARNING : LOG_DEBUG, 0, "VM '%s': killing %s's stop command (pid %d)",
                 a->vm_name, a->vmm->name, (int)a->stop_cmd_pid);
    if (kill(-a->stop_cmd_pid, SIGKILL) < 0) {
        (void)kill(a->stop_cmd_pid, SIGKILL);
    }
}

/* SIGKILL did not end the VMM within --kill-timeout (a process stuck in
 * the kernel, say): nothing more we can do. Whoever waits is told, and
 * we exit with a failure rather than wait for ever. */
static void agent_kill_timed_out(Agent *a) {
    char msg[192];

    snprintf(msg, sizeof(msg), "%s (pid %d) did not die after SIGKILL (%" PRIu64 " s)",
             a->vmm->name, (int)a->vmm_pid, a->kill_timeout / USEC_PER_SEC);
    log_error("VM '%s': %s; giving up", a->vm_name, msg);
    (void)sd_notifyf(0, "STATUS=VM %s: %s", a->vm_name, msg);
    for (Client *c = a->clients, *next; c; c = next) {
        next = c->next;
        switch (c->state) {
        case CLIENT_STOP_WAIT:
        case CLIENT_WAIT_VM:
        case CLIENT_CONNECTING:
            client_kick(c, client_fail(c, WIRE_ERR_UNAVAILABLE, msg));
            break;
        default:
            break;
        }
    }
    a->vmm_unkillable = true;
    a->exit_code = EXIT_FAILURE;
    (void)sd_event_exit(a->event, EXIT_FAILURE);
}

static int on_stop_timer(sd_event_source *s, uint64_t usec, void *userdata) {
    Agent *a = userdata;

    switch (a->stop_phase) {
    case STOP_PHASE_SHUTDOWN:
        log_warning("VM '%s': not powered off after %" PRIu64 " s, asking %s to stop", a->vm_name,
                    a->shutdown_timeout / USEC_PER_SEC, a->vmm->name);
        agent_stop_phase(a, STOP_PHASE_VMM_STOP);
        break;
    case STOP_PHASE_VMM_STOP:
        log_warning("VM '%s': %s did not stop within %" PRIu64 " s, killing it", a->vm_name,
                    a->vmm->name, a->vmm_stop_timeout / USEC_PER_SEC);
        agent_kill_stop_command(a, true);
        agent_stop_phase(a, STOP_PHASE_KILL);
        break;
    case STOP_PHASE_KILL:
        agent_kill_timed_out(a);
        break;
    default:
        break;
    }
    return 0;
}

static void agent_stop_timer(Agent *a, uint64_t usec) {
    int r = agent_timer_arm(a, &a->stop_timer, usec, on_stop_timer);
    if (r < 0) {
        log_error_errno(r, "Cannot arm the stop timer: %m");
    }
}

static void on_shutdown_done(GuestCall *call, int r, const Msg *reply, void *userdata) {
    Agent *a = userdata;

    guest_call_free(TAKE_PTR(a->shutdown_call));
    if (a->stop_phase != STOP_PHASE_SHUTDOWN) {
        return;
    }
    if (r < 0) {
        log_warning("VM '%s': the guest agent did not take Shutdown (%s), asking %s to stop",
                    a->vm_name, strerror(-r), a->vmm->name);
        agent_stop_phase(a, STOP_PHASE_VMM_STOP);
        return;
    }
    log_info("VM '%s': the guest is powering off", a->vm_name);
}

static int on_stop_command_exit(sd_event_source *s, const siginfo_t *si, void *userdata) {
    Agent *a = userdata;
    a->stop_cmd_pid = 0;
    a->stop_cmd_child = sd_event_source_disable_unref(a->stop_cmd_child);
    if (si->si_code != CLD_EXITED || si->si_status != 0) {
        log_warning("VM '%s': %s's stop command failed (%s %d)", a->vm_name, a->vmm->name,
                    si->si_code == CLD_EXITED ? "status" : "signal", si->si_status);
    }
    return 0;
}

static void agent_stop_phase(Agent *a, StopPhase phase) {
    _cleanup_(vmm_argv_freep) char **argv = NULL;
    pid_t pid = 0;
    int r;

    a->stop_phase = phase;
    switch (phase) {
    case STOP_PHASE_SHUTDOWN:
        if (a->shutdown_timeout == 0) {
            agent_stop_phase(a, STOP_PHASE_VMM_STOP);
            return;
        }
        agent_stop_timer(a, a->shutdown_timeout);
        r = guest_call_start(a->event, &a->guest, MSG_SHUTDOWN,
                             MIN(a->shutdown_timeout, SHUTDOWN_CALL_TIMEOUT_USEC), on_shutdown_done,
                             a, &a->shutdown_call);
        if (r < 0) {
            log_warning_errno(r, "VM '%s': cannot ask the guest agent to power off: %m",
                              a->vm_name);
            agent_stop_phase(a, STOP_PHASE_VMM_STOP);
        }
        return;
    case STOP_PHASE_VMM_STOP:
        guest_call_free(TAKE_PTR(a->shutdown_call));
        agent_stop_timer(a, a->vmm_stop_timeout);
        r = a->vmm->stop_argv(a->vm, &argv);
        if (r >= 0) {
            _cleanup_(strv_free_ptr) char **env = NULL;
            int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
            r = vmm_environ(-EBADF, false, &env);
            if (r >= 0) {
                r = spawn(argv, env, null, -1, -1, true, &pid);
            }
            safe_close(null);
        }
        if (r >= 0) {
            log_info("VM '%s': running %s stop (pid %d)", a->vm_name, a->vmm->name, (int)pid);
            r = sd_event_add_child(a->event, &a->stop_cmd_child, pid, WEXITED, on_stop_command_exit,
                                   a);
            if (r >= 0) {
                a->stop_cmd_pid = pid;
            } else {
                (void)kill(-pid, SIGKILL);
                (void)kill(pid, SIGKILL);
                (void)waitpid(pid, NULL, 0);
            }
        }
        if (r < 0) {
            log_warning_errno(r, "VM '%s': cannot run %s's stop command: %m", a->vm_name,
                              a->vmm->name);
        }
        if (a->vmm_stop_timeout == 0) {
            agent_stop_phase(a, STOP_PHASE_KILL);
        }
        return;
    case STOP_PHASE_KILL:
        agent_stop_timer(a, a->kill_timeout);
        log_warning("VM '%s': killing %s (pid %d%s)", a->vm_name, a->vmm->name, (int)a->vmm_pid,
                    a->vmm_group ? " and its process group" : "");
        r = agent_kill_vmm(a);
        if (r < 0) {
            log_error_errno(r, "Cannot kill pid %d: %m", (int)a->vmm_pid);
        }
        return;
    default:
        return;
    }
}

static void agent_stop(Agent *a, const char *why) {
    char msg[160];

    if (!agent_vm_up(a)) {
        return;
    }
    log_info("VM '%s': stopping (%s)", a->vm_name, why);
    (void)sd_notifyf(0, "STATUS=Stopping VM %s", a->vm_name);
    bool was_running = a->state == VM_RUNNING;
    a->state = VM_STOPPING;
    a->stop_start = now_mono();
    agent_probe_stop(a);
    agent_idle_update(a);
    snprintf(msg, sizeof(msg), "VM '%s' is stopping (%s)", a->vm_name, why);
    for (Client *c = a->clients, *next; c; c = next) {
        next = c->next;
        if (c->state == CLIENT_WAIT_VM) {
            client_kick(c, client_fail(c, WIRE_ERR_SHUTTING_DOWN, msg));
        }
    }
    /* Before it answered, the guest agent cannot take Shutdown. */
    agent_stop_phase(a, was_running ? STOP_PHASE_SHUTDOWN : STOP_PHASE_VMM_STOP);
}

static int on_vmm_exit(sd_event_source *s, const siginfo_t *si, void *userdata) {
    Agent *a = userdata;
    char how[96], msg[256];
    int status;

    if (si->si_code == CLD_EXITED) {
        status = si->si_status;
        snprintf(how, sizeof(how), "%s exited with status %d", a->vmm->name, si->si_status);
    } else {
        status = 128 + si->si_status;
        snprintf(how, sizeof(how), "%s was killed by signal %d (%s)", a->vmm->name, si->si_status,
                 strsignal(si->si_status));
    }
    uint64_t now = now_mono();
    StopMethod method = a->stop_phase == STOP_PHASE_KILL       ? STOP_KILLED
                        : a->stop_phase == STOP_PHASE_VMM_STOP ? STOP_VMM_STOP
                                                               : STOP_GUEST_POWEROFF;
    static const char *const method_names[] = {"not running", "the guest powered off",
                                               "stopped on its control socket", "killed"};
    if (a->state == VM_STOPPING) {
        log_info("VM '%s': stopped in %" PRIu64 " ms (%s): %s", a->vm_name,
                 (now - a->stop_start) / 1000, method_names[method], how);
    } else if (si->si_code == CLD_EXITED && si->si_status == 0) {
        log_info("VM '%s': %s (the guest powered off)", a->vm_name, how);
    } else {
        log_warning("VM '%s': %s", a->vm_name, how);
    }
    VmState was = a->state;
    /* What the VMM left in its process group (not yet reaped, its id is
     * still its own) would hold the VM's devices: it goes too. */
    if (a->vmm_group) {
        (void)kill(-a->vmm_pid, SIGKILL);
    }
    a->state = VM_STOPPED;
    a->vmm_pid = 0;
    a->vmm_child = sd_event_source_disable_unref(a->vmm_child);
    agent_probe_stop(a);
    guest_call_free(TAKE_PTR(a->shutdown_call));
    if (a->stop_timer) {
        sd_event_source_set_enabled(a->stop_timer, SD_EVENT_OFF);
    }
    /* A stop command still running has nothing left to stop. */
    agent_kill_stop_command(a, false);
    vmm_stderr_drain(a);
    if (a->console) {
        console_drain(a->console);
    }

    snprintf(msg, sizeof(msg), "VM '%s' stopped%s: %s", a->vm_name,
             was == VM_STARTING ? " before its guest agent answered" : "", how);
    /* Clients that came while it stopped, and those still connecting to a
     * guest that went (a poweroff racing them), get the VM started again,
     * once each; not those that waited for this very start (it failed),
     * nor when we exit. */
    bool restart_ok = was != VM_STARTING && !a->terminating && !a->foreground;
    unsigned restart = 0;
    for (Client *c = a->clients, *next; c; c = next) {
        next = c->next;
        switch (c->state) {
        case CLIENT_WAIT_VM:
        case CLIENT_CONNECTING:
            if (restart_ok && !c->restarted &&
                (c->request == MSG_CONNECT || c->request == MSG_HOST_START)) {
                client_attempt_drop(c);
                client_handoff_drop(c); /* connected to the guest that went */
                c->restarted = true;
                if (c->state == CLIENT_CONNECTING) {
                    c->state = CLIENT_WAIT_VM;
                    c->vm_wait_start = now;
                    client_kick(c, client_arm_timer(c, now + a->guest_timeout + USEC_PER_SEC));
                }
                restart++;
                break;
            }
            client_kick(c, client_fail(c, WIRE_ERR_UNAVAILABLE, msg));
            break;
        case CLIENT_STOP_WAIT: {
            Msg m = {.type = MSG_HOST_STOPPED,
                     .host_stopped = {.method = method, .stop_ms = (now - a->stop_start) / 1000}};
            int r = client_queue(c, &m);
            client_kick(c, r < 0 ? r : client_closing(c));
            break;
        }
        case CLIENT_STATUS:
            guest_call_free(TAKE_PTR(c->status_call));
            /* A HostStart that was being answered: the VM did not stay up. */
            client_kick(c, c->request == MSG_HOST_START ? client_fail(c, WIRE_ERR_UNAVAILABLE, msg)
                                                        : client_send_status(c, 0));
            break;
        default:
            break;
        }
    }
    console_free(TAKE_PTR(a->console));
    if (a->control_path) {
        (void)addr_unix_remove_stale(a->control_path);
    }
    if (restart > 0) {
        char why[2 * ERROR_TEXT_MAX];
        a->stop_phase = STOP_PHASE_NONE;
        log_info("VM '%s': starting it again for %u waiting client(s)", a->vm_name, restart);
        if (agent_start_vm(a, why, sizeof(why)) == 0) {
            return 0;
        }
        for (Client *c = a->clients, *next; c; c = next) {
            next = c->next;
            if (c->state == CLIENT_WAIT_VM) {
                client_kick(c, client_fail(c, WIRE_ERR_UNAVAILABLE, why));
            }
        }
    }
    /* A VMM gone before its guest agent answered: under Type=notify a
     * run without READY=1 is a failed start, and enough of them stop the
     * socket unit. This was a short run; the journal says why. */
    if (!a->ready_sent) {
        (void)sd_notifyf(0, "READY=1\nSTATUS=VM %s stopped before it ran: %s", a->vm_name, how);
        a->ready_sent = true;
    }
    a->exit_code = a->foreground ? status : 0;
    return sd_event_exit(a->event, a->exit_code);
}

/* ---- idle backstop and lingering ------------------------------------------- */

static int on_idle_timer(sd_event_source *s, uint64_t usec, void *userdata) {
    Agent *a = userdata;
    uint32_t t = agent_idle_timeout_s(a);
    char why[160];

    if (a->leases > 0 || !agent_vm_up(a)) {
        return 0;
    }
    log_notice("VM '%s': no lease for %" PRIu64 " s (idleTimeout %u s + %" PRIu64
               " s grace) and the guest has not powered off: stopping it",
               a->vm_name, (now_mono() - a->last_lease_end) / USEC_PER_SEC, t,
               a->idle_grace / USEC_PER_SEC);
    snprintf(why, sizeof(why), "idle for idleTimeout %u s + %" PRIu64 " s", t,
             a->idle_grace / USEC_PER_SEC);
    agent_stop(a, why);
    return 0;
}

static void agent_idle_update(Agent *a) {
    uint32_t t = agent_idle_timeout_s(a);
    int r;

    if (a->no_vmm || t == 0 || !agent_vm_up(a) || a->leases > 0) {
        if (a->idle_timer) {
            sd_event_source_set_enabled(a->idle_timer, SD_EVENT_OFF);
        }
        return;
    }
    uint64_t deadline = a->last_lease_end + (uint64_t)t * USEC_PER_SEC + a->idle_grace;
    if (!a->idle_timer) {
        r = sd_event_add_time(a->event, &a->idle_timer, CLOCK_MONOTONIC, deadline, 0, on_idle_timer,
                              a);
    } else {
        r = sd_event_source_set_time(a->idle_timer, deadline);
        if (r >= 0) {
            r = sd_event_source_set_enabled(a->idle_timer, SD_EVENT_ONESHOT);
        }
    }
    if (r < 0) {
        log_error_errno(r, "Cannot arm the idle timer: %m");
    }
}

static int on_linger_timer(sd_event_source *s, uint64_t usec, void *userdata) {
    Agent *a = userdata;
    log_info("VM '%s' is not running and nobody is connected: exiting", a->vm_name);
    /* Woken by a client that started nothing (vm-list, vm-stop): not a
     * failed start in systemd's eyes (Type=notify), just a short run. */
    if (!a->ready_sent) {
        (void)sd_notifyf(0, "READY=1\nSTATUS=VM %s not running, exiting", a->vm_name);
        a->ready_sent = true;
    }
    return sd_event_exit(a->event, 0);
}

/* Socket-activated, a host agent whose VM is stopped is not kept around:
 * the socket starts it again for the next client. */
static void agent_linger_update(Agent *a) {
    int r;
    if (!a->event || !a->activated || a->foreground) {
        return;
    }
    if (a->state != VM_STOPPED || a->clients) {
        if (a->linger_timer) {
            sd_event_source_set_enabled(a->linger_timer, SD_EVENT_OFF);
        }
        return;
    }
    r = agent_timer_arm(a, &a->linger_timer, LINGER_USEC, on_linger_timer);
    if (r < 0) {
        log_error_errno(r, "Cannot arm the linger timer: %m");
    }
}

/* ---- requests ----------------------------------------------------------------- */

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

/* Connect or HostStart while the VM is not running: start it unless
 * no_start, then wait for its guest agent. */
static int client_wait_vm(Client *c, bool no_start) {
    Agent *a = c->agent;
    char msg[2 * ERROR_TEXT_MAX];

    switch (a->state) {
    case VM_STOPPING:
        if (a->terminating || a->foreground) {
            snprintf(msg, sizeof(msg), "VM '%s' is stopping and its host agent exits", a->vm_name);
            return client_fail(c, WIRE_ERR_SHUTTING_DOWN, msg);
        }
        if (no_start) {
            snprintf(msg, sizeof(msg), "VM '%s' is stopping", a->vm_name);
            return client_fail(c, WIRE_ERR_UNAVAILABLE, msg);
        }
        /* Wait for it to stop, then start it again (on_vmm_exit): a
         * command that races a poweroff still runs. Bounded by the rest
         * of the stop sequence plus a start. */
        c->state = CLIENT_WAIT_VM;
        c->vm_wait_start = now_mono();
        return client_arm_timer(c, c->vm_wait_start + a->shutdown_timeout + a->vmm_stop_timeout +
                                       a->kill_timeout + a->guest_timeout + USEC_PER_SEC);
    case VM_STOPPED:
        if (no_start) {
            snprintf(msg, sizeof(msg), "VM '%s' is not running", a->vm_name);
            return client_fail(c, WIRE_ERR_UNAVAILABLE, msg);
        }
        if (agent_start_vm(a, msg, sizeof(msg)) < 0) {
            return client_fail(c, WIRE_ERR_UNAVAILABLE, msg);
        }
        break;
    default:
        break;
    }
    c->state = CLIENT_WAIT_VM;
    c->vm_wait_start = now_mono();
    /* The VM's own start bound (on_start_timer) ends the wait first, with
     * the reason; this one is only a backstop. */
    return client_arm_timer(c, c->vm_wait_start + a->guest_timeout + USEC_PER_SEC);
}

static int handle_connect(Client *c, const Msg *m) {
    Agent *a = c->agent;

    sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
    c->request = MSG_CONNECT;
    c->want_handoff = 1 + m->connect.streams;
    c->leased = true;
    a->leases++;
    agent_idle_update(a);
    log_debug("Connect from pid %d (uid %u), %u lease(s)", (int)c->pid, (unsigned)c->uid,
              a->leases);
    if (a->no_vmm || a->state == VM_RUNNING) {
        return client_begin_guest(c);
    }
    return client_wait_vm(c, m->connect.no_start);
}

static int client_no_vmm(Client *c) {
    char msg[160];
    snprintf(msg, sizeof(msg), "the host agent of VM '%s' does not manage its VMM (--no-vmm)",
             c->agent->vm_name);
    return client_fail(c, WIRE_ERR_UNAVAILABLE, msg);
}

static int handle_host_start(Client *c, const Msg *m) {
    Agent *a = c->agent;

    sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
    c->request = MSG_HOST_START;
    if (a->no_vmm) {
        return client_no_vmm(c);
    }
    if (a->state == VM_RUNNING) {
        return client_request_status(c);
    }
    return client_wait_vm(c, false);
}

static int handle_host_stop(Client *c, const Msg *m) {
    Agent *a = c->agent;

    sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
    c->request = MSG_HOST_STOP;
    if (a->no_vmm) {
        return client_no_vmm(c);
    }
    if (a->state == VM_STOPPED) {
        Msg r = {.type = MSG_HOST_STOPPED, .host_stopped = {.method = STOP_NOT_RUNNING}};
        int q = client_queue(c, &r);
        return q < 0 ? q : client_closing(c);
    }
    c->state = CLIENT_STOP_WAIT;
    agent_stop(a, "asked to");
    return 0;
}

static int handle_host_status(Client *c, const Msg *m) {
    log_debug("Status asked by pid %d: VM '%s' %s, %u lease(s)", (int)c->pid, c->agent->vm_name,
              vm_state_name(c->agent->state), c->agent->leases);
    c->request = MSG_HOST_STATUS_REQUEST;
    return client_request_status(c);
}

/* What a client may send, and when. Anything else ends the connection
 * with Error(PROTOCOL). */
static const struct {
    MsgType type;
    ClientState state;
    int (*handler)(Client *c, const Msg *m);
} client_dispatch[] = {
    {MSG_HELLO, CLIENT_HELLO, handle_hello},
    {MSG_CONNECT, CLIENT_REQUEST, handle_connect},
    {MSG_HOST_STATUS_REQUEST, CLIENT_REQUEST, handle_host_status},
    {MSG_HOST_START, CLIENT_REQUEST, handle_host_start},
    {MSG_HOST_STOP, CLIENT_REQUEST, handle_host_stop},
};

static int client_handle(Client *c, const Msg *m) {
    char buf[128];

    for (size_t i = 0; i < ELEMENTSOF(client_dispatch); i++) {
        if (client_dispatch[i].type == m->type && client_dispatch[i].state == c->state) {
            return client_dispatch[i].handler(c, m);
        }
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
    if (r >= 0) {
        r = client_flush(c);
    }
    if (r >= 0) {
        r = client_update_events(c);
    }
    if (r < 0) {
        client_free(c);
    }
    return 0;
}

/* Root and the configured user; also our own uid, which is root in
 * production and lets the whole stack run unprivileged in tests. */
static bool agent_peer_allowed(const Agent *a, uid_t uid) {
    return uid == 0 || uid == geteuid() || (a->host && a->host->user && uid == a->host->user_uid);
}

static void agent_refuse(Agent *a, int fd, uid_t uid, pid_t pid) {
    char msg[160];
    snprintf(msg, sizeof(msg), "uid %u may not use VM '%s'", (unsigned)uid, a->vm_name);
    log_warning("Refusing pid %d (uid %u): not root nor the configured user", (int)pid,
                (unsigned)uid);
    Msg m = msg_error(WIRE_ERR_DENIED, msg);
    /* A fresh socket's buffer takes this small frame whole; best effort. */
    (void)wire_send(fd, &m);
}

static int agent_accept_one(Agent *a, int fd) {
    uid_t uid;
    pid_t pid = 0;
    int r;

    r = peer_ucred(fd, &uid, NULL, &pid);
    if (r < 0) {
        return log_warning_errno(r, "Cannot identify a new client, closing it: %m");
    }
    if (!agent_peer_allowed(a, uid)) {
        agent_refuse(a, fd, uid, pid);
        return 0;
    }
    Client *c = calloc(1, sizeof(*c));
    if (!c) {
        return log_error_errno(-ENOMEM, "Cannot accept a client: %m");
    }
    c->agent = a;
    c->fd = fd;
    c->uid = uid;
    c->pid = pid;
    c->guest_fd = -EBADF;
    for (size_t i = 0; i < ELEMENTSOF(c->handoff_fd); i++) {
        c->handoff_fd[i] = -EBADF;
    }
    c->state = CLIENT_HELLO;
    c->next = a->clients;
    if (a->clients) {
        a->clients->prev = c;
    }
    a->clients = c;

    Msg hello = msg_hello(SOFTWARE);
    r = client_queue(c, &hello);
    if (r >= 0) {
        r = sd_event_add_io(a->event, &c->io, fd, EPOLLIN | EPOLLOUT, on_client_io, c);
    }
    if (r >= 0) {
        r = sd_event_add_time_relative(a->event, &c->timer, CLOCK_MONOTONIC, HANDSHAKE_TIMEOUT_USEC,
                                       0, on_timer, c);
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

static int on_accept_resume(sd_event_source *s, uint64_t usec, void *userdata) {
    Agent *a = userdata;
    return sd_event_source_set_enabled(a->listen_src, SD_EVENT_ON);
}

/* Out of fds: stop accepting for a moment instead of spinning on a
 * listening socket that stays readable. */
static void agent_pause_accepting(Agent *a) {
    int r = sd_event_source_set_enabled(a->listen_src, SD_EVENT_OFF);
    if (r >= 0) {
        r = agent_timer_arm(a, &a->accept_pause, ACCEPT_PAUSE_USEC, on_accept_resume);
    }
    if (r < 0) {
        log_error_errno(r, "Cannot pause accepting: %m");
    }
}

static int on_listen_io(sd_event_source *s, int lfd, uint32_t revents, void *userdata) {
    Agent *a = userdata;

    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                log_warning_errno(-errno, "Cannot accept a client, pausing: %m");
                agent_pause_accepting(a);
            } else if (errno != EAGAIN) {
                log_warning_errno(-errno, "accept() failed: %m");
            }
            return 0;
        }
        if (agent_accept_one(a, fd) <= 0) {
            safe_close(fd);
        }
    }
}

/* SIGTERM/SIGINT: with a VM up, stop it (a second signal kills it) and
 * exit once the VMM has; else exit now. */
static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
    Agent *a = userdata;
    if (a->no_vmm || a->state == VM_STOPPED) {
        log_info("Got signal %u, exiting", si->ssi_signo);
        return sd_event_exit(a->event, 0);
    }
    if (a->state == VM_STOPPING && a->terminating) {
        if (a->stop_phase != STOP_PHASE_KILL) {
            log_info("Got signal %u again, killing the VMM", si->ssi_signo);
            agent_stop_phase(a, STOP_PHASE_KILL);
        }
        return 0;
    }
    /* We go once the VMM has: nobody waits for a start any more. */
    a->terminating = true;
    if (a->state == VM_STOPPING) {
        char msg[128];
        log_info("Got signal %u while stopping the VM: exiting once it has stopped", si->ssi_signo);
        snprintf(msg, sizeof(msg), "VM '%s' is stopping and its host agent exits", a->vm_name);
        for (Client *c = a->clients, *next; c; c = next) {
            next = c->next;
            if (c->state == CLIENT_WAIT_VM) {
                client_kick(c, client_fail(c, WIRE_ERR_SHUTTING_DOWN, msg));
            }
        }
        return 0;
    }
    agent_stop(a, strsignal((int)si->ssi_signo));
    return 0;
}

/* A unix socket we create: the default <runtime dir>/<vm>.sock or
 * --listen unix:PATH. Its directory is created when missing (one level,
 * like /run/qubes-lite under a fresh /run). */
static int agent_listen_unix(Agent *a, const Addr *addr) {
    const char *path = addr->un.sun_path;
    _cleanup_free_ char *dir = strdup(path);
    char *slash;
    int r;

    if (!dir) {
        return log_error_errno(-ENOMEM, "Out of memory");
    }
    slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        char why[256];
        *slash = '\0';
        r = runtime_dir_check(dir, why, sizeof(why));
        if (r < 0) {
            return log_error_errno(r, "%s", why);
        }
    }
    /* Born 0600 (umask 0177): nobody may connect before the owner is
     * right, and no chmod by path is needed after. */
    mode_t old = umask(0177);
    r = addr_listen(addr, &a->listen_fd);
    umask(old);
    if (r == -EADDRINUSE) {
        return log_error_errno(r,
                               "Cannot listen on unix:%s: another process listens there (a host "
                               "agent of VM '%s', or its systemd socket unit); leaving it alone",
                               path, a->vm_name);
    }
    if (r < 0) {
        return log_error_errno(r, "Cannot listen on unix:%s: %m", path);
    }
    if (lstat(path, &a->socket_st) < 0) {
        return log_error_errno(-errno, "Cannot check %s: %m", path);
    }
    a->socket_path = strdup(path);
    if (!a->socket_path) {
        return log_error_errno(-ENOMEM, "Out of memory");
    }
    if (a->host && a->host->user && a->host->user_uid != geteuid()) {
        /* Not through a symlink put in the socket's place. */
        if (fchownat(AT_FDCWD, path, a->host->user_uid, a->host->user_gid, AT_SYMLINK_NOFOLLOW) <
            0) {
            if (errno != EPERM || geteuid() == 0) {
                return log_error_errno(-errno, "Cannot hand %s to user '%s': %m", path,
                                       a->host->user);
            }
            /* Unprivileged (tests): the socket stays ours. */
            log_warning("Not root: %s stays owned by uid %u, user '%s' cannot connect", path,
                        (unsigned)geteuid(), a->host->user);
        }
    }
    return 0;
}

static int agent_listen(Agent *a, const char *listen_arg) {
    Addr addr;
    char buf[ADDR_STR_MAX];
    int r;

    if (listen_arg) {
        r = addr_parse(listen_arg, &addr);
        if (r < 0) {
            return log_error_errno(r, "Invalid --listen address '%s'", listen_arg);
        }
        if (addr.family == AF_UNIX) {
            return agent_listen_unix(a, &addr);
        }
        r = addr_listen(&addr, &a->listen_fd);
        if (r < 0) {
            return log_error_errno(r, "Cannot listen on %s: %m", listen_arg);
        }
        return 0;
    }
    r = addr_listen_fd_from_systemd(&a->listen_fd);
    if (r >= 0) {
        a->activated = true;
        return 0;
    }
    if (r != -ENOENT) {
        return log_error_errno(r, "Cannot use the socket passed by systemd: %m");
    }
    snprintf(buf, sizeof(buf), "unix:%s/%s.sock", config_runtime_dir(), a->vm_name);
    r = addr_parse(buf, &addr);
    if (r < 0) {
        return log_error_errno(r, "The socket path %s is too long", buf + 5);
    }
    return agent_listen_unix(a, &addr);
}

static void agent_done(Agent *a) {
    /* Teardown: no lease or linger bookkeeping any more. */
    a->activated = false;
    a->no_vmm = true;
    while (a->clients) {
        client_free(a->clients);
    }
    if (a->vmm_pid > 0) {
        /* Leaving (a failure of the loop itself): the VMM must not outlive us. */
        log_warning("VM '%s': killing %s (pid %d) on the way out", a->vm_name, a->vmm->name,
                    (int)a->vmm_pid);
        (void)agent_kill_vmm(a);
        /* Not one that SIGKILL did not end already: we would hang here. */
        (void)waitpid(a->vmm_pid, NULL, a->vmm_unkillable ? WNOHANG : 0);
        if (a->control_path) {
            (void)addr_unix_remove_stale(a->control_path);
        }
    }
    console_free(a->console);
    guest_call_free(a->probe);
    guest_call_free(a->shutdown_call);
    sd_event_source_disable_unref(a->vmm_child);
    sd_event_source_disable_unref(a->vmm_stderr_src);
    safe_close(a->vmm_stderr);
    if (a->stop_cmd_pid > 0) {
        agent_kill_stop_command(a, false);
        (void)waitpid(a->stop_cmd_pid, NULL, WNOHANG);
    }
    sd_event_source_disable_unref(a->stop_cmd_child);
    sd_event_source_disable_unref(a->probe_timer);
    sd_event_source_disable_unref(a->start_timer);
    sd_event_source_disable_unref(a->stop_timer);
    sd_event_source_disable_unref(a->idle_timer);
    sd_event_source_disable_unref(a->linger_timer);
    sd_event_source_disable_unref(a->accept_pause);
    sd_event_source_disable_unref(a->listen_src);
    if (a->socket_path) {
        /* Not a socket that replaced ours meanwhile (another agent's). */
        (void)addr_unix_unlink_bound(a->socket_path, &a->socket_st);
        free(a->socket_path);
    }
    free(a->control_path);
    safe_close(a->listen_fd);
    host_config_free(a->host);
    vm_config_free(a->vm);
    sd_event_unref(a->event);
}

static void help(void) {
    printf("Usage: qubes-lite-host-agent --vm NAME [OPTION]...\n"
           "       qubes-lite-host-agent --check\n"
           "       qubes-lite-host-agent --vm NAME --print-command\n"
           "       qubes-lite-host-agent --bind-vfio\n"
           "       qubes-lite-host-agent --write-switch-config NET DIR\n"
           "Broker between vm-run and friends and the guest agent of one VM.\n"
           "\n"
           "  --check               validate host.json and every vms/*.json, one line\n"
           "                        per problem; exit 1 if there is any\n"
           "  --print-command       print the VM's crosvm command line, one argument\n"
           "                        per line, and exit\n"
           "  --bind-vfio           bind host.json's isolatedPciDevices to vfio-pci\n"
           "  --write-switch-config NET DIR\n"
           "                        write vm-switch's <vm>.conf of every VM on\n"
           "                        network NET into DIR, remove the others'\n"
           "  --vm NAME             the VM (configuration: vms/NAME.json)\n"
           "  --listen ADDR         listen on ADDR (unix:PATH); default: the socket\n"
           "                        passed by systemd, else RUNTIME_DIR/NAME.sock\n"
           "  --guest ADDR          the guest agent (default vsock:ID:%u)\n"
           "  --guest-timeout SECS  how long to wait for the guest agent (default %u)\n"
           "  --no-vmm              do not start a VMM; attach to a running guest agent\n"
           "  --foreground          start the VMM now on our stdin/stdout/stderr (no\n"
           "                        console relay) and exit with its exit status\n"
           "                        (no effect with --no-vmm)\n"
           "  --shutdown-timeout SECS  stopping: how long the guest has to power off\n"
           "                        after Shutdown (default %u; 0: skip that step)\n"
           "  --stop-timeout SECS   then how long the VMM has after its stop command\n"
           "                        (default %u), before SIGKILL\n"
           "  --kill-timeout SECS   how long to wait after SIGKILL (default %u)\n"
           "  --idle-grace SECS     disposable VMs: stop the VM after idleTimeout plus\n"
           "                        this without a lease (default %u)\n"
           "  --vmm-env NAME        pass our variable NAME (or every PREFIX* one) to the\n"
           "                        VMM too; it gets PATH, TZ, RUST_BACKTRACE,\n"
           "                        XDG_RUNTIME_DIR, WAYLAND_DISPLAY, DISPLAY and\n"
           "                        PULSE_SERVER, nothing else of ours\n"
           "  --log-level LEVEL     error, warning, info, debug\n"
           "  -h, --help            show this help\n"
           "\n"
           "Environment: QUBES_LITE_CONFIG_DIR (default %s),\n"
           "QUBES_LITE_RUNTIME_DIR (default %s).\n",
           GUEST_AGENT_VSOCK_PORT, GUEST_TIMEOUT_DEFAULT_S, SHUTDOWN_TIMEOUT_DEFAULT_S,
           VMM_STOP_TIMEOUT_DEFAULT_S, KILL_TIMEOUT_DEFAULT_S, IDLE_GRACE_DEFAULT_S,
           DEFAULT_CONFIG_DIR, DEFAULT_RUNTIME_DIR);
}

/* --check: every problem of every file, one line each. */
static int run_check(void) {
    int n = config_check_all(config_dir(), stderr);
    if (n < 0) {
        log_error_errno(n, "Cannot read %s: %m", config_dir());
        return EXIT_FAILURE;
    }
    if (n > 0) {
        log_error("%d problem%s in %s", n, n == 1 ? "" : "s", config_dir());
        return EXIT_FAILURE;
    }
    return EXIT_SUCCESS;
}

/* host.json is optional: without it the defaults apply. */
static int load_host_or_defaults(HostConfig **ret, ErrorText *cerr) {
    int r = config_load_host(config_dir(), ret, cerr);
    if (r == -ENOENT) {
        r = config_host_defaults(ret);
        if (r < 0) {
            snprintf(cerr->message, sizeof(cerr->message), "out of memory");
        }
    }
    return r;
}

static int run_print_command(const char *name) {
    _cleanup_(host_config_freep) HostConfig *host = NULL;
    _cleanup_(vm_config_freep) VmConfig *vm = NULL;
    ErrorText cerr;

    if (load_host_or_defaults(&host, &cerr) < 0) {
        die("%s", cerr.message);
    }
    int r = config_load_vm(config_dir(), name, &vm, &cerr);
    if (r == -ENOENT) {
        die("No VM named '%s' (%s)", name, cerr.message);
    }
    if (r < 0) {
        die("%s", cerr.message);
    }
    r = vmm_print_command(&vmm_crosvm, host, vm, stdout, &cerr);
    if (r < 0) {
        die("%s", cerr.message);
    }
    return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

static int run_bind_vfio(void) {
    _cleanup_(host_config_freep) HostConfig *host = NULL;
    ErrorText cerr;

    if (load_host_or_defaults(&host, &cerr) < 0) {
        die("%s", cerr.message);
    }
    return vfio_bind_all(&host->isolated_pci_devices, stderr) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* --write-switch-config NET DIR: vm-switch's <vm>.conf files for NET. */
static int run_write_switch_config(const char *net, const char *dir) {
    int r = switchconf_write(config_dir(), net, dir, stderr);
    if (r < 0) {
        log_error_errno(r, "Cannot write the configuration of network '%s' to %s: %m", net, dir);
        return EXIT_FAILURE;
    }
    log_info("Network '%s': %d VM%s in %s", net, r, r == 1 ? "" : "s", dir);
    return EXIT_SUCCESS;
}

int main(int argc, char **argv) {
    enum {
        ARG_VM = 0x100,
        ARG_LISTEN,
        ARG_GUEST,
        ARG_GUEST_TIMEOUT,
        ARG_NO_VMM,
        ARG_FOREGROUND,
        ARG_LOG_LEVEL,
        ARG_CHECK,
        ARG_PRINT_COMMAND,
        ARG_BIND_VFIO,
        ARG_WRITE_SWITCH_CONFIG,
        ARG_SHUTDOWN_TIMEOUT,
        ARG_STOP_TIMEOUT,
        ARG_KILL_TIMEOUT,
        ARG_IDLE_GRACE,
        ARG_VMM_ENV,
    };
    static const struct option longopts[] = {
        {"check", no_argument, NULL, ARG_CHECK},
        {"print-command", no_argument, NULL, ARG_PRINT_COMMAND},
        {"bind-vfio", no_argument, NULL, ARG_BIND_VFIO},
        {"write-switch-config", required_argument, NULL, ARG_WRITE_SWITCH_CONFIG},
        {"vm", required_argument, NULL, ARG_VM},
        {"listen", required_argument, NULL, ARG_LISTEN},
        {"guest", required_argument, NULL, ARG_GUEST},
        {"guest-timeout", required_argument, NULL, ARG_GUEST_TIMEOUT},
        {"no-vmm", no_argument, NULL, ARG_NO_VMM},
        {"foreground", no_argument, NULL, ARG_FOREGROUND},
        {"log-level", required_argument, NULL, ARG_LOG_LEVEL},
        {"shutdown-timeout", required_argument, NULL, ARG_SHUTDOWN_TIMEOUT},
        {"stop-timeout", required_argument, NULL, ARG_STOP_TIMEOUT},
        {"kill-timeout", required_argument, NULL, ARG_KILL_TIMEOUT},
        {"idle-grace", required_argument, NULL, ARG_IDLE_GRACE},
        {"vmm-env", required_argument, NULL, ARG_VMM_ENV},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    Agent a = {
        .listen_fd = -EBADF,
        .vmm_stderr = -EBADF,
        .vmm = &vmm_crosvm,
        .guest_timeout = GUEST_TIMEOUT_DEFAULT_S * USEC_PER_SEC,
        .shutdown_timeout = SHUTDOWN_TIMEOUT_DEFAULT_S * USEC_PER_SEC,
        .vmm_stop_timeout = VMM_STOP_TIMEOUT_DEFAULT_S * USEC_PER_SEC,
        .kill_timeout = KILL_TIMEOUT_DEFAULT_S * USEC_PER_SEC,
        .idle_grace = IDLE_GRACE_DEFAULT_S * USEC_PER_SEC,
    };
    const char *listen_arg = NULL, *guest_arg = NULL, *switch_net = NULL;
    /* 0: serve, else ARG_CHECK, ARG_PRINT_COMMAND, ARG_BIND_VFIO or
     * ARG_WRITE_SWITCH_CONFIG */
    int mode = 0;
    ErrorText cerr;
    sigset_t mask;
    int c, r;

    log_setup("qubes-lite-host-agent");
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) >= 0) {
        unsigned long long v;
        switch (c) {
        case ARG_VM:
            a.vm_name = optarg;
            break;
        case ARG_LISTEN:
            listen_arg = optarg;
            break;
        case ARG_GUEST:
            guest_arg = optarg;
            break;
        case ARG_GUEST_TIMEOUT:
            if (parse_uint(optarg, 1, 24 * 3600, &v) < 0) {
                die("--guest-timeout wants seconds from 1 to 86400, not '%s'", optarg);
            }
            a.guest_timeout = v * USEC_PER_SEC;
            break;
        case ARG_NO_VMM:
            a.no_vmm = true;
            break;
        case ARG_VMM_ENV:
            if (vmm_env_extra_n >= VMM_ENV_EXTRA_MAX || !*optarg || strchr(optarg, '=')) {
                die("--vmm-env wants a variable NAME or PREFIX*, at most %u times, not '%s'",
                    VMM_ENV_EXTRA_MAX, optarg);
            }
            vmm_env_extra[vmm_env_extra_n++] = optarg;
            break;
        case ARG_FOREGROUND:
            a.foreground = true;
            break;
        case ARG_SHUTDOWN_TIMEOUT:
        case ARG_STOP_TIMEOUT:
        case ARG_KILL_TIMEOUT:
        case ARG_IDLE_GRACE: {
            unsigned long long min = c == ARG_KILL_TIMEOUT ? 1 : 0;
            if (parse_uint(optarg, min, 24 * 3600, &v) < 0) {
                die("--%s wants seconds from %llu to 86400, not '%s'",
                    c == ARG_SHUTDOWN_TIMEOUT ? "shutdown-timeout"
                    : c == ARG_STOP_TIMEOUT   ? "stop-timeout"
                    : c == ARG_KILL_TIMEOUT   ? "kill-timeout"
                                              : "idle-grace",
                    min, optarg);
            }
            uint64_t *dst = c == ARG_SHUTDOWN_TIMEOUT ? &a.shutdown_timeout
                            : c == ARG_STOP_TIMEOUT   ? &a.vmm_stop_timeout
                            : c == ARG_KILL_TIMEOUT   ? &a.kill_timeout
                                                      : &a.idle_grace;
            *dst = v * USEC_PER_SEC;
            break;
        }
        case ARG_WRITE_SWITCH_CONFIG:
            switch_net = optarg;
            __attribute__((fallthrough));
        case ARG_CHECK:
        case ARG_PRINT_COMMAND:
        case ARG_BIND_VFIO:
            if (mode != 0 && mode != c) {
                die("--check, --print-command, --bind-vfio and --write-switch-config exclude "
                    "each other");
            }
            mode = c;
            break;
        case ARG_LOG_LEVEL:
            r = log_level_from_string(optarg);
            if (r < 0) {
                die("Unknown log level '%s' (error, warning, info, debug)", optarg);
            }
            log_set_max_level(r);
            break;
        case 'h':
            help();
            return EXIT_SUCCESS;
        default:
            fprintf(stderr, "Try 'qubes-lite-host-agent --help'.\n");
            return EXIT_FAILURE;
        }
    }
    if (mode == ARG_WRITE_SWITCH_CONFIG) {
        if (optind + 1 != argc) {
            die("--write-switch-config wants NET DIR");
        }
        return run_write_switch_config(switch_net, argv[optind]);
    }
    if (optind < argc) {
        die("Unexpected argument '%s'", argv[optind]);
    }
    if (mode == ARG_CHECK) {
        return run_check();
    }
    if (mode == ARG_BIND_VFIO) {
        return run_bind_vfio();
    }
    if (mode == ARG_PRINT_COMMAND) {
        if (!a.vm_name) {
            die("--print-command needs --vm NAME");
        }
        return run_print_command(a.vm_name);
    }
    if (!a.vm_name) {
        die("--vm NAME is required");
    }
    if (a.no_vmm) {
        /* No VMM to run in the foreground; the agent itself never forks
         * away (what --foreground meant before it ran a VMM). */
        a.foreground = false;
    }

    r = config_load_vm(config_dir(), a.vm_name, &a.vm, &cerr);
    if (r == -ENOENT) {
        die("No VM named '%s' (%s)", a.vm_name, cerr.message);
    }
    if (r < 0) {
        die("%s", cerr.message);
    }
    r = config_load_host(config_dir(), &a.host, &cerr);
    if (r == -ENOENT) {
        log_info("%s/host.json does not exist: only root may connect", config_dir());
    } else if (r < 0) {
        die("%s", cerr.message);
    }

    if (guest_arg) {
        if (addr_parse(guest_arg, &a.guest) < 0) {
            die("Invalid --guest address '%s' (vsock:CID:PORT or unix:PATH)", guest_arg);
        }
    } else {
        char buf[64];
        snprintf(buf, sizeof(buf), "vsock:%u:%u", a.vm->id, GUEST_AGENT_VSOCK_PORT);
        if (addr_parse(buf, &a.guest) < 0) {
            die("Invalid guest address %s", buf);
        }
    }
    addr_format(&a.guest, a.guest_str, sizeof(a.guest_str));

    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    /* The VMM's exit and its stop command's come through sd-event. */
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);

    r = sd_event_default(&a.event);
    if (r < 0) {
        log_error_errno(r, "Cannot create the event loop: %m");
        goto out;
    }
    r = agent_listen(&a, listen_arg);
    if (r < 0) {
        goto out;
    }
    r = sd_event_add_io(a.event, &a.listen_src, a.listen_fd, EPOLLIN, on_listen_io, &a);
    if (r >= 0) {
        r = sd_event_add_signal(a.event, NULL, SIGTERM, on_signal, &a);
    }
    if (r >= 0) {
        r = sd_event_add_signal(a.event, NULL, SIGINT, on_signal, &a);
    }
    if (r < 0) {
        log_error_errno(r, "Cannot set up the event loop: %m");
        goto out;
    }
    a.start = a.last_lease_end = now_mono();
    log_info("VM '%s': serving, guest agent at %s", a.vm_name, a.guest_str);
    if (a.no_vmm) {
        sd_notify(0, "READY=1");
    } else if (a.foreground) {
        char why[2 * ERROR_TEXT_MAX];
        r = agent_start_vm(&a, why, sizeof(why));
        if (r < 0) {
            goto out;
        }
    } else {
        /* READY=1 once the guest agent of a started VM answers. */
        agent_linger_update(&a);
    }
    r = sd_event_loop(a.event);
    if (r < 0) {
        log_error_errno(r, "Event loop failed: %m");
    }
out:
    agent_done(&a);
    if (r < 0) {
        return EXIT_FAILURE;
    }
    return a.exit_code;
}
