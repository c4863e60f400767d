/* Transport addresses: parsing, listening, connecting, peer identity. */
#include "addr.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
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

int addr_parse(const char *s, Addr *ret) {
    Addr a = {0};

    if (startswith(s, "unix:")) {
        const char *path = s + 5;
        size_t n = strlen(path);
        if (n == 0 || n >= sizeof(a.un.sun_path)) {
            return -EINVAL;
        }
        a.family = AF_UNIX;
        a.un.sun_family = AF_UNIX;
        memcpy(a.un.sun_path, path, n);
        a.len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
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
    if (a->family == AF_UNIX) {
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
    *ret_fd = TAKE_FD(fd);
    return 0;
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
