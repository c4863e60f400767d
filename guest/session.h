/* One connection = one session: Hello, then an Exec (a running program
 * with its stdio streamed) or a control request. */
#pragma once

#include "agent.h"

/* Takes over an accepted, authenticated, non-blocking connection. peer
 * names who connected (an Exec and its stream connection must come from
 * the same one): session_peer_unix() or session_peer_vsock(). */
int session_new(Agent *a, int fd, uint64_t peer);
static inline uint64_t session_peer_unix(uid_t uid) {
    return (uint64_t)uid;
}
static inline uint64_t session_peer_vsock(uint32_t cid) {
    return (1ULL << 32) | cid;
}
/* Agent exit: kills every program still running and frees everything. */
void session_free_all(Agent *a);
