/* Idle tracking for disposable VMs: a pure state machine over a clock the
 * caller passes in, so that it can be unit-tested without waiting.
 *
 * A session is "live" from its Exec until its Exited (or until it is torn
 * down). The VM is idle once no session has been live for the timeout. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#define IDLE_NEVER UINT64_MAX

typedef struct Idle {
    uint64_t timeout_usec; /* 0: never idle out */
    uint64_t since_usec;   /* last time the count dropped to 0 */
    unsigned live;
} Idle;

void idle_init(Idle *i, uint64_t now_usec, uint64_t timeout_usec);
void idle_session_begin(Idle *i, uint64_t now_usec);
void idle_session_end(Idle *i, uint64_t now_usec);
/* Starts the idle period again (a poweroff that failed is retried only
 * after a whole timeout). */
void idle_restart(Idle *i, uint64_t now_usec);
unsigned idle_live(const Idle *i);
/* Time with no live session: 0 while one is live. */
uint64_t idle_elapsed_usec(const Idle *i, uint64_t now_usec);
/* When the VM should power off, or IDLE_NEVER (a session is live, or no
 * timeout is set). */
uint64_t idle_deadline_usec(const Idle *i);
bool idle_expired(const Idle *i, uint64_t now_usec);
