/*
 * jobs — the database work of the management API, done off the core thread.
 *
 * One thread with its own SQLite connection takes jobs in the order they
 * were submitted, runs each (`run`, in that thread, with the store) and hands
 * it back through a mailbox; the core thread watches jobs_fd() and calls
 * jobs_finish(), which calls each job's `done`. So the event loop never
 * waits on the disk, nor on a lock aviaryctl holds.
 *
 * Ownership: a submitted job is the thread's until its `done` runs, then the
 * caller's again; jobs still queued or finished but not taken when the
 * thread stops go to their `release`. A job's `run` must touch nothing but
 * the job and the store. Start after any fork().
 */
#ifndef AVIARY_JOBS_H
#define AVIARY_JOBS_H

#include <stddef.h>

struct redis_url;
struct store;
struct jobs;

/*
 * Embed it in the job's own struct. In a cluster, `run` works on the
 * catalog fetched from Redis, and runs again on a fresh one when another
 * writer published first (store/shared.h): it must start afresh each time.
 */
struct job {
    void (*run)(struct job *j, struct store *s);  /* in the jobs thread */
    void (*fail)(struct job *j, const char *err); /* jobs thread, in a cluster: Redis failed it
                                                     (after or instead of run) */
    void (*done)(struct job *j);                  /* core thread, after run */
    void (*release)(struct job *j);               /* core thread, at jobs_stop: never run or done */
    struct job *next;                             /* the queue's */
};

/*
 * Open (creating and migrating) the database at `path` and start the thread.
 * Returns the jobs, or NULL with the reason in `err`.
 */
struct jobs *jobs_start(const char *path, char *err, size_t errlen);

/*
 * The same for a cluster: each job runs on the catalog in Redis at `url`
 * (ca_file: see shared_new()), which a job that changes it publishes.
 */
struct jobs *jobs_start_shared(const struct redis_url *url, const char *ca_file, char *err,
                               size_t errlen);

/* Queue `j` (the thread's now). */
void jobs_submit(struct jobs *js, struct job *j);

/* Becomes readable when jobs are finished. */
int jobs_fd(const struct jobs *js);

/* Core thread, when jobs_fd() is readable: call `done` of every finished job. */
void jobs_finish(struct jobs *js);

/* Stop the thread after the job it runs; release the others; free everything. NULL is fine. */
void jobs_stop(struct jobs *js);

#endif
