/* qubes-lite-host-agent: what its modules share.
 *
 * One host agent serves one VM. main.c reads the options and the
 * configuration into an Agent, then each module keeps its own state
 * (opaque) and reads the rest here:
 *   clients.c    the command socket's clients: accept, peer check, requests
 *   handoff.c    a Connect's guest connections, handed over with SCM_RIGHTS
 *   lifecycle.c  the VM: start, running, stop phases, the VMM's exit
 *   vmmproc.c    the VMM's process: environment, spawn, stderr, kill
 *   idle.c       leases, the idle backstop of disposable VMs, lingering
 * main.c sets them up and wires the lifecycle's events to the clients and
 * the idle backstop; agent.c holds the helpers they all use. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "addr.h"
#include "msg.h"
#include "vmm.h"
#include "vmmproc.h"
#include "host/common/config.h"
#include "util.h"

#define USEC_PER_SEC UINT64_C(1000000)
/* Reaching the guest agent (a client's connection, the start's probe):
 * the wait between attempts starts at the first and doubles up to the
 * second. */
#define GUEST_BACKOFF_MIN_USEC (20 * 1000ULL)
#define GUEST_BACKOFF_MAX_USEC (500 * 1000ULL)

typedef struct Clients Clients;
typedef struct Lifecycle Lifecycle;
typedef struct Idle Idle;

typedef struct Agent {
    sd_event *event;
    const char *vm_name;
    HostConfig *host; /* NULL without host.json: only root may connect */
    VmConfig *vm;
    const VmmOps *vmm;
    Addr guest; /* the guest agent */
    char guest_str[ADDR_STR_MAX];

    /* Options. */
    uint64_t guest_timeout;                 /* --guest-timeout */
    uint64_t shutdown_timeout;              /* --shutdown-timeout */
    uint64_t vmm_stop_timeout;              /* --stop-timeout */
    uint64_t kill_timeout;                  /* --kill-timeout */
    uint64_t idle_grace;                    /* --idle-grace */
    const char *vmm_env[VMM_ENV_EXTRA_MAX]; /* --vmm-env */
    size_t n_vmm_env;
    bool no_vmm;     /* --no-vmm: attach to a guest agent that runs already */
    bool foreground; /* --foreground: the VMM on our stdio, its status is ours */
    bool activated;  /* the listening socket came from systemd */

    /* State every module reads. */
    bool terminating; /* SIGTERM/SIGINT: stop the VM and exit, start nothing */
    bool ready_sent;  /* READY=1 went to systemd */
    /* --no-vmm: whether the last attempt to reach the guest agent
     * succeeded (handoff.c), and since when. */
    bool guest_up;
    uint64_t guest_up_since;
    int exit_code;
    /* The VM's secret (secret.h), which every Hello to the guest agent
     * carries: made at each start of the VM; with --no-vmm, read from the
     * runtime directory when a file is there. */
    uint8_t secret[WIRE_SECRET_SIZE];
    bool have_secret;

    Clients *clients;
    Lifecycle *life;
    Idle *idle;
} Agent;

/* What our Hello to the guest agent carries: the secret, or NULL. */
static inline const uint8_t *agent_secret(const Agent *a) {
    return a->have_secret ? a->secret : NULL;
}

static inline uint64_t now_mono(void) {
    return now_usec(CLOCK_MONOTONIC);
}

/* Arms *src to call cb(userdata) once, `usec` from now (agent_timer_in)
 * or at the CLOCK_MONOTONIC time `usec` (agent_timer_at), creating the
 * source on first use and re-arming it after. */
int agent_timer_in(Agent *a, sd_event_source **src, uint64_t usec, sd_event_time_handler_t cb,
                   void *userdata);
int agent_timer_at(Agent *a, sd_event_source **src, uint64_t usec, sd_event_time_handler_t cb,
                   void *userdata);
/* Turns a timer armed by the above off (NULL is fine). */
void agent_timer_off(sd_event_source *src);

/* READY=1 with STATUS=<fmt>, once: systemd's Type=notify wants it before
 * any exit 0, or it counts a failed start. */
void agent_ready(Agent *a, const char *fmt, ...) _printf_(2, 3);

/* The idleTimeout of a disposable VM, else 0. */
uint32_t agent_idle_timeout_s(const Agent *a);

/* A directory where we create sockets as root (and remove files): it is
 * created when missing (one level, like /run/qubes-lite under a fresh
 * /run); one that exists must be a directory, not a symlink, owned by us
 * and writable by nobody else, or what we create there could be swapped
 * or what we remove chosen by someone else. Checked on the opened
 * directory, so the check is of the directory we then use. */
int agent_runtime_dir_check(const char *dir, ErrorText *err);
