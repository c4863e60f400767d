/* What the vm-* commands share: reaching a VM's sockets, the local
 * terminal, naming protocol errors. No libraries beyond libc, so that
 * vm-run stays lean. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "wire.h"

/* A blocking, close-on-exec connection to the unix socket at path. */
int client_unix_connect(const char *path, int *ret_fd);

/* Whether VM names a configured VM: a valid name whose file
 * <config dir>/vms/VM.json exists, or (for a VM whose configuration is
 * not readable here) whose socket at sock_path exists. */
bool client_vm_known(const char *vm, const char *sock_path);

/* The window size of the first of stdin, stdout, stderr that is a
 * terminal; false (and 0, 0) when none is. */
bool client_window_size(uint16_t *ret_rows, uint16_t *ret_cols);

/* Puts stdin's terminal in raw mode (no-op when stdin is not a terminal)
 * and remembers how it was. Returns true when it changed the mode. */
bool client_terminal_raw(void);
/* Restores what client_terminal_raw() changed, dropping unread input
 * (a terminal's answers to queries meant for the remote side); safe to
 * call any number of times, and from exit paths. */
void client_terminal_restore(void);

/* "UNAVAILABLE" for WIRE_ERR_UNAVAILABLE, ... */
const char *client_error_name(WireError e);
