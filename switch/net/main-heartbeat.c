/* Pings, pongs and the main process's timers. */
#include "main-heartbeat.h"

#include <string.h>

#include "log.h"
#include "main-children.h"
#include "main-ctl.h"
#include "main-stats.h"

/* Whether a ping of this round is still unanswered. */
static bool pings_outstanding(const Switch *s) {
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        if (vm_running(&s->vm[i]) && s->vm[i].ping_outstanding) {
            return true;
        }
    }
    return false;
}

void on_pong(Switch *s, Vm *v, const CtlPong *p) {
    uint64_t now = now_usec(CLOCK_MONOTONIC);
    if (p->seq > v->ping_seq) {
        child_kill(s, v, "answered a ping never sent");
        return;
    }
    /* The child's own account, taken as it is: a compromised child can
     * make its VM's counters (and, as the router, the ring_full drops it
     * reports for clients) say anything. Statistics, not accounting. */
    v->cur = p->counters;
    memcpy(v->ring_full_to, p->ring_full_to, sizeof(v->ring_full_to));
    memcpy(v->refused_from, p->refused_from, sizeof(v->refused_from));
    v->child_state = (CtlState)p->state;
    v->ping_missed = false; /* it answers: whatever kept it was passing */
    if (p->seq == v->ping_seq && v->ping_outstanding) {
        v->ping_outstanding = false;
        if (now - v->ping_sent_at > PONG_TIMEOUT_USEC) {
            /* Read late by us, not answered late: the deadline checks the
             * socket before it blames the child. */
            log_debug("%s: pong read %llu ms after its ping", v->name,
                      (unsigned long long)((now - v->ping_sent_at) / 1000));
        }
    }
    s->stats_dirty = true;
    /* The round's last answer: the counters file now, not a second later
     * at the next tick, so that it shows each child as its pong did. */
    if (!pings_outstanding(s)) {
        write_stats(s);
    }
}

static void ping_send(Switch *s, Vm *v, uint64_t now) {
    CtlMsg m;
    ctl_msg_init(&m, CTL_PING);
    m.ping.seq = ++v->ping_seq;
    v->ping_sent_at = now;
    v->ping_outstanding = true;
    (void)vm_send(s, v, &m, NULL, 0);
}

/* Once a second: the counters file when it changed since (a child that
 * did not answer, a child started or gone), a ping to every child past
 * its start-up grace. */
static void tick(Switch *s, uint64_t now) {
    if (s->stats_dirty) {
        write_stats(s);
    }
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        Vm *v = &s->vm[i];
        if (!vm_running(v) || now - v->started_at < STARTUP_GRACE_USEC) {
            continue;
        }
        ping_send(s, v, now);
    }
}

/* v's ping is outstanding: nothing yet, ask again, or give up on it.
 * Returns when to look again (UINT64_MAX: not for this ping). */
static uint64_t pong_overdue(Switch *s, Vm *v, uint64_t now) {
    uint64_t due = v->ping_sent_at + PONG_TIMEOUT_USEC;
    if (now >= due) {
        /* The pong may be waiting in the socket (we are the late one
         * when the machine is loaded): look first. */
        on_ctl(s, v);
    }
    if (!vm_running(v) || !v->ping_outstanding) {
        return UINT64_MAX;
    }
    if (now < due) {
        return due;
    }
    if (v->ping_missed && now - v->ping_missed_at >= HUNG_USEC) {
        v->ping_outstanding = false;
        child_kill(s, v, "answered no ping for 2 s");
        return UINT64_MAX;
    }
    if (!v->ping_missed) {
        log_warning("%s: no answer to a ping within 100 ms; asking again", v->name);
        v->ping_missed = true;
        v->ping_missed_at = due;
    }
    ping_send(s, v, now);
    return now + PONG_TIMEOUT_USEC;
}

/* v's child is down and due to start again: start it when its time has
 * come. Returns when to look again (UINT64_MAX: started). */
static uint64_t restart_due(Switch *s, Vm *v, uint64_t now) {
    if (now >= v->restart_at) {
        (void)child_start(s, v);
    }
    return v->restart_pending ? v->restart_at : UINT64_MAX;
}

uint64_t timers(Switch *s, uint64_t now) {
    uint64_t next;
    if (now >= s->next_tick) {
        s->next_tick = now + PING_INTERVAL_USEC;
        tick(s, now);
    }
    next = s->next_tick;
    for (unsigned i = 0; i < CTL_MAX_PORTS; i++) {
        Vm *v = &s->vm[i];
        if (!v->used) {
            continue;
        }
        if (vm_running(v) && v->ping_outstanding) {
            next = MIN(next, pong_overdue(s, v, now));
        }
        if (!vm_running(v) && v->restart_pending) {
            next = MIN(next, restart_due(s, v, now));
        }
    }
    return next;
}
