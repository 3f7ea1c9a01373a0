/*
 * check_tap — run a check suite as make check wants it: one TAP line per test
 * on standard output, and the exit status says whether any failed.
 */
#ifndef AVIARY_CHECK_TAP_H
#define AVIARY_CHECK_TAP_H

#include <check.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/*
 * Remove the directory `dir` a test program made for its files (databases,
 * their -wal and -shm files, logs) with everything in it, one level deep.
 */
static inline void check_tap_remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[512];

    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (unlink(path) < 0)
            rmdir(path);
    }
    closedir(d);
    rmdir(dir);
}

#endif
