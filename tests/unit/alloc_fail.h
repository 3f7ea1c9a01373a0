/*
 * alloc_fail — allocation failures on demand, for unit tests that drive the
 * broker in-process.
 *
 * A test program linked with alloc_fail.c and
 * -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup has every
 * such call of its own code and of the project's libraries go through here
 * (libevent, OpenSSL and libc are linked apart and keep theirs). Setting a
 * countdown makes exactly one later call return NULL, so a test can walk
 * the failure through every allocation of one step, a run per allocation,
 * and see each error path taken once.
 */
#ifndef AVIARY_TEST_ALLOC_FAIL_H
#define AVIARY_TEST_ALLOC_FAIL_H

#include <stdbool.h>

/* The `n`th allocation from now (0: the next one) fails, once; -1: none fails. */
void alloc_fail_nth(long n);

/* Did the failure set by alloc_fail_nth() happen? */
bool alloc_fail_done(void);

#endif
