/*
 * Unit tests of src/util: the string map, SipHash, the log's escaping of client
 * text, hex, the secret hash and the mailbox.
 */
#include <check.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "check_tap.h"
#include "util/clock.h"
#include "util/deadlines.h"
#include "util/hex.h"
#include "util/log.h"
#include "util/mailbox.h"
#include "util/passwd.h"
#include "util/redis_url.h"
#include "util/fifo.h"
#include "util/secret.h"
#include "util/siphash.h"
#include "util/strmap.h"

START_TEST(test_strmap_empty_map_needs_no_setup)
{
    struct strmap m = {0};
    size_t pos = 0;

    ck_assert_ptr_null(strmap_get(&m, "a"));
    ck_assert_ptr_null(strmap_remove(&m, "a"));
    ck_assert_ptr_null(strmap_next(&m, &pos, NULL));
    strmap_clear(&m);
}
END_TEST

START_TEST(test_strmap_put_replaces_and_reports_the_old_value)
{
    struct strmap m = {0};
    int one = 1, two = 2;
    void *old = &one;

    ck_assert_int_eq(strmap_put(&m, "sensor-1", &one, &old), 0);
    ck_assert_ptr_null(old);
    ck_assert_int_eq(strmap_put(&m, "sensor-1", &two, &old), 0);
    ck_assert_ptr_eq(old, &one);
    ck_assert_ptr_eq(strmap_get(&m, "sensor-1"), &two);
    ck_assert_uint_eq(m.count, 1);
    strmap_clear(&m);
}
END_TEST

/* A map that borrows its keys holds the caller's strings: the newest for a replaced key. */
START_TEST(test_strmap_borrowed_keys_are_the_callers_own)
{
    struct strmap m = {0};
    char *first = strdup("client-7"), *second = strdup("client-7");
    const char *key = NULL;
    size_t pos = 0;
    int one = 1, two = 2;

    ck_assert_ptr_nonnull(first);
    ck_assert_ptr_nonnull(second);
    strmap_borrow_keys(&m);
    ck_assert_int_eq(strmap_put(&m, first, &one, NULL), 0);
    ck_assert_ptr_eq(strmap_next(&m, &pos, &key), &one);
    ck_assert_ptr_eq(key, first);
    /* The value that held `first` is replaced and goes, with its key. */
    ck_assert_int_eq(strmap_put(&m, second, &two, NULL), 0);
    free(first);
    ck_assert_ptr_eq(strmap_get(&m, "client-7"), &two);
    pos = 0;
    ck_assert_ptr_eq(strmap_next(&m, &pos, &key), &two);
    ck_assert_ptr_eq(key, second);
    ck_assert_ptr_eq(strmap_remove(&m, "client-7"), &two);
    ck_assert_str_eq(second, "client-7"); /* not freed by the map */
    ck_assert_int_eq(strmap_put(&m, second, &one, NULL), 0);
    strmap_clear(&m);
    ck_assert(m.borrowed);
    ck_assert_str_eq(second, "client-7");
    free(second);
}
END_TEST

/*
 * Deletion shifts later members of a probe run back into the hole; check it
 * against a plain array through many growths and interleaved removals.
 */
START_TEST(test_strmap_matches_a_reference_through_removals)
{
    enum { KEYS = 5000 };
    static int present[KEYS];
    static int values[KEYS];
    struct strmap m = {0};
    char key[32];
    unsigned seed = 12345;

    memset(present, 0, sizeof(present));
    for (int round = 0; round < 40000; round++) {
        seed = seed * 1103515245u + 12345u;
        int k = (int)((seed >> 8) % KEYS);
        snprintf(key, sizeof(key), "client-%d", k);
        if ((seed >> 4) & 1) {
            ck_assert_int_eq(strmap_put(&m, key, &values[k], NULL), 0);
            present[k] = 1;
        } else {
            void *v = strmap_remove(&m, key);
            ck_assert_ptr_eq(v, present[k] ? &values[k] : NULL);
            present[k] = 0;
        }
    }
    size_t count = 0;
    for (int k = 0; k < KEYS; k++) {
        snprintf(key, sizeof(key), "client-%d", k);
        ck_assert_ptr_eq(strmap_get(&m, key), present[k] ? &values[k] : NULL);
        count += (size_t)present[k];
    }
    ck_assert_uint_eq(m.count, count);

    size_t pos = 0, seen = 0;
    const char *k;
    while (strmap_next(&m, &pos, &k))
        seen++;
    ck_assert_uint_eq(seen, count);
    strmap_clear(&m);
}
END_TEST

/* The reference vectors of the SipHash paper: key 00..0f, messages 00..(n-1). */
START_TEST(test_siphash24_reference_vectors)
{
    struct siphash_key key;
    unsigned char k[16], msg[15];

    for (int i = 0; i < 16; i++)
        k[i] = (unsigned char)i;
    for (int i = 0; i < 15; i++)
        msg[i] = (unsigned char)i;
    key.k[0] = key.k[1] = 0;
    for (int b = 0; b < 8; b++) {
        key.k[0] |= (uint64_t)k[b] << (8 * b);
        key.k[1] |= (uint64_t)k[8 + b] << (8 * b);
    }
    ck_assert_uint_eq(siphash24(&key, msg, 0), 0x726fdb47dd0e0e31ULL);
    ck_assert_uint_eq(siphash24(&key, msg, 15), 0xa129ca6149be45e5ULL);
}
END_TEST

START_TEST(test_siphash_keys_differ_between_draws)
{
    struct siphash_key a, b;
    siphash_key_random(&a);
    siphash_key_random(&b);
    ck_assert(a.k[0] != b.k[0] || a.k[1] != b.k[1]);
    ck_assert_uint_ne(siphash13(&a, "sensor-1", 8), siphash13(&b, "sensor-1", 8));
}
END_TEST

START_TEST(test_log_escape_keeps_printable_ascii)
{
    char out[64];
    ck_assert_str_eq(log_escape("kitchen/temp", 12, out, sizeof(out)), "kitchen/temp");
}
END_TEST

START_TEST(test_log_escape_hides_newlines_and_escapes)
{
    char out[64];
    const char text[] = "a\nb\x1b[2Jc\\";
    ck_assert_str_eq(log_escape(text, sizeof(text) - 1, out, sizeof(out)), "a\\x0ab\\x1b[2Jc\\x5c");
}
END_TEST

START_TEST(test_log_escape_hides_utf8_bytes)
{
    char out[64];
    ck_assert_str_eq(log_escape("\xc3\xa9", 2, out, sizeof(out)), "\\xc3\\xa9");
}
END_TEST

START_TEST(test_log_escape_truncates_with_an_ellipsis)
{
    char out[10];
    ck_assert_str_eq(log_escape("abcdefghijklmnop", 16, out, sizeof(out)), "abcdef...");
    ck_assert_uint_lt(strlen(out), sizeof(out));
    ck_assert_str_eq(log_escape("abc", 3, out, 3), "");
}
END_TEST

START_TEST(test_hex_encode_is_lowercase_and_terminated)
{
    static const uint8_t bytes[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
    char out[HEX_SIZE(sizeof(bytes)) + 1];

    memset(out, 'x', sizeof(out));
    hex_encode(bytes, sizeof(bytes), out);
    ck_assert_str_eq(out, "00017f80abff");
    ck_assert_int_eq(out[HEX_SIZE(sizeof(bytes))], 'x'); /* nothing written past HEX_SIZE */
}
END_TEST

START_TEST(test_hex_encode_of_nothing_is_empty)
{
    char out[HEX_SIZE(0)] = {'x'};

    hex_encode(NULL, 0, out);
    ck_assert_str_eq(out, "");
}
END_TEST

/* Stored hashes must keep matching: the output is SHA-256, byte for byte (FIPS 180-2 "abc"). */
START_TEST(test_secret_hash_is_sha256)
{
    static const uint8_t abc[SECRET_HASH_LEN] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea,
                                                 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
                                                 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c,
                                                 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
    uint8_t out[SECRET_HASH_LEN];
    char text[HEX_SIZE(SECRET_HASH_LEN)];

    secret_hash("abc", 3, out);
    ck_assert_mem_eq(out, abc, SECRET_HASH_LEN);
    secret_hash("", 0, out);
    hex_encode(out, sizeof(out), text);
    ck_assert_str_eq(text, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}
END_TEST

/* Whether the mailbox's descriptor is readable now. */
static bool mailbox_readable(const struct mailbox *m)
{
    struct pollfd p = {.fd = mailbox_fd(m), .events = POLLIN};
    return poll(&p, 1, 0) == 1;
}

START_TEST(test_mailbox_gives_items_oldest_first_and_wakes_once_per_batch)
{
    struct mailbox *m = mailbox_new("test");
    int a = 1, b = 2;

    ck_assert_ptr_nonnull(m);
    ck_assert(!mailbox_readable(m));
    ck_assert_ptr_null(mailbox_take(m));
    ck_assert_int_eq(mailbox_put(m, &a), 0);
    ck_assert_int_eq(mailbox_put(m, &b), 0);
    ck_assert(mailbox_readable(m));
    ck_assert_ptr_eq(mailbox_take(m), &a);
    ck_assert(!mailbox_readable(m)); /* the take emptied the pipe; b still waits */
    ck_assert_ptr_eq(mailbox_take(m), &b);
    ck_assert_ptr_null(mailbox_take(m));
    mailbox_free(m, NULL);
}
END_TEST

START_TEST(test_mailbox_replace_keeps_only_the_latest)
{
    struct mailbox *m = mailbox_new("test");
    int a = 1, b = 2;
    void *replaced = &a;

    ck_assert_int_eq(mailbox_replace(m, &a, &replaced), 0);
    ck_assert_ptr_null(replaced);
    ck_assert_int_eq(mailbox_replace(m, &b, &replaced), 0);
    ck_assert_ptr_eq(replaced, &a);
    ck_assert(mailbox_readable(m));
    ck_assert_ptr_eq(mailbox_take(m), &b);
    ck_assert_ptr_null(mailbox_take(m));
    mailbox_free(m, NULL);
}
END_TEST

START_TEST(test_mailbox_wake_without_an_item)
{
    struct mailbox *m = mailbox_new("test");

    mailbox_wake(m);
    ck_assert(mailbox_readable(m));
    ck_assert_ptr_null(mailbox_take(m));
    ck_assert(!mailbox_readable(m));
    mailbox_free(m, NULL);
}
END_TEST

/* A wake-up between the drain and the pop stays for the next turn of the loop. */
START_TEST(test_mailbox_pop_leaves_a_later_wake_up)
{
    struct mailbox *m = mailbox_new("test");
    int a = 1;

    ck_assert_int_eq(mailbox_put(m, &a), 0);
    mailbox_drain(m);
    ck_assert(!mailbox_readable(m));
    mailbox_wake(m);
    ck_assert_ptr_eq(mailbox_pop(m), &a);
    ck_assert(mailbox_readable(m));
    ck_assert_ptr_null(mailbox_pop(m));
    mailbox_free(m, NULL);
}
END_TEST

static int released[4];
static size_t released_count;

static void release_int(void *item)
{
    released[released_count++] = *(int *)item;
}

START_TEST(test_mailbox_free_releases_what_waits_oldest_first)
{
    struct mailbox *m = mailbox_new("test");
    int items[3] = {7, 8, 9};

    released_count = 0;
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(mailbox_put(m, &items[i]), 0);
    ck_assert_ptr_eq(mailbox_take(m), &items[0]);
    mailbox_free(m, release_int);
    ck_assert_uint_eq(released_count, 2);
    ck_assert_int_eq(released[0], 8);
    ck_assert_int_eq(released[1], 9);
    mailbox_free(NULL, release_int);
}
END_TEST

#define MAILBOX_THREAD_ITEMS 20000

static void *mailbox_producer(void *arg)
{
    for (uintptr_t i = 1; i <= MAILBOX_THREAD_ITEMS; i++)
        while (mailbox_put(arg, (void *)i) < 0)
            ;
    return NULL;
}

/* A consumer that sleeps in poll() until woken gets every item, in order. */
START_TEST(test_mailbox_carries_every_item_between_threads)
{
    struct mailbox *m = mailbox_new("test");
    pthread_t producer;
    uintptr_t expected = 1;

    ck_assert_int_eq(pthread_create(&producer, NULL, mailbox_producer, m), 0);
    while (expected <= MAILBOX_THREAD_ITEMS) {
        struct pollfd p = {.fd = mailbox_fd(m), .events = POLLIN};
        ck_assert_int_eq(poll(&p, 1, 5000), 1); /* a lost wake-up would time out here */
        void *item;
        while ((item = mailbox_take(m)))
            ck_assert_uint_eq((uintptr_t)item, expected++);
    }
    pthread_join(producer, NULL);
    ck_assert_ptr_null(mailbox_take(m));
    mailbox_free(m, NULL);
}
END_TEST

/* ---- password files ---- */

#define HASH64 "0000000000000000000000000000000000000000000000000000000000000000"
#define SALT32 "00000000000000000000000000000000"

static char *passwd_path(void)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/aviary-passwd-%d", (int)getpid());
    unlink(path);
    return path;
}

static bool passwd_ok(struct passwd_file *pf, const char *user, const char *password)
{
    return passwd_file_check(pf, user, strlen(user), password, strlen(password));
}

START_TEST(test_passwd_update_load_check)
{
    char *path = passwd_path(), err[256];

    ck_assert_int_eq(passwd_file_update(path, "alice", "one", err, sizeof(err)), 0);
    ck_assert_int_eq(passwd_file_update(path, "bob", "two words", err, sizeof(err)), 0);
    ck_assert_int_eq(passwd_file_update(path, "alice", "three", err, sizeof(err)), 0);
    struct passwd_file *pf = passwd_file_load(path, err, sizeof(err));
    ck_assert_msg(pf != NULL, "%s", err);
    ck_assert_uint_eq(passwd_file_count(pf), 2);
    ck_assert(passwd_ok(pf, "alice", "three"));
    ck_assert(passwd_ok(pf, "alice", "three")); /* the remembered one */
    ck_assert(!passwd_ok(pf, "alice", "one"));
    ck_assert(!passwd_ok(pf, "alice", "thre"));
    ck_assert(passwd_ok(pf, "bob", "two words"));
    ck_assert(!passwd_ok(pf, "carol", "two words"));
    ck_assert(!passwd_ok(pf, "", ""));
    passwd_file_free(pf);
    ck_assert_int_eq(passwd_file_update(path, "bob", NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(passwd_file_update(path, "bob", NULL, err, sizeof(err)), 1);
    pf = passwd_file_load(path, err, sizeof(err));
    ck_assert_uint_eq(passwd_file_count(pf), 1);
    ck_assert(!passwd_ok(pf, "bob", "two words"));
    passwd_file_free(pf);
    unlink(path);
}
END_TEST

START_TEST(test_passwd_refuses_bad_users_and_lines)
{
    static const char *const bad_lines[] = {
        "alice\n",
        "alice:plain:1000:" SALT32 ":" HASH64 "\n",
        "alice:pbkdf2-sha256:10:" SALT32 ":" HASH64 "\n",
        "alice:pbkdf2-sha256:1000:0000:" HASH64 "\n",
        "alice:pbkdf2-sha256:1000:0000000000000000000000000000000g:" HASH64 "\n",
        "a\tb:pbkdf2-sha256:1000:" SALT32 ":" HASH64 "\n",
    };
    char *path = passwd_path(), err[256];

    ck_assert_int_eq(passwd_file_update(path, "a:b", "x", err, sizeof(err)), -1);
    ck_assert_int_eq(passwd_file_update(path, "", "x", err, sizeof(err)), -1);
    ck_assert_int_eq(passwd_file_update(path, "a\x01", "x", err, sizeof(err)), -1);
    ck_assert_ptr_null(passwd_file_load(path, err, sizeof(err))); /* none was written */
    for (size_t i = 0; i < sizeof(bad_lines) / sizeof(bad_lines[0]); i++) {
        FILE *f = fopen(path, "w");
        fprintf(f, "# comment\n\n%s", bad_lines[i]);
        fclose(f);
        ck_assert_msg(passwd_file_load(path, err, sizeof(err)) == NULL, "line %zu loaded", i);
        ck_assert_msg(strstr(err, ":3: ") != NULL, "line %zu: %s", i, err);
    }
    /* The same user twice. */
    unlink(path);
    ck_assert_int_eq(passwd_file_update(path, "x", "1", err, sizeof(err)), 0);
    FILE *f = fopen(path, "a");
    fputs("x:pbkdf2-sha256:1000:" SALT32 ":" HASH64 "\n", f);
    fclose(f);
    ck_assert_ptr_null(passwd_file_load(path, err, sizeof(err)));
    ck_assert_msg(strstr(err, "named twice") != NULL, "%s", err);
    unlink(path);
}
END_TEST

START_TEST(test_redis_url_reads_every_part)
{
    struct redis_url u;
    char err[200], shown[200];

    ck_assert_int_eq(redis_url_parse("redis://127.0.0.1", &u, err, sizeof(err)), 0);
    ck_assert_str_eq(u.host, "127.0.0.1");
    ck_assert_uint_eq(u.port, REDIS_DEFAULT_PORT);
    ck_assert(!u.tls && !u.user && !u.password && !u.db);
    redis_url_clear(&u);

    ck_assert_int_eq(redis_url_parse("rediss://ops:p%40ss@[::1]:7000/3", &u, err, sizeof(err)), 0);
    ck_assert(u.tls);
    ck_assert_str_eq(u.host, "::1");
    ck_assert_uint_eq(u.port, 7000);
    ck_assert_str_eq(u.user, "ops");
    ck_assert_str_eq(u.password, "p@ss");
    ck_assert_uint_eq(u.db, 3);
    redis_url_format(&u, shown, sizeof(shown));
    ck_assert_str_eq(shown, "rediss://ops:***@[::1]:7000/3");
    redis_url_clear(&u);

    ck_assert_int_eq(redis_url_parse("redis://:secret@localhost:6380", &u, err, sizeof(err)), 0);
    ck_assert_ptr_null(u.user);
    ck_assert_str_eq(u.password, "secret");
    redis_url_format(&u, shown, sizeof(shown));
    ck_assert_str_eq(shown, "redis://:***@localhost:6380");
    redis_url_clear(&u);
}
END_TEST

START_TEST(test_redis_url_refuses_what_is_not_one)
{
    static const struct {
        const char *url, *why;
    } bad[] = {
        {"http://h", "starts with"},  {"redis://", "no host"},       {"redis://h:0", "port"},
        {"redis://h:65536", "port"},  {"redis://h:12a", "port"},     {"redis://pw@h", "colon"},
        {"redis://:a%4@h", "escape"}, {"redis://:a%00@h", "escape"}, {"redis://[::1", "]"},
        {"redis://[::1]x", "after"},  {"redis://h/x", "database"},   {"redis://h o", "character"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct redis_url u;
        char err[200] = "";
        ck_assert_int_eq(redis_url_parse(bad[i].url, &u, err, sizeof(err)), -1);
        ck_assert_msg(strstr(err, bad[i].why) != NULL, "%s: %s", bad[i].url, err);
        ck_assert_ptr_null(u.host);
        ck_assert_ptr_null(u.password);
    }
}
END_TEST

/* Pushes and pops interleaved across several growths keep the order, read at every place. */
/* ---- deadlines ---- */

struct timed {
    struct deadline d;
    uint64_t when;
    bool cancelled;
};

static struct timed timed[300];
static size_t heard[300], heard_count;
static struct deadlines *heap;

static void heard_due(struct deadline *d)
{
    struct timed *t = (struct timed *)d;
    heard[heard_count++] = (size_t)(t - timed);
    ck_assert(!deadline_set(d)); /* taken out before it is heard */
    if (t - timed == 7)          /* one re-arms itself, later: it is heard again */
        ck_assert_int_eq(deadlines_set(heap, d, t->when + 1000000), 0);
}

/* Random deadlines, some moved and some cancelled, are heard once each, in order. */
START_TEST(test_deadlines_come_in_order_and_cancelled_ones_never)
{
    struct event_base *base = event_base_new();
    uint64_t now = clock_ms(), seed = 12345;
    size_t n = sizeof(timed) / sizeof(timed[0]);

    heap = deadlines_new(base, heard_due);
    ck_assert_ptr_nonnull(heap);
    memset(timed, 0, sizeof(timed));
    heard_count = 0;
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005u + 1442695040888963407u;
        timed[i].when = now - 1000000 + (seed >> 33) % 500000 * 2 + i % 2; /* all past, distinct */
        ck_assert_int_eq(deadlines_set(heap, &timed[i].d, now + 60000), 0);
    }
    for (size_t i = 0; i < n; i++) /* moved from the future into the past */
        ck_assert_int_eq(deadlines_set(heap, &timed[i].d, timed[i].when), 0);
    for (size_t i = 0; i < n; i += 3) {
        deadlines_cancel(heap, &timed[i].d);
        deadlines_cancel(heap, &timed[i].d); /* twice is fine */
        timed[i].cancelled = true;
    }
    ck_assert_uint_eq(deadlines_count(heap), n - (n + 2) / 3);
    event_base_loop(base, EVLOOP_ONCE);
    ck_assert_uint_eq(heard_count, n - (n + 2) / 3);
    for (size_t k = 0; k < heard_count; k++) {
        ck_assert(!timed[heard[k]].cancelled);
        if (k > 0)
            ck_assert_uint_le(timed[heard[k - 1]].when, timed[heard[k]].when);
    }
    ck_assert_uint_eq(deadlines_count(heap), 1); /* number 7, set again far ahead */
    deadlines_free(heap);
    event_base_free(base);
}
END_TEST

START_TEST(test_fifo_keeps_order_through_wraps_and_growth)
{
    struct fifo q = FIFO_INIT(uint32_t);
    uint32_t next_in = 0, next_out = 0;

    for (int round = 0; round < 200; round++) {
        for (int i = 0; i < round % 7 + 1; i++, next_in++)
            ck_assert_int_eq(fifo_push(&q, &next_in), 0);
        ck_assert_uint_eq(q.count, next_in - next_out);
        for (size_t i = 0; i < q.count; i++)
            ck_assert_uint_eq(*(uint32_t *)fifo_at(&q, i), next_out + i);
        for (int i = 0; i < round % 5 && q.count; i++, next_out++) {
            ck_assert_uint_eq(*(uint32_t *)fifo_at(&q, 0), next_out);
            fifo_pop(&q);
        }
    }
    ck_assert_uint_gt(q.cap, 16);
    size_t before = q.count;
    ck_assert_int_eq(fifo_push(&q, &next_in), 0);
    fifo_drop_last(&q); /* the one just pushed, as if never */
    ck_assert_uint_eq(q.count, before);
    ck_assert_uint_eq(*(uint32_t *)fifo_at(&q, q.count - 1), next_in - 1);
    fifo_clear(&q);
    ck_assert_uint_eq(q.count, 0);
    ck_assert_int_eq(fifo_push(&q, &next_in), 0);
    ck_assert_uint_eq(*(uint32_t *)fifo_at(&q, 0), next_in);
    fifo_clear(&q);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("util");
    TCase *tc = tcase_create("strmap");
    tcase_add_test(tc, test_strmap_empty_map_needs_no_setup);
    tcase_add_test(tc, test_strmap_put_replaces_and_reports_the_old_value);
    tcase_add_test(tc, test_strmap_borrowed_keys_are_the_callers_own);
    tcase_add_test(tc, test_strmap_matches_a_reference_through_removals);
    suite_add_tcase(s, tc);
    tc = tcase_create("siphash");
    tcase_add_test(tc, test_siphash24_reference_vectors);
    tcase_add_test(tc, test_siphash_keys_differ_between_draws);
    suite_add_tcase(s, tc);
    tc = tcase_create("log");
    tcase_add_test(tc, test_log_escape_keeps_printable_ascii);
    tcase_add_test(tc, test_log_escape_hides_newlines_and_escapes);
    tcase_add_test(tc, test_log_escape_hides_utf8_bytes);
    tcase_add_test(tc, test_log_escape_truncates_with_an_ellipsis);
    suite_add_tcase(s, tc);
    tc = tcase_create("hex and secrets");
    tcase_add_test(tc, test_hex_encode_is_lowercase_and_terminated);
    tcase_add_test(tc, test_hex_encode_of_nothing_is_empty);
    tcase_add_test(tc, test_secret_hash_is_sha256);
    suite_add_tcase(s, tc);
    tc = tcase_create("mailbox");
    tcase_add_test(tc, test_mailbox_gives_items_oldest_first_and_wakes_once_per_batch);
    tcase_add_test(tc, test_mailbox_replace_keeps_only_the_latest);
    tcase_add_test(tc, test_mailbox_wake_without_an_item);
    tcase_add_test(tc, test_mailbox_pop_leaves_a_later_wake_up);
    tcase_add_test(tc, test_mailbox_free_releases_what_waits_oldest_first);
    tcase_add_test(tc, test_mailbox_carries_every_item_between_threads);
    suite_add_tcase(s, tc);
    tc = tcase_create("passwd");
    tcase_add_test(tc, test_passwd_update_load_check);
    tcase_add_test(tc, test_passwd_refuses_bad_users_and_lines);
    suite_add_tcase(s, tc);
    tc = tcase_create("redis_url");
    tcase_add_test(tc, test_redis_url_reads_every_part);
    tcase_add_test(tc, test_redis_url_refuses_what_is_not_one);
    suite_add_tcase(s, tc);
    tc = tcase_create("fifo");
    tcase_add_test(tc, test_fifo_keeps_order_through_wraps_and_growth);
    tcase_add_test(tc, test_deadlines_come_in_order_and_cancelled_ones_never);
    suite_add_tcase(s, tc);

    return check_tap_run(s);
}
