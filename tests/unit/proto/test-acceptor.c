/* proto/acceptor: connections waiting on a unix listener are accepted
 * non-blocking and close-on-exec, holding stops accepting until released,
 * and running out of fds pauses accepting for ACCEPT_PAUSE_USEC instead of
 * spinning, then resumes by itself. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "acceptor.h"
#include "addr.h"
#include "util.h"

#define CLIENTS_MAX 8

typedef struct Fixture {
    char dir[64];
    sd_event *event;
    Addr addr;
    int listen_fd;
    Acceptor *acceptor;
    int clients[CLIENTS_MAX];
    size_t n_clients;
    int accepted[CLIENTS_MAX];
    size_t n_accepted;
    int failed;        /* the last failed accept's errno */
    size_t hold_after; /* hold accepting after this many; 0: never */
} Fixture;

static void on_accept(void *userdata, int fd) {
    Fixture *f = userdata;
    if (fd < 0) {
        f->failed = fd;
        return;
    }
    assert_true(f->n_accepted < CLIENTS_MAX);
    f->accepted[f->n_accepted++] = fd;
    if (f->hold_after && f->n_accepted >= f->hold_after) {
        acceptor_hold(f->acceptor, true);
    }
}

static int setup(void **state) {
    Fixture *f = calloc(1, sizeof(*f));
    char buf[128];

    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/test-acceptor-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(buf, sizeof(buf), "unix:%s/l.sock", f->dir);
    assert_int_equal(addr_parse(buf, &f->addr), 0);
    assert_int_equal(addr_listen(&f->addr, &f->listen_fd), 0);
    assert_int_equal(sd_event_new(&f->event), 0);
    assert_int_equal(acceptor_new(f->event, f->listen_fd, on_accept, f, &f->acceptor), 0);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    Fixture *f = *state;
    assert_null(acceptor_free(f->acceptor));
    for (size_t i = 0; i < f->n_clients; i++) {
        safe_close(f->clients[i]);
    }
    for (size_t i = 0; i < f->n_accepted; i++) {
        safe_close(f->accepted[i]);
    }
    safe_close(f->listen_fd);
    unlink(f->addr.un.sun_path);
    rmdir(f->dir);
    sd_event_unref(f->event);
    free(f);
    return 0;
}

static void connect_clients(Fixture *f, size_t n) {
    for (size_t i = 0; i < n; i++) {
        int fd;
        assert_true(f->n_clients < CLIENTS_MAX);
        assert_int_equal(addr_connect(&f->addr, 0, &fd), 0);
        f->clients[f->n_clients++] = fd;
    }
}

/* Runs the loop until `accepted` connections came, or for at most usec. */
static void run_until(Fixture *f, size_t accepted, uint64_t usec) {
    uint64_t end = now_usec(CLOCK_MONOTONIC) + usec;
    while (f->n_accepted < accepted) {
        uint64_t now = now_usec(CLOCK_MONOTONIC);
        if (now >= end) {
            return;
        }
        assert_true(sd_event_run(f->event, end - now) >= 0);
    }
}

static void test_accepts_nonblocking_cloexec(void **state) {
    Fixture *f = *state;

    connect_clients(f, 3);
    run_until(f, 3, 5 * 1000000ULL);
    assert_int_equal(f->n_accepted, 3);
    for (size_t i = 0; i < f->n_accepted; i++) {
        assert_true(fcntl(f->accepted[i], F_GETFL) & O_NONBLOCK);
        assert_true(fcntl(f->accepted[i], F_GETFD) & FD_CLOEXEC);
    }
    assert_false(acceptor_paused(f->acceptor));
}

/* Held from the callback: the rest wait in the backlog until released. */
static void test_hold_and_release(void **state) {
    Fixture *f = *state;

    f->hold_after = 1;
    connect_clients(f, 3);
    run_until(f, 3, 200 * 1000);
    assert_int_equal(f->n_accepted, 1);
    f->hold_after = 0;
    acceptor_hold(f->acceptor, false);
    run_until(f, 3, 5 * 1000000ULL);
    assert_int_equal(f->n_accepted, 3);
}

/* No fd left: the owner hears -EMFILE once, accepting pauses (the loop
 * does not spin on the readable socket), and resumes after the pause. */
static void test_out_of_fds_pauses(void **state) {
    Fixture *f = *state;
    struct rlimit saved, low;

    connect_clients(f, 1);
    int probe = open("/dev/null", O_RDONLY | O_CLOEXEC);
    assert_true(probe >= 0);
    close(probe);
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
    low = saved;
    low.rlim_cur = (rlim_t)probe; /* the next fd would be over the limit */
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    uint64_t start = now_usec(CLOCK_MONOTONIC);
    assert_true(sd_event_run(f->event, 1000000ULL) > 0);
    assert_int_equal(f->failed, -EMFILE);
    assert_true(acceptor_paused(f->acceptor));
    assert_int_equal(f->n_accepted, 0);
    /* Paused: nothing runs although the socket is still readable. */
    f->failed = 0;
    assert_int_equal(sd_event_run(f->event, ACCEPT_PAUSE_USEC / 4), 0);
    assert_int_equal(f->failed, 0);

    assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
    run_until(f, 1, 5 * 1000000ULL);
    assert_int_equal(f->n_accepted, 1);
    assert_true(now_usec(CLOCK_MONOTONIC) - start >= ACCEPT_PAUSE_USEC);
    assert_false(acceptor_paused(f->acceptor));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_accepts_nonblocking_cloexec, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hold_and_release, setup, teardown),
        cmocka_unit_test_setup_teardown(test_out_of_fds_pauses, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
