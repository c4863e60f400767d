/* qubes-lite-vsock's confinement: its sandbox's description and its
 * seccomp allowlists, each call with its reason (confine.h). Sizes today:
 * supervisor 15 and main 31 system calls (`qubes-lite-vsock
 * --print-seccomp ROLE` prints one).
 *
 * What the device calls once sandboxed, besides glibc's own malloc and
 * fprintf to stderr (brk, mmap, munmap, write): epoll_create1,
 * signalfd4 and rt_sigprocmask while it sets up; then epoll_wait and
 * epoll_ctl, accept4 (the frontend, host programs on PATH), getsockopt
 * (SO_PEERCRED), recv/send (recvfrom/sendto: CONNECT and OK lines,
 * vhost-user replies), recvmsg/sendmsg (vhost-user messages with their
 * descriptors, a connection's bytes), read/write (eventfds, the
 * signalfd), socket(AF_UNIX) and connect (PATH_<port>), shutdown, fcntl
 * (non-blocking), fstat and mmap/munmap (guest memory regions), close;
 * at exit lstat and unlink of its own two sockets.
 *
 * It never forks (the supervisor is split off before the filter), executes
 * nothing, maps nothing executable, opens no file (its sockets exist
 * before the sandbox, and guest memory comes as descriptors from the
 * frontend), creates no socket but AF_UNIX ones and has no network but a
 * loopback interface that stays down. */
#include "confine.h"

#include <sys/mman.h>
#include <sys/socket.h>

#include "switch/sandbox/sandbox.h"
#include "util.h"

static const FilterRule main_rules[] = {
    /* I/O on descriptors it has */
    FILTER_ALLOW("read", "kick eventfds, the signalfd"),
    FILTER_ALLOW("write", "call eventfds, logging to stderr"),
    FILTER_ALLOW("recvfrom", "a host program's CONNECT line (recv, peeked then taken)"),
    FILTER_ALLOW("recvmsg", "vhost-user messages with descriptors; a connection's host bytes"),
    FILTER_ALLOW("sendto", "vhost-user replies and OK lines (send); READY=1 to the supervisor"),
    FILTER_ALLOW("sendmsg", "a connection's bytes to its host program"),
    FILTER_ALLOW("shutdown", "a connection's host side ends one way"),
    FILTER_ALLOW("close", "every descriptor it is done with"),
    FILTER_ALLOW("fcntl", "non-blocking mode of sockets and eventfds"),
    /* sockets: AF_UNIX only; there is no other network in the namespace */
    FILTER_ALLOW("accept4", "the frontend, and host programs on PATH"),
    FILTER_ALLOW("getsockopt", "SO_PEERCRED: who connected to PATH (the source port rule)"),
    FILTER_ALLOW_IF_EQ("socket", 0, AF_UNIX, "a guest's connection to the host's PATH_<port>"),
    FILTER_ALLOW("connect", "... to PATH_<port>, beside PATH in its root"),
    /* the event loop */
    FILTER_ALLOW("epoll_create1", "the event loop, made once sandboxed"),
    FILTER_ALLOW("epoll_ctl", "sockets and kick eventfds come and go"),
    FILTER_ALLOW("epoll_wait", "the event loop"),
    FILTER_ALLOW("epoll_pwait", "the event loop"),
    FILTER_ALLOW("signalfd4", "signals as events"),
    FILTER_ALLOW("rt_sigprocmask", "blocks the signals the signalfd reads"),
    /* memory */
    FILTER_ALLOW_IF_CLEAR("mmap", 2, PROT_EXEC, "guest memory regions, malloc; never executable"),
    FILTER_ALLOW_IF_CLEAR("mprotect", 2, PROT_EXEC, "malloc; never executable"),
    FILTER_ALLOW("munmap", "a replaced memory table, free"),
    FILTER_ALLOW("brk", "malloc"),
    /* files: what is in its root, writable only in its socket directories */
    FILTER_ALLOW("fstat", "a memory region's file must cover what is mapped"),
    FILTER_ALLOW("newfstatat", "fstat() through glibc; lstat of its own sockets at exit"),
    FILTER_ALLOW("unlink", "removes its own two sockets at exit"),
    FILTER_ALLOW("unlinkat", "removes its own two sockets at exit"),
    /* the rest */
    FILTER_ALLOW("geteuid", "its own uid in the namespace: the source port rule"),
    FILTER_ALLOW("clock_gettime", "time where the vDSO is not used"),
    FILTER_ALLOW("restart_syscall", "the kernel resumes an interrupted call"),
    FILTER_ALLOW("exit_group", "exit"),
};

const FilterTable vsock_main_filter = FILTER_TABLE("main", main_rules);

const FilterTable *vsock_confine_role(const char *role) {
    const FilterTable *const tables[] = {sandbox_supervisor_filter(), &vsock_main_filter};
    for (size_t i = 0; i < ELEMENTSOF(tables); i++) {
        if (streq(role, tables[i]->role)) {
            return tables[i];
        }
    }
    return NULL;
}

int vsock_confine_enter(const char *vhost_dir, const char *uds_dir, const int listen_fds[2],
                        FilterMode mode) {
    /* The same directory twice is bound once. */
    const SandboxBind binds[] = {
        {.source = vhost_dir, .writable = true},
        {.source = uds_dir, .writable = true},
    };
    const SandboxConfig c = {
        .hostname = VSOCK_HOSTNAME,
        .binds = binds,
        .n_binds = ELEMENTSOF(binds),
        .supervisor = true,
        /* No process: the supervisor is split off before the limits. */
        .limits = {.max_fds = VSOCK_MAX_CONNS + VSOCK_SPARE_FDS, .max_procs = 0},
        .filter = &vsock_main_filter,
        .filter_mode = mode,
        .keep_root = true,
        .main_fds = listen_fds,
        .n_main_fds = 2,
    };
    return sandbox_enter(&c);
}
