/* Frames on non-blocking sockets: an incremental reader (whole frames
 * out of whatever a read() returns) and an output queue that also takes
 * Data frames read or spliced straight from a program's pipe, and frames
 * carrying fds. A program bounds the queue through wire_writer_pending();
 * the connection engine (conn.h) does it for its owners. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "msg.h"
#include "wire-data.h"

/* Incremental reader for non-blocking sockets. */
typedef struct WireReader {
    uint8_t untrusted_hdr[WIRE_HEADER_SIZE];
    size_t hdr_got;
    uint8_t *untrusted_body; /* until decoded */
    uint32_t body_size;
    size_t body_got;
} WireReader;

/* Reads what is available. Returns 1 and fills *ret when a whole frame
 * was decoded, 0 when more bytes are needed (EAGAIN), -ECONNRESET on EOF
 * at a frame boundary, -EPIPE on EOF inside a frame, or the errors of
 * wire_decode / read(). */
int wire_reader_read(WireReader *r, int fd, Msg *ret);
void wire_reader_done(WireReader *r);

/* Output queue for non-blocking sockets: bounded by the caller through
 * wire_writer_pending(). */
#define WIRE_WRITER_FDS_MAX 4u
typedef struct WireWriter {
    uint8_t *buf;
    size_t start, end, alloc;
    /* A Data frame whose payload goes from a pipe to the socket by
     * splice(): its header, then sp_left bytes of sp_fd. Started only with
     * nothing queued; whatever is queued meanwhile goes after it. */
    bool sp_active, broken;
    int sp_fd;
    uint32_t sp_left;
    uint8_t sp_hdr[WIRE_DATA_HEADER_MAX];
    uint8_t sp_hdr_len, sp_hdr_off;
    /* A frame queued with fds: they ride (SCM_RIGHTS) on its first byte,
     * which goes once the fds_ahead bytes before it have. Ours until then. */
    int fds[WIRE_WRITER_FDS_MAX];
    size_t n_fds, fds_ahead;
    uint64_t sent; /* bytes written since the start */
} WireWriter;

int wire_writer_queue(WireWriter *w, const Msg *m);
/* Queues m with n (1..WIRE_WRITER_FDS_MAX) fds attached to its first byte,
 * taking them over: they are closed once sent, or by wire_writer_done().
 * On failure nothing is taken. -EBUSY while another such frame waits. */
int wire_writer_queue_fds(WireWriter *w, const Msg *m, const int *fds, size_t n);
/* Reads up to max bytes (at most WIRE_DATA_MAX) of fd straight into a Data
 * frame of stream at the end of the queue: the bytes are copied once, by
 * the kernel. Returns the bytes read, 0 at EOF, or a negative errno
 * (-EAGAIN included); nothing is queued unless bytes were read. */
ssize_t wire_writer_read_data(WireWriter *w, int fd, WireStream stream, size_t max);
/* Starts a Data frame of stream whose size bytes (1..WIRE_DATA_MAX) the
 * pipe pipe_fd holds now and will be spliced to the socket by the flushes.
 * -EBUSY unless nothing is pending. */
int wire_writer_splice_data(WireWriter *w, int pipe_fd, WireStream stream, uint32_t size);
/* The pipe fd of a spliced frame in progress is going away: the frame
 * cannot be completed, and every flush fails with -EPIPE from now on. */
void wire_writer_splice_abort(WireWriter *w, int pipe_fd);
/* Whether a spliced frame is in progress. */
bool wire_writer_splicing(const WireWriter *w);
/* Writes as much as the socket takes, a spliced frame in progress first.
 * 0 when all flushed, 1 when bytes remain (wait for EPOLLOUT), negative
 * errno on failure (-EIO when a pipe lost bytes it announced). */
int wire_writer_flush(WireWriter *w, int fd);
/* Bytes not yet written, a spliced frame's included. */
size_t wire_writer_pending(const WireWriter *w);
/* Bytes written so far: a frame queued when sent + pending was N is out
 * once sent reaches N. */
uint64_t wire_writer_sent(const WireWriter *w);
void wire_writer_done(WireWriter *w);
