/*
 * http — a small HTTP/1.1 server over links: reads requests, bounds them,
 * and writes the replies its handler gives.
 *
 * Every request is bounded in size (HTTP_MAX_HEAD for the request line and
 * headers, the server's max_body for the body), in time (HTTP_REQUEST_SEC
 * from its first byte to its last; HTTP_IDLE_SEC between requests), and the
 * server in connections (max_connections; the next one gets 503) and in
 * answers waiting to go out (64 MiB in all; then requests get 503). Anything
 * malformed gets a 4xx and a log line, and the connection closes.
 * Requests on one connection are answered in order: reading pauses while
 * the handler holds one.
 *
 * Ownership: the program owns the server and frees it after its listeners.
 * The server owns its connections and each connection its request. The
 * handler gets the request and must answer it exactly once, then or later
 * (http_reply, or http_stream_begin ... http_stream_end); a request whose
 * connection goes first calls its abort hook, after which it is gone. Core
 * thread only.
 *
 * This is ours rather than libevent's evhttp: evhttp in libevent 2.1 can
 * neither cap its connections nor tell when one closes before a request.
 */
#ifndef AVIARY_HTTP_H
#define AVIARY_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/link.h"

struct bufferevent;
struct event_base;
struct evbuffer;
struct http_request;
struct http_server;
struct link_meta;

/* The request line and headers of one request: more gets 431. */
#define HTTP_MAX_HEAD 8192
#define HTTP_MAX_HEADERS 64
/* Seconds from a request's first byte to its last, else 408. */
#define HTTP_REQUEST_SEC 10
/* Seconds a connection may wait for its next request. */
#define HTTP_IDLE_SEC 30

typedef void (*http_handler_fn)(void *ctx, struct http_request *req);

struct http_header {
    const char *name; /* as sent; compare without case */
    const char *value;
};

struct http_request {
    const char *method; /* "GET", "POST", ... */
    const char *path;   /* percent-decoded, without the query: "/broker/a/b" */
    const char *query;  /* undecoded, after '?'; "" when none */
    struct http_header headers[HTTP_MAX_HEADERS];
    size_t header_count;
    const unsigned char *body; /* body_len bytes, then a NUL */
    size_t body_len;
    char peer[LINK_PEER_SIZE]; /* "127.0.0.1:53422", for the log */
    bool over_tls;             /* arrived on an https:// listener */
    bool local;                /* from a loopback address */
    unsigned listener;         /* the listener's flags (HTTP_LISTENER_*) */
    /* Called if the connection goes before the answer; the request is gone after it. */
    void (*abort)(void *arg);
    void *abort_arg;
};

/* The listener's own flags, passed through to every request it accepts. */
#define HTTP_LISTENER_LOOPBACK 1u /* bound to a loopback address only */

struct http_server_stats {
    uint64_t requests;      /* answered */
    uint64_t bad_requests;  /* refused as malformed, oversized or too slow */
    uint64_t refused_conns; /* turned away at max_connections */
    size_t connections;     /* open now */
};

/* A server calling `handler(ctx, request)` for each request. NULL when out of memory. */
struct http_server *http_server_new(struct event_base *base, http_handler_fn handler, void *ctx,
                                    size_t max_connections, size_t max_body);

/* Close every connection (their requests are aborted) and free the server. */
void http_server_free(struct http_server *s);

/*
 * The program is stopping: idle connections and streams end now (streams'
 * abort hooks run), the others after the answer to the request they carry.
 */
void http_server_drain(struct http_server *s);

/* A listener's new connection on `bev` (taken); `flags` are HTTP_LISTENER_*. */
void http_server_accept(struct http_server *s, struct bufferevent *bev,
                        const struct link_meta *meta, unsigned flags);

const struct http_server_stats *http_server_stats(const struct http_server *s);

/* The value of header `name` (any case), or NULL. */
const char *http_header(const struct http_request *req, const char *name);

/* Add a header to the answer (before http_reply or http_stream_begin). */
void http_add_header(struct http_request *req, const char *name, const char *value);

/* Answer `req` with `status` and a body of `len` bytes of `type` (NULL: no Content-Type). */
void http_reply(struct http_request *req, int status, const char *type, const void *body,
                size_t len);

/* http_reply() taking the body from `body` (drained). */
void http_reply_buffer(struct http_request *req, int status, const char *type,
                       struct evbuffer *body);

/*
 * A long answer (Server-Sent Events): the headers now, then chunks of body
 * with http_stream_write() until http_stream_end(); the connection closes
 * after it. The abort hook says when the client went.
 */
void http_stream_begin(struct http_request *req, const char *type);
/* Queue `len` bytes; returns the bytes now waiting to go out (the caller bounds it). */
size_t http_stream_write(struct http_request *req, const void *data, size_t len);
void http_stream_end(struct http_request *req);
/* Bytes of a long answer waiting to go out. */
size_t http_stream_pending(struct http_request *req);

/* The reason phrase of `status`: "Not Found". */
const char *http_status_text(int status);

#endif
