/* host/ttyescape: vm-run -t's '~.' escape. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "host/cli/ttyescape.h"

/* Feeds the keystrokes in pieces (each string one read) and returns what
 * went out, concatenated, and whether the session was left. */
static bool feed(TtyEscape *e, const char *const *reads, char *out) {
    size_t o = 0;
    for (size_t i = 0; reads[i]; i++) {
        bool leave;
        o += tty_escape_scan(e, (const uint8_t *)reads[i], strlen(reads[i]), (uint8_t *)out + o,
                             &leave);
        if (leave) {
            out[o] = '\0';
            return true;
        }
    }
    out[o] = '\0';
    return false;
}

#define FEED(out, ...) feed(&(TtyEscape){0}, (const char *const[]){__VA_ARGS__, NULL}, (out))

static void test_tilde_dot_at_a_line_start_leaves(void **state) {
    char out[64];
    assert_true(FEED(out, "~."));
    assert_string_equal(out, "");
    assert_true(FEED(out, "ls\r~.after"));
    assert_string_equal(out, "ls\r");
    assert_true(FEED(out, "ls\n~.")); /* a terminal in a mode that sends \n */
    assert_string_equal(out, "ls\n");
    /* Cut between two reads, anywhere. */
    assert_true(FEED(out, "ls\r", "~", ".", "more"));
    assert_string_equal(out, "ls\r");
    assert_true(FEED(out, "ls\r~", ".more"));
    assert_string_equal(out, "ls\r");
}

static void test_tilde_elsewhere_is_a_tilde(void **state) {
    char out[64];
    /* Mid-line: sent as typed. */
    assert_false(FEED(out, "cd ~.", "/x~."));
    assert_string_equal(out, "cd ~./x~.");
    /* '~~' at a line start is one '~', and then the line has begun. */
    assert_false(FEED(out, "~~.", "\r~", "~"));
    assert_string_equal(out, "~.\r~");
    /* '~' and another key: both go, as typed. */
    assert_false(FEED(out, "~/bin\r~", "x"));
    assert_string_equal(out, "~/bin\r~x");
    /* A held '~' with the next read's first key. */
    assert_false(FEED(out, "~", "a"));
    assert_string_equal(out, "~a");
    /* '~' then Enter: both go, and a new line starts. */
    assert_true(FEED(out, "~\r~."));
    assert_string_equal(out, "~\r");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tilde_dot_at_a_line_start_leaves),
        cmocka_unit_test(test_tilde_elsewhere_is_a_tilde),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
