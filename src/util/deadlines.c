#include "util/deadlines.h"

#include <stdlib.h>

#include <event2/event.h>

#include "util/clock.h"

struct entry {
    uint64_t when;
    struct deadline *d;
};

struct deadlines {
    struct entry *heap; /* heap[0] is the earliest */
    uint32_t count, cap;
    struct event *timer; /* armed for heap[0] while count > 0 */
    uint64_t armed_for;  /* the `when` the timer is armed for; 0: not armed */
    void (*due)(struct deadline *d);
};

static void place(struct deadlines *h, uint32_t i, struct entry e)
{
    h->heap[i] = e;
    e.d->slot = i + 1;
}

static void sift_up(struct deadlines *h, uint32_t i, struct entry e)
{
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (h->heap[parent].when <= e.when)
            break;
        place(h, i, h->heap[parent]);
        i = parent;
    }
    place(h, i, e);
}

static void sift_down(struct deadlines *h, uint32_t i, struct entry e)
{
    for (;;) {
        uint32_t child = 2 * i + 1;
        if (child >= h->count)
            break;
        if (child + 1 < h->count && h->heap[child + 1].when < h->heap[child].when)
            child++;
        if (e.when <= h->heap[child].when)
            break;
        place(h, i, h->heap[child]);
        i = child;
    }
    place(h, i, e);
}

/* Put `e` at index `i` (a hole) where the heap order wants it. */
static void settle(struct deadlines *h, uint32_t i, struct entry e)
{
    if (i > 0 && h->heap[(i - 1) / 2].when > e.when)
        sift_up(h, i, e);
    else
        sift_down(h, i, e);
}

/* Arm the timer for the earliest deadline, unless it already is. */
static void arm(struct deadlines *h)
{
    if (h->count == 0 || h->heap[0].when == h->armed_for)
        return;
    uint64_t now = clock_ms(), when = h->heap[0].when;
    uint64_t wait = when > now ? when - now : 0;
    struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)(wait % 1000) * 1000};
    h->armed_for = evtimer_add(h->timer, &tv) == 0 ? when : 0;
}

static void remove_at(struct deadlines *h, uint32_t i)
{
    h->heap[i].d->slot = 0;
    struct entry last = h->heap[--h->count];
    if (i < h->count)
        settle(h, i, last);
}

static void deadlines_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct deadlines *h = arg;
    uint64_t now = clock_ms();

    h->armed_for = 0;
    /* Bounded: what `due` sets for now or earlier waits for the next turn of the loop. */
    for (uint32_t n = h->count; n > 0 && h->count > 0 && h->heap[0].when <= now; n--) {
        struct deadline *d = h->heap[0].d;
        remove_at(h, 0);
        h->due(d);
    }
    arm(h);
}

struct deadlines *deadlines_new(struct event_base *base, void (*due)(struct deadline *d))
{
    struct deadlines *h = calloc(1, sizeof(*h));

    if (!h)
        return NULL;
    h->due = due;
    if (!(h->timer = evtimer_new(base, deadlines_timer_cb, h))) {
        free(h);
        return NULL;
    }
    return h;
}

void deadlines_free(struct deadlines *h)
{
    if (!h)
        return;
    event_free(h->timer);
    free(h->heap);
    free(h);
}

int deadlines_set(struct deadlines *h, struct deadline *d, uint64_t when_ms)
{
    struct entry e = {when_ms, d};

    if (d->slot) {
        settle(h, d->slot - 1, e);
    } else {
        if (h->count == h->cap) {
            uint32_t cap = h->cap ? h->cap * 2 : 64;
            struct entry *heap = realloc(h->heap, (size_t)cap * sizeof(*heap));
            if (!heap)
                return -1;
            h->heap = heap;
            h->cap = cap;
        }
        sift_up(h, h->count++, e);
    }
    arm(h);
    return 0;
}

void deadlines_cancel(struct deadlines *h, struct deadline *d)
{
    if (!d->slot)
        return;
    remove_at(h, d->slot - 1);
    /* The timer may stay armed for a deadline gone: it then finds nothing due and re-arms. */
}

uint32_t deadlines_count(const struct deadlines *h)
{
    return h->count;
}
