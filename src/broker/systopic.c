#include "broker/systopic.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "broker/core.h"
#include "broker/message.h"
#include "broker/route.h"
#include "broker/session.h"
#include "broker/topic.h"
#include "util/account.h"
#include "util/clock.h"
#include "util/json.h"
#include "util/log.h"

/* ---- the queue: system messages are routed from the loop, in order ---------- */

static void systopic_flush_cb(evutil_socket_t fd, short what, void *arg)
{
    struct instance *inst = arg;
    struct instance_sys *sys = &inst->sys;
    struct message **list = sys->pending;
    size_t count = sys->pending_count;

    /* Routing may close connections, whose events start a new queue. */
    sys->pending = NULL;
    sys->pending_count = sys->pending_cap = 0;
    for (size_t i = 0; i < count; i++) {
        if (!inst->deleting && !inst->broker->stopping)
            route_publish_system(inst, list[i]);
        message_unref(list[i]);
    }
    free(list);
}

/* Queue `m` (the queue takes the reference) and make sure the loop routes it. */
static bool systopic_enqueue(struct instance *inst, struct message *m)
{
    struct instance_sys *sys = &inst->sys;

    if (!sys->flush_ev &&
        !(sys->flush_ev = event_new(inst->broker->base, -1, 0, systopic_flush_cb, inst)))
        return false;
    if (sys->pending_count == sys->pending_cap) {
        size_t cap = sys->pending_cap ? sys->pending_cap * 2 : 16;
        struct message **grown = realloc(sys->pending, cap * sizeof(*grown));
        if (!grown)
            return false;
        sys->pending = grown;
        sys->pending_cap = cap;
    }
    sys->pending[sys->pending_count++] = m;
    event_active(sys->flush_ev, 0, 0);
    return true;
}

/* A QoS 0 message on `topic` carrying the text of `j` (freed here), or NULL. */
static struct message *systopic_message(struct instance *inst, const char *topic, struct json *j,
                                        bool retain)
{
    size_t len;
    char *text = json_take(j, &len);
    struct message *m = NULL;

    if (text)
        m = message_new(topic, strlen(topic), (const uint8_t *)text, len, 0, retain, NULL);
    free(text);
    if (!m) {
        log_error("instance %s: out of memory making a message on %s", inst->name, topic);
        return NULL;
    }
    message_charge(m, inst->account);
    return m;
}

/* Publish `j`'s text on `topic` from the loop. */
static void systopic_publish(struct instance *inst, const char *topic, struct json *j)
{
    struct message *m = systopic_message(inst, topic, j, false);

    if (m && !systopic_enqueue(inst, m)) {
        log_error("instance %s: out of memory queueing a message on %s", inst->name, topic);
        message_unref(m);
    }
}

/* "2024-05-01T12:00:00.123Z": the loop's idea of now, in UTC. */
static void systopic_now(const struct instance *inst, char *out, size_t size)
{
    struct timeval now;
    struct tm tm;
    char day[32];

    event_base_gettimeofday_cached(inst->broker->base, &now);
    time_t secs = now.tv_sec;
    gmtime_r(&secs, &tm);
    strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, size, "%s.%03uZ", day, (unsigned)(now.tv_usec / 1000) % 1000u);
}

/* ---- $events and their cap ------------------------------------------------------- */

/* Start an event of `type` in `j`: its "type" and "time". */
static void event_start(struct instance *inst, struct json *j, const char *type)
{
    char when[64];

    systopic_now(inst, when, sizeof(when));
    json_init(j);
    json_object_begin(j);
    json_member_string(j, "type", type);
    json_member_string(j, "time", when);
}

static void event_finish(struct instance *inst, struct json *j)
{
    json_object_end(j);
    systopic_publish(inst, TOPIC_SYS_EVENTS, j);
}

/* One token of the cap: 0, or the seconds until there is one. */
static double event_take(struct instance *inst)
{
    struct timeval now;

    event_base_gettimeofday_cached(inst->broker->base, &now);
    return bucket_take(&inst->sys.events_rate, SYSTOPIC_EVENTS_PER_SECOND, &now);
}

/* Say how many events the cap dropped, when it allows one more. Returns true when said. */
static bool event_report_dropped(struct instance *inst)
{
    struct instance_sys *sys = &inst->sys;
    struct json j;

    if (!sys->events_dropped || event_take(inst) > 0)
        return false;
    event_start(inst, &j, "dropped");
    json_member_uint(&j, "count", sys->events_dropped);
    event_finish(inst, &j);
    sys->events_dropped = 0;
    return true;
}

static void event_dropped_cb(evutil_socket_t fd, short what, void *arg)
{
    struct instance *inst = arg;

    if (!systopic_events_watched(inst)) {
        inst->sys.events_dropped = 0;
        return;
    }
    if (!event_report_dropped(inst) && inst->sys.events_dropped) {
        struct timeval again = {0, 100 * 1000};
        evtimer_add(inst->sys.dropped_ev, &again);
    }
}

/* Count an event over the cap, and arm the report for when the cap allows one. */
static void event_drop(struct instance *inst, double wait)
{
    struct instance_sys *sys = &inst->sys;
    struct timeval tv = {(time_t)wait, (suseconds_t)((wait - (double)(time_t)wait) * 1e6) + 1};

    sys->events_dropped++;
    if (!sys->dropped_ev &&
        !(sys->dropped_ev = evtimer_new(inst->broker->base, event_dropped_cb, inst)))
        return; /* the next event that the cap allows reports them */
    if (!evtimer_pending(sys->dropped_ev, NULL))
        evtimer_add(sys->dropped_ev, &tv);
}

/*
 * Should an event be made now? Only when $events is watched and the cap
 * allows; a report of what was dropped goes first. Starts it in `j` when so.
 */
static bool event_begin(struct instance *inst, struct json *j, const char *type)
{
    if (!systopic_events_watched(inst) || inst->deleting || inst->broker->stopping)
        return false;
    event_report_dropped(inst);
    double wait = event_take(inst);
    if (wait > 0) {
        event_drop(inst, wait);
        return false;
    }
    event_start(inst, j, type);
    return true;
}

void systopic_connected(struct instance *inst, const char *client_id, const char *transport,
                        unsigned protocol_version, const char *peer)
{
    struct json j;

    if (!event_begin(inst, &j, "connected"))
        return;
    json_member_string(&j, "client_id", client_id);
    json_member_string(&j, "transport", transport);
    json_member_string(&j, "protocol",
                       protocol_version == 5   ? "5.0"
                       : protocol_version == 3 ? "3.1"
                                               : "3.1.1");
    if (peer && peer[0])
        json_member_string(&j, "peer", peer);
    event_finish(inst, &j);
}

void systopic_disconnected(struct instance *inst, const char *client_id, const char *reason)
{
    struct json j;

    if (!event_begin(inst, &j, "disconnected"))
        return;
    json_member_string(&j, "client_id", client_id);
    json_member_string(&j, "reason", reason);
    event_finish(inst, &j);
}

void systopic_subscribed(struct instance *inst, const char *client_id, const char *filter,
                         unsigned qos)
{
    struct json j;

    if (!event_begin(inst, &j, "subscribed"))
        return;
    json_member_string(&j, "client_id", client_id);
    json_member_string(&j, "filter", filter);
    json_member_uint(&j, "qos", qos);
    event_finish(inst, &j);
}

void systopic_unsubscribed(struct instance *inst, const char *client_id, const char *filter)
{
    struct json j;

    if (!event_begin(inst, &j, "unsubscribed"))
        return;
    json_member_string(&j, "client_id", client_id);
    json_member_string(&j, "filter", filter);
    event_finish(inst, &j);
}

void systopic_published(struct instance *inst, const char *client_id, const char *topic,
                        size_t size, unsigned qos, bool retain)
{
    struct json j;

    if (!event_begin(inst, &j, "published"))
        return;
    json_member_string(&j, "client_id", client_id);
    json_member_string(&j, "topic", topic);
    json_member_uint(&j, "size", size);
    json_member_uint(&j, "qos", qos);
    json_member_bool(&j, "retain", retain);
    event_finish(inst, &j);
}

void systopic_refused(struct instance *inst, const char *client_id, const char *what,
                      const char *rule, const char *topic, const char *reason)
{
    struct json j;

    if (!event_begin(inst, &j, "refused"))
        return;
    json_member_string(&j, "client_id", client_id);
    json_member_string(&j, "request", what);
    json_member_string(&j, "rule", rule);
    if (topic)
        json_member_string(&j, "topic", topic);
    json_member_string(&j, "reason", reason);
    event_finish(inst, &j);
}

/* ---- $info ------------------------------------------------------------------------- */

/* What the sessions hold, counted in one walk. */
struct info_sessions {
    size_t subscriptions;
    size_t most_subscriptions; /* of one session: max-subscriptions is per connection */
};

static struct info_sessions info_count_sessions(const struct instance *inst)
{
    struct info_sessions n = {0};
    const struct session *s;
    size_t pos = 0;

    while ((s = strmap_next(&inst->sessions, &pos, NULL))) {
        n.subscriptions += s->sub_count;
        if (s->sub_count > n.most_subscriptions)
            n.most_subscriptions = s->sub_count;
    }
    return n;
}

/* How much of limit `name` the instance uses now; false when that is not one figure. */
static bool info_limit_used(const struct instance *inst, const struct info_sessions *n,
                            const char *name, uint64_t *used)
{
    if (strcmp(name, "max-connections") == 0)
        *used = inst->conn_count;
    else if (strcmp(name, "max-sessions") == 0)
        *used = inst->persistent_sessions;
    else if (strcmp(name, "max-retained") == 0)
        *used = topic_tree_retained_count(inst->tree);
    else if (strcmp(name, "max-instance-bytes") == 0)
        *used = inst->account->bytes;
    else if (strcmp(name, "max-subscriptions") == 0)
        *used = n->most_subscriptions;
    else if (strcmp(name, "max-instance-messages-per-second") == 0)
        *used = (uint64_t)(inst->sys.rate_in + 0.5);
    else
        return false;
    return true;
}

/* "limits": every limit in force, {"limit": N} with "used" where the instance has one figure. */
static void info_limits(const struct instance *inst, const struct info_sessions *n, struct json *j)
{
    json_key(j, "limits");
    json_object_begin(j);
    for (size_t i = 0; i < limits_count(); i++) {
        const struct limits_def *def = limits_at(i);
        const char *field = (const char *)&inst->limits + def->offset;
        uint64_t used;
        json_key(j, def->name);
        json_object_begin(j);
        json_member_uint(j, "limit", limits_field_load(field, def->size));
        if (info_limit_used(inst, n, def->name, &used))
            json_member_uint(j, "used", used);
        json_object_end(j);
    }
    json_object_end(j);
}

static void info_rates(const struct instance *inst, struct json *j)
{
    const struct instance_sys *sys = &inst->sys;

    json_key(j, "rates");
    json_object_begin(j);
    json_member_uint(j, "interval", SYSTOPIC_INFO_INTERVAL_SEC);
    json_member_double(j, "messages_in", sys->rate_in);
    json_member_double(j, "messages_out", sys->rate_out);
    json_member_double(j, "bytes_in", sys->rate_bytes_in);
    json_member_double(j, "bytes_out", sys->rate_bytes_out);
    json_object_end(j);
}

/* The summary of `inst` as one JSON object in `j`. */
static void info_build(const struct instance *inst, struct json *j)
{
    struct info_sessions n = info_count_sessions(inst);
    char when[64];

    systopic_now(inst, when, sizeof(when));
    json_init(j);
    json_object_begin(j);
    json_member_string(j, "type", "info");
    json_member_string(j, "time", when);
    json_member_string(j, "instance", inst->name);
    json_member_uint(j, "connections", inst->conn_count);
    json_key(j, "sessions");
    json_object_begin(j);
    json_member_uint(j, "total", inst->sessions.count);
    json_member_uint(j, "persistent", inst->persistent_sessions);
    json_object_end(j);
    json_member_uint(j, "subscriptions", n.subscriptions);
    json_key(j, "retained");
    json_object_begin(j);
    json_member_uint(j, "messages", topic_tree_retained_count(inst->tree));
    json_member_uint(j, "bytes", inst->retained_bytes);
    json_object_end(j);
    json_member_uint(j, "bytes_held", inst->account->bytes);
    info_rates(inst, j);
    info_limits(inst, &n, j);
    json_object_end(j);
}

void systopic_info_send(struct instance *inst, struct session *s, const struct session_sub *sub)
{
    struct json j;

    info_build(inst, &j);
    struct message *m = systopic_message(inst, TOPIC_SYS_INFO, &j, true);
    if (!m)
        return;
    struct delivery d = {.qos = 0,
                         .retain = true,
                         .leading_slash = sub->leading_slash,
                         .sub_ids = &sub->sub_id,
                         .sub_id_count = sub->sub_id ? 1 : 0};
    session_deliver(s, m, &d);
    message_unref(m);
}

/* Per second over `secs`: what counter `now` gained since `then`. */
static double info_rate(uint64_t now, uint64_t then, double secs)
{
    return now >= then ? (double)(now - then) / secs : 0;
}

/* The rates over the interval just ended, and the start of the next. */
static void info_sample(struct instance *inst, uint64_t now_ms)
{
    struct instance_sys *sys = &inst->sys;

    if (sys->sample_ms && now_ms > sys->sample_ms) {
        double secs = (double)(now_ms - sys->sample_ms) / 1000.0;
        sys->rate_in = info_rate(inst->messages_in, sys->sample_in, secs);
        sys->rate_out = info_rate(inst->messages_out, sys->sample_out, secs);
        sys->rate_bytes_in = info_rate(inst->bytes_in, sys->sample_bytes_in, secs);
        sys->rate_bytes_out = info_rate(inst->bytes_out, sys->sample_bytes_out, secs);
    }
    sys->sample_ms = now_ms;
    sys->sample_in = inst->messages_in;
    sys->sample_out = inst->messages_out;
    sys->sample_bytes_in = inst->bytes_in;
    sys->sample_bytes_out = inst->bytes_out;
}

static void info_tick_instance(struct instance *inst, uint64_t now_ms)
{
    struct json j;

    info_sample(inst, now_ms);
    if (!inst->sys.info_watchers || inst->deleting)
        return;
    info_build(inst, &j);
    systopic_publish(inst, TOPIC_SYS_INFO, &j);
}

void systopic_tick(struct broker *b)
{
    uint64_t now_ms = clock_ms();
    struct instance *inst;
    size_t pos = 0;

    if (b->stopping)
        return;
    if (b->local)
        info_tick_instance(b->local, now_ms);
    while ((inst = strmap_next(&b->instances, &pos, NULL)))
        info_tick_instance(inst, now_ms);
}
