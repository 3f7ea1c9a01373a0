/*
 * Unit tests of src/cluster/stream.c: the records of an instance's stream,
 * round trips and what a node refuses to believe from Redis.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "check_tap.h"
#include "cluster/stream.h"

START_TEST(test_stream_message_round_trip)
{
    static const uint8_t props[] = {0x01, 0x01};
    struct stream_message in = {.qos = 2,
                                .retain = true,
                                .expiry = 60,
                                .published_ms = 1764921600123ull,
                                .node = "0123456789abcdef",
                                .node_len = 16,
                                .seq = 77,
                                .client_id = "pub-1",
                                .client_id_len = 5,
                                .topic = "a/b",
                                .topic_len = 3,
                                .props = props,
                                .props_len = sizeof(props),
                                .payload = (const uint8_t *)"hello",
                                .payload_len = 5};
    size_t len = stream_message_size(&in);
    uint8_t *buf = malloc(len);
    struct stream_record r;
    char err[128];

    stream_encode_message(&in, buf);
    ck_assert_int_eq(stream_decode(buf, len, &r, err, sizeof(err)), 0);
    ck_assert_int_eq(r.type, STREAM_MESSAGE);
    const struct stream_message *m = &r.u.message;
    ck_assert_uint_eq(m->qos, 2);
    ck_assert(m->retain);
    ck_assert_uint_eq(m->expiry, 60);
    ck_assert_uint_eq(m->published_ms, 1764921600123ull);
    ck_assert_mem_eq(m->node, "0123456789abcdef", 16);
    ck_assert_uint_eq(m->seq, 77);
    ck_assert_mem_eq(m->client_id, "pub-1", 5);
    ck_assert_mem_eq(m->topic, "a/b", 3);
    ck_assert_uint_eq(m->props_len, 2);
    ck_assert_mem_eq(m->props, props, 2);
    ck_assert_uint_eq(m->payload_len, 5);
    ck_assert_mem_eq(m->payload, "hello", 5);
    free(buf);
}
END_TEST

START_TEST(test_stream_empty_payload_and_no_client_id)
{
    struct stream_message in = {.topic = "t", .topic_len = 1, .client_id = "", .payload = NULL};
    uint8_t buf[64];
    struct stream_record r;

    stream_encode_message(&in, buf);
    ck_assert_int_eq(stream_decode(buf, stream_message_size(&in), &r, NULL, 0), 0);
    ck_assert_uint_eq(r.u.message.payload_len, 0);
    ck_assert_uint_eq(r.u.message.client_id_len, 0);
    ck_assert(!r.u.message.retain);
}
END_TEST

START_TEST(test_stream_claim_round_trip)
{
    struct stream_claim in = {.node = "0123456789abcdef",
                              .node_len = 16,
                              .client_id = "dev-7",
                              .client_id_len = 5,
                              .conn_id = 0x0102030405060708ull};
    uint8_t buf[64];
    struct stream_record r;

    ck_assert_uint_le(stream_claim_size(&in), sizeof(buf));
    stream_encode_claim(&in, buf);
    ck_assert_int_eq(stream_decode(buf, stream_claim_size(&in), &r, NULL, 0), 0);
    ck_assert_int_eq(r.type, STREAM_CLAIM);
    ck_assert_mem_eq(r.u.claim.node, "0123456789abcdef", 16);
    ck_assert_mem_eq(r.u.claim.client_id, "dev-7", 5);
    ck_assert_uint_eq(r.u.claim.conn_id, 0x0102030405060708ull);
    /* A claim is exactly its fields: one byte more is refused. */
    buf[stream_claim_size(&in)] = 0;
    ck_assert_int_eq(stream_decode(buf, stream_claim_size(&in) + 1, &r, NULL, 0), -1);
}
END_TEST

START_TEST(test_stream_load_round_trip)
{
    struct stream_load in = {.node = "n1",
                             .node_len = 2,
                             .conns = 70000,
                             .published = 12,
                             .number = 1ull << 40,
                             .through = 41};
    uint8_t buf[48];
    struct stream_record r;

    stream_encode_load(&in, buf);
    ck_assert_int_eq(stream_decode(buf, stream_load_size(&in), &r, NULL, 0), 0);
    ck_assert_int_eq(r.type, STREAM_LOAD);
    ck_assert_mem_eq(r.u.load.node, "n1", 2);
    ck_assert_uint_eq(r.u.load.conns, 70000);
    ck_assert_uint_eq(r.u.load.published, 12);
    ck_assert_uint_eq(r.u.load.number, 1ull << 40);
    ck_assert_uint_eq(r.u.load.through, 41);
    ck_assert_int_eq(stream_decode(buf, stream_load_size(&in) - 1, &r, NULL, 0), -1);
    ck_assert_int_eq(stream_decode(buf, stream_load_size(&in) - 8, &r, NULL, 0), -1);
    /* A report without its numbers (an older node's) reads as numbers 0. */
    ck_assert_int_eq(stream_decode(buf, stream_load_size(&in) - 16, &r, NULL, 0), 0);
    ck_assert_uint_eq(r.u.load.published, 12);
    ck_assert_uint_eq(r.u.load.number, 0);
    ck_assert_uint_eq(r.u.load.through, 0);
    struct stream_load nameless = {.node = "", .node_len = 0};
    stream_encode_load(&nameless, buf);
    ck_assert_int_eq(stream_decode(buf, stream_load_size(&nameless), &r, NULL, 0), -1);
}
END_TEST

/* Every cut of a good record is refused, never read past its end (ASan watches). */
START_TEST(test_stream_refuses_every_truncation)
{
    struct stream_message in = {
        .qos = 1, .topic = "x/y", .topic_len = 3, .client_id = "c", .client_id_len = 1};
    size_t len = stream_message_size(&in);
    uint8_t *full = malloc(len);
    struct stream_record r;
    char err[128];

    stream_encode_message(&in, full);
    /* The payload runs to the end, so a cut inside it is a shorter payload: stop before it. */
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *part = malloc(cut ? cut : 1);
        memcpy(part, full, cut);
        ck_assert_msg(stream_decode(part, cut, &r, err, sizeof(err)) == -1, "cut %zu", cut);
        free(part);
    }
    free(full);
}
END_TEST

START_TEST(test_stream_refuses_bad_headers_and_fields)
{
    struct stream_message in = {.topic = "t", .topic_len = 1, .client_id = ""};
    uint8_t buf[64];
    struct stream_record r;
    char err[128];
    size_t len = stream_message_size(&in);

    stream_encode_message(&in, buf);
    buf[0] = 9; /* another version */
    ck_assert_int_eq(stream_decode(buf, len, &r, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "version 9"));
    buf[0] = STREAM_VERSION;
    buf[1] = 'Z';
    ck_assert_int_eq(stream_decode(buf, len, &r, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "unknown type"));
    buf[1] = STREAM_MESSAGE;
    buf[2] = 3; /* QoS 3 */
    ck_assert_int_eq(stream_decode(buf, len, &r, err, sizeof(err)), -1);
    buf[2] = 0x40; /* a flag nobody defined */
    ck_assert_int_eq(stream_decode(buf, len, &r, err, sizeof(err)), -1);
    buf[2] = 0;
    /* A topic with a NUL, and an empty topic. */
    buf[len - 1 - 4] = '\0';
    ck_assert_int_eq(stream_decode(buf, len, &r, err, sizeof(err)), -1);
    struct stream_message empty = {.topic = "", .client_id = ""};
    stream_encode_message(&empty, buf);
    ck_assert_int_eq(stream_decode(buf, stream_message_size(&empty), &r, err, sizeof(err)), -1);
    /* A length that claims more than there is. */
    stream_encode_message(&in, buf);
    buf[2 + 1 + 4 + 8 + 2 + 8 + 2 + 3] = 0xff; /* the low byte of the topic's length */
    ck_assert_int_eq(stream_decode(buf, len, &r, err, sizeof(err)), -1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("stream");
    TCase *tc = tcase_create("records");
    tcase_add_test(tc, test_stream_message_round_trip);
    tcase_add_test(tc, test_stream_empty_payload_and_no_client_id);
    tcase_add_test(tc, test_stream_claim_round_trip);
    tcase_add_test(tc, test_stream_load_round_trip);
    tcase_add_test(tc, test_stream_refuses_every_truncation);
    tcase_add_test(tc, test_stream_refuses_bad_headers_and_fields);
    suite_add_tcase(s, tc);
    return check_tap_run(s);
}
