/*
 * ws — ws:// and wss:// listeners through libwebsockets.
 *
 * Debian's libwebsockets cannot run inside libevent's loop, so all WebSocket
 * listeners share one lws context serviced by a thread of its own. Each
 * WebSocket session on path /mqtt (subprotocol mqtt or mqttv3.1) gets a
 * socketpair: the WS thread moves bytes between binary frames and its end;
 * the other end goes to the core thread through a mailbox (util/mailbox.h),
 * and becomes an ordinary bufferevent conn there. The threads share nothing
 * else. Socket buffers give back-pressure both ways: when an end is full the
 * other side stops reading.
 *
 * The program owns the ws_server: ws_server_new(), ws_server_listen() for each
 * URL (before any fork: it binds), ws_server_start() (after it: it starts the
 * thread), ws_server_free() before the broker.
 */
#ifndef AVIARY_WS_H
#define AVIARY_WS_H

#include <stdbool.h>
#include <stddef.h>

#include "util/config.h"

struct broker;
struct ws_server;

/* A server for `b`; wss:// uses cfg's tls-* directives. NULL with the reason in `err`. */
struct ws_server *ws_server_new(struct broker *b, const struct config *cfg, char *err,
                                size_t errlen);

/*
 * Listen on a ws:// or wss:// `url`; with `next_free_port` a taken port makes
 * it try the next ones. Writes the URL served (with the bound port) to
 * `bound`. Returns 0 or -1 with the reason in `err`.
 */
int ws_server_listen(struct ws_server *ws, const char *url, bool next_free_port, char *bound,
                     size_t boundlen, char *err, size_t errlen);

/* Start the service thread. Returns 0 or -1 with the reason in `err`. */
int ws_server_start(struct ws_server *ws, char *err, size_t errlen);

/*
 * SIGHUP: have the wss:// listeners read tls-cert and tls-key again (at the
 * paths they started with). Call only after the caller has checked that the
 * files load (tls_server_reload): the WS thread swaps them in as they are.
 * New sessions get the new certificate; established ones keep theirs.
 */
void ws_server_reload_tls(struct ws_server *ws);

/* Stop the thread, close every WebSocket session and free everything. NULL is fine. */
void ws_server_free(struct ws_server *ws);

#endif
