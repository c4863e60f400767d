/* crosvm, the production VMM, behind VmmOps (vmm.h).
 *
 * The argv is
 *   crosvm --log-level L [crosvm.extraArgs, global then per VM] run
 *     --cpus num-cores=N --mem size=MIB --vsock cid=ID
 *     --socket RUNTIME/<name>.crosvm.sock
 *     --serial type=stdout,hardware=serial,num=1,console,stdin
 *     --fw-cfg name=opt/qubes-lite/secret,path=RUNTIME/<name>.secret
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

#include "vmm.h"

extern const VmmOps vmm_crosvm;

/* `h` may be NULL (no host.json): the defaults. argv[0] is
 * $QUBES_LITE_CROSVM when set and non-empty, else "crosvm" (from PATH).
 * PCI devices are under $QUBES_LITE_SYSFS_ROOT (default /sys). */
int vmm_crosvm_argv(const HostConfig *h, const VmConfig *vm, char ***ret_argv, ErrorText *err);
/* crosvm stop RUNTIME/<name>.crosvm.sock */
int vmm_crosvm_stop_argv(const VmConfig *vm, char ***ret_argv);
/* RUNTIME/<name>.crosvm.sock (config_vm_runtime_file()), malloc'ed; NULL
 * when out of memory. */
char *vmm_crosvm_control_socket(const VmConfig *vm);
