/*
 * Unit tests of src/util/json: the writer (structure, commas, escaping,
 * numbers, misuse) and the strict reader of flat objects.
 */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check_tap.h"
#include "util/json.h"
#include "util/json_read.h"

/* The writer's text, checked to be what `want` says; the writer is freed. */
static void expect_text(struct json *j, const char *want)
{
    size_t len;
    char *text = json_take(j, &len);

    ck_assert_ptr_nonnull(text);
    ck_assert_str_eq(text, want);
    ck_assert_uint_eq(len, strlen(want));
    free(text);
}

/* One string value alone, as the writer writes it. */
static void expect_string(const char *in, size_t len, const char *want)
{
    struct json j;

    json_init(&j);
    json_string_n(&j, in, len);
    expect_text(&j, want);
}

/* ---- the writer ---------------------------------------------------------------- */

START_TEST(test_writer_nests_objects_and_arrays_with_commas)
{
    struct json j;

    json_init(&j);
    json_object_begin(&j);
    json_member_string(&j, "type", "connected");
    json_member_uint(&j, "size", 12);
    json_key(&j, "list");
    json_array_begin(&j);
    json_int(&j, -3);
    json_bool(&j, true);
    json_null(&j);
    json_object_begin(&j);
    json_object_end(&j);
    json_array_begin(&j);
    json_array_end(&j);
    json_array_end(&j);
    json_member_bool(&j, "retain", false);
    json_object_end(&j);
    ck_assert(!j.failed);
    expect_text(&j, "{\"type\":\"connected\",\"size\":12,\"list\":[-3,true,null,{},[]],"
                    "\"retain\":false}");
}
END_TEST

START_TEST(test_writer_integers_cover_their_whole_range)
{
    struct json j;

    json_init(&j);
    json_array_begin(&j);
    json_int(&j, INT64_MIN);
    json_int(&j, INT64_MAX);
    json_uint(&j, UINT64_MAX);
    json_uint(&j, 0);
    json_array_end(&j);
    expect_text(&j, "[-9223372036854775808,9223372036854775807,18446744073709551615,0]");
}
END_TEST

START_TEST(test_writer_doubles_are_short_and_never_nan)
{
    struct json j;

    json_init(&j);
    json_array_begin(&j);
    json_double(&j, 2.5);
    json_double(&j, 0.0);
    json_double(&j, -0.0);
    json_double(&j, 100.0);
    json_double(&j, 1.0 / 3.0);
    json_double(&j, NAN);
    json_double(&j, INFINITY);
    json_double(&j, 1e300);
    json_array_end(&j);
    expect_text(&j, "[2.5,0,0,100,0.333333,null,null,1.0000000000000001e+300]");
}
END_TEST

/* RFC 8259 7: quotation mark, reverse solidus and the control characters must be escaped. */
START_TEST(test_writer_escapes_quotes_backslashes_and_control_characters)
{
    expect_string("a\"b\\c", 5, "\"a\\\"b\\\\c\"");
    expect_string("\n\r\t\b\f", 5, "\"\\n\\r\\t\\b\\f\"");
    expect_string("\x01\x1f", 2, "\"\\u0001\\u001f\"");
    expect_string("nul\0byte", 8, "\"nul\\u0000byte\"");
    expect_string("/ and \x7f", 7, "\"/ and \x7f\"");
}
END_TEST

START_TEST(test_writer_passes_valid_utf8_and_replaces_invalid_bytes)
{
    /* é, €, U+1F600: two, three and four bytes, as they are. */
    expect_string("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9,
                  "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"");
    /* A lone continuation byte, an overlong '/', a surrogate, a truncated sequence. */
    expect_string("a\x80z", 3, "\"a\xef\xbf\xbdz\"");
    expect_string("\xc0\xaf", 2, "\"\xef\xbf\xbd\xef\xbf\xbd\"");
    expect_string("\xed\xa0\x80", 3, "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
    expect_string("x\xe2\x82", 3, "\"x\xef\xbf\xbd\xef\xbf\xbd\"");
}
END_TEST

START_TEST(test_writer_null_string_is_null)
{
    struct json j;

    json_init(&j);
    json_object_begin(&j);
    json_member_string(&j, "peer", NULL);
    json_object_end(&j);
    expect_text(&j, "{\"peer\":null}");
}
END_TEST

START_TEST(test_writer_refuses_unbalanced_and_too_deep_documents)
{
    struct json j;
    size_t len;

    json_init(&j);
    json_object_begin(&j);
    ck_assert_ptr_null(json_take(&j, &len)); /* still open */
    ck_assert_uint_eq(len, 0);

    json_init(&j);
    json_array_end(&j);
    ck_assert(j.failed);
    json_free(&j);

    json_init(&j);
    json_object_begin(&j);
    json_key(&j, "a");
    json_object_end(&j); /* a name without its value */
    ck_assert(j.failed);
    json_free(&j);

    json_init(&j);
    for (int i = 0; i <= JSON_MAX_DEPTH; i++)
        json_array_begin(&j);
    ck_assert(j.failed);
    json_free(&j);
}
END_TEST

START_TEST(test_writer_grows_past_its_first_buffer)
{
    struct json j;
    char big[5000];

    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    json_init(&j);
    json_array_begin(&j);
    for (int i = 0; i < 10; i++)
        json_string(&j, big);
    json_array_end(&j);
    ck_assert(!j.failed);
    ck_assert_uint_eq(j.len, 2 + 10 * (sizeof(big) + 1) + 9);
    json_free(&j);
}
END_TEST

/* ---- the reader ----------------------------------------------------------------- */

static const char *const action_keys[] = {"type", "client_id"};

/* Read `text` for the two action keys; returns the reader's code. */
static int read_action(const char *text, char *values[2])
{
    return json_read_flat(text, strlen(text), action_keys, values, 2);
}

static void free_values(char *values[2])
{
    free(values[0]);
    free(values[1]);
}

START_TEST(test_reader_takes_the_string_members_asked_for)
{
    char *v[2];

    ck_assert_int_eq(read_action(" {\"type\" : \"close\",\n\"client_id\":\"dev-1\", \"n\": -1.5e3,"
                                 " \"ok\": true, \"x\": null, \"f\": false} ",
                                 v),
                     0);
    ck_assert_str_eq(v[0], "close");
    ck_assert_str_eq(v[1], "dev-1");
    free_values(v);
    ck_assert_int_eq(read_action("{}", v), 0);
    ck_assert_ptr_null(v[0]);
    ck_assert_ptr_null(v[1]);
    ck_assert_int_eq(read_action("{\"type\":1,\"client_id\":\"a\"}", v), 0);
    ck_assert_ptr_null(v[0]); /* not a string */
    ck_assert_str_eq(v[1], "a");
    free_values(v);
}
END_TEST

START_TEST(test_reader_unescapes_strings)
{
    char *v[2];

    ck_assert_int_eq(
        read_action("{\"type\":\"a\\\"b\\\\c\\/d\\n\\t\",\"client_id\":\"\\u00e9\\ud83d\\ude00\"}",
                    v),
        0);
    ck_assert_str_eq(v[0], "a\"b\\c/d\n\t");
    ck_assert_str_eq(v[1], "\xc3\xa9\xf0\x9f\x98\x80");
    free_values(v);
}
END_TEST

START_TEST(test_reader_refuses_what_is_not_a_flat_object)
{
    static const char *const bad[] = {
        "",
        "{",
        "[]",
        "\"close\"",
        "{\"type\":\"close\"",
        "{\"type\":\"close\",}",
        "{\"type\" \"close\"}",
        "{type:\"close\"}",
        "{\"type\":{\"a\":1}}",
        "{\"type\":[1]}",
        "{\"type\":\"close\"} x",
        "{\"type\":\"close\",\"type\":\"open\"}", /* a name twice */
        "{\"type\":\"a\nb\"}",                    /* a raw control character */
        "{\"type\":\"\\x\"}",                     /* an unknown escape */
        "{\"type\":\"\\u0000\"}",                 /* U+0000 */
        "{\"type\":\"\\ud800\"}",                 /* a lone surrogate */
        "{\"type\":\"\\ude00\"}",
        "{\"type\":\"\\u12\"}",
        "{\"type\":\"\xff\"}", /* not UTF-8 */
        "{\"n\":01}",
        "{\"n\":1.}",
        "{\"n\":-}",
        "{\"n\":1e}",
        "{\"n\":tru}",
        "{\"n\":nul}",
    };
    char *v[2];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(read_action(bad[i], v) == -EINVAL, "accepted: %s", bad[i]);
        ck_assert_ptr_null(v[0]);
        ck_assert_ptr_null(v[1]);
    }
}
END_TEST

START_TEST(test_reader_stops_at_the_given_length)
{
    const char *text = "{\"type\":\"close\"}garbage";
    char *v[2];

    ck_assert_int_eq(json_read_flat(text, 16, action_keys, v, 2), 0);
    ck_assert_str_eq(v[0], "close");
    free_values(v);
    ck_assert_int_eq(json_read_flat(text, 10, action_keys, v, 2), -EINVAL);
}
END_TEST

/* What the writer writes, the reader reads back. */
START_TEST(test_reader_reads_what_the_writer_wrote)
{
    const char *id = "dev \"one\"\\\n\x01\xc3\xa9";
    struct json j;
    size_t len;
    char *v[2];

    json_init(&j);
    json_object_begin(&j);
    json_member_string(&j, "type", "close");
    json_member_string(&j, "client_id", id);
    json_member_double(&j, "rate", 1.25);
    json_object_end(&j);
    char *text = json_take(&j, &len);
    ck_assert_ptr_nonnull(text);
    ck_assert_int_eq(json_read_flat(text, len, action_keys, v, 2), 0);
    ck_assert_str_eq(v[0], "close");
    ck_assert_str_eq(v[1], id);
    free_values(v);
    free(text);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("json");
    TCase *tc = tcase_create("writer");
    tcase_add_test(tc, test_writer_nests_objects_and_arrays_with_commas);
    tcase_add_test(tc, test_writer_integers_cover_their_whole_range);
    tcase_add_test(tc, test_writer_doubles_are_short_and_never_nan);
    tcase_add_test(tc, test_writer_escapes_quotes_backslashes_and_control_characters);
    tcase_add_test(tc, test_writer_passes_valid_utf8_and_replaces_invalid_bytes);
    tcase_add_test(tc, test_writer_null_string_is_null);
    tcase_add_test(tc, test_writer_refuses_unbalanced_and_too_deep_documents);
    tcase_add_test(tc, test_writer_grows_past_its_first_buffer);
    suite_add_tcase(s, tc);
    tc = tcase_create("reader");
    tcase_add_test(tc, test_reader_takes_the_string_members_asked_for);
    tcase_add_test(tc, test_reader_unescapes_strings);
    tcase_add_test(tc, test_reader_refuses_what_is_not_a_flat_object);
    tcase_add_test(tc, test_reader_stops_at_the_given_length);
    tcase_add_test(tc, test_reader_reads_what_the_writer_wrote);
    suite_add_tcase(s, tc);

    return check_tap_run(s);
}
