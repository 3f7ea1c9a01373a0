#include "broker/conn.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "broker/broker.h"
#include "broker/handlers.h"
#include "broker/instance.h"
#include "broker/message.h"
#include "broker/propbuf.h"
#include "broker/session.h"
#include "store/catalog.h"
#include "util/account.h"
#include "util/clock.h"
#include "util/log.h"

/* After conn_close(), pending output (a CONNACK, say) gets this long to drain. */
#define CONN_LINGER_SEC 5
/*
 * Once it has drained, our side is shut and the client gets this long to
 * close its own, while what it still sends is read and dropped: closing on
 * unread input would reset the connection and could destroy our last packet
 * (a DISCONNECT with its reason) before the client reads it.
 */
#define CONN_DRAIN_SEC 1
/*
 * A connection closed with more than this unread is not given its linger:
 * a client that far behind would not read its last packet in time anyway,
 * and holding its output for seconds would let take-overs pile output up.
 * Its QoS 1/2 messages stay in its session; QoS 0 ones are lost, as QoS 0 may be.
 */
#define CONN_LINGER_MAX_OUTPUT (64 * 1024)

/* Payloads up to this size are copied into the output; larger ones are referenced. */
#define CONN_COPY_PAYLOAD_MAX 4096
/* At most one line per client this often about messages dropped for it. */
#define CONN_DROP_LOG_INTERVAL_SEC 10

static void conn_read_cb(struct bufferevent *bev, void *arg);
static void conn_write_cb(struct bufferevent *bev, void *arg);
static void conn_event_cb(struct bufferevent *bev, short what, void *arg);
static void conn_timer_cb(evutil_socket_t fd, short what, void *arg);

struct conn *conn_new(struct broker *b, struct bufferevent *bev, const struct conn_meta *meta)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c) {
        log_error("out of memory accepting a connection from %s", meta->peer);
        bufferevent_free(bev);
        return NULL;
    }
    c->broker = b;
    c->bev = bev;
    c->meta = *meta;
    c->state = CONN_AWAIT_CONNECT;
    c->id = ++b->next_conn_id;
    c->problem_info = true;
    snprintf(c->client_id, sizeof(c->client_id), "-");

    c->next = b->conns;
    if (b->conns)
        b->conns->prev = c;
    b->conns = c;
    b->conn_count++;

    /* An absolute deadline: trickling bytes of a CONNECT does not extend it. */
    struct timeval connect_timeout = {(time_t)b->connect_timeout, 0};
    c->timer = evtimer_new(b->base, conn_timer_cb, c);
    if (!c->timer || evtimer_add(c->timer, &connect_timeout) < 0) {
        conn_close(c, "out of memory setting up the connection");
        return c;
    }
    bufferevent_setcb(bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    log_debug("conn %llu: accepted from %s", (unsigned long long)c->id, meta->peer);
    return c;
}

static void conn_publish_will(struct conn *c)
{
    c->will_due = false;
    instance_publish_will(c->will_instance, c->will, c->token, &c->rate, c->client_id);
}

/*
 * The output's charge: what we add is charged as we add it
 * (conn_output_added), and where libevent reports the output written (the
 * write callbacks) the charge is brought down to what is still pending
 * (conn_output_settle). So it is never below the truth, and exact whenever
 * the output has drained: a callback on every change of the buffer would be
 * exact always, at a price on the hottest path.
 */
static void conn_output_added(struct conn *c, size_t n)
{
    if (!c->account)
        return;
    c->output_charged += n;
    account_charge(c->account, n);
}

static void conn_output_settle(struct conn *c)
{
    if (!c->account)
        return;
    size_t now = conn_output_pending(c);
    if (now > c->output_charged)
        account_charge(c->account, now - c->output_charged);
    else
        account_release(c->account, c->output_charged - now);
    c->output_charged = now;
}

void conn_charge_output(struct conn *c, struct account *a)
{
    c->account = account_ref(a);
    conn_output_settle(c);
}

/* Its output no longer counts: the connection is being freed. */
static void conn_uncharge_output(struct conn *c)
{
    account_release(c->account, c->output_charged);
    account_unref(c->account);
}

void conn_free(struct conn *c)
{
    struct broker *b = c->broker;
    if (c->prev)
        c->prev->next = c->next;
    else
        b->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    b->conn_count--;
    if (c->timer)
        event_free(c->timer);
    if (c->token_timer)
        event_free(c->token_timer);
    if (c->rate_timer)
        event_free(c->rate_timer);
    catalog_token_unref(c->token);
    if (c->in_aliases)
        for (size_t i = 0; i < c->in_alias_max; i++)
            free(c->in_aliases[i]);
    free(c->in_aliases);
    strmap_clear(&c->out_aliases);
    conn_uncharge_output(c);
    bufferevent_free(c->bev);
    /* A will that conn_close() had to defer because routing was under way. */
    if (c->will_due && c->will && !b->stopping)
        conn_publish_will(c);
    message_unref(c->will);
    session_free(c->ended_session);
    free(c);
}

/* Closing: our output has gone. Shut our side and give the client a moment to close its. */
static void conn_linger_drained(struct conn *c)
{
    evutil_socket_t fd = bufferevent_getfd(c->bev);

    /* Without a socket (an in-memory pair) there is no reset to fear. */
    if (c->peer_eof || !c->timer || fd < 0) {
        broker_reap_later(c->broker, c);
        return;
    }
    if (c->half_closed)
        return;
    c->half_closed = true;
    /* TLS cannot be half-closed under OpenSSL's feet: there the client's close ends it. */
    if (c->meta.transport != CONN_TLS)
        shutdown(fd, SHUT_WR);
    struct timeval drain = {CONN_DRAIN_SEC, 0};
    evtimer_add(c->timer, &drain);
}

static void conn_linger_read_cb(struct bufferevent *bev, void *arg)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    evbuffer_drain(in, evbuffer_get_length(in));
}

static void conn_linger_write_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    conn_output_settle(c);
    if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        conn_linger_drained(c);
}

static void conn_linger_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    c->peer_eof = true;
    broker_reap_later(c->broker, c);
}

/*
 * Detach from the session. A session with an expiry lives on offline; one
 * without ends with its connection. The will is published unless the client
 * said DISCONNECT or the broker is stopping; with a Will Delay Interval and a
 * session that lives on, it waits in the session instead. Publishing now
 * keeps the order of events (an old connection's will comes before what its
 * successor sends), but routing is not reentrant: a close in the middle of a
 * delivery leaves it to the reaper.
 */
static void conn_detach(struct conn *c, bool clean_disconnect)
{
    struct session *s = c->session;

    if (c->will && !clean_disconnect && s && !c->broker->stopping) {
        c->will_due = true;
        c->will_instance = s->instance;
    }
    if (!s)
        return;
    c->session = NULL;
    s->conn = NULL;
    if (s->expiry == 0) {
        /*
         * It leaves the instance's table now (so a new connection with the
         * same id starts afresh) but is freed by the reaper: we may be inside
         * a walk of the topic tree that holds it.
         */
        strmap_remove(&s->instance->sessions, s->client_id);
        c->ended_session = s;
    } else {
        struct message *delayed = c->will_due && c->will_delay ? c->will : NULL;
        if (session_go_offline(s, delayed, c->will_delay) < 0)
            log_error("client %s: out of memory arming its session's timers: the session "
                      "stays until it is resumed, the will goes now",
                      c->client_id);
        else if (delayed) {
            c->will = NULL; /* the session's now */
            c->will_due = false;
        }
    }
    if (c->will_due && c->broker->routing == 0)
        conn_publish_will(c);
}

/* Send an MQTT 5 DISCONNECT with `reason` and `why` as its Reason String. */
static void conn_send_disconnect(struct conn *c, uint8_t reason, const char *why)
{
    struct propbuf pb;
    struct mqtt_packet p = {.type = MQTT_DISCONNECT};

    propbuf_init(&pb);
    propbuf_str(&pb, MQTT_PROP_REASON_STRING, why, strlen(why));
    p.u.disconnect.reason = reason;
    if (!pb.failed)
        p.u.disconnect.props = propbuf_props(&pb);
    conn_send(c, &p);
    propbuf_free(&pb);
}

/* `reason` < 0: no DISCONNECT. */
static void conn_vclose(struct conn *c, enum log_level level, bool clean_disconnect, int reason,
                        const char *fmt, va_list ap)
{
    char why[256];

    if (c->state == CONN_CLOSING)
        return;
    vsnprintf(why, sizeof(why), fmt, ap);
    log_msg(level, "client %s (%s, conn %llu): closed: %s", c->client_id, c->meta.peer,
            (unsigned long long)c->id, why);
    /* A client that said DISCONNECT may read what it asked for; one we close gets its linger
     * only when it is keeping up. */
    size_t unread = conn_output_pending(c);
    bool abandon = !clean_disconnect && unread > CONN_LINGER_MAX_OUTPUT;
    /* A server DISCONNECT only after CONNACK [MQTT-3.14.0-1]; before it, CONNACK says why. */
    if (reason >= 0 && c->version == MQTT_V5 && c->state == CONN_ACTIVE && !c->peer_eof &&
        !abandon)
        conn_send_disconnect(c, (uint8_t)reason, why);
    c->state = CONN_CLOSING;
    if (c->login_waiting)
        broker_login_forget(c->broker, c);
    if (c->timer)
        evtimer_del(c->timer);
    if (c->token_timer)
        evtimer_del(c->token_timer);
    if (c->rate_timer)
        evtimer_del(c->rate_timer);
    if (c->counted) {
        c->counted = false;
        c->instance->conn_count--;
    }
    conn_detach(c, clean_disconnect);

    if (abandon) {
        log_debug("client %s (conn %llu): %zu bytes it has not read are dropped with it",
                  c->client_id, (unsigned long long)c->id, unread);
        bufferevent_disable(c->bev, EV_READ | EV_WRITE);
        broker_reap_later(c->broker, c);
        return;
    }
    /* What we queued (a CONNACK, a DISCONNECT) still goes out; what comes in is dropped. */
    bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
    bufferevent_setcb(c->bev, conn_linger_read_cb, conn_linger_write_cb, conn_linger_event_cb,
                      c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    struct timeval linger = {CONN_LINGER_SEC, 0};
    if (c->timer)
        evtimer_add(c->timer, &linger);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        conn_linger_drained(c);
}

/* An orderly DISCONNECT is routine; every other close is worth a notice. */
void conn_close(struct conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    conn_vclose(c, LOG_LEVEL_NOTICE, false, -1, fmt, ap);
    va_end(ap);
}

void conn_close_at(struct conn *c, enum log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    conn_vclose(c, level, false, -1, fmt, ap);
    va_end(ap);
}

void conn_close_clean(struct conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    conn_vclose(c, LOG_LEVEL_INFO, true, -1, fmt, ap);
    va_end(ap);
}

void conn_disconnect(struct conn *c, uint8_t reason, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    conn_vclose(c, LOG_LEVEL_NOTICE, false, reason, fmt, ap);
    va_end(ap);
}

const char *conn_reason_string(const struct conn *c, const char *why)
{
    return c->version == MQTT_V5 && c->problem_info ? why : NULL;
}

/* max-outbound-bytes of the connection's instance. */
static size_t conn_max_outbound(const struct conn *c)
{
    return c->session ? c->session->instance->limits.max_outbound_bytes
                      : c->broker->limits.max_outbound_bytes;
}

size_t conn_output_pending(const struct conn *c)
{
    return evbuffer_get_length(bufferevent_get_output(c->bev));
}

/* The property block of `p`'s type, or NULL for types without one. */
static struct mqtt_props *packet_props(struct mqtt_packet *p)
{
    switch (p->type) {
    case MQTT_CONNACK:
        return &p->u.connack.props;
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        return &p->u.ack.props;
    case MQTT_SUBACK:
    case MQTT_UNSUBACK:
        return &p->u.suback.props;
    case MQTT_DISCONNECT:
    case MQTT_AUTH:
        return &p->u.disconnect.props;
    default:
        return NULL;
    }
}

/*
 * Properties a receiver can go without [MQTT-3.1.2-25]: Reason String and
 * User Properties; in a CONNACK (`connack`) also those that only repeat what
 * their absence means (the four "available" flags at 1) or that the client
 * may do without (Topic Alias Maximum: then no aliases). What the client
 * must be told (an assigned client id, a changed keep-alive or expiry, our
 * limits) always stays.
 */
static bool prop_droppable(uint8_t id, bool connack)
{
    switch (id) {
    case MQTT_PROP_REASON_STRING:
    case MQTT_PROP_USER_PROPERTY:
        return true;
    case MQTT_PROP_RETAIN_AVAILABLE:
    case MQTT_PROP_WILDCARD_SUB_AVAILABLE:
    case MQTT_PROP_SUB_ID_AVAILABLE:
    case MQTT_PROP_SHARED_SUB_AVAILABLE:
    case MQTT_PROP_TOPIC_ALIAS_MAXIMUM:
        return connack;
    default:
        return false;
    }
}

/*
 * `pkt` is too large for the client: *bare is `pkt` without the properties
 * it may go without (built in `pb`, which the caller frees). Returns false
 * when the packet has no such properties.
 */
static bool conn_strip_props(const struct mqtt_packet *pkt, struct mqtt_packet *bare,
                             struct propbuf *pb)
{
    struct mqtt_props *props;
    struct mqtt_prop prop;
    size_t pos = 0;
    bool dropped = false;

    *bare = *pkt;
    if (!(props = packet_props(bare)))
        return false;
    while (codec_next_prop(props, &pos, &prop)) {
        if (prop_droppable(prop.id, pkt->type == MQTT_CONNACK))
            dropped = true;
        else
            propbuf_add(pb, &prop);
    }
    if (!dropped || pb->failed)
        return false;
    *props = propbuf_props(pb);
    return true;
}

int conn_send(struct conn *c, const struct mqtt_packet *pkt)
{
    uint8_t small[256];
    uint8_t *buf = small;
    struct mqtt_packet bare;
    struct propbuf pb; /* the stripped properties, made only for a client too small */
    bool stripping = false;
    int rc = -1;

    if (c->state == CONN_CLOSING)
        return -1;
    long need = codec_encode(pkt, c->version, small, sizeof(small));
    if (need > 0 && c->peer_max_packet && (size_t)need > c->peer_max_packet) {
        /* Too large for the client [MQTT-3.1.2-24]: what it can go without goes. */
        propbuf_init(&pb);
        stripping = true;
        if (conn_strip_props(pkt, &bare, &pb)) {
            pkt = &bare;
            need = codec_encode(pkt, c->version, small, sizeof(small));
        }
        if (need > 0 && (size_t)need > c->peer_max_packet) {
            if (pkt->type == MQTT_CONNACK) {
                conn_close(c, "its Maximum Packet Size %lu is smaller than the CONNACK it must "
                           "get (%ld bytes)",
                           (unsigned long)c->peer_max_packet, need);
                goto out;
            }
            log_debug("client %s: packet type %d of %ld bytes exceeds its maximum packet size "
                      "%lu: not sent",
                      c->client_id, pkt->type, need, (unsigned long)c->peer_max_packet);
            rc = 0;
            goto out;
        }
    }
    if (need < 0) {
        conn_close(c, "cannot encode packet type %d: %s", pkt->type, codec_strerror((int)need));
        goto out;
    }
    if ((size_t)need > sizeof(small)) {
        buf = malloc((size_t)need);
        if (!buf) {
            conn_close(c, "out of memory encoding packet type %d", pkt->type);
            goto out;
        }
        codec_encode(pkt, c->version, buf, (size_t)need);
    }
    if (bufferevent_write(c->bev, buf, (size_t)need) < 0) {
        conn_close(c, "out of memory queueing output");
        goto out;
    }
    conn_output_added(c, (size_t)need);
    rc = 0;
out:
    if (buf != small)
        free(buf);
    if (stripping)
        propbuf_free(&pb);
    return rc;
}

static void conn_release_message(const void *data, size_t len, void *arg)
{
    message_unref(arg);
}

/*
 * The topic alias for `topic` toward the client: the one it has, or a new one
 * while the client's Topic Alias Maximum allows (*fresh set: the PUBLISH must
 * carry the topic as well). 0: send the topic without an alias.
 */
static uint16_t conn_out_alias(struct conn *c, const char *topic, bool *fresh)
{
    *fresh = false;
    if (c->peer_alias_max == 0)
        return 0;
    uintptr_t have = (uintptr_t)strmap_get(&c->out_aliases, topic);
    if (have)
        return (uint16_t)have;
    if (c->out_alias_count >= c->peer_alias_max)
        return 0;
    uint16_t alias = (uint16_t)(c->out_alias_count + 1);
    if (strmap_put(&c->out_aliases, topic, (void *)(uintptr_t)alias, NULL) < 0)
        return 0; /* out of memory: the topic goes in full */
    c->out_alias_count++;
    *fresh = true;
    return alias;
}

/* MQTT 5 PUBLISH properties of a delivery: the message's own, its expiry, ids, alias. */
static void conn_publish_props(struct propbuf *pb, const struct message *m,
                               const struct delivery *d, uint16_t alias)
{
    propbuf_raw(pb, m->props, m->props_len);
    if (m->expiry)
        propbuf_int(pb, MQTT_PROP_MESSAGE_EXPIRY, message_expiry_left(m, clock_ms()));
    for (size_t i = 0; i < d->sub_id_count; i++)
        propbuf_int(pb, MQTT_PROP_SUBSCRIPTION_ID, d->sub_ids[i]);
    if (alias)
        propbuf_int(pb, MQTT_PROP_TOPIC_ALIAS, alias);
}

int conn_send_publish(struct conn *c, struct message *m, const struct delivery *d,
                      uint16_t packet_id, bool dup)
{
    /* Topic plus one '/': bounded by the topic limit, but never trust a stack size for it. */
    char topic_small[256];
    char *topic = topic_small;
    size_t topic_len = m->topic_len + (d->leading_slash ? 1 : 0);
    uint8_t head[16 + sizeof(topic_small) + PROPBUF_SMALL];
    uint8_t *hbuf = head;
    struct propbuf pb;
    uint16_t alias = 0;
    bool fresh_alias = false;
    int rc = -1;

    if (c->state == CONN_CLOSING)
        return -1;
    /* QoS 1/2 are bounded by the in-flight window and the queue; QoS 0 by this. */
    size_t max_outbound = conn_max_outbound(c);
    if (d->qos == 0 && conn_output_pending(c) > max_outbound) {
        struct timeval now;
        c->dropped_qos0++;
        event_base_gettimeofday_cached(c->broker->base, &now);
        if (now.tv_sec - c->dropped_logged >= CONN_DROP_LOG_INTERVAL_SEC) {
            c->dropped_logged = now.tv_sec;
            log_warning("client %s (%s): more than %zu bytes of output pending "
                        "(max-outbound-bytes), dropping QoS 0 messages (%llu so far)",
                        c->client_id, c->meta.peer, max_outbound,
                        (unsigned long long)c->dropped_qos0);
        }
        return 0;
    }
    propbuf_init(&pb);
    if (topic_len + 1 > sizeof(topic_small) && !(topic = malloc(topic_len + 1)))
        goto oom;
    if (d->leading_slash)
        topic[0] = '/';
    memcpy(topic + (d->leading_slash ? 1 : 0), m->topic, m->topic_len + 1);

    if (c->version == MQTT_V5) {
        alias = conn_out_alias(c, topic, &fresh_alias);
        conn_publish_props(&pb, m, d, alias);
        if (pb.failed)
            goto oom;
    }
    struct mqtt_packet pkt = {.type = MQTT_PUBLISH};
    pkt.u.publish = (struct mqtt_publish){
        .qos = d->qos,
        .dup = dup,
        .retain = d->retain,
        .packet_id = packet_id,
        /* A known alias stands for the topic: the name is left empty (MQTT 5 3.3.2.3.4). */
        .topic = {(const uint8_t *)topic, alias && !fresh_alias ? 0 : topic_len},
        .payload = {m->payload, m->payload_len},
        .props = propbuf_props(&pb),
    };
    long need = codec_encode_publish_head(&pkt.u.publish, c->version, head, sizeof(head));
    if (need < 0) {
        conn_close(c, "cannot encode PUBLISH: %s", codec_strerror((int)need));
        goto out;
    }
    if (c->peer_max_packet && (size_t)need + m->payload_len > c->peer_max_packet) {
        /* It may not be sent [MQTT-3.1.2-24]; the caller treats it as delivered. */
        log_debug("client %s: PUBLISH on %s of %zu bytes exceeds its maximum packet size %lu: "
                  "not sent",
                  c->client_id, m->topic, (size_t)need + m->payload_len,
                  (unsigned long)c->peer_max_packet);
        if (fresh_alias) {
            strmap_remove(&c->out_aliases, topic);
            c->out_alias_count--;
        }
        rc = CONN_PUBLISH_SKIPPED;
        goto out;
    }
    if ((size_t)need > sizeof(head)) {
        if (!(hbuf = malloc((size_t)need)))
            goto oom;
        codec_encode_publish_head(&pkt.u.publish, c->version, hbuf, (size_t)need);
    }
    struct evbuffer *output = bufferevent_get_output(c->bev);
    if (evbuffer_add(output, hbuf, (size_t)need) < 0)
        goto oom;
    /*
     * Small payloads are copied: the output packs them densely, where every
     * referenced piece would cost a buffer chain of its own (about 1 KB).
     */
    if (m->payload_len && m->payload_len <= CONN_COPY_PAYLOAD_MAX) {
        if (evbuffer_add(output, m->payload, m->payload_len) < 0)
            goto oom;
    } else if (m->payload_len) {
        message_ref(m);
        if (evbuffer_add_reference(output, m->payload, m->payload_len, conn_release_message,
                                   m) < 0) {
            message_unref(m);
            goto oom;
        }
    }
    conn_output_added(c, (size_t)need + m->payload_len);
    rc = 0;
    goto out;
oom:
    conn_close(c, "out of memory queueing a PUBLISH");
out:
    propbuf_free(&pb);
    if (hbuf != head)
        free(hbuf);
    if (topic != topic_small)
        free(topic);
    return rc;
}

/* Room for MQTT 5 properties in any one packet, beyond what the limits account for. */
#define CONN_PROPERTY_ROOM 1024
/* Acknowledgements, pings and the rest: a few bytes in MQTT 3.1.1, never this many. */
#define CONN_MAX_CONTROL_PACKET 65536

/*
 * The largest remaining length a packet of `type` may announce under limits
 * `l` before we refuse to buffer it: the most that a packet within every
 * limit can need. Sets *what to the limit to name in the log.
 */
static size_t limits_max_packet(const struct limits *l, uint8_t type, const char **what)
{
    /* A string field on the wire: 2-byte length, then at most 65535 bytes. */
    const size_t any_string = 2 + 65535;

    switch (type) {
    case MQTT_PUBLISH:
        *what = "max-payload";
        return 2 + l->max_topic_length + 2 + l->max_payload + CONN_PROPERTY_ROOM;
    case MQTT_CONNECT:
        /* Fixed part; client id (4 bytes per UTF-8 character at most); will; credentials. */
        *what = "max-client-id, max-topic-length and max-payload";
        return 10 + 2 * CONN_PROPERTY_ROOM + 2 + 4 * l->max_client_id + 2 +
               l->max_topic_length + 2 + l->max_payload + 2 * any_string;
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE: {
        /* Enough for every allowed subscription at full length, and never less than 64 KB. */
        size_t filters = l->max_subscriptions * (3 + l->max_topic_length);
        *what = "max-subscriptions and max-topic-length";
        return 2 + CONN_PROPERTY_ROOM +
               (filters > CONN_MAX_CONTROL_PACKET ? filters : CONN_MAX_CONTROL_PACKET);
    }
    default:
        *what = "the control packet size";
        return CONN_MAX_CONTROL_PACKET;
    }
}

static size_t conn_max_packet(const struct conn *c, uint8_t type, const char **what)
{
    const struct limits *l = c->session ? &c->session->instance->limits : &c->broker->limits;
    return limits_max_packet(l, type, what);
}

uint32_t conn_max_packet_size(const struct limits *l)
{
    const char *what;
    size_t most = limits_max_packet(l, MQTT_PUBLISH, &what);
    size_t subscribe = limits_max_packet(l, MQTT_SUBSCRIBE, &what);

    if (subscribe > most)
        most = subscribe;
    if (most > MQTT_MAX_REMAINING_LENGTH)
        most = MQTT_MAX_REMAINING_LENGTH;
    /* The fixed header: a type byte and the remaining length's own bytes. */
    size_t length_bytes = most < 128 ? 1 : most < 16384 ? 2 : most < 2097152 ? 3 : 4;
    return (uint32_t)(most + 1 + length_bytes);
}

/* The MQTT 5 reason code for a packet the codec refused. */
static uint8_t conn_decode_reason(int err)
{
    return err == CODEC_E_PROPERTY_PROTOCOL || err == CODEC_E_PACKET_ID ||
                   err == CODEC_E_TOPIC
               ? MQTT_RC_PROTOCOL_ERROR
               : MQTT_RC_MALFORMED_PACKET;
}

/* Hand `p` to its handler; the one place where a handler's -1 closes the connection. */
static void conn_dispatch(struct conn *c, const struct mqtt_packet *p)
{
    int rc;

    /* conn_read_cb has made sure the first packet is a CONNECT. */
    switch (p->type) {
    case MQTT_CONNECT:
        if (c->state != CONN_AWAIT_CONNECT)
            rc = conn_fail_with(c, MQTT_RC_PROTOCOL_ERROR, "second CONNECT on one connection");
        else
            rc = handle_connect(c, p);
        break;
    case MQTT_PUBLISH:
        rc = handle_publish(c, p);
        break;
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        rc = handle_ack(c, p);
        break;
    case MQTT_SUBSCRIBE:
        rc = handle_subscribe(c, p);
        break;
    case MQTT_UNSUBSCRIBE:
        rc = handle_unsubscribe(c, p);
        break;
    case MQTT_PINGREQ: {
        struct mqtt_packet resp = {.type = MQTT_PINGRESP};
        rc = conn_send(c, &resp);
        break;
    }
    case MQTT_DISCONNECT:
        rc = handle_disconnect(c, p);
        break;
    case MQTT_AUTH:
        /* AUTH continues an authentication method, and aviary offers none. */
        rc = conn_fail_with(c, MQTT_RC_PROTOCOL_ERROR,
                            "AUTH without enhanced authentication (none is offered)");
        break;
    default:
        rc = conn_fail_with(c, MQTT_RC_PROTOCOL_ERROR,
                            "packet type %d is not sent to a server", p->type);
        break;
    }
    if (rc < 0)
        conn_close_ended(c);
}

/*
 * CONNECT with a protocol name or level we do not speak: answer CONNACK when
 * the name is one of MQTT's. A level above 5 comes from a client newer than
 * us: it gets MQTT 5's CONNACK 0x84 (MQTT 5 3.1.2.2); older ones 3.1.1's 1.
 */
static void conn_refuse_protocol(struct conn *c, const uint8_t *buf, size_t len)
{
    struct mqtt_packet p;
    codec_decode(buf, len, 0, &p);
    const struct mqtt_buf *name = &p.u.connect.protocol_name;
    bool mqtt = name->len == 4 && memcmp(name->data, "MQTT", 4) == 0;
    bool known_name = mqtt || (name->len == 6 && memcmp(name->data, "MQIsdp", 6) == 0);
    if (known_name) {
        struct mqtt_packet ack = {.type = MQTT_CONNACK};
        struct propbuf pb;
        char why[64];
        bool newer = mqtt && p.u.connect.version > MQTT_V5;
        c->version = newer ? MQTT_V5 : MQTT_V311;
        ack.u.connack.code =
            newer ? MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION : MQTT_CONNACK_BAD_VERSION;
        propbuf_init(&pb);
        if (newer) {
            snprintf(why, sizeof(why), "protocol level %u is not served (3, 4 and 5 are)",
                     p.u.connect.version);
            propbuf_str(&pb, MQTT_PROP_REASON_STRING, why, strlen(why));
            if (!pb.failed)
                ack.u.connack.props = propbuf_props(&pb);
        }
        conn_send(c, &ack);
        propbuf_free(&pb);
        conn_close(c, "CONNACK %s: unsupported protocol level %u", newer ? "0x84" : "1",
                   p.u.connect.version);
        return;
    }
    conn_close(c, "CONNECT with an unknown protocol name");
}

/* The client has read its output down to half the limit: take its input again. */
static void conn_write_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;

    conn_output_settle(c);
    if (!c->reading_paused || c->state != CONN_ACTIVE ||
        conn_output_pending(c) > conn_max_outbound(c) / 2)
        return;
    c->reading_paused = false;
    bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
    if (c->rate_paused)
        return; /* the rate timer takes the input again */
    bufferevent_enable(bev, EV_READ);
    log_debug("client %s: output drained, reading again", c->client_id);
    /* Packets that arrived meanwhile are already buffered: no read event will announce them. */
    conn_read_cb(bev, c);
}

/*
 * A client that does not read what we send (acknowledgements, PINGRESP, its
 * messages) must not make us buffer without bound: stop reading its input
 * until it has read its output down to half of max-outbound-bytes.
 */
static void conn_pause_reading(struct conn *c)
{
    size_t max = conn_max_outbound(c);

    c->reading_paused = true;
    bufferevent_disable(c->bev, EV_READ);
    bufferevent_setwatermark(c->bev, EV_WRITE, max / 2, 0);
    log_info("client %s (%s): %zu bytes of output pending (max-outbound-bytes %zu): "
             "not reading its input until it reads",
             c->client_id, c->meta.peer, conn_output_pending(c), max);
}

static void conn_rate_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;

    c->rate_paused = false;
    if (c->state != CONN_ACTIVE || c->reading_paused)
        return; /* the write callback takes the input again once output drains */
    bufferevent_enable(c->bev, EV_READ);
    /* The PUBLISH that found the bucket empty is still buffered: no read event will come. */
    conn_read_cb(c->bev, c);
}

/*
 * Over the rate: stop reading until the bucket holds a token again. The
 * client's packets wait in its socket and, beyond, in its own send buffer:
 * back-pressure, nothing lost.
 */
static void conn_rate_pause(struct conn *c, double wait)
{
    struct timeval delay = {(time_t)wait, (suseconds_t)((wait - (double)(time_t)wait) * 1e6) + 1};

    if (!c->rate_timer && !(c->rate_timer = evtimer_new(c->broker->base, conn_rate_timer_cb, c))) {
        conn_close(c, "out of memory pacing its messages");
        return;
    }
    if (!c->rate_paused)
        log_debug("client %s: over max-messages-per-second (connection %zu, instance %zu), "
                  "reading slower",
                  c->client_id, c->instance->limits.max_messages_per_second,
                  c->instance->limits.max_instance_messages_per_second);
    c->rate_paused = true;
    bufferevent_disable(c->bev, EV_READ);
    evtimer_add(c->rate_timer, &delay);
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);

    c->any_input = true;
    while (c->state != CONN_CLOSING) {
        if (conn_output_pending(c) > conn_max_outbound(c)) {
            conn_pause_reading(c);
            return;
        }
        size_t avail = evbuffer_get_length(in);
        uint8_t head[5];
        size_t n = avail < sizeof(head) ? avail : sizeof(head);
        uint8_t type_flags;
        size_t header_len;
        uint32_t remaining;

        if (avail == 0)
            return;
        evbuffer_copyout(in, head, n);
        /* Not MQTT at all (an HTTP request, say): no need to wait for a length. */
        if (c->state == CONN_AWAIT_CONNECT && head[0] != (MQTT_CONNECT << 4)) {
            conn_close(c, "first packet is not CONNECT (first byte 0x%02x)", head[0]);
            return;
        }
        if (avail < 2)
            return;
        int rc = codec_frame(head, n, &type_flags, &header_len, &remaining);
        if (rc == CODEC_INCOMPLETE)
            return;
        if (rc < 0) {
            conn_disconnect(c, MQTT_RC_MALFORMED_PACKET, "malformed packet: %s",
                            codec_strerror(rc));
            return;
        }
        /* Refuse oversized packets before buffering them. */
        const char *limit;
        size_t max = conn_max_packet(c, type_flags >> 4, &limit);
        if (remaining > max) {
            conn_disconnect(c, MQTT_RC_PACKET_TOO_LARGE,
                            "packet of type %d with %lu bytes exceeds %zu bytes, the most that "
                            "%s allow",
                            type_flags >> 4, (unsigned long)remaining, max, limit);
            return;
        }
        size_t total = header_len + remaining;
        if (avail < total)
            return;
        uint8_t *buf = evbuffer_pullup(in, (ssize_t)total);
        if (!buf) {
            conn_close(c, "out of memory reading a packet");
            return;
        }
        uint8_t type = type_flags >> 4;
        double wait;
        if (type == MQTT_PUBLISH && c->state == CONN_ACTIVE &&
            (wait = instance_rate_take(c->instance, &c->rate)) > 0) {
            conn_rate_pause(c, wait);
            return;
        }
        struct mqtt_packet p;
        rc = codec_decode(buf, total, c->version, &p);
        if (rc == CODEC_E_PROTOCOL_NAME && c->state == CONN_AWAIT_CONNECT &&
            (type_flags >> 4) == MQTT_CONNECT) {
            conn_refuse_protocol(c, buf, total);
            return;
        }
        if (rc < 0) {
            uint8_t reason = conn_decode_reason(rc);
            conn_disconnect(c, reason, "%s (packet type %d): %s",
                            reason == MQTT_RC_PROTOCOL_ERROR ? "protocol error"
                                                             : "malformed packet",
                            type_flags >> 4, codec_strerror(rc));
            return;
        }
        conn_dispatch(c, &p);
        /* A login miss: the CONNECT stays unread until the broker has looked again. */
        if (c->login_waiting)
            return;
        /* The handlers copied what they keep; the packet's bytes can go. */
        evbuffer_drain(in, total);
        event_base_gettimeofday_cached(c->broker->base, &c->last_packet);
        if (type == MQTT_PUBLISH || type == MQTT_SUBSCRIBE || type == MQTT_UNSUBSCRIBE)
            c->last_activity = c->last_packet;
    }
}

void conn_read_again(struct conn *c)
{
    if (c->state == CONN_CLOSING)
        return;
    bufferevent_enable(c->bev, EV_READ);
    conn_read_cb(c->bev, c);
}

/*
 * Over TLS: the handshake is still under way. Application data arrives only
 * after it (and OpenSSL's own state says "not finished" again after a failure).
 */
static bool conn_tls_handshaking(const struct conn *c)
{
    return c->meta.transport == CONN_TLS && !c->any_input;
}

/* Why a TLS connection failed, from OpenSSL's queue for this bufferevent. */
static const char *conn_tls_error(struct conn *c, char *out, size_t size)
{
    unsigned long e, last = 0;
    /* Besides OpenSSL's errors the queue holds SSL_get_error() codes (no library): skip them. */
    while ((e = bufferevent_get_openssl_error(c->bev)))
        if (ERR_GET_LIB(e) != 0)
            last = e;
    if (!last) {
        snprintf(out, size, "%s", errno ? strerror(errno) : "unknown error");
        return out;
    }
    const char *reason = ERR_reason_error_string(last);
    SSL *ssl = bufferevent_openssl_get_ssl(c->bev);
    long verify = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    if (reason && verify != X509_V_OK) { /* which check the client's certificate failed */
        snprintf(out, size, "%s (%s)", reason, X509_verify_cert_error_string(verify));
        return out;
    }
    if (reason) {
        snprintf(out, size, "%s", reason);
        return out;
    }
    /* "error:0A0000C7:SSL routines::peer did not return a certificate": keep the words. */
    char full[120];
    ERR_error_string_n(last, full, sizeof(full));
    const char *words = strrchr(full, ':');
    snprintf(out, size, "%s", words && words[1] ? words + 1 : full);
    return out;
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    char why[160];

    /* Over TLS the end of the handshake arrives here too (BEV_EVENT_CONNECTED). */
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        c->peer_eof = true;
    if (what & BEV_EVENT_EOF)
        conn_close(c, conn_tls_handshaking(c) ? "closed by the peer during the TLS handshake"
                                             : "connection lost: closed by the peer without "
                                               "DISCONNECT");
    else if ((what & BEV_EVENT_ERROR) && c->meta.transport == CONN_TLS)
        conn_close(c, "%s: %s",
                   conn_tls_handshaking(c) ? "TLS handshake failed" : "TLS connection lost",
                   conn_tls_error(c, why, sizeof(why)));
    else if (what & BEV_EVENT_ERROR)
        conn_close(c, "connection lost: %s", strerror(errno));
}

/* 1.5 times the keep-alive (MQTT-3.1.2-24). */
static struct timeval conn_keepalive_limit(const struct conn *c)
{
    struct timeval limit = {c->keepalive + c->keepalive / 2, (c->keepalive % 2) * 500000};
    return limit;
}

void conn_start_keepalive(struct conn *c)
{
    struct timeval limit = conn_keepalive_limit(c);

    event_base_gettimeofday_cached(c->broker->base, &c->last_packet);
    c->last_activity = c->last_packet;
    unsigned idle_timeout = c->instance ? c->instance->limits.idle_timeout : 0;
    if (idle_timeout && (unsigned long)idle_timeout < (unsigned long)limit.tv_sec)
        limit = (struct timeval){idle_timeout, 0};
    evtimer_add(c->timer, &limit);
}

void conn_limits_changed(struct conn *c)
{
    static const struct timeval now = {0, 0};

    /* The timer callback measures both deadlines again and re-arms for the nearer. */
    if (c->state == CONN_ACTIVE)
        evtimer_add(c->timer, &now);
}

/*
 * One timer per connection, re-armed only when it fires: first the CONNECT
 * deadline, then the keep-alive, measured from the last whole packet (a
 * trickle of bytes that never completes a packet does not count), and the
 * idle timeout, measured from the last PUBLISH or (UN)SUBSCRIBE.
 */
static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    struct timeval now, idle, left, limit;
    unsigned idle_timeout = c->instance ? c->instance->limits.idle_timeout : 0;

    if (c->state == CONN_AWAIT_CONNECT) {
        if (conn_tls_handshaking(c))
            conn_close(c, "TLS handshake not finished within %u s (connect-timeout)",
                       c->broker->connect_timeout);
        else
            conn_close(c, "no CONNECT within %u s (connect-timeout)", c->broker->connect_timeout);
        return;
    }
    if (c->state == CONN_CLOSING) { /* the linger or the drain is over */
        broker_reap_later(c->broker, c);
        return;
    }
    limit = conn_keepalive_limit(c);
    event_base_gettimeofday_cached(c->broker->base, &now);
    evutil_timersub(&now, &c->last_packet, &idle);
    if (!evutil_timercmp(&idle, &limit, <)) {
        if (c->reading_paused)
            conn_disconnect(c, MQTT_RC_KEEP_ALIVE_TIMEOUT,
                            "not reading its output: %zu bytes pending, nothing read for 1.5 x "
                            "%u s",
                            conn_output_pending(c), c->keepalive);
        else
            conn_disconnect(c, MQTT_RC_KEEP_ALIVE_TIMEOUT,
                            "keep-alive timeout: no packet for 1.5 x %u s", c->keepalive);
        return;
    }
    evutil_timersub(&limit, &idle, &left);
    if (idle_timeout) {
        struct timeval quiet, idle_limit = {idle_timeout, 0}, idle_left;
        evutil_timersub(&now, &c->last_activity, &quiet);
        if (!evutil_timercmp(&quiet, &idle_limit, <)) {
            conn_disconnect(c, MQTT_RC_KEEP_ALIVE_TIMEOUT,
                            "idle: no PUBLISH, SUBSCRIBE or UNSUBSCRIBE for %u s (idle-timeout)",
                            idle_timeout);
            return;
        }
        evutil_timersub(&idle_limit, &quiet, &idle_left);
        if (evutil_timercmp(&idle_left, &left, <))
            left = idle_left;
    }
    evtimer_add(c->timer, &left);
}

void conn_token_warning(struct conn *c)
{
    c->token_warning_due = true;
    if (c->token_warned || c->state != CONN_ACTIVE || !c->session || !c->session->token_events)
        return;
    struct message *m = message_new(CONN_TOKEN_EVENTS_TOPIC, strlen(CONN_TOKEN_EVENTS_TOPIC),
                                    (const uint8_t *)CONN_TOKEN_WARNING_PAYLOAD,
                                    strlen(CONN_TOKEN_WARNING_PAYLOAD), 0, false, NULL);
    if (!m) {
        conn_close(c, "out of memory sending the token's expiry warning");
        return;
    }
    c->token_warned = true;
    struct delivery d = {.qos = 0};
    if (conn_send_publish(c, m, &d, 0, false) == 0)
        log_info("client %s: token %s expires in %lld s: sent %s on %s", c->client_id,
                 c->token->id, (long long)(c->token->expires - time(NULL)),
                 CONN_TOKEN_WARNING_PAYLOAD, CONN_TOKEN_EVENTS_TOPIC);
    message_unref(m);
}

/* Seconds from now until Unix time `when`, at least 0. */
static struct timeval conn_until(time_t when)
{
    time_t now = time(NULL);
    struct timeval tv = {when > now ? when - now : 0, 0};
    return tv;
}

static void conn_token_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    const struct catalog_token *t = c->token;

    if (c->state != CONN_ACTIVE)
        return;
    if (time(NULL) >= t->expires) {
        conn_disconnect(c, MQTT_RC_MAXIMUM_CONNECT_TIME, "token %s expired", t->id);
        return;
    }
    conn_token_warning(c);
    struct timeval left = conn_until(t->expires);
    evtimer_add(c->token_timer, &left);
}

int conn_start_token_timer(struct conn *c)
{
    const struct catalog_token *t = c->token;

    if (!t || !t->expires)
        return 0;
    c->token_timer = evtimer_new(c->broker->base, conn_token_timer_cb, c);
    if (!c->token_timer) {
        conn_close(c, "out of memory watching its token's expiry");
        return -1;
    }
    time_t warn_at = t->expires - (time_t)c->broker->token_warning;
    struct timeval first = conn_until(warn_at < time(NULL) ? t->expires : warn_at);
    if (warn_at <= time(NULL))
        c->token_warning_due = true;
    evtimer_add(c->token_timer, &first);
    return 0;
}

/* conn_vclose() with arguments: for closing as a record says. */
static void conn_close_as(struct conn *c, enum log_level level, bool clean_disconnect,
                          int reason, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    conn_vclose(c, level, clean_disconnect, reason, fmt, ap);
    va_end(ap);
}

static int conn_vrecord(struct conn *c, enum log_level level, bool clean, int reason,
                        const char *fmt, va_list ap)
{
    struct conn_end *e = &c->end;

    if (e->set)
        return -1;
    e->set = true;
    e->level = level;
    e->clean = clean;
    e->reason = reason;
    vsnprintf(e->why, sizeof(e->why), fmt, ap);
    return -1;
}

int conn_fail(struct conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    conn_vrecord(c, LOG_LEVEL_NOTICE, false, -1, fmt, ap);
    va_end(ap);
    return -1;
}

int conn_fail_at(struct conn *c, enum log_level level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    conn_vrecord(c, level, false, -1, fmt, ap);
    va_end(ap);
    return -1;
}

int conn_fail_with(struct conn *c, uint8_t reason, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    conn_vrecord(c, LOG_LEVEL_NOTICE, false, reason, fmt, ap);
    va_end(ap);
    return -1;
}

int conn_finish(struct conn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    conn_vrecord(c, LOG_LEVEL_INFO, true, -1, fmt, ap);
    va_end(ap);
    return -1;
}

void conn_close_ended(struct conn *c)
{
    const struct conn_end *e = &c->end;

    if (c->state == CONN_CLOSING)
        return;
    if (!e->set) {
        conn_close_as(c, LOG_LEVEL_ERROR, false, -1, "a packet handler failed without a reason");
        return;
    }
    conn_close_as(c, e->level, e->clean, e->reason, "%s", e->why);
}
