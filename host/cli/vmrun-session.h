/* vm-run's session with the guest agent, once the host agent has handed
 * over the connections: the Exec and its frames (vmrun-session.c), and
 * the stream connection that carries the command's stdin and stdout when
 * there is no pty (vmrun-stream.c). Internal to vm-run.
 *
 * Everything the guest agent sends is untrusted: frames are capped and
 * decoded by proto/wire.c into plain structs, then checked against the
 * session's state (Hello first, Started once, no more stdin acknowledged
 * than was sent, nothing after Exited) before anything is done with them. */
#pragma once

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "termfilter.h"
#include "ttyescape.h"
#include "vmrun-opts.h"
#include "vmrun-stream.h"
#include "wire.h"

#define VMRUN_SOFTWARE "vm-run 0.1"
/* Stdin bytes in flight to the guest agent before it acknowledges them. */
#define VMRUN_STDIN_WINDOW (256u * 1024u)
/* After SIGHUP or SIGTERM (or any signal before Started), how long the
 * guest has to end the command before we give up on it: the guest
 * agent's kill grace (5 s) and a margin. */
#define VMRUN_GIVE_UP_MS 8000
/* After Exited, what is left is output of the command's (a process it
 * left holding its stdout): such a signal is forwarded, and the wait
 * ends within this time (a second signal ends it at once). */
#define VMRUN_EXITED_GIVE_UP_MS 2000

/* When each step happened (CLOCK_MONOTONIC usec; 0: it did not), for
 * --timing. */
typedef struct VmRunTiming {
    uint64_t start, host, connected, guest_ready, started, first_byte, exited;
    uint64_t vm_start_us, guest_wait_us; /* the host agent's figures */
} VmRunTiming;

typedef struct Session {
    const VmRunOptions *opts;
    const char *vm;
    int sock; /* the guest agent connection */
    VmRunStream st;
    WireWriter out;
    uint8_t *untrusted_buf; /* what the guest agent sent, not yet taken */
    size_t rstart, rend;
    bool got_hello, started, exited, acked;
    bool sock_gone;           /* after Exited: the connection hung up */
    bool exited_signalled;    /* a signal came after Exited */
    bool stdin_done;          /* EOF seen and StdinClose queued */
    bool stdin_eof;           /* -t with the escape: EOF seen (keys may still be held) */
    uint32_t credit;          /* stdin bytes we may still send */
    uint32_t pending_signals; /* arrived before Started */
    uint64_t give_up_at;      /* CLOCK_MONOTONIC usec; 0: no deadline */
    int give_up_signo;
    MsgExited result;
    VmRunTiming *timing;
    /* Without -t, output to a terminal goes through a filter: fd 1's and
     * fd 2's, each on when that fd is a terminal (and not --raw-output). */
    bool filter_on[3];
    TermFilter filter[3];
    /* With -t (unless --no-escape): keystrokes are read whatever the
     * guest does, watched for ~., and held here until the guest may take
     * them (as many as fit; more are only watched). */
    bool escape_on;
    TtyEscape escape;
    uint8_t *keys;
    size_t n_keys;
} Session;

/* The fds one round of the loop waits for, and where each is in pf
 * (-1: not this round). */
typedef struct SessionPoll {
    struct pollfd pf[5];
    nfds_t n;
    int i_sock, i_sig, i_in, i_st, i_out;
} SessionPoll;

/* Sets up a session on the guest agent connection `sock` (and the stream
 * connection, or -EBADF) and queues Hello and the Exec; on the stream
 * connection, Hello and Attach go out at once. Fails with one line. */
void session_start(Session *s, const VmRunOptions *opts, const char *vm, int sock, int stream_fd,
                   VmRunTiming *timing);
/* Sends Hello and the Exec, then relays until the command exited and its
 * output ended. */
void session_run(Session *s);
/* ExitAck, best effort and bounded: the result is ours already. */
void session_ack(Session *s);
/* The command's exit as vm-run's status: its code, 128+N for signal N,
 * 127 not found, 126 not started. */
int session_exit_status(const Session *s);
/* Closes the connections and frees the buffers. */
void session_done(Session *s);

/* ---- what the stream connection (vmrun-stream.c) uses ---- */

/* Writes all of n bytes to fd 1 or 2, blocking, while signals are still
 * forwarded; our stdout's reader gone ends us as SIGPIPE would. */
void session_output(Session *s, int fd, const uint8_t *p, size_t n);
/* Records the first byte of output for --timing. */
void session_first_byte(Session *s);
/* Fails with one line telling the guest agent's Error. */
_noreturn_ void session_guest_error(const Session *s, const Msg *untrusted);
