/*
 * keep — what the broker keeps across a restart, in the database store.h
 * opens: retained messages and persistent sessions (the kept_* tables).
 *
 * Three jobs, each on its own SQLite connection:
 *  - the writer: a thread that applies batches of journal records
 *    (util/journal.h) to the database, one transaction per turn, and hands
 *    each batch back through a mailbox once it is committed. The core thread
 *    only ever takes a lock for as long as it takes to queue a pointer.
 *  - the loader: at start, before the listeners open, what the database
 *    holds for the mode, as journal records for broker/restore.c.
 *  - the backup: a consistent copy of a database in use (aviaryctl backup).
 *
 * The database runs in WAL mode with synchronous=NORMAL: a commit survives
 * the process being killed; a power loss may take the last commits with it,
 * never the database's integrity.
 */
#ifndef AVIARY_KEEP_H
#define AVIARY_KEEP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct journal;
struct mailbox;

struct keep_writer;

/*
 * Start the writer on a new connection to the database at `path` (which
 * store_open() has created and migrated). Committed batches go to `settled`.
 * Returns NULL with the reason in `err`.
 */
struct keep_writer *keep_writer_start(const char *path, struct mailbox *settled, char *err,
                                      size_t errlen);

/*
 * Queue `batch` (the writer's until it is put in `settled`). Batches are
 * applied in the order queued. Returns 0, or -ENOMEM (the batch is still the
 * caller's).
 */
int keep_writer_submit(struct keep_writer *w, struct journal *batch);

/*
 * Apply everything queued, stop the thread and close its connection. Returns
 * how many of its turns failed (and lost what they held; each was logged).
 * NULL is fine.
 */
uint64_t keep_writer_stop(struct keep_writer *w);

/* Ids the broker gives next, past every one the database holds. */
struct keep_next_ids {
    uint64_t message, session, seq;
};

/*
 * Remove what nothing refers to any more (cloud: what deleted instances left),
 * then append to `out` what is kept for the mode: cloud mode's instances
 * (`cloud`) or desktop mode's (serial 0). Records come in the order a replay
 * needs: messages, retained topics, sessions, their subscriptions, their
 * outgoing messages in order, their QoS 2 packet ids, their wills.
 * Returns 0, or a STORE_E_* code with the reason in `err`.
 */
int keep_load(const char *path, bool cloud, struct journal *out, struct keep_next_ids *next,
              char *err, size_t errlen);

/*
 * Copy the database at `path` to `dest` (written to a temporary file beside
 * it, then renamed over it) as one consistent snapshot, while other
 * connections go on writing. Returns 0, or a STORE_E_* code with the reason.
 */
int keep_backup(const char *path, const char *dest, char *err, size_t errlen);

#endif
