#include "cluster/sessions.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/client.h"
#include "broker/conn.h"
#include "broker/core.h"
#include "broker/instance.h"
#include "broker/message.h"
#include "broker/session.h"
#include "cluster/bridge.h"
#include "cluster/redis_link.h"
#include "cluster/stream.h"
#include "tenancy/catalog.h"
#include "util/journal.h"
#include "util/log.h"
#include "util/scratch.h"
#include "util/strmap.h"

/*
 * While its client is connected, a session's hash lives this much longer
 * than its expiry, renewed every SESSIONS_RENEW_SEC: if its node dies, Redis
 * still ends it, at most this much late.
 */
#define SESSIONS_ONLINE_GRACE_SEC 60

/* The head of an "o:" field's value, before the message's record. */
#define OUT_HEAD 5 /* qos, flags, state, count of subscription ids (u16) */

/* A login waiting for its session. */
struct fetch {
    struct sessions *ss;
    struct conn *c; /* NULL once it closed */
    char *instance, *client_id;
    struct fetch *next;
};

struct sessions {
    struct broker *broker;
    struct redis_link *cmd;
    const char *node; /* this node's id (the cluster's) */
    struct fetch *fetches;
};

/*
 * A login resuming a session another node held: the hash becomes this
 * node's ("n") in the same step as it is read, so that a node adopting the
 * sessions of a dead node (SESSIONS_ADOPT) never takes one a login has.
 * KEYS: the session's hash, this node's set; ARGV: this node, the client id.
 */
static const char SESSIONS_FETCH[] =
    "if redis.call('EXISTS', KEYS[1]) == 1 then "
    "redis.call('HSET', KEYS[1], 'n', ARGV[1]) redis.call('SADD', KEYS[2], ARGV[2]) end "
    "return redis.call('HGETALL', KEYS[1])";

/*
 * The sessions of dead node ARGV[1] in one instance, still its own, become
 * node ARGV[2]'s. KEYS: the dead node's set, this node's; ARGV[3]: the
 * sessions' key prefix. Returns client id, hash, client id, hash...
 */
static const char SESSIONS_ADOPT[] =
    "local out = {} "
    "for _, cid in ipairs(redis.call('SMEMBERS', KEYS[1])) do "
    "local key = ARGV[3] .. cid "
    "if redis.call('HGET', key, 'n') == ARGV[1] then "
    "redis.call('HSET', key, 'n', ARGV[2]) redis.call('SADD', KEYS[2], cid) "
    "out[#out + 1] = cid out[#out + 1] = redis.call('HGETALL', key) end end "
    "redis.call('DEL', KEYS[1]) return out";

struct sessions *sessions_new(struct broker *b, struct redis_link *cmd, const char *node)
{
    struct sessions *ss = calloc(1, sizeof(*ss));

    if (ss) {
        ss->broker = b;
        ss->cmd = cmd;
        ss->node = node;
    }
    return ss;
}

/* "aviary:{INSTANCE}:session:CLIENT_ID" in `sc`'s buffer; NULL when out of memory. */
static char *session_key(struct scratch *sc, const char *instance, const char *client_id,
                         size_t *len)
{
    size_t n = strlen("aviary:{}:session:") + strlen(instance) + strlen(client_id);
    char *key = scratch_get(sc, n + 1);

    if (key)
        snprintf(key, n + 1, "aviary:{%s}:session:%s", instance, client_id);
    *len = n;
    return key;
}

/* "aviary:{INSTANCE}:node:NODE", the client ids of the sessions NODE holds, in `sc`'s buffer. */
static char *holder_key(struct scratch *sc, const char *instance, const char *node, size_t *len)
{
    size_t n = strlen("aviary:{}:node:") + strlen(instance) + strlen(node);
    char *key = scratch_get(sc, n + 1);

    if (key)
        snprintf(key, n + 1, "aviary:{%s}:node:%s", instance, node);
    *len = n;
    return key;
}

static void command(struct sessions *ss, int argc, const char **argv, const size_t *lens)
{
    if (redis_link_command(ss->cmd, argc, argv, lens, NULL, NULL) < 0)
        log_debug("cluster: a session change not written: Redis is away");
}

/*
 * The session's expiry ("m"), its holder ("n": this node) and its token
 * ("t", cloud), and its place in this node's set of sessions held.
 */
static void record_state(struct sessions *ss, const struct session *s, const char *key,
                         size_t key_len, const struct journal_record *r)
{
    char expiry[16], small[128];
    struct scratch sc = SCRATCH_INIT(small);
    size_t set_len, cid_len = strlen(s->client_id);
    const char *set = holder_key(&sc, s->instance->name, ss->node, &set_len);

    if (r->type == JOURNAL_SESSION_DROP) {
        command(ss, 2, (const char *[]){"DEL", key}, (size_t[]){3, key_len});
        if (set)
            command(ss, 3, (const char *[]){"SREM", set, s->client_id},
                    (size_t[]){4, set_len, cid_len});
        scratch_free(&sc);
        return;
    }
    const char *token = s->token ? s->token->id : "";
    int n = snprintf(expiry, sizeof(expiry), "%" PRIu32, r->expiry);
    command(ss, 8, (const char *[]){"HSET", key, "m", expiry, "n", ss->node, "t", token},
            (size_t[]){4, key_len, 1, (size_t)n, 1, strlen(ss->node), 1, strlen(token)});
    if (set)
        command(ss, 3, (const char *[]){"SADD", set, s->client_id},
                (size_t[]){4, set_len, cid_len});
    scratch_free(&sc);
    /* Offline, Redis ends it at its expiry unless a node resumes it first. */
    if (r->expiry == SESSION_NEVER_EXPIRES) {
        command(ss, 2, (const char *[]){"PERSIST", key}, (size_t[]){7, key_len});
        return;
    }
    if (!r->when_ms)
        n = snprintf(expiry, sizeof(expiry), "%" PRIu64,
                     (uint64_t)r->expiry + SESSIONS_ONLINE_GRACE_SEC);
    command(ss, 3, (const char *[]){"EXPIRE", key, expiry}, (size_t[]){6, key_len, (size_t)n});
}

static void record_sub(struct sessions *ss, const char *key, size_t key_len,
                       const struct journal_record *r)
{
    char small[256];
    struct scratch sc = SCRATCH_INIT(small);
    char *field = scratch_get(&sc, r->name_len + 3);
    uint8_t value[6] = {r->options,
                        r->flags,
                        (uint8_t)(r->sub_id >> 24),
                        (uint8_t)(r->sub_id >> 16),
                        (uint8_t)(r->sub_id >> 8),
                        (uint8_t)r->sub_id};

    if (field) {
        memcpy(field, "s:", 2);
        memcpy(field + 2, r->name, r->name_len);
        if (r->type == JOURNAL_SUB_PUT)
            command(ss, 4, (const char *[]){"HSET", key, field, (const char *)value},
                    (size_t[]){4, key_len, r->name_len + 2, sizeof(value)});
        else
            command(ss, 3, (const char *[]){"HDEL", key, field},
                    (size_t[]){4, key_len, r->name_len + 2});
    }
    scratch_free(&sc);
}

/* The value of an "o:" field: its head, then the message's record. */
static void record_out(struct sessions *ss, const char *key, size_t key_len,
                       const struct journal_record *r, const struct message *m)
{
    char field[20];
    int field_len = snprintf(field, sizeof(field), "o:%016" PRIx64, r->seq);
    uint8_t small[512];
    struct scratch sc = SCRATCH_INIT(small);
    struct stream_message sm;

    /* Past PUBREC nothing is left to send again: the entry goes. */
    if (r->type == JOURNAL_OUT_DROP || !m) {
        command(ss, 3, (const char *[]){"HDEL", key, field},
                (size_t[]){4, key_len, (size_t)field_len});
        return;
    }
    bridge_record_of(m, NULL, &sm);
    size_t ids = r->sub_id_count, len = OUT_HEAD + 4 * ids + stream_message_size(&sm);
    uint8_t *value = scratch_get(&sc, len);
    if (value) {
        uint8_t *p = value;
        *p++ = r->qos;
        *p++ = r->flags;
        *p++ = r->state;
        *p++ = (uint8_t)(ids >> 8);
        *p++ = (uint8_t)ids;
        for (size_t i = 0; i < ids; i++) {
            uint32_t id = journal_sub_id(r, i);
            *p++ = (uint8_t)(id >> 24);
            *p++ = (uint8_t)(id >> 16);
            *p++ = (uint8_t)(id >> 8);
            *p++ = (uint8_t)id;
        }
        stream_encode_message(&sm, p);
        command(ss, 4, (const char *[]){"HSET", key, field, (const char *)value},
                (size_t[]){4, key_len, (size_t)field_len, len});
    }
    scratch_free(&sc);
}

void sessions_record(struct sessions *ss, struct session *s, const struct journal_record *r,
                     const struct message *m)
{
    char small[256];
    struct scratch sc = SCRATCH_INIT(small);
    size_t key_len;
    char *key = session_key(&sc, s->instance->name, s->client_id, &key_len);

    if (!key || !redis_link_up(ss->cmd)) {
        scratch_free(&sc);
        return;
    }
    switch (r->type) {
    case JOURNAL_SESSION_PUT:
    case JOURNAL_SESSION_DROP:
        record_state(ss, s, key, key_len, r);
        break;
    case JOURNAL_SUB_PUT:
    case JOURNAL_SUB_DROP:
        record_sub(ss, key, key_len, r);
        break;
    case JOURNAL_OUT_PUT:
    case JOURNAL_OUT_DROP:
        record_out(ss, key, key_len, r, m);
        break;
    default:
        break; /* QoS 2 ids and wills stay with their node (doc/ARCHITECTURE.md) */
    }
    scratch_free(&sc);
}

/* ---- a session resumed from Redis ---- */

static uint32_t read_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void rebuild_sub(struct session *s, const redisReply *field, const redisReply *value)
{
    const uint8_t *v = (const uint8_t *)value->str;

    if (value->len != 6 || field->len < 3 || memchr(field->str, '\0', field->len))
        return;
    struct session_sub sub = {.filter = field->str + 2,
                              .options = v[0],
                              .leading_slash = (v[1] & JOURNAL_LEADING_SLASH) != 0,
                              .sub_id = read_u32(v + 2)};
    if (session_resubscribe(s, &sub) < 0)
        log_warning("cluster: client %s: out of memory restoring a subscription", s->log_id);
}

/* One "o:" entry: queued again (its packet id was the old node's). */
static void rebuild_out(struct session *s, const redisReply *value)
{
    const uint8_t *v = (const uint8_t *)value->str;
    struct stream_record rec;
    uint32_t small[16];
    struct scratch sc = SCRATCH_INIT(small);

    size_t ids = value->len >= OUT_HEAD ? (size_t)v[3] << 8 | v[4] : 0;
    if (value->len < OUT_HEAD + 4 * ids ||
        stream_decode(v + OUT_HEAD + 4 * ids, value->len - OUT_HEAD - 4 * ids, &rec, NULL, 0) < 0 ||
        rec.type != STREAM_MESSAGE || v[0] < 1 || v[0] > 2 ||
        bridge_check(s->instance, &rec.u.message, NULL, 0) < 0)
        return;
    uint32_t *sub_ids = scratch_get(&sc, ids * sizeof(*sub_ids) + 1);
    struct message *m = sub_ids ? bridge_message(s->instance, &rec.u.message) : NULL;
    for (size_t i = 0; m && i < ids; i++)
        sub_ids[i] = read_u32(v + OUT_HEAD + 4 * i);
    struct delivery d = {.qos = v[0],
                         .retain = (v[1] & JOURNAL_RETAIN) != 0,
                         .leading_slash = (v[1] & JOURNAL_LEADING_SLASH) != 0,
                         .sub_ids = sub_ids,
                         .sub_id_count = ids};
    struct outgoing *o = m ? session_outgoing_new(s, m, &d) : NULL;
    message_unref(m);
    scratch_free(&sc);
    if (o && session_restore_outgoing(s, o) < 0)
        log_warning("cluster: client %s: out of memory restoring a queued message", s->log_id);
}

struct out_entry {
    const redisReply *field, *value;
};

static int by_field(const void *a, const void *b)
{
    const struct out_entry *x = a, *y = b;
    return strcmp(x->field->str, y->field->str);
}

/* The "o:" entries in the order of their places (fixed-width hex), each queued again. */
static void rebuild_outs(struct session *s, const redisReply *r)
{
    size_t n = 0;
    struct out_entry *outs = malloc((r->elements / 2 + 1) * sizeof(*outs));

    if (!outs)
        return;
    for (size_t i = 0; i + 1 < r->elements; i += 2)
        if (r->element[i]->len > 2 && !strncmp(r->element[i]->str, "o:", 2) &&
            r->element[i + 1]->type == REDIS_REPLY_STRING)
            outs[n++] = (struct out_entry){r->element[i], r->element[i + 1]};
    qsort(outs, n, sizeof(*outs), by_field);
    for (size_t i = 0; i < n; i++)
        rebuild_out(s, outs[i].value);
    free(outs);
}

/*
 * The session the hash describes, offline in `inst` with its expiry timer
 * running, as if this node had held it all along; NULL when the hash holds
 * no session. The login that asked resumes it at once.
 */
/* The value of the one-letter field `name` of hash `r`, a string; NULL when it has none. */
static const redisReply *hash_field(const redisReply *r, char name)
{
    for (size_t i = 0; i + 1 < r->elements; i += 2)
        if (r->element[i]->len == 1 && r->element[i]->str[0] == name &&
            r->element[i + 1]->type == REDIS_REPLY_STRING)
            return r->element[i + 1];
    return NULL;
}

/* Cloud: the token of the session's last login, if the catalog still has it. */
static void rebuild_token(struct sessions *ss, struct session *s, const redisReply *r)
{
    const redisReply *t = hash_field(r, 't');
    struct catalog_token *token =
        ss->broker->cloud && t && t->len ? catalog_token_by_id(ss->broker->catalog, t->str) : NULL;

    s->token = token ? catalog_token_ref(token) : NULL;
    /* Gone (revoked, expired): nothing is delivered to it until a login brings one. */
    s->token_lost = ss->broker->cloud && !token;
}

static struct session *rebuild(struct sessions *ss, struct instance *inst, const char *client_id,
                               const redisReply *r)
{
    const redisReply *meta = r->type == REDIS_REPLY_ARRAY ? hash_field(r, 'm') : NULL;

    if (!meta)
        return NULL;
    unsigned long expiry = strtoul(meta->str, NULL, 10);
    struct session *s = expiry ? session_new(inst, client_id, (uint32_t)expiry) : NULL;
    if (!s || strmap_put(&inst->sessions, s->client_id, s, NULL) < 0) {
        session_free(s);
        return NULL;
    }
    rebuild_token(ss, s, r);
    for (size_t i = 0; i + 1 < r->elements; i += 2)
        if (r->element[i]->len > 2 && !strncmp(r->element[i]->str, "s:", 2) &&
            r->element[i + 1]->type == REDIS_REPLY_STRING)
            rebuild_sub(s, r->element[i], r->element[i + 1]);
    rebuild_outs(s, r);
    if (conn_park_restored(s, (int64_t)s->expiry * 1000, 0) < 0)
        log_warning("cluster: client %s: out of memory arming its session's expiry", s->log_id);
    return s;
}

static void fetch_unlink(struct fetch *f)
{
    for (struct fetch **p = &f->ss->fetches; *p; p = &(*p)->next) {
        if (*p == f) {
            *p = f->next;
            break;
        }
    }
}

static void fetched_cb(void *arg, redisReply *r)
{
    struct fetch *f = arg;
    struct conn *c = f->c;

    fetch_unlink(f);
    if (r && r->type == REDIS_REPLY_ERROR)
        log_warning("cluster: client %s: cannot read its session from Redis: %s", f->client_id,
                    r->str);
    if (c) {
        struct instance *inst = bridge_instance(f->ss->broker, f->instance);
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements && inst && !inst->deleting &&
            !strmap_get(&inst->sessions, f->client_id)) {
            struct session *s = rebuild(f->ss, inst, f->client_id, r);
            if (s) {
                f->ss->broker->cluster_stats.fetched++;
                log_info("client %s: session taken from Redis (%u subscriptions, %u queued)",
                         s->log_id, s->sub_count, session_queue_count(s));
            }
        }
        c->cluster_waiting = false;
        client_read_again(c);
    }
    free(f->instance);
    free(f->client_id);
    free(f);
}

bool sessions_fetch(struct sessions *ss, struct instance *inst, const char *client_id,
                    struct conn *c)
{
    char small[256], small_set[128];
    struct scratch sc = SCRATCH_INIT(small), sc_set = SCRATCH_INIT(small_set);
    size_t key_len, set_len;
    char *key = session_key(&sc, inst->name, client_id, &key_len);
    char *set = holder_key(&sc_set, inst->name, ss->node, &set_len);
    struct fetch *f = calloc(1, sizeof(*f));

    if (f) {
        *f = (struct fetch){ss, c, strdup(inst->name), strdup(client_id), ss->fetches};
        if (!key || !set || !f->instance || !f->client_id ||
            redis_link_command(
                ss->cmd, 7,
                (const char *[]){"EVAL", SESSIONS_FETCH, "2", key, set, ss->node, client_id},
                (size_t[]){4, sizeof(SESSIONS_FETCH) - 1, 1, key_len, set_len, strlen(ss->node),
                           strlen(client_id)},
                fetched_cb, f) < 0) {
            free(f->instance);
            free(f->client_id);
            free(f);
            f = NULL;
        }
    }
    scratch_free(&sc);
    scratch_free(&sc_set);
    if (!f)
        return false;
    ss->fetches = f;
    c->cluster_waiting = true;
    link_pause_reading(&c->link);
    return true;
}

void sessions_forget(struct sessions *ss, struct conn *c)
{
    for (struct fetch *f = ss->fetches; f; f = f->next)
        if (f->c == c)
            f->c = NULL;
    c->cluster_waiting = false;
}

/* An adoption under way: what sessions_adopt() was given. */
struct adoption {
    struct sessions *ss;
    char *instance; /* owned */
    sessions_adopted_fn *done;
    void *arg;
    char dead[]; /* the dead node's id */
};

/* The sessions the reply holds, rebuilt here, flagged `adopting`, in `out` (count returned). */
static size_t adopt_each(struct adoption *a, struct instance *inst, const redisReply *r,
                         struct session **out)
{
    size_t n = 0;

    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const redisReply *cid = r->element[i], *hash = r->element[i + 1];
        if (cid->type != REDIS_REPLY_STRING || memchr(cid->str, '\0', cid->len) ||
            strmap_get(&inst->sessions, cid->str))
            continue; /* held here already (restored from this node's database) */
        struct session *s = rebuild(a->ss, inst, cid->str, hash);
        if (!s) {
            log_warning("cluster: client %s: the session node %s held could not be taken over "
                        "(empty or out of memory)",
                        cid->str, a->dead);
            continue;
        }
        s->adopting = true;
        out[n++] = s;
    }
    return n;
}

static void adopted_cb(void *arg, redisReply *r)
{
    struct adoption *a = arg;
    struct instance *inst = bridge_instance(a->ss->broker, a->instance);
    struct session **adopted = NULL;
    size_t n = 0;

    if (r && r->type == REDIS_REPLY_ERROR)
        log_warning("cluster: instance %s: cannot take over the sessions of node %s: %s",
                    a->instance, a->dead, r->str);
    if (r && r->type == REDIS_REPLY_ARRAY && inst && !inst->deleting && r->elements &&
        (adopted = malloc(r->elements / 2 * sizeof(*adopted))))
        n = adopt_each(a, inst, r, adopted);
    a->done(a->arg, adopted, n);
    for (size_t i = 0; i < n; i++) {
        struct session *s = adopted[i];
        s->adopting = false;
        /* Its hash is this node's now: written whole, offline, with the messages replayed. */
        s->mirror = SESSION_MIRROR_ON;
        session_mirror_again(s);
        a->ss->broker->cluster_stats.adopted++;
        log_info("client %s: session taken over from node %s (%u subscriptions, %u queued)",
                 s->log_id, a->dead, s->sub_count, session_queue_count(s));
    }
    free(adopted);
    free(a->instance);
    free(a);
}

bool sessions_adopt(struct sessions *ss, struct instance *inst, const char *dead,
                    sessions_adopted_fn *done, void *arg)
{
    char small[128], small_mine[128], small_prefix[128];
    struct scratch sc = SCRATCH_INIT(small), sc_mine = SCRATCH_INIT(small_mine),
                   sc_prefix = SCRATCH_INIT(small_prefix);
    size_t set_len, mine_len, prefix_len;
    char *set = holder_key(&sc, inst->name, dead, &set_len);
    char *mine = holder_key(&sc_mine, inst->name, ss->node, &mine_len);
    char *prefix = session_key(&sc_prefix, inst->name, "", &prefix_len);
    struct adoption *a = calloc(1, sizeof(*a) + strlen(dead) + 1);
    bool started = false;

    if (a && set && mine && prefix && (a->instance = strdup(inst->name))) {
        *a = (struct adoption){ss, a->instance, done, arg};
        strcpy(a->dead, dead);
        started = redis_link_command(ss->cmd, 8,
                                     (const char *[]){"EVAL", SESSIONS_ADOPT, "2", set, mine, dead,
                                                      ss->node, prefix},
                                     (size_t[]){4, sizeof(SESSIONS_ADOPT) - 1, 1, set_len, mine_len,
                                                strlen(dead), strlen(ss->node), prefix_len},
                                     adopted_cb, a) == 0;
    }
    if (!started && a) {
        free(a->instance);
        free(a);
    }
    scratch_free(&sc);
    scratch_free(&sc_mine);
    scratch_free(&sc_prefix);
    return started;
}

void sessions_renew(struct sessions *ss)
{
    char ttl[24];
    char small[256];

    if (!redis_link_up(ss->cmd))
        return;
    for (struct conn *c = ss->broker->conns; c; c = c->next) {
        struct session *s = c->session;
        if (!s || s->mirror != SESSION_MIRROR_ON || s->expiry == SESSION_NEVER_EXPIRES)
            continue;
        struct scratch sc = SCRATCH_INIT(small);
        size_t key_len;
        char *key = session_key(&sc, s->instance->name, s->client_id, &key_len);
        int n =
            snprintf(ttl, sizeof(ttl), "%" PRIu64, (uint64_t)s->expiry + SESSIONS_ONLINE_GRACE_SEC);
        if (key)
            command(ss, 3, (const char *[]){"EXPIRE", key, ttl}, (size_t[]){6, key_len, (size_t)n});
        scratch_free(&sc);
    }
}

void sessions_rewrite(struct sessions *ss, struct instance *inst)
{
    size_t pos = 0;
    struct session *s;

    while ((s = strmap_next(&inst->sessions, &pos, NULL)))
        session_mirror_again(s);
}

void sessions_free(struct sessions *ss)
{
    free(ss);
}
