/* The sandbox of qubes-lite's device backends (libvmsandbox.a): user,
 * mount, IPC, UTS, cgroup and an empty network namespace, optionally a pid
 * namespace with a supervisor, a minimal tmpfs root built from the
 * program's description, no capabilities, rlimits, no_new_privs and a
 * seccomp allowlist from the program's table (filter.h). The mechanism is
 * here; what a program needs is its own, next to it (vm-switch's:
 * switch/net/confine.c).
 *
 * For the author of the next program (say a vhost-user device serving one
 * socket, listening on a host socket PATH and connecting to PATH_<port>):
 *
 *   1. Parse options; open what must survive the new root (its own
 *      /proc/self/exe if it re-executes itself; everything born
 *      close-on-exec). Create no thread.
 *   2. Describe the sandbox and enter it:
 *
 *        const SandboxBind binds[] = {
 *            {.source = socket_dir, .writable = true},   // at its own path
 *            {.source = uds_dir, .writable = true},
 *        };
 *        const SandboxConfig c = {
 *            .hostname = "my-device",
 *            .binds = binds, .n_binds = ELEMENTSOF(binds),
 *            .supervisor = false,           // one process, no children
 *            .limits = {.max_fds = 4096, .max_procs = 0},
 *            .filter = &my_filter,          // FILTER_TABLE("main", my_rules)
 *            .filter_mode = mode,           // --seccomp-mode
 *            .user = user,                  // --user, when started as root
 *            .main_fds = fds, .n_main_fds = n,  // opened before, the main's alone
 *        };
 *        int r = sandbox_enter(&c);
 *
 *      Directories are resolved (realpath) before anything changes; a bind
 *      without a target appears at its own canonical path, so paths taken
 *      from the command line keep working inside. With --no-sandbox,
 *      simply do not call it.
 *   3. Print a role's table for --print-seccomp with filter_print(), and
 *      take --seccomp-mode with filter_mode_from_string().
 *   4. Tell systemd with sandbox_notify("READY=1") once listening.
 *
 * Every root holds: a read-only tmpfs `/`, the binds, a private `/tmp`
 * (small tmpfs), `/dev/null`, `/dev/zero`, `/dev/urandom` (bound: no mknod
 * in a user namespace), the files the program is mapped from (ELF
 * interpreter, shared libraries, /etc/ld.so.cache: read-only at their own
 * paths, so that a child re-executed from a descriptor finds them), and,
 * with a supervisor only, a new `/proc` (a user namespace may mount proc
 * only for a pid namespace it owns). Nothing else of the host.
 *
 * With `.supervisor`, the caller forks: the new process is PID 1 of a new
 * pid namespace and goes on (sandbox_enter() returns there); the caller
 * stays outside as the supervisor (systemd's main PID) and never returns:
 * it forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2,
 * relays READY=1, STOPPING=1, RELOADING=1 and STATUS= and nothing else,
 * and exits with the main process's status (128+N when killed by signal
 * N); it has no capability and its own small filter
 * (sandbox_supervisor_filter()). When the main process dies the kernel
 * kills every process in its namespace; when the supervisor dies, the
 * main process gets SIGKILL. Without a supervisor nothing forks: the
 * caller itself is sandboxed, in the host's pid namespace (its filter
 * should refuse kill() and the like), and sandbox_notify() sends on a
 * socket connected to $NOTIFY_SOCKET before the root changed (its filter
 * must allow sendto).
 *
 * Started as root, `.user` names the unprivileged user to become (never
 * root; resolved before anything else, since a user namespace belongs to
 * the uid that creates it); started unprivileged (systemd's DynamicUser=)
 * nothing is needed. The limits only ever lower what the service manager
 * set; RLIMIT_CORE is always 0 (a core would hold guest memory).
 *
 * `.keep_root` is for a program whose peers' identity is the point: seen
 * from inside a user namespace, a peer's uid (SO_PEERCRED, and every
 * other credential the kernel reports) is translated, and only the uid
 * that created the namespace reads as itself (as 0); any other, root
 * included, reads as the overflow uid. A program that must tell root's
 * connections from anyone else's (qubes-lite-vsock) therefore stays root
 * outside: its user namespace maps 0 to 0, and it drops its supplementary
 * groups. It still has no capability (none in the host's namespace ever,
 * and none left in its own), no_new_privs and its filter, and sees only
 * its root; what uid 0 outside leaves it is an owner's access to the
 * root-owned files bound into that root, so its binds should be
 * directories of its own. Started unprivileged, it changes nothing. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/resource.h>

#include "filter.h"

/* Binds one description may hold. */
#define SANDBOX_MAX_BINDS 8

/* One host directory (or file) in the new root: nosuid, nodev, noexec,
 * and read-only unless writable. */
typedef struct SandboxBind {
    const char *source; /* the host's path */
    const char *target; /* where it appears inside; NULL: its own canonical path */
    bool writable;
} SandboxBind;

typedef struct SandboxLimits {
    rlim_t max_fds;   /* RLIMIT_NOFILE */
    rlim_t max_procs; /* RLIMIT_NPROC: our user's processes in the namespace; 0: no fork */
} SandboxLimits;

/* Descriptors one description may hand to the main process alone. */
#define SANDBOX_MAX_MAIN_FDS 8

typedef struct SandboxConfig {
    const char *hostname; /* in its own UTS namespace */
    const SandboxBind *binds;
    size_t n_binds; /* at most SANDBOX_MAX_BINDS */
    bool supervisor;
    SandboxLimits limits;
    const FilterTable *filter; /* the sandboxed process's allowlist */
    FilterMode filter_mode;
    const char *user; /* started as root: the user to become; NULL otherwise */
    /* Started as root: stay root outside (uid and gid 0 map to themselves)
     * instead of becoming `user` (which must then be NULL). See above. */
    bool keep_root;
    /* Descriptors opened before (listening sockets) that only the main
     * process keeps: the supervisor closes its copies. At most
     * SANDBOX_MAX_MAIN_FDS. */
    const int *main_fds;
    size_t n_main_fds;
} SandboxConfig;

/* Enters the sandbox c describes, one step per function in this order:
 * become the user, resolve the binds, list the mapped files, user
 * namespace, the other namespaces, (pid namespace and supervisor), the
 * new root and pivot_root, capabilities, rlimits, no_new_privs, the
 * filter last. Call it right after option parsing: before any thread,
 * event loop or descriptor other than stdio and those the caller means to
 * keep. Returns 0 in the sandboxed process, under c->filter. Errors (a
 * negative errno: -EPERM started as root without a user nor keep_root,
 * -EINVAL a bad description) are returned before the split, or in the main process
 * before it is sandboxed; the caller logs and exits. */
int sandbox_enter(const SandboxConfig *c);

/* A later, stricter step for a process already in the sandbox (a child
 * after its set-up): drops every capability (effective, permitted,
 * inheritable, bounding, ambient), lowers its rlimits, sets no_new_privs
 * and stacks filter on the filters in place. */
int sandbox_lockdown(const FilterTable *filter, FilterMode mode, const SandboxLimits *limits);

/* Tells the service manager `state` ($NOTIFY_SOCKET, as sd_notify() does;
 * nothing without it). Returns a negative errno, 0 when there is no
 * service manager to tell (or the supervisor relays it), or 1. */
int sandbox_notify(const char *state);

/* True in a process that sandbox_enter() returned into (and its children
 * until they exec). */
bool sandbox_active(void);

/* The supervisor's allowlist, for --print-seccomp supervisor. */
const FilterTable *sandbox_supervisor_filter(void);
