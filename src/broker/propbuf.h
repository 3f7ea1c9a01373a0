/*
 * propbuf — builds the MQTT 5 property block of one outgoing packet.
 *
 * Small blocks stay in the struct itself; larger ones move to the heap. A
 * property that cannot be added (out of memory) marks the builder failed, and
 * the caller decides what to do (usually: close the connection). The caller
 * owns the builder, on its stack, and calls propbuf_free() when done.
 */
#ifndef AVIARY_PROPBUF_H
#define AVIARY_PROPBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec/codec.h"

#define PROPBUF_SMALL 128

struct propbuf {
    uint8_t *data; /* `small` or a heap block */
    size_t len, cap;
    bool failed; /* a property could not be added */
    uint8_t small[PROPBUF_SMALL];
};

void propbuf_init(struct propbuf *pb);
void propbuf_free(struct propbuf *pb);

/* Append one property (see codec_put_prop for the value fields). */
void propbuf_add(struct propbuf *pb, const struct mqtt_prop *prop);

/* Append an integer-valued property `id` (byte, two- or four-byte, or variable). */
void propbuf_int(struct propbuf *pb, uint8_t id, uint32_t value);

/* Append a UTF-8 string or binary property `id` of `len` bytes. */
void propbuf_str(struct propbuf *pb, uint8_t id, const void *s, size_t len);

/* Append properties already in wire form (a block, or part of one). */
void propbuf_raw(struct propbuf *pb, const uint8_t *data, size_t len);

/* The block built so far, borrowed from the builder. */
struct mqtt_props propbuf_props(const struct propbuf *pb);

#endif
