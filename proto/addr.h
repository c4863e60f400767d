/* Transport addresses and the sockets behind them.
 *
 *   vsock:CID:PORT   connect to (or listen on) CID:PORT
 *   vsock::PORT      listen on PORT on any CID
 *   unix:PATH        a stream socket in the file system
 *   hvsock:PATH:PORT connect to a VM's vsock PORT through the unix socket
 *                    PATH of its qubes-lite-vsock device ("hybrid vsock":
 *                    the client writes "CONNECT <port>\n" and reads
 *                    "OK <host-port>\n" before the stream)
 *
 * Every socket is created close-on-exec. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <linux/vm_sockets.h>

typedef struct Addr {
    int family;                           /* AF_UNIX or AF_VSOCK */
    union {
        struct sockaddr sa;
        struct sockaddr_un un;
        struct sockaddr_vm vm;
    };
    socklen_t len;
    bool hvsock;                          /* AF_UNIX socket of a vsock device */
    uint32_t hvsock_port;                 /* the VM's port, when hvsock */
} Addr;

#define ADDR_STR_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) + 24)
#define VSOCK_RESERVED_PORT_MAX 1023u     /* binding below this needs privilege */
#define VSOCK_RESERVED_PORT_MIN 512u

/* The guest agent's vsock port, and the host's CID as guests see it. */
#define GUEST_AGENT_VSOCK_PORT 5200u
#define DEFAULT_RUNTIME_DIR "/run/qubes-lite"
#define DEFAULT_CONFIG_DIR "/etc/qubes-lite"

/* -EINVAL for anything that is not one of the forms above. */
int addr_parse(const char *s, Addr *ret);
const char *addr_format(const Addr *a, char *buf, size_t size);

/* Creates, binds and listens (-EAFNOSUPPORT for hvsock). A unix socket file already at the path is
 * replaced only when it is stale (connect() is refused: nobody listens);
 * -EADDRINUSE when somebody listens there, -EEXIST when it is not a
 * socket. */
int addr_listen(const Addr *a, int *ret_fd);

/* Removes the unix socket file at path only while it is still the one
 * `bound` describes (lstat() right after addr_listen()): -ESTALE when
 * another took its place, which stays. */
int addr_unix_unlink_bound(const char *path, const struct stat *bound);

/* Removes a stale unix socket file at path (or nothing when there is
 * none): -EADDRINUSE when somebody listens there, -EEXIST when it is not
 * a socket. */
int addr_unix_remove_stale(const char *path);

/* Connects. flags: ADDR_NONBLOCK (connect may return -EINPROGRESS with
 * *ret_fd set), ADDR_RESERVED_PORT (vsock: bind a source port below 1024
 * first, so the peer can tell a privileged host process; through a vsock
 * device the device chooses the port, from who connects to PATH).
 *
 * hvsock: blocking, the CONNECT line is sent and the OK line read before
 * this returns; -ECONNRESET when the device closed instead (nothing
 * listens on that port, the guest refused, or no guest driver runs).
 * With ADDR_NONBLOCK it always returns -EINPROGRESS once the CONNECT line
 * is sent, and addr_connect_finish() reads the reply. */
#define ADDR_NONBLOCK 1
#define ADDR_RESERVED_PORT 2
int addr_connect(const Addr *a, int flags, int *ret_fd);

/* Goes on with a connect that returned -EINPROGRESS, called whenever fd
 * is ready for what was waited for (first EPOLLOUT, then what *ret_events
 * says). 0: connected, the stream starts; -EINPROGRESS: wait for
 * *ret_events (EPOLLIN or EPOLLOUT) and call again; another negative
 * errno: the connect failed, as for addr_connect(). For vsock and unix
 * this is the SO_ERROR check; for hvsock it reads the device's reply. */
int addr_connect_finish(const Addr *a, int fd, uint32_t *ret_events);

/* Hybrid vsock lines: "WORD <port>\n" (WORD is CONNECT from the client,
 * OK from the device), port in decimal without sign or leading zero, below
 * VMADDR_PORT_ANY. hvsock_line_parse() looks at the first n bytes of a
 * stream: the line's length (newline included) when they start with a
 * whole line of that word, 0 when more bytes are needed, -EPROTO when
 * they cannot start one. A line is at most HVSOCK_LINE_MAX bytes. */
#define HVSOCK_LINE_MAX 32
int hvsock_line_parse(const char *untrusted, size_t n, const char *word, uint32_t *ret_port);
/* Writes "WORD <port>\n" (no NUL); its length, or -ENOBUFS. */
int hvsock_line_format(char *buf, size_t size, const char *word, uint32_t port);

/* The first socket passed by systemd (sd_listen_fds), made close-on-exec;
 * -ENOENT when none was passed. */
int addr_listen_fd_from_systemd(int *ret_fd);

/* Peer identity. */
int peer_ucred(int fd, uid_t *ret_uid, gid_t *ret_gid, pid_t *ret_pid);
int peer_vsock(int fd, uint32_t *ret_cid, uint32_t *ret_port);
/* AF_UNIX, AF_VSOCK of a connected or listening socket. */
int socket_family(int fd);
