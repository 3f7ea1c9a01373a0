#include "cluster/cluster.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "broker/broker.h"
#include "broker/client.h"
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
#include "util/fifo.h"
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
/*
 * Every node says it is alive every LOAD_INTERVAL_MS (a key that lives this
 * long); one silent this long is gone, and the nodes that follow its
 * instances take over its persistent sessions.
 */
#define NODE_ALIVE_MS 5000
/*
 * What a node keeps of each stream (its QoS 1 and 2 messages), so that the
 * sessions of a node that died get what it had not taken: long enough to
 * cover the death, its detection, and the dead node's last report.
 */
#define HISTORY_MS (3 * NODE_ALIVE_MS)
#define HISTORY_MAX (16u << 20)       /* per instance */
#define HISTORY_NODE_MAX (128u << 20) /* all instances: past it, the busiest keep less */
/* The reports of another node remembered, with where each came in the kept stream. */
#define LOAD_MARKS 4

/*
 * The set of live nodes; beside it each node's key ("...:ID"), and the nodes
 * gone in the last hour with when they went (a sorted set, "...:gone").
 */
static const char NODES_KEY[] = "aviary:{nodes}";
#define GONE_KEPT_MS 3600000

/*
 * This node lives for ARGV[2] ms more. Returns 0 when it had been taken for
 * gone meanwhile (its sessions were taken over), else 1.
 */
static const char NODE_BEAT[] = "local was = redis.call('ZREM', KEYS[1] .. ':gone', ARGV[1]) "
                                "redis.call('SET', KEYS[1] .. ':' .. ARGV[1], '1', 'PX', ARGV[2]) "
                                "redis.call('SADD', KEYS[1], ARGV[1]) return 1 - was";

/*
 * The nodes other than ARGV[1] whose key lapsed move to the gone set; returns
 * the nodes gone in the last ARGV[2] ms (every node takes over the sessions of
 * each in the instances it follows: Redis lets only one take each session).
 */
static const char NODES_REAP[] =
    "local t = redis.call('TIME') local now = t[1] * 1000 + math.floor(t[2] / 1000) "
    "local gone = KEYS[1] .. ':gone' "
    "for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do "
    "if n ~= ARGV[1] and redis.call('EXISTS', KEYS[1] .. ':' .. n) == 0 then "
    "redis.call('SREM', KEYS[1], n) redis.call('ZADD', gone, now, n) end end "
    "redis.call('ZREMRANGEBYSCORE', gone, '-inf', now - tonumber(ARGV[2])) "
    "return redis.call('ZRANGE', gone, 0, -1)";

/* A node id, as a value. */
struct node_id {
    char id[HEX_SIZE(NODE_ID_BYTES)];
};
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

/* A QoS 1 or 2 record of the stream, kept for a while (HISTORY_MS). */
struct kept {
    uint8_t *data; /* owned */
    size_t len;
    uint64_t at_ms; /* clock_ms() when it came */
};

/* What another node last said it has of an instance. */
struct node_load {
    char node[HEX_SIZE(NODE_ID_BYTES)];
    uint32_t conns, published;
    uint64_t seen_ms; /* clock_ms() */
    uint64_t through; /* it has taken every record before its report of this number */
    struct {
        uint64_t number; /* a report of it */
        uint64_t at;     /* the kept stream's length (follow.kept_total) when it came */
    } marks[LOAD_MARKS];
    unsigned next_mark;
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
    uint64_t reports_sent;    /* this node's reports of the instance */
    uint64_t reports_back;    /* the number of the latest of them read back */
    struct fifo waiters;      /* struct conn *: logins waiting for the stream to be ready */
    struct fifo kept;         /* struct kept, oldest first */
    uint64_t kept_total;      /* records ever kept: kept's front is number kept_total - count */
    size_t kept_bytes;
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
    struct fifo gone;    /* struct node_id: the nodes gone, as Redis last said */
    size_t kept_bytes;   /* what all follows keep of their streams */

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

/* To this node's sessions, or when `replay`, to those it adopts (route_replay). */
static void deliver_message(struct instance *inst, const struct stream_message *sm, bool replay)
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
    if (replay)
        route_replay(inst, m, origin);
    else
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
        message_unref(session_take_will(s));
        conn_end_session(s);
    }
}

/*
 * The other nodes' fresh reports, summed into the instance's cluster-wide
 * limits; a node not heard of for as long as the gone are remembered is
 * forgotten (node ids are new at each start).
 */
static void loads_apply(struct follow *f, struct instance *inst)
{
    uint64_t now = clock_ms();
    size_t conns = 0;
    unsigned publishing = 1;

    for (size_t i = 0; i < f->load_count; i++) {
        if (now - f->loads[i].seen_ms > GONE_KEPT_MS) {
            f->loads[i--] = f->loads[--f->load_count];
            continue;
        }
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

    if (l->node_len != 2 * NODE_ID_BYTES)
        return;
    if (!memcmp(l->node, f->cl->node, l->node_len)) {
        f->reports_back = l->number; /* every record before it has been taken */
        return;
    }
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
        *n = (struct node_load){0};
        memcpy(n->node, l->node, l->node_len);
        n->node[l->node_len] = '\0';
    }
    n->conns = l->conns;
    n->published = l->published;
    n->seen_ms = clock_ms();
    n->through = l->through;
    n->marks[n->next_mark].number = l->number;
    n->marks[n->next_mark].at = f->kept_total;
    n->next_mark = (n->next_mark + 1) % LOAD_MARKS;
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

/* ---- the stream kept, for the sessions of a node that dies ---- */

/*
 * Records older than HISTORY_MS go, and the oldest past HISTORY_MAX bytes,
 * or past HISTORY_NODE_MAX for the whole node (the instance that adds is the
 * one that gives up its oldest).
 */
static void kept_trim(struct follow *f, uint64_t now)
{
    while (f->kept.count) {
        struct kept *k = fifo_at(&f->kept, 0);
        if (now - k->at_ms <= HISTORY_MS && f->kept_bytes <= HISTORY_MAX &&
            f->cl->kept_bytes <= HISTORY_NODE_MAX)
            break;
        f->kept_bytes -= k->len;
        f->cl->kept_bytes -= k->len;
        free(k->data);
        fifo_pop(&f->kept);
    }
}

static void kept_clear(struct follow *f)
{
    kept_trim(f, UINT64_MAX); /* every record is too old */
    fifo_clear(&f->kept);
}

static void keep_record(struct follow *f, const uint8_t *data, size_t len)
{
    struct kept k = {malloc(len), len, clock_ms()};

    if (!k.data || fifo_push(&f->kept, &k) < 0) {
        free(k.data); /* out of memory: a dead node's sessions may miss it */
        return;
    }
    memcpy(k.data, data, len);
    f->kept_total++;
    f->kept_bytes += len;
    f->cl->kept_bytes += len;
    kept_trim(f, k.at_ms);
}

/*
 * Where the sessions of dead node `dead` may have stopped taking the stream:
 * just after its report that its last report said it had read back. Without
 * one (it never said, or that part is no longer kept), the oldest record kept.
 */
static uint64_t replay_from(const struct follow *f, const char *dead, bool *known)
{
    uint64_t first = f->kept_total - f->kept.count;

    *known = false;
    for (size_t i = 0; i < f->load_count; i++) {
        const struct node_load *n = &f->loads[i];
        if (strcmp(n->node, dead) || !n->through)
            continue;
        for (unsigned m = 0; m < LOAD_MARKS; m++)
            if (n->marks[m].number == n->through && n->marks[m].at >= first) {
                *known = true;
                return n->marks[m].at;
            }
    }
    return first;
}

/* An adoption under way: which instance, and whose sessions. */
struct adopting {
    struct follow *f;
    char dead[HEX_SIZE(NODE_ID_BYTES)];
};

/* What the adopted sessions may have missed goes to them (route_replay), in the stream's order. */
static void sessions_adopted(void *arg, struct session **adopted, size_t count)
{
    struct adopting *a = arg;
    struct follow *f = a->f;
    struct instance *inst = count ? bridge_instance(f->cl->broker, f->name) : NULL;
    bool known;

    if (inst) {
        uint64_t from = replay_from(f, a->dead, &known);
        uint64_t first = f->kept_total - f->kept.count;
        for (uint64_t i = from; i < f->kept_total; i++) {
            const struct kept *k = fifo_at(&f->kept, (size_t)(i - first));
            struct stream_record r;
            if (stream_decode(k->data, k->len, &r, NULL, 0) == 0 && r.type == STREAM_MESSAGE)
                deliver_message(inst, &r.u.message, true);
        }
        f->cl->broker->cluster_stats.replayed += f->kept_total - from;
        log_notice("cluster: instance %s: %zu sessions of node %s taken over; the %" PRIu64
                   " messages of the stream since %s replayed to them",
                   f->name, count, a->dead, f->kept_total - from,
                   known ? "its last report" : "the oldest kept (its last report is not known)");
    }
    free(a);
}

static void adopt_sessions(struct follow *f, const char *dead)
{
    struct instance *inst = bridge_instance(f->cl->broker, f->name);
    struct adopting *a = inst ? calloc(1, sizeof(*a)) : NULL;

    if (!a)
        return;
    a->f = f;
    snprintf(a->dead, sizeof(a->dead), "%s", dead);
    if (!sessions_adopt(f->cl->sessions, inst, dead, sessions_adopted, a)) {
        log_warning("cluster: instance %s: the sessions of node %s cannot be taken over now",
                    f->name, dead);
        free(a);
    }
}

/* A follow ready now takes over the sessions of every node gone (none, mostly). */
static void adopt_from_gone(struct follow *f)
{
    for (size_t i = 0; i < f->cl->gone.count; i++)
        adopt_sessions(f, ((struct node_id *)fifo_at(&f->cl->gone, i))->id);
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
    if (r.type == STREAM_MESSAGE && r.u.message.qos)
        keep_record(f, data, len);
    if (r.type == STREAM_MESSAGE)
        deliver_message(inst, &r.u.message, false);
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

/* Logins wait while the stream is being subscribed and its retained messages read. */
static bool hook_await_stream(struct broker_cluster *h, struct instance *inst, struct conn *c)
{
    struct cluster *cl = of(h);
    struct follow *f = strmap_get(&cl->follows, inst->name);

    if (!f || !connected(cl) || (f->state != FOLLOW_SUBSCRIBING && f->state != FOLLOW_SYNCING) ||
        fifo_push(&f->waiters, &c) < 0)
        return false;
    c->cluster_waiting = true;
    link_pause_reading(&c->link);
    return true;
}

/* The stream is ready, or cannot be had: the logins that waited go on. */
static void release_waiters(struct follow *f)
{
    /* Taken first: a login read again may close another connection, which forgets itself. */
    struct fifo waiting = f->waiters;

    f->waiters = (struct fifo)FIFO_INIT(struct conn *);
    for (size_t i = 0; i < waiting.count; i++) {
        struct conn *c = *(struct conn **)fifo_at(&waiting, i);
        if (!c)
            continue; /* closed meanwhile */
        c->cluster_waiting = false;
        client_read_again(c);
    }
    fifo_clear(&waiting);
}

static void hook_forget(struct broker_cluster *h, struct conn *c)
{
    struct cluster *cl = of(h);
    size_t pos = 0;
    struct follow *f;

    sessions_forget(cl->sessions, c);
    while ((f = strmap_next(&cl->follows, &pos, NULL)))
        for (size_t i = 0; i < f->waiters.count; i++)
            if (*(struct conn **)fifo_at(&f->waiters, i) == c)
                *(struct conn **)fifo_at(&f->waiters, i) = NULL;
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
    release_waiters(f);
    adopt_from_gone(f);
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
        release_waiters(f);
        return;
    }
    f->state = FOLLOW_SYNCING;
    if (redis_link_command(cl->cmd, 2, (const char *[]){"HGETALL", f->retained_key},
                           (size_t[]){7, strlen(f->retained_key)}, synced_cb, f) < 0) {
        f->state = FOLLOW_READY; /* no retained messages from Redis this time */
        deliver_early(f);
        release_held(f, true);
        release_waiters(f);
        adopt_from_gone(f);
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
    release_waiters(f); /* served alone now */
}

static struct follow *follow_new(struct cluster *cl, const char *name)
{
    struct follow *f = calloc(1, sizeof(*f));
    size_t len = strlen(name);

    if (!f)
        return NULL;
    f->cl = cl;
    f->kept = (struct fifo)FIFO_INIT(struct kept);
    f->waiters = (struct fifo)FIFO_INIT(struct conn *);
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
    kept_clear(f);
    fifo_clear(&f->waiters); /* the connections are gone (the broker closed them first) */
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
    sent_drop_all(f); /* not wanted: forgotten */
    kept_clear(f);
    release_held(f, false); /* not wanted: dropped */
    /* Their instance is going (not to be read again from under it): they close. */
    for (size_t i = 0; i < f->waiters.count; i++) {
        struct conn *c = *(struct conn **)fifo_at(&f->waiters, i);
        if (c)
            conn_close(c, "its instance was deleted while it logged in");
    }
    fifo_clear(&f->waiters);
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
    /* Sessions held here: the numbers tell whoever adopts them where to replay from. */
    if (!inst->conn_count && !published && !f->reported && !inst->sessions.count)
        return; /* nothing to say, and others know it */
    f->reported = inst->conn_count || published;
    struct stream_load l = {.node = cl->node,
                            .node_len = strlen(cl->node),
                            .conns = inst->conn_count > UINT32_MAX ? UINT32_MAX
                                                                   : (uint32_t)inst->conn_count,
                            .published = published > UINT32_MAX ? UINT32_MAX : (uint32_t)published,
                            .number = ++f->reports_sent,
                            .through = f->reports_back};
    stream_encode_load(&l, rec);
    redis_link_command(cl->cmd, 3, (const char *[]){"SPUBLISH", f->channel, (const char *)rec},
                       (size_t[]){8, strlen(f->channel), stream_load_size(&l)}, NULL, NULL);
}

/* ---- nodes alive and dead ---- */

/*
 * Taken for dead while alive (cut off from Redis, or stalled, past
 * NODE_ALIVE_MS): its offline sessions belong to the node that took them
 * over and end here; its connected ones are claimed and written again, which
 * ends the other node's copies.
 */
static void taken_for_dead(struct cluster *cl)
{
    size_t pos = 0, ended = 0;
    struct follow *f;

    while ((f = strmap_next(&cl->follows, &pos, NULL))) {
        struct instance *inst = f->wanted ? bridge_instance(cl->broker, f->name) : NULL;
        size_t at = 0, n = 0;
        struct session *s, **gone = inst ? malloc(inst->sessions.count * sizeof(*gone) + 1) : NULL;
        while (gone && (s = strmap_next(&inst->sessions, &at, NULL))) {
            if (s->conn) {
                session_mirror_again(s);
                hook_claim(&cl->hooks, inst, s->conn);
            } else if (s->mirror == SESSION_MIRROR_ON) {
                s->mirror = SESSION_MIRROR_GONE;
                gone[n++] = s;
            }
        }
        for (size_t i = 0; i < n; i++) {
            message_unref(session_take_will(gone[i]));
            conn_end_session(gone[i]);
        }
        ended += n;
        free(gone);
    }
    log_warning("cluster: node %s was taken for dead (no sign of it in Redis for %d ms): its %zu "
                "offline sessions were taken over by another node",
                cl->node, NODE_ALIVE_MS, ended);
}

static void beat_cb(void *arg, redisReply *r)
{
    struct cluster *cl = arg;

    if (r && r->type == REDIS_REPLY_INTEGER && r->integer == 0)
        taken_for_dead(cl);
    else if (r && r->type == REDIS_REPLY_ERROR)
        log_warning("cluster: Redis refused this node's sign of life: %s", r->str);
}

static void beat(struct cluster *cl)
{
    char ttl[16];
    int n = snprintf(ttl, sizeof(ttl), "%d", NODE_ALIVE_MS);

    redis_link_command(
        cl->cmd, 6, (const char *[]){"EVAL", NODE_BEAT, "1", NODES_KEY, cl->node, ttl},
        (size_t[]){4, sizeof(NODE_BEAT) - 1, 1, sizeof(NODES_KEY) - 1, strlen(cl->node), (size_t)n},
        beat_cb, cl);
}

/* Nodes found dead: this node takes over their sessions, instance by instance. */
static bool gone_known(const struct fifo *gone, const char *id)
{
    for (size_t i = 0; i < gone->count; i++)
        if (!strcmp(((const struct node_id *)fifo_at(gone, i))->id, id))
            return true;
    return false;
}

/* The nodes gone: of each new one, this node takes over the sessions it follows. */
static void reaped_cb(void *arg, redisReply *r)
{
    struct cluster *cl = arg;
    struct fifo now = FIFO_INIT(struct node_id);

    if (!r || r->type != REDIS_REPLY_ARRAY)
        return;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        struct node_id n;
        if (e->type != REDIS_REPLY_STRING || e->len != 2 * NODE_ID_BYTES)
            continue;
        memcpy(n.id, e->str, e->len + 1);
        if (fifo_push(&now, &n) < 0)
            break; /* out of memory: the rest on the next tick */
        if (gone_known(&cl->gone, n.id))
            continue;
        cl->broker->cluster_stats.nodes_dead++;
        log_notice("cluster: node %s gave no sign of life for %d ms: its persistent sessions in "
                   "the instances followed here are taken over",
                   n.id, NODE_ALIVE_MS);
        size_t pos = 0;
        struct follow *f;
        while ((f = strmap_next(&cl->follows, &pos, NULL)))
            if (f->wanted && f->state == FOLLOW_READY)
                adopt_sessions(f, n.id);
    }
    fifo_clear(&cl->gone);
    cl->gone = now;
}

static void reap(struct cluster *cl)
{
    char kept[16];
    int n = snprintf(kept, sizeof(kept), "%d", GONE_KEPT_MS);

    redis_link_command(cl->cmd, 6,
                       (const char *[]){"EVAL", NODES_REAP, "1", NODES_KEY, cl->node, kept},
                       (size_t[]){4, sizeof(NODES_REAP) - 1, 1, sizeof(NODES_KEY) - 1,
                                  strlen(cl->node), (size_t)n},
                       reaped_cb, cl);
}

static void load_cb(evutil_socket_t fd, short what, void *arg)
{
    struct cluster *cl = arg;
    size_t pos = 0;
    struct follow *f;

    if (++cl->load_ticks % (SESSIONS_RENEW_SEC * 1000 / LOAD_INTERVAL_MS) == 0)
        sessions_renew(cl->sessions);
    if (connected(cl)) {
        beat(cl);
        reap(cl);
    }
    while ((f = strmap_next(&cl->follows, &pos, NULL))) {
        kept_trim(f, clock_ms());
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
        /* Before the sessions are written again: were they taken over meanwhile? */
        beat(cl);
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
    cl->sessions = cl->sub ? sessions_new(cl->broker, cl->cmd, cl->node) : NULL;
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
    cl->gone = (struct fifo)FIFO_INIT(struct node_id);
    pressure_init(&cl->pressure);
    cl->hooks = (struct broker_cluster){
        .publish = hook_publish,
        .claim = hook_claim,
        .instance_added = hook_instance_added,
        .instance_removed = hook_instance_removed,
        .session_record = hook_session_record,
        .fetch_session = hook_fetch_session,
        .await_stream = hook_await_stream,
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
    fifo_clear(&cl->gone);
    /* After the follows: dropping what they sent may ask for it. */
    if (cl->resume_ev)
        event_free(cl->resume_ev);
    SSL_CTX_free(cl->tls);
    redis_url_clear(&cl->url);
    free(cl);
}
