/* vm-shell: the serial console of a running VM, or ssh to it over vsock.
 *
 * The console: connects to the host agent's console relay
 * (<runtime dir>/<vm>.console), attaches with the window size, prints the
 * replayed scrollback and the live output, and sends keystrokes until
 * Ctrl-] (or, when stdin is not a terminal, until its end and a short
 * drain). --ssh: runs ssh with qubes-lite-vsock-proxy as its
 * ProxyCommand, to the VM's CID, port 22, holding a lease on the VM
 * (its host agent's connection) until ssh ends. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client.h"
#include "host/common/config.h"
#include "host/common/paths.h"
#include "rules.h"
#include "util.h"
#include "vmshell-opts.h"
#include "wire.h"

#define SOFTWARE "vm-shell 0.1"
/* How long the console's replies to Hello and ConsoleAttach may take. */
#define ATTACH_TIMEOUT_MS 10000
/* stdin that is not a terminal: after its end, leave once the console
 * has been quiet this long, or after DRAIN_MAX_MS at most. */
#define QUIET_MS 500
#define DRAIN_MAX_MS 5000
/* Keystrokes read at once from a terminal (a paste may bring more). */
#define TTY_READ_MAX 4096
/* Leaving with Ctrl-]: how long what was typed before it may take to go. */
#define LEAVE_FLUSH_MS 1000
/* Stop reading stdin while this much is queued for the console. */
#define OUT_HIGH (4u * WIRE_DATA_MAX)
#define PROXY_NAME "qubes-lite-vsock-proxy"
/* The console's output is written this much at a time (PIPE_BUF). */
#define OUTPUT_PIECE 4096

static const char *vm_name = "?";

/* ---- ssh ---------------------------------------------------------------- */

/* The proxy beside our own executable (a build tree, a package's bin
 * directory), else the one in PATH. */
static char *proxy_path(void) {
    return config_program_or_path(PROXY_NAME);
}

/* The lease: a connection to the VM's host agent that asked for a guest
 * connection (starting the VM if need be), kept open while ssh runs, so
 * that the host agent counts the VM in use (a disposable VM is not
 * stopped under an ssh session). The guest connection itself is not
 * needed: ssh goes through the proxy. */
static int ssh_lease(const char *vm) {
    _cleanup_free_ char *path = config_vm_runtime_file(vm, CONFIG_RUNTIME_COMMAND);
    _cleanup_close_ int fd = -EBADF;
    ClientConnected c;
    int r;

    if (!path) {
        client_fail("out of memory");
    }
    r = client_unix_connect(path, &fd);
    if (r < 0) {
        char why[PATH_MAX + 256];
        client_unreachable_text(vm, path, r, why, sizeof(why));
        client_fail("%s", why);
    }
    client_lease(fd, vm, SOFTWARE, 0, &c);
    safe_close(c.guest_fd);
    safe_close(c.stream_fd);
    return TAKE_FD(fd);
}

static volatile pid_t ssh_pid;

/* SIGTERM and SIGHUP for vm-shell are for ssh: it ends the session. */
static void ssh_forward_signal(int sig) {
    if (ssh_pid > 0) {
        kill(ssh_pid, sig);
    }
}

/* Runs ssh and waits for it: its exit status, or 128+N when signal N
 * killed it. The terminal's SIGINT and SIGQUIT reach ssh as they reach
 * us, and ssh decides (as with system(), we ignore them). */
static int ssh_run(char **argv) {
    struct sigaction fwd = {.sa_handler = ssh_forward_signal};
    struct sigaction ign = {.sa_handler = SIG_IGN};
    int status;
    pid_t pid;

    fflush(NULL);
    pid = fork();
    if (pid < 0) {
        client_fail("cannot run ssh: %m");
    }
    if (pid == 0) {
        execvp("ssh", argv);
        client_warn("cannot run ssh: %m");
        _exit(CLIENT_EXIT_OWN_ERROR);
    }
    ssh_pid = pid;
    sigemptyset(&fwd.sa_mask);
    sigaction(SIGTERM, &fwd, NULL);
    sigaction(SIGHUP, &fwd, NULL);
    sigaction(SIGINT, &ign, NULL);
    sigaction(SIGQUIT, &ign, NULL);
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            client_fail("cannot wait for ssh: %m");
        }
    }
    if (WIFSIGNALED(status)) {
        return 128 + WTERMSIG(status);
    }
    return WEXITSTATUS(status);
}

/* Returns ssh's status once it ended (or execs it, without a lease). */
static int run_ssh(const VmShellOptions *o) {
    _cleanup_(host_config_freep) HostConfig *host = NULL;
    _cleanup_(vm_config_freep) VmConfig *vm = NULL;
    ErrorText err = {{0}};
    unsigned cid;
    _cleanup_strv_free_ char **argv = NULL;
    int r;

    if (!vm_name_valid(o->vm)) {
        client_fail_unknown_vm(o->vm);
    }
    r = config_load_vm(config_dir(), o->vm, &vm, &err);
    if (r == -ENOENT) {
        client_fail_unknown_vm(o->vm);
    }
    if (r < 0) {
        client_fail("%s", err.message);
    }
    r = config_load_host_or_defaults(config_dir(), &host, &err);
    if (r < 0) {
        client_fail("%s", err.message[0] ? err.message : strerror(-r));
    }
    const char *user = o->root ? "root" : o->user ? o->user : host->user;
    if (!user) {
        client_fail("no user is configured (\"user\" in %s/host.json); use --user or --root",
                    config_dir());
    }
    cid = vm->id;
    /* Tests run the guest side in one VM over the loopback CID (1). */
    const char *e = getenv("QUBES_LITE_VSOCK_CID");
    if (e && *e) {
        unsigned long long v;
        if (parse_uint(e, 1, UINT32_MAX - 1, &v) < 0) {
            client_fail("QUBES_LITE_VSOCK_CID is not a CID: '%.32s'", e);
        }
        cid = (unsigned)v;
    }
    _cleanup_free_ char *proxy = proxy_path();
    _cleanup_free_ char *device = config_vm_runtime_file(o->vm, CONFIG_RUNTIME_VSOCK);
    if (!proxy || !device) {
        client_fail("out of memory");
    }
    /* With another CID (tests over the loopback CID) the guest is not the
     * VM this host agent runs: there is nothing to hold in use. */
    if (e && *e) {
        r = vmshell_ssh_argv(proxy, NULL, cid, user, o->vm, o->argv, o->argc, &argv);
        if (r < 0) {
            client_fail("out of memory");
        }
        fflush(NULL);
        execvp("ssh", argv);
        client_fail("cannot run ssh: %m");
    }
    /* The VM runs once the lease is ours. A qemu VM on a host without
     * vhost-vsock has the qubes-lite-vsock device as its vsock, reached
     * through its socket rather than the kernel's CID. */
    _cleanup_close_ int lease = ssh_lease(o->vm);
    r = vmshell_ssh_argv(proxy, access(device, F_OK) == 0 ? device : NULL, cid, user, o->vm,
                         o->argv, o->argc, &argv);
    if (r < 0) {
        client_fail("out of memory");
    }
    return ssh_run(argv);
}

/* ---- the console -------------------------------------------------------- */

typedef struct Console {
    int sock;
    bool tty; /* stdin is a terminal: raw mode, Ctrl-] */
    bool stdin_done;
    uint64_t drain_end; /* after stdin's end: leave by then at the latest */
    uint64_t quiet_end; /* ... or once the console is quiet until then */
    WireReader in;
    WireWriter out;
    /* The console's output not yet written to our stdout: while there is
     * some, the console is not read (backpressure), but signals, stdin
     * (Ctrl-]) and the drain's deadline still are. */
    uint8_t *pending;
    size_t pending_off, pending_len;
} Console;

/* A frame did not come (r): the console closed, or sent garbage. */
_noreturn_ static void attach_recv_failed(int r, const char *want) {
    if (r == -ECONNRESET || r == -EPIPE) {
        client_fail("the console of VM '%s' closed the connection before %s", vm_name, want);
    }
    errno = -r;
    client_fail("protocol error: bad frame from the console of VM '%s': %m", vm_name);
}

_noreturn_ static void attach_timeout(void) {
    client_fail("the console of VM '%s' did not answer within %d s", vm_name,
                ATTACH_TIMEOUT_MS / 1000);
}

/* Hello and ConsoleAttach go out together, and the console's Hello must
 * come back; fails with one line otherwise. */
static void console_hello(int fd, uint16_t rows, uint16_t cols) {
    Msg attach = {.type = MSG_CONSOLE_ATTACH, .console_attach = {.rows = rows, .cols = cols}};
    ClientHelloFailure failure;
    Msg untrusted;
    int r = client_hello(fd, SOFTWARE, &attach, ATTACH_TIMEOUT_MS, &failure, &untrusted);

    if (r >= 0) {
        return;
    }
    switch (failure) {
    case CLIENT_HELLO_SEND:
        errno = -r;
        client_fail("cannot write to the console of VM '%s': %m", vm_name);
    case CLIENT_HELLO_TIMEOUT:
        attach_timeout();
    case CLIENT_HELLO_RECV:
        attach_recv_failed(r, "Hello");
    case CLIENT_HELLO_ERROR:
        client_fail_error(vm_name, &untrusted);
    case CLIENT_HELLO_NOT_HELLO:
        client_fail("protocol error: the console sent %s instead of Hello",
                    msg_type_name(untrusted.type));
    case CLIENT_HELLO_VERSION:
        client_fail("the console of VM '%s' speaks protocol version %u, vm-shell %u", vm_name,
                    untrusted.hello.major, WIRE_VERSION_MAJOR);
    }
    attach_recv_failed(r, "Hello");
}

/* ConsoleAttached, within the attach timeout. */
static void console_attached(int fd) {
    Msg untrusted;
    int r = client_wait_readable(fd, ATTACH_TIMEOUT_MS, NULL, 0);

    if (r == -ETIMEDOUT) {
        attach_timeout();
    }
    if (r >= 0) {
        r = wire_recv(fd, &untrusted, NULL);
    }
    if (r < 0) {
        attach_recv_failed(r, "ConsoleAttached");
    }
    if (untrusted.type == MSG_ERROR) {
        client_fail_error(vm_name, &untrusted);
    }
    if (untrusted.type != MSG_CONSOLE_ATTACHED) {
        client_fail("protocol error: the console sent %s instead of ConsoleAttached",
                    msg_type_name(untrusted.type));
    }
    msg_done(&untrusted);
}

static int console_connect(const char *path, uint16_t rows, uint16_t cols) {
    _cleanup_close_ int fd = -EBADF;
    int r = client_unix_connect(path, &fd);

    if (r == -ENOENT || r == -ECONNREFUSED) {
        client_fail("VM '%s' is not running; start it with vm-start %s", vm_name, vm_name);
    }
    if (r < 0) {
        errno = -r;
        client_fail("cannot reach the console of VM '%s' at %s: %m", vm_name, path);
    }
    console_hello(fd, rows, cols);
    console_attached(fd);
    return TAKE_FD(fd);
}

/* Leaves: the terminal as it was, a line saying so on a terminal. */
_noreturn_ static void console_leave(Console *c, int status, const char *why) {
    client_terminal_restore();
    if (why) {
        /* On a terminal the cursor may be anywhere in the guest's line. */
        if (c->tty) {
            fputc('\n', stderr);
        }
        client_warn("%s", why);
    }
    wire_reader_done(&c->in);
    wire_writer_done(&c->out);
    free(c->pending);
    safe_close(c->sock);
    exit(status);
}

/* Writes some of the pending output, at most a pipe's atomic size once
 * poll() said stdout has room: a write of that much does not block on a
 * pipe, and a signal interrupts one to a terminal. */
static void console_write_pending(Console *c) {
    size_t n = MIN(c->pending_len - c->pending_off, (size_t)OUTPUT_PIECE);
    ssize_t k = write(STDOUT_FILENO, c->pending + c->pending_off, n);

    if (k < 0) {
        if (errno == EINTR || errno == EAGAIN) {
            return;
        }
        if (errno == EPIPE) {
            /* Whoever read our output is gone: end as a program in a
             * pipeline would. */
            client_stdout_gone();
        }
        client_fail("cannot write the console's output: %m");
    }
    c->pending_off += (size_t)k;
    if (c->pending_off == c->pending_len) {
        c->pending_off = c->pending_len = 0;
    }
    if (c->stdin_done) {
        c->quiet_end = now_usec(CLOCK_MONOTONIC) + QUIET_MS * 1000ULL;
    }
}

/* The console's frames: only Data(stdout) is the console's output; its
 * closing is the VM stopping. Reads until a frame brings output (written
 * from the main loop, as stdout takes it) or nothing more is there. */
static void console_read_socket(Console *c) {
    while (c->pending_len == 0) {
        Msg untrusted;
        int r = wire_reader_read(&c->in, c->sock, &untrusted);
        if (r == 0) {
            return;
        }
        if (r == -ECONNRESET || r == -EPIPE) {
            char why[128];
            snprintf(why, sizeof(why), "the console of VM '%s' was closed (the VM stopped)",
                     vm_name);
            console_leave(c, 0, why);
        }
        if (r == -EINTR) {
            continue;
        }
        if (r < 0) {
            errno = -r;
            client_fail("protocol error: bad frame from the console of VM '%s': %m", vm_name);
        }
        if (untrusted.type == MSG_ERROR) {
            client_fail_error(vm_name, &untrusted);
        }
        if (untrusted.type != MSG_DATA || untrusted.data.stream != WIRE_STDOUT) {
            client_fail("protocol error: unexpected %s from the console",
                        msg_type_name(untrusted.type));
        }
        memcpy(c->pending, untrusted.data.data, untrusted.data.size);
        c->pending_len = untrusted.data.size;
        c->pending_off = 0;
        msg_done(&untrusted);
    }
}

static void console_read_stdin(Console *c) {
    uint8_t buf[WIRE_DATA_MAX];
    ssize_t n = read(STDIN_FILENO, buf, c->tty ? TTY_READ_MAX : sizeof(buf));

    if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
        return;
    }
    if (n <= 0) {
        if (c->tty) {
            /* A terminal that hung up: nobody to show anything to. */
            console_leave(c, 0, NULL);
        }
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        c->stdin_done = true;
        c->drain_end = now + DRAIN_MAX_MS * 1000ULL;
        c->quiet_end = now + QUIET_MS * 1000ULL;
        return;
    }
    ssize_t esc = c->tty ? vmshell_find_escape(buf, (size_t)n) : -1;
    size_t send = esc >= 0 ? (size_t)esc : (size_t)n;
    if (send > 0) {
        Msg m = {.type = MSG_DATA, .data = {.stream = WIRE_STDIN, .data = buf, .size = send}};
        client_queue(&c->out, &m);
    }
    if (esc >= 0) {
        char why[128];
        /* What was typed before Ctrl-] goes out first. */
        client_flush_bounded(&c->out, c->sock, LEAVE_FLUSH_MS);
        snprintf(why, sizeof(why), "left the console of VM '%s'", vm_name);
        console_leave(c, 0, why);
    }
}

static void console_signals(Console *c) {
    uint8_t buf[64];
    ssize_t n;
    while ((n = client_signals_read(buf, sizeof(buf))) > 0) {
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] != SIGWINCH) {
                console_leave(c, 128 + buf[i], NULL);
            }
            Msg m = {.type = MSG_RESIZE};
            if (c->tty && client_window_size(&m.resize.rows, &m.resize.cols)) {
                client_queue(&c->out, &m);
            }
        }
    }
}

_noreturn_ static void console_run(Console *c) {
    for (;;) {
        struct pollfd pf[4];
        nfds_t n = 0;
        int i_in = -1, timeout = -1;
        uint64_t now;

        /* Output waiting for stdout: stdout instead of the console. */
        pf[n++] = (struct pollfd){
            .fd = c->sock,
            .events = (c->pending_len ? 0 : POLLIN) | (wire_writer_pending(&c->out) ? POLLOUT : 0),
        };
        pf[n++] = (struct pollfd){.fd = client_signal_fd(), .events = POLLIN};
        pf[n++] = (struct pollfd){.fd = c->pending_len ? STDOUT_FILENO : -1, .events = POLLOUT};
        if (!c->stdin_done && wire_writer_pending(&c->out) < OUT_HIGH) {
            i_in = (int)n;
            pf[n++] = (struct pollfd){.fd = STDIN_FILENO, .events = POLLIN};
        }
        if (c->stdin_done) {
            /* Quiet with everything sent, or out of time in any case (a
             * console that does not take our input does not keep us). */
            bool pending = wire_writer_pending(&c->out) > 0;
            now = now_usec(CLOCK_MONOTONIC);
            if ((now >= c->quiet_end && !pending) || now >= c->drain_end) {
                console_leave(c, 0, NULL);
            }
            uint64_t end = pending ? c->drain_end : MIN(c->drain_end, c->quiet_end);
            timeout = now >= end ? 0 : (int)((end - now + 999) / 1000);
        }
        if (poll(pf, n, timeout) < 0) {
            if (errno == EINTR) {
                continue;
            }
            client_fail("poll() failed: %m");
        }
        if (pf[1].revents) {
            console_signals(c);
        }
        if (i_in >= 0 && pf[i_in].revents) {
            if (pf[i_in].revents & POLLNVAL) {
                c->stdin_done = true;
                c->drain_end = c->quiet_end = now_usec(CLOCK_MONOTONIC);
            } else {
                console_read_stdin(c);
            }
        }
        if (wire_writer_pending(&c->out)) {
            client_flush(&c->out, c->sock, "the console", vm_name);
        }
        if (c->pending_len && pf[2].revents) {
            console_write_pending(c);
        }
        if (!c->pending_len && (pf[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            console_read_socket(c);
        }
    }
}

int main(int argc, char **argv) {
    VmShellOptions opts;
    ErrorText err;
    _cleanup_free_ char *path = NULL;
    uint16_t rows = 0, cols = 0;

    client_setup("vm-shell", CLIENT_EXIT_OWN_ERROR);
    if (vmshell_parse_args(argc, argv, &opts, &err) < 0) {
        client_fail("%s", err.message);
    }
    if (opts.help) {
        fputs(vmshell_usage, stdout);
        return 0;
    }
    vm_name = opts.vm;
    if (opts.ssh) {
        return run_ssh(&opts);
    }
    /* Broken connections are errors we report, not signals. */
    signal(SIGPIPE, SIG_IGN);
    path = config_vm_runtime_file(opts.vm, CONFIG_RUNTIME_CONSOLE);
    if (!path || !client_vm_known(opts.vm, path)) {
        client_fail_unknown_vm(opts.vm);
    }

    Console c = {.tty = isatty(STDIN_FILENO) == 1, .pending = malloc(WIRE_DATA_MAX)};
    if (!c.pending) {
        client_fail("out of memory");
    }
    if (c.tty) {
        client_window_size(&rows, &cols);
    }
    c.sock = console_connect(path, rows, cols);
    int r = fd_nonblock(c.sock, true);
    if (r < 0) {
        errno = -r;
        client_fail("cannot set up the console connection: %m");
    }
    client_signals_setup();
    if (c.tty) {
        client_warn("attached to the console of VM '%s'; Ctrl-] leaves", vm_name);
        atexit(client_terminal_restore);
        client_terminal_raw();
    }
    console_run(&c);
}
