/* The checks every fuzz target applies to what it decoded. */
#include "oracle.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static bool str_equal(const char *a, const char *b) {
    /* NULL and "" mean the same on the wire (a proto3 default). */
    return streq(a ? a : "", b ? b : "");
}

static bool strv_equal(char *const *a, char *const *b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (!streq(a[i], b[i])) {
            return false;
        }
    }
    return a[n] == NULL && b[n] == NULL;
}

static bool exec_equal(const MsgExec *a, const MsgExec *b) {
    if (a->argc != b->argc || a->envc != b->envc || !strv_equal(a->argv, b->argv, a->argc) ||
        !strv_equal(a->env, b->env, a->envc) || !str_equal(a->cwd, b->cwd) ||
        !str_equal(a->user, b->user) || a->pty != b->pty || a->wait_wayland != b->wait_wayland ||
        a->stdin_window != b->stdin_window || a->has_stream_key != b->has_stream_key ||
        (a->has_stream_key && memcmp(a->stream_key, b->stream_key, WIRE_STREAM_KEY_SIZE) != 0)) {
        return false;
    }
    if (a->pty && (a->rows != b->rows || a->cols != b->cols || !str_equal(a->term, b->term))) {
        return false;
    }
    return true;
}

static bool exited_equal(const MsgExited *a, const MsgExited *b) {
    if (a->kind != b->kind) {
        return false;
    }
    switch (a->kind) {
    case EXIT_CODE:
        return a->code == b->code;
    case EXIT_SIGNAL:
        return a->signo == b->signo && a->core_dumped == b->core_dumped;
    case EXIT_START_FAILED:
        return a->start_errno == b->start_errno;
    }
    return false;
}

bool msg_equal(const Msg *a, const Msg *b) {
    if (a->type != b->type) {
        return false;
    }
    switch (a->type) {
    case MSG_HELLO:
        return a->hello.major == b->hello.major && a->hello.minor == b->hello.minor &&
               str_equal(a->hello.software, b->hello.software) &&
               !a->hello.secret == !b->hello.secret &&
               (!a->hello.secret ||
                memcmp(a->hello.secret, b->hello.secret, WIRE_SECRET_SIZE) == 0);
    case MSG_EXEC:
        return exec_equal(&a->exec, &b->exec);
    case MSG_STARTED:
        return a->started_pid == b->started_pid;
    case MSG_DATA:
        return a->data.stream == b->data.stream && a->data.size == b->data.size &&
               memcmp(a->data.data, b->data.data, a->data.size) == 0;
    case MSG_STDIN_ACK:
        return a->stdin_ack == b->stdin_ack;
    case MSG_RESIZE:
        return a->resize.rows == b->resize.rows && a->resize.cols == b->resize.cols;
    case MSG_SIGNAL:
        return a->signo == b->signo;
    case MSG_EXITED:
        return exited_equal(&a->exited, &b->exited);
    case MSG_ERROR:
        return a->error.code == b->error.code && str_equal(a->error.message, b->error.message);
    case MSG_STATUS:
        return a->status.uptime_ms == b->status.uptime_ms &&
               a->status.live_sessions == b->status.live_sessions &&
               a->status.idle_ms == b->status.idle_ms &&
               a->status.idle_timeout_s == b->status.idle_timeout_s;
    case MSG_PING:
    case MSG_PONG:
        return a->nonce == b->nonce;
    case MSG_CONNECT:
        return a->connect.no_start == b->connect.no_start &&
               a->connect.streams == b->connect.streams;
    case MSG_ATTACH:
        return memcmp(a->attach_key, b->attach_key, WIRE_STREAM_KEY_SIZE) == 0;
    case MSG_CONNECTED:
        return a->connected.vm_start_us == b->connected.vm_start_us &&
               a->connected.guest_wait_us == b->connected.guest_wait_us;
    case MSG_HOST_STATUS:
        return str_equal(a->host_status.vm, b->host_status.vm) &&
               a->host_status.running == b->host_status.running &&
               a->host_status.leases == b->host_status.leases &&
               a->host_status.uptime_ms == b->host_status.uptime_ms &&
               a->host_status.idle_ms == b->host_status.idle_ms &&
               a->host_status.state == b->host_status.state &&
               a->host_status.live_sessions == b->host_status.live_sessions &&
               a->host_status.idle_timeout_s == b->host_status.idle_timeout_s;
    case MSG_HOST_STOPPED:
        return a->host_stopped.method == b->host_stopped.method &&
               a->host_stopped.stop_ms == b->host_stopped.stop_ms;
    case MSG_CONSOLE_ATTACH:
        return a->console_attach.rows == b->console_attach.rows &&
               a->console_attach.cols == b->console_attach.cols;
    case MSG_CONSOLE_ATTACHED:
        return a->console_scrollback == b->console_scrollback;
    case MSG_STDIN_CLOSE:
    case MSG_EXIT_ACK:
    case MSG_STATUS_REQUEST:
    case MSG_SHUTDOWN:
    case MSG_SHUTDOWN_REPLY:
    case MSG_HOST_STATUS_REQUEST:
    case MSG_HOST_START:
    case MSG_HOST_STOP:
    case MSG_ATTACHED:
        return true;
    case _MSG_TYPE_MAX:
        break;
    }
    return false;
}

_noreturn_ static void finding(const char *what, const Msg *m, int r) {
    fprintf(stderr, "oracle: %s (%s, r=%d)\n", what, msg_type_name(m->type), r);
    abort();
}

static bool printable(const char *s) {
    for (; s && *s; s++) {
        if ((unsigned char)*s < 0x20 || *s == 0x7f) {
            return false;
        }
    }
    return true;
}

/* What wire.h promises about a validated message. */
static void check_promises(const Msg *m) {
    const MsgExec *x = &m->exec;
    switch (m->type) {
    case MSG_HELLO:
        if (!m->hello.software || !printable(m->hello.software)) {
            finding("Hello software not printable", m, 0);
        }
        break;
    case MSG_EXEC:
        if (x->argc == 0 || x->argc > WIRE_ARGV_MAX || x->argv[x->argc] || !x->argv[0][0] ||
            x->envc > WIRE_ENV_MAX || x->env[x->envc]) {
            finding("Exec argv/env shape", m, 0);
        }
        for (size_t i = 0; i < x->envc; i++) {
            if (x->env[i][0] == '=' || !strchr(x->env[i], '=')) {
                finding("Exec env entry without KEY=", m, 0);
            }
        }
        if ((x->cwd && x->cwd[0] != '/') || (x->user && !x->user[0]) ||
            (x->pty && (x->rows == 0 || x->cols == 0)) || (x->term && !x->term[0]) ||
            x->stdin_window > WIRE_STDIN_WINDOW_MAX || (x->has_stream_key && x->pty)) {
            finding("Exec field out of range", m, 0);
        }
        break;
    case MSG_STARTED:
        if (m->started_pid <= 0) {
            finding("Started pid", m, m->started_pid);
        }
        break;
    case MSG_DATA:
        if (m->data.stream > WIRE_STDERR || m->data.size == 0 || m->data.size > WIRE_DATA_MAX) {
            finding("Data out of range", m, 0);
        }
        break;
    case MSG_RESIZE:
        if (m->resize.rows == 0 || m->resize.cols == 0) {
            finding("Resize to zero", m, 0);
        }
        break;
    case MSG_SIGNAL:
        if (m->signo == 0 || m->signo > 64) {
            finding("Signal out of range", m, (int)m->signo);
        }
        break;
    case MSG_EXITED:
        if ((m->exited.kind == EXIT_CODE && m->exited.code > 255) ||
            (m->exited.kind == EXIT_SIGNAL && (m->exited.signo == 0 || m->exited.signo > 64)) ||
            (m->exited.kind == EXIT_START_FAILED &&
             (m->exited.start_errno == 0 || m->exited.start_errno > 4095)) ||
            m->exited.kind < EXIT_CODE || m->exited.kind > EXIT_START_FAILED) {
            finding("Exited out of range", m, 0);
        }
        break;
    case MSG_ERROR:
        if (m->error.code > WIRE_ERR_SHUTTING_DOWN || !printable(m->error.message)) {
            finding("Error out of range", m, 0);
        }
        break;
    case MSG_HOST_STATUS:
        if (!printable(m->host_status.vm)) {
            finding("HostStatus vm not printable", m, 0);
        }
        if (m->host_status.state > VM_STOPPING) {
            finding("HostStatus state out of range", m, 0);
        }
        break;
    case MSG_HOST_STOPPED:
        if (m->host_stopped.method > STOP_KILLED) {
            finding("HostStopped method out of range", m, 0);
        }
        break;
    case MSG_CONSOLE_ATTACH:
        if ((m->console_attach.rows == 0) != (m->console_attach.cols == 0)) {
            finding("ConsoleAttach half a size", m, 0);
        }
        break;
    case MSG_CONSOLE_ATTACHED:
        if (m->console_scrollback > WIRE_SCROLLBACK_MAX) {
            finding("ConsoleAttached scrollback over the cap", m, 0);
        }
        break;
    default:
        break;
    }
}

void oracle_decode_result(int r) {
    if (r != 0 && r != -E2BIG && r != -EMSGSIZE && r != -ENOMEM && r != -EBADMSG &&
        r != -EINVAL) {
        fprintf(stderr, "oracle: wire_decode returned an undocumented error %d\n", r);
        abort();
    }
}

void oracle_roundtrip(const Msg *m) {
    _cleanup_free_ uint8_t *buf = NULL;
    size_t n;
    uint32_t body;
    Msg again;

    check_promises(m);
    int r = wire_encode(m, &buf, &n);
    if (r < 0) {
        finding("a decoded message does not encode", m, r);
    }
    if (n < WIRE_HEADER_SIZE) {
        finding("frame shorter than its header", m, (int)n);
    }
    r = wire_header_parse(buf, &body);
    if (r < 0 || body != n - WIRE_HEADER_SIZE) {
        finding("frame header does not match its body", m, r);
    }
    r = wire_decode(buf + WIRE_HEADER_SIZE, body, &again);
    if (r < 0) {
        finding("a re-encoded message does not decode", m, r);
    }
    if (!msg_equal(m, &again)) {
        finding("a re-encoded message decodes to a different one", m, 0);
    }
    msg_done(&again);
    if (m->type == MSG_DATA) {
        /* The hand-built header is wire_encode's, and is recognised. */
        uint8_t hdr[WIRE_DATA_HEADER_MAX];
        size_t h = wire_data_header(hdr, m->data.stream, (uint32_t)m->data.size);
        if (h + m->data.size != n || memcmp(hdr, buf, h) != 0) {
            finding("wire_data_header differs from wire_encode", m, (int)h);
        }
        oracle_data_fast_path(buf, n);
        WireStream st;
        uint32_t size;
        if (wire_data_header_parse(buf, n, WIRE_STREAM_BIT(m->data.stream), &st, &size) != (int)h) {
            finding("the Data fast path misses wire_encode's frame", m, (int)h);
        }
    }
}

void oracle_data_fast_path(const uint8_t *frame, size_t n) {
    WireStream st;
    uint32_t size, body;
    Msg m;

    int h = wire_data_header_parse(frame, n, 7u, &st, &size);
    if (h < 0 || (size_t)h > WIRE_DATA_HEADER_MAX || (size_t)h > n) {
        abort();
    }
    if (h == 0) {
        return;
    }
    if (wire_header_parse(frame, &body) < 0 || (uint64_t)body + WIRE_HEADER_SIZE != (uint64_t)h + size) {
        fprintf(stderr, "oracle: the Data fast path took a frame of another length\n");
        abort();
    }
    for (int other = WIRE_STDIN; other <= WIRE_STDERR; other++) {
        WireStream st2;
        uint32_t size2;
        int h2 = wire_data_header_parse(frame, n, WIRE_STREAM_BIT(other), &st2, &size2);
        if ((h2 > 0) != (other == (int)st) || (h2 > 0 && (h2 != h || size2 != size))) {
            fprintf(stderr, "oracle: the Data fast path ignores its streams mask\n");
            abort();
        }
    }
    if (n < (size_t)h + size) {
        return; /* the payload is not all here: nothing to compare */
    }
    int r = wire_decode(frame + WIRE_HEADER_SIZE, body, &m);
    if (r < 0 || m.type != MSG_DATA || m.data.stream != st || m.data.size != size ||
        memcmp(m.data.data, frame + h, size) != 0) {
        fprintf(stderr, "oracle: the Data fast path disagrees with wire_decode (%d)\n", r);
        abort();
    }
    msg_done(&m);
}

int oracle_wrapped(uint32_t field, const uint8_t *data, size_t size) {
    /* key (field << 3 | wire type 2) and length, each at most 5 varint
     * bytes, then the payload. */
    _cleanup_free_ uint8_t *body = malloc(size + 10);
    size_t o = 0;
    Msg m;

    if (!body) {
        abort();
    }
    for (uint64_t v = (uint64_t)field << 3 | 2u;; v >>= 7) {
        body[o++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        if (v <= 0x7f) {
            break;
        }
    }
    for (uint64_t v = size;; v >>= 7) {
        body[o++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        if (v <= 0x7f) {
            break;
        }
    }
    if (size) {
        memcpy(body + o, data, size);
    }
    /* The same body as a frame, for the Data fast path. */
    _cleanup_free_ uint8_t *frame = malloc(WIRE_HEADER_SIZE + o + size);
    if (!frame) {
        abort();
    }
    uint32_t be = htonl((uint32_t)(o + size));
    memcpy(frame, &be, sizeof(be));
    memcpy(frame + WIRE_HEADER_SIZE, body, o + size);
    oracle_data_fast_path(frame, WIRE_HEADER_SIZE + o + size);

    int r = wire_decode(body, o + size, &m);
    oracle_decode_result(r);
    if (r == 0) {
        oracle_roundtrip(&m);
        msg_done(&m);
    }
    return r;
}
