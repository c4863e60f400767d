/* Data frames without protobuf-c, for bulk transfers: a sender writes
 * this header and then the payload (from its own buffer, or by splice()
 * from a pipe); a receiver that recognises the header takes the payload as
 * it lies. The header is the frame length, the Envelope's Data field and
 * the Data fields before the payload (stream, omitted for stdin as
 * wire_encode omits it, and the bytes' tag and length): at most
 * WIRE_DATA_HEADER_MAX bytes. Anything not laid out exactly so goes
 * through wire_decode(). */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "msg.h"

#define WIRE_DATA_HEADER_MAX 14u
#define WIRE_STREAM_BIT(s) (1u << (s))
#define WIRE_STREAMS_ALL                                                                           \
    (WIRE_STREAM_BIT(WIRE_STDIN) | WIRE_STREAM_BIT(WIRE_STDOUT) | WIRE_STREAM_BIT(WIRE_STDERR))

/* Writes the header of a Data frame carrying size bytes (1..WIRE_DATA_MAX)
 * of stream and returns its length. */
size_t wire_data_header(uint8_t hdr[WIRE_DATA_HEADER_MAX], WireStream stream, uint32_t size);

/* Recognises the header of a Data frame in the first n bytes of p (the
 * frame's 4-byte length included): returns the header length and fills
 * *ret_stream and *ret_size when the frame has exactly the layout
 * wire_data_header() writes, its stream is in streams (WIRE_STREAM_BIT()s)
 * and it carries 1..WIRE_DATA_MAX bytes; wire_decode() would give the same
 * Data for it. Returns 0 for anything else, and when n is too short to
 * tell: such a frame must go through wire_decode(). */
int wire_data_header_parse(const uint8_t *p, size_t n, unsigned streams, WireStream *ret_stream,
                           uint32_t *ret_size);

/* The same on a frame body of body_size bytes (the 4-byte length already
 * read), of which the n bytes at untrusted hold the start: the length of
 * the part before the payload, or 0. */
size_t wire_data_body_prefix(const uint8_t *untrusted, size_t n, uint32_t body_size,
                             unsigned streams, WireStream *ret_stream, uint32_t *ret_size);
