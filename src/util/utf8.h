/*
 * utf8 — how long the well-formed UTF-8 sequence at a position is: the one
 * test behind aviaryctl's checks of labels, the JSON it writes and the JSON
 * the management API reads. Pure.
 */
#ifndef AVIARY_UTF8_H
#define AVIARY_UTF8_H

#include <stddef.h>

/*
 * The length (1 to 4) of the well-formed UTF-8 sequence at `p`, which has
 * `n` bytes (n >= 1), or 0: no overlong forms, no UTF-16 surrogates, nothing
 * above U+10FFFF.
 */
size_t utf8_length(const unsigned char *p, size_t n);

#endif
