/* Terminal control sequences out of a guest's output: see termfilter.h. */
#include "termfilter.h"

#include <stdbool.h>
#include <string.h>

/* One byte that passes on its own. */
static bool plain(uint8_t c) {
    return (c >= 0x20 && c < 0x7f) || c == '\t' || c == '\n' || c == '\r';
}

/* The length of the UTF-8 sequence c begins, or 0 when c begins none
 * (a continuation byte, C0 and C1 as 0xc0/0xc1 would be overlong, 0xf5
 * and above would be beyond U+10FFFF). */
static unsigned sequence_length(uint8_t c) {
    if (c >= 0xc2 && c <= 0xdf) {
        return 2;
    }
    if (c >= 0xe0 && c <= 0xef) {
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        return 4;
    }
    return 0;
}

/* Whether c may come next in the sequence held. The second byte's range
 * depends on the first (Unicode's table of well-formed sequences), and
 * after 0xc2 it also keeps out U+0080..U+009F, the C1 controls. */
static bool continues(const TermFilter *f, uint8_t c) {
    uint8_t lo = 0x80, hi = 0xbf;
    if (f->n_held == 1) {
        switch (f->held[0]) {
        case 0xc2:
            lo = 0xa0; /* C1 controls */
            break;
        case 0xe0:
            lo = 0xa0; /* overlong */
            break;
        case 0xed:
            hi = 0x9f; /* surrogates */
            break;
        case 0xf0:
            lo = 0x90; /* overlong */
            break;
        case 0xf4:
            hi = 0x8f; /* beyond U+10FFFF */
            break;
        default:
            break;
        }
    }
    return c >= lo && c <= hi;
}

size_t term_filter(TermFilter *f, const uint8_t *untrusted_in, size_t n, uint8_t *out) {
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        uint8_t c = untrusted_in[i];
        if (f->n_held > 0) {
            if (continues(f, c)) {
                if (f->n_held + 1u == f->need) {
                    memcpy(out + o, f->held, f->n_held);
                    o += f->n_held;
                    out[o++] = c;
                    f->n_held = 0;
                } else {
                    f->held[f->n_held++] = c;
                }
                continue;
            }
            /* Malformed: what was held is replaced, and c starts afresh. */
            memset(out + o, TERM_FILTER_REPLACEMENT, f->n_held);
            o += f->n_held;
            f->n_held = 0;
        }
        if (plain(c)) {
            out[o++] = c;
        } else if ((f->need = (uint8_t)sequence_length(c)) > 0) {
            f->held[f->n_held++] = c;
        } else {
            out[o++] = TERM_FILTER_REPLACEMENT;
        }
    }
    return o;
}

size_t term_filter_end(TermFilter *f, uint8_t *out) {
    size_t n = f->n_held;
    memset(out, TERM_FILTER_REPLACEMENT, n);
    f->n_held = 0;
    return n;
}
