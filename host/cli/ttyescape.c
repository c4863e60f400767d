/* vm-run -t's escape: see ttyescape.h. */
#include "ttyescape.h"

size_t tty_escape_scan(TtyEscape *e, const uint8_t *in, size_t n, uint8_t *out, bool *ret_leave) {
    size_t o = 0;

    *ret_leave = false;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = in[i];
        if (e->held) {
            e->held = false;
            if (c == '.') {
                *ret_leave = true;
                return o;
            }
            if (c != TTY_ESCAPE_CHAR) {
                out[o++] = TTY_ESCAPE_CHAR;
            }
            /* '~~' is one '~', which leaves the line's start behind. */
        } else if (c == TTY_ESCAPE_CHAR && !e->mid_line) {
            e->held = true;
            continue;
        }
        out[o++] = c;
        e->mid_line = c != '\r' && c != '\n';
    }
    return o;
}
