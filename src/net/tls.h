/*
 * tls — the server side of TLS for tls:// listeners: one OpenSSL context
 * built from the tls-* directives, replaceable at run time.
 *
 * TLS 1.2 and 1.3 only, with forward-secret AEAD ciphers for TLS 1.2, no
 * compression and no renegotiation. tls-client-cert asks clients for a
 * certificate that must chain to tls-ca (optional: when sent; required:
 * always). The program owns the struct tls_server; every tls:// listener
 * points at it, and each accepted connection takes its own reference to the
 * context current at accept time, so tls_server_reload() (SIGHUP) changes
 * what new connections get without touching established ones.
 * Core thread only.
 */
#ifndef AVIARY_TLS_H
#define AVIARY_TLS_H

#include <stddef.h>

#include "util/config.h"

struct ssl_st;

/*
 * Forward-secret AEAD suites for TLS 1.2, for every TLS listener (tls:// and
 * wss://); TLS 1.3 keeps OpenSSL's own suites, all of them AEAD.
 */
#define TLS_CIPHERS_TLS12                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                      \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                      \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

struct tls_server;

/* Build the context from cfg's tls-* directives. NULL with the reason in `err`. */
struct tls_server *tls_server_new(const struct config *cfg, char *err, size_t errlen);

/*
 * Re-read the certificate, key and CAs named by `cfg`. On failure the
 * current context stays and -1 comes back with the reason in `err`.
 */
int tls_server_reload(struct tls_server *t, const struct config *cfg, char *err, size_t errlen);

/* A new server-side SSL object for one accepted connection, or NULL. */
struct ssl_st *tls_server_ssl(struct tls_server *t);

void tls_server_free(struct tls_server *t);

/*
 * The reason for the last TLS failure on this thread, for the log ("certificate
 * verify failed"), from OpenSSL's error queue (which this empties), or
 * `fallback` when the queue is empty. Writes at most `size` bytes to `out`.
 */
const char *tls_last_error(unsigned long code, const char *fallback, char *out, size_t size);

struct bufferevent;

/*
 * Why a TLS connection failed, from OpenSSL's queue for `bev` (an
 * OpenSSL bufferevent): the reason, and which check a client certificate
 * failed. Writes at most `size` bytes to `out` and returns it.
 */
const char *tls_bufferevent_error(struct bufferevent *bev, char *out, size_t size);

#endif
