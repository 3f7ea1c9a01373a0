#include "broker/durable.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "util/clock.h"
#include "util/journal.h"
#include "util/log.h"

/* What one batch charged to one instance's share of the backlog. */
struct durable_charge {
    struct durable_backlog *bl; /* a reference */
    size_t bytes;
};

/* A journal on its way to the database, with what it charged. */
struct durable_batch {
    struct journal journal; /* first: the writer hands back &batch->journal */
    struct durable_charge *charges;
    size_t charge_count, charge_cap;
    size_t bytes; /* all it charged, counted in the backlog */
    struct durable_batch *next;
};

struct durable {
    struct message_keeper keeper; /* messages tell it when they are freed */
    struct event_base *base;
    durable_submit_fn submit;
    void *submit_ctx;
    void (*resume)(void *ctx);
    void *resume_ctx;
    struct durable_batch *current; /* gathering; NULL until the first record */
    struct durable_batch *spare;   /* settled batches kept for reuse */
    struct event *flush_ev;        /* the flush timer, also made active by a large batch */
    bool flush_armed;
    size_t backlog; /* bytes handed to the writer and not yet committed */
    bool held_back; /* durable_over() said yes since the last resume */
    bool quiet, finished;
    uint64_t next_message, next_session, next_seq;
    uint64_t lost; /* records lost for want of memory */
};

int64_t durable_wall_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

struct durable_backlog *durable_backlog_new(void)
{
    struct durable_backlog *bl = calloc(1, sizeof(*bl));
    if (bl)
        bl->refs = 1;
    return bl;
}

void durable_backlog_unref(struct durable_backlog *bl)
{
    if (bl && --bl->refs == 0)
        free(bl);
}

/* Returns true when an instance's share fell below half its bound. */
static bool batch_release_charges(struct durable_batch *batch)
{
    bool eased = false;

    for (size_t i = 0; i < batch->charge_count; i++) {
        struct durable_backlog *bl = batch->charges[i].bl;
        size_t before = bl->bytes;
        bl->bytes -= batch->charges[i].bytes;
        eased |= before >= DURABLE_INSTANCE_BACKLOG / 2 && bl->bytes < DURABLE_INSTANCE_BACKLOG / 2;
        if (bl->batch == batch)
            bl->batch = NULL;
        durable_backlog_unref(bl);
    }
    batch->charge_count = 0;
    batch->bytes = 0;
    return eased;
}

static void batch_free(struct durable_batch *batch)
{
    if (!batch)
        return;
    batch_release_charges(batch);
    free(batch->charges);
    journal_free(&batch->journal);
    free(batch);
}

/* Hand the current batch (if any) to the writer. False: it could not take it, it stays. */
static bool durable_hand_over(struct durable *d)
{
    struct durable_batch *batch = d->current;

    if (!batch)
        return true;
    if (d->submit(d->submit_ctx, &batch->journal) < 0)
        return false;
    d->current = NULL;
    d->backlog += batch->bytes;
    return true;
}

/* The flush timer: hand the batch over, or try again a turn later. */
static void durable_flush(struct durable *d)
{
    d->flush_armed = false;
    if (durable_hand_over(d))
        return;
    struct timeval again = {0, DURABLE_FLUSH_MS * 1000};
    log_error("out of memory handing %zu changes to the database writer: trying again",
              d->current->journal.count);
    d->flush_armed = evtimer_add(d->flush_ev, &again) == 0;
}

static void durable_flush_cb(evutil_socket_t fd, short what, void *arg)
{
    durable_flush(arg);
}

static void durable_message_dropped(struct message_keeper *k, uint64_t id)
{
    struct durable *d = (struct durable *)k;
    struct journal_record r = {.type = JOURNAL_MESSAGE_DROP, .message = id};

    durable_append(d, NULL, &r);
}

struct durable *durable_new(struct event_base *base, durable_submit_fn submit, void *submit_ctx,
                            void (*resume)(void *ctx), void *resume_ctx)
{
    struct durable *d = calloc(1, sizeof(*d));

    if (!d)
        return NULL;
    d->keeper.dropped = durable_message_dropped;
    d->base = base;
    d->submit = submit;
    d->submit_ctx = submit_ctx;
    d->resume = resume;
    d->resume_ctx = resume_ctx;
    d->next_message = d->next_session = d->next_seq = 1;
    if (!(d->flush_ev = evtimer_new(base, durable_flush_cb, d))) {
        free(d);
        return NULL;
    }
    return d;
}

void durable_set_next_ids(struct durable *d, uint64_t message, uint64_t session, uint64_t seq)
{
    d->next_message = message;
    d->next_session = session;
    d->next_seq = seq;
}

void durable_set_quiet(struct durable *d, bool quiet)
{
    d->quiet = quiet;
}

bool durable_active(const struct durable *d)
{
    return d && !d->quiet && !d->finished;
}

uint64_t durable_next_session(struct durable *d)
{
    return d->next_session++;
}

uint64_t durable_next_seq(struct durable *d)
{
    return d->next_seq++;
}

/* The batch records go to now, made (or taken from the spares) at the first one. */
static struct durable_batch *durable_batch(struct durable *d)
{
    if (d->current)
        return d->current;
    struct durable_batch *batch = d->spare;
    if (batch)
        d->spare = batch->next;
    else if (!(batch = calloc(1, sizeof(*batch))))
        return NULL;
    batch->next = NULL;
    d->current = batch;
    return batch;
}

/* Count `n` bytes of `batch` against `bl`. Returns 0 or -ENOMEM. */
static int batch_charge(struct durable_batch *batch, struct durable_backlog *bl, size_t n)
{
    if (bl->batch != batch) {
        if (batch->charge_count == batch->charge_cap) {
            size_t cap = batch->charge_cap ? batch->charge_cap * 2 : 8;
            struct durable_charge *grown = realloc(batch->charges, cap * sizeof(*grown));
            if (!grown)
                return -ENOMEM;
            batch->charges = grown;
            batch->charge_cap = cap;
        }
        bl->batch = batch;
        bl->charge = batch->charge_count++;
        bl->refs++;
        batch->charges[bl->charge] = (struct durable_charge){.bl = bl, .bytes = 0};
    }
    batch->charges[bl->charge].bytes += n;
    bl->bytes += n;
    return 0;
}

void durable_append(struct durable *d, struct durable_backlog *bl, const struct journal_record *r)
{
    if (!durable_active(d))
        return;
    struct durable_batch *batch = durable_batch(d);
    size_t before = batch ? batch->journal.len : 0;

    if (!batch || journal_append(&batch->journal, r) < 0) {
        if (log_every_nth(&d->lost, 1000))
            log_error("out of memory: a change to what the database keeps is lost "
                      "(%llu so far)",
                      (unsigned long long)d->lost);
        return;
    }
    size_t n = batch->journal.len - before;
    if (bl && batch_charge(batch, bl, n) == 0)
        batch->bytes += n;
    if (batch->journal.len >= DURABLE_BATCH_BYTES) {
        /* After the handler that is running: a PUBLISH's records stay in one batch. */
        event_active(d->flush_ev, EV_TIMEOUT, 0);
        d->flush_armed = true;
    } else if (!d->flush_armed) {
        struct timeval later = {0, DURABLE_FLUSH_MS * 1000};
        d->flush_armed = evtimer_add(d->flush_ev, &later) == 0;
    }
}

/* The message's publication time on the wall clock (its created_ms is the monotonic clock's). */
static int64_t message_wall_created(const struct message *m)
{
    if (!m->expiry)
        return 0;
    return durable_wall_ms() - (int64_t)(clock_ms() - m->created_ms);
}

/* Write `m` under `id` (again: the row is replaced), published at `when_ms` (0: not yet). */
static void durable_put_message(struct durable *d, struct durable_backlog *bl, struct message *m,
                                uint64_t id, int64_t when_ms)
{
    struct journal_record r = {
        .type = JOURNAL_MESSAGE_PUT,
        .message = id,
        .name = m->topic,
        .name_len = m->topic_len,
        .payload = m->payload,
        .payload_len = m->payload_len,
        .props = m->props,
        .props_len = m->props_len,
        .qos = m->qos,
        .flags = m->retain ? JOURNAL_RETAIN : 0,
        .expiry = m->expiry,
        .when_ms = when_ms,
    };
    durable_append(d, bl, &r);
}

uint64_t durable_keep_message(struct durable *d, struct durable_backlog *bl, struct message *m,
                              bool will)
{
    if (m->kept_id)
        return m->kept_id;
    durable_adopt_message(d, m, d->next_message++);
    durable_put_message(d, bl, m, m->kept_id, will ? 0 : message_wall_created(m));
    return m->kept_id;
}

void durable_will_published(struct durable *d, struct durable_backlog *bl, struct message *m)
{
    if (m->kept_id && durable_active(d))
        durable_put_message(d, bl, m, m->kept_id, message_wall_created(m));
}

void durable_adopt_message(struct durable *d, struct message *m, uint64_t id)
{
    m->kept_id = id;
    m->keeper = &d->keeper;
}

bool durable_over(struct durable *d, const struct durable_backlog *bl)
{
    if (!bl || bl->bytes == 0)
        return false;
    if (bl->bytes < DURABLE_INSTANCE_BACKLOG && d->backlog < DURABLE_BACKLOG)
        return false;
    d->held_back = true;
    return true;
}

void durable_settled(struct durable *d, struct journal *j)
{
    struct durable_batch *batch = (struct durable_batch *)j;

    d->backlog -= batch->bytes;
    bool eased = batch_release_charges(batch);
    journal_reset(&batch->journal);
    /* One spare is enough to avoid an allocation per turn; more would only hold memory. */
    if (!d->spare && batch->journal.cap <= 4 * DURABLE_BATCH_BYTES) {
        batch->next = NULL;
        d->spare = batch;
    } else {
        batch_free(batch);
    }
    /* Half a bound: one settled batch does not let every publisher in at once. */
    if (d->held_back && !d->finished && (d->backlog < DURABLE_BACKLOG / 2 || eased)) {
        d->held_back = false;
        d->resume(d->resume_ctx);
    }
}

void durable_finish(struct durable *d)
{
    if (!d || d->finished)
        return;
    if (!durable_hand_over(d) && d->current->journal.count)
        log_error("%zu changes to retained messages and sessions not written: the database "
                  "writer is gone",
                  d->current->journal.count);
    d->finished = true;
    /* Messages may outlive the event base (output the loop frees at the end): after this,
     * they find `d` finished, and nothing touches its event. */
    event_free(d->flush_ev);
    d->flush_ev = NULL;
}

void durable_free(struct durable *d)
{
    if (!d)
        return;
    batch_free(d->current);
    batch_free(d->spare);
    if (d->flush_ev)
        event_free(d->flush_ev);
    free(d);
}
