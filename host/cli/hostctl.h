/* The client side of the host agent's command socket for the vm-*
 * commands (vm-start, vm-stop, vm-list, vm-start-debug): which VMs are
 * configured, connecting to a VM's socket with the Hello exchange, and
 * one request with its reply. Blocking; no libraries beyond the protocol.
 * Failing, the known-VM check, connecting and error names are client.h's,
 * which vm-run and vm-shell use too. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "client.h"
#include "util.h"
#include "wire.h"

/* How long a host agent may take to answer Hello: under systemd the
 * socket starts it first. */
#define HOSTCTL_HELLO_TIMEOUT_MS 30000
/* How long a status request may take, Hello and reply each (vm-list asks
 * every VM in turn). */
#define HOSTCTL_STATUS_TIMEOUT_MS 5000
/* After this long without an answer, vm-start and vm-stop say what they
 * wait for. */
#define HOSTCTL_NOTICE_MS 1000

/* Fails with one line (client_fail()) unless VM has a configuration file
 * (CONFIG_DIR/vms/VM.json) and a valid name. */
void hostctl_require_vm(const char *vm);

/* The one VM operand left after getopt (argv[optind]), which must be
 * configured (hostctl_require_vm()); fails with one line otherwise. */
const char *hostctl_vm_operand(int argc, char **argv);

/* The configured VM names (CONFIG_DIR/vms/NAME.json with a valid NAME),
 * sorted; free with hostctl_names_free(). -errno when the directory
 * cannot be read (-ENOENT: it does not exist). */
int hostctl_list_vms(char ***ret_names, size_t *ret_n);
void hostctl_names_free(char **names, size_t n);

/* RUNTIME_DIR/VM.sock (config_vm_runtime_file()); -EINVAL for a name
 * that is not a VM's. */
int hostctl_socket_path(const char *vm, char *buf, size_t size);

/* Connects to the VM's host agent and exchanges Hello. -ENOENT or
 * -ECONNREFUSED when nobody listens there (the VM is not running and no
 * socket unit waits for it); other errors with err filled. */
int hostctl_connect(const char *vm, int timeout_ms, int *ret_fd, ErrorText *err);

/* Sends req and waits for the reply (up to timeout_ms, -1: no limit).
 * When notice is given and nothing came after notice_ms, it is printed
 * once on stderr ("PROGRAM: " prefixed). An Error reply is returned as a
 * Msg like any other; the caller frees the reply with msg_done(). */
int hostctl_request(int fd, const Msg *req, int timeout_ms, const char *notice, int notice_ms,
                    Msg *ret_reply);

/* The validator of a reply: fails with one line unless hostctl_request()
 * returned r >= 0 and a reply of type want (whose fields the decoder
 * has bounded); an Error reply is told with its message. */
void hostctl_check_reply(const char *vm, int r, const Msg *untrusted, MsgType want);

const char *hostctl_state_name(VmState s);
