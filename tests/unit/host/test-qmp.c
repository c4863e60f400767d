/* host/qmp: the QMP client against a fake qemu on the other end of a
 * socketpair (or a unix socket it makes late): the greeting, the
 * capabilities before anything else, replies matched by id with events
 * between them, lines in pieces, errors, and what ends the connection. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "host/agent/qmp.h"
#include "util.h"

#define GREETING "{\"QMP\": {\"version\": {\"qemu\": {\"major\": 7}}, \"capabilities\": []}}\n"

typedef struct Seen {
    unsigned ready;
    int closed; /* 1: not yet */
    char events[8][64];
    unsigned n_events;
    /* Replies, in order: r and "return"'s text or the error's desc. */
    int reply_r[8];
    char reply[8][128];
    unsigned n_replies;
    Qmp *free_on_reply; /* freed from the reply callback */
} Seen;

static sd_event *event;
static Seen seen;

static void on_ready(void *userdata) {
    seen.ready++;
}

static void on_event(void *userdata, const char *name, json_t *data) {
    snprintf(seen.events[seen.n_events++ % 8], 64, "%s", name);
}

static void on_closed(void *userdata, int r) {
    seen.closed = r;
}

static const QmpOps ops = {.ready = on_ready, .event = on_event, .closed = on_closed};

static void on_reply(void *userdata, int r, json_t *ret, const char *error) {
    unsigned i = seen.n_replies++ % 8;
    seen.reply_r[i] = r;
    if (ret) {
        char *s = json_dumps(ret, JSON_COMPACT | JSON_ENCODE_ANY);
        snprintf(seen.reply[i], sizeof(seen.reply[i]), "%s", s);
        free(s);
    } else {
        snprintf(seen.reply[i], sizeof(seen.reply[i]), "%s", error ? error : "");
    }
    if (seen.free_on_reply) {
        qmp_free(TAKE_PTR(seen.free_on_reply));
    }
}

static int setup(void **state) {
    memset(&seen, 0, sizeof(seen));
    seen.closed = 1;
    return sd_event_new(&event);
}

static int teardown(void **state) {
    event = sd_event_unref(event);
    return 0;
}

/* Runs the loop until nothing is left to do for a moment. */
static void spin(void) {
    while (sd_event_run(event, 20 * 1000) > 0) {
    }
}

static void peer_write(int fd, const char *text) {
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
}

/* One line the client wrote, parsed. */
static json_t *peer_read(int fd) {
    char line[4096];
    size_t n = 0;
    while (n < sizeof(line) - 1) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        /* The client runs only in spin(): let it write when nothing is
         * there yet, not before every byte. */
        if (poll(&p, 1, 0) == 0) {
            spin();
        }
        assert_int_equal(poll(&p, 1, 2000), 1);
        assert_int_equal(read(fd, &line[n], 1), 1);
        if (line[n] == '\n') {
            break;
        }
        n++;
    }
    json_error_t jerr;
    json_t *m = json_loadb(line, n, 0, &jerr);
    if (!m) {
        fail_msg("not JSON: '%.*s'", (int)n, line);
    }
    return m;
}

/* The client's next command must be `name`; returns its id. */
static json_int_t peer_expect(int fd, const char *name) {
    json_t *m = peer_read(fd);
    assert_string_equal(json_string_value(json_object_get(m, "execute")), name);
    json_int_t id = json_integer_value(json_object_get(m, "id"));
    json_decref(m);
    return id;
}

static bool peer_has_nothing(int fd) {
    spin();
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 50) == 0;
}

/* A client on a socketpair, the greeting and the capabilities done. */
static Qmp *connected(int *ret_peer) {
    int sv[2];
    Qmp *q;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(qmp_new(event, sv[0], &ops, NULL, &q), 0);
    peer_write(sv[1], GREETING);
    assert_int_equal(peer_expect(sv[1], "qmp_capabilities"), 0);
    peer_write(sv[1], "{\"return\": {}, \"id\": 0}\n");
    spin();
    assert_int_equal(seen.ready, 1);
    assert_true(qmp_is_ready(q));
    *ret_peer = sv[1];
    return q;
}

static void test_greeting_then_capabilities_first(void **state) {
    int sv[2];
    Qmp *q;
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    assert_int_equal(qmp_new(event, sv[0], &ops, NULL, &q), 0);
    /* Sent before the greeting: it waits for the capabilities. */
    assert_int_equal(qmp_execute(q, "cont", NULL, on_reply, NULL), 0);
    assert_true(peer_has_nothing(sv[1]));
    peer_write(sv[1], GREETING);
    assert_int_equal(peer_expect(sv[1], "qmp_capabilities"), 0);
    assert_true(peer_has_nothing(sv[1]));
    assert_false(qmp_is_ready(q));
    /* An event may come before the capabilities' reply. */
    peer_write(sv[1], "{\"event\": \"RESUME\", \"timestamp\": {}}\n{\"return\": {}, \"id\": 0}\n");
    json_int_t id = peer_expect(sv[1], "cont");
    assert_int_equal(seen.ready, 1);
    assert_int_equal(seen.n_events, 1);
    assert_string_equal(seen.events[0], "RESUME");
    char reply[64];
    snprintf(reply, sizeof(reply), "{\"return\": {}, \"id\": %lld}\n", (long long)id);
    peer_write(sv[1], reply);
    spin();
    assert_int_equal(seen.n_replies, 1);
    assert_int_equal(seen.reply_r[0], 0);
    assert_string_equal(seen.reply[0], "{}");
    qmp_free(q);
    close(sv[1]);
}

static void test_replies_by_id_events_between(void **state) {
    int peer;
    Qmp *q = connected(&peer);
    json_t *args = json_pack("{s:s, s:s}", "driver", "vhost-user-vsock-pci", "id", "vsock0");
    assert_int_equal(qmp_execute(q, "device_add", args, on_reply, NULL), 0);
    json_t *m = peer_read(peer);
    assert_string_equal(json_string_value(json_object_get(m, "execute")), "device_add");
    json_t *a = json_object_get(m, "arguments");
    assert_string_equal(json_string_value(json_object_get(a, "driver")), "vhost-user-vsock-pci");
    json_int_t first = json_integer_value(json_object_get(m, "id"));
    json_decref(m);
    assert_int_equal(qmp_execute(q, "query-status", NULL, on_reply, NULL), 0);
    json_int_t second = peer_expect(peer, "query-status");
    assert_true(first != second);
    char text[512];
    /* The first fails, an event comes between, the second's reply comes in
     * two pieces, split inside the line. */
    snprintf(
        text, sizeof(text),
        "{\"error\": {\"class\": \"GenericError\", \"desc\": \"not connected\"}, \"id\": %lld}\n"
        "{\"event\": \"DEVICE_DELETED\", \"data\": {\"device\": \"vsock0\"}}\n"
        "{\"return\": {\"status\": \"run",
        (long long)first);
    peer_write(peer, text);
    spin();
    assert_int_equal(seen.n_replies, 1);
    snprintf(text, sizeof(text), "ning\"}, \"id\": %lld}\n", (long long)second);
    peer_write(peer, text);
    spin();
    assert_int_equal(seen.n_replies, 2);
    assert_int_equal(seen.reply_r[0], -EREMOTEIO);
    assert_string_equal(seen.reply[0], "not connected");
    assert_int_equal(seen.n_events, 1);
    assert_string_equal(seen.events[0], "DEVICE_DELETED");
    assert_int_equal(seen.reply_r[1], 0);
    assert_string_equal(seen.reply[1], "{\"status\":\"running\"}");
    assert_int_equal(seen.closed, 1);
    qmp_free(q);
    close(peer);
}

static void test_a_reply_nobody_asked_for_ends_it(void **state) {
    int peer;
    Qmp *q = connected(&peer);
    assert_int_equal(qmp_execute(q, "quit", NULL, on_reply, NULL), 0);
    (void)peer_expect(peer, "quit");
    peer_write(peer, "{\"return\": {}, \"id\": 4242}\n");
    spin();
    assert_int_equal(seen.closed, -EPROTO);
    /* The command still waiting was told first. */
    assert_int_equal(seen.n_replies, 1);
    assert_int_equal(seen.reply_r[0], -EPROTO);
    assert_int_equal(qmp_execute(q, "quit", NULL, NULL, NULL), -ENOTCONN);
    qmp_free(q);
    close(peer);
}

static void test_not_qmp(void **state) {
    static const char *const bad[] = {
        "not json\n",
        "[1, 2]\n",
        "{\"event\": 7}\n",
        "{\"greeting\": {}}\n",
    };
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        int sv[2];
        Qmp *q;
        seen.closed = 1;
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        assert_int_equal(qmp_new(event, sv[0], &ops, NULL, &q), 0);
        if (i >= 2) {
            peer_write(sv[1], GREETING);
            (void)peer_expect(sv[1], "qmp_capabilities");
            peer_write(sv[1], "{\"return\": {}, \"id\": 0}\n");
        }
        peer_write(sv[1], bad[i]);
        spin();
        assert_int_equal(seen.closed, -EPROTO);
        qmp_free(q);
        close(sv[1]);
    }
}

static void test_a_line_too_long(void **state) {
    int peer;
    Qmp *q = connected(&peer);
    char *big = malloc(QMP_LINE_MAX + 16);
    assert_non_null(big);
    memset(big, ' ', QMP_LINE_MAX + 16);
    size_t off = 0;
    while (off < QMP_LINE_MAX + 16 && seen.closed == 1) {
        ssize_t n = send(peer, big + off, QMP_LINE_MAX + 16 - off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
            off += (size_t)n;
        }
        spin();
    }
    free(big);
    assert_int_equal(seen.closed, -EMSGSIZE);
    qmp_free(q);
    close(peer);
}

static void test_qemu_goes_away(void **state) {
    int peer;
    Qmp *q = connected(&peer);
    assert_int_equal(qmp_execute(q, "system_powerdown", NULL, on_reply, NULL), 0);
    (void)peer_expect(peer, "system_powerdown");
    peer_write(peer, "{\"event\": \"SHUTDOWN\", \"data\": {\"guest\": true}}\n");
    close(peer);
    spin();
    assert_int_equal(seen.n_events, 1);
    assert_int_equal(seen.n_replies, 1);
    assert_int_equal(seen.reply_r[0], -ECONNRESET);
    assert_int_equal(seen.closed, -ECONNRESET);
    qmp_free(q);
}

static void test_free_from_a_reply(void **state) {
    int peer;
    Qmp *q = connected(&peer);
    assert_int_equal(qmp_execute(q, "quit", NULL, on_reply, NULL), 0);
    json_int_t id = peer_expect(peer, "quit");
    seen.free_on_reply = q;
    char text[128];
    /* More behind the reply: never looked at once the client is freed. */
    snprintf(text, sizeof(text), "{\"return\": {}, \"id\": %lld}\n{\"event\": \"STOP\"}\n",
             (long long)id);
    peer_write(peer, text);
    spin();
    assert_null(seen.free_on_reply);
    assert_int_equal(seen.n_replies, 1);
    assert_int_equal(seen.n_events, 0);
    assert_int_equal(seen.closed, 1);
    close(peer);
}

static void test_connect_waits_for_the_socket(void **state) {
    char dir[] = "/tmp/test-qmp-XXXXXX", path[64];
    Qmp *q;
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/qmp.sock", dir);
    assert_int_equal(
        qmp_connect(event, path, 10 * 1000, now_usec(CLOCK_MONOTONIC) + 5000000, &ops, NULL, &q),
        0);
    for (int i = 0; i < 5; i++) {
        assert_true(sd_event_run(event, 20 * 1000) >= 0);
    }
    assert_int_equal(seen.closed, 1);
    /* qemu makes its socket late. */
    int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(l, 1), 0);
    struct pollfd p = {.fd = l, .events = POLLIN};
    while (poll(&p, 1, 0) == 0) {
        assert_true(sd_event_run(event, 100 * 1000) >= 0);
    }
    int peer = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    assert_true(peer >= 0);
    peer_write(peer, GREETING);
    assert_int_equal(peer_expect(peer, "qmp_capabilities"), 0);
    peer_write(peer, "{\"return\": {}, \"id\": 0}\n");
    spin();
    assert_int_equal(seen.ready, 1);
    qmp_free(q);
    close(peer);
    close(l);
    unlink(path);

    /* Nobody ever listens: it gives up at the deadline. */
    seen.closed = 1;
    assert_int_equal(
        qmp_connect(event, path, 10 * 1000, now_usec(CLOCK_MONOTONIC) + 100000, &ops, NULL, &q), 0);
    for (int i = 0; i < 100 && seen.closed == 1; i++) {
        assert_true(sd_event_run(event, 20 * 1000) >= 0);
    }
    assert_int_equal(seen.closed, -ETIMEDOUT);
    qmp_free(q);
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_greeting_then_capabilities_first, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replies_by_id_events_between, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_reply_nobody_asked_for_ends_it, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_qmp, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_line_too_long, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qemu_goes_away, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_from_a_reply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_waits_for_the_socket, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
