/*
 * Unit tests for the codec: every packet type both ways, and every check a
 * receiver must make, named after the specification clause where there is one.
 * Malformed packets are written out byte by byte, so the decoder is never
 * tested only against the encoder's idea of the format.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"

/* A byte array literal and its size, as two arguments. */
#define BYTES(...) ((const uint8_t[]){__VA_ARGS__}), sizeof((const uint8_t[]){__VA_ARGS__})

/* Decode a literal packet for `version` and give the result code. */
#define DECODE(version, ...) decode_rc((version), BYTES(__VA_ARGS__))

#define ck_assert_buf_eq(b, s)                                                                     \
    do {                                                                                           \
        ck_assert_uint_eq((b).len, strlen(s));                                                     \
        ck_assert((b).len == 0 || memcmp((b).data, (s), (b).len) == 0);                            \
    } while (0)

static int decode_rc(uint8_t version, const uint8_t *buf, size_t len)
{
    struct mqtt_packet p;

    return codec_decode(buf, len, version, &p);
}

static struct mqtt_buf str(const char *s)
{
    return (struct mqtt_buf){(const uint8_t *)s, strlen(s)};
}

static bool buf_same(struct mqtt_buf a, struct mqtt_buf b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0);
}

static bool props_same(struct mqtt_props a, struct mqtt_props b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0);
}

/*
 * Encode `in` for `version` into buf, checking that the size query with
 * cap 0 agrees with the real encoding, then decode it into *out.
 * Returns the encoded length.
 */
static size_t round_trip(const struct mqtt_packet *in, uint8_t version, uint8_t *buf, size_t cap,
                         struct mqtt_packet *out)
{
    long need = codec_encode(in, version, NULL, 0);

    ck_assert_int_gt(need, 0);
    ck_assert_int_le(need, (long)cap);
    ck_assert_int_eq(codec_encode(in, version, buf, cap), need);
    ck_assert_int_eq(codec_decode(buf, (size_t)need, version, out), CODEC_OK);
    ck_assert_uint_eq(out->type, in->type);
    return (size_t)need;
}

/* Build a property block of the given properties into buf. */
static struct mqtt_props props_build(uint8_t *buf, size_t cap, const struct mqtt_prop *list,
                                     size_t n)
{
    size_t pos = 0;

    for (size_t i = 0; i < n; i++)
        ck_assert_uint_gt(codec_put_prop(buf, cap, &pos, &list[i]), 0);
    ck_assert_uint_le(pos, cap);
    return (struct mqtt_props){buf, pos};
}

/*
 * Decode an MQTT 5 PUBLISH to topic "a" at QoS 0 carrying the property block
 * `props` (n bytes, n < 128) and payload "x".
 */
static int publish5_with_props(const uint8_t *props, size_t n)
{
    uint8_t buf[160] = {0x30, (uint8_t)(3 + 1 + n + 1), 0x00, 0x01, 'a', (uint8_t)n};

    memcpy(buf + 6, props, n);
    buf[6 + n] = 'x';
    return decode_rc(MQTT_V5, buf, 7 + n);
}

/* The same for an MQTT 5 CONNECT with client id "c" and no will. */
static int connect5_with_props(const uint8_t *props, size_t n)
{
    uint8_t buf[160] = {0x10,      (uint8_t)(10 + 1 + n + 3),
                        0x00,      0x04,
                        'M',       'Q',
                        'T',       'T',
                        0x05,      0x02,
                        0x00,      0x3C,
                        (uint8_t)n};

    memcpy(buf + 13, props, n);
    memcpy(buf + 13 + n,
           "\x00\x01"
           "c",
           3);
    return decode_rc(MQTT_V5, buf, 16 + n);
}

/* An MQTT 5 SUBSCRIBE of "a" at QoS 1 with the property block `props`. */
static int subscribe5_with_props(const uint8_t *props, size_t n)
{
    uint8_t buf[160] = {0x82, (uint8_t)(2 + 1 + n + 4), 0x00, 0x01, (uint8_t)n};

    memcpy(buf + 5, props, n);
    memcpy(buf + 5 + n,
           "\x00\x01"
           "a\x01",
           4);
    return decode_rc(MQTT_V5, buf, 9 + n);
}

#define PUBLISH5_PROPS(...) publish5_with_props(BYTES(__VA_ARGS__))
#define CONNECT5_PROPS(...) connect5_with_props(BYTES(__VA_ARGS__))
#define SUBSCRIBE5_PROPS(...) subscribe5_with_props(BYTES(__VA_ARGS__))

/* ---- framing ---------------------------------------------------------------- */

START_TEST(test_frame_incomplete)
{
    uint8_t tf;
    size_t hl;
    uint32_t rem;

    ck_assert_int_eq(codec_frame(NULL, 0, &tf, &hl, &rem), CODEC_INCOMPLETE);
    ck_assert_int_eq(codec_frame(BYTES(0x30), &tf, &hl, &rem), CODEC_INCOMPLETE);
    ck_assert_int_eq(codec_frame(BYTES(0x30, 0x80), &tf, &hl, &rem), CODEC_INCOMPLETE);
    ck_assert_int_eq(codec_frame(BYTES(0x30, 0xFF, 0xFF, 0xFF), &tf, &hl, &rem), CODEC_INCOMPLETE);
}
END_TEST

START_TEST(test_frame_complete_before_body_arrives)
{
    uint8_t tf;
    size_t hl;
    uint32_t rem;

    ck_assert_int_eq(codec_frame(BYTES(0x32, 0xC1, 0x02), &tf, &hl, &rem), CODEC_OK);
    ck_assert_uint_eq(tf, 0x32);
    ck_assert_uint_eq(hl, 3);
    ck_assert_uint_eq(rem, 321);
    ck_assert_int_eq(codec_frame(BYTES(0xC0, 0x00), &tf, &hl, &rem), CODEC_OK);
    ck_assert_uint_eq(hl, 2);
    ck_assert_uint_eq(rem, 0);
}
END_TEST

START_TEST(test_remaining_length_4_bytes_max)
{
    uint8_t tf;
    size_t hl;
    uint32_t rem;

    ck_assert_int_eq(codec_frame(BYTES(0x30, 0xFF, 0xFF, 0xFF, 0x7F), &tf, &hl, &rem), CODEC_OK);
    ck_assert_uint_eq(hl, 5);
    ck_assert_uint_eq(rem, MQTT_MAX_REMAINING_LENGTH);
    ck_assert_int_eq(codec_frame(BYTES(0x30, 0x80, 0x80, 0x80, 0x80, 0x01), &tf, &hl, &rem),
                     CODEC_E_REMAINING_LENGTH);
    ck_assert_int_eq(codec_frame(BYTES(0x30, 0xFF, 0xFF, 0xFF, 0xFF), &tf, &hl, &rem),
                     CODEC_E_REMAINING_LENGTH);
    ck_assert_int_eq(DECODE(4, 0x30, 0x80, 0x80, 0x80, 0x80, 0x01), CODEC_E_REMAINING_LENGTH);
}
END_TEST

START_TEST(test_remaining_length_past_the_data)
{
    ck_assert_int_eq(DECODE(4, 0x30, 0x0A, 0x00, 0x01, 'a'), CODEC_E_TRUNCATED);
    ck_assert_int_eq(DECODE(4, 0x30, 0x80), CODEC_E_TRUNCATED);
    ck_assert_int_eq(DECODE(4, 0x30), CODEC_E_TRUNCATED);
}
END_TEST

START_TEST(test_bytes_after_the_packet)
{
    ck_assert_int_eq(DECODE(4, 0x30, 0x03, 0x00, 0x01, 'a', 'x'), CODEC_E_TRAILING);
    ck_assert_int_eq(DECODE(4, 0xC0, 0x01, 0x00), CODEC_E_TRAILING);
    ck_assert_int_eq(DECODE(4, 0x40, 0x03, 0x00, 0x01, 0x00), CODEC_E_TRAILING);
    ck_assert_int_eq(DECODE(4, 0xE0, 0x01, 0x00), CODEC_E_TRAILING);
    ck_assert_int_eq(DECODE(4, 0x20, 0x03, 0x00, 0x00, 0x00), CODEC_E_TRAILING);
    ck_assert_int_eq(DECODE(4, 0xB0, 0x03, 0x00, 0x01, 0x00), CODEC_E_TRAILING);
    ck_assert_int_eq(DECODE(4, 0x10, 0x0E, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x3C,
                            0x00, 0x01, 'c', 'x'),
                     CODEC_E_TRAILING);
}
END_TEST

/* Remaining length (and so the header) at each boundary of the variable integer. */
START_TEST(test_remaining_length_boundaries)
{
    static const struct {
        uint32_t remaining;
        size_t header;
    } cases[] = {{3, 2}, {127, 2}, {128, 3}, {16383, 3}, {16384, 4}, {2097151, 4}, {2097152, 5}};

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t payload_len = cases[i].remaining - 3; /* topic "t" takes 3 */
        size_t total = cases[i].header + cases[i].remaining;
        uint8_t *payload = calloc(1, payload_len + 1);
        uint8_t *buf = malloc(total);
        struct mqtt_packet in = {.type = MQTT_PUBLISH}, out;
        uint8_t tf;
        size_t hl;
        uint32_t rem;

        ck_assert_ptr_nonnull(payload);
        ck_assert_ptr_nonnull(buf);
        in.u.publish.topic = str("t");
        in.u.publish.payload = (struct mqtt_buf){payload, payload_len};
        ck_assert_uint_eq(round_trip(&in, MQTT_V311, buf, total, &out), total);
        ck_assert_int_eq(codec_frame(buf, total, &tf, &hl, &rem), CODEC_OK);
        ck_assert_uint_eq(hl, cases[i].header);
        ck_assert_uint_eq(rem, cases[i].remaining);
        ck_assert_uint_eq(out.u.publish.payload.len, payload_len);
        /* codec_decode() wants the whole packet: one byte short is truncated. */
        ck_assert_int_eq(codec_decode(buf, total - 1, MQTT_V311, &out), CODEC_E_TRUNCATED);
        free(payload);
        free(buf);
    }
}
END_TEST

START_TEST(test_encode_largest_remaining_length)
{
    static const uint8_t payload[1];
    struct mqtt_packet in = {.type = MQTT_PUBLISH};

    /* Only sized, never written: the payload pointer is not read. */
    in.u.publish.topic = str("t");
    in.u.publish.payload = (struct mqtt_buf){payload, MQTT_MAX_REMAINING_LENGTH - 3};
    ck_assert_int_eq(codec_encode(&in, MQTT_V311, NULL, 0), MQTT_MAX_REMAINING_LENGTH + 5L);
    in.u.publish.payload.len++;
    ck_assert_int_eq(codec_encode(&in, MQTT_V311, NULL, 0), CODEC_E_NOSPACE);
    in.u.publish.payload.len = SIZE_MAX;
    ck_assert_int_eq(codec_encode(&in, MQTT_V311, NULL, 0), CODEC_E_NOSPACE);
}
END_TEST

/* ---- 3.1.1: every packet type, encoded then decoded ------------------------- */

START_TEST(test_v311_connect_round_trip)
{
    struct mqtt_packet in = {.type = MQTT_CONNECT}, out;
    struct mqtt_connect *c = &in.u.connect;
    uint8_t buf[128];

    c->clean = true;
    c->keepalive = 60;
    c->client_id = str("client-1");
    c->will = true;
    c->will_qos = 2;
    c->will_retain = true;
    c->will_topic = str("last/will");
    c->will_payload = (struct mqtt_buf){(const uint8_t *)"\0gone", 5};
    c->has_username = true;
    c->username = str("user");
    c->has_password = true;
    c->password = (struct mqtt_buf){(const uint8_t *)"p\0w", 3};
    round_trip(&in, MQTT_V311, buf, sizeof buf, &out);

    const struct mqtt_connect *d = &out.u.connect;
    ck_assert_uint_eq(d->version, MQTT_V311);
    ck_assert_buf_eq(d->protocol_name, "MQTT");
    ck_assert(d->clean);
    ck_assert_uint_eq(d->keepalive, 60);
    ck_assert_buf_eq(d->client_id, "client-1");
    ck_assert(d->will && d->will_retain);
    ck_assert_uint_eq(d->will_qos, 2);
    ck_assert_buf_eq(d->will_topic, "last/will");
    ck_assert(buf_same(d->will_payload, c->will_payload));
    ck_assert(d->has_username && d->has_password);
    ck_assert_buf_eq(d->username, "user");
    ck_assert(buf_same(d->password, c->password));
    ck_assert_uint_eq(d->props.len, 0);
}
END_TEST

START_TEST(test_v311_connect_exact_bytes)
{
    static const uint8_t want[] = {0x10, 0x0D, 0x00, 0x04, 'M',  'Q',  'T', 'T',
                                   0x04, 0x02, 0x00, 0x3C, 0x00, 0x01, 'c'};
    struct mqtt_packet in = {.type = MQTT_CONNECT};
    uint8_t buf[64];

    in.u.connect.clean = true;
    in.u.connect.keepalive = 60;
    in.u.connect.client_id = str("c");
    ck_assert_int_eq(codec_encode(&in, MQTT_V311, buf, sizeof buf), sizeof want);
    ck_assert_mem_eq(buf, want, sizeof want);
}
END_TEST

START_TEST(test_v311_connect_empty_client_id_is_for_the_broker)
{
    struct mqtt_packet p;
    static const uint8_t pkt[] = {0x10, 0x0C, 0x00, 0x04, 'M',  'Q',  'T',
                                  'T',  0x04, 0x02, 0x00, 0x3C, 0x00, 0x00};

    ck_assert_int_eq(codec_decode(pkt, sizeof pkt, 0, &p), CODEC_OK);
    ck_assert_uint_eq(p.u.connect.client_id.len, 0);
}
END_TEST

START_TEST(test_v31_connect_mqisdp)
{
    static const uint8_t pkt[] = {0x10, 0x0F, 0x00, 0x06, 'M',  'Q',  'I',  's', 'd',
                                  'p',  0x03, 0x02, 0x00, 0x3C, 0x00, 0x01, 'c'};
    struct mqtt_packet p, in = {.type = MQTT_CONNECT}, out;
    uint8_t buf[64];

    ck_assert_int_eq(codec_decode(pkt, sizeof pkt, 0, &p), CODEC_OK);
    ck_assert_uint_eq(p.u.connect.version, MQTT_V31);
    ck_assert_buf_eq(p.u.connect.protocol_name, "MQIsdp");
    ck_assert_buf_eq(p.u.connect.client_id, "c");

    in.u.connect.clean = true;
    in.u.connect.keepalive = 60;
    in.u.connect.client_id = str("c");
    ck_assert_int_eq(codec_encode(&in, MQTT_V31, buf, sizeof buf), sizeof pkt);
    ck_assert_mem_eq(buf, pkt, sizeof pkt);

    in.u.connect.will = true;
    in.u.connect.will_qos = 1;
    in.u.connect.will_topic = str("w");
    in.u.connect.has_username = in.u.connect.has_password = true;
    in.u.connect.username = str("u");
    in.u.connect.password = str("p");
    round_trip(&in, MQTT_V31, buf, sizeof buf, &out);
    ck_assert_uint_eq(out.u.connect.version, MQTT_V31);
    ck_assert_buf_eq(out.u.connect.will_topic, "w");
    ck_assert_buf_eq(out.u.connect.password, "p");
}
END_TEST

START_TEST(test_v311_connack_round_trip)
{
    struct mqtt_packet in = {.type = MQTT_CONNACK}, out;
    uint8_t buf[8];

    in.u.connack.session_present = true;
    ck_assert_uint_eq(round_trip(&in, MQTT_V311, buf, sizeof buf, &out), 4);
    ck_assert_mem_eq(buf, "\x20\x02\x01\x00", 4);
    ck_assert(out.u.connack.session_present);
    ck_assert_uint_eq(out.u.connack.code, 0);

    in.u.connack.session_present = false;
    in.u.connack.code = MQTT_CONNACK_NOT_AUTHORIZED;
    round_trip(&in, MQTT_V311, buf, sizeof buf, &out);
    ck_assert_uint_eq(out.u.connack.code, MQTT_CONNACK_NOT_AUTHORIZED);
}
END_TEST

START_TEST(test_v311_publish_qos0_1_2_round_trip)
{
    uint8_t buf[64];

    for (uint8_t qos = 0; qos <= 2; qos++) {
        struct mqtt_packet in = {.type = MQTT_PUBLISH}, out;
        struct mqtt_publish *p = &in.u.publish;

        p->qos = qos;
        p->retain = true;
        p->dup = qos > 0;
        p->packet_id = qos ? 0x1234 : 0;
        p->topic = str("a/b/c");
        p->payload = (struct mqtt_buf){(const uint8_t *)"\x00\xFFpay", 5};
        round_trip(&in, MQTT_V311, buf, sizeof buf, &out);
        ck_assert_uint_eq(out.flags, (qos << 1) | 1 | (qos ? 8 : 0));
        ck_assert_uint_eq(out.u.publish.qos, qos);
        ck_assert(out.u.publish.retain);
        ck_assert_uint_eq(out.u.publish.dup, qos > 0);
        ck_assert_uint_eq(out.u.publish.packet_id, p->packet_id);
        ck_assert_buf_eq(out.u.publish.topic, "a/b/c");
        ck_assert(buf_same(out.u.publish.payload, p->payload));
    }
}
END_TEST

START_TEST(test_publish_qos0_encode_ignores_packet_id_and_dup)
{
    struct mqtt_packet in = {.type = MQTT_PUBLISH};
    uint8_t buf[16];

    in.u.publish.topic = str("a");
    in.u.publish.packet_id = 7;
    in.u.publish.dup = true;
    ck_assert_int_eq(codec_encode(&in, MQTT_V311, buf, sizeof buf), 5);
    ck_assert_mem_eq(buf,
                     "\x30\x03\x00\x01"
                     "a",
                     5);
}
END_TEST

START_TEST(test_v311_publish_empty_payload)
{
    struct mqtt_packet p;
    static const uint8_t pkt[] = {0x32, 0x05, 0x00, 0x01, 'a', 0x00, 0x09};

    ck_assert_int_eq(codec_decode(pkt, sizeof pkt, 4, &p), CODEC_OK);
    ck_assert_uint_eq(p.u.publish.packet_id, 9);
    ck_assert_uint_eq(p.u.publish.payload.len, 0);
}
END_TEST

START_TEST(test_v311_acks_round_trip)
{
    static const uint8_t types[] = {MQTT_PUBACK, MQTT_PUBREC, MQTT_PUBREL, MQTT_PUBCOMP};
    static const uint8_t first[] = {0x40, 0x50, 0x62, 0x70};
    uint8_t buf[8];

    for (size_t i = 0; i < 4; i++) {
        struct mqtt_packet in = {.type = types[i]}, out;

        in.u.ack.packet_id = 0xBEEF;
        in.u.ack.reason = 0x80; /* no place for it before MQTT 5 */
        ck_assert_uint_eq(round_trip(&in, MQTT_V311, buf, sizeof buf, &out), 4);
        ck_assert_uint_eq(buf[0], first[i]);
        ck_assert_uint_eq(out.u.ack.packet_id, 0xBEEF);
        ck_assert_uint_eq(out.u.ack.reason, 0);
    }
}
END_TEST

START_TEST(test_v311_subscribe_round_trip)
{
    struct mqtt_packet in = {.type = MQTT_SUBSCRIBE}, out;
    struct mqtt_topic_entry e;
    uint8_t entries[64], buf[96];
    size_t pos = 0;

    codec_put_topic(entries, sizeof entries, &pos, "a/+", 3, true, 1);
    codec_put_topic(entries, sizeof entries, &pos, "#", 1, true, 2);
    codec_put_topic(entries, sizeof entries, &pos, "b", 1, true, 0);
    in.u.subscribe.packet_id = 10;
    in.u.subscribe.entries = (struct mqtt_buf){entries, pos};
    in.u.subscribe.count = 3;
    round_trip(&in, MQTT_V311, buf, sizeof buf, &out);
    ck_assert_uint_eq(buf[0], 0x82);
    ck_assert_uint_eq(out.flags, 2);
    ck_assert_uint_eq(out.u.subscribe.packet_id, 10);
    ck_assert_uint_eq(out.u.subscribe.count, 3);

    pos = 0;
    ck_assert(codec_next_topic(&out.u.subscribe, true, &pos, &e));
    ck_assert_buf_eq(e.filter, "a/+");
    ck_assert_uint_eq(e.options, 1);
    ck_assert(codec_next_topic(&out.u.subscribe, true, &pos, &e));
    ck_assert_buf_eq(e.filter, "#");
    ck_assert_uint_eq(e.options, 2);
    ck_assert(codec_next_topic(&out.u.subscribe, true, &pos, &e));
    ck_assert_buf_eq(e.filter, "b");
    ck_assert_uint_eq(e.options, 0);
    ck_assert(!codec_next_topic(&out.u.subscribe, true, &pos, &e));
}
END_TEST

START_TEST(test_v311_suback_round_trip)
{
    static const uint8_t codes[] = {0x00, 0x01, 0x02, MQTT_SUBACK_FAILURE};
    struct mqtt_packet in = {.type = MQTT_SUBACK}, out;
    uint8_t buf[16];

    in.u.suback.packet_id = 10;
    in.u.suback.codes = codes;
    in.u.suback.count = 4;
    ck_assert_uint_eq(round_trip(&in, MQTT_V311, buf, sizeof buf, &out), 8);
    ck_assert_uint_eq(out.u.suback.packet_id, 10);
    ck_assert_uint_eq(out.u.suback.count, 4);
    ck_assert_mem_eq(out.u.suback.codes, codes, 4);
}
END_TEST

START_TEST(test_v311_unsubscribe_round_trip)
{
    struct mqtt_packet in = {.type = MQTT_UNSUBSCRIBE}, out;
    struct mqtt_topic_entry e;
    uint8_t entries[32], buf[48];
    size_t pos = 0;

    codec_put_topic(entries, sizeof entries, &pos, "a/b", 3, false, 0);
    codec_put_topic(entries, sizeof entries, &pos, "c/#", 3, false, 0);
    in.u.subscribe.packet_id = 11;
    in.u.subscribe.entries = (struct mqtt_buf){entries, pos};
    round_trip(&in, MQTT_V311, buf, sizeof buf, &out);
    ck_assert_uint_eq(buf[0], 0xA2);
    ck_assert_uint_eq(out.u.subscribe.count, 2);
    pos = 0;
    ck_assert(codec_next_topic(&out.u.subscribe, false, &pos, &e));
    ck_assert_buf_eq(e.filter, "a/b");
    ck_assert(codec_next_topic(&out.u.subscribe, false, &pos, &e));
    ck_assert_buf_eq(e.filter, "c/#");
    ck_assert_uint_eq(e.options, 0);
    ck_assert(!codec_next_topic(&out.u.subscribe, false, &pos, &e));
}
END_TEST

START_TEST(test_v311_unsuback_is_just_the_packet_id)
{
    static const uint8_t codes[] = {0x00};
    struct mqtt_packet in = {.type = MQTT_UNSUBACK}, out;
    uint8_t buf[8];

    in.u.suback.packet_id = 11;
    in.u.suback.codes = codes;
    in.u.suback.count = 1;
    ck_assert_uint_eq(round_trip(&in, MQTT_V311, buf, sizeof buf, &out), 4);
    ck_assert_mem_eq(buf, "\xB0\x02\x00\x0B", 4);
    ck_assert_uint_eq(out.u.suback.packet_id, 11);
    ck_assert_uint_eq(out.u.suback.count, 0);
}
END_TEST

START_TEST(test_v311_ping_and_disconnect_round_trip)
{
    static const struct {
        uint8_t type, first;
    } cases[] = {{MQTT_PINGREQ, 0xC0}, {MQTT_PINGRESP, 0xD0}, {MQTT_DISCONNECT, 0xE0}};
    uint8_t buf[4];

    for (size_t i = 0; i < 3; i++) {
        struct mqtt_packet in = {.type = cases[i].type}, out;

        in.u.disconnect.reason = 0x8E; /* not in 3.1.1 */
        ck_assert_uint_eq(round_trip(&in, MQTT_V311, buf, sizeof buf, &out), 2);
        ck_assert_uint_eq(buf[0], cases[i].first);
        ck_assert_uint_eq(buf[1], 0);
    }
}
END_TEST

START_TEST(test_version_0_decodes_with_v311_rules)
{
    ck_assert_int_eq(DECODE(0, 0x30, 0x03, 0x00, 0x01, 'a'), CODEC_OK);
    ck_assert_int_eq(DECODE(0, 0x40, 0x02, 0x00, 0x01), CODEC_OK);
    ck_assert_int_eq(DECODE(0, 0xF0, 0x00), CODEC_E_PACKET_TYPE);
}
END_TEST

/* ---- fixed header ----------------------------------------------------------------- */

START_TEST(test_MQTT_2_2_2_1_reserved_flags)
{
    for (uint8_t type = 1; type <= 15; type++) {
        uint8_t version = type == MQTT_AUTH ? MQTT_V5 : MQTT_V311;
        uint8_t want =
            (type == MQTT_PUBREL || type == MQTT_SUBSCRIBE || type == MQTT_UNSUBSCRIBE) ? 2 : 0;

        if (type == MQTT_PUBLISH)
            continue;
        for (uint8_t flags = 0; flags < 16; flags++) {
            uint8_t pkt[2] = {(uint8_t)(type << 4 | flags), 0};
            if (flags != want)
                ck_assert_int_eq(decode_rc(version, pkt, 2), CODEC_E_HEADER_FLAGS);
        }
    }
}
END_TEST

START_TEST(test_packet_type_0_and_auth_before_v5)
{
    ck_assert_int_eq(DECODE(4, 0x00, 0x00), CODEC_E_PACKET_TYPE);
    ck_assert_int_eq(DECODE(5, 0x00, 0x00), CODEC_E_PACKET_TYPE);
    ck_assert_int_eq(DECODE(4, 0xF0, 0x00), CODEC_E_PACKET_TYPE);
    ck_assert_int_eq(DECODE(3, 0xF0, 0x00), CODEC_E_PACKET_TYPE);
    ck_assert_int_eq(DECODE(5, 0xF0, 0x00), CODEC_OK);
}
END_TEST

START_TEST(test_MQTT_3_3_1_4_publish_qos3)
{
    ck_assert_int_eq(DECODE(4, 0x36, 0x05, 0x00, 0x01, 'a', 0x00, 0x01), CODEC_E_QOS);
    ck_assert_int_eq(DECODE(5, 0x36, 0x06, 0x00, 0x01, 'a', 0x00, 0x01, 0x00), CODEC_E_QOS);
    ck_assert_int_eq(DECODE(3, 0x3E, 0x05, 0x00, 0x01, 'a', 0x00, 0x01), CODEC_E_QOS);
}
END_TEST

START_TEST(test_MQTT_3_3_1_2_dup_on_qos0)
{
    ck_assert_int_eq(DECODE(4, 0x38, 0x03, 0x00, 0x01, 'a'), CODEC_E_HEADER_FLAGS);
    ck_assert_int_eq(DECODE(5, 0x38, 0x04, 0x00, 0x01, 'a', 0x00), CODEC_E_HEADER_FLAGS);
    ck_assert_int_eq(DECODE(0, 0x38, 0x03, 0x00, 0x01, 'a'), CODEC_E_HEADER_FLAGS);
    /* 3.1 said nothing about it. */
    ck_assert_int_eq(DECODE(3, 0x38, 0x03, 0x00, 0x01, 'a'), CODEC_OK);
    ck_assert_int_eq(DECODE(4, 0x3A, 0x05, 0x00, 0x01, 'a', 0x00, 0x01), CODEC_OK);
}
END_TEST

/* ---- strings ------------------------------------------------------------------ */

START_TEST(test_MQTT_1_5_3_1_utf8_well_formed)
{
    ck_assert_int_eq(codec_check_utf8(BYTES('a', '/', 'b')), CODEC_OK);
    ck_assert_int_eq(codec_check_utf8(NULL, 0), CODEC_OK);
    ck_assert_int_eq(codec_check_utf8(BYTES(0xC3, 0xA9)), CODEC_OK);             /* é */
    ck_assert_int_eq(codec_check_utf8(BYTES(0xE2, 0x82, 0xAC)), CODEC_OK);       /* € */
    ck_assert_int_eq(codec_check_utf8(BYTES(0xED, 0x9F, 0xBF)), CODEC_OK);       /* U+D7FF */
    ck_assert_int_eq(codec_check_utf8(BYTES(0xEE, 0x80, 0x80)), CODEC_OK);       /* U+E000 */
    ck_assert_int_eq(codec_check_utf8(BYTES(0xEF, 0xBF, 0xBF)), CODEC_OK);       /* U+FFFF */
    ck_assert_int_eq(codec_check_utf8(BYTES(0xF0, 0x9F, 0x90, 0xA6)), CODEC_OK); /* bird */
    ck_assert_int_eq(codec_check_utf8(BYTES(0xF4, 0x8F, 0xBF, 0xBF)), CODEC_OK); /* U+10FFFF */
}
END_TEST

START_TEST(test_MQTT_1_5_3_1_rejects_overlong_and_broken_utf8)
{
    ck_assert_int_eq(codec_check_utf8(BYTES(0xC0, 0xAF)), CODEC_E_UTF8); /* overlong '/' */
    ck_assert_int_eq(codec_check_utf8(BYTES(0xC0, 0x80)), CODEC_E_UTF8); /* overlong NUL */
    ck_assert_int_eq(codec_check_utf8(BYTES(0xC1, 0xBF)), CODEC_E_UTF8);
    ck_assert_int_eq(codec_check_utf8(BYTES(0xE0, 0x80, 0xAF)), CODEC_E_UTF8);
    ck_assert_int_eq(codec_check_utf8(BYTES(0xE0, 0x9F, 0xBF)), CODEC_E_UTF8);
    ck_assert_int_eq(codec_check_utf8(BYTES(0xF0, 0x8F, 0xBF, 0xBF)), CODEC_E_UTF8);
    ck_assert_int_eq(codec_check_utf8(BYTES(0x80)), CODEC_E_UTF8); /* stray */
    ck_assert_int_eq(codec_check_utf8(BYTES('a', 0xBF)), CODEC_E_UTF8);
    ck_assert_int_eq(codec_check_utf8(BYTES(0xE2, 0x82)), CODEC_E_UTF8);       /* cut short */
    ck_assert_int_eq(codec_check_utf8(BYTES(0xE2, 0x28, 0xA1)), CODEC_E_UTF8); /* not 10xxxxxx */
    ck_assert_int_eq(codec_check_utf8(BYTES(0xF8, 0x88, 0x80, 0x80, 0x80)), CODEC_E_UTF8);
    ck_assert_int_eq(codec_check_utf8(BYTES(0xFE)), CODEC_E_UTF8);
    ck_assert_int_eq(codec_check_utf8(BYTES(0xFF)), CODEC_E_UTF8);
}
END_TEST

START_TEST(test_MQTT_1_5_3_1_rejects_surrogates)
{
    ck_assert_int_eq(codec_check_utf8(BYTES(0xED, 0xA0, 0x80)), CODEC_E_UTF8); /* U+D800 */
    ck_assert_int_eq(codec_check_utf8(BYTES(0xED, 0xBF, 0xBF)), CODEC_E_UTF8); /* U+DFFF */
    ck_assert_int_eq(codec_check_utf8(BYTES(0xED, 0xA0, 0xBD, 0xED, 0xB2, 0xA9)), CODEC_E_UTF8);
}
END_TEST

START_TEST(test_rejects_code_points_above_10FFFF)
{
    ck_assert_int_eq(codec_check_utf8(BYTES(0xF4, 0x90, 0x80, 0x80)), CODEC_E_UTF8);
    ck_assert_int_eq(codec_check_utf8(BYTES(0xF5, 0x80, 0x80, 0x80)), CODEC_E_UTF8);
    ck_assert_int_eq(codec_check_utf8(BYTES(0xF7, 0xBF, 0xBF, 0xBF)), CODEC_E_UTF8);
}
END_TEST

START_TEST(test_MQTT_1_5_3_2_rejects_U0000)
{
    ck_assert_int_eq(codec_check_utf8(BYTES(0x00)), CODEC_E_NUL);
    ck_assert_int_eq(codec_check_utf8(BYTES('a', 0x00, 'b')), CODEC_E_NUL);
    /* topic name */
    ck_assert_int_eq(DECODE(4, 0x30, 0x05, 0x00, 0x03, 'a', 0x00, 'b'), CODEC_E_NUL);
    /* client id */
    ck_assert_int_eq(DECODE(0, 0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x3C,
                            0x00, 0x01, 0x00),
                     CODEC_E_NUL);
    /* will topic */
    ck_assert_int_eq(DECODE(0, 0x10, 0x14, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x06, 0x00, 0x3C,
                            0x00, 0x01, 'c', 0x00, 0x03, 'a', 0x00, 'b', 0x00, 0x00),
                     CODEC_E_NUL);
    /* username */
    ck_assert_int_eq(DECODE(0, 0x10, 0x11, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x82, 0x00, 0x3C,
                            0x00, 0x01, 'c', 0x00, 0x02, 'u', 0x00),
                     CODEC_E_NUL);
    /* SUBSCRIBE and UNSUBSCRIBE filters */
    ck_assert_int_eq(DECODE(4, 0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 0x00, 0x01), CODEC_E_NUL);
    ck_assert_int_eq(DECODE(4, 0xA2, 0x05, 0x00, 0x01, 0x00, 0x01, 0x00), CODEC_E_NUL);
}
END_TEST

START_TEST(test_invalid_utf8_in_every_string_field)
{
    /* topic name: overlong '/', then a surrogate */
    ck_assert_int_eq(DECODE(4, 0x30, 0x04, 0x00, 0x02, 0xC0, 0xAF), CODEC_E_UTF8);
    ck_assert_int_eq(DECODE(4, 0x30, 0x05, 0x00, 0x03, 0xED, 0xA0, 0x80), CODEC_E_UTF8);
    /* client id */
    ck_assert_int_eq(DECODE(0, 0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x3C,
                            0x00, 0x01, 0xFF),
                     CODEC_E_UTF8);
    /* will topic */
    ck_assert_int_eq(DECODE(0, 0x10, 0x13, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x06, 0x00, 0x3C,
                            0x00, 0x01, 'c', 0x00, 0x02, 0xC1, 0x81, 0x00, 0x00),
                     CODEC_E_UTF8);
    /* username */
    ck_assert_int_eq(DECODE(0, 0x10, 0x12, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x82, 0x00, 0x3C,
                            0x00, 0x01, 'c', 0x00, 0x03, 0xF4, 0x90, 0x80),
                     CODEC_E_UTF8);
    /* filters */
    ck_assert_int_eq(DECODE(4, 0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 0x80, 0x01), CODEC_E_UTF8);
    ck_assert_int_eq(DECODE(4, 0xA2, 0x05, 0x00, 0x01, 0x00, 0x01, 0x80), CODEC_E_UTF8);
}
END_TEST

START_TEST(test_password_and_payload_are_binary)
{
    struct mqtt_packet p;
    static const uint8_t conn[] = {0x10, 0x14, 0x00, 0x04, 'M',  'Q',  'T', 'T',  0x04, 0xC2, 0x00,
                                   0x3C, 0x00, 0x01, 'c',  0x00, 0x01, 'u', 0x00, 0x02, 0x00, 0xFF};

    ck_assert_int_eq(codec_decode(conn, sizeof conn, 0, &p), CODEC_OK);
    ck_assert_uint_eq(p.u.connect.password.len, 2);
    ck_assert_int_eq(DECODE(4, 0x30, 0x05, 0x00, 0x01, 'a', 0x00, 0xC0), CODEC_OK);
    ck_assert_int_eq(DECODE(0, 0x10, 0x12, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x06, 0x00, 0x3C,
                            0x00, 0x01, 'c', 0x00, 0x01, 'w', 0x00, 0x00),
                     CODEC_OK);
}
END_TEST

START_TEST(test_strings_past_the_packet)
{
    /* topic length larger than what is left */
    ck_assert_int_eq(DECODE(4, 0x30, 0x04, 0x00, 0x05, 'a', 'b'), CODEC_E_TRUNCATED);
    ck_assert_int_eq(DECODE(4, 0x30, 0x01, 0x00), CODEC_E_TRUNCATED);
    /* packet id cut short */
    ck_assert_int_eq(DECODE(4, 0x32, 0x04, 0x00, 0x01, 'a', 0x00), CODEC_E_TRUNCATED);
    /* client id */
    ck_assert_int_eq(DECODE(0, 0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x3C,
                            0x00, 0x0A, 'c'),
                     CODEC_E_TRUNCATED);
    /* will payload missing */
    ck_assert_int_eq(DECODE(0, 0x10, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x06, 0x00, 0x3C,
                            0x00, 0x01, 'c', 0x00, 0x01, 'w'),
                     CODEC_E_TRUNCATED);
    /* password flag set, password missing */
    ck_assert_int_eq(DECODE(0, 0x10, 0x10, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0xC2, 0x00, 0x3C,
                            0x00, 0x01, 'c', 0x00, 0x01, 'u'),
                     CODEC_E_TRUNCATED);
    /* protocol name and level */
    ck_assert_int_eq(DECODE(0, 0x10, 0x03, 0x00, 0x04, 'M'), CODEC_E_TRUNCATED);
    ck_assert_int_eq(DECODE(0, 0x10, 0x06, 0x00, 0x04, 'M', 'Q', 'T', 'T'), CODEC_E_TRUNCATED);
    ck_assert_int_eq(DECODE(0, 0x10, 0x07, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04),
                     CODEC_E_TRUNCATED);
    ck_assert_int_eq(DECODE(0, 0x10, 0x09, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00),
                     CODEC_E_TRUNCATED);
    /* MQTT 5 CONNECT without its property length */
    ck_assert_int_eq(DECODE(0, 0x10, 0x0A, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x02, 0x00, 0x3C),
                     CODEC_E_TRUNCATED);
    /* SUBSCRIBE filter without its options byte */
    ck_assert_int_eq(DECODE(4, 0x82, 0x05, 0x00, 0x01, 0x00, 0x01, 'a'), CODEC_E_TRUNCATED);
    ck_assert_int_eq(DECODE(4, 0x82, 0x04, 0x00, 0x01, 0x00, 0x05), CODEC_E_TRUNCATED);
    /* acks */
    ck_assert_int_eq(DECODE(4, 0x40, 0x01, 0x00), CODEC_E_TRUNCATED);
    ck_assert_int_eq(DECODE(4, 0x20, 0x01, 0x00), CODEC_E_TRUNCATED);
}
END_TEST

/* ---- CONNECT -------------------------------------------------------------------- */

START_TEST(test_MQTT_3_1_2_3_reserved_connect_flag)
{
    ck_assert_int_eq(DECODE(0, 0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x03, 0x00, 0x3C,
                            0x00, 0x01, 'c'),
                     CODEC_E_CONNECT_FLAGS);
    ck_assert_int_eq(DECODE(0, 0x10, 0x0E, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x03, 0x00, 0x3C,
                            0x00, 0x00, 0x01, 'c'),
                     CODEC_E_CONNECT_FLAGS);
}
END_TEST

START_TEST(test_MQTT_3_1_2_13_will_qos_without_will_flag)
{
    ck_assert_int_eq(DECODE(0, 0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x0A, 0x00, 0x3C,
                            0x00, 0x01, 'c'),
                     CODEC_E_CONNECT_FLAGS);
    ck_assert_int_eq(DECODE(0, 0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x12, 0x00, 0x3C,
                            0x00, 0x01, 'c'),
                     CODEC_E_CONNECT_FLAGS);
}
END_TEST

START_TEST(test_MQTT_3_1_2_15_will_retain_without_will_flag)
{
    ck_assert_int_eq(DECODE(0, 0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x22, 0x00, 0x3C,
                            0x00, 0x01, 'c'),
                     CODEC_E_CONNECT_FLAGS);
}
END_TEST

START_TEST(test_MQTT_3_1_2_14_will_qos3)
{
    ck_assert_int_eq(DECODE(0, 0x10, 0x12, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x1E, 0x00, 0x3C,
                            0x00, 0x01, 'c', 0x00, 0x01, 'w', 0x00, 0x00),
                     CODEC_E_QOS);
}
END_TEST

START_TEST(test_will_topic_must_be_a_topic_name)
{
    ck_assert_int_eq(DECODE(0, 0x10, 0x12, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x06, 0x00, 0x3C,
                            0x00, 0x01, 'c', 0x00, 0x01, '#', 0x00, 0x00),
                     CODEC_E_TOPIC);
    ck_assert_int_eq(DECODE(0, 0x10, 0x11, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x06, 0x00, 0x3C,
                            0x00, 0x01, 'c', 0x00, 0x00, 0x00, 0x00),
                     CODEC_E_TOPIC);
}
END_TEST

START_TEST(test_MQTT_3_1_2_22_password_without_username)
{
    /* 3.1.1 and 3.1 refuse it */
    ck_assert_int_eq(DECODE(0, 0x10, 0x11, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x42, 0x00, 0x3C,
                            0x00, 0x01, 'c', 0x00, 0x02, 'p', 'w'),
                     CODEC_E_CONNECT_FLAGS);
    ck_assert_int_eq(DECODE(0, 0x10, 0x13, 0x00, 0x06, 'M', 'Q', 'I', 's', 'd', 'p', 0x03, 0x42,
                            0x00, 0x3C, 0x00, 0x01, 'c', 0x00, 0x02, 'p', 'w'),
                     CODEC_E_CONNECT_FLAGS);
    /* MQTT 5 allows it (3.1.2.9) */
    struct mqtt_packet p;
    static const uint8_t v5[] = {0x10, 0x12, 0x00, 0x04, 'M',  'Q', 'T',  'T',  0x05, 0x42,
                                 0x00, 0x3C, 0x00, 0x00, 0x01, 'c', 0x00, 0x02, 'p',  'w'};
    ck_assert_int_eq(codec_decode(v5, sizeof v5, 0, &p), CODEC_OK);
    ck_assert(p.u.connect.has_password && !p.u.connect.has_username);
    ck_assert_buf_eq(p.u.connect.password, "pw");
}
END_TEST

START_TEST(test_MQTT_3_1_2_2_unknown_level_keeps_name_and_version)
{
    struct mqtt_packet p;
    static const uint8_t level6[] = {0x10, 0x0D, 0x00, 0x04, 'M',  'Q',  'T', 'T',
                                     0x06, 0x02, 0x00, 0x3C, 0x00, 0x01, 'c'};

    ck_assert_int_eq(codec_decode(level6, sizeof level6, 0, &p), CODEC_E_PROTOCOL_NAME);
    ck_assert_uint_eq(p.type, MQTT_CONNECT);
    ck_assert_uint_eq(p.u.connect.version, 6);
    ck_assert_buf_eq(p.u.connect.protocol_name, "MQTT");
    ck_assert_uint_eq(p.u.connect.client_id.len, 0);
    ck_assert(!p.u.connect.clean);
}
END_TEST

START_TEST(test_MQTT_3_1_2_1_protocol_name_and_level_must_pair)
{
    struct mqtt_packet p;
    static const uint8_t mqisdp4[] = {0x10, 0x0F, 0x00, 0x06, 'M',  'Q',  'I',  's', 'd',
                                      'p',  0x04, 0x02, 0x00, 0x3C, 0x00, 0x01, 'c'};

    ck_assert_int_eq(codec_decode(mqisdp4, sizeof mqisdp4, 0, &p), CODEC_E_PROTOCOL_NAME);
    ck_assert_uint_eq(p.u.connect.version, 4);
    ck_assert_buf_eq(p.u.connect.protocol_name, "MQIsdp");
    ck_assert_int_eq(DECODE(0, 0x10, 0x0D, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x03, 0x02, 0x00, 0x3C,
                            0x00, 0x01, 'c'),
                     CODEC_E_PROTOCOL_NAME);
    ck_assert_int_eq(DECODE(0, 0x10, 0x0D, 0x00, 0x04, 'H', 'T', 'T', 'P', 0x04, 0x02, 0x00, 0x3C,
                            0x00, 0x01, 'c'),
                     CODEC_E_PROTOCOL_NAME);
    ck_assert_int_eq(DECODE(0, 0x10, 0x0D, 0x00, 0x04, 'm', 'q', 't', 't', 0x04, 0x02, 0x00, 0x3C,
                            0x00, 0x01, 'c'),
                     CODEC_E_PROTOCOL_NAME);
}
END_TEST

/* ---- CONNACK ----------------------------------------------------------------- */

START_TEST(test_connack_checks)
{
    ck_assert_int_eq(DECODE(4, 0x20, 0x02, 0x00, 0x06), CODEC_E_REASON);
    ck_assert_int_eq(DECODE(4, 0x20, 0x02, 0x02, 0x00), CODEC_E_CONNECT_FLAGS);
    /* [MQTT-3.2.2-4]: no session on a refused connection */
    ck_assert_int_eq(DECODE(4, 0x20, 0x02, 0x01, 0x05), CODEC_E_CONNECT_FLAGS);
    ck_assert_int_eq(DECODE(5, 0x20, 0x03, 0x01, 0x87, 0x00), CODEC_E_CONNECT_FLAGS);
    ck_assert_int_eq(DECODE(5, 0x20, 0x03, 0x00, 0x87, 0x00), CODEC_OK);
    ck_assert_int_eq(DECODE(5, 0x20, 0x03, 0x00, 0x05, 0x00), CODEC_E_REASON);
    /* MQTT 5 CONNACK always has a property length */
    ck_assert_int_eq(DECODE(5, 0x20, 0x02, 0x00, 0x00), CODEC_E_TRUNCATED);
}
END_TEST

/* ---- PUBLISH topic ---------------------------------------------------------------- */

START_TEST(test_MQTT_4_7_3_1_empty_topic_name)
{
    ck_assert_int_eq(DECODE(4, 0x30, 0x02, 0x00, 0x00), CODEC_E_TOPIC);
    ck_assert_int_eq(DECODE(5, 0x30, 0x03, 0x00, 0x00, 0x00), CODEC_E_TOPIC);
}
END_TEST

START_TEST(test_MQTT_3_3_2_2_wildcard_in_topic_name)
{
    ck_assert_int_eq(DECODE(4, 0x30, 0x05, 0x00, 0x03, 'a', '/', '+'), CODEC_E_TOPIC);
    ck_assert_int_eq(DECODE(4, 0x30, 0x03, 0x00, 0x01, '#'), CODEC_E_TOPIC);
    ck_assert_int_eq(DECODE(5, 0x30, 0x06, 0x00, 0x03, 'a', '+', 'b', 0x00), CODEC_E_TOPIC);
}
END_TEST

START_TEST(test_v5_empty_topic_with_topic_alias)
{
    struct mqtt_packet p;
    struct mqtt_prop prop;
    static const uint8_t pkt[] = {0x30, 0x07, 0x00, 0x00, 0x03, 0x23, 0x00, 0x05, 'x'};

    ck_assert_int_eq(codec_decode(pkt, sizeof pkt, MQTT_V5, &p), CODEC_OK);
    ck_assert_uint_eq(p.u.publish.topic.len, 0);
    ck_assert(codec_find_prop(&p.u.publish.props, MQTT_PROP_TOPIC_ALIAS, &prop));
    ck_assert_uint_eq(prop.u32, 5);
    ck_assert_buf_eq(p.u.publish.payload, "x");
}
END_TEST

/* ---- packet identifiers -------------------------------------------------------- */

START_TEST(test_MQTT_2_3_1_1_packet_id_0)
{
    ck_assert_int_eq(DECODE(4, 0x32, 0x05, 0x00, 0x01, 'a', 0x00, 0x00), CODEC_E_PACKET_ID);
    ck_assert_int_eq(DECODE(4, 0x34, 0x05, 0x00, 0x01, 'a', 0x00, 0x00), CODEC_E_PACKET_ID);
    ck_assert_int_eq(DECODE(5, 0x32, 0x06, 0x00, 0x01, 'a', 0x00, 0x00, 0x00), CODEC_E_PACKET_ID);
    ck_assert_int_eq(DECODE(4, 0x40, 0x02, 0x00, 0x00), CODEC_E_PACKET_ID);
    ck_assert_int_eq(DECODE(4, 0x50, 0x02, 0x00, 0x00), CODEC_E_PACKET_ID);
    ck_assert_int_eq(DECODE(4, 0x62, 0x02, 0x00, 0x00), CODEC_E_PACKET_ID);
    ck_assert_int_eq(DECODE(4, 0x70, 0x02, 0x00, 0x00), CODEC_E_PACKET_ID);
    ck_assert_int_eq(DECODE(5, 0x40, 0x02, 0x00, 0x00), CODEC_E_PACKET_ID);
    ck_assert_int_eq(DECODE(4, 0x82, 0x06, 0x00, 0x00, 0x00, 0x01, 'a', 0x01), CODEC_E_PACKET_ID);
    ck_assert_int_eq(DECODE(4, 0x90, 0x03, 0x00, 0x00, 0x00), CODEC_E_PACKET_ID);
    ck_assert_int_eq(DECODE(4, 0xA2, 0x05, 0x00, 0x00, 0x00, 0x01, 'a'), CODEC_E_PACKET_ID);
    ck_assert_int_eq(DECODE(4, 0xB0, 0x02, 0x00, 0x00), CODEC_E_PACKET_ID);
}
END_TEST

/* ---- SUBSCRIBE and UNSUBSCRIBE --------------------------------------------------- */

START_TEST(test_MQTT_3_8_3_3_subscribe_without_filter)
{
    ck_assert_int_eq(DECODE(4, 0x82, 0x02, 0x00, 0x01), CODEC_E_NO_TOPICS);
    ck_assert_int_eq(DECODE(5, 0x82, 0x03, 0x00, 0x01, 0x00), CODEC_E_NO_TOPICS);
}
END_TEST

START_TEST(test_MQTT_3_10_3_2_unsubscribe_without_filter)
{
    ck_assert_int_eq(DECODE(4, 0xA2, 0x02, 0x00, 0x01), CODEC_E_NO_TOPICS);
    ck_assert_int_eq(DECODE(5, 0xA2, 0x03, 0x00, 0x01, 0x00), CODEC_E_NO_TOPICS);
}
END_TEST

START_TEST(test_empty_topic_filter)
{
    ck_assert_int_eq(DECODE(4, 0x82, 0x05, 0x00, 0x01, 0x00, 0x00, 0x01), CODEC_E_TOPIC);
    ck_assert_int_eq(DECODE(4, 0xA2, 0x04, 0x00, 0x01, 0x00, 0x00), CODEC_E_TOPIC);
}
END_TEST

START_TEST(test_MQTT_3_8_3_4_subscribe_qos3)
{
    ck_assert_int_eq(DECODE(4, 0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x03), CODEC_E_QOS);
    ck_assert_int_eq(DECODE(5, 0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, 'a', 0x03), CODEC_E_QOS);
}
END_TEST

START_TEST(test_v311_subscribe_reserved_option_bits)
{
    for (unsigned bit = 2; bit < 8; bit++)
        ck_assert_int_eq(DECODE(4, 0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', (uint8_t)(1u << bit)),
                         CODEC_E_SUB_OPTIONS);
    ck_assert_int_eq(DECODE(3, 0x82, 0x06, 0x00, 0x01, 0x00, 0x01, 'a', 0x04), CODEC_E_SUB_OPTIONS);
}
END_TEST

START_TEST(test_MQTT_3_8_3_5_v5_subscribe_options)
{
    struct mqtt_packet p;
    struct mqtt_topic_entry e;
    size_t pos = 0;
    /* QoS 1, no local, retain as published, retain handling 2 */
    static const uint8_t ok[] = {0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, 'a', 0x2D};

    ck_assert_int_eq(codec_decode(ok, sizeof ok, MQTT_V5, &p), CODEC_OK);
    ck_assert(codec_next_topic(&p.u.subscribe, true, &pos, &e));
    ck_assert_uint_eq(e.options, 0x2D);
    ck_assert_int_eq(DECODE(5, 0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, 'a', 0x40),
                     CODEC_E_SUB_OPTIONS);
    ck_assert_int_eq(DECODE(5, 0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, 'a', 0x80),
                     CODEC_E_SUB_OPTIONS);
    ck_assert_int_eq(DECODE(5, 0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, 'a', 0x30),
                     CODEC_E_SUB_OPTIONS);
}
END_TEST

START_TEST(test_MQTT_3_8_3_4_v5_no_local_on_shared_subscription)
{
    ck_assert_int_eq(DECODE(5, 0x82, 0x10, 0x00, 0x01, 0x00, 0x00, 0x0A, '$', 's', 'h', 'a', 'r',
                            'e', '/', 'g', '/', 'a', 0x04),
                     CODEC_E_SUB_OPTIONS);
    ck_assert_int_eq(DECODE(5, 0x82, 0x10, 0x00, 0x01, 0x00, 0x00, 0x0A, '$', 's', 'h', 'a', 'r',
                            'e', '/', 'g', '/', 'a', 0x01),
                     CODEC_OK);
}
END_TEST

/* ---- MQTT 5 ------------------------------------------------------------------- */

START_TEST(test_v5_connect_round_trip_with_properties)
{
    struct mqtt_packet in = {.type = MQTT_CONNECT}, out;
    struct mqtt_connect *c = &in.u.connect;
    uint8_t pbuf[128], wbuf[128], buf[512];
    struct mqtt_prop prop;
    size_t pos = 0;
    const struct mqtt_prop props[] = {
        {.id = MQTT_PROP_SESSION_EXPIRY, .u32 = 3600},
        {.id = MQTT_PROP_RECEIVE_MAXIMUM, .u32 = 20},
        {.id = MQTT_PROP_MAXIMUM_PACKET_SIZE, .u32 = 1 << 20},
        {.id = MQTT_PROP_TOPIC_ALIAS_MAXIMUM, .u32 = 0},
        {.id = MQTT_PROP_REQUEST_PROBLEM_INFO, .u32 = 1},
        {.id = MQTT_PROP_AUTH_METHOD, .str = str("SCRAM-SHA-1")},
        {.id = MQTT_PROP_AUTH_DATA, .str = str("\x01\x02")},
        {.id = MQTT_PROP_USER_PROPERTY, .str = str("k"), .str2 = str("v")},
        {.id = MQTT_PROP_USER_PROPERTY, .str = str("k"), .str2 = str("w")},
    };
    const struct mqtt_prop will_props[] = {
        {.id = MQTT_PROP_WILL_DELAY, .u32 = 30},
        {.id = MQTT_PROP_PAYLOAD_FORMAT, .u32 = 1},
        {.id = MQTT_PROP_MESSAGE_EXPIRY, .u32 = 60},
        {.id = MQTT_PROP_CONTENT_TYPE, .str = str("text/plain")},
        {.id = MQTT_PROP_RESPONSE_TOPIC, .str = str("reply/here")},
        {.id = MQTT_PROP_CORRELATION_DATA, .str = str("\xFF\x00")},
    };

    c->clean = true;
    c->keepalive = 30;
    c->client_id = str("dev");
    c->props = props_build(pbuf, sizeof pbuf, props, sizeof props / sizeof props[0]);
    c->will = true;
    c->will_qos = 1;
    c->will_props = props_build(wbuf, sizeof wbuf, will_props, 6);
    c->will_topic = str("dev/status");
    c->will_payload = str("offline");
    c->has_username = c->has_password = true;
    c->username = str("u");
    c->password = str("p");
    round_trip(&in, MQTT_V5, buf, sizeof buf, &out);

    const struct mqtt_connect *d = &out.u.connect;
    ck_assert_uint_eq(d->version, MQTT_V5);
    ck_assert(props_same(d->props, c->props));
    ck_assert(props_same(d->will_props, c->will_props));
    ck_assert_buf_eq(d->will_topic, "dev/status");
    ck_assert_buf_eq(d->will_payload, "offline");
    ck_assert_buf_eq(d->username, "u");
    ck_assert_buf_eq(d->password, "p");

    for (size_t i = 0; i < sizeof props / sizeof props[0]; i++) {
        ck_assert(codec_next_prop(&d->props, &pos, &prop));
        ck_assert_uint_eq(prop.id, props[i].id);
        ck_assert_uint_eq(prop.u32, props[i].u32);
        ck_assert(buf_same(prop.str, props[i].str));
        ck_assert(buf_same(prop.str2, props[i].str2));
    }
    ck_assert(!codec_next_prop(&d->props, &pos, &prop));
    ck_assert(codec_find_prop(&d->will_props, MQTT_PROP_WILL_DELAY, &prop));
    ck_assert_uint_eq(prop.u32, 30);
    ck_assert(!codec_find_prop(&d->will_props, MQTT_PROP_SESSION_EXPIRY, &prop));
}
END_TEST

START_TEST(test_v5_publish_round_trip_with_properties)
{
    struct mqtt_packet in = {.type = MQTT_PUBLISH}, out;
    uint8_t pbuf[128], buf[256];
    struct mqtt_prop prop;
    size_t pos = 0;
    const struct mqtt_prop props[] = {
        {.id = MQTT_PROP_PAYLOAD_FORMAT, .u32 = 0},
        {.id = MQTT_PROP_MESSAGE_EXPIRY, .u32 = 0xFFFFFFFF},
        {.id = MQTT_PROP_TOPIC_ALIAS, .u32 = 3},
        {.id = MQTT_PROP_RESPONSE_TOPIC, .str = str("r")},
        {.id = MQTT_PROP_CORRELATION_DATA, .str = str("id-1")},
        {.id = MQTT_PROP_SUBSCRIPTION_ID, .u32 = 1},
        {.id = MQTT_PROP_SUBSCRIPTION_ID, .u32 = MQTT_MAX_REMAINING_LENGTH},
        {.id = MQTT_PROP_CONTENT_TYPE, .str = str("application/json")},
        {.id = MQTT_PROP_USER_PROPERTY, .str = str("a"), .str2 = str("")},
    };

    in.u.publish.qos = 2;
    in.u.publish.packet_id = 65535;
    in.u.publish.topic = str("sensors/1");
    in.u.publish.payload = str("{}");
    in.u.publish.props = props_build(pbuf, sizeof pbuf, props, sizeof props / sizeof props[0]);
    round_trip(&in, MQTT_V5, buf, sizeof buf, &out);
    ck_assert_uint_eq(out.u.publish.qos, 2);
    ck_assert_uint_eq(out.u.publish.packet_id, 65535);
    ck_assert_buf_eq(out.u.publish.topic, "sensors/1");
    ck_assert_buf_eq(out.u.publish.payload, "{}");
    ck_assert(props_same(out.u.publish.props, in.u.publish.props));
    for (size_t i = 0; i < sizeof props / sizeof props[0]; i++) {
        ck_assert(codec_next_prop(&out.u.publish.props, &pos, &prop));
        ck_assert_uint_eq(prop.id, props[i].id);
        ck_assert_uint_eq(prop.u32, props[i].u32);
    }
    ck_assert_uint_eq(pos, out.u.publish.props.len);
}
END_TEST

START_TEST(test_v5_connack_round_trip_with_properties)
{
    struct mqtt_packet in = {.type = MQTT_CONNACK}, out;
    uint8_t pbuf[128], buf[160];
    const struct mqtt_prop props[] = {
        {.id = MQTT_PROP_ASSIGNED_CLIENT_ID, .str = str("auto-1")},
        {.id = MQTT_PROP_SERVER_KEEP_ALIVE, .u32 = 120},
        {.id = MQTT_PROP_MAXIMUM_QOS, .u32 = 1},
        {.id = MQTT_PROP_RETAIN_AVAILABLE, .u32 = 0},
        {.id = MQTT_PROP_WILDCARD_SUB_AVAILABLE, .u32 = 1},
        {.id = MQTT_PROP_SUB_ID_AVAILABLE, .u32 = 1},
        {.id = MQTT_PROP_SHARED_SUB_AVAILABLE, .u32 = 0},
        {.id = MQTT_PROP_TOPIC_ALIAS_MAXIMUM, .u32 = 10},
        {.id = MQTT_PROP_RESPONSE_INFO, .str = str("resp/")},
        {.id = MQTT_PROP_SERVER_REFERENCE, .str = str("other:1883")},
        {.id = MQTT_PROP_REASON_STRING, .str = str("ok")},
    };

    in.u.connack.session_present = true;
    in.u.connack.props = props_build(pbuf, sizeof pbuf, props, sizeof props / sizeof props[0]);
    round_trip(&in, MQTT_V5, buf, sizeof buf, &out);
    ck_assert(out.u.connack.session_present);
    ck_assert(props_same(out.u.connack.props, in.u.connack.props));

    struct mqtt_packet refused = {.type = MQTT_CONNACK};
    refused.u.connack.code = MQTT_RC_BAD_USERNAME_OR_PASSWORD;
    ck_assert_uint_eq(round_trip(&refused, MQTT_V5, buf, sizeof buf, &out), 5);
    ck_assert_mem_eq(buf, "\x20\x03\x00\x86\x00", 5);
}
END_TEST

START_TEST(test_v5_acks_short_forms)
{
    struct mqtt_packet p;

    /* remaining length 2: success, no properties */
    ck_assert_int_eq(codec_decode(BYTES(0x40, 0x02, 0x00, 0x05), MQTT_V5, &p), CODEC_OK);
    ck_assert_uint_eq(p.u.ack.packet_id, 5);
    ck_assert_uint_eq(p.u.ack.reason, 0);
    /* remaining length 3: a reason, no properties */
    ck_assert_int_eq(codec_decode(BYTES(0x40, 0x03, 0x00, 0x05, 0x10), MQTT_V5, &p), CODEC_OK);
    ck_assert_uint_eq(p.u.ack.reason, MQTT_RC_NO_MATCHING_SUBSCRIBERS);
    ck_assert_int_eq(codec_decode(BYTES(0x40, 0x04, 0x00, 0x05, 0x10, 0x00), MQTT_V5, &p),
                     CODEC_OK);
    ck_assert_int_eq(codec_decode(BYTES(0x62, 0x03, 0x00, 0x05, 0x92), MQTT_V5, &p), CODEC_OK);
    ck_assert_uint_eq(p.u.ack.reason, MQTT_RC_PACKET_ID_NOT_FOUND);
}
END_TEST

START_TEST(test_v5_acks_round_trip)
{
    static const uint8_t types[] = {MQTT_PUBACK, MQTT_PUBREC, MQTT_PUBREL, MQTT_PUBCOMP};
    uint8_t pbuf[32], buf[64];
    const struct mqtt_prop props[] = {{.id = MQTT_PROP_REASON_STRING, .str = str("why")}};

    for (size_t i = 0; i < 4; i++) {
        struct mqtt_packet in = {.type = types[i]}, out;
        in.u.ack.packet_id = 77;
        ck_assert_uint_eq(round_trip(&in, MQTT_V5, buf, sizeof buf, &out), 4);
        in.u.ack.reason = (types[i] == MQTT_PUBREL || types[i] == MQTT_PUBCOMP) ? 0x92 : 0x97;
        ck_assert_uint_eq(round_trip(&in, MQTT_V5, buf, sizeof buf, &out), 5);
        ck_assert_uint_eq(out.u.ack.reason, in.u.ack.reason);
        in.u.ack.props = props_build(pbuf, sizeof pbuf, props, 1);
        round_trip(&in, MQTT_V5, buf, sizeof buf, &out);
        ck_assert_uint_eq(out.u.ack.reason, in.u.ack.reason);
        ck_assert(props_same(out.u.ack.props, in.u.ack.props));
    }
}
END_TEST

START_TEST(test_v5_reason_codes_per_packet)
{
    ck_assert_int_eq(DECODE(5, 0x40, 0x03, 0x00, 0x05, 0x05), CODEC_E_REASON);
    ck_assert_int_eq(DECODE(5, 0x50, 0x03, 0x00, 0x05, 0x92), CODEC_E_REASON);
    ck_assert_int_eq(DECODE(5, 0x62, 0x03, 0x00, 0x05, 0x10), CODEC_E_REASON);
    ck_assert_int_eq(DECODE(5, 0x70, 0x03, 0x00, 0x05, 0x80), CODEC_E_REASON);
    ck_assert_int_eq(DECODE(5, 0x90, 0x04, 0x00, 0x05, 0x00, 0x11), CODEC_E_REASON);
    ck_assert_int_eq(DECODE(5, 0xB0, 0x04, 0x00, 0x05, 0x00, 0x01), CODEC_E_REASON);
    ck_assert_int_eq(DECODE(5, 0xE0, 0x01, 0x03), CODEC_E_REASON);
    ck_assert_int_eq(DECODE(5, 0xF0, 0x02, 0x04, 0x00), CODEC_E_REASON);
    ck_assert_int_eq(DECODE(4, 0x90, 0x03, 0x00, 0x01, 0x03), CODEC_E_REASON);
    ck_assert_int_eq(DECODE(4, 0x90, 0x03, 0x00, 0x01, 0x80), CODEC_OK);
    /* one code per filter, and there is at least one filter */
    ck_assert_int_eq(DECODE(4, 0x90, 0x02, 0x00, 0x01), CODEC_E_TRUNCATED);
}
END_TEST

START_TEST(test_v5_subscribe_and_acks_round_trip)
{
    struct mqtt_packet in = {.type = MQTT_SUBSCRIBE}, out;
    struct mqtt_topic_entry e;
    uint8_t pbuf[32], entries[32], buf[96];
    size_t pos = 0;
    const struct mqtt_prop props[] = {
        {.id = MQTT_PROP_SUBSCRIPTION_ID, .u32 = 16384},
        {.id = MQTT_PROP_USER_PROPERTY, .str = str("x"), .str2 = str("y")},
    };
    static const uint8_t codes[] = {0x01, 0xA2};
    static const uint8_t unsub_codes[] = {0x00, 0x11};

    codec_put_topic(entries, sizeof entries, &pos, "a/#", 3, true, 0x1E);
    codec_put_topic(entries, sizeof entries, &pos, "b", 1, true, 0x00);
    in.u.subscribe.packet_id = 3;
    in.u.subscribe.entries = (struct mqtt_buf){entries, pos};
    in.u.subscribe.props = props_build(pbuf, sizeof pbuf, props, 2);
    round_trip(&in, MQTT_V5, buf, sizeof buf, &out);
    ck_assert_uint_eq(out.u.subscribe.count, 2);
    ck_assert(props_same(out.u.subscribe.props, in.u.subscribe.props));
    pos = 0;
    ck_assert(codec_next_topic(&out.u.subscribe, true, &pos, &e));
    ck_assert_uint_eq(e.options, 0x1E);

    in = (struct mqtt_packet){.type = MQTT_UNSUBSCRIBE};
    pos = 0;
    codec_put_topic(entries, sizeof entries, &pos, "a/#", 3, false, 0);
    in.u.subscribe.packet_id = 4;
    in.u.subscribe.entries = (struct mqtt_buf){entries, pos};
    round_trip(&in, MQTT_V5, buf, sizeof buf, &out);
    ck_assert_uint_eq(out.u.subscribe.count, 1);

    in = (struct mqtt_packet){.type = MQTT_SUBACK};
    in.u.suback.packet_id = 3;
    in.u.suback.codes = codes;
    in.u.suback.count = 2;
    ck_assert_uint_eq(round_trip(&in, MQTT_V5, buf, sizeof buf, &out), 7);
    ck_assert_mem_eq(out.u.suback.codes, codes, 2);

    in = (struct mqtt_packet){.type = MQTT_UNSUBACK};
    in.u.suback.packet_id = 4;
    in.u.suback.codes = unsub_codes;
    in.u.suback.count = 2;
    ck_assert_uint_eq(round_trip(&in, MQTT_V5, buf, sizeof buf, &out), 7);
    ck_assert_uint_eq(out.u.suback.count, 2);
    ck_assert_mem_eq(out.u.suback.codes, unsub_codes, 2);
}
END_TEST

START_TEST(test_v5_disconnect_and_auth)
{
    struct mqtt_packet p, in = {.type = MQTT_DISCONNECT}, out;
    uint8_t pbuf[64], buf[96];
    const struct mqtt_prop dprops[] = {
        {.id = MQTT_PROP_SESSION_EXPIRY, .u32 = 0},
        {.id = MQTT_PROP_REASON_STRING, .str = str("bye")},
    };
    const struct mqtt_prop aprops[] = {
        {.id = MQTT_PROP_AUTH_METHOD, .str = str("m")},
        {.id = MQTT_PROP_AUTH_DATA, .str = str("d")},
    };

    ck_assert_int_eq(codec_decode(BYTES(0xE0, 0x00), MQTT_V5, &p), CODEC_OK);
    ck_assert_uint_eq(p.u.disconnect.reason, 0);
    ck_assert_int_eq(codec_decode(BYTES(0xE0, 0x01, 0x04), MQTT_V5, &p), CODEC_OK);
    ck_assert_uint_eq(p.u.disconnect.reason, MQTT_RC_DISCONNECT_WITH_WILL);
    ck_assert_int_eq(codec_decode(BYTES(0xE0, 0x02, 0x8E, 0x00), MQTT_V5, &p), CODEC_OK);

    ck_assert_uint_eq(round_trip(&in, MQTT_V5, buf, sizeof buf, &out), 2);
    in.u.disconnect.reason = MQTT_RC_SESSION_TAKEN_OVER;
    ck_assert_uint_eq(round_trip(&in, MQTT_V5, buf, sizeof buf, &out), 3);
    ck_assert_uint_eq(out.u.disconnect.reason, MQTT_RC_SESSION_TAKEN_OVER);
    in.u.disconnect.props = props_build(pbuf, sizeof pbuf, dprops, 2);
    round_trip(&in, MQTT_V5, buf, sizeof buf, &out);
    ck_assert(props_same(out.u.disconnect.props, in.u.disconnect.props));

    /* AUTH: both or neither of reason and property length */
    ck_assert_int_eq(codec_decode(BYTES(0xF0, 0x00), MQTT_V5, &p), CODEC_OK);
    ck_assert_int_eq(codec_decode(BYTES(0xF0, 0x01, 0x18), MQTT_V5, &p), CODEC_E_TRUNCATED);
    in = (struct mqtt_packet){.type = MQTT_AUTH};
    ck_assert_uint_eq(round_trip(&in, MQTT_V5, buf, sizeof buf, &out), 2);
    in.u.disconnect.reason = MQTT_RC_CONTINUE_AUTH;
    ck_assert_uint_eq(round_trip(&in, MQTT_V5, buf, sizeof buf, &out), 4);
    in.u.disconnect.props = props_build(pbuf, sizeof pbuf, aprops, 2);
    round_trip(&in, MQTT_V5, buf, sizeof buf, &out);
    ck_assert_uint_eq(out.u.disconnect.reason, MQTT_RC_CONTINUE_AUTH);
    ck_assert(props_same(out.u.disconnect.props, in.u.disconnect.props));
    ck_assert_int_eq(codec_encode(&in, MQTT_V311, buf, sizeof buf), CODEC_E_PACKET_TYPE);
}
END_TEST

START_TEST(test_v5_duplicate_property)
{
    ck_assert_int_eq(PUBLISH5_PROPS(0x02, 0, 0, 0, 10, 0x02, 0, 0, 0, 11), CODEC_E_PROPERTY);
    ck_assert_int_eq(PUBLISH5_PROPS(0x01, 0, 0x01, 1), CODEC_E_PROPERTY);
    ck_assert_int_eq(CONNECT5_PROPS(0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 1), CODEC_E_PROPERTY);
    ck_assert_int_eq(CONNECT5_PROPS(0x15, 0, 1, 'm', 0x15, 0, 1, 'm'), CODEC_E_PROPERTY);
}
END_TEST

START_TEST(test_v5_user_property_may_repeat)
{
    ck_assert_int_eq(PUBLISH5_PROPS(0x26, 0, 1, 'k', 0, 1, 'v', 0x26, 0, 1, 'k', 0, 1, 'v'),
                     CODEC_OK);
    ck_assert_int_eq(CONNECT5_PROPS(0x26, 0, 0, 0, 0, 0x26, 0, 0, 0, 0), CODEC_OK);
}
END_TEST

START_TEST(test_v5_subscription_id_repeats_only_in_publish)
{
    ck_assert_int_eq(PUBLISH5_PROPS(0x0B, 0x01, 0x0B, 0x02), CODEC_OK);
    ck_assert_int_eq(SUBSCRIBE5_PROPS(0x0B, 0x01), CODEC_OK);
    ck_assert_int_eq(SUBSCRIBE5_PROPS(0x0B, 0x01, 0x0B, 0x02), CODEC_E_PROPERTY);
}
END_TEST

START_TEST(test_v5_property_in_wrong_packet)
{
    ck_assert_int_eq(CONNECT5_PROPS(0x23, 0, 1), CODEC_E_PROPERTY);       /* topic alias */
    ck_assert_int_eq(CONNECT5_PROPS(0x18, 0, 0, 0, 1), CODEC_E_PROPERTY); /* will delay */
    ck_assert_int_eq(CONNECT5_PROPS(0x24, 1), CODEC_E_PROPERTY);          /* maximum QoS */
    ck_assert_int_eq(PUBLISH5_PROPS(0x11, 0, 0, 0, 1), CODEC_E_PROPERTY); /* session expiry */
    ck_assert_int_eq(PUBLISH5_PROPS(0x1F, 0, 1, 'r'), CODEC_E_PROPERTY);  /* reason string */
    ck_assert_int_eq(SUBSCRIBE5_PROPS(0x1F, 0, 1, 'r'), CODEC_E_PROPERTY);
    ck_assert_int_eq(DECODE(5, 0x40, 0x07, 0x00, 0x05, 0x00, 0x03, 0x23, 0x00, 0x01),
                     CODEC_E_PROPERTY);
    ck_assert_int_eq(DECODE(5, 0xA2, 0x08, 0x00, 0x01, 0x02, 0x0B, 0x01, 0x00, 0x01, 'a'),
                     CODEC_E_PROPERTY);
    ck_assert_int_eq(DECODE(5, 0xE0, 0x04, 0x00, 0x02, 0x21, 0x00), CODEC_E_PROPERTY);
    ck_assert_int_eq(DECODE(5, 0xF0, 0x04, 0x00, 0x02, 0x0B, 0x01), CODEC_E_PROPERTY);
    ck_assert_int_eq(DECODE(5, 0x90, 0x06, 0x00, 0x01, 0x02, 0x23, 0x00, 0x00), CODEC_E_PROPERTY);
    ck_assert_int_eq(DECODE(5, 0xB0, 0x06, 0x00, 0x01, 0x02, 0x0B, 0x01, 0x00), CODEC_E_PROPERTY);
    /* session expiry is a CONNECT property, not a will property */
    ck_assert_int_eq(DECODE(5, 0x10, 0x19, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x06, 0x00, 0x3C,
                            0x00, 0x00, 0x01, 'c', 0x05, 0x11, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01,
                            'w', 0x00, 0x00),
                     CODEC_E_PROPERTY);
    ck_assert_int_eq(DECODE(5, 0x10, 0x19, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x06, 0x00, 0x3C,
                            0x00, 0x00, 0x01, 'c', 0x05, 0x18, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01,
                            'w', 0x00, 0x00),
                     CODEC_OK);
}
END_TEST

START_TEST(test_v5_unknown_property)
{
    ck_assert_int_eq(PUBLISH5_PROPS(0x05, 0x00), CODEC_E_PROPERTY);
    ck_assert_int_eq(PUBLISH5_PROPS(0x00, 0x00), CODEC_E_PROPERTY);
    ck_assert_int_eq(PUBLISH5_PROPS(0x2B, 0x00), CODEC_E_PROPERTY);
    ck_assert_int_eq(PUBLISH5_PROPS(0x80, 0x01), CODEC_E_PROPERTY);
}
END_TEST

START_TEST(test_v5_bad_property_lengths)
{
    /* value cut short by the end of the block */
    ck_assert_int_eq(PUBLISH5_PROPS(0x02, 0, 0), CODEC_E_PROPERTY);
    ck_assert_int_eq(PUBLISH5_PROPS(0x23, 0), CODEC_E_PROPERTY);
    ck_assert_int_eq(PUBLISH5_PROPS(0x01), CODEC_E_PROPERTY);
    ck_assert_int_eq(PUBLISH5_PROPS(0x03, 0, 5, 'a'), CODEC_E_PROPERTY);
    ck_assert_int_eq(PUBLISH5_PROPS(0x26, 0, 1, 'k', 0, 2, 'v'), CODEC_E_PROPERTY);
    ck_assert_int_eq(PUBLISH5_PROPS(0x0B, 0x80), CODEC_E_PROPERTY);
    ck_assert_int_eq(PUBLISH5_PROPS(0x0B, 0x80, 0x80, 0x80, 0x80, 0x01), CODEC_E_PROPERTY);
    /* property length longer than the packet */
    ck_assert_int_eq(DECODE(5, 0x30, 0x05, 0x00, 0x01, 'a', 0x0A, 0x01), CODEC_E_TRUNCATED);
    ck_assert_int_eq(DECODE(5, 0x30, 0x04, 0x00, 0x01, 'a', 0x80), CODEC_E_TRUNCATED);
    ck_assert_int_eq(DECODE(5, 0x30, 0x03, 0x00, 0x01, 'a'), CODEC_E_TRUNCATED);
    /* property length that is not a 4-byte variable integer */
    ck_assert_int_eq(DECODE(5, 0x30, 0x08, 0x00, 0x01, 'a', 0x80, 0x80, 0x80, 0x80, 0x01),
                     CODEC_E_PROPERTY);
}
END_TEST

START_TEST(test_v5_property_values)
{
    ck_assert_int_eq(PUBLISH5_PROPS(0x0B, 0x00), CODEC_E_PROPERTY); /* subscription id 0 */
    ck_assert_int_eq(SUBSCRIBE5_PROPS(0x0B, 0x00), CODEC_E_PROPERTY);
    ck_assert_int_eq(PUBLISH5_PROPS(0x23, 0, 0), CODEC_E_PROPERTY);       /* topic alias 0 */
    ck_assert_int_eq(PUBLISH5_PROPS(0x01, 2), CODEC_E_PROPERTY);          /* payload format */
    ck_assert_int_eq(CONNECT5_PROPS(0x21, 0, 0), CODEC_E_PROPERTY);       /* receive maximum */
    ck_assert_int_eq(CONNECT5_PROPS(0x27, 0, 0, 0, 0), CODEC_E_PROPERTY); /* maximum packet */
    ck_assert_int_eq(CONNECT5_PROPS(0x17, 2), CODEC_E_PROPERTY);          /* request problem */
    ck_assert_int_eq(CONNECT5_PROPS(0x19, 2), CODEC_E_PROPERTY);          /* request response */
    ck_assert_int_eq(CONNECT5_PROPS(0x22, 0, 0), CODEC_OK);               /* alias maximum 0 */
    ck_assert_int_eq(CONNECT5_PROPS(0x17, 0, 0x19, 1), CODEC_OK);
    ck_assert_int_eq(DECODE(5, 0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x02), CODEC_E_PROPERTY);
    ck_assert_int_eq(DECODE(5, 0x20, 0x05, 0x00, 0x00, 0x02, 0x25, 0x02), CODEC_E_PROPERTY);
    ck_assert_int_eq(DECODE(5, 0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x01), CODEC_OK);
    /* the Response Topic is a topic name */
    ck_assert_int_eq(PUBLISH5_PROPS(0x08, 0, 1, '#'), CODEC_E_PROPERTY);
    ck_assert_int_eq(PUBLISH5_PROPS(0x08, 0, 0), CODEC_E_PROPERTY);
    /* authentication data needs a method */
    ck_assert_int_eq(CONNECT5_PROPS(0x16, 0, 1, 'd'), CODEC_E_PROPERTY);
    ck_assert_int_eq(CONNECT5_PROPS(0x15, 0, 1, 'm', 0x16, 0, 1, 'd'), CODEC_OK);
}
END_TEST

START_TEST(test_v5_string_properties_are_utf8)
{
    ck_assert_int_eq(PUBLISH5_PROPS(0x03, 0, 1, 0xFF), CODEC_E_UTF8);
    ck_assert_int_eq(PUBLISH5_PROPS(0x03, 0, 1, 0x00), CODEC_E_NUL);
    ck_assert_int_eq(PUBLISH5_PROPS(0x26, 0, 1, 'k', 0, 3, 0xED, 0xA0, 0x80), CODEC_E_UTF8);
    ck_assert_int_eq(PUBLISH5_PROPS(0x26, 0, 1, 0x00, 0, 1, 'v'), CODEC_E_NUL);
    /* correlation data is binary */
    ck_assert_int_eq(PUBLISH5_PROPS(0x09, 0, 2, 0x00, 0xFF), CODEC_OK);
}
END_TEST

/* ---- encoding --------------------------------------------------------------------- */

START_TEST(test_encode_cap_too_small_writes_nothing)
{
    struct mqtt_packet in = {.type = MQTT_PUBLISH};
    uint8_t buf[32];
    long need;

    in.u.publish.qos = 1;
    in.u.publish.packet_id = 1;
    in.u.publish.topic = str("topic");
    in.u.publish.payload = str("payload");
    need = codec_encode(&in, MQTT_V311, NULL, 0);
    ck_assert_int_eq(need, 2 + 7 + 2 + 7);
    memset(buf, 0xAA, sizeof buf);
    ck_assert_int_eq(codec_encode(&in, MQTT_V311, buf, (size_t)need - 1), need);
    for (size_t i = 0; i < sizeof buf; i++)
        ck_assert_uint_eq(buf[i], 0xAA);
    ck_assert_int_eq(codec_encode(&in, MQTT_V311, buf, (size_t)need), need);
    ck_assert_uint_eq(buf[need], 0xAA);
}
END_TEST

START_TEST(test_encode_errors)
{
    static const uint8_t big[1];
    struct mqtt_packet in = {.type = MQTT_PUBLISH};

    in.u.publish.topic = str("a");
    in.u.publish.qos = 3;
    ck_assert_int_eq(codec_encode(&in, MQTT_V311, NULL, 0), CODEC_E_QOS);
    in.u.publish.qos = 0;
    in.u.publish.topic = (struct mqtt_buf){big, 65536};
    ck_assert_int_eq(codec_encode(&in, MQTT_V311, NULL, 0), CODEC_E_NOSPACE);
    in.u.publish.topic = (struct mqtt_buf){big, 65535};
    ck_assert_int_eq(codec_encode(&in, MQTT_V311, NULL, 0), 1 + 3 + 2 + 65535);

    in = (struct mqtt_packet){.type = MQTT_CONNECT};
    in.u.connect.will = true;
    in.u.connect.will_qos = 3;
    ck_assert_int_eq(codec_encode(&in, MQTT_V311, NULL, 0), CODEC_E_QOS);
    in.u.connect.will_qos = 0;
    in.u.connect.client_id = (struct mqtt_buf){big, 70000};
    ck_assert_int_eq(codec_encode(&in, MQTT_V311, NULL, 0), CODEC_E_NOSPACE);

    in = (struct mqtt_packet){.type = MQTT_DISCONNECT};
    in.u.disconnect.props = (struct mqtt_props){big, MQTT_MAX_REMAINING_LENGTH + 1};
    ck_assert_int_eq(codec_encode(&in, MQTT_V5, NULL, 0), CODEC_E_NOSPACE);
    ck_assert_int_eq(codec_encode(&in, MQTT_V311, NULL, 0), 2); /* 3.1.1 has no properties */

    in = (struct mqtt_packet){.type = 0};
    ck_assert_int_eq(codec_encode(&in, MQTT_V311, NULL, 0), CODEC_E_PACKET_TYPE);
    in.type = 16;
    ck_assert_int_eq(codec_encode(&in, MQTT_V5, NULL, 0), CODEC_E_PACKET_TYPE);
}
END_TEST

START_TEST(test_encode_connect_unknown_level)
{
    struct mqtt_packet in = {.type = MQTT_CONNECT}, out;
    uint8_t buf[32];
    long n;

    in.u.connect.client_id = str("c");
    n = codec_encode(&in, 6, buf, sizeof buf);
    ck_assert_int_eq(n, 15);
    ck_assert_int_eq(codec_decode(buf, (size_t)n, 0, &out), CODEC_E_PROTOCOL_NAME);
    ck_assert_uint_eq(out.u.connect.version, 6);
}
END_TEST

START_TEST(test_put_topic_sizes_first)
{
    uint8_t buf[16];
    size_t pos = 0;

    ck_assert_uint_eq(codec_put_topic(NULL, 0, &pos, "a/b", 3, true, 1), 6);
    ck_assert_uint_eq(codec_put_topic(NULL, 0, &pos, "c", 1, false, 0), 3);
    ck_assert_uint_eq(pos, 9);
    pos = 0;
    codec_put_topic(buf, sizeof buf, &pos, "a/b", 3, true, 1);
    ck_assert_uint_eq(pos, 6);
    ck_assert_mem_eq(buf,
                     "\x00\x03"
                     "a/b\x01",
                     6);
    pos = 14;
    ck_assert_uint_eq(codec_put_topic(buf, sizeof buf, &pos, "xyz", 3, false, 0), 5);
    ck_assert_uint_eq(pos, 19); /* did not fit: nothing written, size still counted */
    pos = 0;
    ck_assert_uint_eq(codec_put_topic(NULL, 0, &pos, "", 65536, false, 0), 0);
    ck_assert_uint_eq(pos, 0);
}
END_TEST

START_TEST(test_put_prop_every_type)
{
    uint8_t buf[64];
    size_t pos = 0, rpos = 0;
    struct mqtt_prop got;
    const struct mqtt_prop props[] = {
        {.id = MQTT_PROP_PAYLOAD_FORMAT, .u32 = 1},
        {.id = MQTT_PROP_TOPIC_ALIAS, .u32 = 0xABCD},
        {.id = MQTT_PROP_MESSAGE_EXPIRY, .u32 = 0x01020304},
        {.id = MQTT_PROP_SUBSCRIPTION_ID, .u32 = 2097152},
        {.id = MQTT_PROP_CONTENT_TYPE, .str = str("t")},
        {.id = MQTT_PROP_CORRELATION_DATA, .str = str("")},
        {.id = MQTT_PROP_USER_PROPERTY, .str = str("n"), .str2 = str("v")},
    };
    static const uint8_t want[] = {0x01, 0x01, 0x23, 0xAB, 0xCD, 0x02, 0x01, 0x02, 0x03, 0x04,
                                   0x0B, 0x80, 0x80, 0x80, 0x01, 0x03, 0x00, 0x01, 't',  0x09,
                                   0x00, 0x00, 0x26, 0x00, 0x01, 'n',  0x00, 0x01, 'v'};

    for (size_t i = 0; i < 7; i++)
        codec_put_prop(buf, sizeof buf, &pos, &props[i]);
    ck_assert_uint_eq(pos, sizeof want);
    ck_assert_mem_eq(buf, want, sizeof want);
    struct mqtt_props block = {buf, pos};
    for (size_t i = 0; i < 7; i++) {
        ck_assert(codec_next_prop(&block, &rpos, &got));
        ck_assert_uint_eq(got.id, props[i].id);
        ck_assert_uint_eq(got.u32, props[i].u32);
        ck_assert(buf_same(got.str, props[i].str));
        ck_assert(buf_same(got.str2, props[i].str2));
    }
    ck_assert(!codec_next_prop(&block, &rpos, &got));
}
END_TEST

START_TEST(test_put_prop_refuses_what_it_cannot_encode)
{
    size_t pos = 0;
    struct mqtt_prop p = {.id = 0x05};

    ck_assert_uint_eq(codec_put_prop(NULL, 0, &pos, &p), 0);
    p = (struct mqtt_prop){.id = MQTT_PROP_MAXIMUM_QOS, .u32 = 256};
    ck_assert_uint_eq(codec_put_prop(NULL, 0, &pos, &p), 0);
    p = (struct mqtt_prop){.id = MQTT_PROP_RECEIVE_MAXIMUM, .u32 = 65536};
    ck_assert_uint_eq(codec_put_prop(NULL, 0, &pos, &p), 0);
    p = (struct mqtt_prop){.id = MQTT_PROP_SUBSCRIPTION_ID};
    p.u32 = MQTT_MAX_REMAINING_LENGTH + 1;
    ck_assert_uint_eq(codec_put_prop(NULL, 0, &pos, &p), 0);
    p = (struct mqtt_prop){.id = MQTT_PROP_REASON_STRING, .str = {(const uint8_t *)"", 65536}};
    ck_assert_uint_eq(codec_put_prop(NULL, 0, &pos, &p), 0);
    p = (struct mqtt_prop){.id = MQTT_PROP_USER_PROPERTY};
    p.str2 = (struct mqtt_buf){(const uint8_t *)"", 65536};
    ck_assert_uint_eq(codec_put_prop(NULL, 0, &pos, &p), 0);
    ck_assert_uint_eq(pos, 0);
    p = (struct mqtt_prop){.id = MQTT_PROP_SESSION_EXPIRY, .u32 = 1};
    ck_assert_uint_eq(codec_put_prop(NULL, 0, &pos, &p), 5);
    ck_assert_uint_eq(pos, 5);
}
END_TEST

START_TEST(test_next_topic_stops_on_a_bad_payload)
{
    static const uint8_t entries[] = {0x00, 0x01, 'a', 0x01, 0x00, 0x01, 'b'};
    struct mqtt_subscribe s = {.entries = {entries, sizeof entries}, .count = 2};
    struct mqtt_topic_entry e;
    size_t pos = 0;

    ck_assert(codec_next_topic(&s, true, &pos, &e));
    ck_assert(!codec_next_topic(&s, true, &pos, &e)); /* no options byte for "b" */
    ck_assert_uint_eq(pos, 4);
    s.entries.len = 5;
    ck_assert(!codec_next_topic(&s, false, &pos, &e)); /* length runs past the end */
}
END_TEST

START_TEST(test_next_prop_stops_on_a_bad_block)
{
    static const uint8_t bad[] = {0x02, 0x00, 0x00};
    struct mqtt_props block = {bad, sizeof bad};
    struct mqtt_prop got;
    size_t pos = 0;

    ck_assert(!codec_next_prop(&block, &pos, &got));
    ck_assert(!codec_find_prop(&block, MQTT_PROP_MESSAGE_EXPIRY, &got));
}
END_TEST

START_TEST(test_strerror_every_code)
{
    for (int err = CODEC_OK; err >= CODEC_E_NOSPACE; err--) {
        const char *s = codec_strerror(err);
        ck_assert_ptr_nonnull(s);
        ck_assert_str_ne(s, "unknown codec error");
        for (int other = CODEC_OK; other > err; other--)
            ck_assert_str_ne(s, codec_strerror(other));
    }
    ck_assert_str_eq(codec_strerror(-100), "unknown codec error");
    ck_assert_str_eq(codec_strerror(CODEC_E_REMAINING_LENGTH),
                     "remaining length longer than 4 bytes");
    ck_assert_str_eq(codec_strerror(CODEC_E_UTF8), "invalid UTF-8 in a string");
    ck_assert_str_eq(codec_strerror(CODEC_E_NUL), "U+0000 in a string");
    ck_assert_str_eq(codec_strerror(CODEC_E_PACKET_ID), "packet identifier 0");
    ck_assert_str_eq(codec_strerror(CODEC_E_QOS), "QoS 3");
    ck_assert_str_eq(codec_strerror(CODEC_E_NO_TOPICS), "SUBSCRIBE without a topic filter");
}
END_TEST

static Suite *codec_suite(void)
{
    Suite *s = suite_create("codec");
    TCase *tc;

    tc = tcase_create("frame");
    tcase_add_test(tc, test_frame_incomplete);
    tcase_add_test(tc, test_frame_complete_before_body_arrives);
    tcase_add_test(tc, test_remaining_length_4_bytes_max);
    tcase_add_test(tc, test_remaining_length_past_the_data);
    tcase_add_test(tc, test_bytes_after_the_packet);
    tcase_add_test(tc, test_remaining_length_boundaries);
    tcase_add_test(tc, test_encode_largest_remaining_length);
    tcase_add_test(tc, test_MQTT_2_2_2_1_reserved_flags);
    tcase_add_test(tc, test_packet_type_0_and_auth_before_v5);
    suite_add_tcase(s, tc);

    tc = tcase_create("v311");
    tcase_add_test(tc, test_v311_connect_round_trip);
    tcase_add_test(tc, test_v311_connect_exact_bytes);
    tcase_add_test(tc, test_v311_connect_empty_client_id_is_for_the_broker);
    tcase_add_test(tc, test_v31_connect_mqisdp);
    tcase_add_test(tc, test_v311_connack_round_trip);
    tcase_add_test(tc, test_v311_publish_qos0_1_2_round_trip);
    tcase_add_test(tc, test_publish_qos0_encode_ignores_packet_id_and_dup);
    tcase_add_test(tc, test_v311_publish_empty_payload);
    tcase_add_test(tc, test_v311_acks_round_trip);
    tcase_add_test(tc, test_v311_subscribe_round_trip);
    tcase_add_test(tc, test_v311_suback_round_trip);
    tcase_add_test(tc, test_v311_unsubscribe_round_trip);
    tcase_add_test(tc, test_v311_unsuback_is_just_the_packet_id);
    tcase_add_test(tc, test_v311_ping_and_disconnect_round_trip);
    tcase_add_test(tc, test_version_0_decodes_with_v311_rules);
    suite_add_tcase(s, tc);

    tc = tcase_create("malformed");
    tcase_add_test(tc, test_MQTT_3_3_1_4_publish_qos3);
    tcase_add_test(tc, test_MQTT_3_3_1_2_dup_on_qos0);
    tcase_add_test(tc, test_MQTT_1_5_3_1_utf8_well_formed);
    tcase_add_test(tc, test_MQTT_1_5_3_1_rejects_overlong_and_broken_utf8);
    tcase_add_test(tc, test_MQTT_1_5_3_1_rejects_surrogates);
    tcase_add_test(tc, test_rejects_code_points_above_10FFFF);
    tcase_add_test(tc, test_MQTT_1_5_3_2_rejects_U0000);
    tcase_add_test(tc, test_invalid_utf8_in_every_string_field);
    tcase_add_test(tc, test_password_and_payload_are_binary);
    tcase_add_test(tc, test_strings_past_the_packet);
    tcase_add_test(tc, test_MQTT_3_1_2_3_reserved_connect_flag);
    tcase_add_test(tc, test_MQTT_3_1_2_13_will_qos_without_will_flag);
    tcase_add_test(tc, test_MQTT_3_1_2_15_will_retain_without_will_flag);
    tcase_add_test(tc, test_MQTT_3_1_2_14_will_qos3);
    tcase_add_test(tc, test_will_topic_must_be_a_topic_name);
    tcase_add_test(tc, test_MQTT_3_1_2_22_password_without_username);
    tcase_add_test(tc, test_MQTT_3_1_2_2_unknown_level_keeps_name_and_version);
    tcase_add_test(tc, test_MQTT_3_1_2_1_protocol_name_and_level_must_pair);
    tcase_add_test(tc, test_connack_checks);
    tcase_add_test(tc, test_MQTT_4_7_3_1_empty_topic_name);
    tcase_add_test(tc, test_MQTT_3_3_2_2_wildcard_in_topic_name);
    tcase_add_test(tc, test_MQTT_2_3_1_1_packet_id_0);
    tcase_add_test(tc, test_MQTT_3_8_3_3_subscribe_without_filter);
    tcase_add_test(tc, test_MQTT_3_10_3_2_unsubscribe_without_filter);
    tcase_add_test(tc, test_empty_topic_filter);
    tcase_add_test(tc, test_MQTT_3_8_3_4_subscribe_qos3);
    tcase_add_test(tc, test_v311_subscribe_reserved_option_bits);
    suite_add_tcase(s, tc);

    tc = tcase_create("v5");
    tcase_add_test(tc, test_v5_empty_topic_with_topic_alias);
    tcase_add_test(tc, test_MQTT_3_8_3_5_v5_subscribe_options);
    tcase_add_test(tc, test_MQTT_3_8_3_4_v5_no_local_on_shared_subscription);
    tcase_add_test(tc, test_v5_connect_round_trip_with_properties);
    tcase_add_test(tc, test_v5_publish_round_trip_with_properties);
    tcase_add_test(tc, test_v5_connack_round_trip_with_properties);
    tcase_add_test(tc, test_v5_acks_short_forms);
    tcase_add_test(tc, test_v5_acks_round_trip);
    tcase_add_test(tc, test_v5_reason_codes_per_packet);
    tcase_add_test(tc, test_v5_subscribe_and_acks_round_trip);
    tcase_add_test(tc, test_v5_disconnect_and_auth);
    tcase_add_test(tc, test_v5_duplicate_property);
    tcase_add_test(tc, test_v5_user_property_may_repeat);
    tcase_add_test(tc, test_v5_subscription_id_repeats_only_in_publish);
    tcase_add_test(tc, test_v5_property_in_wrong_packet);
    tcase_add_test(tc, test_v5_unknown_property);
    tcase_add_test(tc, test_v5_bad_property_lengths);
    tcase_add_test(tc, test_v5_property_values);
    tcase_add_test(tc, test_v5_string_properties_are_utf8);
    suite_add_tcase(s, tc);

    tc = tcase_create("encode");
    tcase_add_test(tc, test_encode_cap_too_small_writes_nothing);
    tcase_add_test(tc, test_encode_errors);
    tcase_add_test(tc, test_encode_connect_unknown_level);
    tcase_add_test(tc, test_put_topic_sizes_first);
    tcase_add_test(tc, test_put_prop_every_type);
    tcase_add_test(tc, test_put_prop_refuses_what_it_cannot_encode);
    tcase_add_test(tc, test_next_topic_stops_on_a_bad_payload);
    tcase_add_test(tc, test_next_prop_stops_on_a_bad_block);
    tcase_add_test(tc, test_strerror_every_code);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(codec_suite());
    int failed;

    srunner_set_tap(sr, "-"); /* one TAP line per test on stdout, for make check */
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
