/*
 * cloud — where cloud mode's catalog comes from: the database file that
 * aviaryctl writes, or with the `cluster` directive the catalog in Redis
 * that every node of the cluster follows (store/shared.h). aviaryd calls
 * these at start; the threads they start are the watcher's and the
 * management API's jobs thread (tenancy/).
 */
#ifndef AVIARY_CLOUD_H
#define AVIARY_CLOUD_H

#include <stddef.h>
#include <stdint.h>

struct catalog;
struct config;
struct jobs;
struct watcher;

/*
 * The first catalog, with cfg's limits as the base. In a cluster it comes
 * from Redis (*version: its version; the file is then only the node's own:
 * created when missing, its instances made the cluster's so that what the
 * node keeps for them is found). Returns the catalog (the caller's), or
 * NULL with the reason in `err`.
 */
struct catalog *cloud_catalog_load(const struct config *cfg, int64_t *version, char *err,
                                   size_t errlen);

/*
 * The watcher of the database, or of Redis in a cluster (from `version`,
 * cloud_catalog_load()'s). NULL with the reason in `err`.
 */
struct watcher *cloud_watcher_start(const struct config *cfg, int64_t version, char *err,
                                    size_t errlen);

/* The management API's jobs thread, on the database or on the cluster's catalog. */
struct jobs *cloud_jobs_start(const struct config *cfg, char *err, size_t errlen);

#endif
