/* Transport addresses: parsing, listening, connecting, peer identity. */
#include "addr.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "util.h"

static int parse_u32(const char *s, size_t len, uint32_t *ret) {
    char buf[16];
    unsigned long long v;
    if (len == 0 || len >= sizeof(buf)) {
        return -EINVAL;
    }
    memcpy(buf, s, len);
    buf[len] = '\0';
    int r = parse_uint(buf, 0, UINT32_MAX, &v);
    if (r < 0) {
        return -EINVAL;
    }
    *ret = (uint32_t)v;
    return 0;
}

/* A unix socket address for the n bytes at path. */
static int unix_addr(const char *path, size_t n, Addr *a) {
    if (n == 0 || n >= sizeof(a->un.sun_path) || memchr(path, '\0', n)) {
        return -EINVAL;
    }
    a->family = AF_UNIX;
    a->un.sun_family = AF_UNIX;
    memcpy(a->un.sun_path, path, n);
    a->un.sun_path[n] = '\0';
    a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return 0;
}

int addr_parse(const char *s, Addr *ret) {
    Addr a = {0};

    if (startswith(s, "unix:")) {
        if (unix_addr(s + 5, strlen(s + 5), &a) < 0) {
            return -EINVAL;
        }
    } else if (startswith(s, "hvsock:")) {
        /* The port follows the last colon: the path may hold colons. */
        const char *path = s + 7;
        const char *colon = strrchr(path, ':');
        uint32_t port;
        if (!colon || unix_addr(path, (size_t)(colon - path), &a) < 0) {
            return -EINVAL;
        }
        if (parse_u32(colon + 1, strlen(colon + 1), &port) < 0 || port == VMADDR_PORT_ANY) {
            return -EINVAL;
        }
        a.hvsock = true;
        a.hvsock_port = port;
    } else if (startswith(s, "vsock:")) {
        const char *p = s + 6;
        const char *colon = strchr(p, ':');
        uint32_t cid = VMADDR_CID_ANY, port;
        if (!colon) {
            return -EINVAL;
        }
        if (colon != p && parse_u32(p, (size_t)(colon - p), &cid) < 0) {
            return -EINVAL;
        }
        if (parse_u32(colon + 1, strlen(colon + 1), &port) < 0 || port == VMADDR_PORT_ANY) {
            return -EINVAL;
        }
        a.family = AF_VSOCK;
        a.vm.svm_family = AF_VSOCK;
        a.vm.svm_cid = cid;
        a.vm.svm_port = port;
        a.len = sizeof(a.vm);
    } else {
        return -EINVAL;
    }
    *ret = a;
    return 0;
}

const char *addr_format(const Addr *a, char *buf, size_t size) {
    if (a->family == AF_UNIX && a->hvsock) {
        snprintf(buf, size, "hvsock:%s:%u", a->un.sun_path, a->hvsock_port);
    } else if (a->family == AF_UNIX) {
        snprintf(buf, size, "unix:%s", a->un.sun_path);
    } else if (a->family == AF_VSOCK && a->vm.svm_cid == VMADDR_CID_ANY) {
        snprintf(buf, size, "vsock::%u", a->vm.svm_port);
    } else if (a->family == AF_VSOCK) {
        snprintf(buf, size, "vsock:%u:%u", a->vm.svm_cid, a->vm.svm_port);
    } else {
        snprintf(buf, size, "?");
    }
    return buf;
}

/* A socket file at path: 0 when it is stale (nobody listens: connect()
 * is refused) or gone, -EADDRINUSE when somebody listens there, -EEXIST
 * when it is not a socket. */
static int unix_path_check_stale(const struct sockaddr_un *un, socklen_t len) {
    struct stat st;

    if (lstat(un->sun_path, &st) < 0) {
        return errno == ENOENT ? 0 : -errno;
    }
    if (!S_ISSOCK(st.st_mode)) {
        return -EEXIST;
    }
    _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return -errno;
    }
    if (connect(fd, (const struct sockaddr *)un, len) == 0) {
        return -EADDRINUSE;
    }
    if (errno == ECONNREFUSED || errno == ENOENT) {
        return 0;
    }
    /* EAGAIN (a full backlog) and the like: somebody is there. */
    return errno == EAGAIN ? -EADDRINUSE : -errno;
}

int addr_listen(const Addr *a, int *ret_fd) {
    if (a->hvsock) {
        /* A VM's port is reached through its device, never listened on. */
        return -EAFNOSUPPORT;
    }
    _cleanup_close_ int fd = socket(a->family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    int r;

    if (fd < 0) {
        return -errno;
    }
    if (a->family == AF_UNIX) {
        /* Replace a stale socket left by a previous run, never one that
         * is in use nor a file of another kind. */
        r = unix_path_check_stale(&a->un, a->len);
        if (r < 0) {
            return r;
        }
        if (unlink(a->un.sun_path) < 0 && errno != ENOENT) {
            return -errno;
        }
    }
    if (bind(fd, &a->sa, a->len) < 0) {
        return -errno;
    }
    if (listen(fd, SOMAXCONN) < 0) {
        return -errno;
    }
    *ret_fd = TAKE_FD(fd);
    return 0;
}

int addr_unix_unlink_bound(const char *path, const struct stat *bound) {
    struct stat st;

    if (lstat(path, &st) < 0) {
        return -errno;
    }
    if (st.st_dev != bound->st_dev || st.st_ino != bound->st_ino) {
        return -ESTALE;
    }
    if (unlink(path) < 0) {
        return -errno;
    }
    return 0;
}

int addr_unix_remove_stale(const char *path) {
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    size_t n = strlen(path);

    if (n >= sizeof(un.sun_path)) {
        return -ENAMETOOLONG;
    }
    memcpy(un.sun_path, path, n + 1);
    int r = unix_path_check_stale(&un, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1));
    if (r < 0) {
        return r;
    }
    if (unlink(path) < 0 && errno != ENOENT) {
        return -errno;
    }
    return 0;
}

static int bind_reserved_vsock(int fd) {
    /* Only a privileged process can bind these ports, which is what lets
     * the guest agent tell the host agent from anyone else. */
    for (uint32_t port = VSOCK_RESERVED_PORT_MAX; port >= VSOCK_RESERVED_PORT_MIN; port--) {
        struct sockaddr_vm vm = {
            .svm_family = AF_VSOCK,
            .svm_cid = VMADDR_CID_ANY,
            .svm_port = port,
        };
        if (bind(fd, (struct sockaddr *)&vm, sizeof(vm)) == 0) {
            return 0;
        }
        if (errno != EADDRINUSE) {
            return -errno;
        }
    }
    return -EADDRINUSE;
}

int hvsock_line_parse(const char *untrusted, size_t n, const char *word, uint32_t *ret_port) {
    size_t wlen = strlen(word);
    size_t i;
    uint64_t port = 0;

    /* Byte by byte as far as the input goes, so that a prefix of a valid
     * line asks for more and anything else is refused at once. */
    for (i = 0; i < wlen; i++) {
        if (i == n) {
            return 0;
        }
        if (untrusted[i] != word[i]) {
            return -EPROTO;
        }
    }
    if (i == n) {
        return 0;
    }
    if (untrusted[i++] != ' ') {
        return -EPROTO;
    }
    size_t digits = 0;
    for (;; i++) {
        if (i == n) {
            return i < HVSOCK_LINE_MAX ? 0 : -EPROTO;
        }
        char c = untrusted[i];
        if (c == '\n') {
            break;
        }
        if (c < '0' || c > '9' || (digits == 1 && port == 0)) {
            return -EPROTO; /* not a digit, or a leading zero */
        }
        port = port * 10 + (uint64_t)(c - '0');
        if (++digits > 10 || port >= VMADDR_PORT_ANY) {
            return -EPROTO;
        }
    }
    if (digits == 0 || i + 1 > HVSOCK_LINE_MAX) {
        return -EPROTO;
    }
    *ret_port = (uint32_t)port;
    return (int)(i + 1);
}

int hvsock_line_format(char *buf, size_t size, const char *word, uint32_t port) {
    int k = snprintf(buf, size, "%s %u\n", word, port);
    if (k < 0 || (size_t)k >= size || k > HVSOCK_LINE_MAX) {
        return -ENOBUFS;
    }
    return k;
}

/* The device's reply to CONNECT, consumed from fd and nothing after it
 * (the guest's first bytes may follow in the same read). The device
 * writes it with one send(), so it arrives whole: a part of it is a
 * protocol error rather than something to wait for. 0, -EAGAIN when
 * nothing came yet, -ECONNRESET when the device closed, -EPROTO. */
static int hvsock_read_ok(int fd) {
    char buf[HVSOCK_LINE_MAX];
    uint32_t port;
    ssize_t k;

    do {
        k = recv(fd, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);
    } while (k < 0 && errno == EINTR);
    if (k < 0) {
        return errno == EAGAIN ? -EAGAIN : -errno;
    }
    if (k == 0) {
        return -ECONNRESET;
    }
    int len = hvsock_line_parse(buf, (size_t)k, "OK", &port);
    if (len <= 0) {
        return -EPROTO;
    }
    do {
        k = recv(fd, buf, (size_t)len, MSG_DONTWAIT);
    } while (k < 0 && errno == EINTR);
    if (k < 0) {
        return -errno;
    }
    return k == len ? 0 : -EPROTO;
}

/* Sends the CONNECT line on a fresh socket: its empty buffer takes it
 * whole, blocking or not. */
static int hvsock_send_connect(int fd, uint32_t port) {
    char line[HVSOCK_LINE_MAX];
    int n = hvsock_line_format(line, sizeof(line), "CONNECT", port);
    if (n < 0) {
        return n;
    }
    ssize_t k;
    do {
        k = send(fd, line, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
    } while (k < 0 && errno == EINTR);
    if (k < 0) {
        return errno == EPIPE ? -ECONNRESET : -errno;
    }
    return k == n ? 0 : -EIO;
}

int addr_connect(const Addr *a, int flags, int *ret_fd) {
    int type = SOCK_STREAM | SOCK_CLOEXEC | ((flags & ADDR_NONBLOCK) ? SOCK_NONBLOCK : 0);
    _cleanup_close_ int fd = socket(a->family, type, 0);
    int r;

    if (fd < 0) {
        return -errno;
    }
    if (a->family == AF_VSOCK && (flags & ADDR_RESERVED_PORT)) {
        r = bind_reserved_vsock(fd);
        if (r < 0) {
            return r;
        }
    }
    if (connect(fd, &a->sa, a->len) < 0) {
        r = -errno;
        if (r == -EINPROGRESS && (flags & ADDR_NONBLOCK)) {
            *ret_fd = TAKE_FD(fd);
        }
        return r;
    }
    if (a->hvsock) {
        r = hvsock_send_connect(fd, a->hvsock_port);
        if (r < 0) {
            return r;
        }
        if (flags & ADDR_NONBLOCK) {
            *ret_fd = TAKE_FD(fd);
            return -EINPROGRESS;
        }
        for (;;) {
            struct pollfd p = {.fd = fd, .events = POLLIN};
            if (poll(&p, 1, -1) < 0) {
                if (errno == EINTR) {
                    continue;
                }
                return -errno;
            }
            r = hvsock_read_ok(fd);
            if (r != -EAGAIN) {
                break;
            }
        }
        if (r < 0) {
            return r;
        }
    }
    *ret_fd = TAKE_FD(fd);
    return 0;
}

int addr_connect_finish(const Addr *a, int fd, uint32_t *ret_events) {
    int err = 0;
    socklen_t len = sizeof(err);

    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) {
        return -errno;
    }
    if (err != 0) {
        return -err;
    }
    if (!a->hvsock) {
        return 0;
    }
    int r = hvsock_read_ok(fd);
    if (r == -EAGAIN) {
        *ret_events = EPOLLIN;
        return -EINPROGRESS;
    }
    return r;
}

int addr_listen_fd_from_systemd(int *ret_fd) {
    int n = sd_listen_fds(true);
    if (n < 0) {
        return n;
    }
    if (n == 0) {
        return -ENOENT;
    }
    if (n > 1) {
        /* One socket per agent: more is a unit file mistake. */
        return -E2BIG;
    }
    int fd = SD_LISTEN_FDS_START;
    if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0) {
        return -ENOTSOCK;
    }
    int r = fd_cloexec(fd, true);
    if (r < 0) {
        return r;
    }
    r = fd_nonblock(fd, true);
    if (r < 0) {
        return r;
    }
    *ret_fd = fd;
    return 0;
}

int peer_ucred(int fd, uid_t *ret_uid, gid_t *ret_gid, pid_t *ret_pid) {
    struct ucred uc;
    socklen_t len = sizeof(uc);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0) {
        return -errno;
    }
    if (len != sizeof(uc)) {
        return -EIO;
    }
    if (ret_uid) {
        *ret_uid = uc.uid;
    }
    if (ret_gid) {
        *ret_gid = uc.gid;
    }
    if (ret_pid) {
        *ret_pid = uc.pid;
    }
    return 0;
}

int peer_vsock(int fd, uint32_t *ret_cid, uint32_t *ret_port) {
    struct sockaddr_vm vm;
    socklen_t len = sizeof(vm);
    if (getpeername(fd, (struct sockaddr *)&vm, &len) < 0) {
        return -errno;
    }
    if (len < sizeof(vm) || vm.svm_family != AF_VSOCK) {
        return -EAFNOSUPPORT;
    }
    *ret_cid = vm.svm_cid;
    *ret_port = vm.svm_port;
    return 0;
}

int socket_family(int fd) {
    int family;
    socklen_t len = sizeof(family);
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &family, &len) < 0) {
        return -errno;
    }
    return family;
}
