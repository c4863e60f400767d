/* The agent protocol on the wire: framing, decoding under an allocation
 * budget, and validation into plain structs. Handlers only ever see a
 * validated Msg, never protobuf-c structs.
 *
 * A frame is a 4-byte big-endian length and one Envelope. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define WIRE_VERSION_MAJOR 1
#define WIRE_VERSION_MINOR 1
#define WIRE_FRAME_MAX (1024u * 1024u)   /* body bytes, header excluded */
#define WIRE_HEADER_SIZE 4u
#define WIRE_DATA_MAX (64u * 1024u)      /* one Data chunk */
#define WIRE_DECODE_BUDGET (4u * 1024u * 1024u)
#define WIRE_ARGV_MAX 4096u
#define WIRE_ENV_MAX 4096u
#define WIRE_STRING_MAX 4096u            /* user, TERM, messages, software */
#define WIRE_STDIN_WINDOW_MAX (4u * 1024u * 1024u) /* queued stdin costs about this */

typedef enum MsgType {
    MSG_HELLO = 1,
    MSG_EXEC,
    MSG_STARTED,
    MSG_DATA,
    MSG_STDIN_CLOSE,
    MSG_STDIN_ACK,
    MSG_RESIZE,
    MSG_SIGNAL,
    MSG_EXITED,
    MSG_EXIT_ACK,
    MSG_ERROR,
    MSG_STATUS_REQUEST,
    MSG_STATUS,
    MSG_PING,
    MSG_PONG,
    MSG_SHUTDOWN,
    MSG_SHUTDOWN_REPLY,
    MSG_CONNECT,
    MSG_CONNECTED,
    MSG_HOST_STATUS_REQUEST,
    MSG_HOST_STATUS,
    MSG_HOST_START,
    MSG_HOST_STOP,
    MSG_HOST_STOPPED,
    MSG_CONSOLE_ATTACH,
    MSG_CONSOLE_ATTACHED,
    MSG_ATTACH,
    MSG_ATTACHED,
    _MSG_TYPE_MAX,
} MsgType;

typedef enum WireStream {
    WIRE_STDIN = 0,
    WIRE_STDOUT = 1,
    WIRE_STDERR = 2,
} WireStream;

typedef enum WireError {
    WIRE_ERR_UNSPECIFIED = 0,
    WIRE_ERR_PROTOCOL = 1,
    WIRE_ERR_VERSION = 2,
    WIRE_ERR_TOO_LARGE = 3,
    WIRE_ERR_DENIED = 4,
    WIRE_ERR_INVALID = 5,
    WIRE_ERR_UNAVAILABLE = 6,
    WIRE_ERR_INTERNAL = 7,
    WIRE_ERR_SHUTTING_DOWN = 8,
} WireError;

typedef enum ExitKind {
    EXIT_CODE = 1,
    EXIT_SIGNAL,
    EXIT_START_FAILED,
} ExitKind;

typedef struct MsgHello {
    uint32_t major, minor;
    const char *software;                 /* printable, may be "" */
} MsgHello;

/* The key pairing an Exec with its stream connection (Attach). */
#define WIRE_STREAM_KEY_SIZE 16u
/* Extra guest connections a Connect may ask for. */
#define WIRE_CONNECT_STREAMS_MAX 1u

typedef struct MsgExec {
    size_t argc;
    char **argv;                          /* argc entries + NULL, no NULs inside */
    size_t envc;
    char **env;                           /* "K=V", K non-empty, + NULL */
    const char *cwd;                      /* NULL or absolute path */
    const char *user;                     /* NULL or a valid user name / uid */
    bool pty;
    uint16_t rows, cols;                  /* with pty */
    const char *term;                     /* with pty: NULL or [A-Za-z0-9.+_-]+ */
    bool wait_wayland;
    uint32_t stdin_window;                /* 0: no stdin flow control asked */
    bool has_stream_key;                  /* stdin/stdout on the Attach connection (no pty) */
    uint8_t stream_key[WIRE_STREAM_KEY_SIZE];
} MsgExec;

typedef struct MsgData {
    WireStream stream;
    const uint8_t *data;                  /* 1..WIRE_DATA_MAX bytes */
    size_t size;
} MsgData;

typedef struct MsgExited {
    ExitKind kind;
    uint32_t code;                        /* EXIT_CODE: 0..255 */
    uint32_t signo;                       /* EXIT_SIGNAL: 1..64 */
    bool core_dumped;
    uint32_t start_errno;                 /* EXIT_START_FAILED: 1..4095 */
} MsgExited;

typedef struct MsgError {
    WireError code;
    const char *message;                  /* printable */
} MsgError;

typedef struct MsgStatus {
    uint64_t uptime_ms;
    uint32_t live_sessions;
    uint64_t idle_ms;
    uint32_t idle_timeout_s;
} MsgStatus;

typedef struct MsgConnected {
    uint64_t vm_start_us;
    uint64_t guest_wait_us;
} MsgConnected;

typedef enum VmState {
    VM_STOPPED = 0,
    VM_STARTING = 1,
    VM_RUNNING = 2,
    VM_STOPPING = 3,
} VmState;

typedef enum StopMethod {
    STOP_NOT_RUNNING = 0,
    STOP_GUEST_POWEROFF = 1,
    STOP_VMM_STOP = 2,
    STOP_KILLED = 3,
} StopMethod;

/* Console replay and the reply's count are bounded by this. */
#define WIRE_SCROLLBACK_MAX (1024u * 1024u)

typedef struct MsgHostStatus {
    const char *vm;
    bool running;
    uint32_t leases;
    uint64_t uptime_ms;
    uint64_t idle_ms;
    VmState state;                        /* a known state */
    uint32_t live_sessions;
    uint32_t idle_timeout_s;
} MsgHostStatus;

typedef struct MsgHostStopped {
    StopMethod method;                    /* a known method */
    uint64_t stop_ms;
} MsgHostStopped;

typedef struct Msg {
    MsgType type;
    union {
        MsgHello hello;
        MsgExec exec;
        int32_t started_pid;
        MsgData data;
        uint32_t stdin_ack;
        struct {
            uint16_t rows, cols;
        } resize;
        uint32_t signo;
        MsgExited exited;
        MsgError error;
        MsgStatus status;
        uint64_t nonce;                   /* ping, pong */
        struct {
            bool no_start;
            uint32_t streams;             /* <= WIRE_CONNECT_STREAMS_MAX */
        } connect;
        uint8_t attach_key[WIRE_STREAM_KEY_SIZE];
        MsgConnected connected;
        MsgHostStatus host_status;
        MsgHostStopped host_stopped;
        struct {
            uint16_t rows, cols;          /* both 0 (unknown) or both set */
        } console_attach;
        uint32_t console_scrollback;      /* <= WIRE_SCROLLBACK_MAX */
    };
    /* Owned storage the pointers above refer to; release with msg_done(). */
    void *_storage;
    void *_env;
} Msg;

/* Frees what a decoded Msg owns; the Msg may be reused afterwards. */
void msg_done(Msg *m);

const char *msg_type_name(MsgType t);

/* Decodes one frame body (without the 4-byte header) and validates every
 * field. Returns 0 and fills *ret, or:
 *   -E2BIG     body over WIRE_FRAME_MAX
 *   -ENOMEM    decoding would exceed WIRE_DECODE_BUDGET (hostile input)
 *   -EBADMSG   not a valid Envelope, or no message set
 *   -EINVAL    a field failed validation
 * On failure nothing is left allocated. */
int wire_decode(const uint8_t *body, size_t size, Msg *ret);

/* Encodes m (only the fields its type uses) as a full frame, header
 * included, into a fresh buffer. */
int wire_encode(const Msg *m, uint8_t **ret_buf, size_t *ret_size);

/* Parses a frame header. -E2BIG when the announced body is over the cap. */
int wire_header_parse(const uint8_t hdr[WIRE_HEADER_SIZE], uint32_t *ret_size);

/* Data frames without protobuf-c, for bulk transfers: a sender writes
 * this header and then the payload (from its own buffer, or by splice()
 * from a pipe); a receiver that recognises the header takes the payload as
 * it lies. The header is the frame length, the Envelope's Data field and
 * the Data fields before the payload (stream, omitted for stdin as
 * wire_encode omits it, and the bytes' tag and length): at most
 * WIRE_DATA_HEADER_MAX bytes. */
#define WIRE_DATA_HEADER_MAX 14u
#define WIRE_STREAM_BIT(s) (1u << (s))

/* Writes the header of a Data frame carrying size bytes (1..WIRE_DATA_MAX)
 * of stream and returns its length. */
size_t wire_data_header(uint8_t hdr[WIRE_DATA_HEADER_MAX], WireStream stream, uint32_t size);

/* Recognises the header of a Data frame in the first n bytes of p (the
 * frame's 4-byte length included): returns the header length and fills
 * *ret_stream and *ret_size when the frame has exactly the layout
 * wire_data_header() writes, its stream is in streams (WIRE_STREAM_BIT()s)
 * and it carries 1..WIRE_DATA_MAX bytes; wire_decode() would give the same
 * Data for it. Returns 0 for anything else, and when n is too short to
 * tell: such a frame must go through wire_decode(). */
int wire_data_header_parse(const uint8_t *p, size_t n, unsigned streams, WireStream *ret_stream,
                           uint32_t *ret_size);

/* Convenience constructors. */
Msg msg_hello(const char *software);
Msg msg_error(WireError code, const char *message);

/* Checks a Hello: 0 when compatible, -EPROTONOSUPPORT otherwise. */
int wire_check_hello(const Msg *m);

/* Blocking helpers for simple clients (fd in blocking mode). */
int wire_send(int fd, const Msg *m);
/* Sends a frame with fd attached (SCM_RIGHTS) to its first byte. */
int wire_send_fd(int sock, const Msg *m, int fd);
/* Receives one frame. -EPIPE when the peer closed before a whole frame,
 * -ECONNRESET on a clean EOF between frames. With ret_fd, an fd that came
 * with the frame is returned there (else any received fd is closed). */
int wire_recv(int fd, Msg *ret, int *ret_fd);
/* The same, keeping up to max (at most WIRE_RECV_FDS_MAX) fds that came
 * with the frame in fds[0 .. *ret_count); others are closed. */
#define WIRE_RECV_FDS_MAX 4u
int wire_recv_fds(int fd, Msg *ret, int *fds, size_t max, size_t *ret_count);

/* Incremental reader for non-blocking sockets. */
typedef struct WireReader {
    uint8_t hdr[WIRE_HEADER_SIZE];
    size_t hdr_got;
    uint8_t *body;
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
} WireWriter;

int wire_writer_queue(WireWriter *w, const Msg *m);
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
void wire_writer_done(WireWriter *w);
