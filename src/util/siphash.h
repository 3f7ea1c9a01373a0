/*
 * siphash — a keyed hash for tables whose keys come from clients (topic
 * levels, client ids). With a secret random key a client cannot choose keys
 * that collide, so it cannot turn a hash table into a linked list and stall
 * the core thread. Pure functions; the key is the caller's.
 */
#ifndef AVIARY_SIPHASH_H
#define AVIARY_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

struct siphash_key {
    uint64_t k[2];
};

/* Fill `key` from the kernel's random source (a time-based key if it has no entropy yet). */
void siphash_key_random(struct siphash_key *key);

/* SipHash-1-3 of `len` bytes at `data` under `key`. */
uint64_t siphash13(const struct siphash_key *key, const void *data, size_t len);

/* SipHash-2-4, the reference variant, for checking the implementation against its test vectors. */
uint64_t siphash24(const struct siphash_key *key, const void *data, size_t len);

#endif
