/* The supervisor of a sandbox with a pid namespace, and the notifications
 * to the service manager; used by sandbox.c only.
 *
 * The supervisor is the process that called sandbox_enter(), left outside
 * the new pid namespace: systemd's main PID. It forwards signals (PID 1
 * only gets those it handles, and the main process does), relays the
 * main process's notifications (known assignments only, one per line, so
 * that a compromised main process cannot speak for the service: no
 * MAINPID=, FDSTORE=, ...) and mirrors the main process's exit. It is
 * locked down like the rest: no capabilities, no process, its own small
 * filter. */
#pragma once

#include <stddef.h>

#include "filter.h"

/* A new pid namespace: the main process becomes its PID 1, sees only its
 * own children in /proc, cannot signal anything outside, and when it dies
 * the kernel kills every child with it. unshare(CLONE_NEWPID) applies to
 * the next child, so this is where the process splits: the child goes on
 * into the sandbox (0, or a negative errno), the parent closes its copies
 * of main_fds (the main process's alone) and supervises under the
 * supervisor's filter in `mode`, and never returns. */
int supervisor_split(FilterMode mode, const int *main_fds, size_t n_main_fds);

/* Without a supervisor the process itself tells systemd; its socket is out
 * of reach once the root (a path) or the network namespace (an abstract
 * name) changed, so it is connected now, for sandbox_notify(). 0 (also
 * when there is no $NOTIFY_SOCKET) or a negative errno. */
int notify_connect(void);
