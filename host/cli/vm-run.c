/* vm-run: run a command in a VM as if it ran here. Asks the VM's host
 * agent for connections to the guest agent (received over SCM_RIGHTS),
 * keeps the host-agent connection open as a lease, and relays stdio,
 * signals and the terminal size until the command exits
 * (vmrun-session.c).
 *
 * Without a pty the command's stdin and stdout are a second connection of
 * ours (a stream connection, vmrun-stream.c): bytes go between it and our
 * stdin and stdout with splice() where the fds allow, never framed and
 * never through the guest agent.
 *
 * The host agent's frames are untrusted too: its Hello and Connected are
 * decoded by proto/wire.c and checked (type, version, the connections
 * attached) before their connections are used. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "host/common/paths.h"
#include "util.h"
#include "vmrun-opts.h"
#include "vmrun-session.h"
#include "vmrun-stream.h"
#include "wire.h"

static const char *vm_name = "?";

/* ---- the host agent ------------------------------------------------------------------------ */

/* Connects to the host agent and returns the guest agent connection (and
 * the stream connection, or -EBADF); *ret_host is the lease, kept open
 * until we exit. vm-run talks to nothing but the host agent directly, so
 * it needs neither the address parser nor the libraries behind it (a
 * short start matters for `vm-run VM true`). */
static int host_connect(const char *sock_path, VmRunTiming *t, bool stream, int *ret_host,
                        int *ret_stream) {
    _cleanup_close_ int fd = -EBADF;
    ClientConnected c;
    int r = client_unix_connect(sock_path, &fd);

    if (r < 0) {
        char why[PATH_MAX + 256];
        client_unreachable_text(vm_name, sock_path, r, why, sizeof(why));
        client_fail("%s", why);
    }
    t->host = now_usec(CLOCK_MONOTONIC);
    client_lease(fd, vm_name, VMRUN_SOFTWARE, stream ? 1 : 0, &c);
    t->connected = now_usec(CLOCK_MONOTONIC);
    t->vm_start_us = c.vm_start_us;
    t->guest_wait_us = c.guest_wait_us;
    *ret_host = TAKE_FD(fd);
    *ret_stream = c.stream_fd;
    return c.guest_fd;
}

/* ---- --timing ------------------------------------------------------------------------------ */

static void print_ms(const char *what, uint64_t start, uint64_t at, const char *note) {
    if (!at) {
        fprintf(stderr, "vm-run:   %-18s %9s   %s\n", what, "-", note ? note : "");
        return;
    }
    fprintf(stderr, "vm-run:   %-18s %9.3f ms%s\n", what, (double)(at - start) / 1000.0,
            note ? note : "");
}

static void print_timing(const VmRunTiming *t) {
    char note[96];
    fprintf(stderr, "vm-run: timing (since vm-run started):\n");
    print_ms("connect", t->start, t->host, NULL);
    if (t->vm_start_us) {
        snprintf(note, sizeof(note), " (VM start took %.3f ms)", (double)t->vm_start_us / 1000.0);
        print_ms("VM start", t->start, t->connected, note);
    } else {
        print_ms("VM start", t->start, 0, "(already running)");
    }
    snprintf(note, sizeof(note), " (host agent waited %.3f ms for it)",
             (double)t->guest_wait_us / 1000.0);
    print_ms("guest agent ready", t->start, t->guest_ready, note);
    print_ms("exec", t->start, t->started, NULL);
    print_ms("first byte", t->start, t->first_byte, t->first_byte ? NULL : "(no output)");
    print_ms("exit", t->start, t->exited, NULL);
}

/* ---- main ---------------------------------------------------------------------------------- */

/* The command line; --help prints the usage and exits. */
static void parse_command_line(int argc, char **argv, VmRunOptions *ret) {
    ErrorText err;
    if (vmrun_parse_args(argc, argv, ret, &err) < 0) {
        client_fail("%s", err.message);
    }
    if (ret->help) {
        fputs(vmrun_usage, stdout);
        exit(EXIT_SUCCESS);
    }
}

/* The VM's command socket, once the VM is known to exist: a configured
 * VM, or one whose socket exists (a configuration this user cannot read). */
static char *known_vm_socket(const char *vm) {
    char *sock_path = config_vm_runtime_file(vm, CONFIG_RUNTIME_COMMAND);
    if (!sock_path || !client_vm_known(vm, sock_path)) {
        client_fail_unknown_vm(vm);
    }
    return sock_path;
}

/* The connections to the guest agent, through the host agent: the Exec's,
 * and without a pty a stream connection when the guest agent knows them
 * (else -EBADF). *ret_host is the lease. */
static int guest_connections(const VmRunOptions *opts, VmRunTiming *timing, int *ret_host,
                             int *ret_stream) {
    _cleanup_free_ char *sock_path = known_vm_socket(opts->vm);
    int stream_fd = -EBADF;
    int guest_fd = host_connect(sock_path, timing, !opts->tty, ret_host, &stream_fd);

    if (stream_fd >= 0 && !stream_hello(stream_fd)) {
        stream_fd = safe_close(stream_fd);
    }
    *ret_stream = stream_fd;
    return guest_fd;
}

/* Signals forwarded from now on, the local terminal raw with a pty. */
static void local_setup(const VmRunOptions *opts) {
    client_signals_setup();
    if (opts->tty) {
        atexit(client_terminal_restore);
        client_terminal_raw();
    }
}

int main(int argc, char **argv) {
    VmRunOptions opts;
    VmRunTiming timing = {.start = now_usec(CLOCK_MONOTONIC)};
    _cleanup_close_ int host_fd = -EBADF;
    Session s;
    int stream_fd;

    client_setup("vm-run", CLIENT_EXIT_OWN_ERROR);
    parse_command_line(argc, argv, &opts);
    vm_name = opts.vm;
    /* Broken connections are errors we report, not signals. */
    signal(SIGPIPE, SIG_IGN);

    int guest_fd = guest_connections(&opts, &timing, &host_fd, &stream_fd);
    session_start(&s, &opts, opts.vm, guest_fd, stream_fd, &timing);
    local_setup(&opts);
    session_run(&s);

    session_ack(&s);
    client_terminal_restore();
    int status = session_exit_status(&s);
    session_done(&s);
    if (opts.timing) {
        print_timing(&timing);
    }
    vmrun_options_done(&opts);
    return status;
}
