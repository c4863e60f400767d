/* host/console: the scrollback ring and the pty pair. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "host/agent/console.h"
#include "util.h"

/* The ring's contents, oldest first, into a fresh buffer. */
static uint8_t *contents(const ConsoleRing *r, size_t *ret_n) {
    const uint8_t *a, *b;
    size_t na, nb;
    console_ring_spans(r, &a, &na, &b, &nb);
    uint8_t *out = malloc(na + nb + 1);
    assert_non_null(out);
    memcpy(out, a, na);
    memcpy(out + na, b, nb);
    *ret_n = na + nb;
    return out;
}

static void test_ring_empty_and_small(void **state) {
    ConsoleRing *r = calloc(1, sizeof(*r));
    size_t n;
    uint8_t *c = contents(r, &n);
    assert_int_equal(n, 0);
    free(c);
    console_ring_write(r, (const uint8_t *)"abc", 3);
    console_ring_write(r, (const uint8_t *)"de", 2);
    c = contents(r, &n);
    assert_int_equal(n, 5);
    assert_memory_equal(c, "abcde", 5);
    free(c);
    free(r);
}

/* Whatever the write sizes, the ring holds the last CONSOLE_SCROLLBACK
 * bytes of the stream, in order. */
static void test_ring_keeps_the_tail(void **state) {
    static const size_t sizes[] = {1, 7, 4096, 65535, 65536, 65537, 100000};
    size_t total = 3 * CONSOLE_SCROLLBACK + 12345;
    uint8_t *stream = malloc(total);
    assert_non_null(stream);
    for (size_t i = 0; i < total; i++) {
        stream[i] = (uint8_t)(i * 7 + i / 251);
    }
    for (size_t s = 0; s < ELEMENTSOF(sizes); s++) {
        ConsoleRing *r = calloc(1, sizeof(*r));
        size_t off = 0;
        while (off < total) {
            size_t k = MIN(sizes[s], total - off);
            console_ring_write(r, stream + off, k);
            off += k;
            /* Small writes: check now and then, or this takes minutes. */
            if (k < 4096 && off % 4099 >= k && off != total) {
                continue;
            }
            size_t n;
            uint8_t *c = contents(r, &n);
            size_t want = MIN(off, (size_t)CONSOLE_SCROLLBACK);
            assert_int_equal(n, want);
            assert_memory_equal(c, stream + off - want, want);
            free(c);
        }
        free(r);
    }
    free(stream);
}

static void test_pty_is_raw(void **state) {
    int master = -1, slave = -1;
    struct termios t;
    struct winsize ws;
    assert_int_equal(console_open_pty(&master, &slave), 0);
    assert_int_equal(tcgetattr(slave, &t), 0);
    assert_false(t.c_lflag & (ECHO | ICANON | ISIG));
    assert_int_equal(ioctl(slave, TIOCGWINSZ, &ws), 0);
    assert_int_equal(ws.ws_row, 24);
    assert_int_equal(ws.ws_col, 80);
    /* Bytes go through unchanged: no CR/LF translation. */
    assert_int_equal(write(slave, "a\nb", 3), 3);
    char buf[16];
    usleep(10000);
    assert_int_equal(read(master, buf, sizeof(buf)), 3);
    assert_memory_equal(buf, "a\nb", 3);
    close(master);
    close(slave);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ring_empty_and_small),
        cmocka_unit_test(test_ring_keeps_the_tail),
        cmocka_unit_test(test_pty_is_raw),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
