/* host/cli/client: opening a session (client_hello()), the bounded wait
 * and sending a pair of frames, against a peer on a socketpair. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "host/cli/client.h"
#include "util.h"
#include "wire.h"

/* [0] is ours, [1] the peer's. */
static int sp[2];

static int setup(void **state) {
    return socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp);
}

static int teardown(void **state) {
    close(sp[0]);
    close(sp[1]);
    return 0;
}

static void expect_frame(int fd, MsgType type) {
    Msg m;
    assert_int_equal(wire_recv(fd, &m, NULL), 0);
    assert_int_equal(m.type, type);
    msg_done(&m);
}

static void test_hello_and_request(void **state) {
    Msg hello = msg_hello("peer"), req = {.type = MSG_HOST_STATUS_REQUEST}, reply;
    ClientHelloFailure failure;

    /* The peer's Hello is there first; ours and the request go out in
     * order. */
    assert_int_equal(wire_send(sp[1], &hello), 0);
    assert_int_equal(client_hello(sp[0], "test", &req, 1000, &failure, &reply), 0);
    expect_frame(sp[1], MSG_HELLO);
    expect_frame(sp[1], MSG_HOST_STATUS_REQUEST);

    /* Without a request: Hello alone. */
    assert_int_equal(wire_send(sp[1], &hello), 0);
    assert_int_equal(client_hello(sp[0], "test", NULL, 1000, &failure, &reply), 0);
    expect_frame(sp[1], MSG_HELLO);
}

static void test_peer_error(void **state) {
    Msg error = msg_error(WIRE_ERR_DENIED, "not you"), reply;
    ClientHelloFailure failure;

    assert_int_equal(wire_send(sp[1], &error), 0);
    assert_int_equal(client_hello(sp[0], "test", NULL, 1000, &failure, &reply), -EPROTO);
    assert_int_equal(failure, CLIENT_HELLO_ERROR);
    assert_int_equal(reply.type, MSG_ERROR);
    assert_int_equal(reply.error.code, WIRE_ERR_DENIED);
    assert_string_equal(reply.error.message, "not you");
    msg_done(&reply);
    expect_frame(sp[1], MSG_HELLO);
}

static void test_not_hello_and_other_version(void **state) {
    Msg started = {.type = MSG_STARTED, .started_pid = 1}, hello = msg_hello("peer"), reply;
    ClientHelloFailure failure;

    assert_int_equal(wire_send(sp[1], &started), 0);
    assert_int_equal(client_hello(sp[0], "test", NULL, 1000, &failure, &reply), -EPROTO);
    assert_int_equal(failure, CLIENT_HELLO_NOT_HELLO);
    assert_int_equal(reply.type, MSG_STARTED);
    msg_done(&reply);
    expect_frame(sp[1], MSG_HELLO);

    hello.hello.major = WIRE_VERSION_MAJOR + 1;
    assert_int_equal(wire_send(sp[1], &hello), 0);
    assert_int_equal(client_hello(sp[0], "test", NULL, 1000, &failure, &reply), -EPROTO);
    assert_int_equal(failure, CLIENT_HELLO_VERSION);
    assert_int_equal(reply.hello.major, WIRE_VERSION_MAJOR + 1);
    msg_done(&reply);
    expect_frame(sp[1], MSG_HELLO);
}

static void test_timeout(void **state) {
    ClientHelloFailure failure;
    Msg reply;

    assert_int_equal(client_hello(sp[0], "test", NULL, 50, &failure, &reply), -ETIMEDOUT);
    assert_int_equal(failure, CLIENT_HELLO_TIMEOUT);
    expect_frame(sp[1], MSG_HELLO);
    assert_int_equal(client_wait_readable(sp[0], 10, NULL, 0), -ETIMEDOUT);
}

/* The peer went away: our frames may not go through, and nothing comes. */
static void test_peer_gone(void **state) {
    ClientHelloFailure failure;
    Msg reply, req = {.type = MSG_HOST_START};
    int fds[2];

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    close(fds[1]);
    int r = client_hello(fds[0], "test", &req, 1000, &failure, &reply);
    assert_true(r < 0);
    assert_int_equal(failure, CLIENT_HELLO_RECV);
    close(fds[0]);
}

static void test_send_pair(void **state) {
    Msg a = {.type = MSG_PING, .nonce = 7}, b = {.type = MSG_STDIN_CLOSE};
    assert_int_equal(client_send_pair(sp[0], &a, &b), 0);
    assert_int_equal(client_wait_readable(sp[1], 1000, NULL, 0), 0);
    expect_frame(sp[1], MSG_PING);
    expect_frame(sp[1], MSG_STDIN_CLOSE);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello_and_request),
        cmocka_unit_test(test_peer_error),
        cmocka_unit_test(test_not_hello_and_other_version),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_peer_gone),
        cmocka_unit_test(test_send_pair),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
