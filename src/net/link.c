#include "net/link.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "net/tls.h"

/* TLS handshakes that failed, for /metrics (core thread only). */
static uint64_t tls_handshake_failures;
/* WebSocket handshakes that failed: counted in the WebSocket thread, read in the core. */
static _Atomic uint64_t ws_handshake_failures;

static void link_read_cb(struct bufferevent *bev, void *arg);
static void link_write_cb(struct bufferevent *bev, void *arg);
static void link_event_cb(struct bufferevent *bev, short what, void *arg);

static void tcp_shutdown_write(struct link *l)
{
    evutil_socket_t fd = bufferevent_getfd(l->bev);
    if (fd >= 0)
        shutdown(fd, SHUT_WR);
}

/* TLS cannot be half-closed under OpenSSL's feet: there the peer's close ends it. */
static void tls_shutdown_write(struct link *l)
{
}

static const char *tcp_link_error(struct link *l, char *out, size_t size)
{
    snprintf(out, size, "%s", strerror(errno));
    return out;
}

static const char *tls_link_error(struct link *l, char *out, size_t size)
{
    return tls_bufferevent_error(l->bev, out, size);
}

/* The WebSocket thread speaks TLS to the browser; the core sees a plain socketpair. */
static const struct link_ops tcp_ops = {false, tcp_shutdown_write, tcp_link_error};
static const struct link_ops tls_ops = {true, tls_shutdown_write, tls_link_error};

void link_init(struct link *l, struct bufferevent *bev, const struct link_meta *meta,
               const struct link_events *events, void *owner)
{
    *l = (struct link){.bev = bev, .meta = *meta, .events = events, .owner = owner};
    l->ops = meta->transport == LINK_TLS ? &tls_ops : &tcp_ops;
    bufferevent_setcb(bev, link_read_cb, link_write_cb, link_event_cb, l);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

void link_release(struct link *l)
{
    if (l->timer)
        event_free(l->timer);
    bufferevent_free(l->bev);
}

void link_pause_reading(struct link *l)
{
    bufferevent_disable(l->bev, EV_READ);
}

void link_resume_reading(struct link *l)
{
    bufferevent_enable(l->bev, EV_READ);
}

void link_watch_output(struct link *l, size_t low)
{
    bufferevent_setwatermark(l->bev, EV_WRITE, low, 0);
}

uint64_t link_tls_handshake_failures(void)
{
    return tls_handshake_failures;
}

void link_note_ws_handshake_failure(void)
{
    ws_handshake_failures++;
}

uint64_t link_ws_handshake_failures(void)
{
    return ws_handshake_failures;
}

bool link_handshaking(const struct link *l)
{
    return l->ops->handshake && !l->any_input;
}

static void link_read_cb(struct bufferevent *bev, void *arg)
{
    struct link *l = arg;

    l->any_input = true;
    if (l->closing) { /* what the peer still sends is dropped */
        struct evbuffer *in = bufferevent_get_input(bev);
        evbuffer_drain(in, evbuffer_get_length(in));
        return;
    }
    l->events->readable(l->owner);
}

static void link_done(struct link *l)
{
    if (l->timer)
        evtimer_del(l->timer);
    l->events->done(l->owner);
}

/* Closing, and the output has gone: shut our side and give the peer a moment to close its. */
static void link_drained(struct link *l)
{
    /* Without a socket (an in-memory pair) there is no reset to fear. */
    if (l->peer_eof || !l->timer || bufferevent_getfd(l->bev) < 0) {
        link_done(l);
        return;
    }
    if (l->half_closed)
        return;
    l->half_closed = true;
    l->ops->shutdown_write(l);
    struct timeval drain = {(time_t)l->drain, 0};
    evtimer_add(l->timer, &drain);
}

/* The linger or the drain is over. */
static void link_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    link_done(arg);
}

void link_close(struct link *l, bool abandon, unsigned linger, unsigned drain)
{
    if (l->closing)
        return;
    l->closing = true;
    l->drain = drain;
    if (abandon) {
        bufferevent_disable(l->bev, EV_READ | EV_WRITE);
        l->events->done(l->owner);
        return;
    }
    /* What is queued (a CONNACK, a DISCONNECT) still goes out; what comes in is dropped. */
    bufferevent_setwatermark(l->bev, EV_WRITE, 0, 0);
    bufferevent_enable(l->bev, EV_READ | EV_WRITE);
    struct timeval tv = {(time_t)linger, 0};
    l->timer = evtimer_new(bufferevent_get_base(l->bev), link_timer_cb, l);
    if (l->timer)
        evtimer_add(l->timer, &tv);
    if (link_output_pending(l) == 0)
        link_drained(l);
}

static void link_write_cb(struct bufferevent *bev, void *arg)
{
    struct link *l = arg;

    l->events->written(l->owner);
    if (l->closing && link_output_pending(l) == 0)
        link_drained(l);
}

static void link_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct link *l = arg;
    char why[256], text[160];

    /* Over TLS the end of the handshake arrives here too (BEV_EVENT_CONNECTED). */
    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
        return;
    l->peer_eof = true;
    if (l->closing) {
        link_done(l);
        return;
    }
    bool handshaking = link_handshaking(l);
    if (what & BEV_EVENT_EOF) {
        l->events->lost(l->owner, !handshaking,
                        handshaking ? "closed by the peer during the TLS handshake" : NULL);
        return;
    }
    if (l->ops->handshake && handshaking)
        tls_handshake_failures++;
    if (l->ops->handshake)
        snprintf(why, sizeof(why), "%s: %s",
                 handshaking ? "TLS handshake failed" : "TLS connection lost",
                 l->ops->error_text(l, text, sizeof(text)));
    else
        snprintf(why, sizeof(why), "connection lost: %s",
                 l->ops->error_text(l, text, sizeof(text)));
    l->events->lost(l->owner, false, why);
}
