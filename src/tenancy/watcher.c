#include "tenancy/watcher.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/store.h"
#include "util/log.h"
#include "util/mailbox.h"

struct watcher {
    pthread_t thread;
    bool thread_started;
    struct store *store;     /* used by the thread only, once it runs */
    struct mailbox *mailbox; /* at most one catalog, loaded and not yet taken */
    int64_t version;         /* data_version of the catalog last loaded */

    pthread_mutex_t lock;    /* guards everything below */
    pthread_cond_t wake;
    bool stop;
    bool reload;             /* base limits changed: load even if the data did not */
    struct limits base;
    uint64_t look_asked;     /* the highest look at the database asked for */
    uint64_t look_done;      /* every look up to this one has been made */
};

/* Load a catalog with the current base limits and put it in the mailbox; 0 or -1. */
static int watcher_load(struct watcher *w)
{
    char err[256];

    pthread_mutex_lock(&w->lock);
    struct limits base = w->base;
    w->reload = false;
    pthread_mutex_unlock(&w->lock);

    struct catalog *cat = catalog_load(w->store, &base, err, sizeof(err));
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

        /* The version first: a change committed during the load is then seen as one. */
        int64_t version = store_data_version(w->store);
        if (version < 0)
            log_warning("store: cannot read the database's data_version");
        else if ((version != w->version || reload) && watcher_load(w) == 0)
            w->version = version; /* a failed load is tried again at the next poll */
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

struct watcher *watcher_start(const char *path, const struct limits *base, char *err,
                              size_t errlen)
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
    if (!(w->store = store_open(path, err, errlen)))
        goto fail;
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

struct catalog *watcher_take(struct watcher *w)
{
    return mailbox_take(w->mailbox);
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

uint64_t watcher_looked(struct watcher *w)
{
    pthread_mutex_lock(&w->lock);
    uint64_t done = w->look_done;
    pthread_mutex_unlock(&w->lock);
    return done;
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
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    free(w);
}
