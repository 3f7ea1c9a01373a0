/*
 * redis_client — a small blocking Redis client for the cluster's catalog:
 * aviaryctl, the watcher thread and the management API's jobs thread each
 * hold one. One request at a time, every connect, read and write bounded
 * by the client's timeout; TLS (rediss://) through OpenSSL, the server
 * verified against the system's CAs or a given CA file, its name checked.
 * hiredis serves only as the RESP encoder (redisFormatCommandArgv) and
 * reader (redisReader): the socket is ours.
 *
 * Not for the core thread: every call may block for up to the timeout.
 * A client is used by one thread. After an I/O failure or a timeout the
 * client is broken (a reply may be half read): every later command fails
 * at once, and the caller closes it and connects again.
 *
 * Errors are one line for a person in (err, errlen) (util/error.h), and
 * name the server as redis_url_format() shows it (no password).
 */
#ifndef AVIARY_REDIS_CLIENT_H
#define AVIARY_REDIS_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include <hiredis/hiredis.h>

#include "util/redis_url.h"

/* Connecting, and each command's round trip, give up after this much. */
#define REDIS_CLIENT_TIMEOUT_MS 2000
/* A reply larger than this is refused (the catalog is far smaller). */
#define REDIS_CLIENT_MAX_REPLY (512u * 1024 * 1024)

struct redis_client;

/*
 * Connect to `url` within `timeout_ms` (0: REDIS_CLIENT_TIMEOUT_MS), with
 * TLS for rediss:// (`ca_file`: the CAs to trust, NULL: the system's),
 * then AUTH with the URL's user and password, and SELECT its database.
 * Returns the client (the caller's, for redis_client_close()), or NULL with
 * the reason in `err` ("cannot connect to Redis at redis://...: ...").
 */
struct redis_client *redis_client_connect(const struct redis_url *url, const char *ca_file,
                                          unsigned timeout_ms, char *err, size_t errlen);

/*
 * Send one command (`argc` arguments of `lens` bytes each; `lens` NULL:
 * NUL-terminated strings) and read its reply. Returns the reply, the
 * caller's to freeReplyObject(), or NULL with the reason in `err` (the
 * client is broken then). An error reply is a reply (REDIS_REPLY_ERROR),
 * for the caller to judge.
 */
redisReply *redis_client_command(struct redis_client *c, int argc, const char **argv,
                                 const size_t *lens, char *err, size_t errlen);

/*
 * redis_client_command() of an error reply too: NULL with "Redis at URL:
 * ERROR TEXT" in `err` when the server answered with an error (the client
 * stays usable then; redis_client_broken() tells the two apart).
 */
redisReply *redis_client_call(struct redis_client *c, int argc, const char **argv,
                              const size_t *lens, char *err, size_t errlen);

/* Whether an I/O failure or a timeout has made the client unusable. */
bool redis_client_broken(const struct redis_client *c);

/* The server as logs show it (redis_url_format(), no password); lives with the client. */
const char *redis_client_shown(const struct redis_client *c);

/* Close the connection and free everything. NULL is fine. */
void redis_client_close(struct redis_client *c);

#endif
