/*
 * strmap — a hash map from NUL-terminated strings to pointers.
 *
 * The map copies each key and frees its copies, unless told to borrow them
 * (strmap_borrow_keys); values are the caller's and are never freed by the
 * map. Keys are hashed with a random SipHash key, so
 * clients choosing ids cannot make them collide. Open addressing with linear
 * probing and tombstone-free deletion (backward shift, util/probe.h), so
 * lookups stay short.
 * Not thread-safe: one owner.
 */
#ifndef AVIARY_STRMAP_H
#define AVIARY_STRMAP_H

#include <stdbool.h>
#include <stddef.h>

#include "util/siphash.h"

struct strmap_slot {
    char *key; /* NULL when the slot is empty */
    void *value;
    size_t hash;
};

struct strmap {
    struct strmap_slot *slots;
    size_t cap; /* a power of two, or 0 before the first insert */
    size_t count;
    struct siphash_key key; /* drawn at the first insert: keys come from clients */
    bool borrowed;          /* keys are the callers' strings, not copies */
};

/* An empty map needs no allocation: `struct strmap m = {0};` is valid. */

/*
 * Keep the caller's key strings instead of copies, for a map whose values
 * hold their own keys: each key passed to strmap_put() must stay unchanged
 * until its entry is replaced or removed. Call on an empty map; it lasts
 * through strmap_clear().
 */
static inline void strmap_borrow_keys(struct strmap *m)
{
    m->borrowed = true;
}

/* The value stored under `key`, or NULL. */
void *strmap_get(const struct strmap *m, const char *key);

/*
 * Store `value` under `key`, replacing any previous value (returned through
 * *old when `old` is not NULL). Returns 0, or -ENOMEM (the map is unchanged).
 */
int strmap_put(struct strmap *m, const char *key, void *value, void **old);

/* Remove `key`. Returns its value, or NULL when it was absent. */
void *strmap_remove(struct strmap *m, const char *key);

/* Free the map's own memory (keys and slots), not the values. */
void strmap_clear(struct strmap *m);

/* Iterate: *pos starts at 0; returns the next slot's value and key, or NULL at the end. */
void *strmap_next(const struct strmap *m, size_t *pos, const char **key);

#endif
