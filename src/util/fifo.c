#include "util/fifo.h"

#include <stdlib.h>
#include <string.h>

int fifo_push(struct fifo *q, const void *item)
{
    if (q->count == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 16;
        unsigned char *grown = malloc(cap * q->size);
        if (!grown)
            return -1;
        /* Unrolled from the head, so that the new array starts at 0. */
        for (size_t i = 0; i < q->count; i++)
            memcpy(grown + i * q->size, fifo_at(q, i), q->size);
        free(q->items);
        q->items = grown;
        q->head = 0;
        q->cap = cap;
    }
    memcpy(q->items + (q->head + q->count) % q->cap * q->size, item, q->size);
    q->count++;
    return 0;
}

void *fifo_at(const struct fifo *q, size_t i)
{
    return q->items + (q->head + i) % q->cap * q->size;
}

void fifo_pop(struct fifo *q)
{
    q->head = (q->head + 1) % q->cap;
    q->count--;
}

void fifo_drop_last(struct fifo *q)
{
    q->count--;
}

void fifo_clear(struct fifo *q)
{
    free(q->items);
    q->items = NULL;
    q->head = q->count = q->cap = 0;
}
