/* PUBLISH from a client: check aviary's topic rules and limits, route, acknowledge. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker/access.h"
#include "broker/conn.h"
#include "broker/handlers.h"
#include "broker/instance.h"
#include "broker/message.h"
#include "broker/session.h"
#include "broker/topic.h"
#include "store/catalog.h"
#include "util/log.h"

char *handlers_normalize(const struct mqtt_buf *in, char *small, size_t small_size,
                         bool *leading_slash)
{
    char *out = small;
    if (in->len + 1 > small_size && !(out = malloc(in->len + 1)))
        return NULL;
    topic_normalize((const char *)in->data, in->len, out, leading_slash);
    return out;
}

/* At most one line per client this often about PUBLISHes its token does not allow. */
#define DENIED_LOG_INTERVAL_SEC 10

/*
 * MQTT 3.1.1 cannot refuse one PUBLISH: one the token does not allow is
 * acknowledged as usual (so the client's flow goes on) and delivered to nobody.
 */
static void note_denied(struct conn *c, const char *topic)
{
    time_t now = time(NULL);
    c->denied_publishes++;
    if (now - c->denied_logged < DENIED_LOG_INTERVAL_SEC)
        return;
    c->denied_logged = now;
    char shown[160];
    log_escape(topic, strlen(topic), shown, sizeof(shown));
    log_notice("client %s: PUBLISH to '%s' not allowed by token %s: dropped (%llu so far)",
               c->client_id, shown, c->token->id, (unsigned long long)c->denied_publishes);
}

static void send_ack(struct conn *c, uint8_t type, uint16_t packet_id)
{
    struct mqtt_packet ack = {.type = type, .flags = type == MQTT_PUBREL ? 2 : 0};
    ack.u.ack.packet_id = packet_id;
    conn_send(c, &ack);
}

void handle_publish(struct conn *c, const struct mqtt_packet *p)
{
    const struct mqtt_publish *pub = &p->u.publish;
    struct session *s = c->session;
    const struct limits *l = &s->instance->limits;

    /* MQTT 3.1.1 has no way to refuse one PUBLISH: a topic we cannot accept ends the connection. */
    int rc = topic_check_name((const char *)pub->topic.data, pub->topic.len, l->max_topic_length);
    if (rc < 0) {
        char why[96], shown[160];
        topic_describe(rc, pub->topic.len, l->max_topic_length, why, sizeof(why));
        log_escape(pub->topic.data, pub->topic.len, shown, sizeof(shown));
        conn_close(c, "PUBLISH topic '%s' refused: %s", shown, why);
        return;
    }
    if (pub->payload.len > l->max_payload) {
        conn_close(c, "PUBLISH payload of %zu bytes exceeds max-payload %zu", pub->payload.len,
                   l->max_payload);
        return;
    }

    /* Exactly once: a re-sent QoS 2 PUBLISH not yet released is acknowledged, not delivered. */
    if (pub->qos == 2) {
        int err;
        if (session_qos2_seen(s, pub->packet_id, &err)) {
            send_ack(c, MQTT_PUBREC, pub->packet_id);
            return;
        }
        if (err < 0) {
            conn_close(c, "out of memory recording a QoS 2 packet id");
            return;
        }
    }

    char small[256];
    bool slash;
    char *topic = handlers_normalize(&pub->topic, small, sizeof(small), &slash);
    struct message *m = NULL;
    if (topic && !access_may_publish(c->token, topic)) {
        note_denied(c, topic);
        if (topic != small)
            free(topic);
        goto ack;
    }
    if (topic)
        m = message_new(topic, strlen(topic), pub->payload.data, pub->payload.len, pub->qos,
                        pub->retain);
    if (topic != small)
        free(topic);
    if (!m) {
        if (pub->qos == 2)
            session_qos2_release(s, pub->packet_id);
        conn_close(c, "out of memory storing a PUBLISH");
        return;
    }
    instance_publish(s->instance, m);
    message_unref(m);
ack:
    if (pub->qos == 1)
        send_ack(c, MQTT_PUBACK, pub->packet_id);
    else if (pub->qos == 2)
        send_ack(c, MQTT_PUBREC, pub->packet_id);
}
