#include "broker/broker.h"

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "broker/conn.h"
#include "broker/instance.h"
#include "broker/message.h"
#include "broker/session.h"
#include "broker/topic.h"
#include "store/catalog.h"
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
    size_t pos = 0;
    struct instance *inst;
    while ((inst = strmap_next(&b->instances, &pos, NULL)))
        instance_free(inst);
    strmap_clear(&b->instances);
    catalog_free(b->catalog);
    if (b->reap_ev)
        event_free(b->reap_ev);
    free(b->matches);
    free(b);
}

void broker_set_limits(struct broker *b, const struct limits *limits)
{
    b->limits = *limits;
    /* Cloud instances get theirs from the catalog the watcher rebuilds with these. */
    if (b->local)
        b->local->limits = *limits;
}

void broker_set_cloud(struct broker *b, struct catalog *cat, bool allow_keys_without_tls,
                      unsigned token_warning)
{
    instance_free(b->local);
    b->local = NULL;
    b->cloud = true;
    b->catalog = cat;
    b->allow_keys_without_tls = allow_keys_without_tls;
    b->token_warning = token_warning;
}

struct instance *broker_instance_for(struct broker *b, const char *name)
{
    if (!b->cloud)
        return b->local;
    struct instance *inst = strmap_get(&b->instances, name);
    if (inst)
        return inst;
    const struct catalog_instance *ci = catalog_instance(b->catalog, name);
    if (!ci)
        return NULL;
    inst = instance_new(b, name, &ci->limits);
    if (inst && strmap_put(&b->instances, name, inst, NULL) < 0) {
        instance_free(inst);
        inst = NULL;
    }
    return inst;
}

/*
 * The instance was deleted: close its connections without wills (nobody is
 * left to receive them) and free it. Clean sessions ended by closes still
 * lingering point into its tree, so they go first.
 */
static void broker_delete_instance(struct broker *b, struct instance *inst)
{
    for (struct conn *c = b->conns; c; c = c->next) {
        bool mine = c->instance == inst || c->will_instance == inst ||
                    (c->ended_session && c->ended_session->instance == inst);
        if (!mine)
            continue;
        message_unref(c->will);
        c->will = NULL;
        c->will_due = false;
        c->will_instance = NULL;
        conn_close(c, "instance %s was deleted", inst->name);
        session_free(c->ended_session);
        c->ended_session = NULL;
        c->instance = NULL;
    }
    log_notice("instance %s: deleted (%zu sessions, %zu retained messages dropped)", inst->name,
               inst->sessions.count, topic_tree_retained_count(inst->tree));
    strmap_remove(&b->instances, inst->name);
    instance_free(inst);
}

void broker_apply_catalog(struct broker *b, struct catalog *cat)
{
    size_t pos = 0;
    const char *name;
    struct instance *inst;

    /* Deleting changes the map: collect first, then delete one by one. */
    for (bool again = true; again;) {
        again = false;
        pos = 0;
        while ((inst = strmap_next(&b->instances, &pos, &name))) {
            const struct catalog_instance *ci = catalog_instance(cat, name);
            if (!ci) {
                broker_delete_instance(b, inst);
                again = true;
                break;
            }
            if (memcmp(&inst->limits, &ci->limits, sizeof(ci->limits)) != 0) {
                inst->limits = ci->limits;
                for (struct conn *c = b->conns; c; c = c->next)
                    if (c->instance == inst)
                        conn_limits_changed(c);
            }
        }
    }
    for (struct conn *c = b->conns; c; c = c->next) {
        if (!c->token || c->state == CONN_CLOSING)
            continue;
        struct catalog_token *now = catalog_token_by_id(cat, c->token->id);
        if (!now) {
            conn_close(c, "token %s was revoked", c->token->id);
            continue;
        }
        catalog_token_unref(c->token);
        c->token = catalog_token_ref(now);
    }
    catalog_free(b->catalog);
    b->catalog = cat;
    log_info("catalog: %zu instances, %zu live tokens", cat->instances.count, cat->token_count);
}
