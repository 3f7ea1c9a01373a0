/*
 * check_tap — run a check suite as make check wants it: one TAP line per test
 * on standard output, and the exit status says whether any failed.
 */
#ifndef AVIARY_CHECK_TAP_H
#define AVIARY_CHECK_TAP_H

#include <check.h>
#include <stdlib.h>

/* Run every test of `s` (the runner takes it) and return main()'s status. */
static inline int check_tap_run(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_set_tap(sr, "-");
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

#endif
