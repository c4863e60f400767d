/* Framing, budgeted decoding and validation of the agent protocol. */
#include "wire.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "qubes-lite.pb-c.h"
#include "rules.h"
#include "util.h"

typedef Qubeslite__Envelope Envelope;

/* protobuf-c allocates freely while unpacking (one block per repeated
 * element, per string, per sub-message); a small hostile frame can ask for
 * many times its size. Every allocation is charged against a budget. */
typedef struct Budget {
    ProtobufCAllocator allocator;
    size_t used, limit;
    bool exhausted;                       /* an allocation was refused */
} Budget;

typedef struct Decoded {
    Budget budget;
    Envelope *env;
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
        b->exhausted = true;
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
    if (d->env) {
        protobuf_c_message_free_unpacked(&d->env->base, &d->budget.allocator);
    }
    free(d);
}

void msg_done(Msg *m) {
    decoded_free(m->_storage);
    free(m->_env);
    m->_storage = NULL;
    m->_env = NULL;
}

const char *msg_type_name(MsgType t) {
    static const char *const names[_MSG_TYPE_MAX] = {
        [MSG_HELLO] = "Hello",
        [MSG_EXEC] = "Exec",
        [MSG_STARTED] = "Started",
        [MSG_DATA] = "Data",
        [MSG_STDIN_CLOSE] = "StdinClose",
        [MSG_STDIN_ACK] = "StdinAck",
        [MSG_RESIZE] = "Resize",
        [MSG_SIGNAL] = "Signal",
        [MSG_EXITED] = "Exited",
        [MSG_EXIT_ACK] = "ExitAck",
        [MSG_ERROR] = "Error",
        [MSG_STATUS_REQUEST] = "StatusRequest",
        [MSG_STATUS] = "Status",
        [MSG_PING] = "Ping",
        [MSG_PONG] = "Pong",
        [MSG_SHUTDOWN] = "Shutdown",
        [MSG_SHUTDOWN_REPLY] = "ShutdownReply",
        [MSG_CONNECT] = "Connect",
        [MSG_CONNECTED] = "Connected",
        [MSG_HOST_STATUS_REQUEST] = "HostStatusRequest",
        [MSG_HOST_STATUS] = "HostStatus",
        [MSG_HOST_START] = "HostStart",
        [MSG_HOST_STOP] = "HostStop",
        [MSG_HOST_STOPPED] = "HostStopped",
        [MSG_CONSOLE_ATTACH] = "ConsoleAttach",
        [MSG_CONSOLE_ATTACHED] = "ConsoleAttached",
        [MSG_ATTACH] = "Attach",
        [MSG_ATTACHED] = "Attached",
    };
    if ((int)t <= 0 || t >= _MSG_TYPE_MAX) {
        return "unknown";
    }
    return names[t];
}

/* ---- validation helpers ------------------------------------------------ */

/* Peer text: bounded, no control characters (UTF-8 passes through). */
static bool text_ok(const char *s, size_t max) {
    size_t n = 0;
    for (; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (n >= max || c < 0x20 || c == 0x7f) {
            return false;
        }
    }
    return true;
}

static bool bytes_no_nul(const ProtobufCBinaryData *b) {
    return b->len == 0 || memchr(b->data, '\0', b->len) == NULL;
}

/* Copies validated byte strings into one NUL-terminated arena:
 * [char *ptrs[n+1]] [strings...]. */
static int copy_strv(const ProtobufCBinaryData *v, size_t n, void **arena, char ***ret) {
    size_t total = (n + 1) * sizeof(char *);
    for (size_t i = 0; i < n; i++) {
        if (__builtin_add_overflow(total, v[i].len + 1, &total)) {
            return -EINVAL;
        }
    }
    char **ptrs = malloc(total);
    if (!ptrs) {
        return -ENOMEM;
    }
    char *p = (char *)(ptrs + n + 1);
    for (size_t i = 0; i < n; i++) {
        ptrs[i] = p;
        if (v[i].len) {
            memcpy(p, v[i].data, v[i].len);
        }
        p[v[i].len] = '\0';
        p += v[i].len + 1;
    }
    ptrs[n] = NULL;
    *arena = ptrs;
    *ret = ptrs;
    return 0;
}

static int validate_exec(const Qubeslite__Exec *e, Msg *m) {
    MsgExec *x = &m->exec;
    int r;

    if (e->n_argv == 0 || e->n_argv > WIRE_ARGV_MAX || e->n_env > WIRE_ENV_MAX) {
        return -EINVAL;
    }
    if (e->argv[0].len == 0) {
        return -EINVAL;
    }
    for (size_t i = 0; i < e->n_argv; i++) {
        if (!bytes_no_nul(&e->argv[i])) {
            return -EINVAL;
        }
    }
    for (size_t i = 0; i < e->n_env; i++) {
        const ProtobufCBinaryData *b = &e->env[i];
        const uint8_t *eq = b->len ? memchr(b->data, '=', b->len) : NULL;
        if (!bytes_no_nul(b) || !eq || eq == b->data) {
            return -EINVAL;
        }
    }
    if (e->cwd.len > 0 && (e->cwd.len > 4095 || e->cwd.data[0] != '/' || !bytes_no_nul(&e->cwd))) {
        return -EINVAL;
    }
    if (e->user && e->user[0] && !user_name_valid(e->user)) {
        return -EINVAL;
    }
    if (e->pty) {
        if (e->pty->rows == 0 || e->pty->rows > UINT16_MAX || e->pty->cols == 0 ||
            e->pty->cols > UINT16_MAX) {
            return -EINVAL;
        }
        if (e->pty->term && e->pty->term[0] && !term_name_valid(e->pty->term)) {
            return -EINVAL;
        }
    }
    if (e->stdin_window > WIRE_STDIN_WINDOW_MAX) {
        return -EINVAL;
    }
    /* A stream connection carries stdin and stdout as plain bytes: not
     * for a pty, whose one master is relayed. */
    if (e->stream_key.len != 0 && (e->stream_key.len != WIRE_STREAM_KEY_SIZE || e->pty)) {
        return -EINVAL;
    }

    /* argv, env and cwd go into one arena of NUL-terminated strings. */
    size_t n = e->n_argv + e->n_env + 1;
    ProtobufCBinaryData *all = calloc(n, sizeof(*all));
    if (!all) {
        return -ENOMEM;
    }
    memcpy(all, e->argv, e->n_argv * sizeof(*all));
    if (e->n_env) {
        memcpy(all + e->n_argv, e->env, e->n_env * sizeof(*all));
    }
    all[n - 1] = e->cwd;
    char **strv;
    r = copy_strv(all, n, &m->_env, &strv);
    free(all);
    if (r < 0) {
        return r;
    }
    /* Split the arena: argv[argc] and env[envc] must both be NULL. The
     * cwd slot becomes argv's terminator after we take its pointer. */
    x->argc = e->n_argv;
    x->envc = e->n_env;
    x->cwd = e->cwd.len ? strv[n - 1] : NULL;
    /* Layout: argv entries, env entries, cwd, NULL. Move env one slot up
     * so that a NULL can sit after argv. */
    for (size_t i = n - 1; i > e->n_argv; i--) {
        strv[i] = strv[i - 1];
    }
    strv[e->n_argv] = NULL;
    strv[n] = NULL;
    x->argv = strv;
    x->env = strv + e->n_argv + 1;
    x->user = (e->user && e->user[0]) ? e->user : NULL;
    x->pty = e->pty != NULL;
    if (e->pty) {
        x->rows = (uint16_t)e->pty->rows;
        x->cols = (uint16_t)e->pty->cols;
        x->term = (e->pty->term && e->pty->term[0]) ? e->pty->term : NULL;
    }
    x->wait_wayland = e->wait_wayland;
    x->stdin_window = e->stdin_window;
    x->has_stream_key = e->stream_key.len != 0;
    if (x->has_stream_key) {
        memcpy(x->stream_key, e->stream_key.data, WIRE_STREAM_KEY_SIZE);
    }
    return 0;
}

static int validate(const Envelope *env, Msg *m) {
    switch (env->msg_case) {
    case QUBESLITE__ENVELOPE__MSG_HELLO:
        if (!text_ok(env->hello->software, 256)) {
            return -EINVAL;
        }
        m->type = MSG_HELLO;
        m->hello.major = env->hello->major;
        m->hello.minor = env->hello->minor;
        m->hello.software = env->hello->software;
        return 0;
    case QUBESLITE__ENVELOPE__MSG_EXEC:
        m->type = MSG_EXEC;
        return validate_exec(env->exec, m);
    case QUBESLITE__ENVELOPE__MSG_STARTED:
        if (env->started->pid <= 0) {
            return -EINVAL;
        }
        m->type = MSG_STARTED;
        m->started_pid = env->started->pid;
        return 0;
    case QUBESLITE__ENVELOPE__MSG_DATA: {
        const Qubeslite__Data *d = env->data;
        if ((unsigned)d->stream > WIRE_STDERR || d->data.len == 0 || d->data.len > WIRE_DATA_MAX) {
            return -EINVAL;
        }
        m->type = MSG_DATA;
        m->data.stream = (WireStream)d->stream;
        m->data.data = d->data.data;
        m->data.size = d->data.len;
        return 0;
    }
    case QUBESLITE__ENVELOPE__MSG_STDIN_CLOSE:
        m->type = MSG_STDIN_CLOSE;
        return 0;
    case QUBESLITE__ENVELOPE__MSG_STDIN_ACK:
        if (env->stdin_ack->bytes == 0 || env->stdin_ack->bytes > WIRE_STDIN_WINDOW_MAX) {
            return -EINVAL;
        }
        m->type = MSG_STDIN_ACK;
        m->stdin_ack = env->stdin_ack->bytes;
        return 0;
    case QUBESLITE__ENVELOPE__MSG_RESIZE:
        if (env->resize->rows == 0 || env->resize->rows > UINT16_MAX || env->resize->cols == 0 ||
            env->resize->cols > UINT16_MAX) {
            return -EINVAL;
        }
        m->type = MSG_RESIZE;
        m->resize.rows = (uint16_t)env->resize->rows;
        m->resize.cols = (uint16_t)env->resize->cols;
        return 0;
    case QUBESLITE__ENVELOPE__MSG_SIGNAL:
        if (env->signal->signo == 0 || env->signal->signo > 64) {
            return -EINVAL;
        }
        m->type = MSG_SIGNAL;
        m->signo = env->signal->signo;
        return 0;
    case QUBESLITE__ENVELOPE__MSG_EXITED: {
        const Qubeslite__Exited *e = env->exited;
        MsgExited *x = &m->exited;
        m->type = MSG_EXITED;
        switch (e->result_case) {
        case QUBESLITE__EXITED__RESULT_CODE:
            if (e->code > 255) {
                return -EINVAL;
            }
            x->kind = EXIT_CODE;
            x->code = e->code;
            return 0;
        case QUBESLITE__EXITED__RESULT_SIGNAL:
            if (e->signal->signo == 0 || e->signal->signo > 64) {
                return -EINVAL;
            }
            x->kind = EXIT_SIGNAL;
            x->signo = e->signal->signo;
            x->core_dumped = e->signal->core_dumped;
            return 0;
        case QUBESLITE__EXITED__RESULT_START_ERRNO:
            if (e->start_errno == 0 || e->start_errno > 4095) {
                return -EINVAL;
            }
            x->kind = EXIT_START_FAILED;
            x->start_errno = e->start_errno;
            return 0;
        default:
            return -EINVAL;
        }
    }
    case QUBESLITE__ENVELOPE__MSG_EXIT_ACK:
        m->type = MSG_EXIT_ACK;
        return 0;
    case QUBESLITE__ENVELOPE__MSG_ERROR:
        if (!text_ok(env->error->message, WIRE_STRING_MAX)) {
            return -EINVAL;
        }
        m->type = MSG_ERROR;
        m->error.code = (unsigned)env->error->code <= WIRE_ERR_SHUTTING_DOWN
                            ? (WireError)env->error->code
                            : WIRE_ERR_UNSPECIFIED;
        m->error.message = env->error->message;
        return 0;
    case QUBESLITE__ENVELOPE__MSG_STATUS_REQUEST:
        m->type = MSG_STATUS_REQUEST;
        return 0;
    case QUBESLITE__ENVELOPE__MSG_STATUS:
        m->type = MSG_STATUS;
        m->status.uptime_ms = env->status->uptime_ms;
        m->status.live_sessions = env->status->live_sessions;
        m->status.idle_ms = env->status->idle_ms;
        m->status.idle_timeout_s = env->status->idle_timeout_s;
        return 0;
    case QUBESLITE__ENVELOPE__MSG_PING:
        m->type = MSG_PING;
        m->nonce = env->ping->nonce;
        return 0;
    case QUBESLITE__ENVELOPE__MSG_PONG:
        m->type = MSG_PONG;
        m->nonce = env->pong->nonce;
        return 0;
    case QUBESLITE__ENVELOPE__MSG_SHUTDOWN:
        m->type = MSG_SHUTDOWN;
        return 0;
    case QUBESLITE__ENVELOPE__MSG_SHUTDOWN_REPLY:
        m->type = MSG_SHUTDOWN_REPLY;
        return 0;
    case QUBESLITE__ENVELOPE__MSG_CONNECT:
        m->type = MSG_CONNECT;
        if (env->connect->streams > WIRE_CONNECT_STREAMS_MAX) {
            return -EINVAL;
        }
        m->connect.no_start = env->connect->no_start;
        m->connect.streams = env->connect->streams;
        return 0;
    case QUBESLITE__ENVELOPE__MSG_CONNECTED:
        m->type = MSG_CONNECTED;
        m->connected.vm_start_us = env->connected->vm_start_us;
        m->connected.guest_wait_us = env->connected->guest_wait_us;
        return 0;
    case QUBESLITE__ENVELOPE__MSG_HOST_STATUS_REQUEST:
        m->type = MSG_HOST_STATUS_REQUEST;
        return 0;
    case QUBESLITE__ENVELOPE__MSG_HOST_STATUS:
        if (!text_ok(env->host_status->vm, 64)) {
            return -EINVAL;
        }
        m->type = MSG_HOST_STATUS;
        m->host_status.vm = env->host_status->vm;
        m->host_status.running = env->host_status->running;
        m->host_status.leases = env->host_status->leases;
        m->host_status.uptime_ms = env->host_status->uptime_ms;
        m->host_status.idle_ms = env->host_status->idle_ms;
        if ((unsigned)env->host_status->state > VM_STOPPING) {
            return -EINVAL;
        }
        m->host_status.state = (VmState)env->host_status->state;
        m->host_status.live_sessions = env->host_status->live_sessions;
        m->host_status.idle_timeout_s = env->host_status->idle_timeout_s;
        return 0;
    case QUBESLITE__ENVELOPE__MSG_HOST_START:
        m->type = MSG_HOST_START;
        return 0;
    case QUBESLITE__ENVELOPE__MSG_HOST_STOP:
        m->type = MSG_HOST_STOP;
        return 0;
    case QUBESLITE__ENVELOPE__MSG_HOST_STOPPED:
        if ((unsigned)env->host_stopped->method > STOP_KILLED) {
            return -EINVAL;
        }
        m->type = MSG_HOST_STOPPED;
        m->host_stopped.method = (StopMethod)env->host_stopped->method;
        m->host_stopped.stop_ms = env->host_stopped->stop_ms;
        return 0;
    case QUBESLITE__ENVELOPE__MSG_CONSOLE_ATTACH: {
        const Qubeslite__ConsoleAttach *a = env->console_attach;
        if (a->rows > UINT16_MAX || a->cols > UINT16_MAX || (a->rows == 0) != (a->cols == 0)) {
            return -EINVAL;
        }
        m->type = MSG_CONSOLE_ATTACH;
        m->console_attach.rows = (uint16_t)a->rows;
        m->console_attach.cols = (uint16_t)a->cols;
        return 0;
    }
    case QUBESLITE__ENVELOPE__MSG_CONSOLE_ATTACHED:
        if (env->console_attached->scrollback > WIRE_SCROLLBACK_MAX) {
            return -EINVAL;
        }
        m->type = MSG_CONSOLE_ATTACHED;
        m->console_scrollback = env->console_attached->scrollback;
        return 0;
    case QUBESLITE__ENVELOPE__MSG_ATTACH:
        if (env->attach->key.len != WIRE_STREAM_KEY_SIZE) {
            return -EINVAL;
        }
        m->type = MSG_ATTACH;
        memcpy(m->attach_key, env->attach->key.data, WIRE_STREAM_KEY_SIZE);
        return 0;
    case QUBESLITE__ENVELOPE__MSG_ATTACHED:
        m->type = MSG_ATTACHED;
        return 0;
    default:
        return -EBADMSG;
    }
}

int wire_decode(const uint8_t *body, size_t size, Msg *ret) {
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
    d->env = qubeslite__envelope__unpack(&d->budget.allocator, size, body);
    if (!d->env) {
        /* protobuf-c does not tell a failed allocation from bad input, and
         * it has freed everything by now (used is back to 0): remember
         * the refusal itself. */
        r = d->budget.exhausted ? -ENOMEM : -EBADMSG;
        free(d);
        return r;
    }
    m._storage = d;
    r = validate(d->env, &m);
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

/* ---- Data frames without protobuf-c ----------------------------------- */

#define TAG_ENVELOPE_DATA ((4u << 3) | 2u) /* Envelope.data, length-delimited */
#define TAG_DATA_STREAM ((1u << 3) | 0u)   /* Data.stream, varint */
#define TAG_DATA_BYTES ((2u << 3) | 2u)    /* Data.data, length-delimited */

static size_t varint_size(uint32_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *varint_put(uint8_t *p, uint32_t v) {
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* A minimal varint of at most 3 bytes (a Data's lengths need no more) from
 * the n bytes at p: its length, or 0 when there is none. */
static size_t varint_get(const uint8_t *p, size_t n, uint32_t *ret) {
    uint32_t v = 0;
    for (size_t i = 0; i < 3 && i < n; i++) {
        v |= (uint32_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            if (i > 0 && p[i] == 0) {
                return 0; /* not minimal: left to protobuf-c */
            }
            *ret = v;
            return i + 1;
        }
    }
    return 0;
}

size_t wire_data_header(uint8_t hdr[WIRE_DATA_HEADER_MAX], WireStream stream, uint32_t size) {
    uint8_t *p = hdr;
    uint32_t data_len = (stream != WIRE_STDIN ? 2u : 0u) + 1u + (uint32_t)varint_size(size) + size;
    uint32_t body = 1u + (uint32_t)varint_size(data_len) + data_len;
    uint32_t be = htonl(body);

    memcpy(p, &be, sizeof(be));
    p += sizeof(be);
    *p++ = TAG_ENVELOPE_DATA;
    p = varint_put(p, data_len);
    if (stream != WIRE_STDIN) {
        /* STREAM_STDIN is proto3's default, which wire_encode omits too. */
        *p++ = TAG_DATA_STREAM;
        *p++ = (uint8_t)stream;
    }
    *p++ = TAG_DATA_BYTES;
    p = varint_put(p, size);
    return (size_t)(p - hdr);
}

/* The part before the payload of a frame body of body_size bytes, of which
 * the n bytes at untrusted hold the start, when it is exactly what
 * wire_data_header() writes: its length, else 0. */
static size_t data_body_prefix(const uint8_t *untrusted, size_t n, uint32_t body_size,
                               unsigned streams, WireStream *ret_stream, uint32_t *ret_size) {
    uint32_t data_len, size;
    WireStream stream = WIRE_STDIN;
    size_t off, k, data_start;

    if (n < 1 || untrusted[0] != TAG_ENVELOPE_DATA) {
        return 0;
    }
    k = varint_get(untrusted + 1, n - 1, &data_len);
    if (k == 0) {
        return 0;
    }
    off = data_start = 1 + k;
    if (n - off >= 1 && untrusted[off] == TAG_DATA_STREAM) {
        if (n - off < 2 || (untrusted[off + 1] != WIRE_STDOUT && untrusted[off + 1] != WIRE_STDERR)) {
            return 0;
        }
        stream = (WireStream)untrusted[off + 1];
        off += 2;
    }
    if (n - off < 1 || untrusted[off] != TAG_DATA_BYTES) {
        return 0;
    }
    off++;
    k = varint_get(untrusted + off, n - off, &size);
    if (k == 0) {
        return 0;
    }
    off += k;
    if (size == 0 || size > WIRE_DATA_MAX || !(streams & WIRE_STREAM_BIT(stream))) {
        return 0;
    }
    /* One Data holding exactly these two fields, and nothing after it. */
    if ((uint64_t)data_len != (uint64_t)(off - data_start) + size ||
        (uint64_t)body_size != (uint64_t)off + size) {
        return 0;
    }
    *ret_stream = stream;
    *ret_size = size;
    return off;
}

int wire_data_header_parse(const uint8_t *p, size_t n, unsigned streams, WireStream *ret_stream,
                           uint32_t *ret_size) {
    uint32_t body;
    if (n < WIRE_HEADER_SIZE || wire_header_parse(p, &body) < 0) {
        return 0;
    }
    size_t k = data_body_prefix(p + WIRE_HEADER_SIZE, n - WIRE_HEADER_SIZE, body, streams,
                                ret_stream, ret_size);
    return k ? (int)(WIRE_HEADER_SIZE + k) : 0;
}

Msg msg_hello(const char *software) {
    return (Msg){
        .type = MSG_HELLO,
        .hello = {.major = WIRE_VERSION_MAJOR, .minor = WIRE_VERSION_MINOR, .software = software},
    };
}

Msg msg_error(WireError code, const char *message) {
    return (Msg){.type = MSG_ERROR, .error = {.code = code, .message = message}};
}

int wire_check_hello(const Msg *m) {
    if (m->type != MSG_HELLO || m->hello.major != WIRE_VERSION_MAJOR) {
        return -EPROTONOSUPPORT;
    }
    return 0;
}

/* ---- blocking helpers -------------------------------------------------- */

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
    size_t got = 0;
    while (got < n) {
        ssize_t k = recv_with_fds(sock, buf + got, n - got, fds, max, count);
        if (k == -ENOTSOCK) {
            int r = loop_read_exact(sock, buf + got, n - got, got == 0 ? ret_eof : NULL);
            return r;
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

/* ---- non-blocking reader/writer ---------------------------------------- */

int wire_reader_read(WireReader *r, int fd, Msg *ret) {
    for (;;) {
        ssize_t k;
        if (r->hdr_got < WIRE_HEADER_SIZE) {
            k = read(fd, r->hdr + r->hdr_got, WIRE_HEADER_SIZE - r->hdr_got);
        } else {
            if (!r->body) {
                int q = wire_header_parse(r->hdr, &r->body_size);
                if (q < 0) {
                    return q;
                }
                r->body = malloc(r->body_size ? r->body_size : 1);
                if (!r->body) {
                    return -ENOMEM;
                }
                r->body_got = 0;
            }
            if (r->body_got == r->body_size) {
                WireStream stream;
                uint32_t size;
                size_t pre = data_body_prefix(r->body, r->body_size, r->body_size,
                                            WIRE_STREAM_BIT(WIRE_STDIN) |
                                                WIRE_STREAM_BIT(WIRE_STDOUT) |
                                                WIRE_STREAM_BIT(WIRE_STDERR),
                                            &stream, &size);
                if (pre > 0) {
                    /* A plain Data frame: its payload is used where it lies
                     * and the body goes with the message (msg_done). */
                    *ret = (Msg){
                        .type = MSG_DATA,
                        .data = {.stream = stream, .data = r->body + pre, .size = size},
                        ._env = r->body,
                    };
                    r->body = NULL;
                    r->hdr_got = 0;
                    return 1;
                }
                int q = wire_decode(r->body, r->body_size, ret);
                free(r->body);
                r->body = NULL;
                r->hdr_got = 0;
                return q < 0 ? q : 1;
            }
            k = read(fd, r->body + r->body_got, r->body_size - r->body_got);
        }
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                return 0;
            }
            return -errno;
        }
        if (k == 0) {
            return (r->hdr_got == 0 && !r->body) ? -ECONNRESET : -EPIPE;
        }
        if (r->hdr_got < WIRE_HEADER_SIZE) {
            r->hdr_got += (size_t)k;
        } else {
            r->body_got += (size_t)k;
        }
    }
}

void wire_reader_done(WireReader *r) {
    free(r->body);
    *r = (WireReader){0};
}

/* Room for n more bytes at the end of the queue. */
static int writer_reserve(WireWriter *w, size_t n) {
    if (w->start == w->end) {
        w->start = w->end = 0;
    }
    if (w->alloc - w->end >= n) {
        return 0;
    }
    /* Compact first; grow only when that is not enough. */
    if (w->start > 0) {
        memmove(w->buf, w->buf + w->start, w->end - w->start);
        w->end -= w->start;
        w->start = 0;
    }
    if (w->alloc - w->end >= n) {
        return 0;
    }
    size_t want = MAX(w->alloc * 2, w->end + n);
    uint8_t *nb = realloc(w->buf, want);
    if (!nb) {
        return -ENOMEM;
    }
    w->buf = nb;
    w->alloc = want;
    return 0;
}

int wire_writer_queue(WireWriter *w, const Msg *m) {
    _cleanup_free_ uint8_t *buf = NULL;
    size_t n;
    int r = wire_encode(m, &buf, &n);
    if (r < 0) {
        return r;
    }
    r = writer_reserve(w, n);
    if (r < 0) {
        return r;
    }
    memcpy(w->buf + w->end, buf, n);
    w->end += n;
    return 0;
}

ssize_t wire_writer_read_data(WireWriter *w, int fd, WireStream stream, size_t max) {
    uint8_t hdr[WIRE_DATA_HEADER_MAX];
    ssize_t k;

    max = MIN(max, (size_t)WIRE_DATA_MAX);
    if (max == 0) {
        return -EINVAL;
    }
    int r = writer_reserve(w, WIRE_DATA_HEADER_MAX + max);
    if (r < 0) {
        return r;
    }
    /* Read behind room for the longest header, then slide the payload
     * down to the header's real length. */
    uint8_t *base = w->buf + w->end;
    do {
        k = read(fd, base + WIRE_DATA_HEADER_MAX, max);
    } while (k < 0 && errno == EINTR);
    if (k <= 0) {
        return k < 0 ? -errno : 0;
    }
    size_t h = wire_data_header(hdr, stream, (uint32_t)k);
    if (h < WIRE_DATA_HEADER_MAX) {
        memmove(base + h, base + WIRE_DATA_HEADER_MAX, (size_t)k);
    }
    memcpy(base, hdr, h);
    w->end += h + (size_t)k;
    return k;
}

int wire_writer_splice_data(WireWriter *w, int pipe_fd, WireStream stream, uint32_t size) {
    if (wire_writer_pending(w) > 0 || w->broken) {
        return -EBUSY;
    }
    if (size == 0 || size > WIRE_DATA_MAX) {
        return -EINVAL;
    }
    w->sp_hdr_len = (uint8_t)wire_data_header(w->sp_hdr, stream, size);
    w->sp_hdr_off = 0;
    w->sp_left = size;
    w->sp_fd = pipe_fd;
    w->sp_active = true;
    return 0;
}

void wire_writer_splice_abort(WireWriter *w, int pipe_fd) {
    if (w->sp_active && w->sp_fd == pipe_fd) {
        /* Mid-frame: the connection cannot carry anything coherent now. */
        w->sp_active = false;
        w->broken = true;
    }
}

bool wire_writer_splicing(const WireWriter *w) {
    return w->sp_active;
}

/* Sends the spliced frame in progress. 0 when it is out, 1 when the socket
 * is full, negative errno on failure. */
static int writer_flush_splice(WireWriter *w, int fd) {
    while (w->sp_active) {
        ssize_t k;
        if (w->sp_hdr_off < w->sp_hdr_len) {
            k = send(fd, w->sp_hdr + w->sp_hdr_off, w->sp_hdr_len - w->sp_hdr_off,
                     MSG_NOSIGNAL | MSG_DONTWAIT | MSG_MORE);
            if (k > 0) {
                w->sp_hdr_off += (uint8_t)k;
            }
        } else {
            k = splice(w->sp_fd, NULL, fd, NULL, w->sp_left, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
            if (k == 0) {
                /* The pipe lost bytes it announced. */
                w->sp_active = false;
                w->broken = true;
                return -EIO;
            }
            if (k > 0) {
                w->sp_left -= (uint32_t)k;
                w->sp_active = w->sp_left > 0;
            }
        }
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno == EAGAIN ? 1 : -errno;
        }
    }
    return 0;
}

int wire_writer_flush(WireWriter *w, int fd) {
    if (w->broken) {
        return -EPIPE;
    }
    int r = writer_flush_splice(w, fd);
    if (r != 0) {
        return r;
    }
    while (w->start < w->end) {
        ssize_t k = send(fd, w->buf + w->start, w->end - w->start, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (k < 0 && errno == ENOTSOCK) {
            k = write(fd, w->buf + w->start, w->end - w->start);
        }
        if (k < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                return 1;
            }
            return -errno;
        }
        w->start += (size_t)k;
    }
    w->start = w->end = 0;
    return 0;
}

size_t wire_writer_pending(const WireWriter *w) {
    size_t n = w->end - w->start;
    if (w->sp_active) {
        n += (size_t)(w->sp_hdr_len - w->sp_hdr_off) + w->sp_left;
    }
    return n;
}

void wire_writer_done(WireWriter *w) {
    free(w->buf);
    *w = (WireWriter){0};
}
