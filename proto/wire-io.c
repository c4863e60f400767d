/* Blocking frame I/O for simple clients: see wire-io.h. */
#include "wire-io.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"
#include "wire.h"

int wire_send(int fd, const Msg *m) {
    return wire_send_fd(fd, m, -EBADF);
}

int wire_send_fd(int sock, const Msg *m, int fd) {
    _cleanup_free_ uint8_t *buf = NULL;
    size_t n;
    int r = wire_encode(m, &buf, &n);
    if (r < 0) {
        return r;
    }
    if (fd >= 0) {
        return send_with_fd(sock, buf, n, fd);
    }
    return loop_write(sock, buf, n);
}

/* Reads exactly n bytes with recvmsg so that an fd riding on any of them
 * is picked up. */
static int recv_exact(int sock, uint8_t *buf, size_t n, int *fds, size_t max, size_t *count,
                      bool *ret_eof) {
    int r = recv_exact_fds(sock, buf, n, fds, max, count, 0, ret_eof);
    /* Not a socket (a pipe): no fds can come with its bytes, and the first
     * recvmsg() failed before it read anything. */
    return r == -ENOTSOCK ? loop_read_exact(sock, buf, n, ret_eof) : r;
}

int wire_recv_fds(int sock, Msg *ret, int *fds, size_t max, size_t *ret_count) {
    uint8_t hdr[WIRE_HEADER_SIZE];
    _cleanup_free_ uint8_t *body = NULL;
    int got[WIRE_RECV_FDS_MAX];
    size_t count = 0;
    uint32_t n;
    bool eof = false;
    int r;

    max = MIN(max, (size_t)WIRE_RECV_FDS_MAX);
    r = recv_exact(sock, hdr, sizeof(hdr), got, max, &count, &eof);
    if (r >= 0 && eof) {
        r = -ECONNRESET;
    }
    if (r >= 0) {
        r = wire_header_parse(hdr, &n);
    }
    if (r >= 0) {
        body = malloc(n ? n : 1);
        r = body ? 0 : -ENOMEM;
    }
    if (r >= 0) {
        r = recv_exact(sock, body, n, got, max, &count, NULL);
    }
    if (r >= 0) {
        r = wire_decode(body, n, ret);
    }
    if (r < 0) {
        while (count > 0) {
            safe_close(got[--count]);
        }
        return r;
    }
    if (count > 0) {
        memcpy(fds, got, count * sizeof(int));
    }
    if (ret_count) {
        *ret_count = count;
    }
    return 0;
}

int wire_recv(int sock, Msg *ret, int *ret_fd) {
    size_t count = 0;
    return wire_recv_fds(sock, ret, ret_fd, ret_fd ? 1 : 0, &count);
}
