/* PUBLISH from a client: check aviary's topic rules and limits, route, acknowledge. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker/core.h"
#include "broker/conn.h"
#include "broker/handlers.h"
#include "broker/instance.h"
#include "broker/message.h"
#include "broker/propbuf.h"
#include "broker/route.h"
#include "broker/session.h"
#include "broker/topic.h"
#include "tenancy/access.h"
#include "tenancy/catalog.h"
#include "util/account.h"
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

bool handlers_message_props(const struct mqtt_props *in, struct propbuf *out, uint32_t *expiry)
{
    struct mqtt_prop prop;
    size_t pos = 0;
    bool text = false;

    *expiry = 0;
    while (codec_next_prop(in, &pos, &prop)) {
        switch (prop.id) {
        case MQTT_PROP_PAYLOAD_FORMAT:
            text = prop.u32 == 1;
            propbuf_add(out, &prop);
            break;
        case MQTT_PROP_CONTENT_TYPE:
        case MQTT_PROP_RESPONSE_TOPIC:
        case MQTT_PROP_CORRELATION_DATA:
        case MQTT_PROP_USER_PROPERTY:
            propbuf_add(out, &prop);
            break;
        case MQTT_PROP_MESSAGE_EXPIRY:
            *expiry = prop.u32;
            break;
        default:
            break; /* the Topic Alias and Will Delay are the receiver's, not the message's */
        }
    }
    return text;
}

/* At most one line per client this often about PUBLISHes its token does not allow. */
#define DENIED_LOG_INTERVAL_SEC 10

/*
 * A PUBLISH the token does not allow is delivered to nobody. MQTT 3.1.1
 * cannot refuse one: it is acknowledged as usual (so the client's flow goes
 * on); MQTT 5 acknowledges it with 0x87.
 */
static void note_denied(struct conn *c, const char *topic)
{
    if (!log_every_due(&c->denied_log, time(NULL), DENIED_LOG_INTERVAL_SEC))
        return;
    char shown[160];
    log_escape(topic, strlen(topic), shown, sizeof(shown));
    log_notice("client %s: PUBLISH to '%s' not allowed by token %s: dropped (%llu so far)",
               c->client_id, shown, c->token->id, (unsigned long long)c->denied_log.count);
}

/* PUBACK or PUBREC (by `qos`) with `reason` and, MQTT 5 permitting, `why` as Reason String. */
static void send_ack(struct conn *c, uint8_t qos, uint16_t packet_id, uint8_t reason,
                     const char *why)
{
    struct mqtt_packet ack = {.type = qos == 1 ? MQTT_PUBACK : MQTT_PUBREC};
    struct propbuf pb;

    propbuf_init(&pb);
    ack.u.ack.packet_id = packet_id;
    ack.u.ack.reason = c->out.version == MQTT_V5 ? reason : 0;
    why = conn_reason_string(c, why);
    if (why)
        propbuf_str(&pb, MQTT_PROP_REASON_STRING, why, strlen(why));
    if (!pb.failed)
        ack.u.ack.props = propbuf_props(&pb);
    conn_send(c, &ack);
    propbuf_free(&pb);
}

/*
 * An MQTT 5 PUBLISH that cannot be accepted: QoS 1/2 get an acknowledgement
 * with `reason` (the connection stays), QoS 0 a DISCONNECT with it. Logs why.
 */
static void refuse_publish(struct conn *c, const struct mqtt_publish *pub, uint8_t reason,
                           const char *why)
{
    if (pub->qos == 0) {
        conn_disconnect(c, reason, "%s", why);
        return;
    }
    log_notice("client %s: PUBLISH refused with 0x%02x: %s", c->client_id, reason, why);
    send_ack(c, pub->qos, pub->packet_id, reason, why);
}

/*
 * The instance holds max-instance-bytes: its PUBLISHes are refused until it
 * holds less. MQTT 5 acknowledges QoS 1/2 with 0x97. MQTT 3.1.1 cannot
 * refuse a PUBLISH: rather than acknowledge a message it then drops, the
 * broker closes the connection unacknowledged, and the client sends it again
 * after reconnecting. QoS 0 is dropped, as QoS 0 may be.
 */
static void refuse_over_bytes(struct conn *c, const struct mqtt_publish *pub)
{
    struct instance *inst = c->session->instance;
    char why[160];

    snprintf(why, sizeof(why), "quota exceeded: instance holds %zu bytes (max-instance-bytes %zu)",
             inst->account->bytes, inst->limits.max_instance_bytes);
    instance_note_refusal(inst, INSTANCE_REFUSED_BYTES, "PUBLISH refused (max-instance-bytes %zu)",
                          inst->limits.max_instance_bytes);
    if (pub->qos == 0)
        return;
    if (c->out.version == MQTT_V5)
        send_ack(c, pub->qos, pub->packet_id, MQTT_RC_QUOTA_EXCEEDED, why);
    else
        conn_close_at(c, LOG_LEVEL_INFO,
                      "%s: closed without acknowledging its QoS %u PUBLISH (MQTT 3.1.1 cannot "
                      "refuse one)",
                      why, pub->qos);
}

/*
 * MQTT 5 Topic Alias [MQTT 5 3.3.2.3.4]: record the alias a PUBLISH sets, or
 * put the topic it stands for in *topic. Returns 0, or -1 after disconnecting.
 */
static int resolve_alias(struct conn *c, const struct mqtt_publish *pub, struct mqtt_buf *topic)
{
    struct mqtt_prop prop;

    if (codec_find_prop(&pub->props, MQTT_PROP_SUBSCRIPTION_ID, &prop)) {
        conn_disconnect(c, MQTT_RC_PROTOCOL_ERROR,
                        "a Subscription Identifier in a PUBLISH from a client");
        return -1;
    }
    if (!codec_find_prop(&pub->props, MQTT_PROP_TOPIC_ALIAS, &prop))
        return 0;
    uint16_t alias = (uint16_t)prop.u32;
    if (alias == 0 || alias > c->in_alias_max) {
        conn_disconnect(c, MQTT_RC_TOPIC_ALIAS_INVALID,
                        "topic alias %u outside 1..%u (max-topic-aliases)", alias,
                        c->in_alias_max);
        return -1;
    }
    if (!c->in_aliases && !(c->in_aliases = calloc(c->in_alias_max, sizeof(char *)))) {
        conn_close(c, "out of memory recording a topic alias");
        return -1;
    }
    char **slot = &c->in_aliases[alias - 1];
    if (topic->len == 0) {
        if (!*slot) {
            conn_disconnect(c, MQTT_RC_PROTOCOL_ERROR,
                            "topic alias %u was never set on this connection", alias);
            return -1;
        }
        topic->data = (const uint8_t *)*slot;
        topic->len = strlen(*slot);
        return 0;
    }
    char *copy = malloc(topic->len + 1);
    if (!copy) {
        conn_close(c, "out of memory recording a topic alias");
        return -1;
    }
    memcpy(copy, topic->data, topic->len);
    copy[topic->len] = '\0';
    free(*slot);
    *slot = copy;
    return 0;
}

static void handle_publish_body(struct conn *c, const struct mqtt_packet *p)
{
    const struct mqtt_publish *pub = &p->u.publish;
    struct session *s = c->session;
    const struct limits *l = &s->instance->limits;
    bool v5 = c->out.version == MQTT_V5;
    struct mqtt_buf topic_in = pub->topic;
    char why[320];

    if (v5 && resolve_alias(c, pub, &topic_in) < 0)
        return;
    int rc = topic_check_name((const char *)topic_in.data, topic_in.len, l->max_topic_length);
    if (rc < 0) {
        char topic_why[96], shown[160];
        topic_describe(rc, topic_in.len, l->max_topic_length, topic_why, sizeof(topic_why));
        log_escape(topic_in.data, topic_in.len, shown, sizeof(shown));
        snprintf(why, sizeof(why), "PUBLISH topic '%s' refused: %s", shown, topic_why);
        /* MQTT 3.1.1 has no way to refuse one PUBLISH: the connection ends. */
        if (v5)
            refuse_publish(c, pub, MQTT_RC_TOPIC_NAME_INVALID, why);
        else
            conn_close(c, "%s", why);
        return;
    }
    if (pub->payload.len > l->max_payload) {
        conn_disconnect(c, MQTT_RC_PACKET_TOO_LARGE,
                        "PUBLISH payload of %zu bytes exceeds max-payload %zu",
                        pub->payload.len, l->max_payload);
        return;
    }

    bool duplicate = pub->qos == 2 && idset_has(&s->incoming_qos2, pub->packet_id);
    /* Our Receive Maximum: QoS 2 messages waiting for their PUBREL [MQTT-3.3.4-9]. */
    if (v5 && pub->qos == 2 && !duplicate && s->incoming_qos2.count >= l->max_inflight) {
        conn_disconnect(c, MQTT_RC_RECEIVE_MAXIMUM_EXCEEDED,
                        "more than %zu QoS 2 messages awaiting PUBREL (max-inflight, the "
                        "Receive Maximum announced)",
                        l->max_inflight);
        return;
    }
    /* Exactly once: a re-sent QoS 2 PUBLISH not yet released is acknowledged, not delivered. */
    if (duplicate) {
        send_ack(c, 2, pub->packet_id, MQTT_RC_SUCCESS, NULL);
        return;
    }
    if (instance_over_bytes(s->instance)) {
        refuse_over_bytes(c, pub);
        return;
    }

    struct propbuf pb;
    struct message_v5 props = {0};
    propbuf_init(&pb);
    if (v5) {
        bool text = handlers_message_props(&pub->props, &pb, &props.expiry);
        props.props = pb.data;
        props.props_len = pb.len;
        if (text && codec_check_utf8(pub->payload.data, pub->payload.len) != CODEC_OK) {
            refuse_publish(c, pub, MQTT_RC_PAYLOAD_FORMAT_INVALID,
                           "payload is not UTF-8 though its Payload Format Indicator says so");
            goto out;
        }
    }
    char small[256];
    bool slash;
    char *topic = handlers_normalize(&topic_in, small, sizeof(small), &slash);
    struct message *m = NULL;
    uint8_t reason = MQTT_RC_SUCCESS;
    if (topic && !access_may_publish(c->token, topic)) {
        note_denied(c, topic);
        /* note_denied() logged which token; the client learns no more than the code. */
        snprintf(why, sizeof(why), "not authorized");
        reason = MQTT_RC_NOT_AUTHORIZED;
    } else if (topic && !pb.failed) {
        m = message_new(topic, strlen(topic), pub->payload.data, pub->payload.len, pub->qos,
                        pub->retain, &props);
        if (m)
            message_charge(m, s->instance->account);
    }
    if (topic != small)
        free(topic);
    if (reason == MQTT_RC_SUCCESS && !m) {
        conn_close(c, "out of memory storing a PUBLISH");
        goto out;
    }
    /* MQTT 5 can say the retained store is full; 3.1.1 delivers it unretained. */
    if (m && v5 && pub->qos && route_retained_full(s->instance, m)) {
        struct broker *b = c->broker;
        if (core_memory_full(b))
            snprintf(why, sizeof(why), "quota exceeded: %zu MB resident, over max-memory %zu MB",
                     b->memory_resident >> 20, b->max_memory >> 20);
        else
            snprintf(why, sizeof(why), "quota exceeded: instance %s holds %zu retained messages "
                     "(max-retained %zu)", s->instance->name, l->max_retained, l->max_retained);
        reason = MQTT_RC_QUOTA_EXCEEDED;
    }
    if (reason != MQTT_RC_SUCCESS) {
        if (v5 && pub->qos)
            refuse_publish(c, pub, reason, why);
        else if (pub->qos)
            send_ack(c, pub->qos, pub->packet_id, MQTT_RC_SUCCESS, NULL);
        message_unref(m);
        goto out;
    }
    if (pub->qos == 2 && session_qos2_receive(s, pub->packet_id) < 0) {
        message_unref(m);
        conn_close(c, "out of memory recording a QoS 2 packet id");
        goto out;
    }
    size_t delivered = route_publish(s->instance, m, s);
    message_unref(m);
    if (pub->qos)
        send_ack(c, pub->qos, pub->packet_id,
                 delivered ? MQTT_RC_SUCCESS : MQTT_RC_NO_MATCHING_SUBSCRIBERS, NULL);
out:
    propbuf_free(&pb);
}

int handle_publish(struct conn *c, const struct mqtt_packet *p)
{
    handle_publish_body(c, p);
    return 0;
}
