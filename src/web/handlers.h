/*
 * handlers — the endpoints of the web (web.h) and what they share: the web's
 * state, JSON answers and the credentials of a request. Core thread only.
 */
#ifndef AVIARY_WEB_HANDLERS_H
#define AVIARY_WEB_HANDLERS_H

#include <stdbool.h>
#include <stddef.h>

struct broker;
struct evbuffer;
struct http_request;
struct http_server;

struct web {
    struct broker *broker;
    struct http_server *http;                     /* owned */
    bool (*admin_ok)(void *ctx, const char *key); /* web_admin_fn; NULL: no admin keys */
    void *admin_ctx;
};

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
 * (`*secret_len` bytes). Returns 0, or -1 when there are none or they are
 * malformed.
 */
int web_basic_auth(const struct http_request *req, char *user, size_t user_size, char *secret,
                   size_t secret_size, size_t *secret_len);

/* Does `req` carry an admin key ("Authorization: Bearer KEY") the program accepts? */
bool web_admin_authorized(const struct web *w, const struct http_request *req);

#endif
