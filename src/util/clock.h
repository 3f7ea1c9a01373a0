/*
 * clock — a monotonic clock for durations (expiry intervals),
 * which a change of the wall clock must not shorten or stretch.
 * Header only; any module may include it.
 */
#ifndef AVIARY_CLOCK_H
#define AVIARY_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Milliseconds since an arbitrary point before this process started. */
static inline uint64_t clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Microseconds on the same clock. */
static inline uint64_t clock_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

#endif
