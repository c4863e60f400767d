/* One message's validation: the input is the body of one message, wrapped
 * as its field (FUZZ_FIELD) of an Envelope, so the fuzzer explores that
 * message's fields directly. With FUZZ_EXEC_FIELD the input is instead the
 * body of that field of an Exec whose argv is fixed (a Pty is validated
 * inside an Exec), and the Exec is the Envelope's field. Whatever decodes
 * must pass the round-trip oracle.
 *
 * fuzz.mk builds one target per message from this file, FUZZ_FIELD and
 * FUZZ_EXEC_FIELD given on the command line: fuzz-hello, fuzz-exec,
 * fuzz-pty, fuzz-data, fuzz-exited, fuzz-error, fuzz-host-status. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "oracle.h"
#include "util.h"

#ifndef FUZZ_FIELD
#error "FUZZ_FIELD (the message's field number in Envelope) is set by fuzz.mk"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#ifdef FUZZ_EXEC_FIELD
#define EXEC_ARGV_KEY 0x0a /* field 1, length-delimited */
#define EXEC_FIELD_KEY ((FUZZ_EXEC_FIELD << 3) | 2)
/* A varint of a size_t takes at most 10 bytes. */
#define VARINT_MAX 10

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const uint8_t argv[] = {EXEC_ARGV_KEY, 2, 's', 'h'};
    _cleanup_free_ uint8_t *exec = malloc(sizeof(argv) + 1 + VARINT_MAX + size);
    size_t o = sizeof(argv);

    if (!exec) {
        abort();
    }
    memcpy(exec, argv, sizeof(argv));
    exec[o++] = EXEC_FIELD_KEY;
    for (uint64_t v = size;; v >>= 7) {
        exec[o++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        if (v <= 0x7f) {
            break;
        }
    }
    if (size) {
        memcpy(exec + o, data, size);
    }
    oracle_wrapped(FUZZ_FIELD, exec, o + size);
    return 0;
}
#else
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    oracle_wrapped(FUZZ_FIELD, data, size);
    return 0;
}
#endif
