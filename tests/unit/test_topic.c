/*
 * Unit tests of the topic rules (SPEC §3, MQTT 3.1.1 §4.7) and the topic tree.
 * Tests are named after the clause or behaviour they check.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_tap.h"
#include "broker/topic.h"

#define MAX 128

static int name_rc(const char *s)
{
    return topic_check_name(s, strlen(s), MAX, TOPIC_CHARSET_SAFE);
}

static int filter_rc(const char *s)
{
    return topic_check_filter(s, strlen(s), MAX, TOPIC_CHARSET_SAFE);
}

/* ------------------------------------------------------------ helpers */

/* Records every match report. */
struct matches {
    size_t count;
    struct topic_sub subs[64];
};

static void collect_match(void *ctx, const struct topic_sub *sub)
{
    struct matches *m = ctx;
    if (m->count < sizeof(m->subs) / sizeof(m->subs[0]))
        m->subs[m->count] = *sub;
    m->count++;
}

static struct matches match(struct topic_tree *t, const char *topic)
{
    struct matches m = {0};
    topic_tree_match(t, topic, collect_match, &m);
    return m;
}

static size_t match_count(struct topic_tree *t, const char *topic)
{
    return match(t, topic).count;
}

/* Number of reports for one owner. */
static size_t match_owner(struct topic_tree *t, const char *topic, const void *owner)
{
    struct matches m = match(t, topic);
    size_t n = 0;
    for (size_t i = 0; i < m.count && i < 64; i++)
        if (m.subs[i].owner == owner)
            n++;
    return n;
}

static int sub(struct topic_tree *t, const char *filter, void *owner, uint8_t options)
{
    struct topic_sub s = {.owner = owner, .options = options};
    return topic_tree_subscribe(t, filter, &s);
}

/* Records retained reports as "topic=msg-string", sorted and joined by spaces. */
struct retained {
    size_t count;
    char *items[64];
};

static void collect_retained(void *ctx, const char *topic, void *msg)
{
    struct retained *r = ctx;
    char buf[512];
    snprintf(buf, sizeof(buf), "%s=%s", topic, (const char *)msg);
    ck_assert_uint_lt(r->count, 64);
    r->items[r->count++] = strdup(buf);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The retained messages matching `filter`, as one sorted string; `out` holds 2048 bytes. */
static const char *retained_list(struct topic_tree *t, const char *filter, char *out)
{
    struct retained r = {0};
    topic_tree_retained_match(t, filter, collect_retained, &r);
    qsort(r.items, r.count, sizeof(r.items[0]), cmp_str);
    out[0] = '\0';
    for (size_t i = 0; i < r.count; i++) {
        if (i)
            strcat(out, " ");
        strcat(out, r.items[i]);
        free(r.items[i]);
    }
    return out;
}

static void count_cb(void *ctx, const char *topic, void *msg)
{
    (*(size_t *)ctx)++;
}

static size_t retained_count_matching(struct topic_tree *t, const char *filter)
{
    size_t n = 0;
    topic_tree_retained_match(t, filter, count_cb, &n);
    return n;
}

/* ------------------------------------------------------------ character set and length */

START_TEST(test_SPEC_3_allowed_characters_accepted)
{
    const char *ok[] = {"abcdefghijklmnopqrstuvwxyz",
                        "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
                        "0123456789",
                        "a.b",
                        "a,b",
                        "a:b",
                        "a;b",
                        "a-b",
                        "a_b",
                        "$SYS",
                        "a/b",
                        ".,:;-_$/"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        ck_assert_msg(name_rc(ok[i]) == TOPIC_OK, "name '%s'", ok[i]);
        ck_assert_msg(filter_rc(ok[i]) == TOPIC_OK, "filter '%s'", ok[i]);
    }
}
END_TEST

START_TEST(test_SPEC_3_other_characters_rejected)
{
    const char *bad[] = {"a b", "a!b",  "caf\xc3\xa9", "a\tb", "a\x7f", "a\x01", "a?b", "a\"b",
                         "a'b", "a\\b", "a%b",         "a&b",  "a@b",   "a(b",   "a=b", "\xff"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(name_rc(bad[i]) == TOPIC_E_CHARSET, "name '%s'", bad[i]);
        ck_assert_msg(filter_rc(bad[i]) == TOPIC_E_CHARSET, "filter '%s'", bad[i]);
    }
}
END_TEST

/* utf8-topics 1: what Mosquitto users write (spaces, accents, any script) is a topic. */
START_TEST(test_SPEC_utf8_topics_accepted)
{
    const char *good[] = {"a b",       "caf\xc3\xa9/t",    "\xe6\xb8\xa9\xe5\xba\xa6",
                          "a!b?c",     "\xf0\x9f\x90\xa6", "k\xc2\xa0v",
                          "a\"b'c\\d", "x=1&y=(2)"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        size_t len = strlen(good[i]);
        ck_assert_msg(topic_check_name(good[i], len, MAX, TOPIC_CHARSET_UTF8) == TOPIC_OK,
                      "name '%s'", good[i]);
        ck_assert_msg(topic_check_filter(good[i], len, MAX, TOPIC_CHARSET_UTF8) == TOPIC_OK,
                      "filter '%s'", good[i]);
        /* ... and none of them is, by default. */
        ck_assert_msg(name_rc(good[i]) == TOPIC_E_CHARSET, "default name '%s'", good[i]);
    }
    ck_assert_int_eq(topic_check_filter("caf\xc3\xa9/+/#", 9, MAX, TOPIC_CHARSET_UTF8), TOPIC_OK);
}
END_TEST

/* Still refused: broken UTF-8, controls (C0, DEL, C1), misplaced wildcards. */
START_TEST(test_SPEC_utf8_topics_refuse_controls_and_bad_utf8)
{
    const char *bad[] = {"a\tb",
                         "a\x7f",
                         "\x01",
                         "a\xc2\x85"
                         "b",
                         "\xff",
                         "\xc3",
                         "\xc0\xaf",
                         "\xed\xa0\x80",
                         "a\nb",
                         "\xf4\x90\x80\x80"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        size_t len = strlen(bad[i]);
        ck_assert_msg(topic_check_name(bad[i], len, MAX, TOPIC_CHARSET_UTF8) == TOPIC_E_CHARSET,
                      "name %zu", i);
        ck_assert_msg(topic_check_filter(bad[i], len, MAX, TOPIC_CHARSET_UTF8) == TOPIC_E_CHARSET,
                      "filter %zu", i);
    }
    ck_assert_int_eq(topic_check_name("a\0b", 3, MAX, TOPIC_CHARSET_UTF8), TOPIC_E_CHARSET);
    ck_assert_int_eq(topic_check_name("a b/+", 5, MAX, TOPIC_CHARSET_UTF8), TOPIC_E_WILDCARD);
    ck_assert_int_eq(topic_check_filter("a b+", 4, MAX, TOPIC_CHARSET_UTF8), TOPIC_E_WILDCARD);
    ck_assert_int_eq(topic_check_filter("\xc3\xa9#", 3, MAX, TOPIC_CHARSET_UTF8), TOPIC_E_WILDCARD);
    /* The limit counts bytes: "é" is two. */
    ck_assert_int_eq(topic_check_name("\xc3\xa9", 2, 1, TOPIC_CHARSET_UTF8), TOPIC_E_TOO_LONG);
}
END_TEST

START_TEST(test_MQTT_4_7_3_2_nul_character_rejected)
{
    ck_assert_int_eq(topic_check_name("a\0b", 3, MAX, TOPIC_CHARSET_SAFE), TOPIC_E_CHARSET);
    ck_assert_int_eq(topic_check_filter("a\0b", 3, MAX, TOPIC_CHARSET_SAFE), TOPIC_E_CHARSET);
    ck_assert_int_eq(topic_check_name("\0", 1, MAX, TOPIC_CHARSET_SAFE), TOPIC_E_CHARSET);
}
END_TEST

START_TEST(test_MQTT_4_7_3_1_empty_rejected)
{
    ck_assert_int_eq(topic_check_name("", 0, MAX, TOPIC_CHARSET_SAFE), TOPIC_E_EMPTY);
    ck_assert_int_eq(topic_check_filter("", 0, MAX, TOPIC_CHARSET_SAFE), TOPIC_E_EMPTY);
    /* Empty is reported as empty even against a zero limit. */
    ck_assert_int_eq(topic_check_name("", 0, 0, TOPIC_CHARSET_SAFE), TOPIC_E_EMPTY);
}
END_TEST

/* "/" is empty once its insignificant slash is dropped; "//" is two empty levels. */
START_TEST(test_SPEC_3_lone_slash_is_empty)
{
    ck_assert_int_eq(topic_check_name("/", 1, MAX, TOPIC_CHARSET_SAFE), TOPIC_E_EMPTY);
    ck_assert_int_eq(topic_check_filter("/", 1, MAX, TOPIC_CHARSET_SAFE), TOPIC_E_EMPTY);
    ck_assert_int_eq(topic_check_name("//", 2, MAX, TOPIC_CHARSET_SAFE), TOPIC_OK);
    ck_assert_int_eq(topic_check_filter("/+", 2, MAX, TOPIC_CHARSET_SAFE), TOPIC_OK);
}
END_TEST

START_TEST(test_SPEC_5_topic_length_limit)
{
    char s[MAX + 2];
    memset(s, 'a', sizeof(s));
    ck_assert_int_eq(topic_check_name(s, MAX, MAX, TOPIC_CHARSET_SAFE), TOPIC_OK);
    ck_assert_int_eq(topic_check_filter(s, MAX, MAX, TOPIC_CHARSET_SAFE), TOPIC_OK);
    ck_assert_int_eq(topic_check_name(s, MAX + 1, MAX, TOPIC_CHARSET_SAFE), TOPIC_E_TOO_LONG);
    ck_assert_int_eq(topic_check_filter(s, MAX + 1, MAX, TOPIC_CHARSET_SAFE), TOPIC_E_TOO_LONG);
    /* Length is bytes: a one-byte limit takes one character. */
    ck_assert_int_eq(topic_check_name("a", 1, 1, TOPIC_CHARSET_SAFE), TOPIC_OK);
    ck_assert_int_eq(topic_check_name("ab", 2, 1, TOPIC_CHARSET_SAFE), TOPIC_E_TOO_LONG);
}
END_TEST

START_TEST(test_SPEC_5_length_checked_before_content)
{
    /* Oversized garbage gets the length answer, not the character one. */
    ck_assert_int_eq(topic_check_name("!!!!", 4, 3, TOPIC_CHARSET_SAFE), TOPIC_E_TOO_LONG);
    ck_assert_int_eq(topic_check_filter("a b#", 4, 3, TOPIC_CHARSET_SAFE), TOPIC_E_TOO_LONG);
}
END_TEST

START_TEST(test_MQTT_4_7_1_1_wildcards_in_names_rejected)
{
    const char *bad[] = {"+", "#", "a/+", "a/#", "+/b", "a/+/b", "a+", "a#b", "*", "a/*", "a*b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(name_rc(bad[i]) == TOPIC_E_WILDCARD, "name '%s'", bad[i]);
}
END_TEST

START_TEST(test_MQTT_4_7_1_2_hash_whole_last_level)
{
    const char *ok[] = {"#", "a/#", "a/b/#", "/#", "+/#", "a//#"};
    const char *bad[] = {"a#", "#a", "a/#/b", "#/", "a/b#", "a/#b", "##", "a/#/#"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        ck_assert_msg(filter_rc(ok[i]) == TOPIC_OK, "filter '%s'", ok[i]);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(filter_rc(bad[i]) == TOPIC_E_WILDCARD, "filter '%s'", bad[i]);
}
END_TEST

START_TEST(test_MQTT_4_7_1_3_plus_whole_level)
{
    const char *ok[] = {"+", "+/+", "a/+", "+/b", "a/+/b", "/+", "+/", "a/+/+/#"};
    const char *bad[] = {"a+", "+a", "a/+b", "a/b+", "a/++", "++"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        ck_assert_msg(filter_rc(ok[i]) == TOPIC_OK, "filter '%s'", ok[i]);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(filter_rc(bad[i]) == TOPIC_E_WILDCARD, "filter '%s'", bad[i]);
}
END_TEST

START_TEST(test_SPEC_3_star_whole_level_only)
{
    const char *ok[] = {"*", "a/*", "*/b", "a/*/b", "/*", "*/*/#"};
    const char *bad[] = {"a*", "*a", "a/*b", "a/b*", "**", "*+"};
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        ck_assert_msg(filter_rc(ok[i]) == TOPIC_OK, "filter '%s'", ok[i]);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(filter_rc(bad[i]) == TOPIC_E_WILDCARD, "filter '%s'", bad[i]);
}
END_TEST

START_TEST(test_strerror_says_something_for_every_code)
{
    int codes[] = {TOPIC_OK,        TOPIC_E_EMPTY,    TOPIC_E_TOO_LONG,
                   TOPIC_E_CHARSET, TOPIC_E_WILDCARD, -99};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        const char *s = topic_strerror(codes[i]);
        ck_assert_ptr_nonnull(s);
        ck_assert_uint_gt(strlen(s), 0);
        for (size_t j = 0; j < i; j++)
            ck_assert_str_ne(s, topic_strerror(codes[j]));
    }
}
END_TEST

/* ------------------------------------------------------------ normalisation */

static void check_norm(const char *in, const char *want, bool want_slash)
{
    char out[256];
    bool slash = !want_slash;
    size_t n = topic_normalize(in, strlen(in), out, &slash);
    ck_assert_str_eq(out, want);
    ck_assert_uint_eq(n, strlen(want));
    ck_assert_msg(slash == want_slash, "had_slash for '%s'", in);
}

START_TEST(test_SPEC_3_normalize_drops_one_leading_slash)
{
    check_norm("/kitchen/temp", "kitchen/temp", true);
    check_norm("kitchen/temp", "kitchen/temp", false);
    check_norm("//a", "/a", true);
    check_norm("/#", "#", true);
    check_norm("/", "", true);
    check_norm("a/", "a/", false);
    check_norm("a//b", "a//b", false);
}
END_TEST

START_TEST(test_SPEC_3_normalize_star_level_to_plus)
{
    check_norm("*/temp", "+/temp", false);
    check_norm("a/*", "a/+", false);
    check_norm("a/*/b", "a/+/b", false);
    check_norm("/*", "+", true);
    check_norm("/*/x", "+/x", true);
    check_norm("*/*/#", "+/+/#", false);
    check_norm("*", "+", false);
}
END_TEST

START_TEST(test_normalize_had_slash_may_be_null)
{
    char out[8];
    ck_assert_uint_eq(topic_normalize("/a", 2, out, NULL), 1);
    ck_assert_str_eq(out, "a");
}
END_TEST

/* ------------------------------------------------------------ matching */

static int o1, o2, o3;

START_TEST(test_MQTT_4_7_exact_match)
{
    struct topic_tree *t = topic_tree_new();
    ck_assert_int_eq(sub(t, "a/b", &o1, 1), 1);
    ck_assert_uint_eq(match_count(t, "a/b"), 1);
    ck_assert_uint_eq(match_count(t, "a"), 0);
    ck_assert_uint_eq(match_count(t, "a/b/c"), 0);
    ck_assert_uint_eq(match_count(t, "a/c"), 0);
    ck_assert_uint_eq(match_count(t, "A/b"), 0);
    struct matches m = match(t, "a/b");
    ck_assert_ptr_eq(m.subs[0].owner, &o1);
    ck_assert_uint_eq(m.subs[0].options, 1);
    topic_tree_free(t, NULL);
}
END_TEST

START_TEST(test_MQTT_4_7_1_3_plus_matches_one_level)
{
    struct topic_tree *t = topic_tree_new();
    sub(t, "a/+", &o1, 0);
    ck_assert_uint_eq(match_count(t, "a/b"), 1);
    ck_assert_uint_eq(match_count(t, "a/c"), 1);
    ck_assert_uint_eq(match_count(t, "a"), 0);
    ck_assert_uint_eq(match_count(t, "a/b/c"), 0);
    ck_assert_uint_eq(match_count(t, "b/b"), 0);
    sub(t, "+", &o2, 0);
    ck_assert_uint_eq(match_owner(t, "x", &o2), 1);
    ck_assert_uint_eq(match_owner(t, "x/y", &o2), 0);
    sub(t, "+/+/c", &o3, 0);
    ck_assert_uint_eq(match_owner(t, "a/b/c", &o3), 1);
    ck_assert_uint_eq(match_owner(t, "a/b/d", &o3), 0);
    topic_tree_free(t, NULL);
}
END_TEST

START_TEST(test_MQTT_4_7_1_3_plus_matches_empty_level)
{
    struct topic_tree *t = topic_tree_new();
    sub(t, "a/+/b", &o1, 0);
    sub(t, "a/+", &o2, 0);
    sub(t, "+/x", &o3, 0);
    ck_assert_uint_eq(match_owner(t, "a//b", &o1), 1);
    ck_assert_uint_eq(match_owner(t, "a/", &o2), 1);
    ck_assert_uint_eq(match_owner(t, "/x", &o3), 1); /* "/x" normalised from "//x": "" then "x" */
    ck_assert_uint_eq(match_owner(t, "a//", &o2), 0);
    topic_tree_free(t, NULL);
}
END_TEST

START_TEST(test_empty_levels_are_levels)
{
    struct topic_tree *t = topic_tree_new();
    sub(t, "a//b", &o1, 0);
    sub(t, "a/", &o2, 0);
    sub(t, "", &o3, 0); /* the normalised form of "/" */
    ck_assert_uint_eq(match_owner(t, "a//b", &o1), 1);
    ck_assert_uint_eq(match_owner(t, "a/b", &o1), 0);
    ck_assert_uint_eq(match_owner(t, "a/", &o2), 1);
    ck_assert_uint_eq(match_owner(t, "a", &o2), 0);
    ck_assert_uint_eq(match_owner(t, "", &o3), 1);
    ck_assert_uint_eq(match_owner(t, "a", &o3), 0);
    topic_tree_free(t, NULL);
}
END_TEST

START_TEST(test_MQTT_4_7_1_2_hash_matches_rest)
{
    struct topic_tree *t = topic_tree_new();
    sub(t, "a/#", &o1, 0);
    ck_assert_uint_eq(match_count(t, "a/b"), 1);
    ck_assert_uint_eq(match_count(t, "a/b/c/d"), 1);
    ck_assert_uint_eq(match_count(t, "a/"), 1);
    ck_assert_uint_eq(match_count(t, "b"), 0);
    ck_assert_uint_eq(match_count(t, "ab"), 0);
    topic_tree_free(t, NULL);
}
END_TEST

START_TEST(test_MQTT_4_7_1_2_hash_matches_parent)
{
    struct topic_tree *t = topic_tree_new();
    sub(t, "a/#", &o1, 0);
    sub(t, "a/b/#", &o2, 0);
    sub(t, "+/#", &o3, 0);
    ck_assert_uint_eq(match_owner(t, "a", &o1), 1);
    ck_assert_uint_eq(match_owner(t, "a/b", &o2), 1);
    ck_assert_uint_eq(match_owner(t, "a", &o2), 0);
    ck_assert_uint_eq(match_owner(t, "x", &o3), 1);
    ck_assert_uint_eq(match_owner(t, "x/y/z", &o3), 1);
    topic_tree_free(t, NULL);
}
END_TEST

START_TEST(test_MQTT_4_7_1_2_hash_alone_matches_everything)
{
    struct topic_tree *t = topic_tree_new();
    sub(t, "#", &o1, 0);
    const char *topics[] = {"a", "a/b", "a/b/c", "", "a//", "x$", "a/$b"};
    for (size_t i = 0; i < sizeof(topics) / sizeof(topics[0]); i++)
        ck_assert_msg(match_count(t, topics[i]) == 1, "topic '%s'", topics[i]);
    topic_tree_free(t, NULL);
}
END_TEST

START_TEST(test_MQTT_4_7_2_1_dollar_topics_not_matched_by_hash)
{
    struct topic_tree *t = topic_tree_new();
    sub(t, "#", &o1, 0);
    sub(t, "+/monitor/#", &o2, 0);
    ck_assert_uint_eq(match_count(t, "$SYS/monitor/clients"), 0);
    ck_assert_uint_eq(match_count(t, "$SYS"), 0);
    ck_assert_uint_eq(match_count(t, "$"), 0);
    topic_tree_free(t, NULL);
}
END_TEST

START_TEST(test_MQTT_4_7_2_1_dollar_topics_not_matched_by_plus)
{
    struct topic_tree *t = topic_tree_new();
    sub(t, "+/monitor/clients", &o1, 0);
    sub(t, "+", &o2, 0);
    ck_assert_uint_eq(match_count(t, "$SYS/monitor/clients"), 0);
    ck_assert_uint_eq(match_count(t, "$SYS"), 0);
    /* Only the first level counts: "$" further in is ordinary. */
    sub(t, "a/+", &o3, 0);
    ck_assert_uint_eq(match_owner(t, "a/$b", &o3), 1);
    topic_tree_free(t, NULL);
}
END_TEST

START_TEST(test_MQTT_4_7_2_1_dollar_topics_matched_explicitly)
{
    struct topic_tree *t = topic_tree_new();
    sub(t, "$SYS/#", &o1, 0);
    sub(t, "$SYS/monitor/+", &o2, 0);
    sub(t, "$SYS/+/clients", &o3, 0);
    ck_assert_uint_eq(match_owner(t, "$SYS/x", &o1), 1);
    ck_assert_uint_eq(match_owner(t, "$SYS", &o1), 1);
    ck_assert_uint_eq(match_owner(t, "$SYS/monitor/clients", &o2), 1);
    ck_assert_uint_eq(match_owner(t, "$SYS/monitor/clients", &o3), 1);
    ck_assert_uint_eq(match_count(t, "$SYS/monitor/clients"), 3);
    topic_tree_free(t, NULL);
}
END_TEST

START_TEST(test_SPEC_3_star_filter_matches_like_plus)
{
    struct topic_tree *t = topic_tree_new();
    char f[16];
    topic_normalize("*/temp", 6, f, NULL);
    sub(t, f, &o1, 0);
    ck_assert_uint_eq(match_count(t, "kitchen/temp"), 1);
    ck_assert_uint_eq(match_count(t, "kitchen/hum"), 0);
    ck_assert_uint_eq(match_count(t, "$SYS/temp"), 0); /* the $ rule holds for `*` too */
    /* "a*" is refused rather than treated as a literal or a prefix wildcard. */
    ck_assert_int_eq(filter_rc("kitchen*"), TOPIC_E_WILDCARD);
    ck_assert_int_eq(filter_rc("*en/temp"), TOPIC_E_WILDCARD);
    topic_tree_free(t, NULL);
}
END_TEST

/* Subscribe and publish as the broker does: check, normalise, then use the tree. */
static int edge_subscribe(struct topic_tree *t, const char *raw, void *owner)
{
    char f[256];
    bool slash;
    ck_assert_int_eq(filter_rc(raw), TOPIC_OK);
    topic_normalize(raw, strlen(raw), f, &slash);
    struct topic_sub s = {.owner = owner, .options = 1, .leading_slash = slash};
    return topic_tree_subscribe(t, f, &s);
}

static struct matches edge_publish(struct topic_tree *t, const char *raw)
{
    char n[256];
    ck_assert_int_eq(name_rc(raw), TOPIC_OK);
    topic_normalize(raw, strlen(raw), n, NULL);
    return match(t, n);
}

START_TEST(test_SPEC_3_leading_slash_in_filter_matches_topic_without)
{
    struct topic_tree *t = topic_tree_new();
    ck_assert_int_eq(edge_subscribe(t, "/a/+", &o1), 1);
    struct matches m = edge_publish(t, "a/b");
    ck_assert_uint_eq(m.count, 1);
    ck_assert(m.subs[0].leading_slash);
    m = edge_publish(t, "/a/b");
    ck_assert_uint_eq(m.count, 1);
    ck_assert(m.subs[0].leading_slash);
    topic_tree_free(t, NULL);
}
END_TEST

START_TEST(test_SPEC_3_leading_slash_in_topic_matches_filter_without)
{
    struct topic_tree *t = topic_tree_new();
    ck_assert_int_eq(edge_subscribe(t, "a/+", &o1), 1);
    struct matches m = edge_publish(t, "/a/b");
    ck_assert_uint_eq(m.count, 1);
    ck_assert(!m.subs[0].leading_slash);
    topic_tree_free(t, NULL);
}
END_TEST

START_TEST(test_SPEC_3_slash_and_no_slash_are_one_filter)
{
    struct topic_tree *t = topic_tree_new();
    ck_assert_int_eq(edge_subscribe(t, "a/b", &o1), 1);
    /* The same filter again with a slash replaces it and records the slash. */
    ck_assert_int_eq(edge_subscribe(t, "/a/b", &o1), 0);
    ck_assert_uint_eq(topic_tree_sub_count(t), 1);
    struct matches m = edge_publish(t, "a/b");
    ck_assert_uint_eq(m.count, 1);
    ck_assert(m.subs[0].leading_slash);
    /* "/#" subscribes to everything, remembering the slash. */
    ck_assert_int_eq(edge_subscribe(t, "/#", &o2), 1);
    m = edge_publish(t, "/x/y");
    ck_assert_uint_eq(m.count, 1);
    ck_assert_ptr_eq(m.subs[0].owner, &o2);
    ck_assert(m.subs[0].leading_slash);
    topic_tree_free(t, NULL);
}
END_TEST

START_TEST(test_MQTT_3_8_4_3_subscribe_replaces_existing)
{
    struct topic_tree *t = topic_tree_new();
    struct topic_sub s = {.owner = &o1, .options = 0, .sub_id = 7};
    ck_assert_int_eq(topic_tree_subscribe(t, "a/b", &s), 1);
    s.options = 2;
    s.sub_id = 9;
    ck_assert_int_eq(topic_tree_subscribe(t, "a/b", &s), 0);
    ck_assert_uint_eq(topic_tree_sub_count(t), 1);
    struct matches m = match(t, "a/b");
    ck_assert_uint_eq(m.count, 1);
    ck_assert_uint_eq(m.subs[0].options, 2);
    ck_assert_uint_eq(m.subs[0].sub_id, 9);
    /* Another owner on the same filter is a second subscription. */
    ck_assert_int_eq(sub(t, "a/b", &o2, 1), 1);
    ck_assert_uint_eq(topic_tree_sub_count(t), 2);
    ck_assert_uint_eq(match_count(t, "a/b"), 2);
    topic_tree_free(t, NULL);
}
END_TEST

START_TEST(test_MQTT_3_3_5_1_reported_once_per_matching_filter)
{
    struct topic_tree *t = topic_tree_new();
    sub(t, "a/b", &o1, 0);
    sub(t, "a/+", &o1, 1);
    sub(t, "a/#", &o1, 2);
    sub(t, "#", &o1, 0);
    sub(t, "+/b", &o2, 0);
    ck_assert_uint_eq(match_owner(t, "a/b", &o1), 4);
    ck_assert_uint_eq(match_owner(t, "a/b", &o2), 1);
    ck_assert_uint_eq(match_owner(t, "a/c", &o1), 3);
    topic_tree_free(t, NULL);
}
END_TEST

START_TEST(test_MQTT_3_10_4_unsubscribe)
{
    struct topic_tree *t = topic_tree_new();
    sub(t, "a/+", &o1, 0);
    sub(t, "a/+", &o2, 0);
    ck_assert_int_eq(topic_tree_unsubscribe(t, "a/+", &o1), 0);
    ck_assert_uint_eq(match_owner(t, "a/b", &o1), 0);
    ck_assert_uint_eq(match_owner(t, "a/b", &o2), 1);
    ck_assert_uint_eq(topic_tree_sub_count(t), 1);
    ck_assert_int_eq(topic_tree_unsubscribe(t, "a/+", &o1), -ENOENT);
    topic_tree_free(t, NULL);
}
END_TEST

START_TEST(test_MQTT_3_10_4_5_unsubscribe_missing_is_enoent)
{
    struct topic_tree *t = topic_tree_new();
    ck_assert_int_eq(topic_tree_unsubscribe(t, "a", &o1), -ENOENT);
    sub(t, "a/b", &o1, 0);
    sub(t, "x/#", &o1, 0);
    ck_assert_int_eq(topic_tree_unsubscribe(t, "a", &o1), -ENOENT);     /* inner node */
    ck_assert_int_eq(topic_tree_unsubscribe(t, "a/b", &o2), -ENOENT);   /* other owner */
    ck_assert_int_eq(topic_tree_unsubscribe(t, "a/+", &o1), -ENOENT);   /* no literal "+" */
    ck_assert_int_eq(topic_tree_unsubscribe(t, "x/y", &o1), -ENOENT);   /* no match semantics */
    ck_assert_int_eq(topic_tree_unsubscribe(t, "a/b/c", &o1), -ENOENT); /* below a leaf */
    ck_assert_uint_eq(topic_tree_sub_count(t), 2);
    ck_assert_uint_eq(topic_tree_node_count(t), 4);
    topic_tree_free(t, NULL);
}
END_TEST

/* ------------------------------------------------------------ pruning */

START_TEST(test_unsubscribe_prunes_empty_nodes)
{
    struct topic_tree *t = topic_tree_new();
    sub(t, "a/b/c", &o1, 0);
    ck_assert_uint_eq(topic_tree_node_count(t), 3);
    sub(t, "a/b", &o1, 0);
    sub(t, "a/+/#", &o1, 0);
    ck_assert_uint_eq(topic_tree_node_count(t), 5);
    ck_assert_int_eq(topic_tree_unsubscribe(t, "a/b/c", &o1), 0);
    ck_assert_uint_eq(topic_tree_node_count(t), 4); /* "a/b" still holds a subscription */
    ck_assert_int_eq(topic_tree_unsubscribe(t, "a/+/#", &o1), 0);
    ck_assert_uint_eq(topic_tree_node_count(t), 2);
    ck_assert_int_eq(topic_tree_unsubscribe(t, "a/b", &o1), 0);
    ck_assert_uint_eq(topic_tree_node_count(t), 0);
    ck_assert_uint_eq(topic_tree_sub_count(t), 0);
    /* The emptied tree works as new. */
    ck_assert_int_eq(sub(t, "a/b/c", &o1, 0), 1);
    ck_assert_uint_eq(match_count(t, "a/b/c"), 1);
    topic_tree_free(t, NULL);
}
END_TEST

START_TEST(test_retain_clear_prunes_but_keeps_subscribed_nodes)
{
    struct topic_tree *t = topic_tree_new();
    char m[] = "m";
    sub(t, "a", &o1, 0);
    topic_tree_retain(t, "a/b/c", m, NULL);
    ck_assert_uint_eq(topic_tree_node_count(t), 3);
    ck_assert_ptr_eq(topic_tree_retain(t, "a/b/c", NULL, NULL), m);
    ck_assert_uint_eq(topic_tree_node_count(t), 1);
    ck_assert_uint_eq(match_count(t, "a"), 1);
    topic_tree_free(t, NULL);
}
END_TEST

START_TEST(test_ten_thousand_topics_cycle_leaves_no_nodes)
{
    struct topic_tree *t = topic_tree_new();
    char topic[64], m[] = "m";
    for (int i = 0; i < 10000; i++) {
        snprintf(topic, sizeof(topic), "site/%d/dev%d/temp", i % 37, i);
        ck_assert_int_eq(sub(t, topic, &o1, 0), 1);
        bool ok = false;
        ck_assert_ptr_null(topic_tree_retain(t, topic, m, &ok));
        ck_assert(ok);
    }
    ck_assert_uint_eq(topic_tree_sub_count(t), 10000);
    ck_assert_uint_eq(topic_tree_retained_count(t), 10000);
    ck_assert_uint_eq(topic_tree_node_count(t), 1 + 37 + 10000 + 10000);
    for (int i = 0; i < 10000; i++) {
        snprintf(topic, sizeof(topic), "site/%d/dev%d/temp", i % 37, i);
        ck_assert_int_eq(topic_tree_unsubscribe(t, topic, &o1), 0);
        ck_assert_ptr_eq(topic_tree_retain(t, topic, NULL, NULL), m);
    }
    ck_assert_uint_eq(topic_tree_sub_count(t), 0);
    ck_assert_uint_eq(topic_tree_retained_count(t), 0);
    ck_assert_uint_eq(topic_tree_node_count(t), 0);
    topic_tree_free(t, NULL);
}
END_TEST

/* ------------------------------------------------------------ retained messages */

START_TEST(test_MQTT_3_3_1_5_retain_set_replace_clear)
{
    struct topic_tree *t = topic_tree_new();
    char m1[] = "1", m2[] = "2";
    bool ok = false;
    ck_assert_ptr_null(topic_tree_retain(t, "a/b", m1, &ok));
    ck_assert(ok);
    ck_assert_uint_eq(topic_tree_retained_count(t), 1);
    ok = false;
    ck_assert_ptr_eq(topic_tree_retain(t, "a/b", m2, &ok), m1);
    ck_assert(ok);
    ck_assert_uint_eq(topic_tree_retained_count(t), 1);
    ck_assert_ptr_eq(topic_tree_retain(t, "a/b", NULL, &ok), m2);
    ck_assert(ok);
    ck_assert_uint_eq(topic_tree_retained_count(t), 0);
    ck_assert_uint_eq(topic_tree_node_count(t), 0);
    topic_tree_free(t, NULL);
}
END_TEST

START_TEST(test_MQTT_3_3_1_10_clearing_absent_retained_creates_nothing)
{
    struct topic_tree *t = topic_tree_new();
    bool ok = false;
    ck_assert_ptr_null(topic_tree_retain(t, "a/b/c", NULL, &ok));
    ck_assert(ok);
    ck_assert_uint_eq(topic_tree_node_count(t), 0);
    sub(t, "a/b", &o1, 0);
    ck_assert_ptr_null(topic_tree_retain(t, "a/b", NULL, NULL));
    ck_assert_uint_eq(topic_tree_node_count(t), 2);
    ck_assert_uint_eq(topic_tree_retained_count(t), 0);
    topic_tree_free(t, NULL);
}
END_TEST

START_TEST(test_MQTT_3_3_1_6_retained_match_wildcards_and_names)
{
    struct topic_tree *t = topic_tree_new();
    char buf[2048];
    const char *topics[] = {"a", "a/b", "a/c", "a/b/c", "a//d", "a/", "b", "$SYS/x", "x/$y"};
    for (size_t i = 0; i < sizeof(topics) / sizeof(topics[0]); i++)
        topic_tree_retain(t, topics[i], (void *)topics[i], NULL);
    /* A subscription node in between holds nothing to report. */
    sub(t, "a/+", &o1, 0);
    sub(t, "a/q", &o1, 0);

    ck_assert_str_eq(retained_list(t, "a/b", buf), "a/b=a/b");
    ck_assert_str_eq(retained_list(t, "a/q", buf), "");
    ck_assert_str_eq(retained_list(t, "a/+", buf), "a/=a/ a/b=a/b a/c=a/c");
    ck_assert_str_eq(retained_list(t, "a/+/c", buf), "a/b/c=a/b/c");
    ck_assert_str_eq(retained_list(t, "a/+/+", buf), "a//d=a//d a/b/c=a/b/c");
    ck_assert_str_eq(retained_list(t, "a/#", buf),
                     "a//d=a//d a/=a/ a/b/c=a/b/c a/b=a/b a/c=a/c a=a");
    ck_assert_str_eq(retained_list(t, "a/b/#", buf), "a/b/c=a/b/c a/b=a/b");
    ck_assert_str_eq(retained_list(t, "+", buf), "a=a b=b");
    ck_assert_str_eq(retained_list(t, "+/+", buf), "a/=a/ a/b=a/b a/c=a/c x/$y=x/$y");
    ck_assert_str_eq(retained_list(t, "#", buf),
                     "a//d=a//d a/=a/ a/b/c=a/b/c a/b=a/b a/c=a/c a=a b=b x/$y=x/$y");
    ck_assert_str_eq(retained_list(t, "c/#", buf), "");
    topic_tree_free(t, NULL);
}
END_TEST

START_TEST(test_MQTT_4_7_2_1_retained_dollar_rule)
{
    struct topic_tree *t = topic_tree_new();
    char buf[2048];
    char m[] = "m";
    topic_tree_retain(t, "$SYS/x", m, NULL);
    topic_tree_retain(t, "$SYS", m, NULL);
    topic_tree_retain(t, "sys/x", m, NULL);
    ck_assert_str_eq(retained_list(t, "#", buf), "sys/x=m");
    ck_assert_str_eq(retained_list(t, "+/x", buf), "sys/x=m");
    ck_assert_str_eq(retained_list(t, "+", buf), "");
    ck_assert_str_eq(retained_list(t, "$SYS/#", buf), "$SYS/x=m $SYS=m");
    ck_assert_str_eq(retained_list(t, "$SYS/+", buf), "$SYS/x=m");
    ck_assert_str_eq(retained_list(t, "$SYS", buf), "$SYS=m");
    topic_tree_free(t, NULL);
}
END_TEST

/* Compares each reported name with its message, which is the topic string itself. */
struct name_check {
    size_t n;
    size_t same;
};

static void check_name_cb(void *ctx, const char *name, void *msg)
{
    struct name_check *r = ctx;
    r->n++;
    if (strcmp(name, msg) == 0)
        r->same++;
}

START_TEST(test_retained_match_long_topic_name)
{
    /* Longer than any inline buffer: the full name must still come through intact. */
    struct topic_tree *t = topic_tree_new();
    size_t len = 5000;
    char *topic = malloc(len + 1);
    for (size_t i = 0; i < len; i++)
        topic[i] = i % 10 == 9 ? '/' : (char)('a' + i % 26);
    topic[len] = '\0';
    topic_tree_retain(t, topic, topic, NULL);
    topic_tree_retain(t, "a", "a", NULL);
    struct name_check r = {0};
    topic_tree_retained_match(t, "#", check_name_cb, &r);
    ck_assert_uint_eq(r.n, 2);
    ck_assert_uint_eq(r.same, 2);
    r = (struct name_check){0};
    topic_tree_retained_match(t, topic, check_name_cb, &r);
    ck_assert_uint_eq(r.n, 1);
    ck_assert_uint_eq(r.same, 1);
    ck_assert_ptr_eq(topic_tree_retain(t, topic, NULL, NULL), topic);
    free(topic);
    topic_tree_free(t, NULL);
}
END_TEST

static size_t released;
static void release_cb(void *msg)
{
    released++;
}

START_TEST(test_tree_free_releases_each_retained_once)
{
    struct topic_tree *t = topic_tree_new();
    char m[] = "m";
    topic_tree_retain(t, "a", m, NULL);
    topic_tree_retain(t, "a/b", m, NULL);
    topic_tree_retain(t, "c/d/e", m, NULL);
    topic_tree_retain(t, "c/d/e", m, NULL); /* replacing keeps one */
    sub(t, "a/#", &o1, 0);
    released = 0;
    topic_tree_free(t, release_cb);
    ck_assert_uint_eq(released, 3);
    topic_tree_free(NULL, release_cb); /* a failed topic_tree_new() is freed like this */
}
END_TEST

/* ------------------------------------------------------------ many children */

START_TEST(test_many_siblings_match_correctly)
{
    struct topic_tree *t = topic_tree_new();
    enum { N = 5000 };
    static int owners[N];
    char topic[64];
    for (int i = 0; i < N; i++) {
        snprintf(topic, sizeof(topic), "room/%d/temp", i);
        ck_assert_int_eq(sub(t, topic, &owners[i], 0), 1);
        snprintf(topic, sizeof(topic), "dev%d", i);
        topic_tree_retain(t, topic, &owners[i], NULL);
    }
    for (int i = 0; i < N; i++) {
        snprintf(topic, sizeof(topic), "room/%d/temp", i);
        struct matches m = match(t, topic);
        ck_assert_uint_eq(m.count, 1);
        ck_assert_ptr_eq(m.subs[0].owner, &owners[i]);
    }
    ck_assert_uint_eq(match_count(t, "room/5000/temp"), 0);
    ck_assert_uint_eq(retained_count_matching(t, "+"), N);
    ck_assert_uint_eq(retained_count_matching(t, "#"), N);

    /* Remove every other sibling: the rest must still be found (table deletions, shrinking). */
    for (int i = 0; i < N; i += 2) {
        snprintf(topic, sizeof(topic), "room/%d/temp", i);
        ck_assert_int_eq(topic_tree_unsubscribe(t, topic, &owners[i]), 0);
        snprintf(topic, sizeof(topic), "dev%d", i);
        ck_assert_ptr_eq(topic_tree_retain(t, topic, NULL, NULL), &owners[i]);
    }
    for (int i = 0; i < N; i++) {
        snprintf(topic, sizeof(topic), "room/%d/temp", i);
        ck_assert_uint_eq(match_owner(t, topic, &owners[i]), i % 2);
        snprintf(topic, sizeof(topic), "dev%d", i);
        ck_assert_uint_eq(retained_count_matching(t, topic), (size_t)(i % 2));
    }
    /* Down to a handful, then none. */
    for (int i = 1; i < N - 6; i += 2) {
        snprintf(topic, sizeof(topic), "room/%d/temp", i);
        ck_assert_int_eq(topic_tree_unsubscribe(t, topic, &owners[i]), 0);
    }
    for (int i = N - 5; i < N; i += 2) {
        snprintf(topic, sizeof(topic), "room/%d/temp", i);
        ck_assert_uint_eq(match_owner(t, topic, &owners[i]), 1);
        ck_assert_int_eq(topic_tree_unsubscribe(t, topic, &owners[i]), 0);
    }
    ck_assert_uint_eq(topic_tree_sub_count(t), 0);
    ck_assert_uint_eq(topic_tree_node_count(t), (size_t)N / 2);
    topic_tree_free(t, NULL);
}
END_TEST

START_TEST(test_many_subscribers_one_filter)
{
    struct topic_tree *t = topic_tree_new();
    enum { N = 2000 };
    static int owners[N];
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(sub(t, "a/+", &owners[i], 0), 1);
    ck_assert_uint_eq(match_count(t, "a/b"), N);
    for (int i = 0; i < N; i += 3)
        ck_assert_int_eq(topic_tree_unsubscribe(t, "a/+", &owners[i]), 0);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(sub(t, "a/+", &owners[i], 1), i % 3 == 0 ? 1 : 0);
    ck_assert_uint_eq(topic_tree_sub_count(t), N);
    topic_tree_free(t, NULL);
}
END_TEST

/*
 * One subscriber lives in its node; a second moves both to an array of their
 * own, and the array goes again when one is left: each step reports every
 * subscriber with its own options, and the bytes come back to what they were.
 */
START_TEST(test_subscribers_move_between_node_and_array)
{
    struct topic_tree *t = topic_tree_new();
    size_t empty = topic_tree_bytes(t);

    ck_assert_int_eq(sub(t, "a/b", &o1, 1), 1);
    size_t one = topic_tree_bytes(t);
    ck_assert_int_eq(sub(t, "a/b", &o2, 2), 1);
    ck_assert_int_eq(sub(t, "a/b", &o3, 0), 1);
    ck_assert_uint_gt(topic_tree_bytes(t), one);
    ck_assert_uint_eq(match_count(t, "a/b"), 3);

    ck_assert_int_eq(topic_tree_unsubscribe(t, "a/b", &o1), 0);
    ck_assert_uint_eq(match_owner(t, "a/b", &o2) + match_owner(t, "a/b", &o3), 2);
    ck_assert_int_eq(topic_tree_unsubscribe(t, "a/b", &o3), 0);
    struct matches m = match(t, "a/b");
    ck_assert_uint_eq(m.count, 1);
    ck_assert_ptr_eq(m.subs[0].owner, &o2);
    ck_assert_uint_eq(m.subs[0].options, 2);
    /* Back in the node: no array is charged, and one subscriber costs what one did. */
    ck_assert_uint_eq(topic_tree_bytes(t), one);
    ck_assert_int_eq(sub(t, "a/b", &o2, 1), 0); /* replaced in place */
    ck_assert_uint_eq(match(t, "a/b").subs[0].options, 1);

    ck_assert_int_eq(topic_tree_unsubscribe(t, "a/b", &o2), 0);
    ck_assert_uint_eq(match_count(t, "a/b"), 0);
    ck_assert_uint_eq(topic_tree_node_count(t), 0);
    ck_assert_uint_eq(topic_tree_bytes(t), empty);
    topic_tree_free(t, NULL);
}
END_TEST

/* ------------------------------------------------------------ out of memory */

START_TEST(test_subscribe_out_of_memory_leaves_tree_unchanged)
{
    struct topic_tree *t = topic_tree_new();
    sub(t, "a/x", &o2, 0);
    size_t nodes = topic_tree_node_count(t);
    int rc = -ENOMEM;
    long budget;
    /* Fail each allocation in turn until the subscription fits. */
    for (budget = 0; rc == -ENOMEM && budget < 100; budget++) {
        topic_tree_fail_allocs_after(t, budget);
        rc = sub(t, "a/b/c/d", &o1, 0);
        if (rc == -ENOMEM) {
            ck_assert_uint_eq(topic_tree_node_count(t), nodes);
            ck_assert_uint_eq(topic_tree_sub_count(t), 1);
            ck_assert_uint_eq(match_count(t, "a/b/c/d"), 0);
        }
    }
    ck_assert_int_eq(rc, 1);
    /* Three nodes and two child tables; the one subscriber lives in the last node. */
    ck_assert_int_eq(budget, 6);
    topic_tree_fail_allocs_after(t, -1);
    ck_assert_uint_eq(match_count(t, "a/b/c/d"), 1);
    ck_assert_uint_eq(match_count(t, "a/x"), 1);

    /* A second subscriber's array fails without losing the first. */
    topic_tree_fail_allocs_after(t, 0);
    ck_assert_int_eq(sub(t, "a/b/c/d", &o2, 0), -ENOMEM);
    ck_assert_uint_eq(match_count(t, "a/b/c/d"), 1);
    /* Replacing needs no memory. */
    ck_assert_int_eq(sub(t, "a/b/c/d", &o1, 2), 0);
    /* Nor does unsubscribing. */
    ck_assert_int_eq(topic_tree_unsubscribe(t, "a/b/c/d", &o1), 0);
    ck_assert_uint_eq(topic_tree_node_count(t), 2);
    topic_tree_fail_allocs_after(t, -1);
    topic_tree_free(t, NULL);
}
END_TEST

START_TEST(test_subscribe_out_of_memory_growing_child_table)
{
    struct topic_tree *t = topic_tree_new();
    char f[32];
    for (int i = 0; i < 3; i++) { /* three children fill a table of four */
        snprintf(f, sizeof(f), "c%d", i);
        sub(t, f, &o1, 0);
    }
    topic_tree_fail_allocs_after(t, 0);
    ck_assert_int_eq(sub(t, "c3", &o1, 0), -ENOMEM);
    topic_tree_fail_allocs_after(t, 1); /* the new table, but not the node */
    ck_assert_int_eq(sub(t, "c3", &o1, 0), -ENOMEM);
    ck_assert_uint_eq(topic_tree_node_count(t), 3);
    topic_tree_fail_allocs_after(t, -1);
    ck_assert_int_eq(sub(t, "c3", &o1, 0), 1);
    for (int i = 0; i < 4; i++) {
        snprintf(f, sizeof(f), "c%d", i);
        ck_assert_uint_eq(match_count(t, f), 1);
    }
    topic_tree_free(t, NULL);
}
END_TEST

START_TEST(test_retain_out_of_memory_returns_msg)
{
    struct topic_tree *t = topic_tree_new();
    char m[] = "m", old[] = "old";
    topic_tree_retain(t, "a", old, NULL);
    for (long budget = 0; budget < 2; budget++) {
        topic_tree_fail_allocs_after(t, budget);
        bool ok = true;
        ck_assert_ptr_eq(topic_tree_retain(t, "a/b/c", m, &ok), m);
        ck_assert(!ok);
        ck_assert_uint_eq(topic_tree_node_count(t), 1);
        ck_assert_uint_eq(topic_tree_retained_count(t), 1);
        /* ok may be NULL: the returned pointer alone tells the caller. */
        ck_assert_ptr_eq(topic_tree_retain(t, "a/b/c", m, NULL), m);
    }
    /* Replacing and clearing need no memory. */
    topic_tree_fail_allocs_after(t, 0);
    bool ok = false;
    ck_assert_ptr_eq(topic_tree_retain(t, "a", m, &ok), old);
    ck_assert(ok);
    ck_assert_ptr_eq(topic_tree_retain(t, "a", NULL, &ok), m);
    ck_assert(ok);
    ck_assert_uint_eq(topic_tree_node_count(t), 0);
    topic_tree_fail_allocs_after(t, -1);
    topic_tree_free(t, NULL);
}
END_TEST

START_TEST(test_retained_match_out_of_memory_skips_unnameable_topics)
{
    struct topic_tree *t = topic_tree_new();
    char longname[600], m[] = "m", buf[2048];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    longname[300] = '/';
    topic_tree_retain(t, longname, m, NULL);
    topic_tree_retain(t, "short", m, NULL);
    topic_tree_fail_allocs_after(t, 0);
    ck_assert_str_eq(retained_list(t, "#", buf), "short=m");
    topic_tree_fail_allocs_after(t, -1);
    ck_assert_uint_eq(retained_count_matching(t, "#"), 2);
    topic_tree_free(t, NULL);
}
END_TEST

/* ---- one filter against one topic or filter (token permissions) ------ */

START_TEST(test_filter_matches_like_the_tree)
{
    static const struct {
        const char *filter, *topic;
        bool match;
    } cases[] = {
        {"a/b", "a/b", true},
        {"a/b", "a/c", false},
        {"a/+", "a/b", true},
        {"a/+", "a", false},
        {"a/+", "a/b/c", false},
        {"a/#", "a", true},
        {"a/#", "a/b/c", true},
        {"#", "a/b", true},
        {"+/+", "a/b", true},
        {"#", "$SYS/x", false},
        {"+/x", "$SYS/x", false},
        {"$SYS/#", "$SYS/x", true},
        {"a/b", "a/bb", false},
        {"a/bb", "a/b", false},
        {"a//c", "a//c", true},
        {"a/+/c", "a//c", true},
        {"sensors/#", "sensorsx", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        ck_assert_msg(topic_filter_matches(cases[i].filter, cases[i].topic, false) ==
                          cases[i].match,
                      "'%s' vs '%s' should %s", cases[i].filter, cases[i].topic,
                      cases[i].match ? "match" : "not match");
}
END_TEST

START_TEST(test_deny_lists_reach_dollar_topics)
{
    ck_assert(topic_filter_matches("#", "$ctl/reboot", true));
    ck_assert(topic_filter_matches("+/reboot", "$ctl/reboot", true));
    ck_assert(!topic_filter_matches("+/x", "$ctl/reboot", true));
    ck_assert(topic_filter_covers("#", "$ctl/#", true));
    ck_assert(topic_filter_covers("+/+", "$ctl/x", true));
    ck_assert(!topic_filter_covers("+", "$ctl/x", true));
}
END_TEST

START_TEST(test_filter_covers)
{
    static const struct {
        const char *outer, *inner;
        bool covers;
    } cases[] = {
        {"#", "a/b/#", true},
        {"#", "#", true},
        {"+", "#", false},
        {"a/#", "a", true},
        {"a/#", "a/b/+", true},
        {"a/+", "a/#", false},
        {"a/+/c", "a/b/c", true},
        {"a/+/c", "a/+/c", true},
        {"a/b/c", "a/+/c", false},
        {"a/b", "a/b", true},
        {"a/b", "a/b/c", false},
        {"a/b/c", "a/b", false},
        {"test/nosubscribe", "test/nosubscribe", true},
        {"+/#", "$SYS/x", false},
        {"$SYS/#", "$SYS/+", true},
        {"sensors/#", "sensorsx/#", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        ck_assert_msg(topic_filter_covers(cases[i].outer, cases[i].inner, false) == cases[i].covers,
                      "'%s' should %scover '%s'", cases[i].outer, cases[i].covers ? "" : "not ",
                      cases[i].inner);
}
END_TEST

static Suite *topic_suite(void)
{
    Suite *s = suite_create("topic");
    TCase *rules = tcase_create("rules");
    tcase_add_test(rules, test_SPEC_3_allowed_characters_accepted);
    tcase_add_test(rules, test_SPEC_3_other_characters_rejected);
    tcase_add_test(rules, test_SPEC_utf8_topics_accepted);
    tcase_add_test(rules, test_SPEC_utf8_topics_refuse_controls_and_bad_utf8);
    tcase_add_test(rules, test_MQTT_4_7_3_2_nul_character_rejected);
    tcase_add_test(rules, test_MQTT_4_7_3_1_empty_rejected);
    tcase_add_test(rules, test_SPEC_3_lone_slash_is_empty);
    tcase_add_test(rules, test_SPEC_5_topic_length_limit);
    tcase_add_test(rules, test_SPEC_5_length_checked_before_content);
    tcase_add_test(rules, test_MQTT_4_7_1_1_wildcards_in_names_rejected);
    tcase_add_test(rules, test_MQTT_4_7_1_2_hash_whole_last_level);
    tcase_add_test(rules, test_MQTT_4_7_1_3_plus_whole_level);
    tcase_add_test(rules, test_SPEC_3_star_whole_level_only);
    tcase_add_test(rules, test_strerror_says_something_for_every_code);
    tcase_add_test(rules, test_SPEC_3_normalize_drops_one_leading_slash);
    tcase_add_test(rules, test_SPEC_3_normalize_star_level_to_plus);
    tcase_add_test(rules, test_normalize_had_slash_may_be_null);
    suite_add_tcase(s, rules);

    TCase *tree = tcase_create("match");
    tcase_add_test(tree, test_MQTT_4_7_exact_match);
    tcase_add_test(tree, test_MQTT_4_7_1_3_plus_matches_one_level);
    tcase_add_test(tree, test_MQTT_4_7_1_3_plus_matches_empty_level);
    tcase_add_test(tree, test_empty_levels_are_levels);
    tcase_add_test(tree, test_MQTT_4_7_1_2_hash_matches_rest);
    tcase_add_test(tree, test_MQTT_4_7_1_2_hash_matches_parent);
    tcase_add_test(tree, test_MQTT_4_7_1_2_hash_alone_matches_everything);
    tcase_add_test(tree, test_MQTT_4_7_2_1_dollar_topics_not_matched_by_hash);
    tcase_add_test(tree, test_MQTT_4_7_2_1_dollar_topics_not_matched_by_plus);
    tcase_add_test(tree, test_MQTT_4_7_2_1_dollar_topics_matched_explicitly);
    tcase_add_test(tree, test_SPEC_3_star_filter_matches_like_plus);
    tcase_add_test(tree, test_SPEC_3_leading_slash_in_filter_matches_topic_without);
    tcase_add_test(tree, test_SPEC_3_leading_slash_in_topic_matches_filter_without);
    tcase_add_test(tree, test_SPEC_3_slash_and_no_slash_are_one_filter);
    tcase_add_test(tree, test_MQTT_3_8_4_3_subscribe_replaces_existing);
    tcase_add_test(tree, test_MQTT_3_3_5_1_reported_once_per_matching_filter);
    tcase_add_test(tree, test_MQTT_3_10_4_unsubscribe);
    tcase_add_test(tree, test_MQTT_3_10_4_5_unsubscribe_missing_is_enoent);
    suite_add_tcase(s, tree);

    TCase *life = tcase_create("lifecycle");
    tcase_set_timeout(life, 30);
    tcase_add_test(life, test_unsubscribe_prunes_empty_nodes);
    tcase_add_test(life, test_retain_clear_prunes_but_keeps_subscribed_nodes);
    tcase_add_test(life, test_ten_thousand_topics_cycle_leaves_no_nodes);
    tcase_add_test(life, test_MQTT_3_3_1_5_retain_set_replace_clear);
    tcase_add_test(life, test_MQTT_3_3_1_10_clearing_absent_retained_creates_nothing);
    tcase_add_test(life, test_MQTT_3_3_1_6_retained_match_wildcards_and_names);
    tcase_add_test(life, test_MQTT_4_7_2_1_retained_dollar_rule);
    tcase_add_test(life, test_retained_match_long_topic_name);
    tcase_add_test(life, test_tree_free_releases_each_retained_once);
    tcase_add_test(life, test_many_siblings_match_correctly);
    tcase_add_test(life, test_many_subscribers_one_filter);
    tcase_add_test(life, test_subscribers_move_between_node_and_array);
    suite_add_tcase(s, life);

    TCase *one = tcase_create("one filter");
    tcase_add_test(one, test_filter_matches_like_the_tree);
    tcase_add_test(one, test_filter_covers);
    tcase_add_test(one, test_deny_lists_reach_dollar_topics);
    suite_add_tcase(s, one);

    TCase *oom = tcase_create("out of memory");
    tcase_add_test(oom, test_subscribe_out_of_memory_leaves_tree_unchanged);
    tcase_add_test(oom, test_subscribe_out_of_memory_growing_child_table);
    tcase_add_test(oom, test_retain_out_of_memory_returns_msg);
    tcase_add_test(oom, test_retained_match_out_of_memory_skips_unnameable_topics);
    suite_add_tcase(s, oom);
    return s;
}

int main(void)
{
    return check_tap_run(topic_suite());
}
