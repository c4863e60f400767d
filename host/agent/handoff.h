/* A Connect's guest connections: the host agent connects to the guest
 * agent (from a reserved port on vsock, which the guest agent requires),
 * once for the Connect and once for each stream connection it asked for,
 * then hands them all to the client in one Connected (SCM_RIGHTS, the
 * Exec's connection first). No byte of the session passes through us.
 *
 * The first connection is retried with a backoff (GUEST_BACKOFF_MIN_USEC
 * doubling to GUEST_BACKOFF_MAX_USEC) until --guest-timeout after the
 * first attempt: a guest agent that is still coming up answers soon.
 * The stream connections follow at once, since the guest agent answers
 * now; when only one of those fails, what was connected is handed over
 * alone (the client then relays all stdio on the first connection). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "agent.h"
#include "conn.h"

typedef struct Handoff Handoff;

/* The connections are there, or could not be made: called from the
 * event loop, never from handoff_start(). r < 0: the hand-off itself
 * failed (out of memory, the event loop), the client should be dropped;
 * else handoff_result() says how it went. The Handoff may be freed from
 * the callback. */
typedef void (*HandoffDoneFn)(void *userdata, int r);

/* Starts connecting `want` times (1 + the Connect's streams, at most
 * 1 + WIRE_CONNECT_STREAMS_MAX). vm_wait_start: since when the client
 * waited for the VM to start (0: it ran), for Connected's timing; pid:
 * the client's, for the log. Returns 1 when it is over already, 0 while
 * it goes on (done is called then), a negative errno on failure; *ret is
 * set in every case but the last. */
int handoff_start(Agent *a, unsigned want, uint64_t vm_wait_start, pid_t pid, HandoffDoneFn done,
                  void *userdata, Handoff **ret);
/* Once it is over: 0 when there is something to hand over, else the
 * error of the last attempt, with err the client's Error message ("the
 * guest agent of VM 'x' did not answer within N s (…)"). */
int handoff_result(const Handoff *h, ErrorText *err);
/* Once it is over with 0: queues Connected on the client's connection
 * with the sockets attached (conn_queue_fds(), which takes them over and
 * closes them once sent; a partial send resumes). 0, or a negative errno
 * with the sockets still ours. */
int handoff_queue(Handoff *h, Conn *conn);
unsigned handoff_sockets(const Handoff *h);
unsigned handoff_attempts(const Handoff *h);
/* Ends what is in progress and closes the sockets not handed over.
 * NULL is fine; returns NULL. */
Handoff *handoff_free(Handoff *h);
