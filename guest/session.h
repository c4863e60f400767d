/* One connection = one session: Hello, then an Exec (a running program
 * with its stdio streamed) or a control request. */
#pragma once

#include "agent.h"
#include "wire.h"

/* Takes over an accepted, authenticated, non-blocking connection. */
int session_new(Agent *a, int fd);
/* Takes over a connection that is refused: it gets Error(code) and is
 * closed. */
int session_new_refused(Agent *a, int fd, WireError code, const char *message);
/* Agent exit: kills every program still running and frees everything. */
void session_free_all(Agent *a);
