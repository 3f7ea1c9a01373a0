/*
 * instance — one tenant: its topic tree (subscriptions and retained
 * messages), its sessions keyed by client id, and its limits.
 *
 * Desktop mode has exactly one instance; cloud mode will have many, and
 * nothing ever crosses from one to another. The broker owns its instances;
 * an instance owns its tree, its sessions and its retained messages.
 * Core thread only.
 */
#ifndef AVIARY_INSTANCE_H
#define AVIARY_INSTANCE_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "util/account.h"
#include "util/bucket.h"
#include "util/limits.h"
#include "util/log.h"
#include "util/strmap.h"

struct broker;
struct catalog_token;
struct message;
struct session;
struct session_sub;

/* What an instance at one of its limits turned away, each logged on its own. */
enum instance_refusal {
    INSTANCE_REFUSED_BYTES = 0,    /* max-instance-bytes */
    INSTANCE_REFUSED_SESSIONS = 1, /* max-sessions */
    INSTANCE_REFUSED_MEMORY = 2,   /* max-memory: a message not queued */
    INSTANCE_REFUSED_WILL = 3,     /* a will over a message rate or max-instance-bytes */
    INSTANCE_REFUSALS = 4,
};

struct instance {
    struct broker *broker;
    char *name;               /* owned */
    int64_t serial;           /* cloud: the catalog's; another one means a new instance */
    bool deleting;            /* gone from the catalog; freed by broker_apply_catalog() */
    bool limits_changed;      /* broker_apply_catalog(): its conns re-arm their timers */
    struct instance *next_deleted;
    struct limits limits;
    struct account *account;  /* bytes held for it (one reference); see util/account.h */
    struct topic_tree *tree;  /* owned */
    struct strmap sessions;   /* client id -> struct session (owned) */
    size_t persistent_sessions; /* sessions with an expiry, online or not (max-sessions) */
    struct strmap shares;     /* "GROUP/FILTER" -> struct share_group (owned) */
    uint64_t messages_in;     /* PUBLISHes accepted */
    uint64_t messages_out;    /* deliveries handed to sessions */
    size_t conn_count;        /* live connections logged in to it (max-connections) */
    struct bucket rate;       /* max-instance-messages-per-second, shared by its conns */
    uint64_t retained_refused; /* retained messages not kept at max-retained */
    time_t retained_logged;   /* when that was last logged */
    struct log_every refused[INSTANCE_REFUSALS]; /* what its limits turned away */
};

/* A new empty instance named `name` (copied) with `limits`. NULL when out of memory. */
struct instance *instance_new(struct broker *b, const char *name, const struct limits *limits);

/* Free the instance, its sessions, subscriptions and retained messages. */
void instance_free(struct instance *inst);

/* Does the instance hold max-instance-bytes or more? Its own traffic is refused then. */
static inline bool instance_over_bytes(const struct instance *inst)
{
    size_t max = inst->limits.max_instance_bytes;
    return max && inst->account->bytes >= max;
}

/*
 * Count one thing refused for `why` and log it, at most once every 10 s per
 * instance and reason: "instance NAME: quota exceeded: WHAT (N so far)".
 */
void instance_note_refusal(struct instance *inst, enum instance_refusal why, const char *fmt,
                           ...) __attribute__((format(printf, 3, 4)));

/*
 * max-messages-per-second of one connection (`conn_rate`, may be NULL) and
 * max-instance-messages-per-second of the instance together: take a token
 * for one message from both buckets. Returns 0, or the seconds until both
 * have one (nothing is taken then).
 */
double instance_rate_wait(struct instance *inst, struct bucket *conn_rate);

/* instance_rate_wait() for an instance that may have no rate limit at all (most). */
static inline double instance_rate_take(struct instance *inst, struct bucket *conn_rate)
{
    const struct limits *l = &inst->limits;
    if (l->max_messages_per_second == 0 && l->max_instance_messages_per_second == 0)
        return 0;
    return instance_rate_wait(inst, conn_rate);
}

/*
 * Publish the will `will` of a client that is gone (the caller keeps its
 * reference). It goes only as a PUBLISH of that client would have gone: not
 * when `token` (its login; NULL in desktop mode) has been revoked or has
 * expired, not over the message rates (`conn_rate` is its connection's
 * bucket, NULL when the connection is long gone), not while the instance is
 * over max-instance-bytes. Returns true when it was published.
 */
bool instance_publish_will(struct instance *inst, struct message *will,
                           const struct catalog_token *token, struct bucket *conn_rate,
                           const char *client_id);

/*
 * Route `m` to every session with a matching subscription, once per session
 * at the highest QoS of its matching subscriptions with every matching
 * Subscription Identifier, and to one member of each matching share group;
 * when `m->retain`, update the retained store (an empty payload clears it).
 * `origin` is the publishing session (NULL for a will or the broker's own):
 * its No Local subscriptions are skipped. A new retained topic beyond
 * max-retained is delivered but not kept (and logged). Returns how many
 * sessions it went to. The caller keeps its reference to `m`.
 */
size_t instance_publish(struct instance *inst, struct message *m, const struct session *origin);

/*
 * Would retaining `m` add a topic beyond max-retained, or a message while the
 * broker is over max-memory? (MQTT 5 refuses such a PUBLISH instead of
 * delivering it unretained.)
 */
bool instance_retained_full(struct instance *inst, const struct message *m);

/*
 * Send `s` the retained messages matching the normalised `filter`, as its
 * subscription `sub` allows (QoS, identifier), with RETAIN 1. Expired ones
 * are dropped from the store instead.
 */
void instance_send_retained(struct instance *inst, struct session *s, const char *filter,
                            const struct session_sub *sub);

#endif
