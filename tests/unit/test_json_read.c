/*
 * Unit tests of util/json_read: what RFC 8259 allows is read, what it does
 * not is refused with the offset of the fault, and the bounds hold.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "check_tap.h"
#include "util/json_read.h"

static char err[256];

static struct json_value *read_ok(const char *text)
{
    struct json_value *v = json_read(text, strlen(text), err, sizeof(err));
    ck_assert_msg(v != NULL, "'%s' refused: %s", text, err);
    return v;
}

/* `text` is refused with an error containing `expected`. */
static void read_refused(const char *text, size_t len, const char *expected)
{
    err[0] = '\0';
    struct json_value *v = json_read(text, len, err, sizeof(err));
    ck_assert_msg(v == NULL, "'%s' was accepted", text);
    ck_assert_msg(strstr(err, expected) != NULL, "'%s': expected '%s' in '%s'", text, expected,
                  err);
}

START_TEST(test_rfc8259_an_object_of_every_type)
{
    struct json_value *v = read_ok(" {\"s\": \"x\", \"n\": -12.5e+3, \"t\": true, \"f\": false,"
                                   " \"z\": null, \"a\": [1, [], {}], \"o\": {\"k\": 0}}\n");

    ck_assert_int_eq(v->type, JSON_OBJECT);
    ck_assert_uint_eq(v->count, 7);
    ck_assert_str_eq(json_get(v, "s")->text, "x");
    ck_assert_str_eq(json_get(v, "n")->text, "-12.5e+3");
    ck_assert_int_eq(json_get(v, "t")->type, JSON_TRUE);
    ck_assert_int_eq(json_get(v, "f")->type, JSON_FALSE);
    ck_assert_int_eq(json_get(v, "z")->type, JSON_NULL);
    ck_assert_uint_eq(json_get(v, "a")->count, 3);
    ck_assert_int_eq(json_get(v, "a")->items[1].type, JSON_ARRAY);
    ck_assert_int_eq(json_get(json_get(v, "o"), "k")->type, JSON_NUMBER);
    ck_assert_ptr_null(json_get(v, "missing"));
    ck_assert_str_eq(v->members[0].key, "s"); /* members keep their order */
    json_value_free(v);
}
END_TEST

START_TEST(test_rfc8259_7_escapes_are_decoded)
{
    struct json_value *v = read_ok("\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u0041\\u00e9\\u20ac\"");

    ck_assert_str_eq(v->text, "a\"b\\c/d\b\f\n\r\tA\xc3\xa9\xe2\x82\xac");
    json_value_free(v);
}
END_TEST

START_TEST(test_rfc8259_7_surrogate_pair_is_one_code_point)
{
    struct json_value *v = read_ok("\"\\ud83d\\ude00 \xf0\x9f\x98\x80\"");

    /* U+1F600 from the escapes, then the same character as it was sent */
    ck_assert_str_eq(v->text, "\xf0\x9f\x98\x80 \xf0\x9f\x98\x80");
    json_value_free(v);
}
END_TEST

START_TEST(test_rfc8259_7_escaped_nul_is_kept_with_its_length)
{
    struct json_value *v = read_ok("\"a\\u0000b\"");

    ck_assert_uint_eq(v->len, 3);
    ck_assert_int_eq(memcmp(v->text, "a\0b", 3), 0);
    json_value_free(v);
}
END_TEST

START_TEST(test_lone_surrogates_are_refused)
{
    read_refused("\"\\ud83d\"", 8, "offset 1: a high surrogate \\ud83d not followed by a low one");
    read_refused("\"\\ud83dx\"", 9, "not followed by a low one");
    read_refused("\"\\ude00\"", 8, "offset 1: a low surrogate \\ude00 without a high one");
    read_refused("\"\\u12g4\"", 8, "offset 5: 'g' where a hex digit");
}
END_TEST

START_TEST(test_rfc8259_8_1_strings_must_be_utf8)
{
    read_refused("\"\xff\"", 3, "offset 1: a string that is not valid UTF-8");
    read_refused("\"\xc0\xaf\"", 4, "not valid UTF-8");              /* overlong '/' */
    read_refused("\"\xed\xa0\x80\"", 5, "not valid UTF-8");          /* a surrogate in UTF-8 */
    read_refused("\"a\tb\"", 5, "offset 2: control character 0x09"); /* must be escaped */
}
END_TEST

START_TEST(test_malformed_texts_are_refused_with_the_offset)
{
    read_refused("", 0, "offset 0: the text ends where a value was expected");
    read_refused("{\"a\":1,}", 8, "offset 7: '}' where a key (a string) was expected");
    read_refused("[1,]", 4, "offset 3: ']' where a value was expected");
    read_refused("[1 2]", 5, "offset 3: '2' where ',' or ']'");
    read_refused("{\"a\" 1}", 7, "offset 5: '1' where ':' after a key");
    read_refused("{\"a\":1} x", 9, "offset 8: 'x' where the end of the text");
    read_refused("\"abc", 4, "offset 0: a string without its closing quote");
    read_refused("tru", 3, "offset 0: 't' where a value was expected");
    read_refused("'a'", 3, "offset 0: ''' where a value");
    read_refused("{\"a\":1 // no comments\n}", 23, "offset 7: '/'");
    read_refused("\"\\x\"", 4, "offset 2: 'x' where an escape");
    read_refused("{\"a\":1,\"a\":2}", 13, "offset 7: the key \"a\" appears twice");
}
END_TEST

START_TEST(test_rfc8259_6_number_grammar)
{
    read_refused("01", 2, "offset 0: a number with a leading zero");
    read_refused("-", 1, "offset 1: the text ends where a digit");
    read_refused("1.", 2, "after the decimal point");
    read_refused("1e", 2, "a digit of the exponent");
    read_refused("+1", 2, "offset 0: '+'");
    read_refused(".5", 2, "offset 0: '.'");
    json_value_free(read_ok("0"));
    json_value_free(read_ok("-0.0e-0"));
}
END_TEST

START_TEST(test_json_uint_takes_whole_numbers_in_range_only)
{
    struct json_value *v = read_ok("[0, 18446744073709551615, 18446744073709551616, 1.0, -1, "
                                   "1e3, \"5\", 100]");
    unsigned long long n;

    ck_assert(json_value_uint(&v->items[0], ~0ULL, &n) && n == 0);
    ck_assert(json_value_uint(&v->items[1], ~0ULL, &n) && n == ~0ULL);
    ck_assert(!json_value_uint(&v->items[2], ~0ULL, &n));
    ck_assert(!json_value_uint(&v->items[3], ~0ULL, &n));
    ck_assert(!json_value_uint(&v->items[4], ~0ULL, &n));
    ck_assert(!json_value_uint(&v->items[5], ~0ULL, &n));
    ck_assert(!json_value_uint(&v->items[6], ~0ULL, &n));
    ck_assert(!json_value_uint(&v->items[7], 99, &n));
    ck_assert(json_value_uint(&v->items[7], 100, &n) && n == 100);
    json_value_free(v);
}
END_TEST

START_TEST(test_depth_is_bounded)
{
    char text[2 * (JSON_READ_MAX_DEPTH + 1) + 1];

    memset(text, '[', JSON_READ_MAX_DEPTH);
    memset(text + JSON_READ_MAX_DEPTH, ']', JSON_READ_MAX_DEPTH);
    json_value_free(read_ok((text[2 * JSON_READ_MAX_DEPTH] = '\0', text)));
    memset(text, '[', JSON_READ_MAX_DEPTH + 1);
    memset(text + JSON_READ_MAX_DEPTH + 1, ']', JSON_READ_MAX_DEPTH + 1);
    text[2 * (JSON_READ_MAX_DEPTH + 1)] = '\0';
    read_refused(text, strlen(text), "offset 32: nested deeper than 32 arrays and objects");
}
END_TEST

START_TEST(test_size_is_bounded)
{
    size_t len = JSON_MAX_TEXT + 1;
    char *text = malloc(len);

    ck_assert_ptr_nonnull(text);
    memset(text, ' ', len);
    text[0] = '0';
    read_refused(text, len, "the text is longer than 1048576 bytes");
    free(text);
}
END_TEST

START_TEST(test_many_members_and_items_grow)
{
    enum { N = 1000 };
    char *text = malloc(N * 16 + 16);
    size_t n = 0;

    ck_assert_ptr_nonnull(text);
    text[n++] = '{';
    for (int i = 0; i < N; i++)
        n += (size_t)sprintf(text + n, "%s\"k%d\":[%d]", i ? "," : "", i, i);
    text[n++] = '}';
    text[n] = '\0';
    struct json_value *v = read_ok(text);
    ck_assert_uint_eq(v->count, N);
    ck_assert_str_eq(json_get(v, "k999")->items[0].text, "999");
    json_value_free(v);
    free(text);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("json_read");
    TCase *tc = tcase_create("values");
    tcase_add_test(tc, test_rfc8259_an_object_of_every_type);
    tcase_add_test(tc, test_rfc8259_7_escapes_are_decoded);
    tcase_add_test(tc, test_rfc8259_7_surrogate_pair_is_one_code_point);
    tcase_add_test(tc, test_rfc8259_7_escaped_nul_is_kept_with_its_length);
    tcase_add_test(tc, test_json_uint_takes_whole_numbers_in_range_only);
    tcase_add_test(tc, test_many_members_and_items_grow);
    suite_add_tcase(s, tc);
    tc = tcase_create("refusals");
    tcase_add_test(tc, test_lone_surrogates_are_refused);
    tcase_add_test(tc, test_rfc8259_8_1_strings_must_be_utf8);
    tcase_add_test(tc, test_malformed_texts_are_refused_with_the_offset);
    tcase_add_test(tc, test_rfc8259_6_number_grammar);
    tcase_add_test(tc, test_depth_is_bounded);
    tcase_add_test(tc, test_size_is_bounded);
    suite_add_tcase(s, tc);
    return check_tap_run(s);
}
