#include "broker/route.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker/core.h"
#include "broker/durable.h"
#include "broker/instance.h"
#include "broker/message.h"
#include "broker/sender.h"
#include "broker/session.h"
#include "broker/share.h"
#include "broker/tap.h"
#include "broker/topic.h"
#include "tenancy/access.h"
#include "tenancy/catalog.h"
#include "util/clock.h"
#include "util/journal.h"
#include "util/log.h"
#include "util/scratch.h"

/* At most one line per instance this often about retained messages not kept. */
#define ROUTE_RETAINED_LOG_INTERVAL_SEC 10

bool route_will(struct instance *inst, struct message *will, const struct catalog_token *token,
                struct bucket *conn_rate, const char *client_id)
{
    if (token && !core_token_live(inst->broker, token)) {
        log_notice("client %s: will on %s not published: token %s was revoked or has expired",
                   client_id, will->topic, token->id);
        return false;
    }
    if (instance_over_bytes(inst)) {
        instance_note_refusal(inst, INSTANCE_REFUSED_WILL,
                              "will of client %s not published (max-instance-bytes %zu)", client_id,
                              inst->limits.max_instance_bytes);
        return false;
    }
    /* A PUBLISH over the rate would wait for its connection to be read; a will cannot. */
    if (instance_rate_take(inst, conn_rate) > 0) {
        instance_note_refusal(inst, INSTANCE_REFUSED_WILL,
                              "will of client %s not published (max-messages-per-second %zu, "
                              "max-instance-messages-per-second %zu)",
                              client_id, inst->limits.max_messages_per_second,
                              inst->limits.max_instance_messages_per_second);
        return false;
    }
    log_info("client %s: publishing its will on %s", client_id, will->topic);
    message_restart_expiry(will);
    route_publish(inst, will, NULL);
    return true;
}

/* What routing one message needs besides the broker's scratch. */
struct route {
    struct broker *broker;
    const struct session *origin; /* the publisher: its No Local subscriptions are skipped */
    const char *topic;            /* the message's: a share group picks a member that may read it */
    bool replay;                  /* only to the sessions `adopting` (route_replay) */
};

/* Chain Subscription Identifier `id` to `m`'s list. */
static void route_add_id(struct broker *b, struct broker_match *m, uint32_t id)
{
    if (b->match_id_count == b->match_id_cap) {
        size_t cap = b->match_id_cap ? b->match_id_cap * 2 : 64;
        struct broker_match_id *ids = realloc(b->match_ids, cap * sizeof(*ids));
        if (!ids) {
            log_error("out of memory routing a message to %s", m->session->log_id);
            return;
        }
        b->match_ids = ids;
        b->match_id_cap = cap;
    }
    b->match_ids[b->match_id_count] = (struct broker_match_id){id, m->first_id};
    m->first_id = (int32_t)b->match_id_count++;
}

/*
 * Collect one match per session: overlapping subscriptions of one client get
 * one copy, at the highest QoS among them and with all their Subscription
 * Identifiers (MQTT-3.3.4-2 allows one copy or one per subscription; one copy
 * is what clients expect).
 */
static void route_session(struct route *r, struct session *s, uint8_t options, bool leading_slash,
                          uint32_t sub_id)
{
    struct broker *b = r->broker;
    uint8_t qos = options & MQTT_SUB_OPT_QOS;
    struct broker_match *m;

    if (s->match_gen == b->match_gen) {
        m = &b->matches[s->match_index];
        if (qos > m->qos) {
            m->qos = qos;
            m->leading_slash = leading_slash;
        }
    } else {
        if (b->match_count == b->match_cap) {
            size_t cap = b->match_cap ? b->match_cap * 2 : 64;
            struct broker_match *matches = realloc(b->matches, cap * sizeof(*matches));
            if (!matches) {
                log_error("out of memory routing a message to %s", s->log_id);
                return;
            }
            b->matches = matches;
            b->match_cap = cap;
        }
        s->match_gen = b->match_gen;
        s->match_index = b->match_count;
        m = &b->matches[b->match_count++];
        *m = (struct broker_match){
            .session = s, .qos = qos, .leading_slash = leading_slash, .first_id = -1};
    }
    m->retain_as_published |= (options & MQTT_SUB_OPT_RETAIN_AS_PUBLISHED) != 0;
    if (sub_id)
        route_add_id(b, m, sub_id);
}

const struct share_member *route_pick_member(struct share_group *g, const char *topic)
{
    const struct share_member *offline = NULL;
    size_t offline_k = 0;

    for (size_t i = 0; i < g->count; i++) {
        size_t k = (g->next + i) % g->count;
        const struct session *s = g->members[k].session;
        /* A member that may not read the topic is passed over, not given it to drop. */
        if (s->token && !access_may_read(s->token, topic))
            continue;
        if (session_online(s)) {
            g->next = (k + 1) % g->count;
            return &g->members[k];
        }
        if (!offline) {
            offline = &g->members[k];
            offline_k = k;
        }
    }
    if (offline)
        g->next = (offline_k + 1) % g->count;
    return offline;
}

static void route_collect(void *ctx, const struct topic_sub *sub)
{
    struct route *r = ctx;

    if (r->replay && (sub->shared || !((const struct session *)sub->owner)->adopting))
        return;
    if (sub->shared) {
        const struct share_member *m = route_pick_member(sub->owner, r->topic);
        if (m)
            route_session(r, m->session, m->options, m->leading_slash, m->sub_id);
        return;
    }
    if ((sub->options & MQTT_SUB_OPT_NO_LOCAL) && sub->owner == r->origin)
        return;
    route_session(r, sub->owner, sub->options, sub->leading_slash, sub->sub_id);
}

bool route_retained_full(struct instance *inst, const struct message *m)
{
    size_t max = inst->limits.max_retained;

    if (!m->retain || !m->payload_len)
        return false; /* clearing is always allowed */
    if (core_memory_full(inst->broker))
        return true;
    /* Replacing is always allowed: only a new topic counts against the limit. */
    return max && topic_tree_retained_count(inst->tree) >= max &&
           !topic_tree_retained_get(inst->tree, m->topic);
}

/* Write the retained message of `topic`: `m`, or none (NULL). */
static void route_keep_retained(struct instance *inst, const char *topic, struct message *m)
{
    struct durable *d = inst->broker->durable;

    if (!durable_active(d))
        return;
    struct journal_record r = {.type = m ? JOURNAL_RETAIN_SET : JOURNAL_RETAIN_CLEAR,
                               .instance = inst->serial,
                               .name = topic,
                               .name_len = strlen(topic)};
    if (m)
        r.message = durable_keep_message(d, inst->kept_backlog, m, false);
    durable_append(d, inst->kept_backlog, &r);
}

void route_retain(struct instance *inst, struct message *m)
{
    bool ok = true;

    /* Past max-memory the message goes out but is not kept. */
    if (m->payload_len && core_memory_full(inst->broker)) {
        struct broker *b = inst->broker;
        if (log_every_nth(&b->memory_refusals, 1000))
            log_warning("over max-memory (%zu MB resident, max %zu MB): retained message on "
                        "'%s' delivered but not kept (%llu refusals so far)",
                        b->memory_resident >> 20, b->max_memory >> 20, m->topic,
                        (unsigned long long)b->memory_refusals);
        return;
    }
    struct message *old =
        instance_retain(inst, m->topic, m->payload_len ? message_ref(m) : NULL, &ok);
    if (!ok) {
        log_error("out of memory retaining a message on %s", m->topic);
        message_unref(old); /* it is the reference we just took */
        return;
    }
    message_unref(old);
    /* Replacing or clearing is always allowed; only a new topic counts against the limit. */
    size_t max = inst->limits.max_retained;
    if (old || !m->payload_len || max == 0 || topic_tree_retained_count(inst->tree) <= max) {
        if (old || m->payload_len)
            route_keep_retained(inst, m->topic, m->payload_len ? m : NULL);
        return;
    }
    message_unref(instance_retain(inst, m->topic, NULL, &ok));
    if (log_every_due(&inst->retained_refused, time(NULL), ROUTE_RETAINED_LOG_INTERVAL_SEC))
        log_notice("instance %s: %zu retained messages (max-retained): '%s' delivered but not "
                   "retained (%llu so far)",
                   inst->name, max, m->topic, (unsigned long long)inst->retained_refused.count);
}

/* The Subscription Identifiers of match `m`, in `sc`'s buffer. */
static const uint32_t *match_ids(const struct broker *b, const struct broker_match *m,
                                 struct scratch *sc, size_t *count)
{
    size_t n = 0;
    for (int32_t i = m->first_id; i >= 0; i = b->match_ids[i].next)
        n++;
    uint32_t *ids = scratch_get(sc, n * sizeof(*ids));
    if (!ids) {
        log_error("out of memory listing the subscription identifiers for %s", m->session->log_id);
        *count = 0;
        return NULL;
    }
    /* The chain runs newest first: fill from the end to keep subscription order. */
    size_t k = n;
    for (int32_t i = m->first_id; i >= 0 && k > 0; i = b->match_ids[i].next)
        ids[--k] = b->match_ids[i].id;
    *count = n;
    return ids;
}

/* Route `m` to the matching sessions (see route_publish); returns how many it went to. */
static size_t route_deliver(struct instance *inst, struct message *m, const struct session *origin,
                            bool replay)
{
    struct broker *b = inst->broker;
    struct route r = {.broker = b, .origin = origin, .topic = m->topic, .replay = replay};

    if (m->retain && !replay)
        route_retain(inst, m);

    b->routing++;
    b->match_gen++;
    b->match_count = 0;
    b->match_id_count = 0;
    topic_tree_match(inst->tree, m->topic, route_collect, &r);
    /* Deliver after matching: delivery may close connections, never the tree. */
    uint32_t small[8];
    struct scratch ids = SCRATCH_INIT(small);
    size_t delivered = b->match_count;
    for (size_t i = 0; i < delivered; i++) {
        struct broker_match *match = &b->matches[i];
        struct delivery d = {
            .qos = match->qos < m->qos ? match->qos : m->qos,
            /* Live messages go out with RETAIN 0 unless the subscriber asked otherwise. */
            .retain = match->retain_as_published && m->retain,
            .leading_slash = match->leading_slash,
        };
        d.sub_ids = match_ids(b, match, &ids, &d.sub_id_count);
        session_deliver(match->session, m, &d);
        if (!replay) {
            inst->messages_out++;
            inst->bytes_out += m->payload_len;
        }
    }
    scratch_free(&ids);
    b->routing--;
    return delivered;
}

size_t route_publish(struct instance *inst, struct message *m, const struct session *origin)
{
    struct broker_cluster *cl = inst->broker->cluster;

    inst->messages_in++;
    inst->bytes_in += m->payload_len;
    if (cl && cl->publish(cl, inst, m, origin ? origin->client_id : NULL))
        return 1;
    if (inst->taps)
        tap_show(inst->taps, m);
    return route_deliver(inst, m, origin, false);
}

size_t route_publish_streamed(struct instance *inst, struct message *m,
                              const struct session *origin)
{
    if (inst->taps)
        tap_show(inst->taps, m);
    return route_deliver(inst, m, origin, false);
}

size_t route_replay(struct instance *inst, struct message *m, const struct session *origin)
{
    return route_deliver(inst, m, origin, true);
}

size_t route_publish_system(struct instance *inst, struct message *m)
{
    if (inst->taps)
        tap_show(inst->taps, m);
    return route_deliver(inst, m, NULL, false);
}

struct retained_ctx {
    struct session *session;
    const struct session_sub *sub;
    uint64_t now;
    struct message **expired; /* expired retained messages, removed after the walk */
    size_t expired_count, expired_cap;
};

static void route_one_retained(void *ctx, const char *topic, void *msg)
{
    struct retained_ctx *rc = ctx;
    struct message *m = msg;
    uint8_t sub_qos = rc->sub->options & MQTT_SUB_OPT_QOS;

    if (message_expired(m, rc->now)) {
        if (rc->expired_count == rc->expired_cap) {
            size_t cap = rc->expired_cap ? rc->expired_cap * 2 : 8;
            struct message **grown = realloc(rc->expired, cap * sizeof(*grown));
            if (!grown)
                return; /* it stays until the next walk finds it */
            rc->expired = grown;
            rc->expired_cap = cap;
        }
        rc->expired[rc->expired_count++] = message_ref(m);
        return;
    }
    struct delivery d = {.qos = m->qos < sub_qos ? m->qos : sub_qos,
                         .retain = true,
                         .leading_slash = rc->sub->leading_slash,
                         .sub_ids = &rc->sub->sub_id,
                         .sub_id_count = rc->sub->sub_id ? 1 : 0};
    session_deliver(rc->session, m, &d);
}

void route_send_retained(struct instance *inst, struct session *s, const char *filter,
                         const struct session_sub *sub)
{
    struct retained_ctx ctx = {.session = s, .sub = sub, .now = clock_ms()};

    inst->broker->routing++;
    topic_tree_retained_match(inst->tree, filter, route_one_retained, &ctx);
    inst->broker->routing--;
    /* Expired while retained [MQTT-3.3.2-5]: gone from the store, unless replaced meanwhile. */
    for (size_t i = 0; i < ctx.expired_count; i++) {
        struct message *m = ctx.expired[i];
        bool ok;
        struct message *now = instance_retain(inst, m->topic, NULL, &ok);
        if (now != m && now) {
            instance_retain(inst, m->topic, now, &ok);
        } else {
            message_unref(now);
            route_keep_retained(inst, m->topic, NULL);
        }
        message_unref(m);
    }
    free(ctx.expired);
}
