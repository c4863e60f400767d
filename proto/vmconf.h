/* <vm>.conf: one VM on a vm-switch network, written by the host agent
 * (`--write-switch-config`) and read by vm-switch: one writer, one parser.
 *
 *     # comment
 *     mac=52:54:00:12:34:56
 *     role=router            (or client, the default)
 *
 * One key=value per line, blanks around key and value ignored, each key
 * at most once, unknown keys an error. The MAC follows rules.h's
 * vm_mac_parse(). Errors name the file, the line and the reason
 * ("banking.conf:3: unknown key \"mtu\""). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rules.h"
#include "util.h"

#define VM_CONF_MAX_SIZE 4096
/* The longest line the parser takes. */
#define VM_CONF_LINE_MAX 256
/* What vm_conf_format() writes at most, its NUL included. */
#define VM_CONF_TEXT_MAX 64

typedef enum VmRole {
    VM_ROLE_CLIENT,
    VM_ROLE_ROUTER,
} VmRole;

typedef struct VmConf {
    uint8_t mac[6];
    VmRole role;
} VmConf;

/* Parses untrusted_text (len bytes, NULs refused); name is the file name
 * used in errors. 0, or -EINVAL with the reason in err. */
int vm_conf_parse(const char *name, const char *untrusted_text, size_t len, VmConf *ret,
                  ErrorText *err);
/* Reads and parses the regular file at path relative to the directory
 * dirfd (or AT_FDCWD): at most VM_CONF_MAX_SIZE bytes, symlinks not
 * followed. Errors as above; -errno from the file system with its reason
 * in err. */
int vm_conf_load_at(int dirfd, const char *path, VmConf *ret, ErrorText *err);
/* The text of a file holding c ("mac=...\nrole=...\n"), which
 * vm_conf_parse() gives back as c. Returns buf. */
char *vm_conf_format(const VmConf *c, char buf[static VM_CONF_TEXT_MAX]);
