/* The filter vm-run puts between a guest's output and the user's terminal
 * (as qvm-run does): a compromised guest must not drive the terminal with
 * control sequences (retitle it, rewrite what is on screen, answer a
 * query with keystrokes, or worse with a terminal's bugs). Pure, so that
 * it is unit-tested and fuzzed.
 *
 * What passes: printable ASCII, tab, newline, carriage return, and
 * well-formed UTF-8 of U+00A0 and above (no overlong forms, no
 * surrogates, nothing above U+10FFFF). Everything else, ESC and the other
 * C0 controls, DEL, the C1 controls (U+0080..U+009F, and their 8-bit
 * bytes), and every byte of a malformed sequence, becomes one '_': the
 * output has as many bytes as the input. A sequence cut at the end of a
 * chunk is held until the next one completes it or shows it malformed. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#define TERM_FILTER_HELD_MAX 3u
#define TERM_FILTER_REPLACEMENT '_'

typedef struct TermFilter {
    uint8_t held[TERM_FILTER_HELD_MAX]; /* a UTF-8 sequence begun, not complete */
    uint8_t n_held;
    uint8_t need; /* that sequence's length */
} TermFilter;

/* Filters n bytes of untrusted_in into out, which has room for
 * n + TERM_FILTER_HELD_MAX bytes (what was held comes out first);
 * returns how many bytes it wrote. */
size_t term_filter(TermFilter *f, const uint8_t *untrusted_in, size_t n, uint8_t *out);
/* The end of the output: what is held is a cut sequence, replaced into
 * out (room for TERM_FILTER_HELD_MAX); returns how many bytes. */
size_t term_filter_end(TermFilter *f, uint8_t *out);
