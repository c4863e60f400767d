/* vfio: PCI devices given to VMs.
 *
 * Everything goes through sysfs under $QUBES_LITE_SYSFS_ROOT (default
 * /sys, the same root the --vfio paths of the command line use), so that
 * tests run on a sysfs-shaped tree in a temporary directory:
 *   bus/pci/devices/<BDF>/{class, driver_override}   attributes
 *   bus/pci/devices/<BDF>/{driver, iommu_group}      symlinks
 *   bus/pci/drivers/<driver>/unbind, bus/pci/drivers_probe
 *   kernel/iommu_groups/<N>/devices/<BDF>
 * When $QUBES_LITE_SYSFS_LOG is set, every write is also appended to that
 * file as "<path under the root>=<value>\n", in the order made: a test tree
 * has no kernel behind it, so that is how tests see what was written.
 *
 * PCI addresses are canonicalised with config_pci_canonical(). Errors fill
 * err->message with one line naming the device and, where one is involved,
 * the file or the IOMMU group member at fault. */
#pragma once

#include <stdio.h>

#include "host/common/config.h"

#define VFIO_DRIVER "vfio-pci"
#define VFIO_DEFAULT_SYSFS_ROOT "/sys"
/* A canonical PCI address, "0000:01:00.0", and its NUL. */
#define PCI_ADDR_SIZE 13
/* A group on real hardware holds a handful of functions; this bounds what
 * a broken or hostile tree can make us allocate. */
#define VFIO_GROUP_MAX 256u
/* The class attribute, "0x060400\n", read into a buffer this large; a
 * class is 24 bits, and 0x0604xx is a PCI-to-PCI bridge. */
#define PCI_CLASS_ATTR_MAX 32
#define PCI_CLASS_MAX 0xffffffUL
#define PCI_CLASS_BRIDGE_PCI 0x0604u

/* $QUBES_LITE_SYSFS_ROOT when set and non-empty, else /sys. */
const char *vfio_sysfs_root(void);

/* Before the VM starts: every device in vm->pci_devices exists, has an
 * IOMMU group, and every device of that group except PCI-to-PCI bridges
 * (class 0x0604xx) is bound to vfio-pci and is one of the VM's own
 * pciDevices. -ENODEV (no such device), -EOPNOTSUPP (no IOMMU group),
 * -EBUSY (a group member is not ready or not the VM's), -EINVAL (not a PCI
 * address), other negative errnos when sysfs cannot be read. */
int vfio_check_vm(const VmConfig *vm, ErrorText *err);

/* Binds one device to vfio-pci: writes "vfio-pci" to its driver_override
 * (unless it holds that already), writes the address to its current
 * driver's unbind and then to bus/pci/drivers_probe (unless it is bound
 * to vfio-pci already), then checks that its driver is vfio-pci. Nothing
 * is written when the vfio-pci driver is not loaded. Returns 1 when it
 * wrote something, 0 when the device was bound and claimed already, a
 * negative errno otherwise. */
int vfio_bind(const char *bdf, ErrorText *err);

/* vfio_bind() for each address, going on after a failure; prints one line
 * per failure to `errors` (when not NULL) and returns how many failed. */
int vfio_bind_all(const ConfigStrv *bdfs, FILE *errors);
