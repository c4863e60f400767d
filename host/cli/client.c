/* Shared by the vm-* commands: see client.h. */
#include "client.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include "host/common/opts.h"
#include "host/common/paths.h"
#include "rules.h"
#include "util.h"

static struct termios saved_termios;
static bool termios_saved;
static const char *program = "vm";
static int failure_status = EXIT_FAILURE;

void client_setup(const char *name, int status) {
    program = name;
    failure_status = status;
    /* Started with stdin, stdout or stderr closed, our own sockets would
     * land there and be taken for them: /dev/null holds the place (open()
     * takes the lowest free fd, and those below are taken by now). */
    for (int fd = 0; fd < 3; fd++) {
        if (fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
            (void)open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
        }
    }
}

static void vwarn(const char *fmt, va_list ap) {
    fprintf(stderr, "%s: ", program);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void client_fail(const char *fmt, ...) {
    va_list ap;
    client_terminal_restore();
    va_start(ap, fmt);
    vwarn(fmt, ap);
    va_end(ap);
    exit(failure_status);
}

void client_warn(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vwarn(fmt, ap);
    va_end(ap);
}

void client_bad_option(int c, char **argv) {
    ErrorText err;
    opts_error(&err, c, argv);
    client_fail("%s", err.message);
}

void client_fail_unknown_vm(const char *vm) {
    char name[64];
    str_sanitize(vm, strlen(vm), name, sizeof(name));
    if (!vm_name_valid(vm)) {
        client_fail("no VM named '%s' (a VM name is [a-z][a-z0-9-], at most %u characters)", name,
                    VM_NAME_MAX);
    }
    client_fail("no VM named '%s' (no %s/vms/%s.json)", name, config_dir(), name);
}

const char *client_program(void) {
    return program;
}

const char *client_peer_message(const Msg *untrusted, char buf[static CLIENT_PEER_TEXT_MAX]) {
    return str_sanitize(untrusted->error.message, strlen(untrusted->error.message), buf,
                        CLIENT_PEER_TEXT_MAX);
}

void client_error_text(const char *vm, const Msg *untrusted, char *buf, size_t size) {
    char text[CLIENT_PEER_TEXT_MAX];
    snprintf(buf, size, "VM '%s': %s (%s)", vm, client_peer_message(untrusted, text),
             client_error_name(untrusted->error.code));
}

void client_fail_error(const char *vm, const Msg *untrusted) {
    char buf[CLIENT_PEER_TEXT_MAX + 128];
    client_error_text(vm, untrusted, buf, sizeof(buf));
    client_fail("%s", buf);
}

int client_unix_connect(const char *path, int *ret_fd) {
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    _cleanup_close_ int fd = -EBADF;

    if (n >= sizeof(un.sun_path)) {
        return -ENAMETOOLONG;
    }
    memcpy(un.sun_path, path, n);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    while (connect(fd, (struct sockaddr *)&un,
                   (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1)) < 0) {
        if (errno != EINTR) {
            return -errno;
        }
    }
    *ret_fd = TAKE_FD(fd);
    return 0;
}

int client_send_pair(int fd, const Msg *a, const Msg *b) {
    WireWriter w = {0};
    int r = wire_writer_queue(&w, a);
    if (r >= 0) {
        r = wire_writer_queue(&w, b);
    }
    while (r >= 0 && (r = wire_writer_flush(&w, fd)) == 1) {
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        (void)poll(&p, 1, -1);
    }
    wire_writer_done(&w);
    return r;
}

void client_queue(WireWriter *w, const Msg *m) {
    int r = wire_writer_queue(w, m);
    if (r < 0) {
        errno = -r;
        client_fail("cannot queue %s: %m", msg_type_name(m->type));
    }
}

void client_flush(WireWriter *w, int fd, const char *peer, const char *vm) {
    int r = wire_writer_flush(w, fd);
    if (r < 0 && r != -EPIPE && r != -ECONNRESET) {
        errno = -r;
        client_fail("cannot write to %s of VM '%s': %m", peer, vm);
    }
    /* A closed connection shows up on the reading side, with any Error
     * the peer sent before closing. */
    if (r < 0) {
        wire_writer_done(w);
    }
}

void client_flush_bounded(WireWriter *w, int fd, int timeout_ms) {
    uint64_t deadline = now_usec(CLOCK_MONOTONIC) + (uint64_t)timeout_ms * 1000ULL;
    while (wire_writer_pending(w)) {
        int r = wire_writer_flush(w, fd);
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        if (r <= 0 || now >= deadline) {
            return;
        }
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        (void)poll(&p, 1, (int)((deadline - now) / 1000) + 1);
    }
}

static int wait_readable(int fd, int timeout_ms) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int r;
    do {
        r = poll(&p, 1, timeout_ms);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        return -errno;
    }
    return r == 0 ? -ETIMEDOUT : 0;
}

int client_wait_readable(int fd, int timeout_ms, const char *notice, int notice_ms) {
    if (notice) {
        int r = wait_readable(fd, timeout_ms >= 0 ? MIN(notice_ms, timeout_ms) : notice_ms);
        if (r != -ETIMEDOUT) {
            return r;
        }
        client_warn("%s", notice);
        if (timeout_ms >= 0) {
            timeout_ms = timeout_ms > notice_ms ? timeout_ms - notice_ms : 0;
        }
    }
    return wait_readable(fd, timeout_ms);
}

int client_hello(int fd, const char *software, const Msg *request, int timeout_ms,
                 ClientHelloFailure *ret_failure, Msg *ret_untrusted_reply) {
    Msg hello = msg_hello(software);
    Msg untrusted;
    int r;

    r = request ? client_send_pair(fd, &hello, request) : wire_send(fd, &hello);
    if (r < 0 && r != -EPIPE && r != -ECONNRESET) {
        *ret_failure = CLIENT_HELLO_SEND;
        return r;
    }
    r = wait_readable(fd, timeout_ms);
    if (r == -ETIMEDOUT) {
        *ret_failure = CLIENT_HELLO_TIMEOUT;
        return r;
    }
    if (r >= 0) {
        r = wire_recv(fd, &untrusted, NULL);
    }
    if (r < 0) {
        *ret_failure = CLIENT_HELLO_RECV;
        return r;
    }
    if (untrusted.type == MSG_HELLO && wire_check_hello(&untrusted) == 0) {
        msg_done(&untrusted);
        return 0;
    }
    *ret_failure = untrusted.type == MSG_ERROR   ? CLIENT_HELLO_ERROR
                   : untrusted.type != MSG_HELLO ? CLIENT_HELLO_NOT_HELLO
                                                 : CLIENT_HELLO_VERSION;
    *ret_untrusted_reply = untrusted;
    return -EPROTO;
}

bool client_vm_configured(const char *vm) {
    struct stat st;
    _cleanup_free_ char *cfg = NULL;

    if (!vm_name_valid(vm)) {
        return false;
    }
    if (!(cfg = config_vm_file(config_dir(), vm))) {
        return false;
    }
    return stat(cfg, &st) == 0 && S_ISREG(st.st_mode);
}

void client_unreachable_text(const char *vm, const char *path, int r, char *buf, size_t size) {
    if (r == -ENOENT || r == -ECONNREFUSED) {
        /* The socket unit is not active (or the agent run by hand is
         * gone): say what starts it. */
        snprintf(buf, size,
                 "cannot reach the host agent of VM '%s' at %s: nothing listens there (%s); "
                 "start its socket unit (systemctl start qubes-lite-%s.socket) or run it with "
                 "vm-start-debug %s",
                 vm, path, strerror(-r), vm, vm);
        return;
    }
    snprintf(buf, size, "cannot reach the host agent of VM '%s' at %s: %s", vm, path,
             strerror(-r));
}

/* How long a lease waits for Connected before it says it waits for the VM. */
#define LEASE_NOTICE_MS 1000
/* Connected brings the Exec's connection and, when asked for, a stream
 * connection. */
#define CONNECTED_FDS_MAX 2

/* Fails with one line telling the host agent's Error. */
_noreturn_ static void host_error(const char *vm, const Msg *untrusted) {
    char text[CLIENT_PEER_TEXT_MAX];
    if (untrusted->error.code == WIRE_ERR_DENIED) {
        client_fail("the host agent of VM '%s' denied access: %s (DENIED)", vm,
                    client_peer_message(untrusted, text));
    }
    client_fail_error(vm, untrusted);
}

/* Hello and Connect go out together, and the host agent's Hello must
 * come back; fails with one line otherwise. */
static void host_hello(int fd, const char *vm, const char *software, unsigned streams) {
    Msg connect = {.type = MSG_CONNECT, .connect = {.streams = streams}};
    ClientHelloFailure failure;
    Msg untrusted;
    int r = client_hello(fd, software, &connect, -1, &failure, &untrusted);

    if (r >= 0) {
        return;
    }
    errno = -r;
    switch (failure) {
    case CLIENT_HELLO_SEND:
        client_fail("cannot write to the host agent of VM '%s': %m", vm);
    case CLIENT_HELLO_TIMEOUT:
    case CLIENT_HELLO_RECV:
        client_fail("the host agent of VM '%s' closed the connection: %m", vm);
    case CLIENT_HELLO_ERROR:
        host_error(vm, &untrusted);
    case CLIENT_HELLO_NOT_HELLO:
        client_fail("protocol error: the host agent sent %s instead of Hello",
                    msg_type_name(untrusted.type));
    case CLIENT_HELLO_VERSION:
        client_fail("the host agent speaks protocol version %u, %s %u", untrusted.hello.major,
                    client_program(), WIRE_VERSION_MAJOR);
    }
    client_fail("the host agent of VM '%s' closed the connection: %m", vm);
}

void client_lease(int fd, const char *vm, const char *software, unsigned streams,
                  ClientConnected *ret) {
    int fds[CONNECTED_FDS_MAX] = {-EBADF, -EBADF};
    char notice[128];
    size_t n_fds = 0;
    Msg untrusted;
    int r;

    host_hello(fd, vm, software, streams);
    snprintf(notice, sizeof(notice), "waiting for VM '%s' to start...", vm);
    (void)client_wait_readable(fd, -1, notice, LEASE_NOTICE_MS);
    r = wire_recv_fds(fd, &untrusted, fds, streams ? 2 : 1, &n_fds);
    if (r < 0) {
        errno = -r;
        client_fail("the host agent of VM '%s' closed the connection: %m", vm);
    }
    if (untrusted.type == MSG_ERROR) {
        host_error(vm, &untrusted);
    }
    if (untrusted.type != MSG_CONNECTED) {
        client_fail("protocol error: the host agent sent %s instead of Connected",
                    msg_type_name(untrusted.type));
    }
    if (n_fds == 0) {
        client_fail("protocol error: the host agent sent no connection with Connected");
    }
    *ret = (ClientConnected){
        .guest_fd = fds[0],
        .stream_fd = fds[1],
        .vm_start_us = untrusted.connected.vm_start_us,
        .guest_wait_us = untrusted.connected.guest_wait_us,
    };
    msg_done(&untrusted);
}

bool client_vm_known(const char *vm, const char *sock_path) {
    struct stat st;
    return client_vm_configured(vm) ||
           (vm_name_valid(vm) && sock_path && lstat(sock_path, &st) == 0);
}

void client_stdout_gone(void) {
    client_terminal_restore();
    signal(SIGPIPE, SIG_DFL);
    raise(SIGPIPE);
}

static int signal_pipe[2] = {-EBADF, -EBADF};
static volatile sig_atomic_t signal_seen;

static void on_signal(int signo) {
    int saved = errno;
    uint8_t b = (uint8_t)signo;
    signal_seen = 1;
    (void)!write(signal_pipe[1], &b, 1);
    errno = saved;
}

void client_signals_setup(void) {
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGWINCH};
    struct sigaction sa = {.sa_handler = on_signal};

    if (pipe2(signal_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        client_fail("cannot create a pipe: %s", strerror(errno));
    }
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < ELEMENTSOF(sigs); i++) {
        sigaction(sigs[i], &sa, NULL);
    }
}

int client_signal_fd(void) {
    return signal_pipe[0];
}

bool client_signal_seen(void) {
    return signal_seen;
}

ssize_t client_signals_read(uint8_t *buf, size_t size) {
    signal_seen = 0;
    return read(signal_pipe[0], buf, size);
}

bool client_window_size(uint16_t *ret_rows, uint16_t *ret_cols) {
    static const int fds[] = {STDIN_FILENO, STDOUT_FILENO, STDERR_FILENO};
    for (size_t i = 0; i < ELEMENTSOF(fds); i++) {
        struct winsize ws;
        if (ioctl(fds[i], TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0) {
            *ret_rows = ws.ws_row;
            *ret_cols = ws.ws_col;
            return true;
        }
    }
    *ret_rows = 0;
    *ret_cols = 0;
    return false;
}

bool client_terminal_raw(void) {
    struct termios t;
    if (termios_saved || !isatty(STDIN_FILENO) || tcgetattr(STDIN_FILENO, &saved_termios) < 0) {
        return false;
    }
    termios_saved = true;
    t = saved_termios;
    cfmakeraw(&t);
    tcsetattr(STDIN_FILENO, TCSADRAIN, &t);
    return true;
}

void client_terminal_restore(void) {
    if (termios_saved) {
        /* FLUSH: input we did not read (a terminal's answers to queries
         * the remote side sent last) must not reach the shell after us. */
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_termios);
        termios_saved = false;
    }
}

const char *client_error_name(WireError e) {
    static const char *const names[] = {
        [WIRE_ERR_UNSPECIFIED] = "UNSPECIFIED",
        [WIRE_ERR_PROTOCOL] = "PROTOCOL",
        [WIRE_ERR_VERSION] = "VERSION",
        [WIRE_ERR_TOO_LARGE] = "TOO_LARGE",
        [WIRE_ERR_DENIED] = "DENIED",
        [WIRE_ERR_INVALID] = "INVALID",
        [WIRE_ERR_UNAVAILABLE] = "UNAVAILABLE",
        [WIRE_ERR_INTERNAL] = "INTERNAL",
        [WIRE_ERR_SHUTTING_DOWN] = "SHUTTING_DOWN",
    };
    return (unsigned)e < ELEMENTSOF(names) && names[e] ? names[e] : "UNSPECIFIED";
}
