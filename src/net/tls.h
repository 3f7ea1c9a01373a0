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
 * Core thread only, but for the error texts (any thread: they use only the
 * calling thread's OpenSSL error queue, or the bufferevent they are given).
 */
#ifndef AVIARY_TLS_H
#define AVIARY_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "util/config.h"

struct bufferevent;
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
 * OpenSSL error `code` in words, for the log: its reason ("no start line"),
 * and when `verify` (an SSL_get_verify_result()) is not X509_V_OK the check
 * the peer's certificate failed: "certificate verify failed (certificate has
 * expired)". A code OpenSSL has no reason for (a system error) is written as
 * ERR_error_string_n() writes it ("error:80000002:system library::No such
 * file or directory"), or with `words_only` as its words after the last ':'
 * ("No such file or directory"). Writes at most `size` bytes to `out`, which
 * it returns.
 */
const char *tls_error_text(unsigned long code, long verify, bool words_only, char *out,
                           size_t size);

/*
 * The reason for the last TLS failure on this thread, for the log ("certificate
 * verify failed"): `code`, or when it is 0 the oldest error in OpenSSL's queue,
 * as tls_error_text() writes it (whole); `fallback` when there is none. Empties
 * the queue. Writes at most `size` bytes to `out`, which it returns.
 */
const char *tls_last_error(unsigned long code, const char *fallback, char *out, size_t size);

/*
 * Why the TLS connection of bufferevent_openssl `bev` failed, for the log:
 * the last OpenSSL error of its queue (which this empties), in words
 * (tls_error_text() with the client certificate's verify result and
 * `words_only`), or without one errno's text, or "unknown error". Call it in
 * the event callback that reported the error, before anything changes errno.
 * Writes at most `size` bytes to `out`, which it returns.
 */
const char *tls_bufferevent_error(struct bufferevent *bev, char *out, size_t size);

#endif
