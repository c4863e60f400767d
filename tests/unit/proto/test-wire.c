/* proto/wire: framing, encode/decode round trips, validation of every
 * field, the allocation budget, and the blocking and non-blocking I/O
 * helpers. Invalid frames are built with the generated protobuf-c API so
 * each test breaks exactly one rule. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "qubes-lite.pb-c.h"
#include "tests/fuzz/oracle.h"
#include "util.h"
#include "wire.h"

/* ---- helpers ----------------------------------------------------------- */

static uint8_t *pack_env(const Qubeslite__Envelope *e, size_t *ret_size) {
    size_t n = qubeslite__envelope__get_packed_size(e);
    uint8_t *buf = malloc(n ? n : 1);
    assert_non_null(buf);
    assert_int_equal(qubeslite__envelope__pack(e, buf), n);
    *ret_size = n;
    return buf;
}

/* Packs e and decodes it; returns wire_decode's result. */
static int decode_env(const Qubeslite__Envelope *e, Msg *ret) {
    size_t n;
    _cleanup_free_ uint8_t *buf = pack_env(e, &n);
    Msg m;
    int r = wire_decode(buf, n, &m);
    if (r == 0) {
        if (ret) {
            *ret = m;
        } else {
            msg_done(&m);
        }
    }
    return r;
}

static int decode_raw(const uint8_t *body, size_t n) {
    Msg m;
    int r = wire_decode(body, n, &m);
    if (r == 0) {
        msg_done(&m);
    }
    return r;
}

/* Encodes m, checks the header, decodes the body into *ret. */
static void roundtrip(const Msg *m, Msg *ret) {
    _cleanup_free_ uint8_t *buf = NULL;
    size_t n;
    uint32_t body;
    int r = wire_encode(m, &buf, &n);
    if (r < 0) {
        fail_msg("%s does not encode: %d", msg_type_name(m->type), r);
    }
    assert_true(n >= WIRE_HEADER_SIZE);
    assert_int_equal(wire_header_parse(buf, &body), 0);
    assert_int_equal(body, n - WIRE_HEADER_SIZE);
    r = wire_decode(buf + WIRE_HEADER_SIZE, body, ret);
    if (r < 0) {
        fail_msg("%s does not decode: %d", msg_type_name(m->type), r);
    }
    if (!msg_equal(m, ret)) {
        msg_done(ret);
        fail_msg("%s decodes to a different message", msg_type_name(m->type));
    }
}

static int count_fds(void) {
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    while (readdir(d)) {
        n++;
    }
    closedir(d);
    return n;
}

static void socket_pair(int sv[2], int flags) {
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | flags, 0, sv), 0);
}

/* An Exec envelope with argv {"true"} the tests then break. */
typedef struct ExecEnv {
    Qubeslite__Envelope env;
    Qubeslite__Exec exec;
    Qubeslite__Pty pty;
    ProtobufCBinaryData argv[4];
    ProtobufCBinaryData envv[4];
} ExecEnv;

static void exec_env_init(ExecEnv *x) {
    *x = (ExecEnv){
        .env = QUBESLITE__ENVELOPE__INIT,
        .exec = QUBESLITE__EXEC__INIT,
        .pty = QUBESLITE__PTY__INIT,
    };
    x->argv[0] = (ProtobufCBinaryData){.len = 4, .data = (uint8_t *)"true"};
    x->exec.n_argv = 1;
    x->exec.argv = x->argv;
    x->exec.env = x->envv;
    x->env.msg_case = QUBESLITE__ENVELOPE__MSG_EXEC;
    x->env.exec = &x->exec;
}

static ProtobufCBinaryData bin(const char *s, size_t n) {
    return (ProtobufCBinaryData){.len = n, .data = (uint8_t *)s};
}

static ProtobufCBinaryData bins(const char *s) {
    return bin(s, strlen(s));
}

/* ---- framing ----------------------------------------------------------- */

static void test_header_parse(void **state) {
    uint32_t n = 7;
    const uint8_t zero[4] = {0, 0, 0, 0};
    const uint8_t small[4] = {0, 0, 1, 2};
    const uint8_t cap[4] = {0x00, 0x10, 0x00, 0x00};
    const uint8_t over[4] = {0x00, 0x10, 0x00, 0x01};
    const uint8_t huge[4] = {0xff, 0xff, 0xff, 0xff};

    assert_int_equal(wire_header_parse(zero, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(wire_header_parse(small, &n), 0);
    assert_int_equal(n, 258);
    assert_int_equal(wire_header_parse(cap, &n), 0);
    assert_int_equal(n, WIRE_FRAME_MAX);
    n = 7;
    assert_int_equal(wire_header_parse(over, &n), -E2BIG);
    assert_int_equal(wire_header_parse(huge, &n), -E2BIG);
    assert_int_equal(n, 7); /* ret_* untouched on failure */
}

static void test_decode_over_cap(void **state) {
    /* Refused on its size alone: the content is never looked at. */
    _cleanup_free_ uint8_t *body = calloc(1, WIRE_FRAME_MAX + 1);
    Msg m;
    assert_non_null(body);
    assert_int_equal(wire_decode(body, WIRE_FRAME_MAX + 1, &m), -E2BIG);
}

static void test_encode_over_cap(void **state) {
    /* An Exec whose argv adds up to more than a frame holds. */
    static char big[WIRE_FRAME_MAX / 4];
    char *argv[6] = {big, big, big, big, big, NULL};
    Msg m = {.type = MSG_EXEC, .exec = {.argc = 5, .argv = argv, .env = argv + 5}};
    uint8_t *buf = NULL;
    size_t n;
    memset(big, 'a', sizeof(big) - 1);
    assert_int_equal(wire_encode(&m, &buf, &n), -E2BIG);
    assert_null(buf);
}

static void test_decode_garbage(void **state) {
    const uint8_t truncated[] = {0x0a, 0x05, 0x08}; /* hello, length past the end */
    const uint8_t bad_wire_type[] = {0x0f};
    const uint8_t huge_len[] = {0x12, 0xff, 0xff, 0xff, 0xff, 0x0f};
    assert_int_equal(decode_raw(truncated, sizeof(truncated)), -EBADMSG);
    assert_int_equal(decode_raw(bad_wire_type, sizeof(bad_wire_type)), -EBADMSG);
    assert_int_equal(decode_raw(huge_len, sizeof(huge_len)), -EBADMSG);
}

static void test_oneof_not_set(void **state) {
    Qubeslite__Envelope e = QUBESLITE__ENVELOPE__INIT;
    assert_int_equal(decode_env(&e, NULL), -EBADMSG);
    assert_int_equal(decode_raw((const uint8_t *)"", 0), -EBADMSG);
}

static void test_unknown_field(void **state) {
    /* Field 99 (varint 1) alone: no message set. */
    const uint8_t only_unknown[] = {0x98, 0x06, 0x01};
    assert_int_equal(decode_raw(only_unknown, sizeof(only_unknown)), -EBADMSG);
    /* Field 99 as a length-delimited blob, also alone. */
    const uint8_t unknown_blob[] = {0x9a, 0x06, 0x02, 'h', 'i'};
    assert_int_equal(decode_raw(unknown_blob, sizeof(unknown_blob)), -EBADMSG);
    /* Beside a valid Ping it is skipped, as proto3 wants for newer peers. */
    const uint8_t with_ping[] = {0x98, 0x06, 0x01, 0x72, 0x02, 0x08, 0x2a};
    Msg m;
    assert_int_equal(wire_decode(with_ping, sizeof(with_ping), &m), 0);
    assert_int_equal(m.type, MSG_PING);
    assert_int_equal(m.nonce, 42);
    msg_done(&m);
}

static void test_last_oneof_wins(void **state) {
    /* Hello then Ping in one Envelope: protobuf keeps the last member. */
    const uint8_t both[] = {0x0a, 0x02, 0x08, 0x01, 0x72, 0x02, 0x08, 0x05};
    Msg m;
    assert_int_equal(wire_decode(both, sizeof(both), &m), 0);
    assert_int_equal(m.type, MSG_PING);
    assert_int_equal(m.nonce, 5);
    msg_done(&m);
}

/* ---- round trips of every message type ---------------------------------- */

static void test_roundtrip_all(void **state) {
    static uint8_t bytes[WIRE_DATA_MAX];
    char *argv[] = {"ls", "-l", "", "a b", NULL};
    char *env[] = {"A=1", "B=", "C==x", NULL};
    char *one[] = {"ls", NULL};
    for (size_t i = 0; i < sizeof(bytes); i++) {
        bytes[i] = (uint8_t)(i * 7);
    }
    const Msg msgs[] = {
        msg_hello("qubes-lite test"),
        {.type = MSG_HELLO, .hello = {.major = 9, .minor = 3, .software = ""}},
        {.type = MSG_HELLO,
         .hello = {.major = 1, .minor = 2, .software = "h", .secret = bytes}},
        {.type = MSG_EXEC,
         .exec = {.argc = 4,
                  .argv = argv,
                  .envc = 3,
                  .env = env,
                  .cwd = "/tmp",
                  .user = "user",
                  .pty = true,
                  .rows = 24,
                  .cols = 80,
                  .term = "xterm-256color",
                  .wait_wayland = true,
                  .stdin_window = 65536}},
        {.type = MSG_EXEC, .exec = {.argc = 1, .argv = one, .envc = 0, .env = one + 1}},
        {.type = MSG_EXEC,
         .exec = {.argc = 1, .argv = one, .env = one + 1, .pty = true, .rows = 65535, .cols = 1}},
        {.type = MSG_STARTED, .started_pid = 1234},
        {.type = MSG_DATA, .data = {.stream = WIRE_STDIN, .data = bytes, .size = 1}},
        {.type = MSG_DATA, .data = {.stream = WIRE_STDOUT, .data = bytes, .size = 1000}},
        {.type = MSG_DATA, .data = {.stream = WIRE_STDERR, .data = bytes, .size = WIRE_DATA_MAX}},
        {.type = MSG_STDIN_CLOSE},
        {.type = MSG_STDIN_ACK, .stdin_ack = 4096},
        {.type = MSG_RESIZE, .resize = {.rows = 50, .cols = 132}},
        {.type = MSG_SIGNAL, .signo = 2},
        {.type = MSG_SIGNAL, .signo = 64},
        {.type = MSG_EXITED, .exited = {.kind = EXIT_CODE, .code = 0}},
        {.type = MSG_EXITED, .exited = {.kind = EXIT_CODE, .code = 255}},
        {.type = MSG_EXITED, .exited = {.kind = EXIT_SIGNAL, .signo = 9, .core_dumped = true}},
        {.type = MSG_EXITED, .exited = {.kind = EXIT_START_FAILED, .start_errno = ENOENT}},
        {.type = MSG_EXIT_ACK},
        msg_error(WIRE_ERR_DENIED, "peer not allowed"),
        msg_error(WIRE_ERR_SHUTTING_DOWN, ""),
        {.type = MSG_STATUS_REQUEST},
        {.type = MSG_STATUS,
         .status =
             {.uptime_ms = UINT64_MAX, .live_sessions = 3, .idle_ms = 5, .idle_timeout_s = 600}},
        {.type = MSG_PING, .nonce = 0x0123456789abcdefULL},
        {.type = MSG_PONG, .nonce = 1},
        {.type = MSG_SHUTDOWN},
        {.type = MSG_SHUTDOWN_REPLY},
        {.type = MSG_CONNECT, .connect = {.no_start = true, .streams = 1}},
        {.type = MSG_CONNECTED, .connected = {.vm_start_us = 1500000, .guest_wait_us = 20}},
        {.type = MSG_HOST_STATUS_REQUEST},
        {.type = MSG_HOST_STATUS,
         .host_status =
             {.vm = "banking",
              .running = true,
              .leases = 2,
              .uptime_ms = 10,
              .idle_ms = 20,
              .state = VM_RUNNING,
              .live_sessions = 4,
              .idle_timeout_s = 60}},
        {.type = MSG_HOST_START},
        {.type = MSG_HOST_STOP},
        {.type = MSG_HOST_STOPPED, .host_stopped = {.method = STOP_VMM_STOP, .stop_ms = 1200}},
        {.type = MSG_CONSOLE_ATTACH, .console_attach = {.rows = 24, .cols = 80}},
        {.type = MSG_CONSOLE_ATTACH},
        {.type = MSG_CONSOLE_ATTACHED, .console_scrollback = 65536},
        {.type = MSG_ATTACH, .attach_key = {1, 2, 3, [15] = 0xff}},
        {.type = MSG_ATTACHED},
    };
    bool seen[_MSG_TYPE_MAX] = {false};

    for (size_t i = 0; i < ELEMENTSOF(msgs); i++) {
        Msg back;
        roundtrip(&msgs[i], &back);
        seen[msgs[i].type] = true;
        msg_done(&back);
    }
    for (int t = MSG_HELLO; t < _MSG_TYPE_MAX; t++) {
        if (!seen[t]) {
            fail_msg("no round trip for %s", msg_type_name((MsgType)t));
        }
    }
}

static void test_roundtrip_exec_fields(void **state) {
    /* Beyond equality: the decoded struct has the documented shape. */
    char *argv[] = {"env", "x", NULL};
    char *env[] = {"K=V", NULL};
    Msg m = {.type = MSG_EXEC,
             .exec = {.argc = 2,
                      .argv = argv,
                      .envc = 1,
                      .env = env,
                      .cwd = "/",
                      .pty = true,
                      .rows = 1,
                      .cols = 2}};
    Msg back;
    roundtrip(&m, &back);
    assert_int_equal(back.exec.argc, 2);
    assert_string_equal(back.exec.argv[0], "env");
    assert_string_equal(back.exec.argv[1], "x");
    assert_null(back.exec.argv[2]);
    assert_int_equal(back.exec.envc, 1);
    assert_string_equal(back.exec.env[0], "K=V");
    assert_null(back.exec.env[1]);
    assert_string_equal(back.exec.cwd, "/");
    assert_null(back.exec.user);
    assert_true(back.exec.pty);
    assert_null(back.exec.term); /* empty TERM: the agent's default */
    msg_done(&back);
    msg_done(&back); /* idempotent */
}

static void test_encode_rejects(void **state) {
    uint8_t b = 0;
    uint8_t *buf = NULL;
    size_t n;
    Msg empty = {.type = MSG_DATA, .data = {.stream = WIRE_STDOUT, .data = &b, .size = 0}};
    Msg big = {.type = MSG_DATA,
               .data = {.stream = WIRE_STDOUT, .data = &b, .size = WIRE_DATA_MAX + 1}};
    Msg kind = {.type = MSG_EXITED, .exited = {.kind = 0}};
    Msg type = {.type = _MSG_TYPE_MAX};
    assert_int_equal(wire_encode(&empty, &buf, &n), -EINVAL);
    assert_int_equal(wire_encode(&big, &buf, &n), -EINVAL);
    assert_int_equal(wire_encode(&kind, &buf, &n), -EINVAL);
    assert_int_equal(wire_encode(&type, &buf, &n), -EINVAL);
    assert_null(buf);
}

static void test_type_names(void **state) {
    assert_string_equal(msg_type_name(MSG_HELLO), "Hello");
    assert_string_equal(msg_type_name(MSG_HOST_STATUS), "HostStatus");
    assert_string_equal(msg_type_name(0), "unknown");
    assert_string_equal(msg_type_name(_MSG_TYPE_MAX), "unknown");
    for (int t = MSG_HELLO; t < _MSG_TYPE_MAX; t++) {
        assert_non_null(msg_type_name((MsgType)t));
    }
}

static void test_check_hello(void **state) {
    Msg ok = msg_hello("x");
    Msg newer_minor = msg_hello("x");
    Msg other_major = msg_hello("x");
    Msg not_hello = {.type = MSG_PING};
    newer_minor.hello.minor = 99;
    other_major.hello.major = WIRE_VERSION_MAJOR + 1;
    assert_int_equal(wire_check_hello(&ok), 0);
    assert_int_equal(wire_check_hello(&newer_minor), 0);
    assert_int_equal(wire_check_hello(&other_major), -EPROTONOSUPPORT);
    assert_int_equal(wire_check_hello(&not_hello), -EPROTONOSUPPORT);
}

/* ---- validation: Exec ---------------------------------------------------- */

static void test_exec_valid(void **state) {
    ExecEnv x;
    Msg m;
    exec_env_init(&x);
    x.argv[1] = bins("");
    x.exec.n_argv = 2;
    x.envv[0] = bins("A=");
    x.exec.n_env = 1;
    x.exec.user = "1000";
    assert_int_equal(decode_env(&x.env, &m), 0);
    assert_int_equal(m.type, MSG_EXEC);
    assert_string_equal(m.exec.argv[0], "true");
    assert_string_equal(m.exec.argv[1], "");
    assert_string_equal(m.exec.env[0], "A=");
    assert_string_equal(m.exec.user, "1000");
    assert_null(m.exec.cwd);
    assert_false(m.exec.pty);
    msg_done(&m);
}

static void test_exec_argv(void **state) {
    ExecEnv x;
    exec_env_init(&x);
    x.exec.n_argv = 0;
    assert_int_equal(decode_env(&x.env, NULL), -EINVAL); /* empty argv */

    exec_env_init(&x);
    x.argv[0] = bins("");
    assert_int_equal(decode_env(&x.env, NULL), -EINVAL); /* empty argv[0] */

    exec_env_init(&x);
    x.argv[1] = bin("a\0b", 3);
    x.exec.n_argv = 2;
    assert_int_equal(decode_env(&x.env, NULL), -EINVAL); /* NUL inside */

    exec_env_init(&x);
    x.argv[0] = bin("true\0", 5);
    assert_int_equal(decode_env(&x.env, NULL), -EINVAL); /* trailing NUL */
}

static void test_exec_argv_count(void **state) {
    ExecEnv x;
    _cleanup_free_ ProtobufCBinaryData *many = calloc(WIRE_ARGV_MAX + 1, sizeof(*many));
    assert_non_null(many);
    for (size_t i = 0; i <= WIRE_ARGV_MAX; i++) {
        many[i] = bins("a");
    }
    exec_env_init(&x);
    x.exec.argv = many;
    x.exec.n_argv = WIRE_ARGV_MAX;
    assert_int_equal(decode_env(&x.env, NULL), 0);
    x.exec.n_argv = WIRE_ARGV_MAX + 1;
    assert_int_equal(decode_env(&x.env, NULL), -EINVAL);
    x.exec.n_argv = 1;
    x.exec.env = many;
    x.exec.n_env = WIRE_ENV_MAX + 1;
    many[0] = bins("A=1");
    for (size_t i = 0; i <= WIRE_ENV_MAX; i++) {
        many[i] = bins("A=1");
    }
    x.exec.argv = x.argv;
    assert_int_equal(decode_env(&x.env, NULL), -EINVAL);
}

static void test_exec_env(void **state) {
    const char *bad[] = {"NOEQUALS", "=value", "=", ""};
    ExecEnv x;
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        exec_env_init(&x);
        x.envv[0] = bins("OK=1");
        x.envv[1] = bins(bad[i]);
        x.exec.n_env = 2;
        if (decode_env(&x.env, NULL) != -EINVAL) {
            fail_msg("env entry \"%s\" accepted", bad[i]);
        }
    }
    exec_env_init(&x);
    x.envv[0] = bin("A=b\0c", 5);
    x.exec.n_env = 1;
    assert_int_equal(decode_env(&x.env, NULL), -EINVAL); /* NUL inside */
}

static void test_exec_cwd(void **state) {
    static char longest[4096];
    ExecEnv x;
    Msg m;
    exec_env_init(&x);
    x.exec.cwd = bins("tmp");
    assert_int_equal(decode_env(&x.env, NULL), -EINVAL); /* relative */
    x.exec.cwd = bins("./tmp");
    assert_int_equal(decode_env(&x.env, NULL), -EINVAL);
    x.exec.cwd = bin("/tmp\0x", 6);
    assert_int_equal(decode_env(&x.env, NULL), -EINVAL); /* NUL inside */

    memset(longest, 'a', sizeof(longest));
    longest[0] = '/';
    x.exec.cwd = bin(longest, 4095);
    assert_int_equal(decode_env(&x.env, &m), 0);
    assert_int_equal(strlen(m.exec.cwd), 4095);
    msg_done(&m);
    x.exec.cwd = bin(longest, 4096);
    assert_int_equal(decode_env(&x.env, NULL), -EINVAL); /* over PATH_MAX */

    x.exec.cwd = bins("/home/user");
    assert_int_equal(decode_env(&x.env, &m), 0);
    assert_string_equal(m.exec.cwd, "/home/user");
    msg_done(&m);
}

static void test_exec_user(void **state) {
    const char *good[] = {"root",       "user",    "a", "1000",
                          "first.last", "svc_x-1", "A", "abcdefghijklmnopqrstuvwxyz012345"};
    const char *bad[] = {
        "-root", "a b",  "a/b", "root:x", "ab\n", "\xc3\xa9", "abcdefghijklmnopqrstuvwxyz0123456",
        "$USER", "a\x7f"};
    ExecEnv x;
    Msg m;
    for (size_t i = 0; i < ELEMENTSOF(good); i++) {
        exec_env_init(&x);
        x.exec.user = (char *)good[i];
        if (decode_env(&x.env, &m) != 0) {
            fail_msg("user \"%s\" refused", good[i]);
        }
        assert_string_equal(m.exec.user, good[i]);
        msg_done(&m);
    }
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        exec_env_init(&x);
        x.exec.user = (char *)bad[i];
        if (decode_env(&x.env, NULL) != -EINVAL) {
            fail_msg("user \"%s\" accepted", bad[i]);
        }
    }
    exec_env_init(&x);
    x.exec.user = "";
    assert_int_equal(decode_env(&x.env, &m), 0);
    assert_null(m.exec.user); /* empty: the agent's default user */
    msg_done(&m);
}

static void test_exec_pty(void **state) {
    ExecEnv x;
    Msg m;
    exec_env_init(&x);
    x.exec.pty = &x.pty;
    x.pty.rows = 24;
    x.pty.cols = 80;
    x.pty.term = "xterm-256color";
    assert_int_equal(decode_env(&x.env, &m), 0);
    assert_true(m.exec.pty);
    assert_int_equal(m.exec.rows, 24);
    assert_int_equal(m.exec.cols, 80);
    assert_string_equal(m.exec.term, "xterm-256color");
    msg_done(&m);

    x.pty.rows = 65535;
    x.pty.cols = 65535;
    assert_int_equal(decode_env(&x.env, NULL), 0);
    x.pty.rows = 0;
    assert_int_equal(decode_env(&x.env, NULL), -EINVAL);
    x.pty.rows = 65536;
    assert_int_equal(decode_env(&x.env, NULL), -EINVAL);
    x.pty.rows = 24;
    x.pty.cols = 0;
    assert_int_equal(decode_env(&x.env, NULL), -EINVAL);
    x.pty.cols = 65536;
    assert_int_equal(decode_env(&x.env, NULL), -EINVAL);
    x.pty.cols = UINT32_MAX;
    assert_int_equal(decode_env(&x.env, NULL), -EINVAL);
}

static void test_exec_term(void **state) {
    static char longest[66];
    const char *good[] = {"xterm", "xterm-256color", "screen.xterm", "rxvt+x", "a_b", "vt100"};
    const char *bad[] = {"xterm 256", "a;b", "../x", "x\ty", "$TERM", "x\x1b"};
    ExecEnv x;
    exec_env_init(&x);
    x.exec.pty = &x.pty;
    x.pty.rows = 1;
    x.pty.cols = 1;
    for (size_t i = 0; i < ELEMENTSOF(good); i++) {
        x.pty.term = (char *)good[i];
        if (decode_env(&x.env, NULL) != 0) {
            fail_msg("TERM \"%s\" refused", good[i]);
        }
    }
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        x.pty.term = (char *)bad[i];
        if (decode_env(&x.env, NULL) != -EINVAL) {
            fail_msg("TERM \"%s\" accepted", bad[i]);
        }
    }
    memset(longest, 'x', 64);
    x.pty.term = longest;
    assert_int_equal(decode_env(&x.env, NULL), 0);
    longest[64] = 'x';
    assert_int_equal(decode_env(&x.env, NULL), -EINVAL); /* over 64 */
}

static void test_exec_stdin_window(void **state) {
    ExecEnv x;
    exec_env_init(&x);
    x.exec.stdin_window = WIRE_STDIN_WINDOW_MAX;
    assert_int_equal(decode_env(&x.env, NULL), 0);
    x.exec.stdin_window = WIRE_STDIN_WINDOW_MAX + 1;
    assert_int_equal(decode_env(&x.env, NULL), -EINVAL);
    /* 4 MiB: an agent holds about the window per session. */
    assert_int_equal(WIRE_STDIN_WINDOW_MAX, 4u * 1024u * 1024u);
    x.exec.stdin_window = 16u * 1024u * 1024u;
    assert_int_equal(decode_env(&x.env, NULL), -EINVAL);
}

/* ---- validation: the other messages --------------------------------------- */

static void test_data(void **state) {
    static uint8_t bytes[WIRE_DATA_MAX + 1];
    Qubeslite__Envelope e = QUBESLITE__ENVELOPE__INIT;
    Qubeslite__Data d = QUBESLITE__DATA__INIT;
    Msg m;
    e.msg_case = QUBESLITE__ENVELOPE__MSG_DATA;
    e.data = &d;
    d.stream = QUBESLITE__STREAM__STREAM_STDERR;
    d.data.data = bytes;

    d.data.len = 0;
    assert_int_equal(decode_env(&e, NULL), -EINVAL); /* empty */
    d.data.len = WIRE_DATA_MAX + 1;
    assert_int_equal(decode_env(&e, NULL), -EINVAL); /* over 64 KiB */
    d.data.len = WIRE_DATA_MAX;
    assert_int_equal(decode_env(&e, &m), 0);
    assert_int_equal(m.data.size, WIRE_DATA_MAX);
    assert_int_equal(m.data.stream, WIRE_STDERR);
    msg_done(&m);

    d.data.len = 1;
    d.stream = 3;
    assert_int_equal(decode_env(&e, NULL), -EINVAL); /* bad stream */
    d.stream = -1;
    assert_int_equal(decode_env(&e, NULL), -EINVAL);
}

/* The hand-built Data header: for every stream and the size boundaries it
 * is byte for byte what wire_encode writes, and the parser gives it back. */
static void test_data_header(void **state) {
    static uint8_t payload[WIRE_DATA_MAX];
    static const uint32_t sizes[] = {1, 2, 127, 128, 16383, 16384, 65535, WIRE_DATA_MAX};
    memset(payload, 'x', sizeof(payload));
    for (int st = WIRE_STDIN; st <= WIRE_STDERR; st++) {
        for (size_t i = 0; i < ELEMENTSOF(sizes); i++) {
            Msg m = {.type = MSG_DATA,
                     .data = {.stream = (WireStream)st, .data = payload, .size = sizes[i]}};
            _cleanup_free_ uint8_t *buf = NULL;
            uint8_t hdr[WIRE_DATA_HEADER_MAX];
            size_t n;
            assert_int_equal(wire_encode(&m, &buf, &n), 0);
            size_t h = wire_data_header(hdr, (WireStream)st, sizes[i]);
            assert_true(h <= WIRE_DATA_HEADER_MAX);
            assert_int_equal(h + sizes[i], n);
            assert_memory_equal(hdr, buf, h);

            WireStream got_stream;
            uint32_t got_size;
            /* The whole frame, and the header alone, are recognised. */
            assert_int_equal(wire_data_header_parse(buf, n, 7u, &got_stream, &got_size), (int)h);
            assert_int_equal(got_stream, st);
            assert_int_equal(got_size, sizes[i]);
            assert_int_equal(wire_data_header_parse(buf, h, WIRE_STREAM_BIT(st), &got_stream,
                                                    &got_size),
                             (int)h);
            /* Too short to tell, or a stream not allowed here. */
            assert_int_equal(wire_data_header_parse(buf, h - 1, 7u, &got_stream, &got_size), 0);
            assert_int_equal(
                wire_data_header_parse(buf, n, 7u & ~WIRE_STREAM_BIT(st), &got_stream, &got_size),
                0);
        }
    }
}

/* Anything but the exact layout is left to wire_decode. */
static void test_data_header_parse_rejects(void **state) {
    WireStream st;
    uint32_t size;
    /* body 6: Envelope.data(4) { stream 1, data "ab" } */
    uint8_t ok[] = {0, 0, 0, 8, 0x22, 6, 0x08, 1, 0x12, 2, 'a', 'b'};
    assert_int_equal(wire_data_header_parse(ok, sizeof(ok), 7u, &st, &size), 10);
    assert_int_equal(size, 2);

    uint8_t v[sizeof(ok)];
#define REJECT(idx, val)                                                                           \
    do {                                                                                           \
        memcpy(v, ok, sizeof(ok));                                                                 \
        v[idx] = (val);                                                                            \
        assert_int_equal(wire_data_header_parse(v, sizeof(v), 7u, &st, &size), 0);               \
    } while (0)
    REJECT(3, 9);    /* frame longer than the Data: more fields after it */
    REJECT(3, 7);    /* frame shorter than the Data */
    REJECT(4, 0x1a); /* another Envelope field */
    REJECT(5, 7);    /* Data length off by one */
    REJECT(7, 0);    /* stream 0 written out: valid, but not our layout */
    REJECT(7, 3);    /* no such stream */
    REJECT(6, 0x10); /* a field other than stream */
    REJECT(8, 0x1a); /* a field other than data */
    REJECT(9, 3);    /* data length past the frame */
#undef REJECT
    /* Empty data. */
    uint8_t empty[] = {0, 0, 0, 6, 0x22, 4, 0x08, 1, 0x12, 0};
    assert_int_equal(wire_data_header_parse(empty, sizeof(empty), 7u, &st, &size), 0);
    /* A length as a non-minimal varint. */
    uint8_t long_varint[] = {0, 0, 0, 9, 0x22, 7, 0x08, 1, 0x12, 0x82, 0x00, 'a', 'b'};
    assert_int_equal(wire_data_header_parse(long_varint, sizeof(long_varint), 7u, &st, &size), 0);
    Msg m;
    assert_int_equal(wire_decode(long_varint + 4, sizeof(long_varint) - 4, &m), 0);
    msg_done(&m);
    /* Over the frame cap, and over WIRE_DATA_MAX. */
    uint8_t big[] = {0, 0x10, 0, 1, 0x22};
    assert_int_equal(wire_data_header_parse(big, sizeof(big), 7u, &st, &size), 0);
    uint8_t huge[WIRE_DATA_HEADER_MAX];
    size_t h = wire_data_header(huge, WIRE_STDOUT, WIRE_DATA_MAX);
    huge[h - 1]++; /* 65536 is 0x80 0x80 0x04: 0x05 claims 81920 bytes */
    assert_int_equal(wire_data_header_parse(huge, h, 7u, &st, &size), 0);
}

/* A Data frame read through WireReader (its fast path) equals the decoded
 * one, and so does one the fast path leaves to wire_decode. */
static void test_reader_data_fast_path(void **state) {
    _cleanup_close_pair_ int sv[2] = {-EBADF, -EBADF};
    WireReader rd = {0};
    uint8_t hdr[WIRE_DATA_HEADER_MAX];
    uint8_t payload[1000];
    Msg m;
    for (size_t i = 0; i < sizeof(payload); i++) {
        payload[i] = (uint8_t)i;
    }
    socket_pair(sv, SOCK_NONBLOCK);
    for (int st = WIRE_STDIN; st <= WIRE_STDERR; st++) {
        size_t h = wire_data_header(hdr, (WireStream)st, sizeof(payload));
        assert_int_equal(write(sv[1], hdr, h), (ssize_t)h);
        assert_int_equal(write(sv[1], payload, sizeof(payload)), (ssize_t)sizeof(payload));
        assert_int_equal(wire_reader_read(&rd, sv[0], &m), 1);
        assert_int_equal(m.type, MSG_DATA);
        assert_int_equal(m.data.stream, st);
        assert_int_equal(m.data.size, sizeof(payload));
        assert_memory_equal(m.data.data, payload, sizeof(payload));
        msg_done(&m);
    }
    /* Stream 0 written out: decoded by protobuf-c, same message. */
    uint8_t explicit0[] = {0, 0, 0, 7, 0x22, 5, 0x08, 0, 0x12, 1, 'z'};
    assert_int_equal(write(sv[1], explicit0, sizeof(explicit0)), (ssize_t)sizeof(explicit0));
    assert_int_equal(wire_reader_read(&rd, sv[0], &m), 1);
    assert_int_equal(m.type, MSG_DATA);
    assert_int_equal(m.data.stream, WIRE_STDIN);
    assert_int_equal(m.data.size, 1);
    msg_done(&m);
    /* Bad stream: the same error as wire_decode's. */
    uint8_t bad[] = {0, 0, 0, 7, 0x22, 5, 0x08, 3, 0x12, 1, 'z'};
    assert_int_equal(write(sv[1], bad, sizeof(bad)), (ssize_t)sizeof(bad));
    assert_int_equal(wire_reader_read(&rd, sv[0], &m), -EINVAL);
    wire_reader_done(&rd);
}

/* A spliced frame goes out whole before what was queued after it. */
static void test_writer_splice(void **state) {
    _cleanup_close_pair_ int sv[2] = {-EBADF, -EBADF};
    _cleanup_close_pair_ int p[2] = {-EBADF, -EBADF};
    WireWriter w = {0};
    WireReader rd = {0};
    Msg m;
    socket_pair(sv, SOCK_NONBLOCK);
    assert_int_equal(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
    assert_int_equal(write(p[1], "hello", 5), 5);

    assert_int_equal(wire_writer_splice_data(&w, p[0], WIRE_STDERR, 5), 0);
    assert_true(wire_writer_splicing(&w));
    Msg ping = {.type = MSG_PING, .nonce = 9};
    assert_int_equal(wire_writer_queue(&w, &ping), 0);
    assert_int_equal(wire_writer_splice_data(&w, p[0], WIRE_STDERR, 1), -EBUSY);
    assert_int_equal(wire_writer_flush(&w, sv[1]), 0);
    assert_false(wire_writer_splicing(&w));
    assert_int_equal(wire_writer_pending(&w), 0);

    assert_int_equal(wire_reader_read(&rd, sv[0], &m), 1);
    assert_int_equal(m.type, MSG_DATA);
    assert_int_equal(m.data.stream, WIRE_STDERR);
    assert_int_equal(m.data.size, 5);
    assert_memory_equal(m.data.data, "hello", 5);
    msg_done(&m);
    assert_int_equal(wire_reader_read(&rd, sv[0], &m), 1);
    assert_int_equal(m.type, MSG_PING);
    msg_done(&m);

    /* The pipe announced more than it holds: the frame breaks the wire. */
    assert_int_equal(write(p[1], "ab", 2), 2);
    assert_int_equal(wire_writer_splice_data(&w, p[0], WIRE_STDOUT, 3), 0);
    p[1] = safe_close(p[1]);
    assert_int_equal(wire_writer_flush(&w, sv[1]), -EIO);
    assert_int_equal(wire_writer_flush(&w, sv[1]), -EPIPE);
    wire_writer_done(&w);

    /* Aborted mid-frame: every flush fails from then on. */
    assert_int_equal(wire_writer_splice_data(&w, p[0], WIRE_STDOUT, 1), 0);
    wire_writer_splice_abort(&w, p[0] + 100); /* another fd: no effect */
    assert_true(wire_writer_splicing(&w));
    wire_writer_splice_abort(&w, p[0]);
    assert_false(wire_writer_splicing(&w));
    assert_int_equal(wire_writer_flush(&w, sv[1]), -EPIPE);
    wire_writer_done(&w);
    wire_reader_done(&rd);
}

/* Reading straight into a Data frame. */
static void test_writer_read_data(void **state) {
    _cleanup_close_pair_ int sv[2] = {-EBADF, -EBADF};
    _cleanup_close_pair_ int p[2] = {-EBADF, -EBADF};
    WireWriter w = {0};
    WireReader rd = {0};
    Msg m;
    socket_pair(sv, SOCK_NONBLOCK);
    assert_int_equal(pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
    assert_int_equal(wire_writer_read_data(&w, p[0], WIRE_STDIN, 10), -EAGAIN);
    assert_int_equal(wire_writer_pending(&w), 0);
    assert_int_equal(write(p[1], "0123456789", 10), 10);
    assert_int_equal(wire_writer_read_data(&w, p[0], WIRE_STDIN, 4), 4);
    assert_int_equal(wire_writer_read_data(&w, p[0], WIRE_STDOUT, 100), 6);
    p[1] = safe_close(p[1]);
    assert_int_equal(wire_writer_read_data(&w, p[0], WIRE_STDOUT, 100), 0);
    assert_int_equal(wire_writer_flush(&w, sv[1]), 0);
    assert_int_equal(wire_reader_read(&rd, sv[0], &m), 1);
    assert_int_equal(m.data.stream, WIRE_STDIN);
    assert_int_equal(m.data.size, 4);
    assert_memory_equal(m.data.data, "0123", 4);
    msg_done(&m);
    assert_int_equal(wire_reader_read(&rd, sv[0], &m), 1);
    assert_int_equal(m.data.stream, WIRE_STDOUT);
    assert_memory_equal(m.data.data, "456789", 6);
    msg_done(&m);
    wire_writer_done(&w);
    wire_reader_done(&rd);
}

static void test_started(void **state) {
    Qubeslite__Envelope e = QUBESLITE__ENVELOPE__INIT;
    Qubeslite__Started s = QUBESLITE__STARTED__INIT;
    e.msg_case = QUBESLITE__ENVELOPE__MSG_STARTED;
    e.started = &s;
    s.pid = 0;
    assert_int_equal(decode_env(&e, NULL), -EINVAL);
    s.pid = -5;
    assert_int_equal(decode_env(&e, NULL), -EINVAL);
    s.pid = 1;
    assert_int_equal(decode_env(&e, NULL), 0);
}

static void test_resize(void **state) {
    Qubeslite__Envelope e = QUBESLITE__ENVELOPE__INIT;
    Qubeslite__Resize r = QUBESLITE__RESIZE__INIT;
    e.msg_case = QUBESLITE__ENVELOPE__MSG_RESIZE;
    e.resize = &r;
    r.rows = 0;
    r.cols = 80;
    assert_int_equal(decode_env(&e, NULL), -EINVAL);
    r.rows = 65536;
    assert_int_equal(decode_env(&e, NULL), -EINVAL);
    r.rows = 24;
    r.cols = 0;
    assert_int_equal(decode_env(&e, NULL), -EINVAL);
    r.cols = 70000;
    assert_int_equal(decode_env(&e, NULL), -EINVAL);
    r.cols = 65535;
    assert_int_equal(decode_env(&e, NULL), 0);
}

static void test_signal(void **state) {
    Qubeslite__Envelope e = QUBESLITE__ENVELOPE__INIT;
    Qubeslite__Signal s = QUBESLITE__SIGNAL__INIT;
    e.msg_case = QUBESLITE__ENVELOPE__MSG_SIGNAL;
    e.signal = &s;
    s.signo = 0;
    assert_int_equal(decode_env(&e, NULL), -EINVAL);
    s.signo = 65;
    assert_int_equal(decode_env(&e, NULL), -EINVAL);
    s.signo = 1;
    assert_int_equal(decode_env(&e, NULL), 0);
    s.signo = 64;
    assert_int_equal(decode_env(&e, NULL), 0);
}

static void test_exited(void **state) {
    Qubeslite__Envelope e = QUBESLITE__ENVELOPE__INIT;
    Qubeslite__Exited x = QUBESLITE__EXITED__INIT;
    Qubeslite__Exited__Killed k = QUBESLITE__EXITED__KILLED__INIT;
    Msg m;
    e.msg_case = QUBESLITE__ENVELOPE__MSG_EXITED;
    e.exited = &x;

    assert_int_equal(decode_env(&e, NULL), -EINVAL); /* no result set */

    x.result_case = QUBESLITE__EXITED__RESULT_CODE;
    x.code = 255;
    assert_int_equal(decode_env(&e, &m), 0);
    assert_int_equal(m.exited.kind, EXIT_CODE);
    assert_int_equal(m.exited.code, 255);
    msg_done(&m);
    x.code = 0;
    assert_int_equal(decode_env(&e, NULL), 0); /* code 0 set explicitly */
    x.code = 256;
    assert_int_equal(decode_env(&e, NULL), -EINVAL);

    x.result_case = QUBESLITE__EXITED__RESULT_SIGNAL;
    x.signal = &k;
    k.signo = 0;
    assert_int_equal(decode_env(&e, NULL), -EINVAL);
    k.signo = 65;
    assert_int_equal(decode_env(&e, NULL), -EINVAL);
    k.signo = 11;
    k.core_dumped = true;
    assert_int_equal(decode_env(&e, &m), 0);
    assert_int_equal(m.exited.kind, EXIT_SIGNAL);
    assert_int_equal(m.exited.signo, 11);
    assert_true(m.exited.core_dumped);
    msg_done(&m);

    x.result_case = QUBESLITE__EXITED__RESULT_START_ERRNO;
    x.start_errno = 0;
    assert_int_equal(decode_env(&e, NULL), -EINVAL);
    x.start_errno = 4096;
    assert_int_equal(decode_env(&e, NULL), -EINVAL);
    x.start_errno = 4095;
    assert_int_equal(decode_env(&e, NULL), 0);
    x.start_errno = ENOENT;
    assert_int_equal(decode_env(&e, &m), 0);
    assert_int_equal(m.exited.kind, EXIT_START_FAILED);
    assert_int_equal(m.exited.start_errno, ENOENT);
    msg_done(&m);
}

static void test_error(void **state) {
    static char longest[WIRE_STRING_MAX + 2];
    Qubeslite__Envelope e = QUBESLITE__ENVELOPE__INIT;
    Qubeslite__Error x = QUBESLITE__ERROR__INIT;
    Msg m;
    e.msg_case = QUBESLITE__ENVELOPE__MSG_ERROR;
    e.error = &x;
    x.code = QUBESLITE__ERROR_CODE__ERROR_VERSION;
    x.message = "version 2 is not supported";
    assert_int_equal(decode_env(&e, &m), 0);
    assert_int_equal(m.error.code, WIRE_ERR_VERSION);
    assert_string_equal(m.error.message, "version 2 is not supported");
    msg_done(&m);

    x.code = 1000; /* a code from a newer peer */
    assert_int_equal(decode_env(&e, &m), 0);
    assert_int_equal(m.error.code, WIRE_ERR_UNSPECIFIED);
    msg_done(&m);

    x.message = "two\nlines";
    assert_int_equal(decode_env(&e, NULL), -EINVAL);
    x.message = "bell\a";
    assert_int_equal(decode_env(&e, NULL), -EINVAL);
    x.message = "del\x7f";
    assert_int_equal(decode_env(&e, NULL), -EINVAL);
    x.message = "caf\xc3\xa9"; /* UTF-8 passes through */
    assert_int_equal(decode_env(&e, NULL), 0);

    memset(longest, 'm', WIRE_STRING_MAX);
    x.message = longest;
    assert_int_equal(decode_env(&e, NULL), 0);
    longest[WIRE_STRING_MAX] = 'm';
    assert_int_equal(decode_env(&e, NULL), -EINVAL);
}

static void test_hello(void **state) {
    static char longest[258];
    Qubeslite__Envelope e = QUBESLITE__ENVELOPE__INIT;
    Qubeslite__Hello h = QUBESLITE__HELLO__INIT;
    Msg m;
    e.msg_case = QUBESLITE__ENVELOPE__MSG_HELLO;
    e.hello = &h;
    h.major = 1;
    h.minor = 7;
    assert_int_equal(decode_env(&e, &m), 0);
    assert_int_equal(m.hello.major, 1);
    assert_int_equal(m.hello.minor, 7);
    assert_string_equal(m.hello.software, "");
    msg_done(&m);
    h.software = "agent\r";
    assert_int_equal(decode_env(&e, NULL), -EINVAL);
    memset(longest, 's', 256);
    h.software = longest;
    assert_int_equal(decode_env(&e, NULL), 0);
    longest[256] = 's';
    assert_int_equal(decode_env(&e, NULL), -EINVAL);
}

static void test_host_status(void **state) {
    static char longest[66];
    Qubeslite__Envelope e = QUBESLITE__ENVELOPE__INIT;
    Qubeslite__HostStatus h = QUBESLITE__HOST_STATUS__INIT;
    e.msg_case = QUBESLITE__ENVELOPE__MSG_HOST_STATUS;
    e.host_status = &h;
    memset(longest, 'v', 64);
    h.vm = longest;
    assert_int_equal(decode_env(&e, NULL), 0);
    longest[64] = 'v';
    assert_int_equal(decode_env(&e, NULL), -EINVAL);
    h.vm = "vm\x1b[31m";
    assert_int_equal(decode_env(&e, NULL), -EINVAL);
    h.vm = "vm";
    h.state = QUBESLITE__VM_STATE__VM_STATE_STOPPING;
    assert_int_equal(decode_env(&e, NULL), 0);
    h.state = (Qubeslite__VmState)4;
    assert_int_equal(decode_env(&e, NULL), -EINVAL);
}

static void test_host_stopped(void **state) {
    Qubeslite__Envelope e = QUBESLITE__ENVELOPE__INIT;
    Qubeslite__HostStopped h = QUBESLITE__HOST_STOPPED__INIT;
    e.msg_case = QUBESLITE__ENVELOPE__MSG_HOST_STOPPED;
    e.host_stopped = &h;
    h.method = QUBESLITE__STOP_METHOD__STOP_KILLED;
    assert_int_equal(decode_env(&e, NULL), 0);
    h.method = (Qubeslite__StopMethod)4;
    assert_int_equal(decode_env(&e, NULL), -EINVAL);
}

static void test_console_attach(void **state) {
    Qubeslite__Envelope e = QUBESLITE__ENVELOPE__INIT;
    Qubeslite__ConsoleAttach a = QUBESLITE__CONSOLE_ATTACH__INIT;
    Qubeslite__ConsoleAttached d = QUBESLITE__CONSOLE_ATTACHED__INIT;
    e.msg_case = QUBESLITE__ENVELOPE__MSG_CONSOLE_ATTACH;
    e.console_attach = &a;
    assert_int_equal(decode_env(&e, NULL), 0); /* size unknown */
    a.rows = 24;
    assert_int_equal(decode_env(&e, NULL), -EINVAL); /* half a size */
    a.cols = UINT16_MAX;
    assert_int_equal(decode_env(&e, NULL), 0);
    a.cols = UINT16_MAX + 1u;
    assert_int_equal(decode_env(&e, NULL), -EINVAL);
    e.msg_case = QUBESLITE__ENVELOPE__MSG_CONSOLE_ATTACHED;
    e.console_attached = &d;
    d.scrollback = WIRE_SCROLLBACK_MAX;
    assert_int_equal(decode_env(&e, NULL), 0);
    d.scrollback = WIRE_SCROLLBACK_MAX + 1;
    assert_int_equal(decode_env(&e, NULL), -EINVAL);
}

static void test_stream_key(void **state) {
    Qubeslite__Envelope e = QUBESLITE__ENVELOPE__INIT;
    Qubeslite__Exec x = QUBESLITE__EXEC__INIT;
    Qubeslite__Pty pty = QUBESLITE__PTY__INIT;
    ProtobufCBinaryData argv[] = {{.data = (uint8_t *)"cat", .len = 3}};
    uint8_t key[WIRE_STREAM_KEY_SIZE + 1] = {9, 8, 7};
    Msg m;

    e.msg_case = QUBESLITE__ENVELOPE__MSG_EXEC;
    e.exec = &x;
    x.n_argv = 1;
    x.argv = argv;
    x.stream_key = (ProtobufCBinaryData){.data = key, .len = WIRE_STREAM_KEY_SIZE};
    assert_int_equal(decode_env(&e, &m), 0);
    assert_true(m.exec.has_stream_key);
    assert_memory_equal(m.exec.stream_key, key, WIRE_STREAM_KEY_SIZE);
    msg_done(&m);
    x.stream_key.len = WIRE_STREAM_KEY_SIZE - 1; /* a short key */
    assert_int_equal(decode_env(&e, NULL), -EINVAL);
    x.stream_key.len = WIRE_STREAM_KEY_SIZE + 1;
    assert_int_equal(decode_env(&e, NULL), -EINVAL);
    x.stream_key.len = WIRE_STREAM_KEY_SIZE; /* not with a pty */
    pty.rows = pty.cols = 10;
    x.pty = &pty;
    assert_int_equal(decode_env(&e, NULL), -EINVAL);
    x.stream_key.len = 0;
    assert_int_equal(decode_env(&e, &m), 0);
    assert_false(m.exec.has_stream_key);
    msg_done(&m);

    Qubeslite__Attach a = QUBESLITE__ATTACH__INIT;
    e.msg_case = QUBESLITE__ENVELOPE__MSG_ATTACH;
    e.attach = &a;
    assert_int_equal(decode_env(&e, NULL), -EINVAL); /* no key */
    a.key = (ProtobufCBinaryData){.data = key, .len = WIRE_STREAM_KEY_SIZE + 1};
    assert_int_equal(decode_env(&e, NULL), -EINVAL);
    a.key.len = WIRE_STREAM_KEY_SIZE;
    assert_int_equal(decode_env(&e, &m), 0);
    assert_memory_equal(m.attach_key, key, WIRE_STREAM_KEY_SIZE);
    msg_done(&m);

    Qubeslite__Connect c = QUBESLITE__CONNECT__INIT;
    e.msg_case = QUBESLITE__ENVELOPE__MSG_CONNECT;
    e.connect = &c;
    c.streams = WIRE_CONNECT_STREAMS_MAX;
    assert_int_equal(decode_env(&e, &m), 0);
    assert_int_equal(m.connect.streams, WIRE_CONNECT_STREAMS_MAX);
    msg_done(&m);
    c.streams = WIRE_CONNECT_STREAMS_MAX + 1;
    assert_int_equal(decode_env(&e, NULL), -EINVAL);
}

/* ---- the allocation budget ------------------------------------------------ */

static void test_budget_exceeded(void **state) {
    /* ~200k empty argv entries: 2 bytes each on the wire (400 KB, under
     * the frame cap), but protobuf-c allocates per element far more than
     * the decode budget. */
    const size_t n = 200000;
    const size_t inner = 2 * n;
    size_t size = 1 + 3 + inner;
    _cleanup_free_ uint8_t *body = malloc(size);
    size_t o = 0;
    assert_non_null(body);
    assert_true(inner < (1u << 21));
    body[o++] = 0x12; /* Envelope.exec */
    body[o++] = (uint8_t)(0x80 | (inner & 0x7f));
    body[o++] = (uint8_t)(0x80 | ((inner >> 7) & 0x7f));
    body[o++] = (uint8_t)(inner >> 14);
    for (size_t i = 0; i < n; i++) {
        body[o++] = 0x0a; /* Exec.argv */
        body[o++] = 0x00;
    }
    assert_int_equal(o, size);
    assert_true(size <= WIRE_FRAME_MAX);
    assert_int_equal(decode_raw(body, size), -EMSGSIZE);
}

static void test_budget_not_exceeded(void **state) {
    /* A few thousand entries stay well inside the budget: argv over its
     * count limit is then a validation failure, not a memory one. */
    const size_t n = WIRE_ARGV_MAX + 1;
    const size_t inner = 3 * n;
    _cleanup_free_ uint8_t *body = malloc(4 + inner);
    size_t o = 0;
    assert_non_null(body);
    body[o++] = 0x12;
    body[o++] = (uint8_t)(0x80 | (inner & 0x7f));
    body[o++] = (uint8_t)(inner >> 7);
    for (size_t i = 0; i < n; i++) {
        body[o++] = 0x0a;
        body[o++] = 0x01;
        body[o++] = 'a';
    }
    assert_int_equal(decode_raw(body, o), -EINVAL);
}

/* ---- I/O: WireReader, WireWriter, wire_send/wire_recv ---------------------- */

static void test_reader_byte_by_byte(void **state) {
    _cleanup_close_pair_ int sv[2] = {-EBADF, -EBADF};
    WireReader rd = {0};
    uint8_t payload[300];
    const Msg msgs[] = {
        msg_hello("byte by byte"),
        {.type = MSG_DATA, .data = {.stream = WIRE_STDOUT, .data = payload, .size = 300}},
        {.type = MSG_STDIN_CLOSE}, /* a frame with an empty message body */
        {.type = MSG_PING, .nonce = 77},
    };
    memset(payload, 'p', sizeof(payload));
    socket_pair(sv, SOCK_NONBLOCK);

    for (size_t i = 0; i < ELEMENTSOF(msgs); i++) {
        _cleanup_free_ uint8_t *buf = NULL;
        size_t n;
        Msg m;
        assert_int_equal(wire_encode(&msgs[i], &buf, &n), 0);
        for (size_t k = 0; k < n; k++) {
            assert_int_equal(wire_reader_read(&rd, sv[0], &m), 0);
            assert_int_equal(write(sv[1], buf + k, 1), 1);
        }
        assert_int_equal(wire_reader_read(&rd, sv[0], &m), 1);
        assert_true(msg_equal(&msgs[i], &m));
        msg_done(&m);
    }
    Msg m;
    assert_int_equal(wire_reader_read(&rd, sv[0], &m), 0);
    sv[1] = safe_close(sv[1]);
    assert_int_equal(wire_reader_read(&rd, sv[0], &m), -ECONNRESET);
    wire_reader_done(&rd);
}

static void test_reader_many_in_one_read(void **state) {
    /* Several frames arriving together come out one per call. */
    _cleanup_close_pair_ int sv[2] = {-EBADF, -EBADF};
    WireReader rd = {0};
    Msg m;
    socket_pair(sv, SOCK_NONBLOCK);
    for (uint64_t i = 1; i <= 3; i++) {
        Msg p = {.type = MSG_PING, .nonce = i};
        assert_int_equal(wire_send(sv[1], &p), 0);
    }
    for (uint64_t i = 1; i <= 3; i++) {
        assert_int_equal(wire_reader_read(&rd, sv[0], &m), 1);
        assert_int_equal(m.type, MSG_PING);
        assert_int_equal(m.nonce, i);
        msg_done(&m);
    }
    assert_int_equal(wire_reader_read(&rd, sv[0], &m), 0);
    wire_reader_done(&rd);
}

static void test_reader_errors(void **state) {
    Msg m;
    /* Header over the cap: refused before any body is allocated. */
    {
        _cleanup_close_pair_ int sv[2] = {-EBADF, -EBADF};
        WireReader rd = {0};
        const uint8_t hdr[4] = {0x00, 0x10, 0x00, 0x01};
        socket_pair(sv, SOCK_NONBLOCK);
        assert_int_equal(write(sv[1], hdr, 4), 4);
        assert_int_equal(wire_reader_read(&rd, sv[0], &m), -E2BIG);
        assert_null(rd.untrusted_body);
        wire_reader_done(&rd);
    }
    /* EOF inside a header, then inside a body. */
    for (int inside_body = 0; inside_body <= 1; inside_body++) {
        _cleanup_close_pair_ int sv[2] = {-EBADF, -EBADF};
        WireReader rd = {0};
        const uint8_t part[] = {0, 0, 0, 10, 0x72};
        socket_pair(sv, SOCK_NONBLOCK);
        assert_int_equal(write(sv[1], part, inside_body ? 5 : 2), inside_body ? 5 : 2);
        sv[1] = safe_close(sv[1]);
        assert_int_equal(wire_reader_read(&rd, sv[0], &m), -EPIPE);
        wire_reader_done(&rd);
    }
    /* A frame that fails validation, then a good one: the reader is
     * ready for the next frame (whether to go on is the caller's call). */
    {
        _cleanup_close_pair_ int sv[2] = {-EBADF, -EBADF};
        WireReader rd = {0};
        const uint8_t bad[] = {0, 0, 0, 4, 0x42, 0x02, 0x08, 0x00}; /* Signal 0 */
        const Msg ping = {.type = MSG_PING, .nonce = 3};
        socket_pair(sv, SOCK_NONBLOCK);
        assert_int_equal(write(sv[1], bad, sizeof(bad)), sizeof(bad));
        assert_int_equal(wire_send(sv[1], &ping), 0);
        assert_int_equal(wire_reader_read(&rd, sv[0], &m), -EINVAL);
        assert_int_equal(wire_reader_read(&rd, sv[0], &m), 1);
        assert_int_equal(m.nonce, 3);
        msg_done(&m);
        wire_reader_done(&rd);
    }
    /* Not a readable fd. */
    {
        WireReader rd = {0};
        assert_int_equal(wire_reader_read(&rd, -1, &m), -EBADF);
        wire_reader_done(&rd);
    }
}

static void test_writer_partial_flush(void **state) {
    _cleanup_close_pair_ int sv[2] = {-EBADF, -EBADF};
    static uint8_t chunk[WIRE_DATA_MAX];
    WireWriter w = {0};
    WireReader rd = {0};
    int sndbuf = 4096;
    const int count = 16;
    int got = 0, r;

    for (size_t i = 0; i < sizeof(chunk); i++) {
        chunk[i] = (uint8_t)i;
    }
    socket_pair(sv, SOCK_NONBLOCK);
    assert_int_equal(setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
    assert_int_equal(wire_writer_pending(&w), 0);
    assert_int_equal(wire_writer_flush(&w, sv[1]), 0); /* nothing queued */
    for (int i = 0; i < count; i++) {
        Msg d = {.type = MSG_DATA,
                 .data = {.stream = WIRE_STDOUT, .data = chunk, .size = sizeof(chunk)}};
        chunk[0] = (uint8_t)i;
        assert_int_equal(wire_writer_queue(&w, &d), 0);
    }
    size_t queued = wire_writer_pending(&w);
    assert_true(queued > count * sizeof(chunk));

    /* The socket takes far less than a megabyte: the first flush stops. */
    r = wire_writer_flush(&w, sv[1]);
    assert_int_equal(r, 1);
    assert_true(wire_writer_pending(&w) > 0);
    assert_true(wire_writer_pending(&w) < queued);

    /* Drain on the other side, flushing as room appears, and queue more
     * while bytes are pending (exercises compaction). */
    bool queued_late = false;
    while (got < count + 1) {
        Msg m;
        r = wire_reader_read(&rd, sv[0], &m);
        assert_true(r >= 0);
        if (r == 1) {
            assert_int_equal(m.type, MSG_DATA);
            assert_int_equal(m.data.size, sizeof(chunk));
            if (got < count) {
                assert_int_equal(m.data.data[0], (uint8_t)got);
                assert_memory_equal(m.data.data + 1, chunk + 1, sizeof(chunk) - 1);
            }
            got++;
            msg_done(&m);
            continue;
        }
        if (!queued_late && got >= count / 2) {
            Msg d = {.type = MSG_DATA,
                     .data = {.stream = WIRE_STDERR, .data = chunk, .size = sizeof(chunk)}};
            assert_int_equal(wire_writer_queue(&w, &d), 0);
            queued_late = true;
        }
        r = wire_writer_flush(&w, sv[1]);
        assert_true(r == 0 || r == 1);
        if (r == 0) {
            assert_int_equal(wire_writer_pending(&w), 0);
        }
    }
    assert_int_equal(wire_writer_pending(&w), 0);
    wire_writer_done(&w);
    wire_reader_done(&rd);
}

/* A frame queued with fds behind others that the socket cannot take at
 * once: the fds arrive with its first byte, once. */
static void test_writer_fds_behind_frames(void **state) {
    _cleanup_close_pair_ int sv[2] = {-EBADF, -EBADF};
    _cleanup_close_pair_ int p[2] = {-EBADF, -EBADF};
    static uint8_t chunk[WIRE_DATA_MAX];
    static uint8_t in[4 * WIRE_DATA_MAX];
    WireWriter w = {0};
    int sndbuf = 4096, fds[WIRE_RECV_FDS_MAX];
    size_t got = 0, n_fds = 0, fds_from = 0, fds_to = 0;

    socket_pair(sv, SOCK_NONBLOCK);
    assert_int_equal(setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    Msg d = {.type = MSG_DATA,
             .data = {.stream = WIRE_STDOUT, .data = chunk, .size = sizeof(chunk)}};
    Msg c = {.type = MSG_CONNECTED, .connected = {.vm_start_us = 5}};
    assert_int_equal(wire_writer_queue(&w, &d), 0);
    assert_int_equal(wire_writer_queue(&w, &d), 0);
    size_t ahead = wire_writer_pending(&w);
    assert_int_equal(wire_writer_queue_fds(&w, &c, p, 2), 0);
    p[0] = p[1] = -EBADF; /* the writer's now */
    assert_int_equal(wire_writer_queue_fds(&w, &c, sv, 1), -EBUSY);
    assert_int_equal(wire_writer_queue(&w, &d), 0); /* after it */
    size_t total = wire_writer_pending(&w);
    assert_true(total <= sizeof(in));

    while (got < total) {
        int r = wire_writer_flush(&w, sv[1]);
        assert_true(r == 0 || r == 1);
        size_t before = n_fds;
        ssize_t k = recv_with_fds(sv[0], in + got, sizeof(in) - got, fds, ELEMENTSOF(fds), &n_fds);
        if (k == -EAGAIN) {
            continue;
        }
        assert_true(k > 0);
        if (n_fds > before) {
            fds_from = got; /* the bytes this read brought */
            fds_to = got + (size_t)k;
        }
        got += (size_t)k;
    }
    assert_int_equal(wire_writer_pending(&w), 0);
    assert_int_equal(wire_writer_sent(&w), total);
    assert_int_equal(n_fds, 2);
    /* They came with the frame's first byte (a read may also bring bytes
     * queued before it, never none of the frame). */
    assert_true(fds_from <= ahead && ahead < fds_to);
    /* The writer closed its copies: our write end is the last one. */
    assert_int_equal(write(fds[1], "x", 1), 1);
    safe_close(fds[1]);
    char ch;
    assert_int_equal(read(fds[0], &ch, 1), 1);
    assert_int_equal(read(fds[0], &ch, 1), 0);
    safe_close(fds[0]);
    wire_writer_done(&w);
}

/* Fds not sent yet are closed with the writer. */
static void test_writer_fds_done(void **state) {
    _cleanup_close_pair_ int p[2] = {-EBADF, -EBADF};
    WireWriter w = {0};
    Msg c = {.type = MSG_CONNECTED};
    char ch;
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    assert_int_equal(wire_writer_queue_fds(&w, &c, &p[1], 0), -EINVAL);
    assert_int_equal(wire_writer_queue_fds(&w, &c, &p[1], 1), 0);
    p[1] = -EBADF;
    wire_writer_done(&w);
    assert_int_equal(read(p[0], &ch, 1), 0); /* the write end is gone */
}

static void test_writer_peer_gone(void **state) {
    _cleanup_close_pair_ int sv[2] = {-EBADF, -EBADF};
    WireWriter w = {0};
    const Msg ping = {.type = MSG_PING, .nonce = 1};
    socket_pair(sv, SOCK_NONBLOCK);
    sv[0] = safe_close(sv[0]);
    assert_int_equal(wire_writer_queue(&w, &ping), 0);
    assert_int_equal(wire_writer_flush(&w, sv[1]), -EPIPE); /* no SIGPIPE */
    wire_writer_done(&w);
    wire_writer_done(&w); /* twice is fine */
}

static void test_writer_pipe(void **state) {
    /* A pipe is not a socket: the writer falls back to write(). */
    _cleanup_close_pair_ int p[2] = {-EBADF, -EBADF};
    WireWriter w = {0};
    Msg m, ping = {.type = MSG_PING, .nonce = 9};
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    assert_int_equal(wire_writer_queue(&w, &ping), 0);
    assert_int_equal(wire_writer_flush(&w, p[1]), 0);
    assert_int_equal(wire_recv(p[0], &m, NULL), 0);
    assert_int_equal(m.nonce, 9);
    msg_done(&m);
    wire_writer_done(&w);
}

static void test_send_recv_fd(void **state) {
    _cleanup_close_pair_ int sv[2] = {-EBADF, -EBADF};
    _cleanup_close_pair_ int p[2] = {-EBADF, -EBADF};
    _cleanup_close_ int got_fd = -EBADF;
    const Msg connected = {.type = MSG_CONNECTED, .connected = {.vm_start_us = 5}};
    Msg m;
    char c = 0;

    socket_pair(sv, 0);
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    assert_int_equal(wire_send_fd(sv[0], &connected, p[1]), 0);
    assert_int_equal(wire_recv(sv[1], &m, &got_fd), 0);
    assert_int_equal(m.type, MSG_CONNECTED);
    assert_int_equal(m.connected.vm_start_us, 5);
    msg_done(&m);
    assert_true(got_fd >= 0);
    assert_int_not_equal(got_fd, p[1]);
    assert_true(fcntl(got_fd, F_GETFD) & FD_CLOEXEC);
    /* It is the pipe's write end. */
    assert_int_equal(write(got_fd, "x", 1), 1);
    assert_int_equal(read(p[0], &c, 1), 1);
    assert_int_equal(c, 'x');

    /* Without ret_fd, a passed fd is closed rather than leaked: the pipe
     * then has only p[1] as a writer. */
    assert_int_equal(wire_send_fd(sv[0], &connected, p[1]), 0);
    assert_int_equal(wire_recv(sv[1], &m, NULL), 0);
    msg_done(&m);

    /* A frame that is refused takes its fd down with it. */
    {
        const uint8_t junk[] = {0, 0, 0, 1, 0xff};
        int before = count_fds();
        int left = -EBADF;
        assert_int_equal(send_with_fd(sv[0], junk, sizeof(junk), p[1]), 0);
        assert_int_equal(wire_recv(sv[1], &m, &left), -EBADMSG);
        assert_int_equal(left, -EBADF);
        assert_int_equal(count_fds(), before);
    }

    /* No fd sent: ret_fd stays as it was. */
    int none = -EBADF;
    assert_int_equal(wire_send(sv[0], &connected), 0);
    assert_int_equal(wire_recv(sv[1], &m, &none), 0);
    msg_done(&m);
    assert_int_equal(none, -EBADF);
}

static void test_recv_errors(void **state) {
    Msg m;
    /* Clean EOF between frames. */
    {
        _cleanup_close_pair_ int sv[2] = {-EBADF, -EBADF};
        const Msg ping = {.type = MSG_PING, .nonce = 1};
        socket_pair(sv, 0);
        assert_int_equal(wire_send(sv[0], &ping), 0);
        sv[0] = safe_close(sv[0]);
        assert_int_equal(wire_recv(sv[1], &m, NULL), 0);
        msg_done(&m);
        assert_int_equal(wire_recv(sv[1], &m, NULL), -ECONNRESET);
    }
    /* EOF inside a header and inside a body. */
    for (int inside_body = 0; inside_body <= 1; inside_body++) {
        _cleanup_close_pair_ int sv[2] = {-EBADF, -EBADF};
        const uint8_t part[] = {0, 0, 0, 10, 0x72, 0x02};
        socket_pair(sv, 0);
        assert_int_equal(loop_write(sv[0], part, inside_body ? sizeof(part) : 3), 0);
        sv[0] = safe_close(sv[0]);
        assert_int_equal(wire_recv(sv[1], &m, NULL), -EPIPE);
    }
    /* Over the cap, and a body that does not decode. */
    {
        _cleanup_close_pair_ int sv[2] = {-EBADF, -EBADF};
        const uint8_t over[] = {0xff, 0, 0, 0};
        socket_pair(sv, 0);
        assert_int_equal(loop_write(sv[0], over, sizeof(over)), 0);
        assert_int_equal(wire_recv(sv[1], &m, NULL), -E2BIG);
    }
    {
        _cleanup_close_pair_ int sv[2] = {-EBADF, -EBADF};
        const uint8_t junk[] = {0, 0, 0, 1, 0xff};
        socket_pair(sv, 0);
        assert_int_equal(loop_write(sv[0], junk, sizeof(junk)), 0);
        assert_int_equal(wire_recv(sv[1], &m, NULL), -EBADMSG);
    }
}

static void test_recv_pipe(void **state) {
    /* wire_recv works on a non-socket (a pipe) too. */
    _cleanup_close_pair_ int p[2] = {-EBADF, -EBADF};
    const Msg hello = msg_hello("over a pipe");
    Msg m;
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    assert_int_equal(wire_send(p[1], &hello), 0);
    p[1] = safe_close(p[1]);
    assert_int_equal(wire_recv(p[0], &m, NULL), 0);
    assert_string_equal(m.hello.software, "over a pipe");
    msg_done(&m);
    assert_int_equal(wire_recv(p[0], &m, NULL), -ECONNRESET);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_parse),
        cmocka_unit_test(test_decode_over_cap),
        cmocka_unit_test(test_encode_over_cap),
        cmocka_unit_test(test_decode_garbage),
        cmocka_unit_test(test_oneof_not_set),
        cmocka_unit_test(test_unknown_field),
        cmocka_unit_test(test_last_oneof_wins),
        cmocka_unit_test(test_roundtrip_all),
        cmocka_unit_test(test_roundtrip_exec_fields),
        cmocka_unit_test(test_encode_rejects),
        cmocka_unit_test(test_type_names),
        cmocka_unit_test(test_check_hello),
        cmocka_unit_test(test_exec_valid),
        cmocka_unit_test(test_exec_argv),
        cmocka_unit_test(test_exec_argv_count),
        cmocka_unit_test(test_exec_env),
        cmocka_unit_test(test_exec_cwd),
        cmocka_unit_test(test_exec_user),
        cmocka_unit_test(test_exec_pty),
        cmocka_unit_test(test_exec_term),
        cmocka_unit_test(test_exec_stdin_window),
        cmocka_unit_test(test_data),
        cmocka_unit_test(test_data_header),
        cmocka_unit_test(test_data_header_parse_rejects),
        cmocka_unit_test(test_reader_data_fast_path),
        cmocka_unit_test(test_writer_splice),
        cmocka_unit_test(test_writer_read_data),
        cmocka_unit_test(test_started),
        cmocka_unit_test(test_resize),
        cmocka_unit_test(test_signal),
        cmocka_unit_test(test_exited),
        cmocka_unit_test(test_error),
        cmocka_unit_test(test_hello),
        cmocka_unit_test(test_host_status),
        cmocka_unit_test(test_host_stopped),
        cmocka_unit_test(test_console_attach),
        cmocka_unit_test(test_stream_key),
        cmocka_unit_test(test_budget_exceeded),
        cmocka_unit_test(test_budget_not_exceeded),
        cmocka_unit_test(test_reader_byte_by_byte),
        cmocka_unit_test(test_reader_many_in_one_read),
        cmocka_unit_test(test_reader_errors),
        cmocka_unit_test(test_writer_partial_flush),
        cmocka_unit_test(test_writer_fds_behind_frames),
        cmocka_unit_test(test_writer_fds_done),
        cmocka_unit_test(test_writer_peer_gone),
        cmocka_unit_test(test_writer_pipe),
        cmocka_unit_test(test_send_recv_fd),
        cmocka_unit_test(test_recv_errors),
        cmocka_unit_test(test_recv_pipe),
    };
    return cmocka_run_group_tests_name("wire", tests, NULL, NULL);
}
