/*
 * The live web view: the page at /, and what it reads.
 *
 *   GET /                 the page (src/web/view.html, compiled in)
 *   GET /view/snapshot    an instance now: counters, clients, retained topics
 *   GET /view/stream      its live tail, as Server-Sent Events
 *   GET /view/instances   the instance names (admin key only)
 *
 * The page logs in with an instance name and a token (HTTP Basic) or with
 * the admin key (Bearer, naming the instance with ?instance=NAME); desktop
 * mode needs neither. A token sees what it may read and nothing else.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "broker/conn.h"
#include "broker/core.h"
#include "broker/inject.h"
#include "broker/instance.h"
#include "broker/login.h"
#include "broker/message.h"
#include "broker/session.h"
#include "broker/tap.h"
#include "broker/topic.h"
#include "codec/codec.h"
#include "net/http.h"
#include "tenancy/access.h"
#include "tenancy/catalog.h"
#include "util/base64.h"
#include "util/clock.h"
#include "web/handlers.h"

/* static const char view_page[]: src/web/view.html, made by make. */
#include "web/view_page.inc"

/* Clients and retained topics in one snapshot, at most. */
#define VIEW_MAX_ITEMS 500
/* Payload bytes a snapshot or the tail shows of a message. */
#define VIEW_PREVIEW 96
/* Messages one stream shows per second; the others are only counted. */
#define VIEW_TAIL_PER_SEC 50
/*
 * A stream whose reader lags this far behind skips messages until it
 * catches up, and ends when it has not for VIEW_STALL_SEC seconds.
 */
#define VIEW_MAX_PENDING (256 * 1024)
#define VIEW_STALL_SEC 30

static const char *const view_transport[] = {"tcp", "tls", "ws", "wss"};

/* Who is looking at which instance. */
struct view_access {
    struct instance *inst;
    const struct catalog_token *token; /* borrowed; NULL: sees everything (desktop, admin) */
};

/* The value of query parameter `key` of `req` into `out`, or "" when absent. */
static void view_query(const struct http_request *req, const char *key, char *out, size_t size)
{
    struct evkeyvalq q;

    out[0] = '\0';
    if (evhttp_parse_query_str(req->query, &q) < 0)
        return;
    const char *v = evhttp_find_header(&q, key);
    if (v)
        snprintf(out, size, "%s", v);
    evhttp_clear_headers(&q);
}

/* Log in the request. Returns 0, or -1 after answering. */
static int view_login(struct web *w, struct http_request *req, struct view_access *a)
{
    struct broker *b = w->broker;
    char user[CATALOG_NAME_MAX + 1], secret[256], why[256];
    size_t secret_len;

    a->token = NULL;
    if (!b->cloud) {
        a->inst = b->local;
        return 0;
    }
    if (web_admin_check(w, req) == WEB_ADMIN_OK) {
        view_query(req, "instance", user, sizeof(user));
        if (!catalog_instance(b->catalog, user) || !(a->inst = login_instance(b, user))) {
            web_error(req, 404, "no instance named '%s'", user);
            return -1;
        }
        return 0;
    }
    if (web_basic_auth(req, user, sizeof(user), secret, sizeof(secret), &secret_len) < 0 ||
        inject_login(b, user, secret, secret_len, req->over_tls, &a->inst, &a->token, why,
                     sizeof(why)) != INJECT_LOGIN_OK) {
        web_error(req, 401, "log in with an instance name and one of its tokens, or an admin key");
        return -1;
    }
    return 0;
}

/* The first VIEW_PREVIEW bytes of a payload: as text when they are UTF-8, else base64. */
static void view_payload(struct evbuffer *out, const uint8_t *payload, size_t len)
{
    size_t n = len < VIEW_PREVIEW ? len : VIEW_PREVIEW;
    char b64[BASE64_ENCODED_LEN(VIEW_PREVIEW) + 1];

    /* A cut may split a character: show what is whole. */
    while (n > 0 && n < len && (payload[n] & 0xc0) == 0x80)
        n--;
    if (codec_check_utf8(payload, n) == CODEC_OK) {
        evbuffer_add(out, "\"text\":", 7);
        web_json_string(out, (const char *)payload, n);
    } else {
        n = len < VIEW_PREVIEW ? len : VIEW_PREVIEW;
        base64_encode(payload, n, b64);
        evbuffer_add_printf(out, "\"base64\":\"%s\"", b64);
    }
}

static void view_message(struct evbuffer *out, const struct message *m)
{
    evbuffer_add(out, "{\"topic\":", 9);
    web_json_string(out, m->topic, m->topic_len);
    evbuffer_add_printf(out, ",\"size\":%zu,\"qos\":%u,\"retain\":%s,", m->payload_len, m->qos,
                        m->retain ? "true" : "false");
    view_payload(out, m->payload, m->payload_len);
    evbuffer_add(out, "}", 1);
}

static void view_client(struct evbuffer *out, const struct session *s)
{
    const struct conn *c = session_online(s) ? s->conn : NULL;

    evbuffer_add(out, "{\"id\":", 6);
    web_json_string(out, s->client_id, strlen(s->client_id));
    evbuffer_add_printf(out, ",\"online\":%s", c ? "true" : "false");
    if (c) {
        evbuffer_add_printf(out, ",\"transport\":\"%s\",\"version\":%u,\"peer\":",
                            view_transport[c->link.meta.transport & 3], c->out.version);
        struct link_peer_name peer = link_peer_name(&c->link.meta.peer);
        web_json_string(out, peer.s, strlen(peer.s));
    }
    evbuffer_add(out, ",\"subscriptions\":[", 18);
    for (size_t i = 0; i < s->sub_count; i++) {
        evbuffer_add(out, i ? ",{\"filter\":" : "{\"filter\":", i ? 11 : 10);
        web_json_string(out, s->subs[i].filter, strlen(s->subs[i].filter));
        evbuffer_add_printf(out, ",\"qos\":%u}", s->subs[i].options & 3);
    }
    evbuffer_add(out, "]}", 2);
}

struct view_topics {
    struct evbuffer *out;
    const struct catalog_token *token;
    uint64_t now; /* clock_ms(): expired messages are not shown */
    size_t count;
    bool truncated;
};

static void view_one_topic(void *ctx, const char *topic, void *msg)
{
    struct view_topics *t = ctx;

    if (!access_may_read(t->token, topic) || message_expired(msg, t->now))
        return;
    if (t->count == VIEW_MAX_ITEMS) {
        t->truncated = true;
        return;
    }
    if (t->count++)
        evbuffer_add(t->out, ",", 1);
    view_message(t->out, msg);
}

static void view_snapshot(struct http_request *req, const struct view_access *a)
{
    struct instance *inst = a->inst;
    struct evbuffer *out = evbuffer_new();
    size_t pos = 0, clients = 0;
    const char *id;
    struct session *s;

    if (!out) {
        web_error(req, 503, "out of memory");
        return;
    }
    evbuffer_add(out, "{\"instance\":", 12);
    web_json_string(out, inst->name, strlen(inst->name));
    evbuffer_add_printf(out,
                        ",\"messages_in\":%llu,\"messages_out\":%llu,\"connections\":%zu,"
                        "\"sessions\":%zu,\"subscriptions\":%zu,\"retained\":%zu,\"clients\":[",
                        (unsigned long long)inst->messages_in,
                        (unsigned long long)inst->messages_out, inst->conn_count,
                        inst->sessions.count, topic_tree_sub_count(inst->tree),
                        topic_tree_retained_count(inst->tree));
    /* Who else is connected, from where, to what: for those who may read everything. */
    bool all = !a->token || (a->token->sub.count == 0 && a->token->deny_sub.count == 0);
    while (all && clients < VIEW_MAX_ITEMS && (s = strmap_next(&inst->sessions, &pos, &id))) {
        if (clients++)
            evbuffer_add(out, ",", 1);
        view_client(out, s);
    }
    struct view_topics t = {.out = out, .token = a->token, .now = clock_ms()};
    evbuffer_add(out, "],\"topics\":[", 12);
    topic_tree_retained_match(inst->tree, "#", view_one_topic, &t);
    evbuffer_add_printf(out, "],\"clients_shown\":%s,\"truncated\":%s}\n", all ? "true" : "false",
                        t.truncated || (all && clients < inst->sessions.count) ? "true" : "false");
    http_add_header(req, "Cache-Control", "no-store");
    http_reply_buffer(req, 200, "application/json", out);
    evbuffer_free(out);
}

/* ---- the live tail ------------------------------------------------------ */

struct view_stream {
    struct broker *broker;
    struct http_request *req;
    struct instance *inst;
    struct catalog_token *token; /* a reference; NULL: sees everything */
    struct tap tap;
    struct event *tick;
    unsigned shown;   /* messages shown in this second */
    unsigned stalled; /* seconds in a row the reader lagged past VIEW_MAX_PENDING */
    uint64_t dropped; /* messages not shown: over the rate, or the reader lagging */
};

static void view_stream_free(struct view_stream *v)
{
    tap_detach(&v->inst->taps, &v->tap);
    if (v->tick)
        event_free(v->tick);
    catalog_token_unref(v->token);
    free(v);
}

static void view_stream_abort(void *arg)
{
    view_stream_free(arg);
}

static void view_stream_gone(void *ctx)
{
    struct view_stream *v = ctx;

    http_stream_end(v->req);
    v->tap.next = NULL;
    event_free(v->tick);
    catalog_token_unref(v->token);
    free(v);
}

static void view_stream_message(void *ctx, const struct message *m)
{
    struct view_stream *v = ctx;

    /* $info is the snapshot's business; $events are the instance's events. */
    if (strcmp(m->topic, "$info") == 0 || (v->token && !access_may_read(v->token, m->topic)))
        return;
    if (v->shown >= VIEW_TAIL_PER_SEC || http_stream_pending(v->req) > VIEW_MAX_PENDING) {
        v->dropped++;
        return;
    }
    v->shown++;
    struct evbuffer *line = evbuffer_new();
    if (!line)
        return;
    if (strcmp(m->topic, "$events") == 0) { /* the event itself, as JSON */
        evbuffer_add(line, "event: event\ndata: ", 19);
        evbuffer_add(line, m->payload, m->payload_len);
    } else {
        evbuffer_add(line, "event: message\ndata: ", 21);
        view_message(line, m);
    }
    evbuffer_add(line, "\n\n", 2);
    size_t len = evbuffer_get_length(line);
    http_stream_write(v->req, evbuffer_pullup(line, -1), len);
    evbuffer_free(line);
}

/* Every second: the counters for the chart, and whether the token still holds. */
static void view_stream_tick(evutil_socket_t fd, short what, void *arg)
{
    struct view_stream *v = arg;
    char line[256];

    if (v->token && !core_token_live(v->broker, v->token)) {
        http_stream_end(v->req);
        view_stream_free(v);
        return;
    }
    /* A reader that lags this far for this long has gone in all but name. */
    if (http_stream_pending(v->req) > VIEW_MAX_PENDING) {
        if (++v->stalled >= VIEW_STALL_SEC) {
            http_stream_end(v->req);
            view_stream_free(v);
        }
        return;
    }
    v->stalled = 0;
    int n = snprintf(line, sizeof(line),
                     "event: stats\ndata: {\"messages_in\":%llu,\"messages_out\":%llu,"
                     "\"connections\":%zu,\"dropped\":%llu}\n\n",
                     (unsigned long long)v->inst->messages_in,
                     (unsigned long long)v->inst->messages_out, v->inst->conn_count,
                     (unsigned long long)v->dropped);
    http_stream_write(v->req, line, (size_t)n);
    v->shown = 0;
}

static void view_stream(struct web *w, struct http_request *req, const struct view_access *a)
{
    struct view_stream *v = calloc(1, sizeof(*v));
    struct timeval second = {1, 0};

    if (v)
        v->tick = event_new(w->broker->base, -1, EV_PERSIST, view_stream_tick, v);
    if (!v || !v->tick) {
        free(v);
        web_error(req, 503, "out of memory");
        return;
    }
    v->broker = w->broker;
    v->req = req;
    v->inst = a->inst;
    v->token = a->token ? catalog_token_ref((struct catalog_token *)a->token) : NULL;
    v->tap = (struct tap){.message = view_stream_message, .gone = view_stream_gone, .ctx = v};
    req->abort = view_stream_abort;
    req->abort_arg = v;
    http_stream_begin(req, "text/event-stream");
    http_stream_write(req, "retry: 2000\n\n", 13);
    tap_attach(&a->inst->taps, &v->tap);
    event_add(v->tick, &second);
    view_stream_tick(-1, 0, v);
}

/* ---- routes ------------------------------------------------------------- */

static void view_instances(struct web *w, struct http_request *req)
{
    struct broker *b = w->broker;
    struct evbuffer *out;
    size_t pos = 0, n = 0;
    const char *name;

    if (web_admin_check(w, req) != WEB_ADMIN_OK) {
        web_error(req, 401, "the list of instances needs an admin key");
        return;
    }
    if (!(out = evbuffer_new())) {
        web_error(req, 503, "out of memory");
        return;
    }
    evbuffer_add(out, "[", 1);
    if (!b->cloud)
        web_json_string(out, b->local->name, strlen(b->local->name));
    while (b->cloud && strmap_next(&b->catalog->instances, &pos, &name)) {
        if (n++)
            evbuffer_add(out, ",", 1);
        web_json_string(out, name, strlen(name));
    }
    evbuffer_add(out, "]\n", 2);
    http_reply_buffer(req, 200, "application/json", out);
    evbuffer_free(out);
}

void web_view(struct web *w, struct http_request *req, const char *what)
{
    struct view_access a;

    if (strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        http_add_header(req, "Allow", "GET, HEAD");
        web_error(req, 405, "%s is not served here", req->method);
        return;
    }
    if (what == NULL) {
        http_add_header(req, "Cache-Control", "no-store");
        http_add_header(req, "Content-Security-Policy",
                        "default-src 'self'; style-src 'unsafe-inline'; "
                        "script-src 'unsafe-inline'");
        http_reply(req, 200, "text/html; charset=utf-8", view_page, sizeof(view_page) - 1);
        return;
    }
    if (strcmp(what, "instances") == 0) {
        view_instances(w, req);
        return;
    }
    bool snapshot = strcmp(what, "snapshot") == 0;
    if (!snapshot && strcmp(what, "stream") != 0) {
        web_error(req, 404, "no such resource: %s", req->path);
        return;
    }
    if (view_login(w, req, &a) < 0)
        return;
    if (snapshot)
        view_snapshot(req, &a);
    else if (strcmp(req->method, "HEAD") == 0) /* the headers of a stream, without one */
        http_reply(req, 200, "text/event-stream", NULL, 0);
    else
        view_stream(w, req, &a);
}
