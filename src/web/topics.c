/*
 * /broker/TOPIC — the HTTP interface for clients: publish a request's body,
 * or read the retained messages matching a filter.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/http.h>
#include <sys/queue.h>

#include <event2/keyvalq_struct.h>

#include "broker/core.h"
#include "broker/inject.h"
#include "broker/message.h"
#include "net/http.h"
#include "tenancy/catalog.h"
#include "util/base64.h"
#include "web/handlers.h"

/*
 * A GET answers with at most this many retained messages, and stops adding
 * them once its answer holds this many bytes (then says so in a header).
 */
#define WEB_TOPICS_MAX_READ 1000
#define WEB_TOPICS_MAX_BYTES (4u << 20)

/* 401, with the challenge that makes a browser or curl ask for Basic credentials. */
static void topics_unauthorized(struct http_request *req, const char *message)
{
    http_add_header(req, "WWW-Authenticate", "Basic realm=\"aviary\", charset=\"UTF-8\"");
    web_error(req, 401, "%s", message);
}

/* Log in the request's credentials. Returns 0, or -1 after answering. */
static int topics_login(struct web *w, struct http_request *req, struct instance **inst,
                        const struct catalog_token **token)
{
    char user[CATALOG_NAME_MAX + 1] = "", secret[256], why[256];
    size_t secret_len = 0;
    bool have = web_basic_auth(req, user, sizeof(user), secret, sizeof(secret), &secret_len) == 0;

    if (!have && w->broker->cloud) {
        topics_unauthorized(req, "log in with HTTP Basic: the instance name and a token's secret");
        return -1;
    }
    switch (inject_login(w->broker, user, secret, secret_len, req->over_tls, inst, token, why,
                         sizeof(why))) {
    case INJECT_LOGIN_OK:
        return 0;
    case INJECT_LOGIN_NEEDS_TLS:
        web_error(req, 403, "a key (a token without expiry) needs https");
        return -1;
    case INJECT_LOGIN_EXPIRED:
        topics_unauthorized(req, "the token has expired");
        return -1;
    case INJECT_LOGIN_NO_MEMORY:
        web_error(req, 503, "out of memory");
        return -1;
    case INJECT_LOGIN_BOUND:
        web_error(req, 403, "this token is bound to one MQTT client id; HTTP requests have none");
        return -1;
    default:
        topics_unauthorized(req, "not authorized: wrong instance name or token");
        return -1;
    }
}

/* ?qos=N&retain=true. Returns 0, or -1 after answering. */
static int topics_options(struct http_request *req, int *qos, bool *retain)
{
    struct evkeyvalq q;
    struct evkeyval *kv;
    int rc = 0;

    *qos = 0;
    *retain = false;
    if (evhttp_parse_query_str(req->query, &q) < 0) {
        web_error(req, 400, "malformed query string");
        return -1;
    }
    TAILQ_FOREACH(kv, &q, next)
    {
        if (strcmp(kv->key, "qos") == 0 && kv->value[0] >= '0' && kv->value[0] <= '2' &&
            kv->value[1] == '\0') {
            *qos = kv->value[0] - '0';
        } else if (strcmp(kv->key, "retain") == 0 &&
                   (strcmp(kv->value, "true") == 0 || strcmp(kv->value, "false") == 0)) {
            *retain = strcmp(kv->value, "true") == 0;
        } else {
            web_error(req, 400,
                      "unknown query parameter or value: %s=%s (expected qos=0|1|2, "
                      "retain=true|false)",
                      kv->key, kv->value);
            rc = -1;
            break;
        }
    }
    evhttp_clear_headers(&q);
    return rc;
}

static void topics_publish(struct http_request *req, struct instance *inst,
                           const struct catalog_token *token, const char *topic)
{
    struct inject_result res;
    char retry[32];
    int qos;
    bool retain;

    if (topics_options(req, &qos, &retain) < 0)
        return;
    enum inject_status st =
        inject_publish(inst, token, topic, req->body, req->body_len, (uint8_t)qos, retain, &res);
    switch (st) {
    case INJECT_OK: {
        char body[64];
        int n = snprintf(body, sizeof(body), "{\"delivered\":%zu}\n", res.delivered);
        http_reply(req, 200, "application/json", body, (size_t)n);
        return;
    }
    case INJECT_BAD_TOPIC:
        web_error(req, 400, "invalid topic: %s", res.why);
        return;
    case INJECT_DENIED:
        web_error(req, 403, "%s", res.why);
        return;
    case INJECT_TOO_LARGE:
        web_error(req, 413, "%s", res.why);
        return;
    case INJECT_RATE:
    case INJECT_BUSY:
        snprintf(retry, sizeof(retry), "%.0f", res.retry_after < 1 ? 1 : res.retry_after + 0.5);
        http_add_header(req, "Retry-After", retry);
        web_error(req, st == INJECT_RATE ? 429 : 503, "%s", res.why);
        return;
    case INJECT_OVER_BYTES:
    case INJECT_RETAINED_FULL:
        web_error(req, 507, "%s", res.why);
        return;
    default:
        web_error(req, 503, "out of memory");
        return;
    }
}

struct topics_read {
    struct evbuffer *out;
    size_t count;
    bool truncated;               /* WEB_TOPICS_MAX_BYTES reached: the rest is left out */
    const struct message *single; /* a filter without wildcards: its one message */
};

static void topics_read_one(void *ctx, const struct message *m)
{
    struct topics_read *r = ctx;
    char small[1024];
    size_t need = BASE64_ENCODED_LEN(m->payload_len) + 1;
    char *b64 = need <= sizeof(small) ? small : malloc(need);

    r->single = m;
    if (r->truncated || evbuffer_get_length(r->out) + need > WEB_TOPICS_MAX_BYTES) {
        r->truncated = true;
        if (b64 != small)
            free(b64);
        return;
    }
    if (!b64)
        return;
    base64_encode(m->payload, m->payload_len, b64);
    evbuffer_add_printf(r->out, "%s{\"topic\":", r->count++ ? ",\n" : "\n");
    web_json_string(r->out, m->topic, m->topic_len);
    evbuffer_add_printf(r->out, ",\"qos\":%u,\"size\":%zu,\"payload\":\"%s\"}", m->qos,
                        m->payload_len, b64);
    if (b64 != small)
        free(b64);
}

static void topics_read(struct http_request *req, struct instance *inst,
                        const struct catalog_token *token, const char *filter)
{
    struct topics_read r = {.out = evbuffer_new()};

    if (!r.out) {
        web_error(req, 503, "out of memory");
        return;
    }
    evbuffer_add(r.out, "[", 1);
    long n = inject_retained(inst, token, filter, WEB_TOPICS_MAX_READ, topics_read_one, &r);
    if (n == INJECT_BAD_FILTER) {
        web_error(req, 400, "invalid topic filter");
    } else if (n == INJECT_FILTER_DENIED) {
        web_error(req, 403, "not authorized to read this topic filter");
    } else if (!strpbrk(filter, "+#*")) {
        /* One topic named: its payload as it is. */
        if (r.single)
            http_reply(req, 200, "application/octet-stream", r.single->payload,
                       r.single->payload_len);
        else
            web_error(req, 404, "no retained message on this topic");
    } else {
        evbuffer_add(r.out, r.count ? "\n]\n" : "]\n", r.count ? 3 : 2);
        if (r.truncated) /* more matched than one answer holds: a narrower filter reads them */
            http_add_header(req, "Aviary-Truncated", "true");
        http_reply_buffer(req, 200, "application/json", r.out);
    }
    evbuffer_free(r.out);
}

void web_topics(struct web *w, struct http_request *req, const char *topic)
{
    struct instance *inst;
    const struct catalog_token *token;
    bool post = strcmp(req->method, "POST") == 0 || strcmp(req->method, "PUT") == 0;

    if (!post && strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0) {
        http_add_header(req, "Allow", "GET, HEAD, POST, PUT");
        web_error(req, 405, "%s is not served here: POST publishes, GET reads", req->method);
        return;
    }
    if (topics_login(w, req, &inst, &token) < 0)
        return;
    if (post)
        topics_publish(req, inst, token, topic);
    else
        topics_read(req, inst, token, topic);
}
