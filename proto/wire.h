/* The agent protocol on the wire: framing, decoding under an allocation
 * budget, and validation into plain structs. Handlers only ever see a
 * validated Msg, never protobuf-c structs.
 *
 * A frame is a 4-byte big-endian length and one Envelope. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WIRE_VERSION_MAJOR 1
#define WIRE_VERSION_MINOR 0
#define WIRE_FRAME_MAX (1024u * 1024u)   /* body bytes, header excluded */
#define WIRE_HEADER_SIZE 4u
#define WIRE_DATA_MAX (64u * 1024u)      /* one Data chunk */
#define WIRE_DECODE_BUDGET (4u * 1024u * 1024u)
#define WIRE_ARGV_MAX 4096u
#define WIRE_ENV_MAX 4096u
#define WIRE_STRING_MAX 4096u            /* user, TERM, messages, software */
#define WIRE_STDIN_WINDOW_MAX (16u * 1024u * 1024u)

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

typedef struct MsgHostStatus {
    const char *vm;
    bool running;
    uint32_t leases;
    uint64_t uptime_ms;
    uint64_t idle_ms;
} MsgHostStatus;

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
        bool connect_no_start;
        MsgConnected connected;
        MsgHostStatus host_status;
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
} WireWriter;

int wire_writer_queue(WireWriter *w, const Msg *m);
/* Writes as much as the socket takes. 0 when all flushed, 1 when bytes
 * remain (wait for EPOLLOUT), negative errno on failure. */
int wire_writer_flush(WireWriter *w, int fd);
size_t wire_writer_pending(const WireWriter *w);
void wire_writer_done(WireWriter *w);
