/* Reading a file of the VMM's fw_cfg device from the guest, over the
 * legacy x86 I/O interface, without any kernel driver: the guest image's
 * init and the guest agent (--secret-fw-cfg) fetch the VM's secret this
 * way (proto/secret-file.h).
 *
 * Why not the kernel's qemu_fw_cfg sysfs driver: crosvm's fw_cfg sits at
 * I/O port 0x510 with no ACPI entry, and the driver finds it there only
 * when the kernel has CONFIG_FW_CFG_SYSFS_CMDLINE (Debian's has not) and
 * is told the port on its command line. qemu's pc and q35 machines put
 * fw_cfg at the same ports, so one reader serves both VMMs.
 *
 * The protocol: a 16-bit selector written to port 0x510 chooses an item
 * and rewinds it; each byte read from port 0x511 is the item's next byte.
 * Item 0x0000 (the signature) is "QEMU"; item 0x0019 is the file
 * directory: a big-endian 32-bit count, then that many entries of
 * {be32 size, be16 select, be16 reserved, char name[56]}. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define FWCFG_PORT_SELECTOR 0x510
#define FWCFG_PORT_DATA 0x511
#define FWCFG_SELECT_SIGNATURE 0x0000
#define FWCFG_SELECT_FILE_DIR 0x0019
#define FWCFG_SIGNATURE "QEMU"
#define FWCFG_NAME_SIZE 56
#define FWCFG_ENTRY_SIZE (4 + 2 + 2 + FWCFG_NAME_SIZE)
/* More files than any VMM gives a guest (qemu allows 0x4000 - 0x20 at
 * most, and uses a few dozen): the directory we read is bounded by it. */
#define FWCFG_FILES_MAX 1024

typedef struct FwCfgFile {
    uint16_t select;
    uint32_t size;
} FwCfgFile;

/* Looks `name` up in a file directory as read from item 0x0019 (`len`
 * bytes, the count included). The directory comes from the VMM, which we
 * trust, but its count and names are checked all the same: a count that
 * is above FWCFG_FILES_MAX or runs past `len`, or a name without its NUL
 * within 56 bytes, is -EBADMSG; no such name is -ENOENT. */
int fwcfg_dir_find(const uint8_t *untrusted_dir, size_t len, const char *name,
                   FwCfgFile *ret_file);

/* Reads the fw_cfg file `name`, which must be exactly `size` bytes, into
 * ret over the I/O ports (ioperm: root with CAP_SYS_RAWIO, and a kernel
 * not locked down). 0; -ENODEV when there is no fw_cfg device (no
 * signature); -ENOENT when it has no such file; -EBADMSG when the file has
 * another size or the directory is broken; -EOPNOTSUPP off x86; -EPERM
 * (or another errno of ioperm) when the ports cannot be had. The
 * process's port access is given up again before returning. */
int fwcfg_read_file(const char *name, void *ret, size_t size);

/* What a failure of fwcfg_read_file() means, for a log line. */
const char *fwcfg_strerror(int r);
