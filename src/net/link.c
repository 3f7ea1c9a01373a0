#include "net/link.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

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
static void socket_readable(struct link *l);
static void socket_writable(struct link *l);
static void socket_flush(struct link *l);
static void socket_read(struct link *l);
static void socket_failed(struct link *l, short what, int error);
static void resume_cb(evutil_socket_t fd, short what, void *arg);

/* Readiness taken from the epoll set at a time; more waits for the next round. */
#define LINK_POLL_BATCH 64
/* Rounds of one poll callback at most, so that timers and the listener get their turn. */
#define LINK_POLL_ROUNDS 64

struct link_driver {
    struct event_base *base;
    int epfd;           /* the epoll set of every socket link; owned */
    struct event *poll; /* the loop's event for `epfd` */
    /*
     * The round being dispatched: batch[next..count) are still to come. A
     * link released meanwhile has its entries cleared (poll_forget).
     */
    struct epoll_event batch[LINK_POLL_BATCH];
    int batch_next, batch_count;
    struct event *flush; /* active while `head` is not empty */
    struct link *head;   /* links with output to write this turn */
    /*
     * Links whose owner put off reading (link_events.may_read), oldest
     * first from waiting[first]; a slot is NULL once its link has gone.
     * They are not polled for input, so that the poll does not return them
     * every turn; `resume` (a zero timer: the next turn) reads them again.
     */
    struct event *resume;
    struct link **waiting;
    size_t first, count, room;
};

/*
 * Per readable or writable socket at most this much is read or written, as a
 * bufferevent does: one busy connection does not starve the others.
 */
#define LINK_IO_MAX 16384

static evutil_socket_t link_fd(const struct link *l)
{
    return l->bev ? bufferevent_getfd(l->bev) : l->fd;
}

static struct event_base *link_base(struct link *l)
{
    return l->bev ? bufferevent_get_base(l->bev) : l->driver->base;
}

/*
 * Make the epoll set watch what the link wants now: input while it reads
 * and is not put off, output while its socket is full. Returns 0, or -1
 * when the set could not be changed (out of memory); then nothing changed.
 */
static int poll_update(struct link *l)
{
    bool in = l->reading && !l->deferred, out = l->write_waiting;

    if (in == l->polled_in && out == l->polled_out)
        return 0;
    int op = !l->polled_in && !l->polled_out ? EPOLL_CTL_ADD
             : !in && !out                   ? EPOLL_CTL_DEL
                                             : EPOLL_CTL_MOD;
    struct epoll_event ev = {.events = (in ? EPOLLIN : 0) | (out ? EPOLLOUT : 0), .data.ptr = l};
    if (epoll_ctl(l->driver->epfd, op, l->fd, &ev) < 0 && op != EPOLL_CTL_DEL)
        return -1;
    l->polled_in = in;
    l->polled_out = out;
    return 0;
}

/* `l` is going: what the round being dispatched holds for it is dropped. */
static void poll_forget(struct link *l)
{
    struct link_driver *d = l->driver;

    for (int i = d->batch_next; i < d->batch_count; i++)
        if (d->batch[i].data.ptr == l)
            d->batch[i].data.ptr = NULL;
}

/*
 * The epoll set has ready sockets. Level-triggered: what a round leaves is
 * reported again. A hang-up or an error goes to whichever side is polled,
 * whose read or write then meets it.
 */
static void poll_cb(evutil_socket_t fd, short what, void *arg)
{
    struct link_driver *d = arg;

    for (int round = 0; round < LINK_POLL_ROUNDS; round++) {
        int n = epoll_wait(d->epfd, d->batch, LINK_POLL_BATCH, 0);
        if (n <= 0)
            break;
        d->batch_count = n;
        for (d->batch_next = 0; d->batch_next < d->batch_count;) {
            struct epoll_event *e = &d->batch[d->batch_next++];
            struct link *l = e->data.ptr;
            if (l && l->polled_in && (e->events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                socket_readable(l);
            l = e->data.ptr; /* NULL if reading released it */
            if (l && l->polled_out && (e->events & (EPOLLOUT | EPOLLHUP | EPOLLERR)))
                socket_writable(l);
        }
        d->batch_count = d->batch_next = 0;
        if (n < LINK_POLL_BATCH)
            break;
    }
}

static void tcp_shutdown_write(struct link *l)
{
    evutil_socket_t fd = link_fd(l);
    if (fd >= 0)
        shutdown(fd, SHUT_WR);
}

/* TLS cannot be half-closed under OpenSSL's feet: there the peer's close ends it. */
static void tls_shutdown_write(struct link *l)
{
}

static const char *tcp_link_error(struct link *l, char *out, size_t size)
{
    snprintf(out, size, "%s", strerror(l->bev ? errno : l->error));
    return out;
}

static const char *tls_link_error(struct link *l, char *out, size_t size)
{
    return tls_bufferevent_error(l->bev, out, size);
}

/* The WebSocket thread speaks TLS to the browser; the core sees a plain socketpair. */
static const struct link_ops tcp_ops = {false, tcp_shutdown_write, tcp_link_error};
static const struct link_ops tls_ops = {true, tls_shutdown_write, tls_link_error};

/* A link's operations follow from its transport: no pointer to them in every link. */
static const struct link_ops *link_ops(const struct link *l)
{
    return l->meta.transport == LINK_TLS ? &tls_ops : &tcp_ops;
}

/* Off the driver's list of links to write, if on it. */
static void flush_unqueue(struct link *l)
{
    if (!l->flush_prev)
        return;
    *l->flush_prev = l->flush_next;
    if (l->flush_next)
        l->flush_next->flush_prev = l->flush_prev;
    l->flush_next = NULL;
    l->flush_prev = NULL;
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    struct link_driver *d = arg;
    struct link *l;

    /* What a link's `written` queues on another link is written in this same pass. */
    while ((l = d->head)) {
        flush_unqueue(l);
        socket_flush(l);
    }
}

static const struct timeval next_turn = {0, 0};

/* Off the list of links waiting to read, if on it. */
static void socket_unwait(struct link *l)
{
    if (!l->deferred)
        return;
    l->driver->waiting[l->wait_slot] = NULL;
    l->deferred = false;
}

/*
 * Room for one more link at the end of the waiting list. While new links
 * keep coming the list never empties, so the front that resume_cb has read
 * is reused once it is at least half of the list (the links move there,
 * without the slots of links gone); only a list over half full grows.
 * Returns 0, or -1 when it cannot grow.
 */
static int waiting_make_room(struct link_driver *d)
{
    if (d->first + d->count < d->room)
        return 0;
    if (d->first > 0 && d->first >= d->count) {
        size_t kept = 0;
        for (size_t i = d->first; i < d->first + d->count; i++) {
            struct link *l = d->waiting[i];
            if (l) {
                l->wait_slot = (unsigned)kept;
                d->waiting[kept++] = l;
            }
        }
        d->first = 0;
        d->count = kept;
        return 0;
    }
    size_t room = d->room ? 2 * d->room : 64;
    struct link **waiting = realloc(d->waiting, room * sizeof(*waiting));
    if (!waiting)
        return -1;
    d->waiting = waiting;
    d->room = room;
    return 0;
}

/*
 * The owner put off reading: stop polling the socket until the next turn,
 * when resume_cb asks again, oldest first. If the list cannot grow, the
 * socket stays polled and the poll reports it again instead.
 */
static void socket_defer(struct link *l)
{
    struct link_driver *d = l->driver;

    if (waiting_make_room(d) < 0)
        return;
    l->deferred = true;
    if (poll_update(l) < 0) {
        l->deferred = false;
        return;
    }
    l->wait_slot = (unsigned)(d->first + d->count);
    d->waiting[d->first + d->count++] = l;
    if (!evtimer_pending(d->resume, NULL))
        evtimer_add(d->resume, &next_turn);
}

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct link_driver *d = arg;

    while (d->count > 0) {
        struct link *l = d->waiting[d->first];
        if (l && !l->closing && !l->events->may_read(l->owner))
            break;
        d->first++;
        d->count--;
        if (!l)
            continue;
        l->deferred = false;
        if (poll_update(l) < 0) {
            socket_failed(l, BEV_EVENT_READING | BEV_EVENT_ERROR, ENOMEM);
            continue;
        }
        socket_read(l); /* what waited in the socket; this may end the link */
    }
    if (d->count > 0) {
        evtimer_add(d->resume, &next_turn);
        return;
    }
    d->first = 0;
    if (d->room > 4096) { /* a burst is over: give its list back */
        free(d->waiting);
        d->waiting = NULL;
        d->room = 0;
    }
}

struct link_driver *link_driver_new(struct event_base *base)
{
    struct link_driver *d = calloc(1, sizeof(*d));

    if (!d)
        return NULL;
    d->base = base;
    d->epfd = epoll_create1(EPOLL_CLOEXEC);
    d->poll = d->epfd >= 0 ? event_new(base, d->epfd, EV_READ | EV_PERSIST, poll_cb, d) : NULL;
    d->flush = event_new(base, -1, 0, flush_cb, d);
    d->resume = evtimer_new(base, resume_cb, d);
    if (!d->poll || event_add(d->poll, NULL) < 0 || !d->flush || !d->resume) {
        link_driver_free(d);
        return NULL;
    }
    return d;
}

size_t link_driver_waiting_room(const struct link_driver *d)
{
    return d->room;
}

void link_driver_free(struct link_driver *d)
{
    if (!d)
        return;
    if (d->poll)
        event_free(d->poll);
    if (d->epfd >= 0)
        close(d->epfd);
    if (d->flush)
        event_free(d->flush);
    if (d->resume)
        event_free(d->resume);
    free(d->waiting);
    free(d);
}

void link_stream_drop(const struct link_stream *s)
{
    if (s->bev)
        bufferevent_free(s->bev);
    else if (s->fd >= 0)
        evutil_closesocket(s->fd);
}

struct link_peer link_peer_of(const struct sockaddr *sa, socklen_t len)
{
    struct link_peer p = {0};

    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        p.family = AF_INET;
        p.port = ntohs(in->sin_port);
        memcpy(p.ip, &in->sin_addr, sizeof(in->sin_addr));
    } else if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        p.family = AF_INET6;
        p.port = ntohs(in6->sin6_port);
        memcpy(p.ip, &in6->sin6_addr, sizeof(in6->sin6_addr));
    }
    return p;
}

struct link_peer_name link_peer_name(const struct link_peer *p)
{
    struct link_peer_name name = {"?"};
    char host[INET6_ADDRSTRLEN];

    if (p->family && inet_ntop(p->family, p->ip, host, sizeof(host)))
        snprintf(name.s, sizeof(name.s), p->family == AF_INET6 ? "[%s]:%u" : "%s:%u", host,
                 (unsigned)p->port);
    return name;
}

void link_init(struct link *l, const struct link_stream *stream, const struct link_meta *meta,
               const struct link_events *events, void *owner)
{
    *l = (struct link){.bev = stream->bev, .meta = *meta, .events = events, .owner = owner};
    if (l->bev) {
        bufferevent_setcb(l->bev, link_read_cb, link_write_cb, link_event_cb, l);
        bufferevent_enable(l->bev, EV_READ | EV_WRITE);
        return;
    }
    l->fd = stream->fd;
    l->driver = stream->driver;
    /* Out of memory, the link never reads: the connect timeout ends it. */
    l->reading = true;
    if (poll_update(l) < 0)
        l->reading = false;
}

void link_release(struct link *l)
{
    if (l->timer)
        event_free(l->timer);
    if (l->bev) {
        bufferevent_free(l->bev);
        return;
    }
    l->reading = l->write_waiting = false;
    poll_update(l);
    poll_forget(l);
    socket_unwait(l);
    flush_unqueue(l);
    if (l->in)
        evbuffer_free(l->in);
    if (l->out)
        evbuffer_free(l->out);
    evutil_closesocket(l->fd);
}

void link_pause_reading(struct link *l)
{
    if (l->bev) {
        bufferevent_disable(l->bev, EV_READ);
    } else if (l->reading) {
        socket_unwait(l);
        l->reading = false;
        poll_update(l); /* taking away cannot fail */
    }
}

void link_resume_reading(struct link *l)
{
    if (l->bev)
        bufferevent_enable(l->bev, EV_READ);
    else if (!l->reading && !l->peer_eof) {
        l->reading = true;
        if (poll_update(l) < 0)
            l->reading = false;
    }
}

void link_watch_output(struct link *l, size_t low)
{
    if (l->bev)
        bufferevent_setwatermark(l->bev, EV_WRITE, low, 0);
    else
        l->write_low = low > UINT32_MAX ? UINT32_MAX : (uint32_t)low;
}

void link_input_settled(struct link *l)
{
    if (l->in && !l->in_callback && evbuffer_get_length(l->in) == 0) {
        evbuffer_free(l->in);
        l->in = NULL;
    }
}

/* The output buffer of a socket link, made when first needed; NULL when out of memory. */
static struct evbuffer *socket_output(struct link *l)
{
    if (!l->out)
        l->out = evbuffer_new();
    return l->out;
}

/* Something was queued: write it once this turn of the loop has run its callbacks. */
static void socket_schedule_write(struct link *l)
{
    struct link_driver *d = l->driver;

    if (l->flush_prev || l->write_waiting || l->writing_off)
        return;
    if (!d->head)
        event_active(d->flush, EV_WRITE, 1);
    l->flush_next = d->head;
    if (d->head)
        d->head->flush_prev = &l->flush_next;
    l->flush_prev = &d->head;
    d->head = l;
}

int link_write(struct link *l, const void *data, size_t len)
{
    if (l->bev)
        return evbuffer_add(bufferevent_get_output(l->bev), data, len);
    struct evbuffer *out = socket_output(l);
    if (!out || evbuffer_add(out, data, len) < 0)
        return -1;
    socket_schedule_write(l);
    return 0;
}

int link_write_reference(struct link *l, const void *data, size_t len,
                         void (*release)(const void *data, size_t len, void *arg), void *arg)
{
    if (l->bev)
        return evbuffer_add_reference(bufferevent_get_output(l->bev), data, len, release, arg);
    struct evbuffer *out = socket_output(l);
    if (!out || evbuffer_add_reference(out, data, len, release, arg) < 0)
        return -1;
    socket_schedule_write(l);
    return 0;
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
    return link_ops(l)->handshake && !l->any_input;
}

static void link_read_cb(struct bufferevent *bev, void *arg)
{
    struct link *l = arg;

    l->any_input = true;
    if (l->closing) { /* what the peer still sends is dropped */
        struct evbuffer *in = link_input(l);
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
    if (l->peer_eof || !l->timer || link_fd(l) < 0) {
        link_done(l);
        return;
    }
    if (l->half_closed)
        return;
    l->half_closed = true;
    link_ops(l)->shutdown_write(l);
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
    l->drain = drain > UINT16_MAX ? UINT16_MAX : (uint16_t)drain;
    if (abandon) {
        if (l->bev) {
            bufferevent_disable(l->bev, EV_READ | EV_WRITE);
        } else {
            link_pause_reading(l);
            flush_unqueue(l);
            l->write_waiting = false;
            poll_update(l);
            l->writing_off = true;
        }
        l->events->done(l->owner);
        return;
    }
    /* What is queued (a CONNACK, a DISCONNECT) still goes out; what comes in is dropped. */
    if (l->bev) {
        bufferevent_setwatermark(l->bev, EV_WRITE, 0, 0);
        bufferevent_enable(l->bev, EV_READ | EV_WRITE);
    } else {
        l->write_low = 0;
        link_resume_reading(l);
    }
    struct timeval tv = {(time_t)linger, 0};
    l->timer = evtimer_new(link_base(l), link_timer_cb, l);
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
    if (link_ops(l)->handshake && handshaking)
        tls_handshake_failures++;
    if (link_ops(l)->handshake)
        snprintf(why, sizeof(why), "%s: %s",
                 handshaking ? "TLS handshake failed" : "TLS connection lost",
                 link_ops(l)->error_text(l, text, sizeof(text)));
    else
        snprintf(why, sizeof(why), "connection lost: %s",
                 link_ops(l)->error_text(l, text, sizeof(text)));
    l->events->lost(l->owner, false, why);
}

/* A read or write that failed only for now (Linux's EAGAIN and EWOULDBLOCK are one). */
static bool io_retriable(int error)
{
    return error == EAGAIN || error == EINTR;
}

/* The peer closed (`error` 0) or the socket failed: reported as a bufferevent would. */
static void socket_failed(struct link *l, short what, int error)
{
    link_pause_reading(l);
    l->error = error;
    link_event_cb(NULL, what, l);
}

static void socket_readable(struct link *l)
{
    if (l->events->may_read && !l->closing && !l->events->may_read(l->owner)) {
        socket_defer(l);
        return;
    }
    socket_read(l);
}

static void socket_read(struct link *l)
{
    if (!l->in && !(l->in = evbuffer_new())) {
        socket_failed(l, BEV_EVENT_READING | BEV_EVENT_ERROR, ENOMEM);
        return;
    }
    int n = evbuffer_read(l->in, l->fd, LINK_IO_MAX);
    if (n <= 0) {
        int error = n < 0 ? EVUTIL_SOCKET_ERROR() : 0;
        if (n < 0 && io_retriable(error))
            return;
        link_input_settled(l);
        socket_failed(l, BEV_EVENT_READING | (n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR), error);
        return;
    }
    l->in_callback = true;
    link_read_cb(NULL, l);
    l->in_callback = false;
    link_input_settled(l);
}

/* Write what the socket takes; wait for it to be writable for the rest. */
static void socket_flush(struct link *l)
{
    if (l->writing_off || !l->out)
        return;
    int n = evbuffer_write_atmost(l->out, l->fd, LINK_IO_MAX);
    int error = n < 0 ? EVUTIL_SOCKET_ERROR() : 0;
    if (n < 0 && !io_retriable(error)) {
        l->writing_off = true;
        socket_failed(l, BEV_EVENT_WRITING | BEV_EVENT_ERROR, error);
        return;
    }
    if (evbuffer_get_length(l->out) > 0) { /* the rest once the socket takes more */
        l->write_waiting = true;
        if (poll_update(l) < 0) {
            l->write_waiting = false;
            l->writing_off = true;
            socket_failed(l, BEV_EVENT_WRITING | BEV_EVENT_ERROR, ENOMEM);
            return;
        }
    } else { /* an idle connection keeps no buffer; `written` may make a new one */
        evbuffer_free(l->out);
        l->out = NULL;
    }
    if (n > 0 && link_output_pending(l) <= l->write_low)
        link_write_cb(NULL, l);
}

/*
 * The set is told only once the flush is done: a socket that takes part of
 * the output stays polled for output without a change to the set either way.
 */
static void socket_writable(struct link *l)
{
    l->write_waiting = false;
    socket_flush(l);
    poll_update(l); /* taking away cannot fail */
}
