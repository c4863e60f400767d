/* The main process's side of the control channel (ctl.h): what it tells
 * the children, the rings it sets up between them, and what it accepts
 * from them.
 *
 * Rings exist only where frames may flow: between the router and each
 * client, one per direction. A ring from producer A to consumer B: the main process makes the memfd
 * (sealed) and its two eventfds, sends them to B (GET_BUFFER) first, and
 * only once B answers BUFFER_READY for exactly that offer (both children's
 * generations unchanged) sends the same fds to A (PUT_BUFFER) and closes
 * its copies. A child never gets a ring the other side has not mapped. */
#pragma once

#include "main-state.h"

/* Sends one message to v's child. A child whose control socket does not
 * take it is treated as hung: killed (main-children.h) and restarted.
 * -ESRCH when v has no child. */
int vm_send(Switch *s, Vm *v, const CtlMsg *m, const int *fds, unsigned n_fds);

/* Offers a fresh ring from producer to consumer (GET_BUFFER). */
void ring_offer(Switch *s, Vm *producer, Vm *consumer);
/* Forgets a ring offered and not yet handed over, closing its fds. */
void pending_clear(PendingRing *p);

/* PEER: tells `to`'s child who `about` is (port, MAC, role). */
void send_peer(Switch *s, Vm *to, Vm *about);
/* PEER to every running child but about's. */
void announce_peer(Switch *s, Vm *about);
/* PEER_REMOVE or PEER_DOWN about `about`, with its generation, to every
 * running child but its own. */
void tell_peers(Switch *s, CtlType type, Vm *about);

/* Reads what v's child sent (at most CTL_BATCH messages, then the event
 * loop comes back): BUFFER_READY and PONG; anything else, or a message
 * ctl_recv() refuses, gets the child killed and restarted. */
void on_ctl(Switch *s, Vm *v);

/* Messages read from one child before the event loop looks at the rest. */
#define CTL_BATCH 64
