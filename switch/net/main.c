/* vm-switch: the L2 switch between the VMs of one network. One program,
 * two kinds of process: the main process (configuration, children, rings,
 * heartbeat, counters: main-*.c) and one child per VM (a vhost-user-net
 * backend: child*.c), a fresh execution of this program with `--child`.
 *
 * The main process's set-up is one sequence: options, /proc/self/exe
 * (O_PATH, for re-executing children after pivot_root), both directories
 * resolved, the sandbox, then the two directories as fds, signalfd, epoll,
 * inotify, a child per VM, READY=1, and the event loop. No thread is ever
 * created: the sandbox goes in right after option parsing. Every fd is
 * close-on-exec. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "child.h"
#include "confine.h"
#include "log.h"
#include "main-children.h"
#include "main-config.h"
#include "main-ctl.h"
#include "main-heartbeat.h"
#include "main-state.h"
#include "main-stats.h"
#include "options.h"
#include "switch/sandbox/cli.h"
#include "util.h"

Vm *vm_find(Switch *s, const char *name) {
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        if (s->vm[i].used && streq(s->vm[i].name, name)) {
            return &s->vm[i];
        }
    }
    return NULL;
}

void switch_epoll_add(Switch *s, int fd, uint64_t tag) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag};
    if (epoll_ctl(s->epoll, EPOLL_CTL_ADD, fd, &ev) < 0) {
        die("epoll_ctl(ADD): %m");
    }
}

/* ---- set-up ------------------------------------------------------------- */

static Switch *switch_new(const Options *opt, int exe_fd) {
    Switch *s = calloc(1, sizeof(*s));
    if (!s) {
        die("out of memory");
    }
    s->opt = opt;
    s->exe_fd = exe_fd;
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        vm_clear(&s->vm[i]);
    }
    if (policy_new(&s->policy) < 0) {
        die("out of memory");
    }
    return s;
}

/* Directories as fds: every later access is relative to them. */
static void open_directories(Switch *s) {
    s->config_fd = open(s->opt->config_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->config_fd < 0) {
        die("cannot open the configuration directory %s: %m", s->opt->config_dir);
    }
    s->socket_fd = open(s->opt->socket_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->socket_fd < 0) {
        die("cannot open the socket directory %s: %m", s->opt->socket_dir);
    }
}

/* Signals through the event loop; a peer gone is an error code. */
static void take_signals(Switch *s) {
    sigset_t mask;
    signals_take((const int[]){SIGTERM, SIGINT, SIGHUP, 0}, &mask);
    s->signal_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (s->signal_fd < 0) {
        die("signalfd: %m");
    }
}

/* The event loop's epoll set, with the signals and the watch on the
 * configuration directory in it. */
static void watch_events(Switch *s) {
    s->epoll = epoll_create1(EPOLL_CLOEXEC);
    if (s->epoll < 0) {
        die("epoll_create1: %m");
    }
    s->inotify_fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (s->inotify_fd < 0) {
        die("inotify_init1: %m");
    }
    /* Writes are seen when the file is closed; renames and removals too. */
    if (inotify_add_watch(s->inotify_fd, s->opt->config_dir,
                          IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE |
                              IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR) < 0) {
        die("cannot watch %s: %m", s->opt->config_dir);
    }
    switch_epoll_add(s, s->signal_fd, EV(EV_SIGNAL, 0));
    switch_epoll_add(s, s->inotify_fd, EV(EV_INOTIFY, 0));
}

/* ---- shutdown ----------------------------------------------------------- */

/* Every child stopped and reaped, the sockets and the counters file
 * removed. */
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

/* ---- the event loop ----------------------------------------------------- */

/* One event. true when the switch is to stop (a signal came). */
static bool dispatch(Switch *s, uint64_t tag) {
    uint32_t kind = (uint32_t)(tag >> 32);
    uint32_t idx = (uint32_t)tag;
    Vm *v = idx < CTL_MAX_PORTS ? &s->vm[idx] : NULL;
    switch (kind) {
    case EV_SIGNAL: {
        struct signalfd_siginfo si;
        if (read(s->signal_fd, &si, sizeof(si)) == sizeof(si)) {
            log_info("signal %u: stopping", si.ssi_signo);
            return true;
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
    return false;
}

/* Timers, then events, until a signal says stop. */
static void event_loop(Switch *s) {
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
            if (dispatch(s, evs[i].data.u64)) {
                return;
            }
        }
    }
}

/* The main process, sandboxed or not: set-up, a listener and a child for
 * every VM there is, READY=1, then the event loop until a signal. */
static int run_main(const Options *opt, int exe_fd) {
    Switch *s = switch_new(opt, exe_fd);
    open_directories(s);
    take_signals(s);
    watch_events(s);

    config_scan(s, false);
    write_stats(s);
    /* READY=1 once the directory has been read and every child started:
     * through the supervisor when sandboxed (a datagram written by hand,
     * no libsystemd, whose libraries would all have to be in the root). */
    cli_notify_ready();
    log_info("serving %s on %s", opt->config_dir, opt->socket_dir);

    event_loop(s);
    shutdown_all(s);
    switch_free(s);
    return EXIT_SUCCESS;
}

/* The sandbox, before any other fd or process exists. Inside it the
 * configuration directory is /config and the socket directory is at its
 * canonical path: both are resolved here, where they are the host's, and
 * only used below this line. Returns in the sandboxed main process (or
 * unsandboxed with --no-sandbox), with opt's directories as the main
 * process sees them. */
static void enter_sandbox(Options *opt, char **ret_socket_dir) {
    _cleanup_free_ char *config_dir = realpath(opt->config_dir, NULL);
    if (!config_dir) {
        die("cannot open the configuration directory %s: %m", opt->config_dir);
    }
    char *socket_dir = realpath(opt->socket_dir, NULL);
    if (!socket_dir) {
        die("cannot open the socket directory %s: %m", opt->socket_dir);
    }
    *ret_socket_dir = socket_dir;
    if (opt->no_sandbox) {
        return;
    }
    int r = confine_enter(config_dir, socket_dir, opt->user, opt->seccomp_mode);
    if (r < 0) {
        cli_sandbox_failed(r, !opt->user && geteuid() == 0);
    }
    opt->config_dir = VM_SWITCH_CONFIG_DIR;
    opt->socket_dir = socket_dir;
}

int main(int argc, char **argv) {
    Options opt;
    log_setup(PROGRAM);
    options_parse(argc, argv, &opt);
    if (opt.child_fd >= 0) {
        /* A child: everything else comes over the control socket. It
         * locks itself down once set up, unless there is no sandbox. */
        return child_run(opt.child_fd, !opt.no_sandbox, opt.seccomp_mode);
    }
    if (opt.stats) {
        return print_stats(opt.socket_dir);
    }
    if (opt.print_filter) {
        filter_print(opt.print_filter, stdout);
        return EXIT_SUCCESS;
    }

    /* This program's own file, for the children's execveat: still
     * reachable after the sandbox's pivot_root. */
    int exe_fd = open("/proc/self/exe", O_PATH | O_CLOEXEC);
    if (exe_fd < 0) {
        die("cannot open /proc/self/exe: %m");
    }
    _cleanup_free_ char *socket_dir = NULL;
    enter_sandbox(&opt, &socket_dir);
    return run_main(&opt, exe_fd);
}
