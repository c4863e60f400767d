/* The VM's secret: what proves to the guest agent that a connection comes
 * from the host agent (the project README, "Threat: local host
 * processes").
 *
 * The host agent makes it (host/agent/secret.c), the VMM hands it to the
 * guest through fw_cfg (rootfs/fwcfg.h reads it there), the guest's init
 * copies it to a root-only file, and both agents read it here, once. A secret file must be a regular
 * file of exactly WIRE_SECRET_SIZE bytes, owned by whoever reads it and
 * readable by nobody else: a secret others could read would prove
 * nothing. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "msg.h"

/* The fw_cfg file the VMM gives the guest the secret in. */
#define SECRET_FW_CFG_NAME "opt/qubes-lite/secret"

/* Reads the secret in `path` into ret (WIRE_SECRET_SIZE bytes): 0, or
 * -ENOENT, -ELOOP (a symlink), -EPERM (another owner, or group or others
 * may read or write it), -EBADMSG (not a regular file of exactly that
 * size), or another negative errno. */
int secret_read_file(const char *path, uint8_t ret[WIRE_SECRET_SIZE]);

/* Whether `untrusted` (NULL: absent) is `secret`, in time that does not
 * depend on where they differ. */
bool secret_equal(const uint8_t secret[WIRE_SECRET_SIZE], const uint8_t *untrusted);
