#include "broker/client.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "broker/conn.h"
#include "broker/core.h"
#include "broker/durable.h"
#include "broker/handlers.h"
#include "broker/instance.h"
#include "broker/packet_size.h"
#include "broker/session.h"
#include "broker/systopic.h"
#include "broker/timers.h"
#include "util/clock.h"
#include "util/log.h"

/* At most one line per instance this often about publishers held back for the writer. */
#define CLIENT_KEPT_LOG_INTERVAL_SEC 10

static void client_readable(void *owner);
static void client_written(void *owner);
static void client_lost(void *owner, bool orderly, const char *why);
static void client_done(void *owner);

static bool client_may_read(void *owner);

static const struct link_events client_events = {
    client_readable, client_written, client_lost, client_done, client_may_read,
};

/*
 * A burst of new connections must not stall the clients already served: the
 * first packets of a connection (its CONNECT, its first SUBSCRIBEs) are read
 * for the first few new connections of each turn of the loop, and after them
 * only until this long has passed since the first. The others stay in their
 * sockets until a later turn.
 */
#define CLIENT_YOUNG_PACKETS 3
#define CLIENT_YOUNG_TURN_US 5000
#define CLIENT_YOUNG_MIN_PER_TURN 8

static bool client_may_read(void *owner)
{
    struct conn *c = owner;
    struct broker *b = c->broker;
    struct timeval turn;

    if (c->early_packets >= CLIENT_YOUNG_PACKETS)
        return true;
    /*
     * The cached time is taken once per turn, after polling: it names the
     * turn. It is not compared with another clock: libevent derives it from
     * the monotonic clock and corrects it to the wall clock only now and then.
     */
    event_base_gettimeofday_cached(b->base, &turn);
    if (evutil_timercmp(&turn, &b->young_turn, !=)) {
        b->young_turn = turn;
        b->young_since_us = clock_us();
        b->young_admitted = 0;
    }
    if (b->young_admitted < CLIENT_YOUNG_MIN_PER_TURN ||
        clock_us() - b->young_since_us < CLIENT_YOUNG_TURN_US) {
        b->young_admitted++;
        return true;
    }
    b->young_deferred++;
    return false;
}

struct conn *client_accept(struct broker *b, const struct link_stream *stream,
                           const struct link_meta *meta)
{
    struct conn *c = conn_new(b, stream, meta, &client_events);

    if (c && timers_start_connect(c) == 0)
        log_debug("conn %llu: accepted from %s", (unsigned long long)c->id,
                  link_peer_name(&meta->peer).s);
    return c;
}

static void client_lost(void *owner, bool orderly, const char *why)
{
    if (orderly)
        conn_close(owner, "connection lost: closed by the peer without DISCONNECT");
    else
        conn_close(owner, "%s", why);
}

static void client_done(void *owner)
{
    conn_reap_later(owner);
}

/* max-outbound-bytes of the connection's instance. */
static size_t client_max_outbound(const struct conn *c)
{
    return sender_max_outbound(&c->out);
}

/* The limits that apply to what the client sends: its instance's once logged in. */
static const struct limits *client_limits(const struct conn *c)
{
    return c->session ? &c->session->instance->limits : &c->broker->limits;
}

/* The MQTT 5 reason code for a packet the codec refused. */
static uint8_t client_decode_reason(int err)
{
    return err == CODEC_E_PROPERTY_PROTOCOL || err == CODEC_E_PACKET_ID || err == CODEC_E_TOPIC
               ? MQTT_RC_PROTOCOL_ERROR
               : MQTT_RC_MALFORMED_PACKET;
}

static int client_pingreq(struct conn *c)
{
    struct mqtt_packet resp = {.type = MQTT_PINGRESP};
    return conn_send(c, &resp);
}

/* Hand `p` to its handler. Returns 0, or -1 when the connection must close. */
static int client_dispatch(struct conn *c, const struct mqtt_packet *p)
{
    /* client_read has made sure the first packet is a CONNECT. */
    switch (p->type) {
    case MQTT_CONNECT:
        if (c->state != CONN_AWAIT_CONNECT)
            return conn_fail_with(c, MQTT_RC_PROTOCOL_ERROR, "second CONNECT on one connection");
        return handle_connect(c, p);
    case MQTT_PUBLISH:
        return handle_publish(c, p);
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        return handle_ack(c, p);
    case MQTT_SUBSCRIBE:
        return handle_subscribe(c, p);
    case MQTT_UNSUBSCRIBE:
        return handle_unsubscribe(c, p);
    case MQTT_PINGREQ:
        return client_pingreq(c);
    case MQTT_DISCONNECT:
        return handle_disconnect(c, p);
    case MQTT_AUTH:
        /* AUTH continues an authentication method, and aviary offers none. */
        return conn_fail_with(c, MQTT_RC_PROTOCOL_ERROR,
                              "AUTH without enhanced authentication (none is offered)");
    default:
        return conn_fail_with(c, MQTT_RC_PROTOCOL_ERROR, "packet type %d is not sent to a server",
                              p->type);
    }
}

/*
 * CONNECT with a protocol name or level we do not speak: answer CONNACK when
 * the name is one of MQTT's. A level above 5 comes from a client newer than
 * us: it gets MQTT 5's CONNACK 0x84 (MQTT 5 3.1.2.2); older ones 3.1.1's 1.
 */
static int client_refuse_protocol(struct conn *c, const uint8_t *buf, size_t len)
{
    struct mqtt_packet p;
    codec_decode(buf, len, 0, &p);
    const struct mqtt_buf *name = &p.u.connect.protocol_name;
    bool mqtt = name->len == 4 && memcmp(name->data, "MQTT", 4) == 0;
    bool known_name = mqtt || (name->len == 6 && memcmp(name->data, "MQIsdp", 6) == 0);
    if (!known_name)
        return conn_fail(c, "CONNECT with an unknown protocol name");

    struct mqtt_packet ack = {.type = MQTT_CONNACK};
    char why[64];
    bool newer = mqtt && p.u.connect.version > MQTT_V5;
    c->out.version = newer ? MQTT_V5 : MQTT_V311;
    ack.u.connack.code = newer ? MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION : MQTT_CONNACK_BAD_VERSION;
    snprintf(why, sizeof(why), "protocol level %u is not served (3, 4 and 5 are)",
             p.u.connect.version);
    sender_send_why(&c->out, &ack, newer ? why : NULL);
    return conn_fail(c, "CONNACK %s: unsupported protocol level %u", newer ? "0x84" : "1",
                     p.u.connect.version);
}

/*
 * A client that does not read what we send (acknowledgements, PINGRESP, its
 * messages) must not make us buffer without bound: stop reading its input
 * until it has read its output down to half of max-outbound-bytes.
 */
static void client_pause_reading(struct conn *c)
{
    size_t max = client_max_outbound(c);

    c->reading_paused = true;
    link_pause_reading(&c->link);
    link_watch_output(&c->link, max / 2);
    log_info("client %s (%s): %zu bytes of output pending (max-outbound-bytes %zu): "
             "not reading its input until it reads",
             c->client_id, link_peer_name(&c->link.meta.peer).s, sender_pending(&c->out), max);
}

/* The client has read its output down to half the limit: take its input again. */
static void client_written(void *owner)
{
    struct conn *c = owner;

    sender_settle(&c->out);
    if (!c->reading_paused || c->state != CONN_ACTIVE ||
        sender_pending(&c->out) > client_max_outbound(c) / 2)
        return;
    c->reading_paused = false;
    link_watch_output(&c->link, 0);
    if (c->rate_paused || c->kept_paused || c->cluster_paused)
        return; /* the rate timer, the database writer or the cluster takes the input again */
    link_resume_reading(&c->link);
    log_debug("client %s: output drained, reading again", c->client_id);
    /* Packets that arrived meanwhile are already buffered: no read event will announce them. */
    client_readable(c);
}

static void client_rate_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    c->rate_paused = false;
    if (c->state != CONN_ACTIVE || c->reading_paused || c->kept_paused || c->cluster_paused)
        return; /* the write callback (or the writer, or the cluster) takes the input again */
    link_resume_reading(&c->link);
    /* The PUBLISH that found the bucket empty is still buffered: no read event will come. */
    client_readable(c);
}

/* The first PUBLISH over a message rate in a while: the log, and $events, hear of it. */
static void client_rate_note(struct conn *c)
{
    const struct limits *l = &c->instance->limits;
    /* The instance's bucket is asked first: empty, it is the one that said no. */
    bool instance_rate = l->max_instance_messages_per_second && c->instance->rate.tokens < 1.0;
    char why[160];

    snprintf(why, sizeof(why),
             "over max-messages-per-second (connection %zu, instance %zu): reading slower",
             l->max_messages_per_second, l->max_instance_messages_per_second);
    log_debug("client %s: %s", c->client_id, why);
    if (c->session)
        systopic_refused(c->instance, c->session->client_id, "publish",
                         instance_rate ? "max-instance-messages-per-second"
                                       : "max-messages-per-second",
                         NULL, why);
}

/*
 * Over the rate: stop reading until the bucket holds a token again. The
 * client's packets wait in its socket and, beyond, in its own send buffer:
 * back-pressure, nothing lost.
 */
static void client_rate_pause(struct conn *c, double wait)
{
    struct timeval delay = {(time_t)wait, (suseconds_t)((wait - (double)(time_t)wait) * 1e6) + 1};

    struct conn_rare *rare = conn_rare(c);
    if (rare && !rare->rate_timer)
        rare->rate_timer = evtimer_new(c->broker->base, client_rate_timer_cb, c);
    if (!rare || !rare->rate_timer) {
        conn_close(c, "out of memory pacing its messages");
        return;
    }
    if (!c->rate_paused)
        client_rate_note(c);
    c->rate_paused = true;
    link_pause_reading(&c->link);
    evtimer_add(rare->rate_timer, &delay);
}

/* Its max-messages-per-second bucket, made at its first PUBLISH under the limit; NULL: no memory.
 */
static struct bucket *client_rate_bucket(struct conn *c)
{
    struct conn_rare *rare = conn_rare(c);

    if (rare && !rare->rate)
        rare->rate = calloc(1, sizeof(*rare->rate));
    return rare ? rare->rate : NULL;
}

/*
 * The database writer is behind with the instance's changes: its publishers
 * wait (back-pressure, as over a rate) until client_keep_resume().
 */
static void client_keep_pause(struct conn *c)
{
    struct instance *inst = c->instance;

    if (!c->kept_paused &&
        log_every_due(&inst->kept_slowed, time(NULL), CLIENT_KEPT_LOG_INTERVAL_SEC))
        log_notice("instance %s: %zu bytes of changes wait for the database writer: its "
                   "publishers are read slower (%llu times so far)",
                   inst->name, inst->kept_backlog->bytes,
                   (unsigned long long)inst->kept_slowed.count);
    c->kept_paused = true;
    link_pause_reading(&c->link);
}

void client_keep_resume(struct conn *c)
{
    if (!c->kept_paused)
        return;
    c->kept_paused = false;
    if (c->state == CONN_ACTIVE && !c->reading_paused && !c->rate_paused && !c->cluster_paused)
        client_read_again(c);
}

/*
 * This node's messages are too far ahead of its stream in Redis (core.h,
 * hold_publishers): its publishers wait, as for the database writer, rather
 * than Redis dropping the node's subscription and what it holds. The
 * cluster logs and counts the pause, once for all of them.
 */
static bool client_cluster_held(struct conn *c)
{
    if (!c->broker->cluster || !c->broker->cluster->hold_publishers)
        return false;
    c->cluster_paused = true;
    link_pause_reading(&c->link);
    return true;
}

void client_cluster_resume(struct conn *c)
{
    if (!c->cluster_paused)
        return;
    c->cluster_paused = false;
    if (c->state == CONN_ACTIVE && !c->reading_paused && !c->rate_paused && !c->kept_paused)
        client_read_again(c);
}

/* What client_frame() found at the head of the input. */
enum client_frame {
    FRAME_WAIT = 0,  /* not a whole packet yet */
    FRAME_READY = 1, /* a whole packet of `total` bytes */
    FRAME_FAILED = 2 /* refused: the failure is recorded */
};

/*
 * Find the next packet in `in`: its type byte and total length. Refuses what
 * is not MQTT and what exceeds the limits before it is buffered.
 */
static enum client_frame client_frame(struct conn *c, struct evbuffer *in, uint8_t *type_flags,
                                      size_t *total)
{
    size_t avail = evbuffer_get_length(in);
    uint8_t head[5];
    size_t n = avail < sizeof(head) ? avail : sizeof(head), header_len;
    uint32_t remaining;

    if (avail == 0)
        return FRAME_WAIT;
    evbuffer_copyout(in, head, n);
    /* Not MQTT at all (an HTTP request, say): no need to wait for a length. */
    if (c->state == CONN_AWAIT_CONNECT && head[0] != (MQTT_CONNECT << 4)) {
        conn_fail(c, "first packet is not CONNECT (first byte 0x%02x)", head[0]);
        return FRAME_FAILED;
    }
    if (avail < 2)
        return FRAME_WAIT;
    int rc = codec_frame(head, n, type_flags, &header_len, &remaining);
    if (rc == CODEC_INCOMPLETE)
        return FRAME_WAIT;
    if (rc < 0) {
        conn_fail_with(c, MQTT_RC_MALFORMED_PACKET, "malformed packet: %s", codec_strerror(rc));
        return FRAME_FAILED;
    }
    const char *limit;
    size_t max = packet_size_max(client_limits(c), *type_flags >> 4, &limit);
    if (remaining > max) {
        conn_fail_with(c, MQTT_RC_PACKET_TOO_LARGE,
                       "packet of type %d with %lu bytes exceeds %zu bytes, the most that %s "
                       "allow",
                       *type_flags >> 4, (unsigned long)remaining, max, limit);
        return FRAME_FAILED;
    }
    *total = header_len + remaining;
    return avail < *total ? FRAME_WAIT : FRAME_READY;
}

/* Decode the whole packet `buf` and hand it on. Returns 0 or -1 (must close). */
static int client_handle(struct conn *c, const uint8_t *buf, size_t total)
{
    uint8_t type = buf[0] >> 4;
    struct mqtt_packet p;

    int rc = codec_decode(buf, total, c->out.version, &p);
    if (rc == CODEC_E_PROTOCOL_NAME && c->state == CONN_AWAIT_CONNECT && type == MQTT_CONNECT)
        return client_refuse_protocol(c, buf, total);
    if (rc < 0) {
        uint8_t reason = client_decode_reason(rc);
        return conn_fail_with(c, reason, "%s (packet type %d): %s",
                              reason == MQTT_RC_PROTOCOL_ERROR ? "protocol error"
                                                               : "malformed packet",
                              type, codec_strerror(rc));
    }
    return client_dispatch(c, &p);
}

/* Handle whole packets from the input until it runs dry or reading must wait. */
static int client_read(struct conn *c)
{
    struct evbuffer *in = link_input(&c->link);
    uint8_t type_flags;
    size_t total;
    double wait;

    while (in && c->state != CONN_CLOSING) {
        if (sender_pending(&c->out) > client_max_outbound(c)) {
            client_pause_reading(c);
            return 0;
        }
        enum client_frame f = client_frame(c, in, &type_flags, &total);
        if (f != FRAME_READY)
            return f == FRAME_FAILED ? -1 : 0;
        uint8_t *buf = evbuffer_pullup(in, (ssize_t)total);
        if (!buf)
            return conn_fail(c, "out of memory reading a packet");
        uint8_t type = type_flags >> 4;
        if (type == MQTT_PUBLISH && c->state == CONN_ACTIVE && c->broker->durable &&
            durable_over(c->broker->durable, c->instance->kept_backlog)) {
            client_keep_pause(c);
            return 0;
        }
        if (type == MQTT_PUBLISH && c->state == CONN_ACTIVE && client_cluster_held(c))
            return 0;
        if (type == MQTT_PUBLISH && c->state == CONN_ACTIVE) {
            struct bucket *rate = c->rare ? c->rare->rate : NULL;
            if (c->instance->limits.max_messages_per_second && !rate &&
                !(rate = client_rate_bucket(c)))
                return conn_fail(c, "out of memory reading a packet");
            if ((wait = instance_rate_take(c->instance, rate)) > 0) {
                client_rate_pause(c, wait);
                return 0;
            }
        }
        if (client_handle(c, buf, total) < 0)
            return -1;
        /* A login miss, or a session fetched: the CONNECT stays unread until it is settled. */
        if (c->login_waiting || c->cluster_waiting)
            return 0;
        /* The handlers copied what they keep; the packet's bytes can go. */
        evbuffer_drain(in, total);
        if (c->early_packets < CLIENT_YOUNG_PACKETS)
            c->early_packets++;
        timers_packet_arrived(c, type == MQTT_PUBLISH || type == MQTT_SUBSCRIBE ||
                                     type == MQTT_UNSUBSCRIBE);
    }
    return 0;
}

static void client_readable(void *owner)
{
    struct conn *c = owner;

    if (client_read(c) < 0)
        conn_close_ended(c);
}

void client_read_again(struct conn *c)
{
    if (c->state == CONN_CLOSING)
        return;
    link_resume_reading(&c->link);
    client_readable(c);
    link_input_settled(&c->link);
}
