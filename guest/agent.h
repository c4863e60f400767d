/* The guest agent's shared state: options, the event loop, idle tracking
 * and the connection count. Sessions report to it through the agent_*()
 * calls below. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "acceptor.h"
#include "idle.h"
#include "msg.h"
#include "users.h"

#define AGENT_ALLOW_UID_MAX 64
/* Connections served at once: 1,000 sessions with a stream connection
 * each are 2,000 (a raised fd limit holds them; accept() failing for
 * want of fds only pauses accepting). */
#define AGENT_CONN_MAX 4096u

typedef struct Session Session;

typedef struct AgentOptions {
    const char *listen;
    unsigned idle_timeout_s;
    const char *poweroff_command;
    uid_t allow_uid[AGENT_ALLOW_UID_MAX];
    size_t n_allow_uid;
    bool allow_local_cid;
    const char *default_user;
    unsigned wayland_timeout_s;
    unsigned kill_grace_s;
    const char *secret_file; /* the VM's secret (proto/secret-file.h) */
    bool secret_fw_cfg;      /* or from fw_cfg (rootfs/fwcfg.h) */
    bool no_secret;          /* ask none (tests only); none of the three: refuse everyone */
} AgentOptions;

typedef struct Agent {
    sd_event *event;
    AgentOptions opt;
    Idle idle;
    sd_event_source *idle_timer;
    Acceptor *acceptor;
    unsigned n_conns;
    Session *sessions;
    bool powering_off;
    UserCache *users; /* root only: the users programs run as */
    /* What the first Hello of every connection must carry, read once at
     * start; without it (and without --no-secret) every connection is
     * refused. */
    uint8_t secret[WIRE_SECRET_SIZE];
    bool have_secret;
    unsigned long long refused_secret; /* connections refused for their secret */
} Agent;

/* A session's Exec began / ended being live (idle tracking). */
void agent_live_begin(Agent *a);
void agent_live_end(Agent *a);
/* A connection was closed (its slot may be reused). */
void agent_conn_closed(Agent *a);
/* Powers the VM off (once). */
int agent_power_off(Agent *a, const char *why);
/* The first Hello of session `id`: 0 when it carries the VM's secret (or
 * no secret is asked for), else -EPERM, logged and counted. */
int agent_check_hello(Agent *a, const Msg *m, unsigned id);
/* The clock idle time and uptime are measured on. */
uint64_t agent_now(void);
