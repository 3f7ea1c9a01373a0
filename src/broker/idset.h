/*
 * idset — a set of MQTT packet ids (1..65535) as a bitmap.
 *
 * A session keeps two: the QoS 2 ids it received and has not seen released,
 * and the ids of its own in-flight window. Either may hold every id a client
 * can name, so membership, insertion and removal must not depend on how many
 * ids are in the set: one bit per id, 8 KB, allocated on the first insertion
 * so that sessions that never use QoS 1/2 pay nothing.
 *
 * Ownership: the set owns its bitmap; its owner calls idset_free(). An empty
 * set needs no allocation: `struct idset set = {0};` is valid. Core thread only.
 */
#ifndef AVIARY_IDSET_H
#define AVIARY_IDSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The bitmap's size: what a set holds once it has been used. */
#define IDSET_BYTES (65536u / 8)

struct idset {
    uint64_t *bits; /* 65536 bits; NULL until the first idset_add() */
    size_t count;   /* ids in the set */
};

/* True when `id` is in the set. */
bool idset_has(const struct idset *set, uint16_t id);

/*
 * Add `id` (adding a present id changes nothing). Allocates the bitmap on the
 * first call. Returns 0, or -ENOMEM (the set is unchanged).
 */
int idset_add(struct idset *set, uint16_t id);

/* Remove `id`. Returns 0, or -ENOENT when it was not in the set. */
int idset_remove(struct idset *set, uint16_t id);

/*
 * The first id after `after` that is not in the set, counting 1..65535 and
 * wrapping from 65535 to 1 (0 is never a packet id). Returns 0 when all
 * 65535 ids are in the set. Scans the bitmap a word at a time: at most
 * 1024 words, however full the set.
 */
uint16_t idset_next_clear(const struct idset *set, uint16_t after);

/* Free the bitmap; the set is empty and reusable afterwards. */
void idset_free(struct idset *set);

#endif
