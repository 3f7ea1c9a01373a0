/*
 * redis_client — see redis_client.h. The socket is non-blocking and every
 * wait is a poll() bounded by the command's deadline, so a server that
 * accepts and never answers costs the caller the timeout, not forever.
 */
#include "util/redis_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "util/clock.h"
#include "util/error.h"

struct redis_client {
    int fd;
    SSL_CTX *ctx; /* rediss:// */
    SSL *ssl;
    redisReader *reader;
    unsigned timeout_ms;
    bool broken;
    char shown[256]; /* redis_url_format() */
};

/* A failure that leaves the connection unusable: mark it and say why. */
static int broke(struct redis_client *c, char *err, size_t errlen, const char *what,
                 const char *why)
{
    c->broken = true;
    return error_set(err, errlen, "Redis at %s: %s: %s", c->shown, what, why);
}

/* OpenSSL's last error in words, or `fallback`. */
static const char *tls_reason(char *buf, size_t len, const char *fallback)
{
    unsigned long e = ERR_get_error();

    if (e == 0)
        return fallback;
    ERR_error_string_n(e, buf, len);
    ERR_clear_error();
    return buf;
}

/* Wait until the socket is ready for `events` or the deadline passes: 1, 0 (time), -1. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
    for (;;) {
        uint64_t now = clock_ms();
        if (now >= deadline)
            return 0;
        struct pollfd p = {.fd = fd, .events = events};
        int rc = poll(&p, 1, (int)(deadline - now));
        if (rc > 0)
            return 1;
        if (rc < 0 && errno != EINTR)
            return -1;
    }
}

/* Connect one address of getaddrinfo's within the deadline: the socket, or -1 with errno. */
static int connect_addr(const struct addrinfo *ai, uint64_t deadline)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    int soerr = 0, one = 1;
    socklen_t len = sizeof(soerr);

    if (fd < 0)
        return -1;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
        goto connected;
    if (errno != EINPROGRESS)
        goto fail;
    int ready = wait_fd(fd, POLLOUT, deadline);
    if (ready <= 0) {
        errno = ready == 0 ? ETIMEDOUT : errno;
        goto fail;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
        goto fail;
    if (soerr != 0) {
        errno = soerr;
        goto fail;
    }
connected:
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
fail:;
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

/* The TCP connection to the URL's host and port, tried address by address. */
static int open_socket(struct redis_client *c, const struct redis_url *url, uint64_t deadline,
                       char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    char port[8];
    int rc, saved = ECONNREFUSED;

    snprintf(port, sizeof(port), "%u", url->port);
    rc = getaddrinfo(url->host, port, &hints, &res);
    if (rc != 0)
        return error_set(err, errlen, "cannot connect to Redis at %s: %s", c->shown,
                         gai_strerror(rc));
    for (const struct addrinfo *ai = res; ai && c->fd < 0; ai = ai->ai_next) {
        c->fd = connect_addr(ai, deadline);
        saved = errno;
    }
    freeaddrinfo(res);
    if (c->fd < 0)
        return error_set(err, errlen, "cannot connect to Redis at %s: %s", c->shown,
                         saved == ETIMEDOUT ? "no answer (timed out)" : strerror(saved));
    return 0;
}

/* The client's TLS context: peer verification against `ca_file` or the system's CAs. */
static int tls_context(struct redis_client *c, const char *ca_file, char *err, size_t errlen)
{
    char why[256];

    if (!(c->ctx = SSL_CTX_new(TLS_client_method())))
        return error_set(err, errlen, "Redis at %s: cannot make a TLS context: %s", c->shown,
                         tls_reason(why, sizeof(why), "out of memory"));
    SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    int ok = ca_file ? SSL_CTX_load_verify_locations(c->ctx, ca_file, NULL)
                     : SSL_CTX_set_default_verify_paths(c->ctx);
    if (ok != 1)
        return error_set(err, errlen, "Redis at %s: cannot load the CAs%s%s: %s", c->shown,
                         ca_file ? " of " : "", ca_file ? ca_file : "",
                         tls_reason(why, sizeof(why), "no certificates"));
    return 0;
}

/* The handshake, with the server's certificate checked for the URL's host (name or address). */
static int tls_handshake(struct redis_client *c, const struct redis_url *url, uint64_t deadline,
                         char *err, size_t errlen)
{
    unsigned char addr[16];
    bool is_ip =
        inet_pton(AF_INET, url->host, addr) == 1 || inet_pton(AF_INET6, url->host, addr) == 1;
    char why[256];

    if (!(c->ssl = SSL_new(c->ctx)) || SSL_set_fd(c->ssl, c->fd) != 1)
        return broke(c, err, errlen, "TLS", tls_reason(why, sizeof(why), "out of memory"));
    if (is_ip)
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), url->host);
    else if (SSL_set_tlsext_host_name(c->ssl, url->host) != 1 ||
             SSL_set1_host(c->ssl, url->host) != 1)
        return broke(c, err, errlen, "TLS", tls_reason(why, sizeof(why), "bad host name"));
    for (;;) {
        int rc = SSL_connect(c->ssl);
        if (rc == 1)
            return 0;
        int e = SSL_get_error(c->ssl, rc);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            long v = SSL_get_verify_result(c->ssl);
            const char *reason = v != X509_V_OK ? X509_verify_cert_error_string(v)
                                                : tls_reason(why, sizeof(why), "closed");
            return broke(c, err, errlen, "TLS handshake failed", reason);
        }
        int ready = wait_fd(c->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline);
        if (ready <= 0)
            return broke(c, err, errlen, "TLS handshake failed", "no answer (timed out)");
    }
}

/*
 * OpenSSL writes to the socket without MSG_NOSIGNAL: a server that went away
 * would raise SIGPIPE, which kills aviaryctl. Block it in this thread around
 * the write and take back one raised meanwhile (that one can only be ours:
 * it was blocked and not pending before).
 */
static int tls_write(SSL *ssl, const void *buf, int len)
{
    sigset_t pipe_set, old, pending;
    struct timespec zero = {0, 0};

    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    sigpending(&pending);
    bool was_pending = sigismember(&pending, SIGPIPE);
    int rc = SSL_write(ssl, buf, len);
    if (!was_pending)
        sigtimedwait(&pipe_set, NULL, &zero);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

/* Write all `len` bytes by the deadline. */
static int send_all(struct redis_client *c, const char *buf, size_t len, uint64_t deadline,
                    char *err, size_t errlen)
{
    char why[256];

    while (len > 0) {
        ssize_t n;
        short want = POLLOUT;
        if (c->ssl) {
            int rc = tls_write(c->ssl, buf, (int)(len > INT32_MAX ? INT32_MAX : len));
            n = rc > 0 ? rc : -1;
            int e = rc > 0 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, rc);
            if (e == SSL_ERROR_WANT_READ)
                want = POLLIN;
            else if (e != SSL_ERROR_NONE && e != SSL_ERROR_WANT_WRITE)
                return broke(c, err, errlen, "write", tls_reason(why, sizeof(why), "closed"));
        } else {
            n = send(c->fd, buf, len, MSG_NOSIGNAL);
            if (n < 0 && errno != EAGAIN && errno != EINTR)
                return broke(c, err, errlen, "write", strerror(errno));
        }
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
        } else if (wait_fd(c->fd, want, deadline) <= 0) {
            return broke(c, err, errlen, "write", "timed out");
        }
    }
    return 0;
}

/* Read what is there (at least a byte) by the deadline: the count, or -1. */
static ssize_t recv_some(struct redis_client *c, char *buf, size_t len, uint64_t deadline,
                         char *err, size_t errlen)
{
    char why[256];

    for (;;) {
        short want = POLLIN;
        if (c->ssl) {
            int rc = SSL_read(c->ssl, buf, (int)len);
            if (rc > 0)
                return rc;
            int e = SSL_get_error(c->ssl, rc);
            if (e == SSL_ERROR_WANT_WRITE)
                want = POLLOUT;
            else if (e == SSL_ERROR_ZERO_RETURN)
                return broke(c, err, errlen, "read", "connection closed");
            else if (e != SSL_ERROR_WANT_READ)
                return broke(c, err, errlen, "read", tls_reason(why, sizeof(why), "closed"));
        } else {
            ssize_t n = recv(c->fd, buf, len, 0);
            if (n > 0)
                return n;
            if (n == 0)
                return broke(c, err, errlen, "read", "connection closed");
            if (errno != EAGAIN && errno != EINTR)
                return broke(c, err, errlen, "read", strerror(errno));
        }
        if (wait_fd(c->fd, want, deadline) <= 0)
            return broke(c, err, errlen, "read", "no answer (timed out)");
    }
}

/* Feed the reader until it has one whole reply. */
static redisReply *read_reply(struct redis_client *c, uint64_t deadline, char *err, size_t errlen)
{
    char buf[16384];
    size_t total = 0;

    for (;;) {
        void *reply = NULL;
        if (redisReaderGetReply(c->reader, &reply) != REDIS_OK) {
            broke(c, err, errlen, "read", c->reader->errstr);
            return NULL;
        }
        if (reply)
            return reply;
        ssize_t n = recv_some(c, buf, sizeof(buf), deadline, err, errlen);
        if (n < 0)
            return NULL;
        total += (size_t)n;
        if (total > REDIS_CLIENT_MAX_REPLY) {
            broke(c, err, errlen, "read", "reply too large");
            return NULL;
        }
        if (redisReaderFeed(c->reader, buf, (size_t)n) != REDIS_OK) {
            broke(c, err, errlen, "read", c->reader->errstr);
            return NULL;
        }
    }
}

redisReply *redis_client_command(struct redis_client *c, int argc, const char **argv,
                                 const size_t *lens, char *err, size_t errlen)
{
    uint64_t deadline = clock_ms() + c->timeout_ms;
    char *cmd = NULL;

    if (c->broken) {
        error_set(err, errlen, "Redis at %s: the connection failed earlier", c->shown);
        return NULL;
    }
    int len = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (len < 0) {
        error_set(err, errlen, "Redis at %s: out of memory", c->shown);
        return NULL;
    }
    int rc = send_all(c, cmd, (size_t)len, deadline, err, errlen);
    redisFreeCommand(cmd);
    return rc < 0 ? NULL : read_reply(c, deadline, err, errlen);
}

redisReply *redis_client_call(struct redis_client *c, int argc, const char **argv,
                              const size_t *lens, char *err, size_t errlen)
{
    redisReply *r = redis_client_command(c, argc, argv, lens, err, errlen);

    if (r && r->type == REDIS_REPLY_ERROR) {
        error_set(err, errlen, "Redis at %s: %s", c->shown, r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/* AUTH and SELECT, as the URL asks. */
static int log_in(struct redis_client *c, const struct redis_url *url, char *err, size_t errlen)
{
    char db[16];
    const char *auth[] = {"AUTH", url->user ? url->user : url->password, url->password};
    const char *select[] = {"SELECT", db};
    redisReply *r;

    if (url->password) {
        if (!(r = redis_client_call(c, url->user ? 3 : 2, auth, NULL, err, errlen)))
            return -1;
        freeReplyObject(r);
    }
    if (url->db) {
        snprintf(db, sizeof(db), "%u", url->db);
        if (!(r = redis_client_call(c, 2, select, NULL, err, errlen)))
            return -1;
        freeReplyObject(r);
    }
    return 0;
}

struct redis_client *redis_client_connect(const struct redis_url *url, const char *ca_file,
                                          unsigned timeout_ms, char *err, size_t errlen)
{
    struct redis_client *c = calloc(1, sizeof(*c));

    if (!c) {
        error_set(err, errlen, "out of memory");
        return NULL;
    }
    c->fd = -1;
    c->timeout_ms = timeout_ms ? timeout_ms : REDIS_CLIENT_TIMEOUT_MS;
    redis_url_format(url, c->shown, sizeof(c->shown));
    uint64_t deadline = clock_ms() + c->timeout_ms;
    if (!(c->reader = redisReaderCreate())) {
        error_set(err, errlen, "out of memory");
        goto fail;
    }
    if (open_socket(c, url, deadline, err, errlen) < 0)
        goto fail;
    if (url->tls && (tls_context(c, ca_file, err, errlen) < 0 ||
                     tls_handshake(c, url, deadline, err, errlen) < 0))
        goto fail;
    if (log_in(c, url, err, errlen) < 0)
        goto fail;
    return c;
fail:
    redis_client_close(c);
    return NULL;
}

bool redis_client_broken(const struct redis_client *c)
{
    return c->broken;
}

const char *redis_client_shown(const struct redis_client *c)
{
    return c->shown;
}

void redis_client_close(struct redis_client *c)
{
    if (!c)
        return;
    /* No close_notify: a server gone would answer it with SIGPIPE, and Redis needs none. */
    SSL_free(c->ssl);
    SSL_CTX_free(c->ctx);
    if (c->fd >= 0)
        close(c->fd);
    if (c->reader)
        redisReaderFree(c->reader);
    free(c);
}
