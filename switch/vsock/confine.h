/* qubes-lite-vsock's confinement: the description of its sandbox and the
 * seccomp allowlist of each of its process roles, for switch/sandbox/ to
 * enforce.
 *
 *   supervisor  outside the pid namespace, systemd's main PID (sandbox.c's
 *               table)
 *   main        the device, PID 1 inside: one process, no children
 *
 * The root: the directories of the vhost-user socket and of PATH
 * (host programs' PATH_<port> listeners are beside PATH), read-write at
 * their canonical paths, and what sandbox.h puts in every root. The two
 * listening sockets are made before, and the supervisor drops its copies.
 *
 * Started as root it stays root outside its user namespace (sandbox.h's
 * keep_root): the source port rule (host.h) must tell root's connections
 * from anyone else's, and seen from inside a user namespace only the uid
 * that made it reads as itself. */
#pragma once

#include "switch/sandbox/filter.h"

/* The sandbox's host name (its own UTS namespace). */
#define VSOCK_HOSTNAME "qubes-lite-vsock"
/* Connections at once, both ways together (each holds one descriptor). */
#define VSOCK_MAX_CONNS 4096
/* Descriptors besides the connections': sockets, epoll, eventfds, guest
 * memory regions. */
#define VSOCK_SPARE_FDS 64

extern const FilterTable vsock_main_filter;

/* The table of a role as --print-seccomp names it ("supervisor",
 * "main"), or NULL. */
const FilterTable *vsock_confine_role(const char *role);

/* Enters the sandbox (sandbox_enter()) with the two socket directories
 * as the host names them (canonical) and the two listening sockets, which
 * the main process alone keeps; returns in the main process, under
 * main's filter. */
int vsock_confine_enter(const char *vhost_dir, const char *uds_dir, const int listen_fds[2],
                        FilterMode mode);
