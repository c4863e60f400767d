/* The VMM interface of the host agent.
 *
 * The host agent drives a VMM through VmmOps: build the command line and
 * ask the running VM to stop. Starting the process, noticing its exit and
 * killing it are the same for every VMM (vmmproc.c), and so is when each
 * happens (lifecycle.c). Each VMM lives in a module of its own (crosvm.c,
 * qemu.c) behind one VmmOps.
 *
 * A VMM stops in steps, each given --stop-timeout by the lifecycle before
 * the next: crosvm's one is a command (`crosvm stop`, stop_argv); qemu's
 * are requests on its monitor (system_powerdown, then quit), made by its
 * VmmRun: what runs beside the VMM while one VM runs (qemu: the QMP
 * connection, virtiofsd, qubes-lite-vsock), made before the VMM starts and
 * freed once it has exited. crosvm has none. */
#pragma once

#include <stdbool.h>
#include <stdio.h>
#include <systemd/sd-event.h>

#include "host/common/config.h"

typedef struct VmmRun VmmRun;

/* What a VmmRun is made with; the pointers outlive it. */
typedef struct VmmRunContext {
    sd_event *event;
    const HostConfig *host; /* NULL: the defaults */
    const VmConfig *vm;
    const char *const *env_extra; /* --vmm-env, for what it starts */
    size_t n_env_extra;
    /* Something the VM cannot run without failed for good (its monitor
     * went away while it started, its vsock device cannot be attached):
     * `message` says what; the lifecycle stops the VM. */
    void (*failed)(void *userdata, const char *message);
    void *userdata;
} VmmRunContext;

typedef struct VmmOps {
    const char *name;
    /* The VMM's argv (NULL-terminated, free with strv_free()). Fails
     * with -EINVAL and err->message naming the file and the key when the
     * configuration lacks what the VMM needs (a kernel) or asks for what
     * it cannot do. */
    int (*argv)(const HostConfig *h, const VmConfig *vm, char ***ret_argv, ErrorText *err);
    /* The argv of a command that asks the running VM to stop; NULL when
     * the VmmRun makes the stop steps (run_stop). */
    int (*stop_argv)(const VmConfig *vm, char ***ret_argv);
    /* The VMM's control socket (malloc'ed; NULL when out of memory), which
     * the host agent removes once the VMM has exited. */
    char *(*control_socket)(const VmConfig *vm);
    /* The rest may be NULL. The guest agent's address when --guest does
     * not give one, into buf; -ENOENT for the default, vsock:ID:5200. */
    int (*guest_address)(const HostConfig *h, const VmConfig *vm, char *buf, size_t size);
    /* Before the VMM starts: a VmmRun, what must run before it started.
     * On failure nothing of it is left, and err says why. */
    int (*run_new)(const VmmRunContext *ctx, VmmRun **ret, ErrorText *err);
    /* The VMM's process runs. */
    void (*run_started)(VmmRun *run);
    /* Asks the VMM to stop, step `step` of n_stop_steps, without waiting
     * for it; a negative errno when it cannot be asked (the lifecycle
     * goes on to the next step at once). */
    int (*run_stop)(VmmRun *run, unsigned step);
    /* After the VMM has exited (or when it never started): what runs
     * beside it is stopped. NULL is fine. */
    void (*run_free)(VmmRun *run);
    /* The stop steps run_stop makes, for the log ("system_powerdown"). */
    const char *const *stop_steps;
    unsigned n_stop_steps;
} VmmOps;

/* `--print-command`: the VMM's argv, one argument per line, on `out`. 0,
 * or a negative errno with err->message set. */
int vmm_print_command(const VmmOps *ops, const HostConfig *h, const VmConfig *vm, FILE *out,
                      ErrorText *err);

/* ---- building an argv (for the VMM modules) ---- */

/* An argv being built: out of memory is remembered (oom) and checked once
 * at the end; v is NULL-terminated. */
typedef struct VmmArgv {
    char **v;
    size_t n, cap;
    bool oom;
} VmmArgv;

/* Adds s (taken; NULL means out of memory). */
void vmm_argv_add_owned(VmmArgv *a, char *s);
void vmm_argv_add(VmmArgv *a, const char *s);
_printf_(2, 3) void vmm_argv_addf(VmmArgv *a, const char *fmt, ...);
void vmm_argv_add_strv(VmmArgv *a, const ConfigStrv *s);
/* `head` then sep+key=value for each pair; `head` may be NULL (no leading
 * separator then). malloc'ed; NULL when out of memory. */
char *vmm_join_opts(const char *head, const ConfigKvList *opts, char sep);
/* $var when set and non-empty, else fallback. */
const char *vmm_env_or(const char *var, const char *fallback);
