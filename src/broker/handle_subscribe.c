/* SUBSCRIBE and UNSUBSCRIBE (MQTT 3.1.1 §3.8-§3.11), with aviary's filter rules and limits. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/access.h"
#include "broker/conn.h"
#include "broker/handlers.h"
#include "broker/instance.h"
#include "broker/session.h"
#include "broker/topic.h"
#include "store/catalog.h"
#include "util/log.h"
#include "util/strmap.h"

/* A filter granted by one SUBSCRIBE: retained messages are sent for it after SUBACK. */
struct granted {
    char *filter; /* normalised; owned; NULL when refused or repeated later in the packet */
    bool leading_slash;
};

/* The filters one SUBSCRIBE refused, for the one line it logs however many there are. */
struct refusals {
    size_t count;
    size_t out_of_memory;
    char first_filter[160];
    char first_why[96];
};

/* Count a refusal of `filter`; only the first is kept, and each is logged at debug level. */
static void refusal_note(struct conn *c, struct refusals *r, const struct mqtt_buf *filter,
                         const char *why)
{
    char later[sizeof(r->first_filter)];
    bool first = r->count++ == 0;
    char *shown = first ? r->first_filter : later;

    if (!first && !log_enabled(LOG_LEVEL_DEBUG))
        return;
    log_escape(filter->data, filter->len, shown, sizeof(later));
    if (first)
        snprintf(r->first_why, sizeof(r->first_why), "%s", why);
    log_debug("client %s: SUBSCRIBE '%s' refused: %s", c->client_id, shown, why);
}

/* Subscribe one filter; returns the granted QoS or MQTT_SUBACK_FAILURE (noted in `r`). */
static uint8_t subscribe_one(struct conn *c, const struct mqtt_topic_entry *e,
                             struct granted *granted, struct refusals *r)
{
    struct session *s = c->session;
    const struct limits *l = &s->instance->limits;
    uint8_t qos = e->options & 3;
    char why[96];

    granted->filter = NULL;
    /* Not a topic of the tree: the broker's own news about the client's token. */
    if (e->filter.len == strlen(CONN_TOKEN_EVENTS_TOPIC) &&
        memcmp(e->filter.data, CONN_TOKEN_EVENTS_TOPIC, e->filter.len) == 0) {
        s->token_events = true;
        return qos;
    }
    int rc = topic_check_filter((const char *)e->filter.data, e->filter.len, l->max_topic_length);
    if (rc < 0) {
        topic_describe(rc, e->filter.len, l->max_topic_length, why, sizeof(why));
        refusal_note(c, r, &e->filter, why);
        return MQTT_SUBACK_FAILURE;
    }
    bool slash;
    char *filter = handlers_normalize(&e->filter, NULL, 0, &slash);
    if (!filter)
        goto oom;
    if (!access_may_subscribe(c->token, filter)) {
        snprintf(why, sizeof(why), "not allowed by token %s", c->token->id);
        refusal_note(c, r, &e->filter, why);
        free(filter);
        return MQTT_SUBACK_FAILURE;
    }
    if (!session_sub_exists(s, filter) && s->sub_count >= l->max_subscriptions) {
        snprintf(why, sizeof(why), "already %zu subscriptions (max-subscriptions %zu)",
                 s->sub_count, l->max_subscriptions);
        refusal_note(c, r, &e->filter, why);
        free(filter);
        return MQTT_SUBACK_FAILURE;
    }
    struct topic_sub sub = {.owner = s, .options = qos, .leading_slash = slash};
    int is_new = topic_tree_subscribe(s->instance->tree, filter, &sub);
    if (is_new < 0)
        goto oom_free;
    if (session_sub_record(s, filter, qos, slash, is_new) < 0) {
        if (is_new)
            topic_tree_unsubscribe(s->instance->tree, filter, s);
        goto oom_free;
    }
    if (log_enabled(LOG_LEVEL_DEBUG)) {
        char shown[160];
        log_escape(e->filter.data, e->filter.len, shown, sizeof(shown));
        log_debug("client %s: subscribed to '%s' at QoS %u", c->client_id, shown, qos);
    }
    granted->filter = filter;
    granted->leading_slash = slash;
    return qos;
oom_free:
    free(filter);
oom:
    r->out_of_memory++;
    refusal_note(c, r, &e->filter, "out of memory");
    return MQTT_SUBACK_FAILURE;
}

void handle_subscribe(struct conn *c, const struct mqtt_packet *p)
{
    const struct mqtt_subscribe *sp = &p->u.subscribe;
    struct session *s = c->session;
    uint8_t *codes = malloc(sp->count);
    struct granted *granted = calloc(sp->count, sizeof(*granted));
    /* Normalised filter -> 1 + its index in `granted`: a filter repeated within
     * the packet keeps only its last grant (the subscription it ends up with),
     * so its retained messages go out once, found in O(1) per filter. Left
     * empty (no allocation, no key drawn) for the usual one-filter packet. */
    struct strmap last = {0};
    struct refusals refused = {0};
    struct mqtt_topic_entry e;
    size_t pos = 0, i = 0;

    if (!codes || !granted) {
        conn_close(c, "out of memory handling SUBSCRIBE");
        goto out;
    }
    while (i < sp->count && codec_next_topic(sp, true, &pos, &e)) {
        codes[i] = subscribe_one(c, &e, &granted[i], &refused);
        if (granted[i].filter && sp->count > 1) {
            void *earlier;
            if (strmap_put(&last, granted[i].filter, (void *)(uintptr_t)(i + 1), &earlier) < 0) {
                conn_close(c, "out of memory handling SUBSCRIBE");
                goto out;
            }
            if (earlier) {
                size_t k = (uintptr_t)earlier - 1;
                free(granted[k].filter);
                granted[k].filter = NULL;
            }
        }
        i++;
    }
    if (refused.count)
        log_notice("client %s: SUBSCRIBE refused %zu of %zu filters (first: '%s': %s)",
                   c->client_id, refused.count, i, refused.first_filter, refused.first_why);
    if (refused.out_of_memory)
        log_error("client %s: out of memory subscribing to %zu of %zu filters", c->client_id,
                  refused.out_of_memory, i);

    struct mqtt_packet ack = {.type = MQTT_SUBACK};
    ack.u.suback = (struct mqtt_suback){.packet_id = sp->packet_id, .codes = codes, .count = i};
    if (conn_send(c, &ack) < 0)
        goto out;
    /* Retained messages follow the SUBACK, once per distinct filter granted (MQTT-3.3.1-6). */
    for (size_t k = 0; k < i; k++)
        if (granted[k].filter && c->state == CONN_ACTIVE)
            instance_send_retained(s->instance, s, granted[k].filter, codes[k],
                                   granted[k].leading_slash);
    /* Subscribed to [mqtt]tokenevents after the warning's time: it goes out now. */
    if (c->token_warning_due && s->token_events && c->state == CONN_ACTIVE)
        conn_token_warning(c);
out:
    strmap_clear(&last);
    if (granted)
        for (size_t k = 0; k < sp->count; k++)
            free(granted[k].filter);
    free(granted);
    free(codes);
}

void handle_unsubscribe(struct conn *c, const struct mqtt_packet *p)
{
    const struct mqtt_subscribe *sp = &p->u.subscribe;
    struct session *s = c->session;
    struct mqtt_topic_entry e;
    size_t pos = 0;

    while (codec_next_topic(sp, false, &pos, &e)) {
        if (e.filter.len == strlen(CONN_TOKEN_EVENTS_TOPIC) &&
            memcmp(e.filter.data, CONN_TOKEN_EVENTS_TOPIC, e.filter.len) == 0) {
            s->token_events = false;
            continue;
        }
        bool slash;
        char *filter = handlers_normalize(&e.filter, NULL, 0, &slash);
        if (!filter) {
            conn_close(c, "out of memory handling UNSUBSCRIBE");
            return;
        }
        /* Unknown filters are fine: UNSUBACK is sent all the same (MQTT-3.10.4-5). */
        if (topic_tree_unsubscribe(s->instance->tree, filter, s) == 0)
            session_sub_forget(s, filter);
        free(filter);
    }
    struct mqtt_packet ack = {.type = MQTT_UNSUBACK};
    ack.u.suback.packet_id = sp->packet_id;
    conn_send(c, &ack);
}
