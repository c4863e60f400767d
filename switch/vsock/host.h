/* The host side of qubes-lite-vsock, in the convention Firecracker and
 * cloud-hypervisor call hybrid vsock:
 *
 *   - a host program connects to the unix socket PATH and writes
 *     "CONNECT <port>\n"; once the guest accepted, it reads
 *     "OK <host-port>\n" and the connection is the stream; when the guest
 *     refuses, nothing listens or no guest runs, it is closed;
 *   - a guest connection to the host (CID 2) port P goes to the unix
 *     socket PATH_P when something listens there, and is refused
 *     otherwise.
 *
 * Every socket is non-blocking and edge-triggered in the caller's epoll;
 * VsockHostOps are the multiplexer's ways to reach them. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "mux.h"

/* What an epoll event is about: every registered object starts with one. */
typedef enum WatchKind {
    WATCH_SIGNAL,
    WATCH_VHOST_LISTEN,
    WATCH_VHOST_CONN,
    WATCH_KICK, /* index: the queue */
    WATCH_UDS_LISTEN,
    WATCH_CLIENT, /* a host program that has not sent its CONNECT line yet */
    WATCH_STREAM, /* the host side of a connection */
} WatchKind;

typedef struct Watch {
    WatchKind kind;
    unsigned index;
} Watch;

/* A host program has this long to send its CONNECT line. */
#define VSOCK_HOST_LINE_TIMEOUT_USEC (10 * 1000000ull)
/* Host programs that may wait for their line at once; more are closed. */
#define VSOCK_HOST_MAX_CLIENTS 256

typedef struct VsockHostStats {
    uint64_t accepted;     /* host programs accepted on PATH */
    uint64_t bad_lines;    /* closed for a line that is no CONNECT line */
    uint64_t line_timeouts;
    uint64_t no_guest;     /* closed: no guest driver runs */
    uint64_t too_many;     /* closed: max_conns or VSOCK_HOST_MAX_CLIENTS reached */
    uint64_t privileged;   /* connections given a port below 1024 */
} VsockHostStats;

typedef struct VsockHost VsockHost;

/* listen_fd: listening on uds_path (non-blocking); epoll_fd: the
 * caller's, where the host side registers its sockets with a Watch. Who
 * connects to PATH as root or as this process's own user (the owner of
 * PATH) gets a source port below 1024, anyone else one above: the guest
 * tells them apart as it would with the kernel's vsock. */
int vsock_host_new(int epoll_fd, int listen_fd, const char *uds_path, VsockHost **ret);
/* Closes the listener and the programs still sending their lines; the
 * connections' sockets are the multiplexer's to close (free it first). */
void vsock_host_free(VsockHost *h);

/* The multiplexer's ways to the host side; ctx is the VsockHost. */
extern const VsockMuxOps vsock_host_ops;
void vsock_host_set_mux(VsockHost *h, VsockMux *m);
/* A uid that reads as root too: inside a user namespace its creator made
 * unprivileged, root is unmapped and reads as the overflow uid; while
 * PATH is open to nobody but its owner and root, a peer with that uid can
 * only be root. */
void vsock_host_set_root_alias(VsockHost *h, uid_t uid);
/* Whether a guest driver runs: CONNECT is refused at once otherwise. */
void vsock_host_set_guest_ready(VsockHost *h, bool ready);

/* An epoll event for one of the host side's watches. */
void vsock_host_handle(VsockHost *h, Watch *w, uint32_t events, uint64_t now);
/* Programs that did not send their line in time are closed. */
void vsock_host_tick(VsockHost *h, uint64_t now);
uint64_t vsock_host_next_deadline(const VsockHost *h);
/* Frees the sockets closed since the last call: after each batch of epoll
 * events, which may still name them. */
void vsock_host_collect(VsockHost *h);

const VsockHostStats *vsock_host_stats(const VsockHost *h);
