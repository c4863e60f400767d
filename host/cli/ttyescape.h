/* vm-run -t's escape, as ssh's: '~' then '.' at the start of a line (at
 * the start, or after Enter) ends the session whatever the guest does;
 * '~' '~' there sends one '~'; a '~' there followed by anything else is
 * sent as it was typed. Pure, so that it is unit-tested. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TTY_ESCAPE_CHAR '~'

typedef struct TtyEscape {
    bool mid_line; /* a key other than Enter came last */
    bool held;     /* a '~' at the start of a line, not yet sent */
} TtyEscape;

/* Scans n keystrokes into out (room for n + 1: a '~' held from before may
 * go out first): what goes to the command. *ret_leave is set when '~.'
 * was typed; out then holds what came before it, and what came after is
 * dropped. Returns the number of bytes in out. */
size_t tty_escape_scan(TtyEscape *e, const uint8_t *in, size_t n, uint8_t *out, bool *ret_leave);
