/*
 * broker — one aviaryd process's broker, as the program drives it.
 *
 * Made and freed by the program (aviaryd.c), which also hands it new
 * limits (SIGHUP), the cloud catalog and its changes, and the answers to
 * logins that wait for a fresh look at the database. The state itself is
 * struct broker (core.h); this module sits on top of every other one in
 * broker/: it makes and frees instances, closes connections and reaps them.
 * Core thread only.
 */
#ifndef AVIARY_BROKER_H
#define AVIARY_BROKER_H

#include <stdbool.h>
#include <stdint.h>

#include "broker/core.h"

struct bufferevent;
struct catalog;
struct conn;
struct instance;

/* A new broker on `base` with default `limits`. NULL when out of memory. */
struct broker *broker_new(struct event_base *base, const struct limits *limits);

/* Close every connection and free everything. The event base is the caller's. */
void broker_free(struct broker *b);

/*
 * The database writer caught up (durable.h's `resume`, `ctx` the broker):
 * publishers it held back are read again.
 */
void broker_keep_resume(void *ctx);

/*
 * The cluster's stream caught up (core.h, broker_cluster.hold_publishers
 * went false): publishers it held back are read again.
 */
void broker_cluster_resume(struct broker *b);

/* Close every connection with `reason` (used on SIGTERM); conns are reaped by the loop. */
void broker_close_all(struct broker *b, const char *reason);

/*
 * Replace the limits of the broker and its instances (SIGHUP). They govern
 * decisions from now on; nothing already accepted is undone.
 */
void broker_set_limits(struct broker *b, const struct limits *limits);

/*
 * Switch `b` to cloud mode with the first catalog (the broker takes it): the
 * local instance goes, and every client must log in with an instance name
 * and a token secret.
 */
void broker_set_cloud(struct broker *b, struct catalog *cat, bool allow_keys_without_tls,
                      unsigned token_warning);

/*
 * Join a cluster (cluster/cluster.h), or leave it with NULL. Joining tells
 * the cluster of every instance the broker has; leaving tells it nothing.
 */
void broker_set_cluster(struct broker *b, struct broker_cluster *cl);

/*
 * From now on, desktop logins need a user name and password that `fn`
 * accepts; `fn` NULL: anonymous clients are welcome again.
 */
void broker_set_passwords(struct broker *b, broker_password_fn *fn, void *ctx);

/* SIGHUP: new allow-keys-without-tls and token-warning, for logins from now on. */
void broker_set_token_rules(struct broker *b, bool allow_keys_without_tls, unsigned token_warning);

/*
 * The database changed: take `cat` (the broker owns it now) in place of the
 * current catalog. Instances gone from it are closed and freed with
 * everything in them; the others take their new limits; connections whose
 * token is gone (revoked, or its instance deleted) are closed.
 */
void broker_apply_catalog(struct broker *b, struct catalog *cat);

/*
 * How the broker asks for a fresh look at the database: `fn(ctx, n)` asks
 * for look number n (the program answers with broker_login_rechecked()).
 * Until this is set, a login that misses is refused at once.
 */
void broker_set_recheck(struct broker *b, void (*fn)(void *ctx, uint64_t n), void *ctx);

/*
 * Every look up to number `n` has been made and its catalog, if any, applied:
 * the logins that waited for one of them read their CONNECT again.
 */
void broker_login_rechecked(struct broker *b, uint64_t n);

/*
 * Ask for a fresh look at the database (something was just written to it),
 * within BROKER_RECHECK_INTERVAL_MS. Returns the number of a look that starts
 * after this call: once broker_login_rechecked() has been told of it, what
 * was written is in force. Returns 0 when the broker cannot ask (no recheck
 * set: desktop mode).
 */
uint64_t broker_look_soon(struct broker *b);

/*
 * Close the connection of client `client_id` of instance `instance` for an
 * administrator: MQTT 5 clients get DISCONNECT 0x98 (Administrative action),
 * 3.1.1 clients are closed. Its session lives on as a lost connection's does.
 * Returns 0, or -1 when no such client is connected.
 */
int broker_close_client(struct broker *b, const char *instance, const char *client_id);

#endif
