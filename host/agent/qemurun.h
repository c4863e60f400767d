/* qemu behind VmmOps (vmm.h): its command line (qemu.c), and what runs
 * beside it while one VM runs (its VmmRun):
 *
 * - before qemu starts: stale sockets of ours removed; qubes-lite-vsock
 *   when the VM's vsock device is ours (no usable /dev/vhost-vsock), and
 *   one virtiofsd per shared directory, whose socket must be there before
 *   qemu starts (qemu does not reconnect to it). Each in a session of its
 *   own, with the VMM's environment, its stderr logged as the VMM's is.
 * - once qemu runs: its QMP socket, connected as soon as qemu has made it;
 *   with qubes-lite-vsock, `device_add vhost-user-vsock-pci` (again until
 *   qemu takes it: not before its chardev has connected), then `cont`
 *   (qemu started paused).
 * - while it runs: a qubes-lite-vsock that exits is started again (a
 *   backoff from 0.2 s to 5 s) and its device replaced: `device_del`, the
 *   guest's DEVICE_DELETED, `device_add`.
 * - stopping: step 0 is QMP system_powerdown (the guest's ACPI power
 *   button), step 1 QMP quit.
 * - once qemu has exited: the companions killed with their process
 *   groups and reaped, their sockets removed.
 * Under TCG (no usable KVM) the first start says so in one log line. */
#pragma once

#include "vmm.h"

/* How long qemu has to make its QMP socket, and to take the vsock device. */
#define QEMU_QMP_TIMEOUT_USEC (30ULL * 1000000ULL)
#define QEMU_DEVICE_ADD_TIMEOUT_USEC (30ULL * 1000000ULL)
/* How long virtiofsd has to make its socket. */
#define QEMU_VIRTIOFSD_TIMEOUT_MS 5000

extern const VmmOps vmm_qemu;
