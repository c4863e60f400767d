/* switch/ctl: the control messages between vm-switch's main process and
 * its children. Exact lengths and fd counts per type and sender, value
 * ranges, and fds all closed when a message is refused. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "switch/net/ctl.h"
#include "util.h"

static void test_shapes(void **state) {
    size_t size;
    unsigned n_fds;
    assert_int_equal(ctl_msg_shape(CTL_FROM_MAIN, CTL_SETUP, &size, &n_fds), 0);
    assert_int_equal(size, sizeof(CtlSetup));
    assert_int_equal(n_fds, 1);
    assert_int_equal(ctl_msg_shape(CTL_FROM_MAIN, CTL_GET_BUFFER, &size, &n_fds), 0);
    assert_int_equal(n_fds, 3);
    assert_int_equal(ctl_msg_shape(CTL_FROM_CHILD, CTL_PONG, &size, &n_fds), 0);
    assert_int_equal(size, sizeof(CtlPong));
    assert_int_equal(n_fds, 0);
    /* A child cannot send what the main sends, nor the other way round. */
    assert_int_equal(ctl_msg_shape(CTL_FROM_CHILD, CTL_PUT_BUFFER, &size, &n_fds), -EBADMSG);
    assert_int_equal(ctl_msg_shape(CTL_FROM_MAIN, CTL_PONG, &size, &n_fds), -EBADMSG);
    assert_int_equal(ctl_msg_shape(CTL_FROM_MAIN, 0, &size, &n_fds), -EBADMSG);
}

static void test_validate_pong(void **state) {
    CtlMsg m, out;
    ctl_msg_init(&m, CTL_PONG);
    m.pong.seq = 7;
    m.pong.state = CTL_STATE_SERVING;
    m.pong.counters.rx_frames = 3;
    assert_int_equal(ctl_msg_validate(CTL_FROM_CHILD, &m, sizeof(CtlPong), 0, &out), 0);
    assert_int_equal(out.pong.seq, 7);
    assert_int_equal(out.pong.counters.rx_frames, 3);
    /* One byte short, one byte long, an fd too many, the wrong sender. */
    assert_int_equal(ctl_msg_validate(CTL_FROM_CHILD, &m, sizeof(CtlPong) - 1, 0, &out), -EBADMSG);
    assert_int_equal(ctl_msg_validate(CTL_FROM_CHILD, &m, sizeof(CtlPong) + 1, 0, &out), -EBADMSG);
    assert_int_equal(ctl_msg_validate(CTL_FROM_CHILD, &m, sizeof(CtlPong), 1, &out), -EBADMSG);
    assert_int_equal(ctl_msg_validate(CTL_FROM_MAIN, &m, sizeof(CtlPong), 0, &out), -EBADMSG);
    /* Fields out of range. */
    m.pong.state = CTL_STATE_MAX;
    assert_int_equal(ctl_msg_validate(CTL_FROM_CHILD, &m, sizeof(CtlPong), 0, &out), -EBADMSG);
    m.pong.state = CTL_STATE_WAITING;
    m.pong.pad = 1;
    assert_int_equal(ctl_msg_validate(CTL_FROM_CHILD, &m, sizeof(CtlPong), 0, &out), -EBADMSG);
    m.pong.pad = 0;
    m.hdr.reserved = 1;
    assert_int_equal(ctl_msg_validate(CTL_FROM_CHILD, &m, sizeof(CtlPong), 0, &out), -EBADMSG);
    /* Shorter than a header. */
    assert_int_equal(ctl_msg_validate(CTL_FROM_CHILD, &m, 7, 0, &out), -EBADMSG);
    assert_int_equal(ctl_msg_validate(CTL_FROM_CHILD, &m, 0, 0, &out), -EBADMSG);
}

static void test_validate_buffer(void **state) {
    CtlMsg m, out;
    ctl_msg_init(&m, CTL_BUFFER_READY);
    m.buffer.peer = CTL_MAX_PORTS - 1;
    assert_int_equal(ctl_msg_validate(CTL_FROM_CHILD, &m, sizeof(CtlBuffer), 0, &out), 0);
    m.buffer.peer = CTL_MAX_PORTS;
    assert_int_equal(ctl_msg_validate(CTL_FROM_CHILD, &m, sizeof(CtlBuffer), 0, &out), -EBADMSG);
    m.buffer.peer = 0;
    m.hdr.type = CTL_GET_BUFFER;
    assert_int_equal(ctl_msg_validate(CTL_FROM_MAIN, &m, sizeof(CtlBuffer), 3, &out), 0);
    assert_int_equal(ctl_msg_validate(CTL_FROM_MAIN, &m, sizeof(CtlBuffer), 2, &out), -EBADMSG);
    assert_int_equal(ctl_msg_validate(CTL_FROM_CHILD, &m, sizeof(CtlBuffer), 3, &out), -EBADMSG);
}

static void test_validate_setup(void **state) {
    static const uint8_t mac[6] = {0x52, 0x54, 0, 0, 0, 1};
    CtlMsg m, out;
    ctl_msg_init(&m, CTL_SETUP);
    m.setup.port = 3;
    m.setup.gen = 9;
    memcpy(m.setup.mac, mac, 6);
    m.setup.role = VM_ROLE_ROUTER;
    strcpy(m.setup.name, "router-1");
    assert_int_equal(ctl_msg_validate(CTL_FROM_MAIN, &m, sizeof(CtlSetup), 1, &out), 0);
    assert_string_equal(out.setup.name, "router-1");
    CtlMsg bad = m;
    bad.setup.role = 2;
    assert_int_equal(ctl_msg_validate(CTL_FROM_MAIN, &bad, sizeof(CtlSetup), 1, &out), -EBADMSG);
    bad = m;
    bad.setup.mac[0] = 0x01; /* multicast */
    assert_int_equal(ctl_msg_validate(CTL_FROM_MAIN, &bad, sizeof(CtlSetup), 1, &out), -EBADMSG);
    bad = m;
    memset(bad.setup.name, 'a', sizeof(bad.setup.name)); /* no NUL */
    assert_int_equal(ctl_msg_validate(CTL_FROM_MAIN, &bad, sizeof(CtlSetup), 1, &out), -EBADMSG);
    bad = m;
    bad.setup.name[10] = 'x'; /* bytes after the NUL */
    assert_int_equal(ctl_msg_validate(CTL_FROM_MAIN, &bad, sizeof(CtlSetup), 1, &out), -EBADMSG);
    bad = m;
    strcpy(bad.setup.name, "Router");
    assert_int_equal(ctl_msg_validate(CTL_FROM_MAIN, &bad, sizeof(CtlSetup), 1, &out), -EBADMSG);
    bad = m;
    bad.setup.port = CTL_MAX_PORTS;
    assert_int_equal(ctl_msg_validate(CTL_FROM_MAIN, &bad, sizeof(CtlSetup), 1, &out), -EBADMSG);
    assert_int_equal(ctl_msg_validate(CTL_FROM_MAIN, &m, sizeof(CtlSetup), 0, &out), -EBADMSG);
}

static bool fd_open(int fd) {
    return fcntl(fd, F_GETFD) >= 0;
}

static void test_send_recv(void **state) {
    int sv[2];
    CtlMsg m, out;
    int fds[CTL_MAX_FDS];
    unsigned n = 0;
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(ctl_recv(sv[1], CTL_FROM_MAIN, &out, fds, &n), -EAGAIN);

    int e[3];
    for (int i = 0; i < 3; i++) {
        e[i] = eventfd(0, EFD_CLOEXEC);
    }
    ctl_msg_init(&m, CTL_PUT_BUFFER);
    m.buffer.peer = 5;
    m.buffer.peer_gen = 2;
    m.buffer.gen = 1;
    /* The fd count must be the type's. */
    assert_int_equal(ctl_send(sv[0], &m, e, 2), -EINVAL);
    assert_int_equal(ctl_send(sv[0], &m, e, 3), 0);
    assert_int_equal(ctl_recv(sv[1], CTL_FROM_MAIN, &out, fds, &n), 1);
    assert_int_equal(n, 3);
    assert_int_equal(out.buffer.peer, 5);
    for (int i = 0; i < 3; i++) {
        assert_true(fcntl(fds[i], F_GETFD) & FD_CLOEXEC);
        close(fds[i]);
    }

    /* A message the receiver refuses: every fd that came with it closed. */
    ctl_msg_init(&m, CTL_PING);
    uint8_t raw[sizeof(CtlPing)];
    memcpy(raw, &m, sizeof(raw));
    struct iovec iov = {.iov_base = raw, .iov_len = sizeof(raw)};
    union {
        struct cmsghdr align;
        uint8_t buf[CMSG_SPACE(sizeof(int))];
    } control = {0};
    struct msghdr mh = {.msg_iov = &iov,
                        .msg_iovlen = 1,
                        .msg_control = control.buf,
                        .msg_controllen = sizeof(control.buf)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &e[0], sizeof(int));
    int before = fcntl(0, F_DUPFD_CLOEXEC, 0);
    close(before); /* the next fd number the receiver gets */
    assert_int_equal(sendmsg(sv[0], &mh, 0), (ssize_t)sizeof(raw));
    assert_int_equal(ctl_recv(sv[1], CTL_FROM_MAIN, &out, fds, &n), -EBADMSG);
    assert_false(fd_open(before));

    /* Longer than any message: refused, not truncated into a valid one. */
    uint8_t big[sizeof(CtlMsg) + 64] = {0};
    memcpy(big, &m, sizeof(CtlPing));
    assert_int_equal(send(sv[0], big, sizeof(big), 0), (ssize_t)sizeof(big));
    assert_int_equal(ctl_recv(sv[1], CTL_FROM_MAIN, &out, fds, &n), -EBADMSG);

    /* The peer gone: EOF. */
    close(sv[0]);
    assert_int_equal(ctl_recv(sv[1], CTL_FROM_MAIN, &out, fds, &n), 0);
    close(sv[1]);
    for (int i = 0; i < 3; i++) {
        close(e[i]);
    }
}

static void test_names_and_counters(void **state) {
    assert_string_equal(ctl_drop_name(POLICY_DROP_SPOOFED_SOURCE), "spoofed_source");
    assert_string_equal(ctl_drop_name(CTL_DROP_RING_FULL), "ring_full");
    assert_string_equal(ctl_drop_name(CTL_DROP_GUEST_DOWN), "guest_down");
    assert_string_equal(ctl_drop_name(CTL_DROP_MAX), "unknown");
    for (unsigned i = 0; i < CTL_DROP_MAX; i++) {
        assert_string_not_equal(ctl_drop_name(i), "unknown");
    }
    assert_string_equal(ctl_state_name(CTL_STATE_BROKEN), "broken");
    CtlCounters a = {.rx_frames = 1, .drops = {[CTL_DROP_PEER_DOWN] = 2}};
    CtlCounters b = {.rx_frames = 10, .tx_bytes = 5, .drops = {[CTL_DROP_PEER_DOWN] = 3}};
    ctl_counters_add(&a, &b);
    assert_int_equal(a.rx_frames, 11);
    assert_int_equal(a.tx_bytes, 5);
    assert_int_equal(a.drops[CTL_DROP_PEER_DOWN], 5);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shapes),          cmocka_unit_test(test_validate_pong),
        cmocka_unit_test(test_validate_buffer), cmocka_unit_test(test_validate_setup),
        cmocka_unit_test(test_send_recv),       cmocka_unit_test(test_names_and_counters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
