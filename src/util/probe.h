/*
 * probe — open addressing with linear probing and backward-shift deletion:
 * the one implementation behind strmap and the topic tree's child tables.
 *
 * A table is an array of `cap` slots, `cap` a power of two. An entry sits at
 * its home slot (its hash masked by cap - 1) or after it, with no empty slot
 * in between, so a lookup stops at the first empty slot. A deletion leaves no
 * tombstone: the entries after the hole that may not stay behind it are moved
 * back into it, so lookups stay short however many deletions there were.
 * Tables grow when probe_must_grow() says so, which keeps the load at or under
 * 3/4: probes stay short and there is always an empty slot to stop at.
 *
 * The table's slots stay its own: these helpers reach them only through the
 * small callbacks below, given as constants. Everything here is static inline
 * (always_inline for the lookup), so the compiler folds the callbacks into
 * the caller and a lookup costs no call through a pointer.
 */
#ifndef AVIARY_PROBE_H
#define AVIARY_PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROBE_NONE SIZE_MAX

/* Is slot `i` empty? */
typedef bool (*probe_empty_fn)(const void *slots, size_t i);
/* The hash of the entry in (non-empty) slot `i`: it names the entry's home. */
typedef size_t (*probe_hash_fn)(const void *slots, size_t i);
/* Is the entry in (non-empty) slot `i` the one `key` describes? */
typedef bool (*probe_match_fn)(const void *slots, size_t i, const void *key);
/* Slot `to` (empty) takes the entry of slot `from`, which is left empty. */
typedef void (*probe_move_fn)(void *slots, size_t to, size_t from);

static inline size_t probe_home(uint64_t hash, size_t cap)
{
    return (size_t)hash & (cap - 1);
}

static inline size_t probe_next(size_t i, size_t cap)
{
    return (i + 1) & (cap - 1);
}

/* Must a table of `cap` slots grow before it takes a new entry besides its `count`? */
static inline bool probe_must_grow(size_t count, size_t cap)
{
    return (count + 1) * 4 > cap * 3;
}

/*
 * The slot holding the entry `match` accepts for `key`, or PROBE_NONE. `cap`
 * may be 0. Always inlined: folding `empty` and `match` in is the point.
 */
static inline size_t probe_find(const void *slots, size_t cap, uint64_t hash, probe_empty_fn empty,
                                probe_match_fn match, const void *key)
    __attribute__((always_inline));

static inline size_t probe_find(const void *slots, size_t cap, uint64_t hash, probe_empty_fn empty,
                                probe_match_fn match, const void *key)
{
    if (cap == 0)
        return PROBE_NONE;
    for (size_t i = probe_home(hash, cap);; i = probe_next(i, cap)) {
        if (empty(slots, i))
            return PROBE_NONE;
        if (match(slots, i, key))
            return i;
    }
}

/*
 * The slot where a new entry of `hash` goes (the first empty one from its
 * home). The caller has made room: there is an empty slot.
 */
static inline size_t probe_free_slot(const void *slots, size_t cap, uint64_t hash,
                                     probe_empty_fn empty)
{
    size_t i = probe_home(hash, cap);
    while (!empty(slots, i))
        i = probe_next(i, cap);
    return i;
}

/*
 * May the entry in slot `i`, whose home is `home`, stay where it is once
 * `hole` is empty? Only when its home lies cyclically in (hole, i]: then the
 * probe from its home still reaches it without crossing the hole.
 */
static inline bool probe_stays(size_t hole, size_t i, size_t home)
{
    return hole < i ? (home > hole && home <= i) : (home > hole || home <= i);
}

/*
 * Close the hole at slot `hole`, which the caller has just emptied (its entry
 * released): move back each later entry of the run that may not stay.
 */
static inline void probe_delete(void *slots, size_t cap, size_t hole, probe_empty_fn empty,
                                probe_hash_fn hash, probe_move_fn move)
{
    for (size_t i = probe_next(hole, cap); !empty(slots, i); i = probe_next(i, cap)) {
        if (probe_stays(hole, i, probe_home(hash(slots, i), cap)))
            continue;
        move(slots, hole, i);
        hole = i;
    }
}

#endif
