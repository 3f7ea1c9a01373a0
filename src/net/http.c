#include "net/http.h"

#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>

#include "net/link.h"
#include "util/log.h"

/* Seconds an answer that ends the connection has to go out, then for the peer to close. */
#define HTTP_LINGER_SEC 5
#define HTTP_DRAIN_SEC 2

/*
 * Answers waiting to go out on one connection past which its next requests
 * wait unread (a client that pipelines without reading), until half is gone.
 */
#define HTTP_MAX_OUTPUT (256 * 1024)

/* Answers of all connections waiting to go out past which new requests get 503. */
#define HTTP_MAX_SERVER_OUTPUT (64u << 20)

/* Connections turned away with a 503 that may be closing at once; past it they are dropped. */
#define HTTP_MAX_REFUSING 32

enum http_conn_state {
    HTTP_WAITING,   /* for a request's first byte */
    HTTP_READING,   /* a request, up to its last byte */
    HTTP_HANDLING,  /* the handler holds the request */
    HTTP_STREAMING, /* a long answer is being written */
    HTTP_CLOSING,   /* the link is closing */
    HTTP_DONE,      /* the link is done: free at the next turn */
};

struct http_conn {
    struct link link;
    struct http_server *server;
    struct http_conn *prev, *next; /* the server's list */
    struct event *timer;           /* the request or idle deadline */
    struct event *wake;            /* deferred work: free, or read after a late answer */
    enum http_conn_state state;
    bool counted;     /* in the server's connections (not one turned away) */
    bool keep_alive;  /* the current request lets the connection stay open */
    bool in_read;     /* inside http_conn_read(): answers need no wake */
    bool output_wait; /* over HTTP_MAX_OUTPUT: reading waits for the client to read */
    unsigned flags;   /* the listener's HTTP_LISTENER_* */
    size_t body_wanted;
    char *head;                  /* the current request's line and headers (owned) */
    unsigned char *body;         /* its body (owned) */
    struct evbuffer *extra;      /* headers the handler added to the answer */
    struct http_request request; /* points into head and body */
};

struct http_server {
    struct event_base *base;
    http_handler_fn handler;
    void *ctx;
    size_t max_connections, max_body;
    size_t refusing; /* connections turned away that are still closing */
    bool draining;   /* http_server_drain(): connections end after their answer */
    struct http_conn *conns;
    struct http_server_stats stats;
    struct log_every refused_log;
};

static const struct link_events http_link_events;

static void http_conn_read(struct http_conn *c);

const char *http_status_text(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 204:
        return "No Content";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 415:
        return "Unsupported Media Type";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 507:
        return "Insufficient Storage";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return status < 300 ? "OK" : status < 500 ? "Bad Request" : "Server Error";
    }
}

/* ---- the connection's life ---------------------------------------------- */

static void http_conn_free(struct http_conn *c)
{
    struct http_server *s = c->server;

    if (c->counted)
        s->stats.connections--;
    else
        s->refusing--;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    link_release(&c->link);
    event_free(c->timer);
    event_free(c->wake);
    if (c->extra)
        evbuffer_free(c->extra);
    free(c->head);
    free(c->body);
    free(c);
}

/* Forget the current request (after its answer, or when the connection goes). */
static void http_conn_forget_request(struct http_conn *c)
{
    free(c->head);
    free(c->body);
    c->head = NULL;
    c->body = NULL;
    c->body_wanted = 0;
    if (c->extra)
        evbuffer_drain(c->extra, evbuffer_get_length(c->extra));
    c->request = (struct http_request){0};
}

/* End the connection: an answer queued goes out first (unless `abandon`). */
static void http_conn_close(struct http_conn *c, bool abandon)
{
    if (c->state == HTTP_CLOSING || c->state == HTTP_DONE)
        return;
    bool held = c->state == HTTP_HANDLING || c->state == HTTP_STREAMING;
    c->state = HTTP_CLOSING;
    evtimer_del(c->timer);
    if (held && c->request.abort)
        c->request.abort(c->request.abort_arg);
    http_conn_forget_request(c);
    link_close(&c->link, abandon, HTTP_LINGER_SEC, HTTP_DRAIN_SEC);
}

static void http_conn_wake_cb(evutil_socket_t fd, short what, void *arg)
{
    struct http_conn *c = arg;

    if (c->state == HTTP_DONE)
        http_conn_free(c);
    else if (c->state == HTTP_WAITING)
        http_conn_read(c);
}

static void http_conn_arm(struct http_conn *c, unsigned seconds)
{
    struct timeval tv = {(time_t)seconds, 0};
    evtimer_add(c->timer, &tv);
}

/* ---- answers ------------------------------------------------------------ */

static void http_write_head(struct http_conn *c, int status, const char *type, bool length,
                            size_t len)
{
    struct evbuffer *out = bufferevent_get_output(c->link.bev);

    if (c->server->draining)
        c->keep_alive = false;
    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\n", status, http_status_text(status));
    if (type)
        evbuffer_add_printf(out, "Content-Type: %s\r\n", type);
    if (length)
        evbuffer_add_printf(out, "Content-Length: %zu\r\n", len);
    evbuffer_add_printf(out, "Connection: %s\r\n", c->keep_alive ? "keep-alive" : "close");
    if (c->extra)
        evbuffer_add_buffer(out, c->extra);
    evbuffer_add(out, "\r\n", 2);
}

/* The answer is queued: read the next request, or close. */
static void http_conn_answered(struct http_conn *c)
{
    c->server->stats.requests++;
    http_conn_forget_request(c);
    if (!c->keep_alive) {
        http_conn_close(c, false);
        return;
    }
    c->state = HTTP_WAITING;
    http_conn_arm(c, HTTP_IDLE_SEC);
    if (link_output_pending(&c->link) > HTTP_MAX_OUTPUT) {
        c->output_wait = true; /* reading stays paused; `written` takes it up again */
        link_watch_output(&c->link, HTTP_MAX_OUTPUT / 2);
        return;
    }
    link_resume_reading(&c->link);
    if (!c->in_read && evbuffer_get_length(link_input(&c->link)) > 0)
        event_active(c->wake, EV_TIMEOUT, 0);
}

static struct http_conn *http_request_conn(struct http_request *req)
{
    return (struct http_conn *)((char *)req - offsetof(struct http_conn, request));
}

void http_add_header(struct http_request *req, const char *name, const char *value)
{
    struct http_conn *c = http_request_conn(req);

    if (!c->extra)
        c->extra = evbuffer_new();
    if (c->extra)
        evbuffer_add_printf(c->extra, "%s: %s\r\n", name, value);
}

void http_reply(struct http_request *req, int status, const char *type, const void *body,
                size_t len)
{
    struct http_conn *c = http_request_conn(req);

    if (c->state != HTTP_HANDLING)
        return;
    http_write_head(c, status, type, true, len);
    if (len && strcmp(req->method, "HEAD") != 0)
        evbuffer_add(bufferevent_get_output(c->link.bev), body, len);
    http_conn_answered(c);
}

void http_reply_buffer(struct http_request *req, int status, const char *type,
                       struct evbuffer *body)
{
    struct http_conn *c = http_request_conn(req);
    size_t len = evbuffer_get_length(body);

    if (c->state != HTTP_HANDLING)
        return;
    http_write_head(c, status, type, true, len);
    if (strcmp(req->method, "HEAD") != 0)
        evbuffer_add_buffer(bufferevent_get_output(c->link.bev), body);
    http_conn_answered(c);
}

void http_stream_begin(struct http_request *req, const char *type)
{
    struct http_conn *c = http_request_conn(req);

    if (c->state != HTTP_HANDLING)
        return;
    c->keep_alive = false; /* the body ends when the connection does */
    http_add_header(req, "Cache-Control", "no-store");
    http_write_head(c, 200, type, false, 0);
    c->state = HTTP_STREAMING;
}

size_t http_stream_write(struct http_request *req, const void *data, size_t len)
{
    struct http_conn *c = http_request_conn(req);

    if (c->state != HTTP_STREAMING)
        return 0;
    link_write(&c->link, data, len);
    return link_output_pending(&c->link);
}

size_t http_stream_pending(struct http_request *req)
{
    struct http_conn *c = http_request_conn(req);

    return c->state == HTTP_STREAMING ? link_output_pending(&c->link) : 0;
}

void http_stream_end(struct http_request *req)
{
    struct http_conn *c = http_request_conn(req);

    if (c->state != HTTP_STREAMING)
        return;
    c->request.abort = NULL;
    c->server->stats.requests++;
    http_conn_close(c, false);
}

/* Refuse the request being read: a short text answer, a log line, and the end. */
static void http_refuse(struct http_conn *c, int status, const char *why)
{
    struct evbuffer *out = bufferevent_get_output(c->link.bev);

    c->server->stats.bad_requests++;
    log_notice("http %s: %d %s: %s", link_peer_name(&c->link.meta.peer).s, status,
               http_status_text(status), why);
    c->keep_alive = false;
    if (c->extra)
        evbuffer_drain(c->extra, evbuffer_get_length(c->extra));
    http_write_head(c, status, "text/plain; charset=utf-8", true, strlen(why) + 1);
    evbuffer_add_printf(out, "%s\n", why);
    http_conn_close(c, false);
}

/* ---- reading a request -------------------------------------------------- */

static bool http_token_char(unsigned char ch)
{
    return isalnum(ch) || strchr("!#$%&'*+-.^_`|~", ch) != NULL;
}

/* Does the comma-separated header value `list` hold `token` (any case)? */
static bool http_list_has(const char *list, const char *token)
{
    size_t n = strlen(token);

    for (const char *p = list; p && *p;) {
        p += strspn(p, " \t,");
        if (strncasecmp(p, token, n) == 0 && strchr(" \t,", p[n]) != NULL)
            return true;
        p = strchr(p, ',');
    }
    return false;
}

/* Split the request line in `line` (NUL-terminated). Returns 0, or the status to refuse with. */
static int http_parse_line(struct http_conn *c, char *line, const char **why)
{
    struct http_request *r = &c->request;
    char *target, *version, *query;
    size_t len;

    target = strchr(line, ' ');
    version = target ? strchr(target + 1, ' ') : NULL;
    if (!version || target == line || strchr(version + 1, ' ')) {
        *why = "malformed request line";
        return 400;
    }
    *target++ = '\0';
    *version++ = '\0';
    for (const char *m = line; *m; m++)
        if (!isupper((unsigned char)*m) || m - line > 10) {
            *why = "malformed method";
            return 400;
        }
    if (strcmp(version, "HTTP/1.1") != 0 && strcmp(version, "HTTP/1.0") != 0) {
        *why = strncmp(version, "HTTP/", 5) == 0 ? "only HTTP/1.0 and HTTP/1.1 are served"
                                                 : "malformed request line";
        return strncmp(version, "HTTP/", 5) == 0 ? 505 : 400;
    }
    c->keep_alive = strcmp(version, "HTTP/1.1") == 0;
    if (*target != '/') {
        *why = "the target must be a path";
        return 400;
    }
    query = strchr(target, '?');
    if (query)
        *query++ = '\0';
    r->method = line;
    r->query = query ? query : "";
    /* Decoded in place: it only gets shorter. */
    char *path = evhttp_uridecode(target, 0, &len);
    if (!path || strlen(path) != len) {
        free(path);
        *why = "the path decodes to a NUL byte";
        return 400;
    }
    memcpy(target, path, len + 1);
    free(path);
    r->path = target;
    return 0;
}

/* Split the header lines that follow the request line. Returns 0 or a status. */
static int http_parse_headers(struct http_conn *c, char *p, const char **why)
{
    struct http_request *r = &c->request;

    while (*p) {
        char *end = strstr(p, "\r\n");
        char *next = end ? end + 2 : p + strlen(p);
        if (end)
            *end = '\0';
        char *colon = strchr(p, ':');
        if (!colon || colon == p) {
            *why = "malformed header line";
            return 400;
        }
        for (char *n = p; n < colon; n++)
            if (!http_token_char((unsigned char)*n)) {
                *why = "malformed header name";
                return 400;
            }
        if (r->header_count == HTTP_MAX_HEADERS) {
            *why = "too many header lines";
            return 431;
        }
        *colon = '\0';
        char *value = colon + 1 + strspn(colon + 1, " \t");
        for (char *t = value + strlen(value); t > value && (t[-1] == ' ' || t[-1] == '\t');)
            *--t = '\0';
        r->headers[r->header_count++] = (struct http_header){p, value};
        p = next;
    }
    return 0;
}

/* What the headers say of the body and the connection. Returns 0 or a status. */
static int http_read_framing(struct http_conn *c, const char **why)
{
    struct http_request *r = &c->request;
    const char *length = NULL;

    for (size_t i = 0; i < r->header_count; i++) {
        const struct http_header *h = &r->headers[i];
        if (strcasecmp(h->name, "Transfer-Encoding") == 0) {
            *why = "request bodies must come with Content-Length";
            return 411;
        }
        if (strcasecmp(h->name, "Content-Length") == 0) {
            if (length && strcmp(length, h->value) != 0) {
                *why = "conflicting Content-Length headers";
                return 400;
            }
            length = h->value;
        }
    }
    if (length) {
        unsigned long long n = 0;
        if (*length == '\0' || strspn(length, "0123456789") != strlen(length) ||
            strlen(length) > 18) {
            *why = "malformed Content-Length";
            return 400;
        }
        n = strtoull(length, NULL, 10);
        if (n > c->server->max_body) {
            *why = "the body is larger than this server accepts";
            return 413;
        }
        c->body_wanted = (size_t)n;
    }
    const char *conn = http_header(r, "Connection");
    if (conn && http_list_has(conn, "close"))
        c->keep_alive = false;
    else if (conn && http_list_has(conn, "keep-alive"))
        c->keep_alive = true;
    return 0;
}

/* Take the head (request line and headers, `len` bytes with the blank line) from the input. */
static int http_take_head(struct http_conn *c, size_t len, const char **why)
{
    struct evbuffer *in = link_input(&c->link);
    int status;

    c->head = malloc(len + 1);
    if (!c->head) {
        *why = "out of memory";
        return 503;
    }
    evbuffer_remove(in, c->head, len);
    c->head[len - 4] = '\0'; /* the blank line */
    for (size_t i = 0; i < len - 4; i++) {
        unsigned char ch = (unsigned char)c->head[i];
        bool line_end = ch == '\r' && c->head[i + 1] == '\n';
        if ((ch < 0x20 && ch != '\t' && !line_end &&
             !(ch == '\n' && i && c->head[i - 1] == '\r')) ||
            ch == 0x7f) {
            *why = "a control character in the request line or headers";
            return 400;
        }
    }
    char *headers = strstr(c->head, "\r\n");
    if (headers) {
        *headers = '\0';
        headers += 2;
    } else {
        headers = c->head + strlen(c->head);
    }
    if ((status = http_parse_line(c, c->head, why)) != 0 ||
        (status = http_parse_headers(c, headers, why)) != 0 ||
        (status = http_read_framing(c, why)) != 0)
        return status;
    const char *expect = http_header(&c->request, "Expect");
    if (expect && strcasecmp(expect, "100-continue") == 0 && c->body_wanted > 0 &&
        evbuffer_get_length(in) < c->body_wanted) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        link_write(&c->link, cont, sizeof(cont) - 1);
    }
    return 0;
}

/* The answers of every connection still waiting to go out, in bytes. */
static size_t http_server_output(const struct http_server *s)
{
    size_t total = 0;

    for (const struct http_conn *c = s->conns; c; c = c->next)
        total += link_output_pending(&c->link);
    return total;
}

/* The whole request is here: hand it to the handler. */
static void http_dispatch(struct http_conn *c)
{
    struct http_request *r = &c->request;
    struct evbuffer *in = link_input(&c->link);

    if (http_server_output(c->server) > HTTP_MAX_SERVER_OUTPUT) {
        http_refuse(c, 503, "the server's answers are not being read fast enough; try later");
        return;
    }
    c->body = malloc(c->body_wanted + 1);
    if (!c->body) {
        http_refuse(c, 503, "out of memory");
        return;
    }
    evbuffer_remove(in, c->body, c->body_wanted);
    c->body[c->body_wanted] = '\0';
    r->body = c->body;
    r->body_len = c->body_wanted;
    const struct link_peer *peer = &c->link.meta.peer;
    snprintf(r->peer, sizeof(r->peer), "%s", link_peer_name(peer).s);
    r->over_tls = c->link.meta.over_tls;
    r->local = (peer->family == AF_INET && peer->ip[0] == 127) ||
               (peer->family == AF_INET6 && memcmp(peer->ip, &in6addr_loopback, 16) == 0);
    r->listener = c->flags;
    c->state = HTTP_HANDLING;
    evtimer_del(c->timer);
    link_pause_reading(&c->link);
    c->server->handler(c->server->ctx, r);
}

/* One step of reading. Returns true when it made progress and may be called again. */
static bool http_conn_step(struct http_conn *c)
{
    struct evbuffer *in = link_input(&c->link);
    const char *why = NULL;
    int status;

    if (c->state == HTTP_WAITING) {
        if (c->output_wait)
            return false;
        /* Blank lines before a request line are ignored (RFC 9112, 2.2). */
        while (evbuffer_get_length(in) >= 2 && memcmp(evbuffer_pullup(in, 2), "\r\n", 2) == 0)
            evbuffer_drain(in, 2);
        if (evbuffer_get_length(in) == 0 ||
            (evbuffer_get_length(in) == 1 && *evbuffer_pullup(in, 1) == '\r'))
            return false;
        c->state = HTTP_READING;
        http_conn_arm(c, HTTP_REQUEST_SEC);
    }
    if (c->state != HTTP_READING)
        return false;
    if (!c->head) {
        struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
        if (end.pos < 0) {
            if (evbuffer_get_length(in) > HTTP_MAX_HEAD)
                http_refuse(c, 431, "the request line and headers are too long");
            return false;
        }
        if ((size_t)end.pos + 4 > HTTP_MAX_HEAD) {
            http_refuse(c, 431, "the request line and headers are too long");
            return false;
        }
        if ((status = http_take_head(c, (size_t)end.pos + 4, &why)) != 0) {
            http_refuse(c, status, why);
            return false;
        }
    }
    if (evbuffer_get_length(in) < c->body_wanted)
        return false;
    http_dispatch(c);
    return true;
}

static void http_conn_read(struct http_conn *c)
{
    c->in_read = true;
    while (http_conn_step(c))
        ;
    c->in_read = false;
}

/* ---- link and timer events ---------------------------------------------- */

static void http_link_readable(void *owner)
{
    http_conn_read(owner);
}

static void http_link_written(void *owner)
{
    struct http_conn *c = owner;

    if (!c->output_wait || link_output_pending(&c->link) > HTTP_MAX_OUTPUT / 2)
        return;
    c->output_wait = false;
    link_watch_output(&c->link, 0);
    if (c->state != HTTP_WAITING)
        return;
    link_resume_reading(&c->link);
    event_active(c->wake, EV_TIMEOUT, 0); /* what waits in the input, outside this callback */
}

static void http_link_lost(void *owner, bool orderly, const char *why)
{
    struct http_conn *c = owner;

    if (!orderly && why)
        log_info("http %s: %s", link_peer_name(&c->link.meta.peer).s, why);
    http_conn_close(c, true);
}

static void http_link_done(void *owner)
{
    struct http_conn *c = owner;

    c->state = HTTP_DONE;
    event_active(c->wake, EV_TIMEOUT, 0);
}

static const struct link_events http_link_events = {
    http_link_readable, http_link_written, http_link_lost, http_link_done, NULL,
};

static void http_conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct http_conn *c = arg;

    if (c->state == HTTP_READING)
        http_refuse(c, 408, "the request did not arrive in time");
    else if (c->state == HTTP_WAITING)
        http_conn_close(c, false); /* idle: a quiet end */
}

/* ---- the server --------------------------------------------------------- */

struct http_server *http_server_new(struct event_base *base, http_handler_fn handler, void *ctx,
                                    size_t max_connections, size_t max_body)
{
    struct http_server *s = calloc(1, sizeof(*s));

    if (!s)
        return NULL;
    s->base = base;
    s->handler = handler;
    s->ctx = ctx;
    s->max_connections = max_connections;
    s->max_body = max_body;
    return s;
}

void http_server_free(struct http_server *s)
{
    if (!s)
        return;
    while (s->conns) {
        struct http_conn *c = s->conns;
        if (c->state == HTTP_HANDLING || c->state == HTTP_STREAMING) {
            c->state = HTTP_CLOSING;
            if (c->request.abort)
                c->request.abort(c->request.abort_arg);
        }
        http_conn_free(c);
    }
    free(s);
}

void http_server_drain(struct http_server *s)
{
    s->draining = true;
    for (struct http_conn *c = s->conns; c; c = c->next)
        if (c->state == HTTP_WAITING || c->state == HTTP_STREAMING)
            http_conn_close(c, false); /* a stream's abort hook runs */
}

const struct http_server_stats *http_server_stats(const struct http_server *s)
{
    return &s->stats;
}

const char *http_header(const struct http_request *req, const char *name)
{
    for (size_t i = 0; i < req->header_count; i++)
        if (strcasecmp(req->headers[i].name, name) == 0)
            return req->headers[i].value;
    return NULL;
}

void http_server_accept(struct http_server *s, struct bufferevent *bev,
                        const struct link_meta *meta, unsigned flags)
{
    bool over = s->stats.connections >= s->max_connections;

    if (over && s->refusing >= HTTP_MAX_REFUSING) {
        s->stats.refused_conns++;
        bufferevent_free(bev);
        return;
    }
    struct http_conn *c = calloc(1, sizeof(*c));
    if (c) {
        c->timer = evtimer_new(s->base, http_conn_timer_cb, c);
        c->wake = event_new(s->base, -1, 0, http_conn_wake_cb, c);
    }
    if (!c || !c->timer || !c->wake) {
        log_error("http %s: cannot set up the connection: out of memory",
                  link_peer_name(&meta->peer).s);
        if (c && c->timer)
            event_free(c->timer);
        free(c);
        bufferevent_free(bev);
        return;
    }
    c->server = s;
    c->flags = flags;
    c->counted = !over;
    c->keep_alive = true;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    link_init(&c->link, &(struct link_stream){.bev = bev}, meta, &http_link_events, c);
    if (over) {
        s->refusing++;
        s->stats.refused_conns++;
        if (log_every_due(&s->refused_log, time(NULL), 10))
            log_warning("http %s: refused: %zu connections already open (%llu refused so far)",
                        link_peer_name(&meta->peer).s, s->max_connections,
                        (unsigned long long)s->refused_log.count);
        c->state = HTTP_READING;
        c->keep_alive = false;
        http_write_head(c, 503, "text/plain; charset=utf-8", true, 20);
        link_write(&c->link, "too many connections", 20);
        http_conn_close(c, false);
        return;
    }
    s->stats.connections++;
    c->state = HTTP_WAITING;
    http_conn_arm(c, HTTP_REQUEST_SEC); /* a new connection comes to ask something */
}
