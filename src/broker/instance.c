#include "broker/instance.h"

#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "broker/message.h"
#include "broker/session.h"
#include "broker/topic.h"
#include "util/log.h"

struct instance *instance_new(struct broker *b, const char *name, const struct limits *limits)
{
    struct instance *inst = calloc(1, sizeof(*inst));
    if (!inst)
        return NULL;
    inst->broker = b;
    inst->limits = *limits;
    inst->name = strdup(name);
    inst->tree = topic_tree_new();
    if (!inst->name || !inst->tree) {
        free(inst->name);
        topic_tree_free(inst->tree, NULL);
        free(inst);
        return NULL;
    }
    return inst;
}

static void instance_release_retained(void *msg)
{
    message_unref(msg);
}

void instance_free(struct instance *inst)
{
    if (!inst)
        return;
    size_t pos = 0;
    struct session *s;
    while ((s = strmap_next(&inst->sessions, &pos, NULL)))
        session_free(s);
    strmap_clear(&inst->sessions);
    topic_tree_free(inst->tree, instance_release_retained);
    free(inst->name);
    free(inst);
}

/*
 * Collect one match per session: overlapping subscriptions of one client get
 * one copy, at the highest QoS among them (MQTT-3.3.5-1 allows either; one
 * copy is what clients expect).
 */
static void instance_collect_match(void *ctx, const struct topic_sub *sub)
{
    struct broker *b = ctx;
    struct session *s = sub->owner;
    uint8_t qos = sub->options & 3;

    if (s->match_gen == b->match_gen) {
        struct broker_match *m = &b->matches[s->match_index];
        if (qos > m->qos) {
            m->qos = qos;
            m->leading_slash = sub->leading_slash;
        }
        return;
    }
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
    b->matches[b->match_count++] =
        (struct broker_match){.session = s, .qos = qos, .leading_slash = sub->leading_slash};
}

/* At most one line per instance this often about retained messages not kept. */
#define INSTANCE_RETAINED_LOG_INTERVAL_SEC 10

static void instance_retain(struct instance *inst, struct message *m)
{
    bool ok = true;
    struct message *old =
        topic_tree_retain(inst->tree, m->topic, m->payload_len ? message_ref(m) : NULL, &ok);
    if (!ok) {
        log_error("out of memory retaining a message on %s", m->topic);
        message_unref(old); /* it is the reference we just took */
        return;
    }
    message_unref(old);
    /* Replacing or clearing is always allowed; only a new topic counts against the limit. */
    size_t max = inst->limits.max_retained;
    if (old || !m->payload_len || max == 0 || topic_tree_retained_count(inst->tree) <= max)
        return;
    message_unref(topic_tree_retain(inst->tree, m->topic, NULL, &ok));
    inst->retained_refused++;
    time_t now = time(NULL);
    if (now - inst->retained_logged >= INSTANCE_RETAINED_LOG_INTERVAL_SEC) {
        inst->retained_logged = now;
        log_notice("instance %s: %zu retained messages (max-retained): '%s' delivered but not "
                   "retained (%llu so far)",
                   inst->name, max, m->topic, (unsigned long long)inst->retained_refused);
    }
}

void instance_publish(struct instance *inst, struct message *m)
{
    struct broker *b = inst->broker;

    inst->messages_in++;
    if (m->retain)
        instance_retain(inst, m);

    b->routing++;
    b->match_gen++;
    b->match_count = 0;
    topic_tree_match(inst->tree, m->topic, instance_collect_match, b);
    /* Deliver after matching: delivery may close connections, never the tree. */
    for (size_t i = 0; i < b->match_count; i++) {
        struct broker_match *match = &b->matches[i];
        uint8_t qos = match->qos < m->qos ? match->qos : m->qos;
        session_deliver(match->session, m, qos, match->leading_slash, false);
        inst->messages_out++;
    }
    b->routing--;
}

struct retained_ctx {
    struct session *session;
    uint8_t qos;
    bool leading_slash;
};

static void instance_send_one_retained(void *ctx, const char *topic, void *msg)
{
    struct retained_ctx *rc = ctx;
    struct message *m = msg;
    uint8_t qos = m->qos < rc->qos ? m->qos : rc->qos;
    session_deliver(rc->session, m, qos, rc->leading_slash, true);
}

void instance_send_retained(struct instance *inst, struct session *s, const char *filter,
                            uint8_t qos, bool leading_slash)
{
    struct retained_ctx ctx = {.session = s, .qos = qos, .leading_slash = leading_slash};
    inst->broker->routing++;
    topic_tree_retained_match(inst->tree, filter, instance_send_one_retained, &ctx);
    inst->broker->routing--;
}
