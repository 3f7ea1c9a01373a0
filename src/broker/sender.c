#include "broker/sender.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker/message.h"
#include "broker/propbuf.h"
#include "net/link.h"
#include "util/account.h"
#include "util/clock.h"
#include "util/limits.h"
#include "util/scratch.h"

/* Payloads up to this size are copied into the output; larger ones are referenced. */
#define SENDER_COPY_PAYLOAD_MAX 4096
/* At most one line per client this often about messages dropped for it. */
#define SENDER_DROP_LOG_INTERVAL_SEC 10

void sender_init(struct sender *s, struct link *link, const struct limits *limits,
                 void (*fail)(void *owner, const char *why))
{
    s->link = link;
    s->limits = limits;
    s->fail = fail;
}

/* Its rare part, made at the first call; NULL when out of memory. */
static struct sender_rare *sender_rare(struct sender *s)
{
    if (!s->rare)
        s->rare = calloc(1, sizeof(*s->rare));
    return s->rare;
}

void sender_release(struct sender *s)
{
    if (s->rare) {
        strmap_clear(&s->rare->aliases);
        free(s->rare);
        s->rare = NULL;
    }
    account_release(s->account, s->charged);
    account_unref(s->account);
    s->account = NULL;
    s->charged = 0;
}

void sender_fail(struct sender *s, const char *fmt, ...)
{
    char why[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    s->fail(s->link->owner, why);
}

/*
 * The output's charge: what we add is charged as we add it, and where the
 * link reports output written (sender_settle) the charge is brought down to
 * what is still pending. So it is never below the truth, and exact whenever
 * the output has drained: a callback on every change of the buffer would be
 * exact always, at a price on the hottest path.
 */
static void sender_added(struct sender *s, size_t n)
{
    if (!s->account)
        return;
    s->charged += n;
    account_charge(s->account, n);
}

void sender_settle(struct sender *s)
{
    if (!s->account)
        return;
    size_t now = sender_pending(s);
    if (now > s->charged)
        account_charge(s->account, now - s->charged);
    else
        account_release(s->account, s->charged - now);
    s->charged = now;
}

void sender_charge(struct sender *s, struct account *a)
{
    s->account = account_ref(a);
    sender_settle(s);
}

/* The property block of `p`'s type, or NULL for types without one. */
static struct mqtt_props *packet_props(struct mqtt_packet *p)
{
    switch (p->type) {
    case MQTT_CONNACK:
        return &p->u.connack.props;
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        return &p->u.ack.props;
    case MQTT_SUBACK:
    case MQTT_UNSUBACK:
        return &p->u.suback.props;
    case MQTT_DISCONNECT:
    case MQTT_AUTH:
        return &p->u.disconnect.props;
    default:
        return NULL;
    }
}

/*
 * Properties a receiver can go without [MQTT-3.1.2-25]: Reason String and
 * User Properties; in a CONNACK (`connack`) also those that only repeat what
 * their absence means (the four "available" flags at 1) or that the client
 * may do without (Topic Alias Maximum: then no aliases). What the client
 * must be told (an assigned client id, a changed keep-alive or expiry, our
 * limits) always stays.
 */
static bool prop_droppable(uint8_t id, bool connack)
{
    switch (id) {
    case MQTT_PROP_REASON_STRING:
    case MQTT_PROP_USER_PROPERTY:
        return true;
    case MQTT_PROP_RETAIN_AVAILABLE:
    case MQTT_PROP_WILDCARD_SUB_AVAILABLE:
    case MQTT_PROP_SUB_ID_AVAILABLE:
    case MQTT_PROP_SHARED_SUB_AVAILABLE:
    case MQTT_PROP_TOPIC_ALIAS_MAXIMUM:
        return connack;
    default:
        return false;
    }
}

/*
 * `pkt` is too large for the client: *bare is `pkt` without the properties
 * it may go without (built in `pb`, which the caller frees). Returns false
 * when the packet has no such properties.
 */
static bool strip_props(const struct mqtt_packet *pkt, struct mqtt_packet *bare, struct propbuf *pb)
{
    struct mqtt_props *props;
    struct mqtt_prop prop;
    size_t pos = 0;
    bool dropped = false;

    *bare = *pkt;
    if (!(props = packet_props(bare)))
        return false;
    while (codec_next_prop(props, &pos, &prop)) {
        if (prop_droppable(prop.id, pkt->type == MQTT_CONNACK))
            dropped = true;
        else
            propbuf_add(pb, &prop);
    }
    if (!dropped || pb->failed)
        return false;
    *props = propbuf_props(pb);
    return true;
}

/*
 * `pkt` encodes to `need` bytes, more than the client's Maximum Packet Size
 * [MQTT-3.1.2-24]: what it can go without goes (*pkt then points at the
 * stripped copy in `bare`/`pb`). Returns the new size, 0 when it still does
 * not fit and may be left unsent, or -1 (closed) when it is a CONNACK.
 */
static long sender_shrink(struct sender *s, const struct mqtt_packet **pkt,
                          struct mqtt_packet *bare, struct propbuf *pb, long need)
{
    if (strip_props(*pkt, bare, pb)) {
        *pkt = bare;
        need = codec_encode(bare, s->version, NULL, 0);
    }
    if (need < 0 || (size_t)need <= s->max_packet)
        return need;
    if ((*pkt)->type == MQTT_CONNACK) {
        sender_fail(s,
                    "its Maximum Packet Size %lu is smaller than the CONNACK it must get "
                    "(%ld bytes)",
                    (unsigned long)s->max_packet, need);
        return -1;
    }
    log_debug("client %s: packet type %d of %ld bytes exceeds its maximum packet size %lu: "
              "not sent",
              s->who, (*pkt)->type, need, (unsigned long)s->max_packet);
    return 0;
}

int sender_send(struct sender *s, const struct mqtt_packet *pkt)
{
    uint8_t small[256];
    struct scratch sc = SCRATCH_INIT(small);
    struct mqtt_packet bare;
    struct propbuf pb; /* the stripped properties, made only for a client too small */
    int rc = -1;

    if (s->closed)
        return -1;
    propbuf_init(&pb);
    long need = codec_encode(pkt, s->version, small, sizeof(small));
    if (need > 0 && s->max_packet && (size_t)need > s->max_packet) {
        need = sender_shrink(s, &pkt, &bare, &pb, need);
        if (need <= 0) {
            rc = need == 0 ? 0 : -1;
            goto out;
        }
    }
    if (need < 0) {
        sender_fail(s, "cannot encode packet type %d: %s", pkt->type, codec_strerror((int)need));
        goto out;
    }
    uint8_t *buf = scratch_get(&sc, (size_t)need);
    if (!buf) {
        sender_fail(s, "out of memory encoding packet type %d", pkt->type);
        goto out;
    }
    if (buf != small || pkt == &bare)
        codec_encode(pkt, s->version, buf, (size_t)need);
    if (link_write(s->link, buf, (size_t)need) < 0) {
        sender_fail(s, "out of memory queueing output");
        goto out;
    }
    sender_added(s, (size_t)need);
    rc = 0;
out:
    scratch_free(&sc);
    propbuf_free(&pb);
    return rc;
}

int sender_send_why(struct sender *s, struct mqtt_packet *pkt, const char *why)
{
    struct mqtt_props *props = packet_props(pkt);
    struct propbuf pb;

    propbuf_init(&pb);
    if (why && props) {
        propbuf_str(&pb, MQTT_PROP_REASON_STRING, why, strlen(why));
        if (!pb.failed)
            *props = propbuf_props(&pb);
    }
    int rc = sender_send(s, pkt);
    propbuf_free(&pb);
    return rc;
}

/* QoS 0 messages dropped at max-outbound-bytes in the whole process (for /metrics). */
static uint64_t qos0_drops;

uint64_t sender_qos0_drops(void)
{
    return qos0_drops;
}

/* QoS 1/2 are bounded by the in-flight window and the queue; QoS 0 by max-outbound-bytes. */
static bool sender_drop_qos0(struct sender *s)
{
    size_t max = sender_max_outbound(s);

    if (sender_pending(s) <= max)
        return false;
    qos0_drops++;
    /* Out of memory for its count, the drop goes unlogged (/metrics counts it). */
    struct sender_rare *rare = sender_rare(s);
    if (rare && log_every_due(&rare->dropped, time(NULL), SENDER_DROP_LOG_INTERVAL_SEC))
        log_warning("client %s (%s): more than %zu bytes of output pending "
                    "(max-outbound-bytes), dropping QoS 0 messages (%llu so far)",
                    s->who, link_peer_name(&s->link->meta.peer).s, max,
                    (unsigned long long)rare->dropped.count);
    return true;
}

/*
 * The topic alias for `topic` toward the client: the one it has, or a new one
 * while the client's Topic Alias Maximum allows (*fresh set: the PUBLISH must
 * carry the topic as well). 0: send the topic without an alias.
 */
static uint16_t sender_alias(struct sender *s, const char *topic, bool *fresh)
{
    *fresh = false;
    if (s->alias_max == 0)
        return 0;
    uintptr_t have = s->rare ? (uintptr_t)strmap_get(&s->rare->aliases, topic) : 0;
    if (have)
        return (uint16_t)have;
    if (s->alias_count >= s->alias_max || !sender_rare(s))
        return 0; /* no alias left, or no memory: the topic goes in full */
    uint16_t alias = (uint16_t)(s->alias_count + 1);
    if (strmap_put(&s->rare->aliases, topic, (void *)(uintptr_t)alias, NULL) < 0)
        return 0; /* out of memory: the topic goes in full */
    s->alias_count++;
    *fresh = true;
    return alias;
}

/* A PUBLISH that was not sent after all gives its fresh alias back. */
static void sender_unalias(struct sender *s, const char *topic)
{
    strmap_remove(&s->rare->aliases, topic);
    s->alias_count--;
}

/* MQTT 5 PUBLISH properties of a delivery: the message's own, its expiry, ids, alias. */
static void publish_props(struct propbuf *pb, const struct message *m, const struct delivery *d,
                          uint16_t alias)
{
    propbuf_raw(pb, m->props, m->props_len);
    if (m->expiry)
        propbuf_int(pb, MQTT_PROP_MESSAGE_EXPIRY, message_expiry_left(m, clock_ms()));
    for (size_t i = 0; i < d->sub_id_count; i++)
        propbuf_int(pb, MQTT_PROP_SUBSCRIPTION_ID, d->sub_ids[i]);
    if (alias)
        propbuf_int(pb, MQTT_PROP_TOPIC_ALIAS, alias);
}

static void release_message(const void *data, size_t len, void *arg)
{
    message_unref(arg);
}

/*
 * Queue the payload after its header. Small payloads are copied: the output
 * packs them densely, where every referenced piece would cost a buffer
 * chain of its own (about 1 KB). Returns 0 or -1 (out of memory).
 */
static int sender_add_payload(struct sender *s, struct message *m)
{
    if (m->payload_len == 0)
        return 0;
    if (m->payload_len <= SENDER_COPY_PAYLOAD_MAX)
        return link_write(s->link, m->payload, m->payload_len);
    message_ref(m);
    if (link_write_reference(s->link, m->payload, m->payload_len, release_message, m) < 0) {
        message_unref(m);
        return -1;
    }
    return 0;
}

/* The topic as this delivery sends it: with a leading '/' when the subscription had one. */
static char *delivery_topic(const struct message *m, const struct delivery *d, struct scratch *sc,
                            size_t *len)
{
    *len = m->topic_len + (d->leading_slash ? 1 : 0);
    char *topic = scratch_get(sc, *len + 1);
    if (!topic)
        return NULL;
    if (d->leading_slash)
        topic[0] = '/';
    memcpy(topic + (d->leading_slash ? 1 : 0), m->topic, m->topic_len + 1);
    return topic;
}

/*
 * Encode the head of `pub` and queue it with `m`'s payload. Returns 0,
 * SENDER_SKIPPED (over the client's Maximum Packet Size), or -1 (closed).
 */
static int sender_queue_publish(struct sender *s, const struct mqtt_publish *pub, struct message *m)
{
    uint8_t small[16 + 256 + PROPBUF_SMALL];
    struct scratch sc = SCRATCH_INIT(small);
    int rc = -1;

    long need = codec_encode_publish_head(pub, s->version, small, sizeof(small));
    if (need < 0) {
        sender_fail(s, "cannot encode PUBLISH: %s", codec_strerror((int)need));
        return -1;
    }
    if (s->max_packet && (size_t)need + m->payload_len > s->max_packet) {
        /* It may not be sent [MQTT-3.1.2-24]; the caller treats it as delivered. */
        log_debug("client %s: PUBLISH on %s of %zu bytes exceeds its maximum packet size %lu: "
                  "not sent",
                  s->who, m->topic, (size_t)need + m->payload_len, (unsigned long)s->max_packet);
        return SENDER_SKIPPED;
    }
    uint8_t *head = scratch_get(&sc, (size_t)need);
    if (head && head != small)
        codec_encode_publish_head(pub, s->version, head, (size_t)need);
    if (head && link_write(s->link, head, (size_t)need) == 0 && sender_add_payload(s, m) == 0) {
        sender_added(s, (size_t)need + m->payload_len);
        rc = 0;
    } else {
        sender_fail(s, "out of memory queueing a PUBLISH");
    }
    scratch_free(&sc);
    return rc;
}

int sender_publish(struct sender *s, struct message *m, const struct delivery *d,
                   uint16_t packet_id, bool dup)
{
    char small[256];
    struct scratch sc = SCRATCH_INIT(small);
    struct propbuf pb;
    uint16_t alias = 0;
    bool fresh_alias = false;
    size_t topic_len;
    int rc = -1;

    if (s->closed)
        return -1;
    if (d->qos == 0 && sender_drop_qos0(s))
        return 0;
    propbuf_init(&pb);
    char *topic = delivery_topic(m, d, &sc, &topic_len);
    if (topic && s->version == MQTT_V5) {
        alias = sender_alias(s, topic, &fresh_alias);
        publish_props(&pb, m, d, alias);
    }
    if (!topic || pb.failed) {
        sender_fail(s, "out of memory queueing a PUBLISH");
        goto out;
    }
    struct mqtt_publish pub = {
        .qos = d->qos,
        .dup = dup,
        .retain = d->retain,
        .packet_id = packet_id,
        /* A known alias stands for the topic: the name is left empty (MQTT 5 3.3.2.3.4). */
        .topic = {(const uint8_t *)topic, alias && !fresh_alias ? 0 : topic_len},
        .payload = {m->payload, m->payload_len},
        .props = propbuf_props(&pb),
    };
    rc = sender_queue_publish(s, &pub, m);
    if (rc == 0)
        s->published++;
    if (rc == SENDER_SKIPPED && fresh_alias)
        sender_unalias(s, topic);
out:
    propbuf_free(&pb);
    scratch_free(&sc);
    return rc;
}
