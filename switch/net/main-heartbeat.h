/* The heartbeat: the main process pings each child every
 * PING_INTERVAL_USEC and expects its PONG (state and counters) within
 * PONG_TIMEOUT_USEC.
 *
 * A child serves its control socket between datapath rounds of bounded
 * work, so a healthy one answers within well under a millisecond; but a
 * busy machine (three qemu guests booting under TCG on two cores, each
 * child serving its frontend's set-up) was seen to keep healthy children
 * from answering two pings 100 ms apart, and killing one then costs its VM
 * a reconnect. So a missed deadline is logged and the child is pinged
 * again every PONG_TIMEOUT_USEC (the main process reads the control socket
 * first, so that its own lateness is not blamed on the child); a child
 * that has answered none of them for HUNG_USEC, or whose control socket
 * does not take a message, is hung: killed and restarted like a crashed
 * one. A hung child gets nothing from the grace but a later kill (about
 * 3 s after it stopped). This also ends a frontend that stops in the
 * middle of a vhost-user message (the child reads whole messages from a
 * blocking socket): its child is replaced within about a second, and the
 * frontend reconnects to a fresh one.
 *
 * Start-up is the other exception: a fresh exec on a loaded machine can
 * take more than 100 ms to reach its event loop (seen twice in 16 runs of
 * the switch tests when the first ping went at once), so a child gets its
 * first ping STARTUP_GRACE_USEC after its start. */
#pragma once

#include <stdint.h>

#include "main-state.h"

#define PING_INTERVAL_USEC 1000000ull
#define PONG_TIMEOUT_USEC 100000ull
#define HUNG_USEC 2000000ull
#define STARTUP_GRACE_USEC PING_INTERVAL_USEC

/* A child's PONG: its counters and state are taken as they are. */
void on_pong(Switch *s, Vm *v, const CtlPong *p);
/* Runs what is due at `now` (the once-a-second tick: counters file and
 * pings; overdue pongs; restarts) and returns when the next thing is. */
uint64_t timers(Switch *s, uint64_t now);
