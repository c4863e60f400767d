/* The agent protocol on the wire: a frame is a 4-byte big-endian length
 * and one protobuf Envelope (proto/qubes-lite.proto). This is the codec:
 * decoding under an allocation budget, then validation into a plain Msg
 * (msg.h, validate.h), and encoding. Handlers only ever see a validated
 * Msg, never protobuf-c structs.
 *
 * A program includes this one header for the whole protocol: it also
 * brings in Data frames without protobuf-c (wire-data.h), blocking frame
 * I/O (wire-io.h) and the non-blocking reader and writer (wire-stream.h).
 * Those headers need only msg.h, so nothing here is cyclic. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "msg.h"
#include "wire-data.h"
#include "wire-io.h"
#include "wire-stream.h"

/* Frees what a decoded Msg owns; the Msg may be reused afterwards. */
void msg_done(Msg *m);

/* Decodes one frame body (without the 4-byte header) and validates every
 * field. Returns 0 and fills *ret, or:
 *   -E2BIG     body over WIRE_FRAME_MAX
 *   -EMSGSIZE  decoding would exceed WIRE_DECODE_BUDGET (hostile input)
 *   -EBADMSG   not a valid Envelope, or no message set
 *   -EINVAL    a field failed validation
 *   -ENOMEM    out of memory (ours, not the peer's fault)
 * On failure nothing is left allocated. */
int wire_decode(const uint8_t *untrusted_body, size_t size, Msg *ret);

/* Encodes m (only the fields its type uses) as a full frame, header
 * included, into a fresh buffer. */
int wire_encode(const Msg *m, uint8_t **ret_buf, size_t *ret_size);

/* Parses a frame header. -E2BIG when the announced body is over the cap. */
int wire_header_parse(const uint8_t hdr[WIRE_HEADER_SIZE], uint32_t *ret_size);
