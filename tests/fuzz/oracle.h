/* What the fuzz targets (and test-wire) check about a decoded message. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wire.h"

/* Field-by-field equality of two validated messages (only the fields
 * their type uses). */
bool msg_equal(const Msg *a, const Msg *b);

/* Aborts unless r is 0 or one of the errors wire_decode documents. */
void oracle_decode_result(int r);

/* The round-trip oracle: m must satisfy what wire.h promises of it and
 * re-encode into a frame whose header wire_header_parse accepts and whose
 * body decodes to a message equal to m. Aborts (a finding) otherwise. */
void oracle_roundtrip(const Msg *m);

/* The Data fast path (wire_data_header_parse) on a frame, its 4-byte
 * header included, of which n bytes are at frame: whatever it recognises
 * must be a whole frame that wire_decode decodes to the same Data, and any
 * allowed streams mask must agree with the stream found. Aborts otherwise. */
void oracle_data_fast_path(const uint8_t *frame, size_t n);

/* Decodes an Envelope made of one length-delimited field (field number
 * field, payload data) and, when it decodes, runs the round-trip oracle.
 * Lets a target hand the fuzzer one message type's fields directly.
 * Returns wire_decode's result. */
int oracle_wrapped(uint32_t field, const uint8_t *data, size_t size);
