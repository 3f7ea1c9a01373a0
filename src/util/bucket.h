/*
 * bucket — a token bucket for message rates: it holds at most one second's
 * worth of tokens and refills continuously. A plain value; header only; any
 * module may include it.
 */
#ifndef AVIARY_BUCKET_H
#define AVIARY_BUCKET_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/time.h>

struct bucket {
    double tokens;
    struct timeval refilled; /* when tokens was last brought up to date */
    bool started;            /* a new bucket starts full */
};

/*
 * Refill `b` at `rate` per second for the time up to `now` and take one
 * token. Returns 0 when one was taken, else the seconds until one will be
 * there (nothing is taken then).
 */
static inline double bucket_take(struct bucket *b, size_t rate, const struct timeval *now)
{
    if (!b->started) {
        b->started = true;
        b->tokens = (double)rate;
    } else {
        double elapsed = (double)(now->tv_sec - b->refilled.tv_sec) +
                         (double)(now->tv_usec - b->refilled.tv_usec) / 1e6;
        /* The cached time is the wall clock: one set back must not empty the bucket. */
        if (elapsed > 0)
            b->tokens += elapsed * (double)rate;
    }
    b->refilled = *now;
    if (b->tokens > (double)rate)
        b->tokens = (double)rate;
    if (b->tokens < 1.0)
        return (1.0 - b->tokens) / (double)rate;
    b->tokens -= 1.0;
    return 0;
}

#endif
