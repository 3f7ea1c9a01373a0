/*
 * listener — accepts connections for one listen URL and hands each to the
 * broker as a conn (a bufferevent plus metadata).
 *
 * Serves tcp:// and tls:// (TLS through bufferevent_openssl; ws:// and wss://
 * are net/ws's), and http:// and https://, whose connections go to an HTTP
 * server (net/http.h) instead. The program owns its listeners and frees them before the
 * broker and before the tls_server they use. Core thread only.
 */
#ifndef AVIARY_LISTENER_H
#define AVIARY_LISTENER_H

#include <stdbool.h>
#include <stddef.h>

struct broker;
struct event_base;
struct http_server;
struct listener;
struct tls_server;

/*
 * Bind and listen on `url` (e.g. "tcp://127.0.0.1:1883"; port 0 lets the
 * kernel choose). With `next_free_port`, a port in use makes it try the
 * following ports (desktop defaults). A tls:// URL needs `tls` (NULL for
 * tcp://). Returns the listener, or NULL with the reason in `err`.
 */
struct listener *listener_open(struct broker *b, const char *url, bool next_free_port,
                               struct tls_server *tls, char *err, size_t errlen);

/*
 * The same for http:// and https:// (`tls` for the latter): its connections
 * go to `http`, which must outlive the listener.
 */
struct listener *listener_open_http(struct event_base *base, struct http_server *http,
                                    const char *url, bool next_free_port, struct tls_server *tls,
                                    char *err, size_t errlen);

/* The URL actually served, with the bound port: "tcp://127.0.0.1:1883". */
const char *listener_url(const struct listener *l);

/* Stop accepting and free the listener; its accepted connections live on. */
void listener_free(struct listener *l);

#endif
