/* Guest TX: frames the guest sends, through the policy, into the rings
 * towards their destinations.
 *
 * Each chain is copied (past the virtio-net header) into the child's own
 * buffer, and the policy decides on that copy: the guest cannot change it
 * afterwards. The frame is then copied into the ring towards each
 * destination. Up to BUDGET chains a round, one used->idx publish and at
 * most one interrupt a round, one ring publish per ring a round, and a
 * wakeup only when the consumer sleeps.
 *
 * A full ring from a client towards the router is backpressure: the chain
 * goes back to the guest's queue (vq_rewind), the child stops reading its
 * TX queue and sleeps on the ring's space eventfd. A full ring from the
 * router towards a client gets one more look after a sched_yield(), then
 * the frame is dropped for that client (and the rest of the round's
 * frames to it), counted against the client (ring_full): one slow client
 * never stalls the router. */
#pragma once

#include "child-state.h"

/* One round on the guest's TX queue. */
void process_tx(Child *c);
