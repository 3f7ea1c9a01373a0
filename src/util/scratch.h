/*
 * scratch — a buffer on the caller's stack when what it needs fits, else on
 * the heap: the hot paths encode and copy into a small array, and only a
 * rare large packet or topic pays for malloc().
 *
 *     uint8_t small[256];
 *     struct scratch sc = SCRATCH_INIT(small);
 *     uint8_t *buf = scratch_get(&sc, need);  // NULL: out of memory
 *     ...
 *     scratch_free(&sc);
 *
 * One scratch hands out one buffer at a time: a second scratch_get() frees
 * what the first took from the heap. scratch_free() is safe whatever happened.
 */
#ifndef AVIARY_SCRATCH_H
#define AVIARY_SCRATCH_H

#include <stddef.h>
#include <stdlib.h>

struct scratch {
    void *small; /* the caller's array */
    size_t small_size;
    void *heap; /* owned; NULL while the small array serves */
};

#define SCRATCH_INIT(array)                                                                        \
    {                                                                                              \
        (array), sizeof(array), NULL                                                               \
    }

/* A buffer of at least `need` bytes, or NULL when out of memory. */
static inline void scratch_free(struct scratch *sc)
{
    if (sc->heap) { /* the hot paths never reach the allocator */
        free(sc->heap);
        sc->heap = NULL;
    }
}

static inline void *scratch_get(struct scratch *sc, size_t need)
{
    scratch_free(sc);
    if (need <= sc->small_size)
        return sc->small;
    return sc->heap = malloc(need);
}

#endif
