/*
 * fifo — a queue of fixed-size items in one growing circular array: pushed
 * at the back, taken from the front, and read anywhere by position. The
 * items are copied in; what they point to stays the caller's.
 */
#ifndef AVIARY_FIFO_H
#define AVIARY_FIFO_H

#include <stddef.h>

struct fifo {
    unsigned char *items; /* owned; cap items of `size` bytes */
    size_t size;          /* of one item */
    size_t head, count, cap;
};

#define FIFO_INIT(type)                                                                            \
    {                                                                                              \
        .size = sizeof(type)                                                                       \
    }

/* Copy `item` to the back. Returns 0, or -1 when out of memory (nothing changed). */
int fifo_push(struct fifo *q, const void *item);

/* The item `i` places from the front (0: the oldest); i < q->count. */
void *fifo_at(const struct fifo *q, size_t i);

/* Drop the front item (its contents are the caller's to release first); count > 0. */
void fifo_pop(struct fifo *q);

/* Drop the back item, the one pushed last; count > 0. */
void fifo_drop_last(struct fifo *q);

/* Free the array; the queue is empty and usable again. */
void fifo_clear(struct fifo *q);

#endif
