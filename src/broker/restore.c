#include "broker/restore.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "broker/conn.h"
#include "broker/core.h"
#include "broker/durable.h"
#include "broker/instance.h"
#include "broker/login.h"
#include "broker/message.h"
#include "broker/session.h"
#include "broker/share.h"
#include "broker/topic.h"
#include "tenancy/catalog.h"
#include "util/clock.h"
#include "util/journal.h"
#include "util/log.h"
#include "util/scratch.h"
#include "util/strmap.h"

struct restored_message {
    uint64_t id;
    struct message *msg; /* one reference, dropped at the end of the replay */
};

struct restored_session {
    uint64_t id;
    struct session *session; /* the instance's */
    int64_t offline_since;   /* wall-clock ms; 0: it was online when the broker went */
    int64_t will_due;        /* wall-clock ms, with session->will */
};

struct restored_serial {
    int64_t serial;
    const char *name; /* the catalog's */
};

struct restore {
    struct broker *broker;
    struct durable *keeper;
    int64_t now_wall;                  /* durable_wall_ms() at the start */
    uint64_t now_mono;                 /* clock_ms() at the start */
    struct restored_message *messages; /* by id: records come in id order */
    size_t message_count, message_cap;
    struct restored_session *sessions; /* by id, as messages */
    size_t session_count, session_cap;
    struct restored_serial *serials; /* cloud: the catalog's instances by serial */
    size_t serial_count;
    uint64_t *skipped; /* session rows not restored, dropped after the replay */
    size_t skipped_count, skipped_cap;
    bool out_of_memory; /* an instance could not be made */
    struct restore_counts *counts;
};

/* Grow `*array` of `size`-byte items to hold one more. Returns 0 or -ENOMEM. */
static int grow(void *array, size_t *cap, size_t count, size_t size)
{
    if (count < *cap)
        return 0;
    size_t n = *cap ? *cap * 2 : 64;
    void *grown = realloc(*(void **)array, n * size);
    if (!grown)
        return -ENOMEM;
    *(void **)array = grown;
    *cap = n;
    return 0;
}

static int by_id(const void *key, const void *item)
{
    uint64_t a = *(const uint64_t *)key, b = *(const uint64_t *)item;
    return a < b ? -1 : a > b;
}

static int by_serial(const void *a, const void *b)
{
    int64_t x = ((const struct restored_serial *)a)->serial;
    int64_t y = ((const struct restored_serial *)b)->serial;
    return x < y ? -1 : x > y;
}

static struct message *find_message(struct restore *r, uint64_t id)
{
    struct restored_message *m = bsearch(&id, r->messages, r->message_count, sizeof(*m), by_id);
    return m ? m->msg : NULL;
}

static struct restored_session *find_session(struct restore *r, uint64_t id)
{
    return bsearch(&id, r->sessions, r->session_count, sizeof(*r->sessions), by_id);
}

/* Cloud mode: the catalog's instances, sorted by serial. Returns 0 or -ENOMEM. */
static int restore_serials(struct restore *r)
{
    const struct catalog *cat = r->broker->catalog;
    const struct catalog_instance *ci;
    size_t pos = 0, n = 0;

    if (!r->broker->cloud)
        return 0;
    r->serials = calloc(cat->instances.count + 1, sizeof(*r->serials));
    if (!r->serials)
        return -ENOMEM;
    while ((ci = strmap_next(&cat->instances, &pos, NULL)))
        r->serials[n++] = (struct restored_serial){.serial = ci->serial, .name = ci->name};
    qsort(r->serials, n, sizeof(*r->serials), by_serial);
    r->serial_count = n;
    return 0;
}

/* The instance of `serial` (made as a first login would), or NULL when it is gone. */
static struct instance *restore_instance(struct restore *r, int64_t serial)
{
    if (!r->broker->cloud)
        return serial == 0 ? r->broker->local : NULL;
    struct restored_serial key = {.serial = serial};
    struct restored_serial *found =
        bsearch(&key, r->serials, r->serial_count, sizeof(key), by_serial);
    if (!found)
        return NULL;
    struct instance *inst = login_instance(r->broker, found->name);
    r->out_of_memory |= inst == NULL;
    return inst;
}

/* A message held for `inst` counts against its account, as a published one does. */
static struct message *restore_charge(struct message *m, struct instance *inst)
{
    if (m && !m->account)
        message_charge(m, inst->account);
    return m;
}

static int restore_message(struct restore *r, const struct journal_record *rec)
{
    struct message_v5 v5 = {
        .props = rec->props, .props_len = rec->props_len, .expiry = rec->expiry};
    struct message *m = message_new(rec->name, rec->name_len, rec->payload, rec->payload_len,
                                    rec->qos, rec->flags & JOURNAL_RETAIN, &v5);

    if (!m || grow(&r->messages, &r->message_cap, r->message_count, sizeof(*r->messages)) < 0) {
        message_unref(m);
        return -ENOMEM;
    }
    /* Its age on the wall clock, carried over to the monotonic one (a will's starts later). */
    if (m->expiry && rec->when_ms > 0) {
        int64_t age = r->now_wall - rec->when_ms;
        m->created_ms = r->now_mono - (uint64_t)(age > 0 ? age : 0);
    }
    durable_adopt_message(r->keeper, m, rec->message);
    r->messages[r->message_count++] = (struct restored_message){.id = rec->message, .msg = m};
    return 0;
}

static int restore_retained(struct restore *r, const struct journal_record *rec)
{
    struct instance *inst = restore_instance(r, rec->instance);
    struct message *m = find_message(r, rec->message);
    bool ok;

    if (r->out_of_memory)
        return -ENOMEM;
    if (!inst || !m) {
        r->counts->dropped++;
        return 0;
    }
    struct message *old =
        instance_retain(inst, rec->name, message_ref(restore_charge(m, inst)), &ok);
    if (!ok) {
        message_unref(old); /* the reference just taken */
        return -ENOMEM;
    }
    message_unref(old);
    r->counts->retained++;
    return 0;
}

/* A session row that is not restored goes from the database too, once the replay is over. */
static int restore_skip_session(struct restore *r, uint64_t id)
{
    if (grow(&r->skipped, &r->skipped_cap, r->skipped_count, sizeof(*r->skipped)) < 0)
        return -ENOMEM;
    r->skipped[r->skipped_count++] = id;
    r->counts->dropped++;
    return 0;
}

static int restore_session(struct restore *r, const struct journal_record *rec)
{
    struct instance *inst = restore_instance(r, rec->instance);

    if (r->out_of_memory)
        return -ENOMEM;
    /* Two rows for one client id (a lost drop): the older one, in id order, stays. */
    if (!inst || strmap_get(&inst->sessions, rec->name))
        return restore_skip_session(r, rec->session);
    if (grow(&r->sessions, &r->session_cap, r->session_count, sizeof(*r->sessions)) < 0)
        return -ENOMEM;
    struct session *s = session_new(inst, rec->name, rec->expiry);
    if (!s || strmap_put(&inst->sessions, s->client_id, s, NULL) < 0) {
        session_free(s);
        return -ENOMEM;
    }
    s->kept_id = rec->session;
    struct catalog_token *t = r->broker->cloud && rec->token_len
                                  ? catalog_token_by_id(r->broker->catalog, rec->token)
                                  : NULL;
    s->token = t ? catalog_token_ref(t) : NULL;
    /* Its token is gone (revoked, expired): nothing is delivered to it until a login. */
    s->token_lost = r->broker->cloud && !t;
    r->sessions[r->session_count++] =
        (struct restored_session){.id = rec->session, .session = s, .offline_since = rec->when_ms};
    r->counts->sessions++;
    return 0;
}

/* Enter a subscription in the tree or its share group, as SUBSCRIBE did. */
static int restore_subscription(struct restore *r, const struct journal_record *rec)
{
    struct restored_session *rs = find_session(r, rec->session);

    if (!rs) {
        r->counts->dropped++;
        return 0;
    }
    struct session_sub sub = {.filter = (char *)rec->name,
                              .options = rec->options,
                              .leading_slash = (rec->flags & JOURNAL_LEADING_SLASH) != 0,
                              .sub_id = rec->sub_id};
    if (session_resubscribe(rs->session, &sub) < 0)
        return -ENOMEM;
    r->counts->subscriptions++;
    return 0;
}

/* A queued or in-flight message of a session, in its place. */
static int restore_outgoing(struct restore *r, const struct journal_record *rec)
{
    struct restored_session *rs = find_session(r, rec->session);
    struct message *m = rec->message ? find_message(r, rec->message) : NULL;
    uint32_t small[16];
    struct scratch sc = SCRATCH_INIT(small);

    /* Past PUBREC only the packet id is left: without a usable one there is nothing to finish. */
    bool id_taken =
        rs && (rec->packet_id == 0 || session_id_in_flight(rs->session, rec->packet_id));
    if (!rs || (rec->message && !m) || (!m && (rec->state != OUT_AWAIT_PUBCOMP || id_taken))) {
        r->counts->dropped++;
        return 0;
    }
    struct session *s = rs->session;
    uint32_t *ids = scratch_get(&sc, rec->sub_id_count * sizeof(*ids));
    if (!ids && rec->sub_id_count)
        return -ENOMEM;
    for (size_t i = 0; i < rec->sub_id_count; i++)
        ids[i] = journal_sub_id(rec, i);
    struct delivery d = {.qos = rec->qos,
                         .retain = (rec->flags & JOURNAL_RETAIN) != 0,
                         .leading_slash = (rec->flags & JOURNAL_LEADING_SLASH) != 0,
                         .sub_ids = ids,
                         .sub_id_count = rec->sub_id_count};
    struct outgoing *o = session_outgoing_new(s, restore_charge(m, s->instance), &d);
    scratch_free(&sc);
    if (!o)
        return -ENOMEM;
    o->seq = rec->seq;
    o->state = rec->state;
    o->packet_id = rec->packet_id;
    /* In flight needs an id of its own; a damaged row goes back to the queue. */
    bool inflight =
        o->state != OUT_QUEUED && o->packet_id && !session_id_in_flight(s, o->packet_id);
    if (!inflight && o->msg) {
        o->state = OUT_QUEUED;
        o->packet_id = 0;
    }
    if (session_restore_outgoing(s, o) < 0)
        return -ENOMEM;
    r->counts->messages++;
    return 0;
}

static int restore_qos2(struct restore *r, const struct journal_record *rec)
{
    struct restored_session *rs = find_session(r, rec->session);
    return rs ? session_qos2_receive(rs->session, rec->packet_id) : 0;
}

static int restore_will(struct restore *r, const struct journal_record *rec)
{
    struct restored_session *rs = find_session(r, rec->session);
    struct message *m = find_message(r, rec->message);

    /* A will goes out under its client's token: none left (revoked), no will. */
    if (!rs || !m || (r->broker->cloud && !rs->session->token))
        return 0;
    struct session_wait *w = session_wait(rs->session);
    if (!w)
        return -ENOMEM;
    message_unref(w->will);
    w->will = message_ref(restore_charge(m, rs->session->instance));
    message_restart_expiry(w->will);
    rs->will_due = rec->when_ms;
    return 0;
}

static int restore_record(struct restore *r, const struct journal_record *rec)
{
    switch ((enum journal_type)rec->type) {
    case JOURNAL_MESSAGE_PUT:
        return restore_message(r, rec);
    case JOURNAL_RETAIN_SET:
        return restore_retained(r, rec);
    case JOURNAL_SESSION_PUT:
        return restore_session(r, rec);
    case JOURNAL_SUB_PUT:
        return restore_subscription(r, rec);
    case JOURNAL_OUT_PUT:
        return restore_outgoing(r, rec);
    case JOURNAL_QOS2_ADD:
        return restore_qos2(r, rec);
    case JOURNAL_WILL_SET:
        return restore_will(r, rec);
    default:
        return 0; /* the loader writes no other kind */
    }
}

/*
 * The sessions go on as they would have, with the downtime counted: their
 * expiry and will timers run for what is left, or end them now. Recorded:
 * sessions that were online when the broker went are offline from now.
 */
static void restore_park(struct restore *r)
{
    for (size_t i = 0; i < r->session_count; i++) {
        struct restored_session *rs = &r->sessions[i];
        struct session *s = rs->session;
        if (!rs->offline_since) {
            rs->offline_since = r->now_wall;
            session_keep_state(s, r->now_wall);
        }
        /* A clock set back makes no downtime, never a longer life. */
        int64_t down = r->now_wall > rs->offline_since ? r->now_wall - rs->offline_since : 0;
        int64_t expiry_left = (int64_t)s->expiry * 1000 - down;
        int64_t will_left = rs->will_due - r->now_wall;
        if (will_left > (int64_t)UINT32_MAX * 1000)
            will_left = (int64_t)UINT32_MAX * 1000;
        if (conn_park_restored(s, expiry_left, will_left) < 0)
            log_error("client %s: out of memory arming its session's timers: the session stays "
                      "until it is resumed",
                      s->log_id);
    }
}

int restore_replay(struct broker *b, const struct journal *loaded, uint64_t next_message,
                   uint64_t next_session, uint64_t next_seq, struct restore_counts *counts)
{
    struct restore r = {.broker = b,
                        .keeper = b->durable,
                        .now_wall = durable_wall_ms(),
                        .now_mono = clock_ms(),
                        .counts = counts};
    struct journal_record rec;
    size_t pos = 0;
    int rc = restore_serials(&r);

    *counts = (struct restore_counts){0};
    durable_set_quiet(r.keeper, true);
    while (rc == 0 && journal_next(loaded, &pos, &rec))
        rc = restore_record(&r, &rec);
    /* Still quiet: a message nothing took is not dropped from the other mode's rows. */
    for (size_t i = 0; i < r.message_count; i++)
        message_unref(r.messages[i].msg);
    durable_set_quiet(r.keeper, false);
    durable_set_next_ids(r.keeper, next_message, next_session, next_seq);
    for (size_t i = 0; rc == 0 && i < r.skipped_count; i++) {
        struct journal_record drop = {.type = JOURNAL_SESSION_DROP, .session = r.skipped[i]};
        durable_append(r.keeper, NULL, &drop);
    }
    if (rc == 0)
        restore_park(&r);
    free(r.skipped);
    free(r.messages);
    free(r.sessions);
    free(r.serials);
    return rc;
}
