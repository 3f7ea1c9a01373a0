/*
 * broker — the state of one aviaryd process, owned by the core thread.
 *
 * Holds the instances, every live connection, and the reaper that frees
 * closed connections outside of their own callbacks. Every object of the
 * broker is touched only from the thread running `base`, so nothing here
 * has a lock. Created and freed by the program (aviaryd.c).
 */
#ifndef AVIARY_BROKER_H
#define AVIARY_BROKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/limits.h"

struct event;
struct event_base;
struct conn;
struct instance;
struct session;

/* One routing match: the session and the best subscription it has for a message. */
struct broker_match {
    struct session *session;
    uint8_t qos;
    bool leading_slash;
};

struct broker {
    struct event_base *base;
    struct limits limits;         /* defaults for new instances */
    struct instance *local;       /* desktop mode's single instance */
    struct conn *conns;           /* every live or closing conn */
    size_t conn_count;
    struct conn *reap;            /* closed conns waiting to be freed */
    struct event *reap_ev;
    uint64_t next_conn_id;
    bool stopping;                /* SIGTERM: no more wills, no new work */
    unsigned routing;             /* >0 while a walk of some topic tree is delivering */

    /* Routing scratch reused by every publish (core thread only). */
    struct broker_match *matches;
    size_t match_count, match_cap;
    uint64_t match_gen;
};

/* A new broker on `base` with default `limits`. NULL when out of memory. */
struct broker *broker_new(struct event_base *base, const struct limits *limits);

/* Close every connection and free everything. The event base is the caller's. */
void broker_free(struct broker *b);

/* Close every connection with `reason` (used on SIGTERM); conns are reaped by the loop. */
void broker_close_all(struct broker *b, const char *reason);

/* Queue a closed conn for freeing on the next loop iteration. */
void broker_reap_later(struct broker *b, struct conn *c);

/*
 * Replace the limits of the broker and its instances (SIGHUP). They govern
 * decisions from now on; nothing already accepted is undone.
 */
void broker_set_limits(struct broker *b, const struct limits *limits);

/* The instance a new connection belongs to (desktop: the local instance). */
struct instance *broker_instance_for(struct broker *b, const char *username);

#endif
