/* guest/idle: when a disposable VM counts as idle. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "guest/idle.h"

#define SEC 1000000ULL

static void test_no_timeout_never_expires(void **state) {
    Idle i;
    idle_init(&i, 5 * SEC, 0);
    assert_int_equal(idle_live(&i), 0);
    assert_true(idle_deadline_usec(&i) == IDLE_NEVER);
    assert_false(idle_expired(&i, UINT64_MAX - 1));
    /* Idle time is still reported. */
    assert_int_equal(idle_elapsed_usec(&i, 8 * SEC), 3 * SEC);
}

static void test_expires_after_timeout_from_start(void **state) {
    Idle i;
    idle_init(&i, 10 * SEC, 30 * SEC);
    assert_int_equal(idle_deadline_usec(&i), 40 * SEC);
    assert_false(idle_expired(&i, 39 * SEC));
    assert_true(idle_expired(&i, 40 * SEC));
    assert_true(idle_expired(&i, 100 * SEC));
}

static void test_never_during_a_session(void **state) {
    Idle i;
    idle_init(&i, 0, 30 * SEC);
    idle_session_begin(&i, 1 * SEC);
    assert_int_equal(idle_live(&i), 1);
    assert_true(idle_deadline_usec(&i) == IDLE_NEVER);
    assert_false(idle_expired(&i, 1000 * SEC));
    assert_int_equal(idle_elapsed_usec(&i, 1000 * SEC), 0);
    idle_session_end(&i, 1000 * SEC);
    /* Counted from the end of the last session. */
    assert_int_equal(idle_deadline_usec(&i), 1030 * SEC);
    assert_false(idle_expired(&i, 1029 * SEC));
    assert_true(idle_expired(&i, 1030 * SEC));
    assert_int_equal(idle_elapsed_usec(&i, 1010 * SEC), 10 * SEC);
}

static void test_overlapping_sessions(void **state) {
    Idle i;
    idle_init(&i, 0, 10 * SEC);
    idle_session_begin(&i, 1 * SEC);
    idle_session_begin(&i, 2 * SEC);
    idle_session_end(&i, 3 * SEC);
    /* One still live: nothing counts. */
    assert_int_equal(idle_live(&i), 1);
    assert_false(idle_expired(&i, 100 * SEC));
    idle_session_end(&i, 50 * SEC);
    assert_int_equal(idle_live(&i), 0);
    assert_int_equal(idle_deadline_usec(&i), 60 * SEC);
}

static void test_new_session_resets(void **state) {
    Idle i;
    idle_init(&i, 0, 10 * SEC);
    idle_session_begin(&i, 9 * SEC);
    idle_session_end(&i, 9 * SEC + 1);
    assert_false(idle_expired(&i, 10 * SEC));
    assert_true(idle_expired(&i, 19 * SEC + 1));
}

static void test_unbalanced_end_is_harmless(void **state) {
    Idle i;
    idle_init(&i, 0, 10 * SEC);
    idle_session_end(&i, 5 * SEC);
    assert_int_equal(idle_live(&i), 0);
    assert_int_equal(idle_deadline_usec(&i), 10 * SEC);
}

static void test_clock_before_start(void **state) {
    Idle i;
    idle_init(&i, 10 * SEC, 10 * SEC);
    assert_int_equal(idle_elapsed_usec(&i, 5 * SEC), 0);
    assert_false(idle_expired(&i, 5 * SEC));
}

static void test_huge_timeout_does_not_overflow(void **state) {
    Idle i;
    idle_init(&i, UINT64_MAX - 10, UINT64_MAX / 2);
    assert_true(idle_deadline_usec(&i) == IDLE_NEVER);
    assert_false(idle_expired(&i, UINT64_MAX - 1));
}

static void test_restart(void **state) {
    Idle i;
    idle_init(&i, 0, 10 * SEC);
    idle_restart(&i, 12 * SEC);
    assert_int_equal(idle_deadline_usec(&i), 22 * SEC);
    assert_int_equal(idle_elapsed_usec(&i, 13 * SEC), 1 * SEC);
    /* While a session is live there is nothing to restart. */
    idle_session_begin(&i, 13 * SEC);
    idle_restart(&i, 14 * SEC);
    assert_true(idle_deadline_usec(&i) == IDLE_NEVER);
    idle_session_end(&i, 15 * SEC);
    assert_int_equal(idle_deadline_usec(&i), 25 * SEC);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_timeout_never_expires),
        cmocka_unit_test(test_expires_after_timeout_from_start),
        cmocka_unit_test(test_never_during_a_session),
        cmocka_unit_test(test_overlapping_sessions),
        cmocka_unit_test(test_new_session_resets),
        cmocka_unit_test(test_unbalanced_end_is_harmless),
        cmocka_unit_test(test_clock_before_start),
        cmocka_unit_test(test_huge_timeout_does_not_overflow),
        cmocka_unit_test(test_restart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
