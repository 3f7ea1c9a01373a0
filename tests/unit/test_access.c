/*
 * Unit tests of tenancy/access: what a token allows. Allow lists (pub, sub)
 * allow everything when empty and otherwise follow MQTT matching, where a
 * leading wildcard does not reach `$` topics (MQTT-4.7.2-1); deny lists
 * (deny-pub, deny-sub) win over any allow and do reach `$` topics. Topics and
 * filters are given normalised, as the broker hands them over.
 */
#include <check.h>
#include <stdlib.h>

#include "check_tap.h"
#include "tenancy/access.h"
#include "tenancy/catalog.h"

/* A filter list of string literals, for a token on the stack. */
#define FILTERS(...)                                                                               \
    ((struct catalog_filters){(char *[]){__VA_ARGS__},                                             \
                              sizeof((char *[]){__VA_ARGS__}) / sizeof(char *)})

/* ---- no token, no lists ------------------------------------------------------------- */

START_TEST(test_desktop_mode_without_a_token_allows_everything)
{
    ck_assert(access_may_publish(NULL, "a/b"));
    ck_assert(access_may_publish(NULL, "$SYS/x"));
    ck_assert_int_eq(access_subscribe_verdict(NULL, "#"), ACCESS_ALLOWED);
    ck_assert(access_may_subscribe(NULL, "$SYS/#"));
    ck_assert(access_may_read(NULL, "$SYS/x"));
}
END_TEST

START_TEST(test_empty_lists_allow_everything)
{
    struct catalog_token t = {0};

    ck_assert(access_may_publish(&t, "a/b"));
    ck_assert(access_may_publish(&t, "$SYS/x"));
    ck_assert_int_eq(access_subscribe_verdict(&t, "#"), ACCESS_ALLOWED);
    ck_assert_int_eq(access_subscribe_verdict(&t, "$SYS/#"), ACCESS_ALLOWED);
    ck_assert(access_may_subscribe(&t, "+/+"));
    ck_assert(access_may_read(&t, "$SYS/x"));
}
END_TEST

/* ---- publish -------------------------------------------------------------------------- */

START_TEST(test_publish_needs_a_matching_pub_filter)
{
    struct catalog_token t = {.pub = FILTERS("sensors/#", "cmd/+/set")};

    ck_assert(access_may_publish(&t, "sensors/kitchen/temp"));
    ck_assert(access_may_publish(&t, "sensors")); /* "a/#" matches "a" */
    ck_assert(access_may_publish(&t, "cmd/lamp/set"));
    ck_assert(!access_may_publish(&t, "cmd/lamp/get"));
    ck_assert(!access_may_publish(&t, "cmd/set")); /* "+" is exactly one level */
    ck_assert(!access_may_publish(&t, "cmd/a/b/set"));
    ck_assert(!access_may_publish(&t, "sensorsX/a")); /* levels, not prefixes */
    ck_assert(!access_may_publish(&t, "other"));
}
END_TEST

/* MQTT-4.7.2-1 in an allow list: "#" and "+/x" do not grant `$` topics, "$SYS/#" does. */
START_TEST(test_publish_allowed_wildcards_do_not_reach_dollar_topics)
{
    struct catalog_token hash = {.pub = FILTERS("#")};
    struct catalog_token plus = {.pub = FILTERS("+/x")};
    struct catalog_token sys = {.pub = FILTERS("$SYS/#")};

    ck_assert(access_may_publish(&hash, "a/b"));
    ck_assert(!access_may_publish(&hash, "$SYS/x"));
    ck_assert(access_may_publish(&plus, "a/x"));
    ck_assert(!access_may_publish(&plus, "$SYS/x"));
    ck_assert(access_may_publish(&sys, "$SYS/x"));
    ck_assert(!access_may_publish(&sys, "a/b"));
}
END_TEST

START_TEST(test_publish_deny_wins_over_allow)
{
    struct catalog_token t = {.pub = FILTERS("sensors/#"), .deny_pub = FILTERS("sensors/secret/#")};

    ck_assert(access_may_publish(&t, "sensors/kitchen"));
    ck_assert(!access_may_publish(&t, "sensors/secret"));
    ck_assert(!access_may_publish(&t, "sensors/secret/key"));
}
END_TEST

START_TEST(test_publish_deny_alone_denies_only_its_topics)
{
    struct catalog_token t = {.deny_pub = FILTERS("a/+", "b")};

    ck_assert(!access_may_publish(&t, "a/b"));
    ck_assert(!access_may_publish(&t, "b"));
    ck_assert(access_may_publish(&t, "a/b/c"));
    ck_assert(access_may_publish(&t, "a"));
    ck_assert(access_may_publish(&t, "b/c"));
    ck_assert(access_may_publish(&t, "$SYS/x"));
}
END_TEST

/* "--deny-pub #" denies everything, `$` topics included. */
START_TEST(test_publish_denied_wildcards_reach_dollar_topics)
{
    struct catalog_token hash = {.deny_pub = FILTERS("#")};
    struct catalog_token plus = {.deny_pub = FILTERS("+/x")};

    ck_assert(!access_may_publish(&hash, "a"));
    ck_assert(!access_may_publish(&hash, "$SYS/x"));
    ck_assert(!access_may_publish(&plus, "$SYS/x"));
    ck_assert(access_may_publish(&plus, "$SYS/y"));
}
END_TEST

/* The publish lists say nothing about subscribing or reading, and the other way round. */
START_TEST(test_publish_and_subscribe_lists_are_independent)
{
    struct catalog_token t = {.pub = FILTERS("out/#"), .deny_sub = FILTERS("out/#")};

    ck_assert(access_may_publish(&t, "out/a"));
    ck_assert(!access_may_publish(&t, "in/a"));
    ck_assert(!access_may_read(&t, "out/a"));
    ck_assert(access_may_read(&t, "in/a"));
    ck_assert_int_eq(access_subscribe_verdict(&t, "in/#"), ACCESS_ALLOWED);
}
END_TEST

/* ---- subscribe ------------------------------------------------------------------------ */

START_TEST(test_subscribe_inside_an_allowed_filter)
{
    struct catalog_token t = {.sub = FILTERS("sensors/#", "cmd/+/state")};

    ck_assert_int_eq(access_subscribe_verdict(&t, "sensors/+/temp"), ACCESS_ALLOWED);
    ck_assert_int_eq(access_subscribe_verdict(&t, "sensors/#"), ACCESS_ALLOWED);
    ck_assert_int_eq(access_subscribe_verdict(&t, "sensors"), ACCESS_ALLOWED);
    ck_assert_int_eq(access_subscribe_verdict(&t, "cmd/lamp/state"), ACCESS_ALLOWED);
    ck_assert_int_eq(access_subscribe_verdict(&t, "cmd/+/state"), ACCESS_ALLOWED);
    ck_assert(access_may_subscribe(&t, "sensors/a"));
}
END_TEST

/* A filter that reaches beyond every allowed one is refused, even when they overlap. */
START_TEST(test_subscribe_outside_every_allowed_filter)
{
    struct catalog_token t = {.sub = FILTERS("sensors/#", "cmd/+/state")};

    ck_assert_int_eq(access_subscribe_verdict(&t, "#"), ACCESS_OUTSIDE);
    ck_assert_int_eq(access_subscribe_verdict(&t, "+/temp"), ACCESS_OUTSIDE);
    ck_assert_int_eq(access_subscribe_verdict(&t, "other/x"), ACCESS_OUTSIDE);
    ck_assert_int_eq(access_subscribe_verdict(&t, "cmd/#"), ACCESS_OUTSIDE);
    ck_assert_int_eq(access_subscribe_verdict(&t, "cmd/+/+"), ACCESS_OUTSIDE);
    ck_assert_int_eq(access_subscribe_verdict(&t, "cmd/lamp/state/x"), ACCESS_OUTSIDE);
    ck_assert(!access_may_subscribe(&t, "#"));
}
END_TEST

START_TEST(test_subscribe_plus_covers_one_level_but_not_hash)
{
    struct catalog_token t = {.sub = FILTERS("+")};

    ck_assert_int_eq(access_subscribe_verdict(&t, "a"), ACCESS_ALLOWED);
    ck_assert_int_eq(access_subscribe_verdict(&t, "+"), ACCESS_ALLOWED);
    ck_assert_int_eq(access_subscribe_verdict(&t, "#"), ACCESS_OUTSIDE);
    ck_assert_int_eq(access_subscribe_verdict(&t, "a/b"), ACCESS_OUTSIDE);
}
END_TEST

START_TEST(test_subscribe_inside_a_denied_filter_is_denied)
{
    struct catalog_token t = {.deny_sub = FILTERS("private/#")};

    ck_assert_int_eq(access_subscribe_verdict(&t, "private/x"), ACCESS_DENIED);
    ck_assert_int_eq(access_subscribe_verdict(&t, "private/#"), ACCESS_DENIED);
    ck_assert_int_eq(access_subscribe_verdict(&t, "private"), ACCESS_DENIED);
    ck_assert_int_eq(access_subscribe_verdict(&t, "public/x"), ACCESS_ALLOWED);
    ck_assert(!access_may_subscribe(&t, "private/+"));
    ck_assert(access_may_subscribe(&t, "public/+"));
}
END_TEST

START_TEST(test_subscribe_deny_wins_over_allow)
{
    struct catalog_token t = {.sub = FILTERS("a/#"), .deny_sub = FILTERS("a/secret/#")};

    ck_assert_int_eq(access_subscribe_verdict(&t, "a/public"), ACCESS_ALLOWED);
    ck_assert_int_eq(access_subscribe_verdict(&t, "a/secret/+"), ACCESS_DENIED);
    ck_assert(!access_may_subscribe(&t, "a/secret/x"));
}
END_TEST

/* Outside the allow list is the answer even when a deny filter covers it too. */
START_TEST(test_subscribe_outside_is_reported_before_denied)
{
    struct catalog_token t = {.sub = FILTERS("a/#"), .deny_sub = FILTERS("#")};

    ck_assert_int_eq(access_subscribe_verdict(&t, "b/x"), ACCESS_OUTSIDE);
    ck_assert_int_eq(access_subscribe_verdict(&t, "a/x"), ACCESS_DENIED);
}
END_TEST

/* Only lying inside a denied filter refuses; overlapping one is granted, and reads filter. */
START_TEST(test_subscribe_overlapping_a_denied_filter_is_granted)
{
    struct catalog_token t = {.deny_sub = FILTERS("a/secret")};

    ck_assert_int_eq(access_subscribe_verdict(&t, "a/#"), ACCESS_ALLOWED);
    ck_assert_int_eq(access_subscribe_verdict(&t, "a/+"), ACCESS_ALLOWED);
    ck_assert_int_eq(access_subscribe_verdict(&t, "a/secret"), ACCESS_DENIED);
    ck_assert(!access_may_read(&t, "a/secret"));
    ck_assert(access_may_read(&t, "a/public"));
}
END_TEST

START_TEST(test_subscribe_dollar_filters)
{
    struct catalog_token hash = {.sub = FILTERS("#")};
    struct catalog_token sys = {.sub = FILTERS("$SYS/#")};
    struct catalog_token deny_hash = {.deny_sub = FILTERS("#")};
    struct catalog_token deny_plus = {.deny_sub = FILTERS("+/#")};

    ck_assert_int_eq(access_subscribe_verdict(&hash, "a/#"), ACCESS_ALLOWED);
    ck_assert_int_eq(access_subscribe_verdict(&hash, "$SYS/#"), ACCESS_OUTSIDE);
    ck_assert_int_eq(access_subscribe_verdict(&hash, "$SYS/x"), ACCESS_OUTSIDE);
    ck_assert_int_eq(access_subscribe_verdict(&sys, "$SYS/x"), ACCESS_ALLOWED);
    ck_assert_int_eq(access_subscribe_verdict(&sys, "#"), ACCESS_OUTSIDE);
    ck_assert_int_eq(access_subscribe_verdict(&deny_hash, "$SYS/x"), ACCESS_DENIED);
    ck_assert_int_eq(access_subscribe_verdict(&deny_plus, "$SYS/x"), ACCESS_DENIED);
}
END_TEST

/* ---- read (every delivery) ---------------------------------------------------------- */

START_TEST(test_read_needs_a_matching_sub_filter_and_no_deny)
{
    struct catalog_token t = {.sub = FILTERS("sensors/#"), .deny_sub = FILTERS("sensors/secret/#")};

    ck_assert(access_may_read(&t, "sensors/kitchen"));
    ck_assert(access_may_read(&t, "sensors"));
    ck_assert(!access_may_read(&t, "sensors/secret/key"));
    ck_assert(!access_may_read(&t, "other"));
}
END_TEST

/* A granted "#" never carries a `$` topic; a denied "#" keeps `$` topics away as well. */
START_TEST(test_read_dollar_topics)
{
    struct catalog_token hash = {.sub = FILTERS("#")};
    struct catalog_token sys = {.sub = FILTERS("$SYS/+")};
    struct catalog_token deny_hash = {.deny_sub = FILTERS("#")};

    ck_assert(access_may_read(&hash, "a/b"));
    ck_assert(!access_may_read(&hash, "$SYS/x"));
    ck_assert(access_may_read(&sys, "$SYS/x"));
    ck_assert(!access_may_read(&sys, "$SYS/x/y"));
    ck_assert(!access_may_read(&deny_hash, "a"));
    ck_assert(!access_may_read(&deny_hash, "$SYS/x"));
}
END_TEST

/* The verdict and the yes/no answer agree for every outcome. */
START_TEST(test_may_subscribe_is_the_verdict_allowed)
{
    struct catalog_token t = {.sub = FILTERS("a/#"), .deny_sub = FILTERS("a/b")};
    static const char *const filters[] = {"a/c", "a/b", "x", "#", "a/#"};

    for (size_t i = 0; i < sizeof(filters) / sizeof(filters[0]); i++)
        ck_assert_int_eq(access_may_subscribe(&t, filters[i]),
                         access_subscribe_verdict(&t, filters[i]) == ACCESS_ALLOWED);
}
END_TEST

static Suite *access_suite(void)
{
    Suite *s = suite_create("access");
    TCase *tc = tcase_create("no token, no lists");
    tcase_add_test(tc, test_desktop_mode_without_a_token_allows_everything);
    tcase_add_test(tc, test_empty_lists_allow_everything);
    suite_add_tcase(s, tc);

    tc = tcase_create("publish");
    tcase_add_test(tc, test_publish_needs_a_matching_pub_filter);
    tcase_add_test(tc, test_publish_allowed_wildcards_do_not_reach_dollar_topics);
    tcase_add_test(tc, test_publish_deny_wins_over_allow);
    tcase_add_test(tc, test_publish_deny_alone_denies_only_its_topics);
    tcase_add_test(tc, test_publish_denied_wildcards_reach_dollar_topics);
    tcase_add_test(tc, test_publish_and_subscribe_lists_are_independent);
    suite_add_tcase(s, tc);

    tc = tcase_create("subscribe");
    tcase_add_test(tc, test_subscribe_inside_an_allowed_filter);
    tcase_add_test(tc, test_subscribe_outside_every_allowed_filter);
    tcase_add_test(tc, test_subscribe_plus_covers_one_level_but_not_hash);
    tcase_add_test(tc, test_subscribe_inside_a_denied_filter_is_denied);
    tcase_add_test(tc, test_subscribe_deny_wins_over_allow);
    tcase_add_test(tc, test_subscribe_outside_is_reported_before_denied);
    tcase_add_test(tc, test_subscribe_overlapping_a_denied_filter_is_granted);
    tcase_add_test(tc, test_subscribe_dollar_filters);
    tcase_add_test(tc, test_may_subscribe_is_the_verdict_allowed);
    suite_add_tcase(s, tc);

    tc = tcase_create("read");
    tcase_add_test(tc, test_read_needs_a_matching_sub_filter_and_no_deny);
    tcase_add_test(tc, test_read_dollar_topics);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return check_tap_run(access_suite());
}
