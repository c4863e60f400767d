/* vm-switch's <vm>.conf files from the configuration: the one place that
 * turns a network's vmNetwork entries (the MACs config.c derives, the
 * router) into what the switch reads, so that the guest NIC's MAC and the
 * switch's idea of it cannot drift apart. */
#pragma once

#include <stdio.h>

/* Makes `dir` hold exactly one <vm>.conf per VM of the configuration
 * directory `config_dir` that is on network `net` ("mac=...\nrole=...\n",
 * mode 0644, replaced atomically and only when its text changes, so that a
 * running switch restarts only the VMs that changed), and removes the
 * <vm>.conf of VMs no longer on it. Other files are left alone, as is the
 * file of a VM whose configuration does not load (reported to `errors`).
 * Creates `dir` (0755) when missing. Returns the number of VMs written;
 * -ENXIO, with nothing made, when no VM names the network and `dir` does
 * not exist (a network nobody configured); or a negative errno when the
 * directory cannot be read or written. */
int switchconf_write(const char *config_dir, const char *net, const char *dir, FILE *errors);
