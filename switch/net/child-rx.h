/* Guest RX: frames from the peers' rings into the guest's receive queue.
 *
 * The consumer does not trust the producer's child either. Each frame is
 * copied out of its slot, and the policy judges the copy again as if the
 * peer's guest had sent it: a source MAC other than the peer's, or a
 * destination the peer may not reach, and the frame is dropped, counted
 * against the peer (refused_from: frames its child put into the ring that
 * a guest could not have got past its own child). Then each frame goes
 * into as many receive buffers as it needs (MRG_RXBUF; one without it)
 * with a header whose num_buffers says how many, from that copy. Without
 * receive buffers the frame stays in the ring and the child waits for the
 * guest's kick. When the buffers run out in the middle of a frame, the
 * ones taken go back to the queue and the kick asked for is the one for a
 * buffer beyond them (EVENT_IDX: avail_event at the avail index reached;
 * flags: a re-check against that index), so the child sleeps until the
 * guest adds one. A frame that all the ring's buffers (or RX_MAX_BUFS)
 * cannot hold is dropped (oversize). While
 * the guest receives nothing at all (no RX queue running), frames for it
 * are discarded (guest_down), as on a link that is down, so that the
 * peers' rings do not fill up with stale frames. */
#pragma once

#include "child-state.h"

/* One round on the incoming rings, BUDGET frames at the most. */
void process_rx(Child *c);
