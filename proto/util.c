/* Small runtime helpers every program shares. */
#include "util.h"

#include <ctype.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>

int parse_uint(const char *s, unsigned long long min, unsigned long long max,
               unsigned long long *ret) {
    char *end;
    unsigned long long v;

    if (!s || !*s || !isdigit((unsigned char)*s)) {
        return -EINVAL;
    }
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0') {
        return -EINVAL;
    }
    if (v < min || v > max) {
        return -ERANGE;
    }
    *ret = v;
    return 0;
}

int fd_nonblock(int fd, bool nonblock) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) {
        return -errno;
    }
    int nflags = nonblock ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
    if (nflags != flags && fcntl(fd, F_SETFL, nflags) < 0) {
        return -errno;
    }
    return 0;
}

int fd_cloexec(int fd, bool cloexec) {
    int flags = fcntl(fd, F_GETFD);
    if (flags < 0) {
        return -errno;
    }
    int nflags = cloexec ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
    if (nflags != flags && fcntl(fd, F_SETFD, nflags) < 0) {
        return -errno;
    }
    return 0;
}

int loop_write(int fd, const void *buf, size_t n) {
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Where recv_exact() keeps the fds that ride on the bytes it reads. */
typedef struct FdRoom {
    int *fds;
    size_t max;
    size_t *count;
    unsigned flags;
} FdRoom;

/* The one exact-read loop: read() for plain bytes, recv_fds() when fds
 * may come along. */
static int read_exact(int fd, void *buf, size_t n, const FdRoom *room, bool *ret_eof) {
    uint8_t *p = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t k;
        if (room) {
            k = recv_fds(fd, p + got, n - got, room->fds, room->max, room->count, room->flags);
        } else {
            k = read(fd, p + got, n - got);
            if (k < 0) {
                if (errno == EINTR) {
                    continue;
                }
                k = -errno;
            }
        }
        if (k < 0) {
            return (int)k;
        }
        if (k == 0) {
            if (got == 0 && ret_eof) {
                *ret_eof = true;
                return 0;
            }
            return -EPIPE;
        }
        got += (size_t)k;
    }
    if (ret_eof) {
        *ret_eof = false;
    }
    return 0;
}

int loop_read_exact(int fd, void *buf, size_t n, bool *ret_eof) {
    return read_exact(fd, buf, n, NULL, ret_eof);
}

int recv_exact_fds(int sock, void *buf, size_t n, int *fds, size_t max, size_t *count,
                   unsigned flags, bool *ret_eof) {
    const FdRoom room = {.fds = fds, .max = max, .count = count, .flags = flags};
    return read_exact(sock, buf, n, &room, ret_eof);
}

int send_with_fd(int sock, const void *buf, size_t n, int fd) {
    if (n == 0) {
        return -EINVAL;
    }
    for (;;) {
        ssize_t k = sendmsg_fds(sock, buf, n, &fd, fd >= 0 ? 1 : 0, 0);
        if (k == -EINTR) {
            continue;
        }
        if (k < 0) {
            return (int)k;
        }
        /* The fd travels with the first byte; the rest is plain data. */
        if ((size_t)k < n) {
            return loop_write(sock, (const uint8_t *)buf + k, n - (size_t)k);
        }
        return 0;
    }
}

/* The fds the kernel may install for one call: what the caller keeps, at
 * least RECV_FDS_MIN_ROOM (the lenient callers have always accepted up to
 * that many, the extra ones closed), and one more in strict mode, to see
 * an excess. A message with more is truncated (MSG_CTRUNC: the kernel
 * discards what does not fit) and refused, so that a peer cannot make us
 * hold hundreds of its fds even for a moment. */
#define RECV_FDS_MIN_ROOM 4

ssize_t recv_fds(int sock, void *buf, size_t n, int *fds, size_t max, size_t *count,
                 unsigned flags) {
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * (RECV_FDS_MAX + 1))];
    } control;
    bool strict = flags & RECV_FDS_STRICT;
    if (max > RECV_FDS_MAX || *count > max) {
        return -EINVAL;
    }
    size_t room = MAX(max, (size_t)RECV_FDS_MIN_ROOM) + (strict ? 1 : 0);
    struct iovec iov = {.iov_base = buf, .iov_len = n};
    struct msghdr mh = {
        .msg_iov = &iov,
        .msg_iovlen = 1,
        .msg_control = control.buf,
        .msg_controllen = CMSG_SPACE(sizeof(int) * room),
    };
    size_t first = *count;
    bool refuse = false;
    ssize_t k;

    do {
        k = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | ((flags & RECV_FDS_NONBLOCK) ? MSG_DONTWAIT : 0));
    } while (k < 0 && errno == EINTR);
    if (k < 0) {
        return -errno;
    }
    /* Every fd is taken out of the message first, so that all of them are
     * closed if it is refused. */
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
            refuse = refuse || strict;
            continue;
        }
        size_t nfds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < nfds; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            /* Keep what the caller has room for: every other fd is
             * closed, never leaked. */
            if (*count < max) {
                fds[(*count)++] = fd;
            } else {
                close(fd);
                refuse = refuse || strict;
            }
        }
    }
    if ((mh.msg_flags & MSG_CTRUNC) || (strict && (mh.msg_flags & MSG_TRUNC))) {
        refuse = true;
    }
    if (refuse) {
        /* The fds we would have kept are closed too. */
        while (*count > first) {
            (*count)--;
            fds[*count] = safe_close(fds[*count]);
        }
        return -EBADMSG;
    }
    return k;
}

ssize_t recv_with_fds(int sock, void *buf, size_t n, int *fds, size_t max, size_t *count) {
    return recv_fds(sock, buf, n, fds, max, count, 0);
}

ssize_t recv_with_fd(int sock, void *buf, size_t n, int *ret_fd) {
    size_t count = 0;
    /* One fd, only when the caller expects one and has none yet. */
    return recv_fds(sock, buf, n, ret_fd, ret_fd && *ret_fd < 0 ? 1 : 0, &count, 0);
}

char *str_sanitize(const char *s, size_t len, char *buf, size_t bufsize) {
    size_t o = 0, i;
    if (bufsize == 0) {
        return buf;
    }
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        size_t k = (c >= 0x20 && c < 0x7f && c != '\\') ? 1 : 4;
        if (o + k >= bufsize) {
            break; /* keep room for the NUL */
        }
        if (k == 1) {
            buf[o] = (char)c;
        } else {
            snprintf(buf + o, 5, "\\x%02x", c);
        }
        o += k;
    }
    if (i < len) {
        /* Truncated: say so rather than silently cutting a peer string.
         * Drop whole characters until "..." fits; a backslash in the output
         * only ever starts a 4-byte escape, so escapes are never cut. */
        while (o > 0 && o + 3 >= bufsize) {
            o -= (o >= 4 && buf[o - 4] == '\\') ? 4 : 1;
        }
        if (o + 3 < bufsize) {
            memcpy(buf + o, "...", 3);
            o += 3;
        }
    }
    buf[o] = '\0';
    return buf;
}

void strv_free(char **v) {
    if (!v) {
        return;
    }
    for (char **p = v; *p; p++) {
        free(*p);
    }
    free(v);
}

int unhexchar(char c) {
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

int error_set(ErrorText *e, int r, const char *fmt, ...) {
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->message, sizeof(e->message), fmt, ap);
        va_end(ap);
    }
    return r;
}

static struct rlimit fd_limit_saved;
static bool fd_limit_raised;

void signals_take(const int *signals, sigset_t *ret) {
    sigset_t mask;

    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&mask);
    for (; *signals; signals++) {
        sigaddset(&mask, *signals);
    }
    sigprocmask(SIG_BLOCK, &mask, NULL);
    if (ret) {
        *ret = mask;
    }
}

int fd_limit_raise(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        return -errno;
    }
    fd_limit_saved = rl;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit raised = {.rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max};
        if (setrlimit(RLIMIT_NOFILE, &raised) < 0) {
            return -errno;
        }
        fd_limit_raised = true;
    }
    return 0;
}

void fd_limit_restore(void) {
    if (fd_limit_raised) {
        (void)setrlimit(RLIMIT_NOFILE, &fd_limit_saved);
    }
}

int fd_close_from(int first) {
    if (close_range((unsigned)first, ~0U, 0) == 0) {
        return 0;
    }
    if (errno != ENOSYS && errno != EINVAL) {
        return -errno;
    }
    int dfd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        uint64_t buf[512]; /* struct linux_dirent64 records, 8-aligned */
        long n;
        while ((n = syscall(SYS_getdents64, dfd, buf, sizeof(buf))) > 0) {
            for (long off = 0; off < n;) {
                const uint8_t *d = (const uint8_t *)buf + off;
                unsigned short reclen;
                memcpy(&reclen, d + 16, sizeof(reclen)); /* after d_ino, d_off */
                const char *name = (const char *)d + 19; /* after d_type */
                unsigned long long fd;
                if (parse_uint(name, 0, INT32_MAX, &fd) == 0 && fd >= (unsigned)first &&
                    (int)fd != dfd) {
                    (void)close((int)fd);
                }
                off += reclen;
            }
        }
        (void)close(dfd);
        if (n == 0) {
            return 0;
        }
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        return -errno;
    }
    for (rlim_t fd = (rlim_t)first; fd < rl.rlim_cur && fd <= INT32_MAX; fd++) {
        (void)close((int)fd);
    }
    return 0;
}

ssize_t sendmsg_fds(int sock, const void *buf, size_t n, const int *fds, size_t n_fds, int flags) {
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int) * SENDMSG_FDS_MAX)];
    } control = {0};
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = n};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};

    if (n_fds > SENDMSG_FDS_MAX) {
        return -EINVAL;
    }
    if (n_fds > 0) {
        mh.msg_control = control.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * n_fds);
    }
    ssize_t k = sendmsg(sock, &mh, MSG_NOSIGNAL | flags);
    return k < 0 ? -errno : k;
}
