/* PUBLISH from a client: check aviary's topic rules and limits, route, acknowledge. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker/action.h"
#include "broker/core.h"
#include "broker/conn.h"
#include "broker/handlers.h"
#include "broker/instance.h"
#include "broker/message.h"
#include "broker/propbuf.h"
#include "broker/route.h"
#include "broker/session.h"
#include "broker/systopic.h"
#include "broker/topic.h"
#include "tenancy/access.h"
#include "tenancy/catalog.h"
#include "util/account.h"
#include "util/log.h"
#include "util/scratch.h"

/* At most one line per client this often about PUBLISHes its token does not allow. */
#define DENIED_LOG_INTERVAL_SEC 10

/*
 * A PUBLISH the token does not allow, or to a system topic, is delivered to
 * nobody. MQTT 3.1.1 cannot refuse one: it is acknowledged as usual (so the
 * client's flow goes on); MQTT 5 acknowledges it with 0x87. `why` says what
 * refused it: "not allowed by token ID", say.
 */
static void note_denied(struct conn *c, const char *topic, const char *why)
{
    char shown[160];

    systopic_refused(c->session->instance, c->session->client_id, "publish",
                     c->token && !topic_is_reserved(topic) ? "token" : "system topic", topic, why);
    /* Out of memory, every refusal is logged. */
    struct conn_rare *rare = conn_rare(c);
    if (rare && !log_every_due(&rare->denied_log, time(NULL), DENIED_LOG_INTERVAL_SEC))
        return;
    log_escape(topic, strlen(topic), shown, sizeof(shown));
    log_notice("client %s: PUBLISH to '%s' %s: dropped (%llu so far)", c->client_id, shown, why,
               rare ? (unsigned long long)rare->denied_log.count : 0ULL);
}

/*
 * PUBACK or PUBREC (by `qos`) with `reason` and, MQTT 5 permitting, `why` as
 * Reason String. Returns conn_send()'s 0 or -1.
 */
static int send_ack(struct conn *c, uint8_t qos, uint16_t packet_id, uint8_t reason,
                    const char *why)
{
    struct mqtt_packet ack = {.type = qos == 1 ? MQTT_PUBACK : MQTT_PUBREC};

    ack.u.ack.packet_id = packet_id;
    ack.u.ack.reason = c->out.version == MQTT_V5 ? reason : 0;
    return sender_send_why(&c->out, &ack, conn_reason_string(c, why));
}

/*
 * An MQTT 5 PUBLISH that cannot be accepted: QoS 1/2 get an acknowledgement
 * with `reason` (the connection stays: 0), QoS 0 a DISCONNECT with it (-1).
 * Logs why.
 */
static int refuse_publish(struct conn *c, const struct mqtt_publish *pub, uint8_t reason,
                          const char *why)
{
    if (pub->qos == 0)
        return conn_fail_with(c, reason, "%s", why);
    log_notice("client %s: PUBLISH refused with 0x%02x: %s", c->client_id, reason, why);
    return send_ack(c, pub->qos, pub->packet_id, reason, why);
}

/*
 * The instance holds max-instance-bytes: its PUBLISHes are refused until it
 * holds less. MQTT 5 acknowledges QoS 1/2 with 0x97. MQTT 3.1.1 cannot
 * refuse a PUBLISH: rather than acknowledge a message it then drops, the
 * broker closes the connection unacknowledged, and the client sends it again
 * after reconnecting. QoS 0 is dropped, as QoS 0 may be. Returns 0 or -1.
 */
static int refuse_over_bytes(struct conn *c, const struct mqtt_publish *pub)
{
    struct instance *inst = c->session->instance;
    char why[160];

    snprintf(why, sizeof(why), "quota exceeded: instance holds %zu bytes (max-instance-bytes %zu)",
             inst->account->bytes, inst->limits.max_instance_bytes);
    instance_note_refusal(inst, INSTANCE_REFUSED_BYTES, "PUBLISH refused (max-instance-bytes %zu)",
                          inst->limits.max_instance_bytes);
    systopic_refused(inst, c->session->client_id, "publish", "max-instance-bytes", NULL, why);
    if (pub->qos == 0)
        return 0;
    if (c->out.version == MQTT_V5)
        return send_ack(c, pub->qos, pub->packet_id, MQTT_RC_QUOTA_EXCEEDED, why);
    return conn_fail_at(c, LOG_LEVEL_INFO,
                        "%s: closed without acknowledging its QoS %u PUBLISH (MQTT 3.1.1 cannot "
                        "refuse one)",
                        why, pub->qos);
}

/*
 * MQTT 5 Topic Alias [MQTT 5 3.3.2.3.4]: record the alias a PUBLISH sets, or
 * put the topic it stands for in *topic. Returns 0, or -1 (the connection must end).
 */
static int resolve_alias(struct conn *c, const struct mqtt_publish *pub, struct mqtt_buf *topic)
{
    struct mqtt_prop prop;

    if (codec_find_prop(&pub->props, MQTT_PROP_SUBSCRIPTION_ID, &prop))
        return conn_fail_with(c, MQTT_RC_PROTOCOL_ERROR,
                              "a Subscription Identifier in a PUBLISH from a client");
    if (!codec_find_prop(&pub->props, MQTT_PROP_TOPIC_ALIAS, &prop))
        return 0;
    uint16_t alias = (uint16_t)prop.u32;
    if (alias == 0 || alias > c->in_alias_max)
        return conn_fail_with(c, MQTT_RC_TOPIC_ALIAS_INVALID,
                              "topic alias %u outside 1..%u (max-topic-aliases)", alias,
                              c->in_alias_max);
    struct conn_rare *rare = conn_rare(c);
    if (rare && !rare->in_aliases)
        rare->in_aliases = calloc(c->in_alias_max, sizeof(char *));
    if (!rare || !rare->in_aliases)
        return conn_fail(c, "out of memory recording a topic alias");
    char **slot = &rare->in_aliases[alias - 1];
    if (topic->len == 0) {
        if (!*slot)
            return conn_fail_with(c, MQTT_RC_PROTOCOL_ERROR,
                                  "topic alias %u was never set on this connection", alias);
        topic->data = (const uint8_t *)*slot;
        topic->len = strlen(*slot);
        return 0;
    }
    char *copy = malloc(topic->len + 1);
    if (!copy)
        return conn_fail(c, "out of memory recording a topic alias");
    memcpy(copy, topic->data, topic->len);
    copy[topic->len] = '\0';
    free(*slot);
    *slot = copy;
    return 0;
}

/*
 * A step of handle_publish() found the PUBLISH answered (acknowledged,
 * refused or dropped) with the connection staying: nothing more to do.
 */
#define PUBLISH_DONE 1

/* A step answered the PUBLISH: PUBLISH_DONE, or -1 when the answer could not be sent. */
static int answered(int rc)
{
    return rc < 0 ? -1 : PUBLISH_DONE;
}

/* The topic failed `rc` of topic_check_name(): say why, and refuse (MQTT 5) or end (3.1.1). */
static int publish_topic_refused(struct conn *c, const struct mqtt_publish *pub,
                                 const struct mqtt_buf *topic, int rc)
{
    const struct limits *l = &c->session->instance->limits;
    char topic_why[96], shown[160], why[320];

    topic_describe(rc, topic->len, l->max_topic_length, topic_why, sizeof(topic_why));
    log_escape(topic->data, topic->len, shown, sizeof(shown));
    snprintf(why, sizeof(why), "PUBLISH topic '%s' refused: %s", shown, topic_why);
    /* MQTT 3.1.1 has no way to refuse one PUBLISH: the connection ends. */
    if (c->out.version == MQTT_V5)
        return answered(refuse_publish(c, pub, MQTT_RC_TOPIC_NAME_INVALID, why));
    return conn_fail(c, "%s", why);
}

/* Its topic, an alias resolved (MQTT 5), by aviary's rules. Returns 0, PUBLISH_DONE or -1. */
static int publish_topic(struct conn *c, const struct mqtt_publish *pub, struct mqtt_buf *topic)
{
    const struct limits *l = &c->session->instance->limits;

    if (c->out.version == MQTT_V5 && resolve_alias(c, pub, topic) < 0)
        return -1;
    int rc = topic_check_name((const char *)topic->data, topic->len, l->max_topic_length,
                              topic_charset_of(l));
    return rc >= 0 ? 0 : publish_topic_refused(c, pub, topic, rc);
}

/*
 * Whether the broker takes the PUBLISH in: max-payload, our Receive Maximum,
 * exactly once, max-instance-bytes. Returns 0, PUBLISH_DONE or -1.
 */
static int publish_admit(struct conn *c, const struct mqtt_publish *pub)
{
    struct session *s = c->session;
    const struct limits *l = &s->instance->limits;

    if (pub->payload.len > l->max_payload)
        return conn_fail_with(c, MQTT_RC_PACKET_TOO_LARGE,
                              "PUBLISH payload of %zu bytes exceeds max-payload %zu",
                              pub->payload.len, l->max_payload);
    bool duplicate = pub->qos == 2 && session_qos2_pending(s, pub->packet_id);
    /* Our Receive Maximum: QoS 2 messages waiting for their PUBREL [MQTT-3.3.4-9]. */
    if (c->out.version == MQTT_V5 && pub->qos == 2 && !duplicate &&
        session_qos2_count(s) >= l->max_inflight)
        return conn_fail_with(c, MQTT_RC_RECEIVE_MAXIMUM_EXCEEDED,
                              "more than %zu QoS 2 messages awaiting PUBREL (max-inflight, the "
                              "Receive Maximum announced)",
                              l->max_inflight);
    /* Exactly once: a re-sent QoS 2 PUBLISH not yet released is acknowledged, not delivered. */
    if (duplicate)
        return answered(send_ack(c, 2, pub->packet_id, MQTT_RC_SUCCESS, NULL));
    if (instance_over_bytes(s->instance))
        return answered(refuse_over_bytes(c, pub));
    return 0;
}

/*
 * A PUBLISH to a topic its token does not allow: delivered to nobody, but
 * answered as MQTT 5 can (0x87) or MQTT 3.1.1 must (as delivered). Returns
 * PUBLISH_DONE or -1.
 */
static int publish_denied(struct conn *c, const struct mqtt_publish *pub, const char *topic)
{
    char why[96];

    if (topic_is_reserved(topic))
        snprintf(why, sizeof(why), "not allowed: only the broker publishes to system topics");
    else if (strcmp(topic, TOPIC_SYS_ACTION) == 0 && c->token &&
             access_may_publish(c->token, topic))
        snprintf(why, sizeof(why), "not allowed by token %s: it has no action permission",
                 c->token->id);
    else
        snprintf(why, sizeof(why), "not allowed by token %s", c->token ? c->token->id : "-");
    note_denied(c, topic, why);
    if (!pub->qos)
        return PUBLISH_DONE;
    /* note_denied() logged which token; the client learns no more than the code. */
    if (c->out.version == MQTT_V5)
        return answered(refuse_publish(c, pub, MQTT_RC_NOT_AUTHORIZED, "not authorized"));
    return answered(send_ack(c, pub->qos, pub->packet_id, MQTT_RC_SUCCESS, NULL));
}

/*
 * A PUBLISH to $action by a client its token allows: carry it out (it is
 * routed to nobody). MQTT 5 acknowledges QoS 1/2 with what came of it:
 * 0x00, 0x10 (no such client) or 0x99 (not an action); QoS 0 and MQTT 3.1.1
 * hear nothing more than any PUBLISH. Returns PUBLISH_DONE or -1.
 */
static int publish_action(struct conn *c, const struct mqtt_publish *pub)
{
    char why[192];
    uint8_t reason = MQTT_RC_SUCCESS;

    switch (action_run(c, pub->payload.data, pub->payload.len, why, sizeof(why))) {
    case ACTION_SELF:
        return conn_fail_with(c, MQTT_RC_ADMINISTRATIVE_ACTION, "%s", why);
    case ACTION_NO_CLIENT:
        reason = MQTT_RC_NO_MATCHING_SUBSCRIBERS;
        break;
    case ACTION_MALFORMED:
        reason = MQTT_RC_PAYLOAD_FORMAT_INVALID;
        break;
    case ACTION_DONE:
        break;
    }
    if (!pub->qos)
        return PUBLISH_DONE;
    return answered(send_ack(c, pub->qos, pub->packet_id, reason, reason ? why : NULL));
}

/*
 * The message the PUBLISH carries, with its MQTT 5 properties, in *m
 * (charged to the instance): or it is refused for its payload's format or its
 * token. Returns 0 (with *m), PUBLISH_DONE or -1.
 */
static int publish_message(struct conn *c, const struct mqtt_publish *pub,
                           const struct mqtt_buf *topic_in, struct message **m)
{
    struct message_v5 props = {0};
    struct propbuf pb;
    char small[256];
    struct scratch sc = SCRATCH_INIT(small);
    bool slash;
    int rc = 0;

    propbuf_init(&pb);
    if (c->out.version == MQTT_V5 && message_props_take(&pub->props, &pb, &props) &&
        codec_check_utf8(pub->payload.data, pub->payload.len) != CODEC_OK) {
        rc = answered(refuse_publish(c, pub, MQTT_RC_PAYLOAD_FORMAT_INVALID,
                                     "payload is not UTF-8 though its Payload Format Indicator "
                                     "says so"));
        goto out;
    }
    char *topic = topic_normalize_wire(topic_in, &sc, &slash);
    if (topic && strcmp(topic, TOPIC_SYS_ACTION) == 0)
        rc = access_may_act(c->token) ? publish_action(c, pub) : publish_denied(c, pub, topic);
    else if (topic && (topic_is_reserved(topic) || !access_may_publish(c->token, topic)))
        rc = publish_denied(c, pub, topic);
    else if (topic && !pb.failed &&
             (*m = message_new(topic, strlen(topic), pub->payload.data, pub->payload.len, pub->qos,
                               pub->retain, &props)))
        message_charge(*m, c->session->instance->account);
    else
        rc = conn_fail(c, "out of memory storing a PUBLISH");
    scratch_free(&sc);
out:
    propbuf_free(&pb);
    return rc;
}

/* The retained store is full (max-retained, or max-memory): refuse with 0x97 and say which. */
static int publish_retained_refused(struct conn *c, const struct mqtt_publish *pub)
{
    struct instance *inst = c->session->instance;
    struct broker *b = c->broker;
    char why[320];

    if (core_memory_full(b))
        snprintf(why, sizeof(why), "quota exceeded: %zu MB resident, over max-memory %zu MB",
                 b->memory_resident >> 20, b->max_memory >> 20);
    else
        snprintf(why, sizeof(why),
                 "quota exceeded: instance %s holds %zu retained messages "
                 "(max-retained %zu)",
                 inst->name, topic_tree_retained_count(inst->tree), inst->limits.max_retained);
    systopic_refused(inst, c->session->client_id, "publish",
                     core_memory_full(b) ? "max-memory" : "max-retained", NULL, why);
    return answered(refuse_publish(c, pub, MQTT_RC_QUOTA_EXCEEDED, why));
}

/* MQTT 5 can say the retained store is full; 3.1.1 delivers it unretained. */
static int publish_retained_room(struct conn *c, const struct mqtt_publish *pub,
                                 const struct message *m)
{
    if (c->out.version != MQTT_V5 || !pub->qos || !route_retained_full(c->session->instance, m))
        return 0;
    return publish_retained_refused(c, pub);
}

/* Route `m` to the instance's subscribers and acknowledge. Returns 0 or -1. */
static int publish_deliver(struct conn *c, const struct mqtt_publish *pub, struct message *m)
{
    struct session *s = c->session;

    if (pub->qos == 2 && session_qos2_receive(s, pub->packet_id) < 0)
        return conn_fail(c, "out of memory recording a QoS 2 packet id");
    size_t delivered = route_publish(s->instance, m, s);
    systopic_published(s->instance, s->client_id, m->topic, m->payload_len, m->qos, m->retain);
    if (!pub->qos)
        return 0;
    return send_ack(c, pub->qos, pub->packet_id,
                    delivered ? MQTT_RC_SUCCESS : MQTT_RC_NO_MATCHING_SUBSCRIBERS, NULL);
}

int handle_publish(struct conn *c, const struct mqtt_packet *p)
{
    const struct mqtt_publish *pub = &p->u.publish;
    struct mqtt_buf topic = pub->topic;
    struct message *m = NULL;

    int rc = publish_topic(c, pub, &topic);
    if (rc == 0)
        rc = publish_admit(c, pub);
    if (rc == 0)
        rc = publish_message(c, pub, &topic, &m);
    if (rc == 0)
        rc = publish_retained_room(c, pub, m);
    if (rc == 0)
        rc = publish_deliver(c, pub, m);
    message_unref(m);
    return rc < 0 ? -1 : 0;
}
