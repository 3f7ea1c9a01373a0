/*
 * session — the state MQTT keeps for one client id in one instance.
 *
 * A session outlives its connections for its Session Expiry Interval (MQTT
 * 5; clean session 0 in MQTT 3.1.1 means for ever): its subscriptions, the
 * QoS 1/2 messages queued while it is offline, the messages sent but not yet
 * acknowledged (the in-flight window), the packet ids of QoS 2 messages
 * received but not yet released, and a will waiting for its delay.
 *
 * Ownership: the instance owns its sessions (instance->sessions); a session
 * owns its subscription records, its queue entries and the message references
 * they hold, its timers and its delayed will. While a client is connected
 * the session sends through that connection's sender (struct sender, below
 * it) and points at the connection (conn->session points back) without
 * owning either; what happens when the connection goes, and when an offline
 * session ends, is conn.c's. Core thread only.
 */
#ifndef AVIARY_SESSION_H
#define AVIARY_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker/idset.h"
#include "broker/sender.h"

struct catalog_token;
struct conn;
struct event;
struct instance;
struct message;
struct share_group;

/* Session Expiry Interval 0xFFFFFFFF: the session never expires. */
#define SESSION_NEVER_EXPIRES UINT32_MAX

/* One subscription the session holds, as given to the topic tree. */
struct session_sub {
    char *filter;    /* normalised; "$share/GROUP/" + normalised filter when shared; owned */
    uint8_t options; /* MQTT_SUB_OPT_*: granted QoS in bits 0-1 */
    bool leading_slash;
    uint32_t sub_id;           /* MQTT 5 Subscription Identifier; 0: none */
    struct share_group *share; /* a shared subscription's group (the instance's); else NULL */
};

enum outgoing_state {
    OUT_QUEUED = 0,       /* waiting for room in the in-flight window */
    OUT_AWAIT_PUBACK = 1, /* QoS 1 sent */
    OUT_AWAIT_PUBREC = 2, /* QoS 2 sent */
    OUT_AWAIT_PUBCOMP = 3 /* QoS 2: PUBREL sent; the message itself is released */
};

/* A QoS 1/2 message on its way to this session's client. */
struct outgoing {
    struct message *msg; /* one reference; NULL once PUBREL was sent */
    uint16_t packet_id;  /* 0 while queued */
    uint8_t qos;
    uint8_t state; /* enum outgoing_state */
    bool leading_slash;
    bool retain; /* the RETAIN flag to send */
    uint16_t sub_id_count;
    uint64_t seq; /* its place in the database (durable.h); 0: not written */
    struct outgoing *next;
    uint32_t sub_ids[]; /* its Subscription Identifiers */
};

/* Where a persistent session stands with the cluster's copy of it in Redis (core.h). */
enum session_mirror {
    SESSION_MIRROR_NONE = 0, /* not written yet: the first write puts all it holds */
    SESSION_MIRROR_ON = 1,   /* every change is written */
    SESSION_MIRROR_GONE = 2, /* its client went on at another node: never written again */
};

/*
 * The QoS 1/2 exchanges with the client, made at the first message either
 * way and kept while the session lives (its id sets keep their bitmaps):
 * most clients of a fleet never use QoS 1/2 and pay one pointer for it.
 */
struct session_flow {
    /* In-flight window, in the order sent (re-sent in this order on resume). */
    struct outgoing *inflight_head, *inflight_tail;
    /* Waiting for room in the window, or for the client to come back. */
    struct outgoing *queue_head, *queue_tail;
    uint32_t inflight_count;
    uint32_t queue_count;
    uint64_t dropped; /* queued messages dropped at the bound */
    uint64_t expired; /* queued messages dropped at their expiry */

    struct idset outgoing_ids; /* the packet ids of the in-flight window */
    /* Packet ids of QoS 2 PUBLISHes received and answered with PUBREC, not yet released. */
    struct idset incoming_qos2;
    uint16_t last_packet_id; /* the id given last; the next one is searched after it */
};

/*
 * What an offline session waits for, made when conn.c parks it and freed
 * when its client comes back: a connected client holds none of it.
 */
struct session_wait {
    struct event *expiry_timer; /* a finite expiry: ends the session; owned */
    struct message *will;       /* MQTT 5: a will waiting for its delay; owned */
    struct event *will_timer;   /* publishes `will`; owned */
};

struct session {
    struct instance *instance;
    const char *log_id;          /* client_id escaped and cut to 79 bytes for the log:
                                    client_id itself when that changes nothing, else owned */
    struct conn *conn;           /* its client's connection, for the modules above; NULL offline */
    struct sender *out;          /* that connection's sender; NULL offline */
    struct catalog_token *token; /* cloud: the token of the last login (a reference);
                                    what it may read is checked at every delivery */
    uint64_t kept_id;            /* its id in the database (durable.h); 0: not kept */

    struct session_sub *subs; /* owned array */
    uint32_t sub_count, sub_cap;

    struct session_flow *flow; /* owned; NULL until its first QoS 1/2 message either way */

    struct session_wait *wait; /* owned; NULL but while it is offline with a timer */

    /* Routing scratch: deduplicates overlapping subscriptions per publish. */
    uint64_t match_gen;
    uint32_t match_index;

    /* Small fields last, where they pack: every client holds a session. */
    uint32_t expiry;   /* seconds it outlives its connection; 0: ends with it
                          (set through session_set_expiry) */
    uint8_t mirror;    /* enum session_mirror: the cluster's copy in Redis */
    bool token_events; /* subscribed to [mqtt]tokenevents */
    bool token_lost;   /* cloud, restored: its token was gone; nothing is delivered
                          to it until a login brings one */
    bool adopting;     /* the cluster replays to it what it missed (route_replay) */

    char client_id[]; /* the end of the session's own block */
};

/* Is the session's client connected (and its connection not closing)? */
static inline bool session_online(const struct session *s)
{
    return s->out && !s->out->closed;
}

/* The session's QoS 1/2 state, made at its first use; NULL when out of memory. */
struct session_flow *session_flow(struct session *s);

/* What the offline session waits for, made at its first use; NULL when out of memory. */
struct session_wait *session_wait(struct session *s);

/* The will waiting for its delay, or NULL. */
static inline struct message *session_will(const struct session *s)
{
    return s->wait ? s->wait->will : NULL;
}

/* Take the delayed will (its timer stopped): the caller's reference now; NULL when none. */
struct message *session_take_will(struct session *s);

/*
 * Give back the packet-id bitmaps (8 KB each) of sets that are empty: a
 * client whose QoS 1/2 exchanges are all done holds one no more, and its
 * next exchange makes it again. Called when the connection's deadline comes
 * round (once a keep-alive at most: a stream of messages does not pay for
 * it at each one) and when the session goes offline.
 */
void session_trim(struct session *s);

/* Messages in its in-flight window. */
static inline uint32_t session_inflight_count(const struct session *s)
{
    return s->flow ? s->flow->inflight_count : 0;
}

/* Messages waiting in its queue. */
static inline uint32_t session_queue_count(const struct session *s)
{
    return s->flow ? s->flow->queue_count : 0;
}

/* QoS 2 PUBLISHes received and not yet released. */
static inline size_t session_qos2_count(const struct session *s)
{
    return s->flow ? s->flow->incoming_qos2.count : 0;
}

/* Is `packet_id` a QoS 2 PUBLISH received and not yet released? */
static inline bool session_qos2_pending(const struct session *s, uint16_t packet_id)
{
    return s->flow && idset_has(&s->flow->incoming_qos2, packet_id);
}

/* Is `packet_id` the id of a message in its in-flight window? */
static inline bool session_id_in_flight(const struct session *s, uint16_t packet_id)
{
    return s->flow && idset_has(&s->flow->outgoing_ids, packet_id);
}

/*
 * A new offline session for `client_id` (copied) that outlives its
 * connections by `expiry` seconds. NULL when out of memory.
 */
struct session *session_new(struct instance *inst, const char *client_id, uint32_t expiry);

/*
 * Set how long the session outlives its connection, keeping its instance's
 * count of persistent sessions (max-sessions) in step.
 */
void session_set_expiry(struct session *s, uint32_t expiry);

/*
 * A QoS 2 PUBLISH with `packet_id` was received and answered with PUBREC:
 * remember the id until PUBREL. Returns 0 or -ENOMEM.
 */
int session_qos2_receive(struct session *s, uint16_t packet_id);

/*
 * Remove the session's subscriptions from the tree and free everything it
 * owns. A delayed will is dropped, not published (see conn_end_session).
 */
void session_free(struct session *s);

/*
 * Record a subscription (the caller has put it in the topic tree already).
 * `is_new` is what topic_tree_subscribe() returned: 1 adds a record, 0
 * updates the existing one. Returns 0 or -ENOMEM.
 */
int session_sub_record(struct session *s, const struct session_sub *sub, int is_new);

/* The subscription to the normalised `filter` ("$share/..." for shared ones), or NULL. */
struct session_sub *session_sub_find(struct session *s, const char *filter);

/* Forget the record of `filter`. Returns 0 or -ENOENT. */
int session_sub_forget(struct session *s, const char *filter);

/*
 * Hand `m` to the session as `d` says; nothing happens when the session's
 * token may not read the topic. QoS 0 goes out at once when the client is
 * connected and is dropped otherwise; QoS 1/2 enters the in-flight window or
 * the bounded queue (the oldest queued message is dropped beyond the bound).
 * When the window's packet-id set cannot be allocated, the connection is
 * closed with that reason and the message stays queued for the session.
 */
void session_deliver(struct session *s, struct message *m, const struct delivery *d);

/*
 * The client came back (s->out is its sender now): cancel a delayed will and
 * the expiry, re-send the in-flight window (PUBLISH with DUP, or PUBREL) and
 * fill it from the queue (failing the connection, as session_deliver() does,
 * when the packet-id set cannot be allocated).
 */
void session_resume(struct session *s);

/* The client's window grew or its acknowledgements made room: send what is queued. */
void session_fill_window(struct session *s);

/*
 * The client acknowledged `packet_id`: PUBACK (type MQTT_PUBACK), PUBREC or
 * PUBCOMP; `refused` with MQTT_PUBCOMP: a PUBREC with a failure code, which
 * ends a QoS 2 exchange still waiting for its PUBREC. A completed exchange
 * frees the id and refills the window from the queue. Finding the entry
 * walks the window, which max-inflight bounds. Returns 0, -ENOENT when no
 * message with that id is in flight, or -EPROTO when one is but waits for
 * another kind of acknowledgement (PUBCOMP to a QoS 1 message, PUBACK to a
 * QoS 2 one, PUBCOMP before PUBREC): a Protocol Error [MQTT-4.8.0-1].
 */
int session_ack(struct session *s, uint8_t type, uint16_t packet_id, bool refused);

/* PUBREL for `packet_id`: forget it, in constant time. Returns 0 or -ENOENT. */
int session_qos2_release(struct session *s, uint16_t packet_id);

/*
 * Write the session to the database when the broker keeps one (durable.h),
 * and to the cluster's copy in Redis when the node is in one (core.h): a
 * session with an expiry is kept, online (`offline_since_ms` 0) or offline
 * since then (wall-clock ms); the first time with all it holds. One without
 * an expiry is dropped from both.
 */
void session_keep_state(struct session *s, int64_t offline_since_ms);

/*
 * Enter `sub` in the instance's topic tree or share group, then in the
 * session's records, as a SUBSCRIBE would (restoring a session kept in the
 * database or in the cluster). Returns 0 or -ENOMEM.
 */
int session_resubscribe(struct session *s, const struct session_sub *sub);

/*
 * Write the cluster's copy of the session whole again (Redis was away, and
 * what changed meanwhile was not written). Offline, its TTL starts again
 * from its whole expiry.
 */
void session_mirror_again(struct session *s);

/* Write the session's delayed will, due at `due_ms` (wall clock), or that it has none. */
void session_keep_will(struct session *s, int64_t due_ms);

/*
 * Restoring from the database: append `o` (made by session_outgoing_new)
 * to the in-flight window when it has a packet id, else to the queue.
 * Returns 0 or -ENOMEM.
 */
int session_restore_outgoing(struct session *s, struct outgoing *o);

/* A new outgoing entry for `m` (may be NULL past PUBREC) as `d` says; NULL when out of memory. */
struct outgoing *session_outgoing_new(struct session *s, struct message *m,
                                      const struct delivery *d);

#endif
