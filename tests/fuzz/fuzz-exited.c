/* Exited validation: the input is the body of a Exited message, wrapped as its
 * field of an Envelope, so the fuzzer explores Exited's fields directly.
 * Whatever decodes must pass the round-trip oracle. */
#include <stddef.h>
#include <stdint.h>

#include "oracle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    oracle_wrapped(9, data, size);
    return 0;
}
