/*
 * Unit tests for the codec: every packet type both ways, and every check a
 * receiver must make, named after the specification clause where there is one.
 * Malformed packets are written out byte by byte, so the decoder is never
 * tested only against the encoder's idea of the format.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "check_tap.h"
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

/* [MQTT-3.8.3-4] is a Protocol Error the broker answers; the codec lets it through. */
START_TEST(test_MQTT_3_8_3_4_v5_no_local_on_shared_subscription)
{
    ck_assert_int_eq(DECODE(5, 0x82, 0x10, 0x00, 0x01, 0x00, 0x00, 0x0A, '$', 's', 'h', 'a', 'r',
                            'e', '/', 'g', '/', 'a', 0x04),
                     CODEC_OK);
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
    /* written as given, but an AUTH without its method is refused (3.15.2.2.2) */
    ck_assert_int_eq(codec_encode(&in, MQTT_V5, buf, sizeof buf), 4);
    ck_assert_mem_eq(buf, "\xF0\x02\x18\x00", 4);
    ck_assert_int_eq(codec_decode(buf, 4, MQTT_V5, &out), CODEC_E_PROPERTY_PROTOCOL);
    in.u.disconnect.props = props_build(pbuf, sizeof pbuf, aprops, 2);
    round_trip(&in, MQTT_V5, buf, sizeof buf, &out);
    ck_assert_uint_eq(out.u.disconnect.reason, MQTT_RC_CONTINUE_AUTH);
    ck_assert(props_same(out.u.disconnect.props, in.u.disconnect.props));
    ck_assert_int_eq(codec_encode(&in, MQTT_V311, buf, sizeof buf), CODEC_E_PACKET_TYPE);
}
END_TEST

START_TEST(test_v5_duplicate_property)
{
    ck_assert_int_eq(PUBLISH5_PROPS(0x02, 0, 0, 0, 10, 0x02, 0, 0, 0, 11),
                     CODEC_E_PROPERTY_PROTOCOL);
    ck_assert_int_eq(PUBLISH5_PROPS(0x01, 0, 0x01, 1), CODEC_E_PROPERTY_PROTOCOL);
    ck_assert_int_eq(CONNECT5_PROPS(0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 1), CODEC_E_PROPERTY_PROTOCOL);
    ck_assert_int_eq(CONNECT5_PROPS(0x15, 0, 1, 'm', 0x15, 0, 1, 'm'), CODEC_E_PROPERTY_PROTOCOL);
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
    ck_assert_int_eq(SUBSCRIBE5_PROPS(0x0B, 0x01, 0x0B, 0x02), CODEC_E_PROPERTY_PROTOCOL);
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
    /* values the specification calls Protocol Errors */
    ck_assert_int_eq(PUBLISH5_PROPS(0x0B, 0x00), CODEC_E_PROPERTY_PROTOCOL); /* sub id 0 */
    ck_assert_int_eq(SUBSCRIBE5_PROPS(0x0B, 0x00), CODEC_E_PROPERTY_PROTOCOL);
    ck_assert_int_eq(PUBLISH5_PROPS(0x01, 2), CODEC_E_PROPERTY_PROTOCOL);    /* payload format */
    ck_assert_int_eq(CONNECT5_PROPS(0x21, 0, 0), CODEC_E_PROPERTY_PROTOCOL); /* receive max */
    ck_assert_int_eq(CONNECT5_PROPS(0x27, 0, 0, 0, 0), CODEC_E_PROPERTY_PROTOCOL); /* max packet */
    ck_assert_int_eq(CONNECT5_PROPS(0x17, 2), CODEC_E_PROPERTY_PROTOCOL); /* request problem */
    ck_assert_int_eq(CONNECT5_PROPS(0x19, 2), CODEC_E_PROPERTY_PROTOCOL); /* request response */
    /* a Topic Alias of 0 is the receiver's to answer, with 0x94 (MQTT 5 3.3.2.3.4) */
    ck_assert_int_eq(PUBLISH5_PROPS(0x23, 0, 0), CODEC_OK);
    ck_assert_int_eq(CONNECT5_PROPS(0x22, 0, 0), CODEC_OK); /* alias maximum 0 */
    ck_assert_int_eq(CONNECT5_PROPS(0x17, 0, 0x19, 1), CODEC_OK);
    ck_assert_int_eq(DECODE(5, 0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x02),
                     CODEC_E_PROPERTY_PROTOCOL);
    ck_assert_int_eq(DECODE(5, 0x20, 0x05, 0x00, 0x00, 0x02, 0x25, 0x02),
                     CODEC_E_PROPERTY_PROTOCOL);
    ck_assert_int_eq(DECODE(5, 0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x01), CODEC_OK);
    /* the Response Topic is a topic name */
    ck_assert_int_eq(PUBLISH5_PROPS(0x08, 0, 1, '#'), CODEC_E_PROPERTY);
    ck_assert_int_eq(PUBLISH5_PROPS(0x08, 0, 0), CODEC_E_PROPERTY);
    /* authentication data needs a method */
    ck_assert_int_eq(CONNECT5_PROPS(0x16, 0, 1, 'd'), CODEC_E_PROPERTY_PROTOCOL);
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

/* ---- MQTT 5 properties: every identifier against every packet (2.2.2.2) ------- */

/* Where a property block sits: each MQTT 5 packet type that has one, and the will. */
enum place {
    PL_CONNECT,
    PL_WILL,
    PL_CONNACK,
    PL_PUBLISH,
    PL_PUBACK,
    PL_PUBREC,
    PL_PUBREL,
    PL_PUBCOMP,
    PL_SUBSCRIBE,
    PL_SUBACK,
    PL_UNSUBSCRIBE,
    PL_UNSUBACK,
    PL_DISCONNECT,
    PL_AUTH,
    PL_COUNT
};

static const char *const place_name[PL_COUNT] = {
    "CONNECT", "will properties", "CONNACK", "PUBLISH",     "PUBACK",   "PUBREC",     "PUBREL",
    "PUBCOMP", "SUBSCRIBE",       "SUBACK",  "UNSUBSCRIBE", "UNSUBACK", "DISCONNECT", "AUTH",
};

#define IN(pl) (1u << (pl))
#define PL_ALL ((1u << PL_COUNT) - 1)

/* An array initializer and its size, as two members of a struct initializer. */
#define WIRE(...) {__VA_ARGS__}, sizeof((const uint8_t[]){__VA_ARGS__})

/* A string literal as a struct mqtt_buf; a NUL inside it counts. */
#define LIT(s)                                                                                     \
    {                                                                                              \
        (const uint8_t *)(s), sizeof(s) - 1                                                        \
    }

/*
 * One row of the property table in MQTT 5 section 2.2.2.2: where the table
 * allows the identifier, and a sample value both as it travels (identifier
 * first) and as codec_next_prop() must give it back.
 */
struct prop_row {
    const char *name;
    uint8_t id;
    unsigned places;
    uint8_t wire[12];
    size_t wire_len;
    struct mqtt_prop value; /* id unused: it is the row's */
};

static const struct prop_row prop_rows[] = {
    {"Payload Format Indicator",
     MQTT_PROP_PAYLOAD_FORMAT,
     IN(PL_PUBLISH) | IN(PL_WILL),
     WIRE(0x01, 0x01),
     {.u32 = 1}},
    {"Message Expiry Interval",
     MQTT_PROP_MESSAGE_EXPIRY,
     IN(PL_PUBLISH) | IN(PL_WILL),
     WIRE(0x02, 0x89, 0xAB, 0xCD, 0xEF),
     {.u32 = 0x89ABCDEF}},
    {"Content Type",
     MQTT_PROP_CONTENT_TYPE,
     IN(PL_PUBLISH) | IN(PL_WILL),
     WIRE(0x03, 0x00, 0x03, 't', 0xC3, 0xA9),
     {.str = LIT("t\xC3\xA9")}},
    {"Response Topic",
     MQTT_PROP_RESPONSE_TOPIC,
     IN(PL_PUBLISH) | IN(PL_WILL),
     WIRE(0x08, 0x00, 0x03, 'r', '/', 't'),
     {.str = LIT("r/t")}},
    {"Correlation Data",
     MQTT_PROP_CORRELATION_DATA,
     IN(PL_PUBLISH) | IN(PL_WILL),
     WIRE(0x09, 0x00, 0x03, 0x00, 0xFF, 0xC0),
     {.str = LIT("\x00\xFF\xC0")}},
    {"Subscription Identifier",
     MQTT_PROP_SUBSCRIPTION_ID,
     IN(PL_PUBLISH) | IN(PL_SUBSCRIBE),
     WIRE(0x0B, 0xFF, 0xFF, 0xFF, 0x7F),
     {.u32 = MQTT_MAX_REMAINING_LENGTH}},
    {"Session Expiry Interval",
     MQTT_PROP_SESSION_EXPIRY,
     IN(PL_CONNECT) | IN(PL_CONNACK) | IN(PL_DISCONNECT),
     WIRE(0x11, 0xFF, 0xFF, 0xFF, 0xFF),
     {.u32 = 0xFFFFFFFF}},
    {"Assigned Client Identifier",
     MQTT_PROP_ASSIGNED_CLIENT_ID,
     IN(PL_CONNACK),
     WIRE(0x12, 0x00, 0x04, 'a', 'u', 't', 'o'),
     {.str = LIT("auto")}},
    {"Server Keep Alive",
     MQTT_PROP_SERVER_KEEP_ALIVE,
     IN(PL_CONNACK),
     WIRE(0x13, 0xFF, 0xFE),
     {.u32 = 65534}},
    {"Authentication Method",
     MQTT_PROP_AUTH_METHOD,
     IN(PL_CONNECT) | IN(PL_CONNACK) | IN(PL_AUTH),
     WIRE(0x15, 0x00, 0x05, 'S', 'C', 'R', 'A', 'M'),
     {.str = LIT("SCRAM")}},
    {"Authentication Data",
     MQTT_PROP_AUTH_DATA,
     IN(PL_CONNECT) | IN(PL_CONNACK) | IN(PL_AUTH),
     WIRE(0x16, 0x00, 0x02, 0x00, 0x80),
     {.str = LIT("\x00\x80")}},
    {"Request Problem Information",
     MQTT_PROP_REQUEST_PROBLEM_INFO,
     IN(PL_CONNECT),
     WIRE(0x17, 0x00),
     {.u32 = 0}},
    {"Will Delay Interval",
     MQTT_PROP_WILL_DELAY,
     IN(PL_WILL),
     WIRE(0x18, 0x00, 0x00, 0x0E, 0x10),
     {.u32 = 3600}},
    {"Request Response Information",
     MQTT_PROP_REQUEST_RESPONSE_INFO,
     IN(PL_CONNECT),
     WIRE(0x19, 0x01),
     {.u32 = 1}},
    {"Response Information",
     MQTT_PROP_RESPONSE_INFO,
     IN(PL_CONNACK),
     WIRE(0x1A, 0x00, 0x05, 'r', 'e', 's', 'p', '/'),
     {.str = LIT("resp/")}},
    {"Server Reference",
     MQTT_PROP_SERVER_REFERENCE,
     IN(PL_CONNACK) | IN(PL_DISCONNECT),
     WIRE(0x1C, 0x00, 0x06, 'h', 'o', 's', 't', ':', '2'),
     {.str = LIT("host:2")}},
    {"Reason String",
     MQTT_PROP_REASON_STRING,
     IN(PL_CONNACK) | IN(PL_PUBACK) | IN(PL_PUBREC) | IN(PL_PUBREL) | IN(PL_PUBCOMP) |
         IN(PL_SUBACK) | IN(PL_UNSUBACK) | IN(PL_DISCONNECT) | IN(PL_AUTH),
     WIRE(0x1F, 0x00, 0x03, 'w', 'h', 'y'),
     {.str = LIT("why")}},
    {"Receive Maximum",
     MQTT_PROP_RECEIVE_MAXIMUM,
     IN(PL_CONNECT) | IN(PL_CONNACK),
     WIRE(0x21, 0xFF, 0xFF),
     {.u32 = 65535}},
    {"Topic Alias Maximum",
     MQTT_PROP_TOPIC_ALIAS_MAXIMUM,
     IN(PL_CONNECT) | IN(PL_CONNACK),
     WIRE(0x22, 0x00, 0x00),
     {.u32 = 0}},
    {"Topic Alias", MQTT_PROP_TOPIC_ALIAS, IN(PL_PUBLISH), WIRE(0x23, 0x01, 0x02), {.u32 = 258}},
    {"Maximum QoS", MQTT_PROP_MAXIMUM_QOS, IN(PL_CONNACK), WIRE(0x24, 0x01), {.u32 = 1}},
    {"Retain Available", MQTT_PROP_RETAIN_AVAILABLE, IN(PL_CONNACK), WIRE(0x25, 0x00), {.u32 = 0}},
    {"User Property",
     MQTT_PROP_USER_PROPERTY,
     PL_ALL,
     WIRE(0x26, 0x00, 0x01, 'k', 0x00, 0x02, 'v', 'w'),
     {.str = LIT("k"), .str2 = LIT("vw")}},
    {"Maximum Packet Size",
     MQTT_PROP_MAXIMUM_PACKET_SIZE,
     IN(PL_CONNECT) | IN(PL_CONNACK),
     WIRE(0x27, 0x00, 0x01, 0x00, 0x00),
     {.u32 = 65536}},
    {"Wildcard Subscription Available",
     MQTT_PROP_WILDCARD_SUB_AVAILABLE,
     IN(PL_CONNACK),
     WIRE(0x28, 0x01),
     {.u32 = 1}},
    {"Subscription Identifier Available",
     MQTT_PROP_SUB_ID_AVAILABLE,
     IN(PL_CONNACK),
     WIRE(0x29, 0x00),
     {.u32 = 0}},
    {"Shared Subscription Available",
     MQTT_PROP_SHARED_SUB_AVAILABLE,
     IN(PL_CONNACK),
     WIRE(0x2A, 0x01),
     {.u32 = 1}},
};

#define PROP_ROWS (sizeof prop_rows / sizeof prop_rows[0])

static const struct prop_row *prop_row_of(uint8_t id)
{
    for (size_t i = 0; i < PROP_ROWS; i++)
        if (prop_rows[i].id == id)
            return &prop_rows[i];
    ck_abort_msg("no row for property 0x%02X", id);
    return NULL;
}

/*
 * Every field of each packet around its property block, written by hand: the
 * first byte, what comes before the Property Length and what comes after the
 * block. All minimal and valid.
 */
static const struct {
    uint8_t first;
    uint8_t head[16];
    size_t head_len;
    uint8_t tail[8];
    size_t tail_len;
} frames[PL_COUNT] = {
    [PL_CONNECT] = {0x10, WIRE(0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x02, 0x00, 0x3C),
                    WIRE(0x00, 0x01, 'c')},
    [PL_WILL] = {0x10,
                 WIRE(0x00, 0x04, 'M', 'Q', 'T', 'T', 0x05, 0x06, 0x00, 0x3C, 0x00, 0x00, 0x01,
                      'c'),
                 WIRE(0x00, 0x01, 'w', 0x00, 0x00)},
    [PL_CONNACK] = {0x20, WIRE(0x00, 0x00), {0}, 0},
    [PL_PUBLISH] = {0x30, WIRE(0x00, 0x01, 'a'), WIRE('x')},
    [PL_PUBACK] = {0x40, WIRE(0x00, 0x01, 0x00), {0}, 0},
    [PL_PUBREC] = {0x50, WIRE(0x00, 0x01, 0x00), {0}, 0},
    [PL_PUBREL] = {0x62, WIRE(0x00, 0x01, 0x00), {0}, 0},
    [PL_PUBCOMP] = {0x70, WIRE(0x00, 0x01, 0x00), {0}, 0},
    [PL_SUBSCRIBE] = {0x82, WIRE(0x00, 0x01), WIRE(0x00, 0x01, 'a', 0x01)},
    [PL_SUBACK] = {0x90, WIRE(0x00, 0x01), WIRE(0x00)},
    [PL_UNSUBSCRIBE] = {0xA2, WIRE(0x00, 0x01), WIRE(0x00, 0x01, 'a')},
    [PL_UNSUBACK] = {0xB0, WIRE(0x00, 0x01), WIRE(0x00)},
    [PL_DISCONNECT] = {0xE0, WIRE(0x00), {0}, 0},
    [PL_AUTH] = {0xF0, WIRE(0x18), {0}, 0},
};

/* The tests write variable byte integers themselves rather than trust the codec's. */
static size_t vbi_put(uint8_t *out, uint32_t v)
{
    size_t n = 0;

    do {
        out[n] = v & 0x7F;
        v >>= 7;
        if (v)
            out[n] |= 0x80;
        n++;
    } while (v);
    return n;
}

/*
 * Write into `out` the MQTT 5 packet for `pl` whose Property Length field is
 * the `plen_n` bytes `plen`, followed by the `n` bytes of `block`. Returns the
 * packet's size; `out` must hold 600 bytes.
 */
static size_t packet5_raw(enum place pl, const uint8_t *plen, size_t plen_n, const uint8_t *block,
                          size_t n, uint8_t *out)
{
    uint8_t body[580];
    size_t b = 0, len;

    ck_assert_uint_le(frames[pl].head_len + plen_n + n + frames[pl].tail_len, sizeof body);
    memcpy(body, frames[pl].head, frames[pl].head_len);
    b += frames[pl].head_len;
    memcpy(body + b, plen, plen_n);
    b += plen_n;
    if (n)
        memcpy(body + b, block, n);
    b += n;
    memcpy(body + b, frames[pl].tail, frames[pl].tail_len);
    b += frames[pl].tail_len;
    out[0] = frames[pl].first;
    len = 1 + vbi_put(out + 1, (uint32_t)b);
    memcpy(out + len, body, b);
    return len + b;
}

/* The same with a Property Length of `declared` (normally n). */
static size_t packet5(enum place pl, const uint8_t *block, size_t n, uint32_t declared,
                      uint8_t *out)
{
    uint8_t plen[4];

    return packet5_raw(pl, plen, vbi_put(plen, declared), block, n, out);
}

/* Decode the packet for `pl` carrying `block`; `buf` (600 bytes) holds it while *p is used. */
static int decode_place(enum place pl, const uint8_t *block, size_t n, uint8_t *buf,
                        struct mqtt_packet *p)
{
    size_t len = packet5(pl, block, n, (uint32_t)n, buf);

    return codec_decode(buf, len, MQTT_V5, p);
}

/* The decoded property block at `pl`. */
static struct mqtt_props place_props(const struct mqtt_packet *p, enum place pl)
{
    switch (pl) {
    case PL_CONNECT:
        return p->u.connect.props;
    case PL_WILL:
        return p->u.connect.will_props;
    case PL_CONNACK:
        return p->u.connack.props;
    case PL_PUBLISH:
        return p->u.publish.props;
    case PL_PUBACK:
    case PL_PUBREC:
    case PL_PUBREL:
    case PL_PUBCOMP:
        return p->u.ack.props;
    case PL_SUBSCRIBE:
    case PL_UNSUBSCRIBE:
        return p->u.subscribe.props;
    case PL_SUBACK:
    case PL_UNSUBACK:
        return p->u.suback.props;
    case PL_DISCONNECT:
    case PL_AUTH:
        return p->u.disconnect.props;
    case PL_COUNT:
        break;
    }
    return (struct mqtt_props){NULL, 0};
}

/* The same packet as a struct for codec_encode(), carrying `props` at `pl`. */
static void place_packet(enum place pl, struct mqtt_props props, struct mqtt_packet *pkt)
{
    static const uint8_t types[PL_COUNT] = {
        MQTT_CONNECT,     MQTT_CONNECT,  MQTT_CONNACK,    MQTT_PUBLISH,   MQTT_PUBACK,
        MQTT_PUBREC,      MQTT_PUBREL,   MQTT_PUBCOMP,    MQTT_SUBSCRIBE, MQTT_SUBACK,
        MQTT_UNSUBSCRIBE, MQTT_UNSUBACK, MQTT_DISCONNECT, MQTT_AUTH,
    };
    static const uint8_t sub_entries[] = {0x00, 0x01, 'a', 0x01};
    static const uint8_t unsub_entries[] = {0x00, 0x01, 'a'};
    static const uint8_t codes[] = {0x00};

    memset(pkt, 0, sizeof *pkt);
    pkt->type = types[pl];
    switch (pl) {
    case PL_CONNECT:
    case PL_WILL:
        pkt->u.connect.clean = true;
        pkt->u.connect.keepalive = 60;
        pkt->u.connect.client_id = str("c");
        if (pl == PL_CONNECT) {
            pkt->u.connect.props = props;
            break;
        }
        pkt->u.connect.will = true;
        pkt->u.connect.will_topic = str("w");
        pkt->u.connect.will_props = props;
        break;
    case PL_CONNACK:
        pkt->u.connack.props = props;
        break;
    case PL_PUBLISH:
        pkt->u.publish.topic = str("a");
        pkt->u.publish.payload = str("x");
        pkt->u.publish.props = props;
        break;
    case PL_PUBACK:
    case PL_PUBREC:
    case PL_PUBREL:
    case PL_PUBCOMP:
        pkt->u.ack.packet_id = 1;
        pkt->u.ack.props = props;
        break;
    case PL_SUBSCRIBE:
    case PL_UNSUBSCRIBE:
        pkt->u.subscribe.packet_id = 1;
        pkt->u.subscribe.entries = pl == PL_SUBSCRIBE
                                       ? (struct mqtt_buf){sub_entries, sizeof sub_entries}
                                       : (struct mqtt_buf){unsub_entries, sizeof unsub_entries};
        pkt->u.subscribe.count = 1;
        pkt->u.subscribe.props = props;
        break;
    case PL_SUBACK:
    case PL_UNSUBACK:
        pkt->u.suback.packet_id = 1;
        pkt->u.suback.codes = codes;
        pkt->u.suback.count = 1;
        pkt->u.suback.props = props;
        break;
    case PL_DISCONNECT:
        pkt->u.disconnect.props = props;
        break;
    case PL_AUTH:
        pkt->u.disconnect.reason = MQTT_RC_CONTINUE_AUTH;
        pkt->u.disconnect.props = props;
        break;
    case PL_COUNT:
        break;
    }
}

/*
 * An AUTH packet must name its Authentication Method (3.15.2.2.2), and
 * Authentication Data needs one beside it (3.1.2.11.10), so those blocks
 * start with this one; it is not what they test.
 */
static const uint8_t method_m[] = {MQTT_PROP_AUTH_METHOD, 0x00, 0x01, 'm'};

static bool needs_method(enum place pl, uint8_t id)
{
    if (id == MQTT_PROP_AUTH_METHOD)
        return false;
    return pl == PL_AUTH || (id == MQTT_PROP_AUTH_DATA && (pl == PL_CONNECT || pl == PL_CONNACK));
}

/* Start a block for property `id` at `pl`: the method when it needs one. Returns its length. */
static size_t block_start(enum place pl, uint8_t id, uint8_t *block)
{
    if (!needs_method(pl, id))
        return 0;
    memcpy(block, method_m, sizeof method_m);
    return sizeof method_m;
}

static size_t block_add(uint8_t *block, size_t n, const uint8_t *bytes, size_t len)
{
    memcpy(block + n, bytes, len);
    return n + len;
}

static bool prop_equals(const struct mqtt_prop *got, uint8_t id, const struct mqtt_prop *want)
{
    return got->id == id && got->u32 == want->u32 && buf_same(got->str, want->str) &&
           buf_same(got->str2, want->str2);
}

/*
 * MQTT 5 2.2.2.2: each identifier decodes in exactly the packets its row of
 * the table names, and is refused (a Malformed Packet) in every other one.
 * One iteration per cell of the table: property _i / PL_COUNT, place _i % PL_COUNT.
 */
START_TEST(test_MQTT_2_2_2_2_every_property_in_every_packet)
{
    const struct prop_row *row = &prop_rows[(size_t)_i / PL_COUNT];
    enum place pl = (enum place)(_i % PL_COUNT);
    uint8_t block[64], buf[600];
    struct mqtt_packet p;
    struct mqtt_prop got;
    size_t n, pos = 0;
    int rc;

    n = block_start(pl, row->id, block);
    n = block_add(block, n, row->wire, row->wire_len);
    rc = decode_place(pl, block, n, buf, &p);
    if (!(row->places & IN(pl))) {
        ck_assert_msg(rc == CODEC_E_PROPERTY, "%s in %s: got \"%s\", want a refusal", row->name,
                      place_name[pl], codec_strerror(rc));
        return;
    }
    ck_assert_msg(rc == CODEC_OK, "%s in %s: %s", row->name, place_name[pl], codec_strerror(rc));
    struct mqtt_props props = place_props(&p, pl);
    ck_assert_uint_eq(props.len, n);
    ck_assert_msg(codec_find_prop(&props, row->id, &got) && prop_equals(&got, row->id, &row->value),
                  "%s in %s: codec_find_prop() does not give the value back", row->name,
                  place_name[pl]);
    if (needs_method(pl, row->id)) {
        ck_assert(codec_next_prop(&props, &pos, &got));
        ck_assert_uint_eq(got.id, MQTT_PROP_AUTH_METHOD);
    }
    ck_assert(codec_next_prop(&props, &pos, &got));
    ck_assert_msg(prop_equals(&got, row->id, &row->value),
                  "%s in %s: codec_next_prop() does not give the value back", row->name,
                  place_name[pl]);
    ck_assert(!codec_next_prop(&props, &pos, &got));
    ck_assert_uint_eq(pos, n);
}
END_TEST

/*
 * "It is a Protocol Error to include <the property> more than once", said of
 * every property but User Property (3.1.2.11.8, 3.3.2.3.7, ...) and the
 * Subscription Identifiers of a PUBLISH (3.3.2.3.8, [MQTT-3.3.4-4]). The two
 * copies are not adjacent: a User Property stands between them.
 */
START_TEST(test_v5_property_more_than_once)
{
    static const uint8_t user[] = {MQTT_PROP_USER_PROPERTY, 0x00, 0x01, 'u', 0x00, 0x00};
    const struct prop_row *row = &prop_rows[_i];

    for (enum place pl = 0; pl < PL_COUNT; pl++) {
        uint8_t block[64], buf[600];
        struct mqtt_packet p;
        struct mqtt_prop got;
        size_t n, pos = 0, seen = 0;
        bool repeats = row->id == MQTT_PROP_USER_PROPERTY ||
                       (row->id == MQTT_PROP_SUBSCRIPTION_ID && pl == PL_PUBLISH);
        int rc;

        if (!(row->places & IN(pl)))
            continue;
        n = block_start(pl, row->id, block);
        n = block_add(block, n, row->wire, row->wire_len);
        n = block_add(block, n, user, sizeof user);
        n = block_add(block, n, row->wire, row->wire_len);
        rc = decode_place(pl, block, n, buf, &p);
        if (!repeats) {
            ck_assert_msg(rc == CODEC_E_PROPERTY_PROTOCOL, "%s twice in %s: got \"%s\"", row->name,
                          place_name[pl], codec_strerror(rc));
            continue;
        }
        ck_assert_msg(rc == CODEC_OK, "%s twice in %s: %s", row->name, place_name[pl],
                      codec_strerror(rc));
        struct mqtt_props props = place_props(&p, pl);
        while (codec_next_prop(&props, &pos, &got))
            if (prop_equals(&got, row->id, &row->value))
                seen++;
        ck_assert_uint_eq(pos, n);
        ck_assert_uint_eq(seen, 2);
    }
}
END_TEST

/*
 * User Property may appear any number of times, the same name more than once
 * (3.1.2.11.8 and its twin in every packet), and the order is kept
 * ([MQTT-3.3.2-18], [MQTT-3.1.3-10]): the block is handed on as it came.
 */
START_TEST(test_v5_user_property_repeats_in_order)
{
    static const uint8_t users[] = {
        MQTT_PROP_USER_PROPERTY,
        0x00,
        0x01,
        'a',
        0x00,
        0x01,
        '1',
        MQTT_PROP_USER_PROPERTY,
        0x00,
        0x01,
        'b',
        0x00,
        0x00,
        MQTT_PROP_USER_PROPERTY,
        0x00,
        0x01,
        'a',
        0x00,
        0x02,
        '3',
        '3',
    };
    static const struct {
        const char *name, *value;
    } want[] = {{"a", "1"}, {"b", ""}, {"a", "33"}};
    enum place pl = (enum place)_i;
    uint8_t block[64], buf[600];
    struct mqtt_packet p;
    struct mqtt_prop got;
    size_t n, pos = 0;
    int rc;

    n = block_start(pl, MQTT_PROP_USER_PROPERTY, block);
    n = block_add(block, n, users, sizeof users);
    rc = decode_place(pl, block, n, buf, &p);
    ck_assert_msg(rc == CODEC_OK, "in %s: %s", place_name[pl], codec_strerror(rc));
    struct mqtt_props props = place_props(&p, pl);
    ck_assert(props_same(props, (struct mqtt_props){block, n}));
    if (needs_method(pl, MQTT_PROP_USER_PROPERTY))
        ck_assert(codec_next_prop(&props, &pos, &got));
    for (size_t i = 0; i < 3; i++) {
        ck_assert(codec_next_prop(&props, &pos, &got));
        ck_assert_uint_eq(got.id, MQTT_PROP_USER_PROPERTY);
        ck_assert_buf_eq(got.str, want[i].name);
        ck_assert_buf_eq(got.str2, want[i].value);
    }
    ck_assert(!codec_next_prop(&props, &pos, &got));
    ck_assert(codec_find_prop(&props, MQTT_PROP_USER_PROPERTY, &got));
    ck_assert_buf_eq(got.str2, "1");
}
END_TEST

/*
 * The byte properties that can only be 0 or 1: Request Response Information
 * (3.1.2.11.6), Request Problem Information (3.1.2.11.7), Maximum QoS
 * (3.2.2.3.4), Retain Available (3.2.2.3.5), Wildcard, Subscription
 * Identifiers and Shared Subscription Available (3.2.2.3.11-13) all say any
 * other value is a Protocol Error; Payload Format Indicator (3.3.2.3.2,
 * 3.1.3.2.3) defines only 0 and 1. Every byte value, in every allowed place.
 */
START_TEST(test_v5_byte_properties_are_0_or_1)
{
    static const uint8_t ids[] = {
        MQTT_PROP_PAYLOAD_FORMAT,        MQTT_PROP_REQUEST_PROBLEM_INFO,
        MQTT_PROP_REQUEST_RESPONSE_INFO, MQTT_PROP_MAXIMUM_QOS,
        MQTT_PROP_RETAIN_AVAILABLE,      MQTT_PROP_WILDCARD_SUB_AVAILABLE,
        MQTT_PROP_SUB_ID_AVAILABLE,      MQTT_PROP_SHARED_SUB_AVAILABLE,
    };
    const struct prop_row *row = prop_row_of(ids[_i]);

    for (enum place pl = 0; pl < PL_COUNT; pl++) {
        if (!(row->places & IN(pl)))
            continue;
        for (unsigned v = 0; v <= 0xFF; v++) {
            uint8_t block[8] = {row->id, (uint8_t)v}, buf[600];
            struct mqtt_packet p;
            struct mqtt_prop got;
            int rc = decode_place(pl, block, 2, buf, &p);

            if (v > 1) {
                ck_assert_msg(rc == CODEC_E_PROPERTY_PROTOCOL, "%s %u in %s: got \"%s\"", row->name,
                              v, place_name[pl], codec_strerror(rc));
                continue;
            }
            ck_assert_msg(rc == CODEC_OK, "%s %u in %s: %s", row->name, v, place_name[pl],
                          codec_strerror(rc));
            struct mqtt_props props = place_props(&p, pl);
            ck_assert(codec_find_prop(&props, row->id, &got));
            ck_assert_uint_eq(got.u32, v);
        }
    }
}
END_TEST

/*
 * Values of one property, each tried in every place the table allows the
 * identifier (its first byte). `want` is the decode result; on success the
 * value must read back as `u32`, or as `s` for a string.
 */
static const struct value_row {
    const char *what;
    uint8_t wire[8];
    size_t wire_len;
    int want;
    uint32_t u32;
    const char *s;
} value_rows[] = {
    /* 0 is a Protocol Error for these */
    {"Receive Maximum 0 (3.1.2.11.3, 3.2.2.3.3)", WIRE(0x21, 0x00, 0x00), CODEC_E_PROPERTY_PROTOCOL,
     0, NULL},
    {"Receive Maximum 1", WIRE(0x21, 0x00, 0x01), CODEC_OK, 1, NULL},
    {"Maximum Packet Size 0 (3.1.2.11.4, 3.2.2.3.6)", WIRE(0x27, 0x00, 0x00, 0x00, 0x00),
     CODEC_E_PROPERTY_PROTOCOL, 0, NULL},
    {"Maximum Packet Size 1", WIRE(0x27, 0x00, 0x00, 0x00, 0x01), CODEC_OK, 1, NULL},
    /* A Topic Alias of 0 is left to the receiver, which answers it with 0x94. */
    {"Topic Alias 0 [MQTT-3.3.2-8]", WIRE(0x23, 0x00, 0x00), CODEC_OK, 0, NULL},
    {"Topic Alias 1", WIRE(0x23, 0x00, 0x01), CODEC_OK, 1, NULL},
    {"Topic Alias 65535", WIRE(0x23, 0xFF, 0xFF), CODEC_OK, 65535, NULL},
    {"Subscription Identifier 0 (3.3.2.3.8, 3.8.2.1.2)", WIRE(0x0B, 0x00),
     CODEC_E_PROPERTY_PROTOCOL, 0, NULL},
    /* ... and not for these */
    {"Session Expiry Interval 0", WIRE(0x11, 0x00, 0x00, 0x00, 0x00), CODEC_OK, 0, NULL},
    {"Message Expiry Interval 0", WIRE(0x02, 0x00, 0x00, 0x00, 0x00), CODEC_OK, 0, NULL},
    {"Will Delay Interval 0", WIRE(0x18, 0x00, 0x00, 0x00, 0x00), CODEC_OK, 0, NULL},
    {"Topic Alias Maximum 0", WIRE(0x22, 0x00, 0x00), CODEC_OK, 0, NULL},
    {"Server Keep Alive 0", WIRE(0x13, 0x00, 0x00), CODEC_OK, 0, NULL},
    /* Subscription Identifier, the one variable byte integer: each size boundary (1.5.5) */
    {"Subscription Identifier 1", WIRE(0x0B, 0x01), CODEC_OK, 1, NULL},
    {"Subscription Identifier 127", WIRE(0x0B, 0x7F), CODEC_OK, 127, NULL},
    {"Subscription Identifier 128", WIRE(0x0B, 0x80, 0x01), CODEC_OK, 128, NULL},
    {"Subscription Identifier 16383", WIRE(0x0B, 0xFF, 0x7F), CODEC_OK, 16383, NULL},
    {"Subscription Identifier 16384", WIRE(0x0B, 0x80, 0x80, 0x01), CODEC_OK, 16384, NULL},
    {"Subscription Identifier 2097151", WIRE(0x0B, 0xFF, 0xFF, 0x7F), CODEC_OK, 2097151, NULL},
    {"Subscription Identifier 2097152", WIRE(0x0B, 0x80, 0x80, 0x80, 0x01), CODEC_OK, 2097152,
     NULL},
    {"Subscription Identifier 268435455", WIRE(0x0B, 0xFF, 0xFF, 0xFF, 0x7F), CODEC_OK, 268435455,
     NULL},
    /* more than four bytes */
    {"Subscription Identifier in 5 bytes", WIRE(0x0B, 0x80, 0x80, 0x80, 0x80, 0x01),
     CODEC_E_PROPERTY, 0, NULL},
    {"Subscription Identifier 0xFF 0xFF 0xFF 0xFF 0x7F", WIRE(0x0B, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F),
     CODEC_E_PROPERTY, 0, NULL},
    /* overlong: more bytes than the value needs [MQTT-1.5.5-1] */
    {"Subscription Identifier 1 in 2 bytes", WIRE(0x0B, 0x81, 0x00), CODEC_E_PROPERTY, 0, NULL},
    {"Subscription Identifier 127 in 2 bytes", WIRE(0x0B, 0xFF, 0x00), CODEC_E_PROPERTY, 0, NULL},
    {"Subscription Identifier 128 in 3 bytes", WIRE(0x0B, 0x80, 0x81, 0x00), CODEC_E_PROPERTY, 0,
     NULL},
    {"Subscription Identifier 0 in 4 bytes", WIRE(0x0B, 0x80, 0x80, 0x80, 0x00), CODEC_E_PROPERTY,
     0, NULL},
    /* Response Topic is a topic name: [MQTT-3.3.2-13], [MQTT-3.3.2-14], [MQTT-4.7.3-1] */
    {"Response Topic a/b", WIRE(0x08, 0x00, 0x03, 'a', '/', 'b'), CODEC_OK, 0, "a/b"},
    {"Response Topic empty", WIRE(0x08, 0x00, 0x00), CODEC_E_PROPERTY, 0, NULL},
    {"Response Topic a/+", WIRE(0x08, 0x00, 0x03, 'a', '/', '+'), CODEC_E_PROPERTY, 0, NULL},
    {"Response Topic #", WIRE(0x08, 0x00, 0x01, '#'), CODEC_E_PROPERTY, 0, NULL},
    /* strings may be empty, binary data too */
    {"Reason String empty", WIRE(0x1F, 0x00, 0x00), CODEC_OK, 0, ""},
    {"Correlation Data empty", WIRE(0x09, 0x00, 0x00), CODEC_OK, 0, ""},
};

START_TEST(test_v5_property_value_table)
{
    const struct value_row *row = &value_rows[_i];
    const struct prop_row *prop = prop_row_of(row->wire[0]);

    for (enum place pl = 0; pl < PL_COUNT; pl++) {
        uint8_t block[64], buf[600];
        struct mqtt_packet p;
        struct mqtt_prop got;
        size_t n;
        int rc;

        if (!(prop->places & IN(pl)))
            continue;
        n = block_start(pl, prop->id, block);
        n = block_add(block, n, row->wire, row->wire_len);
        rc = decode_place(pl, block, n, buf, &p);
        ck_assert_msg(rc == row->want, "%s in %s: got \"%s\", want \"%s\"", row->what,
                      place_name[pl], codec_strerror(rc), codec_strerror(row->want));
        if (rc != CODEC_OK)
            continue;
        struct mqtt_props props = place_props(&p, pl);
        ck_assert(codec_find_prop(&props, prop->id, &got));
        if (row->s)
            ck_assert_buf_eq(got.str, row->s);
        else
            ck_assert_uint_eq(got.u32, row->u32);
    }
}
END_TEST

/*
 * Every string in a property is a UTF-8 Encoded String: well-formed, no
 * surrogates [MQTT-1.5.4-1], no U+0000 [MQTT-1.5.4-2], and the User Property
 * pair is two of them [MQTT-1.5.7-1]. Correlation Data and Authentication Data
 * are binary and take any bytes. Each slot, every bad string, every allowed place.
 */
START_TEST(test_MQTT_1_5_4_strings_in_properties)
{
    static const struct {
        uint8_t id;
        bool pair_value; /* the value of the User Property pair, not its name */
        bool binary;
    } slots[] = {
        {MQTT_PROP_CONTENT_TYPE, false, false},       {MQTT_PROP_RESPONSE_TOPIC, false, false},
        {MQTT_PROP_ASSIGNED_CLIENT_ID, false, false}, {MQTT_PROP_AUTH_METHOD, false, false},
        {MQTT_PROP_RESPONSE_INFO, false, false},      {MQTT_PROP_SERVER_REFERENCE, false, false},
        {MQTT_PROP_REASON_STRING, false, false},      {MQTT_PROP_USER_PROPERTY, false, false},
        {MQTT_PROP_USER_PROPERTY, true, false},       {MQTT_PROP_CORRELATION_DATA, false, true},
        {MQTT_PROP_AUTH_DATA, false, true},
    };
    static const struct {
        const char *what;
        uint8_t s[4];
        size_t len;
        int want;
    } strings[] = {
        {"0xFF", WIRE(0xFF), CODEC_E_UTF8},
        {"a stray continuation byte", WIRE('a', 0x80), CODEC_E_UTF8},
        {"overlong '/'", WIRE(0xC0, 0xAF), CODEC_E_UTF8},
        {"U+D800", WIRE(0xED, 0xA0, 0x80), CODEC_E_UTF8},
        {"above U+10FFFF", WIRE(0xF4, 0x90, 0x80, 0x80), CODEC_E_UTF8},
        {"cut short", WIRE('a', 0xE2, 0x82), CODEC_E_UTF8},
        {"U+0000", WIRE(0x00), CODEC_E_NUL},
        {"a U+0000 b", WIRE('a', 0x00, 'b'), CODEC_E_NUL},
        {"U+FEFF", WIRE(0xEF, 0xBB, 0xBF), CODEC_OK},
    };
    const struct prop_row *row = prop_row_of(slots[_i].id);

    for (enum place pl = 0; pl < PL_COUNT; pl++) {
        if (!(row->places & IN(pl)))
            continue;
        for (size_t k = 0; k < sizeof strings / sizeof strings[0]; k++) {
            uint8_t block[64], buf[600];
            struct mqtt_packet p;
            size_t n = block_start(pl, row->id, block);
            int want = slots[_i].binary ? CODEC_OK : strings[k].want;
            int rc;

            block[n++] = row->id;
            if (slots[_i].pair_value)
                n = block_add(block, n, BYTES(0x00, 0x01, 'k'));
            block[n++] = 0x00;
            block[n++] = (uint8_t)strings[k].len;
            n = block_add(block, n, strings[k].s, strings[k].len);
            if (row->id == MQTT_PROP_USER_PROPERTY && !slots[_i].pair_value)
                n = block_add(block, n, BYTES(0x00, 0x01, 'v'));
            rc = decode_place(pl, block, n, buf, &p);
            ck_assert_msg(rc == want, "%s%s holding %s in %s: got \"%s\", want \"%s\"", row->name,
                          slots[_i].pair_value ? " value" : "", strings[k].what, place_name[pl],
                          codec_strerror(rc), codec_strerror(want));
        }
    }
}
END_TEST

/*
 * A property whose value runs past the end of its block, cut after each of its
 * bytes: a bad length inside the block is CODEC_E_PROPERTY (codec.h), wherever
 * the packet goes on after the block.
 */
START_TEST(test_v5_property_value_cut_short)
{
    const struct prop_row *row = &prop_rows[_i];

    for (enum place pl = 0; pl < PL_COUNT; pl++) {
        if (!(row->places & IN(pl)))
            continue;
        for (size_t cut = 1; cut < row->wire_len; cut++) {
            uint8_t block[64], buf[600];
            struct mqtt_packet p;
            size_t n = block_start(pl, row->id, block);
            int rc;

            n = block_add(block, n, row->wire, cut);
            rc = decode_place(pl, block, n, buf, &p);
            ck_assert_msg(rc == CODEC_E_PROPERTY, "%s cut to %zu bytes in %s: got \"%s\"",
                          row->name, cut, place_name[pl], codec_strerror(rc));
        }
    }
}
END_TEST

/*
 * The Property Length itself (2.2.2.1): running past the packet is
 * CODEC_E_TRUNCATED; more than four bytes, or more bytes than the length needs
 * [MQTT-1.5.5-1], is CODEC_E_PROPERTY. In every packet that has one.
 */
START_TEST(test_v5_property_length)
{
    static const uint8_t user[] = {MQTT_PROP_USER_PROPERTY, 0x00, 0x01, 'k', 0x00, 0x01, 'v'};
    enum place pl = (enum place)_i;
    uint8_t block[64], buf[600];
    struct mqtt_packet p;
    size_t n, len;

    n = block_start(pl, MQTT_PROP_USER_PROPERTY, block);
    n = block_add(block, n, user, sizeof user);
    /* right, then one byte past the end of the packet, then the largest length */
    len = packet5(pl, block, n, (uint32_t)n, buf);
    ck_assert_int_eq(codec_decode(buf, len, MQTT_V5, &p), CODEC_OK);
    len = packet5(pl, block, n, (uint32_t)(n + frames[pl].tail_len + 1), buf);
    ck_assert_int_eq(codec_decode(buf, len, MQTT_V5, &p), CODEC_E_TRUNCATED);
    len = packet5(pl, block, n, MQTT_MAX_REMAINING_LENGTH, buf);
    ck_assert_int_eq(codec_decode(buf, len, MQTT_V5, &p), CODEC_E_TRUNCATED);
    /* five bytes */
    len = packet5_raw(pl, BYTES(0x80, 0x80, 0x80, 0x80, 0x00), block, n, buf);
    ck_assert_int_eq(codec_decode(buf, len, MQTT_V5, &p), CODEC_E_PROPERTY);
    /* overlong: an empty block, then the user property, each announced in two bytes */
    len = packet5_raw(pl, BYTES(0x80, 0x00), block, 0, buf);
    ck_assert_int_eq(codec_decode(buf, len, MQTT_V5, &p), CODEC_E_PROPERTY);
    uint8_t two[2] = {(uint8_t)(0x80 | n), 0x00};
    len = packet5_raw(pl, two, 2, block, n, buf);
    ck_assert_int_eq(codec_decode(buf, len, MQTT_V5, &p), CODEC_E_PROPERTY);
    /* the length cut by the end of the packet, where nothing follows the block */
    if (frames[pl].tail_len == 0) {
        len = packet5_raw(pl, BYTES(0x80), NULL, 0, buf);
        ck_assert_int_eq(codec_decode(buf, len, MQTT_V5, &p), CODEC_E_TRUNCATED);
    }
}
END_TEST

/*
 * codec_put_prop() writes every identifier as the table's type says, byte for
 * byte as written out above, sizes it first with cap 0, writes nothing when it
 * does not fit, and what it writes travels through codec_encode() and
 * codec_decode() in every packet that allows it and reads back the same.
 */
START_TEST(test_put_prop_round_trips_every_identifier)
{
    const struct prop_row *row = &prop_rows[_i];
    struct mqtt_prop value = row->value;
    uint8_t out[16];
    size_t pos = 0;

    value.id = row->id;
    ck_assert_uint_eq(codec_put_prop(NULL, 0, &pos, &value), row->wire_len);
    ck_assert_uint_eq(pos, row->wire_len);
    pos = 0;
    memset(out, 0xAA, sizeof out);
    ck_assert_uint_eq(codec_put_prop(out, row->wire_len - 1, &pos, &value), row->wire_len);
    ck_assert_uint_eq(out[0], 0xAA);
    pos = 0;
    ck_assert_uint_eq(codec_put_prop(out, sizeof out, &pos, &value), row->wire_len);
    ck_assert_mem_eq(out, row->wire, row->wire_len);

    for (enum place pl = 0; pl < PL_COUNT; pl++) {
        static const struct mqtt_prop method = {.id = MQTT_PROP_AUTH_METHOD, .str = LIT("m")};
        struct mqtt_packet in, dec;
        uint8_t block[32], buf[128];
        struct mqtt_prop got;
        size_t n = 0;

        if (!(row->places & IN(pl)))
            continue;
        if (needs_method(pl, row->id))
            codec_put_prop(block, sizeof block, &n, &method);
        codec_put_prop(block, sizeof block, &n, &value);
        place_packet(pl, (struct mqtt_props){block, n}, &in);
        round_trip(&in, MQTT_V5, buf, sizeof buf, &dec);
        struct mqtt_props props = place_props(&dec, pl);
        ck_assert(props_same(props, (struct mqtt_props){block, n}));
        ck_assert_msg(codec_find_prop(&props, row->id, &got) &&
                          prop_equals(&got, row->id, &row->value),
                      "%s through %s: not the same value", row->name, place_name[pl]);
    }
}
END_TEST

/*
 * AUTH: "It is a Protocol Error to omit the Authentication Method" (3.15.2.2.2).
 * Only the short form, Remaining Length 0, has no properties at all (3.15.2.1).
 */
START_TEST(test_MQTT_3_15_2_2_2_auth_needs_its_method)
{
    ck_assert_int_eq(DECODE(5, 0xF0, 0x00), CODEC_OK);
    ck_assert_int_eq(DECODE(5, 0xF0, 0x02, 0x00, 0x00), CODEC_E_PROPERTY_PROTOCOL);
    ck_assert_int_eq(DECODE(5, 0xF0, 0x02, 0x18, 0x00), CODEC_E_PROPERTY_PROTOCOL);
    ck_assert_int_eq(DECODE(5, 0xF0, 0x02, 0x19, 0x00), CODEC_E_PROPERTY_PROTOCOL);
    ck_assert_int_eq(DECODE(5, 0xF0, 0x08, 0x18, 0x06, 0x1F, 0x00, 0x03, 'w', 'h', 'y'),
                     CODEC_E_PROPERTY_PROTOCOL);
    ck_assert_int_eq(DECODE(5, 0xF0, 0x07, 0x19, 0x05, 0x16, 0x00, 0x02, 'd', 'd'),
                     CODEC_E_PROPERTY_PROTOCOL);
    ck_assert_int_eq(DECODE(5, 0xF0, 0x06, 0x19, 0x04, 0x15, 0x00, 0x01, 'm'), CODEC_OK);
    ck_assert_int_eq(DECODE(5, 0xF0, 0x06, 0x00, 0x04, 0x15, 0x00, 0x01, 'm'), CODEC_OK);
}
END_TEST

/* ---- MQTT 5 reason codes: every code against every packet ------------------------ */

/*
 * The reason code table of each MQTT 5 packet that carries one, as its own
 * section lists it. (Table 2.6 in 2.4 differs in one place: it also lists 0x8C
 * for DISCONNECT, which 3.14.2.1 does not; the per-packet table is the rule.)
 */
static const struct reason_table {
    const char *name;
    uint8_t type;
    const uint8_t *codes;
    size_t count;
} reason_tables[] = {
    {"CONNACK (3.2.2.2, [MQTT-3.2.2-8])", MQTT_CONNACK,
     BYTES(0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95,
           0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F)},
    {"PUBACK (3.4.2.1, [MQTT-3.4.2-1])", MQTT_PUBACK,
     BYTES(0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99)},
    {"PUBREC (3.5.2.1, [MQTT-3.5.2-1])", MQTT_PUBREC,
     BYTES(0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99)},
    {"PUBREL (3.6.2.1, [MQTT-3.6.2-1])", MQTT_PUBREL, BYTES(0x00, 0x92)},
    {"PUBCOMP (3.7.2.1)", MQTT_PUBCOMP, BYTES(0x00, 0x92)},
    {"SUBACK (3.9.3, [MQTT-3.9.3-2])", MQTT_SUBACK,
     BYTES(0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2)},
    {"UNSUBACK (3.11.3, [MQTT-3.11.3-2])", MQTT_UNSUBACK,
     BYTES(0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91)},
    {"DISCONNECT (3.14.2.1, [MQTT-3.14.2-1])", MQTT_DISCONNECT,
     BYTES(0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94,
           0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2)},
    {"AUTH (3.15.2.1, [MQTT-3.15.2-1])", MQTT_AUTH, BYTES(0x00, 0x18, 0x19)},
};

#define REASON_TABLES (sizeof reason_tables / sizeof reason_tables[0])

/* Every value of enum mqtt_reason (2.4). */
static const uint8_t every_reason[] = {
    MQTT_RC_SUCCESS,
    MQTT_RC_GRANTED_QOS1,
    MQTT_RC_GRANTED_QOS2,
    MQTT_RC_DISCONNECT_WITH_WILL,
    MQTT_RC_NO_MATCHING_SUBSCRIBERS,
    MQTT_RC_NO_SUBSCRIPTION_EXISTED,
    MQTT_RC_CONTINUE_AUTH,
    MQTT_RC_REAUTHENTICATE,
    MQTT_RC_UNSPECIFIED,
    MQTT_RC_MALFORMED_PACKET,
    MQTT_RC_PROTOCOL_ERROR,
    MQTT_RC_IMPLEMENTATION_SPECIFIC,
    MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION,
    MQTT_RC_CLIENT_ID_NOT_VALID,
    MQTT_RC_BAD_USERNAME_OR_PASSWORD,
    MQTT_RC_NOT_AUTHORIZED,
    MQTT_RC_SERVER_UNAVAILABLE,
    MQTT_RC_SERVER_BUSY,
    MQTT_RC_BANNED,
    MQTT_RC_SERVER_SHUTTING_DOWN,
    MQTT_RC_BAD_AUTH_METHOD,
    MQTT_RC_KEEP_ALIVE_TIMEOUT,
    MQTT_RC_SESSION_TAKEN_OVER,
    MQTT_RC_TOPIC_FILTER_INVALID,
    MQTT_RC_TOPIC_NAME_INVALID,
    MQTT_RC_PACKET_ID_IN_USE,
    MQTT_RC_PACKET_ID_NOT_FOUND,
    MQTT_RC_RECEIVE_MAXIMUM_EXCEEDED,
    MQTT_RC_TOPIC_ALIAS_INVALID,
    MQTT_RC_PACKET_TOO_LARGE,
    MQTT_RC_MESSAGE_RATE_TOO_HIGH,
    MQTT_RC_QUOTA_EXCEEDED,
    MQTT_RC_ADMINISTRATIVE_ACTION,
    MQTT_RC_PAYLOAD_FORMAT_INVALID,
    MQTT_RC_RETAIN_NOT_SUPPORTED,
    MQTT_RC_QOS_NOT_SUPPORTED,
    MQTT_RC_USE_ANOTHER_SERVER,
    MQTT_RC_SERVER_MOVED,
    MQTT_RC_SHARED_SUBS_NOT_SUPPORTED,
    MQTT_RC_CONNECTION_RATE_EXCEEDED,
    MQTT_RC_MAXIMUM_CONNECT_TIME,
    MQTT_RC_SUB_IDS_NOT_SUPPORTED,
    MQTT_RC_WILDCARD_SUBS_NOT_SUPPORTED,
};

static bool reason_listed(const struct reason_table *t, uint8_t code)
{
    return memchr(t->codes, code, t->count) != NULL;
}

/*
 * Write by hand an MQTT 5 packet of `t->type` carrying `code`; with a
 * (zero) Property Length after it when `props`, which CONNACK, SUBACK,
 * UNSUBACK and AUTH always have (AUTH's names its method). SUBACK and
 * UNSUBACK carry a Success code for a first filter and `code` for a second
 * when `second`. Returns the size.
 */
static size_t reason_packet(const struct reason_table *t, uint8_t code, bool props, bool second,
                            uint8_t *out)
{
    size_t n = 0;

    switch (t->type) {
    case MQTT_CONNACK:
        return block_add(out, 0, BYTES(0x20, 0x03, 0x00, code, 0x00));
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        out[n++] = (uint8_t)(t->type << 4 | (t->type == MQTT_PUBREL ? 0x02 : 0x00));
        out[n++] = props ? 0x04 : 0x03;
        n = block_add(out, n, BYTES(0x00, 0x01, code));
        if (props)
            out[n++] = 0x00;
        return n;
    case MQTT_SUBACK:
    case MQTT_UNSUBACK:
        out[n++] = (uint8_t)(t->type << 4);
        out[n++] = second ? 0x05 : 0x04;
        n = block_add(out, n, BYTES(0x00, 0x01, 0x00));
        if (second)
            out[n++] = 0x00;
        out[n++] = code;
        return n;
    case MQTT_DISCONNECT:
        if (props)
            return block_add(out, 0, BYTES(0xE0, 0x02, code, 0x00));
        return block_add(out, 0, BYTES(0xE0, 0x01, code));
    case MQTT_AUTH:
        return block_add(out, 0, BYTES(0xF0, 0x06, code, 0x04, 0x15, 0x00, 0x01, 'm'));
    }
    ck_abort_msg("no reason code in packet type %u", t->type);
    return 0;
}

/* The reason code as codec_decode() gave it. */
static uint8_t decoded_reason(const struct mqtt_packet *p)
{
    switch (p->type) {
    case MQTT_CONNACK:
        return p->u.connack.code;
    case MQTT_SUBACK:
    case MQTT_UNSUBACK:
        return p->u.suback.codes[p->u.suback.count - 1];
    case MQTT_DISCONNECT:
    case MQTT_AUTH:
        return p->u.disconnect.reason;
    default:
        return p->u.ack.reason;
    }
}

/* Decode `code` in every form of `t`'s packet: CODEC_OK and the code back, or CODEC_E_REASON. */
static void check_reason(const struct reason_table *t, uint8_t code)
{
    bool listed = reason_listed(t, code);

    for (int form = 0; form < 4; form++) {
        bool props = form & 1, second = form & 2;
        uint8_t buf[16];
        struct mqtt_packet p;
        size_t len;
        int rc;

        if (second && t->type != MQTT_SUBACK && t->type != MQTT_UNSUBACK)
            continue;
        len = reason_packet(t, code, props, second, buf);
        rc = codec_decode(buf, len, MQTT_V5, &p);
        ck_assert_msg(rc == (listed ? CODEC_OK : CODEC_E_REASON),
                      "reason 0x%02X in %s%s%s: got \"%s\"", code, t->name,
                      props ? " with properties" : "", second ? " for a second filter" : "",
                      codec_strerror(rc));
        if (listed)
            ck_assert_uint_eq(decoded_reason(&p), code);
    }
}

/*
 * Each reason code of enum mqtt_reason decodes in exactly the packets whose
 * table lists it, and is CODEC_E_REASON in all the others, server-to-client
 * packets included: the codec decodes both directions. One iteration per code.
 */
START_TEST(test_v5_reason_code_accepted_exactly_where_listed)
{
    uint8_t code = every_reason[_i];
    bool anywhere = false;

    for (size_t t = 0; t < REASON_TABLES; t++) {
        check_reason(&reason_tables[t], code);
        anywhere |= reason_listed(&reason_tables[t], code);
    }
    ck_assert_msg(anywhere, "0x%02X is in no table", code); /* the enum holds no stray value */
}
END_TEST

/* And each packet against every byte value: whatever no table lists is refused. */
START_TEST(test_v5_every_byte_as_reason_code)
{
    const struct reason_table *t = &reason_tables[_i];
    size_t listed = 0;

    for (unsigned code = 0; code <= 0xFF; code++) {
        check_reason(t, (uint8_t)code);
        listed += reason_listed(t, (uint8_t)code);
        if (reason_listed(t, (uint8_t)code))
            ck_assert_msg(memchr(every_reason, (int)code, sizeof every_reason) != NULL,
                          "0x%02X in %s is not in enum mqtt_reason", code, t->name);
    }
    ck_assert_uint_eq(listed, t->count);
}
END_TEST

/* Where the property block of a packet with a reason code sits. */
static enum place reason_place(uint8_t type)
{
    switch (type) {
    case MQTT_CONNACK:
        return PL_CONNACK;
    case MQTT_PUBACK:
        return PL_PUBACK;
    case MQTT_PUBREC:
        return PL_PUBREC;
    case MQTT_PUBREL:
        return PL_PUBREL;
    case MQTT_PUBCOMP:
        return PL_PUBCOMP;
    case MQTT_SUBACK:
        return PL_SUBACK;
    case MQTT_UNSUBACK:
        return PL_UNSUBACK;
    case MQTT_DISCONNECT:
        return PL_DISCONNECT;
    }
    return PL_AUTH;
}

/* Put the reason `*code` into a packet that place_packet() built for `pl`. */
static void set_reason(struct mqtt_packet *p, enum place pl, const uint8_t *code)
{
    switch (pl) {
    case PL_CONNACK:
        p->u.connack.code = *code;
        break;
    case PL_SUBACK:
    case PL_UNSUBACK:
        p->u.suback.codes = code;
        break;
    case PL_DISCONNECT:
    case PL_AUTH:
        p->u.disconnect.reason = *code;
        break;
    default:
        p->u.ack.reason = *code;
        break;
    }
}

/*
 * Encoding each packet with each code of its table gives the bytes written
 * out by reason_packet(), or the short form where the reason is 0 and there
 * are no properties (3.4.2.1 and its twins, 3.14.2.1); with a Reason String
 * added it decodes to the same code and block.
 */
START_TEST(test_v5_reason_code_encode_round_trip)
{
    static const struct mqtt_prop why = {.id = MQTT_PROP_REASON_STRING, .str = LIT("why")};
    static const struct mqtt_prop method = {.id = MQTT_PROP_AUTH_METHOD, .str = LIT("m")};
    const struct reason_table *t = &reason_tables[_i];
    enum place pl = reason_place(t->type);

    for (size_t i = 0; i < t->count; i++) {
        uint8_t code = t->codes[i], block[32], want[16], buf[64];
        struct mqtt_packet in, out;
        size_t want_len, n = 0;

        if (pl == PL_AUTH)
            codec_put_prop(block, sizeof block, &n, &method);
        place_packet(pl, (struct mqtt_props){block, n}, &in);
        set_reason(&in, pl, &t->codes[i]);
        if (code == 0 && (pl == PL_DISCONNECT || (pl >= PL_PUBACK && pl <= PL_PUBCOMP))) {
            want_len = pl == PL_DISCONNECT ? 2 : 4;
            memcpy(want, (const uint8_t[]){frames[pl].first, (uint8_t)(want_len - 2), 0x00, 0x01},
                   want_len);
        } else {
            want_len = reason_packet(t, code, false, false, want);
        }
        ck_assert_msg(codec_encode(&in, MQTT_V5, buf, sizeof buf) == (long)want_len &&
                          memcmp(buf, want, want_len) == 0,
                      "%s with 0x%02X: not the expected bytes", t->name, code);
        round_trip(&in, MQTT_V5, buf, sizeof buf, &out);
        ck_assert_uint_eq(decoded_reason(&out), code);

        codec_put_prop(block, sizeof block, &n, &why);
        place_packet(pl, (struct mqtt_props){block, n}, &in);
        set_reason(&in, pl, &t->codes[i]);
        round_trip(&in, MQTT_V5, buf, sizeof buf, &out);
        ck_assert_uint_eq(decoded_reason(&out), code);
        ck_assert(props_same(place_props(&out, pl), (struct mqtt_props){block, n}));
    }
}
END_TEST

/* MQTT 3.1.1: CONNACK return codes 0-5 (3.2.2.3), SUBACK 0, 1, 2 and 0x80 (3.9.3). */
START_TEST(test_v311_return_codes)
{
    for (unsigned code = 0; code <= 0xFF; code++) {
        struct mqtt_packet p;
        uint8_t connack[] = {0x20, 0x02, 0x00, (uint8_t)code};
        uint8_t suback[] = {0x90, 0x03, 0x00, 0x01, (uint8_t)code};
        bool sub_ok = code <= 2 || code == MQTT_SUBACK_FAILURE;

        ck_assert_int_eq(codec_decode(connack, sizeof connack, MQTT_V311, &p),
                         code <= MQTT_CONNACK_NOT_AUTHORIZED ? CODEC_OK : CODEC_E_REASON);
        ck_assert_int_eq(codec_decode(suback, sizeof suback, MQTT_V311, &p),
                         sub_ok ? CODEC_OK : CODEC_E_REASON);
        ck_assert_int_eq(codec_decode(suback, sizeof suback, MQTT_V31, &p),
                         sub_ok ? CODEC_OK : CODEC_E_REASON);
    }
    for (uint8_t code = 0; code <= MQTT_CONNACK_NOT_AUTHORIZED; code++) {
        struct mqtt_packet in = {.type = MQTT_CONNACK}, out;
        uint8_t buf[8];

        in.u.connack.code = code;
        ck_assert_uint_eq(round_trip(&in, MQTT_V311, buf, sizeof buf, &out), 4);
        ck_assert_uint_eq(out.u.connack.code, code);
    }
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

    /* One iteration per cell, property or code: a failure names its row. */
    tc = tcase_create("v5-properties");
    tcase_add_loop_test(tc, test_MQTT_2_2_2_2_every_property_in_every_packet, 0,
                        (int)(PROP_ROWS * PL_COUNT));
    tcase_add_loop_test(tc, test_v5_property_more_than_once, 0, (int)PROP_ROWS);
    tcase_add_loop_test(tc, test_v5_user_property_repeats_in_order, 0, PL_COUNT);
    tcase_add_loop_test(tc, test_v5_byte_properties_are_0_or_1, 0, 8);
    tcase_add_loop_test(tc, test_v5_property_value_table, 0,
                        (int)(sizeof value_rows / sizeof value_rows[0]));
    tcase_add_loop_test(tc, test_MQTT_1_5_4_strings_in_properties, 0, 11);
    tcase_add_loop_test(tc, test_v5_property_value_cut_short, 0, (int)PROP_ROWS);
    tcase_add_loop_test(tc, test_v5_property_length, 0, PL_COUNT);
    tcase_add_loop_test(tc, test_put_prop_round_trips_every_identifier, 0, (int)PROP_ROWS);
    tcase_add_test(tc, test_MQTT_3_15_2_2_2_auth_needs_its_method);
    suite_add_tcase(s, tc);

    tc = tcase_create("v5-reason-codes");
    tcase_add_loop_test(tc, test_v5_reason_code_accepted_exactly_where_listed, 0,
                        (int)sizeof every_reason);
    tcase_add_loop_test(tc, test_v5_every_byte_as_reason_code, 0, (int)REASON_TABLES);
    tcase_add_loop_test(tc, test_v5_reason_code_encode_round_trip, 0, (int)REASON_TABLES);
    tcase_add_test(tc, test_v311_return_codes);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return check_tap_run(codec_suite());
}
