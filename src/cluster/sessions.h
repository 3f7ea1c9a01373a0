/*
 * sessions — persistent sessions kept in Redis, so that they outlive their node.
 *
 * The node a persistent session is on writes every change to the hash
 * `aviary:{INSTANCE}:session:CLIENT_ID` (the journal's records, util/journal.h,
 * turned into fields: "m" its expiry, "n" the node that holds it, "t" its
 * token's id, "s:FILTER" a subscription, "o:SEQ" a QoS 1/2 message queued
 * or in flight, with the message itself), and lists the client ids it holds
 * in `aviary:{INSTANCE}:node:NODE`, for whoever adopts them. While the
 * session is offline the hash carries the session's expiry as its TTL, so
 * Redis ends it when no node resumes it in time; while online, its expiry
 * and a grace, renewed, so that the same holds when its node dies. A login on another node that
 * asks for the session, which that node does not hold, waits for the hash and
 * resumes what it holds. Core thread only.
 */
#ifndef AVIARY_SESSIONS_H
#define AVIARY_SESSIONS_H

#include <stdbool.h>
#include <stddef.h>

struct broker;
struct conn;
struct instance;
struct journal_record;
struct message;
struct redis_link;
struct session;
struct sessions;

/*
 * The fetches under way (none yet), on `cmd`, for node `node` (the
 * cluster's id, kept by the caller); NULL when out of memory.
 */
struct sessions *sessions_new(struct broker *b, struct redis_link *cmd, const char *node);

/* Write one change of `s` (see core.h's session_record). */
void sessions_record(struct sessions *ss, struct session *s, const struct journal_record *r,
                     const struct message *m);

/*
 * Fetch session `client_id` of `inst` for `c`, whose CONNECT waits for it
 * (reading off). Returns false when that cannot start (Redis is away).
 */
bool sessions_fetch(struct sessions *ss, struct instance *inst, const char *client_id,
                    struct conn *c);

/*
 * Sessions adopted from a dead node, rebuilt here offline with `adopting`
 * set (route_replay() reaches them alone): `done` replays what they may have
 * missed; then they are written whole as this node's. `adopted` is NULL and
 * `count` 0 when there were none or the adoption failed.
 */
typedef void sessions_adopted_fn(void *arg, struct session **adopted, size_t count);

/*
 * Take over the sessions of `inst` that node `dead` held and no login has
 * resumed since (each hash names its holder, "n"), in one step on Redis.
 * `done(arg, ...)` is called once, also when Redis is lost meanwhile.
 * Returns false when that cannot start (`done` is not called).
 */
bool sessions_adopt(struct sessions *ss, struct instance *inst, const char *dead,
                    sessions_adopted_fn *done, void *arg);

/* `c` closes while it waits: its fetch will only be freed. */
void sessions_forget(struct sessions *ss, struct conn *c);

/*
 * Every SESSIONS_RENEW_SEC: the hashes of connected sessions live on, so that
 * a node that dies leaves them to expire as offline sessions would.
 */
#define SESSIONS_RENEW_SEC 30
void sessions_renew(struct sessions *ss);

/* Redis is back: write every persistent session of `inst` whole again. */
void sessions_rewrite(struct sessions *ss, struct instance *inst);

/* Free it; fetches still under way must have been answered (the link freed first). */
void sessions_free(struct sessions *ss);

#endif
