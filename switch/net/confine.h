/* vm-switch's confinement: the description of its sandbox (what the root
 * holds, its limits) and the seccomp allowlist of each of its process
 * roles, for switch/sandbox/ to enforce.
 *
 *   supervisor  outside the pid namespace, systemd's main PID (sandbox.c's
 *               table: it runs only sandbox.c's code)
 *   main        the main process, PID 1 inside
 *   child       a per-VM child once its vhost-user set-up is done,
 *               stacked on main's (a re-executed child runs under main's
 *               filter until it adds its own, so every call child allows
 *               must be in main too)
 *
 * The root: the configuration directory read-only at VM_SWITCH_CONFIG_DIR
 * (inotify works through it), the socket directory read-write at its own
 * canonical path, and what sandbox.h puts in every root. */
#pragma once

#include "switch/sandbox/filter.h"

/* Where the configuration directory appears inside the sandbox. */
#define VM_SWITCH_CONFIG_DIR "/config"
/* The sandbox's host name (its own UTS namespace). */
#define VM_SWITCH_HOSTNAME "vm-switch"
/* Descriptors: the main process and its children each get at most this
 * many (a VM needs a few dozen: memory regions, kick/call, rings). */
#define VM_SWITCH_MAX_FDS 4096
/* Processes of our user inside the user namespace: the main process, one
 * child per VM, and children being restarted. A child gets none. */
#define VM_SWITCH_MAX_PROCS 512

extern const FilterTable vm_switch_main_filter;
extern const FilterTable vm_switch_child_filter;

/* The table of a role as --print-seccomp names it ("supervisor", "main",
 * "child"), or NULL. */
const FilterTable *confine_role(const char *role);

/* Enters vm-switch's sandbox (sandbox_enter()) with both directories as
 * the host names them; returns in the main process, which is under
 * main's filter. */
int confine_enter(const char *config_dir, const char *socket_dir, const char *user,
                  FilterMode mode);

/* A child, after SETUP: no capabilities, no processes, the child's filter
 * stacked on the main's. */
int confine_lockdown_child(FilterMode mode);
