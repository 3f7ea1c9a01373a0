/*
 * pressure — how far this node's own messages are ahead of its reading of
 * them, and when its publishers must wait.
 *
 * Every message a client publishes here goes to Redis and comes back on the
 * node's subscription before it is delivered (cluster.h). A node that reads
 * its publishers faster than its subscription leaves the difference in
 * Redis's output buffer for that subscription, and past Redis's
 * `client-output-buffer-limit pubsub` Redis closes the link and what it held
 * is lost. So the bytes of the records sent and not yet back are counted
 * here; past the mark the publishers wait (cluster.c says so to the broker),
 * and they are read again once the count is under half the mark. Pure: no
 * I/O, no allocation. Core thread only.
 */
#ifndef AVIARY_PRESSURE_H
#define AVIARY_PRESSURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The mark when Redis does not say its limits: half of Redis's default soft
 * pubsub limit (8 MB for 60 s; the hard one is 32 MB). What is counted is a
 * lower bound of what Redis holds for the link: other nodes' messages of the
 * same instances share the buffer, and the framing is estimated.
 */
#define PRESSURE_MARK_DEFAULT (4u << 20)

struct pressure {
    size_t bytes;    /* records sent, not yet back, as Redis writes them */
    size_t mark;     /* past it, publishers wait */
    bool over;       /* they wait now */
    uint64_t pauses; /* times they started waiting */
};

/* Nothing in flight, publishers read, the default mark. */
void pressure_init(struct pressure *p);

/* What Redis writes to a subscriber for a record of `len` bytes on `channel_len`'s channel. */
size_t pressure_cost(size_t record_len, size_t channel_len);

/* `bytes` more went to Redis. True when this began a pause (the count passed the mark). */
bool pressure_add(struct pressure *p, size_t bytes);

/* `bytes` came back, or were dropped. True when this ended a pause (under half the mark). */
bool pressure_sub(struct pressure *p, size_t bytes);

/*
 * A new mark (none: 0 is taken as the default). True when this ended a
 * pause; a count already past a lower mark waits for the next message.
 */
bool pressure_set_mark(struct pressure *p, size_t mark);

/*
 * The mark for Redis's `client-output-buffer-limit` value, as CONFIG GET
 * answers it ("normal 0 0 0 replica 268435456 67108864 60 pubsub 33554432
 * 8388608 60"): a quarter of the pubsub hard limit and half of its soft
 * limit, whichever is lower, and never above PRESSURE_MARK_DEFAULT. 0 when
 * the value has no pubsub class or is not understood.
 */
size_t pressure_mark_of(const char *limits);

#endif
