/* What all the vm-* commands share: failing with one line, which VMs
 * exist, reaching a unix socket, the local terminal, naming protocol
 * errors. No libraries beyond libc, so that vm-run stays lean. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util.h"
#include "wire.h"

/* The exit status of their own errors for the commands whose status is
 * otherwise another program's: vm-run (the command's), vm-shell (ssh's),
 * vm-start-debug (the VMM's). */
#define CLIENT_EXIT_OWN_ERROR 255

/* The program name for client_fail() ("vm-start" etc.) and its exit
 * status: 1 for vm-start, vm-stop, vm-list; 255 for the commands whose
 * own status is another program's (vm-run, vm-shell, vm-start-debug). */
void client_setup(const char *program, int failure_status);
/* One line "PROGRAM: ..." on stderr, the terminal restored first, then
 * exit with the status set above (1 by default). */
_noreturn_ _printf_(1, 2) void client_fail(const char *fmt, ...);
/* getopt_long() refused an option (c is '?' or ':', opterr was 0): one
 * line in our words (host/common/opts.h), and the failure status. */
_noreturn_ void client_bad_option(int c, char **argv);
/* Fails with one line for a VM that does not exist: "no VM named 'x' (no
 * <config dir>/vms/x.json)", or for a word that is no VM name at all, what
 * a name is. The word is sanitised and bounded. */
_noreturn_ void client_fail_unknown_vm(const char *vm);
/* The name given to client_setup(). */
const char *client_program(void);
/* A peer's text as we print it: control characters escaped, at most this
 * long with its NUL. */
#define CLIENT_PEER_TEXT_MAX 512
/* An Error frame's message, sanitised into buf; returns buf. */
const char *client_peer_message(const Msg *untrusted, char buf[static CLIENT_PEER_TEXT_MAX]);
/* "VM 'x': <message> (CODE)" for an Error frame, sanitised, into buf. */
void client_error_text(const char *vm, const Msg *untrusted, char *buf, size_t size);
/* Fails with client_error_text(). */
_noreturn_ void client_fail_error(const char *vm, const Msg *untrusted);

/* One line "PROGRAM: ..." on stderr, and carry on: a notice, or a
 * problem that does not end the command. */
_printf_(1, 2) void client_warn(const char *fmt, ...);

/* Why VM's host agent at path could not be reached (r, a negative errno
 * from client_unix_connect()), in one line without the program's prefix;
 * when nothing listens there, how to start it. */
void client_unreachable_text(const char *vm, const char *path, int r, char *buf, size_t size);

/* A blocking, close-on-exec connection to the unix socket at path. */
int client_unix_connect(const char *path, int *ret_fd);

/* Sends a and b in one write, so that the peer wakes once and finds both;
 * waits for room if need be. 0 or a negative errno. */
int client_send_pair(int fd, const Msg *a, const Msg *b);

/* The commands' frames to a peer, queued in a WireWriter and sent as the
 * peer takes them. client_queue() fails with one line when a frame cannot
 * be queued. client_flush() sends what it can; a write failing otherwise
 * than because the peer went away fails with one line naming it ("the
 * console", "the guest agent") and the VM; a peer gone drops what is
 * queued, as its reading side will tell. client_flush_bounded() sends all
 * that is queued within timeout_ms, best effort, before we leave. */
void client_queue(WireWriter *w, const Msg *m);
void client_flush(WireWriter *w, int fd, const char *peer, const char *vm);
void client_flush_bounded(WireWriter *w, int fd, int timeout_ms);

/* Waits until fd is readable: 0, -ETIMEDOUT after timeout_ms (-1: no
 * limit), or -errno. When notice is given and nothing came within
 * notice_ms, it is printed once (client_warn()) and the wait goes on. */
int client_wait_readable(int fd, int timeout_ms, const char *notice, int notice_ms);

/* What client_hello() found when it failed. */
typedef enum ClientHelloFailure {
    CLIENT_HELLO_SEND,      /* our frames could not be written (the errno returned) */
    CLIENT_HELLO_TIMEOUT,   /* no frame within the time (-ETIMEDOUT) */
    CLIENT_HELLO_RECV,      /* no frame: closed, reset, too large, undecodable (the errno) */
    CLIENT_HELLO_ERROR,     /* the peer's Error frame, in *ret_untrusted_reply */
    CLIENT_HELLO_NOT_HELLO, /* another frame before Hello, in *ret_untrusted_reply */
    CLIENT_HELLO_VERSION,   /* a Hello of another major version, in *ret_untrusted_reply */
} ClientHelloFailure;

/* Opens a session on a connected, blocking socket, as every vm-* command
 * does: our Hello and the first request (NULL: none) go out in one write,
 * then the peer's Hello is read (within timeout_ms, -1: no limit) and its
 * version checked. A refused peer sends its Error before it closes: that
 * is read even when our frames no longer went through (EPIPE, ECONNRESET).
 * 0 once the peer's Hello came; else a negative errno (-EPROTO for the
 * last three), *ret_failure saying what happened and, for an Error,
 * another frame or another version, that frame in *ret_untrusted_reply
 * (free it with msg_done()). The caller words the failure. */
int client_hello(int fd, const char *software, const Msg *request, int timeout_ms,
                 ClientHelloFailure *ret_failure, Msg *ret_untrusted_reply);

/* What the host agent's Connected brought: the guest agent connection,
 * the stream connection (or -EBADF), and the times it reported. */
typedef struct ClientConnected {
    int guest_fd;
    int stream_fd;
    uint64_t vm_start_us;
    uint64_t guest_wait_us;
} ClientConnected;

/* Takes a lease on fd, a connected socket to VM's host agent: Hello and
 * Connect {streams} (0 or 1) go out, then the host agent's Hello and
 * Connected are read and checked (saying once on stderr, after a second,
 * that it waits for the VM to start). The host agent holds the VM in use
 * for as long as fd stays open. Fails with one line otherwise. */
void client_lease(int fd, const char *vm, const char *software, unsigned streams,
                  ClientConnected *ret);

/* Whether VM names a configured VM: a valid name whose regular file
 * <config dir>/vms/VM.json exists. */
bool client_vm_configured(const char *vm);
/* The same, or (for a VM whose configuration is not readable here) one
 * whose socket at sock_path exists. */
bool client_vm_known(const char *vm, const char *sock_path);

/* Whoever read our stdout is gone (EPIPE): end as a program in a pipeline
 * would, killed by SIGPIPE, the terminal restored first. Returns only
 * when SIGPIPE is blocked. */
void client_stdout_gone(void);

/* Catches SIGINT, SIGTERM, SIGHUP, SIGQUIT and SIGWINCH into a
 * non-blocking self-pipe, a byte (the signal number) each. No
 * SA_RESTART: a blocked write to stdout returns, so that a signal is
 * handled even while the reader of our stdout is slow. Fails with one
 * line when no pipe can be made. */
void client_signals_setup(void);
/* The pipe's read end, to poll. */
int client_signal_fd(void);
/* Whether a signal came since client_signals_read() last ran. */
bool client_signal_seen(void);
/* Reads up to size caught signal numbers; 0 (or -1, errno EAGAIN) when
 * there are none. */
ssize_t client_signals_read(uint8_t *buf, size_t size);

/* The window size of the first of stdin, stdout, stderr that is a
 * terminal; false (and 0, 0) when none is. */
bool client_window_size(uint16_t *ret_rows, uint16_t *ret_cols);

/* Puts stdin's terminal in raw mode (no-op when stdin is not a terminal)
 * and remembers how it was. Returns true when it changed the mode. */
bool client_terminal_raw(void);
/* Restores what client_terminal_raw() changed, dropping unread input
 * (a terminal's answers to queries meant for the remote side); safe to
 * call any number of times, and from exit paths. */
void client_terminal_restore(void);

/* "UNAVAILABLE" for WIRE_ERR_UNAVAILABLE, ... */
const char *client_error_name(WireError e);
