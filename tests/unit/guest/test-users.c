/* guest/users: the user record's wire form, from the lookup child to the
 * agent. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "guest/users.h"

static const struct passwd alice = {
    .pw_name = "alice", .pw_uid = 1000, .pw_gid = 100, .pw_dir = "/home/alice",
    .pw_shell = "/bin/bash",
};

static void test_round_trip(void **state) {
    gid_t groups[] = {100, 27, 44};
    uint8_t buf[USER_RECORD_MAX];
    UserRecord *r = NULL;
    ssize_t n = user_record_encode(&alice, groups, 3, buf, sizeof(buf));
    assert_true(n > 0);
    assert_int_equal(user_record_parse(buf, (size_t)n, &r), 0);
    assert_int_equal(r->uid, 1000);
    assert_int_equal(r->gid, 100);
    assert_string_equal(r->name, "alice");
    assert_string_equal(r->dir, "/home/alice");
    assert_string_equal(r->shell, "/bin/bash");
    assert_int_equal(r->n_groups, 3);
    assert_memory_equal(r->groups, groups, sizeof(groups));
    free(r);
}

static void test_empty_home_and_shell_no_groups(void **state) {
    struct passwd pw = {.pw_name = "x", .pw_uid = 5, .pw_gid = 6};
    uint8_t buf[64];
    UserRecord *r = NULL;
    ssize_t n = user_record_encode(&pw, NULL, 0, buf, sizeof(buf));
    assert_int_equal(n, 21);
    assert_int_equal(user_record_parse(buf, (size_t)n, &r), 0);
    assert_string_equal(r->dir, "");
    assert_string_equal(r->shell, "");
    assert_int_equal(r->n_groups, 0);
    free(r);
}

static void test_too_many_groups(void **state) {
    static gid_t groups[USER_RECORD_MAX / 4];
    static uint8_t buf[2 * USER_RECORD_MAX];
    assert_int_equal(user_record_encode(&alice, groups, USER_RECORD_MAX / 4, buf, sizeof(buf)),
                     -E2BIG);
    assert_int_equal(user_record_encode(&alice, groups, 1, buf, 20), -E2BIG);
}

static void test_malformed(void **state) {
    gid_t groups[] = {100, 27};
    uint8_t buf[USER_RECORD_MAX + 1], bad[USER_RECORD_MAX + 1];
    UserRecord *r = NULL;
    ssize_t n = user_record_encode(&alice, groups, 2, buf, sizeof(buf));
    assert_true(n > 20);

    /* Every length but the right one. */
    for (size_t k = 0; k < (size_t)n; k++) {
        assert_int_equal(user_record_parse(buf, k, &r), -EBADMSG);
    }
    memcpy(bad, buf, (size_t)n);
    bad[n] = 'x';
    assert_int_equal(user_record_parse(bad, (size_t)n + 1, &r), -EBADMSG);

    /* A NUL inside a string, an empty name, nonzero padding, the ids that
     * mean "unchanged", a group count that does not add up. */
    static const struct {
        size_t off;
        uint8_t val;
    } edits[] = {{(size_t)20 + 8 + 2, 0}, {18, 1}, {12, 0}, {8, 3}, {8, 0xff}};
    for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
        memcpy(bad, buf, (size_t)n);
        bad[edits[i].off] = edits[i].val;
        assert_int_equal(user_record_parse(bad, (size_t)n, &r), -EBADMSG);
    }
    memcpy(bad, buf, (size_t)n);
    memset(bad, 0xff, 4); /* uid -1 */
    assert_int_equal(user_record_parse(bad, (size_t)n, &r), -EBADMSG);
    memcpy(bad, buf, (size_t)n);
    memset(bad + 4, 0xff, 4); /* gid -1 */
    assert_int_equal(user_record_parse(bad, (size_t)n, &r), -EBADMSG);
    memcpy(bad, buf, (size_t)n);
    memset(bad + 24, 0xff, 4); /* a group -1 */
    assert_int_equal(user_record_parse(bad, (size_t)n, &r), -EBADMSG);
    assert_null(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_empty_home_and_shell_no_groups),
        cmocka_unit_test(test_too_many_groups),
        cmocka_unit_test(test_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
