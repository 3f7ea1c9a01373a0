/*
 * libFuzzer target for the broker core: whole connections, not single packets.
 *
 * Every input is a small script run against a fresh event_base and broker
 * (desktop mode) with one to four in-memory clients. A client is a
 * bufferevent pair: one end goes to client_accept() as the client's connection,
 * the harness keeps the other as the client's socket. So the protocol state
 * machine, the topic tree, the sessions and the retained store are all the
 * real ones, and only the sockets are simulated. After each record the loop
 * runs until nothing is active (EVLOOP_NONBLOCK runs active callbacks until
 * there are none): packets are read, routed and answered, and closed
 * connections reaped, before the next record.
 *
 * Input:
 *   byte 0   setup: bits 0-1 the number of clients minus one; bits 2-6 pick
 *            tighter limits (see fuzz_limits); bit 7 is ignored.
 *   records  until the input ends, each an op byte and what it needs:
 *            bits 0-1 the client (modulo the number of clients),
 *            bits 2-4 the action:
 *              0-3  DATA: a length, then that many bytes the client sends
 *                   (fewer when the input ends first). The length is one
 *                   byte below 0x80, else two: ((b0 & 0x7f) << 8) | b1.
 *              4    SHUTDOWN: the client half-closes (EOF once its unsent
 *                   bytes are read) and goes on reading.
 *              5    CLOSE: the client vanishes: EOF, or a connection reset
 *                   when the broker has not read all it sent.
 *              6    the client stops reading what the broker sends, or
 *                   starts again.
 *              7    bit 5 clear: fire the connection's timer now (CONNECT
 *                   deadline, keep-alive); set: a transport error.
 *            bit 7: do not run the loop after this record, so the next
 *            record's bytes arrive in the same loop iteration.
 *   DATA on a client whose connection has ended (closed by the broker, shut
 *   down or vanished) opens a new connection first, as a client that
 *   reconnects would; so does the first DATA of every client.
 *
 * What the broker writes is read back and checked: each packet must decode
 * at the connection's protocol level and be one a server sends; the first
 * must be CONNACK and none may follow a refusing one (MQTT-3.2.0-1,
 * MQTT-3.2.2-5). A violation aborts, which the fuzzer reports as a crash.
 *
 * Time: no timer fires by itself within a run. keepalive-min is raised to 30
 * s (so the shortest keep-alive deadline is 45 s), the CONNECT deadline is
 * 10 s and a closed connection lingers at most 5 s, while a run takes
 * milliseconds. Action 7 fires a timer on purpose, deterministically.
 *
 * The broker logs only errors unless FUZZ_BROKER_LOG names a level
 * ("debug", "info", ...); with -close_fd_mask=2 as well, every log line is
 * formatted (and so checked by the sanitizers) but not shown.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "broker/broker.h"
#include "broker/client.h"
#include "broker/conn.h"
#include "broker/core.h"
#include "broker/timers.h"
#include "codec/codec.h"
#include "util/deadlines.h"
#include "util/limits.h"
#include "util/log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAX_CLIENTS 4
/* Raised from the default of 1 s so that no keep-alive deadline can pass during a run. */
#define FUZZ_KEEPALIVE_MIN 30

enum fuzz_action {
    ACT_SHUTDOWN = 4,
    ACT_CLOSE = 5,
    ACT_TOGGLE_READ = 6,
    ACT_KICK = 7,
};

#define OP_CLIENT(op) ((op)&3)
#define OP_ACTION(op) (((op) >> 2) & 7)
#define OP_KICK_ERROR 0x20
#define OP_NO_LOOP 0x80

/* The setup byte's limit choices. */
#define SETUP_TIGHT_WINDOWS 0x04
#define SETUP_TIGHT_SIZES 0x08
#define SETUP_TIGHT_OUTPUT 0x10
#define SETUP_MAX_RETAINED 0x20
#define SETUP_MAX_CONNECTIONS 0x40

struct harness;

/* One simulated client and what it has seen on its current connection. */
struct client {
    struct harness *h;
    unsigned index;
    struct bufferevent *end; /* the client's end of the pair; NULL when it has none */
    uint64_t conn_id;        /* the broker's conn on the other end */
    uint8_t version;         /* that conn's protocol level, once the harness has seen it */
    bool reading;            /* reads what the broker sends */
    bool eof_wanted;         /* shut down: EOF goes out once the broker has read the rest */
    bool eof_sent;           /* the EOF has gone out */
    unsigned packets;        /* packets received on this connection */
    bool refused;            /* a CONNACK with a non-zero code arrived */
};

struct harness {
    struct event_base *base;
    struct broker *broker;
    struct client clients[FUZZ_MAX_CLIENTS];
    unsigned client_count;
    unsigned connections; /* opened so far, to name peers in the log */
};

/* The broker misbehaved: say how and abort, so that libFuzzer keeps the input. */
static void fuzz_fail(const struct client *cl, const char *what, const uint8_t *pkt, size_t len)
{
    fprintf(stderr, "fuzz_broker: client %u (conn %llu, level %u): %s:", cl->index,
            (unsigned long long)cl->conn_id, cl->version, what);
    for (size_t i = 0; i < len && i < 64; i++)
        fprintf(stderr, " %02x", pkt[i]);
    fprintf(stderr, "%s\n", len > 64 ? " ..." : "");
    abort();
}

/*
 * The limits for one run: the defaults, with keep-alive deadlines beyond any
 * run, windows small enough that a short input fills them, and what `setup`
 * asks to tighten further. Each tighter value is one a plan could set.
 */
static void fuzz_limits(uint8_t setup, struct limits *l)
{
    limits_init(l);
    l->keepalive_min = FUZZ_KEEPALIVE_MIN;
    l->max_inflight = 4;
    l->max_queued_messages = 16;
    l->max_subscriptions = 16;
    l->max_outbound_bytes = 64 * 1024;
    if (setup & SETUP_TIGHT_WINDOWS) {
        l->max_inflight = 1;
        l->max_queued_messages = 2;
        l->max_subscriptions = 2;
    }
    if (setup & SETUP_TIGHT_SIZES) {
        l->max_client_id = 8;
        l->max_topic_length = 16;
        l->max_payload = 64;
    }
    if (setup & SETUP_TIGHT_OUTPUT)
        l->max_outbound_bytes = 1024;
    if (setup & SETUP_MAX_RETAINED)
        l->max_retained = 2;
    if (setup & SETUP_MAX_CONNECTIONS)
        l->max_connections = 2;
}

/* The live conn with id `id`, or NULL once it has been freed. */
static struct conn *find_conn(const struct harness *h, uint64_t id)
{
    for (struct conn *c = h->broker->conns; c; c = c->next)
        if (c->id == id)
            return c;
    return NULL;
}

/* The client's conn while it still takes input: not closed, not freed. */
static struct conn *client_conn(const struct client *cl)
{
    if (!cl->end || cl->eof_wanted)
        return NULL;
    struct conn *c = find_conn(cl->h, cl->conn_id);
    return c && c->state != CONN_CLOSING ? c : NULL;
}

/* Learn the protocol level from the conn while it exists; keep it after. */
static uint8_t client_version(struct client *cl)
{
    struct conn *c = find_conn(cl->h, cl->conn_id);
    if (c && c->out.version)
        cl->version = c->out.version;
    return cl->version;
}

static bool server_sends(uint8_t type)
{
    return type != MQTT_CONNECT && type != MQTT_SUBSCRIBE && type != MQTT_UNSUBSCRIBE &&
           type != MQTT_PINGREQ && type >= MQTT_CONNACK && type <= MQTT_AUTH;
}

/* Check one whole packet the broker sent to `cl` (`len` bytes at `pkt`). */
static void client_check_packet(struct client *cl, const uint8_t *pkt, size_t len)
{
    uint8_t version = client_version(cl);
    struct mqtt_packet p;
    int rc;

    if (version) {
        rc = codec_decode(pkt, len, version, &p);
    } else {
        /* Closed and freed before the harness saw its level: any level will do. */
        rc = codec_decode(pkt, len, MQTT_V311, &p);
        if (rc < 0)
            rc = codec_decode(pkt, len, MQTT_V5, &p);
    }
    if (rc < 0)
        fuzz_fail(cl, codec_strerror(rc), pkt, len);
    if (!server_sends(p.type))
        fuzz_fail(cl, "a packet type only clients send", pkt, len);
    if (cl->packets == 0 && p.type != MQTT_CONNACK)
        fuzz_fail(cl, "first packet is not CONNACK", pkt, len);
    if (cl->packets > 0 && p.type == MQTT_CONNACK)
        fuzz_fail(cl, "a second CONNACK", pkt, len);
    if (cl->refused)
        fuzz_fail(cl, "a packet after a refusing CONNACK", pkt, len);
    if (p.type == MQTT_CONNACK && p.u.connack.code != 0)
        cl->refused = true;
    cl->packets++;
}

/* Take whole packets from the client's input, check them, and discard them. */
static void client_read_cb(struct bufferevent *bev, void *arg)
{
    struct client *cl = arg;
    struct evbuffer *in = bufferevent_get_input(bev);

    for (;;) {
        size_t avail = evbuffer_get_length(in);
        uint8_t head[5], type_flags;
        size_t n = avail < sizeof(head) ? avail : sizeof(head), header_len;
        uint32_t remaining;

        if (avail < 2)
            return;
        evbuffer_copyout(in, head, n);
        int rc = codec_frame(head, n, &type_flags, &header_len, &remaining);
        if (rc == CODEC_INCOMPLETE)
            return;
        if (rc < 0)
            fuzz_fail(cl, codec_strerror(rc), head, n);
        size_t total = header_len + remaining;
        if (avail < total)
            return;
        uint8_t *pkt = evbuffer_pullup(in, (ssize_t)total);
        if (!pkt)
            abort(); /* out of memory in the harness */
        client_check_packet(cl, pkt, total);
        evbuffer_drain(in, total);
    }
}

/* EOF to the broker once it has read everything the client sent. */
static void client_try_eof(struct client *cl)
{
    if (cl->eof_sent || evbuffer_get_length(bufferevent_get_output(cl->end)) > 0)
        return;
    cl->eof_sent = true;
    bufferevent_flush(cl->end, EV_WRITE, BEV_FINISHED);
}

static void client_write_cb(struct bufferevent *bev, void *arg)
{
    struct client *cl = arg;
    if (cl->eof_wanted)
        client_try_eof(cl);
}

/* Forget the client's end without a word to the broker (the network went away). */
static void client_drop(struct client *cl)
{
    if (cl->end)
        bufferevent_free(cl->end);
    cl->end = NULL;
}

/* A new connection for `cl`, replacing whatever it had. Returns 0 or -1 (out of memory). */
static int client_connect(struct client *cl)
{
    struct harness *h = cl->h;
    struct bufferevent *pair[2];
    char peer[LINK_PEER_SIZE];
    struct link_meta meta = {.transport = LINK_TCP, .peer = peer};

    client_drop(cl);
    /* Deferred callbacks (pairs always use them): no callback runs inside another's write. */
    if (bufferevent_pair_new(h->base, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS, pair) < 0)
        return -1;
    snprintf(peer, sizeof(peer), "10.0.0.%u:%u", cl->index + 1, ++h->connections);
    struct conn *c = client_accept(h->broker, &(struct link_stream){.bev = pair[0]},
                                   &meta); /* takes pair[0] in any case */
    if (!c) {
        bufferevent_free(pair[1]);
        return -1;
    }
    *cl = (struct client){
        .h = h, .index = cl->index, .end = pair[1], .conn_id = c->id, .reading = true};
    bufferevent_setcb(cl->end, client_read_cb, client_write_cb, NULL, cl);
    bufferevent_enable(cl->end, EV_READ | EV_WRITE);
    return 0;
}

static void client_send(struct client *cl, const uint8_t *data, size_t len)
{
    if (!client_conn(cl) && client_connect(cl) < 0)
        return;
    if (len && bufferevent_write(cl->end, data, len) < 0)
        abort(); /* out of memory in the harness */
}

/* The client vanishes: EOF when the broker has read all it sent, else a reset. */
static void client_close(struct client *cl)
{
    if (!cl->end)
        return;
    if (evbuffer_get_length(bufferevent_get_output(cl->end)) == 0) {
        bufferevent_flush(cl->end, EV_WRITE, BEV_FINISHED);
    } else {
        struct conn *c = find_conn(cl->h, cl->conn_id);
        errno = ECONNRESET;
        if (c)
            bufferevent_trigger_event(c->link.bev, BEV_EVENT_ERROR | BEV_EVENT_WRITING, 0);
    }
    client_drop(cl);
}

static void client_shutdown(struct client *cl)
{
    if (!cl->end || cl->eof_wanted)
        return;
    cl->eof_wanted = true;
    client_try_eof(cl);
}

static void client_toggle_read(struct client *cl)
{
    if (!cl->end)
        return;
    cl->reading = !cl->reading;
    if (cl->reading)
        bufferevent_enable(cl->end, EV_READ);
    else
        bufferevent_disable(cl->end, EV_READ);
}

/* Fire the conn's timer, or report a transport error on it, as the network could. */
static void client_kick(struct client *cl, bool error)
{
    struct conn *c = cl->end ? find_conn(cl->h, cl->conn_id) : NULL;

    if (!c)
        return;
    if (error) {
        errno = ECONNRESET;
        bufferevent_trigger_event(c->link.bev, BEV_EVENT_ERROR | BEV_EVENT_READING, 0);
    } else if (deadline_set(&c->deadline)) { /* as the deadlines' heap would at its time */
        deadlines_cancel(cl->h->broker->deadlines, &c->deadline);
        timers_conn_due(&c->deadline);
    }
}

/* Run callbacks until none is active: EVLOOP_NONBLOCK returns only then. */
static void harness_settle(struct harness *h)
{
    if (event_base_loop(h->base, EVLOOP_NONBLOCK) < 0)
        abort();
}

/* Set up the base, the broker and `count` clients (not yet connected). Returns 0 or -1. */
static int harness_init(struct harness *h, uint8_t setup)
{
    struct limits limits;

    memset(h, 0, sizeof(*h));
    fuzz_limits(setup, &limits);
    h->client_count = (setup & 3) + 1u;
    for (unsigned i = 0; i < FUZZ_MAX_CLIENTS; i++)
        h->clients[i] = (struct client){.h = h, .index = i};
    h->base = event_base_new();
    if (!h->base)
        return -1;
    h->broker = broker_new(h->base, &limits);
    return h->broker ? 0 : -1;
}

/* Free everything, so that LeakSanitizer sees only what the broker lost. */
static void harness_free(struct harness *h)
{
    broker_free(h->broker);
    for (unsigned i = 0; i < FUZZ_MAX_CLIENTS; i++)
        client_drop(&h->clients[i]);
    if (h->base) {
        /* Freed bufferevents finish (and release their buffers) in the loop. */
        harness_settle(h);
        event_base_free(h->base);
    }
}

/* Read one DATA length at *pos; advances *pos. */
static size_t read_length(const uint8_t *data, size_t size, size_t *pos)
{
    if (*pos >= size)
        return 0;
    size_t len = data[(*pos)++];
    if (len < 0x80)
        return len;
    len = (len & 0x7f) << 8;
    if (*pos < size)
        len |= data[(*pos)++];
    return len;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *level = getenv("FUZZ_BROKER_LOG");
    int parsed = level ? log_level_parse(level) : -1;

    /*
     * Not event_enable_debug_mode(): libevent 2.1.12 keeps a debug-map entry
     * for every bufferevent it frees, so every run would end with more
     * mallocs than frees and libFuzzer would soon give up leak detection.
     */
    log_open("fuzz_broker", parsed >= 0 ? (enum log_level)parsed : LOG_LEVEL_ERROR, false);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct harness h;
    size_t pos = 1;

    if (size == 0)
        return 0;
    if (harness_init(&h, data[0]) < 0)
        goto out;
    while (pos < size) {
        uint8_t op = data[pos++];
        struct client *cl = &h.clients[OP_CLIENT(op) % h.client_count];

        switch (OP_ACTION(op)) {
        case ACT_SHUTDOWN:
            client_shutdown(cl);
            break;
        case ACT_CLOSE:
            client_close(cl);
            break;
        case ACT_TOGGLE_READ:
            client_toggle_read(cl);
            break;
        case ACT_KICK:
            client_kick(cl, op & OP_KICK_ERROR);
            break;
        default: {
            size_t len = read_length(data, size, &pos);
            if (len > size - pos)
                len = size - pos;
            client_send(cl, data + pos, len);
            pos += len;
            break;
        }
        }
        if (!(op & OP_NO_LOOP))
            harness_settle(&h);
    }
    harness_settle(&h);
out:
    harness_free(&h);
    return 0;
}
