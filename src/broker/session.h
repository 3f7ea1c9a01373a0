/*
 * session — the state MQTT keeps for one client id in one instance.
 *
 * A session outlives its connections when the client asked for it (clean
 * session 0): its subscriptions, the QoS 1/2 messages queued while it is
 * offline, the messages sent but not yet acknowledged (the in-flight window),
 * and the packet ids of QoS 2 messages received but not yet released.
 *
 * Ownership: the instance owns its sessions (instance->sessions); a session
 * owns its subscription records, its queue entries and the message references
 * they hold. It points at its connection (conn->session points back) without
 * owning it. Core thread only.
 */
#ifndef AVIARY_SESSION_H
#define AVIARY_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker/idset.h"

struct catalog_token;
struct conn;
struct instance;
struct message;

/* One subscription the session holds, as given to the topic tree. */
struct session_sub {
    char *filter;      /* normalised; owned */
    uint8_t options;   /* granted QoS in bits 0-1 */
    bool leading_slash;
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
    uint8_t state;       /* enum outgoing_state */
    bool leading_slash;
    bool retain;         /* sent with RETAIN 1 (a retained message on subscribe) */
    struct outgoing *next;
};

struct session {
    struct instance *instance;
    char *client_id;          /* owned */
    char log_id[80];          /* client_id escaped and truncated for the log */
    bool clean;               /* discard when the connection ends */
    struct conn *conn;        /* NULL while offline */
    struct catalog_token *token; /* cloud: the token of the last login (a reference);
                                    what it may read is checked at every delivery */
    bool token_events;        /* subscribed to [mqtt]tokenevents */

    struct session_sub *subs; /* owned array */
    size_t sub_count, sub_cap;

    /* In-flight window, in the order sent (re-sent in this order on resume). */
    struct outgoing *inflight_head, *inflight_tail;
    size_t inflight_count;
    /* Waiting for room in the window, or for the client to come back. */
    struct outgoing *queue_head, *queue_tail;
    size_t queue_count;
    uint64_t dropped;         /* queued messages dropped at the bound */

    uint16_t last_packet_id;   /* the id given last; the next one is searched after it */
    struct idset outgoing_ids; /* the packet ids of the in-flight window */

    /* Packet ids of QoS 2 PUBLISHes received and answered with PUBREC, not yet released. */
    struct idset incoming_qos2;

    /* Routing scratch: deduplicates overlapping subscriptions per publish. */
    uint64_t match_gen;
    size_t match_index;
};

/* A new offline session for `client_id` (copied). NULL when out of memory. */
struct session *session_new(struct instance *inst, const char *client_id, bool clean);

/* Remove the session's subscriptions from the tree and free everything it owns. */
void session_free(struct session *s);

/*
 * Record a subscription (the caller has put it in the topic tree already).
 * `is_new` is what topic_tree_subscribe() returned: 1 adds a record, 0
 * updates the existing one. Returns 0 or -ENOMEM.
 */
int session_sub_record(struct session *s, const char *filter, uint8_t options,
                       bool leading_slash, int is_new);

/* True when the session holds a subscription to the normalised `filter`. */
bool session_sub_exists(struct session *s, const char *filter);

/* Forget the record of `filter` (normalised). Returns 0 or -ENOENT. */
int session_sub_forget(struct session *s, const char *filter);

/*
 * Hand `m` to the session at `qos` (already the minimum of the message's and
 * the subscription's); nothing happens when the session's token may not read
 * the topic. QoS 0 goes out at once when the client is connected
 * and is dropped otherwise; QoS 1/2 enters the in-flight window or the
 * bounded queue (the oldest queued message is dropped beyond the bound).
 * When the window's packet-id set cannot be allocated, the connection is
 * closed with that reason and the message stays queued for the session.
 */
void session_deliver(struct session *s, struct message *m, uint8_t qos, bool leading_slash,
                     bool retain);

/*
 * The client came back on `c` (clean session 0): re-send the in-flight
 * window (PUBLISH with DUP, or PUBREL) and fill it from the queue (closing
 * `c`, as session_deliver() does, when the packet-id set cannot be allocated).
 */
void session_resume(struct session *s, struct conn *c);

/*
 * The client acknowledged `packet_id`: PUBACK (type MQTT_PUBACK), PUBREC or PUBCOMP.
 * A completed exchange frees the id and refills the window from the queue.
 * Finding the entry walks the window, which max-inflight bounds.
 * Returns 0, or -ENOENT when no message waits for that acknowledgement.
 */
int session_ack(struct session *s, uint8_t type, uint16_t packet_id);

/*
 * QoS 2 receipt: returns true when `packet_id` was seen already and not yet
 * released (do not deliver again); otherwise records it and returns false.
 * Constant time whatever the number of unreleased ids; the first call
 * allocates the session's 8 KB id set. *err is 0, or -ENOMEM (returned as
 * false, nothing recorded: the caller closes the connection).
 */
bool session_qos2_seen(struct session *s, uint16_t packet_id, int *err);

/* PUBREL for `packet_id`: forget it, in constant time. Returns 0 or -ENOENT. */
int session_qos2_release(struct session *s, uint16_t packet_id);

#endif
