/* A program's output onto the connection: see output.h. */
#include "output.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "util.h"

/* Whether splice() from a pipe into a stream socket works here: tried once
 * on a socketpair. */
static bool splice_supported(void) {
    static int cached = -1;
    if (cached >= 0) {
        return cached;
    }
    int sv[2] = {-EBADF, -EBADF}, p[2] = {-EBADF, -EBADF};
    cached = 0;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) == 0 &&
        pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0 && write(p[1], "x", 1) == 1 &&
        splice(p[0], NULL, sv[0], NULL, 1, SPLICE_F_NONBLOCK | SPLICE_F_MOVE) == 1) {
        cached = 1;
    }
    close_pair(sv);
    close_pair(p);
    return cached;
}

/* Starts a spliced Data frame for what the pipe holds now. 1 when one was
 * started, 0 when the read path must be used (EOF, or nothing there). */
static int splice_begin(Conn *c, int fd, WireStream stream) {
    int avail = 0;
    if (ioctl(fd, FIONREAD, &avail) < 0 || avail <= 0) {
        return 0;
    }
    uint32_t n = MIN((uint32_t)avail, WIRE_DATA_MAX);
    return conn_queue_splice(c, fd, stream, n) < 0 ? 0 : 1;
}

bool output_wanted(const Conn *c) {
    return conn_pending(c) < OUTPUT_PENDING_MAX;
}

int output_pump(Conn *c, int fd, WireStream stream, bool pty, int *ret_error) {
    *ret_error = 0;
    for (int n = 0; n < OUTPUT_CHUNKS_PER_WAKE; n++) {
        if (conn_splicing(c) || !output_wanted(c)) {
            return 0;
        }
        /* Nothing queued: the bytes can go pipe to socket without passing
         * through us. Otherwise (or on a pty) read them into the queue. */
        if (!pty && conn_pending(c) == 0 && splice_supported() && splice_begin(c, fd, stream) > 0) {
            int r = conn_flush(c);
            if (r != 0) {
                return r < 0 ? r : 0;
            }
            continue;
        }
        ssize_t k = conn_queue_read(c, fd, stream, WIRE_DATA_MAX);
        if (k == -EAGAIN) {
            return 0;
        }
        if (k == -ENOMEM || k == -ENOBUFS) {
            return (int)k; /* the connection's, not the program's */
        }
        if (k <= 0) {
            /* EIO: the pty's last slave closed, which is its EOF. */
            *ret_error = k < 0 && k != -EIO ? (int)k : 0;
            return 1;
        }
    }
    return 0;
}
