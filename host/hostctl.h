/* The client side of the host agent's command socket for the vm-*
 * commands (vm-start, vm-stop, vm-list, vm-start-debug): which VMs are
 * configured, connecting to a VM's socket with the Hello exchange, and
 * one request with its reply. Blocking; no libraries beyond the protocol.
 * vm-run has its own, tuned for its start-up time. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "util.h"
#include "wire.h"

/* Sets the program name for hostctl_fail(): "vm-start" etc. */
void hostctl_setup(const char *program);
/* The exit status of hostctl_fail() (default 1): vm-start-debug, whose
 * own status is the VMM's, uses 255. */
void hostctl_set_failure_status(int status);
/* One line "PROGRAM: ...", exit 1 (or the status set above). */
_noreturn_ _printf_(1, 2) void hostctl_fail(const char *fmt, ...);

/* Fails with one line unless VM has a configuration file
 * (CONFIG_DIR/vms/VM.json) and a valid name. */
void hostctl_require_vm(const char *vm);

/* The configured VM names (CONFIG_DIR/vms/NAME.json with a valid NAME),
 * sorted; free with hostctl_names_free(). -errno when the directory
 * cannot be read (-ENOENT: it does not exist). */
int hostctl_list_vms(char ***ret_names, size_t *ret_n);
void hostctl_names_free(char **names, size_t n);

/* RUNTIME_DIR/VM.sock. */
int hostctl_socket_path(const char *vm, char *buf, size_t size);

/* Connects to the VM's host agent and exchanges Hello. -ENOENT or
 * -ECONNREFUSED when nobody listens there (the VM is not running and no
 * socket unit waits for it); other errors with message filled. */
int hostctl_connect(const char *vm, int timeout_ms, int *ret_fd, char *message, size_t size);

/* Sends req and waits for the reply (up to timeout_ms, -1: no limit).
 * When notice is given and nothing came after notice_ms, it is printed
 * once on stderr ("PROGRAM: " prefixed). An Error reply is returned as a
 * Msg like any other; the caller frees the reply with msg_done(). */
int hostctl_request(int fd, const Msg *req, int timeout_ms, const char *notice, int notice_ms,
                    Msg *ret_reply);

/* "VM 'x': <message> (CODE)" for an Error reply, sanitised. */
void hostctl_fail_error(const char *vm, const Msg *error) _noreturn_;

const char *hostctl_error_name(WireError e);
const char *hostctl_state_name(VmState s);
