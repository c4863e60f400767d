/* The facts several programs must agree on, each decided once: what a VM
 * name, a VM's MAC address, a user name and a terminal type may be. The
 * host's configuration, the vm-* commands, the wire decoder and vm-switch
 * all ask here, so that what one accepts another cannot refuse. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* [a-z][a-z0-9-]{0,11}: the TAP is vm-<name>, 15 bytes at most. */
#define VM_NAME_MAX 12
/* "52:54:00:12:34:56" and its NUL. */
#define MAC_STR_SIZE 18
#define USER_NAME_MAX 32
#define TERM_NAME_MAX 64

/* A vmNetwork's name becomes a unit name (vm-switch-<net>.service) and a
 * directory name: the VM name's alphabet, a little longer. */
#define NET_NAME_MAX 32

/* A VM name: [a-z][a-z0-9-]{0,11}. NULL is not one. */
bool vm_name_valid(const char *s);
/* A network name: [a-z][a-z0-9-]{0,31}. NULL is not one. */
bool net_name_valid(const char *s);
/* The VM name of a file name that is "<name><suffix>" ("banking.conf" ->
 * "banking"). -EINVAL unless the name before the suffix is valid. */
int vm_name_from_filename(const char *filename, const char *suffix, char ret[VM_NAME_MAX + 1]);

/* A VM's own MAC address, "52:54:00:12:34:56": six pairs of hex digits
 * (either case) joined by ':', unicast (a group address is no one's NIC)
 * and not all zero (no NIC has it; switches treat it as unset). The one
 * rule for macAddress in the configuration and mac= in vm-switch's files.
 * 0, or -EINVAL; ret is written only on success. */
int vm_mac_parse(const char *s, uint8_t ret[6]);
/* Whether the six bytes are a VM's own address, as vm_mac_parse() accepts. */
bool vm_mac_valid(const uint8_t mac[6]);
/* Lower-case "xx:xx:xx:xx:xx:xx". Returns buf. */
char *mac_format(const uint8_t mac[6], char buf[static MAC_STR_SIZE]);

/* A portable user name: [A-Za-z0-9_.-], 1 to 32 characters, no leading '-'.
 * The protocol's user field and the configuration's users. */
bool user_name_valid(const char *s);

/* A terminal type for TERM: [A-Za-z0-9.+_-], 1 to 64 characters (no
 * quoting, no path, nothing a terminfo lookup could be led astray by). */
bool term_name_valid(const char *s);
