/*
 * redis_link — one connection to Redis in the core thread's event loop.
 *
 * hiredis 0.14 (Debian 12's) has neither TLS nor RESP3, and its async
 * context treats a sharded subscription's messages as replies it cannot
 * place; so hiredis is used for what it does well, formatting commands and
 * reading replies (redisFormatCommandArgv, redisReader), and the link owns
 * its socket: a bufferevent, with OpenSSL for rediss://. Replies come back
 * in the order of the commands, each to its callback; on a subscriber link
 * the messages of a subscription go to `on_push` instead. A lost connection
 * answers every command still waiting with NULL and is made again, 0.1 s
 * after the loss and then at most every 2 s, with AUTH and SELECT first.
 */
#ifndef AVIARY_REDIS_LINK_H
#define AVIARY_REDIS_LINK_H

#include <stdbool.h>
#include <stddef.h>

#include <hiredis/hiredis.h>
#include <openssl/ssl.h>

#include "util/redis_url.h"

struct event_base;
struct redis_link;

/* A command's reply (the link frees it after the call), or NULL: the link was lost first. */
typedef void redis_reply_fn(void *arg, redisReply *reply);

/* The link came up (ready for commands) or went down, with the reason. */
typedef void redis_state_fn(void *ctx, bool up, const char *why);

struct redis_link_config {
    const struct redis_url *url; /* the caller's; outlives the link */
    SSL_CTX *tls;                /* rediss://: the client context (a reference is taken) */
    bool subscriber;             /* pushes ("smessage", "message") go to on_push */
    const char *name;            /* for the log */
    redis_state_fn *on_state;
    redis_reply_fn *on_push;
    void *ctx; /* passed to on_state and on_push */
};

/* A link that starts connecting at once. NULL when out of memory. */
struct redis_link *redis_link_new(struct event_base *base, const struct redis_link_config *cfg);

/*
 * Send one command (`argc` arguments of the given lengths); `cb` (may be
 * NULL) gets its reply. Returns 0, or -1 when the link is not up or out of
 * memory (nothing is sent, `cb` is not called).
 */
int redis_link_command(struct redis_link *l, int argc, const char **argv, const size_t *lens,
                       redis_reply_fn *cb, void *arg);

/* Is the link connected, authenticated and ready for commands? */
bool redis_link_up(const struct redis_link *l);

/* Bytes written to the link and not yet sent to Redis. */
size_t redis_link_unsent(const struct redis_link *l);

/* Close the connection; commands still waiting get NULL. NULL is fine. */
void redis_link_free(struct redis_link *l);

#endif
