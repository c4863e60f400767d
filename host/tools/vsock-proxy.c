/* qubes-lite-vsock-proxy CID PORT | ADDRESS: connects to an AF_VSOCK
 * stream socket, or to any address proto/addr.h takes (hvsock:PATH:PORT:
 * the VM's port through its qubes-lite-vsock device, whose CONNECT/OK
 * lines addr_connect() exchanges), and relays stdin to it and it to
 * stdout: ssh's ProxyCommand for VMs (vm-shell --ssh), usable by anything
 * that speaks over stdio.
 *
 * End of stdin half-closes the connection (shutdown SHUT_WR), so the peer
 * sees the end of its input and may still answer. The peer's end of
 * output closes stdout; the proxy exits once both directions have ended,
 * or when the peer closed the connection for good.
 *
 * Exit status: 0 when the connection ended normally, 1 when it could not
 * be made or failed, 2 for a bad command line. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/vm_sockets.h>

#include "addr.h"
#include "util.h"

#define BUF_SIZE (64u * 1024u)
/* How often to look whether a peer that ended its output is gone. */
#define PEER_PROBE_MS 200

static const char usage[] =
    "Usage: qubes-lite-vsock-proxy CID PORT\n"
    "       qubes-lite-vsock-proxy ADDRESS\n"
    "Connect to vsock CID:PORT, or to ADDRESS (hvsock:PATH:PORT: the VM's vsock\n"
    "port PORT through the unix socket PATH of its qubes-lite-vsock device;\n"
    "vsock:CID:PORT, unix:PATH), and relay stdin to it and its output to stdout,\n"
    "e.g. as ssh's ProxyCommand. Exit status: 0 when the connection ended,\n"
    "1 when it could not be made or failed, 2 for a bad command line.\n";

static Addr addr;
/* What the messages call the peer: "vsock CID 3 port 22", or the address. */
static char peer[ADDR_STR_MAX + 32];
static bool stdout_blocking;

_noreturn_ _printf_(2, 3) static void fail(int status, const char *fmt, ...) {
    va_list ap;
    fputs("qubes-lite-vsock-proxy: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(status);
}

/* One direction: bytes read from `from` wait in buf until `to` takes them. */
typedef struct Pipe {
    int from, to;
    uint8_t buf[BUF_SIZE];
    size_t start, end;
    bool eof;  /* `from` ended */
    bool done; /* ... and everything was written, `to` shut down */
} Pipe;

static int peer_connect(void) {
    int fd;
    int r = addr_connect(&addr, 0, &fd);
    if (r < 0) {
        errno = -r;
        if (addr.family == AF_VSOCK && r == -EAFNOSUPPORT) {
            fail(1, "cannot create a vsock socket: %m (is the vsock module loaded?)");
        }
        /* vsock says "refused" as a reset; no route to a CID as ENODEV. A
         * device says it by closing: a reset too. */
        bool absent = r == -ECONNRESET || r == -ECONNREFUSED || r == -ENODEV ||
                      r == -ETIMEDOUT || r == -EHOSTUNREACH || r == -ENOENT;
        fail(1, "cannot connect to %s: %m%s", peer,
             absent ? " (is the VM running, and listening on that port?)" : "");
    }
    return fd;
}

/* Whether the peer closed the connection for good (it reads nothing any
 * more): a send of nothing fails then, with EPIPE or ENOTCONN, and
 * succeeds on a connection whose peer only ended its output. */
static bool peer_gone(int sock) {
    return send(sock, "", 0, MSG_NOSIGNAL | MSG_DONTWAIT) < 0 && errno != EAGAIN && errno != EINTR;
}

/* The end of a direction: nothing more goes to `to`. */
static void pipe_finish(Pipe *p, int sock) {
    p->done = true;
    if (p->to == sock) {
        /* The peer sees the end of its input; its answer still comes. */
        if (shutdown(sock, SHUT_WR) < 0 && errno != ENOTCONN) {
            fail(1, "cannot half-close the connection: %m");
        }
    } else {
        close(p->to);
    }
}

static void pipe_read(Pipe *p, int sock) {
    ssize_t n = read(p->from, p->buf + p->end, sizeof(p->buf) - p->end);
    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) {
            return;
        }
        if (p->from == sock && errno != ECONNRESET) {
            fail(1, "cannot read from %s: %m", peer);
        }
        /* A reset connection, or unreadable stdin: its end. */
        n = 0;
    }
    if (n == 0) {
        p->eof = true;
        if (p->start == p->end) {
            pipe_finish(p, sock);
        }
        return;
    }
    p->end += (size_t)n;
}

/* Returns false when the receiving side is gone. */
static bool pipe_write(Pipe *p, int sock) {
    size_t len = p->end - p->start;
    /* stdout may be a blocking pipe shared with others (we do not change
     * its flags): POLLOUT promises room for PIPE_BUF bytes, so a write of
     * no more never blocks, and the other direction keeps moving. */
    if (p->to != sock && stdout_blocking) {
        len = MIN(len, (size_t)PIPE_BUF);
    }
    ssize_t n = write(p->to, p->buf + p->start, len);
    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) {
            return true;
        }
        if (errno == EPIPE || errno == ECONNRESET) {
            return false;
        }
        if (p->to == sock) {
            fail(1, "cannot write to %s: %m", peer);
        }
        fail(1, "cannot write to stdout: %m");
    }
    p->start += (size_t)n;
    if (p->start == p->end) {
        p->start = p->end = 0;
        if (p->eof) {
            pipe_finish(p, sock);
        }
    }
    return true;
}

/* The fds one round of the relay waits for: each direction's reader
 * while its buffer has room, its writer while it holds bytes. */
typedef struct RelayPoll {
    struct pollfd pf[4];
    Pipe *owner[4];
    bool writing[4];
    nfds_t n;
} RelayPoll;

static void relay_poll_build(Pipe *const pipes[2], RelayPoll *rp) {
    rp->n = 0;
    for (int i = 0; i < 2; i++) {
        Pipe *p = pipes[i];
        if (p->done) {
            continue;
        }
        if (!p->eof && p->end < sizeof(p->buf)) {
            rp->owner[rp->n] = p;
            rp->writing[rp->n] = false;
            rp->pf[rp->n++] = (struct pollfd){.fd = p->from, .events = POLLIN};
        }
        if (p->end > p->start) {
            rp->owner[rp->n] = p;
            rp->writing[rp->n] = true;
            rp->pf[rp->n++] = (struct pollfd){.fd = p->to, .events = POLLOUT};
        }
    }
}

/* Relays stdin to the socket and the socket to stdout until both
 * directions are done, or the peer is gone; returns the exit status. */
static int relay(int sock) {
    static Pipe up, down; /* stdin -> socket, socket -> stdout */
    Pipe *const pipes[2] = {&up, &down};

    up = (Pipe){.from = STDIN_FILENO, .to = sock};
    down = (Pipe){.from = sock, .to = STDOUT_FILENO};
    while (!(up.done && down.done)) {
        RelayPoll rp;

        relay_poll_build(pipes, &rp);
        /* With the peer's output ended, its closing the connection for
         * good must end ours even while stdin stays open and quiet; vsock
         * raises no POLLHUP for it, so look every little while. */
        int timeout = down.done && !up.done ? PEER_PROBE_MS : -1;
        if (poll(rp.pf, rp.n, timeout) < 0) {
            if (errno == EINTR) {
                continue;
            }
            fail(1, "poll() failed: %m");
        }
        for (nfds_t i = 0; i < rp.n; i++) {
            Pipe *p = rp.owner[i];
            if (!rp.pf[i].revents || p->done) {
                continue;
            }
            if (!rp.writing[i]) {
                pipe_read(p, sock);
            } else if (!pipe_write(p, sock)) {
                /* The receiver is gone: so is this direction; when it is
                 * the peer, nothing more will come from it either that
                 * anyone could use. */
                if (p == &down) {
                    return 0;
                }
                p->done = true;
                p->start = p->end = 0;
            }
        }
        if (down.done && !up.done && peer_gone(sock)) {
            return 0;
        }
    }
    return 0;
}

/* CID and PORT, or ADDRESS, into addr and peer; a bad one exits 2. */
static void parse_address(int argc, char **argv) {
    unsigned long long cid, port;

    if (argc == 2) {
        if (addr_parse(argv[1], &addr) < 0) {
            fail(2, "not an address: '%.200s'", argv[1]);
        }
        (void)addr_format(&addr, peer, sizeof(peer));
        return;
    }
    if (parse_uint(argv[1], 0, UINT32_MAX, &cid) < 0) {
        fail(2, "not a CID: '%.32s'", argv[1]);
    }
    if (parse_uint(argv[2], 0, UINT32_MAX, &port) < 0) {
        fail(2, "not a port: '%.32s'", argv[2]);
    }
    addr = (Addr){
        .family = AF_VSOCK,
        .vm = {.svm_family = AF_VSOCK, .svm_cid = (unsigned)cid, .svm_port = (unsigned)port},
        .len = sizeof(struct sockaddr_vm),
    };
    snprintf(peer, sizeof(peer), "vsock CID %llu port %llu", cid, port);
}

int main(int argc, char **argv) {
    if (argc == 2 && (streq(argv[1], "--help") || streq(argv[1], "-h"))) {
        fputs(usage, stdout);
        return 0;
    }
    if (argc > 1 && argv[1][0] == '-' && argv[1][1] != '\0') {
        fail(2, "unknown option '%.64s' (see --help)", argv[1]);
    }
    if (argc != 2 && argc != 3) {
        fail(2, "wants ADDRESS, or CID PORT (see --help)");
    }
    parse_address(argc, argv);
    /* A reader that went away is the end of that direction, not a signal. */
    signal(SIGPIPE, SIG_IGN);

    int sock = peer_connect();
    /* The socket is ours alone: non-blocking, so a slow peer never holds
     * the other direction up. */
    int r = fd_nonblock(sock, true);
    if (r < 0) {
        errno = -r;
        fail(1, "cannot set up the connection: %m");
    }
    int fl = fcntl(STDOUT_FILENO, F_GETFL);
    stdout_blocking = fl < 0 || !(fl & O_NONBLOCK);
    return relay(sock);
}
