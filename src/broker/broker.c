#include "broker/broker.h"

#include <stdlib.h>
#include <time.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "broker/conn.h"
#include "broker/instance.h"
#include "broker/message.h"
#include "broker/session.h"
#include "broker/topic.h"
#include "tenancy/catalog.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/memory.h"

/*
 * max-memory is measured every 100 ms, or every 64 questions if sooner: a
 * flood of CONNECTs costs a read of /proc now and then, and between two
 * measurements at most 64 retained messages (4 MB of them by default) can
 * slip past the ceiling.
 */
#define BROKER_MEMORY_CHECK_MS 100
#define BROKER_MEMORY_CHECK_CALLS 64
/* At most one line this often while the process stays over max-memory. */
#define BROKER_MEMORY_LOG_INTERVAL_SEC 10

static void broker_recheck_cb(evutil_socket_t fd, short what, void *arg);

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
    b->connect_timeout = BROKER_DEFAULT_CONNECT_TIMEOUT;
    b->reap_ev = event_new(base, -1, 0, broker_reap_cb, b);
    b->recheck_ev = evtimer_new(base, broker_recheck_cb, b);
    b->local = instance_new(b, "local", limits);
    if (!b->reap_ev || !b->recheck_ev || !b->local) {
        broker_free(b);
        return NULL;
    }
    return b;
}

bool broker_memory_measure(struct broker *b)
{
    uint64_t now = clock_ms();

    if (b->memory_measured_ms == 0 || now - b->memory_measured_ms >= BROKER_MEMORY_CHECK_MS ||
        ++b->memory_questions >= BROKER_MEMORY_CHECK_CALLS) {
        b->memory_measured_ms = now;
        b->memory_questions = 0;
        b->memory_resident = memory_resident();
        if (b->memory_resident > b->max_memory) {
            memory_release_unused();
            b->memory_resident = memory_resident();
        }
        /* Beside the kernel's figure, what the tenants' accounts hold: the gap is the rest. */
        if (b->memory_resident > b->max_memory &&
            log_every_due(&b->memory_log, time(NULL), BROKER_MEMORY_LOG_INTERVAL_SEC))
            log_warning("over max-memory: %zu MB resident (max %zu MB), %zu MB of it held for "
                        "instances (%llu times over so far)",
                        b->memory_resident >> 20, b->max_memory >> 20, b->held.bytes >> 20,
                        (unsigned long long)b->memory_log.count);
    }
    return b->memory_resident > b->max_memory;
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
    instance_free(b->local);
    size_t pos = 0;
    struct instance *inst;
    while ((inst = strmap_next(&b->instances, &pos, NULL)))
        instance_free(inst);
    strmap_clear(&b->instances);
    catalog_free(b->catalog);
    if (b->reap_ev)
        event_free(b->reap_ev);
    if (b->recheck_ev)
        event_free(b->recheck_ev);
    free(b->matches);
    free(b->match_ids);
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
    broker_set_token_rules(b, allow_keys_without_tls, token_warning);
}

void broker_set_token_rules(struct broker *b, bool allow_keys_without_tls,
                            unsigned token_warning)
{
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
    if (inst)
        inst->serial = ci->serial;
    if (inst && strmap_put(&b->instances, name, inst, NULL) < 0) {
        instance_free(inst);
        inst = NULL;
    }
    return inst;
}

/* Ask for the next look at the database (its time has come). */
static void broker_recheck_cb(evutil_socket_t fd, short what, void *arg)
{
    struct broker *b = arg;

    b->recheck_ms = clock_ms();
    b->recheck(b->recheck_ctx, ++b->recheck_asked);
}

/* A login waits for a look not asked yet: ask now, or when the interval allows. */
static void broker_recheck_soon(struct broker *b)
{
    uint64_t since = clock_ms() - b->recheck_ms;

    if (evtimer_pending(b->recheck_ev, NULL))
        return;
    if (b->recheck_ms == 0 || since >= BROKER_RECHECK_INTERVAL_MS) {
        broker_recheck_cb(-1, 0, b);
        return;
    }
    uint64_t wait = BROKER_RECHECK_INTERVAL_MS - since;
    struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)(wait % 1000) * 1000};
    evtimer_add(b->recheck_ev, &tv);
}

void broker_set_recheck(struct broker *b, void (*fn)(void *ctx, uint64_t n), void *ctx)
{
    b->recheck = fn;
    b->recheck_ctx = ctx;
}

bool broker_login_wait(struct broker *b, struct conn *c)
{
    if (!b->recheck || c->login_rechecked)
        return false;
    /* A look asked before this login arrived may have missed what aviaryctl just made. */
    c->login_look = b->recheck_asked + 1;
    c->login_waiting = true;
    c->login_next = b->login_waiters;
    b->login_waiters = c;
    bufferevent_disable(c->bev, EV_READ);
    broker_recheck_soon(b);
    return true;
}

void broker_login_forget(struct broker *b, struct conn *c)
{
    for (struct conn **p = &b->login_waiters; *p; p = &(*p)->login_next) {
        if (*p == c) {
            *p = c->login_next;
            break;
        }
    }
    c->login_waiting = false;
}

void broker_login_rechecked(struct broker *b, uint64_t n)
{
    struct conn *ready = NULL, **p = &b->login_waiters;

    while (*p) {
        struct conn *c = *p;
        if (c->login_look > n) {
            p = &c->login_next;
            continue;
        }
        *p = c->login_next;
        c->login_next = ready;
        ready = c;
    }
    while (ready) {
        struct conn *c = ready;
        ready = c->login_next;
        c->login_waiting = false;
        c->login_rechecked = true;
        conn_read_again(c);
    }
    if (b->login_waiters)
        broker_recheck_soon(b);
}

bool broker_token_live(const struct broker *b, const struct catalog_token *t)
{
    if (t->expires && t->expires <= time(NULL))
        return false;
    return b->catalog && catalog_token_by_id(b->catalog, t->id) != NULL;
}

/* A conn that belongs to, or still points into, an instance being deleted. */
static bool conn_in_deleted_instance(const struct conn *c)
{
    return (c->instance && c->instance->deleting) ||
           (c->will_instance && c->will_instance->deleting) ||
           (c->ended_session && c->ended_session->instance->deleting);
}

/*
 * Its instance is going: close the conn without its will (nobody is left to
 * receive it) and drop what points into the instance. A clean session ended
 * by an earlier close still lingers here and holds subscriptions in its tree.
 */
static void conn_leave_deleted_instance(struct conn *c)
{
    const char *name = c->instance ? c->instance->name : "";

    message_unref(c->will);
    c->will = NULL;
    c->will_due = false;
    c->will_instance = NULL;
    conn_disconnect(c, MQTT_RC_ADMINISTRATIVE_ACTION, "instance %s was deleted", name);
    session_free(c->ended_session);
    c->ended_session = NULL;
    c->instance = NULL;
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
        if (conn_in_deleted_instance(c)) {
            conn_leave_deleted_instance(c);
            continue;
        }
        if (c->instance && c->instance->limits_changed)
            conn_limits_changed(c);
        if (!c->token || c->state == CONN_CLOSING)
            continue;
        struct catalog_token *now = catalog_token_by_id(cat, c->token->id);
        if (!now) {
            conn_disconnect(c, MQTT_RC_ADMINISTRATIVE_ACTION, "token %s was revoked",
                            c->token->id);
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
        log_notice("instance %s: deleted (%zu sessions, %zu retained messages dropped)",
                   inst->name, inst->sessions.count, topic_tree_retained_count(inst->tree));
        strmap_remove(&b->instances, inst->name);
        instance_free(inst);
    }
    catalog_free(old);
    log_info("catalog: %zu instances, %zu live tokens", cat->instances.count, cat->token_count);
}
