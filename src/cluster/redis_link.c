#include "cluster/redis_link.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "util/fifo.h"
#include "util/log.h"

#define RECONNECT_FIRST_MS 100
#define RECONNECT_MAX_MS 2000

enum link_state {
    LINK_DOWN,       /* waiting for the reconnect timer */
    LINK_CONNECTING, /* TCP (and TLS) handshake */
    LINK_HELLO,      /* AUTH, SELECT and PING sent, their replies awaited */
    LINK_UP,
};

struct pending {
    redis_reply_fn *cb;
    void *arg;
};

struct redis_link {
    struct event_base *base;
    struct redis_link_config cfg;
    enum link_state state;
    struct bufferevent *bev;
    redisReader *reader;
    struct event *retry;
    unsigned retry_ms;
    bool told_down;      /* the loss was reported: report the next one only after an up */
    struct fifo waiting; /* struct pending: the commands sent, oldest first */
};

static void link_connect(struct redis_link *l);

static int waiting_push(struct redis_link *l, redis_reply_fn *cb, void *arg)
{
    struct pending p = {cb, arg};
    return fifo_push(&l->waiting, &p);
}

static bool waiting_pop(struct redis_link *l, struct pending *out)
{
    if (!l->waiting.count)
        return false;
    *out = *(struct pending *)fifo_at(&l->waiting, 0);
    fifo_pop(&l->waiting);
    return true;
}

/* Drop the connection; every waiting command hears NULL; try again later. */
static void link_lost(struct redis_link *l, const char *why)
{
    struct pending p;
    bool was_up = l->state == LINK_UP;

    if (l->bev) {
        bufferevent_free(l->bev);
        l->bev = NULL;
    }
    if (l->reader) {
        redisReaderFree(l->reader);
        l->reader = NULL;
    }
    l->state = LINK_DOWN;
    while (waiting_pop(l, &p))
        if (p.cb)
            p.cb(p.arg, NULL);
    if (was_up || !l->told_down) {
        l->told_down = true;
        l->cfg.on_state(l->cfg.ctx, false, why);
    }
    struct timeval tv = {l->retry_ms / 1000, (l->retry_ms % 1000) * 1000};
    evtimer_add(l->retry, &tv);
    l->retry_ms = l->retry_ms * 2 > RECONNECT_MAX_MS ? RECONNECT_MAX_MS : l->retry_ms * 2;
}

static bool is_push(const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        r->element[0]->type != REDIS_REPLY_STRING)
        return false;
    return !strcmp(r->element[0]->str, "smessage") || !strcmp(r->element[0]->str, "message");
}

/* One whole reply: to the oldest command, or to on_push. */
static void link_reply(struct redis_link *l, redisReply *r)
{
    struct pending p;

    if (l->cfg.subscriber && is_push(r)) {
        l->cfg.on_push(l->cfg.ctx, r);
    } else if (waiting_pop(l, &p)) {
        if (p.cb)
            p.cb(p.arg, r);
    } else {
        log_warning("cluster: Redis (%s) sent a reply nothing asked for; ignored", l->cfg.name);
    }
    freeReplyObject(r);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct redis_link *l = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer_iovec vec[8];
    int n;

    while ((n = evbuffer_peek(in, -1, NULL, vec, 8)) > 0) {
        size_t took = 0;
        for (int i = 0; i < n && i < 8; i++) {
            if (redisReaderFeed(l->reader, vec[i].iov_base, vec[i].iov_len) != REDIS_OK)
                break;
            took += vec[i].iov_len;
        }
        evbuffer_drain(in, took);
        void *reply;
        /* A callback may free nothing of the link but may lose it: check the state. */
        while (l->state != LINK_DOWN && l->reader) {
            if (redisReaderGetReply(l->reader, &reply) != REDIS_OK) {
                link_lost(l, "Redis sent something that is not RESP");
                return;
            }
            if (!reply)
                break;
            link_reply(l, reply);
        }
        if (l->state == LINK_DOWN)
            return;
    }
}

static void hello_done(void *arg, redisReply *r)
{
    struct redis_link *l = arg;
    char why[300];

    if (!r)
        return; /* lost: link_lost() has said so */
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(why, sizeof(why), "Redis refused the connection's set-up: %s", r->str);
        /* Not from inside the reply loop's free: defer the loss to the loop's next turn. */
        link_lost(l, why);
        return;
    }
    if (r->type == REDIS_REPLY_STATUS && !strcmp(r->str, "PONG")) {
        l->state = LINK_UP;
        l->retry_ms = RECONNECT_FIRST_MS;
        l->told_down = false;
        l->cfg.on_state(l->cfg.ctx, true, NULL);
    }
}

static int send_raw(struct redis_link *l, int argc, const char **argv, const size_t *lens,
                    redis_reply_fn *cb, void *arg)
{
    char *cmd;
    int len = redisFormatCommandArgv(&cmd, argc, argv, lens);

    if (len < 0)
        return -1;
    int rc = waiting_push(l, cb, arg);
    if (rc == 0 && bufferevent_write(l->bev, cmd, (size_t)len) < 0) {
        fifo_drop_last(&l->waiting); /* the one just pushed */
        rc = -1;
    }
    redisFreeCommand(cmd);
    return rc;
}

/* Connected: AUTH, SELECT, then a PING whose PONG says the link is ready. */
static void link_hello(struct redis_link *l)
{
    const struct redis_url *u = l->cfg.url;
    char db[16];
    int rc = 0;

    l->state = LINK_HELLO;
    if (u->password && u->user)
        rc = send_raw(l, 3, (const char *[]){"AUTH", u->user, u->password},
                      (size_t[]){4, strlen(u->user), strlen(u->password)}, hello_done, l);
    else if (u->password)
        rc = send_raw(l, 2, (const char *[]){"AUTH", u->password},
                      (size_t[]){4, strlen(u->password)}, hello_done, l);
    snprintf(db, sizeof(db), "%u", u->db);
    if (rc == 0 && u->db)
        rc = send_raw(l, 2, (const char *[]){"SELECT", db}, (size_t[]){6, strlen(db)}, hello_done,
                      l);
    if (rc == 0)
        rc = send_raw(l, 1, (const char *[]){"PING"}, (size_t[]){4}, hello_done, l);
    if (rc < 0)
        link_lost(l, "out of memory");
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct redis_link *l = arg;
    char why[300];

    if (what & BEV_EVENT_CONNECTED) {
        link_hello(l);
        return;
    }
    unsigned long ssl_err = l->cfg.tls ? bufferevent_get_openssl_error(bev) : 0;
    int dns_err = bufferevent_socket_get_dns_error(bev);
    if (ssl_err)
        snprintf(why, sizeof(why), "TLS: %s", ERR_reason_error_string(ssl_err));
    else if (dns_err)
        snprintf(why, sizeof(why), "%s", evutil_gai_strerror(dns_err));
    else if (what & BEV_EVENT_EOF)
        snprintf(why, sizeof(why), "Redis closed the connection");
    else
        snprintf(why, sizeof(why), "%s",
                 strerror(EVUTIL_SOCKET_ERROR() ? EVUTIL_SOCKET_ERROR() : ECONNRESET));
    link_lost(l, why);
}

static struct bufferevent *make_bev(struct redis_link *l)
{
    if (!l->cfg.tls)
        return bufferevent_socket_new(l->base, -1, BEV_OPT_CLOSE_ON_FREE);
    SSL *ssl = SSL_new(l->cfg.tls);
    if (!ssl)
        return NULL;
    /* The name for SNI and the one the certificate must carry. */
    SSL_set_tlsext_host_name(ssl, l->cfg.url->host);
    SSL_set1_host(ssl, l->cfg.url->host);
    struct bufferevent *bev = bufferevent_openssl_socket_new(
        l->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
    if (!bev)
        SSL_free(ssl);
    return bev;
}

static void link_connect(struct redis_link *l)
{
    const struct redis_url *u = l->cfg.url;

    l->reader = redisReaderCreate();
    l->bev = l->reader ? make_bev(l) : NULL;
    if (!l->bev) {
        link_lost(l, "out of memory");
        return;
    }
    l->state = LINK_CONNECTING;
    bufferevent_setcb(l->bev, read_cb, NULL, event_cb, l);
    bufferevent_enable(l->bev, EV_READ | EV_WRITE);
    /* No DNS base: a host name is resolved by the system's resolver, blocking once. */
    if (bufferevent_socket_connect_hostname(l->bev, NULL, AF_UNSPEC, u->host, (int)u->port) < 0)
        link_lost(l, "cannot start connecting");
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    link_connect(arg);
}

struct redis_link *redis_link_new(struct event_base *base, const struct redis_link_config *cfg)
{
    struct redis_link *l = calloc(1, sizeof(*l));

    if (!l)
        return NULL;
    l->base = base;
    l->cfg = *cfg;
    l->waiting = (struct fifo)FIFO_INIT(struct pending);
    l->retry_ms = RECONNECT_FIRST_MS;
    l->retry = evtimer_new(base, retry_cb, l);
    if (!l->retry) {
        free(l);
        return NULL;
    }
    if (cfg->tls)
        SSL_CTX_up_ref(cfg->tls);
    link_connect(l);
    return l;
}

int redis_link_command(struct redis_link *l, int argc, const char **argv, const size_t *lens,
                       redis_reply_fn *cb, void *arg)
{
    if (l->state != LINK_UP)
        return -1;
    return send_raw(l, argc, argv, lens, cb, arg);
}

bool redis_link_up(const struct redis_link *l)
{
    return l->state == LINK_UP;
}

size_t redis_link_unsent(const struct redis_link *l)
{
    return l->bev ? evbuffer_get_length(bufferevent_get_output(l->bev)) : 0;
}

void redis_link_free(struct redis_link *l)
{
    struct pending p;

    if (!l)
        return;
    if (l->bev)
        bufferevent_free(l->bev);
    if (l->reader)
        redisReaderFree(l->reader);
    while (waiting_pop(l, &p))
        if (p.cb)
            p.cb(p.arg, NULL);
    event_free(l->retry);
    if (l->cfg.tls)
        SSL_CTX_free(l->cfg.tls);
    fifo_clear(&l->waiting);
    free(l);
}
