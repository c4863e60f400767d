/* One connection = one session: Hello, then an Exec (a running program
 * with its stdio streamed) or a control request. */
#pragma once

#include "agent.h"

/* Takes over an accepted, authenticated, non-blocking connection. */
int session_new(Agent *a, int fd);
/* Agent exit: kills every program still running and frees everything. */
void session_free_all(Agent *a);
