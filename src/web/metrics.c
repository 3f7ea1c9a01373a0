/*
 * GET /metrics — the Prometheus text format (version 0.0.4): the process as
 * a whole, then one series per instance under an `instance` label: every
 * instance of the catalog, whether or not a client has used it yet.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "broker/conn.h"
#include "broker/core.h"
#include "broker/instance.h"
#include "broker/sender.h"
#include "broker/topic.h"
#include "net/http.h"
#include "net/link.h"
#include "tenancy/catalog.h"
#include "util/memory.h"
#include "util/strmap.h"
#include "web/handlers.h"

/* The label values of instance_refusal, in its order. */
static const char *const refusal_reason[INSTANCE_REFUSALS] = {"max-instance-bytes", "max-sessions",
                                                              "max-memory", "will"};

static const char *const transport_name[] = {"tcp", "tls", "ws", "wss"};

const char *web_transport_name(unsigned transport)
{
    return transport < 4 ? transport_name[transport] : "unknown";
}

/* One metric's HELP and TYPE lines. */
static void metric_head(struct evbuffer *out, const char *name, const char *type, const char *help)
{
    evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void metric_value(struct evbuffer *out, const char *name, const char *type, const char *help,
                         unsigned long long value)
{
    metric_head(out, name, type, help);
    evbuffer_add_printf(out, "%s %llu\n", name, value);
}

/* What the process adds up over its instances. */
struct metrics_totals {
    unsigned long long messages_in, messages_out, bytes_in, bytes_out, sessions, retained,
        retained_bytes, subscriptions;
    unsigned long long refusals[INSTANCE_REFUSALS], retained_refused;
    unsigned long long queue_drops, expired_drops;
};

static void metrics_sum(struct broker *b, struct metrics_totals *t)
{
    size_t pos = 0;
    const char *name;
    struct instance *inst = b->local;

    for (;;) {
        if (b->cloud && !(inst = strmap_next(&b->instances, &pos, &name)))
            break;
        t->messages_in += inst->messages_in;
        t->messages_out += inst->messages_out;
        t->bytes_in += inst->bytes_in;
        t->bytes_out += inst->bytes_out;
        t->retained_bytes += inst->retained_bytes;
        t->sessions += inst->sessions.count;
        t->retained += topic_tree_retained_count(inst->tree);
        t->subscriptions += topic_tree_sub_count(inst->tree);
        for (int i = 0; i < INSTANCE_REFUSALS; i++)
            t->refusals[i] += inst->refused[i].count;
        t->retained_refused += inst->retained_refused.count;
        t->queue_drops += inst->queue_drops;
        t->expired_drops += inst->expired_drops;
        if (!b->cloud)
            break;
    }
}

/* A node of a cluster: is Redis there, and what crossed it. */
static void metrics_cluster(const struct broker_cluster_stats *st, struct evbuffer *out)
{
    metric_value(out, "aviary_cluster_connected", "gauge",
                 "1 while this node reaches the cluster's Redis, 0 while it serves alone.",
                 st->connected);
    metric_value(out, "aviary_cluster_records_sent_total", "counter",
                 "Messages this node handed to its instances' streams.", st->sent);
    metric_value(out, "aviary_cluster_records_received_total", "counter",
                 "Records this node read from its instances' streams.", st->received);
    metric_value(out, "aviary_cluster_local_only_total", "counter",
                 "Messages routed on this node alone while Redis was out of reach.",
                 st->local_only);
    metric_value(out, "aviary_cluster_bad_records_total", "counter",
                 "Records from Redis that were not well formed, dropped.", st->bad);
    metric_value(out, "aviary_cluster_taken_over_total", "counter",
                 "Connections ended by a login with their client id on another node.",
                 st->taken_over);
    metric_value(out, "aviary_cluster_redis_losses_total", "counter",
                 "Times the connection to Redis was lost.", st->losses);
    metric_value(out, "aviary_cluster_nodes_dead_total", "counter",
                 "Other nodes this node found dead, and took their persistent sessions over.",
                 st->nodes_dead);
    metric_value(out, "aviary_cluster_sessions_adopted_total", "counter",
                 "Persistent sessions of dead nodes taken over by this node.", st->adopted);
    metric_value(out, "aviary_cluster_messages_replayed_total", "counter",
                 "Messages queued for adopted sessions from the stream this node keeps.",
                 st->replayed);
    metric_value(out, "aviary_cluster_publishers_paused_total", "counter",
                 "Times this node stopped reading its publishers: its messages were too far "
                 "ahead of its subscription in Redis.",
                 st->paused);
}

static void metrics_process(struct web *w, struct evbuffer *out)
{
    struct broker *b = w->broker;
    struct metrics_totals t = {0};
    size_t by_transport[4] = {0};
    const struct http_server_stats *hs = http_server_stats(w->http);

    metrics_sum(b, &t);
    for (const struct conn *c = b->conns; c; c = c->next)
        if ((unsigned)c->link.meta.transport < 4)
            by_transport[c->link.meta.transport]++;
    metric_head(out, "aviary_connections", "gauge", "Open MQTT connections by transport.");
    for (size_t i = 0; i < 4; i++)
        evbuffer_add_printf(out, "aviary_connections{transport=\"%s\"} %zu\n", transport_name[i],
                            by_transport[i]);
    metric_value(out, "aviary_http_connections", "gauge", "Open HTTP connections.",
                 hs->connections);
    metric_value(out, "aviary_http_requests_total", "counter", "HTTP requests answered.",
                 hs->requests);
    metric_value(out, "aviary_http_bad_requests_total", "counter",
                 "HTTP requests refused as malformed, oversized or too slow.", hs->bad_requests);
    metric_value(out, "aviary_messages_received_total", "counter",
                 "Messages published to the broker (MQTT, HTTP, wills).", t.messages_in);
    metric_value(out, "aviary_messages_sent_total", "counter",
                 "Deliveries of messages to sessions.", t.messages_out);
    metric_value(out, "aviary_bytes_received_total", "counter",
                 "Payload bytes of the messages published to the broker.", t.bytes_in);
    metric_value(out, "aviary_bytes_sent_total", "counter",
                 "Payload bytes of the deliveries to sessions.", t.bytes_out);
    metric_value(out, "aviary_sessions", "gauge", "Sessions, connected or not.", t.sessions);
    metric_value(out, "aviary_subscriptions", "gauge", "Subscriptions.", t.subscriptions);
    metric_value(out, "aviary_retained_messages", "gauge", "Retained messages.", t.retained);
    metric_value(out, "aviary_retained_bytes", "gauge", "Payload bytes of the retained messages.",
                 t.retained_bytes);
    metric_value(out, "aviary_held_bytes", "gauge",
                 "Bytes held for all instances (messages, queues, subscriptions).",
                 b->held ? b->held->bytes : 0);
    metric_value(out, "aviary_resident_memory_bytes", "gauge", "Resident memory of the process.",
                 memory_resident());
    metric_value(out, "aviary_tls_handshake_failures_total", "counter",
                 "TLS handshakes that failed (tls:// and https://).",
                 link_tls_handshake_failures());
    metric_value(out, "aviary_websocket_handshake_failures_total", "counter",
                 "WebSocket handshakes that failed or were refused (ws:// and wss://).",
                 link_ws_handshake_failures());
    metric_head(out, "aviary_dropped_messages_total", "counter",
                "Messages not delivered to a session, by why.");
    evbuffer_add_printf(out, "aviary_dropped_messages_total{reason=\"queue-full\"} %llu\n",
                        t.queue_drops);
    evbuffer_add_printf(out, "aviary_dropped_messages_total{reason=\"expired\"} %llu\n",
                        t.expired_drops);
    evbuffer_add_printf(out, "aviary_dropped_messages_total{reason=\"output-full\"} %llu\n",
                        (unsigned long long)sender_qos0_drops());
    metric_head(out, "aviary_refusals_total", "counter",
                "Things refused at a limit, by the limit.");
    for (int i = 0; i < INSTANCE_REFUSALS; i++)
        evbuffer_add_printf(out, "aviary_refusals_total{reason=\"%s\"} %llu\n", refusal_reason[i],
                            t.refusals[i]);
    evbuffer_add_printf(out, "aviary_refusals_total{reason=\"max-retained\"} %llu\n",
                        t.retained_refused);
    evbuffer_add_printf(out, "aviary_refusals_total{reason=\"process-max-memory\"} %llu\n",
                        (unsigned long long)b->memory_refusals);
    evbuffer_add_printf(out, "aviary_refusals_total{reason=\"http-connections\"} %llu\n",
                        (unsigned long long)hs->refused_conns);
    if (b->cluster)
        metrics_cluster(&b->cluster_stats, out);
}

/* `name` as a label value: backslash, quote and newline escaped. */
static const char *label_value(const char *name, char *out, size_t size)
{
    size_t n = 0;

    for (const char *p = name; *p && n + 3 < size; p++) {
        if (*p == '\\' || *p == '"' || *p == '\n') {
            out[n++] = '\\';
            out[n++] = *p == '\n' ? 'n' : *p;
        } else {
            out[n++] = *p;
        }
    }
    out[n] = '\0';
    return out;
}

/* The per-instance metrics: name, type, help, and how to read it from an instance. */
struct instance_metric {
    const char *name, *type, *help;
    unsigned long long (*read)(const struct instance *inst);
};

static unsigned long long read_conns(const struct instance *i)
{
    return i->conn_count;
}
static unsigned long long read_sessions(const struct instance *i)
{
    return i->sessions.count;
}
static unsigned long long read_in(const struct instance *i)
{
    return i->messages_in;
}
static unsigned long long read_out(const struct instance *i)
{
    return i->messages_out;
}
static unsigned long long read_bytes_in(const struct instance *i)
{
    return i->bytes_in;
}
static unsigned long long read_bytes_out(const struct instance *i)
{
    return i->bytes_out;
}
static unsigned long long read_retained_bytes(const struct instance *i)
{
    return i->retained_bytes;
}
static unsigned long long read_held(const struct instance *i)
{
    return i->account->bytes;
}
static unsigned long long read_subs(const struct instance *i)
{
    return topic_tree_sub_count(i->tree);
}
static unsigned long long read_retained(const struct instance *i)
{
    return topic_tree_retained_count(i->tree);
}

static const struct instance_metric instance_metrics[] = {
    {"aviary_instance_connections", "gauge", "Open connections of the instance.", read_conns},
    {"aviary_instance_sessions", "gauge", "Sessions of the instance.", read_sessions},
    {"aviary_instance_subscriptions", "gauge", "Subscriptions of the instance.", read_subs},
    {"aviary_instance_retained_messages", "gauge", "Retained messages of the instance.",
     read_retained},
    {"aviary_instance_held_bytes", "gauge", "Bytes held for the instance (max-instance-bytes).",
     read_held},
    {"aviary_instance_messages_received_total", "counter", "Messages published to the instance.",
     read_in},
    {"aviary_instance_messages_sent_total", "counter", "Deliveries within the instance.", read_out},
    {"aviary_instance_bytes_received_total", "counter",
     "Payload bytes of the messages published to the instance.", read_bytes_in},
    {"aviary_instance_bytes_sent_total", "counter",
     "Payload bytes of the deliveries within the instance.", read_bytes_out},
    {"aviary_instance_retained_bytes", "gauge",
     "Payload bytes of the instance's retained messages.", read_retained_bytes},
};

/*
 * One instance of the scrape: every instance in the catalog (cloud) or the
 * local one, with its live state if a client has logged in to it since the
 * start (NULL: all its figures are 0).
 */
struct metrics_row {
    const char *name;
    const struct instance *inst;
};

/* The rows of this scrape (the caller frees them), or NULL when out of memory. */
static struct metrics_row *metrics_rows(struct broker *b, size_t *count)
{
    size_t n = b->cloud ? b->catalog->instances.count : 1, pos = 0, i = 0;
    struct metrics_row *rows = calloc(n ? n : 1, sizeof(*rows));
    const struct catalog_instance *ci;
    const char *name;

    if (!rows)
        return NULL;
    if (!b->cloud) {
        rows[i++] = (struct metrics_row){b->local->name, b->local};
    } else {
        while (i < n && (ci = strmap_next(&b->catalog->instances, &pos, &name)))
            rows[i++] = (struct metrics_row){ci->name, strmap_get(&b->instances, ci->name)};
    }
    *count = i;
    return rows;
}

/* Every instance's series of one metric (Prometheus wants a metric's lines together). */
static void metrics_instances(const struct metrics_row *rows, size_t count, struct evbuffer *out,
                              const struct instance_metric *m)
{
    char label[256];

    metric_head(out, m->name, m->type, m->help);
    for (size_t i = 0; i < count; i++)
        evbuffer_add_printf(out, "%s{instance=\"%s\"} %llu\n", m->name,
                            label_value(rows[i].name, label, sizeof(label)),
                            rows[i].inst ? m->read(rows[i].inst) : 0);
}

static void metrics_quota_hits(const struct metrics_row *rows, size_t count, struct evbuffer *out)
{
    char label[256];

    metric_head(out, "aviary_instance_quota_hits_total", "counter",
                "Things the instance's limits refused, by the limit.");
    for (size_t r = 0; r < count; r++) {
        const struct instance *inst = rows[r].inst;
        label_value(rows[r].name, label, sizeof(label));
        for (int i = 0; i < INSTANCE_REFUSALS; i++)
            evbuffer_add_printf(out,
                                "aviary_instance_quota_hits_total{instance=\"%s\",reason=\"%s\"} "
                                "%llu\n",
                                label, refusal_reason[i],
                                inst ? (unsigned long long)inst->refused[i].count : 0);
        evbuffer_add_printf(out,
                            "aviary_instance_quota_hits_total{instance=\"%s\",reason=\"max-"
                            "retained\"} %llu\n",
                            label, inst ? (unsigned long long)inst->retained_refused.count : 0);
    }
}

void web_metrics(struct web *w, struct http_request *req)
{
    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        http_add_header(req, "Allow", "GET, HEAD");
        web_error(req, 405, "%s is not served here: GET /metrics", req->method);
        return;
    }
    enum web_admin_auth auth;
    if (!(req->listener & HTTP_LISTENER_LOOPBACK) && (auth = web_admin_check(w, req)) != 0) {
        web_admin_refuse(req, auth, "/metrics on a listener beyond loopback");
        return;
    }
    size_t count = 0;
    struct metrics_row *rows = metrics_rows(w->broker, &count);
    struct evbuffer *out = rows ? evbuffer_new() : NULL;
    if (!out) {
        free(rows);
        web_error(req, 503, "out of memory");
        return;
    }
    metrics_process(w, out);
    for (size_t i = 0; i < sizeof(instance_metrics) / sizeof(instance_metrics[0]); i++)
        metrics_instances(rows, count, out, &instance_metrics[i]);
    metrics_quota_hits(rows, count, out);
    http_reply_buffer(req, 200, "text/plain; version=0.0.4; charset=utf-8", out);
    evbuffer_free(out);
    free(rows);
}
