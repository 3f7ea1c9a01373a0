/*
 * shared — the catalog database kept in Redis, for a cluster of aviaryd
 * nodes (aviaryd's `cluster` directive, aviaryctl --cluster).
 *
 * The whole catalog (instances, plans, tokens, admin keys) is one SQLite
 * database, serialized (store_serialize) into the key SHARED_KEY_DB; the
 * integer at SHARED_KEY_VERSION grows by one with every change. A reader
 * fetches both in one MULTI/EXEC and opens the image in memory
 * (store_open_image), so every store/ and tenancy/ function works on it
 * unchanged. A writer publishes with optimistic concurrency: WATCH the
 * version, check it is still the one fetched, then MULTI, SET the image,
 * INCR the version, EXEC. A change in between makes the publish fail with
 * SHARED_E_CONFLICT, and the caller runs its whole change again on a fresh
 * fetch (shared_change() does both, at most SHARED_ATTEMPTS times).
 *
 * One struct shared is one blocking Redis connection (util/redis_client.h),
 * for one thread; it connects again by itself after a failure. Never on the
 * core thread.
 */
#ifndef AVIARY_SHARED_H
#define AVIARY_SHARED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/redis_url.h"

#define SHARED_KEY_DB "aviary:catalog:db"
#define SHARED_KEY_VERSION "aviary:catalog:version"
/* A change that conflicts this many times in a row gives up (SHARED_E_CONFLICT). */
#define SHARED_ATTEMPTS 10

enum shared_error {
    SHARED_E_REDIS = -20,    /* Redis cannot be reached, or refused a command */
    SHARED_E_CONFLICT = -21, /* another writer published first: run the change again */
    SHARED_E_EMPTY = -22,    /* Redis holds no catalog (aviaryctl --cluster URL init) */
    SHARED_E_BAD = -23,      /* the value at SHARED_KEY_DB is not a catalog */
};

struct shared;
struct store;

/*
 * A handle on the catalog in Redis at `url` (copied), connecting when first
 * used; `ca_file` (copied; NULL: the system's CAs) verifies a rediss://
 * server. Returns NULL only when out of memory.
 */
struct shared *shared_new(const struct redis_url *url, const char *ca_file);

/* Close the connection and free everything. NULL is fine. */
void shared_free(struct shared *sh);

/* The URL as logs show it (no password). */
const char *shared_shown(const struct shared *sh);

/*
 * The current version (0 when there is no catalog yet). Returns 0, or
 * SHARED_E_REDIS with the reason in `err`.
 */
int shared_version(struct shared *sh, int64_t *version, char *err, size_t errlen);

/*
 * The catalog as it is now: *out an in-memory store of it (the caller's,
 * store_close()), *version its version. Without a catalog in Redis: with
 * `create`, a new empty one at version 0; else SHARED_E_EMPTY. Returns 0,
 * SHARED_E_REDIS, SHARED_E_EMPTY, SHARED_E_BAD or a STORE_E_* code, with the
 * reason in `err`.
 */
int shared_fetch(struct shared *sh, bool create, struct store **out, int64_t *version, char *err,
                 size_t errlen);

/*
 * Publish `s` (as store_serialize() writes it) as version `version` + 1,
 * provided Redis is still at `version`. Returns 0, SHARED_E_CONFLICT (nothing
 * written), SHARED_E_REDIS or STORE_E_NOMEM.
 */
int shared_publish(struct shared *sh, struct store *s, int64_t version, char *err, size_t errlen);

/*
 * A change: `fn` runs on a freshly fetched store (`create` as for
 * shared_fetch()) and returns 0 or a negative code of its own; when it
 * returns 0 and the database differs from what was fetched, the store is
 * published, and run again on a new fetch after a conflict (up to
 * SHARED_ATTEMPTS times in all: `fn` must have no effect outside `ctx` that
 * a second run would double). Returns `fn`'s code, or a SHARED_E_* code or
 * STORE_E_* code of the fetch or the publish with the reason in `err`.
 * *published (may be NULL) says whether a new version was written.
 */
int shared_change(struct shared *sh, bool create, int (*fn)(void *ctx, struct store *s), void *ctx,
                  bool *published, char *err, size_t errlen);

#endif
