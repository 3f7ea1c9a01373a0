#include "util/strmap.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static size_t strmap_hash(const struct strmap *m, const char *key)
{
    return (size_t)siphash13(&m->key, key, strlen(key));
}

static struct strmap_slot *strmap_find(const struct strmap *m, const char *key, size_t hash)
{
    if (m->cap == 0)
        return NULL;
    size_t mask = m->cap - 1;
    for (size_t i = hash & mask;; i = (i + 1) & mask) {
        struct strmap_slot *s = &m->slots[i];
        if (!s->key)
            return NULL;
        if (s->hash == hash && strcmp(s->key, key) == 0)
            return s;
    }
}

static int strmap_grow(struct strmap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 16;
    struct strmap_slot *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return -ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        struct strmap_slot *s = &m->slots[i];
        if (!s->key)
            continue;
        size_t j = s->hash & (cap - 1);
        while (slots[j].key)
            j = (j + 1) & (cap - 1);
        slots[j] = *s;
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return 0;
}

void *strmap_get(const struct strmap *m, const char *key)
{
    struct strmap_slot *s = strmap_find(m, key, strmap_hash(m, key));
    return s ? s->value : NULL;
}

int strmap_put(struct strmap *m, const char *key, void *value, void **old)
{
    if (m->cap == 0)
        siphash_key_random(&m->key);
    size_t hash = strmap_hash(m, key);
    struct strmap_slot *s = strmap_find(m, key, hash);

    if (old)
        *old = s ? s->value : NULL;
    if (s) {
        s->value = value;
        return 0;
    }
    /* Keep the load under 3/4 so probe sequences stay short. */
    if ((m->count + 1) * 4 > m->cap * 3 && strmap_grow(m) < 0)
        return -ENOMEM;
    char *copy = strdup(key);
    if (!copy)
        return -ENOMEM;
    size_t mask = m->cap - 1;
    size_t i = hash & mask;
    while (m->slots[i].key)
        i = (i + 1) & mask;
    m->slots[i] = (struct strmap_slot){.key = copy, .value = value, .hash = hash};
    m->count++;
    return 0;
}

void *strmap_remove(struct strmap *m, const char *key)
{
    struct strmap_slot *s = strmap_find(m, key, strmap_hash(m, key));
    if (!s)
        return NULL;
    void *value = s->value;
    free(s->key);
    m->count--;

    /* Backward-shift deletion: move later members of the probe run into the hole. */
    size_t mask = m->cap - 1;
    size_t hole = (size_t)(s - m->slots);
    for (size_t i = (hole + 1) & mask; m->slots[i].key; i = (i + 1) & mask) {
        size_t home = m->slots[i].hash & mask;
        /* Move slot i unless its home lies cyclically in (hole, i]. */
        int stays = (hole <= i) ? (home > hole && home <= i) : (home > hole || home <= i);
        if (stays)
            continue;
        m->slots[hole] = m->slots[i];
        hole = i;
    }
    m->slots[hole] = (struct strmap_slot){0};
    return value;
}

void strmap_clear(struct strmap *m)
{
    for (size_t i = 0; i < m->cap; i++)
        free(m->slots[i].key);
    free(m->slots);
    *m = (struct strmap){0};
}

void *strmap_next(const struct strmap *m, size_t *pos, const char **key)
{
    for (; *pos < m->cap; (*pos)++) {
        struct strmap_slot *s = &m->slots[*pos];
        if (s->key) {
            (*pos)++;
            if (key)
                *key = s->key;
            return s->value;
        }
    }
    return NULL;
}
