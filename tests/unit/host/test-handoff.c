/* host/agent/handoff: a Connect's guest connections against a unix
 * listener standing in for the guest agent: all of them handed over in
 * one Connected queued on the client's connection, the deadline's message
 * when nobody listens, and what --no-vmm's HostStatus reads from the
 * attempts. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "host/agent/agent.h"
#include "conn.h"
#include "host/agent/handoff.h"
#include "log.h"
#include "util.h"
#include "wire.h"

typedef struct Fixture {
    char dir[64];
    char path[128];
    Agent agent;
    int listen_fd;
} Fixture;

static int setup(void **state) {
    Fixture *f = calloc(1, sizeof(*f));
    char addr[160];

    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/test-handoff-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/guest.sock", f->dir);
    snprintf(addr, sizeof(addr), "unix:%s", f->path);
    f->agent.vm_name = "test";
    f->agent.guest_timeout = USEC_PER_SEC;
    assert_int_equal(addr_parse(addr, &f->agent.guest), 0);
    addr_format(&f->agent.guest, f->agent.guest_str, sizeof(f->agent.guest_str));
    assert_int_equal(sd_event_new(&f->agent.event), 0);
    f->listen_fd = -EBADF;
    *state = f;
    return 0;
}

static int teardown(void **state) {
    Fixture *f = *state;
    safe_close(f->listen_fd);
    unlink(f->path);
    rmdir(f->dir);
    sd_event_unref(f->agent.event);
    free(f);
    return 0;
}

static void guest_listen(Fixture *f) {
    assert_int_equal(addr_listen(&f->agent.guest, &f->listen_fd), 0);
}

typedef struct Done {
    bool called;
    int r;
} Done;

static void on_done(void *userdata, int r) {
    Done *d = userdata;
    d->called = true;
    d->r = r;
}

/* Starts a hand-off of `want` connections and runs the loop until it is
 * over. */
static Handoff *run_handoff(Fixture *f, unsigned want) {
    Done done = {0};
    Handoff *h = NULL;
    int r = handoff_start(&f->agent, want, 0, 42, on_done, &done, &h);

    assert_true(r >= 0);
    assert_non_null(h);
    while (r == 0 && !done.called) {
        assert_true(sd_event_run(f->agent.event, UINT64_MAX) >= 0);
    }
    if (done.called) {
        assert_int_equal(done.r, 0);
    }
    return h;
}

static void on_conn_closed(void *userdata, int error) {
}

static const ConnOps client_conn_ops = {.closed = on_conn_closed};

/* The Connect's connection and its stream connection, both to the guest
 * agent, go to the client in one Connected, queued on its connection
 * (which takes the sockets over and closes its copies once sent). */
static void test_all_handed_over(void **state) {
    Fixture *f = *state;
    int sp[2], fds[4];
    size_t n = 0;
    Msg m;
    char c;
    Conn *conn = NULL;

    guest_listen(f);
    memset(f->agent.secret, 0xa5, sizeof(f->agent.secret));
    f->agent.have_secret = true;
    Handoff *h = run_handoff(f, 2);
    ErrorText err;
    assert_int_equal(handoff_result(h, &err), 0);
    assert_int_equal(handoff_sockets(h), 2);
    assert_int_equal(handoff_attempts(h), 2);

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sp), 0);
    ConnOptions o = {.role = CONN_SERVER, .close_mode = CONN_CLOSE_FLUSHED};
    assert_int_equal(conn_new(f->agent.event, sp[0], &o, &client_conn_ops, NULL, &conn), 0);
    /* Another frame with fds waits: nothing is taken, the sockets stay. */
    int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    assert_true(null_fd >= 0);
    Msg ping = {.type = MSG_PING, .nonce = 1};
    assert_int_equal(conn_queue_fds(conn, &ping, &null_fd, 1), 0);
    assert_int_equal(handoff_queue(h, conn), -EBUSY);
    assert_int_equal(handoff_sockets(h), 2);
    assert_int_equal(conn_flush(conn), 0);
    assert_int_equal(wire_recv_fds(sp[1], &m, fds, ELEMENTSOF(fds), &n), 0);
    assert_int_equal(m.type, MSG_PING);
    msg_done(&m);
    assert_int_equal(n, 1);
    close(fds[0]);
    n = 0;

    assert_int_equal(handoff_queue(h, conn), 0);
    assert_int_equal(handoff_sockets(h), 0);
    handoff_free(h);
    assert_int_equal(conn_flush(conn), 0);
    conn_free(conn);
    assert_int_equal(wire_recv_fds(sp[1], &m, fds, ELEMENTSOF(fds), &n), 0);
    assert_int_equal(m.type, MSG_CONNECTED);
    assert_int_equal(m.connected.vm_start_us, 0);
    msg_done(&m);
    assert_int_equal(n, 2);

    /* Each is a connection to the listener, in order. */
    for (size_t i = 0; i < n; i++) {
        int g = accept4(f->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        assert_true(g >= 0);
        /* Our Hello came first, with the VM's secret; then the client's. */
        assert_int_equal(wire_recv(g, &m, NULL), 0);
        assert_int_equal(m.type, MSG_HELLO);
        assert_non_null(m.hello.secret);
        assert_memory_equal(m.hello.secret, f->agent.secret, WIRE_SECRET_SIZE);
        msg_done(&m);
        c = (char)('a' + i);
        assert_int_equal(write(fds[i], &c, 1), 1);
        assert_int_equal(read(g, &c, 1), 1);
        assert_int_equal(c, 'a' + (int)i);
        close(g);
        close(fds[i]);
    }
    safe_close(sp[1]);
}

/* Nobody listens: attempts until --guest-timeout, then the client's
 * Error message. With --no-vmm, HostStatus reads the last attempt. */
static void test_deadline(void **state) {
    Fixture *f = *state;
    char want[256];
    ErrorText err;

    f->agent.no_vmm = true;
    f->agent.guest_up = true;
    uint64_t start = now_mono();
    Handoff *h = run_handoff(f, 1);
    assert_true(now_mono() - start >= f->agent.guest_timeout);
    int r = handoff_result(h, &err);
    assert_true(r < 0);
    assert_true(handoff_attempts(h) > 2);
    snprintf(want, sizeof(want), "the guest agent of VM 'test' did not answer within 1 s (%s: %s)",
             f->agent.guest_str, strerror(-r));
    assert_string_equal(err.message, want);
    assert_false(f->agent.guest_up);
    handoff_free(h);

    /* It answers: up since now. */
    guest_listen(f);
    start = now_mono();
    h = run_handoff(f, 1);
    assert_int_equal(handoff_result(h, &err), 0);
    assert_true(f->agent.guest_up);
    assert_true(f->agent.guest_up_since >= start);
    handoff_free(h);
}

/* Freed while it waits for its next attempt: nothing is left behind
 * (the sanitizer build checks the fds and memory). */
static void test_free_in_progress(void **state) {
    Fixture *f = *state;
    Done done = {0};
    Handoff *h = NULL;

    assert_int_equal(handoff_start(&f->agent, 1, 0, 42, on_done, &done, &h), 0);
    assert_non_null(h);
    assert_null(handoff_free(h));
    assert_int_equal(sd_event_run(f->agent.event, 50 * 1000), 0);
    assert_false(done.called);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_all_handed_over, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_in_progress, setup, teardown),
    };
    log_setup("test-handoff");
    log_set_max_level(LOG_ERR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
