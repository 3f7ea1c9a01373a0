/*
 * handlers — the endpoints of the web (web.h) and what they share: the web's
 * state, JSON answers and the credentials of a request. Core thread only.
 */
#ifndef AVIARY_WEB_HANDLERS_H
#define AVIARY_WEB_HANDLERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct admin_call;
struct broker;
struct evbuffer;
struct http_request;
struct http_server;
struct jobs;

/* web.h's web_admin_fn, spelled out: web.h is this module's interface, not its base. */
struct web {
    struct broker *broker;
    struct http_server *http;                     /* owned */
    bool (*admin_ok)(void *ctx, const char *key); /* web_admin_fn; NULL: no admin keys */
    void *admin_ctx;
    struct jobs *jobs;                /* the program's; NULL: no management API */
    struct admin_call *admin_waiting; /* answers waiting for a look at the database */
};

/* "tcp", "tls", "ws" or "wss": a link's transport (enum link_transport) as the web names it. */
const char *web_transport_name(unsigned transport);

/* GET /metrics. */
void web_metrics(struct web *w, struct http_request *req);

/* /broker/TOPIC: POST publishes, GET reads retained messages. */
void web_topics(struct web *w, struct http_request *req, const char *topic);

/* The web view: the page (`what` NULL), or /view/WHAT. */
void web_view(struct web *w, struct http_request *req, const char *what);

/* Answer with {"error": message} and log it at info level with the peer. */
void web_error(struct http_request *req, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Append `len` bytes of `s` to `out` as a JSON string (util/json.h's escaping). */
void web_json_string(struct evbuffer *out, const char *s, size_t len);

/*
 * HTTP Basic credentials of `req` into user (NUL-terminated) and the secret
 * (`*secret_len` bytes): INSTANCE:SECRET, or the user-id INSTANCE:SECRET with
 * an empty password (INSTANCE:SECRET:), as MQTT logins take them. Returns 0,
 * or -1 when there are none or they are malformed.
 */
int web_basic_auth(const struct http_request *req, char *user, size_t user_size, char *secret,
                   size_t secret_size, size_t *secret_len);

enum web_admin_auth {
    WEB_ADMIN_OK = 0,
    WEB_ADMIN_MISSING = 1,   /* no "Authorization: Bearer KEY" */
    WEB_ADMIN_WRONG = 2,     /* a key the program does not accept */
    WEB_ADMIN_NEEDS_TLS = 3, /* plain http beyond loopback without allow-keys-without-tls */
};

/*
 * Does `req` carry an admin key ("Authorization: Bearer KEY") the program
 * accepts, over a transport that may carry one? A key crosses only https://,
 * or http:// on a loopback listener, or any http:// when
 * allow-keys-without-tls is set (the rule of token keys).
 */
enum web_admin_auth web_admin_check(const struct web *w, const struct http_request *req);

/* Answer the refusal `auth` (not WEB_ADMIN_OK) of `req`: 401 with the challenge, or 403. */
void web_admin_refuse(struct http_request *req, enum web_admin_auth auth, const char *what);

/* /admin and /admin/...: the management API. */
void web_admin(struct web *w, struct http_request *req);

/* Every look at the database up to `n` is done: answers that waited for one go out. */
void web_admin_looked(struct web *w, uint64_t n);

/* Answers still waiting are dropped (their connections are closing). */
void web_admin_free(struct web *w);

#endif
