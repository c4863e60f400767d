/* Exec validation: the input is the body of a Exec message, wrapped as its
 * field of an Envelope, so the fuzzer explores Exec's fields directly.
 * Whatever decodes must pass the round-trip oracle. */
#include <stddef.h>
#include <stdint.h>

#include "oracle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    oracle_wrapped(2, data, size);
    return 0;
}
