/* host/termfilter: a guest's output on its way to the user's terminal. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "host/cli/termfilter.h"

/* in through one filter, in one piece, and its end; out must be want
 * (the same length: one '_' per byte taken out). */
static void expect(const char *in, size_t n, const char *want) {
    TermFilter f = {0};
    uint8_t out[256 + TERM_FILTER_HELD_MAX];
    assert_true(n <= 256);
    size_t o = term_filter(&f, (const uint8_t *)in, n, out);
    o += term_filter_end(&f, out + o);
    assert_int_equal(o, n);
    assert_memory_equal(out, want, n);
}

#define EXPECT(in, want) expect((in), sizeof(in) - 1, (want))

static void test_plain_text_passes(void **state) {
    EXPECT("hello, world 0123 ~!@#$%^&*()_+{}|:\"<>?", "hello, world 0123 ~!@#$%^&*()_+{}|:\"<>?");
    EXPECT("a\tb\r\nc\n", "a\tb\r\nc\n");
    EXPECT("", "");
}

static void test_controls_are_replaced(void **state) {
    /* A title change, a clear screen, a cursor move, a query whose answer
     * the terminal would type. */
    EXPECT("\x1b]0;pwned\x07", "_]0;pwned_");
    EXPECT("\x1b[2J\x1b[H", "_[2J_[H");
    EXPECT("\x1b[6n", "_[6n");
    /* Every C0 control but tab, newline, carriage return; and DEL. */
    for (int c = 0; c < 0x20; c++) {
        char in[2] = {(char)c, 0};
        if (c == '\t' || c == '\n' || c == '\r') {
            expect(in, 1, in);
        } else {
            expect(in, 1, "_");
        }
    }
    EXPECT("\x7f", "_");
    /* The 8-bit C1 controls (CSI 0x9b, OSC 0x9d) and their UTF-8 forms. */
    EXPECT("\x9b"
           "2J",
           "_2J");
    EXPECT("\x9d"
           "0;x",
           "_0;x");
    EXPECT("\xc2\x9b"
           "2J",
           "__2J");
    EXPECT("\xc2\x80\xc2\x9f", "____");
}

static void test_utf8_passes(void **state) {
    EXPECT("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xc2\xa0",
           "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xc2\xa0");
    EXPECT("\xed\x9f\xbf \xef\xbf\xbd \xf4\x8f\xbf\xbf",
           "\xed\x9f\xbf \xef\xbf\xbd \xf4\x8f\xbf\xbf");
}

static void test_malformed_utf8_is_replaced(void **state) {
    EXPECT("\xc0\xaf", "__");           /* overlong '/' */
    EXPECT("\xe0\x80\xaf", "___");      /* overlong */
    EXPECT("\xed\xa0\x80", "___");      /* a surrogate */
    EXPECT("\xf4\x90\x80\x80", "____"); /* beyond U+10FFFF */
    EXPECT("\xf5\x80", "__");
    EXPECT("\x80 \xbf", "_ _"); /* lone continuation bytes */
    EXPECT("\xe2\x82"
           "A",
           "__A"); /* cut short: what follows stays */
    EXPECT("\xe2\x82\x1b[", "___[");
    EXPECT("\xe2\x82", "__"); /* cut by the end */
}

/* A sequence cut between two chunks comes out whole once completed. */
static void test_sequence_across_chunks(void **state) {
    static const uint8_t s[] = "x\xf0\x9f\x98\x80y";
    for (size_t cut = 0; cut <= sizeof(s) - 1; cut++) {
        TermFilter f = {0};
        uint8_t out[32];
        size_t o = term_filter(&f, s, cut, out);
        o += term_filter(&f, s + cut, sizeof(s) - 1 - cut, out + o);
        o += term_filter_end(&f, out + o);
        assert_int_equal(o, sizeof(s) - 1);
        assert_memory_equal(out, s, sizeof(s) - 1);
    }
    /* Held, then shown malformed by the next chunk. */
    TermFilter f = {0};
    uint8_t out[16];
    size_t o = term_filter(&f, (const uint8_t *)"\xe2\x82", 2, out);
    assert_int_equal(o, 0);
    o = term_filter(&f, (const uint8_t *)"\x1b", 1, out);
    assert_int_equal(o, 3);
    assert_memory_equal(out, "___", 3);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_text_passes),
        cmocka_unit_test(test_controls_are_replaced),
        cmocka_unit_test(test_utf8_passes),
        cmocka_unit_test(test_malformed_utf8_is_replaced),
        cmocka_unit_test(test_sequence_across_chunks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
