/*
 * Unit tests for the cluster's catalog without a Redis server: the blocking
 * client's failures (a refused connection, a server that accepts and never
 * answers), store/shared's refusal to work without Redis, and the database
 * images the catalog travels as (store_open_image, store_serialize,
 * store_open_copy, store_catalog_only, store_mirror_instances).
 *
 * The round trip through Redis itself (fetch, publish, conflicts) is
 * tests/integration/test_cluster_catalog.py's, against a real redis-server.
 */
#include <check.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store/shared.h"
#include "store/store.h"
#include "util/clock.h"
#include "util/redis_client.h"
#include "util/redis_url.h"

#include "check_tap.h"

#define ERRLEN 512

static char test_dir[64];

/* A loopback TCP socket on a free port; listening when `listening`. Its port in *port. */
static int loopback_socket(bool listening, unsigned *port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    if (listening)
        ck_assert_int_eq(listen(fd, 4), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static void url_of(struct redis_url *u, const char *fmt, unsigned port)
{
    char text[128], err[ERRLEN];

    snprintf(text, sizeof(text), fmt, port);
    ck_assert_msg(redis_url_parse(text, u, err, sizeof(err)) == 0, "%s: %s", text, err);
}

START_TEST(test_a_refused_connection_names_the_url_without_its_password)
{
    struct redis_url u;
    char err[ERRLEN] = "";
    unsigned port;
    int fd = loopback_socket(false, &port); /* bound, not listening: connect is refused */

    url_of(&u, "redis://user:secret@127.0.0.1:%u", port);
    ck_assert_ptr_null(redis_client_connect(&u, NULL, 500, err, sizeof(err)));
    ck_assert_msg(strstr(err, "cannot connect to Redis at redis://user:***@127.0.0.1:") != NULL,
                  "%s", err);
    ck_assert_msg(strstr(err, "refused") != NULL, "%s", err);
    ck_assert_ptr_null(strstr(err, "secret"));
    redis_url_clear(&u);
    close(fd);
}
END_TEST

START_TEST(test_a_server_that_never_answers_times_out)
{
    struct redis_url u;
    char err[ERRLEN] = "";
    unsigned port;
    int fd = loopback_socket(true, &port); /* the kernel accepts; nobody reads or writes */

    url_of(&u, "redis://127.0.0.1:%u", port);
    struct redis_client *c = redis_client_connect(&u, NULL, 200, err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err); /* no AUTH, nothing to wait for */
    uint64_t began = clock_ms();
    const char *ping[] = {"PING"};
    ck_assert_ptr_null(redis_client_command(c, 1, ping, NULL, err, sizeof(err)));
    uint64_t took = clock_ms() - began;
    ck_assert_msg(took >= 150 && took < 2000, "took %llu ms", (unsigned long long)took);
    ck_assert_msg(strstr(err, "timed out") != NULL, "%s", err);
    ck_assert(redis_client_broken(c));
    /* Broken: the next command fails at once. */
    began = clock_ms();
    ck_assert_ptr_null(redis_client_command(c, 1, ping, NULL, err, sizeof(err)));
    ck_assert_uint_lt(clock_ms() - began, 100);
    redis_client_close(c);
    redis_url_clear(&u);
    close(fd);
}
END_TEST

START_TEST(test_auth_against_a_silent_server_fails_within_the_timeout)
{
    struct redis_url u;
    char err[ERRLEN] = "";
    unsigned port;
    int fd = loopback_socket(true, &port);

    url_of(&u, "redis://:pw@127.0.0.1:%u", port);
    uint64_t began = clock_ms();
    ck_assert_ptr_null(redis_client_connect(&u, NULL, 200, err, sizeof(err)));
    ck_assert_uint_lt(clock_ms() - began, 2000);
    ck_assert_msg(strstr(err, "redis://:***@127.0.0.1") != NULL, "%s", err);
    redis_url_clear(&u);
    close(fd);
}
END_TEST

START_TEST(test_shared_without_redis_fails_and_keeps_nothing)
{
    struct redis_url u;
    char err[ERRLEN] = "";
    unsigned port;
    int fd = loopback_socket(false, &port);
    struct store *s = (struct store *)&s;
    int64_t version = 7;

    url_of(&u, "redis://127.0.0.1:%u/2", port);
    struct shared *sh = shared_new(&u, NULL);
    redis_url_clear(&u); /* shared_new copied it */
    ck_assert_ptr_nonnull(sh);
    ck_assert_int_eq(shared_fetch(sh, true, &s, &version, err, sizeof(err)), SHARED_E_REDIS);
    ck_assert_ptr_null(s);
    ck_assert_msg(strstr(err, "redis://127.0.0.1:") != NULL && strstr(err, "/2") != NULL, "%s",
                  err);
    ck_assert_int_eq(shared_version(sh, &version, err, sizeof(err)), SHARED_E_REDIS);
    shared_free(sh);
    close(fd);
}
END_TEST

/* ---- images ---------------------------------------------------------------- */

static struct store *image_ok(const void *image, size_t len)
{
    char err[ERRLEN] = "";
    struct store *s = store_open_image("test image", image, len, err, sizeof(err));
    ck_assert_msg(s != NULL, "store_open_image: %s", err);
    return s;
}

static void serialize_ok(struct store *s, unsigned char **image, size_t *len)
{
    char err[ERRLEN] = "";
    ck_assert_msg(store_serialize(s, image, len, err, sizeof(err)) == 0, "%s", err);
    ck_assert_uint_gt(*len, 100);
    ck_assert_mem_eq(*image, "SQLite format 3", 16);
    ck_assert_int_eq((*image)[18], 1); /* never WAL: a deserialized database cannot be */
    ck_assert_int_eq((*image)[19], 1);
}

static void count_instance(void *arg, const struct store_instance *inst)
{
    (void)inst;
    (*(int *)arg)++;
}

static void count_token(void *arg, const struct store_token *t)
{
    (void)t;
    (*(int *)arg)++;
}

static void count_key(void *arg, const struct store_admin_key *k)
{
    (void)k;
    (*(int *)arg)++;
}

/* Instances, live tokens and live admin keys of `s`, as a number each. */
static void counts(struct store *s, int *instances, int *tokens, int *keys)
{
    char err[ERRLEN] = "";
    *instances = *tokens = *keys = 0;
    ck_assert_int_eq(store_instance_list(s, count_instance, instances, err, sizeof(err)), 0);
    ck_assert_int_eq(store_token_all(s, count_token, tokens, err, sizeof(err)), 0);
    ck_assert_int_eq(store_admin_key_list(s, true, count_key, keys, err, sizeof(err)), 0);
}

static void fill(struct store *s, const char *instance)
{
    char err[ERRLEN] = "", id[STORE_TOKEN_ID_LEN + 1], secret[STORE_SECRET_LEN + 1];
    struct store_token_spec spec = {.instance = instance};

    ck_assert_msg(store_instance_create(s, instance, NULL, err, sizeof(err)) == 0, "%s", err);
    ck_assert_msg(store_token_create(s, &spec, id, secret, err, sizeof(err)) == 0, "%s", err);
    ck_assert_msg(store_admin_key_create(s, "ops", id, secret, err, sizeof(err)) == 0, "%s", err);
}

START_TEST(test_an_image_keeps_its_rows)
{
    struct store *s = image_ok(NULL, 0); /* a new catalog, migrated */
    unsigned char *image, *again;
    size_t len, again_len;
    int instances, tokens, keys;

    fill(s, "a");
    serialize_ok(s, &image, &len);
    store_close(s);

    s = image_ok(image, len);
    counts(s, &instances, &tokens, &keys);
    ck_assert_int_eq(instances, 1);
    ck_assert_int_eq(tokens, 1);
    ck_assert_int_eq(keys, 1);
    /* Nothing written: the same bytes (aviaryctl publishes only what changed). */
    serialize_ok(s, &again, &again_len);
    ck_assert_uint_eq(again_len, len);
    ck_assert_mem_eq(again, image, len);
    free(again);
    fill(s, "b");
    serialize_ok(s, &again, &again_len);
    ck_assert(again_len != len || memcmp(again, image, len) != 0);
    free(again);
    free(image);
    store_close(s);
}
END_TEST

START_TEST(test_an_image_that_is_no_database_is_refused)
{
    char err[ERRLEN] = "";
    static const char junk[4096] = "not a database";

    ck_assert_ptr_null(store_open_image("junk", junk, sizeof(junk), err, sizeof(err)));
    ck_assert_msg(strstr(err, "junk") != NULL, "%s", err);
}
END_TEST

START_TEST(test_a_copy_of_a_file_keeps_the_catalog_and_drops_what_was_kept)
{
    char path[128], err[ERRLEN] = "";
    int instances, tokens, keys;

    snprintf(path, sizeof(path), "%s/copy.db", test_dir);
    struct store *file = store_open(path, err, sizeof(err));
    ck_assert_msg(file != NULL, "%s", err);
    fill(file, "kept");
    store_close(file);
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    ck_assert_int_eq(sqlite3_exec(db,
                                  "INSERT INTO kept_messages(topic, payload, props, qos, retain, "
                                  "expiry, created_ms) VALUES ('t', x'00', x'', 0, 1, 0, 1)",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);

    struct store *copy = store_open_copy(path, err, sizeof(err));
    ck_assert_msg(copy != NULL, "store_open_copy: %s", err);
    ck_assert_msg(store_catalog_only(copy, err, sizeof(err)) == 0, "%s", err);
    unsigned char *image;
    size_t len;
    serialize_ok(copy, &image, &len);
    store_close(copy);
    copy = image_ok(image, len);
    counts(copy, &instances, &tokens, &keys);
    ck_assert_int_eq(instances + tokens + keys, 3);
    free(image);
    store_close(copy);

    snprintf(path, sizeof(path), "%s/missing.db", test_dir);
    ck_assert_ptr_null(store_open_copy(path, err, sizeof(err)));
    ck_assert_msg(strstr(err, "no database at") != NULL, "%s", err);
}
END_TEST

START_TEST(test_a_node_mirrors_the_cluster_instances)
{
    char path[128], err[ERRLEN] = "";
    int instances, tokens, keys;

    snprintf(path, sizeof(path), "%s/node.db", test_dir);
    struct store *own = store_open(path, err, sizeof(err));
    ck_assert_msg(own != NULL, "%s", err);
    fill(own, "gone"); /* an instance the cluster does not have */
    struct store *catalog = image_ok(NULL, 0);
    fill(catalog, "one");
    fill(catalog, "two");
    ck_assert_msg(store_mirror_instances(own, catalog, err, sizeof(err)) == 0, "%s", err);
    ck_assert_msg(store_mirror_instances(own, catalog, err, sizeof(err)) == 0, "again: %s", err);
    counts(own, &instances, &tokens, &keys);
    ck_assert_int_eq(instances, 2);
    ck_assert_int_eq(tokens, 0); /* the cluster's tokens stay the cluster's */
    ck_assert_msg(store_instance_get(own, "gone", count_instance, &instances, err, sizeof(err)) ==
                      STORE_E_NOT_FOUND,
                  "the instance the cluster lacks is still there");
    store_close(catalog);
    store_close(own);
}
END_TEST

static Suite *shared_suite(void)
{
    Suite *s = suite_create("shared");
    TCase *tc = tcase_create("redis client");

    tcase_add_test(tc, test_a_refused_connection_names_the_url_without_its_password);
    tcase_add_test(tc, test_a_server_that_never_answers_times_out);
    tcase_add_test(tc, test_auth_against_a_silent_server_fails_within_the_timeout);
    tcase_add_test(tc, test_shared_without_redis_fails_and_keeps_nothing);
    suite_add_tcase(s, tc);

    tc = tcase_create("images");
    tcase_add_test(tc, test_an_image_keeps_its_rows);
    tcase_add_test(tc, test_an_image_that_is_no_database_is_refused);
    tcase_add_test(tc, test_a_copy_of_a_file_keeps_the_catalog_and_drops_what_was_kept);
    tcase_add_test(tc, test_a_node_mirrors_the_cluster_instances);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    snprintf(test_dir, sizeof(test_dir), "/tmp/aviary-test-shared-XXXXXX");
    if (mkdtemp(test_dir) == NULL) {
        perror("mkdtemp");
        return EXIT_FAILURE;
    }
    int status = check_tap_run(shared_suite());
    check_tap_remove_dir(test_dir);
    return status;
}
