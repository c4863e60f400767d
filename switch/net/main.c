/* vm-switch: the main process (configuration, children, rings, heartbeat,
 * counters) and the entry point of its children.
 *
 *   vm-switch --config-dir DIR --socket-dir DIR [--log-level L]
 *             [--no-sandbox] [--seccomp-mode kill|trap|log|disabled] [--user NAME]
 *   vm-switch --stats --socket-dir DIR
 *   vm-switch --print-seccomp supervisor|main|child
 *
 * No thread is ever created: the sandbox (namespaces, pivot_root, seccomp)
 * goes in right after option parsing, and children are fresh executions of
 * this program (execveat of the fd opened below, so a new address-space
 * layout each time) that get everything they need as fds. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child.h"
#include "ctl.h"
#include "log.h"
#include "policy.h"
#include "ring.h"
#include "rules.h"
#include "switch/sandbox/sandbox.h"
#include "util.h"
#include "vmconf.h"

#define PROGRAM "vm-switch"
#define STATS_FILE "vm-switch.stats"
#define STATS_TMP ".vm-switch.stats.tmp"
/* The control socket's number in a child. */
#define CHILD_CTL_FD 3

#define PING_INTERVAL_USEC 1000000ull
#define PONG_TIMEOUT_USEC 100000ull
/* Each ping must be answered within PONG_TIMEOUT_USEC. A child serves its
 * control socket between datapath rounds of bounded work, so a healthy
 * child answers within well under a millisecond; but a busy machine (qemu
 * guests booting under TCG on two cores, each child serving its
 * frontend's set-up) can keep a child from answering for a few hundred
 * milliseconds, and killing it then costs its VM a reconnect. So a missed
 * deadline is logged and the child is pinged again every 100 ms; a child
 * that has answered none of them for HUNG_USEC is hung. Start-up is the
 * other exception: a fresh exec under load can take longer than 100 ms to
 * reach its event loop, so a child gets its first ping only
 * STARTUP_GRACE_USEC after its start. */
#define HUNG_USEC 2000000ull
#define STARTUP_GRACE_USEC PING_INTERVAL_USEC
/* Restart backoff: a child is restarted at once, unless it is the
 * (QUICK_FREE + 1)th in a row to die less than STABLE_USEC after its
 * start; then the wait starts at RESTART_FIRST_DELAY_USEC and doubles with
 * each such quick death, up to RESTART_MAX_DELAY_USEC. A VM whose child
 * keeps crashing costs little; one crash now and then costs nothing. */
#define QUICK_FREE 3u
#define RESTART_FIRST_DELAY_USEC 100000ull
#define RESTART_MAX_DELAY_USEC 5000000ull
#define STABLE_USEC 10000000ull

enum {
    EXIT_USAGE = 2,
};

enum {
    EV_SIGNAL = 1,
    EV_INOTIFY,
    EV_CTL,   /* index: port */
    EV_PIDFD, /* index: port */
    EV_DYING, /* index: slot in Switch.dying */
};

/* Children killed and no longer the VM's, not yet reaped: their pidfd
 * says when (the event loop never waits for a process). */
#define DYING_MAX 64
#define EV(kind, idx) (((uint64_t)(kind) << 32) | (uint32_t)(idx))

/* A ring handed to its consumer (GET_BUFFER), waiting for BUFFER_READY
 * before the producer gets it (PUT_BUFFER). */
typedef struct PendingRing {
    bool active;
    int fds[3]; /* memfd, data eventfd, space eventfd */
    uint32_t producer_gen;
    uint32_t consumer_gen;
} PendingRing;

typedef struct Vm {
    bool used;
    char name[VM_NAME_MAX + 1];
    VmConf conf;
    int listen_fd; /* kept across child restarts: frontends reconnect to it */

    pid_t pid; /* 0: no child */
    int pidfd;
    int ctl;
    uint32_t gen; /* of the current (or last) child */
    uint64_t started_at;
    uint64_t restart_at; /* when pid == 0 and restart_pending */
    bool restart_pending;
    unsigned restarts;
    unsigned quick_crashes;

    uint64_t ping_seq;
    uint64_t ping_sent_at;
    bool ping_outstanding;
    bool ping_missed;         /* a ping went unanswered for 100 ms ... */
    uint64_t ping_missed_at;  /* ... this long ago, none answered since */

    CtlState child_state;
    CtlCounters cur;                      /* the current child's, from its last pong */
    CtlCounters base;                     /* earlier children's */
    uint64_t ring_full_to[CTL_MAX_PORTS]; /* the current child's, by destination */
    uint64_t ring_full_in;                /* frames for us dropped by earlier children of others */
    /* The current child's refusals of ring frames, by source port and
     * policy reason; and those of earlier children of others, of our frames. */
    uint64_t refused_from[CTL_MAX_PORTS][POLICY_DROP_MAX];
    uint64_t refused_in[POLICY_DROP_MAX];

    PendingRing pending[CTL_MAX_PORTS]; /* rings from that producer to us */
} Vm;

typedef struct Options {
    const char *config_dir;
    const char *socket_dir;
    const char *log_level;
    bool no_sandbox;
    FilterMode seccomp_mode;
    const char *user;
    bool stats;
    int print_role; /* --print-seccomp */
    int child_fd;
} Options;

typedef struct Dying {
    pid_t pid; /* 0: free */
    int pidfd;
    char name[VM_NAME_MAX + 1];
} Dying;

typedef struct Switch {
    const Options *opt;
    int exe_fd;
    int config_fd;
    int socket_fd;
    int inotify_fd;
    int signal_fd;
    int epoll;
    Policy *policy;
    Vm vm[CTL_MAX_PORTS];
    Dying dying[DYING_MAX];
    uint64_t next_tick;
    bool stats_dirty;
} Switch;

/* ---- small helpers -------------------------------------------------------- */

static void usage(FILE *f) {
    fprintf(f, "Usage: " PROGRAM " --config-dir DIR --socket-dir DIR [--log-level LEVEL]\n"
               "                 [--no-sandbox] [--seccomp-mode kill|trap|log|disabled]\n"
               "                 [--user NAME]\n"
               "       " PROGRAM " --stats --socket-dir DIR\n"
               "       " PROGRAM " --print-seccomp supervisor|main|child\n"
               "\n"
               "The L2 switch between the VMs of one network: one vhost-user-net backend\n"
               "process per VM (DIR/<vm>.conf), listening on <socket dir>/<vm>.sock.\n"
               "\n"
               "  --config-dir DIR     the <vm>.conf files (watched: changes apply at once)\n"
               "  --socket-dir DIR     where the vhost-user sockets and " STATS_FILE " live\n"
               "  --log-level LEVEL    error, warning, info (default) or debug\n"
               "  --no-sandbox         run without namespaces and seccomp (debugging)\n"
               "  --seccomp-mode MODE  kill (default), trap, log or disabled\n"
               "  --user NAME          started as root: the unprivileged user to run as\n"
               "  --stats              print the per-VM counters of a running switch\n"
               "  --print-seccomp ROLE print a process role's system call allowlist\n"
               "  --help               this text\n");
}

static _noreturn_ void usage_error(const char *fmt, ...) _printf_(1, 2);
static _noreturn_ void usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, PROGRAM ": ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\nTry '" PROGRAM " --help'.\n");
    va_end(ap);
    exit(EXIT_USAGE);
}

static void parse_options(int argc, char **argv, Options *o) {
    enum {
        OPT_CONFIG_DIR = 256,
        OPT_SOCKET_DIR,
        OPT_LOG_LEVEL,
        OPT_NO_SANDBOX,
        OPT_SECCOMP,
        OPT_USER,
        OPT_STATS,
        OPT_PRINT_SECCOMP,
        OPT_CHILD,
        OPT_HELP
    };
    static const struct option longopts[] = {
        {"config-dir", required_argument, NULL, OPT_CONFIG_DIR},
        {"socket-dir", required_argument, NULL, OPT_SOCKET_DIR},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"no-sandbox", no_argument, NULL, OPT_NO_SANDBOX},
        {"seccomp-mode", required_argument, NULL, OPT_SECCOMP},
        {"user", required_argument, NULL, OPT_USER},
        {"stats", no_argument, NULL, OPT_STATS},
        {"print-seccomp", required_argument, NULL, OPT_PRINT_SECCOMP},
        {"child", required_argument, NULL, OPT_CHILD}, /* internal */
        {"help", no_argument, NULL, OPT_HELP},
        {0},
    };
    *o = (Options){.child_fd = -1, .seccomp_mode = FILTER_KILL, .print_role = -1};
    opterr = 0;
    for (;;) {
        int c = getopt_long(argc, argv, "", longopts, NULL);
        if (c < 0) {
            break;
        }
        switch (c) {
        case OPT_CONFIG_DIR:
            o->config_dir = optarg;
            break;
        case OPT_SOCKET_DIR:
            o->socket_dir = optarg;
            break;
        case OPT_LOG_LEVEL:
            if (log_level_from_string(optarg) < 0) {
                usage_error("unknown log level '%s' (error, warning, info, debug)", optarg);
            }
            o->log_level = optarg;
            break;
        case OPT_NO_SANDBOX:
            o->no_sandbox = true;
            break;
        case OPT_SECCOMP: {
            int m = filter_mode_from_string(optarg);
            if (m < 0) {
                usage_error("unknown seccomp mode '%s' (kill, trap, log, disabled)", optarg);
            }
            o->seccomp_mode = (FilterMode)m;
            break;
        }
        case OPT_USER:
            if (!user_name_valid(optarg)) {
                usage_error("bad user name '%s'", optarg);
            }
            o->user = optarg;
            break;
        case OPT_STATS:
            o->stats = true;
            break;
        case OPT_PRINT_SECCOMP:
            o->print_role = filter_role_from_string(optarg);
            if (o->print_role < 0) {
                usage_error("unknown role '%s' (supervisor, main, child)", optarg);
            }
            break;
        case OPT_CHILD: {
            unsigned long long fd;
            if (parse_uint(optarg, 0, 1024, &fd) < 0) {
                usage_error("bad --child '%s'", optarg);
            }
            o->child_fd = (int)fd;
            break;
        }
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
    if (o->child_fd >= 0 || o->print_role >= 0) {
        return;
    }
    if (!o->socket_dir) {
        usage_error("--socket-dir is required");
    }
    if (!o->stats && !o->config_dir) {
        usage_error("--config-dir is required");
    }
}

static int print_stats(const char *socket_dir) {
    char path[PATH_MAX];
    char buf[4096];
    snprintf(path, sizeof(path), "%s/%s", socket_dir, STATS_FILE);
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, PROGRAM ": cannot read %s: %m (is vm-switch running there?)\n", path);
        return EXIT_FAILURE;
    }
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n < 0) {
            fprintf(stderr, PROGRAM ": cannot read %s: %m\n", path);
            return EXIT_FAILURE;
        }
        if (n == 0) {
            return EXIT_SUCCESS;
        }
        if (loop_write(STDOUT_FILENO, buf, (size_t)n) < 0) {
            return EXIT_FAILURE;
        }
    }
}

/* READY=1 to the service manager, through the supervisor when sandboxed. */
static void notify_ready(void) {
    int r = sandbox_notify("READY=1");
    if (r < 0) {
        log_warning_errno(r, "cannot notify readiness: %m");
    }
}

static void epoll_add(Switch *s, int fd, uint64_t tag) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag};
    if (epoll_ctl(s->epoll, EPOLL_CTL_ADD, fd, &ev) < 0) {
        die("epoll_ctl(ADD): %m");
    }
}

static const char *role_name(VmRole r) {
    return r == VM_ROLE_ROUTER ? "router" : "client";
}

static unsigned vm_port(const Switch *s, const Vm *v) {
    return (unsigned)(v - s->vm);
}

static Vm *vm_find(Switch *s, const char *name) {
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        if (s->vm[i].used && streq(s->vm[i].name, name)) {
            return &s->vm[i];
        }
    }
    return NULL;
}

/* Frames may cross between a and b: a router and a client. */
static bool pair_allowed(const Vm *a, const Vm *b) {
    return a != b && a->conf.role != b->conf.role;
}

static bool vm_running(const Vm *v) {
    return v->used && v->pid > 0;
}

/* ---- control messages to children ----------------------------------------- */

static void child_kill(Switch *s, Vm *v, const char *why);

/* A child that does not read its control socket is treated as hung. */
static int vm_send(Switch *s, Vm *v, const CtlMsg *m, const int *fds, unsigned n_fds) {
    if (!vm_running(v)) {
        return -ESRCH;
    }
    int r = ctl_send(v->ctl, m, fds, n_fds);
    if (r < 0) {
        log_warning("%s: control message %u not sent: %s", v->name, m->hdr.type, strerror(-r));
        child_kill(s, v, "its control socket is stuck");
    }
    return r;
}

static void pending_clear(PendingRing *p) {
    if (p->active) {
        for (int i = 0; i < 3; i++) {
            p->fds[i] = safe_close(p->fds[i]);
        }
        p->active = false;
    }
}

/* GetBuffer: a fresh ring from producer to consumer goes to the consumer
 * first; the producer gets it (PutBuffer) once the consumer said
 * BufferReady. */
static void ring_offer(Switch *s, Vm *producer, Vm *consumer) {
    PendingRing *p = &consumer->pending[vm_port(s, producer)];
    int fds[3] = {-EBADF, -EBADF, -EBADF};
    CtlMsg m;
    int r;
    pending_clear(p);
    r = ring_memfd_new(&fds[0]);
    if (r < 0) {
        log_error_errno(r, "%s -> %s: cannot create a ring: %m", producer->name, consumer->name);
        return;
    }
    fds[1] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    fds[2] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fds[1] < 0 || fds[2] < 0) {
        log_error("%s -> %s: cannot create eventfds: %m", producer->name, consumer->name);
        for (int i = 0; i < 3; i++) {
            safe_close(fds[i]);
        }
        return;
    }
    ctl_msg_init(&m, CTL_GET_BUFFER);
    m.buffer.peer = vm_port(s, producer);
    m.buffer.peer_gen = producer->gen;
    m.buffer.gen = consumer->gen;
    if (vm_send(s, consumer, &m, fds, 3) < 0) {
        for (int i = 0; i < 3; i++) {
            safe_close(fds[i]);
        }
        return;
    }
    *p = (PendingRing){.active = true,
                       .fds = {fds[0], fds[1], fds[2]},
                       .producer_gen = producer->gen,
                       .consumer_gen = consumer->gen};
}

static void on_buffer_ready(Switch *s, Vm *consumer, const CtlBuffer *b) {
    Vm *producer = &s->vm[b->peer];
    PendingRing *p = &consumer->pending[b->peer];
    CtlMsg m;
    /* Only the answer to a ring we offered, for the children now running:
     * anything else is stale (a restart crossed it) or made up. */
    if (!p->active || !vm_running(producer) || b->gen != consumer->gen ||
        b->peer_gen != producer->gen || p->producer_gen != producer->gen ||
        p->consumer_gen != consumer->gen) {
        log_debug("%s: BUFFER_READY for port %u ignored", consumer->name, b->peer);
        return;
    }
    ctl_msg_init(&m, CTL_PUT_BUFFER);
    m.buffer.peer = vm_port(s, consumer);
    m.buffer.peer_gen = consumer->gen;
    m.buffer.gen = producer->gen;
    (void)vm_send(s, producer, &m, p->fds, 3);
    pending_clear(p);
    log_debug("ring %s -> %s (generations %u, %u) set up", producer->name, consumer->name,
              producer->gen, consumer->gen);
}

static void send_peer(Switch *s, Vm *to, Vm *about) {
    CtlMsg m;
    ctl_msg_init(&m, CTL_PEER);
    m.peer.port = vm_port(s, about);
    memcpy(m.peer.mac, about->conf.mac, 6);
    m.peer.role = (uint8_t)about->conf.role;
    (void)vm_send(s, to, &m, NULL, 0);
}

static void send_peer_ref(Switch *s, Vm *to, CtlType type, Vm *about) {
    CtlMsg m;
    ctl_msg_init(&m, type);
    m.ref.port = vm_port(s, about);
    m.ref.gen = about->gen;
    (void)vm_send(s, to, &m, NULL, 0);
}

/* ---- children ------------------------------------------------------------- */

/* The child is gone (reaped): its peers drop the rings shared with it. */
static void child_gone(Switch *s, Vm *v) {
    if (v->pid <= 0) {
        return;
    }
    epoll_ctl(s->epoll, EPOLL_CTL_DEL, v->ctl, NULL);
    epoll_ctl(s->epoll, EPOLL_CTL_DEL, v->pidfd, NULL);
    v->ctl = safe_close(v->ctl);
    v->pidfd = safe_close(v->pidfd);
    v->pid = 0;
    v->ping_outstanding = false;
    v->ping_missed = false;
    ctl_counters_add(&v->base, &v->cur);
    memset(&v->cur, 0, sizeof(v->cur));
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        s->vm[i].ring_full_in += v->ring_full_to[i];
        v->ring_full_to[i] = 0;
        for (unsigned r = 0; r < POLICY_DROP_MAX; r++) {
            s->vm[i].refused_in[r] += v->refused_from[i][r];
            v->refused_from[i][r] = 0;
        }
        pending_clear(&v->pending[i]);
        pending_clear(&s->vm[i].pending[vm_port(s, v)]);
    }
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        Vm *p = &s->vm[i];
        if (vm_running(p) && p != v) {
            send_peer_ref(s, p, CTL_PEER_DOWN, v);
        }
    }
    s->stats_dirty = true;
}

static void describe_status(int status, char *buf, size_t size) {
    if (WIFEXITED(status)) {
        snprintf(buf, size, "exited with status %d", WEXITSTATUS(status));
    } else if (WIFSIGNALED(status)) {
        snprintf(buf, size, "killed by signal %d (%s)%s", WTERMSIG(status),
                 strsignal(WTERMSIG(status)), WCOREDUMP(status) ? ", core dumped" : "");
    } else {
        snprintf(buf, size, "status 0x%x", status);
    }
}

static void reap_report(const char *name, pid_t pid, int status) {
    if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) {
        char what[128];
        describe_status(status, what, sizeof(what));
        log_warning("%s: child %d had %s", name, (int)pid, what);
    }
}

/* Reaps a killed child; blocking only when asked (at exit). true when
 * reaped (or gone). */
static bool dying_reap(Switch *s, Dying *d, bool block) {
    int status;
    pid_t r;
    if (d->pid <= 0) {
        return true;
    }
    while ((r = waitpid(d->pid, &status, block ? 0 : WNOHANG)) < 0 && errno == EINTR) {
    }
    if (r == 0) {
        return false;
    }
    if (r > 0) {
        reap_report(d->name, d->pid, status);
    }
    if (d->pidfd >= 0) {
        epoll_ctl(s->epoll, EPOLL_CTL_DEL, d->pidfd, NULL);
    }
    d->pidfd = safe_close(d->pidfd);
    d->pid = 0;
    return true;
}

/* Kills the child; it is the VM's no longer. It holds no state we need:
 * its peers drop the rings shared with it at once, and it is reaped when
 * its pidfd says it has exited, without the event loop waiting for it. */
static void child_stop(Switch *s, Vm *v) {
    if (v->pid <= 0) {
        return;
    }
    (void)kill(v->pid, SIGKILL);
    Dying *d = NULL;
    for (unsigned i = 0; i < DYING_MAX && v->pidfd >= 0; i++) {
        if (s->dying[i].pid == 0) {
            d = &s->dying[i];
            struct epoll_event ev = {.events = EPOLLIN, .data.u64 = EV(EV_DYING, i)};
            if (epoll_ctl(s->epoll, EPOLL_CTL_MOD, v->pidfd, &ev) < 0) {
                d = NULL;
            }
            break;
        }
    }
    if (d) {
        d->pid = v->pid;
        d->pidfd = TAKE_FD(v->pidfd);
        snprintf(d->name, sizeof(d->name), "%s", v->name);
    } else {
        /* More children dying at once than we keep track of: this one
         * is reaped now (SIGKILL: it does not take long). */
        Dying now = {.pid = v->pid, .pidfd = -EBADF};
        snprintf(now.name, sizeof(now.name), "%s", v->name);
        (void)dying_reap(s, &now, true);
    }
    child_gone(s, v);
}

static void schedule_restart(Switch *s, Vm *v) {
    uint64_t now = now_usec(CLOCK_MONOTONIC);
    uint64_t delay = 0;
    if (now - v->started_at < STABLE_USEC) {
        v->quick_crashes++;
    } else {
        v->quick_crashes = 0;
    }
    if (v->quick_crashes > QUICK_FREE) {
        delay = RESTART_FIRST_DELAY_USEC << MIN(v->quick_crashes - QUICK_FREE - 1, 16u);
        delay = MIN(delay, RESTART_MAX_DELAY_USEC);
    }
    v->restarts++;
    v->restart_pending = true;
    v->restart_at = now + delay;
    log_info("%s: restarting in %llu ms", v->name, (unsigned long long)(delay / 1000));
}

/* The child died or hung: reap, tell the peers, restart later. */
static void child_kill(Switch *s, Vm *v, const char *why) {
    if (v->pid <= 0) {
        return;
    }
    log_warning("%s: child %d %s: killing it", v->name, (int)v->pid, why);
    child_stop(s, v);
    schedule_restart(s, v);
}

static void on_child_exit(Switch *s, Vm *v) {
    int status;
    pid_t r = waitpid(v->pid, &status, WNOHANG);
    if (r == 0 || (r < 0 && errno == EINTR)) {
        return;
    }
    char what[128] = "vanished";
    if (r > 0) {
        describe_status(status, what, sizeof(what));
    }
    log_warning("%s: child %d %s", v->name, (int)v->pid, what);
    child_gone(s, v);
    schedule_restart(s, v);
}

static _noreturn_ void exec_child(Switch *s, int ctl) {
    char fdbuf[16];
    char *argv[] = {(char *)PROGRAM,
                    (char *)"--child",
                    fdbuf,
                    (char *)"--log-level",
                    (char *)(s->opt->log_level ? s->opt->log_level : "info"),
                    (char *)"--seccomp-mode",
                    (char *)filter_mode_to_string(s->opt->seccomp_mode),
                    s->opt->no_sandbox ? (char *)"--no-sandbox" : NULL,
                    NULL};
    sigset_t none;
    int exe_fd = s->exe_fd;
    extern char **environ;
    /* Dies with the main process, whatever happens to the main's exit path. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) {
        _exit(127);
    }
    /* The blocked signals (signalfd's) survive exec: unblock them. */
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (exe_fd == CHILD_CTL_FD) {
        /* Not where the control socket goes. */
        exe_fd = fcntl(exe_fd, F_DUPFD_CLOEXEC, CHILD_CTL_FD + 1);
        if (exe_fd < 0) {
            _exit(127);
        }
    }
    if (ctl == CHILD_CTL_FD) {
        if (fd_cloexec(ctl, false) < 0) {
            _exit(127);
        }
    } else if (dup2(ctl, CHILD_CTL_FD) < 0) {
        _exit(127);
    }
    snprintf(fdbuf, sizeof(fdbuf), "%d", CHILD_CTL_FD);
    syscall(SYS_execveat, exe_fd, "", argv, environ, AT_EMPTY_PATH);
    _exit(127);
}

/* Starts v's child; when that fails, a later attempt is scheduled. */
static int child_start(Switch *s, Vm *v) {
    int sv[2];
    CtlMsg m;
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        schedule_restart(s, v);
        return log_error_errno(-errno, "%s: socketpair: %m", v->name);
    }
    pid_t pid = fork();
    if (pid < 0) {
        int r = -errno;
        close_pair(sv);
        schedule_restart(s, v);
        return log_error_errno(r, "%s: fork: %m", v->name);
    }
    if (pid == 0) {
        close(sv[0]);
        exec_child(s, sv[1]);
    }
    close(sv[1]);
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0) {
        int r = -errno;
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(sv[0]);
        schedule_restart(s, v);
        return log_error_errno(r, "%s: pidfd_open: %m", v->name);
    }
    fd_cloexec(pidfd, true);
    (void)fd_nonblock(sv[0], true);
    v->pid = pid;
    v->pidfd = pidfd;
    v->ctl = sv[0];
    v->gen++;
    v->started_at = now_usec(CLOCK_MONOTONIC);
    v->restart_pending = false;
    v->child_state = CTL_STATE_WAITING;
    v->ping_outstanding = false;
    v->ping_missed = false;
    epoll_add(s, v->ctl, EV(EV_CTL, vm_port(s, v)));
    epoll_add(s, v->pidfd, EV(EV_PIDFD, vm_port(s, v)));
    log_info("%s: child %d started (%s, generation %u)", v->name, (int)pid, role_name(v->conf.role),
             v->gen);

    ctl_msg_init(&m, CTL_SETUP);
    m.setup.port = vm_port(s, v);
    m.setup.gen = v->gen;
    memcpy(m.setup.mac, v->conf.mac, 6);
    m.setup.role = (uint8_t)v->conf.role;
    snprintf(m.setup.name, sizeof(m.setup.name), "%s", v->name);
    if (vm_send(s, v, &m, &v->listen_fd, 1) < 0) {
        return -EIO;
    }
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        Vm *p = &s->vm[i];
        if (p->used && p != v) {
            send_peer(s, v, p);
        }
    }
    /* Rings with every running peer it may talk to, both ways. */
    for (unsigned i = 0; i < CTL_MAX_PORTS && vm_running(v); i++) {
        Vm *p = &s->vm[i];
        if (vm_running(p) && pair_allowed(v, p)) {
            ring_offer(s, v, p);
            /* The first offer may have found p's control socket full and
             * killed p: no ring for a child that is gone. */
            if (vm_running(p) && vm_running(v)) {
                ring_offer(s, p, v);
            }
        }
    }
    s->stats_dirty = true;
    return 0;
}

/* ---- heartbeat and counters ----------------------------------------------- */

static void on_pong(Switch *s, Vm *v, const CtlPong *p) {
    uint64_t now = now_usec(CLOCK_MONOTONIC);
    if (p->seq > v->ping_seq) {
        child_kill(s, v, "answered a ping never sent");
        return;
    }
    /* The child's own account, taken as it is: a compromised child can
     * make its VM's counters (and, as the router, the ring_full drops it
     * reports for clients) say anything. Statistics, not accounting. */
    v->cur = p->counters;
    memcpy(v->ring_full_to, p->ring_full_to, sizeof(v->ring_full_to));
    memcpy(v->refused_from, p->refused_from, sizeof(v->refused_from));
    v->child_state = (CtlState)p->state;
    v->ping_missed = false; /* it answers: whatever kept it was passing */
    if (p->seq == v->ping_seq && v->ping_outstanding) {
        v->ping_outstanding = false;
        if (now - v->ping_sent_at > PONG_TIMEOUT_USEC) {
            /* Read late by us, not answered late: the deadline checks the
             * socket before it blames the child. */
            log_debug("%s: pong read %llu ms after its ping", v->name,
                      (unsigned long long)((now - v->ping_sent_at) / 1000));
        }
    }
    s->stats_dirty = true;
}

static void on_ctl(Switch *s, Vm *v) {
    for (unsigned n = 0; n < 64 && vm_running(v); n++) {
        CtlMsg m;
        int fds[CTL_MAX_FDS];
        unsigned n_fds = 0;
        int r = ctl_recv(v->ctl, CTL_FROM_CHILD, &m, fds, &n_fds);
        if (r == -EAGAIN) {
            return;
        }
        if (r == 0) {
            /* It closed its control socket: it is dying (its pidfd says
             * so next), or it is lost, which the next ping finds out. */
            epoll_ctl(s->epoll, EPOLL_CTL_DEL, v->ctl, NULL);
            return;
        }
        if (r < 0) {
            child_kill(s, v,
                       r == -EBADMSG ? "sent a malformed control message"
                                     : "broke its control socket");
            return;
        }
        switch (m.hdr.type) {
        case CTL_BUFFER_READY:
            on_buffer_ready(s, v, &m.buffer);
            break;
        case CTL_PONG:
            on_pong(s, v, &m.pong);
            break;
        default:
            child_kill(s, v, "sent an unexpected control message");
            return;
        }
    }
}

static void write_stats(Switch *s) {
    char line[1024];
    _cleanup_close_ int fd = openat(s->socket_fd, STATS_TMP,
                                    O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        log_warning("cannot write %s/%s: %m", s->opt->socket_dir, STATS_TMP);
        return;
    }
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        Vm *v = &s->vm[i];
        CtlCounters c = v->base;
        if (!v->used) {
            continue;
        }
        ctl_counters_add(&c, &v->cur);
        c.drops[CTL_DROP_RING_FULL] = v->ring_full_in;
        for (unsigned j = 0; j < CTL_MAX_PORTS; j++) {
            c.drops[CTL_DROP_RING_FULL] += s->vm[j].ring_full_to[i];
        }
        /* Frames of ours a peer's child refused from its ring: a sign that
         * our child is compromised (or our own child's word against it). */
        for (unsigned r = 0; r < POLICY_DROP_MAX; r++) {
            c.drops[r] += v->refused_in[r];
            for (unsigned j = 0; j < CTL_MAX_PORTS; j++) {
                c.drops[r] += s->vm[j].refused_from[i][r];
            }
        }
        const char *state = v->pid > 0 ? ctl_state_name(v->child_state) : "restarting";
        int n = snprintf(line, sizeof(line),
                         "vm=%s pid=%d role=%s state=%s restarts=%u rx_frames=%llu "
                         "rx_bytes=%llu tx_frames=%llu tx_bytes=%llu",
                         v->name, (int)v->pid, role_name(v->conf.role), state, v->restarts,
                         (unsigned long long)c.rx_frames, (unsigned long long)c.rx_bytes,
                         (unsigned long long)c.tx_frames, (unsigned long long)c.tx_bytes);
        for (unsigned d = 0; d < CTL_DROP_MAX && n > 0 && (size_t)n < sizeof(line); d++) {
            n += snprintf(line + n, sizeof(line) - (size_t)n, " drop_%s=%llu", ctl_drop_name(d),
                          (unsigned long long)c.drops[d]);
        }
        if (n > 0 && (size_t)n < sizeof(line) - 1) {
            line[n++] = '\n';
            if (loop_write(fd, line, (size_t)n) < 0) {
                log_warning("cannot write %s: %m", STATS_TMP);
                return;
            }
        }
    }
    if (renameat(s->socket_fd, STATS_TMP, s->socket_fd, STATS_FILE) < 0) {
        log_warning("cannot rename %s to %s: %m", STATS_TMP, STATS_FILE);
    }
    s->stats_dirty = false;
}

static void ping_send(Switch *s, Vm *v, uint64_t now) {
    CtlMsg m;
    ctl_msg_init(&m, CTL_PING);
    m.ping.seq = ++v->ping_seq;
    v->ping_sent_at = now;
    v->ping_outstanding = true;
    (void)vm_send(s, v, &m, NULL, 0);
}

static void tick(Switch *s, uint64_t now) {
    if (s->stats_dirty) {
        write_stats(s);
    }
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        Vm *v = &s->vm[i];
        if (!vm_running(v) || now - v->started_at < STARTUP_GRACE_USEC) {
            continue;
        }
        ping_send(s, v, now);
    }
}

/* Pongs overdue, restarts due; the time of the next thing to do. */
static uint64_t timers(Switch *s, uint64_t now) {
    uint64_t next;
    if (now >= s->next_tick) {
        s->next_tick = now + PING_INTERVAL_USEC;
        tick(s, now);
    }
    next = s->next_tick;
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        Vm *v = &s->vm[i];
        if (!v->used) {
            continue;
        }
        if (vm_running(v) && v->ping_outstanding) {
            uint64_t due = v->ping_sent_at + PONG_TIMEOUT_USEC;
            if (now >= due) {
                /* The pong may be waiting in the socket (we are the late
                 * one when the machine is loaded): look first. */
                on_ctl(s, v);
            }
            if (vm_running(v) && v->ping_outstanding && now >= due && v->ping_missed &&
                now - v->ping_missed_at >= HUNG_USEC) {
                v->ping_outstanding = false;
                child_kill(s, v, "answered no ping for 2 s");
            } else if (vm_running(v) && v->ping_outstanding && now >= due) {
                if (!v->ping_missed) {
                    log_warning("%s: no answer to a ping within 100 ms; asking again",
                                v->name);
                    v->ping_missed = true;
                    v->ping_missed_at = due;
                }
                ping_send(s, v, now);
                next = MIN(next, now + PONG_TIMEOUT_USEC);
            } else if (vm_running(v) && v->ping_outstanding) {
                next = MIN(next, due);
            }
        }
        if (!vm_running(v) && v->restart_pending) {
            if (now >= v->restart_at) {
                (void)child_start(s, v);
            }
            if (v->restart_pending) {
                next = MIN(next, v->restart_at);
            }
        }
    }
    return next;
}

/* ---- configuration -------------------------------------------------------- */

static int listener_open(Switch *s, const char *name, int *ret_fd) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char file[VM_NAME_MAX + 8];
    snprintf(file, sizeof(file), "%s.sock", name);
    int n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", s->opt->socket_dir, file);
    if (n < 0 || (size_t)n >= sizeof(sa.sun_path)) {
        return -ENAMETOOLONG;
    }
    _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return -errno;
    }
    /* A socket left by an earlier run: ours to replace. */
    struct stat st;
    if (fstatat(s->socket_fd, file, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISSOCK(st.st_mode)) {
        (void)unlinkat(s->socket_fd, file, 0);
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        return -errno;
    }
    if (listen(fd, 4) < 0) {
        int r = -errno;
        (void)unlinkat(s->socket_fd, file, 0);
        return r;
    }
    *ret_fd = TAKE_FD(fd);
    return 0;
}

static void listener_close(Switch *s, Vm *v) {
    char file[VM_NAME_MAX + 8];
    if (v->listen_fd < 0) {
        return;
    }
    v->listen_fd = safe_close(v->listen_fd);
    snprintf(file, sizeof(file), "%s.sock", v->name);
    (void)unlinkat(s->socket_fd, file, 0);
}

static void vm_remove(Switch *s, Vm *v) {
    log_info("%s: removed", v->name);
    child_stop(s, v);
    unsigned port = vm_port(s, v);
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        Vm *p = &s->vm[i];
        if (vm_running(p) && p != v) {
            send_peer_ref(s, p, CTL_PEER_REMOVE, v);
        }
        /* What the others counted against this port is not for the next
         * VM in the slot (their children forget it on PEER_REMOVE too). */
        p->ring_full_to[port] = 0;
        memset(p->refused_from[port], 0, sizeof(p->refused_from[port]));
    }
    (void)policy_remove_port(s->policy, port);
    listener_close(s, v);
    memset(v, 0, sizeof(*v));
    v->listen_fd = v->ctl = v->pidfd = -EBADF;
    s->stats_dirty = true;
}

/* Why conf cannot join the network as it is (or change v to it): the
 * other router or the VM with the same MAC. false when it can. */
static bool conf_conflicts(Switch *s, const Vm *self, const char *file, const VmConf *conf) {
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        const Vm *o = &s->vm[i];
        if (!o->used || o == self) {
            continue;
        }
        if (conf->role == VM_ROLE_ROUTER && o->conf.role == VM_ROLE_ROUTER) {
            log_error("%s: role=router, but %s is this network's router (exactly one per "
                      "network): ignored",
                      file, o->name);
            return true;
        }
        if (memcmp(conf->mac, o->conf.mac, 6) == 0) {
            log_error("%s: mac is %s's already: ignored", file, o->name);
            return true;
        }
    }
    return false;
}

static void config_file(Switch *s, const char *file) {
    char name[VM_NAME_MAX + 1];
    ErrorText err;
    VmConf conf;
    size_t n = strlen(file);
    if (n < 5 || !streq(file + n - 5, ".conf") || file[0] == '.') {
        return; /* not ours: editors' temporary files and the like */
    }
    if (vm_name_from_filename(file, ".conf", name) < 0) {
        char safe[64];
        log_error("%s: not a VM name ([a-z][a-z0-9-]{0,11}.conf): ignored",
                  str_sanitize(file, n, safe, sizeof(safe)));
        return;
    }
    Vm *v = vm_find(s, name);
    int r = vm_conf_load_at(s->config_fd, file, &conf, &err);
    if (r == -ENOENT) {
        if (v) {
            vm_remove(s, v);
        }
        return;
    }
    if (r < 0) {
        log_error("%s%s", err.message, v ? " (the running VM keeps its configuration)" : ": ignored");
        return;
    }
    if (v) {
        if (memcmp(&v->conf, &conf, sizeof(conf)) == 0) {
            return;
        }
        if (conf_conflicts(s, v, file, &conf)) {
            return;
        }
        log_info("%s: configuration changed: restarting its child", name);
        child_stop(s, v);
        v->conf = conf;
        (void)policy_set_port(s->policy, vm_port(s, v), conf.mac, conf.role);
        for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
            Vm *p = &s->vm[i];
            if (vm_running(p) && p != v) {
                send_peer(s, p, v);
            }
        }
        (void)child_start(s, v);
        return;
    }
    if (conf_conflicts(s, NULL, file, &conf)) {
        return;
    }
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        if (!s->vm[i].used) {
            v = &s->vm[i];
            break;
        }
    }
    if (!v) {
        log_error("%s: more than %u VMs on one network: ignored", file, CTL_MAX_PORTS);
        return;
    }
    memset(v, 0, sizeof(*v));
    v->ctl = v->pidfd = v->listen_fd = -EBADF;
    r = listener_open(s, name, &v->listen_fd);
    if (r < 0) {
        log_error_errno(r, "%s: cannot listen on %s/%s.sock: %m: ignored", file, s->opt->socket_dir,
                        name);
        return;
    }
    r = policy_set_port(s->policy, vm_port(s, v), conf.mac, conf.role);
    if (r < 0) {
        listener_close(s, v);
        log_error_errno(r, "%s: refused by the policy: %m", file);
        return;
    }
    v->used = true;
    v->conf = conf;
    snprintf(v->name, sizeof(v->name), "%s", name);
    log_info("%s: added (%s)", name, role_name(conf.role));
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        Vm *p = &s->vm[i];
        if (vm_running(p) && p != v) {
            send_peer(s, p, v);
        }
    }
    (void)child_start(s, v);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every file, in name order (so which of two routers wins does not depend
 * on the directory's order); VMs whose file is gone are removed. */
/* Reads the directory again: VMs whose file is gone are removed, and
 * every file is read; with only_new, only the files of VMs not on the
 * network (those refused for a conflict that may be gone). */
static void config_scan(Switch *s, bool only_new) {
    char *names[256];
    size_t n = 0;
    int dfd = fcntl(s->config_fd, F_DUPFD_CLOEXEC, 3);
    if (dfd < 0) {
        log_error("cannot read %s: %m", s->opt->config_dir);
        return;
    }
    DIR *d = fdopendir(dfd);
    if (!d) {
        log_error("cannot read %s: %m", s->opt->config_dir);
        close(dfd);
        return;
    }
    rewinddir(d);
    struct dirent *de;
    while ((de = readdir(d)) && n < ELEMENTSOF(names)) {
        if (de->d_name[0] != '.') {
            names[n] = strdup(de->d_name);
            if (names[n]) {
                n++;
            }
        }
    }
    closedir(d);
    qsort(names, n, sizeof(names[0]), cmp_str);
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        Vm *v = &s->vm[i];
        char file[VM_NAME_MAX + 8];
        struct stat st;
        if (!v->used) {
            continue;
        }
        snprintf(file, sizeof(file), "%s.conf", v->name);
        if (fstatat(s->config_fd, file, &st, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT) {
            vm_remove(s, v);
        }
    }
    for (size_t i = 0; i < n; i++) {
        char name[VM_NAME_MAX + 1];
        size_t len = strlen(names[i]);
        bool known = len > 5 && streq(names[i] + len - 5, ".conf") &&
                     vm_name_from_filename(names[i], ".conf", name) >= 0 && vm_find(s, name);
        if (!only_new || !known) {
            config_file(s, names[i]);
        }
        free(names[i]);
    }
}

static void on_inotify(Switch *s) {
    union {
        struct inotify_event ev;
        char buf[4096];
    } u;
    bool rescan = false, admit = false;
    for (;;) {
        ssize_t n = read(s->inotify_fd, u.buf, sizeof(u.buf));
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            break;
        }
        for (char *p = u.buf; p < u.buf + n;) {
            struct inotify_event *ev = (struct inotify_event *)p;
            p += sizeof(*ev) + ev->len;
            if (ev->mask & IN_Q_OVERFLOW) {
                rescan = true;
                continue;
            }
            if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
                log_error("%s was removed or moved: no more configuration changes",
                          s->opt->config_dir);
                continue;
            }
            if (ev->len == 0 || ev->name[0] == '\0') {
                continue;
            }
            if (ev->mask & (IN_DELETE | IN_MOVED_FROM)) {
                /* Only a VM of ours leaving changes anything; then a file
                 * refused for a conflict with it may get in. */
                char name[VM_NAME_MAX + 1];
                size_t len = strlen(ev->name);
                Vm *v = NULL;
                if (len > 5 && streq(ev->name + len - 5, ".conf") &&
                    vm_name_from_filename(ev->name, ".conf", name) >= 0) {
                    v = vm_find(s, name);
                }
                if (v) {
                    vm_remove(s, v);
                    admit = true;
                }
            } else {
                config_file(s, ev->name);
            }
        }
    }
    if (rescan || admit) {
        config_scan(s, !rescan);
    }
}

/* ---- main ----------------------------------------------------------------- */

static void shutdown_all(Switch *s) {
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        Vm *v = &s->vm[i];
        if (v->used) {
            child_stop(s, v);
            listener_close(s, v);
            for (unsigned j = 0; j < CTL_MAX_PORTS; j++) {
                pending_clear(&v->pending[j]);
            }
        }
    }
    for (unsigned i = 0; i < DYING_MAX; i++) {
        (void)dying_reap(s, &s->dying[i], true);
    }
    (void)unlinkat(s->socket_fd, STATS_FILE, 0);
}

static void switch_free(Switch *s) {
    safe_close(s->inotify_fd);
    safe_close(s->signal_fd);
    safe_close(s->epoll);
    safe_close(s->config_fd);
    safe_close(s->socket_fd);
    safe_close(s->exe_fd);
    policy_free(s->policy);
    free(s);
}

static int run_main(const Options *opt, int exe_fd) {
    Switch *s = calloc(1, sizeof(*s));
    sigset_t mask;
    if (!s) {
        die("out of memory");
    }
    s->opt = opt;
    s->exe_fd = exe_fd;
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        s->vm[i].listen_fd = s->vm[i].ctl = s->vm[i].pidfd = -EBADF;
    }
    if (policy_new(&s->policy) < 0) {
        die("out of memory");
    }

    /* Directories as fds: every later access is relative to them. */
    s->config_fd = open(opt->config_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->config_fd < 0) {
        die("cannot open the configuration directory %s: %m", opt->config_dir);
    }
    s->socket_fd = open(opt->socket_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->socket_fd < 0) {
        die("cannot open the socket directory %s: %m", opt->socket_dir);
    }

    /* Signals through the event loop; a peer gone is an error code. */
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    s->signal_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (s->signal_fd < 0) {
        die("signalfd: %m");
    }

    s->epoll = epoll_create1(EPOLL_CLOEXEC);
    if (s->epoll < 0) {
        die("epoll_create1: %m");
    }
    s->inotify_fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (s->inotify_fd < 0) {
        die("inotify_init1: %m");
    }
    /* Writes are seen when the file is closed; renames and removals too. */
    if (inotify_add_watch(s->inotify_fd, opt->config_dir,
                          IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE |
                              IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR) < 0) {
        die("cannot watch %s: %m", opt->config_dir);
    }
    epoll_add(s, s->signal_fd, EV(EV_SIGNAL, 0));
    epoll_add(s, s->inotify_fd, EV(EV_INOTIFY, 0));

    /* Listeners and children of every VM there is, then ready. */
    config_scan(s, false);
    write_stats(s);
    notify_ready();
    log_info("serving %s on %s", opt->config_dir, opt->socket_dir);

    s->next_tick = now_usec(CLOCK_MONOTONIC) + PING_INTERVAL_USEC;
    for (;;) {
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        uint64_t next = timers(s, now);
        now = now_usec(CLOCK_MONOTONIC);
        int timeout = next > now ? (int)((next - now + 999) / 1000) : 0;
        struct epoll_event evs[16];
        int n = epoll_wait(s->epoll, evs, ELEMENTSOF(evs), timeout);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            die("epoll_wait: %m");
        }
        for (int i = 0; i < n; i++) {
            uint32_t kind = (uint32_t)(evs[i].data.u64 >> 32);
            uint32_t idx = (uint32_t)evs[i].data.u64;
            Vm *v = idx < CTL_MAX_PORTS ? &s->vm[idx] : NULL;
            switch (kind) {
            case EV_SIGNAL: {
                struct signalfd_siginfo si;
                if (read(s->signal_fd, &si, sizeof(si)) == sizeof(si)) {
                    log_info("signal %u: stopping", si.ssi_signo);
                    shutdown_all(s);
                    switch_free(s);
                    return EXIT_SUCCESS;
                }
                break;
            }
            case EV_INOTIFY:
                on_inotify(s);
                break;
            case EV_CTL:
                if (v && vm_running(v)) {
                    on_ctl(s, v);
                }
                break;
            case EV_PIDFD:
                if (v && vm_running(v)) {
                    on_child_exit(s, v);
                }
                break;
            case EV_DYING:
                if (idx < DYING_MAX) {
                    (void)dying_reap(s, &s->dying[idx], false);
                }
                break;
            default:
                break;
            }
        }
    }
}

int main(int argc, char **argv) {
    Options opt;
    log_setup(PROGRAM);
    parse_options(argc, argv, &opt);
    if (opt.log_level) {
        log_set_max_level(log_level_from_string(opt.log_level));
    }
    if (opt.child_fd >= 0) {
        /* A child: everything else comes over the control socket. It
         * locks itself down once set up, unless there is no sandbox. */
        return child_run(opt.child_fd, !opt.no_sandbox, opt.seccomp_mode);
    }
    if (opt.stats) {
        return print_stats(opt.socket_dir);
    }
    if (opt.print_role >= 0) {
        filter_print((FilterRole)opt.print_role, stdout);
        return EXIT_SUCCESS;
    }

    /* This program's own file, for the children's execveat: still
     * reachable after the sandbox's pivot_root. */
    int exe_fd = open("/proc/self/exe", O_PATH | O_CLOEXEC);
    if (exe_fd < 0) {
        die("cannot open /proc/self/exe: %m");
    }

    /* The sandbox, before any other fd or process exists. Inside it the
     * configuration directory is /config and the socket directory is at
     * its canonical path: both are resolved here, where they are the
     * host's, and only used below this line. */
    _cleanup_free_ char *config_dir = realpath(opt.config_dir, NULL);
    if (!config_dir) {
        die("cannot open the configuration directory %s: %m", opt.config_dir);
    }
    _cleanup_free_ char *socket_dir = realpath(opt.socket_dir, NULL);
    if (!socket_dir) {
        die("cannot open the socket directory %s: %m", opt.socket_dir);
    }
    if (!opt.no_sandbox) {
        SandboxOptions so = {
            .config_dir = config_dir,
            .socket_dir = socket_dir,
            .user = opt.user,
            .filter_mode = opt.seccomp_mode,
        };
        int r = sandbox_enter(&so);
        if (r == -EPERM && !opt.user && geteuid() == 0) {
            die("started as root: give --user NAME to run as (or --no-sandbox)");
        }
        if (r < 0) {
            die("cannot enter the sandbox: %s", strerror(-r));
        }
        opt.config_dir = SANDBOX_CONFIG_DIR;
        opt.socket_dir = socket_dir;
    }
    return run_main(&opt, exe_fd);
}
