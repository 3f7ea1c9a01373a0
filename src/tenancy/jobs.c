#include "tenancy/jobs.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/shared.h"
#include "store/store.h"
#include "util/log.h"
#include "util/mailbox.h"

struct jobs {
    pthread_t thread;
    bool thread_started;
    struct store *store;   /* the thread's, once it runs; NULL in a cluster */
    struct shared *shared; /* in a cluster: the catalog in Redis (the thread's) */
    struct mailbox *done;  /* finished jobs, for the core thread */

    pthread_mutex_t lock; /* guards what follows */
    pthread_cond_t wake;
    bool stop;
    struct job *head, *tail; /* submitted, not yet run */
};

/* shared_change()'s change: the job, on the catalog as fetched. */
static int run_on_catalog(void *arg, struct store *s)
{
    struct job *j = arg;

    j->run(j, s);
    return 0;
}

/* Run `j` on the database, or in a cluster on the catalog in Redis: fetch, run, publish. */
static void jobs_run(struct jobs *js, struct job *j)
{
    char err[512];

    if (!js->shared) {
        j->run(j, js->store);
        return;
    }
    int rc = shared_change(js->shared, false, run_on_catalog, j, NULL, err, sizeof(err));
    if (rc < 0) {
        log_warning("management API: %s", err);
        j->fail(j, err);
    }
}

static void *jobs_main(void *arg)
{
    struct jobs *js = arg;

    pthread_mutex_lock(&js->lock);
    for (;;) {
        while (!js->stop && !js->head)
            pthread_cond_wait(&js->wake, &js->lock);
        if (js->stop)
            break;
        struct job *j = js->head;
        if (!(js->head = j->next))
            js->tail = NULL;
        pthread_mutex_unlock(&js->lock);
        jobs_run(js, j);
        /* The mailbox grows by a pointer; should even that fail, the job waits for memory. */
        while (mailbox_put(js->done, j) < 0) {
            log_warning("management API: out of memory handing a finished job back; retrying");
            struct timespec pause = {0, 10 * 1000000L};
            nanosleep(&pause, NULL);
        }
        pthread_mutex_lock(&js->lock);
    }
    pthread_mutex_unlock(&js->lock);
    return NULL;
}

/* Jobs with nothing to work on yet, or NULL. */
static struct jobs *jobs_new(char *err, size_t errlen)
{
    struct jobs *js = calloc(1, sizeof(*js));

    if (!js) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&js->lock, NULL);
    pthread_cond_init(&js->wake, NULL);
    return js;
}

/* Start the thread of `js`; frees `js` on failure. */
static struct jobs *jobs_run_thread(struct jobs *js, char *err, size_t errlen)
{
    if (!(js->done = mailbox_new("jobs"))) {
        snprintf(err, errlen, "cannot create the management API's pipe: %s", strerror(errno));
        goto fail;
    }
    int rc = pthread_create(&js->thread, NULL, jobs_main, js);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the management API's thread: %s", strerror(rc));
        goto fail;
    }
    js->thread_started = true;
    return js;
fail:
    jobs_stop(js);
    return NULL;
}

struct jobs *jobs_start(const char *path, char *err, size_t errlen)
{
    struct jobs *js = jobs_new(err, errlen);

    if (!js)
        return NULL;
    if (!(js->store = store_open(path, err, errlen))) {
        jobs_stop(js);
        return NULL;
    }
    return jobs_run_thread(js, err, errlen);
}

struct jobs *jobs_start_shared(const struct redis_url *url, const char *ca_file, char *err,
                               size_t errlen)
{
    struct jobs *js = jobs_new(err, errlen);

    if (!js)
        return NULL;
    if (!(js->shared = shared_new(url, ca_file))) {
        snprintf(err, errlen, "out of memory");
        jobs_stop(js);
        return NULL;
    }
    return jobs_run_thread(js, err, errlen);
}

void jobs_submit(struct jobs *js, struct job *j)
{
    j->next = NULL;
    pthread_mutex_lock(&js->lock);
    if (js->tail)
        js->tail->next = j;
    else
        js->head = j;
    js->tail = j;
    pthread_cond_signal(&js->wake);
    pthread_mutex_unlock(&js->lock);
}

int jobs_fd(const struct jobs *js)
{
    return mailbox_fd(js->done);
}

void jobs_finish(struct jobs *js)
{
    struct job *j;

    while ((j = mailbox_take(js->done)))
        j->done(j);
}

static void release_job(void *item)
{
    struct job *j = item;
    j->release(j);
}

void jobs_stop(struct jobs *js)
{
    if (!js)
        return;
    if (js->thread_started) {
        pthread_mutex_lock(&js->lock);
        js->stop = true;
        pthread_cond_signal(&js->wake);
        pthread_mutex_unlock(&js->lock);
        pthread_join(js->thread, NULL);
    }
    while (js->head) {
        struct job *j = js->head;
        js->head = j->next;
        j->release(j);
    }
    mailbox_free(js->done, release_job);
    store_close(js->store);
    shared_free(js->shared);
    pthread_cond_destroy(&js->wake);
    pthread_mutex_destroy(&js->lock);
    free(js);
}
