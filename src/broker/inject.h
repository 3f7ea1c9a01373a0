/*
 * inject — the broker's door for requests that come from outside an MQTT
 * connection (the HTTP interface): log in with an instance name and a token
 * secret, publish a message, read the retained messages.
 *
 * The same rules as MQTT: the login is checked as a cloud CONNECT's is, a
 * publish meets the token's permissions, max-topic-length, max-payload,
 * max-instance-bytes, max-retained, the message rates (the instance's
 * bucket, and max-messages-per-second for all its HTTP publishers together,
 * as if they were one connection), and the database writer's back-pressure;
 * and it is routed before the call returns. Nothing here knows
 * HTTP: results are enums for the caller to put into its own words. Core
 * thread only.
 */
#ifndef AVIARY_INJECT_H
#define AVIARY_INJECT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct broker;
struct catalog_token;
struct instance;
struct message;

enum inject_login {
    INJECT_LOGIN_OK = 0,
    INJECT_LOGIN_REFUSED = 1,   /* no such instance, or not a live token of it */
    INJECT_LOGIN_EXPIRED = 2,   /* the token has expired */
    INJECT_LOGIN_NEEDS_TLS = 3, /* a key (no expiry) without TLS */
    INJECT_LOGIN_NO_MEMORY = 4,
    INJECT_LOGIN_BOUND = 5, /* a token bound to one client id: HTTP has none */
};

/*
 * Log in to instance `name` with `secret`. Sets *inst and *token (borrowed:
 * valid until the catalog changes; NULL in desktop mode, where any or no
 * credentials log in to the local instance). `why` gets the log's words.
 */
enum inject_login inject_login(struct broker *b, const char *name, const char *secret,
                               size_t secret_len, bool over_tls, struct instance **inst,
                               const struct catalog_token **token, char *why, size_t whylen);

enum inject_status {
    INJECT_OK = 0,
    INJECT_BAD_TOPIC = 1,     /* not a valid topic name, or too long */
    INJECT_DENIED = 2,        /* the token may not publish it */
    INJECT_TOO_LARGE = 3,     /* over max-payload */
    INJECT_RATE = 4,          /* over the message rate: try again after `retry_after` */
    INJECT_OVER_BYTES = 5,    /* the instance holds max-instance-bytes */
    INJECT_RETAINED_FULL = 6, /* max-retained or max-memory */
    INJECT_NO_MEMORY = 7,
    INJECT_BUSY = 8, /* the database writer is behind: try again after `retry_after` */
};

struct inject_result {
    size_t delivered;   /* sessions it went to */
    double retry_after; /* INJECT_RATE: seconds */
    char why[256];      /* what was refused, for the answer and the log */
};

/* Publish `len` bytes of `payload` to `topic` in `inst` as `token` may, and route it. */
enum inject_status inject_publish(struct instance *inst, const struct catalog_token *token,
                                  const char *topic, const void *payload, size_t len, uint8_t qos,
                                  bool retain, struct inject_result *res);

/* Called for each retained message that a read may see; `m` is borrowed. */
typedef void (*inject_retained_fn)(void *ctx, const struct message *m);

/*
 * The retained messages of `inst` matching `filter` that `token` may read
 * (at most `max`). Returns how many were given to `fn`, or
 * INJECT_BAD_FILTER, or INJECT_FILTER_DENIED when the token may not
 * subscribe to it.
 */
#define INJECT_BAD_FILTER (-1L)
#define INJECT_FILTER_DENIED (-2L)
long inject_retained(struct instance *inst, const struct catalog_token *token, const char *filter,
                     size_t max, inject_retained_fn fn, void *ctx);

#endif
