/* The VM's serial console: the host agent owns the pty whose other end is
 * the VMM's serial port, keeps the last CONSOLE_SCROLLBACK bytes of its
 * output (always, so early boot output is there for the first client),
 * and relays it on a unix socket to one interactive client at a time.
 *
 * A client sends Hello, then ConsoleAttach {rows, cols}; it gets
 * ConsoleAttached {scrollback}, the scrollback as Data(STDOUT), then the
 * live output. Its Data(STDIN) goes to the pty, its Resize sets the pty's
 * window size. While one client is attached, another one's ConsoleAttach
 * gets Error(UNAVAILABLE). A client that does not read never holds the VMM
 * up: beyond CONSOLE_CLIENT_QUEUE_MAX queued bytes its output is dropped
 * (the scrollback keeps it). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#define CONSOLE_SCROLLBACK (64u * 1024u)
#define CONSOLE_CLIENT_QUEUE_MAX (256u * 1024u)
/* Clients still in their handshake; more are refused. */
#define CONSOLE_CLIENTS_MAX 8u

typedef struct Console Console;

/* Opens a pty pair (master non-blocking, slave raw, 24x80): the slave is
 * for the VMM's stdin and stdout, the caller closes its copy once the VMM
 * holds it. */
int console_open_pty(int *ret_master, int *ret_slave);

/* Takes pty_master over and starts reading it. `socket_path` (NULL: no
 * socket) is created mode 0600, owned by `allowed_uid`:`allowed_gid` when
 * that is not (uid_t)-1 (unprivileged, it stays ours), and removed by
 * console_free(). Clients whose uid is 0, our euid or `allowed_uid` are
 * served. */
int console_new(sd_event *e, const char *vm_name, int pty_master, const char *socket_path,
                uid_t allowed_uid, gid_t allowed_gid, Console **ret);
/* Called when a client attaches (true) and when the attached one goes
 * (false), console_free() included: the host agent counts it as a lease. */
typedef void (*ConsoleAttachFn)(void *userdata, bool attached);
void console_set_attach_cb(Console *c, ConsoleAttachFn fn, void *userdata);

/* Reads what the pty still holds (the VMM has exited), into the
 * scrollback and to the client. */
void console_drain(Console *c);
void console_free(Console *c);

/* The scrollback ring, exposed for unit tests. */
typedef struct ConsoleRing {
    uint8_t buf[CONSOLE_SCROLLBACK];
    size_t head; /* next write position */
    size_t used; /* <= CONSOLE_SCROLLBACK */
} ConsoleRing;

void console_ring_write(ConsoleRing *r, const uint8_t *p, size_t n);
/* The contents, oldest first, as up to two spans. */
void console_ring_spans(const ConsoleRing *r, const uint8_t **ret_a, size_t *ret_na,
                        const uint8_t **ret_b, size_t *ret_nb);
