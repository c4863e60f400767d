/* The seccomp allowlists of vm-switch's three roles.
 *
 * Each role has one table: every system call it may make, with the
 * condition on its arguments where one narrows it, and why it is there.
 * Everything else gets the mode's action (kill by default). The tables
 * are deliberately short and specific to what the code does; a call that
 * is missing shows up as a SIGSYS in tests (run with --seccomp-mode trap
 * or log to find it), never as a silent failure.
 *
 * Process-creation flags: clone()'s flags are a register, so the filter
 * refuses the namespace flags. clone3() passes them in memory, which
 * seccomp cannot read, so clone3 fails with ENOSYS and glibc falls back to
 * clone(). */
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <termios.h>
#include <unistd.h>

#include "filter.h"
#include "util.h"

typedef enum RuleKind {
    RULE_ALLOW,     /* any arguments */
    RULE_ARG_EQ,    /* allowed when argument `arg` equals `value` */
    RULE_ARG_CLEAR, /* allowed when argument `arg` has none of the bits in `value` */
    RULE_ERRNO,     /* fails with errno `value` whatever the mode */
} RuleKind;

typedef struct Rule {
    const char *name;
    RuleKind kind;
    unsigned arg;
    uint64_t value;
    const char *why;
} Rule;

/* clang-format off */
#define ALLOW(n, w) {n, RULE_ALLOW, 0, 0, w}
#define ALLOW_IF_EQ(n, a, v, w) {n, RULE_ARG_EQ, a, (uint64_t)(v), w}
#define ALLOW_IF_CLEAR(n, a, m, w) {n, RULE_ARG_CLEAR, a, (uint64_t)(m), w}
#define FAIL(n, e, w) {n, RULE_ERRNO, 0, e, w}
/* clang-format on */

/* Every flag that would make a new namespace through clone(). CLONE_NEWTIME
 * is left out: in clone()'s flags its bit is part of the exit signal. */
#define CLONE_NS_FLAGS                                                                             \
    (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |  \
     CLONE_NEWNET)

/* An open that could write, create or truncate anything. */
#define OPEN_WRITE_FLAGS                                                                           \
    (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND | (O_TMPFILE & ~O_DIRECTORY))

/* The supervisor waits outside the pid namespace for the main process,
 * forwards signals to it and relays its notifications to systemd. */
static const Rule supervisor_rules[] = {
    ALLOW("ppoll", "waits for a signal or a message from the main process"),
    ALLOW("read", "reads the signalfd and the relay socket"),
    ALLOW("write", "logs to stderr"),
    ALLOW("kill", "forwards a signal to the main process"),
    ALLOW("wait4", "reaps the main process and learns its status"),
    ALLOW_IF_EQ("socket", 0, AF_UNIX, "a datagram socket to systemd's notification socket"),
    ALLOW("sendto", "relays a notification"),
    ALLOW("close", "closes that socket"),
    ALLOW("brk", "malloc"),
    ALLOW_IF_CLEAR("mmap", 2, PROT_EXEC, "malloc; never executable"),
    ALLOW("munmap", "free"),
    ALLOW("newfstatat", "stdio on stderr"),
    ALLOW("clock_gettime", "timestamps where the vDSO is not used"),
    ALLOW("exit_group", "exits with the main process's status"),
    ALLOW("restart_syscall", "the kernel resumes an interrupted call"),
};

/* The main process: watches /config, creates each VM's listening socket,
 * the control channel, rings and eventfds, forks and re-executes the
 * per-VM children (which run its filter until they add their own), and
 * supervises them. Opens can only read, and the mount namespace holds
 * nothing to read but /config, /proc, three device nodes and the
 * libraries the program is mapped from. */
static const Rule main_rules[] = {
    /* I/O on descriptors it already has */
    ALLOW("read", "config files, eventfds, signalfd, inotify, pipes"),
    ALLOW("write", "logging, eventfds"),
    ALLOW("pread64", "the dynamic loader reads ELF headers in a re-executed child"),
    ALLOW("close", "every descriptor it is done with"),
    ALLOW("dup2", "a child moves its control socket into place before exec"),
    ALLOW("fcntl", "close-on-exec, non-blocking, memfd seals"),
    ALLOW("lseek", "rewinds the configuration directory before a scan"),
    /* files: only what the mount namespace holds, writable only in the
     * socket directory and /tmp */
    ALLOW("openat", "reads /config; writes the counters file in the socket directory"),
    ALLOW("renameat", "replaces the counters file in one step"),
    ALLOW("renameat2", "replaces the counters file in one step"),
    ALLOW("unlinkat", "removes a VM's socket and the counters file"),
    ALLOW("newfstatat", "stat of config files and descriptors"),
    ALLOW("fstat", "stat of descriptors"),
    ALLOW("getdents64", "lists /config"),
    ALLOW("access", "the dynamic loader probes /etc/ld.so.preload"),
    ALLOW("inotify_init1", "watches /config"),
    ALLOW("inotify_add_watch", "watches /config"),
    ALLOW("inotify_rm_watch", "watches /config"),
    /* sockets: AF_UNIX only; there is no other network in the namespace */
    ALLOW_IF_EQ("socket", 0, AF_UNIX, "the per-VM vhost-user listening sockets"),
    ALLOW_IF_EQ("socketpair", 0, AF_UNIX, "the SOCK_SEQPACKET control channel to each child"),
    ALLOW("bind", "the vhost-user sockets"),
    ALLOW("listen", "the vhost-user sockets"),
    ALLOW("accept4", "a frontend connecting"),
    ALLOW("sendmsg", "control messages with SCM_RIGHTS"),
    ALLOW("recvmsg", "control messages with SCM_RIGHTS"),
    ALLOW("sendto", "send() on the control channel"),
    /* shared memory and event plumbing */
    ALLOW("memfd_create", "frame rings between children"),
    ALLOW("ftruncate", "sizes a ring's memfd"),
    ALLOW("mmap", "rings, malloc; the dynamic loader maps code in a re-executed child"),
    ALLOW("mprotect", "the dynamic loader (RELRO) in a re-executed child"),
    ALLOW("munmap", "rings, free"),
    ALLOW("brk", "malloc"),
    ALLOW("eventfd2", "ring wakeups"),
    ALLOW("epoll_create1", "the event loop"),
    ALLOW("epoll_ctl", "the event loop"),
    ALLOW("epoll_wait", "the event loop"),
    ALLOW("epoll_pwait", "the event loop"),
    ALLOW("signalfd4", "signals as events"),
    ALLOW("ppoll", "waits on a single descriptor"),
    ALLOW("sched_yield", "a child spins a moment before sleeping (its filter is stacked on "
                         "this one: everything it allows must be here too)"),
    /* processes: one child per VM, re-executed from a descriptor */
    ALLOW_IF_CLEAR("clone", 0, CLONE_NS_FLAGS, "forks a per-VM child; no new namespaces"),
    FAIL("clone3", ENOSYS,
         "its flags are in memory, out of seccomp's reach: glibc falls "
         "back to clone()"),
    ALLOW("execveat", "a child re-executes the program from a descriptor opened before"),
    ALLOW("wait4", "reaps children"),
    ALLOW("pidfd_open", "children as events"),
    ALLOW("kill", "stops a child"),
    ALLOW("exit_group", "exit"),
    ALLOW("rt_sigaction", "signal dispositions in a child before exec"),
    ALLOW("rt_sigprocmask", "blocks the signals the signalfd reads"),
    ALLOW("clock_gettime", "time where the vDSO is not used"),
    ALLOW("restart_syscall", "the kernel resumes an interrupted call"),
    ALLOW("getrandom", "the dynamic loader and malloc seed themselves"),
    /* the start of a re-executed child, before it adds its own filter */
    ALLOW("arch_prctl", "the dynamic loader sets up TLS"),
    ALLOW("set_tid_address", "glibc start-up"),
    ALLOW("set_robust_list", "glibc start-up"),
    ALLOW("rseq", "glibc start-up"),
    ALLOW("prlimit64", "glibc start-up reads, and a child sets, its limits"),
    ALLOW_IF_EQ("prctl", 0, PR_SET_PDEATHSIG, "a child dies with the main process"),
    ALLOW_IF_EQ("prctl", 0, PR_SET_NO_NEW_PRIVS, "a child sets it again before its filter"),
    ALLOW_IF_EQ("prctl", 0, PR_GET_NO_NEW_PRIVS, "libseccomp checks it"),
    ALLOW_IF_EQ("prctl", 0, PR_CAPBSET_READ, "libcap: a child checks its bounding set"),
    ALLOW_IF_EQ("prctl", 0, PR_CAP_AMBIENT, "libcap: a child clears its ambient set"),
    ALLOW("capget", "libcap: a child drops its capabilities"),
    ALLOW("capset", "libcap: a child drops its capabilities"),
    ALLOW("seccomp", "a child adds its stricter filter (filters only narrow)"),
};

/* A per-VM child once its vhost-user connection and rings are set up:
 * it moves frames between its VM's virtqueues and the rings, answers the
 * frontend and the main process. All its descriptors come from the main
 * process or exist already; it creates no process, socket or file, and
 * maps nothing executable. */
static const Rule child_rules[] = {
    ALLOW("read", "eventfds (kicks, ring wakeups)"),
    ALLOW("write", "eventfds (calls, ring wakeups) and logging"),
    ALLOW("recvmsg", "vhost-user and control messages, with descriptors"),
    ALLOW("sendmsg", "vhost-user replies and control messages"),
    ALLOW("sendto", "send() on the control channel"),
    ALLOW("accept4", "a frontend (re)connects to the VM's socket"),
    ALLOW("close", "descriptors of a replaced memory table or ring"),
    ALLOW("fcntl", "non-blocking mode; a ring's seals are checked"),
    ALLOW("epoll_wait", "the event loop"),
    ALLOW("epoll_pwait", "the event loop"),
    ALLOW("epoll_ctl", "kick and ring descriptors come and go"),
    ALLOW("sched_yield", "looks for more frames for a moment before sleeping"),
    ALLOW_IF_CLEAR("mmap", 2, PROT_EXEC, "guest memory regions and rings; never executable"),
    ALLOW_IF_CLEAR("mprotect", 2, PROT_EXEC, "malloc; never executable"),
    ALLOW("munmap", "a replaced memory table"),
    ALLOW("brk", "malloc"),
    ALLOW("fstat", "a memory region's file must cover its size"),
    ALLOW("newfstatat", "fstat() through glibc"),
    ALLOW("clock_gettime", "time where the vDSO is not used"),
    ALLOW("restart_syscall", "the kernel resumes an interrupted call"),
    ALLOW("exit_group", "exit (a protocol violation ends the child)"),
};

/* What the sanitizer runtime (make check) needs on top, once a process is
 * locked down; production builds do not have these. Leak checking, which
 * would need clone, ptrace and /proc, is turned off in filtered processes
 * (sandbox.c). */
#if defined(__SANITIZE_ADDRESS__)
#define SANITIZER_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZER_BUILD 1
#endif
#endif
#ifdef SANITIZER_BUILD
static const Rule sanitizer_rules[] = {
    ALLOW("getpid", "reports name the process"),
    ALLOW("gettid", "reports name the thread"),
    ALLOW("sched_yield", "the allocator's spin locks"),
    ALLOW("madvise", "the allocator returns memory"),
    ALLOW_IF_CLEAR("mprotect", 2, PROT_EXEC, "the allocator's guard pages"),
    ALLOW("munmap", "the allocator"),
    ALLOW_IF_CLEAR("mmap", 2, PROT_EXEC, "the allocator"),
    ALLOW("write", "reports"),
    ALLOW("rt_sigprocmask", "reports block signals"),
    ALLOW("rt_sigaction", "reports restore dispositions"),
    ALLOW("readlink", "reports resolve /proc/self/exe"),
    ALLOW("prlimit64", "reports read the stack limit"),
    ALLOW("exit_group", "abort_on_error"),
    ALLOW("tgkill", "abort_on_error raises SIGABRT"),
    ALLOW("sigaltstack", "the runtime's signal stack, set up and torn down at exit"),
    ALLOW("rt_sigreturn", "the runtime's own signal handlers return"),
    ALLOW_IF_EQ("prctl", 0, PR_GET_SECCOMP, "__lsan_is_turned_off() below"),
};

/* The runtime's start-up in a re-executed child, under the main's filter. */
static const Rule sanitizer_start_rules[] = {
    ALLOW_IF_CLEAR("open", 1, OPEN_WRITE_FLAGS, "reads /proc/self/cmdline, maps, environ"),
};

#include <sanitizer/lsan_interface.h>
#include <sys/resource.h>
/* Leak checking at exit needs clone, ptrace and /proc: nothing a filtered
 * process may do (a re-executed child inherits the filter without having
 * loaded it), nor one whose RLIMIT_NPROC is 0 (a locked-down child, even
 * with --seccomp-mode disabled). The same code run without the sandbox
 * checks leaks. */
int __lsan_is_turned_off(void) {
    struct rlimit rl;
    return filter_applied() || prctl(PR_GET_SECCOMP, 0, 0, 0, 0) == 2 ||
           (getrlimit(RLIMIT_NPROC, &rl) == 0 && rl.rlim_cur == 0);
}
#endif

static bool loaded;

typedef struct RoleTable {
    const Rule *rules;
    size_t n;
} RoleTable;

static const RoleTable tables[_FILTER_ROLE_MAX] = {
    [FILTER_ROLE_SUPERVISOR] = {supervisor_rules, ELEMENTSOF(supervisor_rules)},
    [FILTER_ROLE_MAIN] = {main_rules, ELEMENTSOF(main_rules)},
    [FILTER_ROLE_CHILD] = {child_rules, ELEMENTSOF(child_rules)},
};

static const char *const mode_names[] = {
    [FILTER_KILL] = "kill",
    [FILTER_TRAP] = "trap",
    [FILTER_LOG] = "log",
    [FILTER_DISABLED] = "disabled",
};

static const char *const role_names[_FILTER_ROLE_MAX] = {
    [FILTER_ROLE_SUPERVISOR] = "supervisor",
    [FILTER_ROLE_MAIN] = "main",
    [FILTER_ROLE_CHILD] = "child",
};

int filter_mode_from_string(const char *s) {
    for (size_t i = 0; i < ELEMENTSOF(mode_names); i++) {
        if (streq(s, mode_names[i])) {
            return (int)i;
        }
    }
    return -EINVAL;
}

const char *filter_mode_to_string(FilterMode mode) {
    return (size_t)mode < ELEMENTSOF(mode_names) ? mode_names[mode] : NULL;
}

int filter_role_from_string(const char *s) {
    for (size_t i = 0; i < ELEMENTSOF(role_names); i++) {
        if (streq(s, role_names[i])) {
            return (int)i;
        }
    }
    return -EINVAL;
}

const char *filter_role_to_string(FilterRole role) {
    return (size_t)role < ELEMENTSOF(role_names) ? role_names[role] : NULL;
}

bool filter_applied(void) {
    return loaded;
}

static uint32_t default_action(FilterMode mode) {
    switch (mode) {
    case FILTER_TRAP:
        return SCMP_ACT_TRAP;
    case FILTER_LOG:
        return SCMP_ACT_LOG;
    default:
        return SCMP_ACT_KILL_PROCESS;
    }
}

static int add_rule(scmp_filter_ctx ctx, const Rule *r) {
    int nr = seccomp_syscall_resolve_name(r->name);
    if (nr == __NR_SCMP_ERROR) {
        return -EINVAL;
    }
    switch (r->kind) {
    case RULE_ALLOW:
        return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
    case RULE_ARG_EQ:
        return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
                                SCMP_CMP(r->arg, SCMP_CMP_EQ, r->value));
    case RULE_ARG_CLEAR:
        if (r->value == 0) {
            return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
        }
        return seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 1,
                                SCMP_CMP(r->arg, SCMP_CMP_MASKED_EQ, r->value, 0));
    case RULE_ERRNO:
        return seccomp_rule_add(ctx, SCMP_ACT_ERRNO((uint32_t)r->value), nr, 0);
    }
    return -EINVAL;
}

static int add_rules(scmp_filter_ctx ctx, const Rule *rules, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int r = add_rule(ctx, &rules[i]);
        /* A sanitizer addition may repeat a production rule. */
        if (r < 0 && r != -EEXIST) {
            return r;
        }
    }
    return 0;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(scmp_filter_ctx, seccomp_release)

/* Trap mode: say which call was refused, then end the process. Without
 * this a PID 1 would ignore the SIGSYS and go on with a bogus result.
 * write() and _exit() only: every role allows them. */
static void on_sigsys(int sig, siginfo_t *si, void *uc) {
    char buf[64] = "seccomp: refused system call ";
    char digits[12];
    size_t n = strlen(buf);
    unsigned v = (unsigned)si->si_syscall;
    int k = 0;
    do {
        digits[k++] = (char)('0' + v % 10);
        v /= 10;
    } while (v && k < (int)sizeof(digits));
    while (k > 0) {
        buf[n++] = digits[--k];
    }
    buf[n++] = '\n';
    if (write(STDERR_FILENO, buf, n) < 0) {
        /* nothing more to say */
    }
    _exit(128 + SIGSYS);
}

/* Installed unless the program handles SIGSYS itself. */
static int install_trap_reporter(void) {
    struct sigaction old, sa = {.sa_sigaction = on_sigsys, .sa_flags = SA_SIGINFO};
    if (sigaction(SIGSYS, NULL, &old) < 0) {
        return -errno;
    }
    if ((old.sa_flags & SA_SIGINFO) || old.sa_handler != SIG_DFL) {
        return 0;
    }
    return sigaction(SIGSYS, &sa, NULL) < 0 ? -errno : 0;
}

int filter_apply(FilterRole role, FilterMode mode) {
    if ((size_t)role >= _FILTER_ROLE_MAX || (size_t)mode >= ELEMENTSOF(mode_names)) {
        return -EINVAL;
    }
    if (mode == FILTER_DISABLED) {
        return 0;
    }
    _cleanup_(seccomp_releasep) scmp_filter_ctx ctx = seccomp_init(default_action(mode));
    if (!ctx) {
        return -ENOMEM;
    }
    /* The caller sets no_new_privs itself, as a step of its own; libseccomp
     * must not hide a missing one. */
    int r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
    if (r < 0) {
        return r;
    }
    /* Calls of another ABI (x32, i386 through int 0x80) match none of the
     * rules: they get the default action, as the native arch is the only
     * one in the filter. */
    r = add_rules(ctx, tables[role].rules, tables[role].n);
    if (r < 0) {
        return r;
    }
#ifdef SANITIZER_BUILD
    r = add_rules(ctx, sanitizer_rules, ELEMENTSOF(sanitizer_rules));
    if (r >= 0 && role == FILTER_ROLE_MAIN) {
        r = add_rules(ctx, sanitizer_start_rules, ELEMENTSOF(sanitizer_start_rules));
    }
    if (r < 0) {
        return r;
    }
#endif
    if (mode == FILTER_TRAP) {
        r = install_trap_reporter();
        if (r < 0) {
            return r;
        }
    }
    r = seccomp_load(ctx);
    if (r < 0) {
        return r;
    }
    loaded = true;
    return 0;
}

size_t filter_count(FilterRole role) {
    if ((size_t)role >= _FILTER_ROLE_MAX) {
        return 0;
    }
    const RoleTable *t = &tables[role];
    size_t n = 0;
    for (size_t i = 0; i < t->n; i++) {
        if (t->rules[i].kind == RULE_ERRNO) {
            continue;
        }
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++) {
            seen = t->rules[j].kind != RULE_ERRNO && streq(t->rules[j].name, t->rules[i].name);
        }
        n += !seen;
    }
    return n;
}

void filter_print(FilterRole role, FILE *f) {
    if ((size_t)role >= _FILTER_ROLE_MAX) {
        return;
    }
    const RoleTable *t = &tables[role];
    for (size_t i = 0; i < t->n; i++) {
        const Rule *r = &t->rules[i];
        char cond[64] = "";
        switch (r->kind) {
        case RULE_ALLOW:
            break;
        case RULE_ARG_EQ:
            snprintf(cond, sizeof(cond), "arg%u == %#llx", r->arg, (unsigned long long)r->value);
            break;
        case RULE_ARG_CLEAR:
            if (r->value != 0) {
                snprintf(cond, sizeof(cond), "(arg%u & %#llx) == 0", r->arg,
                         (unsigned long long)r->value);
            }
            break;
        case RULE_ERRNO:
            snprintf(cond, sizeof(cond), "fails with %s", strerrorname_np((int)r->value));
            break;
        }
        fprintf(f, "%-20s %-28s %s\n", r->name, cond, r->why);
    }
    fprintf(f, "%s: %zu system calls allowed\n", role_names[role], filter_count(role));
}
