/*
 * tenant-load: the steady, measured load of one tenant (tenant B of the
 * noisy-neighbour benchmark, contrib/noisy-neighbour.py).
 *
 * What it measures: N subscriber connections subscribe to one topic at QoS 1
 * and acknowledge every delivery; one publisher connection publishes to that
 * topic at a fixed rate, paced by the clock (each message leaves at its own
 * time slot, never in bursts), keeping at most WINDOW messages unacknowledged.
 * Each payload carries an 8-byte sequence number and the 8-byte CLOCK_MONOTONIC
 * time it was sent (ns), then padding. A delivery's latency is the time it was
 * read by a subscriber minus that send time (same host, same clock).
 *
 * After the publishing time and a drain of up to --drain seconds it prints
 * key=value lines:
 *   planned              messages the rate and duration call for
 *   sent, acked          messages published, and acknowledged by the broker
 *   deliveries_expected  acked x subscribers
 *   delivered            (subscriber, acknowledged message) pairs received
 *   delivered_frac       delivered / deliveries_expected
 *   lost_qos1            acknowledged messages some subscriber never received,
 *                        counted per subscriber (0 when --qos is 0)
 *   dup                  deliveries of a message the subscriber already had
 *   unacked_delivered    deliveries of messages the broker never acknowledged
 *   lat_p50_us, lat_p99_us, lat_max_us   over first deliveries
 *   late, late_max_ms    messages sent more than 10 ms after their slot
 *                        (the window was full or the publisher was offline)
 *   reconnects, refused  connections re-opened after the broker closed them,
 *                        and CONNECTs or SUBSCRIBEs it refused
 *
 * Exit status: 0 when it ran (whatever was lost), 2 on a usage error, 3 when
 * it could not connect and subscribe every client at the start.
 *
 * MQTT 3.1.1 over TCP, packets built by hand; C11 with libc and Linux epoll.
 *   cc -std=gnu11 -O2 -Wall -Wextra -Werror -o tenant-load tenant-load.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define KEEPALIVE_S 60
#define PING_EVERY_NS (30 * NS)
#define NS 1000000000ull
#define MS 1000000ull
#define TICK_NS (100 * MS)
#define SETUP_TIMEOUT_NS (15 * NS)
#define RETRY_NS (100 * MS)
#define LATE_NS (10 * MS)
#define MAX_PACKET (1u << 20)
#define READ_CHUNK 65536

/* ------------------------------------------------------------------ options */

struct options {
    const char *host, *port, *user, *password, *topic;
    long subscribers, rate, payload, qos, window;
    double duration, drain;
};

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: tenant-load [OPTIONS]\n"
        "One tenant's steady MQTT 3.1.1 load: N QoS 1 subscribers, one publisher at a\n"
        "fixed rate; prints delivery and latency figures as key=value lines.\n\n"
        "  -H, --host HOST          broker address (default 127.0.0.1)\n"
        "  -p, --port PORT          broker port (default 1883)\n"
        "  -u, --user NAME          user name: the instance (default none)\n"
        "  -P, --password SECRET    password: the token secret (default: $TENANT_LOAD_PASSWORD)\n"
        "  -t, --topic TOPIC        topic to publish and subscribe (default bench/b)\n"
        "  -s, --subscribers N      subscriber connections (default 100)\n"
        "  -r, --rate N             messages per second (default 1000)\n"
        "  -d, --duration SECONDS   publishing time (default 10)\n"
        "  -l, --payload BYTES      payload size, at least 16 (default 64)\n"
        "  -q, --qos 0|1|2          QoS of the publisher (default 1)\n"
        "  -w, --window N           unacknowledged messages at most (default 100)\n"
        "      --drain SECONDS      wait at most this long for the last deliveries (default 5)\n"
        "  -h, --help               print this help\n"
        "Exit status: 0 ran, 2 usage error, 3 could not connect.\n");
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_seconds(const char *s, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v > 0) || v > 86400)
        return -1;
    *out = v;
    return 0;
}

static int parse_options(int argc, char **argv, struct options *o)
{
    static const struct option longs[] = {
        {"host", required_argument, 0, 'H'},    {"port", required_argument, 0, 'p'},
        {"user", required_argument, 0, 'u'},    {"password", required_argument, 0, 'P'},
        {"topic", required_argument, 0, 't'},   {"subscribers", required_argument, 0, 's'},
        {"rate", required_argument, 0, 'r'},    {"duration", required_argument, 0, 'd'},
        {"payload", required_argument, 0, 'l'}, {"qos", required_argument, 0, 'q'},
        {"window", required_argument, 0, 'w'},  {"drain", required_argument, 0, 'D'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    *o = (struct options){.host = "127.0.0.1",
                          .port = "1883",
                          .topic = "bench/b",
                          .password = getenv("TENANT_LOAD_PASSWORD"),
                          .subscribers = 100,
                          .rate = 1000,
                          .payload = 64,
                          .qos = 1,
                          .window = 100,
                          .duration = 10,
                          .drain = 5};
    int ch, bad = 0;
    while ((ch = getopt_long(argc, argv, "H:p:u:P:t:s:r:d:l:q:w:h", longs, 0)) != -1) {
        switch (ch) {
        case 'H':
            o->host = optarg;
            break;
        case 'p':
            o->port = optarg;
            break;
        case 'u':
            o->user = optarg;
            break;
        case 'P':
            o->password = optarg;
            break;
        case 't':
            o->topic = optarg;
            break;
        case 's':
            bad |= parse_long(optarg, 1, 10000, &o->subscribers);
            break;
        case 'r':
            bad |= parse_long(optarg, 1, 1000000, &o->rate);
            break;
        case 'd':
            bad |= parse_seconds(optarg, &o->duration);
            break;
        case 'l':
            bad |= parse_long(optarg, 16, 1 << 20, &o->payload);
            break;
        case 'q':
            bad |= parse_long(optarg, 0, 2, &o->qos);
            break;
        case 'w':
            bad |= parse_long(optarg, 1, 60000, &o->window);
            break;
        case 'D':
            bad |= parse_seconds(optarg, &o->drain);
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            bad = 1;
        }
    }
    if (optind < argc || strlen(o->topic) == 0 || strlen(o->topic) > 1024 ||
        strpbrk(o->topic, "+#"))
        bad = 1;
    if (o->password && !o->user)
        bad = 1; /* MQTT 3.1.1: no password without a user name */
    return bad ? -1 : 0;
}

/* ------------------------------------------------------------- small tools */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p) {
        perror("tenant-load: calloc");
        exit(1);
    }
    return p;
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* A growable byte buffer: a connection's input or output. */
struct buf {
    unsigned char *data;
    size_t len, cap;
};

static unsigned char *buf_room(struct buf *b, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n)
            cap *= 2;
        unsigned char *d = realloc(b->data, cap);
        if (!d) {
            perror("tenant-load: realloc");
            exit(1);
        }
        b->data = d;
        b->cap = cap;
    }
    return b->data + b->len;
}

static void buf_put(struct buf *b, const void *p, size_t n)
{
    memcpy(buf_room(b, n), p, n);
    b->len += n;
}

static void buf_consume(struct buf *b, size_t n)
{
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

/* ------------------------------------------------------- MQTT 3.1.1 packets */

static void put_u16(struct buf *b, unsigned v)
{
    unsigned char p[2] = {(unsigned char)(v >> 8), (unsigned char)v};
    buf_put(b, p, 2);
}

static void put_str(struct buf *b, const char *s)
{
    put_u16(b, (unsigned)strlen(s));
    buf_put(b, s, strlen(s));
}

/* The fixed header: first byte, then the remaining length as a varint. */
static void put_header(struct buf *b, unsigned first, size_t remaining)
{
    unsigned char h[5];
    size_t n = 0;
    h[n++] = (unsigned char)first;
    do {
        h[n] = remaining % 128;
        remaining /= 128;
        if (remaining)
            h[n] |= 0x80;
        n++;
    } while (remaining);
    buf_put(b, h, n);
}

static void put_connect(struct buf *out, const char *client_id, const struct options *o)
{
    size_t len = 6 + 1 + 1 + 2 + 2 + strlen(client_id);
    unsigned flags = 0x02; /* clean session */
    if (o->user) {
        flags |= 0x80;
        len += 2 + strlen(o->user);
    }
    if (o->password) {
        flags |= 0x40;
        len += 2 + strlen(o->password);
    }
    put_header(out, 0x10, len);
    put_str(out, "MQTT");
    unsigned char level_flags[2] = {4, (unsigned char)flags};
    buf_put(out, level_flags, 2);
    put_u16(out, KEEPALIVE_S);
    put_str(out, client_id);
    if (o->user)
        put_str(out, o->user);
    if (o->password)
        put_str(out, o->password);
}

static void put_subscribe(struct buf *out, unsigned pid, const char *filter)
{
    put_header(out, 0x82, 2 + 2 + strlen(filter) + 1);
    put_u16(out, pid);
    put_str(out, filter);
    unsigned char qos = 1;
    buf_put(out, &qos, 1);
}

/* PUBACK, PUBREC, PUBREL, PUBCOMP: a first byte and a packet id. */
static void put_ack(struct buf *out, unsigned first, unsigned pid)
{
    put_header(out, first, 2);
    put_u16(out, pid);
}

static void put_publish(struct buf *out, const struct options *o, unsigned pid, uint64_t seq,
                        uint64_t sent_ns)
{
    size_t tlen = strlen(o->topic);
    size_t len = 2 + tlen + (o->qos ? 2 : 0) + (size_t)o->payload;
    put_header(out, 0x30 | (unsigned)o->qos << 1, len);
    put_str(out, o->topic);
    if (o->qos)
        put_u16(out, pid);
    unsigned char *p = buf_room(out, (size_t)o->payload);
    memset(p, 0, (size_t)o->payload);
    put_u64(p, seq);
    put_u64(p + 8, sent_ns);
    out->len += (size_t)o->payload;
}

/* Frames one packet at the start of b: 1 and its header length and body
 * length when it is all there, 0 when more bytes are needed, -1 when it is
 * malformed or too large. */
static int frame_packet(const struct buf *b, size_t *hlen, size_t *blen)
{
    size_t len = 0, mult = 1, i = 1;
    for (;;) {
        if (i >= b->len)
            return 0;
        if (i > 4)
            return -1;
        unsigned char c = b->data[i++];
        len += (c & 0x7F) * mult;
        mult *= 128;
        if (!(c & 0x80))
            break;
    }
    if (len > MAX_PACKET)
        return -1;
    if (b->len < i + len)
        return 0;
    *hlen = i;
    *blen = len;
    return 1;
}

/* --------------------------------------------------------- the benchmark */

enum role { ROLE_SUB, ROLE_PUB };
enum state { ST_IDLE, ST_CONNECTING, ST_CONNACK, ST_SUBACK, ST_READY };
enum phase { PH_SETUP, PH_RUN, PH_DRAIN, PH_DONE };

struct conn {
    enum role role;
    int index;
    int fd;
    enum state state;
    int watching_out; /* EPOLLOUT is registered */
    struct buf in, out;
    uint64_t last_sent;  /* for PINGREQ */
    uint64_t retry_at;   /* ST_IDLE: when to reconnect */
    unsigned char *seen; /* subscriber: 1 per sequence number received */
};

struct bench {
    struct options o;
    struct addrinfo *addr;
    int ep;
    enum phase phase;
    const char *fatal; /* why the setup failed */
    struct conn *subs;
    struct conn pub;
    uint64_t planned; /* rate x duration */
    uint64_t start, end, drain_end, setup_end, next_tick;

    /* publisher */
    uint64_t next_seq, inflight, acked_count;
    int64_t pid_seq[65536]; /* packet id -> sequence number, -1 when free */
    unsigned next_pid;
    unsigned char *acked; /* per sequence number */
    uint64_t late, late_max_ns;

    /* subscribers */
    uint64_t dup, foreign;
    uint64_t *lat; /* ns, one per first delivery */
    size_t nlat, lat_cap;

    uint64_t reconnects, refused;
};

static void conn_close(struct bench *b, struct conn *c, const char *why);

static void set_events(struct bench *b, struct conn *c, int want_out)
{
    if (c->watching_out == want_out)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(b->ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->watching_out = want_out;
}

/* Writes what the socket takes now; watches for writability if some is left. */
static void conn_flush(struct bench *b, struct conn *c)
{
    if (c->state == ST_IDLE || c->state == ST_CONNECTING)
        return;
    size_t done = 0;
    while (done < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + done, c->out.len - done, MSG_NOSIGNAL);
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        conn_close(b, c, "send failed");
        return;
    }
    if (done) {
        buf_consume(&c->out, done);
        c->last_sent = now_ns();
    }
    set_events(b, c, c->out.len > 0);
}

static void client_id(const struct conn *c, char *id, size_t size)
{
    if (c->role == ROLE_PUB)
        snprintf(id, size, "tl%ld-pub", (long)getpid());
    else
        snprintf(id, size, "tl%ld-sub%d", (long)getpid(), c->index);
}

/* Starts a non-blocking TCP connect; the CONNECT waits in the output. */
static int conn_open(struct bench *b, struct conn *c)
{
    int fd = socket(b->addr->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, b->addr->ai_addr, b->addr->ai_addrlen) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(b->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        close(fd);
        return -1;
    }
    c->fd = fd;
    c->watching_out = 1;
    c->state = ST_CONNECTING;
    c->in.len = c->out.len = 0;
    char id[64];
    client_id(c, id, sizeof id);
    put_connect(&c->out, id, &b->o);
    return 0;
}

/* The publisher lost its connection: its unacknowledged messages are given up
 * (a clean session); they count as sent but not acknowledged. */
static void pub_forget_inflight(struct bench *b)
{
    for (unsigned pid = 1; pid < 65536; pid++)
        b->pid_seq[pid] = -1;
    b->inflight = 0;
}

static void conn_close(struct bench *b, struct conn *c, const char *why)
{
    if (c->state == ST_IDLE)
        return;
    epoll_ctl(b->ep, EPOLL_CTL_DEL, c->fd, 0);
    close(c->fd);
    c->fd = -1;
    c->state = ST_IDLE;
    c->retry_at = now_ns() + RETRY_NS;
    if (c->role == ROLE_PUB)
        pub_forget_inflight(b);
    if (b->phase == PH_SETUP && !b->fatal)
        b->fatal = why;
}

static void record_latency(struct bench *b, uint64_t ns)
{
    if (b->nlat == b->lat_cap) {
        b->lat_cap = b->lat_cap ? b->lat_cap * 2 : 65536;
        uint64_t *l = realloc(b->lat, b->lat_cap * sizeof *l);
        if (!l) {
            perror("tenant-load: realloc");
            exit(1);
        }
        b->lat = l;
    }
    b->lat[b->nlat++] = ns;
}

/* A PUBLISH to a subscriber: acknowledge it, then account for it. */
static void sub_on_publish(struct bench *b, struct conn *c, unsigned flags, const unsigned char *p,
                           size_t len, uint64_t now)
{
    unsigned qos = flags >> 1 & 3;
    if (len < 2)
        return;
    size_t off = 2 + ((size_t)p[0] << 8 | p[1]);
    if (qos) {
        if (off + 2 > len)
            return;
        put_ack(&c->out, qos == 1 ? 0x40 : 0x50, (unsigned)p[off] << 8 | p[off + 1]);
        off += 2;
    }
    if (off + 16 > len) {
        b->foreign++;
        return;
    }
    uint64_t seq = get_u64(p + off), sent = get_u64(p + off + 8);
    if (seq >= b->planned) {
        b->foreign++;
        return;
    }
    if (c->seen[seq]) {
        b->dup++;
        return;
    }
    c->seen[seq] = 1;
    record_latency(b, now > sent ? now - sent : 0);
}

static void pub_on_ack(struct bench *b, unsigned type, unsigned pid)
{
    int64_t seq = b->pid_seq[pid];
    if (seq < 0)
        return;                   /* not in flight: ignore, as a broker would */
    if (type == 4 || type == 5) { /* PUBACK, PUBREC: the broker has it */
        if (!b->acked[seq]) {
            b->acked[seq] = 1;
            b->acked_count++;
        }
    }
    if (type == 5) {
        put_ack(&b->pub.out, 0x62, pid); /* PUBREL; the slot is freed by PUBCOMP */
        return;
    }
    b->pid_seq[pid] = -1;
    b->inflight--;
}

static void on_connack(struct bench *b, struct conn *c, const unsigned char *p, size_t len)
{
    if (c->state != ST_CONNACK || len < 2 || p[1] != 0) {
        b->refused++;
        conn_close(b, c, "CONNECT refused");
        return;
    }
    if (c->role == ROLE_PUB) {
        c->state = ST_READY;
        return;
    }
    put_subscribe(&c->out, 1, b->o.topic);
    c->state = ST_SUBACK;
}

static void on_suback(struct bench *b, struct conn *c, const unsigned char *p, size_t len)
{
    if (c->state != ST_SUBACK || len < 3 || p[2] > 2) {
        b->refused++;
        conn_close(b, c, "SUBSCRIBE refused");
        return;
    }
    c->state = ST_READY;
}

static void on_packet(struct bench *b, struct conn *c, unsigned first, const unsigned char *p,
                      size_t len, uint64_t now)
{
    unsigned type = first >> 4;
    unsigned pid = len >= 2 ? (unsigned)p[0] << 8 | p[1] : 0;
    switch (type) {
    case 2:
        on_connack(b, c, p, len);
        break;
    case 9:
        on_suback(b, c, p, len);
        break;
    case 3:
        if (c->role == ROLE_SUB)
            sub_on_publish(b, c, first & 0x0F, p, len, now);
        break;
    case 6:
        put_ack(&c->out, 0x70, pid);
        break; /* PUBREL -> PUBCOMP */
    case 4:
    case 5:
    case 7:
        if (c->role == ROLE_PUB)
            pub_on_ack(b, type, pid);
        break;
    default:
        break; /* PINGRESP and the rest */
    }
}

/* Reads what is there (a bounded amount, so no connection starves the
 * others), handles every whole packet, then sends the answers. */
static void conn_read(struct bench *b, struct conn *c)
{
    for (int round = 0; round < 4 && c->state != ST_IDLE; round++) {
        ssize_t n = recv(c->fd, buf_room(&c->in, READ_CHUNK), READ_CHUNK, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n <= 0) {
            conn_close(b, c, n == 0 ? "closed by the broker" : "recv failed");
            return;
        }
        c->in.len += (size_t)n;
        uint64_t now = now_ns();
        size_t hlen, blen;
        int r = 0;
        while (c->state != ST_IDLE && (r = frame_packet(&c->in, &hlen, &blen)) == 1) {
            on_packet(b, c, c->in.data[0], c->in.data + hlen, blen, now);
            if (c->state != ST_IDLE)
                buf_consume(&c->in, hlen + blen);
        }
        if (c->state != ST_IDLE && r < 0)
            conn_close(b, c, "malformed packet from the broker");
        if (n < READ_CHUNK)
            break;
    }
    conn_flush(b, c);
}

static void conn_writable(struct bench *b, struct conn *c)
{
    if (c->state == ST_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            conn_close(b, c, "connect failed");
            return;
        }
        c->state = ST_CONNACK;
    }
    conn_flush(b, c);
}

static uint64_t slot_time(const struct bench *b, uint64_t seq)
{
    return b->start + (uint64_t)((double)seq * NS / (double)b->o.rate);
}

static unsigned next_free_pid(struct bench *b)
{
    for (;;) {
        b->next_pid = b->next_pid % 65535 + 1;
        if (b->pid_seq[b->next_pid] < 0)
            return b->next_pid;
    }
}

/* Publishes every message whose slot has come, as far as the window allows. */
static void publish_due(struct bench *b, uint64_t now)
{
    struct conn *c = &b->pub;
    if (c->state != ST_READY || now >= b->end)
        return;
    while (b->next_seq < b->planned && slot_time(b, b->next_seq) <= now &&
           (b->o.qos == 0 || b->inflight < (uint64_t)b->o.window)) {
        uint64_t seq = b->next_seq++, t = now_ns();
        uint64_t lateness = t - slot_time(b, seq);
        if (lateness > LATE_NS)
            b->late++;
        if (lateness > b->late_max_ns)
            b->late_max_ns = lateness;
        unsigned pid = 0;
        if (b->o.qos) {
            pid = next_free_pid(b);
            b->pid_seq[pid] = (int64_t)seq;
            b->inflight++;
        } else {
            b->acked[seq] = 1; /* QoS 0: nothing to wait for */
            b->acked_count++;
        }
        put_publish(&c->out, &b->o, pid, seq, t);
        conn_flush(b, c);
        if (c->state != ST_READY)
            return;
    }
}

/* Deliveries of acknowledged messages, and the drain's end condition. */
static uint64_t count_delivered(const struct bench *b, uint64_t *unacked_delivered)
{
    uint64_t delivered = 0, extra = 0;
    for (long i = 0; i < b->o.subscribers; i++) {
        const unsigned char *seen = b->subs[i].seen;
        for (uint64_t s = 0; s < b->next_seq; s++) {
            if (seen[s] && b->acked[s])
                delivered++;
            else if (seen[s])
                extra++;
        }
    }
    if (unacked_delivered)
        *unacked_delivered = extra;
    return delivered;
}

static int all_ready(const struct bench *b)
{
    for (long i = 0; i < b->o.subscribers; i++)
        if (b->subs[i].state != ST_READY)
            return 0;
    return 1;
}

/* Every TICK_NS: reconnections, keep-alive pings, phase changes. */
static void tick(struct bench *b, uint64_t now)
{
    for (long i = -1; i < b->o.subscribers; i++) {
        struct conn *c = i < 0 ? &b->pub : &b->subs[i];
        if (c->state == ST_IDLE && b->phase != PH_SETUP && now >= c->retry_at) {
            b->reconnects++;
            if (conn_open(b, c) < 0)
                c->retry_at = now + RETRY_NS;
        } else if (c->state == ST_READY && now - c->last_sent > PING_EVERY_NS) {
            put_header(&c->out, 0xC0, 0);
            conn_flush(b, c);
        }
    }
    if (b->phase == PH_SETUP && now > b->setup_end && !b->fatal)
        b->fatal = "timed out waiting for CONNACK and SUBACK";
    if (b->phase == PH_DRAIN &&
        (now >= b->drain_end ||
         (b->inflight == 0 &&
          count_delivered(b, 0) == b->acked_count * (uint64_t)b->o.subscribers)))
        b->phase = PH_DONE;
}

/* From the setup to the run: when every subscriber is in, the publisher
 * connects; when it is in too, the clock starts. */
static void advance_setup(struct bench *b, uint64_t now)
{
    if (b->phase != PH_SETUP || b->fatal || !all_ready(b))
        return;
    if (b->pub.state == ST_IDLE && conn_open(b, &b->pub) < 0) {
        b->fatal = "cannot open the publisher's socket";
        return;
    }
    if (b->pub.state != ST_READY)
        return;
    b->phase = PH_RUN;
    b->start = now;
    b->end = now + (uint64_t)(b->o.duration * NS);
}

static int next_timeout_ms(const struct bench *b, uint64_t now)
{
    uint64_t wake = b->next_tick;
    if (b->phase == PH_RUN) {
        if (b->pub.state == ST_READY && b->next_seq < b->planned &&
            (b->o.qos == 0 || b->inflight < (uint64_t)b->o.window)) {
            uint64_t slot = slot_time(b, b->next_seq);
            if (slot < wake)
                wake = slot;
        }
        if (b->end < wake)
            wake = b->end;
    }
    if (wake <= now)
        return 0;
    return (int)((wake - now + MS - 1) / MS);
}

static void run_loop(struct bench *b)
{
    struct epoll_event ev[256];
    while (b->phase != PH_DONE && !(b->phase == PH_SETUP && b->fatal)) {
        uint64_t now = now_ns();
        int n = epoll_wait(b->ep, ev, 256, next_timeout_ms(b, now));
        if (n < 0 && errno != EINTR) {
            perror("tenant-load: epoll_wait");
            exit(1);
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = ev[i].data.ptr;
            if (c->state != ST_IDLE && (ev[i].events & (EPOLLOUT | EPOLLERR)))
                conn_writable(b, c);
            if (c->state != ST_IDLE && (ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
                conn_read(b, c);
        }
        now = now_ns();
        advance_setup(b, now);
        if (b->phase == PH_RUN) {
            publish_due(b, now);
            if (now >= b->end) {
                b->phase = PH_DRAIN;
                b->drain_end = now + (uint64_t)(b->o.drain * NS);
            }
        }
        if (now >= b->next_tick) {
            tick(b, now);
            b->next_tick = now + TICK_NS;
        }
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile, in microseconds. */
static double percentile_us(const uint64_t *sorted, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t rank = (size_t)(p * (double)n + 0.999999);
    if (rank < 1)
        rank = 1;
    if (rank > n)
        rank = n;
    return (double)sorted[rank - 1] / 1000.0;
}

static void report(struct bench *b)
{
    uint64_t extra, delivered = count_delivered(b, &extra);
    uint64_t expected = b->acked_count * (uint64_t)b->o.subscribers;
    qsort(b->lat, b->nlat, sizeof *b->lat, cmp_u64);
    printf("subscribers=%ld\nrate=%ld\nduration_s=%g\npayload=%ld\nqos=%ld\n", b->o.subscribers,
           b->o.rate, b->o.duration, b->o.payload, b->o.qos);
    printf("planned=%" PRIu64 "\nsent=%" PRIu64 "\nacked=%" PRIu64 "\n", b->planned, b->next_seq,
           b->acked_count);
    printf("deliveries_expected=%" PRIu64 "\ndelivered=%" PRIu64 "\n", expected, delivered);
    printf("delivered_frac=%.6f\n", expected ? (double)delivered / (double)expected : 0.0);
    printf("lost_qos1=%" PRIu64 "\n", b->o.qos ? expected - delivered : 0);
    printf("dup=%" PRIu64 "\nunacked_delivered=%" PRIu64 "\n", b->dup, extra);
    printf("lat_p50_us=%.1f\nlat_p99_us=%.1f\nlat_max_us=%.1f\n",
           percentile_us(b->lat, b->nlat, 0.50), percentile_us(b->lat, b->nlat, 0.99),
           b->nlat ? (double)b->lat[b->nlat - 1] / 1000.0 : 0.0);
    printf("late=%" PRIu64 "\nlate_max_ms=%.1f\n", b->late, (double)b->late_max_ns / 1e6);
    printf("reconnects=%" PRIu64 "\nrefused=%" PRIu64 "\n", b->reconnects, b->refused);
    if (b->foreign)
        printf("foreign=%" PRIu64 "\n", b->foreign);
}

static int resolve(struct bench *b)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int err = getaddrinfo(b->o.host, b->o.port, &hints, &b->addr);
    if (err) {
        fprintf(stderr, "tenant-load: %s:%s: %s\n", b->o.host, b->o.port, gai_strerror(err));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static struct bench b; /* large (the packet id table): not on the stack */
    if (parse_options(argc, argv, &b.o) < 0) {
        usage(stderr);
        return 2;
    }
    if (resolve(&b) < 0)
        return 3;
    b.ep = epoll_create1(EPOLL_CLOEXEC);
    if (b.ep < 0) {
        perror("tenant-load: epoll_create1");
        return 1;
    }
    b.planned = (uint64_t)((double)b.o.rate * b.o.duration + 0.5);
    b.acked = xcalloc(b.planned, 1);
    b.subs = xcalloc((size_t)b.o.subscribers, sizeof *b.subs);
    pub_forget_inflight(&b);
    b.pub = (struct conn){.role = ROLE_PUB, .fd = -1, .state = ST_IDLE};
    uint64_t now = now_ns();
    b.setup_end = now + SETUP_TIMEOUT_NS;
    b.next_tick = now + TICK_NS;
    for (long i = 0; i < b.o.subscribers; i++) {
        struct conn *c = &b.subs[i];
        *c = (struct conn){.role = ROLE_SUB,
                           .index = (int)i,
                           .fd = -1,
                           .state = ST_IDLE,
                           .seen = xcalloc(b.planned, 1)};
        if (conn_open(&b, c) < 0) {
            fprintf(stderr, "tenant-load: cannot connect to %s:%s: %s\n", b.o.host, b.o.port,
                    strerror(errno));
            return 3;
        }
    }
    run_loop(&b);
    if (b.phase == PH_SETUP) {
        fprintf(stderr, "tenant-load: could not connect and subscribe every client: %s\n", b.fatal);
        return 3;
    }
    report(&b);
    return 0;
}
