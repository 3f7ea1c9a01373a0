/*
 * watcher — keeps the broker's catalog in step with the database.
 *
 * aviaryctl writes the database (or, in a cluster, the catalog in Redis:
 * store/shared.h) while the broker runs. A watcher thread
 * polls SQLite's data_version every WATCHER_INTERVAL_MS and, when it
 * changed, loads a new catalog off the core thread, so the event loop never
 * waits on the disk. The new catalog waits in a mailbox (util/mailbox.h)
 * holding one at most (a newer one replaces one not yet taken) whose pipe
 * wakes the core thread, which calls watcher_take(). The watcher owns its thread, its SQLite
 * connection and the catalog waiting in the mailbox; a taken catalog is the
 * caller's.
 */
#ifndef AVIARY_WATCHER_H
#define AVIARY_WATCHER_H

#include <stddef.h>
#include <stdint.h>

#include "tenancy/catalog.h"
#include "util/limits.h"
#include "util/redis_url.h"

/* Changes reach the broker within this much (plus the load time). */
#define WATCHER_INTERVAL_MS 500

struct watcher;

/*
 * Open (creating and migrating) the database at `path` and start the
 * thread, which loads a first catalog at once (so that nothing committed
 * since the caller's own start-up load is missed) and then one per change.
 * Limits start from `base`. Returns the watcher, or NULL with the reason in
 * `err`. Start it after any fork(): a thread does not survive one.
 */
struct watcher *watcher_start(const char *path, const struct limits *base, char *err,
                              size_t errlen);

/*
 * The same for a cluster: the thread follows the catalog in Redis at `url`
 * (ca_file: see shared_new()) instead of a file, polling its version every
 * WATCHER_INTERVAL_MS; `version` is that of the catalog the caller loaded at
 * start. While Redis cannot be reached the catalog in force stays, a
 * warning says so once, and each poll tries again.
 */
struct watcher *watcher_start_shared(const struct redis_url *url, const char *ca_file,
                                     int64_t version, const struct limits *base, char *err,
                                     size_t errlen);

/* Becomes readable when a new catalog waits. */
int watcher_fd(const struct watcher *w);

/*
 * Ask for look number `n` at the database, now rather than at the next poll
 * (a login missed: aviaryctl may have just made its instance or token). The
 * look starts after this call, and a changed database yields a new catalog
 * as usual; the fd becomes readable when it is done.
 */
void watcher_look(struct watcher *w, uint64_t n);

/*
 * Empty the pipe and return the waiting catalog (the caller's), or NULL. Every
 * look up to *looked has been made, and the catalog it loaded is the one
 * returned or one taken before.
 */
struct catalog *watcher_take(struct watcher *w, uint64_t *looked);

/* New base limits (SIGHUP): a new catalog is built with them at once. */
void watcher_set_base(struct watcher *w, const struct limits *base);

/* Stop and join the thread; free everything. NULL is fine. */
void watcher_stop(struct watcher *w);

#endif
