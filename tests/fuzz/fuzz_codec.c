/*
 * libFuzzer target for the codec.
 *
 * Frames the input, decodes it for every protocol level the broker may pass
 * (0 before CONNECT, 3, 4, 5), walks whatever the decoder says is valid, and
 * re-encodes it: the encoding must decode again to the same fields. Any
 * disagreement aborts, so the fuzzer reports it like a crash.
 *
 * The packet is copied into a buffer of its exact size so that AddressSanitizer
 * sees a read one byte past the packet, which the fuzzer's own buffer would hide.
 */
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static bool buf_same(struct mqtt_buf a, struct mqtt_buf b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0);
}

static bool props_same(struct mqtt_props a, struct mqtt_props b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0);
}

/* A block codec_decode() accepted must walk to its exact end. */
static void walk_props(const struct mqtt_props *p)
{
    struct mqtt_prop prop;
    size_t pos = 0;

    while (codec_next_prop(p, &pos, &prop))
        ;
    CHECK(pos == p->len);
}

static void walk(const struct mqtt_packet *p)
{
    switch (p->type) {
    case MQTT_CONNECT:
        walk_props(&p->u.connect.props);
        walk_props(&p->u.connect.will_props);
        break;
    case MQTT_CONNACK:
        walk_props(&p->u.connack.props);
        break;
    case MQTT_PUBLISH:
        walk_props(&p->u.publish.props);
        break;
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        walk_props(&p->u.ack.props);
        break;
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE: {
        bool subscribe = p->type == MQTT_SUBSCRIBE;
        struct mqtt_topic_entry e;
        size_t pos = 0, n = 0;

        while (codec_next_topic(&p->u.subscribe, subscribe, &pos, &e)) {
            CHECK(e.filter.len > 0);
            CHECK(codec_check_utf8(e.filter.data, e.filter.len) == CODEC_OK);
            CHECK((e.options & MQTT_SUB_OPT_QOS) != 3);
            n++;
        }
        CHECK(pos == p->u.subscribe.entries.len);
        CHECK(n == p->u.subscribe.count && n > 0);
        walk_props(&p->u.subscribe.props);
        break;
    }
    case MQTT_SUBACK:
    case MQTT_UNSUBACK:
        walk_props(&p->u.suback.props);
        break;
    case MQTT_DISCONNECT:
    case MQTT_AUTH:
        walk_props(&p->u.disconnect.props);
        break;
    }
}

/* Fields that must survive encode + decode. */
static void compare(const struct mqtt_packet *a, const struct mqtt_packet *b)
{
    CHECK(a->type == b->type);
    switch (a->type) {
    case MQTT_CONNECT: {
        const struct mqtt_connect *x = &a->u.connect, *y = &b->u.connect;
        CHECK(x->version == y->version && buf_same(x->protocol_name, y->protocol_name));
        CHECK(x->clean == y->clean && x->will == y->will && x->will_qos == y->will_qos);
        CHECK(x->will_retain == y->will_retain && x->keepalive == y->keepalive);
        CHECK(x->has_username == y->has_username && x->has_password == y->has_password);
        CHECK(buf_same(x->client_id, y->client_id) && buf_same(x->will_topic, y->will_topic));
        CHECK(buf_same(x->will_payload, y->will_payload));
        CHECK(buf_same(x->username, y->username) && buf_same(x->password, y->password));
        CHECK(props_same(x->props, y->props) && props_same(x->will_props, y->will_props));
        break;
    }
    case MQTT_CONNACK:
        CHECK(a->u.connack.session_present == b->u.connack.session_present);
        CHECK(a->u.connack.code == b->u.connack.code);
        CHECK(props_same(a->u.connack.props, b->u.connack.props));
        break;
    case MQTT_PUBLISH: {
        const struct mqtt_publish *x = &a->u.publish, *y = &b->u.publish;
        CHECK(x->qos == y->qos && x->retain == y->retain && x->packet_id == y->packet_id);
        /* The encoder drops DUP on QoS 0, which only 3.1 lets through. */
        CHECK(x->qos == 0 ? !y->dup : x->dup == y->dup);
        CHECK(buf_same(x->topic, y->topic) && buf_same(x->payload, y->payload));
        CHECK(props_same(x->props, y->props));
        break;
    }
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        CHECK(a->u.ack.packet_id == b->u.ack.packet_id && a->u.ack.reason == b->u.ack.reason);
        CHECK(props_same(a->u.ack.props, b->u.ack.props));
        break;
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE:
        CHECK(a->u.subscribe.packet_id == b->u.subscribe.packet_id);
        CHECK(a->u.subscribe.count == b->u.subscribe.count);
        CHECK(buf_same(a->u.subscribe.entries, b->u.subscribe.entries));
        CHECK(props_same(a->u.subscribe.props, b->u.subscribe.props));
        break;
    case MQTT_SUBACK:
    case MQTT_UNSUBACK:
        CHECK(a->u.suback.packet_id == b->u.suback.packet_id);
        CHECK(a->u.suback.count == b->u.suback.count);
        CHECK(a->u.suback.count == 0 ||
              memcmp(a->u.suback.codes, b->u.suback.codes, a->u.suback.count) == 0);
        CHECK(props_same(a->u.suback.props, b->u.suback.props));
        break;
    case MQTT_DISCONNECT:
    case MQTT_AUTH:
        CHECK(a->u.disconnect.reason == b->u.disconnect.reason);
        CHECK(props_same(a->u.disconnect.props, b->u.disconnect.props));
        break;
    }
}

static void round_trip(const struct mqtt_packet *p, uint8_t version)
{
    /* CONNECT is written for the level it carries, and decoded by it too. */
    uint8_t level = p->type == MQTT_CONNECT ? p->u.connect.version : version;
    struct mqtt_packet again;
    long need = codec_encode(p, level, NULL, 0);
    uint8_t *out;

    CHECK(need > 0);
    out = malloc((size_t)need);
    CHECK(out != NULL);
    CHECK(codec_encode(p, level, out, (size_t)need) == need);
    CHECK(codec_decode(out, (size_t)need, version, &again) == CODEC_OK);
    compare(p, &again);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t versions[] = {0, MQTT_V31, MQTT_V311, MQTT_V5};
    struct mqtt_packet p;
    uint8_t type_flags;
    size_t header_len;
    uint32_t remaining;
    int rc;

    /* The whole input as one packet reaches the length checks too. */
    for (size_t i = 0; i < sizeof versions; i++) {
        rc = codec_decode(data, size, versions[i], &p);
        CHECK(rc <= 0 && rc != CODEC_INCOMPLETE && codec_strerror(rc) != NULL);
    }

    rc = codec_frame(data, size, &type_flags, &header_len, &remaining);
    if (rc != CODEC_OK || size - header_len < remaining)
        return 0;
    size_t len = header_len + remaining;
    uint8_t *pkt = malloc(len);
    CHECK(pkt != NULL);
    memcpy(pkt, data, len);

    for (size_t i = 0; i < sizeof versions; i++) {
        rc = codec_decode(pkt, len, versions[i], &p);
        if (rc != CODEC_OK)
            continue;
        walk(&p);
        round_trip(&p, versions[i]);
    }
    free(pkt);
    return 0;
}
