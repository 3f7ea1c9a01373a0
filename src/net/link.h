/*
 * link — the byte stream under one client connection, whatever carries it.
 *
 * A link runs over one of two things (struct link_stream). A plain socket
 * (TCP, or the WebSocket thread's socketpair) it reads and writes itself:
 * the driver (struct link_driver) polls every such socket in an epoll set of
 * its own, so that a link holds no event, and buffers are made only while
 * bytes wait: an idle connection holds no buffer at all. Anything else (TLS,
 * in-memory pairs in the tests) comes as a bufferevent, which the link owns.
 * It knows
 * the few things that differ between transports:
 * whether a handshake comes before data, how to shut our side only, and how
 * to put a failure into words. Those live behind a small table of operations
 * (struct link_ops), so that nothing above the link asks which transport a
 * client used. It also carries out the end of a connection: what is queued
 * still goes out (the linger), then our side is shut and the peer gets a
 * moment to close its own (the drain), and only then does the owner hear
 * that the link is done.
 *
 * Ownership: the link lives inside its owner (a client connection), which
 * releases it with link_release(); the link owns its socket or bufferevent,
 * its buffers and its timer. The owner's callbacks (struct link_events) may close the link they
 * run on. Core thread only.
 */
#ifndef AVIARY_LINK_H
#define AVIARY_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

struct event;
struct link;

enum link_transport {
    LINK_TCP = 0,
    LINK_TLS = 1,
    LINK_WS = 2,
    LINK_WSS = 3,
};

/* The transport as listeners name it: "tcp", "tls", "ws" or "wss". */
static inline const char *link_transport_name(enum link_transport t)
{
    static const char *const names[] = {"tcp", "tls", "ws", "wss"};
    return (unsigned)t < sizeof(names) / sizeof(names[0]) ? names[t] : "?";
}

/*
 * The peer's address as its socket gave it, for the log: 20 bytes in the
 * link, where its text took a block of 32 of its own. Family 0: unknown
 * (a socket that is neither IPv4 nor IPv6, or an in-memory pair).
 */
struct link_peer {
    uint8_t family; /* AF_INET, AF_INET6 or 0 */
    uint16_t port;  /* host order */
    uint8_t ip[16]; /* network order; IPv4 in the first 4 bytes */
};

/* The text of a peer: "127.0.0.1:53422", "[::1]:53422" or "?" (link_peer_name). */
#define LINK_PEER_SIZE 64

struct link_peer_name {
    char s[LINK_PEER_SIZE];
};

/* The peer at socket address `sa` (`len` bytes); family 0 when it is neither IPv4 nor IPv6. */
struct link_peer link_peer_of(const struct sockaddr *sa, socklen_t len);

/*
 * The peer as text, to pass straight to a format (`link_peer_name(p).s`
 * lives to the end of the full expression that calls it).
 */
struct link_peer_name link_peer_name(const struct link_peer *p);

/* What the listener knows about a new connection. */
struct link_meta {
    enum link_transport transport;
    bool over_tls;         /* arrived over TLS (tls:// and wss://) */
    struct link_peer peer; /* who is at the other end */
};

/*
 * Drives every socket link of an event loop. It polls their sockets in an
 * epoll set of its own, which the loop watches as one descriptor: a
 * libevent event in each link would cost it 128 bytes and an entry in the
 * loop's map of descriptors. It writes their output once per turn of the
 * loop, so that what one turn queues on a link goes out in one write, and
 * keeps the list of links whose reading was put off. Freed after every link
 * that uses it.
 */
struct link_driver;
struct link_driver *link_driver_new(struct event_base *base);
void link_driver_free(struct link_driver *f);

/* Slots of the list of links whose reading waits (link_events.may_read): for tests. */
size_t link_driver_waiting_room(const struct link_driver *f);

/*
 * What a link runs over: a bufferevent `bev` (TLS, in-memory pairs), or, when
 * that is NULL, the connected socket `fd`, driven by `driver`.
 */
struct link_stream {
    struct bufferevent *bev;
    evutil_socket_t fd;
    struct link_driver *driver;
};

/* Free what a stream holds that no link took (its bufferevent, or closes its socket). */
void link_stream_drop(const struct link_stream *s);

/* What the owner hears from its link. `owner` is the pointer given to link_init(). */
struct link_events {
    void (*readable)(void *owner); /* input arrived */
    void (*written)(void *owner);  /* output went out (down to the watermark, if one is set) */
    /*
     * The peer closed or the transport failed. `orderly`: a plain close after
     * any handshake (`why` is NULL then); otherwise `why` says what failed.
     */
    void (*lost)(void *owner, bool orderly, const char *why);
    void (*done)(void *owner); /* after link_close(): the link has nothing left to do */
    /*
     * Optional, over a socket: asked before reading what arrived; false
     * leaves it in the socket and asks again at the next turn of the event
     * loop, after the links put off before it (how a burst of new clients
     * waits). The socket is not polled meanwhile.
     */
    bool (*may_read)(void *owner);
};

/* How one transport differs from the others. */
struct link_ops {
    bool handshake; /* a handshake precedes any data (TLS) */
    /* Shut our side of the stream, or do nothing where that cannot be done in place. */
    void (*shutdown_write)(struct link *l);
    /* Why the transport failed, into `out`. */
    const char *(*error_text)(struct link *l, char *out, size_t size);
};

struct link {
    struct bufferevent *bev; /* owned; NULL over a plain socket */
    struct link_meta meta;
    uint32_t write_low; /* link_watch_output(), at most 4 GB: beside meta, where it packs */
    const struct link_events *events;
    void *owner;
    struct event *timer; /* the linger, then the drain; owned; made at link_close() */
    /* Flags are bits: every connection holds a link. */
    bool any_input : 1;   /* a byte has arrived (over TLS: the handshake is done) */
    bool peer_eof : 1;    /* the peer closed or the transport failed */
    bool closing : 1;     /* link_close() was called */
    bool half_closed : 1; /* closing: our side is shut */

    /* A plain socket (bev NULL): */
    bool reading : 1;       /* wants input: polled for it, or deferred */
    bool in_callback : 1;   /* inside `readable`: the input must stay */
    bool writing_off : 1;   /* link_close(abandon) or a failed write: nothing more is written */
    bool write_waiting : 1; /* the socket was full: polled until it is writable */
    bool deferred : 1;      /* may_read said no: on the driver's waiting list, not polled */
    bool polled_in : 1;     /* what the driver's epoll set watches of the socket */
    bool polled_out : 1;

    uint16_t drain;       /* closing: seconds the peer gets to close after our side is shut */
    evutil_socket_t fd;   /* owned */
    unsigned wait_slot;   /* deferred: where on that list */
    int error;            /* errno of the failure, for the log */
    struct evbuffer *in;  /* owned; NULL while nothing waits to be framed */
    struct evbuffer *out; /* owned; NULL while nothing waits to go out */
    struct link_driver *driver;
    struct link *flush_next, **flush_prev; /* on the driver's list; flush_prev NULL when not */
};

/*
 * Make `l` the link over `stream` (it takes it) and start reading. Over a
 * socket, output is written once the callbacks of this turn of the event
 * loop have run, so what they queue goes out in one write.
 */
void link_init(struct link *l, const struct link_stream *stream, const struct link_meta *meta,
               const struct link_events *events, void *owner);

/* Free the link's socket or bufferevent (what is unsent is dropped), buffers and timer. */
void link_release(struct link *l);

/*
 * The input buffer: whole packets are framed from it in place. NULL when
 * nothing has arrived that is not consumed already (over a socket).
 */
static inline struct evbuffer *link_input(struct link *l)
{
    return l->bev ? bufferevent_get_input(l->bev) : l->in;
}

/* Outside `readable`: the owner has framed what it could; an empty input buffer goes. */
void link_input_settled(struct link *l);

/* Queue `len` bytes for writing. Returns 0 or -1 (out of memory). */
int link_write(struct link *l, const void *data, size_t len);

/*
 * Queue `len` bytes without copying them: `release(data, len, arg)` is called
 * once they are written or dropped. Returns 0 or -1 (nothing was queued).
 */
int link_write_reference(struct link *l, const void *data, size_t len,
                         void (*release)(const void *data, size_t len, void *arg), void *arg);

/* Bytes waiting to be written. */
static inline size_t link_output_pending(const struct link *l)
{
    if (l->bev)
        return evbuffer_get_length(bufferevent_get_output(l->bev));
    return l->out ? evbuffer_get_length(l->out) : 0;
}

/* Stop and start reading (back-pressure and rate limits); input stays buffered. */
void link_pause_reading(struct link *l);
void link_resume_reading(struct link *l);

/* Hear `written` only once the output is down to `low` bytes (0: whenever it is written). */
void link_watch_output(struct link *l, size_t low);

/* TLS handshakes that failed so far, in the whole process. */
uint64_t link_tls_handshake_failures(void);

/*
 * A WebSocket handshake failed (TLS, or the upgrade refused): counted from
 * the WebSocket thread (any thread), read from any.
 */
void link_note_ws_handshake_failure(void);
uint64_t link_ws_handshake_failures(void);

/* Still in the transport's handshake: no data has arrived yet. */
bool link_handshaking(const struct link *l);

/*
 * End the link: stop reading what the peer sends (it is dropped), let what is
 * queued go out for `linger` seconds, then shut our side and give the peer
 * `drain` seconds to close its own (closing on unread input would reset the
 * stream and could destroy the last packet before the peer reads it).
 * `abandon`: drop what is queued and end at once. The owner hears `done`
 * once, perhaps from within this call: it should only queue the freeing.
 */
void link_close(struct link *l, bool abandon, unsigned linger, unsigned drain);

#endif
