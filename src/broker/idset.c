#include "broker/idset.h"

#include <errno.h>
#include <stdlib.h>

#define IDSET_IDS (IDSET_BYTES * 8)
#define IDSET_WORDS (IDSET_BYTES / sizeof(uint64_t))

bool idset_has(const struct idset *set, uint16_t id)
{
    return set->bits && (set->bits[id / 64] >> (id % 64) & 1);
}

int idset_add(struct idset *set, uint16_t id)
{
    /* Kept when the set empties again: a QoS 1/2 client would otherwise allocate per message. */
    if (!set->bits && !(set->bits = calloc(IDSET_WORDS, sizeof(*set->bits))))
        return -ENOMEM;
    uint64_t bit = 1ull << (id % 64);
    if (!(set->bits[id / 64] & bit)) {
        set->bits[id / 64] |= bit;
        set->count++;
    }
    return 0;
}

int idset_remove(struct idset *set, uint16_t id)
{
    if (!idset_has(set, id))
        return -ENOENT;
    set->bits[id / 64] &= ~(1ull << (id % 64));
    set->count--;
    return 0;
}

/* The smallest id in [from, to) not in `bits`, or 0 when there is none (`from` > 0). */
static uint32_t idset_first_clear(const uint64_t *bits, uint32_t from, uint32_t to)
{
    while (from < to) {
        uint32_t word = from / 64;
        uint64_t clear = ~bits[word] & (~0ull << (from % 64));
        if (clear) {
            uint32_t id = word * 64 + (uint32_t)__builtin_ctzll(clear);
            return id < to ? id : 0;
        }
        from = (word + 1) * 64;
    }
    return 0;
}

uint16_t idset_next_clear(const struct idset *set, uint16_t after)
{
    uint32_t start = after == IDSET_IDS - 1 ? 1 : (uint32_t)after + 1;
    if (!set->bits)
        return (uint16_t)start;
    uint32_t id = idset_first_clear(set->bits, start, IDSET_IDS);
    if (id == 0)
        id = idset_first_clear(set->bits, 1, start);
    return (uint16_t)id;
}

void idset_free(struct idset *set)
{
    free(set->bits);
    set->bits = NULL;
    set->count = 0;
}
