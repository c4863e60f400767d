/* switch/policy: router and clients, spoofed sources, broadcast and
 * multicast, unknown unicast, counters. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>

#include "switch/net/policy.h"
#include "util.h"

enum { ROUTER = 0, A = 1, B = 2, C = 40 };

static const uint8_t MAC_ROUTER[6] = {0x52, 0x54, 0, 0, 0, 0x01};
static const uint8_t MAC_A[6] = {0x52, 0x54, 0, 0, 0, 0x0a};
static const uint8_t MAC_B[6] = {0x52, 0x54, 0, 0, 0, 0x0b};
static const uint8_t MAC_C[6] = {0x52, 0x54, 0, 0, 0, 0x0c};
static const uint8_t MAC_NOBODY[6] = {0x52, 0x54, 0, 0, 0, 0x99};
static const uint8_t BCAST[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
static const uint8_t MCAST[6] = {0x33, 0x33, 0, 0, 0, 0x01};

#define BIT(i) (UINT64_C(1) << (i))

static int setup(void **state) {
    Policy *p;
    assert_int_equal(policy_new(&p), 0);
    assert_int_equal(policy_set_port(p, ROUTER, MAC_ROUTER, VM_ROLE_ROUTER), 0);
    assert_int_equal(policy_set_port(p, A, MAC_A, VM_ROLE_CLIENT), 0);
    assert_int_equal(policy_set_port(p, B, MAC_B, VM_ROLE_CLIENT), 0);
    assert_int_equal(policy_set_port(p, C, MAC_C, VM_ROLE_CLIENT), 0);
    *state = p;
    return 0;
}

static int teardown(void **state) {
    policy_free(*state);
    return 0;
}

static int route(Policy *p, unsigned port, const uint8_t dst[6], const uint8_t src[6],
                 uint64_t *mask, PolicyDrop *reason) {
    uint8_t frame[60] = {0};
    memcpy(frame, dst, 6);
    memcpy(frame + 6, src, 6);
    frame[12] = 0x08;
    return policy_route(p, port, frame, sizeof(frame), mask, reason);
}

static void expect_forward(Policy *p, unsigned port, const uint8_t dst[6], uint64_t want) {
    uint64_t mask = 0;
    PolicyDrop reason = POLICY_DROP_MAX;
    const uint8_t *src = port == ROUTER ? MAC_ROUTER
                         : port == A    ? MAC_A
                         : port == B    ? MAC_B
                                        : MAC_C;
    assert_int_equal(route(p, port, dst, src, &mask, &reason), 1);
    assert_true(mask == want);
    assert_int_equal(reason, POLICY_DROP_MAX); /* untouched */
}

static void expect_drop(Policy *p, unsigned port, const uint8_t dst[6], const uint8_t src[6],
                        PolicyDrop want) {
    uint64_t mask = 0xdead;
    PolicyDrop reason = POLICY_DROP_MAX;
    uint64_t before = policy_drops(p, port, want);
    assert_int_equal(route(p, port, dst, src, &mask, &reason), 0);
    assert_int_equal(reason, want);
    assert_true(mask == 0xdead); /* untouched */
    assert_true(policy_drops(p, port, want) == before + 1);
}

static void test_unicast(void **state) {
    Policy *p = *state;
    /* Clients reach the router, the router reaches every client. */
    expect_forward(p, A, MAC_ROUTER, BIT(ROUTER));
    expect_forward(p, C, MAC_ROUTER, BIT(ROUTER));
    expect_forward(p, ROUTER, MAC_A, BIT(A));
    expect_forward(p, ROUTER, MAC_C, BIT(C));
    /* Clients never reach each other. */
    expect_drop(p, A, MAC_B, MAC_A, POLICY_DROP_CLIENT_TO_CLIENT);
    expect_drop(p, B, MAC_C, MAC_B, POLICY_DROP_CLIENT_TO_CLIENT);
    /* Unknown unicast is dropped, not flooded, from either side. */
    expect_drop(p, A, MAC_NOBODY, MAC_A, POLICY_DROP_UNKNOWN_UNICAST);
    expect_drop(p, ROUTER, MAC_NOBODY, MAC_ROUTER, POLICY_DROP_UNKNOWN_UNICAST);
    /* To oneself. */
    expect_drop(p, A, MAC_A, MAC_A, POLICY_DROP_TO_SELF);
    expect_drop(p, ROUTER, MAC_ROUTER, MAC_ROUTER, POLICY_DROP_TO_SELF);
}

static void test_broadcast_multicast(void **state) {
    Policy *p = *state;
    expect_forward(p, A, BCAST, BIT(ROUTER));
    expect_forward(p, B, MCAST, BIT(ROUTER));
    expect_forward(p, ROUTER, BCAST, BIT(A) | BIT(B) | BIT(C));
    expect_forward(p, ROUTER, MCAST, BIT(A) | BIT(B) | BIT(C));
}

static void test_spoofed_source(void **state) {
    Policy *p = *state;
    /* Another VM's MAC, the router's, a stranger's, a group address. */
    expect_drop(p, A, MAC_ROUTER, MAC_B, POLICY_DROP_SPOOFED_SOURCE);
    expect_drop(p, A, BCAST, MAC_ROUTER, POLICY_DROP_SPOOFED_SOURCE);
    expect_drop(p, A, MAC_ROUTER, MAC_NOBODY, POLICY_DROP_SPOOFED_SOURCE);
    expect_drop(p, ROUTER, MAC_A, MAC_B, POLICY_DROP_SPOOFED_SOURCE);
    expect_drop(p, ROUTER, MAC_A, BCAST, POLICY_DROP_SPOOFED_SOURCE);
    assert_true(policy_drops(p, A, POLICY_DROP_SPOOFED_SOURCE) == 3);
    assert_true(policy_drops(p, ROUTER, POLICY_DROP_SPOOFED_SOURCE) == 2);
    assert_true(policy_drops(p, B, POLICY_DROP_SPOOFED_SOURCE) == 0);
}

static void test_runt(void **state) {
    Policy *p = *state;
    uint8_t frame[14] = {0};
    uint64_t mask;
    PolicyDrop reason;
    memcpy(frame, MAC_ROUTER, 6);
    memcpy(frame + 6, MAC_A, 6);
    assert_int_equal(policy_route(p, A, frame, 13, &mask, &reason), 0);
    assert_int_equal(reason, POLICY_DROP_RUNT);
    assert_int_equal(policy_route(p, A, frame, 0, &mask, NULL), 0);
    assert_true(policy_drops(p, A, POLICY_DROP_RUNT) == 2);
    /* A bare header is a frame. */
    assert_int_equal(policy_route(p, A, frame, 14, &mask, NULL), 1);
}

static void test_no_router(void **state) {
    Policy *p = *state;
    assert_int_equal(policy_remove_port(p, ROUTER), 0);
    assert_int_equal(policy_remove_port(p, ROUTER), -ENOENT);
    expect_drop(p, A, BCAST, MAC_A, POLICY_DROP_NO_DESTINATION);
    expect_drop(p, A, MAC_ROUTER, MAC_A, POLICY_DROP_UNKNOWN_UNICAST);
    /* A removed port sends nothing. */
    uint64_t mask;
    assert_int_equal(route(p, ROUTER, MAC_A, MAC_ROUTER, &mask, NULL), -EINVAL);
    /* A router alone with nobody. */
    Policy *q;
    assert_int_equal(policy_new(&q), 0);
    assert_int_equal(policy_set_port(q, 5, MAC_ROUTER, VM_ROLE_ROUTER), 0);
    PolicyDrop reason;
    assert_int_equal(route(q, 5, BCAST, MAC_ROUTER, &mask, &reason), 0);
    assert_int_equal(reason, POLICY_DROP_NO_DESTINATION);
    policy_free(q);
}

static void test_ports(void **state) {
    Policy *p = *state;
    uint64_t mask;
    /* One router per network; MACs unique. */
    assert_int_equal(policy_set_port(p, 7, MAC_NOBODY, VM_ROLE_ROUTER), -EEXIST);
    assert_int_equal(policy_set_port(p, 7, MAC_A, VM_ROLE_CLIENT), -EEXIST);
    assert_int_equal(policy_set_port(p, POLICY_MAX_PORTS, MAC_NOBODY, VM_ROLE_CLIENT), -ERANGE);
    assert_int_equal(policy_set_port(p, 7, MAC_NOBODY, 9), -EINVAL);
    assert_int_equal(policy_remove_port(p, POLICY_MAX_PORTS), -ERANGE);
    assert_int_equal(route(p, POLICY_MAX_PORTS, MAC_A, MAC_A, &mask, NULL), -EINVAL);
    assert_int_equal(route(p, 7, MAC_A, MAC_A, &mask, NULL), -EINVAL);
    /* Re-setting a port keeps its MAC legal and resets its counters. */
    expect_drop(p, A, MAC_B, MAC_A, POLICY_DROP_CLIENT_TO_CLIENT);
    assert_int_equal(policy_set_port(p, A, MAC_A, VM_ROLE_CLIENT), 0);
    assert_true(policy_drops(p, A, POLICY_DROP_CLIENT_TO_CLIENT) == 0);
    /* Roles move: A becomes the router once the old one is a client. */
    assert_int_equal(policy_set_port(p, ROUTER, MAC_ROUTER, VM_ROLE_CLIENT), 0);
    assert_int_equal(policy_set_port(p, A, MAC_A, VM_ROLE_ROUTER), 0);
    expect_forward(p, B, BCAST, BIT(A));
    expect_forward(p, A, BCAST, BIT(ROUTER) | BIT(B) | BIT(C));
    expect_drop(p, ROUTER, MAC_B, MAC_ROUTER, POLICY_DROP_CLIENT_TO_CLIENT);
    /* The highest port works like any. */
    assert_int_equal(policy_set_port(p, 63, MAC_NOBODY, VM_ROLE_CLIENT), 0);
    expect_forward(p, A, MAC_NOBODY, BIT(63));
    assert_true(policy_drops(p, 64, POLICY_DROP_RUNT) == 0);
    assert_true(policy_drops(p, A, POLICY_DROP_MAX) == 0);
}

static void test_names(void **state) {
    assert_string_equal(policy_drop_name(POLICY_DROP_SPOOFED_SOURCE), "spoofed_source");
    assert_string_equal(policy_drop_name(POLICY_DROP_UNKNOWN_UNICAST), "unknown_unicast");
    for (int i = 0; i < POLICY_DROP_MAX; i++) {
        assert_non_null(policy_drop_name(i));
        assert_string_not_equal(policy_drop_name(i), "unknown");
    }
    assert_string_equal(policy_drop_name(POLICY_DROP_MAX), "unknown");
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void) {
    const struct CMUnitTest tests[] = {
        T(test_unicast), T(test_broadcast_multicast), T(test_spoofed_source),
        T(test_runt),    T(test_no_router),           T(test_ports),
        T(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
