#include "broker/session.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "broker/core.h"
#include "broker/durable.h"
#include "broker/instance.h"
#include "broker/message.h"
#include "broker/sender.h"
#include "broker/share.h"
#include "broker/topic.h"
#include "tenancy/access.h"
#include "tenancy/catalog.h"
#include "util/account.h"
#include "util/clock.h"
#include "util/journal.h"
#include "util/log.h"

/* What the session holds, charged to its instance's account (util/account.h). */
static void session_charge(struct session *s, size_t n)
{
    account_charge(s->instance->account, n);
}

static void session_release(struct session *s, size_t n)
{
    account_release(s->instance->account, n);
}

/* The session's own block and its client id. */
static size_t session_own_bytes(const struct session *s)
{
    size_t log_copy = s->log_id != s->client_id ? strlen(s->log_id) + 1 : 0;
    return sizeof(*s) + strlen(s->client_id) + 1 + log_copy;
}

static size_t outgoing_bytes(const struct outgoing *o)
{
    return sizeof(*o) + o->sub_id_count * sizeof(o->sub_ids[0]);
}

/* A packet-id set's bitmap, when it has one. */
static size_t idset_bytes(const struct idset *set)
{
    return set->bits ? IDSET_BYTES : 0;
}

/* Kept until the session ends: a QoS 1 stream whose window empties between messages makes it once.
 */
struct session_flow *session_flow(struct session *s)
{
    if (!s->flow && (s->flow = calloc(1, sizeof(*s->flow))))
        session_charge(s, sizeof(*s->flow));
    return s->flow;
}

struct session_wait *session_wait(struct session *s)
{
    if (!s->wait && (s->wait = calloc(1, sizeof(*s->wait))))
        session_charge(s, sizeof(*s->wait));
    return s->wait;
}

struct message *session_take_will(struct session *s)
{
    struct message *will = session_will(s);

    if (will) {
        s->wait->will = NULL;
        if (s->wait->will_timer) /* a restored will is armed after this may run */
            evtimer_del(s->wait->will_timer);
    }
    return will;
}

/* The client is back, or the session ends: nothing waits any more. */
static void session_wait_free(struct session *s)
{
    struct session_wait *w = s->wait;

    if (!w)
        return;
    if (w->expiry_timer)
        event_free(w->expiry_timer);
    if (w->will_timer)
        event_free(w->will_timer);
    message_unref(w->will);
    session_release(s, sizeof(*w));
    free(w);
    s->wait = NULL;
}

/* ---- what the database keeps of it (durable.h) ---------------------------- */

/* The broker's keeper when the session is kept and the keeper records; else NULL. */
static struct durable *session_keeper(const struct session *s)
{
    struct durable *d = s->instance->broker->durable;
    return s->kept_id && durable_active(d) ? d : NULL;
}

/* The cluster when it keeps a copy of the session in Redis; else NULL. */
static struct broker_cluster *session_mirror_of(const struct session *s)
{
    struct broker_cluster *cl = s->instance->broker->cluster;
    return cl && s->mirror == SESSION_MIRROR_ON ? cl : NULL;
}

/* Append `r` for the session, charged to its instance. */
static void session_keep(struct durable *d, struct session *s, struct journal_record *r)
{
    r->session = s->kept_id;
    durable_append(d, s->instance->kept_backlog, r);
}

static struct journal_record out_record(const struct outgoing *o)
{
    return (struct journal_record){
        .type = JOURNAL_OUT_PUT,
        .seq = o->seq,
        .qos = o->qos,
        .state = o->state,
        .packet_id = o->packet_id,
        .flags = (o->retain ? JOURNAL_RETAIN : 0) | (o->leading_slash ? JOURNAL_LEADING_SLASH : 0),
        .sub_ids = o->sub_ids,
        .sub_id_count = o->sub_id_count,
    };
}

static struct journal_record sub_record(const struct session_sub *sub)
{
    return (struct journal_record){.type = JOURNAL_SUB_PUT,
                                   .name = sub->filter,
                                   .name_len = strlen(sub->filter),
                                   .options = sub->options,
                                   .flags = sub->leading_slash ? JOURNAL_LEADING_SLASH : 0,
                                   .sub_id = sub->sub_id};
}

/* Write `o` as it is now: queued, in flight, or past PUBREC. */
static void session_keep_out(struct session *s, struct outgoing *o)
{
    struct durable *d = session_keeper(s);
    struct broker_cluster *cl = session_mirror_of(s);

    if (!d && !cl)
        return;
    if (!o->seq)
        o->seq = d ? durable_next_seq(d) : ++s->instance->broker->mirror_seq;
    struct journal_record r = out_record(o);
    if (cl)
        cl->session_record(cl, s, &r, o->msg);
    if (!d)
        return;
    if (o->msg)
        r.message = durable_keep_message(d, s->instance->kept_backlog, o->msg, false);
    session_keep(d, s, &r);
}

static void session_keep_sub(struct session *s, const struct session_sub *sub)
{
    struct durable *d = session_keeper(s);
    struct broker_cluster *cl = session_mirror_of(s);
    struct journal_record r = sub_record(sub);

    if (cl)
        cl->session_record(cl, s, &r, NULL);
    if (d)
        session_keep(d, s, &r);
}

/* A record of `type` that names the session and a packet id, or a filter. */
static void session_keep_id(struct session *s, uint8_t type, uint16_t packet_id, const char *name)
{
    struct durable *d = session_keeper(s);
    struct broker_cluster *cl = session_mirror_of(s);
    struct journal_record r = {
        .type = type, .packet_id = packet_id, .name = name, .name_len = name ? strlen(name) : 0};

    if (cl && (type == JOURNAL_SUB_DROP || type == JOURNAL_SESSION_DROP))
        cl->session_record(cl, s, &r, NULL);
    if (d)
        session_keep(d, s, &r);
}

/* Everything the session holds, the first time it is written. */
static void session_keep_contents(struct session *s)
{
    struct session_flow *f = s->flow;

    for (size_t i = 0; i < s->sub_count; i++)
        session_keep_sub(s, &s->subs[i]);
    if (!f)
        return;
    for (struct outgoing *o = f->inflight_head; o; o = o->next)
        session_keep_out(s, o);
    for (struct outgoing *o = f->queue_head; o; o = o->next)
        session_keep_out(s, o);
    /* Rare (a session that was not kept before) and bounded: a walk of the id space. */
    for (uint32_t id = 1; f->incoming_qos2.bits && id <= UINT16_MAX; id++)
        if (idset_has(&f->incoming_qos2, (uint16_t)id))
            session_keep_id(s, JOURNAL_QOS2_ADD, (uint16_t)id, NULL);
}

/*
 * The cluster's copy: written whole the first time (over whatever another
 * node left), then change by change; dropped when the session loses its expiry.
 */
static void session_mirror_state(struct session *s, int64_t offline_since_ms)
{
    struct broker_cluster *cl = s->instance->broker->cluster;
    struct journal_record drop = {.type = JOURNAL_SESSION_DROP};

    if (!cl || s->mirror == SESSION_MIRROR_GONE)
        return;
    if (!s->expiry || s->mirror == SESSION_MIRROR_NONE) {
        cl->session_record(cl, s, &drop, NULL);
        s->mirror = SESSION_MIRROR_NONE;
        if (!s->expiry)
            return;
    }
    struct journal_record put = {
        .type = JOURNAL_SESSION_PUT, .expiry = s->expiry, .when_ms = offline_since_ms};
    cl->session_record(cl, s, &put, NULL);
    if (s->mirror == SESSION_MIRROR_ON)
        return;
    s->mirror = SESSION_MIRROR_ON;
    for (size_t i = 0; i < s->sub_count; i++) {
        struct journal_record r = sub_record(&s->subs[i]);
        cl->session_record(cl, s, &r, NULL);
    }
    struct outgoing *lists[] = {s->flow ? s->flow->inflight_head : NULL,
                                s->flow ? s->flow->queue_head : NULL};
    for (size_t i = 0; i < 2; i++) {
        for (struct outgoing *o = lists[i]; o; o = o->next) {
            if (!o->seq)
                o->seq = ++s->instance->broker->mirror_seq;
            struct journal_record r = out_record(o);
            cl->session_record(cl, s, &r, o->msg);
        }
    }
}

/* The database's copy (durable.h). */
static void session_keep_durable(struct session *s, int64_t offline_since_ms)
{
    struct durable *d = s->instance->broker->durable;

    if (!durable_active(d))
        return;
    if (!s->expiry) {
        session_keep_id(s, JOURNAL_SESSION_DROP, 0, NULL);
        s->kept_id = 0;
        return;
    }
    bool first = !s->kept_id;
    if (first)
        s->kept_id = durable_next_session(d);
    const char *token = s->token ? s->token->id : "";
    struct journal_record r = {.type = JOURNAL_SESSION_PUT,
                               .instance = s->instance->serial,
                               .name = s->client_id,
                               .name_len = strlen(s->client_id),
                               .token = token,
                               .token_len = strlen(token),
                               .expiry = s->expiry,
                               .when_ms = offline_since_ms};
    session_keep(d, s, &r);
    if (first)
        session_keep_contents(s);
}

void session_mirror_again(struct session *s)
{
    if (s->mirror != SESSION_MIRROR_ON)
        return;
    s->mirror = SESSION_MIRROR_NONE;
    session_mirror_state(s, s->conn ? 0 : 1);
}

/* The database's first (whole) write finds no copy in Redis yet: each writes its own whole. */
void session_keep_state(struct session *s, int64_t offline_since_ms)
{
    session_keep_durable(s, offline_since_ms);
    session_mirror_state(s, offline_since_ms);
}

void session_keep_will(struct session *s, int64_t due_ms)
{
    struct durable *d = session_keeper(s);
    if (!d)
        return;
    struct journal_record r = {.type = JOURNAL_WILL_CLEAR};
    if (session_will(s)) {
        r.type = JOURNAL_WILL_SET;
        r.message = durable_keep_message(d, s->instance->kept_backlog, session_will(s), true);
        r.when_ms = due_ms;
    }
    session_keep(d, s, &r);
}

/* ---- the session ---------------------------------------------------------- */

struct session *session_new(struct instance *inst, const char *client_id, uint32_t expiry)
{
    size_t id_size = strlen(client_id) + 1;
    struct session *s = calloc(1, sizeof(*s) + id_size);
    if (!s)
        return NULL;
    memcpy(s->client_id, client_id, id_size);
    /* Most client ids are their own log form: only the others get a copy. */
    char log_id[80];
    log_escape(client_id, id_size - 1, log_id, sizeof(log_id));
    s->log_id = strcmp(log_id, client_id) != 0 ? strdup(log_id) : s->client_id;
    if (!s->log_id) {
        free(s);
        return NULL;
    }
    s->instance = inst;
    session_set_expiry(s, expiry);
    session_charge(s, session_own_bytes(s));
    return s;
}

void session_set_expiry(struct session *s, uint32_t expiry)
{
    if (s->expiry && !expiry)
        s->instance->persistent_sessions--;
    else if (!s->expiry && expiry)
        s->instance->persistent_sessions++;
    s->expiry = expiry;
}

static inline void outgoing_free_list(struct session *s, struct outgoing *o)
{
    while (o) {
        struct outgoing *next = o->next;
        if (o->seq) {
            struct journal_record r = {.type = JOURNAL_OUT_DROP, .seq = o->seq};
            struct durable *d = s->kept_id ? session_keeper(s) : NULL;
            struct broker_cluster *cl = session_mirror_of(s);
            if (cl)
                cl->session_record(cl, s, &r, NULL);
            if (d)
                session_keep(d, s, &r);
        }
        session_release(s, outgoing_bytes(o));
        message_unref(o->msg);
        free(o);
        o = next;
    }
}

/* idset_add() for one of the session's sets, its bitmap charged when it is made. */
static int session_idset_add(struct session *s, struct idset *set, uint16_t id)
{
    size_t before = idset_bytes(set);
    int rc = idset_add(set, id);
    session_charge(s, idset_bytes(set) - before);
    return rc;
}

static void session_idset_free(struct session *s, struct idset *set)
{
    session_release(s, idset_bytes(set));
    idset_free(set);
}

/*
 * The filter of `sub` as the topic tree matches it: a shared one's without
 * "$share/GROUP/". Read from the key, not the group, which may be gone by
 * the time the record is forgotten.
 */
static const char *session_sub_plain(const struct session_sub *sub)
{
    const char *slash = sub->share ? strchr(sub->filter + strlen("$share/"), '/') : NULL;
    return slash ? slash + 1 : sub->filter;
}

void session_trim(struct session *s)
{
    struct session_flow *f = s->flow;

    if (f && f->outgoing_ids.count == 0)
        session_idset_free(s, &f->outgoing_ids);
    if (f && f->incoming_qos2.count == 0)
        session_idset_free(s, &f->incoming_qos2);
}

void session_free(struct session *s)
{
    if (!s)
        return;
    /* Gone from the database first, with all it held: what follows writes nothing. */
    session_keep_id(s, JOURNAL_SESSION_DROP, 0, NULL);
    s->kept_id = 0;
    for (size_t i = 0; i < s->sub_count; i++) {
        instance_sub_counted(s->instance, session_sub_plain(&s->subs[i]), -1);
        if (s->subs[i].share)
            share_leave(s->instance, s->subs[i].share, s);
        else
            topic_tree_unsubscribe(s->instance->tree, s->subs[i].filter, s);
        session_release(s, strlen(s->subs[i].filter) + 1);
        free(s->subs[i].filter);
    }
    session_release(s, s->sub_cap * sizeof(*s->subs));
    free(s->subs);
    if (s->flow) {
        outgoing_free_list(s, s->flow->inflight_head);
        outgoing_free_list(s, s->flow->queue_head);
        session_idset_free(s, &s->flow->outgoing_ids);
        session_idset_free(s, &s->flow->incoming_qos2);
        session_release(s, sizeof(*s->flow));
        free(s->flow);
    }
    session_set_expiry(s, 0);
    session_release(s, session_own_bytes(s));
    session_wait_free(s);
    catalog_token_unref(s->token);
    if (s->log_id != s->client_id)
        free((char *)s->log_id);
    free(s);
}

struct session_sub *session_sub_find(struct session *s, const char *filter)
{
    for (size_t i = 0; i < s->sub_count; i++)
        if (strcmp(s->subs[i].filter, filter) == 0)
            return &s->subs[i];
    return NULL;
}

int session_resubscribe(struct session *s, const struct session_sub *sub)
{
    static const char share_prefix[] = "$share/";
    const size_t prefix_len = sizeof(share_prefix) - 1;
    struct session_sub rec = *sub;
    const char *group_end = strncmp(sub->filter, share_prefix, prefix_len) == 0
                                ? strchr(sub->filter + prefix_len, '/')
                                : NULL;
    int is_new;

    if (group_end) {
        struct share_member m = {.session = s,
                                 .options = sub->options,
                                 .leading_slash = sub->leading_slash,
                                 .sub_id = sub->sub_id};
        is_new = share_join(s->instance, sub->filter + prefix_len,
                            (size_t)(group_end - sub->filter) - prefix_len, &m, &rec.share);
    } else {
        struct topic_sub ts = {.owner = s,
                               .options = sub->options,
                               .leading_slash = sub->leading_slash,
                               .sub_id = sub->sub_id};
        is_new = topic_tree_subscribe(s->instance->tree, sub->filter, &ts);
    }
    return is_new < 0 || session_sub_record(s, &rec, is_new) < 0 ? -ENOMEM : 0;
}

int session_sub_record(struct session *s, const struct session_sub *sub, int is_new)
{
    struct session_sub *rec = is_new ? NULL : session_sub_find(s, sub->filter);

    if (!rec) {
        if (s->sub_count == s->sub_cap) {
            size_t cap = s->sub_cap ? s->sub_cap * 2 : 1; /* most hold one */
            struct session_sub *subs = realloc(s->subs, cap * sizeof(*subs));
            if (!subs)
                return -ENOMEM;
            session_charge(s, (cap - s->sub_cap) * sizeof(*subs));
            s->subs = subs;
            s->sub_cap = cap;
        }
        char *copy = strdup(sub->filter);
        if (!copy)
            return -ENOMEM;
        session_charge(s, strlen(copy) + 1);
        rec = &s->subs[s->sub_count++];
        rec->filter = copy;
        rec->share = sub->share;
        instance_sub_counted(s->instance, session_sub_plain(rec), 1);
    }
    rec->options = sub->options;
    rec->leading_slash = sub->leading_slash;
    rec->sub_id = sub->sub_id;
    rec->share = sub->share;
    session_keep_sub(s, rec);
    return 0;
}

int session_sub_forget(struct session *s, const char *filter)
{
    struct session_sub *sub = session_sub_find(s, filter);
    if (!sub)
        return -ENOENT;
    session_keep_id(s, JOURNAL_SUB_DROP, 0, sub->filter);
    instance_sub_counted(s->instance, session_sub_plain(sub), -1);
    session_release(s, strlen(sub->filter) + 1);
    free(sub->filter);
    *sub = s->subs[--s->sub_count];
    return 0;
}

/*
 * Take the next packet id after last_packet_id that the in-flight window is
 * not using, and mark it used. Returns 0, -ENOMEM when the id set could not
 * be allocated, or -EAGAIN when all 65535 ids are in flight (which a
 * max-inflight of at most 65535, as the configuration allows, rules out).
 */
static int session_take_packet_id(struct session *s, uint16_t *id)
{
    struct session_flow *f = s->flow;
    uint16_t next = idset_next_clear(&f->outgoing_ids, f->last_packet_id);
    if (next == 0)
        return -EAGAIN;
    if (session_idset_add(s, &f->outgoing_ids, next) < 0)
        return -ENOMEM;
    f->last_packet_id = next;
    *id = next;
    return 0;
}

/* The window could not take a message for want of a packet id (see session_take_packet_id). */
static void session_no_packet_id(struct session *s, int err)
{
    if (err == -ENOMEM && s->out)
        sender_fail(s->out, "out of memory allocating the packet ids of the in-flight window");
}

static void list_append(struct outgoing **head, struct outgoing **tail, struct outgoing *o)
{
    o->next = NULL;
    if (*tail)
        (*tail)->next = o;
    else
        *head = o;
    *tail = o;
}

static struct outgoing *list_pop(struct outgoing **head, struct outgoing **tail)
{
    struct outgoing *o = *head;
    if (o) {
        *head = o->next;
        if (!*head)
            *tail = NULL;
        o->next = NULL;
    }
    return o;
}

static struct delivery outgoing_delivery(const struct outgoing *o)
{
    struct delivery d = {.qos = o->qos,
                         .retain = o->retain,
                         .leading_slash = o->leading_slash,
                         .sub_ids = o->sub_ids,
                         .sub_id_count = o->sub_id_count};
    return d;
}

/* The in-flight window: max-inflight, or less when the client's Receive Maximum says so. */
static size_t session_window(const struct session *s)
{
    size_t window = s->instance->limits.max_inflight;
    if (s->out && s->out->receive_max && s->out->receive_max < window)
        window = s->out->receive_max;
    return window;
}

/*
 * Put `o` in the in-flight window under `packet_id` (already taken) and send
 * it. A message the client could not take (over its Maximum Packet Size) is
 * dropped as if acknowledged [MQTT-3.1.2-25]: returns false, `o` is freed.
 */
static bool session_send_inflight(struct session *s, struct outgoing *o, uint16_t packet_id)
{
    struct session_flow *f = s->flow;
    struct delivery d = outgoing_delivery(o);

    o->packet_id = packet_id;
    o->state = o->qos == 1 ? OUT_AWAIT_PUBACK : OUT_AWAIT_PUBREC;
    if (sender_publish(s->out, o->msg, &d, o->packet_id, false) == SENDER_SKIPPED) {
        idset_remove(&f->outgoing_ids, packet_id);
        outgoing_free_list(s, o);
        return false;
    }
    list_append(&f->inflight_head, &f->inflight_tail, o);
    f->inflight_count++;
    session_keep_out(s, o);
    return true;
}

/* Drop a queued message whose expiry passed before it could be sent [MQTT-3.3.2-5]. */
static void session_drop_expired(struct session *s, struct outgoing *o)
{
    s->instance->expired_drops++;
    if (log_every_nth(&s->flow->expired, 1000))
        log_info("client %s: a queued message on %s expired before it could be sent "
                 "(%llu so far)",
                 s->log_id, o->msg->topic, (unsigned long long)s->flow->expired);
    outgoing_free_list(s, o);
}

void session_fill_window(struct session *s)
{
    struct session_flow *f = s->flow;
    if (!f)
        return;
    size_t window = session_window(s);
    uint64_t now = clock_ms();

    while (session_online(s) && f->inflight_count < window && f->queue_head) {
        if (message_expired(f->queue_head->msg, now)) {
            f->queue_count--;
            session_drop_expired(s, list_pop(&f->queue_head, &f->queue_tail));
            continue;
        }
        uint16_t id;
        int rc = session_take_packet_id(s, &id);
        if (rc < 0) {
            session_no_packet_id(s, rc);
            return;
        }
        struct outgoing *o = list_pop(&f->queue_head, &f->queue_tail);
        f->queue_count--;
        session_send_inflight(s, o, id);
    }
}

struct outgoing *session_outgoing_new(struct session *s, struct message *m,
                                      const struct delivery *d)
{
    size_t ids = d->sub_id_count > UINT16_MAX ? UINT16_MAX : d->sub_id_count;
    struct outgoing *o = calloc(1, sizeof(*o) + ids * sizeof(o->sub_ids[0]));

    if (!o)
        return NULL;
    o->msg = m ? message_ref(m) : NULL;
    o->qos = d->qos;
    o->leading_slash = d->leading_slash;
    o->retain = d->retain;
    o->sub_id_count = (uint16_t)ids;
    if (ids)
        memcpy(o->sub_ids, d->sub_ids, ids * sizeof(o->sub_ids[0]));
    session_charge(s, outgoing_bytes(o));
    return o;
}

void session_deliver(struct session *s, struct message *m, const struct delivery *d)
{
    bool online = session_online(s);

    /* A granted wildcard never carries a topic the token may not read. */
    if (s->token ? !access_may_read(s->token, m->topic) : s->token_lost)
        return;
    if (d->qos == 0) {
        if (online)
            sender_publish(s->out, m, d, 0, false);
        return;
    }
    struct session_flow *f = session_flow(s);
    struct outgoing *o = f ? session_outgoing_new(s, m, d) : NULL;
    if (!o) {
        log_error("client %s: out of memory queueing a message on %s", s->log_id, m->topic);
        return;
    }
    if (online && f->inflight_count < session_window(s) && !f->queue_head) {
        uint16_t id;
        int rc = session_take_packet_id(s, &id);
        if (rc == 0) {
            session_send_inflight(s, o, id);
            return;
        }
        session_no_packet_id(s, rc); /* and queue it below */
    }
    /* Past max-memory nothing more waits in a queue: the window is all a session gets. */
    if (core_memory_full(s->instance->broker)) {
        f->dropped++;
        s->instance->queue_drops++;
        instance_note_refusal(s->instance, INSTANCE_REFUSED_MEMORY,
                              "over max-memory: a message on %s not queued for client %s", m->topic,
                              s->log_id);
        outgoing_free_list(s, o);
        return;
    }
    if (f->queue_count >= s->instance->limits.max_queued_messages) {
        struct outgoing *oldest = list_pop(&f->queue_head, &f->queue_tail);
        if (oldest) {
            f->queue_count--;
            s->instance->queue_drops++;
            if (log_every_nth(&f->dropped, 1000))
                log_warning("client %s: queue full (max-queued-messages %zu), dropping the "
                            "oldest message (%llu dropped so far)",
                            s->log_id, s->instance->limits.max_queued_messages,
                            (unsigned long long)f->dropped);
            outgoing_free_list(s, oldest);
        }
        if (s->instance->limits.max_queued_messages == 0) {
            outgoing_free_list(s, o);
            return;
        }
    }
    list_append(&f->queue_head, &f->queue_tail, o);
    f->queue_count++;
    session_keep_out(s, o);
}

int session_restore_outgoing(struct session *s, struct outgoing *o)
{
    struct session_flow *f = session_flow(s);

    if (!f)
        return -ENOMEM;
    if (o->state == OUT_QUEUED) {
        list_append(&f->queue_head, &f->queue_tail, o);
        f->queue_count++;
        return 0;
    }
    if (session_idset_add(s, &f->outgoing_ids, o->packet_id) < 0)
        return -ENOMEM;
    if (o->packet_id > f->last_packet_id)
        f->last_packet_id = o->packet_id;
    list_append(&f->inflight_head, &f->inflight_tail, o);
    f->inflight_count++;
    return 0;
}

/*
 * Drop from `*head` the messages the session's token may not read (a new
 * login may hold a narrower token than the one the messages were queued
 * under). Returns how many went; in-flight ones free their packet ids.
 */
static size_t session_drop_unreadable(struct session *s, struct outgoing **head,
                                      struct outgoing **tail, bool inflight)
{
    struct outgoing **link = head, *prev = NULL;
    size_t dropped = 0;

    while (*link) {
        struct outgoing *o = *link;
        /* A QoS 2 message past PUBREC has reached the client already: only its id is left. */
        if (!o->msg || access_may_read(s->token, o->msg->topic)) {
            prev = o;
            link = &o->next;
            continue;
        }
        *link = o->next;
        if (*tail == o)
            *tail = prev;
        if (inflight) {
            idset_remove(&s->flow->outgoing_ids, o->packet_id);
            s->flow->inflight_count--;
        } else {
            s->flow->queue_count--;
        }
        o->next = NULL;
        outgoing_free_list(s, o);
        dropped++;
    }
    return dropped;
}

/*
 * Leave the share groups whose filter the session's token may no longer
 * subscribe to (it resumed with a narrower token than it joined with).
 * Returns how many it left.
 */
static size_t session_leave_forbidden_groups(struct session *s)
{
    size_t left = 0;

    for (size_t i = 0; i < s->sub_count;) {
        struct session_sub *sub = &s->subs[i];
        if (!sub->share || access_may_subscribe(s->token, sub->share->filter)) {
            i++;
            continue;
        }
        share_leave(s->instance, sub->share, s);
        session_sub_forget(s, sub->filter); /* the last record moves into slot i */
        left++;
    }
    return left;
}

void session_resume(struct session *s)
{
    /* Back within the will's delay: the will is not published [MQTT-3.1.3-9]. */
    struct message *will = session_take_will(s);
    if (will) {
        log_info("client %s: back before its will's delay ended: will discarded", s->log_id);
        message_unref(will);
        session_keep_will(s, 0);
    }
    session_wait_free(s);
    struct session_flow *f = s->flow;
    if (s->token) {
        size_t n = !f ? 0
                      : session_drop_unreadable(s, &f->inflight_head, &f->inflight_tail, true) +
                            session_drop_unreadable(s, &f->queue_head, &f->queue_tail, false);
        if (n)
            log_notice("client %s: %zu queued messages dropped: token %s may not read them",
                       s->log_id, n, s->token->id);
        n = session_leave_forbidden_groups(s);
        if (n)
            log_notice("client %s: left %zu share groups: token %s may not subscribe to their "
                       "filters",
                       s->log_id, n, s->token->id);
    }
    for (struct outgoing *o = f ? f->inflight_head : NULL; o; o = o->next) {
        if (o->state == OUT_AWAIT_PUBCOMP) {
            struct mqtt_packet rel = {.type = MQTT_PUBREL, .flags = 2};
            rel.u.ack.packet_id = o->packet_id;
            sender_send(s->out, &rel);
        } else {
            /* Re-sent even when too large for the client now: its ack completes it. */
            struct delivery d = outgoing_delivery(o);
            sender_publish(s->out, o->msg, &d, o->packet_id, true);
        }
    }
    session_fill_window(s);
}

int session_ack(struct session *s, uint8_t type, uint16_t packet_id, bool refused)
{
    struct session_flow *f = s->flow;
    struct outgoing *prev = NULL, *o;

    /* Linear in the window, which max-inflight bounds (20 by default); the id set
     * only says whether an id is in flight, not where its entry is. */
    for (o = f ? f->inflight_head : NULL; o; prev = o, o = o->next)
        if (o->packet_id == packet_id)
            break;
    if (!o)
        return -ENOENT;

    bool expected = (type == MQTT_PUBACK && o->state == OUT_AWAIT_PUBACK) ||
                    (type == MQTT_PUBREC && o->state == OUT_AWAIT_PUBREC) ||
                    (type == MQTT_PUBCOMP && o->state == OUT_AWAIT_PUBCOMP) ||
                    (refused && o->state == OUT_AWAIT_PUBREC);
    if (!expected) {
        /* A repeated PUBREC while waiting for PUBCOMP: answer PUBREL again. */
        if (type == MQTT_PUBREC && o->state == OUT_AWAIT_PUBCOMP && s->out) {
            struct mqtt_packet rel = {.type = MQTT_PUBREL, .flags = 2};
            rel.u.ack.packet_id = packet_id;
            sender_send(s->out, &rel);
            return 0;
        }
        return -EPROTO;
    }
    if (type == MQTT_PUBREC) {
        /* The receiver has the message now; only the id stays in flight. */
        message_unref(o->msg);
        o->msg = NULL;
        o->state = OUT_AWAIT_PUBCOMP;
        session_keep_out(s, o);
        if (s->out) {
            struct mqtt_packet rel = {.type = MQTT_PUBREL, .flags = 2};
            rel.u.ack.packet_id = packet_id;
            sender_send(s->out, &rel);
        }
        return 0;
    }
    /* PUBACK or PUBCOMP: the exchange is complete. */
    if (prev)
        prev->next = o->next;
    else
        f->inflight_head = o->next;
    if (f->inflight_tail == o)
        f->inflight_tail = prev;
    f->inflight_count--;
    idset_remove(&f->outgoing_ids, packet_id);
    o->next = NULL;
    outgoing_free_list(s, o);
    session_fill_window(s);
    return 0;
}

int session_qos2_receive(struct session *s, uint16_t packet_id)
{
    struct session_flow *f = session_flow(s);
    int rc = f ? session_idset_add(s, &f->incoming_qos2, packet_id) : -ENOMEM;
    if (rc == 0)
        session_keep_id(s, JOURNAL_QOS2_ADD, packet_id, NULL);
    return rc;
}

int session_qos2_release(struct session *s, uint16_t packet_id)
{
    int rc = s->flow ? idset_remove(&s->flow->incoming_qos2, packet_id) : -ENOENT;
    if (rc == 0)
        session_keep_id(s, JOURNAL_QOS2_DROP, packet_id, NULL);
    return rc;
}
