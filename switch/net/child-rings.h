/* A child's rings with its peers' children (ring.h): dropped when a peer
 * goes, published once per round. A ring is a trust boundary: what the
 * peer's child writes into it is checked by ring.c (indexes, lengths) and,
 * for frames, judged again by the policy on our own copy (child-rx.c). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "child-state.h"

/* Unmaps port's incoming ring (consumer) or outgoing one and closes its
 * eventfds; nothing is left to publish or wait for on it. */
void peer_ring_drop(Child *c, unsigned port, bool consumer);
/* Drops port's rings made for its generation upto_gen or older, or all. */
void peer_drop_rings(Child *c, unsigned port, uint32_t upto_gen, bool all);
/* Publishes what this round committed to each outgoing ring, waking the
 * consumers that sleep; clears the routers' "full in this batch". */
void publish_rings(Child *c);
/* Publishes one outgoing ring now, waking its consumer if it sleeps. */
void publish_ring(Peer *p);
