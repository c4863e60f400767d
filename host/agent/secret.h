/* The VM's secret on the host: made at every start of the VM, handed to
 * the guest through the VMM's fw_cfg (name VM_SECRET_FW_CFG_NAME), proved
 * in the Hello of every connection the host agent makes to the guest
 * agent (proto/secret-file.h), removed when the VM stops.
 *
 * The file is RUNTIME_DIR/<vm>.secret: created with O_EXCL|O_NOFOLLOW,
 * mode 0600, owned by the host agent's user, in a runtime directory that
 * agent_runtime_dir_check() found to be ours and writable by nobody
 * else. Only its path ever appears on a command line. */
#pragma once

#include <stdint.h>

#include "msg.h"
#include "secret-file.h"

/* The fw_cfg file name the guest reads (rootfs/fwcfg.h). */
#define VM_SECRET_FW_CFG_NAME SECRET_FW_CFG_NAME

/* RUNTIME_DIR/<vm>.secret, malloc'ed; NULL when out of memory. This is
 * what a VMM's command line names (crosvm's --fw-cfg, qemu's -fw_cfg). */
char *vm_secret_path(const char *vm);

/* A fresh secret (getrandom) into ret and the file at `path`. A file left
 * there (by a host agent that died) is replaced. 0 or a negative errno;
 * on failure no file is left. */
int vm_secret_create(const char *path, uint8_t ret[WIRE_SECRET_SIZE]);

/* --no-vmm: the secret of a VM someone else started, read from `path`
 * (proto/secret-file.h's rules: ours, nobody else may read it). -ENOENT when
 * there is none. */
int vm_secret_load(const char *path, uint8_t ret[WIRE_SECRET_SIZE]);

/* Removes the file; a missing one is fine. */
void vm_secret_remove(const char *path);
