#define _GNU_SOURCE /* accept4 */
#include "net/listener.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/util.h>
#include <openssl/ssl.h>

#include "broker/broker.h"
#include "broker/client.h"
#include "net/addr.h"
#include "net/http.h"
#include "net/link.h"
#include "net/tls.h"
#include "util/config.h"
#include "util/log.h"

/* Connections the kernel may hold for us while we accept (a burst, or a pause). */
#define LISTENER_BACKLOG 4096

/* After running out of descriptors, stop accepting for this long. */
#define LISTENER_PAUSE_SEC 1

/*
 * Connections accepted per turn of the event loop. A burst of thousands
 * waits in the kernel's backlog and comes in a few dozen at a time, so that
 * the clients already connected are served between them.
 */
#define LISTENER_ACCEPT_BATCH 64

struct listener {
    struct broker *broker;    /* tcp:// and tls://: who takes the connections */
    struct http_server *http; /* http:// and https://: who takes them instead */
    unsigned http_flags;      /* HTTP_LISTENER_* of this listener */
    evutil_socket_t fd;       /* listening; owned */
    struct event *accept_ev;  /* readable: connections wait; owned */
    struct event *resume;     /* re-enables accepting after a pause */
    uint64_t paused;          /* times accepting was paused for lack of descriptors */
    enum link_transport transport;
    struct tls_server *tls; /* tls://: the program's; NULL for tcp:// */
    char url[128];
};

/* Take the accepted connection `fd` from `sa`. */
static void listener_take(struct listener *l, evutil_socket_t fd, struct sockaddr *sa,
                          socklen_t salen)
{
    struct link_meta meta = {
        .transport = l->transport, .over_tls = l->tls != NULL, .peer = link_peer_of(sa, salen)};
    struct event_base *base = event_get_base(l->accept_ev);
    struct bufferevent *bev;
    int one = 1;

    /* MQTT packets are small and latency matters more than batching. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (l->tls) {
        /* The handshake runs inside the bufferevent; the conn's CONNECT deadline bounds it. */
        struct ssl_st *ssl = tls_server_ssl(l->tls);
        bev = ssl ? bufferevent_openssl_socket_new(base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                   BEV_OPT_CLOSE_ON_FREE)
                  : NULL;
        if (bev) /* A client that closes without close_notify has just gone. */
            bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
        else
            SSL_free(ssl);
    } else if (!l->http) { /* the link reads and writes the socket itself */
        struct link_stream stream = {.fd = fd, .driver = l->broker->driver};
        client_accept(l->broker, &stream, &meta);
        return;
    } else {
        bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    }
    if (!bev) {
        log_error("cannot set up a connection from %s: out of memory",
                  link_peer_name(&meta.peer).s);
        evutil_closesocket(fd);
        return;
    }
    if (l->http)
        http_server_accept(l->http, bev, &meta, l->http_flags);
    else
        client_accept(l->broker, &(struct link_stream){.bev = bev}, &meta);
}

static void listener_resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct listener *l = arg;
    event_add(l->accept_ev, NULL);
}

/* accept() failed with `err` (not for want of a connection). */
static void listener_failed(struct listener *l, int err)
{
    struct timeval pause = {LISTENER_PAUSE_SEC, 0};

    if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM) {
        log_error("%s: accept failed: %s", l->url, strerror(err));
        return;
    }
    /*
     * The pending connection stays in the backlog and the socket stays
     * readable: without a pause the loop would spin on it. Existing clients
     * keep being served meanwhile.
     */
    event_del(l->accept_ev);
    event_add(l->resume, &pause);
    if (log_every_nth(&l->paused, 60))
        log_error("%s: accept failed: %s; not accepting for %d s (%llu pauses so far)", l->url,
                  strerror(err), LISTENER_PAUSE_SEC, (unsigned long long)l->paused);
}

static void listener_accept_cb(evutil_socket_t fd, short what, void *arg)
{
    struct listener *l = arg;

    for (int n = 0; n < LISTENER_ACCEPT_BATCH; n++) {
        struct sockaddr_storage ss;
        socklen_t sslen = sizeof(ss);
        evutil_socket_t conn =
            accept4(fd, (struct sockaddr *)&ss, &sslen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (conn >= 0) {
            listener_take(l, conn, (struct sockaddr *)&ss, sslen);
            continue;
        }
        /* A peer that gave up in the backlog is no failure of ours. */
        if (errno == ECONNABORTED || errno == EINTR)
            continue;
        if (errno != EAGAIN)
            listener_failed(l, errno);
        return;
    }
}

/* A bound, listening socket on host:port, or -1 with errno set and the reason in `err`. */
static evutil_socket_t bind_socket(const char *host, unsigned port, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res;
    char portstr[8];

    snprintf(portstr, sizeof(portstr), "%u", port);
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve '%s': %s", host, gai_strerror(rc));
        errno = EINVAL;
        return -1;
    }
    evutil_socket_t fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        freeaddrinfo(res);
        return -1;
    }
    evutil_make_listen_socket_reuseable(fd);
    if (res->ai_family == AF_INET6) {
        int one = 1;
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    }
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, LISTENER_BACKLOG) < 0) {
        int saved = errno;
        snprintf(err, errlen, "cannot listen on %s port %u: %s", host, port, strerror(saved));
        close(fd);
        freeaddrinfo(res);
        errno = saved;
        return -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* What listener_open() asks of each port it tries. */
struct bind_attempt {
    const char *host;
    evutil_socket_t fd;
    char *err;
    size_t errlen;
};

/* addr_listen_fn for bind_socket(): a taken port sends addr_listen_port() on to the next. */
static int listener_try_port(unsigned port, void *arg)
{
    struct bind_attempt *a = arg;

    a->fd = bind_socket(a->host, port, a->err, a->errlen);
    if (a->fd >= 0)
        return 0;
    return errno == EADDRINUSE ? -EADDRINUSE : -1;
}

/* Is the bound address a loopback one (127.0.0.0/8 or ::1)? */
static bool listener_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss->ss_family == AF_INET6)
        return IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)ss)->sin6_addr);
    return false;
}

/* Bind `u` (parsed from `url`) and make the listener; the caller sets whom it feeds. */
static struct listener *listener_bind(struct event_base *base, const char *url,
                                      const struct config_url *u, bool next_free_port,
                                      struct tls_server *tls, char *err, size_t errlen)
{
    struct bind_attempt a = {.host = u->host, .fd = -1, .err = err, .errlen = errlen};
    int rc = addr_listen_port(url, u->port, next_free_port, listener_try_port, &a);
    if (rc == -EADDRINUSE && !next_free_port) {
        char owner[160];
        snprintf(err, errlen,
                 "cannot listen on %s: port %u is in use by %s; only desktop mode's default "
                 "listeners move to the next free port",
                 url, u->port, addr_port_owner(u->port, owner, sizeof(owner)));
        return NULL;
    }
    if (rc < 0)
        return NULL;
    evutil_socket_t fd = a.fd;

    struct listener *l = calloc(1, sizeof(*l));
    if (!l) {
        close(fd);
        snprintf(err, errlen, "%s: out of memory", url);
        return NULL;
    }
    l->transport = tls ? LINK_TLS : LINK_TCP;
    l->tls = tls;
    l->fd = fd; /* bind_socket() listened already, with room for a burst */
    l->accept_ev = event_new(base, fd, EV_READ | EV_PERSIST, listener_accept_cb, l);
    l->resume = evtimer_new(base, listener_resume_cb, l);
    if (!l->accept_ev || !l->resume || event_add(l->accept_ev, NULL) < 0) {
        listener_free(l);
        snprintf(err, errlen, "%s: out of memory", url);
        return NULL;
    }

    struct sockaddr_storage ss = {0};
    socklen_t sslen = sizeof(ss);
    char addr[96];
    getsockname(fd, (struct sockaddr *)&ss, &sslen);
    addr_format((struct sockaddr *)&ss, sslen, addr, sizeof(addr));
    snprintf(l->url, sizeof(l->url), "%s://%s", u->scheme, addr);
    if (listener_loopback(&ss))
        l->http_flags |= HTTP_LISTENER_LOOPBACK;
    return l;
}

/* Parse `url` and check that its scheme is `plain` or `secure`; *is_secure says which. */
static int listener_scheme(const char *url, struct config_url *u, const char *plain,
                           const char *secure, struct tls_server *tls, bool *is_secure, char *err,
                           size_t errlen)
{
    char why[128];

    if (config_url_parse(url, u, why, sizeof(why)) < 0) {
        snprintf(err, errlen, "%s: %s", url, why);
        return -1;
    }
    *is_secure = strcmp(u->scheme, secure) == 0;
    if (!*is_secure && strcmp(u->scheme, plain) != 0) {
        snprintf(err, errlen, "%s: %s:// is not served here (expected %s:// or %s://)", url,
                 u->scheme, plain, secure);
        return -1;
    }
    if (*is_secure && !tls) {
        snprintf(err, errlen, "%s: needs tls-cert and tls-key", url);
        return -1;
    }
    return 0;
}

struct listener *listener_open(struct broker *b, const char *url, bool next_free_port,
                               struct tls_server *tls, char *err, size_t errlen)
{
    struct config_url u;
    bool secure;

    if (listener_scheme(url, &u, "tcp", "tls", tls, &secure, err, errlen) < 0)
        return NULL;
    struct listener *l =
        listener_bind(b->base, url, &u, next_free_port, secure ? tls : NULL, err, errlen);
    if (l)
        l->broker = b;
    return l;
}

struct listener *listener_open_http(struct event_base *base, struct http_server *http,
                                    const char *url, bool next_free_port, struct tls_server *tls,
                                    char *err, size_t errlen)
{
    struct config_url u;
    bool secure;

    if (listener_scheme(url, &u, "http", "https", tls, &secure, err, errlen) < 0)
        return NULL;
    struct listener *l =
        listener_bind(base, url, &u, next_free_port, secure ? tls : NULL, err, errlen);
    if (l)
        l->http = http;
    return l;
}

const char *listener_url(const struct listener *l)
{
    return l->url;
}

void listener_free(struct listener *l)
{
    if (!l)
        return;
    if (l->accept_ev)
        event_free(l->accept_ev);
    if (l->resume)
        event_free(l->resume);
    close(l->fd);
    free(l);
}
