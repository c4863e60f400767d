/* qubes-lite-vsock: one VM's virtio-vsock device over vhost-user, its host
 * side behind a unix socket. One process, one thread, one epoll. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "addr.h"
#include "device.h"
#include "host.h"
#include "log.h"
#include "mux.h"
#include "util.h"

#define PROGRAM "qubes-lite-vsock"

enum {
    EXIT_USAGE = 2,
};

/* Connections at once, both ways together (each holds one descriptor). */
#define MAX_CONNS 4096
/* What the guest may send on a connection before the host side took it:
 * our receive window, and the most a connection ever buffers. */
#define CONN_BUF_SIZE (64 * 1024)
/* The guest's answer to a REQUEST (Linux answers at once, from the
 * kernel; TCG guests under load take longer than real ones). */
#define CONNECT_TIMEOUT_USEC (10 * 1000000ull)
/* The guest's RST after our SHUTDOWN of both ways (Linux's own wait is 8 s). */
#define CLOSE_TIMEOUT_USEC (10 * 1000000ull)
/* Descriptors besides the connections': sockets, epoll, eventfds. */
#define SPARE_FDS 64

typedef struct Options {
    const char *socket;
    const char *uds_path;
    uint64_t guest_cid;
    const char *log_level;
    bool no_sandbox;
    const char *seccomp_mode;
} Options;

typedef struct Program {
    int epoll_fd;
    Watch signal_watch, vhost_listen_watch, vhost_conn_watch;
    Watch kick_watch[VSOCK_N_QUEUES];
    int signal_fd;
    int vhost_listen_fd;
    int vhost_fd; /* the frontend's connection */
    int kick_reg[VSOCK_N_QUEUES];
    struct stat vhost_bound, uds_bound;
    const char *vhost_path, *uds_path;
    VsockMux *mux;
    VsockHost *host;
    VsockDevice *dev;
    bool more; /* the device left work for the next round */
    uint64_t violations_logged;
    uint64_t last_report;
} Program;

static void usage(FILE *f) {
    fprintf(f, "Usage: " PROGRAM " --socket VHOST_SOCKET --uds-path PATH --guest-cid CID\n"
               "                         [--no-sandbox] [--seccomp-mode kill|trap|log|disabled]\n"
               "                         [--log-level LEVEL]\n"
               "\n"
               "One VM's virtio-vsock device over vhost-user: the VMM connects to\n"
               "VHOST_SOCKET. Host programs reach the guest's port P by connecting to the\n"
               "unix socket PATH and writing \"CONNECT P\\n\" (answered \"OK <host-port>\\n\");\n"
               "the guest's connections to the host's port P go to the unix socket PATH_P.\n"
               "\n"
               "  --socket VHOST_SOCKET  the vhost-user socket to listen on (mode 0600)\n"
               "  --uds-path PATH        the host side's unix socket (mode 0600)\n"
               "  --guest-cid CID        the guest's CID (3 to 4294967294)\n"
               "  --no-sandbox           run without namespaces and seccomp (debugging)\n"
               "  --seccomp-mode MODE    kill (default), trap, log or disabled\n"
               "  --log-level LEVEL      error, warning, info (default) or debug\n"
               "  --help                 this text\n");
}

static _noreturn_ void usage_error(const char *fmt, ...) _printf_(1, 2);
static _noreturn_ void usage_error(const char *fmt, ...) {
    va_list ap;
    fputs(PROGRAM ": ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\nTry '" PROGRAM " --help'.\n", stderr);
    exit(EXIT_USAGE);
}

static void parse_options(int argc, char **argv, Options *opt) {
    enum { OPT_SOCKET = 256, OPT_UDS, OPT_CID, OPT_NO_SANDBOX, OPT_SECCOMP, OPT_LOG, OPT_HELP };
    static const struct option longopts[] = {
        {"socket", required_argument, NULL, OPT_SOCKET},
        {"uds-path", required_argument, NULL, OPT_UDS},
        {"guest-cid", required_argument, NULL, OPT_CID},
        {"no-sandbox", no_argument, NULL, OPT_NO_SANDBOX},
        {"seccomp-mode", required_argument, NULL, OPT_SECCOMP},
        {"log-level", required_argument, NULL, OPT_LOG},
        {"help", no_argument, NULL, OPT_HELP},
        {0},
    };
    unsigned long long v;

    *opt = (Options){0};
    opterr = 0;
    for (;;) {
        int c = getopt_long(argc, argv, "", longopts, NULL);
        if (c < 0) {
            break;
        }
        switch (c) {
        case OPT_SOCKET:
            opt->socket = optarg;
            break;
        case OPT_UDS:
            opt->uds_path = optarg;
            break;
        case OPT_CID:
            /* 0, 1 and 2 are the hypervisor, the local CID and the host;
             * the highest is "any". */
            if (parse_uint(optarg, 3, UINT32_MAX - 1, &v) < 0) {
                usage_error("bad --guest-cid '%s' (3 to 4294967294)", optarg);
            }
            opt->guest_cid = v;
            break;
        case OPT_NO_SANDBOX:
            opt->no_sandbox = true;
            break;
        case OPT_SECCOMP:
            if (!streq(optarg, "kill") && !streq(optarg, "trap") && !streq(optarg, "log") &&
                !streq(optarg, "disabled")) {
                usage_error("unknown seccomp mode '%s' (kill, trap, log, disabled)", optarg);
            }
            opt->seccomp_mode = optarg;
            break;
        case OPT_LOG:
            if (log_level_from_string(optarg) < 0) {
                usage_error("unknown log level '%s' (error, warning, info, debug)", optarg);
            }
            opt->log_level = optarg;
            break;
        case OPT_HELP:
            usage(stdout);
            exit(EXIT_SUCCESS);
        default:
            if (optopt) {
                usage_error("option '%s' needs an argument", argv[optind - 1]);
            }
            usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) {
        usage_error("unexpected argument '%s'", argv[optind]);
    }
    if (!opt->socket) {
        usage_error("--socket is required");
    }
    if (!opt->uds_path) {
        usage_error("--uds-path is required");
    }
    if (opt->guest_cid == 0) {
        usage_error("--guest-cid is required");
    }
}

/* ---- set-up ----------------------------------------------------------------------- */

/* A unix socket path born 0600 (umask 0177 around bind): nobody but its
 * owner, and root, may connect, from the first moment. A stale socket of
 * an earlier run (nobody listening) is replaced. */
static int listen_private(const char *path, int *ret_fd, struct stat *ret_st) {
    char spec[ADDR_STR_MAX];
    Addr a;
    int r;

    snprintf(spec, sizeof(spec), "unix:%s", path);
    r = addr_parse(spec, &a);
    if (r < 0) {
        return -ENAMETOOLONG;
    }
    mode_t old = umask(0177);
    r = addr_listen(&a, ret_fd);
    umask(old);
    if (r < 0) {
        return r;
    }
    if (lstat(path, ret_st) < 0) {
        return -errno;
    }
    return 0;
}

/* One descriptor per connection: a thousand and more need more than the
 * usual soft limit of 1024. */
static unsigned raise_fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        return 1024 - SPARE_FDS;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
        (void)getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur <= 2 * SPARE_FDS) {
        return SPARE_FDS;
    }
    return (unsigned)MIN((rlim_t)MAX_CONNS, rl.rlim_cur - SPARE_FDS);
}

static void epoll_watch(Program *p, int fd, Watch *w) {
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = w};
    if (epoll_ctl(p->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        die("epoll_ctl: %m");
    }
}

static void epoll_unwatch(Program *p, int fd) {
    /* The fd may already be closed by its owner (a replaced kick fd). */
    (void)epoll_ctl(p->epoll_fd, EPOLL_CTL_DEL, fd, NULL);
}

/* ---- the frontend ------------------------------------------------------------------- */

/* Registers the device's kick fds anew: they come and go with the
 * frontend's messages. One epoll cannot watch is refused. */
static int sync_kick_fds(Program *p) {
    int ret = 0;
    for (unsigned q = 0; q < VSOCK_N_QUEUES; q++) {
        int fd = vsock_device_kick_fd(p->dev, q);
        if (fd == p->kick_reg[q]) {
            continue;
        }
        if (p->kick_reg[q] >= 0) {
            epoll_unwatch(p, p->kick_reg[q]);
            p->kick_reg[q] = -EBADF;
        }
        if (fd >= 0) {
            (void)fd_nonblock(fd, true);
            struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &p->kick_watch[q]};
            if (epoll_ctl(p->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
                ret = -errno;
                continue;
            }
            p->kick_reg[q] = fd;
        }
    }
    return ret;
}

static void frontend_drop(Program *p, const char *why) {
    if (p->vhost_fd < 0) {
        return;
    }
    unsigned n = vsock_mux_n_conns(p->mux);
    log_info("Frontend %s; %u connection%s reset", why, n, n == 1 ? "" : "s");
    vsock_device_detach(p->dev);
    (void)sync_kick_fds(p);
    epoll_unwatch(p, p->vhost_fd);
    p->vhost_fd = safe_close(p->vhost_fd);
    epoll_watch(p, p->vhost_listen_fd, &p->vhost_listen_watch);
    vsock_host_set_guest_ready(p->host, false);
}

static void on_vhost_listen(Program *p) {
    int fd = accept4(p->vhost_listen_fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
            log_warning_errno(-errno, "Cannot accept on %s: %m", p->vhost_path);
        }
        return;
    }
    int r = vsock_device_attach(p->dev);
    if (r < 0) {
        log_error_errno(r, "Cannot create the device: %m");
        safe_close(fd);
        return;
    }
    /* vu_dev_serve() reads whole messages from a blocking socket. */
    (void)fd_nonblock(fd, false);
    epoll_unwatch(p, p->vhost_listen_fd); /* one frontend at a time */
    p->vhost_fd = fd;
    epoll_watch(p, fd, &p->vhost_conn_watch);
    log_info("Frontend connected");
}

static void on_vhost_conn(Program *p) {
    int r = vsock_device_serve(p->dev, p->vhost_fd);
    if (r == 0 || r == -ECONNRESET || r == -EPIPE) {
        frontend_drop(p, "disconnected");
        return;
    }
    if (r < 0) {
        char why[128];
        snprintf(why, sizeof(why), "broke the vhost-user protocol (%s): dropped", strerror(-r));
        frontend_drop(p, why);
        return;
    }
    r = sync_kick_fds(p);
    if (r < 0) {
        frontend_drop(p, "gave a kick fd that cannot be polled: dropped");
        return;
    }
    vsock_host_set_guest_ready(p->host, vsock_device_guest_ready(p->dev));
    p->more = true;
}

static void on_kick(Program *p, unsigned q) {
    uint64_t v;
    if (q >= VSOCK_N_QUEUES || p->kick_reg[q] < 0) {
        return;
    }
    if (read(p->kick_reg[q], &v, sizeof(v)) < 0 && errno != EAGAIN) {
        log_debug_errno(-errno, "Kick fd of queue %u: %m", q);
    }
    vsock_device_kicked(p->dev, q);
}

/* ---- reports -------------------------------------------------------------------------- */

static void report(Program *p) {
    const VsockMuxStats *m = vsock_mux_stats(p->mux);
    const VsockHostStats *h = vsock_host_stats(p->host);
    const VsockDeviceStats *d = vsock_device_stats(p->dev);
    log_info("connections now %u (buffers %u); host %" PRIu64 " (privileged %" PRIu64
             "), guest %" PRIu64 "; refused %" PRIu64 ", violations %" PRIu64
             ", unknown %" PRIu64 ", dropped %" PRIu64 ", timeouts %" PRIu64
             "; bytes to host %" PRIu64 ", to guest %" PRIu64 "; packets from guest %" PRIu64
             ", to guest %" PRIu64 ", bad chains %" PRIu64 "; transport resets %" PRIu64
             "; clients: bad lines %" PRIu64 ", no guest %" PRIu64 ", too many %" PRIu64
             ", line timeouts %" PRIu64,
             vsock_mux_n_conns(p->mux), vsock_mux_n_buffers(p->mux), m->host_conns,
             h->privileged, m->guest_conns, m->refused, m->violations, m->unknown, m->dropped,
             m->timeouts, m->to_host_bytes, m->to_guest_bytes, d->tx_packets, d->rx_packets,
             d->bad_chains, d->resets_sent, h->bad_lines, h->no_guest, h->too_many,
             h->line_timeouts);
}

/* Protocol violations are the guest's doing: said at most every 10 s, so
 * that a guest cannot fill the journal. */
static void report_violations(Program *p, uint64_t now) {
    uint64_t v = vsock_mux_stats(p->mux)->violations;
    if (v != p->violations_logged && now - p->last_report >= 10 * 1000000ull) {
        log_warning("The guest broke the vsock protocol on %" PRIu64
                    " connection(s) so far (each was reset)",
                    v);
        p->violations_logged = v;
        p->last_report = now;
    }
}

/* 1: go on; 0: asked to stop. */
static int on_signal(Program *p) {
    struct signalfd_siginfo si;
    while (read(p->signal_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGUSR1) {
            report(p);
            continue;
        }
        log_info("Got %s, stopping", strsignal((int)si.ssi_signo));
        return 0;
    }
    return 1;
}

/* ---- the loop ------------------------------------------------------------------------- */

static int epoll_timeout(Program *p, uint64_t now) {
    if (p->more) {
        return 0;
    }
    uint64_t next = MIN(vsock_mux_next_deadline(p->mux), vsock_host_next_deadline(p->host));
    if (next == UINT64_MAX) {
        return -1;
    }
    if (next <= now) {
        return 0;
    }
    /* Rounded up: waking before the deadline would only loop. */
    return (int)MIN((next - now + 999) / 1000, (uint64_t)INT32_MAX);
}

static int run(Program *p) {
    for (;;) {
        struct epoll_event evs[64];
        int n = epoll_wait(p->epoll_fd, evs, ELEMENTSOF(evs),
                           epoll_timeout(p, now_usec(CLOCK_MONOTONIC)));
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            die("epoll_wait: %m");
        }
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        p->more = false;
        for (int i = 0; i < n; i++) {
            Watch *w = evs[i].data.ptr;
            switch (w->kind) {
            case WATCH_SIGNAL:
                if (on_signal(p) == 0) {
                    return EXIT_SUCCESS;
                }
                break;
            case WATCH_VHOST_LISTEN:
                if (p->vhost_fd < 0) {
                    on_vhost_listen(p);
                }
                break;
            case WATCH_VHOST_CONN:
                if (p->vhost_fd >= 0) {
                    on_vhost_conn(p);
                }
                break;
            case WATCH_KICK:
                on_kick(p, w->index);
                break;
            default:
                vsock_host_handle(p->host, w, evs[i].events, now);
                break;
            }
        }
        vsock_mux_tick(p->mux, now);
        vsock_host_tick(p->host, now);
        int r = vsock_device_process(p->dev, now);
        if (r < 0) {
            char why[128];
            snprintf(why, sizeof(why), "'s guest broke a virtqueue (%s): dropped", strerror(-r));
            frontend_drop(p, why);
        } else if (r > 0) {
            p->more = true;
        }
        vsock_host_collect(p->host);
        report_violations(p, now);
    }
}

int main(int argc, char **argv) {
    Options opt;
    Program p = {.vhost_fd = -EBADF};
    int r;

    log_setup(PROGRAM);
    parse_options(argc, argv, &opt);
    if (opt.log_level) {
        log_set_max_level(log_level_from_string(opt.log_level));
    }
    /* A host program gone while we write to it is an error code. */
    signal(SIGPIPE, SIG_IGN);
    unsigned max_conns = raise_fd_limit();

    p.vhost_path = opt.socket;
    p.uds_path = opt.uds_path;
    /* Any host program and the VMM may be started by now: both sockets
     * exist before anything else. */
    r = listen_private(opt.socket, &p.vhost_listen_fd, &p.vhost_bound);
    if (r < 0) {
        die("cannot listen on %s: %s", opt.socket, strerror(-r));
    }
    int uds_fd;
    r = listen_private(opt.uds_path, &uds_fd, &p.uds_bound);
    if (r < 0) {
        die("cannot listen on %s: %s", opt.uds_path, strerror(-r));
    }

    p.epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (p.epoll_fd < 0) {
        die("epoll_create1: %m");
    }
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGUSR1);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0) {
        die("sigprocmask: %m");
    }
    p.signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (p.signal_fd < 0) {
        die("signalfd: %m");
    }
    p.signal_watch.kind = WATCH_SIGNAL;
    p.vhost_listen_watch.kind = WATCH_VHOST_LISTEN;
    p.vhost_conn_watch.kind = WATCH_VHOST_CONN;
    for (unsigned q = 0; q < VSOCK_N_QUEUES; q++) {
        p.kick_watch[q] = (Watch){.kind = WATCH_KICK, .index = q};
        p.kick_reg[q] = -EBADF;
    }
    epoll_watch(&p, p.signal_fd, &p.signal_watch);
    epoll_watch(&p, p.vhost_listen_fd, &p.vhost_listen_watch);

    r = vsock_host_new(p.epoll_fd, uds_fd, opt.uds_path, &p.host);
    if (r < 0) {
        die("cannot set up the host side: %s", strerror(-r));
    }
    VsockMuxConfig cfg = {
        .guest_cid = opt.guest_cid,
        .max_conns = max_conns,
        .buf_size = CONN_BUF_SIZE,
        .connect_timeout_usec = CONNECT_TIMEOUT_USEC,
        .close_timeout_usec = CLOSE_TIMEOUT_USEC,
    };
    r = vsock_mux_new(&cfg, &vsock_host_ops, p.host, &p.mux);
    if (r < 0) {
        die("cannot set up the connections: %s", strerror(-r));
    }
    vsock_host_set_mux(p.host, p.mux);
    r = vsock_device_new(p.mux, opt.guest_cid, &p.dev);
    if (r < 0) {
        die("cannot set up the device: %s", strerror(-r));
    }
    if (!opt.no_sandbox) {
        /* The sandbox (namespaces, seccomp) comes with the shared sandbox
         * library; until then the device runs as it was started. */
        log_debug("No sandbox yet: running unconfined");
    }

    log_info("Serving guest CID %" PRIu64 ": vhost-user on %s, host side on %s (up to %u "
             "connections)",
             opt.guest_cid, opt.socket, opt.uds_path, max_conns);
    (void)sd_notify(0, "READY=1");
    int ret = run(&p);
    (void)sd_notify(0, "STOPPING=1");

    frontend_drop(&p, "left as we stop");
    vsock_mux_free(p.mux);
    vsock_host_free(p.host);
    vsock_device_free(p.dev);
    safe_close(p.vhost_listen_fd);
    safe_close(p.signal_fd);
    safe_close(p.epoll_fd);
    /* Our sockets only: a file another run put there since stays. */
    (void)addr_unix_unlink_bound(opt.socket, &p.vhost_bound);
    (void)addr_unix_unlink_bound(opt.uds_path, &p.uds_bound);
    return ret;
}
