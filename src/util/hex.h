/*
 * hex — bytes as lowercase hexadecimal text: token ids, and the catalog's
 * keys made of secret hashes. Pure; the buffers are the caller's.
 */
#ifndef AVIARY_HEX_H
#define AVIARY_HEX_H

#include <stddef.h>
#include <stdint.h>

/* The size of the text hex_encode() writes for `len` bytes, the NUL included. */
#define HEX_SIZE(len) (2 * (len) + 1)

/*
 * Write the `len` bytes at `in` as 2 * len lowercase hex digits and a NUL to
 * `out`, which holds HEX_SIZE(len) bytes.
 */
void hex_encode(const uint8_t *in, size_t len, char *out);

#endif
