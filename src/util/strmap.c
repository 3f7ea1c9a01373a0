#include "util/strmap.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util/probe.h"

/* What a lookup compares a slot with: the key and its hash, to skip most strcmp(). */
struct strmap_key {
    const char *key;
    size_t hash;
};

static size_t strmap_hash(const struct strmap *m, const char *key)
{
    return (size_t)siphash13(&m->key, key, strlen(key));
}

/* The callbacks of util/probe.h for an array of struct strmap_slot. */
static bool slot_empty(const void *slots, size_t i)
{
    return !((const struct strmap_slot *)slots)[i].key;
}

static size_t slot_hash(const void *slots, size_t i)
{
    return ((const struct strmap_slot *)slots)[i].hash;
}

static bool slot_match(const void *slots, size_t i, const void *key)
{
    const struct strmap_slot *s = &((const struct strmap_slot *)slots)[i];
    const struct strmap_key *k = key;
    return s->hash == k->hash && strcmp(s->key, k->key) == 0;
}

/* A slot is empty by its key alone: the rest of an emptied slot is left as it was. */
static void slot_move(void *slots, size_t to, size_t from)
{
    struct strmap_slot *s = slots;
    s[to] = s[from];
    s[from].key = NULL;
}

static struct strmap_slot *strmap_find(const struct strmap *m, const char *key, size_t hash)
{
    struct strmap_key k = {key, hash};
    size_t i = probe_find(m->slots, m->cap, hash, slot_empty, slot_match, &k);
    return i == PROBE_NONE ? NULL : &m->slots[i];
}

static int strmap_grow(struct strmap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 16;
    struct strmap_slot *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return -ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        struct strmap_slot *s = &m->slots[i];
        if (s->key)
            slots[probe_free_slot(slots, cap, s->hash, slot_empty)] = *s;
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
        if (m->borrowed) /* the old value's key may go with it */
            s->key = (char *)key;
        return 0;
    }
    if (probe_must_grow(m->count, m->cap) && strmap_grow(m) < 0)
        return -ENOMEM;
    char *copy = m->borrowed ? (char *)key : strdup(key);
    if (!copy)
        return -ENOMEM;
    size_t i = probe_free_slot(m->slots, m->cap, hash, slot_empty);
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
    if (!m->borrowed)
        free(s->key);
    s->key = NULL;
    m->count--;
    probe_delete(m->slots, m->cap, (size_t)(s - m->slots), slot_empty, slot_hash, slot_move);
    return value;
}

void strmap_clear(struct strmap *m)
{
    bool borrowed = m->borrowed;
    for (size_t i = 0; i < m->cap && !borrowed; i++)
        free(m->slots[i].key);
    free(m->slots);
    *m = (struct strmap){.borrowed = borrowed};
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
