/*
 * aviary-bench: a load generator to check a claim about an MQTT broker on
 * this machine (aviaryd or any other), over 127.0.0.1 only.
 *
 *   aviary-bench SCENARIO [OPTIONS]      (aviary-bench --help for the options)
 *
 * Scenarios:
 *   fanin    P publishers -> 1 subscriber of bench/#, as fast as they may
 *   fanout   1 publisher -> N subscribers of bench/#
 *   qos1     fanin at QoS 1 (a window of unacknowledged messages per publisher)
 *   qos2     fanin at QoS 2
 *   latency  publishers paced at a fixed total rate for a fixed time
 *   conns    C idle connections (CONNECT, one SUBSCRIBE each), the broker's
 *            RSS before and after; --during-sub: a steady stream is measured
 *            while a second process of this tool opens the C connections all
 *            at once
 *   noisy    a steady QoS 1 tenant measured alone, then next to a tenant
 *            flooding at QoS 0 (each tenant its own login)
 *
 * How it measures (printed with every result):
 *   - rates from the first PUBLISH written to the last delivery read, on
 *     CLOCK_MONOTONIC;
 *   - latency from the CLOCK_MONOTONIC time (ns) each publisher writes in the
 *     payload, read back by the subscriber on the same host;
 *   - the broker's CPU from utime+stime of /proc/PID/stat and its memory from
 *     VmRSS of /proc/PID/status (--pid), over the same interval.
 *
 * One thread, one libevent loop (conns --during-sub: and one child process,
 * the burst); TCP, TLS (bufferevent_openssl) and
 * WebSocket (RFC 6455 client framing written here); MQTT 3.1.1 and 5.0
 * packets encoded and decoded here. Every loop is bounded in count, and the
 * whole run by --timeout.
 *
 * Output: key=value lines, then one line "# how it was measured: ...".
 * Exit status: 0 the scenario ran, 2 usage error, 3 timeout or connections
 * that failed or were refused.
 *
 * Built by `make bench` into the build directory; by hand:
 *   cc -std=gnu11 -O2 -Wall -Wextra -Werror -o aviary-bench aviary-bench.c \
 *      $(pkg-config --cflags --libs libevent_openssl libevent openssl)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24 /* Linux 4.2 */
#endif

#define NS 1000000000ull
#define MS 1000000ull
#define KEEPALIVE_S 60
#define PING_EVERY_S 30
#define HEADER_BYTES 16          /* seq, publisher, phase, send time */
#define MAX_PAYLOAD (256 * 1024) /* -s and --flood-size at most */
#define MAX_PACKET (MAX_PAYLOAD + 1024)
#define MAX_WINDOW 10000
#define MAX_CLIENTS 1000000
#define MAX_SAMPLES (8u << 20) /* latency samples kept per phase */
#define MAX_FLOOD_MSGS 100000000L
#define MAX_FLOOD_RECONNECTS 1000
#define HIGH_WATER (256 * 1024) /* QoS 0: stop writing above this much queued */
#define LOW_WATER (64 * 1024)   /* and go on below this */
#define PUMP_BUDGET 256         /* messages per publisher per callback */
#define OPEN_BATCH 200          /* conns: connect() calls per callback */
#define PRIO_MEASURED 0         /* the measured stream's events run before ... */
#define PRIO_BULK 1             /* ... idle and flooding connections' */
#define BULK_CALLBACKS 512      /* bulk callbacks in a row before looking for measured ones */
#define LATE_NS (10 * MS)
#define WS_HEADER_MAX 8192
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define NPHASES 3            /* noisy: 0 quiet, 1 flood warming up (not counted), 2 noisy */
#define BURST_ARGS 40        /* argv of the burst process, NULL included */
#define BURST_OUT_MAX 16384  /* what the burst process prints (about 1 KiB) */
#define BURST_REAP_TRIES 500 /* after SIGKILL, 10 ms apart */

enum { EXIT_OK = 0, EXIT_USAGE = 2, EXIT_FAILED = 3 };

enum scenario { SC_FANIN, SC_FANOUT, SC_QOS1, SC_QOS2, SC_LATENCY, SC_CONNS, SC_NOISY };
enum role { ROLE_SUB, ROLE_PUB, ROLE_IDLE, ROLE_FLOOD_PUB, ROLE_FLOOD_SUB };
enum cstate { CS_NEW, CS_CONNECTING, CS_WS_UPGRADE, CS_MQTT, CS_SUBSCRIBING, CS_READY, CS_CLOSED };

/* ------------------------------------------------------------------ options */

struct options {
    enum scenario scenario;
    const char *name, *host, *port, *user, *password, *cafile, *ws_path;
    const char *flood_user, *flood_password;
    bool tls, ws, v5, during_sub;
    bool burst_child; /* --burst-child: the burst of a --during-sub run (see start_burst) */
    long pubs, subs, msgs, size, qos, window, rate, conns, concurrency, pid, src_addrs;
    long flood_pubs, flood_size;
    double duration, timeout, drain, hold, lead;
};

struct client {
    struct bench *b;
    struct bufferevent *bev;
    struct evbuffer *rx; /* WebSocket: the MQTT bytes unwrapped from frames */
    enum role role;
    enum cstate state;
    int tenant; /* 0: the measured tenant, 1: the flooding one (noisy) */
    long index;
    char topic[64];
    char ws_accept[32];
    uint16_t next_pid;
    long quota, sent, acked, inflight;
    bool reaped;
};

struct samples {
    uint64_t *ns;
    size_t n, cap;
};

struct proc_sample {
    bool ok;
    uint64_t cpu_ticks; /* utime + stime */
    long rss_kb;
};

struct bench {
    struct options o;
    struct event_base *base;
    SSL_CTX *ssl;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint8_t *scratch; /* one packet being built */
    size_t plen;
    uint64_t mask_state;

    struct client *subs, *pubs, *idle, *flood;
    long nsubs, npubs, nidle, nflood;
    struct client **reap;
    long nreap;

    struct event *tick, *deadline, *ping, *rss_timer;
    long need_ready, ready, failures, refused, idle_opened, idle_ok, idle_failed;
    long flood_reconnects, flood_refused, flood_sent, flood_rx, ack_errors, late;
    bool publishing, flooding, finished, timed_out, pubs_done;
    int phase;

    uint64_t t_first_pub, t_last_pub, t_last_ack, t_last_rx, t_pub_done, t_phase[NPHASES + 1];
    uint64_t t_conn_start, t_conn_done, t_hold_until, t_burst;
    long sent[NPHASES], delivered[NPHASES];
    struct samples lat[NPHASES];

    /* conns --during-sub: gaps between deliveries of the stream, and between sends */
    uint64_t last_rx_ns, last_tx_ns, gap_before, gap_during, send_gap_during, lat_during_max;
    uint64_t t_start; /* when the --timeout deadline was armed */
    pid_t burst_pid;  /* the process making the burst, while burst_running */
    int burst_fd;     /* the read end of its stdout */
    bool burst_started, burst_running;
    char burst_out[BURST_OUT_MAX]; /* its stdout, printed with this process's report */
    size_t burst_len;

    struct proc_sample proc0, proc1;
    long rss_max_kb;
    uint64_t t_proc0, t_proc1;
    struct rusage self0, self1;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: aviary-bench SCENARIO [OPTIONS]\n"
        "Scenarios: fanin fanout qos1 qos2 latency conns noisy (see the top of the source).\n"
        "Connection:\n"
        "      --host ADDR           broker address, loopback only (default 127.0.0.1)\n"
        "  -p, --port PORT           broker port (default 1883)\n"
        "      --tls                 TLS (no certificate check unless --cafile)\n"
        "      --cafile FILE         check the broker's certificate against FILE\n"
        "      --ws                  MQTT over WebSocket (with --tls: wss)\n"
        "      --ws-path PATH        WebSocket path (default /mqtt)\n"
        "      --v5                  MQTT 5.0 (default 3.1.1)\n"
        "  -u, --username NAME       user name (cloud mode: the instance)\n"
        "      --password SECRET     password (cloud mode: the token secret)\n"
        "Load:\n"
        "  -P, --pubs N              publishers (fanin 4, qos1/qos2 4, others 1)\n"
        "  -S, --subs N              subscribers (fanout 10, noisy 10, others 1)\n"
        "  -m, --msgs N              messages per publisher (fanin 25000, fanout/qos 10000)\n"
        "  -s, --size BYTES          payload size, %d to %d (default 64)\n"
        "  -q, --qos 0|1|2           QoS of publishers and subscriptions\n"
        "  -w, --window N            unacknowledged messages per publisher (default 100)\n"
        "  -r, --rate N              messages/s of all publishers together (latency 1000,\n"
        "                            conns --during-sub 1000, noisy 1000; 0 = as fast as "
        "possible)\n"
        "  -d, --duration SECONDS    paced publishing time (latency 5; noisy: each phase, 5)\n"
        "  -C, --conns N             conns: idle connections (default 1000)\n"
        "      --concurrency N       conns: handshakes in flight (default 100; all with "
        "--during-sub)\n"
        "      --during-sub          conns: measure a stream while a child process opens\n"
        "                            the connections\n"
        "      --hold SECONDS        conns: wait before reading RSS after (default 1)\n"
        "      --src-addrs N         connect from 127.0.0.1 to 127.0.0.N, in turn (IPv4;\n"
        "                            conns 16, others 1)\n"
        "      --flood-pubs N        noisy: flooding publishers (default 4)\n"
        "      --flood-size BYTES    noisy: their payload size (default 1024)\n"
        "      --flood-username NAME, --flood-password SECRET   noisy: the flooding tenant\n"
        "      --lead SECONDS        noisy: flood time before the noisy phase counts (default 1)\n"
        "Measurement:\n"
        "      --pid PID             the broker's process: CPU and RSS from /proc\n"
        "      --drain SECONDS       after publishing, wait this long for no delivery (2)\n"
        "  -t, --timeout SECONDS     hard limit of the whole run (default 60)\n"
        "  -h, --help                this help\n"
        "Exit status: 0 ran, 2 usage error, 3 timeout or connection failures.\n",
        HEADER_BYTES, MAX_PAYLOAD);
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

static int parse_seconds(const char *s, double lo, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end || !(v >= lo) || v > 86400)
        return -1;
    *out = v;
    return 0;
}

static int parse_scenario(const char *s, enum scenario *out)
{
    static const char *names[] = {"fanin", "fanout", "qos1", "qos2", "latency", "conns", "noisy"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (enum scenario)i;
            return 0;
        }
    }
    return -1;
}

static const struct option long_options[] = {{"host", required_argument, 0, 'H'},
                                             {"port", required_argument, 0, 'p'},
                                             {"tls", no_argument, 0, 'T'},
                                             {"cafile", required_argument, 0, 'A'},
                                             {"ws", no_argument, 0, 'W'},
                                             {"ws-path", required_argument, 0, 'X'},
                                             {"v5", no_argument, 0, '5'},
                                             {"username", required_argument, 0, 'u'},
                                             {"password", required_argument, 0, 'k'},
                                             {"pubs", required_argument, 0, 'P'},
                                             {"subs", required_argument, 0, 'S'},
                                             {"msgs", required_argument, 0, 'm'},
                                             {"size", required_argument, 0, 's'},
                                             {"qos", required_argument, 0, 'q'},
                                             {"window", required_argument, 0, 'w'},
                                             {"rate", required_argument, 0, 'r'},
                                             {"duration", required_argument, 0, 'd'},
                                             {"conns", required_argument, 0, 'C'},
                                             {"concurrency", required_argument, 0, 'c'},
                                             {"during-sub", no_argument, 0, 'g'},
                                             {"burst-child", no_argument, 0, 'B'},
                                             {"hold", required_argument, 0, 'o'},
                                             {"flood-pubs", required_argument, 0, 'F'},
                                             {"flood-size", required_argument, 0, 'Z'},
                                             {"flood-username", required_argument, 0, 'U'},
                                             {"flood-password", required_argument, 0, 'K'},
                                             {"lead", required_argument, 0, 'l'},
                                             {"pid", required_argument, 0, 'I'},
                                             {"drain", required_argument, 0, 'D'},
                                             {"src-addrs", required_argument, 0, 'a'},
                                             {"timeout", required_argument, 0, 't'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};

/* The field of an option without a value, or NULL. */
static bool *flag_of(struct options *o, int ch)
{
    switch (ch) {
    case 'T':
        return &o->tls;
    case 'W':
        return &o->ws;
    case '5':
        return &o->v5;
    case 'g':
        return &o->during_sub;
    case 'B':
        return &o->burst_child;
    default:
        return NULL;
    }
}

/* One option into `o`; returns 0, or -1 for a bad value. */
static int apply_option(struct options *o, int ch, const char *arg)
{
    bool *flag = flag_of(o, ch);
    if (flag) {
        *flag = true;
        return 0;
    }
    switch (ch) {
    case 'H':
        o->host = arg;
        return 0;
    case 'p':
        o->port = arg;
        return 0;
    case 'A':
        o->cafile = arg;
        return 0;
    case 'X':
        o->ws_path = arg;
        return arg[0] == '/' && !strpbrk(arg, " \r\n") ? 0 : -1;
    case 'u':
        o->user = arg;
        return strlen(arg) < 65536 ? 0 : -1;
    case 'k':
        o->password = arg;
        return strlen(arg) < 65536 ? 0 : -1;
    case 'U':
        o->flood_user = arg;
        return strlen(arg) < 65536 ? 0 : -1;
    case 'K':
        o->flood_password = arg;
        return strlen(arg) < 65536 ? 0 : -1;
    case 'P':
        return parse_long(arg, 1, 10000, &o->pubs);
    case 'S':
        return parse_long(arg, 1, 100000, &o->subs);
    case 'm':
        return parse_long(arg, 1, 100000000, &o->msgs);
    case 's':
        return parse_long(arg, HEADER_BYTES, MAX_PAYLOAD, &o->size);
    case 'q':
        return parse_long(arg, 0, 2, &o->qos);
    case 'w':
        return parse_long(arg, 1, MAX_WINDOW, &o->window);
    case 'r':
        return parse_long(arg, 0, 10000000, &o->rate);
    case 'd':
        return parse_seconds(arg, 0.1, &o->duration);
    case 'C':
        return parse_long(arg, 1, MAX_CLIENTS, &o->conns);
    case 'c':
        return parse_long(arg, 1, MAX_CLIENTS, &o->concurrency);
    case 'o':
        return parse_seconds(arg, 0, &o->hold);
    case 'F':
        return parse_long(arg, 1, 1000, &o->flood_pubs);
    case 'Z':
        return parse_long(arg, HEADER_BYTES, MAX_PAYLOAD, &o->flood_size);
    case 'l':
        return parse_seconds(arg, 0, &o->lead);
    case 'I':
        return parse_long(arg, 1, 4194304, &o->pid);
    case 'D':
        return parse_seconds(arg, 0.1, &o->drain);
    case 'a':
        return parse_long(arg, 1, 254, &o->src_addrs);
    case 't':
        return parse_seconds(arg, 1, &o->timeout);
    default:
        return -1;
    }
}

#define DEFAULT(field, value)                                                                      \
    do {                                                                                           \
        if (o->field < 0)                                                                          \
            o->field = (value);                                                                    \
    } while (0)

/* The scenario's defaults for what the command line left unset (-1). */
static void apply_defaults(struct options *o)
{
    enum scenario s = o->scenario;
    bool many_pubs = s == SC_FANIN || s == SC_QOS1 || s == SC_QOS2;
    DEFAULT(pubs, many_pubs ? 4 : 1);
    DEFAULT(subs, s == SC_FANOUT || s == SC_NOISY ? 10 : 1);
    DEFAULT(msgs, s == SC_FANIN ? 25000 : 10000);
    DEFAULT(qos, s == SC_QOS1 || s == SC_NOISY ? 1 : s == SC_QOS2 ? 2 : 0);
    DEFAULT(rate, s == SC_LATENCY || s == SC_CONNS || s == SC_NOISY ? 1000 : 0);
    DEFAULT(duration, 5);
    DEFAULT(concurrency, o->during_sub ? o->conns : 100);
    DEFAULT(src_addrs, s == SC_CONNS ? 16 : 1);
    if (s == SC_CONNS) {
        o->pubs = o->subs = o->during_sub ? 1 : 0;
        o->qos = 0;
    }
    if (s == SC_LATENCY && o->rate == 0)
        o->rate = 1000;
}

static int check_options(const struct options *o)
{
    if (o->scenario == SC_LATENCY && o->rate < o->pubs) {
        fprintf(stderr, "aviary-bench: --rate must be at least --pubs\n");
        return -1;
    }
    if (o->scenario == SC_NOISY && o->rate < 1) {
        fprintf(stderr, "aviary-bench: noisy needs --rate of 1 at least\n");
        return -1;
    }
    if (o->burst_child && (o->scenario != SC_CONNS || o->during_sub)) {
        fprintf(stderr, "aviary-bench: --burst-child is for conns without --during-sub\n");
        return -1;
    }
    if (o->password && !o->user) {
        fprintf(stderr, "aviary-bench: --password needs --username\n");
        return -1;
    }
    if (o->flood_password && !o->flood_user) {
        fprintf(stderr, "aviary-bench: --flood-password needs --flood-username\n");
        return -1;
    }
    return 0;
}

/* Fill `o` from the command line; returns 0, 1 for --help, -1 on a usage error. */
static int parse_options(int argc, char **argv, struct options *o)
{
    *o = (struct options){.host = "127.0.0.1",
                          .port = "1883",
                          .ws_path = "/mqtt",
                          .pubs = -1,
                          .subs = -1,
                          .msgs = -1,
                          .size = 64,
                          .qos = -1,
                          .window = 100,
                          .rate = -1,
                          .conns = 1000,
                          .concurrency = -1,
                          .flood_pubs = 4,
                          .flood_size = 1024,
                          .duration = -1,
                          .timeout = 60,
                          .drain = 2,
                          .src_addrs = -1,
                          .hold = 1,
                          .lead = 1};
    if (argc < 2)
        return -1;
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)
        return 1;
    if (parse_scenario(argv[1], &o->scenario) < 0) {
        fprintf(stderr, "aviary-bench: unknown scenario '%s'\n", argv[1]);
        return -1;
    }
    o->name = argv[1];
    int ch;
    optind = 2;
    while ((ch = getopt_long(argc, argv, "p:u:P:S:m:s:q:w:r:d:C:t:h", long_options, 0)) != -1) {
        if (ch == 'h')
            return 1;
        if (ch == '?' || apply_option(o, ch, optarg) < 0) {
            if (ch != '?')
                fprintf(stderr, "aviary-bench: bad value '%s'\n", optarg);
            return -1;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "aviary-bench: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    apply_defaults(o);
    return check_options(o);
}

/* ------------------------------------------------------------------ /proc */

/* utime+stime (fields 14 and 15 of /proc/PID/stat) and VmRSS of `pid`. */
static struct proc_sample proc_read(long pid)
{
    struct proc_sample s = {0};
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return s;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* the command may hold spaces and parentheses */
    unsigned long long ut, st;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return s;
    s.cpu_ticks = ut + st;
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    f = fopen(path, "r");
    if (!f)
        return s;
    while (fgets(buf, sizeof buf, f))
        if (sscanf(buf, "VmRSS: %ld kB", &s.rss_kb) == 1)
            break;
    fclose(f);
    s.ok = true;
    return s;
}

static void measure_start(struct bench *b)
{
    b->t_proc0 = now_ns();
    getrusage(RUSAGE_SELF, &b->self0);
    if (b->o.pid)
        b->proc0 = proc_read(b->o.pid);
}

static void measure_stop(struct bench *b)
{
    if (b->t_proc1)
        return;
    b->t_proc1 = now_ns();
    getrusage(RUSAGE_SELF, &b->self1);
    if (b->o.pid)
        b->proc1 = proc_read(b->o.pid);
}

static void on_rss_timer(evutil_socket_t fd, short what, void *arg)
{
    struct bench *b = arg;
    struct proc_sample s = proc_read(b->o.pid);
    if (s.ok && s.rss_kb > b->rss_max_kb)
        b->rss_max_kb = s.rss_kb;
}

static double tv_s(struct timeval tv)
{
    return tv.tv_sec + tv.tv_usec / 1e6;
}

/* Broker CPU over [t_proc0, t_proc1], in % of one core, and per delivered message. */
static void print_cpu(struct bench *b, long messages)
{
    double wall = (b->t_proc1 - b->t_proc0) / 1e9;
    double self = tv_s(b->self1.ru_utime) + tv_s(b->self1.ru_stime) - tv_s(b->self0.ru_utime) -
                  tv_s(b->self0.ru_stime);
    if (wall > 0)
        printf("bench_cpu_pct=%.1f\n", 100.0 * self / wall);
    if (!b->o.pid)
        return;
    if (!b->proc0.ok || !b->proc1.ok) {
        printf("broker_cpu=unreadable\n");
        return;
    }
    double cpu = (double)(b->proc1.cpu_ticks - b->proc0.cpu_ticks) / sysconf(_SC_CLK_TCK);
    if (wall > 0)
        printf("broker_cpu_pct=%.1f\n", 100.0 * cpu / wall);
    if (messages > 0)
        printf("broker_us_per_msg=%.2f\n", cpu * 1e6 / messages);
    printf("broker_rss_kb=%ld\nbroker_rss_max_kb=%ld\n", b->proc1.rss_kb,
           b->rss_max_kb > b->proc1.rss_kb ? b->rss_max_kb : b->proc1.rss_kb);
}

/* ------------------------------------------------------------------ latency samples */

static void samples_add(struct samples *s, uint64_t ns)
{
    if (s->n == s->cap) {
        if (s->cap >= MAX_SAMPLES)
            return;
        size_t cap = s->cap ? s->cap * 2 : 4096;
        uint64_t *p = realloc(s->ns, cap * sizeof *p);
        if (!p)
            return;
        s->ns = p;
        s->cap = cap;
    }
    s->ns[s->n++] = ns;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile `q` (0..1) of sorted samples, in µs. */
static double percentile_us(const struct samples *s, double q)
{
    if (!s->n)
        return 0;
    size_t rank = (size_t)ceil(q * (double)s->n);
    if (rank < 1)
        rank = 1;
    return s->ns[(rank > s->n ? s->n : rank) - 1] / 1e3;
}

static void print_latency(const char *prefix, struct samples *s)
{
    if (s->n) /* none: ns may be NULL, which qsort must not be given */
        qsort(s->ns, s->n, sizeof *s->ns, cmp_u64);
    printf("%slat_samples=%zu\n", prefix, s->n);
    printf("%slat_p50_us=%.0f\n%slat_p99_us=%.0f\n%slat_p999_us=%.0f\n%slat_max_us=%.0f\n", prefix,
           percentile_us(s, 0.5), prefix, percentile_us(s, 0.99), prefix, percentile_us(s, 0.999),
           prefix, percentile_us(s, 1.0));
}

/* ------------------------------------------------------------------ wire: WebSocket */

static uint32_t mask_key(struct bench *b)
{
    /* xorshift64*, seeded from RAND_bytes: masks need not be secret here,
       only unpredictable enough that the broker cannot rely on them */
    b->mask_state ^= b->mask_state >> 12;
    b->mask_state ^= b->mask_state << 25;
    b->mask_state ^= b->mask_state >> 27;
    return (uint32_t)((b->mask_state * 2685821657736338717ull) >> 32);
}

/* A masked client frame of `opcode` around data[0..n); data is masked in place. */
static void ws_send_frame(struct client *c, uint8_t opcode, uint8_t *data, size_t n)
{
    uint8_t hdr[14];
    size_t h = 0;
    hdr[h++] = 0x80 | opcode;
    if (n < 126) {
        hdr[h++] = 0x80 | (uint8_t)n;
    } else if (n <= 0xffff) {
        hdr[h++] = 0x80 | 126;
        hdr[h++] = (uint8_t)(n >> 8);
        hdr[h++] = (uint8_t)n;
    } else {
        hdr[h++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            hdr[h++] = (uint8_t)((uint64_t)n >> (8 * i));
    }
    uint32_t key = mask_key(c->b);
    memcpy(hdr + h, &key, 4);
    const uint8_t *m = hdr + h;
    h += 4;
    for (size_t i = 0; i < n; i++)
        data[i] ^= m[i & 3];
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add(out, hdr, h);
    evbuffer_add(out, data, n);
}

static void base64(const uint8_t *in, size_t n, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

static void ws_send_upgrade(struct client *c)
{
    uint8_t nonce[16], digest[SHA_DIGEST_LENGTH];
    char key[32], joined[80];
    RAND_bytes(nonce, sizeof nonce);
    base64(nonce, sizeof nonce, key);
    snprintf(joined, sizeof joined, "%s%s", key, WS_GUID);
    SHA1((const unsigned char *)joined, strlen(joined), digest);
    base64(digest, sizeof digest, c->ws_accept);
    evbuffer_add_printf(bufferevent_get_output(c->bev),
                        "GET %s HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
                        c->b->o.ws_path, c->b->o.host, c->b->o.port, key);
}

/* The answer to the Upgrade: 1 complete and right, 0 not all here yet, -1 refused. */
static int ws_read_upgrade(struct client *c, struct evbuffer *in)
{
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    if (end.pos < 0)
        return evbuffer_get_length(in) > WS_HEADER_MAX ? -1 : 0;
    size_t n = (size_t)end.pos + 4;
    char *head = malloc(n + 1);
    if (!head)
        return -1;
    evbuffer_remove(in, head, n);
    head[n] = 0;
    int ok = strncmp(head, "HTTP/1.1 101", 12) == 0;
    char *accept = ok ? strcasestr(head, "\r\nsec-websocket-accept:") : NULL;
    if (accept) {
        accept += strlen("\r\nsec-websocket-accept:");
        accept += strspn(accept, " \t");
        ok = strncmp(accept, c->ws_accept, strlen(c->ws_accept)) == 0;
    }
    ok = ok && accept && strcasestr(head, "\r\nsec-websocket-protocol: mqtt");
    if (!ok)
        fprintf(stderr, "aviary-bench: WebSocket upgrade refused: %.*s\n",
                (int)strcspn(head, "\r\n"), head);
    free(head);
    return ok ? 1 : -1;
}

/* Server frames from `in` into c->rx; answers pings. 0, or -1 on close or a bad frame. */
static int ws_unwrap(struct client *c, struct evbuffer *in)
{
    for (int budget = 0; budget < 100000; budget++) {
        uint8_t h[10];
        size_t avail = evbuffer_get_length(in), hl = 2;
        if (avail < 2)
            return 0;
        evbuffer_copyout(in, h, avail < sizeof h ? avail : sizeof h);
        uint64_t len = h[1] & 0x7f;
        if (h[1] & 0x80)
            return -1; /* RFC 6455 5.1: a server never masks */
        if (len >= 126) {
            hl = len == 126 ? 4 : 10;
            if (avail < hl)
                return 0;
            len = 0;
            for (size_t i = 2; i < hl; i++)
                len = len << 8 | h[i];
        }
        if (len > MAX_PACKET)
            return -1;
        if (avail < hl + len)
            return 0;
        evbuffer_drain(in, hl);
        uint8_t op = h[0] & 0x0f;
        if (op <= 2) {
            evbuffer_remove_buffer(in, c->rx, len);
        } else if (op == 9 && len <= 125) {
            uint8_t ping[125];
            evbuffer_remove(in, ping, len);
            ws_send_frame(c, 0xA, ping, len);
        } else if (op == 0xA) {
            evbuffer_drain(in, len);
        } else {
            return -1; /* close, or unknown */
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ wire: MQTT */

struct wr {
    uint8_t *p;
    size_t n;
};

#define PKT_HEAD 5 /* room for the fixed header before the body */

static struct wr wr_begin(struct bench *b)
{
    return (struct wr){b->scratch + PKT_HEAD, 0};
}
static void wr_u8(struct wr *w, uint8_t v)
{
    w->p[w->n++] = v;
}
static void wr_u16(struct wr *w, uint16_t v)
{
    wr_u8(w, (uint8_t)(v >> 8));
    wr_u8(w, (uint8_t)v);
}
static void wr_mem(struct wr *w, const void *p, size_t n)
{
    memcpy(w->p + w->n, p, n);
    w->n += n;
}
static void wr_str(struct wr *w, const char *s)
{
    size_t n = strlen(s);
    wr_u16(w, (uint16_t)n);
    wr_mem(w, s, n);
}

static size_t put_varint(uint8_t *p, size_t v)
{
    size_t n = 0;
    do {
        uint8_t d = v % 128;
        v /= 128;
        p[n++] = d | (v ? 0x80 : 0);
    } while (v);
    return n;
}

/* Put the fixed header before the body in `w` and send the packet on c. */
static void pkt_send(struct client *c, uint8_t first, struct wr *w)
{
    uint8_t head[PKT_HEAD];
    size_t h = 1;
    head[0] = first;
    h += put_varint(head + 1, w->n);
    uint8_t *start = w->p - h;
    memcpy(start, head, h);
    if (c->b->o.ws)
        ws_send_frame(c, 0x2, start, h + w->n);
    else
        bufferevent_write(c->bev, start, h + w->n);
}

static void send_pid_packet(struct client *c, uint8_t first, uint16_t pid)
{
    struct wr w = wr_begin(c->b);
    wr_u16(&w, pid);
    pkt_send(c, first, &w);
}

static void send_empty(struct client *c, uint8_t first)
{
    struct wr w = wr_begin(c->b);
    pkt_send(c, first, &w);
}

static void send_connect(struct client *c)
{
    const struct options *o = &c->b->o;
    const char *user = c->tenant && o->flood_user ? o->flood_user : o->user;
    const char *pass = c->tenant && o->flood_user ? o->flood_password : o->password;
    static const char *roles = "spifF";
    char id[64];
    snprintf(id, sizeof id, "ab%d-%c%ld", (int)getpid(), roles[c->role], c->index);
    struct wr w = wr_begin(c->b);
    wr_str(&w, "MQTT");
    wr_u8(&w, o->v5 ? 5 : 4);
    wr_u8(&w, 0x02 | (user ? 0x80 : 0) | (pass ? 0x40 : 0)); /* clean session */
    wr_u16(&w, KEEPALIVE_S);
    if (o->v5)
        wr_u8(&w, 0); /* no properties */
    wr_str(&w, id);
    if (user)
        wr_str(&w, user);
    if (pass)
        wr_str(&w, pass);
    pkt_send(c, 0x10, &w);
}

static void send_subscribe(struct client *c)
{
    struct wr w = wr_begin(c->b);
    wr_u16(&w, 1);
    if (c->b->o.v5)
        wr_u8(&w, 0);
    wr_str(&w, c->topic);
    wr_u8(&w, c->role == ROLE_SUB ? (uint8_t)c->b->o.qos : 0);
    pkt_send(c, 0x82, &w);
}

static uint16_t alloc_pid(struct client *c)
{
    if (++c->next_pid == 0)
        c->next_pid = 1;
    return c->next_pid;
}

/* One PUBLISH of `size` bytes whose first 16 carry seq, publisher, phase, send time. */
static void send_publish(struct client *c, int qos, long size, uint64_t t)
{
    struct bench *b = c->b;
    struct wr w = wr_begin(b);
    wr_str(&w, c->topic);
    if (qos)
        wr_u16(&w, alloc_pid(c));
    if (b->o.v5)
        wr_u8(&w, 0);
    uint8_t head[HEADER_BYTES] = {0};
    uint32_t seq = (uint32_t)c->sent;
    uint16_t who = (uint16_t)c->index;
    memcpy(head, &seq, 4);
    memcpy(head + 4, &who, 2);
    head[6] = (uint8_t)b->phase;
    memcpy(head + 8, &t, 8);
    wr_mem(&w, head, sizeof head);
    memset(w.p + w.n, 'x', (size_t)size - HEADER_BYTES);
    w.n += (size_t)size - HEADER_BYTES;
    pkt_send(c, (uint8_t)(0x30 | qos << 1), &w);
    c->sent++;
    if (qos)
        c->inflight++;
}

/* ------------------------------------------------------------------ clients */

static void on_read(struct bufferevent *bev, void *arg);
static void on_write(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);
static void client_ready(struct client *c);
static void pump(struct client *c);
static void open_next_idle(struct bench *b);

/* Close c: its bufferevent is freed by the tick, outside any of its callbacks. */
static void client_close(struct client *c)
{
    if (c->state == CS_CLOSED || !c->bev)
        return;
    c->state = CS_CLOSED;
    bufferevent_disable(c->bev, EV_READ | EV_WRITE);
    bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
    c->b->reap[c->b->nreap++] = c;
}

static void finish(struct bench *b)
{
    if (b->finished)
        return;
    b->finished = true;
    measure_stop(b);
    event_base_loopbreak(b->base);
}

static void flood_reopen(evutil_socket_t fd, short what, void *arg);

/* c failed or was refused (`refused`): counted; a measured client ends the run. */
static void client_lost(struct client *c, const char *why, bool refused)
{
    struct bench *b = c->b;
    bool was_ready = c->state == CS_READY;
    client_close(c);
    if (b->finished)
        return; /* the DISCONNECTs of teardown() */
    if (c->role == ROLE_FLOOD_PUB || c->role == ROLE_FLOOD_SUB) {
        b->flood_refused += refused;
        if (b->flooding && b->flood_reconnects < MAX_FLOOD_RECONNECTS) {
            struct timeval tv = {0, 100000};
            b->flood_reconnects++;
            event_base_once(b->base, -1, EV_TIMEOUT, flood_reopen, c, &tv);
        }
        return;
    }
    if (c->role == ROLE_IDLE) {
        if (b->idle_failed++ < 3)
            fprintf(stderr, "aviary-bench: idle connection %ld: %s\n", c->index, why);
        if (was_ready)
            b->idle_ok--;
        else
            open_next_idle(b);
        return;
    }
    b->failures++;
    b->refused += refused;
    fprintf(stderr, "aviary-bench: %s %ld: %s\n", c->role == ROLE_SUB ? "subscriber" : "publisher",
            c->index, why);
    finish(b);
}

/*
 * A socket bound to 127.0.0.(1 + index % --src-addrs), its port chosen by
 * connect(); -1 to let libevent make one. The kernel's search for a free
 * source port towards one broker port slows down as thousands of
 * connections hold ports (it showed as this tool's own stalls in a burst of
 * 19,000); spread over several source addresses it stays quick.
 */
static evutil_socket_t source_socket(const struct bench *b, long index)
{
    if (b->o.src_addrs <= 1 || b->addr.ss_family != AF_INET)
        return -1;
    evutil_socket_t fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(index % b->o.src_addrs));
    if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int client_open(struct client *c)
{
    struct bench *b = c->b;
    struct bufferevent *bev;
    if (b->ssl) {
        SSL *ssl = SSL_new(b->ssl);
        if (!ssl)
            return -1;
        if (b->o.cafile && X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), b->o.host) != 1)
            SSL_set1_host(ssl, b->o.host);
        bev = bufferevent_openssl_socket_new(b->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                             BEV_OPT_CLOSE_ON_FREE);
        if (!bev)
            SSL_free(ssl);
    } else {
        evutil_socket_t fd = source_socket(b, c->index);
        bev = bufferevent_socket_new(b->base, fd, BEV_OPT_CLOSE_ON_FREE);
        if (!bev && fd >= 0)
            close(fd);
    }
    if (!bev)
        return -1;
    c->bev = bev;
    c->state = CS_CONNECTING;
    if (b->o.ws && !c->rx && !(c->rx = evbuffer_new()))
        return -1;
    if (c->rx)
        evbuffer_drain(c->rx, evbuffer_get_length(c->rx));
    bufferevent_priority_set(bev, c->role == ROLE_SUB || c->role == ROLE_PUB ? PRIO_MEASURED
                                                                             : PRIO_BULK);
    bufferevent_setcb(bev, on_read, on_write, on_event, c);
    bufferevent_setwatermark(bev, EV_WRITE, LOW_WATER, 0);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    if (bufferevent_socket_connect(bev, (struct sockaddr *)&b->addr, (int)b->addrlen) < 0) {
        bufferevent_free(bev);
        c->bev = NULL;
        c->state = CS_CLOSED;
        c->reaped = true;
        return -1;
    }
    /* libevent makes its sockets without FD_CLOEXEC: the burst process must not hold
       the stream's connections open */
    evutil_make_socket_closeonexec(bufferevent_getfd(bev));
    return 0;
}

static void flood_reopen(evutil_socket_t fd, short what, void *arg)
{
    struct client *c = arg;
    if (!c->b->flooding || c->state != CS_CLOSED || !c->reaped)
        return;
    c->reaped = false;
    c->bev = NULL;
    if (client_open(c) < 0)
        c->b->flood_refused++;
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct client *c = arg;
    if (what & BEV_EVENT_CONNECTED) {
        int one = 1;
        setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (c->b->o.ws) {
            c->state = CS_WS_UPGRADE;
            ws_send_upgrade(c);
        } else {
            c->state = CS_MQTT;
            send_connect(c);
        }
        return;
    }
    char why[256];
    unsigned long e = c->b->ssl ? bufferevent_get_openssl_error(bev) : 0;
    if (e)
        ERR_error_string_n(e, why, sizeof why);
    else if (what & BEV_EVENT_EOF)
        snprintf(why, sizeof why, "closed by the broker");
    else
        snprintf(why, sizeof why, "%s", strerror(EVUTIL_SOCKET_ERROR()));
    client_lost(c, why, false);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct client *c = arg;
    if (c->state == CS_READY && (c->role == ROLE_PUB || c->role == ROLE_FLOOD_PUB))
        pump(c);
}

/* ------------------------------------------------------------------ MQTT: what arrives */

static void on_message(struct client *c, const uint8_t *payload, size_t n)
{
    struct bench *b = c->b;
    if (c->role == ROLE_FLOOD_SUB) {
        b->flood_rx++;
        return;
    }
    if (n < HEADER_BYTES)
        return;
    uint64_t t, now = now_ns();
    memcpy(&t, payload + 8, 8);
    int phase = payload[6] < NPHASES ? payload[6] : 0;
    b->delivered[phase]++;
    samples_add(&b->lat[phase], now > t ? now - t : 0);
    b->t_last_rx = now;
    if (b->o.scenario != SC_CONNS)
        return;
    uint64_t gap = b->last_rx_ns ? now - b->last_rx_ns : 0;
    if (b->t_burst && now >= b->t_burst) {
        if (gap > b->gap_during)
            b->gap_during = gap;
        if (now - t > b->lat_during_max)
            b->lat_during_max = now - t;
    } else if (gap > b->gap_before) {
        b->gap_before = gap;
    }
    b->last_rx_ns = now;
}

static void on_ack(struct client *c, uint8_t reason)
{
    if (c->inflight <= 0)
        return;
    c->inflight--;
    c->acked++;
    c->b->t_last_ack = now_ns();
    if (reason >= 0x80)
        c->b->ack_errors++;
    pump(c);
}

/* A PUBLISH body: topic, packet id (QoS > 0), properties (5.0), payload. */
static int handle_publish(struct client *c, uint8_t first, const uint8_t *p, size_t n)
{
    int qos = (first >> 1) & 3;
    if (n < 2)
        return -1;
    size_t off = 2 + ((size_t)p[0] << 8 | p[1]);
    uint16_t pid = 0;
    if (qos) {
        if (off + 2 > n)
            return -1;
        pid = (uint16_t)(p[off] << 8 | p[off + 1]);
        off += 2;
    }
    if (c->b->o.v5) {
        size_t plen = 0, mul = 1;
        for (int i = 0; i < 4; i++, mul *= 128) {
            if (off >= n)
                return -1;
            plen += (p[off] & 0x7f) * mul;
            if (!(p[off++] & 0x80))
                break;
        }
        off += plen;
    }
    if (off > n || qos == 3)
        return -1;
    on_message(c, p + off, n - off);
    if (qos == 1)
        send_pid_packet(c, 0x40, pid);
    else if (qos == 2)
        send_pid_packet(c, 0x50, pid);
    return 0;
}

/* One packet: 0, or -1 when the client was lost (refused, or a protocol error). */
static int handle_packet(struct client *c, uint8_t first, const uint8_t *p, size_t n)
{
    uint16_t pid = n >= 2 ? (uint16_t)(p[0] << 8 | p[1]) : 0;
    uint8_t reason = n >= 3 ? p[2] : 0;
    switch (first & 0xf0) {
    case 0x20:
        if (n < 2 || p[1] != 0 || c->state != CS_MQTT)
            break;
        c->state = CS_SUBSCRIBING;
        if (c->role == ROLE_PUB || c->role == ROLE_FLOOD_PUB)
            client_ready(c);
        else
            send_subscribe(c);
        return 0;
    case 0x90:
        if (n < 3 || p[n - 1] >= 0x80 || c->state != CS_SUBSCRIBING)
            break;
        client_ready(c);
        return 0;
    case 0x30:
        return handle_publish(c, first, p, n) < 0 ? (client_lost(c, "bad PUBLISH", 0), -1) : 0;
    case 0x40:
        on_ack(c, reason);
        return 0;
    case 0x50:
        send_pid_packet(c, 0x62, pid);
        return 0;
    case 0x60:
        send_pid_packet(c, 0x70, pid);
        return 0;
    case 0x70:
        on_ack(c, reason);
        return 0;
    case 0xd0:
        return 0;
    default:
        break;
    }
    char why[80];
    snprintf(why, sizeof why, "refused or unexpected: packet 0x%02x, code 0x%02x", first,
             n >= 2 ? p[(first & 0xf0) == 0x90 ? n - 1 : 1] : 0);
    client_lost(c, why, true);
    return -1;
}

/* Every complete MQTT packet in `in`: 0, or -1 when the client was lost. */
static int mqtt_parse(struct client *c, struct evbuffer *in)
{
    for (int budget = 0; budget < 100000; budget++) {
        uint8_t h[5];
        size_t avail = evbuffer_get_length(in), hl = 1, len = 0, mul = 1;
        if (avail < 2)
            return 0;
        evbuffer_copyout(in, h, avail < 5 ? avail : 5);
        for (;; hl++, mul *= 128) {
            if (hl >= 5)
                return client_lost(c, "bad remaining length", false), -1;
            if (hl >= avail)
                return 0;
            len += (h[hl] & 0x7f) * mul;
            if (!(h[hl] & 0x80))
                break;
        }
        hl++;
        if (len > MAX_PACKET)
            return client_lost(c, "packet too large", false), -1;
        if (avail < hl + len)
            return 0;
        evbuffer_drain(in, hl);
        const uint8_t *body = len ? evbuffer_pullup(in, (ev_ssize_t)len) : NULL;
        if (handle_packet(c, h[0], body, len) < 0)
            return -1;
        evbuffer_drain(in, len);
    }
    return 0;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct client *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    if (c->state == CS_WS_UPGRADE) {
        int r = ws_read_upgrade(c, in);
        if (r <= 0) {
            if (r < 0)
                client_lost(c, "WebSocket upgrade refused", true);
            return;
        }
        c->state = CS_MQTT;
        send_connect(c);
    }
    if (c->b->o.ws) {
        if (ws_unwrap(c, in) < 0) {
            client_lost(c, "WebSocket closed", false);
            return;
        }
        in = c->rx;
    }
    mqtt_parse(c, in);
}

/* ------------------------------------------------------------------ publishing */

/* How many messages publisher c should have sent by `now` at its share of --rate. */
static long paced_due(const struct client *c, uint64_t now)
{
    const struct bench *b = c->b;
    double per_pub = (double)b->o.rate / (double)b->npubs;
    double due = (double)(now - b->t_first_pub) / 1e9 * per_pub + 1;
    return due < (double)c->quota ? (long)due : c->quota;
}

static void pump_measured(struct client *c)
{
    struct bench *b = c->b;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    uint64_t now = now_ns();
    long due = b->o.rate ? paced_due(c, now) : c->quota;
    double per_pub = (double)b->o.rate / (double)b->npubs;
    for (int i = 0; i < PUMP_BUDGET && c->sent < due; i++) {
        if (b->o.qos && c->inflight >= b->o.window)
            break;
        if (evbuffer_get_length(out) >= HIGH_WATER)
            break;
        if (b->o.rate && now - b->t_first_pub > (uint64_t)(c->sent / per_pub * 1e9) + LATE_NS)
            b->late++;
        if (b->o.scenario == SC_CONNS && b->t_burst && b->last_tx_ns &&
            now - b->last_tx_ns > b->send_gap_during)
            b->send_gap_during = now - b->last_tx_ns;
        b->last_tx_ns = now;
        b->sent[b->phase]++;
        send_publish(c, (int)b->o.qos, b->o.size, now);
        b->t_last_pub = now;
        now = now_ns();
    }
}

static void pump_flood(struct client *c)
{
    struct bench *b = c->b;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    for (int i = 0; i < PUMP_BUDGET / 4 && b->flooding && c->sent < MAX_FLOOD_MSGS; i++) {
        if (evbuffer_get_length(out) >= HIGH_WATER)
            break;
        send_publish(c, 0, b->o.flood_size, now_ns());
        b->flood_sent++;
    }
}

static void pump(struct client *c)
{
    if (c->state != CS_READY)
        return;
    if (c->role == ROLE_FLOOD_PUB)
        pump_flood(c);
    else if (c->role == ROLE_PUB && c->b->publishing)
        pump_measured(c);
}

static void start_publishing(struct bench *b)
{
    b->publishing = true;
    b->t_first_pub = now_ns();
    b->t_phase[0] = b->t_first_pub;
    measure_start(b);
    for (long i = 0; i < b->npubs; i++)
        pump(&b->pubs[i]);
}

static void client_ready(struct client *c)
{
    struct bench *b = c->b;
    c->state = CS_READY;
    if (c->role == ROLE_IDLE) {
        b->idle_ok++;
        open_next_idle(b);
        return;
    }
    if (c->role == ROLE_FLOOD_PUB) {
        pump(c);
        return;
    }
    if (c->role == ROLE_FLOOD_SUB)
        return;
    if (++b->ready == b->need_ready)
        start_publishing(b);
}

/* ------------------------------------------------------------------ scenarios */

static void open_next_idle(struct bench *b)
{
    long in_flight = b->idle_opened - b->idle_ok - b->idle_failed;
    for (int n = 0; n < OPEN_BATCH && b->idle_opened < b->nidle && in_flight < b->o.concurrency;
         n++) {
        struct client *c = &b->idle[b->idle_opened++];
        in_flight++;
        if (client_open(c) < 0) {
            if (b->idle_failed++ < 3)
                fprintf(stderr, "aviary-bench: idle connection %ld: %s\n", c->index,
                        strerror(errno));
            in_flight--;
        }
    }
    if (!b->t_conn_done && b->idle_ok + b->idle_failed == b->nidle) {
        b->t_conn_done = now_ns();
        b->t_hold_until = b->t_conn_done + (uint64_t)(b->o.hold * 1e9);
    }
}

static void start_idle(struct bench *b)
{
    measure_start(b);
    b->t_conn_start = now_ns();
    b->t_burst = b->o.during_sub ? b->t_conn_start : 0;
    open_next_idle(b);
}

/* ------------------------------------------------------------------ the burst process */

/*
 * The burst of idle connections of a --during-sub run is made by a second
 * process of this tool, a plain `conns` run with --burst-child. Made here, in
 * the loop that reads the stream, 19,000 handshakes delayed that reading by
 * 1.2-1.3 s against aviaryd and Mosquitto alike (priorities did not help),
 * where a separate process's burst showed 14-39 ms: the tool measured itself.
 */
struct burst_argv {
    char *argv[BURST_ARGS];
    int n;
    char num[6][32];
};

static void arg_add(struct burst_argv *a, const char *s)
{
    if (a->n < BURST_ARGS - 1) /* at most 31 are added below */
        a->argv[a->n++] = (char *)s;
    a->argv[a->n] = NULL;
}

/* The burst process's command line: this run's connection options, without --during-sub. */
static void burst_argv_build(const struct bench *b, double timeout, struct burst_argv *a)
{
    const struct options *o = &b->o;
    a->n = 0;
    snprintf(a->num[0], sizeof a->num[0], "%ld", o->conns);
    snprintf(a->num[1], sizeof a->num[1], "%ld", o->concurrency);
    snprintf(a->num[2], sizeof a->num[2], "%ld", o->src_addrs);
    snprintf(a->num[3], sizeof a->num[3], "%.3f", o->hold);
    snprintf(a->num[4], sizeof a->num[4], "%.3f", timeout);
    snprintf(a->num[5], sizeof a->num[5], "%ld", o->pid);
    arg_add(a, "aviary-bench");
    arg_add(a, "conns");
    arg_add(a, "--burst-child");
    const char *pairs[][2] = {{"--host", o->host},
                              {"-p", o->port},
                              {"-C", a->num[0]},
                              {"--concurrency", a->num[1]},
                              {"--src-addrs", a->num[2]},
                              {"--hold", a->num[3]},
                              {"-t", a->num[4]},
                              {"--pid", o->pid ? a->num[5] : NULL},
                              {"--cafile", o->cafile},
                              {"--ws-path", o->ws ? o->ws_path : NULL},
                              {"-u", o->user},
                              {"--password", o->password}};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        if (pairs[i][1]) {
            arg_add(a, pairs[i][0]);
            arg_add(a, pairs[i][1]);
        }
    }
    if (o->tls)
        arg_add(a, "--tls");
    if (o->ws)
        arg_add(a, "--ws");
    if (o->v5)
        arg_add(a, "--v5");
}

/* In the child of fork(): become the burst process, its stdout into out_fd. */
static void burst_exec(int out_fd, pid_t parent, struct burst_argv *a)
{
    /* Killed when the measuring process ends, however it ends (even by SIGKILL); if
       it ended before prctl(), getppid() is no longer it. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
        _exit(127);
    if (out_fd == STDOUT_FILENO ? fcntl(out_fd, F_SETFD, 0) < 0 : dup2(out_fd, STDOUT_FILENO) < 0)
        _exit(127);
    execv("/proc/self/exe", a->argv);
    _exit(127);
}

static void burst_fail(struct bench *b, const char *what)
{
    fprintf(stderr, "aviary-bench: burst process: %s: %s\n", what, strerror(errno));
    b->failures++;
    finish(b);
}

/* Fork and exec the burst process; the gap window and the broker's CPU start here. */
static void start_burst(struct bench *b)
{
    struct burst_argv a;
    int fds[2];
    /* It ends on its own a second before this run's --timeout (at least 1 s, its minimum) */
    double left = b->o.timeout - (now_ns() - b->t_start) / 1e9 - 1;
    b->burst_started = true;
    burst_argv_build(b, left > 1 ? left : 1, &a);
    if (pipe2(fds, O_CLOEXEC) < 0) {
        burst_fail(b, "pipe");
        return;
    }
    if (fcntl(fds[0], F_SETFL, O_NONBLOCK) < 0) {
        burst_fail(b, "fcntl");
        close(fds[0]);
        close(fds[1]);
        return;
    }
    pid_t parent = getpid();
    fflush(stdout); /* nothing is buffered yet; the child's copy is lost in execv anyway */
    pid_t pid = fork();
    if (pid == 0)
        burst_exec(fds[1], parent, &a);
    if (pid < 0)
        burst_fail(b, "fork");
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        return;
    }
    b->burst_pid = pid;
    b->burst_fd = fds[0];
    b->burst_running = true;
    measure_start(b);
    b->t_burst = now_ns();
}

/* Take what the burst process printed so far, without blocking (bounded: 256 KiB). */
static void burst_read(struct bench *b)
{
    char buf[4096];
    for (int i = 0; i < 64 && b->burst_fd >= 0; i++) {
        ssize_t n = read(b->burst_fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* EAGAIN: nothing more yet; 0: its end; an error: nothing to read */
        size_t room = sizeof b->burst_out - 1 - b->burst_len;
        size_t keep = (size_t)n < room ? (size_t)n : room;
        memcpy(b->burst_out + b->burst_len, buf, keep);
        b->burst_len += keep;
    }
}

/* The burst process ended with waitpid()'s `status`: its output taken, a failure counted. */
static void burst_ended(struct bench *b, int status)
{
    b->burst_running = false;
    burst_read(b);
    close(b->burst_fd);
    b->burst_fd = -1;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return;
    b->failures++;
    if (WIFEXITED(status))
        fprintf(stderr, "aviary-bench: burst process %d exited with status %d\n", (int)b->burst_pid,
                WEXITSTATUS(status));
    else
        fprintf(stderr, "aviary-bench: burst process %d ended by signal %d\n", (int)b->burst_pid,
                WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* Each tick while it runs: its output read, and once it ended, --hold more of the stream. */
static void burst_poll(struct bench *b, uint64_t now)
{
    int status;
    burst_read(b);
    pid_t r = waitpid(b->burst_pid, &status, WNOHANG);
    if (r == 0)
        return;
    if (r < 0) {
        burst_fail(b, "waitpid");
        b->burst_running = false; /* not a child of ours (cannot be): nothing to kill */
        close(b->burst_fd);
        b->burst_fd = -1;
        return;
    }
    burst_ended(b, status);
    b->t_hold_until = now + (uint64_t)(b->o.hold * 1e9);
}

/* At the end of the run: a burst process still running (this run failed or timed out)
   is killed, by its PID, and reaped within BURST_REAP_TRIES x 10 ms. */
static void burst_stop(struct bench *b)
{
    if (!b->burst_running)
        return;
    int status = 0;
    pid_t r = waitpid(b->burst_pid, &status, WNOHANG);
    if (r == 0) {
        fprintf(stderr, "aviary-bench: burst process %d still running at the end: killed\n",
                (int)b->burst_pid);
        /* ESRCH: it ended meanwhile, and the loop below reaps it all the same */
        kill(b->burst_pid, SIGKILL);
        struct timespec pause = {0, 10 * 1000000};
        for (int i = 0; i < BURST_REAP_TRIES && r == 0; i++)
            if ((r = waitpid(b->burst_pid, &status, WNOHANG)) == 0)
                nanosleep(&pause, NULL);
    }
    if (r <= 0) {
        fprintf(stderr, "aviary-bench: burst process %d: not reaped\n", (int)b->burst_pid);
        status = SIGKILL; /* as if killed: a failure */
    }
    burst_ended(b, status);
}

/* The burst process's lines (conns=, conns_ok=, ..., its "# how it was measured"). */
static void burst_print(const struct bench *b)
{
    fwrite(b->burst_out, 1, b->burst_len, stdout);
    if (b->burst_len && b->burst_out[b->burst_len - 1] != '\n')
        putchar('\n'); /* it was killed in the middle of a line */
}

static bool publishers_done(struct bench *b)
{
    for (long i = 0; i < b->npubs; i++) {
        const struct client *c = &b->pubs[i];
        if (c->sent < c->quota || c->inflight > 0)
            return false;
    }
    return true;
}

static long expected_deliveries(const struct bench *b)
{
    long sent = 0;
    for (int i = 0; i < NPHASES; i++)
        sent += b->sent[i];
    return sent * b->nsubs;
}

static long all_delivered(const struct bench *b)
{
    long n = 0;
    for (int i = 0; i < NPHASES; i++)
        n += b->delivered[i];
    return n;
}

/* After publishing: done when every delivery arrived, or none for --drain seconds. */
static void step_drain(struct bench *b, uint64_t now)
{
    if (!b->pubs_done) {
        if (!publishers_done(b))
            return;
        b->pubs_done = true;
        b->t_pub_done = now;
        b->flooding = false;
    }
    uint64_t quiet_since = b->t_last_rx > b->t_pub_done ? b->t_last_rx : b->t_pub_done;
    if (all_delivered(b) >= expected_deliveries(b) || now - quiet_since > b->o.drain * 1e9)
        finish(b);
}

static void open_flood(struct bench *b)
{
    b->flooding = true;
    for (long i = 0; i < b->nflood; i++)
        if (client_open(&b->flood[i]) < 0)
            b->flood_refused++;
}

static void step_noisy(struct bench *b, uint64_t now)
{
    double t = (now - b->t_first_pub) / 1e9, d = b->o.duration;
    if (b->phase == 0 && t >= d) {
        b->phase = 1;
        b->t_phase[1] = now;
        open_flood(b);
    } else if (b->phase == 1 && t >= d + b->o.lead) {
        b->phase = 2;
        b->t_phase[2] = now;
    } else if (b->phase == 2 && !b->t_phase[3] && t >= 2 * d + b->o.lead) {
        b->flooding = false;
        b->t_phase[3] = now;
    }
    if (b->t_phase[3])
        step_drain(b, now);
}

static void step_conns(struct bench *b, uint64_t now)
{
    if (b->o.during_sub && !b->burst_started && now - b->t_first_pub >= 1 * NS)
        start_burst(b);
    if (b->burst_running)
        burst_poll(b, now);
    if (b->t_hold_until && now >= b->t_hold_until)
        finish(b);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct bench *b = arg;
    for (long i = 0; i < b->nreap; i++) {
        struct client *c = b->reap[i];
        bufferevent_free(c->bev);
        c->bev = NULL;
        c->reaped = true;
    }
    b->nreap = 0;
    if (b->finished)
        return;
    uint64_t now = now_ns();
    if (b->idle_opened && b->idle_opened < b->nidle)
        open_next_idle(b);
    if (b->o.scenario == SC_CONNS && !b->o.during_sub) {
        step_conns(b, now);
        return;
    }
    if (!b->publishing)
        return;
    if (b->o.rate)
        for (long i = 0; i < b->npubs; i++)
            pump(&b->pubs[i]);
    if (b->o.scenario == SC_CONNS)
        step_conns(b, now);
    else if (b->o.scenario == SC_NOISY)
        step_noisy(b, now);
    else
        step_drain(b, now);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct bench *b = arg;
    b->timed_out = true;
    fprintf(stderr, "aviary-bench: --timeout of %.0f s reached\n", b->o.timeout);
    finish(b);
}

static void ping_all(struct client *cs, long n)
{
    for (long i = 0; i < n; i++)
        if (cs[i].state == CS_READY)
            send_empty(&cs[i], 0xc0);
}

static void on_ping(evutil_socket_t fd, short what, void *arg)
{
    struct bench *b = arg;
    ping_all(b->subs, b->nsubs);
    ping_all(b->pubs, b->npubs);
    ping_all(b->idle, b->nidle);
    ping_all(b->flood, b->nflood);
}

/* ------------------------------------------------------------------ setup */

/* The broker's address: 0, or -1 when it does not resolve to 127.0.0.0/8 or ::1. */
static int resolve_loopback(struct bench *b)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    int e = getaddrinfo(b->o.host, b->o.port, &hints, &res);
    if (e) {
        fprintf(stderr, "aviary-bench: %s port %s: %s\n", b->o.host, b->o.port, gai_strerror(e));
        return -1;
    }
    int ok = 0;
    if (res->ai_family == AF_INET) {
        const struct sockaddr_in *a = (const void *)res->ai_addr;
        ok = (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    } else if (res->ai_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const void *)res->ai_addr;
        ok = IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
    }
    if (ok) {
        memcpy(&b->addr, res->ai_addr, res->ai_addrlen);
        b->addrlen = res->ai_addrlen;
    } else {
        fprintf(stderr,
                "aviary-bench: %s is not a loopback address (127.0.0.0/8 or ::1): "
                "this tool loads the local machine only\n",
                b->o.host);
    }
    freeaddrinfo(res);
    return ok ? 0 : -1;
}

static int setup_tls(struct bench *b)
{
    b->ssl = SSL_CTX_new(TLS_client_method());
    if (!b->ssl)
        return -1;
    if (!b->o.cafile) {
        SSL_CTX_set_verify(b->ssl, SSL_VERIFY_NONE, NULL);
        return 0;
    }
    if (SSL_CTX_load_verify_locations(b->ssl, b->o.cafile, NULL) != 1) {
        fprintf(stderr, "aviary-bench: cannot read %s\n", b->o.cafile);
        return -1;
    }
    SSL_CTX_set_verify(b->ssl, SSL_VERIFY_PEER, NULL);
    return 0;
}

static struct client *make_clients(struct bench *b, long n, enum role role, int tenant)
{
    struct client *cs = calloc(n ? (size_t)n : 1, sizeof *cs);
    if (!cs)
        return NULL;
    for (long i = 0; i < n; i++) {
        cs[i] = (struct client){.b = b, .role = role, .tenant = tenant, .index = i};
        const char *fmt = role == ROLE_PUB         ? "bench/%ld"
                          : role == ROLE_IDLE      ? "bench/idle/%ld"
                          : role == ROLE_FLOOD_PUB ? "flood/%ld"
                          : role == ROLE_FLOOD_SUB ? "flood/#"
                                                   : "bench/#";
        snprintf(cs[i].topic, sizeof cs[i].topic, fmt, i);
    }
    return cs;
}

static long publisher_quota(const struct options *o)
{
    if (o->scenario == SC_LATENCY)
        return (long)(o->rate * o->duration / o->pubs);
    if (o->scenario == SC_NOISY)
        return (long)(o->rate * (2 * o->duration + o->lead) / o->pubs);
    if (o->scenario == SC_CONNS)
        return (long)(o->rate * o->timeout);
    return o->msgs;
}

static int setup_clients(struct bench *b)
{
    const struct options *o = &b->o;
    b->nsubs = o->subs;
    b->npubs = o->pubs;
    /* --during-sub: the idle connections are the burst process's, not this one's */
    b->nidle = o->scenario == SC_CONNS && !o->during_sub ? o->conns : 0;
    b->nflood = o->scenario == SC_NOISY ? o->flood_pubs + 1 : 0;
    if (b->nsubs + b->npubs + b->nidle + b->nflood > MAX_CLIENTS)
        return -1;
    b->subs = make_clients(b, b->nsubs, ROLE_SUB, 0);
    b->pubs = make_clients(b, b->npubs, ROLE_PUB, 0);
    b->idle = make_clients(b, b->nidle, ROLE_IDLE, 0);
    b->flood = make_clients(b, b->nflood, ROLE_FLOOD_PUB, 1);
    b->reap = calloc((size_t)(b->nsubs + b->npubs + b->nidle + b->nflood + 1), sizeof *b->reap);
    if (!b->subs || !b->pubs || !b->idle || !b->flood || !b->reap)
        return -1;
    if (b->nflood) {
        b->flood[b->nflood - 1].role = ROLE_FLOOD_SUB;
        snprintf(b->flood[b->nflood - 1].topic, sizeof b->flood[0].topic, "flood/#");
    }
    if (o->scenario == SC_CONNS && o->during_sub) {
        snprintf(b->pubs[0].topic, sizeof b->pubs[0].topic, "bench/stream");
        snprintf(b->subs[0].topic, sizeof b->subs[0].topic, "bench/stream");
    }
    long quota = publisher_quota(o);
    for (long i = 0; i < b->npubs; i++)
        b->pubs[i].quota = quota;
    b->need_ready = b->nsubs + b->npubs;
    return 0;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* A loop that runs the measured clients' callbacks first, and looks for them again
   after every BULK_CALLBACKS callbacks of bulk ones: noisy's flood in this very
   process must not hold up the tenant it measures. (It did not keep a burst of
   19,000 handshakes from stalling conns --during-sub's stream for over a second:
   that burst is made by another process, see start_burst.) */
static struct event_base *new_base(void)
{
    struct event_config *cfg = event_config_new();
    if (!cfg)
        return NULL;
    event_config_set_max_dispatch_interval(cfg, NULL, BULK_CALLBACKS, PRIO_BULK);
    struct event_base *base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    if (base && event_base_priority_init(base, 2) < 0) {
        event_base_free(base);
        return NULL;
    }
    return base;
}

static int setup(struct bench *b)
{
    struct timeval tick = {0, 1000}, ping = {PING_EVERY_S, 0}, rss = {0, 100000};
    struct timeval deadline = {(time_t)b->o.timeout, (suseconds_t)(fmod(b->o.timeout, 1) * 1e6)};
    if (RAND_bytes((unsigned char *)&b->mask_state, sizeof b->mask_state) != 1)
        b->mask_state = now_ns();
    b->mask_state |= 1;
    b->scratch = malloc(PKT_HEAD + MAX_PACKET);
    b->base = new_base();
    b->t_start = now_ns();
    b->burst_fd = -1;
    if (!b->scratch || !b->base || (b->o.tls && setup_tls(b) < 0) || setup_clients(b) < 0)
        return -1;
    b->tick = event_new(b->base, -1, EV_PERSIST, on_tick, b);
    b->deadline = evtimer_new(b->base, on_deadline, b);
    b->ping = event_new(b->base, -1, EV_PERSIST, on_ping, b);
    if (!b->tick || !b->deadline || !b->ping)
        return -1;
    event_priority_set(b->tick, PRIO_MEASURED);
    event_priority_set(b->deadline, PRIO_MEASURED);
    event_add(b->tick, &tick);
    event_add(b->deadline, &deadline);
    event_add(b->ping, &ping);
    if (b->o.pid) {
        b->rss_timer = event_new(b->base, -1, EV_PERSIST, on_rss_timer, b);
        if (!b->rss_timer)
            return -1;
        event_add(b->rss_timer, &rss);
    }
    return 0;
}

static int start(struct bench *b)
{
    if (b->o.scenario == SC_CONNS && !b->o.during_sub) {
        start_idle(b);
        return 0;
    }
    for (long i = 0; i < b->nsubs; i++)
        if (client_open(&b->subs[i]) < 0)
            return -1;
    for (long i = 0; i < b->npubs; i++)
        if (client_open(&b->pubs[i]) < 0)
            return -1;
    return 0;
}

static void say_goodbye(struct client *cs, long n)
{
    for (long i = 0; i < n; i++)
        if (cs[i].state == CS_READY)
            send_empty(&cs[i], 0xe0);
}

static void free_clients(struct client *cs, long n)
{
    for (long i = 0; i < n; i++) {
        if (cs[i].bev)
            bufferevent_free(cs[i].bev);
        if (cs[i].rx)
            evbuffer_free(cs[i].rx);
    }
    free(cs);
}

/* DISCONNECT every open client, give them 200 ms to be written, free everything. */
static void teardown(struct bench *b)
{
    struct timeval grace = {0, 200000};
    b->flooding = b->publishing = false;
    say_goodbye(b->subs, b->nsubs);
    say_goodbye(b->pubs, b->npubs);
    say_goodbye(b->idle, b->nidle);
    say_goodbye(b->flood, b->nflood);
    event_base_loopexit(b->base, &grace);
    event_base_dispatch(b->base);
    free_clients(b->subs, b->nsubs);
    free_clients(b->pubs, b->npubs);
    free_clients(b->idle, b->nidle);
    free_clients(b->flood, b->nflood);
    for (int i = 0; i < NPHASES; i++)
        free(b->lat[i].ns);
    event_free(b->tick);
    event_free(b->deadline);
    event_free(b->ping);
    if (b->rss_timer)
        event_free(b->rss_timer);
    event_base_free(b->base);
    SSL_CTX_free(b->ssl);
    free(b->reap);
    free(b->scratch);
}

/* ------------------------------------------------------------------ reports */

static const char *transport(const struct options *o)
{
    return o->ws ? (o->tls ? "wss" : "ws") : (o->tls ? "tls" : "tcp");
}

static void print_common(const struct bench *b)
{
    const struct options *o = &b->o;
    printf("scenario=%s\nbroker=%s:%s\ntransport=%s\nmqtt=%s\n", o->name, o->host, o->port,
           transport(o), o->v5 ? "5.0" : "3.1.1");
    if (o->scenario != SC_CONNS || o->during_sub)
        printf("pubs=%ld\nsubs=%ld\nsize=%ld\nqos=%ld\n", b->npubs, b->nsubs, o->size, o->qos);
    if (o->qos && o->scenario != SC_CONNS)
        printf("window=%ld\n", o->window);
}

static double rate(double n, uint64_t from, uint64_t to)
{
    return to > from ? n / ((to - from) / 1e9) : 0;
}

static long total_acked(const struct bench *b)
{
    long n = 0;
    for (long i = 0; i < b->npubs; i++)
        n += b->pubs[i].acked;
    return n;
}

static void report_flow(struct bench *b)
{
    const struct options *o = &b->o;
    long sent = b->sent[0], delivered = b->delivered[0], expected = sent * b->nsubs;
    printf("msgs_per_pub=%ld\nsent=%ld\n", b->pubs[0].quota, sent);
    if (o->qos)
        printf("acked=%ld\nack_rate=%.0f\nack_errors=%ld\n", total_acked(b),
               rate(total_acked(b), b->t_first_pub, b->t_last_ack), b->ack_errors);
    printf("pub_rate=%.0f\n", rate(sent, b->t_first_pub, b->t_last_pub));
    printf("delivered=%ld\nexpected=%ld\ndelivered_frac=%.4f\n", delivered, expected,
           expected ? (double)delivered / expected : 0);
    printf("rx_rate=%.0f\nelapsed_s=%.3f\n", rate(delivered, b->t_first_pub, b->t_last_rx),
           b->t_last_rx > b->t_first_pub ? (b->t_last_rx - b->t_first_pub) / 1e9 : 0);
    if (o->rate)
        printf("rate=%ld\nduration_s=%.1f\nlate=%ld\n", o->rate, o->duration, b->late);
    print_latency("", &b->lat[0]);
    print_cpu(b, delivered);
    printf("# how it was measured: %ld publisher(s) sent %ld message(s) each of %ld bytes at QoS "
           "%ld to %ld subscriber(s) of bench/#, %s; pub_rate and ack_rate from the first PUBLISH "
           "written to the last sent/acknowledged, rx_rate from the first PUBLISH written to the "
           "last delivery read (CLOCK_MONOTONIC); latency = read time - CLOCK_MONOTONIC ns "
           "written in the payload; delivered_frac = deliveries / (sent x subscribers); broker "
           "CPU = utime+stime of /proc/PID/stat over the same time (in clock ticks, "
           "1/%ld s), per delivery\n",
           b->npubs, b->pubs[0].quota, o->size, o->qos, b->nsubs,
           o->rate  ? "paced at --rate in total (each message at its own time slot)"
           : o->qos ? "each with at most --window unacknowledged"
                    : "as fast as a 256 KiB send queue allowed",
           sysconf(_SC_CLK_TCK));
}

/* conns: the idle connections made by this process (without --during-sub). */
static void report_conns(struct bench *b)
{
    const struct options *o = &b->o;
    uint64_t end = b->t_conn_done ? b->t_conn_done : b->t_proc1;
    printf("conns=%ld\nconns_ok=%ld\nconns_failed=%ld\nconcurrency=%ld\n", b->nidle, b->idle_ok,
           b->nidle - b->idle_ok, o->concurrency);
    printf("connect_s=%.3f\nconnect_rate=%.0f\n", (end - b->t_conn_start) / 1e9,
           rate(b->idle_ok, b->t_conn_start, end));
    if (o->pid && b->proc0.ok && b->proc1.ok) {
        printf("rss_before_kb=%ld\nrss_after_kb=%ld\n", b->proc0.rss_kb, b->proc1.rss_kb);
        if (b->idle_ok)
            printf("rss_per_conn_bytes=%.0f\n",
                   (double)(b->proc1.rss_kb - b->proc0.rss_kb) * 1024 / b->idle_ok);
    }
    if (!o->burst_child)
        print_cpu(b, 0); /* the burst process's figures are its parent's */
    printf("# how it was measured: %ld connection(s) over %s, each CONNECT (keep-alive %d s) and "
           "one SUBSCRIBE to its own topic, %ld handshake(s) in flight; connect_rate = "
           "subscribed connections / (last SUBACK - first connect()); rss_per_conn_bytes = "
           "(VmRSS of /proc/PID/status %.1f s after the last SUBACK - VmRSS before) / "
           "connections\n",
           b->nidle, transport(o), KEEPALIVE_S, o->concurrency, o->hold);
}

/* conns --during-sub: the burst process's lines, then the stream's figures. */
static void report_during_sub(struct bench *b)
{
    const struct options *o = &b->o;
    burst_print(b);
    uint64_t tail = b->t_proc1 > b->last_rx_ns ? b->t_proc1 - b->last_rx_ns : 0;
    uint64_t gap = b->gap_during > tail ? b->gap_during : tail;
    printf("stream_rate=%ld\nstream_delivered=%ld\nstream_sent=%ld\n", o->rate, b->delivered[0],
           b->sent[0]);
    printf("max_gap_before_ms=%.1f\nmax_gap_ms=%.1f\nmax_send_gap_ms=%.1f\n"
           "max_latency_during_ms=%.1f\n",
           b->gap_before / 1e6, gap / 1e6, b->send_gap_during / 1e6, b->lat_during_max / 1e6);
    print_cpu(b, 0);
    printf("# how it was measured: a stream of --rate msg/s (1 publisher, 1 subscriber of "
           "bench/stream, %ld-byte QoS 0 messages) over %s; 1 s after it began, a separate "
           "process of this tool (the conns= lines above and their own line) opened the "
           "%ld connection(s) all at once, so that this process only runs the stream; "
           "max_gap_ms = longest time between two deliveries of the stream from that process's "
           "start to its exit + %.1f s (--hold); max_send_gap_ms: the same on the publisher's "
           "side (this process's own stalls); max_latency_during_ms = read time - "
           "CLOCK_MONOTONIC ns in the payload over the same time; broker CPU over the same "
           "time\n",
           o->size, transport(o), o->conns, o->hold);
}

static void report_noisy(struct bench *b)
{
    const struct options *o = &b->o;
    const char *names[] = {"quiet_", "lead_", "noisy_"};
    double p99[NPHASES];
    for (int i = 0; i < NPHASES; i += 2) {
        long expected = b->sent[i] * b->nsubs;
        printf("%ssent=%ld\n%sdelivered=%ld\n%sdelivered_frac=%.4f\n", names[i], b->sent[i],
               names[i], b->delivered[i], names[i],
               expected ? (double)b->delivered[i] / expected : 0);
        print_latency(names[i], &b->lat[i]);
        p99[i] = percentile_us(&b->lat[i], 0.99);
    }
    printf("p99_ratio=%.2f\nlate=%ld\nack_errors=%ld\n", p99[0] > 0 ? p99[2] / p99[0] : 0, b->late,
           b->ack_errors);
    printf("flood_sent=%ld\nflood_rate=%.0f\nflood_rx=%ld\nflood_reconnects=%ld\n"
           "flood_refused=%ld\n",
           b->flood_sent, rate(b->flood_sent, b->t_phase[1], b->t_phase[3]), b->flood_rx,
           b->flood_reconnects, b->flood_refused);
    print_cpu(b, all_delivered(b));
    printf("# how it was measured: the steady tenant (%s) has 1 publisher paced at %ld msg/s, "
           "QoS %ld, %ld-byte payloads, and %ld subscriber(s); quiet = its first %.1f s alone, "
           "noisy = %.1f s while %ld publisher(s) of the flooding tenant (%s) publish %ld-byte "
           "QoS 0 messages as fast as a 256 KiB send queue allows (after %.1f s of flood not "
           "counted); latency = read time - CLOCK_MONOTONIC ns in the payload, by the phase "
           "the message was sent in; delivered_frac = deliveries / (sent x subscribers)\n",
           o->user ? o->user : "no login", o->rate, o->qos, o->size, b->nsubs, o->duration,
           o->duration, o->flood_pubs, o->flood_user ? o->flood_user : "same login", o->flood_size,
           o->lead);
}

static int report(struct bench *b)
{
    if (b->o.burst_child) { /* its parent prints the rest */
        report_conns(b);
        fflush(stdout);
        return b->timed_out || b->idle_ok < b->nidle ? EXIT_FAILED : EXIT_OK;
    }
    print_common(b);
    if (b->o.scenario == SC_CONNS && b->o.during_sub)
        report_during_sub(b);
    else if (b->o.scenario == SC_CONNS)
        report_conns(b);
    else if (b->o.scenario == SC_NOISY)
        report_noisy(b);
    else
        report_flow(b);
    printf("failures=%ld\nrefused=%ld\ntimed_out=%d\n", b->failures, b->refused, b->timed_out);
    fflush(stdout);
    bool idle_failed = b->o.scenario == SC_CONNS && b->idle_ok < b->nidle;
    return b->timed_out || b->failures || idle_failed ? EXIT_FAILED : EXIT_OK;
}

int main(int argc, char **argv)
{
    static struct bench bench;
    struct bench *b = &bench;
    int r = parse_options(argc, argv, &b->o);
    if (r > 0) {
        usage(stdout);
        return EXIT_OK;
    }
    if (r < 0) {
        fprintf(stderr, "usage: aviary-bench SCENARIO [OPTIONS]; aviary-bench --help says more\n");
        return EXIT_USAGE;
    }
    if (resolve_loopback(b) < 0)
        return EXIT_USAGE;
    signal(SIGPIPE, SIG_IGN);
    if (b->o.scenario == SC_CONNS)
        raise_nofile();
    if (setup(b) < 0 || start(b) < 0) {
        fprintf(stderr, "aviary-bench: cannot set up the run (out of memory or descriptors)\n");
        return EXIT_FAILED;
    }
    event_base_dispatch(b->base);
    measure_stop(b);
    burst_stop(b); /* never left running, whatever ended the run */
    int status = report(b);
    teardown(b);
    return status;
}
