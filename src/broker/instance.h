/*
 * instance — one tenant: its topic tree (subscriptions and retained
 * messages), its sessions keyed by client id, and its limits.
 *
 * Desktop mode has exactly one instance; cloud mode has one per tenant, and
 * nothing ever crosses from one to another. The broker owns its instances;
 * an instance owns its tree, its sessions and its retained messages. This
 * module keeps the tenant's state and its quotas; where a message goes
 * within it is route.h's. Core thread only.
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
struct event;
struct durable_backlog;
struct message;
struct session;
struct session_sub;
struct tap;

/*
 * What the system topics keep for an instance (systopic.h builds on it):
 * who watches, the cap on $events, and the counters at the last $info
 * interval. The counts of watchers are kept here, where subscriptions are
 * recorded, so that an instance nobody watches pays one test per event.
 */
struct instance_sys {
    size_t events_watchers; /* subscriptions whose filter matches $events */
    size_t info_watchers;   /* ... $info */
    struct bucket events_rate;
    uint64_t events_dropped;  /* events over the cap since the last "dropped" event */
    struct event *dropped_ev; /* says "dropped" once the cap allows; owned (systopic.c) */
    struct message **pending; /* made, waiting to be routed from the loop; owned refs */
    size_t pending_count, pending_cap;
    struct event *flush_ev; /* routes `pending`; owned (made by systopic.c) */
    /* $info's rates: the counters at the start of the last interval, and its rates. */
    uint64_t sample_ms;
    uint64_t sample_in, sample_out, sample_bytes_in, sample_bytes_out;
    double rate_in, rate_out, rate_bytes_in, rate_bytes_out; /* per second */
};

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
    char *name;          /* owned */
    int64_t serial;      /* cloud: the catalog's; another one means a new instance */
    bool deleting;       /* gone from the catalog; freed by broker_apply_catalog() */
    bool limits_changed; /* broker_apply_catalog(): its conns re-arm their timers */
    struct instance *next_deleted;
    struct limits limits;
    struct account *account; /* bytes held for it (one reference); see util/account.h */
    struct durable_backlog *kept_backlog; /* its share of the database writer's backlog (a ref) */
    struct topic_tree *tree;              /* owned */
    struct strmap sessions;               /* client id -> struct session (owned); keys are
                                             the sessions' own client ids */
    size_t persistent_sessions; /* sessions with an expiry, online or not (max-sessions) */
    struct strmap shares;       /* "GROUP/FILTER" -> struct share_group (owned) */
    /*
     * Cumulative counters (metrics read them): what its clients published
     * (PUBLISHes accepted and wills), and the deliveries of those and of the
     * system topics' messages to its sessions. Bytes are payload bytes.
     */
    uint64_t messages_in;
    uint64_t messages_out;
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t queue_drops;    /* queued messages dropped: a full queue, or over max-memory */
    uint64_t expired_drops;  /* queued messages dropped at their expiry */
    size_t retained_bytes;   /* payload bytes of its retained messages */
    struct instance_sys sys; /* the system topics' state */
    size_t conn_count;       /* live connections logged in to it (max-connections) */
    struct bucket rate;      /* max-instance-messages-per-second, shared by its conns */
    struct bucket http_rate; /* max-messages-per-second of its HTTP publishers together */
    struct log_every retained_refused;           /* retained messages not kept at max-retained */
    struct log_every kept_slowed;                /* publishers held back for the database writer */
    struct log_every refused[INSTANCE_REFUSALS]; /* what its limits turned away */
    struct tap *taps;                            /* watchers of its messages (tap.h); not owned */
    /*
     * In a cluster, what the other nodes last said they have of it (within
     * the last few seconds): max-connections counts their connections too,
     * and max-instance-messages-per-second is shared among the nodes whose
     * clients publish.
     */
    size_t remote_conns;
    unsigned rate_nodes; /* nodes sharing the instance's rate, this one included; 0: alone */
};

/* A new empty instance named `name` (copied) with `limits`. NULL when out of memory. */
struct instance *instance_new(struct broker *b, const char *name, const struct limits *limits);

/*
 * Free the instance with its tree and retained messages. Its sessions must
 * have been freed first (they hold subscriptions in the tree and share groups).
 */
void instance_free(struct instance *inst);

/*
 * A subscription to the normalised `filter` (its share group's filter for a
 * shared one) was recorded (`delta` 1) or forgotten (-1): count it when it
 * watches a system topic.
 */
void instance_sub_counted(struct instance *inst, const char *filter, int delta);

/*
 * topic_tree_retain() on the instance's tree, keeping retained_bytes: set
 * the retained message of `topic` to `m` (NULL clears it). Returns the one
 * replaced (the caller releases it), or `m` itself with *ok false when out
 * of memory.
 */
struct message *instance_retain(struct instance *inst, const char *topic, struct message *m,
                                bool *ok);

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
void instance_note_refusal(struct instance *inst, enum instance_refusal why, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

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

#endif
