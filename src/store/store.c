/*
 * store — the SQLite database of instances, plans and tokens (see store.h).
 *
 * Every public function prepares its statements, runs them and finalises them
 * before it returns, so no statement ever keeps a read transaction (and with
 * it an old WAL snapshot) open between calls. Writes that read first run in
 * BEGIN IMMEDIATE transactions: they take the write lock at once, so the
 * busy timeout applies, and no check can be invalidated before the write.
 *
 * Listings are one SELECT with the child rows LEFT JOINed and ordered by the
 * parent, so a listing is one consistent snapshot; rows are gathered into a
 * small accumulator per parent, which owns copies of its strings, and handed
 * to the callback when the next parent begins.
 */
#include "store/store.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <sqlite3.h>

#include "util/error.h"
#include "util/hex.h"
#include "util/limits.h"
#include "util/log.h"
#include "util/secret.h"

/* How long a statement waits for another connection's lock before failing. */
#define STORE_BUSY_TIMEOUT_MS 5000
#define STORE_SECRET_BYTES 32
#define STORE_TOKEN_ID_BYTES (STORE_TOKEN_ID_LEN / 2)
/* Drawing a token id that exists already twice in a row means the generator is broken. */
#define STORE_TOKEN_ID_ATTEMPTS 3

_Static_assert(STORE_HASH_LEN == SECRET_HASH_LEN, "the column holds secret_hash()'s output");

struct store {
    sqlite3 *db;
    char *path;
    bool opening;               /* within store_open: errors say "cannot open" */
    bool image;                 /* in memory, from store_open_image(): no WAL, no file */
    int last_rc;                /* SQLite's extended code of the last failure */
    sqlite3_stmt *data_version; /* kept prepared: the watcher asks every 500 ms */
};

/*
 * The schema, one step per version: step i takes user_version i to i + 1.
 * Steps are only ever appended; a released step is never edited.
 */
static const char *const migrations[] = {
    /* 1: plans, instances, tokens and their filters */
    "CREATE TABLE plans ("
    "  name TEXT PRIMARY KEY NOT NULL"
    ");"
    "CREATE TABLE plan_limits ("
    "  plan TEXT NOT NULL REFERENCES plans(name) ON DELETE CASCADE,"
    "  name TEXT NOT NULL,"
    "  value INTEGER NOT NULL CHECK (value >= 0),"
    "  PRIMARY KEY (plan, name)"
    ");"
    "CREATE TABLE instances ("
    "  name TEXT PRIMARY KEY NOT NULL,"
    "  plan TEXT NOT NULL REFERENCES plans(name),"
    "  created INTEGER NOT NULL"
    ");"
    "CREATE INDEX instances_plan ON instances(plan);"
    "CREATE TABLE instance_limits ("
    "  instance TEXT NOT NULL REFERENCES instances(name) ON DELETE CASCADE,"
    "  name TEXT NOT NULL,"
    "  value INTEGER NOT NULL CHECK (value >= 0),"
    "  PRIMARY KEY (instance, name)"
    ");"
    "CREATE TABLE tokens ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  instance TEXT NOT NULL REFERENCES instances(name) ON DELETE CASCADE,"
    "  label TEXT NOT NULL DEFAULT '',"
    "  secret_hash BLOB NOT NULL UNIQUE CHECK (length(secret_hash) = 32),"
    "  created INTEGER NOT NULL,"
    "  expires INTEGER," /* NULL: a key, which never expires */
    "  client_id TEXT,"  /* NULL: any client id */
    "  revoked INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE INDEX tokens_instance ON tokens(instance);"
    "CREATE TABLE token_filters ("
    "  token TEXT NOT NULL REFERENCES tokens(id) ON DELETE CASCADE,"
    "  kind TEXT NOT NULL CHECK (kind IN ('pub', 'sub', 'deny-pub', 'deny-sub')),"
    "  filter TEXT NOT NULL,"
    "  position INTEGER NOT NULL,"
    "  PRIMARY KEY (token, kind, position)"
    ");",
    /* 2: a random serial per instance, so that a deleted and re-created name is told apart */
    "ALTER TABLE instances ADD COLUMN serial INTEGER NOT NULL DEFAULT 0;",
    /*
     * 3: what the broker keeps across restarts (store/keep.c), keyed by the
     * instance's serial (0: desktop mode's instance, so a cloud instance from
     * before this step gets a serial of its own). Messages are rows of their
     * own that retained topics, queues and wills refer to.
     */
    "UPDATE instances SET serial = (random() & 0x3fffffffffffffff) + 1 WHERE serial = 0;"
    "CREATE TABLE kept_messages ("
    "  id INTEGER PRIMARY KEY,"
    "  topic TEXT NOT NULL,"
    "  payload BLOB NOT NULL,"
    "  props BLOB NOT NULL,"
    "  qos INTEGER NOT NULL,"
    "  retain INTEGER NOT NULL,"
    "  expiry INTEGER NOT NULL," /* seconds; 0: never */
    "  created_ms INTEGER NOT NULL"
    ");"
    "CREATE TABLE kept_retained ("
    "  instance INTEGER NOT NULL,"
    "  topic TEXT NOT NULL,"
    "  message INTEGER NOT NULL,"
    "  PRIMARY KEY (instance, topic)"
    ") WITHOUT ROWID;"
    "CREATE TABLE kept_sessions ("
    "  id INTEGER PRIMARY KEY,"
    "  instance INTEGER NOT NULL,"
    "  client_id TEXT NOT NULL,"
    "  token TEXT NOT NULL,"
    "  expiry INTEGER NOT NULL,"
    "  offline_since_ms INTEGER NOT NULL," /* 0: online when last written */
    "  will_message INTEGER,"
    "  will_due_ms INTEGER"
    ");"
    "CREATE INDEX kept_sessions_instance ON kept_sessions(instance);"
    "CREATE TABLE kept_subscriptions ("
    "  session INTEGER NOT NULL,"
    "  filter TEXT NOT NULL,"
    "  options INTEGER NOT NULL,"
    "  leading_slash INTEGER NOT NULL,"
    "  sub_id INTEGER NOT NULL,"
    "  PRIMARY KEY (session, filter)"
    ") WITHOUT ROWID;"
    "CREATE TABLE kept_outgoing ("
    "  session INTEGER NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  message INTEGER," /* NULL: a QoS 2 message past PUBREC */
    "  qos INTEGER NOT NULL,"
    "  state INTEGER NOT NULL,"
    "  packet_id INTEGER NOT NULL,"
    "  flags INTEGER NOT NULL,"
    "  sub_ids BLOB NOT NULL," /* 4 bytes each, little-endian */
    "  PRIMARY KEY (session, seq)"
    ") WITHOUT ROWID;"
    "CREATE TABLE kept_qos2 ("
    "  session INTEGER NOT NULL,"
    "  packet_id INTEGER NOT NULL,"
    "  PRIMARY KEY (session, packet_id)"
    ") WITHOUT ROWID;",
    /* 4: a token may close its instance's clients through $action (aviaryctl --allow-action) */
    "ALTER TABLE tokens ADD COLUMN allow_action INTEGER NOT NULL DEFAULT 0;",
    /* 5: the keys of the management API (/admin/), hashed like token secrets */
    "CREATE TABLE admin_keys ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  label TEXT NOT NULL DEFAULT '',"
    "  secret_hash BLOB NOT NULL UNIQUE CHECK (length(secret_hash) = 32),"
    "  created INTEGER NOT NULL,"
    "  revoked INTEGER NOT NULL DEFAULT 0"
    ");",
};

#define MIGRATION_COUNT ((int64_t)(sizeof(migrations) / sizeof(migrations[0])))
_Static_assert(sizeof(migrations) / sizeof(migrations[0]) == STORE_SCHEMA_VERSION,
               "STORE_SCHEMA_VERSION must count the migrations");

/* The plan every instance gets unless told otherwise; other limits come from aviary.conf. */
static const struct store_limit default_plan_limits[] = {
    {"max-connections", 100}, {"max-messages-per-second", 100},
    {"max-retained", 1000},   {"idle-timeout", 3600},
    {"max-sessions", 1000},   {"max-instance-bytes", 64ull * 1024 * 1024},
};

/* The token_filters kinds, in the order of struct store_token's lists. */
static const char *const filter_kinds[] = {"pub", "sub", "deny-pub", "deny-sub"};
#define FILTER_KINDS 4

/* ---- errors ------------------------------------------------------------- */

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Every error leaves through here: util/error's text, with the STORE_E_* code callers expect. */
static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    error_vset(err, errlen, fmt, ap);
    va_end(ap);
    return code;
}

/* A failed SQLite call `rc`, in words. */
static int db_fail(struct store *s, int rc, char *err, size_t errlen)
{
    s->last_rc = rc;
    if ((rc & 0xff) == SQLITE_NOMEM)
        return fail(err, errlen, STORE_E_NOMEM, "out of memory");
    if (s->opening)
        return fail(err, errlen, STORE_E_DB, "cannot open database %s: %s", s->path,
                    sqlite3_errmsg(s->db));
    return fail(err, errlen, STORE_E_DB, "database %s: %s", s->path, sqlite3_errmsg(s->db));
}

static int nomem(char *err, size_t errlen)
{
    return fail(err, errlen, STORE_E_NOMEM, "out of memory");
}

#define SHOWN_SIZE 80

/* ---- statements --------------------------------------------------------- */

/*
 * Prepare `sql` and bind one parameter per character of `types`, in order:
 * 's' a string (NULL binds NULL), 'i' an int64_t, 'z' an int64_t that binds
 * NULL when it is 0, 'h' STORE_HASH_LEN bytes. Strings and bytes must live
 * until the statement is finalised.
 */
static int stmt_vopen(struct store *s, sqlite3_stmt **out, char *err, size_t errlen,
                      const char *sql, const char *types, va_list ap)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);

    for (int i = 0; rc == SQLITE_OK && types[i] != '\0'; i++) {
        int64_t n;
        switch (types[i]) {
        case 's':
            rc = sqlite3_bind_text(st, i + 1, va_arg(ap, const char *), -1, SQLITE_STATIC);
            break;
        case 'i':
            rc = sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t));
            break;
        case 'z':
            n = va_arg(ap, int64_t);
            rc = n != 0 ? sqlite3_bind_int64(st, i + 1, n) : sqlite3_bind_null(st, i + 1);
            break;
        case 'h':
            rc = sqlite3_bind_blob(st, i + 1, va_arg(ap, const uint8_t *), STORE_HASH_LEN,
                                   SQLITE_STATIC);
            break;
        default:
            rc = SQLITE_MISUSE;
        }
    }
    if (rc != SQLITE_OK) {
        int code = db_fail(s, rc, err, errlen);
        sqlite3_finalize(st);
        return code;
    }
    *out = st;
    return 0;
}

static int stmt_open(struct store *s, sqlite3_stmt **out, char *err, size_t errlen, const char *sql,
                     const char *types, ...)
{
    va_list ap;
    int rc;

    va_start(ap, types);
    rc = stmt_vopen(s, out, err, errlen, sql, types, ap);
    va_end(ap);
    return rc;
}

/*
 * Step `st` to its end and finalise it; the first row's first column goes to
 * *first unless that is NULL. Returns 1 when there was a row, 0 when there was
 * none, or a STORE_E_* code.
 */
static int stmt_finish(struct store *s, sqlite3_stmt *st, int64_t *first, char *err, size_t errlen)
{
    int rows = 0, rc, step;

    while ((step = sqlite3_step(st)) == SQLITE_ROW)
        if (rows++ == 0 && first != NULL)
            *first = sqlite3_column_int64(st, 0);
    rc = step == SQLITE_DONE ? rows > 0 : db_fail(s, step, err, errlen);
    sqlite3_finalize(st);
    return rc;
}

/*
 * Run a statement to its end. Returns 1 when it gave a row (what the "SELECT
 * 1 ..." existence checks ask), 0 when it gave none, or a STORE_E_* code.
 */
static int run(struct store *s, char *err, size_t errlen, const char *sql, const char *types, ...)
{
    sqlite3_stmt *st;
    va_list ap;
    int rc;

    va_start(ap, types);
    rc = stmt_vopen(s, &st, err, errlen, sql, types, ap);
    va_end(ap);
    return rc < 0 ? rc : stmt_finish(s, st, NULL, err, errlen);
}

/* The first column of the first row as an integer (0 when there is no row). */
static int query_int(struct store *s, const char *sql, int64_t *out, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    int rc = stmt_open(s, &st, err, errlen, sql, "");

    *out = 0;
    if (rc == 0)
        rc = stmt_finish(s, st, out, err, errlen);
    return rc < 0 ? rc : 0;
}

static int tx_begin(struct store *s, char *err, size_t errlen)
{
    return run(s, err, errlen, "BEGIN IMMEDIATE", "");
}

static int tx_commit(struct store *s, char *err, size_t errlen)
{
    return run(s, err, errlen, "COMMIT", "");
}

/* Undo the open transaction, if any (a failed COMMIT may have ended it already). */
static void tx_rollback(struct store *s)
{
    if (!sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

/* End tx_begin()'s transaction: commit when `rc` is 0, else (or when COMMIT fails) roll back. */
static int tx_end(struct store *s, int rc, char *err, size_t errlen)
{
    if (rc == 0)
        rc = tx_commit(s, err, errlen);
    if (rc < 0)
        tx_rollback(s);
    return rc;
}

int store_read_begin(struct store *s, char *err, size_t errlen)
{
    return run(s, err, errlen, "BEGIN DEFERRED", "");
}

void store_read_end(struct store *s)
{
    tx_rollback(s); /* nothing was written: ending the read is all there is to do */
}

static int instance_exists(struct store *s, const char *name, char *err, size_t errlen)
{
    return run(s, err, errlen, "SELECT 1 FROM instances WHERE name = ?", "s", name);
}

static int no_instance(const char *name, char *err, size_t errlen)
{
    char buf[SHOWN_SIZE];
    return fail(err, errlen, STORE_E_NOT_FOUND, "no instance '%s'",
                log_escape_str(name, buf, sizeof(buf)));
}

/* 0 when instance `name` exists, else "no instance" (STORE_E_NOT_FOUND) or the failure. */
static int instance_needed(struct store *s, const char *name, char *err, size_t errlen)
{
    int rc = instance_exists(s, name, err, errlen);

    if (rc == 0)
        return no_instance(name, err, errlen);
    return rc < 0 ? rc : 0;
}

/* ---- opening ------------------------------------------------------------ */

static int newer_schema(struct store *s, int64_t version, char *err, size_t errlen)
{
    return fail(err, errlen, STORE_E_DB,
                "cannot open database %s: its schema version %lld is newer than this "
                "program's (%lld); use a newer aviary",
                s->path, (long long)version, (long long)MIGRATION_COUNT);
}

/*
 * Bring the schema to MIGRATION_COUNT, one step per transaction. The version
 * is read again inside each transaction, so two programs opening a new
 * database at once apply each step once.
 */
static int store_migrate(struct store *s, char *err, size_t errlen)
{
    int64_t version;
    char sql[64];
    int rc;

    rc = query_int(s, "PRAGMA user_version", &version, err, errlen);
    if (rc < 0)
        return rc;
    if (version > MIGRATION_COUNT)
        return newer_schema(s, version, err, errlen);
    while (version < MIGRATION_COUNT) {
        rc = tx_begin(s, err, errlen);
        if (rc < 0)
            return rc;
        rc = query_int(s, "PRAGMA user_version", &version, err, errlen);
        if (rc < 0)
            goto out;
        if (version > MIGRATION_COUNT) {
            rc = newer_schema(s, version, err, errlen);
            goto out;
        }
        if (version < 0) {
            rc = fail(err, errlen, STORE_E_DB, "cannot open database %s: schema version %lld",
                      s->path, (long long)version);
            goto out;
        }
        if (version < MIGRATION_COUNT) {
            int step = sqlite3_exec(s->db, migrations[version], NULL, NULL, NULL);
            if (step != SQLITE_OK) {
                rc = db_fail(s, step, err, errlen);
                goto out;
            }
            version++;
            /* PRAGMA takes no parameters; `version` is our own small number. */
            snprintf(sql, sizeof(sql), "PRAGMA user_version = %lld", (long long)version);
            rc = run(s, err, errlen, sql, "");
            if (rc < 0)
                goto out;
        }
        rc = tx_commit(s, err, errlen);
        if (rc < 0)
            goto out;
    }
    return 0;
out:
    tx_rollback(s);
    return rc;
}

/* Create the plan "default" with its limits when it is missing. */
static int store_default_plan(struct store *s, char *err, size_t errlen)
{
    int rc = run(s, err, errlen, "SELECT 1 FROM plans WHERE name = ?", "s", STORE_DEFAULT_PLAN);

    if (rc != 0)
        return rc < 0 ? rc : 0;
    rc = tx_begin(s, err, errlen);
    if (rc < 0)
        return rc;
    rc = run(s, err, errlen, "INSERT OR IGNORE INTO plans(name) VALUES (?)", "s",
             STORE_DEFAULT_PLAN);
    if (rc < 0)
        goto out;
    /* Another program may have created it since the check: then its limits stand. */
    if (sqlite3_changes(s->db) == 1) {
        for (size_t i = 0; i < sizeof(default_plan_limits) / sizeof(default_plan_limits[0]); i++) {
            /* OR IGNORE: a plan deleted without foreign keys may have left its limits */
            rc = run(s, err, errlen,
                     "INSERT OR IGNORE INTO plan_limits(plan, name, value) VALUES (?, ?, ?)", "ssi",
                     STORE_DEFAULT_PLAN, default_plan_limits[i].name,
                     (int64_t)default_plan_limits[i].value);
            if (rc < 0)
                goto out;
        }
    }
out:
    return tx_end(s, rc, err, errlen);
}

static int store_setup(struct store *s, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    int rc, step;

    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, STORE_BUSY_TIMEOUT_MS);
    /* Not a database, or a directory, shows here: opening itself reads nothing. */
    rc = run(s, err, errlen, "PRAGMA foreign_keys = ON", "");
    if (rc < 0)
        return rc;
    if (s->image)
        goto migrate;
    rc = stmt_open(s, &st, err, errlen, "PRAGMA journal_mode = WAL", "");
    if (rc < 0)
        return rc;
    step = sqlite3_step(st);
    if (step != SQLITE_ROW) {
        rc = db_fail(s, step, err, errlen);
    } else {
        const char *mode = (const char *)sqlite3_column_text(st, 0);
        /* An in-memory database (tests) has no WAL and needs none. */
        if (mode == NULL || (strcmp(mode, "wal") != 0 && strcmp(mode, "memory") != 0))
            rc = fail(err, errlen, STORE_E_DB,
                      "cannot open database %s: cannot switch it to WAL mode (it stays in "
                      "'%s' mode)",
                      s->path, mode ? mode : "unknown");
    }
    sqlite3_finalize(st);
    if (rc < 0)
        return rc;
migrate:
    rc = store_migrate(s, err, errlen);
    if (rc < 0)
        return rc;
    return store_default_plan(s, err, errlen);
}

/*
 * The database holds token hashes (and, in time, clients' messages): a new
 * one is made readable by its owner only, whatever the umask. SQLite gives
 * its -wal and -shm files the database file's mode. An existing file is
 * left as it is, and any failure here is SQLite's to report when it opens.
 */
static void store_create_private(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd >= 0)
        close(fd);
}

/* How long to wait between two tries of a set-up that found the new database locked. */
#define STORE_SETUP_RETRY_MS 20

/*
 * store_setup(), tried again while it finds the database locked: processes
 * that create one new database at once can meet "database is locked" where
 * SQLite's busy handler does not wait for them (while one of them switches
 * the file to WAL). Every step of the set-up can run twice. Waits for at most
 * the busy timeout.
 */
static int store_setup_retrying(struct store *s, char *err, size_t errlen)
{
    for (unsigned waited = 0;; waited += STORE_SETUP_RETRY_MS) {
        s->last_rc = SQLITE_OK;
        int rc = store_setup(s, err, errlen);
        if (rc >= 0 || (s->last_rc & 0xff) != SQLITE_BUSY || waited >= STORE_BUSY_TIMEOUT_MS)
            return rc;
        if (sqlite3_get_autocommit(s->db) == 0)
            sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        struct timespec pause = {0, STORE_SETUP_RETRY_MS * 1000000L};
        nanosleep(&pause, NULL);
    }
}

/* store_open() and store_open_existing(): `create` says whether a missing file is made. */
static struct store *store_open_mode(const char *path, bool create, int *code, char *err,
                                     size_t errlen)
{
    struct store *s = calloc(1, sizeof(*s));
    int rc, dummy;

    code = code != NULL ? code : &dummy;
    *code = STORE_E_DB;
    if (s == NULL || (s->path = strdup(path)) == NULL) {
        *code = fail(err, errlen, STORE_E_NOMEM, "cannot open database %s: out of memory", path);
        free(s);
        return NULL;
    }
    s->opening = true;
    if (!create && access(path, F_OK) != 0) {
        *code = fail(err, errlen, STORE_E_NOT_FOUND, "no database at %s", path);
        goto fail;
    }
    if (create)
        store_create_private(path);
    rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0),
                         NULL);
    if (rc != SQLITE_OK) {
        fail(err, errlen, STORE_E_DB, "cannot open database %s: %s", path,
             s->db != NULL ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        goto fail;
    }
    if ((rc = store_setup_retrying(s, err, errlen)) < 0) {
        *code = rc;
        goto fail;
    }
    s->opening = false;
    *code = 0;
    return s;
fail:
    store_close(s);
    return NULL;
}

struct store *store_open(const char *path, char *err, size_t errlen)
{
    return store_open_mode(path, true, NULL, err, errlen);
}

struct store *store_open_existing(const char *path, int *code, char *err, size_t errlen)
{
    return store_open_mode(path, false, code, err, errlen);
}

/*
 * Hand `image` to SQLite as the connection's main database (a copy SQLite
 * owns); an empty one too, so that the database is SQLite's in-memory file
 * (memdb), which sqlite3_serialize() can read without the dbpage table.
 */
static int store_deserialize(struct store *s, const void *image, size_t len, char *err,
                             size_t errlen)
{
    unsigned char *copy = sqlite3_malloc64(len > 0 ? len : 1);
    int rc;

    if (!copy)
        return nomem(err, errlen);
    if (len > 0)
        memcpy(copy, image, len);
    rc = sqlite3_deserialize(s->db, "main", copy, (sqlite3_int64)len,
                             (sqlite3_int64)(len > 0 ? len : 1),
                             SQLITE_DESERIALIZE_FREEONCLOSE | SQLITE_DESERIALIZE_RESIZEABLE);
    return rc == SQLITE_OK ? 0 : db_fail(s, rc, err, errlen);
}

struct store *store_open_image(const char *name, const void *image, size_t len, char *err,
                               size_t errlen)
{
    struct store *s = calloc(1, sizeof(*s));
    int rc;

    if (s == NULL || (s->path = strdup(name)) == NULL) {
        fail(err, errlen, STORE_E_NOMEM, "cannot open database %s: out of memory", name);
        free(s);
        return NULL;
    }
    s->opening = s->image = true;
    rc = sqlite3_open_v2(":memory:", &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc != SQLITE_OK) {
        fail(err, errlen, STORE_E_DB, "cannot open database %s: %s", name,
             s->db != NULL ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        goto fail;
    }
    if (store_deserialize(s, image, len, err, errlen) < 0)
        goto fail;
    if (store_setup(s, err, errlen) < 0)
        goto fail;
    s->opening = false;
    return s;
fail:
    store_close(s);
    return NULL;
}

int store_serialize(struct store *s, unsigned char **image, size_t *len, char *err, size_t errlen)
{
    sqlite3_int64 size = 0;
    unsigned char *data = sqlite3_serialize(s->db, "main", &size, 0);

    *image = NULL;
    *len = 0;
    if (data == NULL)
        return fail(err, errlen, STORE_E_NOMEM, "database %s: cannot serialize it: out of memory",
                    s->path);
    *image = malloc(size > 0 ? (size_t)size : 1);
    if (*image == NULL) {
        sqlite3_free(data);
        return nomem(err, errlen);
    }
    memcpy(*image, data, (size_t)size);
    sqlite3_free(data);
    *len = (size_t)size;
    /* The file format's read and write versions: 1 (rollback journal), as a deserialized
       database must be; a file in WAL mode says 2. */
    if (*len >= 20)
        (*image)[18] = (*image)[19] = 1;
    return 0;
}

/* Copy the database of `from` into `to`'s, replacing it (SQLite's online backup). */
static int store_copy_into(struct store *to, struct store *from, char *err, size_t errlen)
{
    sqlite3_backup *b = sqlite3_backup_init(to->db, "main", from->db, "main");
    int rc;

    if (!b)
        return db_fail(to, sqlite3_errcode(to->db), err, errlen);
    rc = sqlite3_backup_step(b, -1);
    int fin = sqlite3_backup_finish(b);
    if (rc != SQLITE_DONE)
        return db_fail(from, rc, err, errlen);
    return fin == SQLITE_OK ? 0 : db_fail(to, fin, err, errlen);
}

struct store *store_open_copy(const char *path, char *err, size_t errlen)
{
    struct store *from = store_open_existing(path, NULL, err, errlen);
    struct store *to = from ? store_open_image(path, NULL, 0, err, errlen) : NULL, *copy = NULL;
    unsigned char *image = NULL;
    size_t len;

    /* Through an image: the copy's header still says WAL, which store_serialize() mends. */
    if (to && store_copy_into(to, from, err, errlen) == 0 &&
        store_serialize(to, &image, &len, err, errlen) == 0)
        copy = store_open_image(path, image, len, err, errlen);
    free(image);
    store_close(to);
    store_close(from);
    return copy;
}

/* store_mirror_instances(): one instance of the catalog into the mirror table. */
struct mirror_state {
    struct store *to;
    int rc;
    char *err;
    size_t errlen;
};

static void mirror_instance(void *arg, const struct store_instance *inst)
{
    struct mirror_state *m = arg;

    if (m->rc == 0)
        m->rc = run(m->to, m->err, m->errlen,
                    "INSERT INTO temp.mirror(name, plan, created, serial) VALUES (?, ?, ?, ?)",
                    "ssii", inst->name, inst->plan, inst->created, inst->serial);
}

int store_mirror_instances(struct store *s, struct store *catalog, char *err, size_t errlen)
{
    struct mirror_state m = {s, 0, err, errlen};
    int rc = run(s, err, errlen,
                 "CREATE TEMP TABLE IF NOT EXISTS mirror (name TEXT PRIMARY KEY, plan TEXT, "
                 "created INTEGER, serial INTEGER)",
                 "");

    if (rc < 0 || (rc = tx_begin(s, err, errlen)) < 0)
        return rc;
    rc = run(s, err, errlen, "DELETE FROM temp.mirror", "");
    if (rc == 0)
        rc = store_instance_list(catalog, mirror_instance, &m, err, errlen);
    rc = rc < 0 ? rc : m.rc;
    /* Deleting cascades to the instance's own tokens and limits, which a cluster ignores. */
    if (rc == 0)
        rc = run(s, err, errlen,
                 "DELETE FROM instances WHERE NOT EXISTS (SELECT 1 FROM temp.mirror m "
                 "WHERE m.name = instances.name AND m.serial = instances.serial)",
                 "");
    if (rc == 0)
        rc = run(s, err, errlen, "INSERT OR IGNORE INTO plans(name) SELECT plan FROM temp.mirror",
                 "");
    if (rc == 0)
        rc = run(s, err, errlen,
                 "INSERT OR IGNORE INTO instances(name, plan, created, serial) "
                 "SELECT name, plan, created, serial FROM temp.mirror",
                 "");
    return tx_end(s, rc, err, errlen);
}

/* What the broker keeps (kept_*), all of it; the catalog's tables stay. */
static const char *const kept_tables_clear =
    "DELETE FROM kept_qos2; DELETE FROM kept_outgoing; DELETE FROM kept_subscriptions;"
    "DELETE FROM kept_sessions; DELETE FROM kept_retained; DELETE FROM kept_messages;";

int store_catalog_only(struct store *s, char *err, size_t errlen)
{
    int rc = sqlite3_exec(s->db, kept_tables_clear, NULL, NULL, NULL);

    if (rc != SQLITE_OK)
        return db_fail(s, rc, err, errlen);
    rc = sqlite3_exec(s->db, "VACUUM", NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : db_fail(s, rc, err, errlen);
}

void store_close(struct store *s)
{
    if (s == NULL)
        return;
    sqlite3_finalize(s->data_version);
    sqlite3_close(s->db);
    free(s->path);
    free(s);
}

int64_t store_data_version(struct store *s)
{
    int64_t version = STORE_E_DB;

    if (s->data_version == NULL &&
        sqlite3_prepare_v2(s->db, "PRAGMA data_version", -1, &s->data_version, NULL) != SQLITE_OK)
        return STORE_E_DB;
    if (sqlite3_step(s->data_version) == SQLITE_ROW)
        version = sqlite3_column_int64(s->data_version, 0);
    sqlite3_reset(s->data_version);
    return version;
}

/* ---- names, secrets, limits ----------------------------------------------- */

bool store_name_valid(const char *name)
{
    size_t len = 0;

    for (const char *p = name; *p != '\0'; p++, len++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return len >= 1 && len <= STORE_NAME_MAX;
}

static int bad_name(const char *what, const char *name, char *err, size_t errlen)
{
    char buf[SHOWN_SIZE];
    return fail(err, errlen, STORE_E_INVALID,
                "bad %s name '%s' (1 to %d letters, digits, '.', '_' or '-')", what,
                log_escape_str(name, buf, sizeof(buf)), STORE_NAME_MAX);
}

/* `limit` must be a limit directive and `value` within its range, as in aviary.conf. */
static int limit_check(const char *limit, unsigned long long value, char *err, size_t errlen)
{
    char buf[SHOWN_SIZE], text[32], known[512];
    unsigned long long parsed;

    if (limits_find(limit, strlen(limit)) == NULL) {
        limits_names(known, sizeof(known));
        return fail(err, errlen, STORE_E_INVALID, "unknown limit '%s' (known: %s)",
                    log_escape_str(limit, buf, sizeof(buf)), known);
    }
    snprintf(text, sizeof(text), "%llu", value);
    if (limits_parse(limit, text, &parsed, err, errlen) < 0)
        return STORE_E_INVALID;
    return 0;
}

/* The random bytes of secrets and ids; RAND_bytes fails only without entropy. */
static int random_bytes(uint8_t *out, size_t len, char *err, size_t errlen)
{
    if (RAND_bytes(out, (int)len) != 1)
        return fail(err, errlen, STORE_E_DB, "cannot draw random bytes (OpenSSL's RAND_bytes)");
    return 0;
}

/* RFC 4648 §5 base64url without padding: `out` holds (4 * len + 2) / 3 + 1 bytes. */
static void base64url_encode(const uint8_t *in, size_t len, char *out)
{
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, i = 0;

    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = alphabet[v >> 18 & 63];
        out[o++] = alphabet[v >> 12 & 63];
        out[o++] = alphabet[v >> 6 & 63];
        out[o++] = alphabet[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = alphabet[v >> 18 & 63];
        out[o++] = alphabet[v >> 12 & 63];
    } else if (len - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = alphabet[v >> 18 & 63];
        out[o++] = alphabet[v >> 12 & 63];
        out[o++] = alphabet[v >> 6 & 63];
    }
    out[o] = '\0';
}

/* ---- accumulators ----------------------------------------------------------- */

/* Make room for one more element of `size` bytes in *items (holding `count` of `*cap`). */
static int grow(void **items, size_t *cap, size_t count, size_t size)
{
    if (count < *cap)
        return 0;
    size_t n = *cap ? *cap * 2 : 8;
    void *p = realloc(*items, n * size);
    if (p == NULL)
        return -1;
    *items = p;
    *cap = n;
    return 0;
}

/* Limits whose names the list owns. */
struct limit_list {
    struct store_limit *items;
    size_t count, cap;
};

static int limit_list_add(struct limit_list *l, const char *name, int64_t value)
{
    char *copy;

    if (name == NULL || grow((void **)&l->items, &l->cap, l->count, sizeof(*l->items)) < 0 ||
        (copy = strdup(name)) == NULL)
        return -1;
    l->items[l->count].name = copy;
    l->items[l->count].value = value < 0 ? 0 : (unsigned long long)value;
    l->count++;
    return 0;
}

static void limit_list_clear(struct limit_list *l)
{
    for (size_t i = 0; i < l->count; i++)
        free((char *)l->items[i].name);
    free(l->items);
    memset(l, 0, sizeof(*l));
}

/* Strings the list owns. */
struct str_list {
    char **items;
    size_t count, cap;
};

static int str_list_add(struct str_list *l, const char *text)
{
    char *copy;

    if (text == NULL || grow((void **)&l->items, &l->cap, l->count, sizeof(*l->items)) < 0 ||
        (copy = strdup(text)) == NULL)
        return -1;
    l->items[l->count++] = copy;
    return 0;
}

static void str_list_clear(struct str_list *l)
{
    for (size_t i = 0; i < l->count; i++)
        free(l->items[i]);
    free(l->items);
    memset(l, 0, sizeof(*l));
}

static const char *col_text(sqlite3_stmt *st, int i)
{
    return (const char *)sqlite3_column_text(st, i);
}

/* ---- plans ---------------------------------------------------------------- */

int store_plan_set(struct store *s, const char *plan, const char *limit, unsigned long long value,
                   char *err, size_t errlen)
{
    int rc;

    if (!store_name_valid(plan))
        return bad_name("plan", plan, err, errlen);
    rc = limit_check(limit, value, err, errlen);
    if (rc < 0)
        return rc;
    rc = tx_begin(s, err, errlen);
    if (rc < 0)
        return rc;
    rc = run(s, err, errlen, "INSERT OR IGNORE INTO plans(name) VALUES (?)", "s", plan);
    if (rc == 0)
        rc = run(s, err, errlen,
                 "INSERT OR REPLACE INTO plan_limits(plan, name, value) VALUES (?, ?, ?)", "ssi",
                 plan, limit, (int64_t)value);
    return tx_end(s, rc, err, errlen);
}

int store_plan_list(struct store *s, store_plan_fn fn, void *ctx, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    struct limit_list limits = {0};
    char *plan = NULL;
    int rc, step;

    rc = stmt_open(s, &st, err, errlen,
                   "SELECT p.name, l.name, l.value FROM plans p"
                   " LEFT JOIN plan_limits l ON l.plan = p.name ORDER BY p.name, l.name",
                   "");
    if (rc < 0)
        return rc;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = col_text(st, 0);
        if (name == NULL) {
            rc = nomem(err, errlen);
            goto out;
        }
        if (plan != NULL && strcmp(plan, name) != 0) {
            fn(ctx, plan, limits.items, limits.count);
            free(plan);
            plan = NULL;
            limit_list_clear(&limits);
            name = col_text(st, 0);
        }
        if (plan == NULL && (plan = strdup(name)) == NULL) {
            rc = nomem(err, errlen);
            goto out;
        }
        if (sqlite3_column_type(st, 1) != SQLITE_NULL &&
            limit_list_add(&limits, col_text(st, 1), sqlite3_column_int64(st, 2)) < 0) {
            rc = nomem(err, errlen);
            goto out;
        }
    }
    if (step != SQLITE_DONE)
        rc = db_fail(s, step, err, errlen);
    else if (plan != NULL)
        fn(ctx, plan, limits.items, limits.count);
out:
    free(plan);
    limit_list_clear(&limits);
    sqlite3_finalize(st);
    return rc;
}

/* Up to three names of the instances on `plan`, as "a, b, c" (", ..." when more). */
static int plan_users(struct store *s, const char *plan, int64_t *count, char *names, size_t size,
                      char *err, size_t errlen)
{
    sqlite3_stmt *st;
    size_t used = 0;
    int rc = stmt_open(s, &st, err, errlen,
                       "SELECT name, count(*) OVER () FROM instances WHERE plan = ?"
                       " ORDER BY name LIMIT 4",
                       "s", plan),
        step, n = 0;

    *count = 0;
    names[0] = '\0';
    if (rc < 0)
        return rc;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = col_text(st, 0);
        *count = sqlite3_column_int64(st, 1);
        if (used < size)
            used += (size_t)snprintf(names + used, size - used, "%s%s", n > 0 ? ", " : "",
                                     n < 3 ? (name ? name : "?") : "...");
        n++;
    }
    rc = step == SQLITE_DONE ? 0 : db_fail(s, step, err, errlen);
    sqlite3_finalize(st);
    return rc;
}

int store_plan_delete(struct store *s, const char *plan, char *err, size_t errlen)
{
    char buf[SHOWN_SIZE], names[3 * STORE_NAME_MAX + 16];
    int64_t users = 0;
    int rc;

    if (strcmp(plan, STORE_DEFAULT_PLAN) == 0)
        return fail(err, errlen, STORE_E_INVALID,
                    "the plan '%s' cannot be deleted: new instances go on it (change its limits "
                    "with plan set)",
                    STORE_DEFAULT_PLAN);
    if ((rc = tx_begin(s, err, errlen)) < 0)
        return rc;
    rc = run(s, err, errlen, "SELECT 1 FROM plans WHERE name = ?", "s", plan);
    if (rc == 0)
        rc = fail(err, errlen, STORE_E_NOT_FOUND, "no plan '%s'",
                  log_escape_str(plan, buf, sizeof(buf)));
    if (rc > 0)
        rc = plan_users(s, plan, &users, names, sizeof(names), err, errlen);
    if (rc == 0 && users > 0)
        rc = fail(err, errlen, STORE_E_INVALID,
                  "plan '%s' is in use by %lld instance%s (%s): move %s to another plan first "
                  "(instance set NAME plan PLAN)",
                  plan, (long long)users, users == 1 ? "" : "s", names, users == 1 ? "it" : "them");
    if (rc == 0)
        rc = run(s, err, errlen, "DELETE FROM plan_limits WHERE plan = ?", "s", plan);
    if (rc == 0)
        rc = run(s, err, errlen, "DELETE FROM plans WHERE name = ?", "s", plan);
    return tx_end(s, rc, err, errlen);
}

/* ---- instances ------------------------------------------------------------ */

/* One instance being read: its row and its overrides. */
struct instance_acc {
    char *name, *plan;
    int64_t created;
    int64_t serial;
    size_t token_count;
    struct limit_list limits;
};

static void instance_acc_clear(struct instance_acc *a)
{
    free(a->name);
    free(a->plan);
    limit_list_clear(&a->limits);
    memset(a, 0, sizeof(*a));
}

static void instance_acc_emit(struct instance_acc *a, store_instance_fn fn, void *ctx)
{
    struct store_instance inst = {
        .name = a->name,
        .plan = a->plan,
        .created = a->created,
        .serial = a->serial,
        .overrides = a->limits.items,
        .override_count = a->limits.count,
        .token_count = a->token_count,
    };
    fn(ctx, &inst);
    instance_acc_clear(a);
}

#define INSTANCE_SELECT                                                                            \
    "SELECT i.name, i.plan, i.created,"                                                            \
    " (SELECT count(*) FROM tokens t WHERE t.instance = i.name AND t.revoked = 0),"                \
    " i.serial, l.name, l.value"                                                                   \
    " FROM instances i LEFT JOIN instance_limits l ON l.instance = i.name"

/* Call `fn` per instance the query returns; *found counts them. */
static int instance_query(struct store *s, sqlite3_stmt *st, store_instance_fn fn, void *ctx,
                          size_t *found, char *err, size_t errlen)
{
    struct instance_acc acc = {0};
    int rc = 0, step;

    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = col_text(st, 0);
        if (name == NULL) {
            rc = nomem(err, errlen);
            goto out;
        }
        if (acc.name != NULL && strcmp(acc.name, name) != 0) {
            instance_acc_emit(&acc, fn, ctx);
            (*found)++;
        }
        if (acc.name == NULL) {
            const char *plan = col_text(st, 1);
            acc.name = strdup(col_text(st, 0));
            acc.plan = plan != NULL ? strdup(plan) : NULL;
            if (acc.name == NULL || acc.plan == NULL) {
                rc = nomem(err, errlen);
                goto out;
            }
            acc.created = sqlite3_column_int64(st, 2);
            acc.token_count = (size_t)sqlite3_column_int64(st, 3);
            acc.serial = sqlite3_column_int64(st, 4);
        }
        if (sqlite3_column_type(st, 5) != SQLITE_NULL &&
            limit_list_add(&acc.limits, col_text(st, 5), sqlite3_column_int64(st, 6)) < 0) {
            rc = nomem(err, errlen);
            goto out;
        }
    }
    if (step != SQLITE_DONE) {
        rc = db_fail(s, step, err, errlen);
    } else if (acc.name != NULL) {
        instance_acc_emit(&acc, fn, ctx);
        (*found)++;
    }
out:
    instance_acc_clear(&acc);
    return rc;
}

int store_instance_create(struct store *s, const char *name, const char *plan, char *err,
                          size_t errlen)
{
    char buf[SHOWN_SIZE];
    int rc;

    if (plan == NULL)
        plan = STORE_DEFAULT_PLAN;
    if (!store_name_valid(name))
        return bad_name("instance", name, err, errlen);
    if (!store_name_valid(plan))
        return bad_name("plan", plan, err, errlen);
    rc = tx_begin(s, err, errlen);
    if (rc < 0)
        return rc;
    rc = run(s, err, errlen, "SELECT 1 FROM plans WHERE name = ?", "s", plan);
    if (rc == 0)
        rc = fail(err, errlen, STORE_E_NOT_FOUND, "no plan '%s'",
                  log_escape_str(plan, buf, sizeof(buf)));
    if (rc < 0)
        goto out;
    rc = instance_exists(s, name, err, errlen);
    if (rc == 1)
        rc = fail(err, errlen, STORE_E_EXISTS, "instance '%s' exists already",
                  log_escape_str(name, buf, sizeof(buf)));
    if (rc < 0)
        goto out;
    uint64_t serial;
    rc = random_bytes((uint8_t *)&serial, sizeof(serial), err, errlen);
    if (rc == 0)
        rc = run(s, err, errlen,
                 "INSERT INTO instances(name, plan, created, serial) VALUES (?, ?, ?, ?)", "ssii",
                 name, plan, (int64_t)time(NULL), (int64_t)((serial >> 1) | 1));
out:
    return tx_end(s, rc, err, errlen);
}

/*
 * What the broker keeps for the instance of serial `serial`, in the order
 * that leaves no row pointing at one deleted already; then the messages
 * nothing refers to any more (a running broker writes a message and what
 * refers to it in one transaction).
 */
static const char *const kept_instance_deletes[] = {
    "DELETE FROM kept_subscriptions WHERE session IN "
    "(SELECT id FROM kept_sessions WHERE instance = ?)",
    "DELETE FROM kept_outgoing WHERE session IN (SELECT id FROM kept_sessions WHERE instance = ?)",
    "DELETE FROM kept_qos2 WHERE session IN (SELECT id FROM kept_sessions WHERE instance = ?)",
    "DELETE FROM kept_sessions WHERE instance = ?",
    "DELETE FROM kept_retained WHERE instance = ?",
};

static int delete_kept(struct store *s, int64_t serial, char *err, size_t errlen)
{
    for (size_t i = 0; i < sizeof(kept_instance_deletes) / sizeof(kept_instance_deletes[0]); i++) {
        int rc = run(s, err, errlen, kept_instance_deletes[i], "i", serial);
        if (rc < 0)
            return rc;
    }
    int rc = run(s, err, errlen, STORE_KEPT_UNREFERENCED_SQL, "");
    return rc < 0 ? rc : 0;
}

int store_instance_delete(struct store *s, const char *name, char *err, size_t errlen)
{
    int64_t serial = 0;
    int rc = tx_begin(s, err, errlen);

    if (rc < 0)
        return rc;
    sqlite3_stmt *st;
    rc = stmt_open(s, &st, err, errlen, "SELECT serial FROM instances WHERE name = ?", "s", name);
    if (rc == 0)
        rc = stmt_finish(s, st, &serial, err, errlen);
    if (rc == 0)
        rc = no_instance(name, err, errlen);
    if (rc < 0)
        goto out;
    rc = delete_kept(s, serial, err, errlen);
    /* The foreign keys take the overrides, the tokens and their filters with it. */
    if (rc == 0)
        rc = run(s, err, errlen, "DELETE FROM instances WHERE name = ?", "s", name);
out:
    return tx_end(s, rc, err, errlen);
}

int store_instance_get(struct store *s, const char *name, store_instance_fn fn, void *ctx,
                       char *err, size_t errlen)
{
    sqlite3_stmt *st;
    size_t found = 0;
    int rc;

    rc = stmt_open(s, &st, err, errlen, INSTANCE_SELECT " WHERE i.name = ? ORDER BY l.name", "s",
                   name);
    if (rc < 0)
        return rc;
    rc = instance_query(s, st, fn, ctx, &found, err, errlen);
    sqlite3_finalize(st);
    if (rc == 0 && found == 0)
        rc = no_instance(name, err, errlen);
    return rc;
}

int store_instance_list(struct store *s, store_instance_fn fn, void *ctx, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    size_t found = 0;
    int rc;

    rc = stmt_open(s, &st, err, errlen, INSTANCE_SELECT " ORDER BY i.name, l.name", "");
    if (rc < 0)
        return rc;
    rc = instance_query(s, st, fn, ctx, &found, err, errlen);
    sqlite3_finalize(st);
    return rc;
}

int store_instance_set_plan(struct store *s, const char *name, const char *plan, char *err,
                            size_t errlen)
{
    char buf[SHOWN_SIZE];
    int rc = tx_begin(s, err, errlen);

    if (rc < 0)
        return rc;
    rc = run(s, err, errlen, "SELECT 1 FROM plans WHERE name = ?", "s", plan);
    if (rc == 0)
        rc = fail(err, errlen, STORE_E_NOT_FOUND, "no plan '%s'",
                  log_escape_str(plan, buf, sizeof(buf)));
    if (rc > 0)
        rc = instance_needed(s, name, err, errlen);
    if (rc == 0)
        rc = run(s, err, errlen, "UPDATE instances SET plan = ? WHERE name = ?", "ss", plan, name);
    return tx_end(s, rc < 0 ? rc : 0, err, errlen);
}

int store_instance_set_limit(struct store *s, const char *name, const char *limit,
                             unsigned long long value, char *err, size_t errlen)
{
    int rc = limit_check(limit, value, err, errlen);

    if (rc < 0)
        return rc;
    rc = tx_begin(s, err, errlen);
    if (rc < 0)
        return rc;
    rc = instance_needed(s, name, err, errlen);
    if (rc == 0)
        rc = run(s, err, errlen,
                 "INSERT OR REPLACE INTO instance_limits(instance, name, value) VALUES (?, ?, ?)",
                 "ssi", name, limit, (int64_t)value);
    return tx_end(s, rc, err, errlen);
}

int store_instance_unset_limit(struct store *s, const char *name, const char *limit, bool *was_set,
                               char *err, size_t errlen)
{
    char buf[SHOWN_SIZE], known[512];
    int rc;

    *was_set = false;
    if (limits_find(limit, strlen(limit)) == NULL) {
        limits_names(known, sizeof(known));
        return fail(err, errlen, STORE_E_INVALID, "unknown limit '%s' (known: %s)",
                    log_escape_str(limit, buf, sizeof(buf)), known);
    }
    if ((rc = tx_begin(s, err, errlen)) < 0)
        return rc;
    rc = instance_needed(s, name, err, errlen);
    if (rc == 0)
        rc = run(s, err, errlen, "DELETE FROM instance_limits WHERE instance = ? AND name = ?",
                 "ss", name, limit);
    if (rc == 0)
        *was_set = sqlite3_changes(s->db) > 0;
    return tx_end(s, rc, err, errlen);
}

/* ---- tokens --------------------------------------------------------------- */

static int check_filters(const struct store_filters *f, const char *kind, char *err, size_t errlen)
{
    if (f->count > 0 && f->items == NULL)
        return fail(err, errlen, STORE_E_INVALID, "%s filters missing", kind);
    for (size_t i = 0; i < f->count; i++)
        if (f->items[i] == NULL || f->items[i][0] == '\0')
            return fail(err, errlen, STORE_E_INVALID, "empty %s filter", kind);
    return 0;
}

static int check_spec(const struct store_token_spec *spec, char *err, size_t errlen)
{
    const struct store_filters *lists[FILTER_KINDS] = {&spec->pub, &spec->sub, &spec->deny_pub,
                                                       &spec->deny_sub};
    int rc;

    if (spec->instance == NULL)
        return fail(err, errlen, STORE_E_INVALID, "no instance given");
    if (spec->expires < 0)
        return fail(err, errlen, STORE_E_INVALID, "expiry before 1970");
    if (spec->client_id != NULL && spec->client_id[0] == '\0')
        return fail(err, errlen, STORE_E_INVALID, "empty client id");
    for (int k = 0; k < FILTER_KINDS; k++)
        if ((rc = check_filters(lists[k], filter_kinds[k], err, errlen)) < 0)
            return rc;
    return 0;
}

/* Insert the token row under a fresh id (written to `id`), then its filters. */
static int token_insert(struct store *s, const struct store_token_spec *spec,
                        const uint8_t hash[STORE_HASH_LEN], char id[STORE_TOKEN_ID_LEN + 1],
                        char *err, size_t errlen)
{
    const struct store_filters *lists[FILTER_KINDS] = {&spec->pub, &spec->sub, &spec->deny_pub,
                                                       &spec->deny_sub};
    uint8_t raw[STORE_TOKEN_ID_BYTES];
    int rc = STORE_E_DB;

    for (int attempt = 0; attempt < STORE_TOKEN_ID_ATTEMPTS; attempt++) {
        rc = random_bytes(raw, sizeof(raw), err, errlen);
        if (rc < 0)
            return rc;
        hex_encode(raw, sizeof(raw), id);
        rc = run(s, err, errlen,
                 "INSERT INTO tokens(id, instance, label, secret_hash, created, expires,"
                 " client_id, revoked, allow_action) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?)",
                 "ssshizsi", id, spec->instance, spec->label ? spec->label : "", hash,
                 (int64_t)time(NULL), spec->expires, spec->client_id,
                 (int64_t)(spec->allow_action ? 1 : 0));
        if (rc == 0 || s->last_rc != SQLITE_CONSTRAINT_PRIMARYKEY)
            break;
    }
    if (rc < 0)
        return rc;
    for (int k = 0; k < FILTER_KINDS; k++) {
        for (size_t i = 0; i < lists[k]->count; i++) {
            rc = run(s, err, errlen,
                     "INSERT INTO token_filters(token, kind, filter, position)"
                     " VALUES (?, ?, ?, ?)",
                     "sssi", id, filter_kinds[k], lists[k]->items[i], (int64_t)i);
            if (rc < 0)
                return rc;
        }
    }
    return 0;
}

/* A new secret as its text (STORE_SECRET_LEN + 1 bytes) and the hash kept of it. */
static int new_secret(char text[STORE_SECRET_LEN + 1], uint8_t hash[STORE_HASH_LEN], char *err,
                      size_t errlen)
{
    uint8_t raw[STORE_SECRET_BYTES];
    int rc = random_bytes(raw, sizeof(raw), err, errlen);

    if (rc == 0) {
        base64url_encode(raw, sizeof(raw), text);
        secret_hash(text, STORE_SECRET_LEN, hash);
    }
    OPENSSL_cleanse(raw, sizeof(raw));
    return rc;
}

int store_token_create(struct store *s, const struct store_token_spec *spec,
                       char id[STORE_TOKEN_ID_LEN + 1], char secret[STORE_SECRET_LEN + 1],
                       char *err, size_t errlen)
{
    uint8_t hash[STORE_HASH_LEN];
    char text[STORE_SECRET_LEN + 1], new_id[STORE_TOKEN_ID_LEN + 1];
    int rc = check_spec(spec, err, errlen);

    if (rc < 0)
        return rc;
    rc = new_secret(text, hash, err, errlen);
    if (rc < 0)
        return rc;

    rc = tx_begin(s, err, errlen);
    if (rc < 0)
        goto out;
    rc = instance_needed(s, spec->instance, err, errlen);
    if (rc == 0)
        rc = token_insert(s, spec, hash, new_id, err, errlen);
    rc = tx_end(s, rc, err, errlen);
    if (rc < 0)
        goto out;
    memcpy(id, new_id, sizeof(new_id));
    memcpy(secret, text, sizeof(text));
out:
    OPENSSL_cleanse(text, sizeof(text));
    return rc;
}

/* One token being read: its row and its four filter lists. */
struct token_acc {
    char *id, *instance, *label, *client_id;
    int64_t created, expires;
    bool revoked, allow_action;
    uint8_t hash[STORE_HASH_LEN];
    struct str_list filters[FILTER_KINDS];
};

static void token_acc_clear(struct token_acc *a)
{
    free(a->id);
    free(a->instance);
    free(a->label);
    free(a->client_id);
    for (int k = 0; k < FILTER_KINDS; k++)
        str_list_clear(&a->filters[k]);
    memset(a, 0, sizeof(*a));
}

static struct store_filters filters_of(const struct str_list *l)
{
    return (struct store_filters){.items = (const char *const *)l->items, .count = l->count};
}

static void token_acc_emit(struct token_acc *a, store_token_fn fn, void *ctx)
{
    struct store_token tok = {
        .id = a->id,
        .instance = a->instance,
        .label = a->label,
        .created = a->created,
        .expires = a->expires,
        .client_id = a->client_id,
        .revoked = a->revoked,
        .allow_action = a->allow_action,
        .secret_hash = a->hash,
        .pub = filters_of(&a->filters[0]),
        .sub = filters_of(&a->filters[1]),
        .deny_pub = filters_of(&a->filters[2]),
        .deny_sub = filters_of(&a->filters[3]),
    };
    fn(ctx, &tok);
    token_acc_clear(a);
}

/* Copy the token columns of the current row into the empty `a`. */
static int token_acc_start(struct store *s, struct token_acc *a, sqlite3_stmt *st, char *err,
                           size_t errlen)
{
    const char *label = col_text(st, 2), *client_id = col_text(st, 5);
    const void *hash = sqlite3_column_blob(st, 7);

    if ((a->id = strdup(col_text(st, 0))) == NULL ||
        (a->instance = strdup(col_text(st, 1))) == NULL ||
        (a->label = strdup(label != NULL ? label : "")) == NULL ||
        (client_id != NULL && (a->client_id = strdup(client_id)) == NULL))
        return nomem(err, errlen);
    a->created = sqlite3_column_int64(st, 3);
    a->expires = sqlite3_column_int64(st, 4); /* NULL reads as 0: a key */
    a->revoked = sqlite3_column_int64(st, 6) != 0;
    a->allow_action = sqlite3_column_int64(st, 8) != 0;
    if (hash == NULL || sqlite3_column_bytes(st, 7) != STORE_HASH_LEN)
        return fail(err, errlen, STORE_E_DB, "database %s: token %s has no valid secret hash",
                    s->path, a->id);
    memcpy(a->hash, hash, STORE_HASH_LEN);
    return 0;
}

static int token_acc_add_filter(struct token_acc *a, const char *kind, const char *filter)
{
    for (int k = 0; k < FILTER_KINDS; k++)
        if (strcmp(kind, filter_kinds[k]) == 0)
            return str_list_add(&a->filters[k], filter);
    return 0; /* the schema allows no other kind */
}

#define TOKEN_SELECT                                                                               \
    "SELECT t.id, t.instance, t.label, t.created, t.expires, t.client_id, t.revoked,"              \
    " t.secret_hash, t.allow_action, f.kind, f.filter"                                             \
    " FROM tokens t LEFT JOIN token_filters f ON f.token = t.id"

/* Call `fn` per token the query returns (rows of one token are adjacent). */
static int token_query(struct store *s, sqlite3_stmt *st, store_token_fn fn, void *ctx, char *err,
                       size_t errlen)
{
    struct token_acc acc = {0};
    int rc = 0, step;

    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *id = col_text(st, 0);
        if (id == NULL || col_text(st, 1) == NULL) {
            rc = nomem(err, errlen);
            goto out;
        }
        if (acc.id != NULL && strcmp(acc.id, id) != 0)
            token_acc_emit(&acc, fn, ctx);
        if (acc.id == NULL && (rc = token_acc_start(s, &acc, st, err, errlen)) < 0)
            goto out;
        if (sqlite3_column_type(st, 9) != SQLITE_NULL) {
            const char *kind = col_text(st, 9), *filter = col_text(st, 10);
            if (kind == NULL || token_acc_add_filter(&acc, kind, filter) < 0) {
                rc = nomem(err, errlen);
                goto out;
            }
        }
    }
    if (step != SQLITE_DONE)
        rc = db_fail(s, step, err, errlen);
    else if (acc.id != NULL)
        token_acc_emit(&acc, fn, ctx);
out:
    token_acc_clear(&acc);
    return rc;
}

int store_token_list(struct store *s, const char *instance, store_token_fn fn, void *ctx, char *err,
                     size_t errlen)
{
    sqlite3_stmt *st;
    int rc = instance_needed(s, instance, err, errlen);

    if (rc < 0)
        return rc;
    rc = stmt_open(s, &st, err, errlen,
                   TOKEN_SELECT " WHERE t.instance = ?"
                                " ORDER BY t.created, t.rowid, f.kind, f.position",
                   "s", instance);
    if (rc < 0)
        return rc;
    rc = token_query(s, st, fn, ctx, err, errlen);
    sqlite3_finalize(st);
    return rc;
}

int store_token_all(struct store *s, store_token_fn fn, void *ctx, char *err, size_t errlen)
{
    sqlite3_stmt *st;
    int rc;

    rc = stmt_open(s, &st, err, errlen,
                   TOKEN_SELECT " WHERE t.revoked = 0"
                                " ORDER BY t.instance, t.created, t.rowid, f.kind, f.position",
                   "");
    if (rc < 0)
        return rc;
    rc = token_query(s, st, fn, ctx, err, errlen);
    sqlite3_finalize(st);
    return rc;
}

int store_token_revoke(struct store *s, const char *instance, const char *id, char *err,
                       size_t errlen)
{
    char buf[SHOWN_SIZE], buf2[SHOWN_SIZE];
    int rc;

    rc = run(s, err, errlen, "UPDATE tokens SET revoked = 1 WHERE id = ? AND instance = ?", "ss",
             id, instance);
    if (rc < 0 || sqlite3_changes(s->db) > 0)
        return rc;
    rc = instance_needed(s, instance, err, errlen);
    if (rc < 0)
        return rc;
    return fail(err, errlen, STORE_E_NOT_FOUND, "no token '%s' in instance '%s'",
                log_escape_str(id, buf, sizeof(buf)), log_escape_str(instance, buf2, sizeof(buf2)));
}

/* The token row's columns that the patch sets. */
static int token_patch_columns(struct store *s, const struct store_token_patch *p, char *err,
                               size_t errlen)
{
    int rc = 0;

    if (p->set_label)
        rc = run(s, err, errlen, "UPDATE tokens SET label = ? WHERE id = ?", "ss",
                 p->label ? p->label : "", p->id);
    if (rc == 0 && p->set_expires)
        rc = run(s, err, errlen, "UPDATE tokens SET expires = ? WHERE id = ?", "zs", p->expires,
                 p->id);
    if (rc == 0 && p->set_client_id)
        rc = run(s, err, errlen, "UPDATE tokens SET client_id = ? WHERE id = ?", "ss", p->client_id,
                 p->id);
    if (rc == 0 && p->set_allow_action)
        rc = run(s, err, errlen, "UPDATE tokens SET allow_action = ? WHERE id = ?", "is",
                 (int64_t)(p->allow_action ? 1 : 0), p->id);
    return rc;
}

/* The filter lists that the patch replaces. */
static int token_patch_filters(struct store *s, const struct store_token_patch *p, char *err,
                               size_t errlen)
{
    int rc = 0;

    for (int k = 0; rc == 0 && k < FILTER_KINDS; k++) {
        if (!p->set_filters[k])
            continue;
        rc = run(s, err, errlen, "DELETE FROM token_filters WHERE token = ? AND kind = ?", "ss",
                 p->id, filter_kinds[k]);
        for (size_t i = 0; rc == 0 && i < p->filters[k].count; i++)
            rc = run(s, err, errlen,
                     "INSERT INTO token_filters(token, kind, filter, position) VALUES (?, ?, ?, ?)",
                     "sssi", p->id, filter_kinds[k], p->filters[k].items[i], (int64_t)i);
    }
    return rc;
}

static int check_patch(const struct store_token_patch *p, char *err, size_t errlen)
{
    int rc = 0;

    if (p->instance == NULL || p->id == NULL)
        return fail(err, errlen, STORE_E_INVALID, "no instance or token given");
    if (p->set_expires && p->expires < 0)
        return fail(err, errlen, STORE_E_INVALID, "expiry before 1970");
    if (p->set_client_id && p->client_id != NULL && p->client_id[0] == '\0')
        return fail(err, errlen, STORE_E_INVALID, "empty client id");
    for (int k = 0; rc == 0 && k < FILTER_KINDS; k++)
        if (p->set_filters[k])
            rc = check_filters(&p->filters[k], filter_kinds[k], err, errlen);
    return rc;
}

int store_token_update(struct store *s, const struct store_token_patch *p, char *err, size_t errlen)
{
    char buf[SHOWN_SIZE], buf2[SHOWN_SIZE];
    int64_t revoked = 0;
    sqlite3_stmt *st;
    int rc = check_patch(p, err, errlen);

    if (rc < 0 || (rc = tx_begin(s, err, errlen)) < 0)
        return rc;
    rc = instance_needed(s, p->instance, err, errlen);
    if (rc == 0)
        rc = stmt_open(s, &st, err, errlen,
                       "SELECT revoked FROM tokens WHERE id = ? AND instance = ?", "ss", p->id,
                       p->instance);
    if (rc == 0)
        rc = stmt_finish(s, st, &revoked, err, errlen);
    if (rc == 0)
        rc = fail(err, errlen, STORE_E_NOT_FOUND, "no token '%s' in instance '%s'",
                  log_escape_str(p->id, buf, sizeof(buf)),
                  log_escape_str(p->instance, buf2, sizeof(buf2)));
    else if (rc > 0 && revoked)
        rc = fail(err, errlen, STORE_E_INVALID,
                  "token '%s' is revoked: a revoked token stays revoked (create a new one)",
                  log_escape_str(p->id, buf, sizeof(buf)));
    else if (rc > 0)
        rc = token_patch_columns(s, p, err, errlen);
    if (rc == 0)
        rc = token_patch_filters(s, p, err, errlen);
    return tx_end(s, rc, err, errlen);
}

/* ---- admin keys ------------------------------------------------------------ */

int store_admin_key_create(struct store *s, const char *label, char id[STORE_TOKEN_ID_LEN + 1],
                           char secret[STORE_SECRET_LEN + 1], char *err, size_t errlen)
{
    uint8_t hash[STORE_HASH_LEN], raw[STORE_TOKEN_ID_BYTES];
    char text[STORE_SECRET_LEN + 1], new_id[STORE_TOKEN_ID_LEN + 1];
    int rc = new_secret(text, hash, err, errlen);

    /* One statement: no transaction needed; a clash of ids is drawn again. */
    for (int attempt = 0; rc == 0 && attempt < STORE_TOKEN_ID_ATTEMPTS; attempt++) {
        rc = random_bytes(raw, sizeof(raw), err, errlen);
        if (rc < 0)
            break;
        hex_encode(raw, sizeof(raw), new_id);
        rc = run(s, err, errlen,
                 "INSERT INTO admin_keys(id, label, secret_hash, created) VALUES (?, ?, ?, ?)",
                 "sshi", new_id, label ? label : "", hash, (int64_t)time(NULL));
        if (rc < 0 && s->last_rc == SQLITE_CONSTRAINT_PRIMARYKEY)
            continue;
        break;
    }
    if (rc == 0) {
        memcpy(id, new_id, sizeof(new_id));
        memcpy(secret, text, sizeof(text));
    }
    OPENSSL_cleanse(text, sizeof(text));
    return rc < 0 ? rc : 0;
}

int store_admin_key_list(struct store *s, bool live_only, store_admin_key_fn fn, void *ctx,
                         char *err, size_t errlen)
{
    sqlite3_stmt *st;
    int rc, step;

    rc = stmt_open(s, &st, err, errlen,
                   live_only ? "SELECT id, label, created, revoked, secret_hash FROM admin_keys"
                               " WHERE revoked = 0 ORDER BY created, rowid"
                             : "SELECT id, label, created, revoked, secret_hash FROM admin_keys"
                               " ORDER BY created, rowid",
                   "");
    if (rc < 0)
        return rc;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *id = col_text(st, 0), *label = col_text(st, 1);
        const void *hash = sqlite3_column_blob(st, 4);
        if (id == NULL || hash == NULL || sqlite3_column_bytes(st, 4) != STORE_HASH_LEN) {
            rc = fail(err, errlen, STORE_E_DB, "database %s: an admin key has no valid hash",
                      s->path);
            break;
        }
        struct store_admin_key key = {.id = id,
                                      .label = label ? label : "",
                                      .created = sqlite3_column_int64(st, 2),
                                      .revoked = sqlite3_column_int64(st, 3) != 0,
                                      .secret_hash = hash};
        fn(ctx, &key);
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = db_fail(s, step, err, errlen);
    sqlite3_finalize(st);
    return rc;
}

int store_admin_key_revoke(struct store *s, const char *id, char *err, size_t errlen)
{
    char buf[SHOWN_SIZE];
    int rc = run(s, err, errlen, "UPDATE admin_keys SET revoked = 1 WHERE id = ?", "s", id);

    if (rc < 0 || sqlite3_changes(s->db) > 0)
        return rc < 0 ? rc : 0;
    return fail(err, errlen, STORE_E_NOT_FOUND, "no admin key '%s'",
                log_escape_str(id, buf, sizeof(buf)));
}
