/* tap: the host's end of a hostNetworking VM's link, a persistent TAP
 * `vm-<name>` that the VMM opens by name (crosvm `--net tap-name=`, qemu
 * `-netdev tap,ifname=`).
 *
 * A TAP that is there already (the NixOS module makes them at boot, an
 * administrator may have made one) is the system's: it is used as it is,
 * never re-addressed, brought down nor removed. When there is none, the
 * host agent makes it: a persistent single-queue TAP owned by the
 * configured user, with the host's address of the VM's /31, up, and
 * marked as ours by its alias (`ip link` shows it), so that only a TAP we
 * made is ever removed, even by a later host agent after a crash.
 *
 * Needs CAP_NET_ADMIN to make or remove one. Errors fill err->message with
 * one line naming the TAP and the step that failed, with the kernel's own
 * explanation when it gave one. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "util.h"

/* The alias of a TAP this module made. */
#define TAP_ALIAS "qubes-lite: made by the host agent"

/* Makes sure the TAP `name` exists for the VMM to open.
 * - A TAP made by someone else: untouched; *ret_created = false.
 * - One of ours (an earlier call's): untouched; *ret_created = true.
 * - None: made persistent, single queue, owned by owner and group
 *   ((uid_t)-1, (gid_t)-1: by no one, only CAP_NET_ADMIN may open it),
 *   with `address`/`prefix` (IPv4, e.g. "172.16.200.2" and 31), up and
 *   with TAP_ALIAS; *ret_created = true. On failure nothing is left.
 * -EINVAL for a name that is not a valid interface name of 1 to 15
 * bytes or a bad address, -EEXIST when `name` is another kind of
 * interface, other negative errnos from /dev/net/tun and rtnetlink
 * (-ENOENT without /dev/net/tun, -EPERM without CAP_NET_ADMIN). */
int tap_ensure(const char *name, uid_t owner, gid_t group, const char *address, unsigned prefix,
               bool *ret_created, ErrorText *err);

/* Deletes the TAP `name` if it is one of ours; anything else of that name
 * is left exactly as it is. Returns 1 when it deleted it, 0 when there was
 * nothing of ours to delete, a negative errno on failure. */
int tap_remove(const char *name, ErrorText *err);
