/*
 * deadlines — many deadlines behind one timer.
 *
 * A connection's deadlines (CONNECT, keep-alive, idle) are rarely due and
 * each would otherwise hold a libevent timer of its own, 144 bytes with its
 * allocation. Here they are a binary min-heap of (when, place) entries, 16
 * bytes each, and one timer armed for the earliest. An owner embeds a
 * `struct deadline` and is found from it with offsetof.
 *
 * Ownership: the heap owns its array and its timer; owners own their struct
 * deadline, which must be cancelled before it is freed. `due` may set or
 * cancel any deadline, its own included. Core thread only.
 */
#ifndef AVIARY_DEADLINES_H
#define AVIARY_DEADLINES_H

#include <stdbool.h>
#include <stdint.h>

struct event_base;
struct deadlines;

/* An owner's place in the heap: 0 when not set. */
struct deadline {
    uint32_t slot; /* heap index + 1 */
};

/*
 * An empty heap on `base` that calls `due(d)` for each deadline as it comes
 * (after taking it out). NULL when out of memory.
 */
struct deadlines *deadlines_new(struct event_base *base, void (*due)(struct deadline *d));

/* Free the heap; deadlines still set are dropped unheard (and not touched). NULL is fine. */
void deadlines_free(struct deadlines *h);

/* Set (or move) `d` to come at `when_ms` of clock_ms(). Returns 0, or -1 when out of memory. */
int deadlines_set(struct deadlines *h, struct deadline *d, uint64_t when_ms);

/* Take `d` out, if set. */
void deadlines_cancel(struct deadlines *h, struct deadline *d);

static inline bool deadline_set(const struct deadline *d)
{
    return d->slot != 0;
}

/* How many are set. */
uint32_t deadlines_count(const struct deadlines *h);

#endif
