#include "tenancy/watcher.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/shared.h"
#include "store/store.h"
#include "util/log.h"
#include "util/mailbox.h"

struct watcher {
    pthread_t thread;
    bool thread_started;
    struct store *store;     /* used by the thread only, once it runs; NULL in a cluster */
    struct shared *shared;   /* in a cluster: the catalog in Redis (the thread's) */
    bool failing;            /* in a cluster: the last poll failed, and said so once */
    struct mailbox *mailbox; /* at most one catalog, loaded and not yet taken */
    int64_t version;         /* data_version (in a cluster: the catalog's version) last loaded */

    pthread_mutex_t lock; /* guards everything below */
    pthread_cond_t wake;
    bool stop;
    bool reload; /* base limits changed: load even if the data did not */
    struct limits base;
    uint64_t look_asked; /* the highest look at the database asked for */
    uint64_t look_done;  /* every look up to this one has been made */
};

/* Load a catalog from `s` with the current base limits and put it in the mailbox; 0 or -1. */
static int watcher_load(struct watcher *w, struct store *s)
{
    char err[256];

    pthread_mutex_lock(&w->lock);
    struct limits base = w->base;
    w->reload = false;
    pthread_mutex_unlock(&w->lock);

    struct catalog *cat = catalog_load(s, &base, err, sizeof(err));
    if (!cat) {
        log_warning("store: cannot reload instances and tokens: %s (keeping the previous ones, "
                    "trying again)",
                    err);
        return -1;
    }
    void *stale;
    if (mailbox_replace(w->mailbox, cat, &stale) < 0) {
        log_warning("store: cannot reload instances and tokens: out of memory (keeping the "
                    "previous ones, trying again)");
        catalog_free(cat);
        return -1;
    }
    /* Never seen by the core thread: its tokens have no other references. */
    catalog_free(stale);
    return 0;
}

/* One poll of the database file: load when its data_version moved (or `reload`). */
static void watcher_poll_file(struct watcher *w, bool reload)
{
    /* The version first: a change committed during the load is then seen as one. */
    int64_t version = store_data_version(w->store);

    if (version < 0)
        log_warning("store: cannot read the database's data_version");
    else if ((version != w->version || reload) && watcher_load(w, w->store) == 0)
        w->version = version; /* a failed load is tried again at the next poll */
}

/*
 * One poll of the cluster's Redis: load when the catalog's version moved (or
 * `reload`). A failure keeps the catalog in force and is logged once, and
 * its end once.
 */
static void watcher_poll_shared(struct watcher *w, bool reload)
{
    char err[512];
    struct store *s = NULL;
    int64_t version;
    int rc = shared_version(w->shared, &version, err, sizeof(err));

    if (rc == 0 && (version != w->version || reload))
        rc = shared_fetch(w->shared, false, &s, &version, err, sizeof(err));
    if (rc < 0 && !w->failing)
        log_warning("catalog: Redis at %s %s: %s; keeping the catalog of version %lld",
                    shared_shown(w->shared), rc == SHARED_E_REDIS ? "unreachable" : "unusable", err,
                    (long long)w->version);
    if (rc == 0 && w->failing)
        log_notice("catalog: Redis at %s answers again (catalog version %lld)",
                   shared_shown(w->shared), (long long)version);
    w->failing = rc < 0;
    if (s && watcher_load(w, s) == 0)
        w->version = version;
    store_close(s);
}

static void *watcher_main(void *arg)
{
    struct watcher *w = arg;

    pthread_mutex_lock(&w->lock);
    while (!w->stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += (long)WATCHER_INTERVAL_MS * 1000000L;
        until.tv_sec += until.tv_nsec / 1000000000L;
        until.tv_nsec %= 1000000000L;
        while (!w->stop && !w->reload && w->look_asked == w->look_done &&
               pthread_cond_timedwait(&w->wake, &w->lock, &until) != ETIMEDOUT)
            ;
        if (w->stop)
            break;
        bool reload = w->reload;
        /* Looks asked from now on may come too late for this one: they get the next. */
        uint64_t look = w->look_asked;
        pthread_mutex_unlock(&w->lock);

        if (w->shared)
            watcher_poll_shared(w, reload);
        else
            watcher_poll_file(w, reload);
        pthread_mutex_lock(&w->lock);
        if (look > w->look_done) {
            /* After the mailbox: the core takes the catalog before it hears the look is done. */
            w->look_done = look;
            mailbox_wake(w->mailbox);
        }
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

/* A watcher with nothing to follow yet, or NULL. */
static struct watcher *watcher_new(const struct limits *base, char *err, size_t errlen)
{
    struct watcher *w = calloc(1, sizeof(*w));

    if (!w) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    w->base = *base;
    w->reload = true;
    pthread_mutex_init(&w->lock, NULL);
    /* A wall clock set back must not stall the polling. */
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&w->wake, &attr);
    pthread_condattr_destroy(&attr);
    return w;
}

/* Start the thread of `w`, which follows its store or its Redis; frees `w` on failure. */
static struct watcher *watcher_run(struct watcher *w, char *err, size_t errlen)
{
    if (!(w->mailbox = mailbox_new("store"))) {
        snprintf(err, errlen, "cannot create the watcher's pipe: %s", strerror(errno));
        goto fail;
    }
    int rc = pthread_create(&w->thread, NULL, watcher_main, w);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the watcher thread: %s", strerror(rc));
        goto fail;
    }
    w->thread_started = true;
    return w;
fail:
    watcher_stop(w);
    return NULL;
}

int watcher_fd(const struct watcher *w)
{
    return mailbox_fd(w->mailbox);
}

struct catalog *watcher_take(struct watcher *w, uint64_t *looked)
{
    /*
     * In this order: a look finished after the drain wakes the core again, and
     * the catalog of every look counted in *looked was put before it was counted.
     */
    mailbox_drain(w->mailbox);
    pthread_mutex_lock(&w->lock);
    *looked = w->look_done;
    pthread_mutex_unlock(&w->lock);
    return mailbox_pop(w->mailbox);
}

struct watcher *watcher_start(const char *path, const struct limits *base, char *err, size_t errlen)
{
    struct watcher *w = watcher_new(base, err, errlen);

    if (!w)
        return NULL;
    if (!(w->store = store_open(path, err, errlen))) {
        watcher_stop(w);
        return NULL;
    }
    return watcher_run(w, err, errlen);
}

struct watcher *watcher_start_shared(const struct redis_url *url, const char *ca_file,
                                     int64_t version, const struct limits *base, char *err,
                                     size_t errlen)
{
    struct watcher *w = watcher_new(base, err, errlen);

    if (!w)
        return NULL;
    if (!(w->shared = shared_new(url, ca_file))) {
        snprintf(err, errlen, "out of memory");
        watcher_stop(w);
        return NULL;
    }
    w->version = version;
    return watcher_run(w, err, errlen);
}

void watcher_look(struct watcher *w, uint64_t n)
{
    pthread_mutex_lock(&w->lock);
    if (n > w->look_asked) {
        w->look_asked = n;
        pthread_cond_signal(&w->wake);
    }
    pthread_mutex_unlock(&w->lock);
}

void watcher_set_base(struct watcher *w, const struct limits *base)
{
    pthread_mutex_lock(&w->lock);
    w->base = *base;
    w->reload = true;
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
}

/* mailbox_free()'s release: a catalog the core never took. */
static void release_catalog(void *cat)
{
    catalog_free(cat);
}

void watcher_stop(struct watcher *w)
{
    if (!w)
        return;
    if (w->thread_started) {
        pthread_mutex_lock(&w->lock);
        w->stop = true;
        pthread_cond_signal(&w->wake);
        pthread_mutex_unlock(&w->lock);
        pthread_join(w->thread, NULL);
    }
    mailbox_free(w->mailbox, release_catalog);
    store_close(w->store);
    shared_free(w->shared);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    free(w);
}
