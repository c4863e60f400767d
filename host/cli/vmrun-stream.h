/* vm-run's stream connection: without a pty, the command's stdin and
 * stdout are a second connection of ours (see proto/qubes-lite.proto),
 * and bytes go between it and our stdin and stdout with splice() where
 * the fds allow, else read() and write(): never framed, never through the
 * guest agent. Internal to vm-run; the session's loop calls these.
 *
 * Before the command's bytes, the guest agent sends Hello and Attached on
 * it: read frame by frame out of at most VMRUN_STREAM_HEAD_MAX bytes,
 * each capped and decoded before it is judged. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The guest agent's frames on a stream connection (Hello, Attached) fit. */
#define VMRUN_STREAM_HEAD_MAX 1024u
/* How long the guest agent's Hello may take on the stream connection. It
 * writes it as it accepts, before reading anything, and the host agent
 * hands the connection over only once connected: it is on its way. */
#define VMRUN_STREAM_HELLO_MS 3000
/* The stream connection's read/write buffers (where splice() cannot go). */
#define VMRUN_STREAM_BUF_SIZE (64u * 1024u)
/* Bytes per splice() or read() on a stream connection. */
#define VMRUN_STREAM_CHUNK (1024u * 1024u)
/* Reads or splices per event, so that one direction cannot starve the
 * other. */
#define VMRUN_STREAM_ROUNDS 8

typedef struct Session Session;
typedef struct SessionPoll SessionPoll;

/* The stream connection: the command's stdin and stdout. */
typedef struct VmRunStream {
    int fd; /* -EBADF: none (a pty, or a host agent without them) */
    /* Until Attached: the guest agent's frames on it. */
    uint8_t untrusted_head[VMRUN_STREAM_HEAD_MAX];
    size_t head_len;
    bool got_hello, attached;
    bool out_eof;               /* the command's stdout ended */
    bool out_blocked;           /* our stdout is full: wait for it */
    bool in_done;               /* our stdin ended, or the command takes no more */
    bool in_blocked;            /* the connection is full: wait for it */
    bool splice_in, splice_out; /* not known not to work */
    uint8_t *buf;               /* the read/write path's buffer (stdin) */
    size_t buf_off, buf_len;
    uint8_t *obuf; /* ... and stdout's */
} VmRunStream;

/* The guest agent's Hello on a fresh (non-blocking) stream connection,
 * read before Attach is sent, within VMRUN_STREAM_HELLO_MS: true when it
 * knows stream connections (protocol 1.1 on). An older agent, or one
 * whose Hello does not come in time, gets none and the session relays
 * all stdio on the Exec's connection. */
bool stream_hello(int fd);

/* The stream connection's part of the session's loop: whether it still
 * has work (output to pass on, or input while the command runs), the fds
 * it waits for, and handling what they said. */
bool stream_busy(const Session *s);
void stream_poll_add(const Session *s, SessionPoll *ps);
void stream_events(Session *s, const SessionPoll *ps);
/* Our stdin is readable (or gone, POLLNVAL): on to the stream connection. */
void stream_stdin(Session *s, short revents);
