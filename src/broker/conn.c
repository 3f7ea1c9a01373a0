#include "broker/conn.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "broker/core.h"
#include "broker/durable.h"
#include "broker/instance.h"
#include "broker/message.h"
#include "broker/route.h"
#include "broker/session.h"
#include "broker/systopic.h"
#include "tenancy/catalog.h"
#include "util/strmap.h"

/* After a close, pending output (a CONNACK, say) gets this long to drain. */
#define CONN_LINGER_SEC 5
/* Once it has drained and our side is shut, the client gets this long to close its own. */
#define CONN_DRAIN_SEC 1
/*
 * A connection closed with more than this unread is not given its linger:
 * a client that far behind would not read its last packet in time anyway,
 * and holding its output for seconds would let take-overs pile output up.
 * Its QoS 1/2 messages stay in its session; QoS 0 ones are lost, as QoS 0 may be.
 */
#define CONN_LINGER_MAX_OUTPUT (64 * 1024)

/* The sender cannot go on (out of memory, a packet it cannot encode). */
static void conn_sender_failed(void *owner, const char *why)
{
    conn_close(owner, "%s", why);
}

/* The log's name of a connection before its CONNECT (not owned). */
static const char conn_unnamed[] = "-";

static void conn_set_name(struct conn *c, const char *name, bool owned);
static void conn_rare_free(struct conn *c);

struct conn *conn_new(struct broker *b, const struct link_stream *stream,
                      const struct link_meta *meta, const struct link_events *events)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c) {
        log_error("out of memory accepting a connection from %s", link_peer_name(&meta->peer).s);
        link_stream_drop(stream);
        return NULL;
    }
    link_init(&c->link, stream, meta, events, c);
    c->broker = b;
    c->state = CONN_AWAIT_CONNECT;
    c->id = ++b->next_conn_id;
    c->problem_info = true;
    c->client_id = conn_unnamed;
    sender_init(&c->out, &c->link, &b->limits, conn_sender_failed);
    c->out.who = c->client_id;

    c->next = b->conns;
    if (b->conns)
        b->conns->prev = c;
    b->conns = c;
    b->conn_count++;
    return c;
}

void conn_reap_later(struct conn *c)
{
    struct broker *b = c->broker;

    if (c->reap_queued)
        return;
    c->reap_queued = true;
    c->reap_next = b->reap;
    b->reap = c;
    event_active(b->reap_ev, 0, 0);
}

/* Publish the will of a client that is gone, as the routing rules allow. */
static void conn_publish_will(struct conn *c)
{
    c->will_due = false;
    route_will(c->instance, c->will, c->token, c->rare ? c->rare->rate : NULL, c->client_id);
}

void conn_free(struct conn *c)
{
    struct broker *b = c->broker;
    if (c->prev)
        c->prev->next = c->next;
    else
        b->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    b->conn_count--;
    deadlines_cancel(b->deadlines, &c->deadline);
    conn_rare_free(c);
    catalog_token_unref(c->token);
    sender_release(&c->out);
    link_release(&c->link);
    free(c->end.why);
    /* A will that the close had to defer because routing was under way. */
    if (c->will_due && c->will && !b->stopping)
        conn_publish_will(c);
    message_unref(c->will);
    session_free(c->ended_session);
    conn_set_name(c, conn_unnamed, false);
    free(c);
}

/* Name `c` in the log `name`: a copy it owns (`owned`), or a string that outlives it. */
static void conn_set_name(struct conn *c, const char *name, bool owned)
{
    if (c->client_id != conn_unnamed && !c->name_borrowed)
        free((char *)c->client_id);
    c->client_id = name;
    c->name_borrowed = name != conn_unnamed && !owned;
    c->out.who = name;
}

static void conn_rare_free(struct conn *c)
{
    struct conn_rare *rare = c->rare;

    if (!rare)
        return;
    if (rare->rate_timer)
        event_free(rare->rate_timer);
    free(rare->rate);
    if (rare->in_aliases)
        for (size_t i = 0; i < c->in_alias_max; i++)
            free(rare->in_aliases[i]);
    free(rare->in_aliases);
    free(rare);
}

struct conn_rare *conn_rare(struct conn *c)
{
    if (!c->rare)
        c->rare = calloc(1, sizeof(*c->rare));
    return c->rare;
}

void conn_name(struct conn *c, const char *client_id)
{
    /* Escaped, so an id cannot forge log lines, and cut to fit a line. */
    char shown[80];
    log_escape(client_id, strlen(client_id), shown, sizeof(shown));
    char *copy = strdup(shown);
    if (!copy)
        return; /* the log goes on calling it "-" */
    conn_set_name(c, copy, true);
}

/*
 * While it holds its session, the conn's log name is the session's (the
 * same escaped id): one copy fewer for every connected client. It takes a
 * copy of its own when it lets the session go, which may end first.
 */
static void conn_borrow_name(struct conn *c, const struct session *s)
{
    if (strcmp(c->client_id, s->log_id) == 0)
        conn_set_name(c, s->log_id, false);
}

static void conn_own_name(struct conn *c)
{
    if (!c->name_borrowed)
        return;
    char *copy = strdup(c->client_id);
    conn_set_name(c, copy ? copy : conn_unnamed, true);
}

void conn_attach(struct conn *c, struct session *s)
{
    struct instance *inst = s->instance;

    s->conn = c;
    s->out = &c->out;
    c->session = s;
    conn_borrow_name(c, s);
    c->state = CONN_ACTIVE;
    c->instance = inst;
    c->counted = true;
    inst->conn_count++;
    c->out.limits = &inst->limits;
    sender_charge(&c->out, inst->account);
}

/* Publish an offline session's delayed will now (its delay passed, or the session ends). */
static void conn_publish_delayed_will(struct session *s)
{
    struct message *will = session_take_will(s);

    if (!will)
        return;
    session_keep_will(s, 0);
    /* Its connection is long gone: only the instance's message rate applies. */
    route_will(s->instance, will, s->token, NULL, s->log_id);
    durable_will_published(s->instance->broker->durable, s->instance->kept_backlog, will);
    message_unref(will);
}

void conn_end_session(struct session *s)
{
    conn_publish_delayed_will(s);
    if (strmap_get(&s->instance->sessions, s->client_id) == s)
        strmap_remove(&s->instance->sessions, s->client_id);
    session_free(s);
}

static void session_expiry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;

    log_info("client %s: session expired (%u s after its connection ended)", s->log_id, s->expiry);
    conn_end_session(s);
}

static void session_will_cb(evutil_socket_t fd, short what, void *arg)
{
    conn_publish_delayed_will(arg);
}

/* Arm `*ev` (made on first use) to call `cb` for `s` in `ms`. Returns 0 or -ENOMEM. */
static int session_arm(struct session *s, struct event **ev, event_callback_fn cb, uint64_t ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};

    if (!*ev && !(*ev = evtimer_new(s->instance->broker->base, cb, s)))
        return -ENOMEM;
    return evtimer_add(*ev, &tv) < 0 ? -ENOMEM : 0;
}

/*
 * The connection went and `s` lives on offline for its expiry: arm the
 * expiry timer; `will` (may be NULL; the session takes the reference) is
 * published after `will_delay` seconds unless the session is resumed first.
 * Returns 0, or -ENOMEM (then the will is the caller's again).
 */
static int conn_park_session(struct session *s, struct message *will, uint32_t will_delay)
{
    bool expires = s->expiry != SESSION_NEVER_EXPIRES;
    struct session_wait *w = expires || will ? session_wait(s) : NULL;

    if ((expires || will) && !w)
        return -ENOMEM;
    if (expires &&
        session_arm(s, &w->expiry_timer, session_expiry_cb, (uint64_t)s->expiry * 1000) < 0)
        return -ENOMEM;
    if (!will)
        return 0;
    if (session_arm(s, &w->will_timer, session_will_cb, (uint64_t)will_delay * 1000) < 0)
        return -ENOMEM;
    message_unref(w->will);
    w->will = will;
    session_keep_will(s, durable_wall_ms() + (int64_t)will_delay * 1000);
    return 0;
}

int conn_park_restored(struct session *s, int64_t expiry_left_ms, int64_t will_left_ms)
{
    if (s->expiry != SESSION_NEVER_EXPIRES && expiry_left_ms <= 0) {
        log_info("client %s: session expired while the broker was down", s->log_id);
        conn_end_session(s);
        return 0;
    }
    if (session_will(s) && will_left_ms <= 0)
        conn_publish_delayed_will(s);
    bool expires = s->expiry != SESSION_NEVER_EXPIRES;
    struct session_wait *w = expires ? session_wait(s) : s->wait;
    if (expires && !w)
        return -ENOMEM;
    if (expires &&
        session_arm(s, &w->expiry_timer, session_expiry_cb, (uint64_t)expiry_left_ms) < 0)
        return -ENOMEM;
    if (session_will(s) &&
        session_arm(s, &w->will_timer, session_will_cb, (uint64_t)will_left_ms) < 0)
        return -ENOMEM;
    return 0;
}

/*
 * Leave the session. A session with an expiry lives on offline; one without
 * ends with its connection. The will is published unless the client said
 * DISCONNECT or the broker is stopping; with a Will Delay Interval and a
 * session that lives on, it waits in the session instead. Publishing now
 * keeps the order of events (an old connection's will comes before what its
 * successor sends), but routing is not reentrant: a close in the middle of a
 * delivery leaves it to the reaper.
 */
static void conn_detach(struct conn *c, bool clean_disconnect)
{
    struct session *s = c->session;

    /* The will goes to c->instance: the session's, set with it at conn_attach. */
    if (c->will && !clean_disconnect && s && !c->broker->stopping)
        c->will_due = true;
    if (!s)
        return;
    conn_own_name(c);
    c->session = NULL;
    s->conn = NULL;
    s->out = NULL;
    c->out.limits = &c->broker->limits;
    if (s->expiry == 0) {
        /*
         * It leaves the instance's table now (so a new connection with the
         * same id starts afresh) but is freed by the reaper: we may be inside
         * a walk of the topic tree that holds it.
         */
        strmap_remove(&s->instance->sessions, s->client_id);
        c->ended_session = s;
        session_keep_state(s, 0); /* kept until its client set its expiry to 0: dropped */
    } else {
        session_trim(s);
        uint32_t will_delay = c->rare ? c->rare->will_delay : 0;
        struct message *delayed = c->will_due && will_delay ? c->will : NULL;
        session_keep_state(s, durable_wall_ms());
        if (conn_park_session(s, delayed, will_delay) < 0)
            log_error("client %s: out of memory arming its session's timers: the session "
                      "stays until it is resumed, the will goes now",
                      c->client_id);
        else if (delayed) {
            c->will = NULL; /* the session's now */
            c->will_due = false;
        }
    }
    if (c->will_due && c->broker->routing == 0)
        conn_publish_will(c);
}

/* Send an MQTT 5 DISCONNECT with `reason` and `why` as its Reason String. */
static void conn_send_disconnect(struct conn *c, uint8_t reason, const char *why)
{
    struct mqtt_packet p = {.type = MQTT_DISCONNECT};

    p.u.disconnect.reason = reason;
    sender_send_why(&c->out, &p, why);
}

/* `c` closed while its login waited for a fresh look at the database: forget it. */
static void conn_login_forget(struct conn *c)
{
    for (struct conn **p = &c->broker->login_waiters; *p; p = &(*p)->rare->login_next) {
        if (*p == c) {
            *p = c->rare->login_next;
            break;
        }
    }
    c->login_waiting = false;
}

/* Stop what runs on the connection's behalf: its timers, its counts, its login wait. */
static void conn_stop(struct conn *c)
{
    if (c->login_waiting)
        conn_login_forget(c);
    if (c->cluster_waiting && c->broker->cluster)
        c->broker->cluster->forget(c->broker->cluster, c);
    deadlines_cancel(c->broker->deadlines, &c->deadline);
    if (c->rare && c->rare->rate_timer)
        evtimer_del(c->rare->rate_timer);
    if (c->counted) {
        c->counted = false;
        c->instance->conn_count--;
    }
}

/* The one close. `reason` < 0: no DISCONNECT. */
static void conn_end(struct conn *c, enum log_level level, bool clean_disconnect, int reason,
                     const char *why)
{
    if (c->state == CONN_CLOSING)
        return;
    log_msg(level, "client %s (%s, conn %llu): closed: %s", c->client_id,
            link_peer_name(&c->link.meta.peer).s, (unsigned long long)c->id, why);
    /* A client that said DISCONNECT may read what it asked for; one we close gets its linger
     * only when it is keeping up. */
    size_t unread = sender_pending(&c->out);
    bool abandon = !clean_disconnect && unread > CONN_LINGER_MAX_OUTPUT;
    /* A server DISCONNECT only after CONNACK [MQTT-3.14.0-1]; before it, CONNACK says why. */
    if (reason >= 0 && c->out.version == MQTT_V5 && c->state == CONN_ACTIVE && !c->link.peer_eof &&
        !abandon)
        conn_send_disconnect(c, (uint8_t)reason, why);
    if (c->state == CONN_ACTIVE && c->session)
        systopic_disconnected(c->session->instance, c->session->client_id, why);
    c->state = CONN_CLOSING;
    c->out.closed = true;
    conn_stop(c);
    conn_detach(c, clean_disconnect);
    if (abandon)
        log_debug("client %s (conn %llu): %zu bytes it has not read are dropped with it",
                  c->client_id, (unsigned long long)c->id, unread);
    link_close(&c->link, abandon, CONN_LINGER_SEC, CONN_DRAIN_SEC);
}

static void conn_vclose(struct conn *c, enum log_level level, bool clean_disconnect, int reason,
                        const char *fmt, va_list ap)
{
    char why[256];

    if (c->state == CONN_CLOSING)
        return;
    vsnprintf(why, sizeof(why), fmt, ap);
    conn_end(c, level, clean_disconnect, reason, why);
}

/* An orderly DISCONNECT is routine; every other close is worth a notice. */
void conn_close(struct conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    conn_vclose(c, LOG_LEVEL_NOTICE, false, -1, fmt, ap);
    va_end(ap);
}

void conn_close_at(struct conn *c, enum log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    conn_vclose(c, level, false, -1, fmt, ap);
    va_end(ap);
}

void conn_disconnect(struct conn *c, uint8_t reason, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    conn_vclose(c, LOG_LEVEL_NOTICE, false, reason, fmt, ap);
    va_end(ap);
}

static int conn_record(struct conn *c, enum log_level level, bool clean, int reason,
                       const char *fmt, va_list ap)
{
    struct conn_end *e = &c->end;

    if (e->set)
        return -1;
    e->set = true;
    e->level = (uint8_t)level;
    e->clean = clean;
    e->reason = (int16_t)reason;
    /* Made only now: a connection that never fails carries no room for the text. */
    va_list again;
    va_copy(again, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    if (n >= 0 && (e->why = malloc((size_t)n + 1))) /* else a plainer line: conn_close_ended */
        vsnprintf(e->why, (size_t)n + 1, fmt, again);
    va_end(again);
    return -1;
}

int conn_fail(struct conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    conn_record(c, LOG_LEVEL_NOTICE, false, -1, fmt, ap);
    va_end(ap);
    return -1;
}

int conn_fail_at(struct conn *c, enum log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    conn_record(c, level, false, -1, fmt, ap);
    va_end(ap);
    return -1;
}

int conn_fail_with(struct conn *c, uint8_t reason, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    conn_record(c, LOG_LEVEL_NOTICE, false, reason, fmt, ap);
    va_end(ap);
    return -1;
}

int conn_finish(struct conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    conn_record(c, LOG_LEVEL_INFO, true, -1, fmt, ap);
    va_end(ap);
    return -1;
}

void conn_close_ended(struct conn *c)
{
    const struct conn_end *e = &c->end;

    /* Unrecorded: the failure closed the connection already (its sender's, say). */
    if (e->set)
        conn_end(c, (enum log_level)e->level, e->clean, e->reason,
                 e->why ? e->why : "out of memory recording why it failed");
    else if (c->state != CONN_CLOSING)
        conn_close_at(c, LOG_LEVEL_ERROR, "a packet handler failed without a reason");
}

/* Does `c` belong to, or still point into, an instance being deleted? */
static bool conn_in_deleted_instance(const struct conn *c)
{
    return (c->instance && c->instance->deleting) ||
           (c->ended_session && c->ended_session->instance->deleting);
}

bool conn_leave_deleted_instance(struct conn *c)
{
    if (!conn_in_deleted_instance(c))
        return false;
    const char *name = c->instance ? c->instance->name : "";
    message_unref(c->will);
    c->will = NULL;
    c->will_due = false;
    conn_disconnect(c, MQTT_RC_ADMINISTRATIVE_ACTION, "instance %s was deleted", name);
    /* A clean session ended by an earlier close still holds subscriptions in its tree. */
    session_free(c->ended_session);
    c->ended_session = NULL;
    c->instance = NULL;
    return true;
}

struct conn *conn_of_client(struct instance *inst, const char *client_id)
{
    struct session *s = strmap_get(&inst->sessions, client_id);

    return s && s->conn && s->conn->state == CONN_ACTIVE ? s->conn : NULL;
}
