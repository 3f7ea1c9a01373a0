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

/* Set the conn's deadline `ms` from now; out of memory closes it. Returns 0 or -1. */
static int timers_arm(struct conn *c, int64_t ms)
{
    if (deadlines_set(c->broker->deadlines, &c->deadline, clock_ms() + (uint64_t)ms) == 0)
        return 0;
    conn_close(c, "out of memory setting a deadline");
    return -1;
}

/* The loop's cached time in milliseconds: no clock is read per packet. */
static int64_t loop_ms(const struct conn *c)
{
    struct timeval now;

    event_base_gettimeofday_cached(c->broker->base, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_usec / 1000;
}

/*
 * Milliseconds from `then` (the low 32 bits of a loop_ms(), as a conn keeps
 * them) to `now`. Exact within 24 days either way, beyond the longest
 * keep-alive (1.5 x 65535 s) and idle-timeout (LIMITS_IDLE_MAX, 7 days); a
 * clock set back comes out negative, as it did with the whole time.
 */
static int64_t ms_since(int64_t now, uint32_t then)
{
    return (int32_t)((uint32_t)now - then);
}
_Static_assert((int64_t)LIMITS_IDLE_MAX * 1000 < INT32_MAX, "idle-timeout fits ms_since()");

int timers_start_connect(struct conn *c)
{
    /* An absolute deadline: trickling bytes of a CONNECT does not extend it. */
    return timers_arm(c, (int64_t)c->broker->connect_timeout * 1000);
}

/* 1.5 times the keep-alive (MQTT-3.1.2-24), in milliseconds. */
static int64_t keepalive_limit_ms(const struct conn *c)
{
    return (int64_t)c->keepalive * 1500;
}

void timers_start_keepalive(struct conn *c)
{
    int64_t limit = keepalive_limit_ms(c);

    c->last_packet_ms = c->last_activity_ms = (uint32_t)loop_ms(c);
    c->idle_published = c->out.published;
    unsigned idle_timeout = c->instance ? c->instance->limits.idle_timeout : 0;
    if (idle_timeout && (int64_t)idle_timeout * 1000 < limit)
        limit = (int64_t)idle_timeout * 1000;
    timers_arm(c, limit);
}

void timers_packet_arrived(struct conn *c, bool activity)
{
    c->last_packet_ms = (uint32_t)loop_ms(c);
    if (activity)
        c->last_activity_ms = c->last_packet_ms;
}

void timers_limits_changed(struct conn *c)
{
    /* The timer callback measures both deadlines again and re-arms for the nearer. */
    if (c->state == CONN_ACTIVE)
        timers_arm(c, 0);
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
static bool timers_idle_check(struct conn *c, int64_t now, int64_t *left)
{
    unsigned idle_timeout = c->instance ? c->instance->limits.idle_timeout : 0;
    int64_t idle_limit = (int64_t)idle_timeout * 1000;

    if (!idle_timeout)
        return true;
    if (c->out.published != c->idle_published) {
        c->idle_published = c->out.published;
        c->last_activity_ms = (uint32_t)now;
    }
    int64_t quiet = ms_since(now, c->last_activity_ms);
    if (quiet >= idle_limit) {
        conn_disconnect(c, MQTT_RC_KEEP_ALIVE_TIMEOUT,
                        "idle: no PUBLISH either way, SUBSCRIBE or UNSUBSCRIBE for %u s "
                        "(idle-timeout)",
                        idle_timeout);
        return false;
    }
    if (idle_limit - quiet < *left)
        *left = idle_limit - quiet;
    return true;
}

/*
 * An expiring token on top of the time `left`: its expiry closes the
 * connection (returns false); the warning goes out once its time has come;
 * `left` is shortened to the nearer of the two still ahead. Unix seconds, as
 * the catalog gives them.
 */
static bool timers_token_check(struct conn *c, int64_t *left)
{
    const struct catalog_token *t = c->token;

    if (!t || !t->expires)
        return true;
    time_t now = time(NULL), warn_at = t->expires - (time_t)c->broker->token_warning;
    if (now >= t->expires) {
        conn_disconnect(c, MQTT_RC_MAXIMUM_CONNECT_TIME, "token %s expired", t->id);
        return false;
    }
    if (now >= warn_at)
        timers_token_warning(c);
    int64_t next_ms = (int64_t)((now >= warn_at ? t->expires : warn_at) - now) * 1000;
    if (next_ms < *left)
        *left = next_ms;
    return c->state == CONN_ACTIVE; /* the warning may have failed it */
}

void timers_conn_due(struct deadline *d)
{
    struct conn *c = (struct conn *)((char *)d - offsetof(struct conn, deadline));

    if (c->state == CONN_AWAIT_CONNECT) {
        timers_connect_missed(c);
        return;
    }
    if (c->state != CONN_ACTIVE)
        return;
    if (c->session)
        session_trim(c->session);
    int64_t now = loop_ms(c), limit = keepalive_limit_ms(c),
            idle = ms_since(now, c->last_packet_ms);
    if (idle >= limit) {
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
    int64_t left = limit - idle;
    if (timers_idle_check(c, now, &left) && timers_token_check(c, &left))
        timers_arm(c, left);
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

int timers_start_token(struct conn *c)
{
    const struct catalog_token *t = c->token;

    if (!t || !t->expires)
        return 0;
    if (t->expires - (time_t)c->broker->token_warning <= time(NULL))
        c->token_warning_due = true; /* sent after CONNACK (handle_connect.c) */
    /* The deadline's callback measures the token too, and re-arms for the nearest. */
    return timers_arm(c, 0);
}
