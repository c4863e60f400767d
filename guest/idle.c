/* Idle tracking: see idle.h. */
#include "idle.h"

void idle_init(Idle *i, uint64_t now_usec, uint64_t timeout_usec) {
    *i = (Idle){.timeout_usec = timeout_usec, .since_usec = now_usec};
}

void idle_session_begin(Idle *i, uint64_t now_usec) {
    (void)now_usec;
    i->live++;
}

void idle_session_end(Idle *i, uint64_t now_usec) {
    if (i->live == 0) {
        return; /* unbalanced: keep the count sane */
    }
    if (--i->live == 0) {
        i->since_usec = now_usec;
    }
}

void idle_restart(Idle *i, uint64_t now_usec) {
    if (i->live == 0) {
        i->since_usec = now_usec;
    }
}

unsigned idle_live(const Idle *i) {
    return i->live;
}

uint64_t idle_elapsed_usec(const Idle *i, uint64_t now_usec) {
    if (i->live > 0 || now_usec < i->since_usec) {
        return 0;
    }
    return now_usec - i->since_usec;
}

uint64_t idle_deadline_usec(const Idle *i) {
    if (i->live > 0 || i->timeout_usec == 0) {
        return IDLE_NEVER;
    }
    if (i->since_usec > IDLE_NEVER - i->timeout_usec) {
        return IDLE_NEVER;
    }
    return i->since_usec + i->timeout_usec;
}

bool idle_expired(const Idle *i, uint64_t now_usec) {
    uint64_t d = idle_deadline_usec(i);
    return d != IDLE_NEVER && now_usec >= d;
}
