/*
 * conn — one client connection: a bufferevent plus a little metadata.
 *
 * Whatever the transport (TCP now; TLS and the WebSocket socketpair later),
 * the listener hands the broker a connected bufferevent and a struct
 * conn_meta, and from then on the broker never asks which transport it is.
 * A conn reads whole MQTT packets, hands them to the packet handlers, and
 * writes encoded packets back.
 *
 * Ownership: the broker owns every conn (broker->conns). A conn owns its
 * bufferevent and its will message; it points at its session but does not
 * own it. conn_close() never frees: it detaches the conn from its session,
 * stops reading and lets the write buffer drain; the broker's reaper frees it
 * later, so callbacks can close the conn they run on. Core thread only.
 */
#ifndef AVIARY_CONN_H
#define AVIARY_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>
#include <time.h>

#include "codec/codec.h"

struct bufferevent;
struct catalog_token;
struct event;
struct broker;
struct session;
struct message;
struct instance;

/* A client subscribed to this topic hears about its token: "expirywarning" before expiry. */
#define CONN_TOKEN_EVENTS_TOPIC "[mqtt]tokenevents"
#define CONN_TOKEN_WARNING_PAYLOAD "expirywarning"

enum conn_transport {
    CONN_TCP = 0,
    CONN_TLS = 1,
    CONN_WS = 2,
    CONN_WSS = 3,
};

/* What the listener knows about a new connection. */
struct conn_meta {
    enum conn_transport transport;
    bool over_tls;  /* arrived over TLS (tls:// and wss://) */
    char peer[64];  /* "127.0.0.1:53422" or "[::1]:53422", for the log */
};

enum conn_state {
    CONN_AWAIT_CONNECT = 0, /* nothing but CONNECT is allowed yet */
    CONN_ACTIVE = 1,        /* CONNECT accepted */
    CONN_CLOSING = 2,       /* closed by conn_close(), waiting to be reaped */
};

struct conn {
    struct broker *broker;
    struct bufferevent *bev;
    struct conn_meta meta;
    enum conn_state state;
    uint8_t version;          /* protocol level from CONNECT */
    uint16_t keepalive;       /* effective keep-alive in seconds (after clamping) */
    struct session *session;  /* NULL before CONNECT is accepted and after close */
    struct session *ended_session; /* clean session ended with this conn; owned till reaped */
    struct message *will;     /* owned; NULL when there is none */
    struct instance *will_instance; /* where the will goes when will_due */
    bool will_due;            /* lost without DISCONNECT: publish the will when reaped */
    char client_id[80];       /* for the log; may be truncated */
    uint64_t id;              /* a number for the log, unique per process */
    uint64_t dropped_qos0;    /* QoS 0 messages dropped because the output was full */
    time_t dropped_logged;    /* when the last line about dropping was logged */
    struct event *timer;      /* CONNECT deadline, then keep-alive; owned */
    struct timeval last_packet; /* when the last whole packet arrived */
    bool reading_paused;      /* output over max-outbound-bytes: input waits */
    bool any_input;           /* a byte has arrived (over TLS: the handshake is done) */

    /* Set when CONNECT is accepted. */
    struct instance *instance; /* where it logged in; counted in conn_count while counted */
    bool counted;
    struct catalog_token *token; /* cloud: the token it logged in with (a reference) */
    struct event *token_timer; /* expiry warning, then expiry; owned; NULL for keys */
    bool token_warning_due;   /* the warning's time has come */
    bool token_warned;        /* expirywarning was sent */
    struct timeval last_activity; /* last PUBLISH, SUBSCRIBE or UNSUBSCRIBE (idle-timeout) */

    /* max-messages-per-second: a token bucket; an empty bucket pauses reading. */
    double rate_tokens;
    struct timeval rate_refilled;
    bool rate_paused;
    struct event *rate_timer; /* owned; made at the first pause */

    uint64_t denied_publishes; /* PUBLISHes the token did not allow */
    time_t denied_logged;
    struct conn *next, *prev; /* broker->conns */
    struct conn *reap_next;   /* broker->reap */
    bool reap_queued;         /* on broker->reap already */
};

/*
 * Wrap a connected bufferevent. The conn takes ownership of `bev` (also on
 * failure, when it frees it). Returns the conn, or NULL when out of memory.
 */
struct conn *conn_new(struct broker *b, struct bufferevent *bev, const struct conn_meta *meta);

/*
 * Close `c` and log `reason` (printf-style) with the client id and peer.
 * Publishes the will when `c` had not sent DISCONNECT (see conn_close_clean).
 * Safe to call more than once and from any callback: the conn is freed later.
 */
void conn_close(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* As conn_close(), but after a DISCONNECT: the will is discarded, not published. */
void conn_close_clean(struct conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Encode `pkt` for the connection's protocol level and queue it for writing.
 * Returns 0, or -1 when the packet could not be encoded or queued (the
 * connection is then closed).
 */
int conn_send(struct conn *c, const struct mqtt_packet *pkt);

/*
 * Queue a PUBLISH of `m` with the given QoS, packet id, DUP and RETAIN flags;
 * `leading_slash` prefixes the topic with '/'. The payload is not copied: the
 * output buffer holds a reference to `m` until it is written.
 * Returns 0 or -1 (the connection is then closed).
 */
int conn_send_publish(struct conn *c, struct message *m, uint8_t qos, uint16_t packet_id,
                      bool dup, bool retain, bool leading_slash);

/*
 * CONNECT was accepted with keep-alive `c->keepalive` (already clamped): from
 * now on the connection is closed when no whole packet arrives for 1.5 times
 * that (MQTT-3.1.2-24).
 */
void conn_start_keepalive(struct conn *c);

/*
 * CONNECT was accepted with an expiring token: arm the warning (token-warning
 * seconds ahead) and the close at expiry. Returns 0 or -1 (closed).
 */
int conn_start_token_timer(struct conn *c);

/*
 * The warning time has come: send expirywarning on [mqtt]tokenevents once,
 * if the session subscribed to it (a later subscription gets it then).
 */
void conn_token_warning(struct conn *c);

/* The instance's limits changed: apply a new keep-alive or idle deadline at once. */
void conn_limits_changed(struct conn *c);

/* Bytes waiting in the connection's output buffer. */
size_t conn_output_pending(const struct conn *c);

/* Free a closed conn (the broker's reaper calls this; nobody else). */
void conn_free(struct conn *c);

#endif
