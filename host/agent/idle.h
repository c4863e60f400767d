/* Leases, the idle backstop of disposable VMs, and lingering.
 *
 * A lease is a client's Connect, from the request (a client waiting for
 * the VM counts too) until its connection closes, or a client attached to
 * the serial console: someone typing there uses the VM as a command does.
 * Leases are facts the guest cannot fake.
 *
 * The idle backstop: a disposable VM (disposable, idleTimeout) that has
 * had no lease for idleTimeout plus --idle-grace is stopped by the host
 * agent, should its guest not have powered off by then (the guest agent
 * normally does, after idleTimeout). Armed from the end of the last lease,
 * or from the VMM's start when nobody holds one; any lease disarms it.
 *
 * Lingering: socket-activated, a host agent whose VM is stopped and that
 * has no client exits after LINGER_USEC; the socket starts a fresh one for
 * the next client. */
#pragma once

#include <stdint.h>

#include "agent.h"

#define LINGER_USEC (10 * USEC_PER_SEC)

int idle_new(Agent *a, Idle **ret);
void idle_free(Idle *i);

void idle_lease_begin(Idle *i);
void idle_lease_end(Idle *i);
unsigned idle_leases(const Idle *i);
/* How long nobody has held a lease (0 while somebody does). */
uint64_t idle_usec(const Idle *i, uint64_t now);
/* The VMM started at `at`: with no lease, idleness counts from there. */
void idle_vm_started(Idle *i, uint64_t at);

/* Re-arms or disarms the backstop from the leases and the VM's state. */
void idle_update(Idle *i);
/* Re-arms or disarms lingering from the VM's state and the clients. */
void idle_linger_update(Idle *i);
