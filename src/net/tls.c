#include "net/tls.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

/* Sessions resumed with a client certificate must have been made by us. */
static const unsigned char session_id_context[] = "aviary";

struct tls_server {
    SSL_CTX *ctx;
};

const char *tls_error_text(unsigned long code, long verify, bool words_only, char *out, size_t size)
{
    const char *reason = ERR_reason_error_string(code);

    if (reason && verify != X509_V_OK) { /* which check the peer's certificate failed */
        snprintf(out, size, "%s (%s)", reason, X509_verify_cert_error_string(verify));
        return out;
    }
    if (reason) {
        snprintf(out, size, "%s", reason);
        return out;
    }
    if (!words_only) {
        ERR_error_string_n(code, out, size);
        return out;
    }
    /* "error:0A0000C7:SSL routines::peer did not return a certificate": keep the words. */
    char full[120];
    ERR_error_string_n(code, full, sizeof(full));
    const char *words = strrchr(full, ':');
    snprintf(out, size, "%s", words && words[1] ? words + 1 : full);
    return out;
}

const char *tls_last_error(unsigned long code, const char *fallback, char *out, size_t size)
{
    unsigned long e = code ? code : ERR_get_error();
    if (!e) {
        snprintf(out, size, "%s", fallback);
        return out;
    }
    tls_error_text(e, X509_V_OK, false, out, size);
    ERR_clear_error();
    return out;
}

const char *tls_bufferevent_error(struct bufferevent *bev, char *out, size_t size)
{
    unsigned long e, last = 0;
    /* Besides OpenSSL's errors the queue holds SSL_get_error() codes (no library): skip them. */
    while ((e = bufferevent_get_openssl_error(bev)))
        if (ERR_GET_LIB(e) != 0)
            last = e;
    if (!last) {
        snprintf(out, size, "%s", errno ? strerror(errno) : "unknown error");
        return out;
    }
    SSL *ssl = bufferevent_openssl_get_ssl(bev);
    long verify = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    return tls_error_text(last, verify, true, out, size);
}

static SSL_CTX *tls_context_new(const struct config *cfg, char *err, size_t errlen)
{
    char why[160];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    if (!ctx) {
        snprintf(err, errlen, "cannot create a TLS context: %s",
                 tls_last_error(0, "out of memory", why, sizeof(why)));
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
    /* A client that closes without close_notify has left, as over TCP; not a TLS error. */
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
#endif
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_set_cipher_list(ctx, TLS_CIPHERS_TLS12) != 1) {
        snprintf(err, errlen, "no usable TLS 1.2 cipher: %s",
                 tls_last_error(0, "unknown", why, sizeof(why)));
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert) != 1) {
        snprintf(err, errlen, "tls-cert %s: %s", cfg->tls_cert,
                 tls_last_error(0, "cannot load", why, sizeof(why)));
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1) {
        snprintf(err, errlen, "tls-key %s: %s", cfg->tls_key,
                 tls_last_error(0, "cannot load", why, sizeof(why)));
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        snprintf(err, errlen, "tls-key %s does not belong to tls-cert %s", cfg->tls_key,
                 cfg->tls_cert);
        ERR_clear_error();
        goto fail;
    }
    if (cfg->tls_ca) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->tls_ca);
        if (SSL_CTX_load_verify_locations(ctx, cfg->tls_ca, NULL) != 1 || !names) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            snprintf(err, errlen, "tls-ca %s: %s", cfg->tls_ca,
                     tls_last_error(0, "no CA certificate in it", why, sizeof(why)));
            goto fail;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
    }
    if (cfg->tls_client_cert != CONFIG_CLIENT_CERT_NONE) {
        int mode = SSL_VERIFY_PEER;
        if (cfg->tls_client_cert == CONFIG_CLIENT_CERT_REQUIRED)
            mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        SSL_CTX_set_verify(ctx, mode, NULL);
        SSL_CTX_set_session_id_context(ctx, session_id_context, sizeof(session_id_context) - 1);
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

struct tls_server *tls_server_new(const struct config *cfg, char *err, size_t errlen)
{
    struct tls_server *t = calloc(1, sizeof(*t));

    if (!t) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (!(t->ctx = tls_context_new(cfg, err, errlen))) {
        free(t);
        return NULL;
    }
    return t;
}

int tls_server_reload(struct tls_server *t, const struct config *cfg, char *err, size_t errlen)
{
    SSL_CTX *ctx = tls_context_new(cfg, err, errlen);

    if (!ctx)
        return -1;
    /* Established connections hold their own reference to the old context. */
    SSL_CTX_free(t->ctx);
    t->ctx = ctx;
    return 0;
}

struct ssl_st *tls_server_ssl(struct tls_server *t)
{
    return SSL_new(t->ctx);
}

void tls_server_free(struct tls_server *t)
{
    if (!t)
        return;
    SSL_CTX_free(t->ctx);
    free(t);
}
