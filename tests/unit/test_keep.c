/*
 * Unit tests for util/journal and store/keep: records read back as they were
 * appended; the writer thread applying batches in order and handing them
 * back; the loader returning what was written, in the order a replay needs,
 * after removing what expired or what nothing refers to; cloud and desktop
 * mode's rows; deleting an instance; the backup; a commit that fails.
 *
 * Every database lives in one temporary directory made by main() and removed
 * by it after the run, whatever the tests did.
 */
#include <check.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "check_tap.h"
#include "store/keep.h"
#include "store/store.h"
#include "util/journal.h"
#include "util/log.h"
#include "util/mailbox.h"

#define ERRLEN 512
#define PATH_SIZE 256
#define MAX_RECORDS 64
/* A batch the writer has not handed back after this many polls, 10 ms apart (5 s), is lost. */
#define SETTLE_POLLS 500
#define SETTLE_POLL_NS 10000000L

static char test_dir[64];

/* A file in the test directory, named after the test. */
static const char *file_path(char path[PATH_SIZE], const char *name)
{
    snprintf(path, PATH_SIZE, "%s/%s", test_dir, name);
    return path;
}

/* A new database in the test directory, created and migrated by store_open() as aviaryd does. */
static const char *new_db(char path[PATH_SIZE], const char *name)
{
    char err[ERRLEN] = "";
    struct store *s = store_open(file_path(path, name), err, sizeof(err));
    ck_assert_msg(s != NULL, "store_open: %s", err);
    store_close(s);
    return path;
}

static int64_t wall_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* Run one statement through a plain SQLite connection of our own. */
static void sql_exec(const char *path, const char *sql)
{
    sqlite3 *db;
    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    ck_assert_msg(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK, "%s: %s", sql,
                  sqlite3_errmsg(db));
    sqlite3_close(db);
}

/* The first column of the first row of `sql` (its ? bound to `text` when not NULL), or -1. */
static long long sql_int_with(const char *path, const char *sql, const char *text)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    long long v = -1;

    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    ck_assert_msg(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK, "%s: %s", sql,
                  sqlite3_errmsg(db));
    if (text)
        sqlite3_bind_text(st, 1, text, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static long long sql_int(const char *path, const char *sql)
{
    return sql_int_with(path, sql, NULL);
}

/* The first column of the first row of `sql` as text into `out` ("" when none). */
static const char *sql_text(const char *path, const char *sql, char *out, size_t size)
{
    sqlite3 *db;
    sqlite3_stmt *st;

    out[0] = '\0';
    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    ck_assert_msg(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK, "%s: %s", sql,
                  sqlite3_errmsg(db));
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
        snprintf(out, size, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return out;
}

/* The rows of every kept_* table, "messages retained sessions subs outgoing qos2". */
static const char *kept_counts(const char *path, char *out, size_t size)
{
    return sql_text(path,
                    "SELECT (SELECT count(*) FROM kept_messages) || ' ' ||"
                    " (SELECT count(*) FROM kept_retained) || ' ' ||"
                    " (SELECT count(*) FROM kept_sessions) || ' ' ||"
                    " (SELECT count(*) FROM kept_subscriptions) || ' ' ||"
                    " (SELECT count(*) FROM kept_outgoing) || ' ' ||"
                    " (SELECT count(*) FROM kept_qos2)",
                    out, size);
}

/* ---- building batches ------------------------------------------------------ */

static void add(struct journal *j, const struct journal_record *r)
{
    ck_assert_int_eq(journal_append(j, r), 0);
}

/* A QoS 1 message with no properties; `created_ms` 0 would mean "unknown". */
static void add_message(struct journal *j, uint64_t id, const char *topic, uint32_t expiry,
                        int64_t created_ms)
{
    add(j, &(struct journal_record){.type = JOURNAL_MESSAGE_PUT,
                                    .message = id,
                                    .name = topic,
                                    .name_len = strlen(topic),
                                    .payload = (const uint8_t *)"payload",
                                    .payload_len = 7,
                                    .qos = 1,
                                    .expiry = expiry,
                                    .when_ms = created_ms});
}

static void add_retained(struct journal *j, int64_t instance, const char *topic, uint64_t message)
{
    add(j, &(struct journal_record){.type = JOURNAL_RETAIN_SET,
                                    .instance = instance,
                                    .name = topic,
                                    .name_len = strlen(topic),
                                    .message = message});
}

/* An offline session of client id "c<id>" with no token. */
static void add_session(struct journal *j, uint64_t id, int64_t instance)
{
    char client[32];
    int n = snprintf(client, sizeof(client), "c%llu", (unsigned long long)id);
    add(j, &(struct journal_record){.type = JOURNAL_SESSION_PUT,
                                    .session = id,
                                    .instance = instance,
                                    .name = client,
                                    .name_len = (size_t)n,
                                    .token = "",
                                    .expiry = 300,
                                    .when_ms = 123});
}

static void add_sub(struct journal *j, uint64_t session, const char *filter)
{
    add(j, &(struct journal_record){.type = JOURNAL_SUB_PUT,
                                    .session = session,
                                    .name = filter,
                                    .name_len = strlen(filter),
                                    .options = 1});
}

/* A QoS 1 delivery: queued (state 0) or in flight with packet id `seq`. */
static void add_outgoing(struct journal *j, uint64_t session, uint64_t seq, uint64_t message,
                         uint8_t state)
{
    add(j, &(struct journal_record){.type = JOURNAL_OUT_PUT,
                                    .session = session,
                                    .seq = seq,
                                    .message = message,
                                    .qos = 1,
                                    .state = state,
                                    .packet_id = state ? (uint16_t)seq : 0});
}

static void add_qos2(struct journal *j, uint64_t session, uint16_t packet_id)
{
    add(j, &(struct journal_record){
               .type = JOURNAL_QOS2_ADD, .session = session, .packet_id = packet_id});
}

static void add_will(struct journal *j, uint64_t session, uint64_t message, int64_t due_ms)
{
    add(j,
        &(struct journal_record){
            .type = JOURNAL_WILL_SET, .session = session, .message = message, .when_ms = due_ms});
}

/* ---- the writer ------------------------------------------------------------ */

/* Take up to `n` batches the writer handed back, in its order, waiting up to 5 s. */
static size_t take_settled(struct mailbox *m, struct journal **out, size_t n)
{
    size_t got = 0;

    for (int poll = 0; got < n && poll < SETTLE_POLLS; poll++) {
        void *item;
        while (got < n && (item = mailbox_take(m)) != NULL)
            out[got++] = item;
        if (got < n)
            nanosleep(&(struct timespec){0, SETTLE_POLL_NS}, NULL);
    }
    return got;
}

static struct keep_writer *start_writer(const char *path, struct mailbox *settled)
{
    char err[ERRLEN] = "";
    struct keep_writer *w = keep_writer_start(path, settled, err, sizeof(err));
    ck_assert_msg(w != NULL, "keep_writer_start: %s", err);
    return w;
}

/* Apply `batch` with a writer of its own, as aviaryd would, and wait until it is committed. */
static void write_batch(const char *path, struct journal *batch)
{
    struct mailbox *m = mailbox_new("test");
    struct journal *back = NULL;

    ck_assert_ptr_nonnull(m);
    struct keep_writer *w = start_writer(path, m);
    ck_assert_int_eq(keep_writer_submit(w, batch), 0);
    ck_assert_uint_eq(take_settled(m, &back, 1), 1);
    ck_assert_ptr_eq(back, batch);
    keep_writer_stop(w);
    mailbox_free(m, NULL);
}

/* ---- the loader ------------------------------------------------------------ */

/* What keep_load() returned: its records point into `journal`. */
struct loaded {
    struct journal journal;
    struct journal_record r[MAX_RECORDS];
    size_t n;
    struct keep_next_ids next;
    char text[4096]; /* summary() */
};

static void load(const char *path, bool cloud, struct loaded *l)
{
    char err[ERRLEN] = "";
    size_t pos = 0;

    memset(l, 0, sizeof(*l));
    ck_assert_msg(keep_load(path, cloud, &l->journal, &l->next, err, sizeof(err)) == 0,
                  "keep_load: %s", err);
    while (l->n < MAX_RECORDS && journal_next(&l->journal, &pos, &l->r[l->n]))
        l->n++;
    ck_assert_uint_eq(l->n, l->journal.count);
}

/* One record as summary() writes it: "m1", "r0:a/b=m1", "s7@0", "sub7:x/#", "out7#1=m2"... */
static void describe(const struct journal_record *r, char *out, size_t size)
{
    unsigned long long session = r->session, message = r->message;

    switch (r->type) {
    case JOURNAL_MESSAGE_PUT:
        snprintf(out, size, "m%llu", message);
        break;
    case JOURNAL_RETAIN_SET:
        snprintf(out, size, "r%lld:%s=m%llu", (long long)r->instance, r->name, message);
        break;
    case JOURNAL_SESSION_PUT:
        snprintf(out, size, "s%llu@%lld", session, (long long)r->instance);
        break;
    case JOURNAL_SUB_PUT:
        snprintf(out, size, "sub%llu:%s", session, r->name);
        break;
    case JOURNAL_OUT_PUT:
        snprintf(out, size, "out%llu#%llu=m%llu", session, (unsigned long long)r->seq, message);
        break;
    case JOURNAL_QOS2_ADD:
        snprintf(out, size, "qos2:%llu:%u", session, (unsigned)r->packet_id);
        break;
    case JOURNAL_WILL_SET:
        snprintf(out, size, "will%llu=m%llu", session, message);
        break;
    default:
        snprintf(out, size, "type%u", (unsigned)r->type);
    }
}

/* The loaded records in one line, separated by spaces: the order shows at a glance. */
static const char *summary(struct loaded *l)
{
    size_t used = 0;

    l->text[0] = '\0';
    for (size_t i = 0; i < l->n && used < sizeof(l->text); i++) {
        char one[256];
        describe(&l->r[i], one, sizeof(one));
        used += (size_t)snprintf(l->text + used, sizeof(l->text) - used, "%s%s", i ? " " : "", one);
    }
    return l->text;
}

/* Whether a record described as `fmt` says is among the loaded ones. */
static bool has(const struct loaded *l, const char *fmt, ...)
{
    char want[256], one[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(want, sizeof(want), fmt, ap);
    va_end(ap);
    for (size_t i = 0; i < l->n; i++) {
        describe(&l->r[i], one, sizeof(one));
        if (strcmp(one, want) == 0)
            return true;
    }
    return false;
}

static size_t count_type(const struct loaded *l, uint8_t type)
{
    size_t n = 0;
    for (size_t i = 0; i < l->n; i++)
        n += l->r[i].type == type;
    return n;
}

/* ---- comparing records ----------------------------------------------------- */

static void expect_bytes(const void *got, size_t got_len, const void *want, size_t want_len,
                         const char *what)
{
    ck_assert_msg(got_len == want_len, "%s: %zu bytes, want %zu", what, got_len, want_len);
    ck_assert_msg(want_len == 0 || memcmp(got, want, want_len) == 0, "%s differs", what);
}

/* Every field of `got` (read back) is `want`'s, and its strings end with a NUL. */
static void expect_record(const struct journal_record *got, const struct journal_record *want)
{
    ck_assert_uint_eq(got->type, want->type);
    ck_assert_uint_eq(got->qos, want->qos);
    ck_assert_uint_eq(got->state, want->state);
    ck_assert_uint_eq(got->flags, want->flags);
    ck_assert_uint_eq(got->options, want->options);
    ck_assert_uint_eq(got->packet_id, want->packet_id);
    ck_assert_uint_eq(got->expiry, want->expiry);
    ck_assert_uint_eq(got->sub_id, want->sub_id);
    ck_assert_int_eq(got->instance, want->instance);
    ck_assert_uint_eq(got->session, want->session);
    ck_assert_uint_eq(got->message, want->message);
    ck_assert_uint_eq(got->seq, want->seq);
    ck_assert_int_eq(got->when_ms, want->when_ms);
    expect_bytes(got->name, got->name_len, want->name, want->name_len, "name");
    ck_assert_int_eq(got->name[got->name_len], '\0');
    expect_bytes(got->token, got->token_len, want->token, want->token_len, "token");
    ck_assert_int_eq(got->token[got->token_len], '\0');
    expect_bytes(got->payload, got->payload_len, want->payload, want->payload_len, "payload");
    expect_bytes(got->props, got->props_len, want->props, want->props_len, "props");
    ck_assert_uint_eq(got->sub_id_count, want->sub_id_count);
    for (size_t i = 0; i < want->sub_id_count; i++)
        ck_assert_uint_eq(journal_sub_id(got, i), want->sub_ids[i]);
}

/* ---- the journal ----------------------------------------------------------- */

static const uint8_t binary_payload[] = {0, 1, 2, 0, 255}; /* NULs inside: lengths, not strlen */
static const uint8_t user_property[] = {0x26, 0, 1, 'k', 0, 1, 'v'};
static const uint32_t three_ids[] = {1, 268435455, 70000}; /* 268435455: the largest there is */

/*
 * Records of every shape. Odd string and blob lengths put the following
 * records at unaligned offsets, so the Subscription Identifiers read back
 * unaligned (journal_sub_id() must cope); NULL pointers with length 0 read
 * back as empty strings.
 */
static const struct journal_record mixed[] = {
    {.type = JOURNAL_MESSAGE_PUT,
     .message = 1,
     .name = "a/b",
     .name_len = 3,
     .payload = binary_payload,
     .payload_len = sizeof(binary_payload),
     .props = user_property,
     .props_len = sizeof(user_property),
     .qos = 2,
     .flags = JOURNAL_RETAIN,
     .expiry = 60,
     .when_ms = 1700000000123},
    {.type = JOURNAL_OUT_PUT,
     .session = 7,
     .seq = 1,
     .message = 1,
     .qos = 1,
     .state = 1,
     .packet_id = 65535,
     .flags = JOURNAL_RETAIN | JOURNAL_LEADING_SLASH,
     .sub_ids = three_ids,
     .sub_id_count = 3},
    {.type = JOURNAL_SESSION_PUT,
     .session = 7,
     .instance = -42,
     .name = "client",
     .name_len = 6,
     .token = "tok",
     .token_len = 3,
     .expiry = UINT32_MAX,
     .when_ms = -1},
    {.type = JOURNAL_QOS2_ADD, .session = 7, .packet_id = 4},
    {.type = JOURNAL_SUB_PUT,
     .session = 7,
     .name = "x/#",
     .name_len = 3,
     .options = 0x2e,
     .flags = JOURNAL_LEADING_SLASH,
     .sub_id = 5},
    {.type = JOURNAL_OUT_PUT,
     .session = UINT64_MAX,
     .seq = UINT64_MAX,
     .qos = 2,
     .state = 3,
     .packet_id = 10,
     .sub_ids = three_ids + 2,
     .sub_id_count = 1},
    {.type = JOURNAL_WILL_CLEAR, .session = 9},
};

#define MIXED_COUNT (sizeof(mixed) / sizeof(mixed[0]))

START_TEST(test_journal_reads_back_every_field_of_every_record)
{
    struct journal j = JOURNAL_INIT;
    struct journal_record r;
    size_t pos = 0;

    for (size_t i = 0; i < MIXED_COUNT; i++)
        add(&j, &mixed[i]);
    ck_assert_uint_eq(j.count, MIXED_COUNT);
    for (size_t i = 0; i < MIXED_COUNT; i++) {
        ck_assert_msg(journal_next(&j, &pos, &r), "record %zu missing", i);
        expect_record(&r, &mixed[i]);
    }
    ck_assert(!journal_next(&j, &pos, &r));
    ck_assert_uint_eq(pos, j.len);
    journal_free(&j);
}
END_TEST

START_TEST(test_journal_sub_id_reads_each_identifier)
{
    struct journal j = JOURNAL_INIT;
    struct journal_record r;
    size_t pos = 0;

    /* A 1-byte name first: the identifiers that follow it sit at an odd offset. */
    add(&j, &(struct journal_record){.type = JOURNAL_SUB_DROP, .name = "x", .name_len = 1});
    add(&j, &mixed[1]);
    ck_assert(journal_next(&j, &pos, &r));
    ck_assert(journal_next(&j, &pos, &r));
    ck_assert_uint_eq(r.sub_id_count, 3);
    ck_assert_uint_eq(journal_sub_id(&r, 0), 1);
    ck_assert_uint_eq(journal_sub_id(&r, 1), 268435455);
    ck_assert_uint_eq(journal_sub_id(&r, 2), 70000);
    journal_free(&j);
}
END_TEST

START_TEST(test_an_empty_journal_has_no_record)
{
    struct journal j = JOURNAL_INIT;
    struct journal_record r;
    size_t pos = 0;

    ck_assert(!journal_next(&j, &pos, &r));
    ck_assert_uint_eq(pos, 0);
    journal_reset(&j);
    journal_free(&j); /* never grown: nothing to free, still fine */
    ck_assert(!journal_next(&j, &pos, &r));
}
END_TEST

START_TEST(test_journal_reset_keeps_the_buffer)
{
    struct journal j = JOURNAL_INIT;
    struct journal_record r;
    size_t pos = 0;

    add(&j, &mixed[0]);
    add(&j, &mixed[2]);
    uint8_t *buf = j.buf;
    size_t cap = j.cap;
    journal_reset(&j);
    /* The core thread reuses a settled batch: the next one must not allocate again. */
    ck_assert_ptr_eq(j.buf, buf);
    ck_assert_uint_eq(j.cap, cap);
    ck_assert_uint_eq(j.len, 0);
    ck_assert_uint_eq(j.count, 0);
    ck_assert(!journal_next(&j, &pos, &r));
    add(&j, &mixed[4]);
    ck_assert_ptr_eq(j.buf, buf);
    ck_assert(journal_next(&j, &pos, &r));
    expect_record(&r, &mixed[4]);
    ck_assert(!journal_next(&j, &pos, &r));
    journal_free(&j);
    ck_assert_ptr_null(j.buf);
    ck_assert_uint_eq(j.len + j.cap + j.count, 0);
}
END_TEST

START_TEST(test_a_big_payload_grows_the_buffer)
{
    enum { BIG = 1 << 20 };
    struct journal j = JOURNAL_INIT;
    struct journal_record r;
    size_t pos = 0;
    uint8_t *big = malloc(BIG);

    ck_assert_ptr_nonnull(big);
    for (size_t i = 0; i < BIG; i++)
        big[i] = (uint8_t)(i * 7 + i / 251);
    add(&j, &mixed[3]); /* a small record first, so the buffer has to grow, not start big */
    struct journal_record want = mixed[0];
    want.payload = big;
    want.payload_len = BIG;
    add(&j, &want);
    add(&j, &mixed[4]);
    ck_assert_uint_gt(j.len, BIG);
    ck_assert_uint_ge(j.cap, j.len);
    ck_assert(journal_next(&j, &pos, &r));
    expect_record(&r, &mixed[3]);
    ck_assert(journal_next(&j, &pos, &r));
    expect_record(&r, &want);
    ck_assert(journal_next(&j, &pos, &r));
    expect_record(&r, &mixed[4]);
    journal_free(&j);
    free(big);
}
END_TEST

/* ---- writing and loading ----------------------------------------------------- */

static const uint8_t payload_format[] = {0x01, 0x01}; /* a Payload Format Indicator property */
static const uint32_t two_ids[] = {5, 70000};

/*
 * One of everything a session keeps, in an order the core thread might write
 * it (not the loader's). Message 2 expires, but not for a century.
 */
static const struct journal_record everything[] = {
    [0] = {.type = JOURNAL_SESSION_PUT,
           .session = 7,
           .name = "c1",
           .name_len = 2,
           .token = "",
           .expiry = 300,
           .when_ms = 123},
    [1] = {.type = JOURNAL_SUB_PUT,
           .session = 7,
           .name = "x/#",
           .name_len = 3,
           .options = 1,
           .flags = JOURNAL_LEADING_SLASH,
           .sub_id = 5},
    [2] = {.type = JOURNAL_MESSAGE_PUT,
           .message = 2,
           .name = "x/y",
           .name_len = 3,
           .payload = binary_payload,
           .payload_len = sizeof(binary_payload),
           .qos = 1,
           .expiry = 3153600000u,
           .when_ms = 1700000000000},
    [3] = {.type = JOURNAL_OUT_PUT, .session = 7, .seq = 2, .qos = 2, .state = 3, .packet_id = 10},
    [4] = {.type = JOURNAL_OUT_PUT,
           .session = 7,
           .seq = 1,
           .message = 2,
           .qos = 1,
           .state = 1,
           .packet_id = 9,
           .flags = JOURNAL_LEADING_SLASH,
           .sub_ids = two_ids,
           .sub_id_count = 2},
    [5] = {.type = JOURNAL_MESSAGE_PUT,
           .message = 1,
           .name = "a/b",
           .name_len = 3,
           .payload = (const uint8_t *)"hello",
           .payload_len = 5,
           .props = payload_format,
           .props_len = sizeof(payload_format),
           .qos = 1,
           .flags = JOURNAL_RETAIN,
           .when_ms = 1700000000001},
    [6] = {.type = JOURNAL_RETAIN_SET, .name = "a/b", .name_len = 3, .message = 1},
    [7] = {.type = JOURNAL_QOS2_ADD, .session = 7, .packet_id = 4},
    [8] = {.type = JOURNAL_MESSAGE_PUT, .message = 3, .name = "will/c1", .name_len = 7, .qos = 2},
    [9] = {.type = JOURNAL_WILL_SET, .session = 7, .message = 3, .when_ms = 999},
};

#define EVERYTHING_COUNT (sizeof(everything) / sizeof(everything[0]))

/* The records of `everything` in the order the loader gives them (see keep_load()). */
static const size_t load_order[] = {5, 2, 8, 6, 0, 1, 4, 3, 7, 9};

static void write_everything(const char *path)
{
    struct journal batch = JOURNAL_INIT;
    for (size_t i = 0; i < EVERYTHING_COUNT; i++)
        add(&batch, &everything[i]);
    write_batch(path, &batch);
    journal_free(&batch);
}

START_TEST(test_what_the_writer_commits_loads_back_in_replay_order)
{
    char path[PATH_SIZE];
    struct loaded l;

    write_everything(new_db(path, "round_trip.db"));
    load(path, false, &l);
    ck_assert_str_eq(summary(&l),
                     "m1 m2 m3 r0:a/b=m1 s7@0 sub7:x/# out7#1=m2 out7#2=m0 qos2:7:4 will7=m3");
    for (size_t i = 0; i < l.n; i++)
        expect_record(&l.r[i], &everything[load_order[i]]);
    ck_assert_uint_eq(l.next.message, 4);
    ck_assert_uint_eq(l.next.session, 8);
    ck_assert_uint_eq(l.next.seq, 3);
    journal_free(&l.journal);
}
END_TEST

START_TEST(test_an_empty_database_loads_nothing_and_ids_start_at_1)
{
    char path[PATH_SIZE];
    struct loaded l;

    load(new_db(path, "empty.db"), false, &l);
    ck_assert_uint_eq(l.n, 0);
    ck_assert_uint_eq(l.next.message, 1);
    ck_assert_uint_eq(l.next.session, 1);
    ck_assert_uint_eq(l.next.seq, 1);
    journal_free(&l.journal);
}
END_TEST

START_TEST(test_drops_remove_what_they_name)
{
    char path[PATH_SIZE], counts[64];
    struct journal batch = JOURNAL_INIT;
    struct loaded l;

    write_everything(new_db(path, "drops.db"));
    add(&batch, &(struct journal_record){.type = JOURNAL_OUT_DROP, .session = 7, .seq = 1});
    add(&batch,
        &(struct journal_record){.type = JOURNAL_RETAIN_CLEAR, .name = "a/b", .name_len = 3});
    add(&batch, &(struct journal_record){
                    .type = JOURNAL_SUB_DROP, .session = 7, .name = "x/#", .name_len = 3});
    add(&batch, &(struct journal_record){.type = JOURNAL_QOS2_DROP, .session = 7, .packet_id = 4});
    add(&batch, &(struct journal_record){.type = JOURNAL_WILL_CLEAR, .session = 7});
    add(&batch, &(struct journal_record){.type = JOURNAL_MESSAGE_DROP, .message = 1});
    write_batch(path, &batch);
    ck_assert_str_eq(kept_counts(path, counts, sizeof(counts)), "2 0 1 0 1 0");
    ck_assert_int_eq(sql_int(path, "SELECT count(*) FROM kept_sessions WHERE will_message IS NULL"
                                   " AND will_due_ms IS NULL"),
                     1);
    /* Messages 2 and 3 lost their last reference (the queue, the will): the load removes them. */
    load(path, false, &l);
    ck_assert_str_eq(summary(&l), "s7@0 out7#2=m0");
    journal_free(&l.journal);
    ck_assert_str_eq(kept_counts(path, counts, sizeof(counts)), "0 0 1 0 1 0");
    journal_free(&batch);
}
END_TEST

START_TEST(test_dropping_a_session_drops_all_its_rows)
{
    char path[PATH_SIZE], counts[64];
    struct journal batch = JOURNAL_INIT;
    struct loaded l;

    write_everything(new_db(path, "session_drop.db"));
    add_session(&batch, 8, 0); /* another session, which must stay */
    add_sub(&batch, 8, "y");
    add(&batch, &(struct journal_record){.type = JOURNAL_SESSION_DROP, .session = 7});
    write_batch(path, &batch);
    /* Messages are left to the load's collection; the retained message 1 still stays. */
    ck_assert_str_eq(kept_counts(path, counts, sizeof(counts)), "3 1 1 1 0 0");
    load(path, false, &l);
    ck_assert_str_eq(summary(&l), "m1 r0:a/b=m1 s8@0 sub8:y");
    journal_free(&l.journal);
    journal_free(&batch);
}
END_TEST

START_TEST(test_putting_a_session_again_updates_it_and_keeps_the_rest)
{
    char path[PATH_SIZE];
    struct journal batch = JOURNAL_INIT;
    struct loaded l;

    write_everything(new_db(path, "session_again.db"));
    /* Reconnecting with a new token: the will, subscriptions and queue stay (an upsert). */
    add(&batch, &(struct journal_record){.type = JOURNAL_SESSION_PUT,
                                         .session = 7,
                                         .name = "c1",
                                         .name_len = 2,
                                         .token = "0123456789abcdef",
                                         .token_len = 16,
                                         .expiry = 60});
    write_batch(path, &batch);
    load(path, false, &l);
    ck_assert_str_eq(summary(&l),
                     "m1 m2 m3 r0:a/b=m1 s7@0 sub7:x/# out7#1=m2 out7#2=m0 qos2:7:4 will7=m3");
    ck_assert_str_eq(l.r[4].token, "0123456789abcdef");
    ck_assert_uint_eq(l.r[4].expiry, 60);
    ck_assert_int_eq(l.r[4].when_ms, 0);
    ck_assert_int_eq(l.r[9].when_ms, 999);
    journal_free(&l.journal);
    journal_free(&batch);
}
END_TEST

START_TEST(test_many_subscription_identifiers_round_trip)
{
    enum { MANY = 100 };
    char path[PATH_SIZE];
    uint32_t ids[MANY];
    struct journal batch = JOURNAL_INIT;
    struct loaded l;

    for (size_t i = 0; i < MANY; i++)
        ids[i] = (uint32_t)(i * 2684354 + 1);
    add_message(&batch, 1, "t", 0, 1);
    add_session(&batch, 1, 0);
    /* More than either side's 64 on the stack; then fewer, into the grown buffer. */
    static const size_t counts[] = {MANY, 70, 3, 0};
    for (size_t k = 0; k < 4; k++)
        add(&batch, &(struct journal_record){.type = JOURNAL_OUT_PUT,
                                             .session = 1,
                                             .seq = k + 1,
                                             .message = 1,
                                             .qos = 1,
                                             .sub_ids = ids + k,
                                             .sub_id_count = counts[k]});
    write_batch(new_db(path, "many_ids.db"), &batch);
    load(path, false, &l);
    ck_assert_str_eq(summary(&l), "m1 s1@0 out1#1=m1 out1#2=m1 out1#3=m1 out1#4=m1");
    for (size_t k = 0; k < 4; k++) {
        ck_assert_uint_eq(l.r[2 + k].sub_id_count, counts[k]);
        for (size_t i = 0; i < counts[k]; i++)
            ck_assert_uint_eq(journal_sub_id(&l.r[2 + k], i), ids[k + i]);
    }
    journal_free(&l.journal);
    journal_free(&batch);
}
END_TEST

START_TEST(test_batches_are_applied_and_handed_back_in_order)
{
    char path[PATH_SIZE];
    struct journal batches[3] = {JOURNAL_INIT, JOURNAL_INIT, JOURNAL_INIT}, *back[3] = {0};
    struct mailbox *m = mailbox_new("test");
    struct loaded l;

    ck_assert_ptr_nonnull(m);
    add_session(&batches[0], 1, 0);
    add(&batches[1], &(struct journal_record){.type = JOURNAL_SESSION_DROP, .session = 1});
    add_session(&batches[2], 2, 0);
    struct keep_writer *w = start_writer(new_db(path, "order.db"), m);
    for (size_t i = 0; i < 3; i++)
        ck_assert_int_eq(keep_writer_submit(w, &batches[i]), 0);
    ck_assert_uint_eq(take_settled(m, back, 3), 3);
    for (size_t i = 0; i < 3; i++)
        ck_assert_ptr_eq(back[i], &batches[i]);
    keep_writer_stop(w);
    mailbox_free(m, NULL);
    /* Session 1 dropped after it was put, not before. */
    load(path, false, &l);
    ck_assert_str_eq(summary(&l), "s2@0");
    journal_free(&l.journal);
    for (size_t i = 0; i < 3; i++)
        journal_free(&batches[i]);
}
END_TEST

START_TEST(test_stopping_the_writer_applies_what_is_queued)
{
    char path[PATH_SIZE];
    struct journal batch = JOURNAL_INIT, *back = NULL;
    struct mailbox *m = mailbox_new("test");
    struct loaded l;

    ck_assert_ptr_nonnull(m);
    add_session(&batch, 3, 0);
    struct keep_writer *w = start_writer(new_db(path, "stop.db"), m);
    ck_assert_int_eq(keep_writer_submit(w, &batch), 0);
    keep_writer_stop(w); /* no wait first: the stop itself must commit the batch */
    back = mailbox_take(m);
    ck_assert_ptr_eq(back, &batch);
    ck_assert_ptr_null(mailbox_take(m));
    mailbox_free(m, NULL);
    load(path, false, &l);
    ck_assert_str_eq(summary(&l), "s3@0");
    journal_free(&l.journal);
    journal_free(&batch);
    keep_writer_stop(NULL);
}
END_TEST

START_TEST(test_the_writer_needs_a_migrated_database)
{
    char path[PATH_SIZE], err[ERRLEN] = "";
    struct mailbox *m = mailbox_new("test");

    ck_assert_ptr_nonnull(m);
    /* Missing: the writer does not create it (store_open() does, with the schema). */
    ck_assert_ptr_null(keep_writer_start(file_path(path, "missing.db"), m, err, sizeof(err)));
    ck_assert_msg(strstr(err, path) != NULL, "%s", err);
    ck_assert_int_ne(access(path, F_OK), 0);
    /* A database without the kept_* tables. */
    err[0] = '\0';
    sql_exec(file_path(path, "no_schema.db"), "CREATE TABLE t(x)");
    ck_assert_ptr_null(keep_writer_start(path, m, err, sizeof(err)));
    ck_assert_msg(strstr(err, "cannot prepare") != NULL, "%s", err);
    ck_assert_ptr_null(mailbox_take(m));
    mailbox_free(m, NULL);
}
END_TEST

START_TEST(test_loading_a_missing_database_fails)
{
    char path[PATH_SIZE], err[ERRLEN] = "";
    struct journal out = JOURNAL_INIT;
    struct keep_next_ids next;

    ck_assert_int_eq(keep_load(file_path(path, "absent.db"), false, &out, &next, err, sizeof(err)),
                     STORE_E_DB);
    ck_assert_msg(strstr(err, path) != NULL, "%s", err);
    ck_assert_uint_eq(out.count, 0);
    ck_assert_int_ne(access(path, F_OK), 0);
}
END_TEST

START_TEST(test_a_load_that_fails_says_why)
{
    char path[PATH_SIZE], err[ERRLEN] = "";
    struct journal out = JOURNAL_INIT;
    struct keep_next_ids next;

    sql_exec(new_db(path, "load_fails.db"), "DROP TABLE kept_qos2");
    ck_assert_int_eq(keep_load(path, false, &out, &next, err, sizeof(err)), STORE_E_DB);
    /* Whoever reads it at start-up needs SQLite's reason, not only that it failed. */
    ck_assert_msg(strstr(err, "no such table: kept_qos2") != NULL, "%s", err);
    journal_free(&out);
}
END_TEST

/* ---- what the load collects ------------------------------------------------- */

START_TEST(test_the_load_removes_what_expired_or_nothing_uses)
{
    char path[PATH_SIZE], counts[64];
    struct journal batch = JOURNAL_INIT;
    int64_t now = wall_ms(), past = now - 10000; /* 10 s ago: a 1 s expiry has passed */
    struct loaded l;

    add_message(&batch, 1, "unused", 0, now);
    add_message(&batch, 2, "queued", 1, past);
    add_message(&batch, 3, "in/flight", 1, past);
    add_message(&batch, 4, "r/old", 1, past);
    add_message(&batch, 5, "r/new", 3600, now);
    add_message(&batch, 6, "will", 1, past);
    add_session(&batch, 1, 0);
    add_outgoing(&batch, 1, 1, 2, 0);
    add_outgoing(&batch, 1, 2, 3, 1);
    add_retained(&batch, 0, "r/old", 4);
    add_retained(&batch, 0, "r/new", 5);
    add_will(&batch, 1, 6, now + 60000);
    add_sub(&batch, 99, "orphan"); /* session 99 was never kept, or is gone */
    add_outgoing(&batch, 99, 3, 5, 0);
    add_qos2(&batch, 99, 1);
    write_batch(new_db(path, "collect.db"), &batch);
    load(path, false, &l);
    /*
     * Gone: 1 (unused), 2 with its queued delivery, 4 with its retained
     * topic, session 99's rows. Kept: 3, whose delivery is in flight (the
     * client has it already); 6, a will, whose expiry counts from when it is
     * published; 5, not expired.
     */
    ck_assert_str_eq(summary(&l), "m3 m5 m6 r0:r/new=m5 s1@0 out1#2=m3 will1=m6");
    journal_free(&l.journal);
    ck_assert_str_eq(kept_counts(path, counts, sizeof(counts)), "3 1 1 0 1 0");
    journal_free(&batch);
}
END_TEST

/*
 * Rows that name a message the database does not hold (a write that failed
 * and lost it) are removed at load: there is nothing to deliver. The ids they
 * named are never given again, so no later message takes their place.
 */
START_TEST(test_the_load_removes_rows_whose_message_is_missing_and_skips_their_ids)
{
    char path[PATH_SIZE];
    struct journal batch = JOURNAL_INIT;
    int64_t now = wall_ms();
    struct loaded l;

    add_message(&batch, 1, "kept", 0, now);
    add_session(&batch, 1, 0);
    add_outgoing(&batch, 1, 1, 1, 0);
    add_outgoing(&batch, 1, 2, 40, 0); /* message 40 was never written */
    add_retained(&batch, 0, "lost", 50);
    add_will(&batch, 1, 60, now + 60000);
    write_batch(new_db(path, "dangling.db"), &batch);
    load(path, false, &l);
    ck_assert_str_eq(summary(&l), "m1 s1@0 out1#1=m1");
    journal_free(&l.journal);
    ck_assert_int_eq(sql_int(path, "SELECT count(*) FROM kept_outgoing"), 1);
    ck_assert_int_eq(sql_int(path, "SELECT count(*) FROM kept_retained"), 0);
    ck_assert_int_eq(sql_int(path, "SELECT count(*) FROM kept_sessions WHERE will_message "
                                   "IS NOT NULL OR will_due_ms IS NOT NULL"),
                     0);
    journal_free(&batch);

    /* Rows that name ids beyond every message row (another mode's, say) move the next id. */
    add_session(&batch, 2, 0);
    add_outgoing(&batch, 2, 7, 0, 3); /* past PUBREC: no message */
    add_retained(&batch, 0, "other", 1);
    write_batch(path, &batch);
    sql_exec(path, "UPDATE kept_retained SET message = 90, instance = 12345; "
                   "INSERT INTO kept_messages(id, topic, payload, props, qos, retain, expiry, "
                   "created_ms) VALUES (90, 'other', x'', x'', 0, 1, 0, 0)");
    load(path, false, &l);
    ck_assert_uint_eq(l.next.message, 91);
    ck_assert_uint_eq(l.next.seq, 8);
    journal_free(&l.journal);
    journal_free(&batch);
}
END_TEST

/* ---- cloud and desktop mode -------------------------------------------------- */

/* A serial no instance has: store.c makes them odd. */
#define GONE_SERIAL 2

/* Serial of instance `name`, from the database. */
static int64_t serial_of(const char *path, const char *name)
{
    long long serial = sql_int_with(path, "SELECT serial FROM instances WHERE name = ?", name);
    ck_assert_int_gt(serial, 0);
    return serial;
}

/* A database with instances "alpha" and "beta"; their serials go to *a and *b. */
static const char *two_instances(char path[PATH_SIZE], const char *name, int64_t *a, int64_t *b)
{
    char err[ERRLEN] = "";
    struct store *s = store_open(file_path(path, name), err, sizeof(err));

    ck_assert_msg(s != NULL, "store_open: %s", err);
    ck_assert_msg(store_instance_create(s, "alpha", NULL, err, sizeof(err)) == 0, "%s", err);
    ck_assert_msg(store_instance_create(s, "beta", NULL, err, sizeof(err)) == 0, "%s", err);
    store_close(s);
    *a = serial_of(path, "alpha");
    *b = serial_of(path, "beta");
    ck_assert_int_ne(*a, *b);
    return path;
}

/*
 * What instance `serial` keeps, ids from `id`: retained message `id` on "t",
 * session `id` with a subscription, a queued message `id` + 1, a QoS 2 id.
 */
static void add_instance_rows(struct journal *j, int64_t serial, uint64_t id)
{
    add_message(j, id, "t", 0, 1);
    add_retained(j, serial, "t", id);
    add_message(j, id + 1, "q", 0, 1);
    add_session(j, id, serial);
    add_sub(j, id, "s/#");
    add_outgoing(j, id, id, id + 1, 0);
    add_qos2(j, id, 7);
}

/* Rows the kept tables hold for instance `serial` or session `session` (5 for add_instance_rows).
 */
static long long rows_for(const char *path, int64_t serial, uint64_t session)
{
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT (SELECT count(*) FROM kept_retained WHERE instance = %lld)"
             " + (SELECT count(*) FROM kept_sessions WHERE instance = %lld OR id = %llu)"
             " + (SELECT count(*) FROM kept_subscriptions WHERE session = %llu)"
             " + (SELECT count(*) FROM kept_outgoing WHERE session = %llu)"
             " + (SELECT count(*) FROM kept_qos2 WHERE session = %llu)",
             (long long)serial, (long long)serial, (unsigned long long)session,
             (unsigned long long)session, (unsigned long long)session, (unsigned long long)session);
    return sql_int(path, sql);
}

/*
 * A database where instances alpha (serial *a, ids 10 and 11), beta (*b, ids
 * 20 and 21), an instance deleted since (GONE_SERIAL, ids 30 and 31) and
 * desktop mode (serial 0, ids 40 and 41) keep what add_instance_rows() adds.
 */
static void four_owners(char path[PATH_SIZE], const char *name, int64_t *a, int64_t *b)
{
    struct journal batch = JOURNAL_INIT;

    two_instances(path, name, a, b);
    ck_assert_int_ne(*a, GONE_SERIAL);
    ck_assert_int_ne(*b, GONE_SERIAL);
    add_instance_rows(&batch, *a, 10);
    add_instance_rows(&batch, *b, 20);
    add_instance_rows(&batch, GONE_SERIAL, 30);
    add_instance_rows(&batch, 0, 40);
    write_batch(path, &batch);
    journal_free(&batch);
}

START_TEST(test_a_cloud_load_reads_its_instances_and_removes_what_deleted_ones_left)
{
    char path[PATH_SIZE];
    int64_t a, b;
    struct loaded l;

    four_owners(path, "cloud.db", &a, &b);
    load(path, true, &l);
    ck_assert_msg(count_type(&l, JOURNAL_RETAIN_SET) == 2 &&
                      count_type(&l, JOURNAL_SESSION_PUT) == 2,
                  "cloud load: %s", summary(&l));
    ck_assert(has(&l, "m10") && has(&l, "m11") && has(&l, "m20") && has(&l, "m21"));
    ck_assert(has(&l, "r%lld:t=m10", (long long)a) && has(&l, "r%lld:t=m20", (long long)b));
    ck_assert(has(&l, "s10@%lld", (long long)a) && has(&l, "s20@%lld", (long long)b));
    ck_assert(has(&l, "sub10:s/#") && has(&l, "sub20:s/#"));
    ck_assert(has(&l, "out10#10=m11") && has(&l, "out20#20=m21"));
    ck_assert(has(&l, "qos2:10:7") && has(&l, "qos2:20:7"));
    ck_assert_msg(!has(&l, "m30") && !has(&l, "m31") && !has(&l, "sub30:s/#"), "%s", summary(&l));
    journal_free(&l.journal);
    /* What the deleted instance left is deleted, messages and all. */
    ck_assert_int_eq(rows_for(path, GONE_SERIAL, 30), 0);
    ck_assert_int_eq(sql_int(path, "SELECT count(*) FROM kept_messages WHERE id IN (30, 31)"), 0);
    /* Serial 0 is desktop mode's, not a deleted instance's. */
    ck_assert_int_eq(rows_for(path, 0, 40), 5);
    ck_assert_int_eq(rows_for(path, a, 10), 5);
    ck_assert_int_eq(rows_for(path, b, 20), 5);
}
END_TEST

START_TEST(test_a_desktop_load_reads_serial_0_and_deletes_no_instance_rows)
{
    char path[PATH_SIZE];
    int64_t a, b;
    struct loaded l;

    four_owners(path, "desktop.db", &a, &b);
    load(path, false, &l);
    ck_assert_msg(count_type(&l, JOURNAL_RETAIN_SET) == 1 && has(&l, "r0:t=m40") &&
                      count_type(&l, JOURNAL_SESSION_PUT) == 1 && has(&l, "s40@0"),
                  "desktop load: %s", summary(&l));
    ck_assert(has(&l, "m40") && has(&l, "m41") && has(&l, "sub40:s/#"));
    ck_assert(has(&l, "out40#40=m41") && has(&l, "qos2:40:7"));
    journal_free(&l.journal);
    /* Desktop mode knows no instances: it deletes no serial's rows, not even a deleted one's. */
    ck_assert_int_eq(rows_for(path, a, 10), 5);
    ck_assert_int_eq(rows_for(path, b, 20), 5);
    ck_assert_int_eq(rows_for(path, GONE_SERIAL, 30), 5);
    ck_assert_int_eq(rows_for(path, 0, 40), 5);
}
END_TEST

/* Records of `l` that belong to sessions or messages of ids `from` to `to`, described. */
static const char *records_in(struct loaded *l, uint64_t from, uint64_t to, char *out, size_t size)
{
    size_t used = 0;

    out[0] = '\0';
    for (size_t i = 0; i < l->n && used < size; i++) {
        const struct journal_record *r = &l->r[i];
        bool in =
            (r->session >= from && r->session <= to) || (r->message >= from && r->message <= to);
        char one[256];
        if (!in)
            continue;
        describe(r, one, sizeof(one));
        used += (size_t)snprintf(out + used, size - used, "%s%s", used ? " " : "", one);
    }
    return out;
}

START_TEST(test_each_mode_loads_no_row_of_the_other)
{
    char path[PATH_SIZE], other[1024];
    int64_t a, b;
    struct loaded l;

    four_owners(path, "modes.db", &a, &b);
    /* keep.h: the load appends "what is kept for the mode", nothing of the other's. */
    load(path, false, &l);
    ck_assert_msg(records_in(&l, 10, 31, other, sizeof(other))[0] == '\0',
                  "a desktop load has cloud rows: %s", other);
    ck_assert_uint_eq(l.n, 7);
    journal_free(&l.journal);
    load(path, true, &l);
    ck_assert_msg(records_in(&l, 40, 41, other, sizeof(other))[0] == '\0',
                  "a cloud load has desktop rows: %s", other);
    ck_assert_uint_eq(l.n, 14);
    journal_free(&l.journal);
}
END_TEST

START_TEST(test_deleting_an_instance_deletes_what_is_kept_for_it)
{
    char path[PATH_SIZE], err[ERRLEN] = "";
    int64_t a, b;
    struct journal batch = JOURNAL_INIT;

    two_instances(path, "delete.db", &a, &b);
    add_instance_rows(&batch, a, 10);
    add_instance_rows(&batch, b, 20);
    write_batch(path, &batch);
    struct store *s = store_open(path, err, sizeof(err));
    ck_assert_msg(s != NULL, "store_open: %s", err);
    ck_assert_msg(store_instance_delete(s, "alpha", err, sizeof(err)) == 0, "%s", err);
    store_close(s);
    ck_assert_int_eq(rows_for(path, a, 10), 0);
    /* Its messages went too: nothing referred to them any more. */
    ck_assert_int_eq(sql_int(path, "SELECT count(*) FROM kept_messages WHERE id IN (10, 11)"), 0);
    ck_assert_int_eq(rows_for(path, b, 20), 5);
    ck_assert_int_eq(sql_int(path, "SELECT count(*) FROM kept_messages WHERE id IN (20, 21)"), 2);
    journal_free(&batch);
}
END_TEST

/* ---- the backup -------------------------------------------------------------- */

/* Every kept row of the database at `path`, in one line. */
static const char *kept_rows(const char *path, char *out, size_t size)
{
    return sql_text(
        path,
        "SELECT (SELECT group_concat(id || ':' || topic || ':' || hex(payload) || ':' || hex(props)"
        " || ':' || expiry || ':' || created_ms, ' ') FROM kept_messages) || ' | ' ||"
        " (SELECT group_concat(instance || ':' || topic || ':' || message, ' ') FROM kept_retained)"
        " || ' | ' || (SELECT group_concat(id || ':' || client_id || ':' || will_message, ' ')"
        " FROM kept_sessions) || ' | ' || (SELECT group_concat(session || ':' || filter, ' ')"
        " FROM kept_subscriptions) || ' | ' || (SELECT group_concat(session || ':' || seq || ':'"
        " || ifnull(message, '-') || ':' || hex(sub_ids), ' ') FROM kept_outgoing) || ' | ' ||"
        " (SELECT group_concat(session || ':' || packet_id, ' ') FROM kept_qos2)",
        out, size);
}

START_TEST(test_a_backup_holds_the_same_rows_and_only_its_owner_reads_it)
{
    char path[PATH_SIZE], dest[PATH_SIZE], tmp[PATH_SIZE + 8], err[ERRLEN] = "";
    char want[2048], got[2048];
    struct stat st;

    write_everything(new_db(path, "source.db"));
    file_path(dest, "copy.db");
    snprintf(tmp, sizeof(tmp), "%s.tmp", dest);
    /* A copy there already (readable by all) and a temporary file a crash left: both replaced. */
    sql_exec(dest, "CREATE TABLE old(x)");
    ck_assert_int_eq(chmod(dest, 0644), 0);
    sql_exec(tmp, "CREATE TABLE leftover(x)");
    ck_assert_msg(keep_backup(path, dest, err, sizeof(err)) == 0, "keep_backup: %s", err);
    ck_assert_int_ne(access(tmp, F_OK), 0);
    ck_assert_int_eq(stat(dest, &st), 0);
    ck_assert_uint_eq(st.st_mode & 07777, 0600);
    kept_rows(path, want, sizeof(want));
    ck_assert_str_eq(kept_rows(dest, got, sizeof(got)), want);
    ck_assert_uint_gt(strlen(want), 40);
    ck_assert_int_eq(sql_int(dest, "SELECT count(*) FROM sqlite_master WHERE name = 'old'"), 0);
    ck_assert_int_eq(sql_int(dest, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
    char ok[16];
    ck_assert_str_eq(sql_text(dest, "PRAGMA integrity_check", ok, sizeof(ok)), "ok");
}
END_TEST

START_TEST(test_a_backup_of_a_missing_database_fails_and_leaves_nothing)
{
    char path[PATH_SIZE], dest[PATH_SIZE], tmp[PATH_SIZE + 8], err[ERRLEN] = "";

    file_path(path, "no_source.db");
    file_path(dest, "no_copy.db");
    snprintf(tmp, sizeof(tmp), "%s.tmp", dest);
    ck_assert_int_ne(keep_backup(path, dest, err, sizeof(err)), 0);
    ck_assert_msg(strstr(err, path) != NULL, "%s", err);
    ck_assert_int_ne(access(dest, F_OK), 0);
    ck_assert_int_ne(access(tmp, F_OK), 0);
    ck_assert_int_ne(access(path, F_OK), 0); /* nor is the source made */
}
END_TEST

/* ---- a commit that fails ------------------------------------------------------- */

/* Send stderr (the log) to `path`; returns what to give stderr_restore(). */
static int stderr_to(const char *path)
{
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_ge(dup2(fd, STDERR_FILENO), 0);
    close(fd);
    return saved;
}

static void stderr_restore(int saved)
{
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
}

static const char *read_text(const char *path, char *out, size_t size)
{
    FILE *f = fopen(path, "r");
    size_t n = 0;

    ck_assert_ptr_nonnull(f);
    n = fread(out, 1, size - 1, f);
    out[n] = '\0';
    fclose(f);
    return out;
}

START_TEST(test_a_failed_commit_loses_the_batch_whole_and_the_writer_goes_on)
{
    char path[PATH_SIZE], log[PATH_SIZE], counts[64], said[2048];
    struct journal bad = JOURNAL_INIT, good = JOURNAL_INIT, *back[2] = {0};
    struct mailbox *m = mailbox_new("test");

    ck_assert_ptr_nonnull(m);
    struct keep_writer *w = start_writer(new_db(path, "fail.db"), m);
    /* Another connection takes a table away under the running writer. */
    sql_exec(path, "DROP TABLE kept_qos2");
    add_message(&bad, 1, "a", 0, 1);
    add_retained(&bad, 0, "a", 1);
    add_qos2(&bad, 1, 1);
    add_session(&good, 2, 0);
    int saved = stderr_to(file_path(log, "fail.log"));
    keep_writer_submit(w, &bad);
    size_t got = take_settled(m, back, 1);
    keep_writer_submit(w, &good);
    got += take_settled(m, back + 1, 1);
    stderr_restore(saved);
    keep_writer_stop(w);
    mailbox_free(m, NULL);
    /* Both came back: the core thread reuses a batch whether or not it was written. */
    ck_assert_uint_eq(got, 2);
    ck_assert_ptr_eq(back[0], &bad);
    ck_assert_ptr_eq(back[1], &good);
    /* One transaction: none of the failed batch, all of the next one. */
    sql_exec(path, "CREATE TABLE kept_qos2(session INTEGER, packet_id INTEGER)");
    ck_assert_str_eq(kept_counts(path, counts, sizeof(counts)), "0 0 1 0 0 0");
    read_text(log, said, sizeof(said));
    ck_assert_msg(strstr(said, "3 changes to retained messages and sessions not written") &&
                      strstr(said, "no such table: kept_qos2") &&
                      strstr(said, "1 failed writes so far"),
                  "log: %s", said);
    journal_free(&bad);
    journal_free(&good);
}
END_TEST

START_TEST(test_a_locked_database_holds_the_batches_until_it_is_free)
{
    char path[PATH_SIZE], log[PATH_SIZE], said[2048];
    struct journal first = JOURNAL_INIT, second = JOURNAL_INIT, *back[2] = {0};
    struct mailbox *m = mailbox_new("test");
    sqlite3 *other;
    struct loaded l;

    ck_assert_ptr_nonnull(m);
    ck_assert_int_eq(sqlite3_open(new_db(path, "locked.db"), &other), SQLITE_OK);
    /* Another connection (aviaryctl's) holds the write lock past the writer's 5 s busy timeout. */
    ck_assert_int_eq(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    add_session(&first, 1, 0);
    add_session(&second, 2, 0);
    log_set_level(LOG_LEVEL_WARNING);
    int saved = stderr_to(file_path(log, "locked.log"));
    struct keep_writer *w = start_writer(path, m);
    keep_writer_submit(w, &first);
    sleep(1);
    keep_writer_submit(w, &second); /* joins the first on the next try */
    sleep(5);
    void *early = mailbox_take(m);
    sqlite3_exec(other, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(other);
    size_t got = take_settled(m, back, 2);
    stderr_restore(saved);
    log_set_level(LOG_LEVEL_ERROR);
    keep_writer_stop(w);
    mailbox_free(m, NULL);
    /* Neither lost nor handed back while locked: they waited, then went in, in order. */
    ck_assert_ptr_null(early);
    ck_assert_uint_eq(got, 2);
    ck_assert_ptr_eq(back[0], &first);
    ck_assert_ptr_eq(back[1], &second);
    read_text(log, said, sizeof(said));
    ck_assert_msg(strstr(said, "is locked by another connection") != NULL, "log: %s", said);
    load(path, false, &l);
    ck_assert_str_eq(summary(&l), "s1@0 s2@0");
    journal_free(&l.journal);
    journal_free(&first);
    journal_free(&second);
}
END_TEST

static Suite *keep_suite(void)
{
    Suite *s = suite_create("keep");
    TCase *tc = tcase_create("journal");
    tcase_add_test(tc, test_journal_reads_back_every_field_of_every_record);
    tcase_add_test(tc, test_journal_sub_id_reads_each_identifier);
    tcase_add_test(tc, test_an_empty_journal_has_no_record);
    tcase_add_test(tc, test_journal_reset_keeps_the_buffer);
    tcase_add_test(tc, test_a_big_payload_grows_the_buffer);
    suite_add_tcase(s, tc);

    tc = tcase_create("writer and loader");
    tcase_add_test(tc, test_what_the_writer_commits_loads_back_in_replay_order);
    tcase_add_test(tc, test_an_empty_database_loads_nothing_and_ids_start_at_1);
    tcase_add_test(tc, test_drops_remove_what_they_name);
    tcase_add_test(tc, test_dropping_a_session_drops_all_its_rows);
    tcase_add_test(tc, test_putting_a_session_again_updates_it_and_keeps_the_rest);
    tcase_add_test(tc, test_many_subscription_identifiers_round_trip);
    tcase_add_test(tc, test_batches_are_applied_and_handed_back_in_order);
    tcase_add_test(tc, test_stopping_the_writer_applies_what_is_queued);
    tcase_add_test(tc, test_the_writer_needs_a_migrated_database);
    tcase_add_test(tc, test_loading_a_missing_database_fails);
    tcase_add_test(tc, test_a_load_that_fails_says_why);
    tcase_add_test(tc, test_the_load_removes_what_expired_or_nothing_uses);
    tcase_add_test(tc, test_the_load_removes_rows_whose_message_is_missing_and_skips_their_ids);
    tcase_add_test(tc, test_a_failed_commit_loses_the_batch_whole_and_the_writer_goes_on);
    suite_add_tcase(s, tc);

    tc = tcase_create("locks");
    tcase_set_timeout(tc, 30); /* the writer waits out its 5 s busy timeout once */
    tcase_add_test(tc, test_a_locked_database_holds_the_batches_until_it_is_free);
    suite_add_tcase(s, tc);

    tc = tcase_create("cloud and desktop");
    tcase_add_test(tc, test_a_cloud_load_reads_its_instances_and_removes_what_deleted_ones_left);
    tcase_add_test(tc, test_a_desktop_load_reads_serial_0_and_deletes_no_instance_rows);
    tcase_add_test(tc, test_each_mode_loads_no_row_of_the_other);
    tcase_add_test(tc, test_deleting_an_instance_deletes_what_is_kept_for_it);
    suite_add_tcase(s, tc);

    tc = tcase_create("backup");
    tcase_add_test(tc, test_a_backup_holds_the_same_rows_and_only_its_owner_reads_it);
    tcase_add_test(tc, test_a_backup_of_a_missing_database_fails_and_leaves_nothing);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    snprintf(test_dir, sizeof(test_dir), "/tmp/aviary-test-keep-XXXXXX");
    if (mkdtemp(test_dir) == NULL) {
        perror("mkdtemp");
        return EXIT_FAILURE;
    }
    log_open("test_keep", LOG_LEVEL_ERROR, false);
    int status = check_tap_run(keep_suite());
    check_tap_remove_dir(test_dir);
    return status;
}
