/* The configuration directory, as the main process follows it: one
 * `<vm>.conf` per VM (proto's vmconf.h reads it), watched with inotify
 * (IN_CLOSE_WRITE, IN_MOVED_TO, IN_MOVED_FROM, IN_DELETE); dot files and
 * names not ending in .conf are not looked at, files are read relative to
 * the directory's fd (symbolic links refused).
 *
 *   new valid file   listening socket <vm>.sock (a stale one of an earlier
 *                    run is replaced), a port, a child; peers learn the VM
 *   changed file     when the content differs, that VM's child is stopped
 *                    and a new one started; the peers learn the new MAC
 *                    and role
 *   removed file     child stopped, socket removed, peers told
 *   bad file         reported by name and ignored; a running VM whose file
 *                    turns bad keeps its last good configuration
 *
 * One router per network and one VM per MAC: a file that would break
 * either is refused by name. At start files are read in name order, so
 * the first router in that order wins. When a VM leaves, the directory is
 * scanned again for files of VMs not on the network, so that a file
 * refused for a conflict gets in once the conflict is gone; the files of
 * running VMs are read only on their own events. */
#pragma once

#include <stdbool.h>

#include "main-state.h"

/* Files one scan reads at the most. */
#define CONFIG_SCAN_MAX 256
/* The backlog of a VM's listening socket: a frontend connecting while no
 * child runs waits there for the next one. */
#define LISTEN_BACKLOG 4

/* Reads the directory again: VMs whose file is gone are removed, and every
 * file is read in name order; with only_new, only the files of VMs not on
 * the network. */
void config_scan(Switch *s, bool only_new);
/* The inotify fd is readable: applies every event. */
void on_inotify(Switch *s);
/* Closes v's listening socket and removes it from the socket directory. */
void listener_close(Switch *s, Vm *v);
