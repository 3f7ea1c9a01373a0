/*
 * Unit tests of the SPEC §5 limits and their MQTT 3.1.1 answers, driving the
 * broker core in-process: one event_base, one broker, and per simulated client
 * a bufferevent pair whose broker end is handed to client_accept(). Packets are
 * built with the codec and answers decoded from the client end's input.
 *
 * A bufferevent pair does not tell one end that the other was freed, so a
 * closed connection is recognised by its conn leaving broker->conns (and the
 * client end losing its partner). Tests are named after the limit or clause.
 */
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "alloc_fail.h"
#include "check_tap.h"
#include "broker/broker.h"
#include "broker/client.h"
#include "broker/conn.h"
#include "broker/idset.h"
#include "broker/instance.h"
#include "broker/session.h"
#include "broker/timers.h"
#include "codec/codec.h"
#include "util/limits.h"
#include "util/log.h"

#define MAX_CLIENTS 8
#define PUMP_MAX_ITERATIONS 50

/* One simulated client: the client end of a pair, and the id of its broker-side conn. */
struct client {
    struct bufferevent *bev;
    uint64_t conn_id;
};

static struct event_base *base;
static struct broker *broker;
static struct client clients[MAX_CLIENTS];
static size_t client_count;

/* One packet received by a client, copied out of the input buffer. */
struct rx {
    uint8_t type;
    uint8_t flags;
    bool session_present; /* CONNACK */
    uint8_t code;         /* CONNACK */
    uint16_t packet_id;
    uint8_t qos; /* PUBLISH */
    bool dup;
    bool retain;
    char topic[512];
    uint8_t payload[512];
    size_t payload_len;
    uint8_t codes[512]; /* SUBACK */
    size_t code_count;
};

/* ------------------------------------------------------------ the loop */

static struct limits default_limits(void)
{
    struct limits l;
    limits_init(&l);
    return l;
}

static void start(const struct limits *l)
{
    base = event_base_new();
    ck_assert_ptr_nonnull(base);
    broker = broker_new(base, l);
    ck_assert_ptr_nonnull(broker);
}

static void teardown(void)
{
    /* Client ends first: their input may hold references to the broker's messages. */
    for (size_t i = 0; i < client_count; i++)
        bufferevent_free(clients[i].bev);
    client_count = 0;
    if (broker)
        broker_free(broker);
    broker = NULL;
    if (base)
        event_base_free(base);
    base = NULL;
}

/* Run the loop until no callback is pending; fail if it never settles. */
static void pump(void)
{
    int idle = 0;
    for (int i = 0; i < PUMP_MAX_ITERATIONS; i++) {
        event_base_loop(base, EVLOOP_NONBLOCK);
        if (event_base_get_num_events(base, EVENT_BASE_COUNT_ACTIVE) != 0)
            idle = 0;
        else if (++idle == 2)
            return;
    }
    ck_abort_msg("the event loop is still busy after %d iterations", PUMP_MAX_ITERATIONS);
}

/* ------------------------------------------------------------ clients */

static struct client *client_new(void)
{
    struct bufferevent *pair[2];
    /* Each client "from" 192.0.2.1 (a documentation address), its index the port. */
    struct link_meta meta = {.transport = LINK_TCP};
    meta.peer =
        (struct link_peer){.family = AF_INET, .port = (uint16_t)client_count, .ip = {192, 0, 2, 1}};

    ck_assert_uint_lt(client_count, MAX_CLIENTS);
    ck_assert_int_eq(bufferevent_pair_new(base, 0, pair), 0);
    struct conn *c = client_accept(broker, &(struct link_stream){.bev = pair[0]}, &meta);
    ck_assert_ptr_nonnull(c);

    struct client *cl = &clients[client_count++];
    cl->bev = pair[1];
    cl->conn_id = c->id;
    bufferevent_enable(cl->bev, EV_READ | EV_WRITE);
    pump();
    return cl;
}

/* The broker-side conn of `cl`, or NULL once the broker has freed it. */
static struct conn *client_conn(const struct client *cl)
{
    size_t n = 0;
    struct conn *found = NULL;
    for (struct conn *c = broker->conns; c; c = c->next) {
        n++;
        if (c->id == cl->conn_id)
            found = c;
    }
    ck_assert_uint_eq(n, broker->conn_count);
    return found;
}

static void expect_open(const struct client *cl)
{
    struct conn *c = client_conn(cl);
    ck_assert_msg(c != NULL, "conn %llu was closed", (unsigned long long)cl->conn_id);
    ck_assert_int_eq(c->state, CONN_ACTIVE);
}

/* Closed by the broker and reaped: gone from the conn list, its end of the pair freed. */
static void expect_closed(const struct client *cl)
{
    ck_assert_msg(client_conn(cl) == NULL, "conn %llu is still in the broker's list",
                  (unsigned long long)cl->conn_id);
    ck_assert_ptr_null(bufferevent_pair_get_partner(cl->bev));
}

static void client_send_raw(struct client *cl, const void *data, size_t len)
{
    ck_assert_int_eq(bufferevent_write(cl->bev, data, len), 0);
    pump();
}

/* Put `p` in the client's output; the broker reads it at the next pump(). */
static void client_queue(struct client *cl, const struct mqtt_packet *p, uint8_t version)
{
    long need = codec_encode(p, version, NULL, 0);
    ck_assert_int_gt(need, 0);
    uint8_t *buf = malloc((size_t)need);
    ck_assert_ptr_nonnull(buf);
    ck_assert_int_eq(codec_encode(p, version, buf, (size_t)need), need);
    ck_assert_int_eq(bufferevent_write(cl->bev, buf, (size_t)need), 0);
    free(buf);
}

static void client_send(struct client *cl, const struct mqtt_packet *p, uint8_t version)
{
    client_queue(cl, p, version);
    pump();
}

/* Take the next whole packet from the client's input. False when there is none. */
static bool client_recv(struct client *cl, struct rx *rx)
{
    struct evbuffer *in = bufferevent_get_input(cl->bev);
    size_t avail = evbuffer_get_length(in);
    uint8_t head[5];
    uint8_t type_flags;
    size_t header_len;
    uint32_t remaining;

    if (avail < 2)
        return false;
    evbuffer_copyout(in, head, avail < sizeof(head) ? avail : sizeof(head));
    int rc = codec_frame(head, avail < sizeof(head) ? avail : sizeof(head), &type_flags,
                         &header_len, &remaining);
    if (rc == CODEC_INCOMPLETE)
        return false;
    ck_assert_int_eq(rc, CODEC_OK);
    size_t total = header_len + remaining;
    if (avail < total)
        return false;
    const uint8_t *buf = evbuffer_pullup(in, (ssize_t)total);
    ck_assert_ptr_nonnull(buf);

    struct mqtt_packet p;
    rc = codec_decode(buf, total, MQTT_V311, &p);
    ck_assert_msg(rc == CODEC_OK, "broker sent a packet the codec refuses: %s", codec_strerror(rc));
    memset(rx, 0, sizeof(*rx));
    rx->type = p.type;
    rx->flags = p.flags;
    switch (p.type) {
    case MQTT_CONNACK:
        rx->session_present = p.u.connack.session_present;
        rx->code = p.u.connack.code;
        break;
    case MQTT_PUBLISH:
        rx->qos = p.u.publish.qos;
        rx->dup = p.u.publish.dup;
        rx->retain = p.u.publish.retain;
        rx->packet_id = p.u.publish.packet_id;
        ck_assert_uint_lt(p.u.publish.topic.len, sizeof(rx->topic));
        memcpy(rx->topic, p.u.publish.topic.data, p.u.publish.topic.len);
        ck_assert_uint_le(p.u.publish.payload.len, sizeof(rx->payload));
        if (p.u.publish.payload.len)
            memcpy(rx->payload, p.u.publish.payload.data, p.u.publish.payload.len);
        rx->payload_len = p.u.publish.payload.len;
        break;
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        rx->packet_id = p.u.ack.packet_id;
        break;
    case MQTT_SUBACK:
    case MQTT_UNSUBACK:
        rx->packet_id = p.u.suback.packet_id;
        ck_assert_uint_le(p.u.suback.count, sizeof(rx->codes));
        if (p.u.suback.count) /* UNSUBACK has no codes before MQTT 5 */
            memcpy(rx->codes, p.u.suback.codes, p.u.suback.count);
        rx->code_count = p.u.suback.count;
        break;
    default:
        break;
    }
    evbuffer_drain(in, total);
    return true;
}

static struct rx expect_packet(struct client *cl, uint8_t type)
{
    struct rx rx;
    ck_assert_msg(client_recv(cl, &rx), "expected a packet of type %u, got none", type);
    ck_assert_msg(rx.type == type, "expected a packet of type %u, got type %u", type, rx.type);
    return rx;
}

static void expect_nothing(struct client *cl)
{
    struct rx rx;
    bool got = client_recv(cl, &rx);
    ck_assert_msg(!got, "expected no packet, got one of type %u", rx.type);
    ck_assert_uint_eq(evbuffer_get_length(bufferevent_get_input(cl->bev)), 0);
}

/* ------------------------------------------------------------ packets */

static void send_connect_len(struct client *cl, uint8_t version, const char *id, size_t id_len,
                             bool clean, uint16_t keepalive)
{
    struct mqtt_packet p = {.type = MQTT_CONNECT};
    p.u.connect.clean = clean;
    p.u.connect.keepalive = keepalive;
    p.u.connect.client_id = (struct mqtt_buf){(const uint8_t *)id, id_len};
    client_send(cl, &p, version);
}

static void send_connect(struct client *cl, uint8_t version, const char *id, bool clean,
                         uint16_t keepalive)
{
    send_connect_len(cl, version, id, strlen(id), clean, keepalive);
}

static void expect_connack(struct client *cl, uint8_t code, bool session_present)
{
    struct rx rx = expect_packet(cl, MQTT_CONNACK);
    ck_assert_uint_eq(rx.code, code);
    ck_assert_int_eq(rx.session_present, session_present);
}

/* A new client connected with MQTT 3.1.1 as `id`; CONNACK 0 already read. */
static struct client *client_connect(const char *id, bool clean, bool session_present)
{
    struct client *cl = client_new();
    send_connect(cl, MQTT_V311, id, clean, 60);
    expect_connack(cl, MQTT_CONNACK_ACCEPTED, session_present);
    expect_open(cl);
    return cl;
}

static void send_subscribe(struct client *cl, uint16_t packet_id, const char *const *filters,
                           const uint8_t *qos, size_t n, bool subscribe)
{
    size_t need = 0;
    for (size_t i = 0; i < n; i++)
        codec_put_topic(NULL, 0, &need, filters[i], strlen(filters[i]), subscribe,
                        subscribe ? qos[i] : 0);
    uint8_t *entries = malloc(need);
    ck_assert_ptr_nonnull(entries);
    size_t pos = 0;
    for (size_t i = 0; i < n; i++)
        codec_put_topic(entries, need, &pos, filters[i], strlen(filters[i]), subscribe,
                        subscribe ? qos[i] : 0);
    ck_assert_uint_eq(pos, need);

    struct mqtt_packet p = {.type = subscribe ? MQTT_SUBSCRIBE : MQTT_UNSUBSCRIBE};
    p.u.subscribe.packet_id = packet_id;
    p.u.subscribe.entries = (struct mqtt_buf){entries, need};
    p.u.subscribe.count = n;
    client_send(cl, &p, MQTT_V311);
    free(entries);
}

static void expect_suback(struct client *cl, uint16_t packet_id, const uint8_t *codes, size_t n)
{
    struct rx rx = expect_packet(cl, MQTT_SUBACK);
    ck_assert_uint_eq(rx.packet_id, packet_id);
    ck_assert_uint_eq(rx.code_count, n);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(rx.codes[i] == codes[i], "SUBACK code %zu: expected 0x%02x, got 0x%02x", i,
                      codes[i], rx.codes[i]);
}

/* SUBSCRIBE to one filter; returns the SUBACK code. */
static uint8_t subscribe1(struct client *cl, uint16_t packet_id, const char *filter, uint8_t qos)
{
    send_subscribe(cl, packet_id, &filter, &qos, 1, true);
    struct rx rx = expect_packet(cl, MQTT_SUBACK);
    ck_assert_uint_eq(rx.packet_id, packet_id);
    ck_assert_uint_eq(rx.code_count, 1);
    return rx.codes[0];
}

static void unsubscribe1(struct client *cl, uint16_t packet_id, const char *filter)
{
    send_subscribe(cl, packet_id, &filter, NULL, 1, false);
    struct rx rx = expect_packet(cl, MQTT_UNSUBACK);
    ck_assert_uint_eq(rx.packet_id, packet_id);
}

static void send_publish_len(struct client *cl, const char *topic, size_t topic_len,
                             const void *payload, size_t payload_len, uint8_t qos,
                             uint16_t packet_id, bool dup)
{
    struct mqtt_packet p = {.type = MQTT_PUBLISH};
    p.u.publish = (struct mqtt_publish){
        .qos = qos,
        .dup = dup,
        .packet_id = packet_id,
        .topic = {(const uint8_t *)topic, topic_len},
        .payload = {payload, payload_len},
    };
    client_send(cl, &p, MQTT_V311);
}

static void send_publish(struct client *cl, const char *topic, const char *payload, uint8_t qos,
                         uint16_t packet_id)
{
    send_publish_len(cl, topic, strlen(topic), payload, strlen(payload), qos, packet_id, false);
}

static void send_ack(struct client *cl, uint8_t type, uint16_t packet_id)
{
    struct mqtt_packet p = {.type = type};
    p.u.ack.packet_id = packet_id;
    client_send(cl, &p, MQTT_V311);
}

static void send_simple(struct client *cl, uint8_t type)
{
    struct mqtt_packet p = {.type = type};
    client_send(cl, &p, MQTT_V311);
}

static struct rx expect_ack(struct client *cl, uint8_t type, uint16_t packet_id)
{
    struct rx rx = expect_packet(cl, type);
    ck_assert_uint_eq(rx.packet_id, packet_id);
    return rx;
}

/*
 * PUBLISH with RETAIN 1 at QoS 2 (packet id `id`) and its exchange up to
 * PUBCOMP: the broker keeps it for later subscribers (an empty payload clears).
 */
static void send_retained(struct client *cl, const char *topic, const char *payload, uint16_t id)
{
    struct mqtt_packet p = {.type = MQTT_PUBLISH};
    p.u.publish = (struct mqtt_publish){
        .qos = 2,
        .retain = true,
        .packet_id = id,
        .topic = {(const uint8_t *)topic, strlen(topic)},
        .payload = {(const uint8_t *)payload, strlen(payload)},
    };
    client_send(cl, &p, MQTT_V311);
    expect_ack(cl, MQTT_PUBREC, id);
    send_ack(cl, MQTT_PUBREL, id);
    expect_ack(cl, MQTT_PUBCOMP, id);
}

/* The next packet is a PUBLISH on `topic` with `payload` at `qos`; returns it. */
static struct rx expect_publish(struct client *cl, const char *topic, const char *payload,
                                uint8_t qos)
{
    struct rx rx = expect_packet(cl, MQTT_PUBLISH);
    ck_assert_str_eq(rx.topic, topic);
    ck_assert_uint_eq(rx.payload_len, strlen(payload));
    ck_assert_msg(memcmp(rx.payload, payload, rx.payload_len) == 0,
                  "expected payload '%s', got '%.*s'", payload, (int)rx.payload_len,
                  (const char *)rx.payload);
    ck_assert_uint_eq(rx.qos, qos);
    if (qos > 0)
        ck_assert_uint_ne(rx.packet_id, 0);
    return rx;
}

/*
 * The next `n` packets are the retained messages on `topics` (any order: the
 * tree does not promise one), each exactly once, with RETAIN 1 at `qos`, the
 * payload equal to the topic without a leading '/'; nothing follows them.
 */
static void expect_retained_once(struct client *cl, const char *const *topics, size_t n,
                                 uint8_t qos)
{
    bool seen[16] = {false};
    uint16_t ids[16];
    ck_assert_uint_le(n, 16);
    for (size_t i = 0; i < n; i++) {
        struct rx rx = expect_packet(cl, MQTT_PUBLISH);
        ck_assert(rx.retain);
        ck_assert_uint_eq(rx.qos, qos);
        size_t k = 0;
        while (k < n && strcmp(rx.topic, topics[k]) != 0)
            k++;
        ck_assert_msg(k < n, "unexpected retained message on '%s'", rx.topic);
        ck_assert_msg(!seen[k], "retained message on '%s' sent twice", rx.topic);
        seen[k] = true;
        const char *want = topics[k][0] == '/' ? topics[k] + 1 : topics[k];
        ck_assert_uint_eq(rx.payload_len, strlen(want));
        ck_assert_mem_eq(rx.payload, want, rx.payload_len);
        ids[i] = rx.packet_id;
    }
    expect_nothing(cl);
    /* Complete the exchanges, so the window is empty for what the test does next. */
    for (size_t i = 0; qos > 0 && i < n; i++)
        send_ack(cl, qos == 1 ? MQTT_PUBACK : MQTT_PUBREC, ids[i]);
    for (size_t i = 0; qos == 2 && i < n; i++) {
        expect_ack(cl, MQTT_PUBREL, ids[i]);
        send_ack(cl, MQTT_PUBCOMP, ids[i]);
    }
    expect_nothing(cl);
}

/* A string of `n` copies of `ch` (n < sizeof buffer). */
static const char *repeat(char *buf, size_t size, char ch, size_t n)
{
    ck_assert_uint_lt(n, size);
    memset(buf, ch, n);
    buf[n] = '\0';
    return buf;
}

/* ------------------------------------------------------------ client identifier */

START_TEST(test_SPEC_5_client_id_of_max_length_accepted)
{
    struct limits l = default_limits();
    l.max_client_id = 10;
    start(&l);

    struct client *cl = client_new();
    send_connect(cl, MQTT_V311, "abcdefghij", true, 60);
    expect_connack(cl, MQTT_CONNACK_ACCEPTED, false);
    expect_open(cl);
    ck_assert_str_eq(client_conn(cl)->client_id, "abcdefghij");
}
END_TEST

START_TEST(test_SPEC_5_client_id_over_max_refused_with_connack_2)
{
    struct limits l = default_limits();
    l.max_client_id = 10;
    start(&l);

    struct client *cl = client_new();
    send_connect(cl, MQTT_V311, "abcdefghijk", true, 60);
    expect_connack(cl, MQTT_CONNACK_ID_REJECTED, false);
    expect_nothing(cl);
    expect_closed(cl);
}
END_TEST

START_TEST(test_SPEC_5_default_client_id_limit_is_64)
{
    struct limits l = default_limits();
    char id[128];
    start(&l);

    struct client *ok = client_new();
    send_connect(ok, MQTT_V311, repeat(id, sizeof(id), 'a', 64), true, 60);
    expect_connack(ok, MQTT_CONNACK_ACCEPTED, false);
    expect_open(ok);

    struct client *refused = client_new();
    send_connect(refused, MQTT_V311, repeat(id, sizeof(id), 'b', 65), true, 60);
    expect_connack(refused, MQTT_CONNACK_ID_REJECTED, false);
    expect_closed(refused);
}
END_TEST

/* max-client-id counts characters (SPEC §5), not UTF-8 bytes: 4 two-byte characters fit in 4. */
START_TEST(test_SPEC_5_client_id_limit_counts_characters_not_bytes)
{
    struct limits l = default_limits();
    l.max_client_id = 4;
    start(&l);

    struct client *cl = client_new();
    send_connect(cl, MQTT_V311, "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", true, 60); /* "éééé" */
    expect_connack(cl, MQTT_CONNACK_ACCEPTED, false);
    expect_open(cl);
}
END_TEST

/*
 * The size bound on an incoming packet depends on its type: a CONNECT whose
 * client id max-client-id allows (2000 of 2000) is answered even when
 * max-payload is small.
 */
START_TEST(test_SPEC_5_client_id_limit_independent_of_max_payload)
{
    struct limits l = default_limits();
    static char id[2001];
    l.max_client_id = 2000;
    l.max_payload = 100;
    start(&l);

    struct client *cl = client_new();
    send_connect(cl, MQTT_V311, repeat(id, sizeof(id), 'c', 2000), true, 60);
    expect_connack(cl, MQTT_CONNACK_ACCEPTED, false);
    expect_open(cl);
}
END_TEST

START_TEST(test_MQTT_3_1_3_6_empty_client_id_with_clean_1_accepted)
{
    struct limits l = default_limits();
    start(&l);

    struct client *cl = client_new();
    send_connect(cl, MQTT_V311, "", true, 60);
    expect_connack(cl, MQTT_CONNACK_ACCEPTED, false);
    expect_open(cl);
    /* The broker made one up; it must be non-empty. */
    ck_assert_str_ne(client_conn(cl)->client_id, "");

    /* A second anonymous client gets its own session, not a take-over. */
    struct client *other = client_new();
    send_connect(other, MQTT_V311, "", true, 60);
    expect_connack(other, MQTT_CONNACK_ACCEPTED, false);
    expect_open(other);
    expect_open(cl);
    ck_assert_str_ne(client_conn(cl)->client_id, client_conn(other)->client_id);
}
END_TEST

START_TEST(test_MQTT_3_1_3_8_empty_client_id_with_clean_0_refused_with_connack_2)
{
    struct limits l = default_limits();
    start(&l);

    struct client *cl = client_new();
    send_connect(cl, MQTT_V311, "", false, 60);
    expect_connack(cl, MQTT_CONNACK_ID_REJECTED, false);
    expect_nothing(cl);
    expect_closed(cl);
}
END_TEST

START_TEST(test_MQTT_3_1_empty_client_id_refused_with_connack_2)
{
    struct limits l = default_limits();
    start(&l);

    struct client *cl = client_new();
    send_connect(cl, MQTT_V31, "", true, 60); /* "MQIsdp" level 3 */
    expect_connack(cl, MQTT_CONNACK_ID_REJECTED, false);
    expect_nothing(cl);
    expect_closed(cl);

    /* MQTT 3.1 with an id is served. */
    struct client *ok = client_new();
    send_connect(ok, MQTT_V31, "old", true, 60);
    expect_connack(ok, MQTT_CONNACK_ACCEPTED, false);
    expect_open(ok);
}
END_TEST

START_TEST(test_MQTT_3_1_2_2_unknown_protocol_level_refused_with_connack_1)
{
    struct limits l = default_limits();
    start(&l);

    struct client *cl = client_new();
    /* "MQTT" level 2; a level above 5 gets MQTT 5's 0x84 (tests/integration/test_mqtt5_connect) */
    send_connect(cl, 2, "older", true, 60);
    expect_connack(cl, MQTT_CONNACK_BAD_VERSION, false);
    expect_nothing(cl);
    expect_closed(cl);
}
END_TEST

/* ------------------------------------------------------------ keep-alive */

static unsigned keepalive_after_connect(const struct limits *l, uint16_t requested)
{
    start(l);
    struct client *cl = client_new();
    send_connect(cl, MQTT_V311, "ka", true, requested);
    expect_connack(cl, MQTT_CONNACK_ACCEPTED, false);
    expect_open(cl);
    return client_conn(cl)->keepalive;
}

START_TEST(test_SPEC_5_keepalive_0_becomes_max)
{
    struct limits l = default_limits();
    ck_assert_uint_eq(keepalive_after_connect(&l, 0), LIMITS_DEFAULT_KEEPALIVE_MAX);
}
END_TEST

START_TEST(test_SPEC_5_keepalive_over_max_becomes_max)
{
    struct limits l = default_limits();
    ck_assert_uint_eq(keepalive_after_connect(&l, 5000), LIMITS_DEFAULT_KEEPALIVE_MAX);
}
END_TEST

START_TEST(test_SPEC_5_keepalive_over_configured_max_becomes_it)
{
    struct limits l = default_limits();
    l.keepalive_max = 30;
    ck_assert_uint_eq(keepalive_after_connect(&l, 31), 30);
}
END_TEST

START_TEST(test_SPEC_5_keepalive_below_min_raised_to_min)
{
    struct limits l = default_limits();
    l.keepalive_min = 10;
    ck_assert_uint_eq(keepalive_after_connect(&l, 5), 10);
}
END_TEST

START_TEST(test_SPEC_5_keepalive_within_bounds_kept)
{
    struct limits l = default_limits();
    l.keepalive_min = 10;
    ck_assert_uint_eq(keepalive_after_connect(&l, 10), 10);
    teardown();
    ck_assert_uint_eq(keepalive_after_connect(&l, 300), 300);
    teardown();
    ck_assert_uint_eq(keepalive_after_connect(&l, 60), 60);
}
END_TEST

/* ------------------------------------------------------------ SUBSCRIBE filters */

START_TEST(test_SPEC_5_filter_of_max_length_granted)
{
    struct limits l = default_limits();
    l.max_topic_length = 16;
    start(&l);

    struct client *sub = client_connect("sub", true, false);
    ck_assert_uint_eq(subscribe1(sub, 1, "abcdefgh/jklmnop", 1), 1); /* 16 characters */

    struct client *pub = client_connect("pub", true, false);
    send_publish(pub, "abcdefgh/jklmnop", "hi", 1, 1);
    expect_ack(pub, MQTT_PUBACK, 1);
    expect_publish(sub, "abcdefgh/jklmnop", "hi", 1);
}
END_TEST

START_TEST(test_SPEC_5_filter_over_max_refused_others_granted)
{
    struct limits l = default_limits();
    l.max_topic_length = 16;
    start(&l);

    struct client *sub = client_connect("sub", true, false);
    const char *filters[] = {"ok/one", "abcdefgh/jklmnopq", "ok/two"}; /* the middle: 17 */
    const uint8_t qos[] = {1, 0, 2};
    const uint8_t want[] = {1, MQTT_SUBACK_FAILURE, 2};
    send_subscribe(sub, 7, filters, qos, 3, true);
    expect_suback(sub, 7, want, 3);
    expect_open(sub);
    ck_assert_uint_eq(client_conn(sub)->session->sub_count, 2);
}
END_TEST

START_TEST(test_SPEC_3_filter_with_bad_character_refused)
{
    struct limits l = default_limits();
    start(&l);

    struct client *sub = client_connect("sub", true, false);
    const char *filters[] = {"a b", "a!", "fine/one", "caf\xc3\xa9"};
    const uint8_t qos[] = {0, 0, 0, 0};
    const uint8_t want[] = {MQTT_SUBACK_FAILURE, MQTT_SUBACK_FAILURE, 0, MQTT_SUBACK_FAILURE};
    send_subscribe(sub, 2, filters, qos, 4, true);
    expect_suback(sub, 2, want, 4);
    expect_open(sub);
}
END_TEST

START_TEST(test_SPEC_3_star_inside_a_level_refused)
{
    struct limits l = default_limits();
    start(&l);

    struct client *sub = client_connect("sub", true, false);
    ck_assert_uint_eq(subscribe1(sub, 1, "a/*b", 0), MQTT_SUBACK_FAILURE);
    ck_assert_uint_eq(subscribe1(sub, 2, "a/b*", 0), MQTT_SUBACK_FAILURE);
    expect_open(sub);
}
END_TEST

START_TEST(test_SPEC_3_star_as_whole_level_granted_as_plus)
{
    struct limits l = default_limits();
    start(&l);

    struct client *sub = client_connect("sub", true, false);
    ck_assert_uint_eq(subscribe1(sub, 1, "*/temp", 1), 1);

    struct client *pub = client_connect("pub", true, false);
    send_publish(pub, "kitchen/temp", "21", 1, 1);
    expect_ack(pub, MQTT_PUBACK, 1);
    send_publish(pub, "kitchen/humidity", "40", 1, 2);
    expect_ack(pub, MQTT_PUBACK, 2);
    expect_publish(sub, "kitchen/temp", "21", 1);
    expect_nothing(sub);
}
END_TEST

/* ------------------------------------------------------------ max-subscriptions */

START_TEST(test_SPEC_5_max_subscriptions)
{
    struct limits l = default_limits();
    l.max_subscriptions = 3;
    start(&l);

    struct client *sub = client_connect("sub", true, false);
    ck_assert_uint_eq(subscribe1(sub, 1, "a", 0), 0);
    ck_assert_uint_eq(subscribe1(sub, 2, "b", 0), 0);
    ck_assert_uint_eq(subscribe1(sub, 3, "c", 0), 0);
    ck_assert_uint_eq(subscribe1(sub, 4, "d", 0), MQTT_SUBACK_FAILURE);
    expect_open(sub);

    /* Re-subscribing replaces: granted at the new QoS, still three. */
    ck_assert_uint_eq(subscribe1(sub, 5, "a", 1), 1);
    ck_assert_uint_eq(client_conn(sub)->session->sub_count, 3);

    /* The same filter with a leading '/' is the same filter (SPEC §3). */
    ck_assert_uint_eq(subscribe1(sub, 6, "/b", 0), 0);
    ck_assert_uint_eq(client_conn(sub)->session->sub_count, 3);

    unsubscribe1(sub, 7, "c");
    ck_assert_uint_eq(subscribe1(sub, 8, "d", 0), 0);
    ck_assert_uint_eq(subscribe1(sub, 9, "e", 0), MQTT_SUBACK_FAILURE);

    /* The replaced subscription delivers at its new QoS, once. */
    struct client *pub = client_connect("pub", true, false);
    send_publish(pub, "a", "x", 1, 1);
    expect_ack(pub, MQTT_PUBACK, 1);
    expect_publish(sub, "a", "x", 1);
    expect_nothing(sub);
}
END_TEST

START_TEST(test_SPEC_5_max_subscriptions_within_one_subscribe)
{
    struct limits l = default_limits();
    l.max_subscriptions = 3;
    start(&l);

    struct client *sub = client_connect("sub", true, false);
    const char *filters[] = {"a", "b", "c", "d", "a"};
    const uint8_t qos[] = {0, 1, 2, 0, 2};
    const uint8_t want[] = {0, 1, 2, MQTT_SUBACK_FAILURE, 2};
    send_subscribe(sub, 11, filters, qos, 5, true);
    expect_suback(sub, 11, want, 5);
    ck_assert_uint_eq(client_conn(sub)->session->sub_count, 3);
}
END_TEST

/*
 * A SUBSCRIBE within max-subscriptions and max-topic-length is answered
 * whatever max-payload is: ten filters of full length under max-payload 100.
 */
START_TEST(test_SPEC_5_subscribe_within_limits_answered_whatever_max_payload)
{
    struct limits l = default_limits();
    static char names[10][130];
    const char *filters[10];
    uint8_t qos[10], want[10];
    l.max_payload = 100;
    start(&l);

    struct client *sub = client_connect("sub", true, false);
    for (size_t i = 0; i < 10; i++) {
        repeat(names[i], sizeof(names[i]), 'a', LIMITS_DEFAULT_MAX_TOPIC_LENGTH);
        names[i][0] = (char)('0' + i);
        filters[i] = names[i];
        qos[i] = want[i] = 1;
    }
    send_subscribe(sub, 3, filters, qos, 10, true);
    expect_suback(sub, 3, want, 10);
    expect_open(sub);
}
END_TEST

/* ------------------------------------------------------------ PUBLISH */

START_TEST(test_SPEC_5_publish_topic_of_max_length_accepted)
{
    struct limits l = default_limits();
    l.max_topic_length = 16;
    start(&l);

    struct client *sub = client_connect("sub", true, false);
    ck_assert_uint_eq(subscribe1(sub, 1, "#", 1), 1);
    struct client *pub = client_connect("pub", true, false);
    send_publish(pub, "abcdefgh/jklmnop", "x", 1, 9);
    expect_ack(pub, MQTT_PUBACK, 9);
    expect_publish(sub, "abcdefgh/jklmnop", "x", 1);
}
END_TEST

START_TEST(test_SPEC_5_publish_topic_over_max_closes_without_puback)
{
    struct limits l = default_limits();
    l.max_topic_length = 16;
    start(&l);

    struct client *sub = client_connect("sub", true, false);
    ck_assert_uint_eq(subscribe1(sub, 1, "#", 1), 1);
    struct client *pub = client_connect("pub", true, false);
    send_publish(pub, "abcdefgh/jklmnopq", "x", 1, 9);
    expect_nothing(pub);
    expect_closed(pub);
    expect_nothing(sub);
    expect_open(sub);
}
END_TEST

START_TEST(test_SPEC_3_publish_topic_with_bad_character_closes)
{
    struct limits l = default_limits();
    start(&l);

    struct client *sub = client_connect("sub", true, false);
    ck_assert_uint_eq(subscribe1(sub, 1, "#", 1), 1);

    struct client *space = client_connect("space", true, false);
    send_publish(space, "a b", "x", 1, 1);
    expect_nothing(space);
    expect_closed(space);

    struct client *bang = client_connect("bang", true, false);
    send_publish(bang, "a!", "x", 0, 0);
    expect_nothing(bang);
    expect_closed(bang);

    expect_nothing(sub);
    expect_open(sub);
}
END_TEST

START_TEST(test_SPEC_5_payload_of_max_size_accepted)
{
    struct limits l = default_limits();
    uint8_t payload[100];
    l.max_payload = 100;
    start(&l);

    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = (uint8_t)i;
    struct client *sub = client_connect("sub", true, false);
    ck_assert_uint_eq(subscribe1(sub, 1, "p", 1), 1);
    struct client *pub = client_connect("pub", true, false);
    send_publish_len(pub, "p", 1, payload, sizeof(payload), 1, 5, false);
    expect_ack(pub, MQTT_PUBACK, 5);
    expect_open(pub);

    struct rx rx = expect_packet(sub, MQTT_PUBLISH);
    ck_assert_str_eq(rx.topic, "p");
    ck_assert_uint_eq(rx.payload_len, sizeof(payload));
    ck_assert_mem_eq(rx.payload, payload, sizeof(payload));
}
END_TEST

START_TEST(test_SPEC_5_payload_over_max_closes_never_acknowledged)
{
    struct limits l = default_limits();
    uint8_t payload[101] = {0};
    l.max_payload = 100;
    start(&l);

    struct client *sub = client_connect("sub", true, false);
    ck_assert_uint_eq(subscribe1(sub, 1, "p", 1), 1);

    struct client *q1 = client_connect("q1", true, false);
    send_publish_len(q1, "p", 1, payload, sizeof(payload), 1, 5, false);
    expect_nothing(q1);
    expect_closed(q1);

    struct client *q2 = client_connect("q2", true, false);
    send_publish_len(q2, "p", 1, payload, sizeof(payload), 2, 6, false);
    expect_nothing(q2);
    expect_closed(q2);

    struct client *q0 = client_connect("q0", true, false);
    send_publish_len(q0, "p", 1, payload, sizeof(payload), 0, 0, false);
    expect_closed(q0);

    expect_nothing(sub);
    expect_open(sub);
}
END_TEST

/* A length announced beyond any allowed packet closes at once, before the bytes arrive. */
START_TEST(test_SPEC_5_oversized_packet_refused_before_buffering)
{
    struct limits l = default_limits();
    l.max_payload = 100;
    start(&l);

    struct client *cl = client_connect("big", true, false);
    const uint8_t head[] = {0x32, 0x80, 0x80, 0x40}; /* PUBLISH QoS 1, 1 MiB to follow */
    client_send_raw(cl, head, sizeof(head));
    expect_nothing(cl);
    expect_closed(cl);
}
END_TEST

START_TEST(test_MQTT_3_3_4_accepted_qos1_publish_reaches_subscriber)
{
    struct limits l = default_limits();
    start(&l);

    struct client *sub = client_connect("sub", true, false);
    ck_assert_uint_eq(subscribe1(sub, 1, "/home/+/temp", 1), 1);
    struct client *pub = client_connect("pub", true, false);
    send_publish(pub, "home/kitchen/temp", "21.5", 1, 42);
    expect_ack(pub, MQTT_PUBACK, 42);

    /* The subscription had the leading slash, so the delivery carries it (SPEC §3). */
    struct rx rx = expect_publish(sub, "/home/kitchen/temp", "21.5", 1);
    ck_assert(!rx.dup);
    ck_assert(!rx.retain);
    send_ack(sub, MQTT_PUBACK, rx.packet_id);
    ck_assert_uint_eq(session_inflight_count(client_conn(sub)->session), 0);
    expect_nothing(sub);
}
END_TEST

/* ------------------------------------------------------------ queues and windows */

START_TEST(test_SPEC_5_max_queued_messages_keeps_the_newest)
{
    struct limits l = default_limits();
    l.max_queued_messages = 3;
    start(&l);

    struct client *sub = client_connect("sleeper", false, false);
    ck_assert_uint_eq(subscribe1(sub, 1, "q", 1), 1);
    send_simple(sub, MQTT_DISCONNECT);
    expect_closed(sub);

    struct client *pub = client_connect("pub", true, false);
    const char *payloads[] = {"m1", "m2", "m3", "m4", "m5"};
    for (uint16_t i = 0; i < 5; i++) {
        send_publish(pub, "q", payloads[i], 1, (uint16_t)(i + 1));
        expect_ack(pub, MQTT_PUBACK, (uint16_t)(i + 1));
    }

    struct client *back = client_connect("sleeper", false, true);
    struct rx a = expect_publish(back, "q", "m3", 1);
    struct rx b = expect_publish(back, "q", "m4", 1);
    struct rx c = expect_publish(back, "q", "m5", 1);
    expect_nothing(back);
    ck_assert_uint_ne(a.packet_id, b.packet_id);
    ck_assert_uint_ne(b.packet_id, c.packet_id);
    ck_assert_uint_ne(a.packet_id, c.packet_id);
}
END_TEST

START_TEST(test_SPEC_5_max_inflight_window)
{
    struct limits l = default_limits();
    l.max_inflight = 2;
    start(&l);

    struct client *sub = client_connect("slow", true, false);
    ck_assert_uint_eq(subscribe1(sub, 1, "w", 1), 1);
    struct client *pub = client_connect("pub", true, false);
    const char *payloads[] = {"m1", "m2", "m3", "m4"};
    for (uint16_t i = 0; i < 4; i++) {
        send_publish(pub, "w", payloads[i], 1, (uint16_t)(i + 1));
        expect_ack(pub, MQTT_PUBACK, (uint16_t)(i + 1));
    }

    struct rx m1 = expect_publish(sub, "w", "m1", 1);
    struct rx m2 = expect_publish(sub, "w", "m2", 1);
    expect_nothing(sub);

    send_ack(sub, MQTT_PUBACK, m1.packet_id);
    struct rx m3 = expect_publish(sub, "w", "m3", 1);
    expect_nothing(sub);

    send_ack(sub, MQTT_PUBACK, m2.packet_id);
    struct rx m4 = expect_publish(sub, "w", "m4", 1);
    expect_nothing(sub);

    send_ack(sub, MQTT_PUBACK, m3.packet_id);
    send_ack(sub, MQTT_PUBACK, m4.packet_id);
    expect_nothing(sub);
    ck_assert_uint_eq(session_inflight_count(client_conn(sub)->session), 0);
    ck_assert_uint_eq(session_queue_count(client_conn(sub)->session), 0);
}
END_TEST

/* ------------------------------------------------------------ QoS 2 */

START_TEST(test_MQTT_4_3_3_qos2_resent_before_pubrel_delivered_once)
{
    struct limits l = default_limits();
    start(&l);

    struct client *sub = client_connect("sub", true, false);
    ck_assert_uint_eq(subscribe1(sub, 1, "x", 2), 2);
    struct client *pub = client_connect("pub", true, false);

    send_publish_len(pub, "x", 1, "once", 4, 2, 7, false);
    expect_ack(pub, MQTT_PUBREC, 7);
    send_publish_len(pub, "x", 1, "once", 4, 2, 7, true); /* the re-send, DUP 1 */
    expect_ack(pub, MQTT_PUBREC, 7);
    expect_nothing(pub);

    struct rx rx = expect_publish(sub, "x", "once", 2);
    expect_nothing(sub);

    send_ack(pub, MQTT_PUBREL, 7);
    expect_ack(pub, MQTT_PUBCOMP, 7);
    expect_nothing(sub);

    /* The subscriber's side of the exchange. */
    send_ack(sub, MQTT_PUBREC, rx.packet_id);
    expect_ack(sub, MQTT_PUBREL, rx.packet_id);
    send_ack(sub, MQTT_PUBCOMP, rx.packet_id);
    expect_nothing(sub);

    /* Once released, the packet id names a new message. */
    send_publish_len(pub, "x", 1, "again", 5, 2, 7, false);
    expect_ack(pub, MQTT_PUBREC, 7);
    expect_publish(sub, "x", "again", 2);
}
END_TEST

/* ------------------------------------------------------------ repeated filters in one SUBSCRIBE */

/* Retained messages r/a, r/b, r/c at QoS 2 (payload = topic), from a client of their own. */
static void retain_three(void)
{
    struct client *pub = client_connect("retainer", true, false);
    const char *topics[] = {"r/a", "r/b", "r/c"};
    for (uint16_t i = 0; i < 3; i++)
        send_retained(pub, topics[i], topics[i], (uint16_t)(i + 1));
    expect_nothing(pub);
}

/* A filter repeated 50 times is one subscription: its retained messages go out once. */
START_TEST(test_SPEC_5_subscribe_repeating_a_filter_sends_each_retained_message_once)
{
    struct limits l = default_limits();
    const char *filters[50];
    uint8_t qos[50], want[50];
    start(&l);
    retain_three();

    struct client *sub = client_connect("sub", true, false);
    for (size_t i = 0; i < 50; i++) {
        filters[i] = "#";
        qos[i] = want[i] = 0;
    }
    send_subscribe(sub, 9, filters, qos, 50, true);
    expect_suback(sub, 9, want, 50); /* one code per filter, as sent */
    const char *topics[] = {"r/a", "r/b", "r/c"};
    expect_retained_once(sub, topics, 3, 0);
    ck_assert_uint_eq(client_conn(sub)->session->sub_count, 1);
}
END_TEST

/*
 * Repeats of one filter (with or without the leading '/', SPEC §3) at
 * different QoS: the last one is the subscription, so the retained messages
 * go out once, at its QoS and with its slash.
 */
START_TEST(test_SPEC_5_subscribe_repeating_a_filter_sends_retained_at_the_last_qos)
{
    struct limits l = default_limits();
    start(&l);
    retain_three();

    struct client *one = client_connect("one", true, false);
    const char *f1[] = {"r/+", "/r/+", "r/+"};
    const uint8_t q1[] = {2, 0, 1};
    send_subscribe(one, 1, f1, q1, 3, true);
    expect_suback(one, 1, q1, 3);
    const char *plain[] = {"r/a", "r/b", "r/c"};
    expect_retained_once(one, plain, 3, 1);

    struct client *two = client_connect("two", true, false);
    const char *f2[] = {"r/+", "x", "/r/+", "x"};
    const uint8_t q2[] = {0, 1, 2, 0};
    send_subscribe(two, 2, f2, q2, 4, true);
    expect_suback(two, 2, q2, 4);
    const char *slashed[] = {"/r/a", "/r/b", "/r/c"};
    expect_retained_once(two, slashed, 3, 2);
    ck_assert_uint_eq(client_conn(two)->session->sub_count, 2);

    /* Later messages follow the same subscription: once, at the last QoS. */
    struct client *pub = client_connect("pub", true, false);
    send_publish(pub, "r/a", "new", 1, 4);
    expect_ack(pub, MQTT_PUBACK, 4);
    expect_publish(one, "r/a", "new", 1);
    expect_publish(two, "/r/a", "new", 1);
    expect_nothing(one);
    expect_nothing(two);
}
END_TEST

/* Run `fn` with the log at notice level going to a file; returns what was written (malloc'd). */
static char *capture_notices(void (*fn)(struct client *), struct client *cl)
{
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_ge(dup2(fileno(f), STDERR_FILENO), 0);
    log_set_level(LOG_LEVEL_NOTICE);
    fn(cl);
    log_set_level(LOG_LEVEL_ERROR);
    fflush(stderr);
    ck_assert_int_ge(dup2(saved, STDERR_FILENO), 0);
    close(saved);

    long size = ftell(f);
    ck_assert_int_ge(size, 0);
    char *text = calloc(1, (size_t)size + 1);
    ck_assert_ptr_nonnull(text);
    rewind(f);
    ck_assert_uint_eq(fread(text, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    return text;
}

/* 300 filters with a bad character, then one good one. */
static void subscribe_300_refused(struct client *cl)
{
    static const char *filters[301];
    static uint8_t qos[301];
    for (size_t i = 0; i < 300; i++)
        filters[i] = "a b";
    filters[300] = "fine";
    send_subscribe(cl, 5, filters, qos, 301, true);
    struct rx rx = expect_packet(cl, MQTT_SUBACK);
    ck_assert_uint_eq(rx.code_count, 301);
    for (size_t i = 0; i < 300; i++)
        ck_assert_uint_eq(rx.codes[i], MQTT_SUBACK_FAILURE);
    ck_assert_uint_eq(rx.codes[300], 0);
}

/* Refused filters are one notice line per SUBSCRIBE, however many: the count and the first. */
START_TEST(test_SPEC_3_refused_filters_logged_once_per_subscribe)
{
    struct limits l = default_limits();
    start(&l);

    struct client *sub = client_connect("sub", true, false);
    char *log = capture_notices(subscribe_300_refused, sub);
    size_t lines = 0;
    for (const char *p = log; (p = strchr(p, '\n')); p++)
        lines++;
    ck_assert_msg(lines == 1, "expected one log line, got %zu:\n%.300s", lines, log);
    ck_assert_msg(strstr(log, "client sub: SUBSCRIBE refused 300 of 301 filters (first: 'a b': ") !=
                      NULL,
                  "unexpected log line: %.300s", log);
    free(log);
    expect_open(sub);
    ck_assert_uint_eq(client_conn(sub)->session->sub_count, 1);
}
END_TEST

/* ------------------------------------------------------------ packet ids */

/*
 * Thousands of QoS 2 ids unreleased at once: a re-send of any of them is
 * still recognised, and a released id names a new message.
 */
START_TEST(test_MQTT_4_3_3_qos2_duplicate_detected_among_3000_unreleased_ids)
{
    struct limits l = default_limits();
    start(&l);

    struct client *sub = client_connect("sub", true, false);
    ck_assert_uint_eq(subscribe1(sub, 1, "x", 0), 0);
    struct client *pub = client_connect("pub", true, false);
    for (uint16_t id = 1; id <= 3000; id++) {
        send_publish(pub, "x", "m", 2, id);
        expect_ack(pub, MQTT_PUBREC, id);
        expect_publish(sub, "x", "m", 0);
    }
    ck_assert_uint_eq(session_qos2_count(client_conn(pub)->session), 3000);

    send_publish_len(pub, "x", 1, "m", 1, 2, 1500, true);
    expect_ack(pub, MQTT_PUBREC, 1500);
    expect_nothing(sub);

    send_ack(pub, MQTT_PUBREL, 1500);
    expect_ack(pub, MQTT_PUBCOMP, 1500);
    ck_assert_uint_eq(session_qos2_count(client_conn(pub)->session), 2999);

    send_publish(pub, "x", "again", 2, 1500);
    expect_ack(pub, MQTT_PUBREC, 1500);
    expect_publish(sub, "x", "again", 0);
    expect_nothing(sub);

    /* Its neighbours are still unreleased. */
    send_publish_len(pub, "x", 1, "m", 1, 2, 1499, true);
    expect_ack(pub, MQTT_PUBREC, 1499);
    send_publish_len(pub, "x", 1, "m", 1, 2, 1501, true);
    expect_ack(pub, MQTT_PUBREC, 1501);
    expect_nothing(sub);
    expect_open(pub);
}
END_TEST

/* The id set behind both: ids 1..65535 in order from any point, wrapping, 0 when all are taken. */
START_TEST(test_MQTT_2_3_1_packet_id_set_wraps_and_reports_a_full_set)
{
    struct idset set = {0};

    ck_assert(!idset_has(&set, 1));
    ck_assert_uint_eq(idset_next_clear(&set, 0), 1); /* no allocation needed to answer */
    ck_assert_uint_eq(idset_next_clear(&set, 65535), 1);
    ck_assert_int_eq(idset_remove(&set, 7), -ENOENT);

    for (uint32_t id = 1; id <= 65535; id++)
        ck_assert_int_eq(idset_add(&set, (uint16_t)id), 0);
    ck_assert_int_eq(idset_add(&set, 65535), 0); /* already there: no change */
    ck_assert_uint_eq(set.count, 65535);
    ck_assert_uint_eq(idset_next_clear(&set, 100), 0);

    ck_assert_int_eq(idset_remove(&set, 64), 0); /* a word boundary */
    ck_assert_int_eq(idset_remove(&set, 64), -ENOENT);
    ck_assert_uint_eq(idset_next_clear(&set, 64), 64); /* round the whole set back to it */
    ck_assert_uint_eq(idset_next_clear(&set, 63), 64);
    ck_assert_int_eq(idset_remove(&set, 65535), 0);
    ck_assert_uint_eq(idset_next_clear(&set, 64), 65535);
    ck_assert_uint_eq(idset_next_clear(&set, 65534), 65535);
    ck_assert_uint_eq(idset_next_clear(&set, 65535), 64);
    ck_assert_uint_eq(set.count, 65533);
    ck_assert(!idset_has(&set, 0));

    idset_free(&set);
    ck_assert_uint_eq(set.count, 0);
    ck_assert(!idset_has(&set, 1));
}
END_TEST

/* Publish QoS 1 message `payload` on "w" from `pub` (packet id `id`) and take its PUBACK. */
static void publish_w(struct client *pub, const char *payload, uint16_t id)
{
    send_publish(pub, "w", payload, 1, id);
    expect_ack(pub, MQTT_PUBACK, id);
}

/*
 * Outgoing packet ids wrap from 65535 to 1 and skip the ids still in flight
 * (MQTT-2.3.1-2: an id is not reused until its exchange is complete).
 */
START_TEST(test_MQTT_2_3_1_2_outgoing_ids_skip_ids_in_flight_when_wrapping)
{
    struct limits l = default_limits();
    l.max_inflight = 3;
    start(&l);

    struct client *sub = client_connect("sub", true, false);
    ck_assert_uint_eq(subscribe1(sub, 1, "w", 1), 1);
    struct session *s = client_conn(sub)->session;
    struct client *pub = client_connect("pub", true, false);

    publish_w(pub, "m1", 1);
    struct rx m1 = expect_publish(sub, "w", "m1", 1);
    ck_assert_uint_eq(m1.packet_id, 1);

    /* As if 65532 more messages had come and gone while m1 waits for its PUBACK. */
    session_flow(s)->last_packet_id = 65533;
    publish_w(pub, "m2", 2);
    publish_w(pub, "m3", 3);
    publish_w(pub, "m4", 4);
    struct rx m2 = expect_publish(sub, "w", "m2", 1);
    struct rx m3 = expect_publish(sub, "w", "m3", 1);
    expect_nothing(sub); /* the window of 3 is full: m4 waits */
    ck_assert_uint_eq(m2.packet_id, 65534);
    ck_assert_uint_eq(m3.packet_id, 65535);

    send_ack(sub, MQTT_PUBACK, m2.packet_id);
    struct rx m4 = expect_publish(sub, "w", "m4", 1);
    ck_assert_uint_eq(m4.packet_id, 2); /* wrapped past 0, and past 1 (m1, in flight) */

    publish_w(pub, "m5", 5);
    expect_nothing(sub);
    send_ack(sub, MQTT_PUBACK, m3.packet_id);
    struct rx m5 = expect_publish(sub, "w", "m5", 1);
    ck_assert_uint_eq(m5.packet_id, 3);

    /* 65534 is free again, but ids go on from the last one given. */
    send_ack(sub, MQTT_PUBACK, m1.packet_id);
    publish_w(pub, "m6", 6);
    struct rx m6 = expect_publish(sub, "w", "m6", 1);
    ck_assert_uint_eq(m6.packet_id, 4);

    send_ack(sub, MQTT_PUBACK, m4.packet_id);
    send_ack(sub, MQTT_PUBACK, m5.packet_id);
    send_ack(sub, MQTT_PUBACK, m6.packet_id);
    expect_nothing(sub);
    ck_assert_uint_eq(session_inflight_count(s), 0);
    ck_assert_uint_eq(s->flow->outgoing_ids.count, 0);
}
END_TEST

/* A QoS 2 exchange holds its id until PUBCOMP, not PUBREC: the id is skipped till then. */
START_TEST(test_MQTT_2_3_1_2_outgoing_qos2_id_held_until_pubcomp)
{
    struct limits l = default_limits();
    l.max_inflight = 3;
    start(&l);

    struct client *sub = client_connect("sub", true, false);
    ck_assert_uint_eq(subscribe1(sub, 1, "w", 2), 2);
    struct session *s = client_conn(sub)->session;
    struct client *pub = client_connect("pub", true, false);

    ck_assert_ptr_nonnull(session_flow(s));
    s->flow->last_packet_id = 65535;
    send_publish(pub, "w", "q2", 2, 1);
    expect_ack(pub, MQTT_PUBREC, 1);
    struct rx q2 = expect_publish(sub, "w", "q2", 2);
    ck_assert_uint_eq(q2.packet_id, 1);
    send_ack(sub, MQTT_PUBREC, 1);
    expect_ack(sub, MQTT_PUBREL, 1);

    s->flow->last_packet_id = 65535; /* the counter comes round to 1 again before PUBCOMP */
    publish_w(pub, "m", 2);
    struct rx m = expect_publish(sub, "w", "m", 1);
    ck_assert_uint_eq(m.packet_id, 2);

    send_ack(sub, MQTT_PUBCOMP, 1);
    send_ack(sub, MQTT_PUBACK, 2);
    expect_nothing(sub);
    ck_assert_uint_eq(s->flow->outgoing_ids.count, 0);
}
END_TEST

/* ------------------------------------------------------------ connections */

START_TEST(test_MQTT_3_1_4_2_takeover_closes_the_first_connection)
{
    struct limits l = default_limits();
    start(&l);

    struct client *first = client_connect("same", true, false);
    struct client *second = client_connect("same", true, false);
    expect_closed(first);
    expect_nothing(first);
    expect_open(second);

    send_simple(second, MQTT_PINGREQ);
    expect_packet(second, MQTT_PINGRESP);
}
END_TEST

START_TEST(test_MQTT_3_1_4_2_takeover_keeps_a_persistent_session)
{
    struct limits l = default_limits();
    start(&l);

    struct client *first = client_connect("keep", false, false);
    ck_assert_uint_eq(subscribe1(first, 1, "k", 1), 1);
    struct client *second = client_connect("keep", false, true);
    expect_closed(first);
    expect_open(second);

    struct client *pub = client_connect("pub", true, false);
    send_publish(pub, "k", "v", 1, 1);
    expect_ack(pub, MQTT_PUBACK, 1);
    expect_publish(second, "k", "v", 1);
    expect_nothing(first);
}
END_TEST

START_TEST(test_MQTT_3_1_0_1_first_packet_not_connect_closes)
{
    struct limits l = default_limits();
    start(&l);

    struct client *ping = client_new();
    send_simple(ping, MQTT_PINGREQ);
    expect_nothing(ping);
    expect_closed(ping);

    struct client *sub = client_new();
    const char *filter = "a";
    const uint8_t qos = 0;
    send_subscribe(sub, 1, &filter, &qos, 1, true);
    expect_nothing(sub);
    expect_closed(sub);

    struct client *http = client_new();
    const char get[] = "GET /mqtt HTTP/1.1\r\n";
    client_send_raw(http, get, sizeof(get) - 1);
    expect_nothing(http);
    expect_closed(http);
}
END_TEST

START_TEST(test_MQTT_3_1_0_2_second_connect_closes)
{
    struct limits l = default_limits();
    start(&l);

    struct client *cl = client_connect("twice", true, false);
    send_connect(cl, MQTT_V311, "twice", true, 60);
    expect_nothing(cl);
    expect_closed(cl);
}
END_TEST

/* Another client's publish and subscribe still work after `bad` was closed. */
static void expect_others_unaffected(struct client *sub, struct client *pub)
{
    send_publish(pub, "m", "still here", 1, 3);
    expect_ack(pub, MQTT_PUBACK, 3);
    expect_publish(sub, "m", "still here", 0);
    ck_assert_uint_eq(subscribe1(sub, 4, "m2", 1), 1);
    send_publish(pub, "m2", "and here", 1, 5);
    expect_ack(pub, MQTT_PUBACK, 5);
    expect_publish(sub, "m2", "and here", 1);
    expect_open(sub);
    expect_open(pub);
}

START_TEST(test_MQTT_2_2_3_remaining_length_of_5_bytes_closes_only_that_connection)
{
    struct limits l = default_limits();
    start(&l);

    struct client *sub = client_connect("sub", true, false);
    ck_assert_uint_eq(subscribe1(sub, 1, "m", 0), 0);
    struct client *pub = client_connect("pub", true, false);
    struct client *bad = client_connect("bad", true, false);

    const uint8_t evil[] = {0x30, 0xff, 0xff, 0xff, 0xff, 0x7f};
    client_send_raw(bad, evil, sizeof(evil));
    expect_nothing(bad);
    expect_closed(bad);
    expect_others_unaffected(sub, pub);
}
END_TEST

START_TEST(test_MQTT_3_3_1_4_publish_qos3_closes_only_that_connection)
{
    struct limits l = default_limits();
    start(&l);

    struct client *sub = client_connect("sub", true, false);
    ck_assert_uint_eq(subscribe1(sub, 1, "m", 0), 0);
    struct client *pub = client_connect("pub", true, false);
    struct client *bad = client_connect("bad", true, false);

    /* PUBLISH with both QoS bits set: topic "m", packet id 1, payload "x". */
    const uint8_t evil[] = {0x36, 0x06, 0x00, 0x01, 'm', 0x00, 0x01, 'x'};
    client_send_raw(bad, evil, sizeof(evil));
    expect_nothing(bad);
    expect_closed(bad);
    expect_nothing(sub);
    expect_others_unaffected(sub, pub);
}
END_TEST

/* ------------------------------------------------------------ accounting */

/* Bytes held for the desktop instance, the only one. */
static size_t held(void)
{
    ck_assert_uint_eq(broker->held->bytes, broker->local->account->bytes);
    return broker->local->account->bytes;
}

START_TEST(test_SPEC_10_what_an_instance_holds_is_counted_and_released)
{
    struct limits l = default_limits();
    start(&l);
    size_t empty = held();

    /* A persistent session with a plain and a shared subscription, gone offline. */
    struct client *sub = client_connect("sleeper", false, false);
    ck_assert_uint_eq(subscribe1(sub, 1, "q/#", 1), 1);
    ck_assert_uint_eq(subscribe1(sub, 2, "$share/g/q/#", 1), 1);
    size_t subscribed = held();
    ck_assert_uint_gt(subscribed, empty);
    send_simple(sub, MQTT_DISCONNECT);
    expect_closed(sub);

    /* A retained message and queued QoS 1 messages: each adds at least its payload. */
    struct client *pub = client_connect("pub", true, false);
    send_retained(pub, "q/kept", "retained payload", 1);
    size_t before_queue = held();
    char payload[400];
    for (uint16_t i = 0; i < 5; i++) {
        send_publish(pub, "q/x", repeat(payload, sizeof(payload), 'p', 300), 1, (uint16_t)(i + 2));
        expect_ack(pub, MQTT_PUBACK, (uint16_t)(i + 2));
    }
    /* One copy of each message, however many of the session's subscriptions matched. */
    ck_assert_uint_ge(held(), before_queue + 5 * (300 + sizeof(struct outgoing)));

    /* Its output counts while it waits to be read: this client takes 64 bytes at a time. */
    struct client *back = client_new();
    bufferevent_setwatermark(back->bev, EV_READ, 0, 64);
    size_t offline = held();
    send_connect(back, MQTT_V311, "sleeper", false, 60);
    ck_assert_uint_gt(client_conn(back)->out.charged, 4 * 300);
    ck_assert_uint_ge(held(), offline + client_conn(back)->out.charged);

    /* It reads after all; a Clean Start ends the session, clearing the retained message frees
     * the rest. */
    bufferevent_setwatermark(back->bev, EV_READ, 0, 0);
    struct evbuffer *in = bufferevent_get_input(back->bev);
    for (int i = 0; i < 100 && client_conn(back)->out.charged; i++) {
        evbuffer_drain(in, evbuffer_get_length(in));
        bufferevent_trigger(back->bev, EV_READ, 0);
        pump();
    }
    ck_assert_uint_eq(client_conn(back)->out.charged, 0);
    send_simple(back, MQTT_DISCONNECT);
    expect_closed(back);
    struct client *clean = client_connect("sleeper", true, false);
    send_retained(pub, "q/kept", "", 7);
    send_simple(clean, MQTT_DISCONNECT);
    send_simple(pub, MQTT_DISCONNECT);
    expect_closed(clean);
    expect_closed(pub);
    ck_assert_uint_eq(held(), empty);
}
END_TEST

/* A CONNECT as `id` (MQTT 3.1.1) refused with CONNACK `code`, and the connection closed. */
static void expect_connect_refused(const char *id, bool clean, uint8_t code)
{
    struct client *cl = client_new();
    send_connect(cl, MQTT_V311, id, clean, 60);
    expect_connack(cl, code, false);
    expect_closed(cl);
}

/* A persistent session "sleeper" subscribed to "q" at QoS 1, offline. */
static void sleeper_offline(void)
{
    struct client *sub = client_connect("sleeper", false, false);
    ck_assert_uint_eq(subscribe1(sub, 1, "q", 1), 1);
    send_simple(sub, MQTT_DISCONNECT);
    expect_closed(sub);
}

START_TEST(test_SPEC_10_max_instance_bytes_refuses_the_instances_traffic)
{
    struct limits l = default_limits();
    start(&l);
    sleeper_offline();
    struct client *pub = client_connect("pub", true, false);
    /* Room for a few messages and for the sleeper's packet-id set when it comes back. */
    broker->local->limits.max_instance_bytes = held() + 2 * IDSET_BYTES + 2000;

    char payload[400];
    repeat(payload, sizeof(payload), 'p', 300);
    uint16_t id = 1;
    while (!instance_over_bytes(broker->local)) {
        ck_assert_uint_lt(id, 100);
        send_publish(pub, "q", payload, 1, id);
        expect_ack(pub, MQTT_PUBACK, id++);
    }
    /* At the limit: QoS 0 dropped, a new subscription and a new persistent session refused. */
    size_t at_limit = held();
    send_publish(pub, "q", payload, 0, 0);
    expect_nothing(pub);
    ck_assert_uint_eq(held(), at_limit);
    ck_assert_uint_eq(subscribe1(pub, 50, "other", 1), MQTT_SUBACK_FAILURE);
    expect_connect_refused("another-sleeper", false, MQTT_CONNACK_UNAVAILABLE);
    struct client *clean = client_connect("visitor", true, false);
    expect_open(clean);
    /* MQTT 3.1.1 cannot refuse a QoS 1 PUBLISH: it is closed unacknowledged. */
    send_publish(pub, "q", payload, 1, id);
    expect_nothing(pub);
    expect_closed(pub);

    /* The sleeper comes back (always allowed) and reads its queue: there is room again. */
    struct client *back = client_connect("sleeper", false, true);
    struct rx rx;
    while (client_recv(back, &rx)) {
        ck_assert_uint_eq(rx.type, MQTT_PUBLISH);
        send_ack(back, MQTT_PUBACK, rx.packet_id);
    }
    ck_assert(!instance_over_bytes(broker->local));
    struct client *again = client_connect("pub2", true, false);
    send_publish(again, "q", payload, 1, 1);
    expect_ack(again, MQTT_PUBACK, 1);
    expect_publish(back, "q", payload, 1);
}
END_TEST

START_TEST(test_SPEC_10_max_sessions_counts_persistent_sessions_only)
{
    struct limits l = default_limits();
    l.max_sessions = 2;
    start(&l);
    sleeper_offline();
    struct client *two = client_connect("second", false, false);
    expect_connect_refused("third", false, MQTT_CONNACK_UNAVAILABLE);
    /* A clean session outlives nothing: it is not counted. */
    struct client *clean = client_connect("clean", true, false);
    expect_open(clean);
    /* Resuming, and replacing with a Clean Start, are not new sessions. */
    struct client *back = client_connect("sleeper", false, true);
    expect_open(back);
    send_simple(two, MQTT_DISCONNECT);
    expect_closed(two);
    struct client *fresh = client_new();
    send_connect(fresh, MQTT_V311, "second", true, 60);
    expect_connack(fresh, MQTT_CONNACK_ACCEPTED, false);
    /* "second" is a clean session now: room for one more persistent one. */
    ck_assert_uint_eq(broker->local->persistent_sessions, 1);
    struct client *last = client_new();
    send_connect(last, MQTT_V311, "third", false, 60);
    expect_connack(last, MQTT_CONNACK_ACCEPTED, false);
}
END_TEST

/*
 * Once its QoS 1/2 exchanges are done, a session gives back the 8 KB bitmap
 * of each packet-id set when the connection's deadline comes round; one
 * still in use is kept, and the next exchange makes it again.
 */
START_TEST(test_a_quiet_session_gives_back_its_packet_id_bitmaps)
{
    struct limits l = default_limits();
    start(&l);

    struct client *sub = client_connect("sub", true, false);
    ck_assert_uint_eq(subscribe1(sub, 1, "w", 1), 1);
    struct client *pub = client_connect("pub", true, false);
    struct session *s = client_conn(sub)->session, *p = client_conn(pub)->session;

    publish_w(pub, "m1", 1);
    struct rx m1 = expect_publish(sub, "w", "m1", 1);
    timers_conn_due(&client_conn(sub)->deadline); /* m1 is in flight: kept */
    ck_assert_ptr_nonnull(s->flow->outgoing_ids.bits);
    send_ack(sub, MQTT_PUBACK, m1.packet_id);
    size_t busy = held();
    timers_conn_due(&client_conn(sub)->deadline);
    ck_assert_ptr_null(s->flow->outgoing_ids.bits);
    ck_assert_uint_eq(held(), busy - IDSET_BYTES);
    publish_w(pub, "m2", 2);
    ck_assert_uint_eq(expect_publish(sub, "w", "m2", 1).packet_id, m1.packet_id + 1);
    ck_assert_ptr_nonnull(s->flow->outgoing_ids.bits);

    /* The QoS 2 ids a publisher's PUBLISHes hold until PUBREL. */
    send_publish(pub, "x", "q", 2, 3);
    expect_ack(pub, MQTT_PUBREC, 3);
    timers_conn_due(&client_conn(pub)->deadline);
    ck_assert_ptr_nonnull(p->flow->incoming_qos2.bits);
    send_ack(pub, MQTT_PUBREL, 3);
    expect_ack(pub, MQTT_PUBCOMP, 3);
    timers_conn_due(&client_conn(pub)->deadline);
    ck_assert_ptr_null(p->flow->incoming_qos2.bits);
    expect_open(sub);
    expect_open(pub);
}
END_TEST

/* ------------------------------------------------------------ out of memory */

/*
 * The broker reads `p` from `cl` with the `n`th allocation that causes
 * failing (alloc_fail.h). True when one did: false means the step needs
 * fewer than n + 1 and went through whole.
 */
static bool send_failing(struct client *cl, const struct mqtt_packet *p, long n)
{
    client_queue(cl, p, MQTT_V311);
    alloc_fail_nth(n);
    pump();
    bool failed = alloc_fail_done();
    alloc_fail_nth(-1);
    return failed;
}

/* The broker still serves: a new client connects, subscribes and hears its own message. */
static void expect_serving(void)
{
    struct client *probe = client_connect("probe", true, false);
    ck_assert_uint_eq(subscribe1(probe, 1, "probe", 0), 0);
    send_publish(probe, "probe", "alive", 0, 0);
    expect_publish(probe, "probe", "alive", 0);
}

/* Sweeps stop here at the latest: no step of these makes this many allocations. */
#define SWEEP_MAX 300

/* A step to fail at each of its allocations in turn (sweep_allocations). */
struct sweep {
    struct limits limits;
    /* Connects what the step needs; returns the sender. */
    struct client *(*setup)(const struct sweep *sw);
    struct mqtt_packet packet;                         /* what the sender sends: the step */
    void (*after)(struct client *sender, bool failed); /* what a run must show */
};

/* A client of the step besides the sender (a subscriber). */
static struct client *sweep_other;

/*
 * Run the step again and again on a fresh broker, its nth allocation failing
 * for n = 0, 1, ... until a run goes through whole; after each, the broker
 * must still serve a new client. Returns how many allocations the step makes.
 */
static long sweep_allocations(const struct sweep *sw)
{
    bool failed = true;
    long n;

    for (n = 0; failed && n < SWEEP_MAX; n++) {
        start(&sw->limits);
        struct client *sender = sw->setup(sw);
        failed = send_failing(sender, &sw->packet, n);
        sw->after(sender, failed);
        expect_serving();
        teardown();
    }
    ck_assert_int_lt(n, SWEEP_MAX);
    return n - 1;
}

/* A subscriber to the PUBLISH's topic at its QoS (sweep_other), and its publisher. */
static struct client *publish_setup(const struct sweep *sw)
{
    const struct mqtt_publish *p = &sw->packet.u.publish;
    char topic[64];

    snprintf(topic, sizeof(topic), "%.*s", (int)p->topic.len, (const char *)p->topic.data);
    sweep_other = client_connect("sub", true, false);
    ck_assert_uint_eq(subscribe1(sweep_other, 1, topic, p->qos), p->qos);
    return client_connect("pub", true, false);
}

static void qos1_after(struct client *pub, bool failed)
{
    if (failed)
        return;
    expect_ack(pub, MQTT_PUBACK, 1);
    expect_publish(sweep_other, "w", "m", 1);
    ck_assert_ptr_nonnull(client_conn(sweep_other)->session->flow);
}

/*
 * A QoS 1 PUBLISH to a subscriber that never had one (its session's QoS 1/2
 * state is made then) with each allocation on its way failing in turn: the
 * broker goes on serving, and the run past the last allocation delivers.
 */
START_TEST(test_out_of_memory_at_each_allocation_of_a_first_qos1_delivery)
{
    struct sweep sw = {.setup = publish_setup, .after = qos1_after};
    sw.limits = default_limits();
    sw.packet = (struct mqtt_packet){.type = MQTT_PUBLISH};
    sw.packet.u.publish = (struct mqtt_publish){.qos = 1,
                                                .packet_id = 1,
                                                .topic = {(const uint8_t *)"w", 1},
                                                .payload = {(const uint8_t *)"m", 1}};
    /* The message, its entry, the session's QoS state, its packet ids at least. */
    ck_assert_int_ge(sweep_allocations(&sw), 4);
}
END_TEST

static struct client *park_setup(const struct sweep *sw)
{
    struct client *sub = client_connect("sleeper", false, false);
    ck_assert_uint_eq(subscribe1(sub, 1, "q", 1), 1);
    return sub;
}

static void park_after(struct client *sub, bool failed)
{
    expect_closed(sub);
    struct session *s = strmap_get(&broker->local->sessions, "sleeper");
    ck_assert_ptr_nonnull(s);
    if (!failed)
        ck_assert_ptr_nonnull(s->wait);
    struct client *back = client_connect("sleeper", false, true);
    /* A connected client waits for nothing. */
    ck_assert_ptr_null(client_conn(back)->session->wait);
}

/*
 * A persistent session with an expiry goes offline (what it waits for is
 * made then) with each allocation failing in turn: the broker goes on
 * serving, and the client finds its session when it comes back.
 */
START_TEST(test_out_of_memory_at_each_allocation_of_parking_a_session)
{
    struct sweep sw = {.setup = park_setup, .after = park_after};
    sw.limits = default_limits();
    sw.limits.max_session_expiry = 60; /* a 3.1.1 persistent session gets this expiry */
    sw.packet = (struct mqtt_packet){.type = MQTT_DISCONNECT};
    ck_assert_int_ge(sweep_allocations(&sw), 1); /* its wait */
}
END_TEST

static void rated_after(struct client *pub, bool failed)
{
    if (failed)
        return;
    expect_publish(sweep_other, "r", "m", 0);
    ck_assert_ptr_nonnull(client_conn(pub)->rare->rate);
}

/* The first PUBLISH under max-messages-per-second makes the connection's bucket. */
START_TEST(test_out_of_memory_at_each_allocation_of_a_first_rated_publish)
{
    struct sweep sw = {.setup = publish_setup, .after = rated_after};
    sw.limits = default_limits();
    sw.limits.max_messages_per_second = 1000;
    sw.packet = (struct mqtt_packet){.type = MQTT_PUBLISH};
    sw.packet.u.publish = (struct mqtt_publish){.topic = {(const uint8_t *)"r", 1},
                                                .payload = {(const uint8_t *)"m", 1}};
    ck_assert_int_ge(sweep_allocations(&sw), 3); /* its rare part, its bucket, the message */
}
END_TEST

/* ------------------------------------------------------------ suite */

static Suite *limits_suite(void)
{
    Suite *s = suite_create("limits");

    TCase *id = tcase_create("client id");
    tcase_add_checked_fixture(id, NULL, teardown);
    tcase_add_test(id, test_SPEC_5_client_id_of_max_length_accepted);
    tcase_add_test(id, test_SPEC_5_client_id_over_max_refused_with_connack_2);
    tcase_add_test(id, test_SPEC_5_default_client_id_limit_is_64);
    tcase_add_test(id, test_SPEC_5_client_id_limit_counts_characters_not_bytes);
    tcase_add_test(id, test_SPEC_5_client_id_limit_independent_of_max_payload);
    tcase_add_test(id, test_MQTT_3_1_3_6_empty_client_id_with_clean_1_accepted);
    tcase_add_test(id, test_MQTT_3_1_3_8_empty_client_id_with_clean_0_refused_with_connack_2);
    tcase_add_test(id, test_MQTT_3_1_empty_client_id_refused_with_connack_2);
    tcase_add_test(id, test_MQTT_3_1_2_2_unknown_protocol_level_refused_with_connack_1);
    suite_add_tcase(s, id);

    TCase *ka = tcase_create("keep-alive");
    tcase_add_checked_fixture(ka, NULL, teardown);
    tcase_add_test(ka, test_SPEC_5_keepalive_0_becomes_max);
    tcase_add_test(ka, test_SPEC_5_keepalive_over_max_becomes_max);
    tcase_add_test(ka, test_SPEC_5_keepalive_over_configured_max_becomes_it);
    tcase_add_test(ka, test_SPEC_5_keepalive_below_min_raised_to_min);
    tcase_add_test(ka, test_SPEC_5_keepalive_within_bounds_kept);
    suite_add_tcase(s, ka);

    TCase *subs = tcase_create("subscribe");
    tcase_add_checked_fixture(subs, NULL, teardown);
    tcase_add_test(subs, test_SPEC_5_filter_of_max_length_granted);
    tcase_add_test(subs, test_SPEC_5_filter_over_max_refused_others_granted);
    tcase_add_test(subs, test_SPEC_3_filter_with_bad_character_refused);
    tcase_add_test(subs, test_SPEC_3_star_inside_a_level_refused);
    tcase_add_test(subs, test_SPEC_3_star_as_whole_level_granted_as_plus);
    tcase_add_test(subs, test_SPEC_5_max_subscriptions);
    tcase_add_test(subs, test_SPEC_5_max_subscriptions_within_one_subscribe);
    tcase_add_test(subs, test_SPEC_5_subscribe_within_limits_answered_whatever_max_payload);
    tcase_add_test(subs, test_SPEC_5_subscribe_repeating_a_filter_sends_each_retained_message_once);
    tcase_add_test(subs, test_SPEC_5_subscribe_repeating_a_filter_sends_retained_at_the_last_qos);
    tcase_add_test(subs, test_SPEC_3_refused_filters_logged_once_per_subscribe);
    suite_add_tcase(s, subs);

    TCase *pub = tcase_create("publish");
    tcase_add_checked_fixture(pub, NULL, teardown);
    tcase_add_test(pub, test_SPEC_5_publish_topic_of_max_length_accepted);
    tcase_add_test(pub, test_SPEC_5_publish_topic_over_max_closes_without_puback);
    tcase_add_test(pub, test_SPEC_3_publish_topic_with_bad_character_closes);
    tcase_add_test(pub, test_SPEC_5_payload_of_max_size_accepted);
    tcase_add_test(pub, test_SPEC_5_payload_over_max_closes_never_acknowledged);
    tcase_add_test(pub, test_SPEC_5_oversized_packet_refused_before_buffering);
    tcase_add_test(pub, test_MQTT_3_3_4_accepted_qos1_publish_reaches_subscriber);
    suite_add_tcase(s, pub);

    TCase *flow = tcase_create("queues");
    tcase_add_checked_fixture(flow, NULL, teardown);
    tcase_add_test(flow, test_SPEC_5_max_queued_messages_keeps_the_newest);
    tcase_add_test(flow, test_SPEC_5_max_inflight_window);
    tcase_add_test(flow, test_MQTT_4_3_3_qos2_resent_before_pubrel_delivered_once);
    tcase_add_test(flow, test_MQTT_4_3_3_qos2_duplicate_detected_among_3000_unreleased_ids);
    tcase_add_test(flow, test_MQTT_2_3_1_packet_id_set_wraps_and_reports_a_full_set);
    tcase_add_test(flow, test_MQTT_2_3_1_2_outgoing_ids_skip_ids_in_flight_when_wrapping);
    tcase_add_test(flow, test_MQTT_2_3_1_2_outgoing_qos2_id_held_until_pubcomp);
    tcase_add_test(flow, test_a_quiet_session_gives_back_its_packet_id_bitmaps);
    suite_add_tcase(s, flow);

    TCase *acct = tcase_create("accounting");
    tcase_add_checked_fixture(acct, NULL, teardown);
    tcase_add_test(acct, test_SPEC_10_what_an_instance_holds_is_counted_and_released);
    tcase_add_test(acct, test_SPEC_10_max_instance_bytes_refuses_the_instances_traffic);
    tcase_add_test(acct, test_SPEC_10_max_sessions_counts_persistent_sessions_only);
    suite_add_tcase(s, acct);

    TCase *conns = tcase_create("connections");
    tcase_add_checked_fixture(conns, NULL, teardown);
    tcase_add_test(conns, test_MQTT_3_1_4_2_takeover_closes_the_first_connection);
    tcase_add_test(conns, test_MQTT_3_1_4_2_takeover_keeps_a_persistent_session);
    tcase_add_test(conns, test_MQTT_3_1_0_1_first_packet_not_connect_closes);
    tcase_add_test(conns, test_MQTT_3_1_0_2_second_connect_closes);
    tcase_add_test(conns, test_MQTT_2_2_3_remaining_length_of_5_bytes_closes_only_that_connection);
    tcase_add_test(conns, test_MQTT_3_3_1_4_publish_qos3_closes_only_that_connection);
    suite_add_tcase(s, conns);

    TCase *oom = tcase_create("out of memory");
    tcase_add_checked_fixture(oom, NULL, teardown);
    tcase_add_test(oom, test_out_of_memory_at_each_allocation_of_a_first_qos1_delivery);
    tcase_add_test(oom, test_out_of_memory_at_each_allocation_of_parking_a_session);
    tcase_add_test(oom, test_out_of_memory_at_each_allocation_of_a_first_rated_publish);
    suite_add_tcase(s, oom);

    return s;
}

int main(void)
{
    log_open("test_limits", LOG_LEVEL_ERROR, false);
    return check_tap_run(limits_suite());
}
