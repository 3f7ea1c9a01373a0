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

#include "util/bucket.h"
#include "util/limits.h"
#include "util/strmap.h"

struct broker;
struct message;
struct session;
struct session_sub;

struct instance {
    struct broker *broker;
    char *name;               /* owned */
    int64_t serial;           /* cloud: the catalog's; another one means a new instance */
    bool deleting;            /* gone from the catalog; freed by broker_apply_catalog() */
    bool limits_changed;      /* broker_apply_catalog(): its conns re-arm their timers */
    struct instance *next_deleted;
    struct limits limits;
    struct topic_tree *tree;  /* owned */
    struct strmap sessions;   /* client id -> struct session (owned) */
    struct strmap shares;     /* "GROUP/FILTER" -> struct share_group (owned) */
    uint64_t messages_in;     /* PUBLISHes accepted */
    uint64_t messages_out;    /* deliveries handed to sessions */
    size_t conn_count;        /* live connections logged in to it (max-connections) */
    struct bucket rate;       /* max-instance-messages-per-second, shared by its conns */
    uint64_t retained_refused; /* retained messages not kept at max-retained */
    time_t retained_logged;   /* when that was last logged */
};

/* A new empty instance named `name` (copied) with `limits`. NULL when out of memory. */
struct instance *instance_new(struct broker *b, const char *name, const struct limits *limits);

/* Free the instance, its sessions, subscriptions and retained messages. */
void instance_free(struct instance *inst);

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
