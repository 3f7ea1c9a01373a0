/*
 * conn — one client connection, and how it ends.
 *
 * A conn is what the broker keeps for one client: its link (the byte
 * stream, net/link.h), its sender (what goes out, sender.h), its session
 * once CONNECT is accepted, its will, its timers and its place in the
 * broker's lists. Reading, framing and dispatch are client.c's; deadlines are
 * timers.c's; this module is the end of a connection and of what it leaves
 * behind, one state machine (doc/ARCHITECTURE.md draws it):
 *
 *   AWAIT_CONNECT --CONNECT accepted--> ACTIVE --close--> CLOSING --link done--> reaped
 *
 * On close the conn leaves its session: a session with an expiry is parked
 * offline (its expiry timer, and a will with a delay waiting in it); one
 * without ends, but stays parked on the conn (ended_session) until the
 * reaper frees it, because the close may come from inside a walk of the
 * topic tree that holds it. The will is published at close, unless the
 * client said DISCONNECT or the broker is stopping; from inside routing
 * (core->routing > 0) it waits for the reaper. An instance deleted under a
 * conn drops the conn's will and ended session with it.
 *
 * Ownership: the broker owns every conn (core->conns). A conn owns its link,
 * its will, its timers and its ended session; it points at its session
 * without owning it. Closing never frees, so callbacks can close the conn
 * they run on; the reaper frees it on the next loop iteration. Core thread
 * only.
 */
#ifndef AVIARY_CONN_H
#define AVIARY_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

#include "broker/sender.h"
#include "net/link.h"
#include "util/bucket.h"
#include "util/deadlines.h"
#include "util/log.h"

struct broker;
struct bufferevent;
struct catalog_token;
struct event;
struct instance;
struct message;
struct session;

enum conn_state {
    CONN_AWAIT_CONNECT = 0, /* nothing but CONNECT is allowed yet */
    CONN_ACTIVE = 1,        /* CONNECT accepted */
    CONN_CLOSING = 2,       /* closed: its link drains, then the reaper frees it */
};

/* Why a packet handler wants the connection closed (see conn_fail). */
struct conn_end {
    char *why;      /* owned; made only when a handler fails */
    int16_t reason; /* MQTT 5 DISCONNECT reason to send; -1: none */
    uint8_t level;  /* enum log_level */
    bool set;
    bool clean; /* after the client's DISCONNECT: the will is discarded */
};

/*
 * What most connections never use, made at its first use (conn_rare()) and
 * freed with the connection: the wait of a cloud login that missed, the
 * log limiter of PUBLISHes its token refused, the timer of its message
 * rate, its will's delay, the topic aliases it set. An idle connection
 * does not carry its bytes.
 */
struct conn_rare {
    /* Cloud login miss: the CONNECT waits (unread) for a fresh look at the database. */
    uint64_t login_look;     /* the look at the database it waits for */
    struct conn *login_next; /* core->login_waiters */
    /* max-messages-per-second: an empty bucket (its, or its instance's) pauses reading. */
    struct bucket *rate;         /* owned; made at the first PUBLISH under such a limit */
    struct event *rate_timer;    /* resumes reading (client.c); owned */
    struct log_every denied_log; /* PUBLISHes the token did not allow */
    uint32_t will_delay;         /* MQTT 5: Will Delay Interval of its will, seconds */
    char **in_aliases;           /* MQTT 5: topic of each alias it set, [alias - 1]; owned */
};

struct conn {
    struct broker *broker;
    struct link link;      /* the byte stream; owned */
    struct sender out;     /* what goes to the client; out.version is its protocol level */
    uint8_t state;         /* enum conn_state, in a byte */
    uint8_t early_packets; /* packets handled, up to a few (client.c's burst guard) */
    uint16_t keepalive;    /* effective keep-alive in seconds (after clamping) */
    uint16_t in_alias_max; /* MQTT 5: aliases it may set (max-topic-aliases) */
    /* Flags, as bits, beside the small fields above: every client holds a conn. */
    bool reading_paused : 1;        /* output over max-outbound-bytes: input waits */
    bool will_due : 1;              /* lost without DISCONNECT: publish the will when reaped */
    bool cluster_claim_pending : 1; /* its claim to its client id is not back from the stream */
    bool cluster_waiting : 1;       /* its CONNECT waits for its session or stream (Redis) */
    bool cluster_fetched : 1;       /* that was asked once: not again */
    bool problem_info : 1;          /* MQTT 5 Request Problem Information: reasons on acks */
    bool counted : 1;               /* in its instance's conn_count */
    bool token_warning_due : 1;     /* the warning's time has come */
    bool token_warned : 1;          /* expirywarning was sent */
    bool login_waiting : 1;         /* a cloud login miss: waits for a fresh look */
    bool login_rechecked : 1;       /* it waited once already: a second miss is final */
    bool rate_paused : 1;           /* max-messages-per-second: its bucket ran dry */
    bool kept_paused : 1;          /* its instance is over its database backlog share (durable.h) */
    bool cluster_paused : 1;       /* this node is too far ahead of its stream (cluster) */
    bool reap_queued : 1;          /* on core->reap already */
    bool name_borrowed : 1;        /* client_id is its session's log_id (conn.c) */
    struct session *session;       /* NULL before CONNECT is accepted and after close */
    struct session *ended_session; /* clean session ended with this conn; owned till reaped */
    struct message *will;          /* owned; NULL when there is none */
    const char *client_id;         /* for the log (conn_name): owned once named, but
                                      borrowed from its session while it holds one */
    uint64_t id;                   /* a number for the log, unique per process */
    struct deadline deadline;      /* CONNECT, then keep-alive, idle, token (timers.c) */
    uint32_t idle_published;       /* out.published when last_activity was last looked at */
    /* On timers.c's clock, its low 32 bits (ms_since() there). */
    uint32_t last_packet_ms; /* when the last whole packet arrived */
    uint32_t
        last_activity_ms; /* last PUBLISH, SUBSCRIBE or UNSUBSCRIBE either way (idle-timeout) */
    struct conn_end end;  /* set by conn_fail() and its kin */

    /* Set when CONNECT is accepted. */
    struct instance *instance;   /* where it logged in; counted in conn_count while counted */
    struct catalog_token *token; /* cloud: the token it logged in with (a reference) */

    struct conn_rare *rare;   /* owned; NULL until first needed */
    struct conn *next, *prev; /* core->conns */
    struct conn *reap_next;   /* core->reap */
};

/*
 * A conn over `stream` (taken, also on failure) whose link reports to
 * `events` with the conn as owner; on the broker's list. NULL when out of
 * memory. (client_accept() is the way in.)
 */
struct conn *conn_new(struct broker *b, const struct link_stream *stream,
                      const struct link_meta *meta, const struct link_events *events);

/*
 * CONNECT was accepted: `c` is ACTIVE in session `s` (which sends through
 * c->out from now on) and counts in its instance, whose limits and account
 * its output follows.
 */
void conn_attach(struct conn *c, struct session *s);

/*
 * Close `c` and log `reason` (printf-style) with the client id and peer.
 * Publishes the will when `c` had not sent DISCONNECT. Safe to call more
 * than once and from any callback: the conn is freed later.
 */
void conn_close(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * As conn_close(), logged at `level`: for refusals that their instance's own
 * rate-limited line counts already (see instance_note_refusal), so that a
 * tenant at its limit cannot flood the log at the default level.
 */
void conn_close_at(struct conn *c, enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * The live connection of client `client_id` of `inst` (logged in, not
 * closing), or NULL: what $action and the management API close.
 */
struct conn *conn_of_client(struct instance *inst, const char *client_id);

/*
 * As conn_close(), but an MQTT 5 client whose CONNECT was accepted first gets
 * a DISCONNECT with `reason` (enum mqtt_reason) and the reason text as its
 * Reason String. The will is published.
 */
void conn_disconnect(struct conn *c, uint8_t reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * For packet handlers, which do not close their own connection: record why
 * it must end and return -1; the dispatcher then closes it once
 * (conn_close_ended). The first record wins. conn_fail is conn_close's
 * record, conn_fail_at conn_close_at's, conn_fail_with conn_disconnect's;
 * conn_finish is the client's own DISCONNECT (logged at info, will
 * discarded).
 */
int conn_fail(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int conn_fail_at(struct conn *c, enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int conn_fail_with(struct conn *c, uint8_t reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int conn_finish(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Close `c` as conn_fail() and its kin recorded (a no-op when closing already). */
void conn_close_ended(struct conn *c);

/*
 * The session ends (its expiry, or a Clean Start that replaces it): publish
 * its delayed will, if any, then take it out of its instance and free it.
 */
void conn_end_session(struct session *s);

/*
 * A session restored from the database, offline: it ends now when its
 * expiry has passed (`expiry_left_ms` <= 0; its will goes first), else its
 * expiry timer runs for what is left; its will (s->will), if any, goes now
 * or after `will_left_ms`. Returns 0, or -ENOMEM (a timer could not be armed).
 */
int conn_park_restored(struct session *s, int64_t expiry_left_ms, int64_t will_left_ms);

/*
 * The catalog deleted the instance `c` belongs to or still points into (its
 * will's, its ended session's): close it without its will (nobody is left to
 * receive it) and drop what points into the instance. Returns false when `c`
 * has nothing in a deleted instance.
 */
bool conn_leave_deleted_instance(struct conn *c);

/* The link has nothing left to do: free `c` on the next loop iteration. */
void conn_reap_later(struct conn *c);

/* Free a closed conn (the broker's reaper calls this; nobody else). */
void conn_free(struct conn *c);

/* Call `c` by `client_id` in the log from now on (escaped and cut to 79 bytes). */
void conn_name(struct conn *c, const char *client_id);

/* The rare part of `c` (struct conn_rare), made now if it has none; NULL when out of memory. */
struct conn_rare *conn_rare(struct conn *c);

/*
 * A Reason String for an acknowledgement (PUBACK, SUBACK, ...) to `c`: `why`
 * when the client asked for problem information (MQTT 5), else NULL.
 */
static inline const char *conn_reason_string(const struct conn *c, const char *why)
{
    return c->out.version == MQTT_V5 && c->problem_info ? why : NULL;
}

/* Encode `pkt` for the client and queue it (see sender_send). Returns 0 or -1. */
static inline int conn_send(struct conn *c, const struct mqtt_packet *pkt)
{
    return sender_send(&c->out, pkt);
}

#endif
