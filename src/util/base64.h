/*
 * base64 — RFC 4648 base64 (with padding), for HTTP Basic credentials and
 * binary payloads in JSON. Pure functions.
 */
#ifndef AVIARY_BASE64_H
#define AVIARY_BASE64_H

#include <stddef.h>

/* Characters base64_encode() writes for `len` bytes, without the NUL. */
#define BASE64_ENCODED_LEN(len) (((len) + 2) / 3 * 4)

/* Encode `len` bytes of `in` into `out` (BASE64_ENCODED_LEN(len) + 1 bytes, NUL-terminated). */
void base64_encode(const void *in, size_t len, char *out);

/*
 * Decode the NUL-terminated `in` into `out` (room for strlen(in) / 4 * 3
 * bytes). Returns the bytes written, or -1 when `in` is not padded base64.
 */
long base64_decode(const char *in, unsigned char *out);

#endif
