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

/* Decodes an Envelope made of one length-delimited field (field number
 * field, payload data) and, when it decodes, runs the round-trip oracle.
 * Lets a target hand the fuzzer one message type's fields directly.
 * Returns wire_decode's result. */
int oracle_wrapped(uint32_t field, const uint8_t *data, size_t size);
