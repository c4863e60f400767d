/* The hybrid vsock lines: what a host client writes to the device
 * ("CONNECT <port>\n") and what the device answers ("OK <port>\n"), as
 * hvsock_line_parse() sees the first bytes of a stream. A line accepted is
 * exactly the canonical one for its port, at most HVSOCK_LINE_MAX bytes;
 * every shorter prefix of it asks for more; "more" is never said of input
 * that no line starts with; and a refusal stays a refusal whatever
 * follows.
 *
 * Input: [word: bit 0 of byte 0 chooses OK over CONNECT][stream bytes...] */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) {
        return 0;
    }
    const char *word = (data[0] & 1) ? "OK" : "CONNECT";
    const char *in = (const char *)data + 1;
    size_t n = size - 1;
    uint32_t port = 12345;
    char line[HVSOCK_LINE_MAX + 1];

    int r = hvsock_line_parse(in, n, word, &port);
    if (r > 0) {
        int k = hvsock_line_format(line, sizeof(line), word, port);
        if (k != r || (size_t)r > n || r > HVSOCK_LINE_MAX || memcmp(line, in, (size_t)r) != 0 ||
            port == UINT32_MAX) {
            abort();
        }
        /* Incremental: every prefix asks for more, and says nothing. */
        for (int i = 0; i < r; i++) {
            uint32_t p = 7;
            if (hvsock_line_parse(in, (size_t)i, word, &p) != 0 || p != 7) {
                abort();
            }
        }
        return 0;
    }
    if (port != 12345) {
        abort(); /* written on failure */
    }
    if (r == 0) {
        /* More is needed: the bytes so far are shorter than a line, and
         * completing them with digits and a newline may give one. */
        if (n >= HVSOCK_LINE_MAX) {
            abort();
        }
        return 0;
    }
    if (r != -EPROTO) {
        abort();
    }
    /* Refused stays refused with anything after it. */
    static const char *const tails[] = {"\n", "0\n", "1\n", " 1\n", "5200\n"};
    for (size_t t = 0; t < sizeof(tails) / sizeof(tails[0]); t++) {
        char more[512];
        size_t tl = strlen(tails[t]);
        if (n + tl > sizeof(more)) {
            break;
        }
        memcpy(more, in, n);
        memcpy(more + n, tails[t], tl);
        if (hvsock_line_parse(more, n + tl, word, &port) != -EPROTO) {
            abort();
        }
    }
    return 0;
}
