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
#include "util/bucket.h"
#include "util/limits.h"
#include "util/log.h"
#include "util/strmap.h"

struct account;
struct bufferevent;
struct catalog_token;
struct delivery;
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

/*
 * Why a packet handler ended the connection (conn_fail() and its kin): kept
 * until conn_close_ended() closes it as recorded. The first record wins.
 */
struct conn_end {
    bool set;
    enum log_level level;
    bool clean;     /* after the client's DISCONNECT: the will is discarded */
    int reason;     /* MQTT 5 DISCONNECT reason code; < 0: no DISCONNECT */
    char why[256];  /* for the log (and the DISCONNECT's Reason String) */
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
    bool peer_eof;            /* the peer closed or the transport failed */
    bool half_closed;         /* closing: our side of the stream is shut */

    /* MQTT 5, from CONNECT. */
    uint16_t peer_receive_max; /* its Receive Maximum: bounds our window; 0: max-inflight */
    uint32_t peer_max_packet;  /* its Maximum Packet Size; 0: no limit */
    uint16_t peer_alias_max;   /* Topic Alias Maximum it accepts from us */
    bool problem_info;         /* Request Problem Information: reason strings on acks */
    uint32_t will_delay;       /* Will Delay Interval of its will, seconds */
    uint16_t in_alias_max;     /* aliases it may set (max-topic-aliases at CONNECT) */
    char **in_aliases;         /* topic of each alias it set, [alias - 1]; owned */
    struct strmap out_aliases; /* topic -> alias we gave it (as uintptr_t) */
    uint16_t out_alias_count;

    /* Set when CONNECT is accepted. */
    struct instance *instance; /* where it logged in; counted in conn_count while counted */
    bool counted;
    struct catalog_token *token; /* cloud: the token it logged in with (a reference) */
    struct event *token_timer; /* expiry warning, then expiry; owned; NULL for keys */
    bool token_warning_due;   /* the warning's time has come */
    bool token_warned;        /* expirywarning was sent */
    struct timeval last_activity; /* last PUBLISH, SUBSCRIBE or UNSUBSCRIBE (idle-timeout) */

    /* Its output counts against its instance's bytes from login until it is freed. */
    struct account *account;   /* a reference; NULL before login */
    size_t output_charged;     /* bytes of output charged to it: never less than pending */

    /* Cloud login miss: the CONNECT waits (unread) for a fresh look at the database. */
    bool login_waiting;
    bool login_rechecked;      /* it waited once already: a second miss is final */
    uint64_t login_look;       /* the look at the database it waits for */
    struct conn *login_next;   /* broker->login_waiters */

    /* max-messages-per-second: an empty bucket (its, or its instance's) pauses reading. */
    struct bucket rate;
    bool rate_paused;
    struct event *rate_timer; /* owned; made at the first pause */

    struct log_every denied_log; /* PUBLISHes the token did not allow */
    struct conn *next, *prev; /* broker->conns */
    struct conn *reap_next;   /* broker->reap */
    bool reap_queued;         /* on broker->reap already */
    struct conn_end end;      /* a handler's reason to close it */
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

/*
 * As conn_close(), logged at `level`: for refusals that their instance's own
 * rate-limited line counts already (see instance_note_refusal), so that a
 * tenant at its limit cannot flood the log at the default level.
 */
void conn_close_at(struct conn *c, enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* As conn_close(), but after a DISCONNECT: the will is discarded, not published. */
void conn_close_clean(struct conn *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * As conn_close(), but an MQTT 5 client whose CONNECT was accepted first gets
 * a DISCONNECT with `reason` (enum mqtt_reason) and the reason text as its
 * Reason String. The will is published.
 */
void conn_disconnect(struct conn *c, uint8_t reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * A Reason String for an acknowledgement (PUBACK, SUBACK, ...) to `c`: `why`
 * when the client asked for problem information (MQTT 5), else NULL.
 */
const char *conn_reason_string(const struct conn *c, const char *why);

/*
 * Encode `pkt` for the connection's protocol level and queue it for writing.
 * When it would exceed an MQTT 5 client's Maximum Packet Size it goes without
 * its properties (Reason String, User Properties), or not at all
 * [MQTT-3.1.2-25]. Returns 0, or -1 when the packet could not be encoded or
 * queued (the connection is then closed).
 */
int conn_send(struct conn *c, const struct mqtt_packet *pkt);

/* conn_send_publish(): the client cannot take it (its Maximum Packet Size). */
#define CONN_PUBLISH_SKIPPED 1

/*
 * Queue a PUBLISH of `m` as `d` says (QoS, RETAIN, leading '/', MQTT 5
 * Subscription Identifiers) with `packet_id` and DUP. MQTT 5 clients get the
 * message's properties, its remaining expiry and, when they allow it, a
 * topic alias. The payload is not copied: the output buffer holds a
 * reference to `m` until it is written. Returns 0; CONN_PUBLISH_SKIPPED when
 * it would exceed the client's Maximum Packet Size (nothing sent); or -1 (the
 * connection is then closed). QoS 0 beyond max-outbound-bytes is dropped
 * (and counted) with 0.
 */
int conn_send_publish(struct conn *c, struct message *m, const struct delivery *d,
                      uint16_t packet_id, bool dup);

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

/*
 * The Maximum Packet Size announced to MQTT 5 clients under limits `l`: the
 * largest packet after CONNECT that a client within every limit can need.
 */
uint32_t conn_max_packet_size(const struct limits *l);

/*
 * From now on the connection's pending output counts against `a` (its
 * instance's account, of which it keeps a reference until it is freed, so a
 * closing connection's output still counts).
 */
void conn_charge_output(struct conn *c, struct account *a);

/* Take the input again after a login wait and handle what is buffered (the CONNECT). */
void conn_read_again(struct conn *c);

/* Bytes waiting in the connection's output buffer. */
size_t conn_output_pending(const struct conn *c);

/* Free a closed conn (the broker's reaper calls this; nobody else). */
void conn_free(struct conn *c);

/*
 * A packet handler's way to end the connection: each records why (the first
 * record wins; later ones are ignored) and returns -1, which the handler
 * passes up to conn_dispatch(), which then calls conn_close_ended(). Nothing
 * is closed or sent until then, so the handler must return at once.
 *
 * conn_fail():      as conn_close(): notice level, will published, no DISCONNECT;
 * conn_fail_at():   as conn_close_at(), at `level`;
 * conn_fail_with(): as conn_disconnect(): MQTT 5 DISCONNECT with `reason`
 *                   (enum mqtt_reason) after CONNACK;
 * conn_finish():    as conn_close_clean(): the client said DISCONNECT (info level,
 *                   will discarded).
 */
int conn_fail(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int conn_fail_at(struct conn *c, enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int conn_fail_with(struct conn *c, uint8_t reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int conn_finish(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Close `c` as its record says (see conn_fail). Nothing happens when it is
 * closing already (a failed conn_send() closes at once). Without a record it
 * is closed all the same, as a handler's error.
 */
void conn_close_ended(struct conn *c);

#endif
