/* <vm>.conf: one VM on a vm-switch network.
 *
 *     # comment
 *     mac=52:54:00:12:34:56
 *     role=router            (or client, the default)
 *
 * One key=value per line, blanks around key and value ignored, each key
 * at most once, unknown keys an error. Errors name the file, the line and
 * the reason ("banking.conf:3: unknown key \"mtu\""). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VM_CONF_MAX_SIZE 4096
#define VM_CONF_ERROR_MAX 256
#define VM_NAME_MAX 12

typedef enum VmRole {
    VM_ROLE_CLIENT,
    VM_ROLE_ROUTER,
} VmRole;

typedef struct VmConf {
    uint8_t mac[6];
    VmRole role;
} VmConf;

/* Parses text (len bytes, NULs refused); name is the file name used in
 * errors. 0, or -EINVAL with the reason in err (err_size bytes, always
 * NUL-terminated when err_size > 0). */
int vm_conf_parse(const char *name, const char *text, size_t len, VmConf *ret, char *err,
                  size_t err_size);
/* Reads and parses the regular file at path (at most VM_CONF_MAX_SIZE
 * bytes, symlinks not followed). Errors as above; -errno from the file
 * system with its reason in err. */
int vm_conf_load(const char *path, VmConf *ret, char *err, size_t err_size);
/* The same for path relative to the directory dirfd (or AT_FDCWD). */
int vm_conf_load_at(int dirfd, const char *path, VmConf *ret, char *err, size_t err_size);

/* Parses "52:54:00:12:34:56": six hex pairs, unicast, not all zero. */
int vm_conf_parse_mac(const char *s, uint8_t ret[6]);
/* The VM name of a config file name: "banking.conf" -> "banking". Names
 * are [a-z][a-z0-9-]{0,11}. -EINVAL for any other file name. */
int vm_conf_name_from_filename(const char *filename, char ret[VM_NAME_MAX + 1]);
