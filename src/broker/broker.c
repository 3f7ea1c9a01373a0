#include "broker/broker.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "broker/client.h"
#include "broker/conn.h"
#include "broker/instance.h"
#include "broker/login.h"
#include "broker/session.h"
#include "broker/systopic.h"
#include "broker/timers.h"
#include "broker/topic.h"
#include "tenancy/catalog.h"
#include "util/clock.h"
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

/* $info's interval: rates taken, summaries sent where they are watched. */
static void broker_sys_cb(evutil_socket_t fd, short what, void *arg)
{
    systopic_tick(arg);
}

/* Free `inst` with everything in it: sessions first, as they hold its share groups. */
static void broker_drop_instance(struct instance *inst)
{
    size_t pos = 0;
    struct session *s;

    if (!inst)
        return;
    while ((s = strmap_next(&inst->sessions, &pos, NULL)))
        session_free(s);
    instance_free(inst);
}

struct broker *broker_new(struct event_base *base, const struct limits *limits)
{
    struct broker *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    b->base = base;
    b->limits = *limits;
    b->connect_timeout = BROKER_DEFAULT_CONNECT_TIMEOUT;
    b->reap_ev = event_new(base, -1, 0, broker_reap_cb, b);
    b->sys_timer = event_new(base, -1, EV_PERSIST, broker_sys_cb, b);
    b->deadlines = deadlines_new(base, timers_conn_due);
    b->driver = link_driver_new(base);
    b->held = account_new(NULL);
    b->local = b->held ? instance_new(b, "local", limits) : NULL;
    struct timeval every = {SYSTOPIC_INFO_INTERVAL_SEC, 0};
    if (!b->reap_ev || !b->local || !b->sys_timer || !b->deadlines || !b->driver ||
        evtimer_add(b->sys_timer, &every) < 0) {
        broker_free(b);
        return NULL;
    }
    return b;
}

void broker_set_cluster(struct broker *b, struct broker_cluster *cl)
{
    struct instance *inst;
    size_t pos = 0;

    b->cluster = cl;
    if (!cl)
        return;
    if (b->local)
        cl->instance_added(cl, b->local);
    while ((inst = strmap_next(&b->instances, &pos, NULL)))
        cl->instance_added(cl, inst);
}

void broker_keep_resume(void *ctx)
{
    struct broker *b = ctx;

    for (struct conn *c = b->conns; c; c = c->next)
        client_keep_resume(c);
}

void broker_cluster_resume(struct broker *b)
{
    for (struct conn *c = b->conns; c; c = c->next)
        client_cluster_resume(c);
}

void broker_close_all(struct broker *b, const char *reason)
{
    for (struct conn *c = b->conns; c; c = c->next)
        conn_disconnect(c, MQTT_RC_SERVER_SHUTTING_DOWN, "%s", reason);
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
    broker_drop_instance(b->local);
    size_t pos = 0;
    struct instance *inst;
    while ((inst = strmap_next(&b->instances, &pos, NULL)))
        broker_drop_instance(inst);
    strmap_clear(&b->instances);
    catalog_free(b->catalog);
    if (b->reap_ev)
        event_free(b->reap_ev);
    if (b->sys_timer)
        event_free(b->sys_timer);
    deadlines_free(b->deadlines);
    link_driver_free(b->driver);
    if (b->recheck_ev)
        event_free(b->recheck_ev);
    free(b->matches);
    free(b->match_ids);
    account_unref(b->held); /* output the event base frees last may still hold charges */
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
    broker_drop_instance(b->local);
    b->local = NULL;
    b->cloud = true;
    b->catalog = cat;
    broker_set_token_rules(b, allow_keys_without_tls, token_warning);
}

void broker_set_passwords(struct broker *b, broker_password_fn *fn, void *ctx)
{
    b->passwords = fn;
    b->passwords_ctx = ctx;
}

void broker_set_token_rules(struct broker *b, bool allow_keys_without_tls, unsigned token_warning)
{
    b->allow_keys_without_tls = allow_keys_without_tls;
    b->token_warning = token_warning;
}

void broker_set_recheck(struct broker *b, void (*fn)(void *ctx, uint64_t n), void *ctx)
{
    b->recheck = fn;
    b->recheck_ctx = ctx;
}

void broker_login_rechecked(struct broker *b, uint64_t n)
{
    struct conn *ready = NULL, **p = &b->login_waiters;

    while (*p) {
        struct conn *c = *p;
        if (c->rare->login_look > n) {
            p = &c->rare->login_next;
            continue;
        }
        *p = c->rare->login_next;
        c->rare->login_next = ready;
        ready = c;
    }
    while (ready) {
        struct conn *c = ready;
        ready = c->rare->login_next;
        c->login_waiting = false;
        c->login_rechecked = true;
        client_read_again(c);
    }
    if (b->login_waiters)
        login_recheck_soon(b);
}

static bool filters_equal(const struct catalog_filters *x, const struct catalog_filters *y)
{
    if (x->count != y->count)
        return false;
    for (size_t i = 0; i < x->count; i++)
        if (strcmp(x->items[i], y->items[i]) != 0)
            return false;
    return true;
}

/*
 * Whether token `now` (aviaryctl token update) still allows what `was`
 * allowed when its client logged in: same filters, client id, expiry and
 * action right. A change of label alone is no change of rules.
 */
static bool token_rules_equal(const struct catalog_token *was, const struct catalog_token *now)
{
    if (was->expires != now->expires || was->allow_action != now->allow_action)
        return false;
    if ((was->client_id == NULL) != (now->client_id == NULL) ||
        (was->client_id && strcmp(was->client_id, now->client_id) != 0))
        return false;
    return filters_equal(&was->pub, &now->pub) && filters_equal(&was->sub, &now->sub) &&
           filters_equal(&was->deny_pub, &now->deny_pub) &&
           filters_equal(&was->deny_sub, &now->deny_sub);
}

void broker_apply_catalog(struct broker *b, struct catalog *cat)
{
    struct instance *inst, *gone = NULL;
    struct catalog *old = b->catalog;
    const char *name;
    size_t pos = 0;

    /* In force before any close below, so that wills are judged by the new catalog. */
    b->catalog = cat;
    /* One pass over the instances, one over the conns, whatever changed. */
    while ((inst = strmap_next(&b->instances, &pos, &name))) {
        const struct catalog_instance *ci = catalog_instance(cat, name);
        /* Deleted, or deleted and made again between two polls: nothing carries over. */
        if (!ci || ci->serial != inst->serial) {
            inst->deleting = true;
            inst->next_deleted = gone;
            gone = inst;
        } else if (!limits_equal(&inst->limits, &ci->limits)) {
            inst->limits = ci->limits;
            inst->limits_changed = true;
        }
    }
    for (struct conn *c = b->conns; c; c = c->next) {
        if (conn_leave_deleted_instance(c))
            continue;
        if (c->instance && c->instance->limits_changed)
            timers_limits_changed(c);
        if (!c->token || c->state == CONN_CLOSING)
            continue;
        struct catalog_token *now = catalog_token_by_id(cat, c->token->id);
        if (!now) {
            conn_disconnect(c, MQTT_RC_ADMINISTRATIVE_ACTION, "token %s was revoked", c->token->id);
            continue;
        }
        /*
         * Changed rules take effect as a revocation does: the client logs in
         * again under them, and its session's deliveries, subscriptions,
         * expiry timer and client id are judged anew.
         */
        if (!token_rules_equal(c->token, now)) {
            conn_disconnect(c, MQTT_RC_ADMINISTRATIVE_ACTION, "token %s was changed", c->token->id);
            continue;
        }
        catalog_token_unref(c->token);
        c->token = catalog_token_ref(now);
    }
    pos = 0;
    while ((inst = strmap_next(&b->instances, &pos, NULL)))
        inst->limits_changed = false;
    while ((inst = gone)) {
        gone = inst->next_deleted;
        log_notice("instance %s: deleted (%zu sessions, %zu retained messages dropped)", inst->name,
                   inst->sessions.count, topic_tree_retained_count(inst->tree));
        strmap_remove(&b->instances, inst->name);
        broker_drop_instance(inst);
    }
    catalog_free(old);
    log_info("catalog: %zu instances, %zu live tokens", cat->instances.count, cat->token_count);
}

uint64_t broker_look_soon(struct broker *b)
{
    if (!b->recheck)
        return 0;
    /* A timer already pending asks exactly this one; otherwise it is asked now or soon. */
    uint64_t n = b->recheck_asked + 1;
    login_recheck_soon(b);
    return n;
}

int broker_close_client(struct broker *b, const char *instance, const char *client_id)
{
    struct instance *inst = b->cloud ? strmap_get(&b->instances, instance) : b->local;
    struct conn *c = inst ? conn_of_client(inst, client_id) : NULL;

    if (!c)
        return -1;
    conn_disconnect(c, MQTT_RC_ADMINISTRATIVE_ACTION, "closed by an administrator");
    return 0;
}
