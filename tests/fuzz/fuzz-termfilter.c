/* The terminal filter (host/cli/termfilter.c), fed a guest's output: the
 * first byte chooses where the rest is cut in two chunks. Whatever comes
 * in, the output has as many bytes as the input, holds only what may
 * pass (printable ASCII, tab, newline, carriage return, well-formed UTF-8
 * of U+00A0 and above), is the same however the input is cut, and passes
 * the filter again unchanged. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "host/cli/termfilter.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Filters in (cut at cut) into a new buffer; its length in *ret_n. */
static uint8_t *filter_all(const uint8_t *in, size_t n, size_t cut, size_t *ret_n) {
    TermFilter f = {0};
    uint8_t *out = malloc(n + 2 * TERM_FILTER_HELD_MAX + 1);
    if (!out) {
        abort();
    }
    size_t o = term_filter(&f, in, cut, out);
    o += term_filter(&f, in + cut, n - cut, out + o);
    o += term_filter_end(&f, out + o);
    *ret_n = o;
    return out;
}

/* Only what may pass: checked with a decoder of its own. */
static void check_clean(const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n;) {
        uint8_t c = p[i];
        if ((c >= 0x20 && c < 0x7f) || c == '\t' || c == '\n' || c == '\r') {
            i++;
            continue;
        }
        size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 0;
        uint32_t cp = len == 4 ? c & 0x07u : len == 3 ? c & 0x0fu : c & 0x1fu;
        if (len == 0 || i + len > n) {
            abort();
        }
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xc0) != 0x80) {
                abort();
            }
            cp = cp << 6 | (p[i + k] & 0x3fu);
        }
        static const uint32_t least[] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < 0xa0 || cp < least[len] || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff ||
            (len == 4 && c > 0xf4)) {
            abort();
        }
        i += len;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) {
        return 0;
    }
    const uint8_t *in = data + 1;
    size_t n = size - 1, cut = data[0] % (n + 1), a_n, b_n, c_n;

    uint8_t *a = filter_all(in, n, cut, &a_n);
    uint8_t *b = filter_all(in, n, n, &b_n);
    if (a_n != n || b_n != n || memcmp(a, b, n) != 0) {
        abort();
    }
    check_clean(a, a_n);
    uint8_t *c = filter_all(a, a_n, a_n / 2, &c_n);
    if (c_n != a_n || memcmp(a, c, a_n) != 0) {
        abort();
    }
    free(a);
    free(b);
    free(c);
    return 0;
}
