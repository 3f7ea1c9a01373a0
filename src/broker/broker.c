#include "broker/broker.h"

#include <stdlib.h>

#include <event2/event.h>

#include "broker/conn.h"
#include "broker/instance.h"
#include "util/log.h"

/* The reaper: frees the conns closed since the last loop iteration. */
static void broker_reap_cb(evutil_socket_t fd, short what, void *arg)
{
    struct broker *b = arg;
    /* Freeing may publish wills, which may close and queue more conns: pop one at a time. */
    while (b->reap) {
        struct conn *c = b->reap;
        b->reap = c->reap_next;
        conn_free(c);
    }
}

struct broker *broker_new(struct event_base *base, const struct limits *limits)
{
    struct broker *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->base = base;
    b->limits = *limits;
    b->reap_ev = event_new(base, -1, 0, broker_reap_cb, b);
    b->local = instance_new(b, "local", limits);
    if (!b->reap_ev || !b->local) {
        broker_free(b);
        return NULL;
    }
    return b;
}

void broker_reap_later(struct broker *b, struct conn *c)
{
    if (c->reap_queued)
        return;
    c->reap_queued = true;
    c->reap_next = b->reap;
    b->reap = c;
    event_active(b->reap_ev, 0, 0);
}

void broker_close_all(struct broker *b, const char *reason)
{
    for (struct conn *c = b->conns; c; c = c->next)
        conn_close(c, "%s", reason);
}

void broker_free(struct broker *b)
{
    if (!b)
        return;
    b->stopping = true;
    /* Conns first: they point into the instances' sessions. No wills at this point. */
    while (b->conns) {
        struct conn *c = b->conns;
        c->will_due = false;
        if (c->state != CONN_CLOSING)
            conn_close(c, "broker shutting down");
        c->will_due = false;
        conn_free(c);
    }
    b->reap = NULL;
    instance_free(b->local);
    if (b->reap_ev)
        event_free(b->reap_ev);
    free(b->matches);
    free(b);
}

void broker_set_limits(struct broker *b, const struct limits *limits)
{
    b->limits = *limits;
    b->local->limits = *limits;
}

struct instance *broker_instance_for(struct broker *b, const char *username)
{
    return b->local;
}
