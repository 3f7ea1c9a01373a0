#include "cluster/cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "broker/broker.h"
#include "broker/conn.h"
#include "broker/core.h"
#include "broker/instance.h"
#include "broker/message.h"
#include "broker/route.h"
#include "broker/session.h"
#include "broker/topic.h"
#include "cluster/bridge.h"
#include "cluster/pressure.h"
#include "cluster/redis_link.h"
#include "cluster/sessions.h"
#include "cluster/stream.h"
#include "codec/codec.h"
#include "util/clock.h"
#include "util/hex.h"
#include "util/log.h"
#include "util/redis_url.h"
#include "util/scratch.h"
#include "util/strmap.h"

#define NODE_ID_BYTES 8
/* Every node says what it has of each instance this often; older news counts for nothing. */
#define LOAD_INTERVAL_MS 1000
#define LOAD_FRESH_MS 3000
/*
 * Past this much waiting to go to Redis (Redis slower than the publishers),
 * messages are routed here alone until it has drained below half.
 */
#define BACKLOG_MAX (64u << 20)
/* At most one line this often about publishers waiting for this node's stream. */
#define PAUSED_LOG_INTERVAL_SEC 10

/* Where an instance's stream stands on this node. */
enum follow_state {
    FOLLOW_NONE,        /* not subscribed (no Redis, or the instance is gone) */
    FOLLOW_SUBSCRIBING, /* SSUBSCRIBE sent */
    FOLLOW_SYNCING,     /* subscribed; the retained hash asked for, records wait */
    FOLLOW_READY,
};

/* A message published here before the instance's stream was ready. */
struct held {
    struct message *m; /* a reference */
    char *client_id;   /* owned; NULL for none */
    uint64_t seq;      /* sent: its number (stream.h); held: 0 */
    size_t cost;       /* sent: what it counts in the cluster's pressure; held: 0 */
};

/* A record that came while the retained hash was being read. */
struct early {
    uint8_t *data; /* owned */
    size_t len;
};

/* What another node last said it has of an instance. */
struct node_load {
    char node[HEX_SIZE(NODE_ID_BYTES)];
    uint32_t conns, published;
    uint64_t seen_ms; /* clock_ms() */
};

/*
 * One instance's stream as this node follows it. Kept until the cluster
 * stops, also after its instance is freed, so that a reply still on its way
 * always finds it.
 */
struct follow {
    struct cluster *cl;
    char *name;    /* the instance's; owned */
    char *channel; /* "aviary:{NAME}"; owned */
    char *retained_key;
    bool wanted; /* its instance exists on this node */
    enum follow_state state;
    struct held *held;
    size_t held_count, held_cap;
    struct early *early;
    size_t early_count, early_cap;
    /*
     * Sent to the channel, not yet back from it: until a message comes back,
     * it is this node's to deliver here should Redis be lost (oldest first).
     */
    struct held *sent;
    size_t sent_head, sent_count, sent_cap;
    uint64_t routed_through; /* our messages up to this number were routed here alone */
    struct node_load *loads; /* the other nodes' */
    size_t load_count, load_cap;
    uint64_t messages_before; /* the instance's messages_in at the last report */
    bool reported;            /* the last report was not all zeros */
};

struct cluster {
    struct broker_cluster hooks; /* first: the broker's pointer is the cluster's */
    struct broker *broker;
    struct redis_url url;
    char shown[300]; /* the URL for the log, password hidden */
    char node[HEX_SIZE(NODE_ID_BYTES)];
    SSL_CTX *tls;
    struct redis_link *cmd;    /* SPUBLISH, HSET, HGETALL */
    struct redis_link *sub;    /* SSUBSCRIBE and the messages */
    struct strmap follows;     /* instance name -> struct follow (owned) */
    struct sessions *sessions; /* persistent sessions in Redis */
    struct event *load_timer;  /* reports this node's loads */
    unsigned load_ticks;
    bool backlog_warned; /* the command link's backlog passed its bound */
    uint64_t next_seq;   /* the number of the next message this node sends */
    bool warned;         /* the loss was logged: not again until connected */

    /* Back-pressure: publishers wait while our messages are far ahead of our stream. */
    struct pressure pressure;    /* our messages in Redis, not yet back: every follow's `sent` */
    struct event *resume_ev;     /* reads the publishers again, outside Redis's callbacks */
    struct log_every paused_log; /* pauses of the publishers */
};

static struct cluster *of(struct broker_cluster *h)
{
    return (struct cluster *)h;
}

static bool connected(const struct cluster *cl)
{
    return cl->broker->cluster_stats.connected;
}

/* ---- records in, to this node's sessions ---- */

static void deliver_message(struct instance *inst, const struct stream_message *sm)
{
    struct message *m = bridge_message(inst, sm);
    char small[128];
    struct scratch sc = SCRATCH_INIT(small);

    if (!m)
        return;
    const struct session *origin = NULL;
    char *cid = sm->client_id_len ? scratch_get(&sc, sm->client_id_len + 1) : NULL;
    if (cid) {
        memcpy(cid, sm->client_id, sm->client_id_len);
        cid[sm->client_id_len] = '\0';
        origin = strmap_get(&inst->sessions, cid);
    }
    route_publish_streamed(inst, m, origin);
    scratch_free(&sc);
    message_unref(m);
}

/*
 * A claim on a client id. Our own claim coming back makes our connection the
 * latest; another node's ends ours only when ours came back first, so that
 * of two logins racing on two nodes, the one Redis put last wins on both.
 */
static void take_claim(struct cluster *cl, struct instance *inst, const struct stream_claim *sc)
{
    char cid[256];

    if (sc->client_id_len >= sizeof(cid))
        return;
    memcpy(cid, sc->client_id, sc->client_id_len);
    cid[sc->client_id_len] = '\0';
    struct session *s = strmap_get(&inst->sessions, cid);
    if (!s)
        return;
    bool ours = sc->node_len == strlen(cl->node) && !memcmp(sc->node, cl->node, sc->node_len);
    if (ours) {
        if (s->conn && s->conn->id == sc->conn_id)
            s->conn->cluster_claim_pending = false;
        return;
    }
    if (s->conn && s->conn->cluster_claim_pending)
        return; /* ours is later in the stream: the other node's connection ends */
    cl->broker->cluster_stats.taken_over++;
    /* Redis's copy is the new node's now: nothing here writes to it again. */
    s->mirror = SESSION_MIRROR_GONE;
    if (s->conn) {
        log_notice("client %s: taken over by a connection to another node", s->log_id);
        conn_disconnect(s->conn, MQTT_RC_SESSION_TAKEN_OVER,
                        "taken over by a new connection with the same client id on another node");
    }
    /* The session goes on where the client is now; what waited here for it is dropped. */
    s = strmap_get(&inst->sessions, cid);
    if (s && !s->conn) {
        message_unref(s->will);
        s->will = NULL;
        conn_end_session(s);
    }
}

/* The other nodes' fresh reports, summed into the instance's cluster-wide limits. */
static void loads_apply(struct follow *f, struct instance *inst)
{
    uint64_t now = clock_ms();
    size_t conns = 0;
    unsigned publishing = 1;

    for (size_t i = 0; i < f->load_count; i++) {
        if (now - f->loads[i].seen_ms > LOAD_FRESH_MS)
            continue;
        conns += f->loads[i].conns;
        publishing += f->loads[i].published > 0;
    }
    inst->remote_conns = conns;
    inst->rate_nodes = publishing;
}

static void take_load(struct follow *f, struct instance *inst, const struct stream_load *l)
{
    struct node_load *n = NULL;

    if (l->node_len != 2 * NODE_ID_BYTES || !memcmp(l->node, f->cl->node, l->node_len))
        return; /* not a node id, or our own report */
    for (size_t i = 0; i < f->load_count && !n; i++)
        if (!memcmp(f->loads[i].node, l->node, l->node_len))
            n = &f->loads[i];
    if (!n) {
        if (f->load_count == f->load_cap) {
            size_t cap = f->load_cap ? f->load_cap * 2 : 4;
            struct node_load *grown = realloc(f->loads, cap * sizeof(*grown));
            if (!grown)
                return;
            f->loads = grown;
            f->load_cap = cap;
        }
        n = &f->loads[f->load_count++];
        memcpy(n->node, l->node, l->node_len);
        n->node[l->node_len] = '\0';
    }
    n->conns = l->conns;
    n->published = l->published;
    n->seen_ms = clock_ms();
    loads_apply(f, inst);
}

static bool ours(const struct cluster *cl, const struct stream_message *sm)
{
    return sm->node_len == 2 * NODE_ID_BYTES && !memcmp(sm->node, cl->node, sm->node_len);
}

static void held_clear(struct held *h)
{
    message_unref(h->m);
    free(h->client_id);
}

/* ---- back-pressure: publishers wait while our messages are far ahead of our stream ---- */

static void publishers_go(struct cluster *cl)
{
    cl->hooks.hold_publishers = false;
    event_active(cl->resume_ev, EV_TIMEOUT, 0);
}

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct cluster *cl = arg;

    if (!cl->hooks.hold_publishers) /* not held again meanwhile */
        broker_cluster_resume(cl->broker);
}

/*
 * `cost` more bytes of ours in Redis. Past the mark Redis is slower to give
 * them back than our publishers are to send them: they wait (TCP holds them
 * back, as a lone node's), rather than Redis closing our subscription.
 */
static void pressure_more(struct cluster *cl, size_t cost)
{
    if (!pressure_add(&cl->pressure, cost))
        return;
    cl->hooks.hold_publishers = true;
    cl->broker->cluster_stats.paused++;
    if (log_every_due(&cl->paused_log, time(NULL), PAUSED_LOG_INTERVAL_SEC))
        log_notice("cluster: %zu bytes of this node's messages are in Redis at %s and not yet "
                   "back (mark %zu): its publishers are read again under half of it (%llu "
                   "times so far)",
                   cl->pressure.bytes, cl->shown, cl->pressure.mark,
                   (unsigned long long)cl->paused_log.count);
}

/* The head of `sent` came back, or is dropped. */
static void sent_pop(struct follow *f)
{
    struct held *h = &f->sent[f->sent_head];

    if (pressure_sub(&f->cl->pressure, h->cost))
        publishers_go(f->cl);
    held_clear(h);
    f->sent_head = (f->sent_head + 1) % f->sent_cap;
    f->sent_count--;
}

/* Redis's limit for a subscriber's output: the mark is well under it (pressure.h). */
static void limits_cb(void *arg, redisReply *r)
{
    struct cluster *cl = arg;

    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[1]->type != REDIS_REPLY_STRING)
        return; /* CONFIG refused (a managed Redis, say): the default mark */
    size_t mark = pressure_mark_of(r->element[1]->str);
    if (!mark || mark == cl->pressure.mark)
        return;
    log_notice("cluster: Redis at %s limits a subscriber's output to \"%s\": this node's "
               "publishers wait past %zu bytes of its messages not yet back",
               cl->shown, r->element[1]->str, mark);
    if (pressure_set_mark(&cl->pressure, mark))
        publishers_go(cl);
}

static void ask_limits(struct cluster *cl)
{
    static const char *const argv[] = {"CONFIG", "GET", "client-output-buffer-limit"};
    static const size_t lens[] = {6, 3, 26};

    redis_link_command(cl->cmd, 3, (const char **)argv, lens, limits_cb, cl);
}

static void sent_drop_all(struct follow *f)
{
    while (f->sent_count)
        sent_pop(f);
}

/*
 * Our message number `seq` came back: it and any before it (not expected:
 * Redis keeps our order) leave `sent`. False when it was routed here already.
 */
static bool echoed(struct follow *f, uint64_t seq)
{
    if (seq <= f->routed_through)
        return false;
    while (f->sent_count && f->sent[f->sent_head].seq <= seq)
        sent_pop(f);
    return true;
}

static void take_record(struct follow *f, const uint8_t *data, size_t len)
{
    struct cluster *cl = f->cl;
    struct stream_record r;
    char err[128];

    cl->broker->cluster_stats.received++;
    if (stream_decode(data, len, &r, err, sizeof(err)) < 0) {
        cl->broker->cluster_stats.bad++;
        log_warning("cluster: instance %s: a record from Redis dropped: %s", f->name, err);
        return;
    }
    struct instance *inst = bridge_instance(cl->broker, f->name);
    if (!inst || inst->deleting)
        return;
    if (r.type == STREAM_MESSAGE && bridge_check(inst, &r.u.message, err, sizeof(err)) < 0) {
        cl->broker->cluster_stats.bad++;
        log_warning("cluster: instance %s: a record from Redis dropped: %s", f->name, err);
        return;
    }
    if (r.type == STREAM_MESSAGE && ours(cl, &r.u.message) && !echoed(f, r.u.message.seq))
        return; /* routed here already, while Redis was lost */
    if (r.type == STREAM_MESSAGE)
        deliver_message(inst, &r.u.message);
    else if (r.type == STREAM_CLAIM)
        take_claim(cl, inst, &r.u.claim);
    else
        take_load(f, inst, &r.u.load);
}

static void keep_early(struct follow *f, const uint8_t *data, size_t len)
{
    if (f->early_count == f->early_cap) {
        size_t cap = f->early_cap ? f->early_cap * 2 : 16;
        struct early *grown = realloc(f->early, cap * sizeof(*grown));
        if (!grown)
            goto now;
        f->early = grown;
        f->early_cap = cap;
    }
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        goto now;
    memcpy(copy, data, len);
    f->early[f->early_count++] = (struct early){copy, len};
    return;
now: /* out of memory: deliver it now rather than lose it */
    take_record(f, data, len);
}

static void deliver_early(struct follow *f)
{
    for (size_t i = 0; i < f->early_count; i++) {
        take_record(f, f->early[i].data, f->early[i].len);
        free(f->early[i].data);
    }
    f->early_count = 0;
}

/* An "smessage": [smessage, channel, data]. */
static void push_cb(void *ctx, redisReply *r)
{
    struct cluster *cl = ctx;
    const char *channel = r->element[1]->str;
    struct follow *f = NULL;

    /* "aviary:{NAME}" */
    size_t len = r->element[1]->len;
    if (len > 9 && !strncmp(channel, "aviary:{", 8) && channel[len - 1] == '}') {
        char name[256];
        if (len - 9 < sizeof(name)) {
            memcpy(name, channel + 8, len - 9);
            name[len - 9] = '\0';
            f = strmap_get(&cl->follows, name);
        }
    }
    if (!f || !f->wanted || r->element[2]->type != REDIS_REPLY_STRING)
        return;
    if (f->state == FOLLOW_SYNCING)
        keep_early(f, (const uint8_t *)r->element[2]->str, r->element[2]->len);
    else
        take_record(f, (const uint8_t *)r->element[2]->str, r->element[2]->len);
}

/* ---- messages out, to the streams ---- */

/*
 * The retained hash first, then the channel (unless only `keep`ing it in the
 * hash): a node that reads the hash later misses nothing.
 */
static int send_record(struct follow *f, const struct message *m, const char *client_id, bool keep,
                       size_t *cost)
{
    struct cluster *cl = f->cl;
    struct stream_message sm;
    uint8_t small[512];
    struct scratch sc = SCRATCH_INIT(small);
    int rc = -1;

    bridge_record_of(m, client_id, &sm);
    if (!keep) {
        sm.node = cl->node;
        sm.node_len = strlen(cl->node);
        sm.seq = cl->next_seq + 1;
    }
    size_t len = stream_message_size(&sm);
    uint8_t *rec = scratch_get(&sc, len);
    if (!rec)
        goto out;
    stream_encode_message(&sm, rec);
    if (cost)
        *cost = pressure_cost(len, strlen(f->channel));
    if (m->retain && m->payload_len)
        rc = redis_link_command(
            cl->cmd, 4, (const char *[]){"HSET", f->retained_key, m->topic, (const char *)rec},
            (size_t[]){4, strlen(f->retained_key), m->topic_len, len}, NULL, NULL);
    else if (m->retain)
        rc = redis_link_command(cl->cmd, 3, (const char *[]){"HDEL", f->retained_key, m->topic},
                                (size_t[]){4, strlen(f->retained_key), m->topic_len}, NULL, NULL);
    else
        rc = 0;
    if (rc == 0 && !keep)
        rc = redis_link_command(cl->cmd, 3,
                                (const char *[]){"SPUBLISH", f->channel, (const char *)rec},
                                (size_t[]){8, strlen(f->channel), len}, NULL, NULL);
out:
    scratch_free(&sc);
    return rc;
}

static int sent_push(struct follow *f, struct message *m, const char *client_id, uint64_t seq,
                     size_t cost)
{
    if (f->sent_count == f->sent_cap) {
        size_t cap = f->sent_cap ? f->sent_cap * 2 : 64;
        struct held *grown = malloc(cap * sizeof(*grown));
        if (!grown)
            return -1;
        for (size_t i = 0; i < f->sent_count; i++)
            grown[i] = f->sent[(f->sent_head + i) % f->sent_cap];
        free(f->sent);
        f->sent = grown;
        f->sent_head = 0;
        f->sent_cap = cap;
    }
    char *cid = client_id ? strdup(client_id) : NULL;
    if (client_id && !cid)
        return -1;
    f->sent[(f->sent_head + f->sent_count) % f->sent_cap] =
        (struct held){message_ref(m), cid, seq, cost};
    f->sent_count++;
    pressure_more(f->cl, cost);
    return 0;
}

/* To the channel, and kept until it comes back. */
static int send_message(struct follow *f, struct message *m, const char *client_id)
{
    size_t cost = 0;

    if (send_record(f, m, client_id, false, &cost) < 0)
        return -1;
    uint64_t seq = ++f->cl->next_seq;
    if (sent_push(f, m, client_id, seq, cost) < 0)
        log_warning("cluster: out of memory remembering a message sent: lost here if Redis is");
    return 0;
}

static int hold(struct follow *f, struct message *m, const char *client_id)
{
    if (f->held_count == f->held_cap) {
        size_t cap = f->held_cap ? f->held_cap * 2 : 16;
        struct held *grown = realloc(f->held, cap * sizeof(*grown));
        if (!grown)
            return -1;
        f->held = grown;
        f->held_cap = cap;
    }
    char *cid = client_id ? strdup(client_id) : NULL;
    if (client_id && !cid)
        return -1;
    f->held[f->held_count++] = (struct held){message_ref(m), cid, 0, 0};
    return 0;
}

/*
 * Messages held for a stream that is now ready go to it; when it cannot be
 * reached (`send` false, or a send fails) they are routed here alone, in order.
 */
static void release_held(struct follow *f, bool send)
{
    struct instance *inst = bridge_instance(f->cl->broker, f->name);

    for (size_t i = 0; i < f->held_count; i++) {
        struct held *h = &f->held[i];
        if (send && send_message(f, h->m, h->client_id) == 0) {
            f->cl->broker->cluster_stats.sent++;
        } else if (inst && f->wanted) {
            send = false;
            f->cl->broker->cluster_stats.local_only++;
            route_publish_streamed(inst, h->m,
                                   h->client_id ? strmap_get(&inst->sessions, h->client_id) : NULL);
        }
        message_unref(h->m);
        free(h->client_id);
    }
    f->held_count = 0;
}

/* Is Redis so far behind that this node must route alone for a while? */
static bool backlogged(struct cluster *cl)
{
    size_t unsent = redis_link_unsent(cl->cmd);

    if (!cl->backlog_warned && unsent > BACKLOG_MAX) {
        cl->backlog_warned = true;
        log_warning("cluster: %zu MB wait to go to Redis at %s: messages are routed on this node "
                    "alone until it catches up",
                    unsent >> 20, cl->shown);
    } else if (cl->backlog_warned && unsent < BACKLOG_MAX / 2) {
        cl->backlog_warned = false;
        log_notice("cluster: Redis at %s caught up", cl->shown);
    }
    return cl->backlog_warned;
}

static bool hook_publish(struct broker_cluster *h, struct instance *inst, struct message *m,
                         const char *client_id)
{
    struct cluster *cl = of(h);
    struct follow *f = strmap_get(&cl->follows, inst->name);

    /* Not followed (Redis refused it, or is away): this node alone. */
    if (!f || f->state == FOLLOW_NONE || !connected(cl) || backlogged(cl)) {
        cl->broker->cluster_stats.local_only++;
        return false;
    }
    /* Being followed: it waits for the stream, in order. */
    if (f->state != FOLLOW_READY)
        return hold(f, m, client_id) == 0;
    if (send_message(f, m, client_id) < 0) {
        cl->broker->cluster_stats.local_only++;
        return false;
    }
    cl->broker->cluster_stats.sent++;
    return true;
}

static void hook_claim(struct broker_cluster *h, struct instance *inst, struct conn *c)
{
    struct cluster *cl = of(h);
    struct follow *f = strmap_get(&cl->follows, inst->name);
    struct session *s = c->session;
    uint8_t rec[600];

    /* Before the stream is ready our claim might not come back to us: no claim then. */
    if (!f || f->state != FOLLOW_READY || !s)
        return;
    struct stream_claim claim = {.node = cl->node,
                                 .node_len = strlen(cl->node),
                                 .client_id = s->client_id,
                                 .client_id_len = strlen(s->client_id),
                                 .conn_id = c->id};
    size_t len = stream_claim_size(&claim);
    if (len > sizeof(rec))
        return;
    stream_encode_claim(&claim, rec);
    c->cluster_claim_pending =
        redis_link_command(cl->cmd, 3, (const char *[]){"SPUBLISH", f->channel, (const char *)rec},
                           (size_t[]){8, strlen(f->channel), len}, NULL, NULL) == 0;
}

static void hook_session_record(struct broker_cluster *h, struct session *s,
                                const struct journal_record *r, const struct message *m)
{
    sessions_record(of(h)->sessions, s, r, m);
}

static bool hook_fetch_session(struct broker_cluster *h, struct instance *inst,
                               const char *client_id, struct conn *c)
{
    struct cluster *cl = of(h);
    return connected(cl) && sessions_fetch(cl->sessions, inst, client_id, c);
}

static void hook_forget(struct broker_cluster *h, struct conn *c)
{
    sessions_forget(of(h)->sessions, c);
}

/* ---- following an instance's stream ---- */

/* One entry of the retained hash: it becomes the instance's retained message here. */
static void sync_one_retained(struct follow *f, struct instance *inst, const redisReply *value)
{
    struct stream_record r;
    char err[128];

    if (value->type != REDIS_REPLY_STRING ||
        stream_decode((const uint8_t *)value->str, value->len, &r, err, sizeof(err)) < 0 ||
        r.type != STREAM_MESSAGE || !r.u.message.retain ||
        bridge_check(inst, &r.u.message, err, sizeof(err)) < 0) {
        f->cl->broker->cluster_stats.bad++;
        log_warning("cluster: instance %s: a retained message in Redis is not well formed",
                    f->name);
        return;
    }
    struct message *m = bridge_message(inst, &r.u.message);
    if (!m)
        return;
    if (!message_expired(m, clock_ms()))
        route_retain(inst, m);
    message_unref(m);
}

struct upload {
    struct follow *f;
    size_t count;
};

static void upload_one(void *ctx, const char *topic, void *msg)
{
    struct upload *u = ctx;

    if (send_record(u->f, msg, NULL, true, NULL) == 0)
        u->count++;
}

/*
 * Redis holds no retained message of the instance (it was restarted without
 * its data): this node's own go back to it. (Only then: during a split, a
 * topic cleared on another node must not come back from this one.)
 */
static void upload_retained(struct follow *f, struct instance *inst)
{
    struct upload u = {f, 0};

    topic_tree_retained_match(inst->tree, "#", upload_one, &u);
    if (u.count)
        log_notice("cluster: instance %s: Redis had no retained messages; %zu sent from this node",
                   f->name, u.count);
}

/*
 * Every connection here claims its client id again: a client that logged in
 * to two nodes while Redis was away stays on one of them.
 */
static void claim_all(struct cluster *cl, struct instance *inst)
{
    size_t pos = 0;
    struct session *s;

    while ((s = strmap_next(&inst->sessions, &pos, NULL)))
        if (s->conn)
            hook_claim(&cl->hooks, inst, s->conn);
}

/*
 * The retained hash's entries, then what came meanwhile, then what waited to
 * be sent; and this node's persistent sessions, written whole again.
 */
static void synced_cb(void *arg, redisReply *r)
{
    struct follow *f = arg;

    if (!r || f->state != FOLLOW_SYNCING)
        return; /* lost: link_state() has reset it */
    struct instance *inst = bridge_instance(f->cl->broker, f->name);
    if (r->type == REDIS_REPLY_ARRAY && inst) {
        for (size_t i = 0; i + 1 < r->elements; i += 2)
            sync_one_retained(f, inst, r->element[i + 1]);
        if (!r->elements)
            upload_retained(f, inst);
        sessions_rewrite(f->cl->sessions, inst);
    } else if (r->type == REDIS_REPLY_ERROR) {
        log_warning("cluster: instance %s: cannot read its retained messages: %s", f->name, r->str);
    }
    f->state = FOLLOW_READY;
    deliver_early(f);
    release_held(f, true);
    if (inst)
        claim_all(f->cl, inst);
}

static void subscribed_cb(void *arg, redisReply *r)
{
    struct follow *f = arg;
    struct cluster *cl = f->cl;

    if (!r || f->state != FOLLOW_SUBSCRIBING)
        return;
    if (r->type == REDIS_REPLY_ERROR) {
        log_warning("cluster: instance %s: Redis refused SSUBSCRIBE: %s", f->name, r->str);
        f->state = FOLLOW_NONE;
        release_held(f, false);
        return;
    }
    f->state = FOLLOW_SYNCING;
    if (redis_link_command(cl->cmd, 2, (const char *[]){"HGETALL", f->retained_key},
                           (size_t[]){7, strlen(f->retained_key)}, synced_cb, f) < 0) {
        f->state = FOLLOW_READY; /* no retained messages from Redis this time */
        deliver_early(f);
        release_held(f, true);
    }
}

static void follow_start(struct follow *f)
{
    struct cluster *cl = f->cl;

    if (!f->wanted || !connected(cl) || f->state != FOLLOW_NONE)
        return;
    f->state = FOLLOW_SUBSCRIBING;
    if (redis_link_command(cl->sub, 2, (const char *[]){"SSUBSCRIBE", f->channel},
                           (size_t[]){10, strlen(f->channel)}, subscribed_cb, f) < 0)
        f->state = FOLLOW_NONE;
}

/* Redis is gone: what came and what waited is routed here, in its order. */
static void follow_reset(struct follow *f)
{
    struct instance *inst = f->wanted ? bridge_instance(f->cl->broker, f->name) : NULL;

    f->state = FOLLOW_NONE;
    deliver_early(f);
    /* Sent but not back: maybe never to come; delivered here now, and skipped if they do. */
    while (f->sent_count) {
        struct held *h = &f->sent[f->sent_head];
        if (inst) {
            f->cl->broker->cluster_stats.local_only++;
            route_publish_streamed(inst, h->m,
                                   h->client_id ? strmap_get(&inst->sessions, h->client_id) : NULL);
        }
        f->routed_through = h->seq;
        sent_pop(f); /* publishers that waited for it go on, routed here alone */
    }
    release_held(f, false);
}

static struct follow *follow_new(struct cluster *cl, const char *name)
{
    struct follow *f = calloc(1, sizeof(*f));
    size_t len = strlen(name);

    if (!f)
        return NULL;
    f->cl = cl;
    f->name = strdup(name);
    f->channel = malloc(len + 10);
    f->retained_key = malloc(len + 19);
    if (!f->name || !f->channel || !f->retained_key ||
        strmap_put(&cl->follows, f->name, f, NULL) < 0) {
        free(f->name);
        free(f->channel);
        free(f->retained_key);
        free(f);
        return NULL;
    }
    /* One hash tag: the channel and the hash live on the same shard of a Redis Cluster. */
    snprintf(f->channel, len + 10, "aviary:{%s}", name);
    snprintf(f->retained_key, len + 19, "aviary:{%s}:retained", name);
    return f;
}

static void follow_free(struct follow *f)
{
    release_held(f, false);
    for (size_t i = 0; i < f->early_count; i++)
        free(f->early[i].data);
    free(f->early);
    sent_drop_all(f);
    free(f->sent);
    free(f->loads);
    free(f->held);
    free(f->name);
    free(f->channel);
    free(f->retained_key);
    free(f);
}

static void hook_instance_added(struct broker_cluster *h, struct instance *inst)
{
    struct cluster *cl = of(h);
    struct follow *f = strmap_get(&cl->follows, inst->name);

    if (!f && !(f = follow_new(cl, inst->name))) {
        log_error("cluster: out of memory following instance %s: it is served on this node alone",
                  inst->name);
        return;
    }
    f->wanted = true;
    follow_start(f);
}

static void hook_instance_removed(struct broker_cluster *h, struct instance *inst)
{
    struct cluster *cl = of(h);
    struct follow *f = strmap_get(&cl->follows, inst->name);

    if (!f)
        return;
    f->wanted = false;
    for (size_t i = 0; i < f->early_count; i++)
        free(f->early[i].data);
    f->early_count = 0;
    sent_drop_all(f);       /* not wanted: forgotten */
    release_held(f, false); /* not wanted: dropped */
    if (f->state != FOLLOW_NONE && redis_link_up(cl->sub))
        redis_link_command(cl->sub, 2, (const char *[]){"SUNSUBSCRIBE", f->channel},
                           (size_t[]){12, strlen(f->channel)}, NULL, NULL);
    f->state = FOLLOW_NONE;
    /* Deleted from the catalog (every node sees it): its retained messages leave Redis too. */
    if (inst->deleting && redis_link_up(cl->cmd))
        redis_link_command(cl->cmd, 2, (const char *[]){"DEL", f->retained_key},
                           (size_t[]){3, strlen(f->retained_key)}, NULL, NULL);
}

/* ---- what this node has of each instance, said every second ---- */

static void report_load(struct follow *f, struct instance *inst)
{
    struct cluster *cl = f->cl;
    uint64_t published = inst->messages_in - f->messages_before;
    uint8_t rec[64];

    f->messages_before = inst->messages_in;
    loads_apply(f, inst); /* older reports lapse even when nobody says anything new */
    if (!inst->conn_count && !published && !f->reported)
        return; /* nothing to say, and others know it */
    f->reported = inst->conn_count || published;
    struct stream_load l = {.node = cl->node,
                            .node_len = strlen(cl->node),
                            .conns = inst->conn_count > UINT32_MAX ? UINT32_MAX
                                                                   : (uint32_t)inst->conn_count,
                            .published = published > UINT32_MAX ? UINT32_MAX : (uint32_t)published};
    stream_encode_load(&l, rec);
    redis_link_command(cl->cmd, 3, (const char *[]){"SPUBLISH", f->channel, (const char *)rec},
                       (size_t[]){8, strlen(f->channel), stream_load_size(&l)}, NULL, NULL);
}

static void load_cb(evutil_socket_t fd, short what, void *arg)
{
    struct cluster *cl = arg;
    size_t pos = 0;
    struct follow *f;

    if (++cl->load_ticks % (SESSIONS_RENEW_SEC * 1000 / LOAD_INTERVAL_MS) == 0)
        sessions_renew(cl->sessions);
    while ((f = strmap_next(&cl->follows, &pos, NULL))) {
        struct instance *inst = f->wanted ? bridge_instance(cl->broker, f->name) : NULL;
        if (!inst)
            continue;
        if (f->state == FOLLOW_READY) {
            report_load(f, inst);
        } else { /* alone while Redis is away */
            inst->remote_conns = 0;
            inst->rate_nodes = 0;
        }
    }
}

/* ---- the links ---- */

static void link_state(void *ctx, bool up, const char *why)
{
    struct cluster *cl = ctx;
    struct broker_cluster_stats *st = &cl->broker->cluster_stats;
    bool was = st->connected;
    size_t pos = 0;
    struct follow *f;

    st->connected = redis_link_up(cl->cmd) && redis_link_up(cl->sub);
    if (st->connected && !was) {
        cl->warned = false;
        log_notice("cluster: node %s connected to Redis at %s; following %zu instances", cl->node,
                   cl->shown, cl->follows.count);
        ask_limits(cl);
        while ((f = strmap_next(&cl->follows, &pos, NULL)))
            follow_start(f);
    } else if (!up) {
        if (was)
            st->losses++;
        if (was && !cl->warned)
            log_warning("cluster: lost Redis at %s (%s): each instance is served to this node's "
                        "clients alone until it is back",
                        cl->shown, why);
        else if (!cl->warned)
            log_warning("cluster: cannot reach Redis at %s (%s); trying again", cl->shown, why);
        cl->warned = true;
        /* Each follow starts over, retained hash first, once both links are up again. */
        while ((f = strmap_next(&cl->follows, &pos, NULL)))
            follow_reset(f);
    }
}

/* The command link is never a subscriber: nothing is pushed to it. */
static void no_push(void *ctx, redisReply *r)
{
}

static SSL_CTX *client_tls(const char *ca_file, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    if (!ctx) {
        snprintf(err, errlen, "cannot make a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    int ok = ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                     : SSL_CTX_set_default_verify_paths(ctx);
    if (ok != 1) {
        snprintf(err, errlen, "cannot load the CAs for Redis%s%s: %s", ca_file ? " from " : "",
                 ca_file ? ca_file : "", ERR_reason_error_string(ERR_get_error()));
        SSL_CTX_free(ctx);
        return NULL;
    }
    return ctx;
}

static int make_links(struct cluster *cl)
{
    struct redis_link_config c = {
        .url = &cl->url,
        .tls = cl->tls,
        .name = "commands",
        .on_state = link_state,
        .on_push = no_push,
        .ctx = cl,
    };
    cl->cmd = redis_link_new(cl->broker->base, &c);
    c.subscriber = true;
    c.name = "subscriptions";
    c.on_push = push_cb;
    cl->sub = cl->cmd ? redis_link_new(cl->broker->base, &c) : NULL;
    cl->sessions = cl->sub ? sessions_new(cl->broker, cl->cmd) : NULL;
    return cl->sessions ? 0 : -1;
}

struct cluster *cluster_start(struct broker *b, const char *url, const char *ca_file, char *err,
                              size_t errlen)
{
    struct cluster *cl = calloc(1, sizeof(*cl));
    uint8_t id[NODE_ID_BYTES];

    if (!cl) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    cl->broker = b;
    pressure_init(&cl->pressure);
    cl->hooks = (struct broker_cluster){
        .publish = hook_publish,
        .claim = hook_claim,
        .instance_added = hook_instance_added,
        .instance_removed = hook_instance_removed,
        .session_record = hook_session_record,
        .fetch_session = hook_fetch_session,
        .forget = hook_forget,
    };
    if (redis_url_parse(url, &cl->url, err, errlen) < 0 ||
        (cl->url.tls && !(cl->tls = client_tls(ca_file, err, errlen)))) {
        cluster_stop(cl);
        return NULL;
    }
    redis_url_format(&cl->url, cl->shown, sizeof(cl->shown));
    if (RAND_bytes(id, sizeof(id)) != 1) {
        snprintf(err, errlen, "no random bytes for the node id");
        cluster_stop(cl);
        return NULL;
    }
    hex_encode(id, sizeof(id), cl->node);
    if (make_links(cl) < 0) {
        snprintf(err, errlen, "out of memory");
        cluster_stop(cl);
        return NULL;
    }
    struct timeval every = {LOAD_INTERVAL_MS / 1000, (LOAD_INTERVAL_MS % 1000) * 1000};
    cl->load_timer = event_new(b->base, -1, EV_PERSIST, load_cb, cl);
    cl->resume_ev = event_new(b->base, -1, 0, resume_cb, cl);
    if (!cl->load_timer || !cl->resume_ev || evtimer_add(cl->load_timer, &every) < 0) {
        snprintf(err, errlen, "out of memory");
        cluster_stop(cl);
        return NULL;
    }
    log_notice("cluster: node %s joins the cluster at %s", cl->node, cl->shown);
    broker_set_cluster(b, &cl->hooks);
    return cl;
}

const char *cluster_node_id(const struct cluster *cl)
{
    return cl->node;
}

void cluster_stop(struct cluster *cl)
{
    size_t pos = 0;
    struct follow *f;

    if (!cl)
        return;
    if (cl->broker->cluster == &cl->hooks)
        broker_set_cluster(cl->broker, NULL);
    /* Freeing the links answers what waits with NULL, which the follows ignore. */
    redis_link_free(cl->sub);
    redis_link_free(cl->cmd);
    sessions_free(cl->sessions);
    if (cl->load_timer)
        event_free(cl->load_timer);
    cl->broker->cluster_stats.connected = false;
    while ((f = strmap_next(&cl->follows, &pos, NULL)))
        follow_free(f);
    strmap_clear(&cl->follows);
    /* After the follows: dropping what they sent may ask for it. */
    if (cl->resume_ev)
        event_free(cl->resume_ev);
    SSL_CTX_free(cl->tls);
    redis_url_clear(&cl->url);
    free(cl);
}
