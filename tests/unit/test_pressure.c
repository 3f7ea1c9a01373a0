/*
 * Unit tests of src/cluster/pressure.c: when a node's publishers wait for
 * its own messages to come back from Redis, and the mark taken from Redis's
 * client-output-buffer-limit.
 */
#include <check.h>

#include "check_tap.h"
#include "cluster/pressure.h"

START_TEST(test_pressure_pauses_past_the_mark_resumes_under_half)
{
    struct pressure p;

    pressure_init(&p);
    pressure_set_mark(&p, 1000);
    ck_assert(!pressure_add(&p, 600));
    ck_assert(!pressure_add(&p, 400)); /* at the mark, not past it */
    ck_assert(pressure_add(&p, 1));
    ck_assert(p.over);
    ck_assert(!pressure_add(&p, 500)); /* one pause, however far past */
    ck_assert_uint_eq(p.pauses, 1);
    ck_assert(!pressure_sub(&p, 1001)); /* 500: half, not under it */
    ck_assert(pressure_sub(&p, 1));
    ck_assert(!p.over);
    ck_assert(!pressure_sub(&p, 100));
    ck_assert(pressure_add(&p, 700));
    ck_assert_uint_eq(p.pauses, 2);
}
END_TEST

START_TEST(test_pressure_never_below_zero)
{
    struct pressure p;

    pressure_init(&p);
    pressure_set_mark(&p, 10);
    ck_assert(pressure_add(&p, 11));
    /* A count gone wrong ends the pause rather than holding publishers for ever. */
    ck_assert(pressure_sub(&p, 50));
    ck_assert_uint_eq(p.bytes, 0);
}
END_TEST

START_TEST(test_pressure_lower_mark_waits_higher_mark_releases)
{
    struct pressure p;

    pressure_init(&p);
    ck_assert_uint_eq(p.mark, PRESSURE_MARK_DEFAULT);
    ck_assert(!pressure_add(&p, 3000));
    ck_assert(!pressure_set_mark(&p, 1000)); /* past it now: the next message pauses */
    ck_assert(pressure_add(&p, 1));
    ck_assert(pressure_set_mark(&p, 0)); /* back to the default: 3001 is under its half */
    ck_assert_uint_eq(p.mark, PRESSURE_MARK_DEFAULT);
}
END_TEST

START_TEST(test_pressure_mark_of_redis_limits)
{
    /* Redis 7's default: hard 32 MB, soft 8 MB for 60 s. */
    ck_assert_uint_eq(pressure_mark_of("normal 0 0 0 slave 268435456 67108864 60 "
                                       "pubsub 33554432 8388608 60"),
                      4u << 20);
    /* "pubsub 1mb 512kb 60": a quarter of the hard one, half of the soft one. */
    ck_assert_uint_eq(pressure_mark_of("normal 0 0 0 replica 0 0 0 pubsub 1048576 524288 60"),
                      262144);
    ck_assert_uint_eq(pressure_mark_of("pubsub 1048576 0 0"), 262144);
    ck_assert_uint_eq(pressure_mark_of("pubsub 0 1048576 60"), 524288);
    /* No limit at all, or one far above: the default bounds what Redis holds anyway. */
    ck_assert_uint_eq(pressure_mark_of("pubsub 0 0 0"), PRESSURE_MARK_DEFAULT);
    ck_assert_uint_eq(pressure_mark_of("pubsub 1073741824 0 0"), PRESSURE_MARK_DEFAULT);
    ck_assert_uint_eq(pressure_mark_of("pubsub 2 0 0"), 1);
    ck_assert_uint_eq(pressure_mark_of("normal 0 0 0"), 0);
    ck_assert_uint_eq(pressure_mark_of("pubsub 32mb 8mb 60"), 0);
    ck_assert_uint_eq(pressure_mark_of("pubsub 1048576"), 0);
    ck_assert_uint_eq(pressure_mark_of(NULL), 0);
}
END_TEST

START_TEST(test_pressure_cost_counts_redis_framing)
{
    ck_assert_uint_gt(pressure_cost(100, 14), 100 + 14);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("pressure");
    TCase *tc = tcase_create("marks");
    tcase_add_test(tc, test_pressure_pauses_past_the_mark_resumes_under_half);
    tcase_add_test(tc, test_pressure_never_below_zero);
    tcase_add_test(tc, test_pressure_lower_mark_waits_higher_mark_releases);
    tcase_add_test(tc, test_pressure_mark_of_redis_limits);
    tcase_add_test(tc, test_pressure_cost_counts_redis_framing);
    suite_add_tcase(s, tc);
    return check_tap_run(s);
}
