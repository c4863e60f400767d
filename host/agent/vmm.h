/* The VMM interface of the host agent.
 *
 * The host agent drives a VMM through VmmOps: build the command line and
 * ask the running VM to stop. Starting the process, noticing its exit and
 * killing it are the same for every VMM (vmmproc.c), and so is when each
 * happens (lifecycle.c). Each VMM lives in a module of its own (crosvm.c)
 * behind one VmmOps. */
#pragma once

#include <stdio.h>

#include "host/common/config.h"

typedef struct VmmOps {
    const char *name;
    /* The VMM's argv (NULL-terminated, free with strv_free()). Fails
     * with -EINVAL and err->message naming the file and the key when the
     * configuration lacks what the VMM needs (a kernel). */
    int (*argv)(const HostConfig *h, const VmConfig *vm, char ***ret_argv, ErrorText *err);
    /* The argv of a command that asks the running VM to stop. */
    int (*stop_argv)(const VmConfig *vm, char ***ret_argv);
    /* The VMM's control socket (malloc'ed; NULL when out of memory), which
     * the host agent removes once the VMM has exited. */
    char *(*control_socket)(const VmConfig *vm);
} VmmOps;

/* `--print-command`: the VMM's argv, one argument per line, on `out`. 0,
 * or a negative errno with err->message set. */
int vmm_print_command(const VmmOps *ops, const HostConfig *h, const VmConfig *vm, FILE *out,
                      ErrorText *err);
