/* The counters file: `<socket dir>/STATS_FILE`, one line per VM, rewritten
 * (STATS_TMP, then a rename) once a second, as soon as every child has
 * answered that second's PING, and what `vm-switch --stats` prints. The line format and what
 * each counter means are the project README's (vm-switch).
 *
 * Counters add up over a VM's children (they survive restarts) up to the
 * last PONG of each. They are what each child reports: a compromised
 * child can make its own VM's line (and the drops it reports against its
 * peers, and, as the router, the clients' ring_full) say anything; nothing
 * else depends on them. */
#pragma once

#include "main-state.h"

#define STATS_FILE "vm-switch.stats"
#define STATS_TMP ".vm-switch.stats.tmp"

/* Rewrites the counters file of the running switch. */
void write_stats(Switch *s);
/* `vm-switch --stats`: copies the counters file to stdout. An exit status. */
int print_stats(const char *socket_dir);
