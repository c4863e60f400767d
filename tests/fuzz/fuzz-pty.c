/* Pty validation, which happens inside Exec: the input is the body of a
 * Pty message, placed in an Exec with a fixed argv, the Exec wrapped in an
 * Envelope. Whatever decodes must pass the round-trip oracle. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "oracle.h"
#include "util.h"

#define EXEC_FIELD 2
#define EXEC_ARGV_KEY 0x0a /* field 1, length-delimited */
#define EXEC_PTY_KEY 0x2a  /* field 5, length-delimited */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const uint8_t argv[] = {EXEC_ARGV_KEY, 2, 's', 'h'};
    _cleanup_free_ uint8_t *exec = malloc(sizeof(argv) + 1 + 5 + size);
    size_t o = sizeof(argv);

    if (!exec) {
        abort();
    }
    memcpy(exec, argv, sizeof(argv));
    exec[o++] = EXEC_PTY_KEY;
    for (uint64_t v = size;; v >>= 7) {
        exec[o++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        if (v <= 0x7f) {
            break;
        }
    }
    if (size) {
        memcpy(exec + o, data, size);
    }
    oracle_wrapped(EXEC_FIELD, exec, o + size);
    return 0;
}
