/* qemu's command line, and what this machine offers it. qemu behind
 * VmmOps, with what runs beside it while a VM runs, is qemurun.h.
 *
 * The argv is
 *   qemu-system-x86_64 -name NAME -machine pc,memory-backend=mem
 *     -accel kvm -cpu host | -accel tcg -cpu max
 *     -m MIB -smp N -object memory-backend-memfd,id=mem,size=MIBM,share=on
 *     -nodefaults -no-user-config -display none -no-reboot
 *     -chardev stdio,id=console,signal=off -serial chardev:console
 *     -qmp unix:RUNTIME/<name>.qmp.sock,server=on,wait=off
 *     -kernel KERNEL [-initrd INITRAMFS] -append CMDLINE
 *     [root disk, additionalDisks: -drive …,if=none -device virtio-blk-pci,…]
 *     [hostNetworking: -netdev tap,ifname=vm-<name>,… -device virtio-net-pci,…]
 *     [vmNetwork, vhostUser: -chardev socket,… -netdev vhost-user,… -device virtio-net-pci,…]
 *     [pciDevices: -device vfio-pci,host=BDF]
 *     [sharedDirectories: -chardev socket,… -device vhost-user-fs-pci,…]
 *     -device vhost-vsock-pci,guest-cid=ID
 *       | -chardev socket,id=vsock,path=RUNTIME/<name>.vsock-vhost.sock,reconnect=1 -S
 *     [qemu.extraArgs, global then per VM]
 * - Memory is a shared memfd: vhost-user backends (vm-switch,
 *   qubes-lite-vsock, virtiofsd) map the guest's memory.
 * - KVM when /dev/kvm really runs a guest (qemu_host_probe()), else TCG,
 *   under which a vhost-user NIC gets `vectors=0` (qemu 7.2 crashes when a
 *   TCG guest enables MSI-X on one).
 * - The serial console is qemu's stdin and stdout, as crosvm's.
 * - CMDLINE: `console=ttyS0 panic=-1 quiet no_timer_check`, `root=/dev/vda
 *   ro|rw` with a root disk, `qubes_lite.name=NAME`, `qubes_lite.idle=S`
 *   (disposable), `qubes_lite.user=USER` (host.json's), with
 *   hostNetworking `qubes_lite.ip=<vm ip>/31 qubes_lite.gw=<host ip>
 *   qubes_lite.mac=<the TAP NIC's MAC>`, then kernelParams.
 * - A disk's format is read from its first bytes (qcow2's magic, else
 *   raw), never guessed from its name. crosvm's block options map to
 *   qemu's (ro, sparse, direct, block-size, id); others are refused.
 * - vsock: the kernel's vhost-vsock when /dev/vhost-vsock can be opened;
 *   otherwise qubes-lite-vsock (started by the host agent), whose
 *   vhost-user-vsock device qemu 7.2 sets up only once its socket is
 *   connected: qemu starts paused (-S), the device is added over QMP, then
 *   the guest runs (qemurun.c). The guest agent is then reached at
 *   hvsock:RUNTIME/<name>.vsock.sock:5200.
 * - What qemu cannot do as crosvm does is refused, in --check's words
 *   (config_vm_qemu_check()): gpu and sound (qemu 7.2 has neither
 *   crosvm's cross-domain Wayland nor virtio-snd), crosvm's vfio options,
 *   vhost-user devices other than NICs, shared-directory options
 *   virtiofsd has no equivalent of. */
#pragma once

#include "vmm.h"

/* What this machine offers qemu, probed once per process. */
typedef struct QemuHost {
    bool kvm;          /* /dev/kvm runs a guest */
    bool vhost_vsock;  /* /dev/vhost-vsock opens */
    char kvm_why[128]; /* why not, when not */
} QemuHost;

/* Probed on first use, then the same answer (KVM: a minimal vCPU run in a
 * child, bounded in time). */
const QemuHost *qemu_host_probe(void);

/* VmmOps.argv: vmm_qemu_argv_on() for this machine. */
int vmm_qemu_argv(const HostConfig *h, const VmConfig *vm, char ***ret_argv, ErrorText *err);
/* VmmOps.guest_address: hvsock:RUNTIME/<name>.vsock.sock:5200 when
 * qubes-lite-vsock is the VM's vsock device. */
int vmm_qemu_guest_address(const HostConfig *h, const VmConfig *vm, char *buf, size_t size);
/* The argv for a given host (unit tests); argv[0] is $QUBES_LITE_QEMU when
 * set and non-empty, else qemu-system-x86_64 (from PATH). h may be NULL. */
int vmm_qemu_argv_on(const QemuHost *qh, const HostConfig *h, const VmConfig *vm, char ***ret_argv,
                     ErrorText *err);

/* The sockets of a VM under qemu, <vm>.<what>.sock in the runtime
 * directory, malloc'ed (NULL: out of memory): "qmp", "vsock-vhost",
 * "fs-<i>". The device's PATH, which vm-shell needs too, is
 * CONFIG_RUNTIME_VSOCK (host/common/paths.h). */
char *vmm_qemu_socket(const VmConfig *vm, const char *what);
/* virtiofsd for sharedDirectories[i]: $QUBES_LITE_VIRTIOFSD, else
 * /usr/libexec/virtiofsd or /usr/lib/qemu/virtiofsd (Debian's
 * qemu-system-common), whichever exists, else virtiofsd from PATH. Its
 * own sandbox (namespaces, pivot_root into the directory, seccomp). */
int vmm_qemu_virtiofsd_argv(const VmConfig *vm, size_t i, char ***ret_argv, ErrorText *err);
/* qubes-lite-vsock for the VM: $QUBES_LITE_VSOCK, else beside us, else
 * from PATH; its socket <vm>.vsock.sock open to the configured user's
 * group (h NULL: the defaults, root only). */
int vmm_qemu_vsock_argv(const HostConfig *h, const VmConfig *vm, char ***ret_argv);
