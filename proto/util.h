/* Small runtime helpers every program shares: cleanup attributes, fd and
 * time helpers. */
#pragma once

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define _unused_ __attribute__((unused))
#define _noreturn_ __attribute__((noreturn))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _cleanup_(f) __attribute__((cleanup(f)))

/* Take ownership out of a variable that has a cleanup attribute. */
#define TAKE_PTR(p)                                                                                \
    ({                                                                                             \
        __typeof__(p) _taken = (p);                                                                \
        (p) = NULL;                                                                                \
        _taken;                                                                                    \
    })
#define TAKE_FD(fd)                                                                                \
    ({                                                                                             \
        int _taken = (fd);                                                                         \
        (fd) = -EBADF;                                                                             \
        _taken;                                                                                    \
    })

static inline void freep(void *p) {
    free(*(void **)p);
}

/* Closes and keeps errno: cleanup must never change the error we report. */
static inline int safe_close(int fd) {
    if (fd >= 0) {
        int saved = errno;
        close(fd);
        errno = saved;
    }
    return -EBADF;
}

static inline void closep(int *fd) {
    *fd = safe_close(*fd);
}

static inline void close_pair(int p[2]) {
    p[0] = safe_close(p[0]);
    p[1] = safe_close(p[1]);
}

/* The cleanup attribute passes a pointer to the array, not its first
 * element. */
static inline void close_pairp(int (*p)[2]) {
    close_pair(*p);
}

#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_close_pair_ _cleanup_(close_pairp)

/* Declares name##p(), a cleanup function calling func on a non-NULL pointer. */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)                                                    \
    static inline void func##p(type *p) {                                                          \
        if (*p) {                                                                                  \
            func(*p);                                                                              \
        }                                                                                          \
    }

DEFINE_TRIVIAL_CLEANUP_FUNC(DIR *, closedir)
#define _cleanup_closedir_ _cleanup_(closedirp)

static inline uint64_t now_usec(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000ULL + (uint64_t)ts.tv_nsec / 1000ULL;
}

static inline bool streq(const char *a, const char *b) {
    return strcmp(a, b) == 0;
}

static inline bool startswith(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* The one way an error's text travels back to the caller that reports it:
 * an ErrorText passed last, filled only on failure; the function returns
 * a negative errno as always. The caller logs it once, with its context. */
#define ERROR_TEXT_MAX 512
typedef struct ErrorText {
    char message[ERROR_TEXT_MAX];
} ErrorText;

/* Formats e->message (e may be NULL: nothing is written) and returns r, a
 * negative errno: `return error_set(err, -EINVAL, "bad %s", what);`. */
_printf_(3, 4) int error_set(ErrorText *e, int r, const char *fmt, ...);

/* Parses a whole decimal number in [min, max]. */
int parse_uint(const char *s, unsigned long long min, unsigned long long max,
               unsigned long long *ret);

/* fd helpers: all return 0 or a negative errno. */
int fd_nonblock(int fd, bool nonblock);
int fd_cloexec(int fd, bool cloexec);
/* Closes every fd from first on, close-on-exec or not: for a child
 * between fork and exec. close_range() needs Linux 5.9; before (ENOSYS,
 * EINVAL), the fds /proc/self/fd lists, else every fd below the limit.
 * Async-signal-safe and allocates nothing (a CLONE_VM child shares its
 * parent's heap). 0 or a negative errno. */
int fd_close_from(int first);
/* A daemon that serves many peers raises its soft RLIMIT_NOFILE to the
 * hard limit (a service manager starts it at 1024, systemd's default,
 * for the sake of select(), which we never use), remembering the soft
 * limit it had; its children get that back before they exec
 * (fd_limit_restore(): async-signal-safe, allocates nothing), so that a
 * program of theirs that uses select() is not surprised. 0 or a negative
 * errno; the limit is left as it was on failure. */
int fd_limit_raise(void);
void fd_limit_restore(void);
/* A daemon's signals: SIGPIPE ignored (a peer gone is an error code; its
 * children restore the default) and `signals` (0-terminated) blocked, to
 * be taken through its event loop (sd-event, signalfd); their set in
 * *ret when ret is not NULL. */
void signals_take(const int *signals, sigset_t *ret);
/* Writes all of buf, retrying on EINTR and partial writes (blocking fd). */
int loop_write(int fd, const void *buf, size_t n);
/* Reads exactly n bytes; -EPIPE on EOF before n bytes (0 bytes: returns 0
 * and sets *ret_eof when ret_eof is given). */
int loop_read_exact(int fd, void *buf, size_t n, bool *ret_eof);

/* Sends buf with one fd attached (SCM_RIGHTS); blocking, all of buf. */
int send_with_fd(int sock, const void *buf, size_t n, int fd);

/* recv_fds() flags. */
#define RECV_FDS_STRICT 0x1u   /* refuse the message rather than close what is too much */
#define RECV_FDS_NONBLOCK 0x2u /* MSG_DONTWAIT: -EAGAIN when nothing is there */
/* The most fds one caller may keep from one message. */
#define RECV_FDS_MAX 16

/* The one fd-passing receive: one recvmsg() into buf (n bytes), every fd
 * born close-on-exec (MSG_CMSG_CLOEXEC). Fds are stored from fds[*count]
 * on while *count < max (*count grows). Returns the bytes read (0: EOF, or
 * an empty datagram when *count grew) or a negative errno. -EBADMSG
 * refuses the message, every fd it brought closed (those of earlier calls
 * stay the caller's): always when its control data was truncated (more
 * fds than the kernel buffer takes: max + 1 in strict mode), and with
 * RECV_FDS_STRICT also for one fd more than max, control data other than
 * SCM_RIGHTS, or a datagram longer than n (MSG_TRUNC). Without
 * RECV_FDS_STRICT the fds beyond max are closed and the data accepted.
 * -EINVAL: max above RECV_FDS_MAX or *count above max. */
ssize_t recv_fds(int sock, void *buf, size_t n, int *fds, size_t max, size_t *count,
                 unsigned flags);
/* Reads exactly n bytes from a stream socket with recv_fds(): fds riding on
 * any of them are kept as recv_fds() keeps them, with the same flags.
 * Returns as loop_read_exact(), or recv_fds()'s errors; on failure the fds
 * kept so far stay in fds for the caller to close. */
int recv_exact_fds(int sock, void *buf, size_t n, int *fds, size_t max, size_t *count,
                   unsigned flags, bool *ret_eof);
/* recv_fds() without flags, for at most one fd: only when ret_fd is given
 * and holds none yet. *ret_fd is set to a received fd or left alone. */
ssize_t recv_with_fd(int sock, void *buf, size_t n, int *ret_fd);
/* recv_fds() without flags. */
ssize_t recv_with_fds(int sock, void *buf, size_t n, int *fds, size_t max, size_t *count);

/* Frees a NULL-terminated array of strings (an argv, an environment) and
 * each of its strings. NULL is fine. */
void strv_free(char **v);
DEFINE_TRIVIAL_CLEANUP_FUNC(char **, strv_free)
#define _cleanup_strv_free_ _cleanup_(strv_freep)

/* The value of one hex digit, or -1. */
int unhexchar(char c);

/* Copies s into a printable form for logs: at most max bytes, anything
 * outside printable ASCII escaped. Returns buf. */
char *str_sanitize(const char *s, size_t len, char *buf, size_t bufsize);

/* One sendmsg() of buf with n_fds (at most SENDMSG_FDS_MAX) fds attached
 * (SCM_RIGHTS) to its first byte, and flags besides MSG_NOSIGNAL
 * (MSG_DONTWAIT on a blocking socket). Returns the bytes sent (the fds
 * went with the first) or a negative errno, -EINTR included. */
#define SENDMSG_FDS_MAX 4u
ssize_t sendmsg_fds(int sock, const void *buf, size_t n, const int *fds, size_t n_fds, int flags);
