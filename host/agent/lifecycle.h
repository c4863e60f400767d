/* The VM's lifecycle: starting its VMM, the guest agent's first answer,
 * stopping it in phases, and the VMM's exit.
 *
 *   stopped → starting (the VMM runs, the guest agent has not answered)
 *           → running → stopping → stopped
 *
 * What happens is told through LifecycleEvents (agent.c passes it on to
 * the clients and the idle backstop): this module never looks at a
 * client. Without --no-vmm only; with it the lifecycle stays stopped. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "agent.h"
#include "wire.h"

/* One probe of the guest agent while the VM starts, and the Shutdown
 * request when it stops, are each bounded by these. */
#define PROBE_TIMEOUT_USEC (2 * USEC_PER_SEC)
#define SHUTDOWN_CALL_TIMEOUT_USEC (5 * USEC_PER_SEC)
/* Removing the control socket once the VMM has exited: while something of
 * its killed process group still answers there, this many tries, this far
 * apart (at most 0.2 s). */
#define CONTROL_SOCKET_TRIES 20u
#define CONTROL_SOCKET_RETRY_USEC (10 * 1000u)

/* How the VMM's exit went, for the clients. */
typedef struct LifecycleExit {
    uint64_t now;
    StopMethod method;   /* the stop phase during which it exited */
    uint64_t stop_ms;    /* since the stop began */
    const char *message; /* "VM 'x' stopped: crosvm exited with status 0" */
    /* Whether clients that waited for a start (or were connecting) may
     * get the VM started again: not after a start that failed, nor when
     * the host agent exits. */
    bool restart_ok;
} LifecycleExit;

typedef struct LifecycleEvents {
    /* The VMM was started (state starting). */
    void (*started)(void *userdata);
    /* The guest agent answered (state running). */
    void (*running)(void *userdata);
    /* A stop began (state stopping); message says why, for clients that
     * waited for the start. */
    void (*stopping)(void *userdata, const char *message);
    /* The VMM exited (state stopped). Returns how many clients want the
     * VM started again; it is, unless that fails (start_failed then). */
    unsigned (*exited)(void *userdata, const LifecycleExit *e);
    /* That start failed: the clients waiting for it are told why. */
    void (*start_failed)(void *userdata, const char *message);
    /* SIGKILL did not end the VMM: whoever waits on the VM is told; the
     * host agent exits 1. */
    void (*gave_up)(void *userdata, const char *message);
    /* A client attached to the serial console (true) or left (false). */
    void (*console)(void *userdata, bool attached);
} LifecycleEvents;

int lifecycle_new(Agent *a, const LifecycleEvents *events, void *userdata, Lifecycle **ret);
/* Leaving: a VMM still running is killed (and reaped, unless SIGKILL was
 * seen not to work), its control socket removed. NULL is fine. */
void lifecycle_free(Lifecycle *l);

VmState lifecycle_state(const Lifecycle *l);
/* Starting or running. */
bool lifecycle_up(const Lifecycle *l);
/* When the VMM started (CLOCK_MONOTONIC). */
uint64_t lifecycle_started_at(const Lifecycle *l);
/* Whether the stop is in its last phase, SIGKILL. */
bool lifecycle_killing(const Lifecycle *l);

/* Starts the VM. On failure err says why, in one line ("cannot start VM
 * 'x': …", logged), and nothing of the attempt stays. */
int lifecycle_start(Lifecycle *l, ErrorText *err);
/* Reads the VM's file and host.json again (a start does first): the agent
 * takes them when both load, else keeps what it has and err says why, as
 * --check would. -EBUSY while the VM is up: a running VM keeps the
 * configuration it started with. */
int lifecycle_reload_config(Lifecycle *l, ErrorText *err);
/* Begins stopping a VM that is up; `why` goes to the log and to clients
 * waiting for the start. */
void lifecycle_stop(Lifecycle *l, const char *why);
/* Skips to the last phase: SIGKILL. */
void lifecycle_kill(Lifecycle *l);
