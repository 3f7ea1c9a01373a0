#include "broker/timers.h"

#include <string.h>
#include <time.h>

#include <event2/event.h>

#include <stddef.h>

#include "broker/conn.h"
#include "broker/core.h"
#include "broker/instance.h"
#include "broker/message.h"
#include "broker/session.h"
#include "tenancy/catalog.h"
#include "util/clock.h"
#include "util/deadlines.h"

/* Set the conn's deadline `after` from now; out of memory closes it. Returns 0 or -1. */
static int timers_arm(struct conn *c, const struct timeval *after)
{
    uint64_t ms = (uint64_t)after->tv_sec * 1000u + (uint64_t)after->tv_usec / 1000u;

    if (deadlines_set(c->broker->deadlines, &c->deadline, clock_ms() + ms) == 0)
        return 0;
    conn_close(c, "out of memory setting a deadline");
    return -1;
}

int timers_start_connect(struct conn *c)
{
    /* An absolute deadline: trickling bytes of a CONNECT does not extend it. */
    struct timeval connect_timeout = {(time_t)c->broker->connect_timeout, 0};

    return timers_arm(c, &connect_timeout);
}

/* 1.5 times the keep-alive (MQTT-3.1.2-24). */
static struct timeval keepalive_limit(const struct conn *c)
{
    struct timeval limit = {c->keepalive + c->keepalive / 2, (c->keepalive % 2) * 500000};
    return limit;
}

void timers_start_keepalive(struct conn *c)
{
    struct timeval limit = keepalive_limit(c);

    event_base_gettimeofday_cached(c->broker->base, &c->last_packet);
    c->last_activity = c->last_packet;
    c->idle_published = c->out.published;
    unsigned idle_timeout = c->instance ? c->instance->limits.idle_timeout : 0;
    if (idle_timeout && (unsigned long)idle_timeout < (unsigned long)limit.tv_sec)
        limit = (struct timeval){idle_timeout, 0};
    timers_arm(c, &limit);
}

void timers_limits_changed(struct conn *c)
{
    static const struct timeval now = {0, 0};

    /* The timer callback measures both deadlines again and re-arms for the nearer. */
    if (c->state == CONN_ACTIVE)
        timers_arm(c, &now);
}

/* No CONNECT in time: name the handshake when that is what never finished. */
static void timers_connect_missed(struct conn *c)
{
    if (link_handshaking(&c->link))
        conn_close(c, "TLS handshake not finished within %u s (connect-timeout)",
                   c->broker->connect_timeout);
    else
        conn_close(c, "no CONNECT within %u s (connect-timeout)", c->broker->connect_timeout);
}

/*
 * The idle timeout on top of the keep-alive's time `left`: closes the
 * connection (returns false) or shortens `left` to the nearer deadline.
 * A connection that was sent messages since the last look is not idle: a
 * subscriber that only listens is what idle-timeout must keep. Counting them
 * here, not per delivery, keeps the clock off the fan-out path; the cost is
 * that it counts as active from this look, not from the delivery, so it is
 * closed after between one and two idle-timeouts of silence.
 */
static bool timers_idle_check(struct conn *c, const struct timeval *now, struct timeval *left)
{
    unsigned idle_timeout = c->instance ? c->instance->limits.idle_timeout : 0;
    struct timeval quiet, idle_limit = {idle_timeout, 0}, idle_left;

    if (!idle_timeout)
        return true;
    if (c->out.published != c->idle_published) {
        c->idle_published = c->out.published;
        c->last_activity = *now;
    }
    evutil_timersub(now, &c->last_activity, &quiet);
    if (!evutil_timercmp(&quiet, &idle_limit, <)) {
        conn_disconnect(c, MQTT_RC_KEEP_ALIVE_TIMEOUT,
                        "idle: no PUBLISH either way, SUBSCRIBE or UNSUBSCRIBE for %u s "
                        "(idle-timeout)",
                        idle_timeout);
        return false;
    }
    evutil_timersub(&idle_limit, &quiet, &idle_left);
    if (evutil_timercmp(&idle_left, left, <))
        *left = idle_left;
    return true;
}

void timers_conn_due(struct deadline *d)
{
    struct conn *c = (struct conn *)((char *)d - offsetof(struct conn, deadline));
    struct timeval now, idle, left, limit;

    if (c->state == CONN_AWAIT_CONNECT) {
        timers_connect_missed(c);
        return;
    }
    if (c->state != CONN_ACTIVE)
        return;
    limit = keepalive_limit(c);
    event_base_gettimeofday_cached(c->broker->base, &now);
    evutil_timersub(&now, &c->last_packet, &idle);
    if (!evutil_timercmp(&idle, &limit, <)) {
        if (c->reading_paused)
            conn_disconnect(c, MQTT_RC_KEEP_ALIVE_TIMEOUT,
                            "not reading its output: %zu bytes pending, nothing read for 1.5 x "
                            "%u s",
                            sender_pending(&c->out), c->keepalive);
        else
            conn_disconnect(c, MQTT_RC_KEEP_ALIVE_TIMEOUT,
                            "keep-alive timeout: no packet for 1.5 x %u s", c->keepalive);
        return;
    }
    evutil_timersub(&limit, &idle, &left);
    if (timers_idle_check(c, &now, &left))
        timers_arm(c, &left);
}

void timers_token_warning(struct conn *c)
{
    c->token_warning_due = true;
    if (c->token_warned || c->state != CONN_ACTIVE || !c->session || !c->session->token_events)
        return;
    struct message *m = message_new(TIMERS_TOKEN_EVENTS_TOPIC, strlen(TIMERS_TOKEN_EVENTS_TOPIC),
                                    (const uint8_t *)TIMERS_TOKEN_WARNING_PAYLOAD,
                                    strlen(TIMERS_TOKEN_WARNING_PAYLOAD), 0, false, NULL);
    if (!m) {
        conn_close(c, "out of memory sending the token's expiry warning");
        return;
    }
    c->token_warned = true;
    struct delivery d = {.qos = 0};
    if (sender_publish(&c->out, m, &d, 0, false) == 0)
        log_info("client %s: token %s expires in %lld s: sent %s on %s", c->client_id, c->token->id,
                 (long long)(c->token->expires - time(NULL)), TIMERS_TOKEN_WARNING_PAYLOAD,
                 TIMERS_TOKEN_EVENTS_TOPIC);
    message_unref(m);
}

/* Seconds from now until Unix time `when`, at least 0. */
static struct timeval timers_until(time_t when)
{
    time_t now = time(NULL);
    struct timeval tv = {when > now ? when - now : 0, 0};
    return tv;
}

static void timers_token_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    const struct catalog_token *t = c->token;

    if (c->state != CONN_ACTIVE)
        return;
    if (time(NULL) >= t->expires) {
        conn_disconnect(c, MQTT_RC_MAXIMUM_CONNECT_TIME, "token %s expired", t->id);
        return;
    }
    timers_token_warning(c);
    struct timeval left = timers_until(t->expires);
    evtimer_add(c->token_timer, &left);
}

int timers_start_token(struct conn *c)
{
    const struct catalog_token *t = c->token;

    if (!t || !t->expires)
        return 0;
    c->token_timer = evtimer_new(c->broker->base, timers_token_cb, c);
    if (!c->token_timer)
        return conn_fail(c, "out of memory watching its token's expiry");
    time_t warn_at = t->expires - (time_t)c->broker->token_warning;
    struct timeval first = timers_until(warn_at < time(NULL) ? t->expires : warn_at);
    if (warn_at <= time(NULL))
        c->token_warning_due = true;
    evtimer_add(c->token_timer, &first);
    return 0;
}
