/* Leases, the idle backstop and lingering (idle.h). */
#include "idle.h"

#include <inttypes.h>
#include <stdlib.h>

#include "clients.h"
#include "lifecycle.h"
#include "log.h"

struct Idle {
    Agent *agent;
    unsigned leases;
    uint64_t last_lease_end; /* or the VMM's start, when later and no lease */
    sd_event_source *idle_timer;
    sd_event_source *linger_timer;
};

int idle_new(Agent *a, Idle **ret) {
    Idle *i = calloc(1, sizeof(*i));
    if (!i) {
        return -ENOMEM;
    }
    i->agent = a;
    i->last_lease_end = now_mono();
    *ret = i;
    return 0;
}

void idle_free(Idle *i) {
    if (!i) {
        return;
    }
    sd_event_source_disable_unref(i->idle_timer);
    sd_event_source_disable_unref(i->linger_timer);
    free(i);
}

void idle_lease_begin(Idle *i) {
    i->leases++;
}

void idle_lease_end(Idle *i) {
    if (i->leases > 0 && --i->leases == 0) {
        i->last_lease_end = now_mono();
    }
}

unsigned idle_leases(const Idle *i) {
    return i->leases;
}

uint64_t idle_usec(const Idle *i, uint64_t now) {
    return i->leases > 0 ? 0 : now - i->last_lease_end;
}

void idle_vm_started(Idle *i, uint64_t at) {
    if (i->leases == 0) {
        i->last_lease_end = at;
    }
}

static int on_idle_timer(sd_event_source *s, uint64_t usec, void *userdata) {
    Idle *i = userdata;
    Agent *a = i->agent;
    uint32_t t = agent_idle_timeout_s(a);
    char why[160];

    if (i->leases > 0 || !lifecycle_up(a->life)) {
        return 0;
    }
    log_notice("VM '%s': no lease for %" PRIu64 " s (idleTimeout %u s + %" PRIu64
               " s grace) and the guest has not powered off: stopping it",
               a->vm_name, (now_mono() - i->last_lease_end) / USEC_PER_SEC, t,
               a->idle_grace / USEC_PER_SEC);
    snprintf(why, sizeof(why), "idle for idleTimeout %u s + %" PRIu64 " s", t,
             a->idle_grace / USEC_PER_SEC);
    lifecycle_stop(a->life, why);
    return 0;
}

void idle_update(Idle *i) {
    Agent *a = i->agent;
    uint32_t t = agent_idle_timeout_s(a);

    if (a->no_vmm || t == 0 || !lifecycle_up(a->life) || i->leases > 0) {
        agent_timer_off(i->idle_timer);
        return;
    }
    uint64_t deadline = i->last_lease_end + (uint64_t)t * USEC_PER_SEC + a->idle_grace;
    int r = agent_timer_at(a, &i->idle_timer, deadline, on_idle_timer, i);
    if (r < 0) {
        log_error_errno(r, "Cannot arm the idle timer: %m");
    }
}

static int on_linger_timer(sd_event_source *s, uint64_t usec, void *userdata) {
    Idle *i = userdata;
    Agent *a = i->agent;

    log_info("VM '%s' is not running and nobody is connected: exiting", a->vm_name);
    /* Woken by a client that started nothing (vm-list, vm-stop): not a
     * failed start in systemd's eyes (Type=notify), just a short run. */
    agent_ready(a, "VM %s not running, exiting", a->vm_name);
    return sd_event_exit(a->event, 0);
}

void idle_linger_update(Idle *i) {
    Agent *a = i->agent;

    if (!a->activated || a->foreground) {
        return;
    }
    if (lifecycle_state(a->life) != VM_STOPPED || !clients_none(a->clients)) {
        agent_timer_off(i->linger_timer);
        return;
    }
    int r = agent_timer_in(a, &i->linger_timer, LINGER_USEC, on_linger_timer, i);
    if (r < 0) {
        log_error_errno(r, "Cannot arm the linger timer: %m");
    }
}
