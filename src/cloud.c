/*
 * cloud — where cloud mode's catalog comes from (see cloud.h).
 */
#include "cloud.h"

#include <stdbool.h>
#include <stdio.h>

#include "store/shared.h"
#include "store/store.h"
#include "tenancy/catalog.h"
#include "tenancy/jobs.h"
#include "tenancy/watcher.h"
#include "util/config.h"
#include "util/error.h"
#include "util/redis_url.h"

/* The node's own database, created when missing, with the cluster's instances. */
static int own_database(const struct config *cfg, struct store *catalog, char *err, size_t errlen)
{
    struct store *own = store_open(config_db_path(cfg), err, errlen);
    int rc = own ? store_mirror_instances(own, catalog, err, errlen) : -1;

    store_close(own);
    return rc < 0 ? -1 : 0;
}

/* The first catalog of a cluster, from Redis at cfg's cluster URL. */
static struct catalog *cluster_catalog_load(const struct config *cfg, int64_t *version, char *err,
                                            size_t errlen)
{
    struct redis_url url;
    struct catalog *cat = NULL;
    struct store *s = NULL;
    struct shared *sh;
    char why[512];

    if (redis_url_parse(cfg->cluster_url, &url, err, errlen) < 0)
        return NULL;
    sh = shared_new(&url, cfg->cluster_ca);
    redis_url_clear(&url);
    if (!sh) {
        error_set(err, errlen, "out of memory");
        return NULL;
    }
    int rc = shared_fetch(sh, false, &s, version, why, sizeof(why));
    if (rc == SHARED_E_EMPTY)
        error_set(err, errlen, "Redis at %s holds no catalog: run aviaryctl --cluster URL init",
                  shared_shown(sh));
    else if (rc < 0)
        error_set(err, errlen, "%s", why);
    else if (own_database(cfg, s, err, errlen) == 0)
        cat = catalog_load(s, &cfg->limits, err, errlen);
    store_close(s);
    shared_free(sh);
    return cat;
}

struct catalog *cloud_catalog_load(const struct config *cfg, int64_t *version, char *err,
                                   size_t errlen)
{
    *version = 0;
    if (cfg->cluster_url)
        return cluster_catalog_load(cfg, version, err, errlen);
    struct store *st = store_open(config_db_path(cfg), err, errlen);
    struct catalog *cat = st ? catalog_load(st, &cfg->limits, err, errlen) : NULL;
    store_close(st);
    return cat;
}

struct watcher *cloud_watcher_start(const struct config *cfg, int64_t version, char *err,
                                    size_t errlen)
{
    struct redis_url url;

    if (!cfg->cluster_url)
        return watcher_start(config_db_path(cfg), &cfg->limits, err, errlen);
    if (redis_url_parse(cfg->cluster_url, &url, err, errlen) < 0)
        return NULL;
    struct watcher *w =
        watcher_start_shared(&url, cfg->cluster_ca, version, &cfg->limits, err, errlen);
    redis_url_clear(&url);
    return w;
}

struct jobs *cloud_jobs_start(const struct config *cfg, char *err, size_t errlen)
{
    struct redis_url url;

    if (!cfg->cluster_url)
        return jobs_start(config_db_path(cfg), err, errlen);
    if (redis_url_parse(cfg->cluster_url, &url, err, errlen) < 0)
        return NULL;
    struct jobs *js = jobs_start_shared(&url, cfg->cluster_ca, err, errlen);
    redis_url_clear(&url);
    return js;
}
