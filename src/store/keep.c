/*
 * keep — the writer, the loader and the backup of what the broker keeps
 * (see keep.h). The schema is store.c's (migration 3).
 */
#include "store/keep.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "store/store.h"
#include "util/error.h"
#include "util/journal.h"
#include "util/log.h"
#include "util/mailbox.h"

/* How long a statement waits for another connection's lock (aviaryctl's) before failing. */
#define KEEP_BUSY_TIMEOUT_MS 5000
/* A settled batch that cannot be put in the mailbox (out of memory) is tried again this often. */
#define KEEP_SETTLE_RETRY_MS 10

/* ---- connections ---------------------------------------------------------- */

/* Open the database at `path` as store_open() left it. NULL with the reason in `err`. */
static sqlite3 *keep_open(const char *path, int flags, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, flags, NULL);

    if (rc == SQLITE_OK) {
        sqlite3_extended_result_codes(db, 1);
        sqlite3_busy_timeout(db, KEEP_BUSY_TIMEOUT_MS);
        /* In WAL mode NORMAL loses no commit to a crash of the process, only to a power loss. */
        rc = sqlite3_exec(db, "PRAGMA synchronous = NORMAL", NULL, NULL, NULL);
    }
    if (rc != SQLITE_OK) {
        error_set(err, errlen, "cannot open database %s: %s", path,
                  db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return NULL;
    }
    return db;
}

static int db_error(sqlite3 *db, const char *path, const char *what, char *err, size_t errlen)
{
    error_set(err, errlen, "database %s: %s: %s", path, what, sqlite3_errmsg(db));
    return STORE_E_DB;
}

/* ---- the writer ----------------------------------------------------------- */

/* The statements a record runs, prepared once. */
enum keep_stmt {
    PUT_MESSAGE,
    DROP_MESSAGE,
    SET_RETAINED,
    CLEAR_RETAINED,
    PUT_SESSION,
    DROP_SESSION_SUBS,
    DROP_SESSION_OUTGOING,
    DROP_SESSION_QOS2,
    DROP_SESSION,
    PUT_SUB,
    DROP_SUB,
    PUT_OUTGOING,
    DROP_OUTGOING,
    ADD_QOS2,
    DROP_QOS2,
    SET_WILL,
    KEEP_STMT_COUNT
};

static const char *const keep_sql[KEEP_STMT_COUNT] = {
    [PUT_MESSAGE] = "INSERT OR REPLACE INTO kept_messages(id, topic, payload, props, qos, retain, "
                    "expiry, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [DROP_MESSAGE] = "DELETE FROM kept_messages WHERE id = ?1",
    [SET_RETAINED] =
        "INSERT OR REPLACE INTO kept_retained(instance, topic, message) VALUES (?1, ?2, ?3)",
    [CLEAR_RETAINED] = "DELETE FROM kept_retained WHERE instance = ?1 AND topic = ?2",
    [PUT_SESSION] = "INSERT INTO kept_sessions(id, instance, client_id, token, expiry, "
                    "offline_since_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(id) DO UPDATE "
                    "SET token = excluded.token, expiry = excluded.expiry, "
                    "offline_since_ms = excluded.offline_since_ms",
    [DROP_SESSION_SUBS] = "DELETE FROM kept_subscriptions WHERE session = ?1",
    [DROP_SESSION_OUTGOING] = "DELETE FROM kept_outgoing WHERE session = ?1",
    [DROP_SESSION_QOS2] = "DELETE FROM kept_qos2 WHERE session = ?1",
    [DROP_SESSION] = "DELETE FROM kept_sessions WHERE id = ?1",
    [PUT_SUB] = "INSERT OR REPLACE INTO kept_subscriptions(session, filter, options, "
                "leading_slash, sub_id) VALUES (?1, ?2, ?3, ?4, ?5)",
    [DROP_SUB] = "DELETE FROM kept_subscriptions WHERE session = ?1 AND filter = ?2",
    [PUT_OUTGOING] = "INSERT OR REPLACE INTO kept_outgoing(session, seq, message, qos, state, "
                     "packet_id, flags, sub_ids) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    [DROP_OUTGOING] = "DELETE FROM kept_outgoing WHERE session = ?1 AND seq = ?2",
    [ADD_QOS2] = "INSERT OR IGNORE INTO kept_qos2(session, packet_id) VALUES (?1, ?2)",
    [DROP_QOS2] = "DELETE FROM kept_qos2 WHERE session = ?1 AND packet_id = ?2",
    [SET_WILL] = "UPDATE kept_sessions SET will_message = ?2, will_due_ms = ?3 WHERE id = ?1",
};

struct keep_batch_node {
    struct journal *batch;
    struct keep_batch_node *next;
};

struct keep_writer {
    sqlite3 *db;
    char *path;
    sqlite3_stmt *stmt[KEEP_STMT_COUNT];
    struct mailbox *settled;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct keep_batch_node *head, *tail; /* guarded by lock, oldest first */
    bool stopping;                       /* guarded by lock */
    uint64_t failed_turns;               /* the writer thread's own */
    unsigned locked_turns;               /* tries the current list found the database locked */
};

/* Bind `n` bytes (a NULL pointer with n 0 binds an empty blob, not NULL). */
static int bind_blob(sqlite3_stmt *st, int i, const void *p, size_t n)
{
    return sqlite3_bind_blob64(st, i, n ? p : "", n, SQLITE_STATIC);
}

/* Bind a record's string: its length is known and it lives as long as the statement runs. */
static int bind_text(sqlite3_stmt *st, int i, const char *s, size_t n)
{
    return sqlite3_bind_text64(st, i, s, n, SQLITE_STATIC, SQLITE_UTF8);
}

/* The record's Subscription Identifiers, little-endian, into `out` (4 bytes each). */
static void sub_ids_encode(const struct journal_record *r, uint8_t *out)
{
    for (size_t i = 0; i < r->sub_id_count; i++) {
        uint32_t id = journal_sub_id(r, i);
        out[4 * i] = (uint8_t)id;
        out[4 * i + 1] = (uint8_t)(id >> 8);
        out[4 * i + 2] = (uint8_t)(id >> 16);
        out[4 * i + 3] = (uint8_t)(id >> 24);
    }
}

static int bind_message(sqlite3_stmt *st, const struct journal_record *r)
{
    int rc = sqlite3_bind_int64(st, 1, (int64_t)r->message);
    if (rc == SQLITE_OK)
        rc = bind_text(st, 2, r->name, r->name_len);
    if (rc == SQLITE_OK)
        rc = bind_blob(st, 3, r->payload, r->payload_len);
    if (rc == SQLITE_OK)
        rc = bind_blob(st, 4, r->props, r->props_len);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(st, 5, r->qos);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(st, 6, (r->flags & JOURNAL_RETAIN) != 0);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 7, r->expiry);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 8, r->when_ms);
    return rc;
}

static int bind_session(sqlite3_stmt *st, const struct journal_record *r)
{
    int rc = sqlite3_bind_int64(st, 1, (int64_t)r->session);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 2, r->instance);
    if (rc == SQLITE_OK)
        rc = bind_text(st, 3, r->name, r->name_len);
    if (rc == SQLITE_OK)
        rc = bind_text(st, 4, r->token, r->token_len);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 5, r->expiry);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 6, r->when_ms);
    return rc;
}

static int bind_sub(sqlite3_stmt *st, const struct journal_record *r)
{
    int rc = sqlite3_bind_int64(st, 1, (int64_t)r->session);
    if (rc == SQLITE_OK)
        rc = bind_text(st, 2, r->name, r->name_len);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(st, 3, r->options);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(st, 4, (r->flags & JOURNAL_LEADING_SLASH) != 0);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 5, r->sub_id);
    return rc;
}

static int bind_outgoing(sqlite3_stmt *st, const struct journal_record *r, uint8_t *ids)
{
    int rc = sqlite3_bind_int64(st, 1, (int64_t)r->session);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int64(st, 2, (int64_t)r->seq);
    if (rc == SQLITE_OK)
        rc = r->message ? sqlite3_bind_int64(st, 3, (int64_t)r->message) : sqlite3_bind_null(st, 3);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(st, 4, r->qos);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(st, 5, r->state);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(st, 6, r->packet_id);
    if (rc == SQLITE_OK)
        rc = sqlite3_bind_int(st, 7, r->flags);
    if (rc == SQLITE_OK) {
        sub_ids_encode(r, ids);
        rc = bind_blob(st, 8, ids, r->sub_id_count * 4);
    }
    return rc;
}

/* Bind ?1 to the record's session (or message) id and ?2 to `second` when the SQL has it. */
static int bind_pair(sqlite3_stmt *st, int64_t first, const struct journal_record *r, char second)
{
    int rc = sqlite3_bind_int64(st, 1, first);
    if (rc != SQLITE_OK || second == 0)
        return rc;
    if (second == 'n')
        return bind_text(st, 2, r->name, r->name_len);
    if (second == 'p')
        return sqlite3_bind_int(st, 2, r->packet_id);
    return sqlite3_bind_int64(st, 2, (int64_t)r->seq);
}

/* Run statement `k` once, bound by `bound` (an SQLite code). */
static int keep_step(struct keep_writer *w, enum keep_stmt k, int bound)
{
    sqlite3_stmt *st = w->stmt[k];
    int rc = bound == SQLITE_OK ? sqlite3_step(st) : bound;

    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE || rc == SQLITE_OK ? SQLITE_OK : rc;
}

static int keep_drop_session(struct keep_writer *w, int64_t id)
{
    static const enum keep_stmt order[] = {DROP_SESSION_SUBS, DROP_SESSION_OUTGOING,
                                           DROP_SESSION_QOS2, DROP_SESSION};
    int rc = SQLITE_OK;

    for (size_t i = 0; rc == SQLITE_OK && i < sizeof(order) / sizeof(order[0]); i++)
        rc = keep_step(w, order[i], sqlite3_bind_int64(w->stmt[order[i]], 1, id));
    return rc;
}

static int keep_set_will(struct keep_writer *w, const struct journal_record *r)
{
    sqlite3_stmt *st = w->stmt[SET_WILL];
    int rc = sqlite3_bind_int64(st, 1, (int64_t)r->session);

    if (rc == SQLITE_OK && r->type == JOURNAL_WILL_SET) {
        rc = sqlite3_bind_int64(st, 2, (int64_t)r->message);
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(st, 3, r->when_ms);
    }
    return keep_step(w, SET_WILL, rc); /* unbound ?2 and ?3 are NULL: WILL_CLEAR */
}

/* Apply one record. Returns an SQLite code. */
static int keep_apply(struct keep_writer *w, const struct journal_record *r, uint8_t *ids)
{
    sqlite3_stmt *const *st = w->stmt;
    int64_t session = (int64_t)r->session;

    switch ((enum journal_type)r->type) {
    case JOURNAL_MESSAGE_PUT:
        return keep_step(w, PUT_MESSAGE, bind_message(st[PUT_MESSAGE], r));
    case JOURNAL_MESSAGE_DROP:
        return keep_step(w, DROP_MESSAGE, bind_pair(st[DROP_MESSAGE], (int64_t)r->message, r, 0));
    case JOURNAL_RETAIN_SET: {
        int rc = bind_pair(st[SET_RETAINED], r->instance, r, 'n');
        if (rc == SQLITE_OK)
            rc = sqlite3_bind_int64(st[SET_RETAINED], 3, (int64_t)r->message);
        return keep_step(w, SET_RETAINED, rc);
    }
    case JOURNAL_RETAIN_CLEAR:
        return keep_step(w, CLEAR_RETAINED, bind_pair(st[CLEAR_RETAINED], r->instance, r, 'n'));
    case JOURNAL_SESSION_PUT:
        return keep_step(w, PUT_SESSION, bind_session(st[PUT_SESSION], r));
    case JOURNAL_SESSION_DROP:
        return keep_drop_session(w, session);
    case JOURNAL_SUB_PUT:
        return keep_step(w, PUT_SUB, bind_sub(st[PUT_SUB], r));
    case JOURNAL_SUB_DROP:
        return keep_step(w, DROP_SUB, bind_pair(st[DROP_SUB], session, r, 'n'));
    case JOURNAL_OUT_PUT:
        return keep_step(w, PUT_OUTGOING, bind_outgoing(st[PUT_OUTGOING], r, ids));
    case JOURNAL_OUT_DROP:
        return keep_step(w, DROP_OUTGOING, bind_pair(st[DROP_OUTGOING], session, r, 's'));
    case JOURNAL_QOS2_ADD:
        return keep_step(w, ADD_QOS2, bind_pair(st[ADD_QOS2], session, r, 'p'));
    case JOURNAL_QOS2_DROP:
        return keep_step(w, DROP_QOS2, bind_pair(st[DROP_QOS2], session, r, 'p'));
    case JOURNAL_WILL_SET:
    case JOURNAL_WILL_CLEAR:
        return keep_set_will(w, r);
    }
    return SQLITE_MISUSE;
}

/* Apply every record of `batch`. Returns an SQLite code. */
static int keep_apply_batch(struct keep_writer *w, const struct journal *batch)
{
    struct journal_record r;
    size_t pos = 0;
    uint8_t small[64 * 4], *ids = small;
    size_t ids_cap = sizeof(small);
    int rc = SQLITE_OK;

    while (rc == SQLITE_OK && journal_next(batch, &pos, &r)) {
        if (r.sub_id_count * 4 > ids_cap) {
            uint8_t *grown = malloc(r.sub_id_count * 4);
            if (!grown) {
                rc = SQLITE_NOMEM;
                break;
            }
            if (ids != small)
                free(ids);
            ids = grown;
            ids_cap = r.sub_id_count * 4;
        }
        rc = keep_apply(w, &r, ids);
    }
    if (ids != small)
        free(ids);
    return rc;
}

/* The batches of `list` were not written: say so, with how many changes went. */
static void keep_lost(struct keep_writer *w, const struct keep_batch_node *list, const char *why)
{
    size_t records = 0;

    for (const struct keep_batch_node *n = list; n; n = n->next)
        records += n->batch->count;
    w->failed_turns++;
    log_error("database %s: %zu changes to retained messages and sessions not written: %s "
              "(%llu failed writes so far)",
              w->path, records, why, (unsigned long long)w->failed_turns);
}

/* Is `rc` another connection's lock (aviaryctl's, a backup's), which passes? */
static bool keep_locked(int rc)
{
    return (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED;
}

/*
 * One transaction for every batch of `list`. Returns true when it is done,
 * false when another connection held the database past the busy timeout:
 * the batches wait for the next try, and the broker slows the publishers
 * behind them (broker/durable.h). Any other failure loses them: said loudly.
 */
static bool keep_commit(struct keep_writer *w, struct keep_batch_node *list)
{
    size_t records = 0;
    int rc = sqlite3_exec(w->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);

    for (struct keep_batch_node *n = list; rc == SQLITE_OK && n; n = n->next) {
        rc = keep_apply_batch(w, n->batch);
        records += n->batch->count;
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(w->db, "COMMIT", NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        return true;
    /* Our own out of memory is no SQLite error: its message would be an older call's. */
    char why[256];
    if (rc == SQLITE_NOMEM) {
        snprintf(why, sizeof(why), "%s", sqlite3_errstr(rc));
    } else {
        rc = sqlite3_extended_errcode(w->db);
        snprintf(why, sizeof(why), "%s", sqlite3_errmsg(w->db)); /* ROLLBACK overwrites it */
    }
    if (!sqlite3_get_autocommit(w->db))
        sqlite3_exec(w->db, "ROLLBACK", NULL, NULL, NULL);
    if (keep_locked(rc)) {
        log_warning("database %s is locked by another connection: changes to retained messages "
                    "and sessions wait",
                    w->path);
        return false;
    }
    keep_lost(w, list, why);
    return true;
}

/* Hand the batches back to the core thread, which may reuse them. */
static void keep_settle(struct keep_writer *w, struct keep_batch_node *list)
{
    while (list) {
        struct keep_batch_node *next = list->next;
        while (mailbox_put(w->settled, list->batch) < 0) {
            struct timespec pause = {0, KEEP_SETTLE_RETRY_MS * 1000000L};
            nanosleep(&pause, NULL);
        }
        free(list);
        list = next;
    }
}

/* Append to `list` the batches queued since it was taken. Returns the list. */
static struct keep_batch_node *keep_take_more(struct keep_writer *w, struct keep_batch_node *list,
                                              bool *stopping)
{
    struct keep_batch_node *last = list;

    while (last->next)
        last = last->next;
    pthread_mutex_lock(&w->lock);
    last->next = w->head;
    w->head = w->tail = NULL;
    *stopping = w->stopping;
    pthread_mutex_unlock(&w->lock);
    return list;
}

static void *keep_writer_main(void *arg)
{
    struct keep_writer *w = arg;

    for (;;) {
        pthread_mutex_lock(&w->lock);
        while (!w->head && !w->stopping)
            pthread_cond_wait(&w->wake, &w->lock);
        struct keep_batch_node *list = w->head;
        w->head = w->tail = NULL;
        bool stopping = w->stopping;
        pthread_mutex_unlock(&w->lock);
        if (!list && stopping)
            return NULL;
        /* Locked: try again with what came meanwhile, but give up on a lock at stop. */
        while (!keep_commit(w, list)) {
            if (stopping && w->locked_turns++ > 0) {
                keep_lost(w, list, "the database stayed locked at stop");
                break;
            }
            list = keep_take_more(w, list, &stopping);
        }
        w->locked_turns = 0;
        keep_settle(w, list);
    }
}

static void keep_writer_free(struct keep_writer *w)
{
    for (size_t i = 0; i < KEEP_STMT_COUNT; i++)
        sqlite3_finalize(w->stmt[i]);
    sqlite3_close(w->db);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->wake);
    free(w->path);
    free(w);
}

struct keep_writer *keep_writer_start(const char *path, struct mailbox *settled, char *err,
                                      size_t errlen)
{
    struct keep_writer *w = calloc(1, sizeof(*w));

    if (!w || !(w->path = strdup(path))) {
        free(w);
        error_set(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->wake, NULL);
    w->settled = settled;
    w->db = keep_open(path, SQLITE_OPEN_READWRITE, err, errlen);
    for (size_t i = 0; w->db && i < KEEP_STMT_COUNT; i++) {
        if (sqlite3_prepare_v3(w->db, keep_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &w->stmt[i],
                               NULL) != SQLITE_OK) {
            db_error(w->db, path, "cannot prepare the writer's statements", err, errlen);
            goto fail;
        }
    }
    if (!w->db)
        goto fail;
    int rc = pthread_create(&w->thread, NULL, keep_writer_main, w);
    if (rc != 0) {
        error_set(err, errlen, "cannot start the database writer: %s", strerror(rc));
        goto fail;
    }
    return w;
fail:
    keep_writer_free(w);
    return NULL;
}

int keep_writer_submit(struct keep_writer *w, struct journal *batch)
{
    struct keep_batch_node *n = malloc(sizeof(*n));

    if (!n)
        return -ENOMEM;
    n->batch = batch;
    n->next = NULL;
    pthread_mutex_lock(&w->lock);
    if (w->tail)
        w->tail->next = n;
    else
        w->head = n;
    w->tail = n;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    return 0;
}

uint64_t keep_writer_stop(struct keep_writer *w)
{
    if (!w)
        return 0;
    pthread_mutex_lock(&w->lock);
    w->stopping = true;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    uint64_t failed = w->failed_turns;
    keep_writer_free(w);
    return failed;
}

/* ---- the loader ----------------------------------------------------------- */

/*
 * What nothing can use any more, removed before the load: what a deleted
 * instance left (cloud mode; aviaryctl deletes it, but a running broker may
 * have written more for it before it saw the deletion), rows of sessions
 * that are gone, messages whose expiry has passed (?1: now, wall-clock ms;
 * a will's expiry counts from its publication, so not a will) with what
 * refers to them, and messages nothing refers to.
 */
#define KEEP_EXPIRED                                                                               \
    "SELECT id FROM kept_messages WHERE expiry > 0 AND created_ms > 0 "                            \
    "AND created_ms + expiry * 1000 <= ?1"

static const char *const keep_gc_sql[] = {
    "DELETE FROM kept_retained WHERE instance <> 0 AND ?2 "
    "AND instance NOT IN (SELECT serial FROM instances)",
    "DELETE FROM kept_sessions WHERE instance <> 0 AND ?2 "
    "AND instance NOT IN (SELECT serial FROM instances)",
    "DELETE FROM kept_subscriptions WHERE session NOT IN (SELECT id FROM kept_sessions)",
    "DELETE FROM kept_outgoing WHERE session NOT IN (SELECT id FROM kept_sessions)",
    "DELETE FROM kept_qos2 WHERE session NOT IN (SELECT id FROM kept_sessions)",
    "DELETE FROM kept_retained WHERE message IN (" KEEP_EXPIRED ")",
    /* What refers to a message that is not there (a write that failed): nothing to deliver. */
    "DELETE FROM kept_retained WHERE message NOT IN (SELECT id FROM kept_messages)",
    "DELETE FROM kept_outgoing WHERE message IS NOT NULL "
    "AND message NOT IN (SELECT id FROM kept_messages)",
    "UPDATE kept_sessions SET will_message = NULL, will_due_ms = NULL "
    "WHERE will_message IS NOT NULL AND will_message NOT IN (SELECT id FROM kept_messages)",
    "DELETE FROM kept_outgoing WHERE state = 0 AND message IN (" KEEP_EXPIRED ")",
    STORE_KEPT_UNREFERENCED_SQL,
};

/* The instances the mode loads: cloud mode's (serial <> 0), or desktop mode's (0). */
#define KEEP_MINE(col)                                                                             \
    "(" col " IN (SELECT serial FROM instances) AND ?1) OR (" col " = 0 AND NOT ?1)"

#define KEEP_MY_SESSIONS "(SELECT id FROM kept_sessions WHERE " KEEP_MINE("instance") ")"

/* The messages the mode's retained topics, queues and wills refer to. */
#define KEEP_MINE_INSTANCE KEEP_MINE("instance")
#define KEEP_MY_MESSAGES                                                                           \
    "(id IN (SELECT message FROM kept_retained WHERE " KEEP_MINE_INSTANCE ") "                     \
    "OR id IN (SELECT message FROM kept_outgoing WHERE session IN " KEEP_MY_SESSIONS ") "          \
    "OR id IN (SELECT will_message FROM kept_sessions WHERE " KEEP_MINE_INSTANCE "))"

/* What the load reads, in the order a replay needs (see keep_load). */
static const char *const keep_load_sql[] = {
    "SELECT id, topic, payload, props, qos, retain, expiry, created_ms FROM kept_messages "
    "WHERE " KEEP_MY_MESSAGES " ORDER BY id",
    "SELECT instance, topic, message FROM kept_retained WHERE " KEEP_MINE("instance"),
    "SELECT id, instance, client_id, token, expiry, offline_since_ms FROM kept_sessions "
    "WHERE " KEEP_MINE("instance") " ORDER BY id",
    "SELECT session, filter, options, leading_slash, sub_id FROM kept_subscriptions "
    "WHERE session IN " KEEP_MY_SESSIONS,
    "SELECT session, seq, message, qos, state, packet_id, flags, sub_ids FROM kept_outgoing "
    "WHERE session IN " KEEP_MY_SESSIONS " ORDER BY session, seq",
    "SELECT session, packet_id FROM kept_qos2 WHERE session IN " KEEP_MY_SESSIONS,
    "SELECT id, will_message, will_due_ms FROM kept_sessions WHERE will_message IS NOT NULL "
    "AND (" KEEP_MINE("instance") ")",
};

static const uint8_t keep_load_types[] = {
    JOURNAL_MESSAGE_PUT, JOURNAL_RETAIN_SET, JOURNAL_SESSION_PUT, JOURNAL_SUB_PUT,
    JOURNAL_OUT_PUT,     JOURNAL_QOS2_ADD,   JOURNAL_WILL_SET,
};

static int64_t col_int(sqlite3_stmt *st, int i)
{
    return sqlite3_column_int64(st, i);
}

static const char *col_text(sqlite3_stmt *st, int i, size_t *len)
{
    const char *s = (const char *)sqlite3_column_text(st, i);
    *len = (size_t)sqlite3_column_bytes(st, i);
    return s ? s : "";
}

static const uint8_t *col_blob(sqlite3_stmt *st, int i, size_t *len)
{
    const uint8_t *p = sqlite3_column_blob(st, i);
    *len = (size_t)sqlite3_column_bytes(st, i);
    return p;
}

/* Little-endian Subscription Identifiers from a blob into `ids` (room for len / 4). */
static void sub_ids_decode(const uint8_t *p, size_t len, uint32_t *ids)
{
    for (size_t i = 0; i < len / 4; i++)
        ids[i] = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 | (uint32_t)p[4 * i + 2] << 16 |
                 (uint32_t)p[4 * i + 3] << 24;
}

/* The row `st` is on as a record of `type`; `ids` has room for its identifiers. */
static void keep_row(sqlite3_stmt *st, uint8_t type, struct journal_record *r, uint32_t *ids)
{
    *r = (struct journal_record){.type = type};
    switch (type) {
    case JOURNAL_MESSAGE_PUT:
        r->message = (uint64_t)col_int(st, 0);
        r->name = col_text(st, 1, &r->name_len);
        r->payload = col_blob(st, 2, &r->payload_len);
        r->props = col_blob(st, 3, &r->props_len);
        r->qos = (uint8_t)col_int(st, 4);
        r->flags = col_int(st, 5) ? JOURNAL_RETAIN : 0;
        r->expiry = (uint32_t)col_int(st, 6);
        r->when_ms = col_int(st, 7);
        break;
    case JOURNAL_RETAIN_SET:
        r->instance = col_int(st, 0);
        r->name = col_text(st, 1, &r->name_len);
        r->message = (uint64_t)col_int(st, 2);
        break;
    case JOURNAL_SESSION_PUT:
        r->session = (uint64_t)col_int(st, 0);
        r->instance = col_int(st, 1);
        r->name = col_text(st, 2, &r->name_len);
        r->token = col_text(st, 3, &r->token_len);
        r->expiry = (uint32_t)col_int(st, 4);
        r->when_ms = col_int(st, 5);
        break;
    case JOURNAL_SUB_PUT:
        r->session = (uint64_t)col_int(st, 0);
        r->name = col_text(st, 1, &r->name_len);
        r->options = (uint8_t)col_int(st, 2);
        r->flags = col_int(st, 3) ? JOURNAL_LEADING_SLASH : 0;
        r->sub_id = (uint32_t)col_int(st, 4);
        break;
    case JOURNAL_OUT_PUT: {
        size_t len;
        const uint8_t *blob;
        r->session = (uint64_t)col_int(st, 0);
        r->seq = (uint64_t)col_int(st, 1);
        r->message = (uint64_t)col_int(st, 2); /* NULL reads as 0 */
        r->qos = (uint8_t)col_int(st, 3);
        r->state = (uint8_t)col_int(st, 4);
        r->packet_id = (uint16_t)col_int(st, 5);
        r->flags = (uint8_t)col_int(st, 6);
        blob = col_blob(st, 7, &len);
        sub_ids_decode(blob, len, ids);
        r->sub_ids = ids;
        r->sub_id_count = len / 4;
        break;
    }
    case JOURNAL_QOS2_ADD:
        r->session = (uint64_t)col_int(st, 0);
        r->packet_id = (uint16_t)col_int(st, 1);
        break;
    case JOURNAL_WILL_SET:
        r->session = (uint64_t)col_int(st, 0);
        r->message = (uint64_t)col_int(st, 1);
        r->when_ms = col_int(st, 2);
        break;
    }
}

/* Run one of keep_load_sql and append its rows to `out`. Returns an SQLite code. */
static int keep_load_query(sqlite3 *db, size_t q, bool cloud, struct journal *out)
{
    sqlite3_stmt *st;
    uint32_t small[64], *ids = small;
    int rc = sqlite3_prepare_v2(db, keep_load_sql[q], -1, &st, NULL);

    if (rc != SQLITE_OK)
        return rc;
    if (sqlite3_bind_parameter_count(st) > 0)
        sqlite3_bind_int(st, 1, cloud);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        struct journal_record r;
        size_t n =
            keep_load_types[q] == JOURNAL_OUT_PUT ? (size_t)sqlite3_column_bytes(st, 7) / 4 : 0;
        if (n > sizeof(small) / sizeof(small[0])) {
            if (ids != small)
                free(ids);
            if (!(ids = malloc(n * sizeof(*ids)))) {
                ids = small;
                rc = SQLITE_NOMEM;
                break;
            }
        }
        keep_row(st, keep_load_types[q], &r, ids);
        if (journal_append(out, &r) < 0) {
            rc = SQLITE_NOMEM;
            break;
        }
    }
    if (ids != small)
        free(ids);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Remove what nothing can use any more (keep_gc_sql), in one transaction. */
static int keep_collect(sqlite3 *db, const char *path, bool cloud, char *err, size_t errlen)
{
    int rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    struct timespec now;

    clock_gettime(CLOCK_REALTIME, &now);
    for (size_t i = 0; rc == SQLITE_OK && i < sizeof(keep_gc_sql) / sizeof(keep_gc_sql[0]); i++) {
        sqlite3_stmt *st;
        rc = sqlite3_prepare_v2(db, keep_gc_sql[i], -1, &st, NULL);
        if (rc != SQLITE_OK)
            break;
        int params = sqlite3_bind_parameter_count(st);
        if (params >= 1)
            sqlite3_bind_int64(st, 1, (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000);
        if (params >= 2)
            sqlite3_bind_int(st, 2, cloud);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    if (rc == SQLITE_OK && (rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL)) == SQLITE_OK)
        return SQLITE_OK;
    /* The reason first: ROLLBACK clears it. */
    db_error(db, path, "cannot remove what expired while the broker was down", err, errlen);
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

/* One past the largest id each table holds. */
static int keep_next(sqlite3 *db, struct keep_next_ids *next)
{
    /* Past every id a row names, not only the rows of their own tables: an id is never reused. */
    static const char sql[] = "SELECT max((SELECT ifnull(max(id), 0) FROM kept_messages), "
                              "(SELECT ifnull(max(message), 0) FROM kept_retained), "
                              "(SELECT ifnull(max(message), 0) FROM kept_outgoing), "
                              "(SELECT ifnull(max(will_message), 0) FROM kept_sessions)), "
                              "max((SELECT ifnull(max(id), 0) FROM kept_sessions), "
                              "(SELECT ifnull(max(session), 0) FROM kept_subscriptions), "
                              "(SELECT ifnull(max(session), 0) FROM kept_outgoing), "
                              "(SELECT ifnull(max(session), 0) FROM kept_qos2)), "
                              "(SELECT ifnull(max(seq), 0) FROM kept_outgoing)";
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);

    if (rc != SQLITE_OK)
        return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        next->message = (uint64_t)col_int(st, 0) + 1;
        next->session = (uint64_t)col_int(st, 1) + 1;
        next->seq = (uint64_t)col_int(st, 2) + 1;
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    return rc;
}

int keep_load(const char *path, bool cloud, struct journal *out, struct keep_next_ids *next,
              char *err, size_t errlen)
{
    sqlite3 *db = keep_open(path, SQLITE_OPEN_READWRITE, err, errlen);
    int rc;

    if (!db)
        return STORE_E_DB;
    if (keep_collect(db, path, cloud, err, errlen) != SQLITE_OK) {
        rc = STORE_E_DB;
        goto out;
    }
    /* One read transaction: the parts agree with each other. */
    rc = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    for (size_t q = 0; rc == SQLITE_OK && q < sizeof(keep_load_sql) / sizeof(keep_load_sql[0]); q++)
        rc = keep_load_query(db, q, cloud, out);
    if (rc == SQLITE_OK)
        rc = keep_next(db, next);
    if (rc == SQLITE_NOMEM) {
        error_set(err, errlen, "database %s: out of memory loading what it keeps", path);
        rc = STORE_E_NOMEM;
    } else if (rc != SQLITE_OK) {
        rc = db_error(db, path, "cannot load retained messages and sessions", err, errlen);
    }
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
out:
    sqlite3_close(db);
    return rc;
}

/* ---- the backup ----------------------------------------------------------- */

/* Pause between backup steps that found the source locked (the broker mid-commit). */
#define KEEP_BACKUP_RETRY_MS 20
#define KEEP_BACKUP_TRIES 500

/* Copy `src` into `dst` in one step, again while the source is busy. Returns an SQLite code. */
static int keep_backup_copy(sqlite3 *src, sqlite3 *dst)
{
    sqlite3_backup *b = sqlite3_backup_init(dst, "main", src, "main");
    int rc = SQLITE_BUSY;

    if (!b)
        return sqlite3_errcode(dst);
    for (int tries = 0; tries < KEEP_BACKUP_TRIES; tries++) {
        rc = sqlite3_backup_step(b, -1);
        if (rc != SQLITE_BUSY && rc != SQLITE_LOCKED)
            break;
        struct timespec pause = {0, KEEP_BACKUP_RETRY_MS * 1000000L};
        nanosleep(&pause, NULL);
    }
    int finish = sqlite3_backup_finish(b);
    return rc == SQLITE_DONE ? finish : rc;
}

int keep_backup(const char *path, const char *dest, char *err, size_t errlen)
{
    char tmp[4096];
    sqlite3 *src = NULL, *dst = NULL;
    int rc = STORE_E_DB;

    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", dest) >= sizeof(tmp)) {
        error_set(err, errlen, "%s: path too long", dest);
        return STORE_E_DB;
    }
    /* The copy holds every token's secret hash: only its owner may read it. */
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        error_set(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        return STORE_E_DB;
    }
    close(fd);
    if (!(src = keep_open(path, SQLITE_OPEN_READONLY, err, errlen)))
        goto out;
    if (!(dst = keep_open(tmp, SQLITE_OPEN_READWRITE, err, errlen)))
        goto out;
    int copied = keep_backup_copy(src, dst);
    if (copied != SQLITE_OK) {
        error_set(err, errlen, "cannot copy %s: %s", path, sqlite3_errstr(copied));
        goto out;
    }
    if (sqlite3_close(dst) != SQLITE_OK) {
        error_set(err, errlen, "cannot write %s: %s", tmp, sqlite3_errmsg(dst));
        goto out;
    }
    dst = NULL;
    if (rename(tmp, dest) < 0) {
        error_set(err, errlen, "cannot rename %s to %s: %s", tmp, dest, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    sqlite3_close(src);
    sqlite3_close(dst);
    if (rc != 0)
        unlink(tmp);
    return rc;
}
