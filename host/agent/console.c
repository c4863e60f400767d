/* The serial console relay, its clients on the connection engine: see
 * console.h. */
#include "console.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include "acceptor.h"
#include "addr.h"
#include "conn.h"
#include "log.h"
#include "util.h"
#include "wire.h"

#define SOFTWARE "qubes-lite-host-agent 0.1 console"
#define CONSOLE_HANDSHAKE_USEC (30 * 1000000ULL)
#define PTY_READ_CHUNK 4096u

typedef struct ConsoleClient ConsoleClient;

/* A client's states on its connection (conn.h). */
enum {
    CC_HELLO = CONN_STATE_HELLO,
    CC_REQUEST = 1u << 1,  /* waiting for ConsoleAttach */
    CC_ATTACHED = 1u << 2, /* the interactive client */
};

struct ConsoleClient {
    Console *console;
    ConsoleClient *prev, *next;
    Conn *conn;
    uid_t uid;
    pid_t pid;
    uint64_t dropped; /* live output bytes it was too slow for */
};

struct Console {
    sd_event *event;
    char *vm_name;
    int pty;
    sd_event_source *pty_src;
    int listen_fd;
    Acceptor *acceptor;
    char *socket_path;
    struct stat socket_st; /* the file we bound, removed at the end while it is */
    uid_t allowed_uid;
    gid_t allowed_gid;
    ConsoleClient *clients;
    unsigned n_clients;
    ConsoleClient *attached;
    ConsoleAttachFn attach_cb;
    void *attach_userdata;
    ConsoleRing ring;
};

void console_ring_write(ConsoleRing *r, const uint8_t *p, size_t n) {
    if (n >= CONSOLE_SCROLLBACK) {
        memcpy(r->buf, p + n - CONSOLE_SCROLLBACK, CONSOLE_SCROLLBACK);
        r->head = 0;
        r->used = CONSOLE_SCROLLBACK;
        return;
    }
    size_t first = MIN(n, CONSOLE_SCROLLBACK - r->head);
    memcpy(r->buf + r->head, p, first);
    memcpy(r->buf, p + first, n - first);
    r->head = (r->head + n) % CONSOLE_SCROLLBACK;
    r->used = MIN(r->used + n, (size_t)CONSOLE_SCROLLBACK);
}

void console_ring_spans(const ConsoleRing *r, const uint8_t **ret_a, size_t *ret_na,
                        const uint8_t **ret_b, size_t *ret_nb) {
    if (r->used < CONSOLE_SCROLLBACK) {
        /* Not wrapped yet: everything lies before head. */
        *ret_a = r->buf + r->head - r->used;
        *ret_na = r->used;
        *ret_b = r->buf;
        *ret_nb = 0;
        return;
    }
    *ret_a = r->buf + r->head;
    *ret_na = CONSOLE_SCROLLBACK - r->head;
    *ret_b = r->buf;
    *ret_nb = r->head;
}

int console_open_pty(int *ret_master, int *ret_slave) {
    _cleanup_close_ int master = -EBADF, slave = -EBADF;
    char name[64];
    struct termios t;
    struct winsize ws = {.ws_row = 24, .ws_col = 80};

    master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC | O_NONBLOCK);
    if (master < 0) {
        return -errno;
    }
    if (grantpt(master) < 0 || unlockpt(master) < 0 || ptsname_r(master, name, sizeof(name))) {
        return -errno;
    }
    slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (slave < 0) {
        return -errno;
    }
    /* Raw: the guest's serial driver and shell do their own echo and
     * line editing, and its output must reach us byte for byte. */
    if (tcgetattr(slave, &t) < 0) {
        return -errno;
    }
    cfmakeraw(&t);
    if (tcsetattr(slave, TCSANOW, &t) < 0 || ioctl(master, TIOCSWINSZ, &ws) < 0) {
        return -errno;
    }
    *ret_master = TAKE_FD(master);
    *ret_slave = TAKE_FD(slave);
    return 0;
}

static void cc_free(ConsoleClient *cc) {
    Console *c;

    if (!cc) {
        return;
    }
    c = cc->console;
    if (c->attached == cc) {
        c->attached = NULL;
        log_info("Console of VM '%s': pid %d detached%s", c->vm_name, (int)cc->pid,
                 cc->dropped ? " (it was too slow for some output)" : "");
        if (c->attach_cb) {
            c->attach_cb(c->attach_userdata, false);
        }
    }
    if (cc->prev) {
        cc->prev->next = cc->next;
    } else {
        c->clients = cc->next;
    }
    if (cc->next) {
        cc->next->prev = cc->prev;
    }
    c->n_clients--;
    conn_free(cc->conn);
    free(cc);
}

/* Queues bytes of console output as Data(STDOUT) frames. */
static int cc_queue_output(ConsoleClient *cc, const uint8_t *p, size_t n) {
    while (n > 0) {
        size_t k = MIN(n, (size_t)WIRE_DATA_MAX);
        Msg m = {.type = MSG_DATA, .data = {.stream = WIRE_STDOUT, .data = p, .size = k}};
        int r = conn_queue(cc->conn, &m);
        if (r < 0) {
            return r;
        }
        p += k;
        n -= k;
    }
    return 0;
}

static int set_winsize(Console *c, uint16_t rows, uint16_t cols) {
    struct winsize ws = {.ws_row = rows, .ws_col = cols};
    if (rows == 0 || cols == 0) {
        return 0;
    }
    if (ioctl(c->pty, TIOCSWINSZ, &ws) < 0) {
        return log_warning_errno(-errno, "Console of VM '%s': cannot set the window size: %m",
                                 c->vm_name);
    }
    return 0;
}

static int handle_attach(void *userdata, Msg *m) {
    ConsoleClient *cc = userdata;
    Console *c = cc->console;
    char buf[160];
    const uint8_t *a, *b;
    size_t na, nb;
    int r;

    if (c->attached) {
        snprintf(buf, sizeof(buf),
                 "the console of VM '%s' is in use by another client (pid %d); "
                 "one interactive client at a time",
                 c->vm_name, (int)c->attached->pid);
        log_info("Console of VM '%s': refusing pid %d, pid %d is attached", c->vm_name,
                 (int)cc->pid, (int)c->attached->pid);
        return conn_fail(cc->conn, WIRE_ERR_UNAVAILABLE, buf);
    }
    conn_timer_disarm(cc->conn);
    (void)set_winsize(c, m->console_attach.rows, m->console_attach.cols);
    console_ring_spans(&c->ring, &a, &na, &b, &nb);
    Msg reply = {.type = MSG_CONSOLE_ATTACHED, .console_scrollback = (uint32_t)(na + nb)};
    r = conn_queue(cc->conn, &reply);
    if (r >= 0) {
        r = cc_queue_output(cc, a, na);
    }
    if (r >= 0) {
        r = cc_queue_output(cc, b, nb);
    }
    if (r < 0) {
        return r;
    }
    conn_set_state(cc->conn, CC_ATTACHED);
    c->attached = cc;
    log_info("Console of VM '%s': pid %d (uid %u) attached, %zu bytes replayed", c->vm_name,
             (int)cc->pid, (unsigned)cc->uid, na + nb);
    if (c->attach_cb) {
        c->attach_cb(c->attach_userdata, true);
    }
    return 0;
}

static int handle_input(void *userdata, Msg *m) {
    ConsoleClient *cc = userdata;
    Console *c = cc->console;
    if (m->data.stream != WIRE_STDIN) {
        return conn_fail(cc->conn, WIRE_ERR_PROTOCOL, "console input must be Data(stdin)");
    }
    /* Keystrokes are small and the pty takes kilobytes: what it does not
     * take now is dropped rather than held, as a serial line would. */
    ssize_t k = write(c->pty, m->data.data, m->data.size);
    if (k < 0 && errno != EAGAIN && errno != EINTR && errno != EIO) {
        log_warning_errno(-errno, "Console of VM '%s': cannot write input: %m", c->vm_name);
    } else if (k >= 0 && (size_t)k < m->data.size) {
        log_debug("Console of VM '%s': dropped %zu input bytes", c->vm_name,
                  m->data.size - (size_t)k);
    }
    return 0;
}

static int handle_resize(void *userdata, Msg *m) {
    ConsoleClient *cc = userdata;
    (void)set_winsize(cc->console, m->resize.rows, m->resize.cols);
    return 0;
}

/* What a client may send, and when (its Hello is the engine's); anything
 * else is answered with Error(PROTOCOL). */
static const ConnHandler cc_handlers[] = {
    {MSG_CONSOLE_ATTACH, CC_REQUEST, handle_attach},
    {MSG_DATA, CC_ATTACHED, handle_input},
    {MSG_RESIZE, CC_ATTACHED, handle_resize},
};

static void on_cc_closed(void *userdata, int error) {
    cc_free(userdata);
}

static const ConnOps cc_ops = {
    .handlers = cc_handlers,
    .n_handlers = ELEMENTSOF(cc_handlers),
    .closed = on_cc_closed,
};

static int on_cc_timeout(void *userdata) {
    ConsoleClient *cc = userdata;
    log_info("Console client pid %d did not attach in time, dropping it", (int)cc->pid);
    return -ETIMEDOUT;
}

/* Output of the VMM: into the scrollback, and to the attached client
 * unless it is too far behind. */
static void console_output(Console *c, const uint8_t *p, size_t n) {
    ConsoleClient *cc = c->attached;

    console_ring_write(&c->ring, p, n);
    if (!cc) {
        return;
    }
    if (!conn_is_open(cc->conn)) {
        return; /* an Error was its last word */
    }
    if (conn_pending(cc->conn) + n > CONSOLE_CLIENT_QUEUE_MAX) {
        if (cc->dropped == 0) {
            log_info("Console of VM '%s': pid %d does not keep up, dropping its output", c->vm_name,
                     (int)cc->pid);
        }
        cc->dropped += n;
        return;
    }
    conn_settle(cc->conn, cc_queue_output(cc, p, n)); /* may free cc */
}

/* 1 when bytes were read, 0 when the pty has nothing now, <0 when it is
 * closed for good (-EIO: no VMM holds the other end any more). */
static int console_read_once(Console *c) {
    uint8_t buf[PTY_READ_CHUNK];
    ssize_t k = read(c->pty, buf, sizeof(buf));
    if (k < 0) {
        if (errno == EAGAIN || errno == EINTR) {
            return 0;
        }
        return -errno;
    }
    if (k == 0) {
        return -EIO;
    }
    console_output(c, buf, (size_t)k);
    return 1;
}

static int on_pty_io(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
    Console *c = userdata;
    int r = 0;

    /* A bounded batch per wake-up, so that clients get their turn. */
    for (int i = 0; i < 16; i++) {
        r = console_read_once(c);
        if (r <= 0) {
            break;
        }
    }
    if (r < 0) {
        /* The VMM closed its end; its exit is noticed elsewhere. */
        sd_event_source_set_enabled(c->pty_src, SD_EVENT_OFF);
    }
    return 0;
}

void console_drain(Console *c) {
    /* Bounded: a VMM child still writing cannot keep us here. */
    for (size_t got = 0; got < 4 * CONSOLE_SCROLLBACK; got += PTY_READ_CHUNK) {
        if (console_read_once(c) <= 0) {
            break;
        }
    }
    if (c->attached) {
        (void)conn_flush(c->attached->conn);
    }
}

static bool console_peer_allowed(const Console *c, uid_t uid) {
    return uid == 0 || uid == geteuid() || (c->allowed_uid != (uid_t)-1 && uid == c->allowed_uid);
}

static void console_accept_one(Console *c, int fd) {
    uid_t uid;
    pid_t pid;
    char buf[160];
    int r;

    r = peer_ucred(fd, &uid, NULL, &pid);
    if (r < 0) {
        log_warning_errno(r, "Cannot identify a console client, closing it: %m");
        safe_close(fd);
        return;
    }
    if (!console_peer_allowed(c, uid) || c->n_clients >= CONSOLE_CLIENTS_MAX) {
        bool denied = !console_peer_allowed(c, uid);
        if (denied) {
            snprintf(buf, sizeof(buf), "uid %u may not use the console of VM '%s'", (unsigned)uid,
                     c->vm_name);
        } else {
            snprintf(buf, sizeof(buf), "too many console clients of VM '%s'", c->vm_name);
        }
        log_warning("Console of VM '%s': refusing pid %d (uid %u): %s", c->vm_name, (int)pid,
                    (unsigned)uid, buf);
        conn_refuse_fd(fd, denied ? WIRE_ERR_DENIED : WIRE_ERR_UNAVAILABLE, buf);
        return;
    }
    ConsoleClient *cc = calloc(1, sizeof(*cc));
    if (!cc) {
        safe_close(fd);
        return;
    }
    cc->console = c;
    cc->uid = uid;
    cc->pid = pid;
    cc->next = c->clients;
    if (c->clients) {
        c->clients->prev = cc;
    }
    c->clients = cc;
    c->n_clients++;
    ConnOptions o = {
        .role = CONN_SERVER,
        .software = SOFTWARE,
        .after_hello = CC_REQUEST,
        .out_max = CONSOLE_CLIENT_QUEUE_MAX,
        .close_mode = CONN_CLOSE_FLUSHED,
        .linger_usec = CONSOLE_HANDSHAKE_USEC,
    };
    r = conn_new(c->event, fd, &o, &cc_ops, cc, &cc->conn);
    if (r >= 0) {
        r = conn_timer_arm(cc->conn, CONSOLE_HANDSHAKE_USEC, on_cc_timeout);
    }
    if (r < 0) {
        log_error_errno(r, "Cannot set up a console client: %m");
        cc_free(cc);
    }
}

static void on_accept(void *userdata, int fd) {
    Console *c = userdata;
    if (fd >= 0) {
        console_accept_one(c, fd);
    } else if (fd != -ECONNABORTED) {
        log_warning_errno(fd, "Console of VM '%s': cannot accept a client%s: %m", c->vm_name,
                          acceptor_paused(c->acceptor) ? ", pausing" : "");
    }
}

static int console_listen(Console *c, const char *path) {
    char buf[ADDR_STR_MAX];
    Addr addr;
    int r;

    snprintf(buf, sizeof(buf), "unix:%s", path);
    r = addr_parse(buf, &addr);
    if (r < 0) {
        return r;
    }
    /* Born 0600, like the command socket. */
    mode_t old = umask(0177);
    r = addr_listen(&addr, &c->listen_fd);
    umask(old);
    if (r < 0) {
        return r;
    }
    if (lstat(path, &c->socket_st) < 0) {
        return -errno;
    }
    c->socket_path = strdup(path);
    if (!c->socket_path) {
        return -ENOMEM;
    }
    if (c->allowed_uid != (uid_t)-1 && c->allowed_uid != geteuid()) {
        /* The user's vm-shell connects as the user; not through a symlink
         * put in the socket's place. */
        if (fchownat(AT_FDCWD, path, c->allowed_uid, c->allowed_gid, AT_SYMLINK_NOFOLLOW) < 0) {
            if (errno != EPERM || geteuid() == 0) {
                return -errno;
            }
            log_warning("Not root: %s stays owned by uid %u", path, (unsigned)geteuid());
        }
    }
    return acceptor_new(c->event, c->listen_fd, on_accept, c, &c->acceptor);
}

int console_new(sd_event *e, const char *vm_name, int pty_master, const char *socket_path,
                uid_t allowed_uid, gid_t allowed_gid, Console **ret) {
    Console *c = calloc(1, sizeof(*c));
    int r;

    if (!c) {
        safe_close(pty_master);
        return -ENOMEM;
    }
    c->event = sd_event_ref(e);
    c->pty = pty_master;
    c->listen_fd = -EBADF;
    c->allowed_uid = allowed_uid;
    c->allowed_gid = allowed_gid;
    c->vm_name = strdup(vm_name);
    if (!c->vm_name) {
        console_free(c);
        return -ENOMEM;
    }
    r = sd_event_add_io(e, &c->pty_src, c->pty, EPOLLIN, on_pty_io, c);
    if (r >= 0 && socket_path) {
        r = console_listen(c, socket_path);
    }
    if (r < 0) {
        console_free(c);
        return r;
    }
    *ret = c;
    return 0;
}

void console_set_attach_cb(Console *c, ConsoleAttachFn fn, void *userdata) {
    c->attach_cb = fn;
    c->attach_userdata = userdata;
}

void console_free(Console *c) {
    if (!c) {
        return;
    }
    while (c->clients) {
        cc_free(c->clients);
    }
    acceptor_free(c->acceptor);
    sd_event_source_disable_unref(c->pty_src);
    if (c->socket_path) {
        (void)addr_unix_unlink_bound(c->socket_path, &c->socket_st);
        free(c->socket_path);
    }
    safe_close(c->listen_fd);
    safe_close(c->pty);
    free(c->vm_name);
    sd_event_unref(c->event);
    free(c);
}
