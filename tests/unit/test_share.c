/*
 * Unit tests of shared subscriptions ($share/GROUP/FILTER) through share.h:
 * parsing the filter, joining and leaving groups, and the turn that routing
 * (route_pick_member, route.h) gives each member. Tests are named after the
 * clause or behaviour they check.
 *
 * The sessions are zeroed structs without a token, which is all share.c asks
 * of a member: offline, or online when given a sender (which is all routing
 * looks at). Passing over a member whose token may not read the topic needs
 * a catalog; test_limits and the integration tests drive that.
 */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "check_tap.h"
#include "broker/broker.h"
#include "broker/instance.h"
#include "broker/route.h"
#include "broker/sender.h"
#include "broker/session.h"
#include "broker/share.h"
#include "broker/topic.h"
#include "util/limits.h"

#define SESSIONS 8

static struct event_base *base;
static struct broker *broker;
static struct instance *inst;
static struct session *sessions[SESSIONS]; /* zeroed, each its own block */

static void setup(void)
{
    struct limits l;
    limits_init(&l);
    base = event_base_new();
    ck_assert_ptr_nonnull(base);
    broker = broker_new(base, &l);
    ck_assert_ptr_nonnull(broker);
    inst = instance_new(broker, "share-test", &l);
    ck_assert_ptr_nonnull(inst);
    for (int i = 0; i < SESSIONS; i++) {
        sessions[i] = calloc(1, sizeof(*sessions[i]));
        ck_assert_ptr_nonnull(sessions[i]);
    }
}

/* Every test leaves its groups empty: an instance frees groups only through their sessions. */
static void teardown(void)
{
    ck_assert_uint_eq(inst->shares.count, 0);
    instance_free(inst);
    broker_free(broker);
    event_base_free(base);
    for (int i = 0; i < SESSIONS; i++)
        free(sessions[i]);
}

/* ------------------------------------------------------------ helpers */

/* Join session `s` to the group of `key` ("GROUP/FILTER") with QoS `qos`. */
static int join(const char *key, struct session *s, uint8_t qos, struct share_group **g)
{
    const char *slash = strchr(key, '/');
    ck_assert_ptr_nonnull(slash);
    struct share_member m = {.session = s, .options = qos};
    return share_join(inst, key, (size_t)(slash - key), &m, g);
}

/* Join `n` sessions, sessions[0] first, to `key`; returns the group. */
static struct share_group *join_n(const char *key, size_t n)
{
    struct share_group *g = NULL;
    for (size_t i = 0; i < n; i++) {
        struct share_group *got;
        ck_assert_int_eq(join(key, sessions[i], 1, &got), 1);
        if (g)
            ck_assert_ptr_eq(got, g);
        g = got;
    }
    return g;
}

/* Which of sessions[] the next pick gives, or -1 for none. */
static int pick(struct share_group *g)
{
    const struct share_member *m = route_pick_member(g, "a/b");
    if (!m)
        return -1;
    for (int i = 0; i < SESSIONS; i++)
        if (m->session == sessions[i])
            return i;
    ck_abort_msg("the pick is none of sessions[]");
    return -1;
}

/* Leave with every member, the group's last leave freeing it. */
static void leave_all(struct share_group *g)
{
    while (g->count > 1)
        ck_assert_int_eq(share_leave(inst, g, g->members[0].session), 0);
    ck_assert_int_eq(share_leave(inst, g, g->members[0].session), 0);
}

struct owners {
    size_t count;
    const void *owner[8];
    bool shared[8];
};

static void collect_owner(void *ctx, const struct topic_sub *sub)
{
    struct owners *o = ctx;
    if (o->count < 8) {
        o->owner[o->count] = sub->owner;
        o->shared[o->count] = sub->shared;
    }
    o->count++;
}

/* The owners of the subscriptions matching `topic` in the instance's tree. */
static struct owners tree_owners(const char *topic)
{
    struct owners o = {0};
    topic_tree_match(inst->tree, topic, collect_owner, &o);
    return o;
}

/* Parse `filter`; returns share_parse()'s answer and sets *valid (true when not shared). */
static bool parse(const char *filter, bool *valid, char *group, char *rest)
{
    const char *g = NULL, *r = NULL;
    size_t glen = 0, rlen = 0;
    *valid = true;
    bool shared = share_parse(filter, strlen(filter), &g, &glen, &r, &rlen, valid);
    if (shared && *valid) {
        memcpy(group, g, glen);
        group[glen] = '\0';
        memcpy(rest, r, rlen);
        rest[rlen] = '\0';
    }
    return shared;
}

/* ------------------------------------------------------------ parsing */

START_TEST(test_MQTT_4_8_2_1_share_prefix_splits_group_and_filter)
{
    bool valid;
    char group[64], rest[64];

    ck_assert(parse("$share/workers/jobs/+/new", &valid, group, rest));
    ck_assert(valid);
    ck_assert_str_eq(group, "workers");
    ck_assert_str_eq(rest, "jobs/+/new");

    ck_assert(parse("$share/g/#", &valid, group, rest));
    ck_assert(valid);
    ck_assert_str_eq(group, "g");
    ck_assert_str_eq(rest, "#");

    /* The FILTER part keeps a leading '/' of its own: normalising is the caller's. */
    ck_assert(parse("$share/g//a", &valid, group, rest));
    ck_assert(valid);
    ck_assert_str_eq(rest, "/a");
}
END_TEST

START_TEST(test_non_shared_filters_are_not_shares)
{
    bool valid;
    char group[64], rest[64];
    const char *plain[] = {"a/b",         "#",         "$SYS/x", "$SHARE/g/a",
                           "$shared/g/a", "share/g/a", "$share", "/$share/g/a"};

    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
        valid = false;
        ck_assert_msg(!parse(plain[i], &valid, group, rest), "%s", plain[i]);
        ck_assert_msg(valid, "%s: *valid changed", plain[i]);
    }
}
END_TEST

START_TEST(test_MQTT_4_8_2_1_empty_group_is_malformed)
{
    bool valid;
    char group[64], rest[64];

    ck_assert(parse("$share//a", &valid, group, rest));
    ck_assert(!valid);
    ck_assert(parse("$share/", &valid, group, rest));
    ck_assert(!valid);
}
END_TEST

START_TEST(test_MQTT_4_8_2_2_group_without_filter_is_malformed)
{
    bool valid;
    char group[64], rest[64];

    ck_assert(parse("$share/g", &valid, group, rest));
    ck_assert(!valid);
    ck_assert(parse("$share/g/", &valid, group, rest));
    ck_assert(!valid);
}
END_TEST

START_TEST(test_MQTT_4_8_2_2_wildcard_in_group_is_malformed)
{
    bool valid;
    char group[64], rest[64];
    const char *bad[] = {"$share/+/a",   "$share/#/a", "$share/g+/a",
                         "$share/a#b/a", "$share/*/a", "$share/x*/a"};

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(parse(bad[i], &valid, group, rest), "%s", bad[i]);
        ck_assert_msg(!valid, "%s", bad[i]);
    }
}
END_TEST

START_TEST(test_parse_reads_only_len_bytes)
{
    const char *g, *r;
    size_t glen, rlen;
    bool valid = true;
    const char *filter = "$share/g/abcdef";

    /* Cut after "$share/g/": no FILTER within the given length. */
    ck_assert(share_parse(filter, strlen("$share/g/"), &g, &glen, &r, &rlen, &valid));
    ck_assert(!valid);
    /* Cut inside the filter: FILTER ends at the length, not at the NUL. */
    ck_assert(share_parse(filter, strlen("$share/g/ab"), &g, &glen, &r, &rlen, &valid));
    ck_assert(valid);
    ck_assert_uint_eq(glen, 1);
    ck_assert_uint_eq(rlen, 2);
    ck_assert(memcmp(r, "ab", 2) == 0);
    /* Shorter than the prefix. */
    ck_assert(!share_parse(filter, 3, &g, &glen, &r, &rlen, &valid));
}
END_TEST

/* ------------------------------------------------------------ groups */

START_TEST(test_first_join_makes_group_and_one_tree_subscription)
{
    struct share_group *g = NULL;

    ck_assert_int_eq(join("g/a/+", sessions[0], 1, &g), 1);
    ck_assert_ptr_nonnull(g);
    ck_assert_str_eq(g->key, "g/a/+");
    ck_assert_str_eq(g->filter, "a/+");
    ck_assert_uint_eq(g->count, 1);
    ck_assert_ptr_eq(g->members[0].session, sessions[0]);
    ck_assert_ptr_eq(strmap_get(&inst->shares, "g/a/+"), g);

    /* One subscription, owned by the group, stands for all its members. */
    ck_assert_int_eq(join("g/a/+", sessions[1], 1, &g), 1);
    ck_assert_uint_eq(topic_tree_sub_count(inst->tree), 1);
    struct owners o = tree_owners("a/b");
    ck_assert_uint_eq(o.count, 1);
    ck_assert_ptr_eq(o.owner[0], g);
    ck_assert(o.shared[0]);
    leave_all(g);
}
END_TEST

START_TEST(test_join_again_updates_member_options)
{
    struct share_group *g, *again;
    struct share_member m = {.session = sessions[0], .options = 0, .sub_id = 7};

    ck_assert_int_eq(share_join(inst, "g/t", 1, &m, &g), 1);
    m.options = 2;
    m.sub_id = 9;
    m.leading_slash = true;
    ck_assert_int_eq(share_join(inst, "g/t", 1, &m, &again), 0);
    ck_assert_ptr_eq(again, g);
    ck_assert_uint_eq(g->count, 1);
    ck_assert_uint_eq(g->members[0].options, 2);
    ck_assert_uint_eq(g->members[0].sub_id, 9);
    ck_assert(g->members[0].leading_slash);
    leave_all(g);
}
END_TEST

START_TEST(test_MQTT_4_8_2_groups_differ_by_name_and_by_filter)
{
    struct share_group *g1, *g2, *g3;

    ck_assert_int_eq(join("one/a/b", sessions[0], 1, &g1), 1);
    ck_assert_int_eq(join("two/a/b", sessions[0], 1, &g2), 1);
    ck_assert_int_eq(join("one/a/+", sessions[0], 1, &g3), 1);
    ck_assert_ptr_ne(g1, g2);
    ck_assert_ptr_ne(g1, g3);
    ck_assert_ptr_ne(g2, g3);
    ck_assert_uint_eq(inst->shares.count, 3);
    /* Each group is its own subscriber: a message reaches one member of each. */
    ck_assert_uint_eq(tree_owners("a/b").count, 3);
    leave_all(g1);
    leave_all(g2);
    ck_assert_uint_eq(tree_owners("a/b").count, 1);
    leave_all(g3);
}
END_TEST

START_TEST(test_last_leave_frees_group_and_its_subscription)
{
    size_t before = inst->account->bytes;
    struct share_group *g = join_n("g/x/y", 3);

    ck_assert_uint_gt(inst->account->bytes, before);
    ck_assert_int_eq(share_leave(inst, g, sessions[1]), 0);
    ck_assert_uint_eq(g->count, 2);
    ck_assert_int_eq(share_leave(inst, g, sessions[0]), 0);
    ck_assert_uint_eq(g->count, 1);
    ck_assert_ptr_eq(strmap_get(&inst->shares, "g/x/y"), g);
    ck_assert_int_eq(share_leave(inst, g, sessions[2]), 0);

    ck_assert_ptr_null(strmap_get(&inst->shares, "g/x/y"));
    ck_assert_uint_eq(topic_tree_sub_count(inst->tree), 0);
    ck_assert_uint_eq(topic_tree_node_count(inst->tree), 0);
    /* Everything the group was charged for is released with it. */
    ck_assert_uint_eq(inst->account->bytes, before);
}
END_TEST

START_TEST(test_leave_by_non_member_is_enoent)
{
    struct share_group *g = join_n("g/t", 2);

    ck_assert_int_eq(share_leave(inst, g, sessions[5]), -ENOENT);
    ck_assert_uint_eq(g->count, 2);
    leave_all(g);
}
END_TEST

START_TEST(test_leave_twice_is_enoent)
{
    struct share_group *g = join_n("g/t", 2);

    ck_assert_int_eq(share_leave(inst, g, sessions[0]), 0);
    ck_assert_int_eq(share_leave(inst, g, sessions[0]), -ENOENT);
    ck_assert_uint_eq(g->count, 1);
    ck_assert_ptr_eq(g->members[0].session, sessions[1]);
    leave_all(g);
}
END_TEST

START_TEST(test_join_out_of_memory_leaves_nothing)
{
    struct share_group *g = NULL;
    size_t before = inst->account->bytes;

    /* The group's subscription cannot be made: no group either. */
    topic_tree_fail_allocs_after(inst->tree, 0);
    ck_assert_int_eq(join("g/a/b", sessions[0], 1, &g), -ENOMEM);
    topic_tree_fail_allocs_after(inst->tree, -1);
    ck_assert_ptr_null(strmap_get(&inst->shares, "g/a/b"));
    ck_assert_uint_eq(topic_tree_sub_count(inst->tree), 0);
    ck_assert_uint_eq(topic_tree_node_count(inst->tree), 0);
    ck_assert_uint_eq(inst->account->bytes, before);

    /* The same join succeeds once memory is back. */
    ck_assert_int_eq(join("g/a/b", sessions[0], 1, &g), 1);
    leave_all(g);
}
END_TEST

START_TEST(test_many_members_grow_the_array)
{
    struct share_group *g = join_n("g/t", SESSIONS);

    ck_assert_uint_eq(g->count, SESSIONS);
    ck_assert_uint_ge(g->cap, SESSIONS);
    for (size_t i = 0; i < SESSIONS; i++)
        ck_assert_ptr_eq(g->members[i].session, sessions[i]);
    leave_all(g);
}
END_TEST

/* ------------------------------------------------------------ turns */

START_TEST(test_offline_members_take_turns_in_join_order)
{
    struct share_group *g = join_n("g/a/+", 3);

    for (int round = 0; round < 3; round++)
        for (int i = 0; i < 3; i++)
            ck_assert_int_eq(pick(g), i);
    leave_all(g);
}
END_TEST

START_TEST(test_single_member_gets_every_message)
{
    struct share_group *g = join_n("g/a/+", 1);

    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(pick(g), 0);
    leave_all(g);
}
END_TEST

START_TEST(test_rejoin_keeps_the_turn_order)
{
    struct share_group *g = join_n("g/t", 3), *again;

    ck_assert_int_eq(pick(g), 0);
    ck_assert_int_eq(join("g/t", sessions[0], 2, &again), 0);
    ck_assert_int_eq(pick(g), 1);
    ck_assert_int_eq(pick(g), 2);
    ck_assert_int_eq(pick(g), 0);
    leave_all(g);
}
END_TEST

START_TEST(test_member_that_left_is_never_picked)
{
    struct share_group *g = join_n("g/t", 4);
    int seen[SESSIONS] = {0};

    ck_assert_int_eq(pick(g), 0);
    ck_assert_int_eq(share_leave(inst, g, sessions[1]), 0);
    /* Three rounds of three: each remaining member exactly three times. */
    for (int i = 0; i < 9; i++) {
        int k = pick(g);
        ck_assert_int_ge(k, 0);
        ck_assert_int_ne(k, 1);
        seen[k]++;
    }
    ck_assert_int_eq(seen[0], 3);
    ck_assert_int_eq(seen[2], 3);
    ck_assert_int_eq(seen[3], 3);
    leave_all(g);
}
END_TEST

START_TEST(test_turn_wraps_when_last_member_leaves)
{
    struct share_group *g = join_n("g/t", 3);

    ck_assert_int_eq(pick(g), 0);
    ck_assert_int_eq(pick(g), 1);
    /* The next turn was sessions[2]'s; with it gone, the turn starts over. */
    ck_assert_int_eq(share_leave(inst, g, sessions[2]), 0);
    ck_assert_uint_lt(g->next, g->count);
    ck_assert_int_eq(pick(g), 0);
    ck_assert_int_eq(pick(g), 1);
    leave_all(g);
}
END_TEST

START_TEST(test_new_member_joins_the_rotation)
{
    struct share_group *g = join_n("g/t", 2), *same;
    int seen[SESSIONS] = {0};

    ck_assert_int_eq(pick(g), 0);
    ck_assert_int_eq(join("g/t", sessions[2], 1, &same), 1);
    ck_assert_ptr_eq(same, g);
    for (int i = 0; i < 6; i++)
        seen[pick(g)]++;
    ck_assert_int_eq(seen[0], 2);
    ck_assert_int_eq(seen[1], 2);
    ck_assert_int_eq(seen[2], 2);
    leave_all(g);
}
END_TEST

/* ------------------------------------------------------------ runner */

/* A connected member is picked before offline ones, in turn among the connected. */
START_TEST(test_connected_members_come_before_offline_ones)
{
    struct sender online = {0}, closing = {.closed = true};
    struct share_group *g = join_n("g/a/b", 4);

    sessions[1]->out = &online;
    sessions[3]->out = &online;
    sessions[2]->out = &closing; /* a closing connection counts as offline */
    ck_assert_int_eq(pick(g), 1);
    ck_assert_int_eq(pick(g), 3);
    ck_assert_int_eq(pick(g), 1);
    sessions[1]->out = sessions[3]->out = NULL;
    /* Nobody connected: the offline ones take turns (their sessions queue it). */
    int first = pick(g);
    ck_assert_int_ne(pick(g), first);
    sessions[2]->out = NULL;
    leave_all(g);
}
END_TEST

static Suite *share_suite(void)
{
    Suite *s = suite_create("share");

    TCase *parsing = tcase_create("parse");
    tcase_add_test(parsing, test_MQTT_4_8_2_1_share_prefix_splits_group_and_filter);
    tcase_add_test(parsing, test_non_shared_filters_are_not_shares);
    tcase_add_test(parsing, test_MQTT_4_8_2_1_empty_group_is_malformed);
    tcase_add_test(parsing, test_MQTT_4_8_2_2_group_without_filter_is_malformed);
    tcase_add_test(parsing, test_MQTT_4_8_2_2_wildcard_in_group_is_malformed);
    tcase_add_test(parsing, test_parse_reads_only_len_bytes);
    suite_add_tcase(s, parsing);

    TCase *groups = tcase_create("groups");
    tcase_add_checked_fixture(groups, setup, teardown);
    tcase_add_test(groups, test_first_join_makes_group_and_one_tree_subscription);
    tcase_add_test(groups, test_join_again_updates_member_options);
    tcase_add_test(groups, test_MQTT_4_8_2_groups_differ_by_name_and_by_filter);
    tcase_add_test(groups, test_last_leave_frees_group_and_its_subscription);
    tcase_add_test(groups, test_leave_by_non_member_is_enoent);
    tcase_add_test(groups, test_leave_twice_is_enoent);
    tcase_add_test(groups, test_join_out_of_memory_leaves_nothing);
    tcase_add_test(groups, test_many_members_grow_the_array);
    suite_add_tcase(s, groups);

    TCase *turns = tcase_create("turns");
    tcase_add_checked_fixture(turns, setup, teardown);
    tcase_add_test(turns, test_offline_members_take_turns_in_join_order);
    tcase_add_test(turns, test_single_member_gets_every_message);
    tcase_add_test(turns, test_rejoin_keeps_the_turn_order);
    tcase_add_test(turns, test_member_that_left_is_never_picked);
    tcase_add_test(turns, test_turn_wraps_when_last_member_leaves);
    tcase_add_test(turns, test_new_member_joins_the_rotation);
    tcase_add_test(turns, test_connected_members_come_before_offline_ones);
    suite_add_tcase(s, turns);
    return s;
}

int main(void)
{
    return check_tap_run(share_suite());
}
