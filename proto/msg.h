/* The agent protocol's messages as handlers see them: plain C structs that
 * hold only validated values (validate.c fills them from a decoded frame),
 * never protobuf-c structs. Also the protocol's limits: every bound the
 * validator enforces is named here. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WIRE_VERSION_MAJOR 1
#define WIRE_VERSION_MINOR 2
#define WIRE_FRAME_MAX (1024u * 1024u) /* body bytes, header excluded */
#define WIRE_HEADER_SIZE 4u
#define WIRE_DATA_MAX (64u * 1024u) /* one Data chunk */
#define WIRE_DECODE_BUDGET (4u * 1024u * 1024u)
#define WIRE_ARGV_MAX 4096u
#define WIRE_ENV_MAX 4096u
#define WIRE_STRING_MAX 4096u                      /* an Error's message */
#define WIRE_SOFTWARE_MAX 256u                     /* Hello's software */
#define WIRE_SECRET_SIZE 32u                       /* Hello's secret, when present */
#define WIRE_PATH_MAX 4095u                        /* Exec's cwd, bytes */
#define WIRE_HOST_STATUS_VM_MAX 64u                /* HostStatus's vm */
#define WIRE_STDIN_WINDOW_MAX (4u * 1024u * 1024u) /* queued stdin costs about this */
#define WIRE_SIGNAL_MAX 64u                        /* signal numbers are 1..64 */
#define WIRE_EXIT_CODE_MAX 255u
#define WIRE_ERRNO_MAX 4095u /* start_errno is 1..4095 */

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
    _WIRE_ERR_LAST = WIRE_ERR_SHUTTING_DOWN, /* a code above decodes as UNSPECIFIED */
} WireError;

typedef enum ExitKind {
    EXIT_CODE = 1,
    EXIT_SIGNAL,
    EXIT_START_FAILED,
} ExitKind;

typedef struct MsgHello {
    uint32_t major, minor;
    const char *software; /* printable, may be "" */
    /* The VM's secret (host agent -> guest agent): NULL when absent, else
     * WIRE_SECRET_SIZE bytes. */
    const uint8_t *secret;
} MsgHello;

/* The key pairing an Exec with its stream connection (Attach). */
#define WIRE_STREAM_KEY_SIZE 16u
/* Extra guest connections a Connect may ask for. */
#define WIRE_CONNECT_STREAMS_MAX 1u

typedef struct MsgExec {
    size_t argc;
    char **argv; /* argc entries + NULL, no NULs inside */
    size_t envc;
    char **env;       /* "K=V", K non-empty, + NULL */
    const char *cwd;  /* NULL or absolute path */
    const char *user; /* NULL or a valid user name / uid */
    bool pty;
    uint16_t rows, cols; /* with pty */
    const char *term;    /* with pty: NULL or [A-Za-z0-9.+_-]+ */
    bool wait_wayland;
    uint32_t stdin_window; /* 0: no stdin flow control asked */
    bool has_stream_key;   /* stdin/stdout on the Attach connection (no pty) */
    uint8_t stream_key[WIRE_STREAM_KEY_SIZE];
} MsgExec;

typedef struct MsgData {
    WireStream stream;
    const uint8_t *data; /* 1..WIRE_DATA_MAX bytes */
    size_t size;
} MsgData;

typedef struct MsgExited {
    ExitKind kind;
    uint32_t code;  /* EXIT_CODE: 0..WIRE_EXIT_CODE_MAX */
    uint32_t signo; /* EXIT_SIGNAL: 1..WIRE_SIGNAL_MAX */
    bool core_dumped;
    uint32_t start_errno; /* EXIT_START_FAILED: 1..WIRE_ERRNO_MAX */
} MsgExited;

typedef struct MsgError {
    WireError code;
    const char *message; /* printable */
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
    VmState state; /* a known state */
    uint32_t live_sessions;
    uint32_t idle_timeout_s;
} MsgHostStatus;

typedef struct MsgHostStopped {
    StopMethod method; /* a known method */
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
        uint64_t nonce; /* ping, pong */
        struct {
            bool no_start;
            uint32_t streams; /* <= WIRE_CONNECT_STREAMS_MAX */
        } connect;
        uint8_t attach_key[WIRE_STREAM_KEY_SIZE];
        MsgConnected connected;
        MsgHostStatus host_status;
        MsgHostStopped host_stopped;
        struct {
            uint16_t rows, cols; /* both 0 (unknown) or both set */
        } console_attach;
        uint32_t console_scrollback; /* <= WIRE_SCROLLBACK_MAX */
    };
    /* Owned storage the pointers above refer to; release with msg_done()
     * (wire.h). */
    void *_storage;
    void *_env;
} Msg;

const char *msg_type_name(MsgType t);

/* Convenience constructors. */
Msg msg_hello(const char *software);
Msg msg_error(WireError code, const char *message);

/* Checks a Hello: 0 when compatible, -EPROTONOSUPPORT otherwise. */
int wire_check_hello(const Msg *m);
