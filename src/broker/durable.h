/*
 * durable — the core thread's side of what the broker keeps across a
 * restart: changes to retained messages and persistent sessions, gathered
 * as journal records (util/journal.h) into batches that a writer thread
 * (store/keep.h, wired by the program) commits to the database.
 *
 * The core thread never waits for the database. A batch goes to the writer
 * DURABLE_FLUSH_MS after its first record (sooner when it is large) and
 * comes back (durable_settled) once committed. What is handed over and not
 * yet committed is the backlog; each instance's share of it is counted, and
 * an instance whose share is over its bound (or any instance with a share
 * while the whole backlog is over the broker's) must slow down: its
 * publishers stop being read (durable_over) until the writer catches up,
 * and the broker's `resume` callback takes them again.
 *
 * The modules that change kept state build the records (session.c,
 * conn.c, route.c) and append them here; a message is written once, by id,
 * the first time something kept refers to it, and dropped from the
 * database when it is freed. Core thread only.
 */
#ifndef AVIARY_DURABLE_H
#define AVIARY_DURABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker/message.h"

struct event_base;
struct durable_batch;
struct journal;
struct journal_record;

/* A batch waits at most this long for more records before it goes to the writer. */
#define DURABLE_FLUSH_MS 50
/* A batch this large goes at once. */
#define DURABLE_BATCH_BYTES (1024 * 1024)
/* One instance's share of the backlog beyond which its publishers wait. */
#define DURABLE_INSTANCE_BACKLOG (8 * 1024 * 1024)
/* The whole backlog beyond which every instance with a share in it waits. */
#define DURABLE_BACKLOG (64 * 1024 * 1024)

/* One instance's share of the backlog; the instance and the batches hold references. */
struct durable_backlog {
    size_t bytes;
    unsigned refs;
    struct durable_batch *batch; /* the batch it was last charged in, and where */
    size_t charge;
};

/* Hands a batch to the writer: 0, or -ENOMEM (the batch is still the caller's). */
typedef int (*durable_submit_fn)(void *ctx, struct journal *batch);

struct durable;

/*
 * Keep through `submit`. `resume(resume_ctx)` is called when the backlog has
 * shrunk enough for publishers that durable_over() held back to go on.
 * Returns NULL when out of memory.
 */
struct durable *durable_new(struct event_base *base, durable_submit_fn submit, void *submit_ctx,
                            void (*resume)(void *ctx), void *resume_ctx);

/* Ids to give from now on (past every one the database holds). */
void durable_set_next_ids(struct durable *d, uint64_t message, uint64_t session, uint64_t seq);

/* While a restore replays what the database holds: record nothing (it is there already). */
void durable_set_quiet(struct durable *d, bool quiet);

/* Is `d` recording? False for NULL, while quiet and once finished. */
bool durable_active(const struct durable *d);

/* Fresh ids for a kept session and for a session's outgoing message. */
uint64_t durable_next_session(struct durable *d);
uint64_t durable_next_seq(struct durable *d);

/*
 * Append `r`, charged to `bl` (may be NULL). Out of memory loses the record
 * and says so. Nothing happens when `d` is not active.
 */
void durable_append(struct durable *d, struct durable_backlog *bl, const struct journal_record *r);

/*
 * The id under which `m` is kept, writing it first when this is the first
 * time something kept refers to it, with its publication time so that its
 * expiry counts on across a restart (a `will` has none yet: its expiry
 * counts from when it is published).
 */
uint64_t durable_keep_message(struct durable *d, struct durable_backlog *bl, struct message *m,
                              bool will);

/* A kept will `m` was published now: its expiry counts from now, in the database too. */
void durable_will_published(struct durable *d, struct durable_backlog *bl, struct message *m);

/* A message replayed from the database is kept under `id` already. */
void durable_adopt_message(struct durable *d, struct message *m, uint64_t id);

/* Must the publishers of the instance with backlog share `bl` wait for the writer? */
bool durable_over(struct durable *d, const struct durable_backlog *bl);

/* The writer committed `batch` (from the settled mailbox): release its charges, reuse it. */
void durable_settled(struct durable *d, struct journal *batch);

/*
 * Stopping: hand the current batch to the writer (which the program then
 * stops, applying everything queued) and record nothing more; freeing the
 * broker after this writes nothing. Settled batches may still come back.
 * Frees `d`'s event: the event base may go after this, `d` may not.
 */
void durable_finish(struct durable *d);

/*
 * Free `d` and the batches it holds: after durable_finish(), the writer's
 * stop and the event base's end (whose last output may still hold messages
 * that tell `d` when they go). NULL is fine.
 */
void durable_free(struct durable *d);

/* A new share of the backlog for an instance (one reference), or NULL when out of memory. */
struct durable_backlog *durable_backlog_new(void);
void durable_backlog_unref(struct durable_backlog *bl);

/* The wall-clock time now, Unix milliseconds. */
int64_t durable_wall_ms(void);

#endif
