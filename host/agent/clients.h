/* The clients of the VM's command socket: vm-run, vm-start, vm-stop,
 * vm-list, vm-shell --ssh's users.
 *
 * A connecting peer is checked first (SO_PEERCRED: root, the configured
 * user, or our own uid, so that an unprivileged stack works in tests);
 * anyone else gets Error(DENIED). Then Hello both ways and one request:
 *   Connect           the guest connection(s), handed over (handoff.c);
 *                     the VM is started first unless it runs (or, with
 *                     no_start, Error(UNAVAILABLE)); the connection stays
 *                     open as a lease (idle.c)
 *   HostStatusRequest HostStatus, with the guest agent's live sessions
 *   HostStart         HostStatus once the guest agent answers
 *   HostStop          HostStopped once the VMM has exited
 * Each client is a connection on the engine (proto/conn.h): frames are
 * decoded and validated by proto/wire.c before any handler sees them; a
 * frame that fails, or a request out of order (during a lease too), gets
 * an Error and that client is closed. A client that says nothing useful
 * within CLIENT_HANDSHAKE_TIMEOUT_USEC, or does not read its last reply
 * as long, is dropped.
 *
 * HostStatus: live_sessions is the guest agent's Status, asked for at
 * most CLIENT_STATUS_TIMEOUT_USEC when the VM runs (0 otherwise or
 * without an answer); uptime_ms counts from the VMM's start; idle_ms
 * since the last lease ended; idle_timeout_s is idleTimeout for a
 * disposable VM, else 0. HostStart gets HostStatus only with the VM
 * running: one that went down meanwhile is an Error, never a HostStatus
 * of another state. Connected.vm_start_us is how long the client waited
 * for the VM's start (0 when it ran).
 *
 * With --no-vmm, HostStart and HostStop get Error(UNAVAILABLE), and
 * HostStatus.running says whether the last attempt to reach the guest
 * agent succeeded, uptime_ms counting from the first success of that
 * run. */
#pragma once

#include <stdbool.h>

#include "agent.h"
#include "lifecycle.h"
#include "wire.h"

/* Replies are a few dozen bytes; more queued than this means the client
 * does not read. */
#define CLIENT_OUT_MAX (64u * 1024u)
#define CLIENT_HANDSHAKE_TIMEOUT_USEC (30 * USEC_PER_SEC)
/* HostStatus asks the guest agent for its live sessions this long. */
#define CLIENT_STATUS_TIMEOUT_USEC (500 * 1000ULL)

/* Accepts clients on listen_fd (which stays the caller's). */
int clients_new(Agent *a, int listen_fd, Clients **ret);
/* Drops every client. NULL is fine. */
void clients_free(Clients *cs);
/* Whether nobody is connected (lingering). */
bool clients_none(const Clients *cs);

/* What the lifecycle tells the clients (LifecycleEvents, agent.c). */
/* The guest agent answered: the clients waiting for the start are served. */
void clients_vm_running(Clients *cs);
/* The clients waiting for a start get Error(code, message). */
void clients_refuse_waiting(Clients *cs, WireError code, const char *message);
/* The VMM exited: HostStop gets HostStopped, a client waiting for the VM
 * or connecting to its guest agent waits for a fresh start (once, when
 * e->restart_ok) or gets Error(UNAVAILABLE). Returns how many wait. */
unsigned clients_vm_exited(Clients *cs, const LifecycleExit *e);
/* The VMM does not die: whoever waits on the VM gets Error(UNAVAILABLE). */
void clients_vm_gave_up(Clients *cs, const char *message);
