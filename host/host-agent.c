/* qubes-lite-host-agent: one per VM. Accepts vm-run and friends on the
 * VM's command socket, connects them to the guest agent and hands them the
 * connected socket (SCM_RIGHTS), then holds their connection as a lease.
 *
 * This build only attaches to a guest agent that is already running
 * (--no-vmm); starting the VMM is a later step. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <systemd/sd-event.h>
#include <unistd.h>

#include "addr.h"
#include "config.h"
#include "crosvm.h"
#include "log.h"
#include "util.h"
#include "vfio.h"
#include "wire.h"

#define SOFTWARE "qubes-lite-host-agent 0.1"
#define BACKOFF_MIN_USEC (20 * 1000ULL)
#define BACKOFF_MAX_USEC (500 * 1000ULL)
#define GUEST_TIMEOUT_DEFAULT_S 60u
/* A client that says nothing useful for this long is dropped. */
#define HANDSHAKE_TIMEOUT_USEC (30 * 1000000ULL)
/* Replies are a few dozen bytes; anything beyond this means the client
 * does not read. */
#define CLIENT_OUT_MAX (64u * 1024u)
#define ACCEPT_PAUSE_USEC (200 * 1000ULL)

typedef struct Agent Agent;
typedef struct Client Client;

typedef enum ClientState {
    CLIENT_HELLO,      /* waiting for the client's Hello */
    CLIENT_REQUEST,    /* waiting for Connect or HostStatusRequest */
    CLIENT_CONNECTING, /* trying the guest agent */
    CLIENT_LEASE,      /* Connected sent; the connection is a lease */
    CLIENT_CLOSING,    /* last reply queued, then close */
} ClientState;

struct Client {
    Agent *agent;
    Client *prev, *next;
    int fd;
    uid_t uid;
    pid_t pid;
    sd_event_source *io;
    sd_event_source *timer; /* handshake timeout, then connect backoff */
    WireReader reader;
    WireWriter writer;
    ClientState state;
    bool leased;
    /* Guest connection attempt. */
    int guest_fd;
    sd_event_source *guest_io;
    uint64_t connect_start, deadline, backoff;
    int last_error;
    unsigned attempts;
    int handoff_fd; /* connected guest socket not yet sent */
    MsgConnected connected;
};

struct Agent {
    sd_event *event;
    const char *vm_name;
    HostConfig *host;
    VmConfig *vm;
    Addr guest;
    char guest_str[ADDR_STR_MAX];
    uint64_t guest_timeout;
    int listen_fd;
    sd_event_source *listen_src;
    sd_event_source *accept_pause; /* re-enables accepting after EMFILE */
    char *socket_path;             /* a unix socket we created, unlinked at exit */
    Client *clients;
    unsigned leases;
    uint64_t start, last_lease_end;
    bool guest_up;
    uint64_t guest_up_since;
};

static uint64_t now_mono(void) {
    return now_usec(CLOCK_MONOTONIC);
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
    safe_close(c->guest_fd);
    safe_close(c->handoff_fd);
    safe_close(c->fd);
    wire_reader_done(&c->reader);
    wire_writer_done(&c->writer);
    free(c);
}

/* Sets what we wait for on the client socket from its state. */
static int client_update_events(Client *c) {
    uint32_t ev = 0;

    if (c->state != CLIENT_CLOSING) {
        ev |= EPOLLIN;
    }
    if (wire_writer_pending(&c->writer) > 0 || c->handoff_fd >= 0) {
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

/* Queues a last reply; the client is closed once it is written. */
static int client_fail(Client *c, WireError code, const char *message) {
    Msg m = msg_error(code, message);
    int r;

    sd_event_source_disable_unref(c->guest_io);
    c->guest_io = NULL;
    c->guest_fd = safe_close(c->guest_fd);
    c->state = CLIENT_CLOSING;
    r = client_queue(c, &m);
    if (r < 0) {
        return r;
    }
    /* Bound how long an unread error keeps the client around. */
    r = sd_event_source_set_time_relative(c->timer, HANDSHAKE_TIMEOUT_USEC);
    if (r >= 0) {
        r = sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);
    }
    return r;
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
        char buf[CMSG_SPACE(sizeof(int))];
    } control = {0};
    struct iovec iov = {.iov_base = buf, .iov_len = n};
    struct msghdr mh = {
        .msg_iov = &iov,
        .msg_iovlen = 1,
        .msg_control = control.buf,
        .msg_controllen = sizeof(control.buf),
    };
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &c->handoff_fd, sizeof(int));
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
    if (c->handoff_fd >= 0) {
        r = client_send_handoff(c);
        if (r == -EAGAIN) {
            return 0;
        }
        if (r < 0) {
            return r;
        }
        /* The client holds the guest connection now; ours goes. */
        c->handoff_fd = safe_close(c->handoff_fd);
        c->state = CLIENT_LEASE;
        sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
        log_debug("Handed the guest connection to pid %d (uid %u) after %u attempt(s)", (int)c->pid,
                  (unsigned)c->uid, c->attempts);
    }
    if (c->state == CLIENT_CLOSING && wire_writer_pending(&c->writer) == 0) {
        return -ECONNRESET; /* done: close */
    }
    return 0;
}

static void agent_guest_state(Agent *a, bool up) {
    if (up && !a->guest_up) {
        a->guest_up_since = now_mono();
    }
    a->guest_up = up;
}

static int client_guest_connected(Client *c, int fd) {
    Agent *a = c->agent;
    uint64_t now = now_mono();

    agent_guest_state(a, true);
    c->handoff_fd = fd;
    c->connected = (MsgConnected){
        .vm_start_us = 0,
        .guest_wait_us = now - c->connect_start,
    };
    return client_flush(c);
}

static int client_try_guest(Client *c);

static int on_timer(sd_event_source *s, uint64_t usec, void *userdata);

/* One attempt failed with error r: retry after a backoff, or give up at
 * the deadline. */
static int client_guest_failed(Client *c, int r) {
    Agent *a = c->agent;
    uint64_t now = now_mono();
    char msg[512];

    agent_guest_state(a, false);
    c->last_error = r;
    sd_event_source_disable_unref(c->guest_io);
    c->guest_io = NULL;
    c->guest_fd = safe_close(c->guest_fd);
    if (now >= c->deadline) {
        log_warning_errno(r,
                          "Guest agent of VM '%s' at %s did not answer within %" PRIu64
                          " s, giving up for pid %d: %m",
                          a->vm_name, a->guest_str, a->guest_timeout / 1000000, (int)c->pid);
        snprintf(msg, sizeof(msg),
                 "the guest agent of VM '%s' did not answer within %" PRIu64 " s (%s: %s)",
                 a->vm_name, a->guest_timeout / 1000000, a->guest_str, strerror(-r));
        return client_fail(c, WIRE_ERR_UNAVAILABLE, msg);
    }
    if (c->attempts == 1) {
        log_info_errno(r, "Guest agent of VM '%s' at %s not answering yet, retrying: %m",
                       a->vm_name, a->guest_str);
    }
    uint64_t wait = MIN(c->backoff, c->deadline - now);
    c->backoff = MIN(c->backoff * 2, BACKOFF_MAX_USEC);
    int q = sd_event_source_set_time(c->timer, now + wait);
    if (q >= 0) {
        q = sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);
    }
    return q;
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
        r = sd_event_source_set_time(c->timer, c->deadline);
        if (r >= 0) {
            r = sd_event_source_set_enabled(c->timer, SD_EVENT_ONESHOT);
        }
        return r;
    }
    return client_guest_failed(c, r);
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

static int client_start_connect(Client *c) {
    Agent *a = c->agent;

    c->state = CLIENT_CONNECTING;
    c->leased = true;
    a->leases++;
    c->connect_start = now_mono();
    c->deadline = c->connect_start + a->guest_timeout;
    c->backoff = BACKOFF_MIN_USEC;
    log_debug("Connect from pid %d (uid %u), %u lease(s)", (int)c->pid, (unsigned)c->uid,
              a->leases);
    return client_try_guest(c);
}

static int client_send_status(Client *c) {
    Agent *a = c->agent;
    uint64_t now = now_mono();
    Msg m = {
        .type = MSG_HOST_STATUS,
        .host_status =
            {
                .vm = a->vm_name,
                .running = a->guest_up,
                .state = a->guest_up ? VM_RUNNING : VM_STOPPED,
                .leases = a->leases,
                .uptime_ms = a->guest_up ? (now - a->guest_up_since) / 1000 : 0,
                .idle_ms = a->leases > 0 ? 0 : (now - a->last_lease_end) / 1000,
            },
    };
    c->state = CLIENT_CLOSING;
    return client_queue(c, &m);
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

static int handle_connect(Client *c, const Msg *m) {
    sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
    return client_start_connect(c);
}

static int handle_host_status(Client *c, const Msg *m) {
    sd_event_source_set_enabled(c->timer, SD_EVENT_OFF);
    return client_send_status(c);
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
    pid_t pid;
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
    c->handoff_fd = -EBADF;
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
    if (r >= 0 && !a->accept_pause) {
        r = sd_event_add_time_relative(a->event, &a->accept_pause, CLOCK_MONOTONIC,
                                       ACCEPT_PAUSE_USEC, 0, on_accept_resume, a);
    } else if (r >= 0) {
        r = sd_event_source_set_time_relative(a->accept_pause, ACCEPT_PAUSE_USEC);
        if (r >= 0) {
            r = sd_event_source_set_enabled(a->accept_pause, SD_EVENT_ONESHOT);
        }
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

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
    Agent *a = userdata;
    log_info("Got signal %u, exiting", si->ssi_signo);
    return sd_event_exit(a->event, 0);
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
        *slash = '\0';
        if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
            return log_error_errno(-errno, "Cannot create %s: %m", dir);
        }
        /* One that was there may be anyone's: it must be a directory (not
         * a symlink) of ours that nobody else may write to, or the socket
         * could be swapped under us. */
        struct stat st;
        if (lstat(dir, &st) < 0) {
            return log_error_errno(-errno, "Cannot check %s: %m", dir);
        }
        if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 0022)) {
            return log_error_errno(-EPERM,
                                   "%s must be a directory owned by uid %u that only it may "
                                   "write to",
                                   dir, (unsigned)geteuid());
        }
    }
    /* Born 0600 (umask 0177): nobody may connect before the owner is
     * right, and no chmod by path is needed after. */
    mode_t old = umask(0177);
    r = addr_listen(addr, &a->listen_fd);
    umask(old);
    if (r < 0) {
        return log_error_errno(r, "Cannot listen on unix:%s: %m", path);
    }
    a->socket_path = strdup(path);
    if (!a->socket_path) {
        return log_error_errno(-ENOMEM, "Out of memory");
    }
    if (a->host && a->host->user && a->host->user_uid != geteuid()) {
        /* Not through a symlink put in the socket's place. */
        if (fchownat(AT_FDCWD, path, a->host->user_uid, a->host->user_gid,
                     AT_SYMLINK_NOFOLLOW) < 0) {
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
    while (a->clients) {
        client_free(a->clients);
    }
    sd_event_source_disable_unref(a->accept_pause);
    sd_event_source_disable_unref(a->listen_src);
    if (a->socket_path) {
        unlink(a->socket_path);
        free(a->socket_path);
    }
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
           "Broker between vm-run and friends and the guest agent of one VM.\n"
           "\n"
           "  --check               validate host.json and every vms/*.json, one line\n"
           "                        per problem; exit 1 if there is any\n"
           "  --print-command       print the VM's crosvm command line, one argument\n"
           "                        per line, and exit\n"
           "  --bind-vfio           bind host.json's isolatedPciDevices to vfio-pci\n"
           "  --vm NAME             the VM (configuration: vms/NAME.json)\n"
           "  --listen ADDR         listen on ADDR (unix:PATH); default: the socket\n"
           "                        passed by systemd, else RUNTIME_DIR/NAME.sock\n"
           "  --guest ADDR          the guest agent (default vsock:ID:%u)\n"
           "  --guest-timeout SECS  how long to wait for the guest agent (default %u)\n"
           "  --no-vmm              do not start a VMM; attach to a running guest agent\n"
           "  --foreground          stay in the foreground (always the case)\n"
           "  --log-level LEVEL     error, warning, info, debug\n"
           "  -h, --help            show this help\n"
           "\n"
           "Environment: QUBES_LITE_CONFIG_DIR (default %s),\n"
           "QUBES_LITE_RUNTIME_DIR (default %s).\n",
           GUEST_AGENT_VSOCK_PORT, GUEST_TIMEOUT_DEFAULT_S, DEFAULT_CONFIG_DIR,
           DEFAULT_RUNTIME_DIR);
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
static int load_host_or_defaults(HostConfig **ret, ConfigError *cerr) {
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
    ConfigError cerr;

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
    r = crosvm_print_command(host, vm, stdout, &cerr);
    if (r < 0) {
        die("%s", cerr.message);
    }
    return fflush(stdout) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

static int run_bind_vfio(void) {
    _cleanup_(host_config_freep) HostConfig *host = NULL;
    ConfigError cerr;

    if (load_host_or_defaults(&host, &cerr) < 0) {
        die("%s", cerr.message);
    }
    return vfio_bind_all(&host->isolated_pci_devices, stderr) == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
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
    };
    static const struct option longopts[] = {
        {"check", no_argument, NULL, ARG_CHECK},
        {"print-command", no_argument, NULL, ARG_PRINT_COMMAND},
        {"bind-vfio", no_argument, NULL, ARG_BIND_VFIO},
        {"vm", required_argument, NULL, ARG_VM},
        {"listen", required_argument, NULL, ARG_LISTEN},
        {"guest", required_argument, NULL, ARG_GUEST},
        {"guest-timeout", required_argument, NULL, ARG_GUEST_TIMEOUT},
        {"no-vmm", no_argument, NULL, ARG_NO_VMM},
        {"foreground", no_argument, NULL, ARG_FOREGROUND},
        {"log-level", required_argument, NULL, ARG_LOG_LEVEL},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    Agent a = {.listen_fd = -EBADF, .guest_timeout = GUEST_TIMEOUT_DEFAULT_S * 1000000ULL};
    const char *listen_arg = NULL, *guest_arg = NULL;
    bool no_vmm = false;
    int mode = 0; /* 0: serve, else ARG_CHECK, ARG_PRINT_COMMAND or ARG_BIND_VFIO */
    ConfigError cerr;
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
            a.guest_timeout = v * 1000000ULL;
            break;
        case ARG_NO_VMM:
            no_vmm = true;
            break;
        case ARG_FOREGROUND:
            break;
        case ARG_CHECK:
        case ARG_PRINT_COMMAND:
        case ARG_BIND_VFIO:
            if (mode != 0 && mode != c) {
                die("--check, --print-command and --bind-vfio exclude each other");
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
    if (!no_vmm) {
        die("This build only attaches to a running guest agent: pass --no-vmm "
            "(starting the VM is not implemented yet)");
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
    sd_notify(0, "READY=1");
    r = sd_event_loop(a.event);
    if (r < 0) {
        log_error_errno(r, "Event loop failed: %m");
    }
out:
    agent_done(&a);
    return r < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
