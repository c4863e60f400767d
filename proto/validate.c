/* Validation of decoded frames into plain structs: see validate.h. Every
 * pointer into untrusted_* storage that ends up in a Msg points at bytes
 * checked here. */
#include "validate.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rules.h"
#include "util.h"

typedef Qubeslite__Envelope Envelope;

/* Peer text: bounded, no control characters (UTF-8 passes through). */
static bool text_ok(const char *untrusted, size_t max) {
    size_t n = 0;
    for (; untrusted[n]; n++) {
        unsigned char c = (unsigned char)untrusted[n];
        if (n >= max || c < 0x20 || c == 0x7f) {
            return false;
        }
    }
    return true;
}

static bool bytes_no_nul(const ProtobufCBinaryData *untrusted) {
    return untrusted->len == 0 || memchr(untrusted->data, '\0', untrusted->len) == NULL;
}

/* A window size: 1..UINT16_MAX each way. */
static bool winsize_ok(uint32_t rows, uint32_t cols) {
    return rows > 0 && rows <= UINT16_MAX && cols > 0 && cols <= UINT16_MAX;
}

static bool signo_ok(uint32_t signo) {
    return signo > 0 && signo <= WIRE_SIGNAL_MAX;
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

/* Exec's checks, before anything is copied. */
static int exec_check(const Qubeslite__Exec *untrusted) {
    const Qubeslite__Exec *e = untrusted;

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
    if (e->cwd.len > 0 &&
        (e->cwd.len > WIRE_PATH_MAX || e->cwd.data[0] != '/' || !bytes_no_nul(&e->cwd))) {
        return -EINVAL;
    }
    if (e->user && e->user[0] && !user_name_valid(e->user)) {
        return -EINVAL;
    }
    if (e->pty) {
        if (!winsize_ok(e->pty->rows, e->pty->cols)) {
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
    return 0;
}

static int validate_exec(const Qubeslite__Exec *untrusted, Msg *m) {
    const Qubeslite__Exec *e = untrusted;
    MsgExec *x = &m->exec;
    int r;

    r = exec_check(untrusted);
    if (r < 0) {
        return r;
    }
    /* Checked: from here on only copied. argv, env and cwd go into one
     * arena of NUL-terminated strings. */
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

static int validate_data(const Qubeslite__Data *untrusted, Msg *m) {
    if ((unsigned)untrusted->stream > WIRE_STDERR || untrusted->data.len == 0 ||
        untrusted->data.len > WIRE_DATA_MAX) {
        return -EINVAL;
    }
    m->data.stream = (WireStream)untrusted->stream;
    m->data.data = untrusted->data.data;
    m->data.size = untrusted->data.len;
    return 0;
}

static int validate_exited(const Qubeslite__Exited *untrusted, Msg *m) {
    MsgExited *x = &m->exited;

    switch (untrusted->result_case) {
    case QUBESLITE__EXITED__RESULT_CODE:
        if (untrusted->code > WIRE_EXIT_CODE_MAX) {
            return -EINVAL;
        }
        x->kind = EXIT_CODE;
        x->code = untrusted->code;
        return 0;
    case QUBESLITE__EXITED__RESULT_SIGNAL:
        if (!signo_ok(untrusted->signal->signo)) {
            return -EINVAL;
        }
        x->kind = EXIT_SIGNAL;
        x->signo = untrusted->signal->signo;
        x->core_dumped = untrusted->signal->core_dumped;
        return 0;
    case QUBESLITE__EXITED__RESULT_START_ERRNO:
        if (untrusted->start_errno == 0 || untrusted->start_errno > WIRE_ERRNO_MAX) {
            return -EINVAL;
        }
        x->kind = EXIT_START_FAILED;
        x->start_errno = untrusted->start_errno;
        return 0;
    default:
        return -EINVAL;
    }
}

static int validate_host_status(const Qubeslite__HostStatus *untrusted, Msg *m) {
    if (!text_ok(untrusted->vm, WIRE_HOST_STATUS_VM_MAX) ||
        (unsigned)untrusted->state > VM_STOPPING) {
        return -EINVAL;
    }
    m->host_status = (MsgHostStatus){
        .vm = untrusted->vm,
        .running = untrusted->running,
        .leases = untrusted->leases,
        .uptime_ms = untrusted->uptime_ms,
        .idle_ms = untrusted->idle_ms,
        .state = (VmState)untrusted->state,
        .live_sessions = untrusted->live_sessions,
        .idle_timeout_s = untrusted->idle_timeout_s,
    };
    return 0;
}

/* The messages with fields to check; the type is set by the caller. */
static int validate_fields(const Envelope *untrusted_env, Msg *m) {
    const Envelope *u = untrusted_env;

    switch (m->type) {
    case MSG_HELLO:
        if (!text_ok(u->hello->software, WIRE_SOFTWARE_MAX)) {
            return -EINVAL;
        }
        m->hello.major = u->hello->major;
        m->hello.minor = u->hello->minor;
        m->hello.software = u->hello->software;
        /* Either no secret or one of exactly the size the host makes:
         * nothing else could ever match. */
        if (u->hello->secret.len != 0 && u->hello->secret.len != WIRE_SECRET_SIZE) {
            return -EINVAL;
        }
        m->hello.secret = u->hello->secret.len ? u->hello->secret.data : NULL;
        return 0;
    case MSG_EXEC:
        return validate_exec(u->exec, m);
    case MSG_STARTED:
        if (u->started->pid <= 0) {
            return -EINVAL;
        }
        m->started_pid = u->started->pid;
        return 0;
    case MSG_DATA:
        return validate_data(u->data, m);
    case MSG_STDIN_ACK:
        if (u->stdin_ack->bytes == 0 || u->stdin_ack->bytes > WIRE_STDIN_WINDOW_MAX) {
            return -EINVAL;
        }
        m->stdin_ack = u->stdin_ack->bytes;
        return 0;
    case MSG_RESIZE:
        if (!winsize_ok(u->resize->rows, u->resize->cols)) {
            return -EINVAL;
        }
        m->resize.rows = (uint16_t)u->resize->rows;
        m->resize.cols = (uint16_t)u->resize->cols;
        return 0;
    case MSG_SIGNAL:
        if (!signo_ok(u->signal->signo)) {
            return -EINVAL;
        }
        m->signo = u->signal->signo;
        return 0;
    case MSG_EXITED:
        return validate_exited(u->exited, m);
    case MSG_ERROR:
        if (!text_ok(u->error->message, WIRE_STRING_MAX)) {
            return -EINVAL;
        }
        /* A code this side does not know is still an Error. */
        m->error.code = (unsigned)u->error->code <= _WIRE_ERR_LAST ? (WireError)u->error->code
                                                                   : WIRE_ERR_UNSPECIFIED;
        m->error.message = u->error->message;
        return 0;
    case MSG_STATUS:
        m->status.uptime_ms = u->status->uptime_ms;
        m->status.live_sessions = u->status->live_sessions;
        m->status.idle_ms = u->status->idle_ms;
        m->status.idle_timeout_s = u->status->idle_timeout_s;
        return 0;
    case MSG_PING:
        m->nonce = u->ping->nonce;
        return 0;
    case MSG_PONG:
        m->nonce = u->pong->nonce;
        return 0;
    case MSG_CONNECT:
        if (u->connect->streams > WIRE_CONNECT_STREAMS_MAX) {
            return -EINVAL;
        }
        m->connect.no_start = u->connect->no_start;
        m->connect.streams = u->connect->streams;
        return 0;
    case MSG_CONNECTED:
        m->connected.vm_start_us = u->connected->vm_start_us;
        m->connected.guest_wait_us = u->connected->guest_wait_us;
        return 0;
    case MSG_HOST_STATUS:
        return validate_host_status(u->host_status, m);
    case MSG_HOST_STOPPED:
        if ((unsigned)u->host_stopped->method > STOP_KILLED) {
            return -EINVAL;
        }
        m->host_stopped.method = (StopMethod)u->host_stopped->method;
        m->host_stopped.stop_ms = u->host_stopped->stop_ms;
        return 0;
    case MSG_CONSOLE_ATTACH: {
        const Qubeslite__ConsoleAttach *a = u->console_attach;
        if (a->rows > UINT16_MAX || a->cols > UINT16_MAX || (a->rows == 0) != (a->cols == 0)) {
            return -EINVAL;
        }
        m->console_attach.rows = (uint16_t)a->rows;
        m->console_attach.cols = (uint16_t)a->cols;
        return 0;
    }
    case MSG_CONSOLE_ATTACHED:
        if (u->console_attached->scrollback > WIRE_SCROLLBACK_MAX) {
            return -EINVAL;
        }
        m->console_scrollback = u->console_attached->scrollback;
        return 0;
    case MSG_ATTACH:
        if (u->attach->key.len != WIRE_STREAM_KEY_SIZE) {
            return -EINVAL;
        }
        memcpy(m->attach_key, u->attach->key.data, WIRE_STREAM_KEY_SIZE);
        return 0;
    default:
        return 0; /* no fields */
    }
}

/* Which Envelope field is which message. */
static const struct {
    Qubeslite__Envelope__MsgCase msg_case;
    MsgType type;
} envelope_cases[] = {
    {QUBESLITE__ENVELOPE__MSG_HELLO, MSG_HELLO},
    {QUBESLITE__ENVELOPE__MSG_EXEC, MSG_EXEC},
    {QUBESLITE__ENVELOPE__MSG_STARTED, MSG_STARTED},
    {QUBESLITE__ENVELOPE__MSG_DATA, MSG_DATA},
    {QUBESLITE__ENVELOPE__MSG_STDIN_CLOSE, MSG_STDIN_CLOSE},
    {QUBESLITE__ENVELOPE__MSG_STDIN_ACK, MSG_STDIN_ACK},
    {QUBESLITE__ENVELOPE__MSG_RESIZE, MSG_RESIZE},
    {QUBESLITE__ENVELOPE__MSG_SIGNAL, MSG_SIGNAL},
    {QUBESLITE__ENVELOPE__MSG_EXITED, MSG_EXITED},
    {QUBESLITE__ENVELOPE__MSG_EXIT_ACK, MSG_EXIT_ACK},
    {QUBESLITE__ENVELOPE__MSG_ERROR, MSG_ERROR},
    {QUBESLITE__ENVELOPE__MSG_STATUS_REQUEST, MSG_STATUS_REQUEST},
    {QUBESLITE__ENVELOPE__MSG_STATUS, MSG_STATUS},
    {QUBESLITE__ENVELOPE__MSG_PING, MSG_PING},
    {QUBESLITE__ENVELOPE__MSG_PONG, MSG_PONG},
    {QUBESLITE__ENVELOPE__MSG_SHUTDOWN, MSG_SHUTDOWN},
    {QUBESLITE__ENVELOPE__MSG_SHUTDOWN_REPLY, MSG_SHUTDOWN_REPLY},
    {QUBESLITE__ENVELOPE__MSG_CONNECT, MSG_CONNECT},
    {QUBESLITE__ENVELOPE__MSG_CONNECTED, MSG_CONNECTED},
    {QUBESLITE__ENVELOPE__MSG_HOST_STATUS_REQUEST, MSG_HOST_STATUS_REQUEST},
    {QUBESLITE__ENVELOPE__MSG_HOST_STATUS, MSG_HOST_STATUS},
    {QUBESLITE__ENVELOPE__MSG_HOST_START, MSG_HOST_START},
    {QUBESLITE__ENVELOPE__MSG_HOST_STOP, MSG_HOST_STOP},
    {QUBESLITE__ENVELOPE__MSG_HOST_STOPPED, MSG_HOST_STOPPED},
    {QUBESLITE__ENVELOPE__MSG_CONSOLE_ATTACH, MSG_CONSOLE_ATTACH},
    {QUBESLITE__ENVELOPE__MSG_CONSOLE_ATTACHED, MSG_CONSOLE_ATTACHED},
    {QUBESLITE__ENVELOPE__MSG_ATTACH, MSG_ATTACH},
    {QUBESLITE__ENVELOPE__MSG_ATTACHED, MSG_ATTACHED},
};

int msg_validate(const Envelope *untrusted_env, Msg *m) {
    for (size_t i = 0; i < ELEMENTSOF(envelope_cases); i++) {
        if (envelope_cases[i].msg_case == untrusted_env->msg_case) {
            m->type = envelope_cases[i].type;
            return validate_fields(untrusted_env, m);
        }
    }
    return -EBADMSG;
}
