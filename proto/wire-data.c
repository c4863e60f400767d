/* Data frames without protobuf-c: see wire-data.h. */
#include "wire-data.h"

#include <arpa/inet.h>
#include <string.h>

#include "wire.h"

#define TAG_ENVELOPE_DATA ((4u << 3) | 2u) /* Envelope.data, length-delimited */
#define TAG_DATA_STREAM ((1u << 3) | 0u)   /* Data.stream, varint */
#define TAG_DATA_BYTES ((2u << 3) | 2u)    /* Data.data, length-delimited */

static size_t varint_size(uint32_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *varint_put(uint8_t *p, uint32_t v) {
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* A minimal varint of at most 3 bytes (a Data's lengths need no more) from
 * the n bytes at p: its length, or 0 when there is none. */
static size_t varint_get(const uint8_t *p, size_t n, uint32_t *ret) {
    uint32_t v = 0;
    for (size_t i = 0; i < 3 && i < n; i++) {
        v |= (uint32_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            if (i > 0 && p[i] == 0) {
                return 0; /* not minimal: left to protobuf-c */
            }
            *ret = v;
            return i + 1;
        }
    }
    return 0;
}

size_t wire_data_header(uint8_t hdr[WIRE_DATA_HEADER_MAX], WireStream stream, uint32_t size) {
    uint8_t *p = hdr;
    uint32_t data_len = (stream != WIRE_STDIN ? 2u : 0u) + 1u + (uint32_t)varint_size(size) + size;
    uint32_t body = 1u + (uint32_t)varint_size(data_len) + data_len;
    uint32_t be = htonl(body);

    memcpy(p, &be, sizeof(be));
    p += sizeof(be);
    *p++ = TAG_ENVELOPE_DATA;
    p = varint_put(p, data_len);
    if (stream != WIRE_STDIN) {
        /* STREAM_STDIN is proto3's default, which wire_encode omits too. */
        *p++ = TAG_DATA_STREAM;
        *p++ = (uint8_t)stream;
    }
    *p++ = TAG_DATA_BYTES;
    p = varint_put(p, size);
    return (size_t)(p - hdr);
}

size_t wire_data_body_prefix(const uint8_t *untrusted, size_t n, uint32_t body_size,
                             unsigned streams, WireStream *ret_stream, uint32_t *ret_size) {
    uint32_t data_len, size;
    WireStream stream = WIRE_STDIN;
    size_t off, k, data_start;

    if (n < 1 || untrusted[0] != TAG_ENVELOPE_DATA) {
        return 0;
    }
    k = varint_get(untrusted + 1, n - 1, &data_len);
    if (k == 0) {
        return 0;
    }
    off = data_start = 1 + k;
    if (n - off >= 1 && untrusted[off] == TAG_DATA_STREAM) {
        if (n - off < 2 ||
            (untrusted[off + 1] != WIRE_STDOUT && untrusted[off + 1] != WIRE_STDERR)) {
            return 0;
        }
        stream = (WireStream)untrusted[off + 1];
        off += 2;
    }
    if (n - off < 1 || untrusted[off] != TAG_DATA_BYTES) {
        return 0;
    }
    off++;
    k = varint_get(untrusted + off, n - off, &size);
    if (k == 0) {
        return 0;
    }
    off += k;
    if (size == 0 || size > WIRE_DATA_MAX || !(streams & WIRE_STREAM_BIT(stream))) {
        return 0;
    }
    /* One Data holding exactly these two fields, and nothing after it. */
    if ((uint64_t)data_len != (uint64_t)(off - data_start) + size ||
        (uint64_t)body_size != (uint64_t)off + size) {
        return 0;
    }
    *ret_stream = stream;
    *ret_size = size;
    return off;
}

int wire_data_header_parse(const uint8_t *p, size_t n, unsigned streams, WireStream *ret_stream,
                           uint32_t *ret_size) {
    uint32_t body;
    if (n < WIRE_HEADER_SIZE || wire_header_parse(p, &body) < 0) {
        return 0;
    }
    size_t k = wire_data_body_prefix(p + WIRE_HEADER_SIZE, n - WIRE_HEADER_SIZE, body, streams,
                                     ret_stream, ret_size);
    return k ? (int)(WIRE_HEADER_SIZE + k) : 0;
}
