/* vm-switch's sandbox: user, pid, mount, IPC, UTS and network namespaces,
 * a minimal tmpfs root, no capabilities, rlimits, no_new_privs and the
 * seccomp allowlists of filter.h. */
#pragma once

#include <stdbool.h>

#include "filter.h"

/* Where the configuration directory appears inside the sandbox. */
#define SANDBOX_CONFIG_DIR "/config"

typedef struct SandboxOptions {
    const char *config_dir; /* bound read-only at SANDBOX_CONFIG_DIR */
    const char *socket_dir; /* bound read-write at its own (canonical) path */
    const char *user;       /* started as root: the user to become; NULL otherwise */
    FilterMode filter_mode;
} SandboxOptions;

/* Enters the sandbox. Call it in the main process right after option
 * parsing: before any thread, event loop or descriptor other than stdio
 * and those the caller means to keep (e.g. /proc/self/exe, close-on-exec).
 *
 * Returns 0 in the sandboxed main process, PID 1 of a new pid namespace,
 * with the main role's filter loaded. The calling process stays outside as
 * the supervisor: it forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1
 * and SIGUSR2, relays sandbox_notify() to systemd, and exits with the main
 * process's status (128+N when killed by signal N); it never returns.
 * Errors (a negative errno) are returned before the split, or in the main
 * process before it is sandboxed; the caller logs and exits. */
int sandbox_enter(const SandboxOptions *o);

/* The per-VM child, after its vhost-user set-up: drops every capability
 * (effective, permitted, inheritable, bounding, ambient), tightens its
 * rlimits, sets no_new_privs and adds the child filter. */
int sandbox_lockdown_child(FilterMode mode);

/* Tells the service manager `state` ($NOTIFY_SOCKET, as sd_notify() does;
 * nothing without it). From inside the sandbox the supervisor, systemd's
 * main PID, relays READY=1, STOPPING=1, RELOADING=1 and STATUS=. Returns
 * a negative errno, 0 when there is no service manager to tell, or 1. */
int sandbox_notify(const char *state);

/* True in a process that sandbox_enter() returned into (and its children
 * until they exec). */
bool sandbox_active(void);
