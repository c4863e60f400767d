/* The agent protocol's codec: decoding a frame body under an allocation
 * budget (then validate.c), encoding a Msg into a frame, and the frame
 * header. */
#include "wire.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qubes-lite.pb-c.h"
#include "util.h"
#include "validate.h"

typedef Qubeslite__Envelope Envelope;

/* ---- decoding ---------------------------------------------------------- */

/* protobuf-c allocates freely while unpacking (one block per repeated
 * element, per string, per sub-message); a small hostile frame can ask for
 * many times its size. Every allocation is charged against a budget. */
typedef struct Budget {
    ProtobufCAllocator allocator;
    size_t used, limit;
    bool exhausted;     /* an allocation was refused: over the budget */
    bool out_of_memory; /* ... or malloc() failed */
} Budget;

typedef struct Decoded {
    Budget budget;
    Envelope *untrusted_env; /* what protobuf-c made of the frame */
} Decoded;

#define BUDGET_HDR 16u

static void *budget_alloc(void *data, size_t size) {
    Budget *b = data;
    size_t total;
    if (__builtin_add_overflow(size, BUDGET_HDR, &total) || total > b->limit - b->used) {
        b->exhausted = true;
        return NULL;
    }
    uint8_t *p = malloc(total);
    if (!p) {
        b->out_of_memory = true;
        return NULL;
    }
    memcpy(p, &total, sizeof(total));
    b->used += total;
    return p + BUDGET_HDR;
}

static void budget_free(void *data, void *ptr) {
    Budget *b = data;
    size_t total;
    if (!ptr) {
        return;
    }
    uint8_t *p = (uint8_t *)ptr - BUDGET_HDR;
    memcpy(&total, p, sizeof(total));
    b->used -= total;
    free(p);
}

static void decoded_free(Decoded *d) {
    if (!d) {
        return;
    }
    if (d->untrusted_env) {
        protobuf_c_message_free_unpacked(&d->untrusted_env->base, &d->budget.allocator);
    }
    free(d);
}

void msg_done(Msg *m) {
    decoded_free(m->_storage);
    free(m->_env);
    m->_storage = NULL;
    m->_env = NULL;
}

int wire_decode(const uint8_t *untrusted_body, size_t size, Msg *ret) {
    Msg m = {0};
    int r;

    if (size > WIRE_FRAME_MAX) {
        return -E2BIG;
    }
    Decoded *d = calloc(1, sizeof(*d));
    if (!d) {
        return -ENOMEM;
    }
    d->budget.allocator.alloc = budget_alloc;
    d->budget.allocator.free = budget_free;
    d->budget.allocator.allocator_data = &d->budget;
    d->budget.limit = WIRE_DECODE_BUDGET;
    d->untrusted_env = qubeslite__envelope__unpack(&d->budget.allocator, size, untrusted_body);
    if (!d->untrusted_env) {
        /* protobuf-c does not tell a failed allocation from bad input, and
         * it has freed everything by now (used is back to 0): remember
         * the refusal itself. Over the budget is the peer's doing; a
         * failed malloc() is ours. */
        r = d->budget.out_of_memory ? -ENOMEM : d->budget.exhausted ? -EMSGSIZE : -EBADMSG;
        free(d);
        return r;
    }
    m._storage = d;
    r = msg_validate(d->untrusted_env, &m);
    if (r < 0) {
        msg_done(&m);
        return r;
    }
    *ret = m;
    return 0;
}

/* ---- encoding ---------------------------------------------------------- */

static ProtobufCBinaryData *strv_to_bin(char *const *v, size_t n) {
    ProtobufCBinaryData *b = calloc(n ? n : 1, sizeof(*b));
    if (!b) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        b[i].data = (uint8_t *)v[i];
        b[i].len = strlen(v[i]);
    }
    return b;
}

int wire_encode(const Msg *m, uint8_t **ret_buf, size_t *ret_size) {
    Envelope env = QUBESLITE__ENVELOPE__INIT;
    Qubeslite__Hello hello = QUBESLITE__HELLO__INIT;
    Qubeslite__Exec exec = QUBESLITE__EXEC__INIT;
    Qubeslite__Pty pty = QUBESLITE__PTY__INIT;
    Qubeslite__Started started = QUBESLITE__STARTED__INIT;
    Qubeslite__Data data = QUBESLITE__DATA__INIT;
    Qubeslite__StdinClose stdin_close = QUBESLITE__STDIN_CLOSE__INIT;
    Qubeslite__StdinAck stdin_ack = QUBESLITE__STDIN_ACK__INIT;
    Qubeslite__Resize resize = QUBESLITE__RESIZE__INIT;
    Qubeslite__Signal sig = QUBESLITE__SIGNAL__INIT;
    Qubeslite__Exited exited = QUBESLITE__EXITED__INIT;
    Qubeslite__Exited__Killed killed = QUBESLITE__EXITED__KILLED__INIT;
    Qubeslite__ExitAck exit_ack = QUBESLITE__EXIT_ACK__INIT;
    Qubeslite__Error error = QUBESLITE__ERROR__INIT;
    Qubeslite__StatusRequest status_request = QUBESLITE__STATUS_REQUEST__INIT;
    Qubeslite__Status status = QUBESLITE__STATUS__INIT;
    Qubeslite__Ping ping = QUBESLITE__PING__INIT;
    Qubeslite__Pong pong = QUBESLITE__PONG__INIT;
    Qubeslite__Shutdown shutdown = QUBESLITE__SHUTDOWN__INIT;
    Qubeslite__ShutdownReply shutdown_reply = QUBESLITE__SHUTDOWN_REPLY__INIT;
    Qubeslite__Connect connect = QUBESLITE__CONNECT__INIT;
    Qubeslite__Connected connected = QUBESLITE__CONNECTED__INIT;
    Qubeslite__HostStatusRequest host_status_request = QUBESLITE__HOST_STATUS_REQUEST__INIT;
    Qubeslite__HostStatus host_status = QUBESLITE__HOST_STATUS__INIT;
    Qubeslite__HostStart host_start = QUBESLITE__HOST_START__INIT;
    Qubeslite__HostStop host_stop = QUBESLITE__HOST_STOP__INIT;
    Qubeslite__HostStopped host_stopped = QUBESLITE__HOST_STOPPED__INIT;
    Qubeslite__ConsoleAttach console_attach = QUBESLITE__CONSOLE_ATTACH__INIT;
    Qubeslite__ConsoleAttached console_attached = QUBESLITE__CONSOLE_ATTACHED__INIT;
    Qubeslite__Attach attach = QUBESLITE__ATTACH__INIT;
    Qubeslite__Attached attached = QUBESLITE__ATTACHED__INIT;
    _cleanup_free_ ProtobufCBinaryData *argv = NULL, *envv = NULL;

    switch (m->type) {
    case MSG_HELLO:
        hello.major = m->hello.major;
        hello.minor = m->hello.minor;
        hello.software = (char *)(m->hello.software ? m->hello.software : "");
        if (m->hello.secret) {
            hello.secret.data = (uint8_t *)m->hello.secret;
            hello.secret.len = WIRE_SECRET_SIZE;
        }
        env.msg_case = QUBESLITE__ENVELOPE__MSG_HELLO;
        env.hello = &hello;
        break;
    case MSG_EXEC:
        argv = strv_to_bin(m->exec.argv, m->exec.argc);
        envv = strv_to_bin(m->exec.env, m->exec.envc);
        if (!argv || !envv) {
            return -ENOMEM;
        }
        exec.n_argv = m->exec.argc;
        exec.argv = argv;
        exec.n_env = m->exec.envc;
        exec.env = envv;
        if (m->exec.cwd) {
            exec.cwd.data = (uint8_t *)m->exec.cwd;
            exec.cwd.len = strlen(m->exec.cwd);
        }
        exec.user = (char *)(m->exec.user ? m->exec.user : "");
        if (m->exec.pty) {
            pty.rows = m->exec.rows;
            pty.cols = m->exec.cols;
            pty.term = (char *)(m->exec.term ? m->exec.term : "");
            exec.pty = &pty;
        }
        exec.wait_wayland = m->exec.wait_wayland;
        exec.stdin_window = m->exec.stdin_window;
        if (m->exec.has_stream_key) {
            exec.stream_key.data = (uint8_t *)m->exec.stream_key;
            exec.stream_key.len = WIRE_STREAM_KEY_SIZE;
        }
        env.msg_case = QUBESLITE__ENVELOPE__MSG_EXEC;
        env.exec = &exec;
        break;
    case MSG_STARTED:
        started.pid = m->started_pid;
        env.msg_case = QUBESLITE__ENVELOPE__MSG_STARTED;
        env.started = &started;
        break;
    case MSG_DATA:
        if (m->data.size == 0 || m->data.size > WIRE_DATA_MAX) {
            return -EINVAL;
        }
        data.stream = (Qubeslite__Stream)m->data.stream;
        data.data.data = (uint8_t *)m->data.data;
        data.data.len = m->data.size;
        env.msg_case = QUBESLITE__ENVELOPE__MSG_DATA;
        env.data = &data;
        break;
    case MSG_STDIN_CLOSE:
        env.msg_case = QUBESLITE__ENVELOPE__MSG_STDIN_CLOSE;
        env.stdin_close = &stdin_close;
        break;
    case MSG_STDIN_ACK:
        stdin_ack.bytes = m->stdin_ack;
        env.msg_case = QUBESLITE__ENVELOPE__MSG_STDIN_ACK;
        env.stdin_ack = &stdin_ack;
        break;
    case MSG_RESIZE:
        resize.rows = m->resize.rows;
        resize.cols = m->resize.cols;
        env.msg_case = QUBESLITE__ENVELOPE__MSG_RESIZE;
        env.resize = &resize;
        break;
    case MSG_SIGNAL:
        sig.signo = m->signo;
        env.msg_case = QUBESLITE__ENVELOPE__MSG_SIGNAL;
        env.signal = &sig;
        break;
    case MSG_EXITED:
        switch (m->exited.kind) {
        case EXIT_CODE:
            exited.result_case = QUBESLITE__EXITED__RESULT_CODE;
            exited.code = m->exited.code;
            break;
        case EXIT_SIGNAL:
            exited.result_case = QUBESLITE__EXITED__RESULT_SIGNAL;
            killed.signo = m->exited.signo;
            killed.core_dumped = m->exited.core_dumped;
            exited.signal = &killed;
            break;
        case EXIT_START_FAILED:
            exited.result_case = QUBESLITE__EXITED__RESULT_START_ERRNO;
            exited.start_errno = m->exited.start_errno;
            break;
        default:
            return -EINVAL;
        }
        env.msg_case = QUBESLITE__ENVELOPE__MSG_EXITED;
        env.exited = &exited;
        break;
    case MSG_EXIT_ACK:
        env.msg_case = QUBESLITE__ENVELOPE__MSG_EXIT_ACK;
        env.exit_ack = &exit_ack;
        break;
    case MSG_ERROR:
        error.code = (Qubeslite__ErrorCode)m->error.code;
        error.message = (char *)(m->error.message ? m->error.message : "");
        env.msg_case = QUBESLITE__ENVELOPE__MSG_ERROR;
        env.error = &error;
        break;
    case MSG_STATUS_REQUEST:
        env.msg_case = QUBESLITE__ENVELOPE__MSG_STATUS_REQUEST;
        env.status_request = &status_request;
        break;
    case MSG_STATUS:
        status.uptime_ms = m->status.uptime_ms;
        status.live_sessions = m->status.live_sessions;
        status.idle_ms = m->status.idle_ms;
        status.idle_timeout_s = m->status.idle_timeout_s;
        env.msg_case = QUBESLITE__ENVELOPE__MSG_STATUS;
        env.status = &status;
        break;
    case MSG_PING:
        ping.nonce = m->nonce;
        env.msg_case = QUBESLITE__ENVELOPE__MSG_PING;
        env.ping = &ping;
        break;
    case MSG_PONG:
        pong.nonce = m->nonce;
        env.msg_case = QUBESLITE__ENVELOPE__MSG_PONG;
        env.pong = &pong;
        break;
    case MSG_SHUTDOWN:
        env.msg_case = QUBESLITE__ENVELOPE__MSG_SHUTDOWN;
        env.shutdown = &shutdown;
        break;
    case MSG_SHUTDOWN_REPLY:
        env.msg_case = QUBESLITE__ENVELOPE__MSG_SHUTDOWN_REPLY;
        env.shutdown_reply = &shutdown_reply;
        break;
    case MSG_CONNECT:
        connect.no_start = m->connect.no_start;
        connect.streams = m->connect.streams;
        env.msg_case = QUBESLITE__ENVELOPE__MSG_CONNECT;
        env.connect = &connect;
        break;
    case MSG_CONNECTED:
        connected.vm_start_us = m->connected.vm_start_us;
        connected.guest_wait_us = m->connected.guest_wait_us;
        env.msg_case = QUBESLITE__ENVELOPE__MSG_CONNECTED;
        env.connected = &connected;
        break;
    case MSG_HOST_STATUS_REQUEST:
        env.msg_case = QUBESLITE__ENVELOPE__MSG_HOST_STATUS_REQUEST;
        env.host_status_request = &host_status_request;
        break;
    case MSG_HOST_STATUS:
        host_status.vm = (char *)(m->host_status.vm ? m->host_status.vm : "");
        host_status.running = m->host_status.running;
        host_status.leases = m->host_status.leases;
        host_status.uptime_ms = m->host_status.uptime_ms;
        host_status.idle_ms = m->host_status.idle_ms;
        host_status.state = (Qubeslite__VmState)m->host_status.state;
        host_status.live_sessions = m->host_status.live_sessions;
        host_status.idle_timeout_s = m->host_status.idle_timeout_s;
        env.msg_case = QUBESLITE__ENVELOPE__MSG_HOST_STATUS;
        env.host_status = &host_status;
        break;
    case MSG_HOST_START:
        env.msg_case = QUBESLITE__ENVELOPE__MSG_HOST_START;
        env.host_start = &host_start;
        break;
    case MSG_HOST_STOP:
        env.msg_case = QUBESLITE__ENVELOPE__MSG_HOST_STOP;
        env.host_stop = &host_stop;
        break;
    case MSG_HOST_STOPPED:
        host_stopped.method = (Qubeslite__StopMethod)m->host_stopped.method;
        host_stopped.stop_ms = m->host_stopped.stop_ms;
        env.msg_case = QUBESLITE__ENVELOPE__MSG_HOST_STOPPED;
        env.host_stopped = &host_stopped;
        break;
    case MSG_CONSOLE_ATTACH:
        console_attach.rows = m->console_attach.rows;
        console_attach.cols = m->console_attach.cols;
        env.msg_case = QUBESLITE__ENVELOPE__MSG_CONSOLE_ATTACH;
        env.console_attach = &console_attach;
        break;
    case MSG_CONSOLE_ATTACHED:
        console_attached.scrollback = m->console_scrollback;
        env.msg_case = QUBESLITE__ENVELOPE__MSG_CONSOLE_ATTACHED;
        env.console_attached = &console_attached;
        break;
    case MSG_ATTACH:
        attach.key.data = (uint8_t *)m->attach_key;
        attach.key.len = WIRE_STREAM_KEY_SIZE;
        env.msg_case = QUBESLITE__ENVELOPE__MSG_ATTACH;
        env.attach = &attach;
        break;
    case MSG_ATTACHED:
        env.msg_case = QUBESLITE__ENVELOPE__MSG_ATTACHED;
        env.attached = &attached;
        break;
    default:
        return -EINVAL;
    }

    size_t body = qubeslite__envelope__get_packed_size(&env);
    if (body > WIRE_FRAME_MAX) {
        return -E2BIG;
    }
    uint8_t *buf = malloc(WIRE_HEADER_SIZE + body);
    if (!buf) {
        return -ENOMEM;
    }
    uint32_t be = htonl((uint32_t)body);
    memcpy(buf, &be, sizeof(be));
    qubeslite__envelope__pack(&env, buf + WIRE_HEADER_SIZE);
    *ret_buf = buf;
    *ret_size = WIRE_HEADER_SIZE + body;
    return 0;
}

/* ---- the frame header ----------------------------------------------------- */

int wire_header_parse(const uint8_t hdr[WIRE_HEADER_SIZE], uint32_t *ret_size) {
    uint32_t be;
    memcpy(&be, hdr, sizeof(be));
    uint32_t n = ntohl(be);
    if (n > WIRE_FRAME_MAX) {
        return -E2BIG;
    }
    *ret_size = n;
    return 0;
}
