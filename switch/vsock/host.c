/* The host side of qubes-lite-vsock: see host.h. */
#include "host.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "addr.h"
#include "log.h"
#include "util.h"

/* One host socket: a program on PATH (first sending its line, then a
 * connection's host side) or our connection to a PATH_P listener. */
typedef struct HostSock {
    Watch watch; /* first: epoll's data.ptr points here */
    int fd;
    VsockConn *conn; /* while the multiplexer has it */
    bool privileged;
    uint64_t deadline; /* WATCH_CLIENT: for its line */
    struct HostSock *prev, *next; /* the clients waiting, or the dead */
} HostSock;

typedef struct SockList {
    HostSock *head, *tail;
    unsigned n;
} SockList;

struct VsockHost {
    Watch listen_watch;
    int epoll_fd;
    int listen_fd;
    char *uds_path;
    uid_t euid;
    uid_t root_alias; /* (uid_t)-1: none */
    VsockMux *mux;
    bool guest_ready;
    SockList clients; /* in deadline order: one timeout for all */
    SockList dead;
    VsockHostStats stats;
};

static void list_append(SockList *l, HostSock *s) {
    s->prev = l->tail;
    s->next = NULL;
    if (l->tail) {
        l->tail->next = s;
    } else {
        l->head = s;
    }
    l->tail = s;
    l->n++;
}

static void list_remove(SockList *l, HostSock *s) {
    if (s->prev) {
        s->prev->next = s->next;
    } else {
        l->head = s->next;
    }
    if (s->next) {
        s->next->prev = s->prev;
    } else {
        l->tail = s->prev;
    }
    s->prev = s->next = NULL;
    l->n--;
}

static int watch_fd(VsockHost *h, int op, HostSock *s, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.ptr = &s->watch};
    return epoll_ctl(h->epoll_fd, op, s->fd, &ev) < 0 ? -errno : 0;
}

/* Edge-triggered: the multiplexer keeps readable and writable until a
 * short read or write, so no interest ever needs changing. */
#define STREAM_EVENTS (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)

static HostSock *sock_new(int fd, WatchKind kind) {
    HostSock *s = calloc(1, sizeof(*s));
    if (!s) {
        return NULL;
    }
    s->watch.kind = kind;
    s->fd = fd;
    return s;
}

/* Closed now, freed by vsock_host_collect(): the current batch of epoll
 * events may still name it. */
static void sock_bury(VsockHost *h, HostSock *s) {
    if (s->watch.kind == WATCH_CLIENT) {
        list_remove(&h->clients, s);
    }
    s->fd = safe_close(s->fd); /* leaves the epoll set with it */
    s->conn = NULL;
    s->watch.kind = WATCH_STREAM;
    list_append(&h->dead, s);
}

/* ---- the multiplexer's ways to the host side ----------------------------------- */

static HostSock *sock_of(VsockConn *c) {
    return vsock_conn_userdata(c);
}

static int host_open(void *ctx, VsockConn *c, uint32_t port) {
    VsockHost *h = ctx;
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    int n = snprintf(un.sun_path, sizeof(un.sun_path), "%s_%u", h->uds_path, port);
    if (n < 0 || (size_t)n >= sizeof(un.sun_path)) {
        return -ENAMETOOLONG;
    }
    _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    /* A unix stream connect is never in progress: it is made, or refused
     * (nothing listens: ENOENT, ECONNREFUSED; a full backlog: EAGAIN). */
    if (connect(fd, (struct sockaddr *)&un,
                (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)n + 1)) < 0) {
        return -errno;
    }
    HostSock *s = sock_new(fd, WATCH_STREAM);
    if (!s) {
        return -ENOMEM;
    }
    int r = watch_fd(h, EPOLL_CTL_ADD, s, STREAM_EVENTS);
    if (r < 0) {
        free(s);
        return r;
    }
    TAKE_FD(fd);
    s->conn = c;
    vsock_conn_set_userdata(c, s);
    log_debug("Guest port %u connected to %s", vsock_conn_peer_port(c), un.sun_path);
    return 0;
}

static int host_established(void *ctx, VsockConn *c) {
    HostSock *s = sock_of(c);
    char line[HVSOCK_LINE_MAX];
    int n = hvsock_line_format(line, sizeof(line), "OK", vsock_conn_local_port(c));
    if (n < 0) {
        return n;
    }
    /* Into an empty socket buffer, in one piece: the client may rely on
     * reading the whole line at once. */
    ssize_t k = send(s->fd, line, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (k < 0) {
        return -errno;
    }
    return k == n ? 0 : -EIO;
}

static ssize_t host_write(void *ctx, VsockConn *c, const struct iovec *iov, int n) {
    HostSock *s = sock_of(c);
    struct msghdr mh = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n};
    ssize_t k;
    do {
        k = sendmsg(s->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (k < 0 && errno == EINTR);
    if (k < 0) {
        return errno == EAGAIN ? 0 : -errno;
    }
    return k;
}

static ssize_t host_read(void *ctx, VsockConn *c, const struct iovec *iov, int n) {
    HostSock *s = sock_of(c);
    struct msghdr mh = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n};
    ssize_t k;
    do {
        k = recvmsg(s->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    } while (k < 0 && errno == EINTR);
    return k < 0 ? -errno : k;
}

static void host_shutdown(void *ctx, VsockConn *c, int how) {
    (void)shutdown(sock_of(c)->fd, how);
}

static void host_close(void *ctx, VsockConn *c) {
    VsockHost *h = ctx;
    HostSock *s = sock_of(c);
    log_debug("Connection %u <-> guest %u closed", vsock_conn_local_port(c),
              vsock_conn_peer_port(c));
    sock_bury(h, s);
}

const VsockMuxOps vsock_host_ops = {
    .host_open = host_open,
    .host_established = host_established,
    .host_write = host_write,
    .host_read = host_read,
    .host_shutdown = host_shutdown,
    .host_close = host_close,
};

/* ---- programs on PATH --------------------------------------------------------------- */

static void on_client(VsockHost *h, HostSock *s, uint64_t now);

static void on_accept(VsockHost *h, uint64_t now) {
    for (;;) {
        int fd = accept4(h->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
                log_warning_errno(-errno, "Cannot accept on %s: %m", h->uds_path);
            }
            return;
        }
        h->stats.accepted++;
        if (h->clients.n >= VSOCK_HOST_MAX_CLIENTS) {
            h->stats.too_many++;
            safe_close(fd);
            continue;
        }
        uid_t uid;
        if (peer_ucred(fd, &uid, NULL, NULL) < 0) {
            safe_close(fd);
            continue;
        }
        HostSock *s = sock_new(fd, WATCH_CLIENT);
        if (!s) {
            safe_close(fd);
            continue;
        }
        /* Root, or the user PATH belongs to (ours): what only a
         * privileged process could do on the kernel's vsock. From inside
         * a user namespace, an unmapped uid reads as the overflow uid,
         * never as one of these unless that can only be root
         * (vsock_host_set_root_alias()). */
        s->privileged = uid == 0 || uid == h->euid || uid == h->root_alias;
        s->deadline = now + VSOCK_HOST_LINE_TIMEOUT_USEC;
        if (watch_fd(h, EPOLL_CTL_ADD, s, EPOLLIN | EPOLLRDHUP | EPOLLET) < 0) {
            safe_close(fd);
            free(s);
            continue;
        }
        list_append(&h->clients, s);
        /* Its line is usually there already: a burst of programs does not
         * count against those waiting for theirs. */
        on_client(h, s, now);
    }
}

/* The CONNECT line, peeked and consumed alone: what follows it is the
 * stream's, read once the guest accepted. */
static void on_client(VsockHost *h, HostSock *s, uint64_t now) {
    char buf[HVSOCK_LINE_MAX];
    uint32_t port;
    ssize_t k;

    do {
        k = recv(s->fd, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);
    } while (k < 0 && errno == EINTR);
    if (k < 0 && errno == EAGAIN) {
        return;
    }
    if (k <= 0) {
        sock_bury(h, s); /* gone before its line */
        return;
    }
    int len = hvsock_line_parse(buf, (size_t)k, "CONNECT", &port);
    if (len == 0) {
        return; /* the rest comes with the next edge */
    }
    if (len < 0) {
        char shown[HVSOCK_LINE_MAX * 4 + 1];
        h->stats.bad_lines++;
        log_debug("Closing a client on %s: not a CONNECT line: \"%s\"", h->uds_path,
                  str_sanitize(buf, (size_t)k, shown, sizeof(shown)));
        sock_bury(h, s);
        return;
    }
    if (recv(s->fd, buf, (size_t)len, MSG_DONTWAIT) != len) {
        sock_bury(h, s);
        return;
    }
    if (!h->guest_ready) {
        h->stats.no_guest++;
        sock_bury(h, s);
        return;
    }
    VsockConn *c;
    int r = vsock_mux_connect(h->mux, port, s->privileged, s, now, &c);
    if (r < 0) {
        if (r == -EMFILE || r == -EADDRNOTAVAIL) {
            h->stats.too_many++;
        }
        log_debug_errno(r, "Cannot connect to guest port %u: %m", port);
        sock_bury(h, s);
        return;
    }
    if (s->privileged) {
        h->stats.privileged++;
    }
    list_remove(&h->clients, s);
    s->watch.kind = WATCH_STREAM;
    s->conn = c;
    /* MOD reports what is ready already (bytes sent behind the line). */
    if (watch_fd(h, EPOLL_CTL_MOD, s, STREAM_EVENTS) < 0) {
        vsock_conn_host_gone(c);
        return;
    }
    log_debug("Host port %u connecting to guest port %u", vsock_conn_local_port(c), port);
}

void vsock_host_handle(VsockHost *h, Watch *w, uint32_t events, uint64_t now) {
    HostSock *s = (HostSock *)w;
    switch (w->kind) {
    case WATCH_UDS_LISTEN:
        on_accept(h, now);
        break;
    case WATCH_CLIENT:
        on_client(h, s, now);
        break;
    case WATCH_STREAM:
        if (s->fd >= 0 && s->conn) {
            vsock_conn_host_events(s->conn, events);
        }
        break;
    default:
        break;
    }
}

void vsock_host_tick(VsockHost *h, uint64_t now) {
    while (h->clients.head && h->clients.head->deadline <= now) {
        h->stats.line_timeouts++;
        sock_bury(h, h->clients.head);
    }
}

uint64_t vsock_host_next_deadline(const VsockHost *h) {
    return h->clients.head ? h->clients.head->deadline : UINT64_MAX;
}

void vsock_host_collect(VsockHost *h) {
    while (h->dead.head) {
        HostSock *s = h->dead.head;
        list_remove(&h->dead, s);
        free(s);
    }
}

void vsock_host_set_mux(VsockHost *h, VsockMux *m) {
    h->mux = m;
}

void vsock_host_set_guest_ready(VsockHost *h, bool ready) {
    h->guest_ready = ready;
}

int vsock_host_new(int epoll_fd, int listen_fd, const char *uds_path, VsockHost **ret) {
    VsockHost *h = calloc(1, sizeof(*h));
    if (!h) {
        return -ENOMEM;
    }
    h->uds_path = strdup(uds_path);
    if (!h->uds_path) {
        free(h);
        return -ENOMEM;
    }
    h->listen_watch.kind = WATCH_UDS_LISTEN;
    h->epoll_fd = epoll_fd;
    h->listen_fd = listen_fd;
    h->euid = geteuid();
    h->root_alias = (uid_t)-1;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &h->listen_watch};
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listen_fd, &ev) < 0) {
        int r = -errno;
        free(h->uds_path);
        free(h);
        return r;
    }
    *ret = h;
    return 0;
}

void vsock_host_set_root_alias(VsockHost *h, uid_t uid) {
    h->root_alias = uid;
}

void vsock_host_free(VsockHost *h) {
    if (!h) {
        return;
    }
    while (h->clients.head) {
        sock_bury(h, h->clients.head);
    }
    vsock_host_collect(h);
    safe_close(h->listen_fd);
    free(h->uds_path);
    free(h);
}

const VsockHostStats *vsock_host_stats(const VsockHost *h) {
    return &h->stats;
}
