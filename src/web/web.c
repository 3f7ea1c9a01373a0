#include "web/web.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "broker/core.h"
#include "net/http.h"
#include "util/base64.h"
#include "util/json.h"
#include "util/log.h"
#include "web/handlers.h"

/* Is `host` (a Host header) this machine's loopback: 127.x.x.x, [::1] or localhost, any port? */
static bool web_loopback_host(const char *host)
{
    size_t n = strcspn(host, host[0] == '[' ? "]" : ":");

    if (host[0] == '[')
        return strncmp(host, "[::1]", 5) == 0 && (host[5] == '\0' || host[5] == ':');
    if (n == 9 && strncasecmp(host, "localhost", 9) == 0)
        return true;
    return strncmp(host, "127.", 4) == 0 && strspn(host, "0123456789.") == n;
}

/*
 * A request a browser sent for another site's page: its Origin is not this
 * server's own. Pages of other sites may not publish or read here (and on
 * loopback a page of any site could reach the desktop broker otherwise).
 */
static bool web_cross_site(const struct http_request *req)
{
    const char *origin = http_header(req, "Origin"), *host = http_header(req, "Host");
    const char *scheme = req->over_tls ? "https://" : "http://";

    if (!origin)
        return false;
    return !host || strncmp(origin, scheme, strlen(scheme)) != 0 ||
           strcasecmp(origin + strlen(scheme), host) != 0;
}

/* Requests no endpoint serves, whatever their path. Returns true after answering. */
static bool web_refused(struct http_request *req)
{
    const char *host = http_header(req, "Host");

    /* A page whose name was made to point at 127.0.0.1 (DNS rebinding) says its own name. */
    if ((req->listener & HTTP_LISTENER_LOOPBACK) && host && !web_loopback_host(host)) {
        web_error(req, 403, "this listener answers only to 127.0.0.1, [::1] and localhost");
        return true;
    }
    if (web_cross_site(req)) {
        web_error(req, 403, "requests from another site's pages are refused");
        return true;
    }
    return false;
}

static void web_handle(void *ctx, struct http_request *req)
{
    struct web *w = ctx;
    static const char topics[] = "/broker/";
    static const char view[] = "/view/";

    if (web_refused(req))
        return;
    if (strcmp(req->path, "/") == 0 || strcmp(req->path, "/index.html") == 0) {
        web_view(w, req, NULL);
    } else if (strncmp(req->path, view, sizeof(view) - 1) == 0) {
        web_view(w, req, req->path + sizeof(view) - 1);
    } else if (strcmp(req->path, "/metrics") == 0) {
        web_metrics(w, req);
    } else if (strncmp(req->path, topics, sizeof(topics) - 1) == 0) {
        web_topics(w, req, req->path + sizeof(topics) - 1);
    } else if (strcmp(req->path, "/admin") == 0 || strncmp(req->path, "/admin/", 7) == 0) {
        web_admin(w, req);
    } else if (strcmp(req->path, "/broker") == 0) {
        web_error(req, 404, "name a topic: /broker/TOPIC");
    } else {
        web_error(req, 404, "no such resource: %s", req->path);
    }
}

struct web *web_new(struct broker *b)
{
    struct web *w = calloc(1, sizeof(*w));

    if (!w)
        return NULL;
    w->broker = b;
    w->http = http_server_new(b->base, web_handle, w, WEB_MAX_CONNECTIONS, WEB_MAX_BODY);
    if (!w->http) {
        free(w);
        return NULL;
    }
    return w;
}

void web_free(struct web *w)
{
    if (!w)
        return;
    http_server_free(w->http); /* aborts what waits; jobs still running are the program's */
    web_admin_free(w);
    free(w);
}

void web_stop(struct web *w)
{
    http_server_drain(w->http);
}

void web_set_admin_check(struct web *w, web_admin_fn fn, void *ctx)
{
    w->admin_ok = fn;
    w->admin_ctx = ctx;
}

void web_set_jobs(struct web *w, struct jobs *jobs)
{
    w->jobs = jobs;
}

void web_looked(struct web *w, uint64_t n)
{
    web_admin_looked(w, n);
}

struct http_server *web_http(struct web *w)
{
    return w->http;
}

void web_json_string(struct evbuffer *out, const char *s, size_t len)
{
    struct json j;
    size_t n;

    json_init(&j);
    json_string_n(&j, s, len);
    char *text = json_take(&j, &n);
    if (text)
        evbuffer_add(out, text, n);
    else
        evbuffer_add(out, "null", 4);
    free(text);
}

void web_error(struct http_request *req, int status, const char *fmt, ...)
{
    char message[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    if (log_enabled(LOG_LEVEL_INFO)) {
        /* The path and what was made of it are the client's words: no forged lines. */
        char path[160], said[600];
        log_info("http %s: %s %s: %d %s", req->peer, req->method,
                 log_escape_str(req->path, path, sizeof(path)), status,
                 log_escape_str(message, said, sizeof(said)));
    }
    struct evbuffer *body = evbuffer_new();
    if (!body) {
        http_reply(req, 503, NULL, NULL, 0);
        return;
    }
    evbuffer_add(body, "{\"error\":", 9);
    web_json_string(body, message, strlen(message));
    evbuffer_add(body, "}\n", 2);
    http_reply_buffer(req, status, "application/json", body);
    evbuffer_free(body);
}

int web_basic_auth(const struct http_request *req, char *user, size_t user_size, char *secret,
                   size_t secret_size, size_t *secret_len)
{
    const char *auth = http_header(req, "Authorization");
    unsigned char decoded[512];

    if (!auth || strncasecmp(auth, "Basic ", 6) != 0)
        return -1;
    const char *b64 = auth + 6 + strspn(auth + 6, " ");
    if (strlen(b64) / 4 * 3 > sizeof(decoded) - 1)
        return -1;
    long n = base64_decode(b64, decoded);
    if (n < 0)
        return -1;
    unsigned char *colon = memchr(decoded, ':', (size_t)n);
    if (!colon)
        return -1;
    size_t ulen = (size_t)(colon - decoded), slen = (size_t)n - ulen - 1;
    /*
     * A user-id INSTANCE:SECRET with an empty password (the MQTT login's
     * token-in-the-user-name form) arrives as INSTANCE:SECRET:. A secret
     * holds no ':', so a last one with no other after the first is the
     * empty password's.
     */
    if (slen > 0 && colon[slen] == ':' && !memchr(colon + 1, ':', slen - 1))
        slen--;
    if (ulen >= user_size || slen > secret_size || memchr(decoded, '\0', ulen))
        return -1;
    memcpy(user, decoded, ulen);
    user[ulen] = '\0';
    memcpy(secret, colon + 1, slen);
    *secret_len = slen;
    return 0;
}

enum web_admin_auth web_admin_check(const struct web *w, const struct http_request *req)
{
    const char *auth = http_header(req, "Authorization");

    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
        return WEB_ADMIN_MISSING;
    /* Refused before it is looked at: a key must not be tried over a clear channel. */
    if (!req->over_tls && !(req->listener & HTTP_LISTENER_LOOPBACK) &&
        !w->broker->allow_keys_without_tls)
        return WEB_ADMIN_NEEDS_TLS;
    if (!w->admin_ok || !w->admin_ok(w->admin_ctx, auth + 7 + strspn(auth + 7, " ")))
        return WEB_ADMIN_WRONG;
    return WEB_ADMIN_OK;
}

void web_admin_refuse(struct http_request *req, enum web_admin_auth auth, const char *what)
{
    if (auth == WEB_ADMIN_NEEDS_TLS) {
        web_error(req, 403,
                  "%s: an admin key crosses only https, or http on a loopback listener "
                  "(or with allow-keys-without-tls)",
                  what);
        return;
    }
    http_add_header(req, "WWW-Authenticate", "Bearer realm=\"aviary\"");
    web_error(req, 401, "%s needs an admin key (Authorization: Bearer KEY)%s", what,
              auth == WEB_ADMIN_WRONG ? ": the key given is not one" : "");
}
