#include "util/siphash.h"

#include <sys/random.h>
#include <time.h>

static uint64_t rotl64(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

struct sipstate {
    uint64_t v0, v1, v2, v3;
};

static void sipround(struct sipstate *s)
{
    s->v0 += s->v1;
    s->v1 = rotl64(s->v1, 13);
    s->v1 ^= s->v0;
    s->v0 = rotl64(s->v0, 32);
    s->v2 += s->v3;
    s->v3 = rotl64(s->v3, 16);
    s->v3 ^= s->v2;
    s->v0 += s->v3;
    s->v3 = rotl64(s->v3, 21);
    s->v3 ^= s->v0;
    s->v2 += s->v1;
    s->v1 = rotl64(s->v1, 17);
    s->v1 ^= s->v2;
    s->v2 = rotl64(s->v2, 32);
}

/* SipHash with `c` compression and `d` finalisation rounds. */
static uint64_t siphash(const struct siphash_key *key, const void *data, size_t len, int c, int d)
{
    const unsigned char *p = data;
    struct sipstate s = {
        key->k[0] ^ 0x736f6d6570736575ULL,
        key->k[1] ^ 0x646f72616e646f6dULL,
        key->k[0] ^ 0x6c7967656e657261ULL,
        key->k[1] ^ 0x7465646279746573ULL,
    };
    size_t whole = len & ~(size_t)7;

    for (size_t i = 0; i < whole; i += 8) {
        uint64_t m = 0;
        for (int b = 0; b < 8; b++)
            m |= (uint64_t)p[i + b] << (8 * b);
        s.v3 ^= m;
        for (int r = 0; r < c; r++)
            sipround(&s);
        s.v0 ^= m;
    }
    uint64_t m = (uint64_t)len << 56;
    for (size_t b = 0; b < (len & 7); b++)
        m |= (uint64_t)p[whole + b] << (8 * b);
    s.v3 ^= m;
    for (int r = 0; r < c; r++)
        sipround(&s);
    s.v0 ^= m;
    s.v2 ^= 0xff;
    for (int r = 0; r < d; r++)
        sipround(&s);
    return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

uint64_t siphash13(const struct siphash_key *key, const void *data, size_t len)
{
    return siphash(key, data, len, 1, 3);
}

uint64_t siphash24(const struct siphash_key *key, const void *data, size_t len)
{
    return siphash(key, data, len, 2, 4);
}

void siphash_key_random(struct siphash_key *key)
{
    if (getrandom(key->k, sizeof(key->k), GRND_NONBLOCK) == (ssize_t)sizeof(key->k))
        return;
    /* No entropy yet (early boot): a weaker key still beats a fixed one. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    key->k[0] = (uint64_t)(uintptr_t)key ^ ((uint64_t)ts.tv_nsec << 20) ^ 0x9e3779b97f4a7c15ULL;
    key->k[1] = (uint64_t)ts.tv_sec * 0xbf58476d1ce4e5b9ULL ^ (uint64_t)time(NULL);
}
