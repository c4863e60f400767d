/* qubes-lite-vsock: one VM's virtio-vsock device over vhost-user, its host
 * side behind a unix socket. One process, one thread, one epoll, in its
 * sandbox (confine.h) unless --no-sandbox: the main process below is the
 * sandbox's PID 1, its supervisor outside is systemd's main PID. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "confine.h"
#include "device.h"
#include "host.h"
#include "log.h"
#include "mux.h"
#include "options.h"
#include "sockets.h"
#include "switch/sandbox/cli.h"
#include "switch/sandbox/sandbox.h"
#include "util.h"

/* What the guest may send on a connection before the host side took it:
 * our receive window, and the most a connection ever buffers. */
#define CONN_BUF_SIZE (64 * 1024)
/* The guest's answer to a REQUEST (Linux answers at once, from the
 * kernel; TCG guests under load take longer than real ones). */
#define CONNECT_TIMEOUT_USEC (10 * 1000000ull)
/* The guest's RST after our SHUTDOWN of both ways (Linux's own wait is 8 s). */
#define CLOSE_TIMEOUT_USEC (10 * 1000000ull)

typedef struct Program {
    int epoll_fd;
    Watch signal_watch, vhost_listen_watch, vhost_conn_watch;
    Watch kick_watch[VSOCK_N_QUEUES];
    int signal_fd;
    int vhost_listen_fd;
    int vhost_fd; /* the frontend's connection */
    int kick_reg[VSOCK_N_QUEUES];
    const char *vhost_path;
    VsockMux *mux;
    VsockHost *host;
    VsockDevice *dev;
    bool more; /* the device left work for the next round */
    uint64_t violations_logged;
    uint64_t last_report;
} Program;

/* ---- set-up ----------------------------------------------------------------------- */

/* One descriptor per connection: a thousand and more need more than the
 * usual soft limit of 1024 (the sandbox lowers it to what we use). */
static unsigned raise_fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        return 1024 - VSOCK_SPARE_FDS;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
        (void)getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur <= 2 * VSOCK_SPARE_FDS) {
        return VSOCK_SPARE_FDS;
    }
    return (unsigned)MIN((rlim_t)VSOCK_MAX_CONNS, rl.rlim_cur - VSOCK_SPARE_FDS);
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

#ifdef VSOCK_TEST_HOOKS
/* The test build only (never shipped): on SIGUSR2 the device makes a call
 * its filter forbids, so that the tests see what each --seccomp-mode does
 * with it. */
#define TEST_HOOK_SIGNAL SIGUSR2
static void test_hook_forbidden_call(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_info_errno(-errno, "Test hook: socket(AF_INET) failed: %m");
        return;
    }
    log_info("Test hook: socket(AF_INET) allowed");
    safe_close(fd);
}
#endif

/* 1: go on; 0: asked to stop. */
static int on_signal(Program *p) {
    struct signalfd_siginfo si;
    while (read(p->signal_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGUSR1) {
            report(p);
            continue;
        }
#ifdef VSOCK_TEST_HOOKS
        if (si.ssi_signo == TEST_HOOK_SIGNAL) {
            test_hook_forbidden_call();
            continue;
        }
#endif
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

/* Signals through the event loop: SIGTERM, SIGINT and SIGHUP stop the
 * device, SIGUSR1 logs its counters. */
static void take_signals(Program *p) {
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGUSR1);
#ifdef VSOCK_TEST_HOOKS
    sigaddset(&mask, TEST_HOOK_SIGNAL);
#endif
    if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0) {
        die("sigprocmask: %m");
    }
    p->signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (p->signal_fd < 0) {
        die("signalfd: %m");
    }
}

/* The event loop's epoll set, with the signals and the vhost-user
 * listener in it (the host side adds its own). */
static void watch_events(Program *p) {
    p->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (p->epoll_fd < 0) {
        die("epoll_create1: %m");
    }
    p->signal_watch.kind = WATCH_SIGNAL;
    p->vhost_listen_watch.kind = WATCH_VHOST_LISTEN;
    p->vhost_conn_watch.kind = WATCH_VHOST_CONN;
    for (unsigned q = 0; q < VSOCK_N_QUEUES; q++) {
        p->kick_watch[q] = (Watch){.kind = WATCH_KICK, .index = q};
        p->kick_reg[q] = -EBADF;
    }
    epoll_watch(p, p->signal_fd, &p->signal_watch);
    epoll_watch(p, p->vhost_listen_fd, &p->vhost_listen_watch);
}

/* The host side on PATH, the connections, the device. The source port
 * rule reads our uid now: inside the sandbox, where peers are seen. */
static void make_device(Program *p, const Options *opt, const VsockSocket *uds,
                        unsigned max_conns) {
    int r = vsock_host_new(p->epoll_fd, uds->fd, uds->path, &p->host);
    if (r < 0) {
        die("cannot set up the host side: %s", strerror(-r));
    }
    VsockMuxConfig cfg = {
        .guest_cid = opt->guest_cid,
        .max_conns = max_conns,
        .buf_size = CONN_BUF_SIZE,
        .connect_timeout_usec = CONNECT_TIMEOUT_USEC,
        .close_timeout_usec = CLOSE_TIMEOUT_USEC,
    };
    r = vsock_mux_new(&cfg, &vsock_host_ops, p->host, &p->mux);
    if (r < 0) {
        die("cannot set up the connections: %s", strerror(-r));
    }
    vsock_host_set_mux(p->host, p->mux);
    r = vsock_device_new(p->mux, opt->guest_cid, &p->dev);
    if (r < 0) {
        die("cannot set up the device: %s", strerror(-r));
    }
}

/* Both sockets, before anything else: any host program and the VMM may be
 * started by now. */
static void listen_both(const Options *opt, VsockSocket *vhost, VsockSocket *uds) {
    int r = vsock_socket_listen(opt->socket, vhost);
    if (r < 0) {
        die("cannot listen on %s: %s", opt->socket, strerror(-r));
    }
    r = vsock_socket_listen(opt->uds_path, uds);
    if (r < 0) {
        die("cannot listen on %s: %s", opt->uds_path, strerror(-r));
    }
    if (opt->uds_group) {
        r = vsock_socket_open_to_group(uds, opt->uds_group);
        if (r < 0) {
            die("cannot open %s to group '%s': %s", uds->path, opt->uds_group, strerror(-r));
        }
    }
}

/* Who reads as root once sandboxed (host.h's source port rule). Started
 * as root the sandbox keeps root: root reads as itself. Started as
 * another user, that user is the namespace's uid 0 and root reads as the
 * overflow uid, like anyone else: while PATH is 0600 only root can be
 * that peer. Opened to a group, its members read the same, and root's
 * connections get ports above 1023 (the README says to start it as root
 * then). Read before the sandbox: its /proc has no sysctls. */
static uid_t sandboxed_root_alias(const Options *opt) {
    if (opt->common.no_sandbox || geteuid() == 0) {
        return (uid_t)-1;
    }
    if (opt->uds_group) {
        log_warning("Started unprivileged with --uds-group: root's connections get ports "
                    "above 1023 (start it as root to keep them below)");
        return (uid_t)-1;
    }
    unsigned long long v = 65534;
    FILE *f = fopen("/proc/sys/kernel/overflowuid", "re");
    if (f) {
        if (fscanf(f, "%llu", &v) != 1) {
            v = 65534;
        }
        fclose(f);
    }
    return (uid_t)v;
}

/* The sandbox, right after the two sockets: no other descriptor, no
 * thread exists yet. Returns in the sandboxed main process (PID 1 of its
 * own namespace), or unsandboxed with --no-sandbox. */
static void enter_sandbox(const Options *opt, const VsockSocket *vhost, const VsockSocket *uds) {
    if (opt->common.no_sandbox) {
        return;
    }
    const int fds[2] = {vhost->fd, uds->fd};
    int r = vsock_confine_enter(vhost->dir, uds->dir, fds, opt->common.seccomp_mode);
    if (r < 0) {
        cli_sandbox_failed(r, false);
    }
}

/* Set-up in this order: options, the two sockets, the sandbox, then the
 * event loop's descriptors, the host side, the device, READY=1, and the
 * loop until a signal. */
int main(int argc, char **argv) {
    Options opt;
    Program p = {.vhost_fd = -EBADF};
    VsockSocket vhost, uds;

    log_setup(PROGRAM);
    options_parse(argc, argv, &opt);
    if (opt.common.print_filter) {
        filter_print(opt.common.print_filter, stdout);
        return EXIT_SUCCESS;
    }
    /* A host program gone while we write to it is an error code. */
    signal(SIGPIPE, SIG_IGN);
    listen_both(&opt, &vhost, &uds);
    unsigned max_conns = raise_fd_limit();
    uid_t root_alias = sandboxed_root_alias(&opt);
    enter_sandbox(&opt, &vhost, &uds);

    p.vhost_path = vhost.path;
    p.vhost_listen_fd = vhost.fd;
    take_signals(&p);
    watch_events(&p);
    make_device(&p, &opt, &uds, max_conns);
    vsock_host_set_root_alias(p.host, root_alias);

    log_info("Serving guest CID %" PRIu64 ": vhost-user on %s, host side on %s (up to %u "
             "connections)",
             opt.guest_cid, vhost.path, uds.path, max_conns);
    cli_notify_ready();
    int ret = run(&p);
    (void)sandbox_notify("STOPPING=1");

    frontend_drop(&p, "left as we stop");
    vsock_mux_free(p.mux);
    vsock_host_free(p.host); /* closes PATH's listener */
    vsock_device_free(p.dev);
    safe_close(p.vhost_listen_fd);
    safe_close(p.signal_fd);
    safe_close(p.epoll_fd);
    vsock_socket_remove(&vhost);
    vsock_socket_remove(&uds);
    return ret;
}
