/*
 * Unit tests for store/store: the schema and its version, the default plan,
 * instances, plan and instance limits, tokens with their filters and secrets,
 * revocation, data_version across connections, and every refusal to open.
 *
 * Every database lives in one temporary directory made by main() and removed
 * by it after the run, whatever the tests did.
 */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store/store.h"
#include "util/hex.h"
#include "util/secret.h"

#include "check_tap.h"

#define ERRLEN 512

static char test_dir[64];

/* A database path in the test directory, named after the test. */
static const char *db_path(const char *name)
{
    static char path[256];
    snprintf(path, sizeof(path), "%s/%s.db", test_dir, name);
    return path;
}

static struct store *open_ok(const char *name)
{
    char err[ERRLEN] = "";
    struct store *s = store_open(db_path(name), err, sizeof(err));
    ck_assert_msg(s != NULL, "store_open: %s", err);
    return s;
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

/* The first column of the first row of `sql`, as an integer. */
static long long sql_int(const char *path, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    long long v = -1;

    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* ---- what the callbacks saw, copied out ----------------------------------- */

#define MAX_SEEN 16

struct seen_plan {
    char name[STORE_NAME_MAX + 1];
    char limits[256]; /* "name=value name=value" */
};

struct seen_plans {
    struct seen_plan p[MAX_SEEN];
    size_t n;
};

static void limits_text(char *out, size_t size, const struct store_limit *l, size_t count)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < count; i++)
        used += (size_t)snprintf(out + used, size - used, "%s%s=%llu", i ? " " : "", l[i].name,
                                 l[i].value);
}

static void collect_plan(void *ctx, const char *plan, const struct store_limit *limits,
                         size_t count)
{
    struct seen_plans *sp = ctx;
    ck_assert_uint_lt(sp->n, MAX_SEEN);
    snprintf(sp->p[sp->n].name, sizeof(sp->p[sp->n].name), "%s", plan);
    limits_text(sp->p[sp->n].limits, sizeof(sp->p[sp->n].limits), limits, count);
    sp->n++;
}

struct seen_instance {
    char name[STORE_NAME_MAX + 1], plan[STORE_NAME_MAX + 1];
    long long created;
    size_t tokens;
    char limits[256];
};

struct seen_instances {
    struct seen_instance i[MAX_SEEN];
    size_t n;
};

static void collect_instance(void *ctx, const struct store_instance *inst)
{
    struct seen_instances *si = ctx;
    struct seen_instance *x;
    ck_assert_uint_lt(si->n, MAX_SEEN);
    x = &si->i[si->n++];
    snprintf(x->name, sizeof(x->name), "%s", inst->name);
    snprintf(x->plan, sizeof(x->plan), "%s", inst->plan);
    x->created = inst->created;
    x->tokens = inst->token_count;
    limits_text(x->limits, sizeof(x->limits), inst->overrides, inst->override_count);
}

struct seen_token {
    char id[STORE_TOKEN_ID_LEN + 1];
    char instance[STORE_NAME_MAX + 1];
    char label[64];
    char client_id[64]; /* "(any)" for NULL */
    long long created, expires;
    bool revoked;
    bool allow_action;
    uint8_t hash[STORE_HASH_LEN];
    char filters[4][128]; /* space-separated, per kind */
};

struct seen_tokens {
    struct seen_token t[MAX_SEEN];
    size_t n;
};

static void filters_text(char *out, size_t size, const struct store_filters *f)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < f->count; i++)
        used += (size_t)snprintf(out + used, size - used, "%s%s", i ? " " : "", f->items[i]);
}

static void collect_token(void *ctx, const struct store_token *tok)
{
    struct seen_tokens *st = ctx;
    struct seen_token *x;
    ck_assert_uint_lt(st->n, MAX_SEEN);
    x = &st->t[st->n++];
    snprintf(x->id, sizeof(x->id), "%s", tok->id);
    snprintf(x->instance, sizeof(x->instance), "%s", tok->instance);
    snprintf(x->label, sizeof(x->label), "%s", tok->label);
    snprintf(x->client_id, sizeof(x->client_id), "%s", tok->client_id ? tok->client_id : "(any)");
    x->created = tok->created;
    x->expires = tok->expires;
    x->revoked = tok->revoked;
    x->allow_action = tok->allow_action;
    memcpy(x->hash, tok->secret_hash, STORE_HASH_LEN);
    filters_text(x->filters[0], sizeof(x->filters[0]), &tok->pub);
    filters_text(x->filters[1], sizeof(x->filters[1]), &tok->sub);
    filters_text(x->filters[2], sizeof(x->filters[2]), &tok->deny_pub);
    filters_text(x->filters[3], sizeof(x->filters[3]), &tok->deny_sub);
}

static void list_plans(struct store *s, struct seen_plans *sp)
{
    char err[ERRLEN];
    memset(sp, 0, sizeof(*sp));
    ck_assert_int_eq(store_plan_list(s, collect_plan, sp, err, sizeof(err)), 0);
}

static void list_instances(struct store *s, struct seen_instances *si)
{
    char err[ERRLEN];
    memset(si, 0, sizeof(*si));
    ck_assert_int_eq(store_instance_list(s, collect_instance, si, err, sizeof(err)), 0);
}

static void list_tokens(struct store *s, const char *instance, struct seen_tokens *st)
{
    char err[ERRLEN];
    memset(st, 0, sizeof(*st));
    ck_assert_int_eq(store_token_list(s, instance, collect_token, st, err, sizeof(err)), 0);
}

static void all_tokens(struct store *s, struct seen_tokens *st)
{
    char err[ERRLEN];
    memset(st, 0, sizeof(*st));
    ck_assert_int_eq(store_token_all(s, collect_token, st, err, sizeof(err)), 0);
}

/* A key (no expiry, no filters) for `instance`. */
static void make_token(struct store *s, const char *instance, char id[STORE_TOKEN_ID_LEN + 1],
                       char secret[STORE_SECRET_LEN + 1])
{
    struct store_token_spec spec = {.instance = instance};
    char err[ERRLEN] = "";
    ck_assert_msg(store_token_create(s, &spec, id, secret, err, sizeof(err)) == 0, "%s", err);
}

/* ---- opening and the schema ------------------------------------------------ */

START_TEST(test_open_creates_the_schema_in_wal_mode)
{
    struct store *s = open_ok("schema");
    const char *path = db_path("schema");

    ck_assert_int_eq(sql_int(path, "PRAGMA user_version"), STORE_SCHEMA_VERSION);
    ck_assert_int_eq(sql_int(path, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND"
                                   " name IN ('plans', 'plan_limits', 'instances',"
                                   " 'instance_limits', 'tokens', 'token_filters')"),
                     6);
    store_close(s);
    /* WAL is a property of the file: a plain connection sees it too. */
    sqlite3 *db;
    sqlite3_stmt *st;
    ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
    ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
    ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
    ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "wal");
    sqlite3_finalize(st);
    sqlite3_close(db);
}
END_TEST

START_TEST(test_open_creates_the_default_plan)
{
    struct store *s = open_ok("default_plan");
    struct seen_plans sp;

    list_plans(s, &sp);
    ck_assert_uint_eq(sp.n, 1);
    ck_assert_str_eq(sp.p[0].name, STORE_DEFAULT_PLAN);
    ck_assert_str_eq(sp.p[0].limits, "idle-timeout=3600 max-connections=100 "
                                     "max-instance-bytes=67108864 max-messages-per-second=100 "
                                     "max-retained=1000 max-sessions=1000");
    store_close(s);
}
END_TEST

START_TEST(test_reopening_keeps_a_changed_default_plan)
{
    struct store *s = open_ok("reopen");
    struct seen_plans sp;
    char err[ERRLEN];

    ck_assert_int_eq(store_plan_set(s, "default", "max-connections", 7, err, sizeof(err)), 0);
    store_close(s);
    s = open_ok("reopen");
    list_plans(s, &sp);
    ck_assert_uint_eq(sp.n, 1);
    ck_assert_str_eq(sp.p[0].limits, "idle-timeout=3600 max-connections=7 "
                                     "max-instance-bytes=67108864 max-messages-per-second=100 "
                                     "max-retained=1000 max-sessions=1000");
    store_close(s);
    ck_assert_int_eq(sql_int(db_path("reopen"), "PRAGMA user_version"), STORE_SCHEMA_VERSION);
}
END_TEST

START_TEST(test_a_deleted_default_plan_is_made_again)
{
    struct store *s = open_ok("default_again");
    struct seen_plans sp;

    store_close(s);
    sql_exec(db_path("default_again"),
             "PRAGMA foreign_keys = ON; DELETE FROM plans WHERE name = 'default'");
    s = open_ok("default_again");
    list_plans(s, &sp);
    ck_assert_uint_eq(sp.n, 1);
    ck_assert_str_eq(sp.p[0].name, "default");
    ck_assert_str_eq(sp.p[0].limits, "idle-timeout=3600 max-connections=100 "
                                     "max-instance-bytes=67108864 max-messages-per-second=100 "
                                     "max-retained=1000 max-sessions=1000");
    store_close(s);
}
END_TEST

START_TEST(test_a_newer_schema_version_is_refused)
{
    struct store *s = open_ok("newer");
    char err[ERRLEN] = "", want[ERRLEN];

    store_close(s);
    char bump[64];
    snprintf(bump, sizeof(bump), "PRAGMA user_version = %d", STORE_SCHEMA_VERSION + 1);
    sql_exec(db_path("newer"), bump);
    ck_assert_ptr_null(store_open(db_path("newer"), err, sizeof(err)));
    snprintf(want, sizeof(want),
             "cannot open database %s: its schema version %d is newer than this program's (%d); "
             "use a newer aviary",
             db_path("newer"), STORE_SCHEMA_VERSION + 1, STORE_SCHEMA_VERSION);
    ck_assert_str_eq(err, want);
    /* and it is left as it was */
    ck_assert_int_eq(sql_int(db_path("newer"), "PRAGMA user_version"), STORE_SCHEMA_VERSION + 1);
}
END_TEST

static void count_instance(void *ctx, const struct store_instance *inst)
{
    (void)inst;
    ++*(int *)ctx;
}

/* A version 1 database (before instance serials) is migrated and keeps its data. */
START_TEST(test_version_1_database_is_migrated)
{
    struct store *s = open_ok("v1");
    char err[ERRLEN] = "";
    int n = 0;

    ck_assert_int_eq(store_instance_create(s, "old", NULL, err, sizeof(err)), 0);
    store_close(s);
    /* Back to what version 1 had: no serials, nothing kept for the broker. */
    sql_exec(db_path("v1"), "ALTER TABLE instances DROP COLUMN serial");
    sql_exec(db_path("v1"), "DROP TABLE kept_messages; DROP TABLE kept_retained; "
                            "DROP TABLE kept_sessions; DROP TABLE kept_subscriptions; "
                            "DROP TABLE kept_outgoing; DROP TABLE kept_qos2");
    sql_exec(db_path("v1"), "ALTER TABLE tokens DROP COLUMN allow_action");
    sql_exec(db_path("v1"), "DROP TABLE admin_keys");
    sql_exec(db_path("v1"), "PRAGMA user_version = 1");
    s = open_ok("v1");
    ck_assert_int_eq(sql_int(db_path("v1"), "PRAGMA user_version"), STORE_SCHEMA_VERSION);
    ck_assert_int_eq(store_instance_list(s, count_instance, &n, err, sizeof(err)), 0);
    ck_assert_int_eq(n, 1);
    ck_assert_int_eq(store_instance_create(s, "new", NULL, err, sizeof(err)), 0);
    ck_assert_int_ne(sql_int(db_path("v1"), "SELECT serial FROM instances WHERE name = 'new'"), 0);
    store_close(s);
}
END_TEST

/*
 * A version 3 database (before the action permission) is migrated: its
 * tokens keep everything and may not act; new ones may when created so.
 */
START_TEST(test_version_3_database_is_migrated)
{
    struct store *s = open_ok("v3");
    struct store_token_spec spec = {.instance = "old", .allow_action = true};
    char id[STORE_TOKEN_ID_LEN + 1], secret[STORE_SECRET_LEN + 1], err[ERRLEN] = "";
    char old_id[STORE_TOKEN_ID_LEN + 1];
    struct seen_tokens st;

    ck_assert_int_eq(store_instance_create(s, "old", NULL, err, sizeof(err)), 0);
    make_token(s, "old", old_id, secret);
    store_close(s);
    sql_exec(db_path("v3"), "ALTER TABLE tokens DROP COLUMN allow_action");
    sql_exec(db_path("v3"), "DROP TABLE admin_keys; PRAGMA user_version = 3");
    s = open_ok("v3");
    ck_assert_int_eq(sql_int(db_path("v3"), "PRAGMA user_version"), STORE_SCHEMA_VERSION);
    list_tokens(s, "old", &st);
    ck_assert_uint_eq(st.n, 1);
    ck_assert_str_eq(st.t[0].id, old_id);
    ck_assert(!st.t[0].allow_action);
    ck_assert_int_eq(store_token_create(s, &spec, id, secret, err, sizeof(err)), 0);
    all_tokens(s, &st);
    ck_assert_uint_eq(st.n, 2);
    ck_assert(st.t[0].allow_action != st.t[1].allow_action);
    ck_assert(strcmp(st.t[0].id, id) == 0 ? st.t[0].allow_action : st.t[1].allow_action);
    store_close(s);
}
END_TEST

/* Version 4 (before admin keys) gains the admin_keys table and keeps its tokens. */
START_TEST(test_version_4_database_is_migrated_to_admin_keys)
{
    struct store *s = open_ok("v4");
    char id[STORE_TOKEN_ID_LEN + 1], secret[STORE_SECRET_LEN + 1], err[ERRLEN] = "";

    ck_assert_int_eq(store_instance_create(s, "acme", NULL, err, sizeof(err)), 0);
    make_token(s, "acme", id, secret);
    store_close(s);
    sql_exec(db_path("v4"), "DROP TABLE admin_keys; PRAGMA user_version = 4");
    s = open_ok("v4");
    ck_assert_int_eq(sql_int(db_path("v4"), "PRAGMA user_version"), STORE_SCHEMA_VERSION);
    ck_assert_int_eq(sql_int(db_path("v4"), "SELECT count(*) FROM tokens"), 1);
    ck_assert_int_eq(store_admin_key_create(s, "ops", id, secret, err, sizeof(err)), 0);
    ck_assert_int_eq(sql_int(db_path("v4"), "SELECT count(*) FROM admin_keys"), 1);
    store_close(s);
}
END_TEST

static void collect_admin_key(void *ctx, const struct store_admin_key *k)
{
    char *out = ctx;
    size_t n = strlen(out);
    snprintf(out + n, 256 - n, "%s%s:%s:%d", n ? " " : "", k->id, k->label, k->revoked);
}

START_TEST(test_admin_keys_create_list_revoke)
{
    struct store *s = open_ok("admin_keys");
    char id1[STORE_TOKEN_ID_LEN + 1], id2[STORE_TOKEN_ID_LEN + 1];
    char secret[STORE_SECRET_LEN + 1], err[ERRLEN] = "", all[256] = "", live[256] = "", want[256];
    uint8_t hash[STORE_HASH_LEN];

    ck_assert_int_eq(store_admin_key_create(s, "ops", id1, secret, err, sizeof(err)), 0);
    ck_assert_uint_eq(strlen(secret), STORE_SECRET_LEN);
    /* only the hash is kept */
    secret_hash(secret, STORE_SECRET_LEN, hash);
    char query[160], hex[2 * STORE_HASH_LEN + 1];
    hex_encode(hash, sizeof(hash), hex);
    snprintf(query, sizeof(query),
             "SELECT count(*) FROM admin_keys WHERE hex(secret_hash) = upper('%s')", hex);
    ck_assert_int_eq(sql_int(db_path("admin_keys"), query), 1);
    ck_assert_int_eq(store_admin_key_create(s, NULL, id2, secret, err, sizeof(err)), 0);
    ck_assert_str_ne(id1, id2);
    ck_assert_int_eq(store_admin_key_revoke(s, id1, err, sizeof(err)), 0);
    ck_assert_int_eq(store_admin_key_revoke(s, id1, err, sizeof(err)), 0); /* twice is fine */
    ck_assert_int_eq(store_admin_key_revoke(s, "0123456789abcdef", err, sizeof(err)),
                     STORE_E_NOT_FOUND);
    ck_assert_str_eq(err, "no admin key '0123456789abcdef'");
    ck_assert_int_eq(store_admin_key_list(s, false, collect_admin_key, all, err, sizeof(err)), 0);
    snprintf(want, sizeof(want), "%s:ops:1 %s::0", id1, id2);
    ck_assert_str_eq(all, want);
    ck_assert_int_eq(store_admin_key_list(s, true, collect_admin_key, live, err, sizeof(err)), 0);
    snprintf(want, sizeof(want), "%s::0", id2);
    ck_assert_str_eq(live, want);
    store_close(s);
}
END_TEST

START_TEST(test_a_file_that_is_not_sqlite_is_refused)
{
    const char *path = db_path("junk");
    char text[4096], err[ERRLEN] = "", want[ERRLEN];
    FILE *f = fopen(path, "w");

    ck_assert_ptr_nonnull(f);
    memset(text, 'x', sizeof(text));
    ck_assert_uint_eq(fwrite(text, 1, sizeof(text), f), sizeof(text));
    fclose(f);
    ck_assert_ptr_null(store_open(path, err, sizeof(err)));
    snprintf(want, sizeof(want), "cannot open database %s: file is not a database", path);
    ck_assert_str_eq(err, want);
}
END_TEST

START_TEST(test_a_missing_directory_is_refused)
{
    char path[256], err[ERRLEN] = "", want[ERRLEN];

    snprintf(path, sizeof(path), "%s/no-such-dir/aviary.db", test_dir);
    ck_assert_ptr_null(store_open(path, err, sizeof(err)));
    snprintf(want, sizeof(want), "cannot open database %s: ", path);
    ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "got '%s'", err);
    ck_assert_ptr_null(strchr(err, '\n'));
}
END_TEST

START_TEST(test_a_directory_is_refused)
{
    char path[256], err[ERRLEN] = "", want[ERRLEN];

    snprintf(path, sizeof(path), "%s/a-directory", test_dir);
    ck_assert_int_eq(mkdir(path, 0700), 0);
    ck_assert_ptr_null(store_open(path, err, sizeof(err)));
    snprintf(want, sizeof(want), "cannot open database %s: ", path);
    ck_assert_msg(strncmp(err, want, strlen(want)) == 0, "got '%s'", err);
    rmdir(path);
}
END_TEST

START_TEST(test_errors_without_a_buffer_are_safe)
{
    struct store *s = open_ok("no_err");

    ck_assert_int_eq(store_instance_delete(s, "nobody", NULL, 0), STORE_E_NOT_FOUND);
    ck_assert_int_eq(store_instance_create(s, "bad name", NULL, NULL, 0), STORE_E_INVALID);
    store_close(s);
    ck_assert_ptr_null(store_open(db_path("no_err/x"), NULL, 0));
}
END_TEST

/* ---- names, secrets ---------------------------------------------------------- */

START_TEST(test_name_rules)
{
    char longest[STORE_NAME_MAX + 2];

    ck_assert(store_name_valid("acme"));
    ck_assert(store_name_valid("A-z_0.9"));
    ck_assert(!store_name_valid(""));
    ck_assert(!store_name_valid("a b"));
    ck_assert(!store_name_valid("a/b"));
    ck_assert(!store_name_valid("a:b"));
    ck_assert(!store_name_valid("caf\xc3\xa9"));
    memset(longest, 'n', STORE_NAME_MAX);
    longest[STORE_NAME_MAX] = '\0';
    ck_assert(store_name_valid(longest));
    longest[STORE_NAME_MAX] = 'n';
    longest[STORE_NAME_MAX + 1] = '\0';
    ck_assert(!store_name_valid(longest));
}
END_TEST

/* ---- instances ---------------------------------------------------------------- */

START_TEST(test_instances_create_list_get_delete)
{
    struct store *s = open_ok("instances");
    struct seen_instances si;
    char err[ERRLEN];
    time_t before = time(NULL);

    ck_assert_int_eq(store_plan_set(s, "tiny", "max-connections", 2, err, sizeof(err)), 0);
    ck_assert_int_eq(store_instance_create(s, "zeta", NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(store_instance_create(s, "alpha", "tiny", err, sizeof(err)), 0);
    list_instances(s, &si);
    ck_assert_uint_eq(si.n, 2);
    ck_assert_str_eq(si.i[0].name, "alpha"); /* name order */
    ck_assert_str_eq(si.i[0].plan, "tiny");
    ck_assert_str_eq(si.i[1].name, "zeta");
    ck_assert_str_eq(si.i[1].plan, "default");
    ck_assert_int_ge(si.i[1].created, (long long)before);
    ck_assert_int_le(si.i[1].created, (long long)time(NULL));
    ck_assert_uint_eq(si.i[1].tokens, 0);
    ck_assert_str_eq(si.i[1].limits, "");

    memset(&si, 0, sizeof(si));
    ck_assert_int_eq(store_instance_get(s, "zeta", collect_instance, &si, err, sizeof(err)), 0);
    ck_assert_uint_eq(si.n, 1);
    ck_assert_str_eq(si.i[0].name, "zeta");

    ck_assert_int_eq(store_instance_delete(s, "zeta", err, sizeof(err)), 0);
    ck_assert_int_eq(store_instance_get(s, "zeta", collect_instance, &si, err, sizeof(err)),
                     STORE_E_NOT_FOUND);
    ck_assert_str_eq(err, "no instance 'zeta'");
    ck_assert_int_eq(store_instance_delete(s, "zeta", err, sizeof(err)), STORE_E_NOT_FOUND);
    ck_assert_str_eq(err, "no instance 'zeta'");
    list_instances(s, &si);
    ck_assert_uint_eq(si.n, 1);
    store_close(s);
}
END_TEST

START_TEST(test_instance_name_taken)
{
    struct store *s = open_ok("duplicate");
    char err[ERRLEN];

    ck_assert_int_eq(store_instance_create(s, "acme", NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(store_instance_create(s, "acme", NULL, err, sizeof(err)), STORE_E_EXISTS);
    ck_assert_str_eq(err, "instance 'acme' exists already");
    store_close(s);
}
END_TEST

START_TEST(test_instance_needs_a_known_plan_and_good_names)
{
    struct store *s = open_ok("plan_unknown");
    struct seen_instances si;
    char err[ERRLEN];

    ck_assert_int_eq(store_instance_create(s, "acme", "gold", err, sizeof(err)), STORE_E_NOT_FOUND);
    ck_assert_str_eq(err, "no plan 'gold'");
    ck_assert_int_eq(store_instance_create(s, "a/b", NULL, err, sizeof(err)), STORE_E_INVALID);
    ck_assert_str_eq(err, "bad instance name 'a/b' (1 to 64 letters, digits, '.', '_' or '-')");
    ck_assert_int_eq(store_instance_create(s, "a\nb", NULL, err, sizeof(err)), STORE_E_INVALID);
    ck_assert_ptr_null(strchr(err, '\n'));
    ck_assert_int_eq(store_instance_create(s, "ok", "bad plan", err, sizeof(err)), STORE_E_INVALID);
    ck_assert_str_eq(err, "bad plan name 'bad plan' (1 to 64 letters, digits, '.', '_' or '-')");
    list_instances(s, &si);
    ck_assert_uint_eq(si.n, 0);
    store_close(s);
}
END_TEST

/* ---- limits -------------------------------------------------------------------- */

START_TEST(test_plan_limits_set_and_replace)
{
    struct store *s = open_ok("plan_limits");
    struct seen_plans sp;
    char err[ERRLEN];

    ck_assert_int_eq(store_plan_set(s, "gold", "max-payload", 1024, err, sizeof(err)), 0);
    ck_assert_int_eq(store_plan_set(s, "gold", "max-connections", 50, err, sizeof(err)), 0);
    ck_assert_int_eq(store_plan_set(s, "gold", "max-connections", 60, err, sizeof(err)), 0);
    ck_assert_int_eq(store_plan_set(s, "empty", "max-retained", 0, err, sizeof(err)), 0);
    list_plans(s, &sp);
    ck_assert_uint_eq(sp.n, 3);
    ck_assert_str_eq(sp.p[0].name, "default");
    ck_assert_str_eq(sp.p[1].name, "empty");
    ck_assert_str_eq(sp.p[1].limits, "max-retained=0");
    ck_assert_str_eq(sp.p[2].name, "gold");
    ck_assert_str_eq(sp.p[2].limits, "max-connections=60 max-payload=1024");
    store_close(s);
}
END_TEST

START_TEST(test_limits_refuse_unknown_names_and_values_out_of_range)
{
    struct store *s = open_ok("bad_limits");
    struct seen_plans sp;
    char err[ERRLEN];

    ck_assert_int_eq(store_instance_create(s, "acme", NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(store_plan_set(s, "gold", "max-bananas", 1, err, sizeof(err)),
                     STORE_E_INVALID);
    ck_assert_msg(strncmp(err, "unknown limit 'max-bananas' (known: max-client-id, ", 51) == 0,
                  "got '%s'", err);
    ck_assert_int_eq(store_instance_set_limit(s, "acme", "listen", 1, err, sizeof(err)),
                     STORE_E_INVALID);
    ck_assert_msg(strncmp(err, "unknown limit 'listen'", 22) == 0, "got '%s'", err);
    /* max-inflight is 1 to 65535, as in aviary.conf */
    ck_assert_int_eq(store_plan_set(s, "gold", "max-inflight", 0, err, sizeof(err)),
                     STORE_E_INVALID);
    ck_assert_str_eq(err, "max-inflight: must be between 1 and 65535, got '0'");
    ck_assert_int_eq(store_instance_set_limit(s, "acme", "max-inflight", 70000, err, sizeof(err)),
                     STORE_E_INVALID);
    ck_assert_int_eq(store_plan_set(s, "bad name", "max-inflight", 5, err, sizeof(err)),
                     STORE_E_INVALID);
    list_plans(s, &sp);
    ck_assert_uint_eq(sp.n, 1); /* nothing half-made */
    store_close(s);
}
END_TEST

START_TEST(test_instance_overrides)
{
    struct store *s = open_ok("overrides");
    struct seen_instances si;
    char err[ERRLEN];

    ck_assert_int_eq(store_instance_set_limit(s, "acme", "max-connections", 3, err, sizeof(err)),
                     STORE_E_NOT_FOUND);
    ck_assert_str_eq(err, "no instance 'acme'");
    ck_assert_int_eq(store_instance_create(s, "acme", NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(store_instance_set_limit(s, "acme", "max-retained", 2, err, sizeof(err)), 0);
    ck_assert_int_eq(store_instance_set_limit(s, "acme", "idle-timeout", 9, err, sizeof(err)), 0);
    ck_assert_int_eq(store_instance_set_limit(s, "acme", "idle-timeout", 10, err, sizeof(err)), 0);
    memset(&si, 0, sizeof(si));
    ck_assert_int_eq(store_instance_get(s, "acme", collect_instance, &si, err, sizeof(err)), 0);
    ck_assert_str_eq(si.i[0].limits, "idle-timeout=10 max-retained=2");
    store_close(s);
}
END_TEST

/* ---- tokens -------------------------------------------------------------------- */

static bool contains(const char *hay, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(hay + i, needle, n) == 0)
            return true;
    return false;
}

static bool is_lower_hex(const char *s)
{
    for (; *s != '\0'; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return false;
    return true;
}

static bool is_base64url(const char *s)
{
    for (; *s != '\0'; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              *s == '-' || *s == '_'))
            return false;
    return true;
}

START_TEST(test_token_created_with_filters_reads_back)
{
    struct store *s = open_ok("token_filters");
    const char *pub[] = {"sensors/#", "a/+/b"}, *deny_sub[] = {"sensors/secret/#"};
    struct store_token_spec spec = {
        .instance = "acme",
        .label = "kitchen",
        .expires = 2000000000,
        .client_id = "device-7",
        .pub = {pub, 2},
        .deny_sub = {deny_sub, 1},
    };
    char id[STORE_TOKEN_ID_LEN + 1], secret[STORE_SECRET_LEN + 1], err[ERRLEN];
    struct seen_tokens st;
    uint8_t hash[STORE_HASH_LEN];

    ck_assert_int_eq(store_instance_create(s, "acme", NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(store_token_create(s, &spec, id, secret, err, sizeof(err)), 0);
    ck_assert_uint_eq(strlen(id), STORE_TOKEN_ID_LEN);
    ck_assert(is_lower_hex(id));
    ck_assert_uint_eq(strlen(secret), STORE_SECRET_LEN);
    ck_assert(is_base64url(secret));

    list_tokens(s, "acme", &st);
    ck_assert_uint_eq(st.n, 1);
    ck_assert_str_eq(st.t[0].id, id);
    ck_assert_str_eq(st.t[0].instance, "acme");
    ck_assert_str_eq(st.t[0].label, "kitchen");
    ck_assert_str_eq(st.t[0].client_id, "device-7");
    ck_assert_int_eq(st.t[0].expires, 2000000000);
    ck_assert(!st.t[0].revoked);
    ck_assert(!st.t[0].allow_action);
    ck_assert_str_eq(st.t[0].filters[0], "sensors/# a/+/b"); /* in the order given */
    ck_assert_str_eq(st.t[0].filters[1], "");
    ck_assert_str_eq(st.t[0].filters[2], "");
    ck_assert_str_eq(st.t[0].filters[3], "sensors/secret/#");
    secret_hash(secret, strlen(secret), hash); /* what the catalog looks tokens up by */
    ck_assert_mem_eq(st.t[0].hash, hash, STORE_HASH_LEN);
    store_close(s);
}
END_TEST

START_TEST(test_a_key_has_no_expiry_label_or_client_id)
{
    struct store *s = open_ok("token_key");
    char id[STORE_TOKEN_ID_LEN + 1], secret[STORE_SECRET_LEN + 1], err[ERRLEN];
    struct seen_tokens st;
    time_t before = time(NULL);

    ck_assert_int_eq(store_instance_create(s, "acme", NULL, err, sizeof(err)), 0);
    make_token(s, "acme", id, secret);
    list_tokens(s, "acme", &st);
    ck_assert_uint_eq(st.n, 1);
    ck_assert_int_eq(st.t[0].expires, 0);
    ck_assert_str_eq(st.t[0].label, "");
    ck_assert_str_eq(st.t[0].client_id, "(any)");
    ck_assert_int_ge(st.t[0].created, (long long)before);
    for (int k = 0; k < 4; k++)
        ck_assert_str_eq(st.t[0].filters[k], "");
    store_close(s);
}
END_TEST

START_TEST(test_the_secret_is_never_stored)
{
    struct store *s = open_ok("no_secret");
    char id[STORE_TOKEN_ID_LEN + 1], secret[STORE_SECRET_LEN + 1], err[ERRLEN], sql[256];

    ck_assert_int_eq(store_instance_create(s, "acme", NULL, err, sizeof(err)), 0);
    make_token(s, "acme", id, secret);
    store_close(s);

    int fd = open(db_path("no_secret"), O_RDONLY);
    ck_assert_int_ge(fd, 0);
    static char file[1 << 20];
    ssize_t n = read(fd, file, sizeof(file));
    close(fd);
    ck_assert_int_gt(n, 0);
    ck_assert(!contains(file, (size_t)n, secret));
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM tokens WHERE label = '%s' OR id = '%s'",
             secret, secret);
    ck_assert_int_eq(sql_int(db_path("no_secret"), sql), 0);
}
END_TEST

START_TEST(test_tokens_differ_and_list_oldest_first)
{
    struct store *s = open_ok("token_order");
    char id[3][STORE_TOKEN_ID_LEN + 1], secret[3][STORE_SECRET_LEN + 1], err[ERRLEN];
    struct seen_tokens st;

    ck_assert_int_eq(store_instance_create(s, "acme", NULL, err, sizeof(err)), 0);
    for (int i = 0; i < 3; i++)
        make_token(s, "acme", id[i], secret[i]);
    ck_assert_str_ne(id[0], id[1]);
    ck_assert_str_ne(id[1], id[2]);
    ck_assert_str_ne(secret[0], secret[1]);
    ck_assert_str_ne(secret[1], secret[2]);
    list_tokens(s, "acme", &st);
    ck_assert_uint_eq(st.n, 3);
    for (int i = 0; i < 3; i++)
        ck_assert_str_eq(st.t[i].id, id[i]);
    store_close(s);
}
END_TEST

START_TEST(test_token_for_an_unknown_instance)
{
    struct store *s = open_ok("token_unknown");
    struct store_token_spec spec = {.instance = "nobody"};
    char id[STORE_TOKEN_ID_LEN + 1] = "unchanged", secret[STORE_SECRET_LEN + 1] = "unchanged";
    char err[ERRLEN];
    struct seen_tokens st;

    ck_assert_int_eq(store_token_create(s, &spec, id, secret, err, sizeof(err)), STORE_E_NOT_FOUND);
    ck_assert_str_eq(err, "no instance 'nobody'");
    ck_assert_str_eq(secret, "unchanged");
    ck_assert_int_eq(store_token_list(s, "nobody", collect_token, &st, err, sizeof(err)),
                     STORE_E_NOT_FOUND);
    ck_assert_str_eq(err, "no instance 'nobody'");
    all_tokens(s, &st);
    ck_assert_uint_eq(st.n, 0);
    store_close(s);
}
END_TEST

START_TEST(test_open_existing_creates_nothing)
{
    char err[ERRLEN];
    int code = 0;
    const char *path = db_path("existing");

    ck_assert_ptr_null(store_open_existing(path, &code, err, sizeof(err)));
    ck_assert_int_eq(code, STORE_E_NOT_FOUND);
    char want[ERRLEN];
    snprintf(want, sizeof(want), "no database at %s", path);
    ck_assert_str_eq(err, want);
    ck_assert_int_ne(access(path, F_OK), 0);
    store_close(open_ok("existing"));
    struct store *s = store_open_existing(path, &code, err, sizeof(err));
    ck_assert_msg(s != NULL, "store_open_existing: %s", err);
    ck_assert_int_eq(code, 0);
    store_close(s);
}
END_TEST

START_TEST(test_plan_delete_refuses_plans_in_use_and_the_default)
{
    struct store *s = open_ok("plan_delete");
    char err[ERRLEN];
    struct seen_plans sp = {0};

    ck_assert_int_eq(store_plan_set(s, "gold", "max-connections", 5, err, sizeof(err)), 0);
    ck_assert_int_eq(store_plan_set(s, "spare", "max-connections", 5, err, sizeof(err)), 0);
    ck_assert_int_eq(store_instance_create(s, "acme", "gold", err, sizeof(err)), 0);
    ck_assert_int_eq(store_plan_delete(s, "gold", err, sizeof(err)), STORE_E_INVALID);
    ck_assert_str_eq(err, "plan 'gold' is in use by 1 instance (acme): move it to another plan "
                          "first (instance set NAME plan PLAN)");
    ck_assert_int_eq(store_plan_delete(s, "default", err, sizeof(err)), STORE_E_INVALID);
    ck_assert_int_eq(store_plan_delete(s, "nope", err, sizeof(err)), STORE_E_NOT_FOUND);
    ck_assert_int_eq(store_plan_delete(s, "spare", err, sizeof(err)), 0);
    ck_assert_int_eq(store_instance_set_plan(s, "acme", "default", err, sizeof(err)), 0);
    ck_assert_int_eq(store_plan_delete(s, "gold", err, sizeof(err)), 0);
    ck_assert_int_eq(store_plan_list(s, collect_plan, &sp, err, sizeof(err)), 0);
    ck_assert_uint_eq(sp.n, 1);
    ck_assert_str_eq(sp.p[0].name, "default");
    ck_assert_int_eq(sql_int(db_path("plan_delete"), "SELECT count(*) FROM plan_limits"
                                                     " WHERE plan != 'default'"),
                     0);
    store_close(s);
}
END_TEST

START_TEST(test_instance_unset_limit)
{
    struct store *s = open_ok("unset");
    char err[ERRLEN];
    struct seen_instances si = {0};
    bool was_set = false;

    ck_assert_int_eq(store_instance_create(s, "acme", NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(store_instance_set_limit(s, "acme", "max-retained", 9, err, sizeof(err)), 0);
    ck_assert_int_eq(store_instance_set_limit(s, "acme", "max-payload", 9, err, sizeof(err)), 0);
    ck_assert_int_eq(
        store_instance_unset_limit(s, "acme", "max-retained", &was_set, err, sizeof(err)), 0);
    ck_assert(was_set);
    ck_assert_int_eq(
        store_instance_unset_limit(s, "acme", "max-retained", &was_set, err, sizeof(err)), 0);
    ck_assert(!was_set);
    ck_assert_int_eq(
        store_instance_unset_limit(s, "acme", "max-bananas", &was_set, err, sizeof(err)),
        STORE_E_INVALID);
    ck_assert_int_eq(
        store_instance_unset_limit(s, "nobody", "max-retained", &was_set, err, sizeof(err)),
        STORE_E_NOT_FOUND);
    list_instances(s, &si);
    ck_assert_str_eq(si.i[0].limits, "max-payload=9");
    store_close(s);
}
END_TEST

START_TEST(test_token_update_keeps_the_secret_and_replaces_what_is_set)
{
    struct store *s = open_ok("token_update");
    char id[STORE_TOKEN_ID_LEN + 1], secret[STORE_SECRET_LEN + 1], err[ERRLEN];
    const char *pub[] = {"a/#"}, *sub[] = {"s/+", "t"};
    struct store_token_spec spec = {
        .instance = "acme", .label = "old", .expires = 4000000000, .pub = {pub, 1}};
    struct seen_tokens before = {0}, after = {0};

    ck_assert_int_eq(store_instance_create(s, "acme", NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(store_token_create(s, &spec, id, secret, err, sizeof(err)), 0);
    list_tokens(s, "acme", &before);

    struct store_token_patch p = {.instance = "acme",
                                  .id = id,
                                  .set_label = true,
                                  .label = "new",
                                  .set_client_id = true,
                                  .client_id = "dev",
                                  .set_allow_action = true,
                                  .allow_action = true};
    p.set_filters[0] = true; /* cleared */
    p.set_filters[1] = true;
    p.filters[1] = (struct store_filters){sub, 2};
    ck_assert_int_eq(store_token_update(s, &p, err, sizeof(err)), 0);
    list_tokens(s, "acme", &after);
    ck_assert_uint_eq(after.n, 1);
    ck_assert_str_eq(after.t[0].label, "new");
    ck_assert_str_eq(after.t[0].client_id, "dev");
    ck_assert(after.t[0].allow_action);
    ck_assert_int_eq(after.t[0].expires, 4000000000); /* not set: kept */
    ck_assert_str_eq(after.t[0].filters[0], "");
    ck_assert_str_eq(after.t[0].filters[1], "s/+ t");
    ck_assert_mem_eq(after.t[0].hash, before.t[0].hash, STORE_HASH_LEN);

    struct store_token_patch key = {
        .instance = "acme", .id = id, .set_expires = true, .set_client_id = true};
    ck_assert_int_eq(store_token_update(s, &key, err, sizeof(err)), 0);
    list_tokens(s, "acme", &after);
    ck_assert_int_eq(after.t[0].expires, 0);
    ck_assert_str_eq(after.t[0].client_id, "(any)");

    key.id = "0123456789abcdef";
    ck_assert_int_eq(store_token_update(s, &key, err, sizeof(err)), STORE_E_NOT_FOUND);
    key.id = id;
    key.instance = "nobody";
    ck_assert_int_eq(store_token_update(s, &key, err, sizeof(err)), STORE_E_NOT_FOUND);
    key.instance = "acme";
    ck_assert_int_eq(store_token_revoke(s, "acme", id, err, sizeof(err)), 0);
    ck_assert_int_eq(store_token_update(s, &key, err, sizeof(err)), STORE_E_INVALID);
    store_close(s);
}
END_TEST

START_TEST(test_revoke_hides_the_token_from_the_broker_only)
{
    struct store *s = open_ok("revoke");
    char a[STORE_TOKEN_ID_LEN + 1], b[STORE_TOKEN_ID_LEN + 1], secret[STORE_SECRET_LEN + 1];
    char other[STORE_TOKEN_ID_LEN + 1], err[ERRLEN];
    struct seen_tokens st;
    struct seen_instances si;

    ck_assert_int_eq(store_instance_create(s, "acme", NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(store_instance_create(s, "globex", NULL, err, sizeof(err)), 0);
    make_token(s, "acme", a, secret);
    make_token(s, "acme", b, secret);
    make_token(s, "globex", other, secret);

    ck_assert_int_eq(store_token_revoke(s, "acme", a, err, sizeof(err)), 0);
    ck_assert_int_eq(store_token_revoke(s, "acme", a, err, sizeof(err)), 0); /* twice is fine */

    list_tokens(s, "acme", &st); /* the listing keeps it, marked */
    ck_assert_uint_eq(st.n, 2);
    ck_assert_str_eq(st.t[0].id, a);
    ck_assert(st.t[0].revoked);
    ck_assert(!st.t[1].revoked);

    all_tokens(s, &st); /* the broker does not see it */
    ck_assert_uint_eq(st.n, 2);
    ck_assert_str_eq(st.t[0].id, b);
    ck_assert_str_eq(st.t[1].id, other);
    ck_assert_str_eq(st.t[1].instance, "globex");

    list_instances(s, &si);
    ck_assert_uint_eq(si.i[0].tokens, 1); /* acme: revoked ones do not count */
    ck_assert_uint_eq(si.i[1].tokens, 1);

    /* a token of another instance is not this instance's */
    ck_assert_int_eq(store_token_revoke(s, "acme", other, err, sizeof(err)), STORE_E_NOT_FOUND);
    char want[ERRLEN];
    snprintf(want, sizeof(want), "no token '%s' in instance 'acme'", other);
    ck_assert_str_eq(err, want);
    ck_assert_int_eq(store_token_revoke(s, "acme", "0123456789abcdef", err, sizeof(err)),
                     STORE_E_NOT_FOUND);
    ck_assert_str_eq(err, "no token '0123456789abcdef' in instance 'acme'");
    ck_assert_int_eq(store_token_revoke(s, "nobody", a, err, sizeof(err)), STORE_E_NOT_FOUND);
    ck_assert_str_eq(err, "no instance 'nobody'");
    all_tokens(s, &st);
    ck_assert_uint_eq(st.n, 2);
    store_close(s);
}
END_TEST

START_TEST(test_deleting_an_instance_deletes_its_tokens)
{
    struct store *s = open_ok("cascade");
    const char *pub[] = {"x/#"};
    struct store_token_spec spec = {.instance = "acme", .pub = {pub, 1}};
    char id[STORE_TOKEN_ID_LEN + 1], secret[STORE_SECRET_LEN + 1], err[ERRLEN];
    struct seen_tokens st;

    ck_assert_int_eq(store_instance_create(s, "acme", NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(store_instance_create(s, "globex", NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(store_instance_set_limit(s, "acme", "max-retained", 1, err, sizeof(err)), 0);
    ck_assert_int_eq(store_token_create(s, &spec, id, secret, err, sizeof(err)), 0);
    make_token(s, "globex", id, secret);
    ck_assert_int_eq(store_instance_delete(s, "acme", err, sizeof(err)), 0);
    all_tokens(s, &st);
    ck_assert_uint_eq(st.n, 1);
    ck_assert_str_eq(st.t[0].instance, "globex");
    store_close(s);
    /* nothing of it is left behind */
    ck_assert_int_eq(sql_int(db_path("cascade"), "SELECT count(*) FROM token_filters"), 0);
    ck_assert_int_eq(sql_int(db_path("cascade"), "SELECT count(*) FROM instance_limits"), 0);
    ck_assert_int_eq(
        sql_int(db_path("cascade"), "SELECT count(*) FROM tokens WHERE instance = 'acme'"), 0);
    /* and the name is free again */
    s = open_ok("cascade");
    ck_assert_int_eq(store_instance_create(s, "acme", NULL, err, sizeof(err)), 0);
    list_tokens(s, "acme", &st);
    ck_assert_uint_eq(st.n, 0);
    store_close(s);
}
END_TEST

START_TEST(test_data_version_follows_other_connections)
{
    struct store *watcher = open_ok("data_version");
    struct store *ctl = open_ok("data_version");
    char err[ERRLEN];
    int64_t v1, v2;

    v1 = store_data_version(watcher);
    ck_assert_int_ge(v1, 0);
    ck_assert_int_eq(store_data_version(watcher), v1); /* nothing happened */
    ck_assert_int_eq(store_instance_create(ctl, "acme", NULL, err, sizeof(err)), 0);
    v2 = store_data_version(watcher);
    ck_assert_int_ne(v2, v1);
    ck_assert_int_eq(store_data_version(watcher), v2);
    ck_assert_int_eq(store_plan_set(ctl, "gold", "max-payload", 10, err, sizeof(err)), 0);
    ck_assert_int_ne(store_data_version(watcher), v2);
    store_close(ctl);
    store_close(watcher);
}
END_TEST

START_TEST(test_a_listing_callback_may_use_the_store)
{
    /* The broker's catalog does not, but nothing forbids it: the rows are copies. */
    struct store *s = open_ok("reentrant");
    char err[ERRLEN];
    struct seen_instances si;

    ck_assert_int_eq(store_instance_create(s, "a", NULL, err, sizeof(err)), 0);
    ck_assert_int_eq(store_instance_create(s, "b", NULL, err, sizeof(err)), 0);
    list_instances(s, &si);
    for (size_t i = 0; i < si.n; i++) {
        struct seen_instances one = {0};
        ck_assert_int_eq(
            store_instance_get(s, si.i[i].name, collect_instance, &one, err, sizeof(err)), 0);
        ck_assert_str_eq(one.i[0].name, si.i[i].name);
    }
    store_close(s);
}
END_TEST

static Suite *store_suite(void)
{
    Suite *s = suite_create("store");
    TCase *tc = tcase_create("open");
    tcase_add_test(tc, test_open_creates_the_schema_in_wal_mode);
    tcase_add_test(tc, test_open_creates_the_default_plan);
    tcase_add_test(tc, test_reopening_keeps_a_changed_default_plan);
    tcase_add_test(tc, test_a_deleted_default_plan_is_made_again);
    tcase_add_test(tc, test_a_newer_schema_version_is_refused);
    tcase_add_test(tc, test_version_1_database_is_migrated);
    tcase_add_test(tc, test_version_3_database_is_migrated);
    tcase_add_test(tc, test_version_4_database_is_migrated_to_admin_keys);
    tcase_add_test(tc, test_a_file_that_is_not_sqlite_is_refused);
    tcase_add_test(tc, test_a_missing_directory_is_refused);
    tcase_add_test(tc, test_a_directory_is_refused);
    tcase_add_test(tc, test_errors_without_a_buffer_are_safe);
    tcase_add_test(tc, test_data_version_follows_other_connections);
    suite_add_tcase(s, tc);

    tc = tcase_create("names");
    tcase_add_test(tc, test_name_rules);
    suite_add_tcase(s, tc);

    tc = tcase_create("instances and limits");
    tcase_add_test(tc, test_instances_create_list_get_delete);
    tcase_add_test(tc, test_instance_name_taken);
    tcase_add_test(tc, test_instance_needs_a_known_plan_and_good_names);
    tcase_add_test(tc, test_plan_limits_set_and_replace);
    tcase_add_test(tc, test_limits_refuse_unknown_names_and_values_out_of_range);
    tcase_add_test(tc, test_instance_overrides);
    tcase_add_test(tc, test_a_listing_callback_may_use_the_store);
    suite_add_tcase(s, tc);

    tc = tcase_create("admin keys");
    tcase_add_test(tc, test_admin_keys_create_list_revoke);
    suite_add_tcase(s, tc);

    tc = tcase_create("tokens");
    tcase_add_test(tc, test_token_created_with_filters_reads_back);
    tcase_add_test(tc, test_a_key_has_no_expiry_label_or_client_id);
    tcase_add_test(tc, test_the_secret_is_never_stored);
    tcase_add_test(tc, test_tokens_differ_and_list_oldest_first);
    tcase_add_test(tc, test_token_for_an_unknown_instance);
    tcase_add_test(tc, test_revoke_hides_the_token_from_the_broker_only);
    tcase_add_test(tc, test_deleting_an_instance_deletes_its_tokens);
    tcase_add_test(tc, test_token_update_keeps_the_secret_and_replaces_what_is_set);
    suite_add_tcase(s, tc);

    tc = tcase_create("issue 15: init, plan delete, unset");
    tcase_add_test(tc, test_open_existing_creates_nothing);
    tcase_add_test(tc, test_plan_delete_refuses_plans_in_use_and_the_default);
    tcase_add_test(tc, test_instance_unset_limit);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr;
    int failed;

    snprintf(test_dir, sizeof(test_dir), "/tmp/aviary-test-store-XXXXXX");
    if (mkdtemp(test_dir) == NULL) {
        perror("mkdtemp");
        return EXIT_FAILURE;
    }
    sr = srunner_create(store_suite());
    srunner_set_tap(sr, "-"); /* one TAP line per test on stdout, for make check */
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    check_tap_remove_dir(test_dir);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
