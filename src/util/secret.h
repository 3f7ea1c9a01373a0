/*
 * secret — the hash under which a token's secret is kept and looked up.
 *
 * The database stores only this hash and the broker's catalog finds tokens by
 * it, so both must compute the same bytes: it is plain SHA-256, and must stay
 * so for stored hashes to keep matching. Secrets are 256 random bits, so a
 * slow password hash would protect nothing more. Pure; uses OpenSSL.
 */
#ifndef AVIARY_SECRET_H
#define AVIARY_SECRET_H

#include <stddef.h>
#include <stdint.h>

#define SECRET_HASH_LEN 32 /* SHA-256 */

/*
 * SHA-256 of the `len` bytes at `secret` (as given at login) into `out`.
 * Cannot fail; should OpenSSL, `out` is all zeros, which no stored hash is.
 */
void secret_hash(const void *secret, size_t len, uint8_t out[SECRET_HASH_LEN]);

#endif
