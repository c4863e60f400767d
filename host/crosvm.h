/* crosvm, the production VMM: its command line.
 *
 * The host agent drives a VMM through VmmOps (build the command line, ask
 * it to stop; starting and noticing the exit are the caller's fork/exec
 * and waitpid). crosvm specifics stay in crosvm.c; qemu will be a second
 * VmmOps.
 *
 * The argv is
 *   crosvm --log-level L [crosvm.extraArgs, global then per VM] run
 *     --cpus num-cores=N --mem size=MIB --vsock cid=ID
 *     --socket RUNTIME/<name>-crosvm.sock
 *     --serial type=stdout,hardware=serial,num=1,console,stdin
 *     [--block ROOTDISK[,pairs…],ro=true|false,root=true] [--initrd INITRAMFS]
 *     [--params P]… [--net tap-name=vm-<name>]
 *     [--block …]… [--shared-dir …]… [--vfio …]… [--vhost-user …]…
 *     [--gpu … [--wayland-sock /run/user/<uid>/wayland-0]] [--virtio-snd …]
 *     [crosvm.extraRunArgs, global then per VM] KERNEL
 * The serial console is crosvm's stdin/stdout: the host agent connects
 * them to the console pty. --wayland-sock (the configured user's Wayland
 * socket, uid from host.json's user) comes with gpu when host.json names a
 * user. */
#pragma once

#include <stdio.h>

#include "config.h"

typedef struct VmmOps {
    const char *name;
    /* The VMM's argv (NULL-terminated, free with vmm_argv_free()). Fails
     * with -EINVAL and err->message naming the file and the key when the
     * configuration lacks what the VMM needs (a kernel). */
    int (*argv)(const HostConfig *h, const VmConfig *vm, char ***ret_argv, ConfigError *err);
    /* The argv of a command that asks the running VM to stop. */
    int (*stop_argv)(const VmConfig *vm, char ***ret_argv);
    /* The VMM's control socket (malloc'ed; NULL when out of memory), which
     * the host agent removes once the VMM has exited. */
    char *(*control_socket)(const VmConfig *vm);
} VmmOps;

extern const VmmOps vmm_crosvm;

/* `h` may be NULL (no host.json): the defaults. argv[0] is
 * $QUBES_LITE_CROSVM when set and non-empty, else "crosvm" (from PATH).
 * PCI devices are under $QUBES_LITE_SYSFS_ROOT (default /sys). */
int vmm_crosvm_argv(const HostConfig *h, const VmConfig *vm, char ***ret_argv, ConfigError *err);
/* crosvm stop RUNTIME/<name>-crosvm.sock */
int vmm_crosvm_stop_argv(const VmConfig *vm, char ***ret_argv);
/* RUNTIME/<name>-crosvm.sock, malloc'ed; NULL when out of memory. */
char *vmm_crosvm_control_socket(const VmConfig *vm);

/* `--print-command`: the argv, one argument per line, on `out`. 0, or a
 * negative errno with err->message set. */
int crosvm_print_command(const HostConfig *h, const VmConfig *vm, FILE *out, ConfigError *err);

void vmm_argv_free(char **argv);
DEFINE_TRIVIAL_CLEANUP_FUNC(char **, vmm_argv_free)
