/* SUBSCRIBE and UNSUBSCRIBE (MQTT 3.1.1 §3.8-§3.11), with aviary's filter rules and limits. */
#include <stdlib.h>
#include <string.h>

#include "broker/conn.h"
#include "broker/handlers.h"
#include "broker/instance.h"
#include "broker/session.h"
#include "broker/topic.h"
#include "util/log.h"

/* A filter granted by one SUBSCRIBE: retained messages are sent for it after SUBACK. */
struct granted {
    char *filter; /* normalised; owned */
    bool leading_slash;
};

/* Subscribe one filter; returns the granted QoS or MQTT_SUBACK_FAILURE. */
static uint8_t subscribe_one(struct conn *c, const struct mqtt_topic_entry *e,
                             struct granted *granted)
{
    struct session *s = c->session;
    const struct limits *l = &s->instance->limits;
    uint8_t qos = e->options & 3;
    char shown[160];

    granted->filter = NULL;
    log_escape(e->filter.data, e->filter.len, shown, sizeof(shown));
    int rc = topic_check_filter((const char *)e->filter.data, e->filter.len, l->max_topic_length);
    if (rc < 0) {
        char why[96];
        topic_describe(rc, e->filter.len, l->max_topic_length, why, sizeof(why));
        log_notice("client %s: SUBSCRIBE '%s' refused: %s", c->client_id, shown, why);
        return MQTT_SUBACK_FAILURE;
    }
    bool slash;
    char *filter = handlers_normalize(&e->filter, NULL, 0, &slash);
    if (!filter)
        goto oom;
    if (!session_sub_exists(s, filter) && s->sub_count >= l->max_subscriptions) {
        log_notice("client %s: SUBSCRIBE '%s' refused: already %zu subscriptions "
                   "(max-subscriptions %zu)",
                   c->client_id, shown, s->sub_count, l->max_subscriptions);
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
    log_debug("client %s: subscribed to '%s' at QoS %u", c->client_id, shown, qos);
    granted->filter = filter;
    granted->leading_slash = slash;
    return qos;
oom_free:
    free(filter);
oom:
    log_error("client %s: out of memory subscribing to '%s'", c->client_id, shown);
    return MQTT_SUBACK_FAILURE;
}

void handle_subscribe(struct conn *c, const struct mqtt_packet *p)
{
    const struct mqtt_subscribe *sp = &p->u.subscribe;
    struct session *s = c->session;
    uint8_t *codes = malloc(sp->count);
    struct granted *granted = calloc(sp->count, sizeof(*granted));
    struct mqtt_topic_entry e;
    size_t pos = 0, i = 0;

    if (!codes || !granted) {
        conn_close(c, "out of memory handling SUBSCRIBE");
        goto out;
    }
    while (i < sp->count && codec_next_topic(sp, true, &pos, &e)) {
        codes[i] = subscribe_one(c, &e, &granted[i]);
        i++;
    }
    struct mqtt_packet ack = {.type = MQTT_SUBACK};
    ack.u.suback = (struct mqtt_suback){.packet_id = sp->packet_id, .codes = codes, .count = i};
    if (conn_send(c, &ack) < 0)
        goto out;
    /* Retained messages follow the SUBACK, for every filter granted (MQTT-3.3.1-6). */
    for (size_t k = 0; k < i; k++)
        if (granted[k].filter && c->state == CONN_ACTIVE)
            instance_send_retained(s->instance, s, granted[k].filter, codes[k],
                                   granted[k].leading_slash);
out:
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
