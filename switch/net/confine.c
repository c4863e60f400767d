/* vm-switch's confinement: its sandbox's description and one seccomp
 * allowlist per process role, each call with its reason. The tables are
 * this file; their sizes today: supervisor 15, main 60 and child 21 system
 * calls (`vm-switch --print-seccomp ROLE` prints one,
 * tests/unit/switch/test-filter.c checks the child's bound and that it is
 * a subset of the main's).
 *
 * What the code calls, besides glibc's own malloc and fprintf to stderr
 * (brk, mmap, munmap, write):
 * - a serving child: epoll_wait, epoll_ctl, accept4, recvmsg (the control
 *   and vhost-user sockets), sendmsg (control), sendto (send() of
 *   vhost-user replies), read/write (eventfds), mmap/munmap (guest memory
 *   and rings), fstat, fcntl (F_GET_SEALS, F_GETFL/F_SETFL), close,
 *   sched_yield; before serving also epoll_create1 and rt_sigaction.
 *   Never open, socket, fork/clone or execve.
 * - the main process: openat, getdents64, newfstatat, unlinkat, renameat,
 *   socket, bind, listen, socketpair, sendmsg/recvmsg, sendto (READY=1),
 *   memfd_create, ftruncate, fcntl (F_ADD_SEALS, F_DUPFD_CLOEXEC),
 *   eventfd2, inotify_init1, inotify_add_watch, signalfd4,
 *   rt_sigprocmask, epoll_*, clone (fork), pidfd_open, wait4, kill,
 *   clock_gettime; in a forked child before it is replaced:
 *   prctl(PR_SET_PDEATHSIG), rt_sigprocmask, dup2/fcntl, execveat.
 *
 * The main process may fork only without namespace flags (clone()'s
 * flags are a register; clone3() passes them in memory, out of seccomp's
 * reach, so clone3 fails with ENOSYS and glibc falls back to clone()),
 * create AF_UNIX sockets only and watch with inotify; what it can open is
 * what the mount namespace holds. It keeps executable mappings and
 * execveat because a re-executed child runs under the main's filter until
 * its own is stacked on top, which is also why every call the child's
 * table allows must be in the main's. A serving child creates no process,
 * socket or file (it only accept4s on the socket it was given), executes
 * nothing, and maps nothing executable (mmap and mprotect with PROT_EXEC
 * are refused). */
#include "confine.h"

#include <errno.h>
#include <linux/sched.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#include "switch/sandbox/sandbox.h"
#include "util.h"

/* Every flag that would make a new namespace through clone(). CLONE_NEWTIME
 * is left out: in clone()'s flags its bit is part of the exit signal. */
#define CLONE_NS_FLAGS                                                                             \
    (CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |  \
     CLONE_NEWNET)

/* The main process: watches /config, creates each VM's listening socket,
 * the control channel, rings and eventfds, forks and re-executes the
 * per-VM children (which run its filter until they add their own), and
 * supervises them. What it can open is what the mount namespace holds:
 * /config (read-only), the socket directory (its counters file), /proc,
 * /tmp, three device nodes and the libraries the program is mapped from. */
static const FilterRule main_rules[] = {
    /* I/O on descriptors it already has */
    FILTER_ALLOW("read", "config files, eventfds, signalfd, inotify, pipes"),
    FILTER_ALLOW("write", "logging, eventfds"),
    FILTER_ALLOW("pread64", "the dynamic loader reads ELF headers in a re-executed child"),
    FILTER_ALLOW("close", "every descriptor it is done with"),
    FILTER_ALLOW("dup2", "a child moves its control socket into place before exec"),
    FILTER_ALLOW("fcntl", "close-on-exec, non-blocking, memfd seals"),
    FILTER_ALLOW("lseek", "rewinds the configuration directory before a scan"),
    /* files: only what the mount namespace holds, writable only in the
     * socket directory and /tmp */
    FILTER_ALLOW("openat", "reads /config; writes the counters file in the socket directory"),
    FILTER_ALLOW("renameat", "replaces the counters file in one step"),
    FILTER_ALLOW("renameat2", "replaces the counters file in one step"),
    FILTER_ALLOW("unlinkat", "removes a VM's socket and the counters file"),
    FILTER_ALLOW("newfstatat", "stat of config files and descriptors"),
    FILTER_ALLOW("fstat", "stat of descriptors"),
    FILTER_ALLOW("getdents64", "lists /config"),
    FILTER_ALLOW("access", "the dynamic loader probes /etc/ld.so.preload"),
    FILTER_ALLOW("inotify_init1", "watches /config"),
    FILTER_ALLOW("inotify_add_watch", "watches /config"),
    FILTER_ALLOW("inotify_rm_watch", "watches /config"),
    /* sockets: AF_UNIX only; there is no other network in the namespace */
    FILTER_ALLOW_IF_EQ("socket", 0, AF_UNIX, "the per-VM vhost-user listening sockets"),
    FILTER_ALLOW_IF_EQ("socketpair", 0, AF_UNIX,
                       "the SOCK_SEQPACKET control channel to each child"),
    FILTER_ALLOW("bind", "the vhost-user sockets"),
    FILTER_ALLOW("listen", "the vhost-user sockets"),
    FILTER_ALLOW("accept4", "a frontend connecting"),
    FILTER_ALLOW("sendmsg", "control messages with SCM_RIGHTS"),
    FILTER_ALLOW("recvmsg", "control messages with SCM_RIGHTS"),
    FILTER_ALLOW("sendto", "send() on the control channel"),
    /* shared memory and event plumbing */
    FILTER_ALLOW("memfd_create", "frame rings between children"),
    FILTER_ALLOW("ftruncate", "sizes a ring's memfd"),
    FILTER_ALLOW("mmap", "rings, malloc; the dynamic loader maps code in a re-executed child"),
    FILTER_ALLOW("mprotect", "the dynamic loader (RELRO) in a re-executed child"),
    FILTER_ALLOW("munmap", "rings, free"),
    FILTER_ALLOW("brk", "malloc"),
    FILTER_ALLOW("eventfd2", "ring wakeups"),
    FILTER_ALLOW("epoll_create1", "the event loop"),
    FILTER_ALLOW("epoll_ctl", "the event loop"),
    FILTER_ALLOW("epoll_wait", "the event loop"),
    FILTER_ALLOW("epoll_pwait", "the event loop"),
    FILTER_ALLOW("signalfd4", "signals as events"),
    FILTER_ALLOW("ppoll", "waits on a single descriptor"),
    FILTER_ALLOW("sched_yield", "a child spins a moment before sleeping (its filter is stacked on "
                                "this one: everything it allows must be here too)"),
    /* processes: one child per VM, re-executed from a descriptor */
    FILTER_ALLOW_IF_CLEAR("clone", 0, CLONE_NS_FLAGS, "forks a per-VM child; no new namespaces"),
    FILTER_FAIL("clone3", ENOSYS,
                "its flags are in memory, out of seccomp's reach: glibc falls "
                "back to clone()"),
    FILTER_ALLOW("execveat", "a child re-executes the program from a descriptor opened before"),
    FILTER_ALLOW("wait4", "reaps children"),
    FILTER_ALLOW("pidfd_open", "children as events"),
    FILTER_ALLOW("kill", "stops a child"),
    FILTER_ALLOW("exit_group", "exit"),
    FILTER_ALLOW("rt_sigaction", "signal dispositions in a child before exec"),
    FILTER_ALLOW("rt_sigprocmask", "blocks the signals the signalfd reads"),
    FILTER_ALLOW("clock_gettime", "time where the vDSO is not used"),
    FILTER_ALLOW("restart_syscall", "the kernel resumes an interrupted call"),
    FILTER_ALLOW("getrandom", "the dynamic loader and malloc seed themselves"),
    /* the start of a re-executed child, before it adds its own filter */
    FILTER_ALLOW("arch_prctl", "the dynamic loader sets up TLS"),
    FILTER_ALLOW("set_tid_address", "glibc start-up"),
    FILTER_ALLOW("set_robust_list", "glibc start-up"),
    FILTER_ALLOW("rseq", "glibc start-up"),
    FILTER_ALLOW("prlimit64", "glibc start-up reads, and a child sets, its limits"),
    FILTER_ALLOW_IF_EQ("prctl", 0, PR_SET_PDEATHSIG, "a child dies with the main process"),
    FILTER_ALLOW_IF_EQ("prctl", 0, PR_SET_NO_NEW_PRIVS, "a child sets it again before its filter"),
    FILTER_ALLOW_IF_EQ("prctl", 0, PR_GET_NO_NEW_PRIVS, "libseccomp checks it"),
    FILTER_ALLOW_IF_EQ("prctl", 0, PR_CAPBSET_READ, "libcap: a child checks its bounding set"),
    FILTER_ALLOW_IF_EQ("prctl", 0, PR_CAP_AMBIENT, "libcap: a child clears its ambient set"),
    FILTER_ALLOW("capget", "libcap: a child drops its capabilities"),
    FILTER_ALLOW("capset", "libcap: a child drops its capabilities"),
    FILTER_ALLOW("seccomp", "a child adds its stricter filter (filters only narrow)"),
};

/* A per-VM child once its vhost-user connection and rings are set up:
 * it moves frames between its VM's virtqueues and the rings, answers the
 * frontend and the main process. All its descriptors come from the main
 * process or exist already; it creates no process, socket or file, and
 * maps nothing executable. */
static const FilterRule child_rules[] = {
    FILTER_ALLOW("read", "eventfds (kicks, ring wakeups)"),
    FILTER_ALLOW("write", "eventfds (calls, ring wakeups) and logging"),
    FILTER_ALLOW("recvmsg", "vhost-user and control messages, with descriptors"),
    FILTER_ALLOW("sendmsg", "vhost-user replies and control messages"),
    FILTER_ALLOW("sendto", "send() on the control channel"),
    FILTER_ALLOW("accept4", "a frontend (re)connects to the VM's socket"),
    FILTER_ALLOW("close", "descriptors of a replaced memory table or ring"),
    FILTER_ALLOW("fcntl", "non-blocking mode; a ring's seals are checked"),
    FILTER_ALLOW("epoll_wait", "the event loop"),
    FILTER_ALLOW("epoll_pwait", "the event loop"),
    FILTER_ALLOW("epoll_ctl", "kick and ring descriptors come and go"),
    FILTER_ALLOW("sched_yield", "looks for more frames for a moment before sleeping"),
    FILTER_ALLOW_IF_CLEAR("mmap", 2, PROT_EXEC, "guest memory regions and rings; never executable"),
    FILTER_ALLOW_IF_CLEAR("mprotect", 2, PROT_EXEC, "malloc; never executable"),
    FILTER_ALLOW("munmap", "a replaced memory table"),
    FILTER_ALLOW("brk", "malloc"),
    FILTER_ALLOW("fstat", "a memory region's file must cover its size"),
    FILTER_ALLOW("newfstatat", "fstat() through glibc"),
    FILTER_ALLOW("clock_gettime", "time where the vDSO is not used"),
    FILTER_ALLOW("restart_syscall", "the kernel resumes an interrupted call"),
    FILTER_ALLOW("exit_group", "exit (a protocol violation ends the child)"),
};

const FilterTable vm_switch_main_filter = FILTER_TABLE("main", main_rules, .reexec = true);
const FilterTable vm_switch_child_filter = FILTER_TABLE("child", child_rules);

const FilterTable *confine_role(const char *role) {
    const FilterTable *const tables[] = {
        sandbox_supervisor_filter(),
        &vm_switch_main_filter,
        &vm_switch_child_filter,
    };
    for (size_t i = 0; i < ELEMENTSOF(tables); i++) {
        if (streq(role, tables[i]->role)) {
            return tables[i];
        }
    }
    return NULL;
}

int confine_enter(const char *config_dir, const char *socket_dir, const char *user,
                  FilterMode mode) {
    const SandboxBind binds[] = {
        /* The vhost-user sockets and the counters file: the only writable
         * place besides /tmp. */
        {.source = socket_dir, .writable = true},
        {.source = config_dir, .target = VM_SWITCH_CONFIG_DIR},
    };
    const SandboxConfig c = {
        .hostname = VM_SWITCH_HOSTNAME,
        .binds = binds,
        .n_binds = ELEMENTSOF(binds),
        .supervisor = true,
        .limits = {.max_fds = VM_SWITCH_MAX_FDS, .max_procs = VM_SWITCH_MAX_PROCS},
        .filter = &vm_switch_main_filter,
        .filter_mode = mode,
        .user = user,
    };
    return sandbox_enter(&c);
}

int confine_lockdown_child(FilterMode mode) {
    /* A child makes no process: RLIMIT_NPROC 0 backs the filter up. */
    const SandboxLimits limits = {.max_fds = VM_SWITCH_MAX_FDS, .max_procs = 0};
    return sandbox_lockdown(&vm_switch_child_filter, mode, &limits);
}
