/*
 * core — the state of one aviaryd process that every part of the broker
 * shares: the event base, the default limits, the memory ceiling, the
 * tenancy catalog, every live connection, the reaper's queue and the
 * routing scratch.
 *
 * Created, configured and freed by the broker module (broker.h), which sits
 * on top; the modules below it read this state and ask the few questions
 * here (is the process over max-memory, is a token still live). Every
 * object of the broker is touched only from the thread running `base`, so
 * nothing here has a lock.
 */
#ifndef AVIARY_CORE_H
#define AVIARY_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

#include "util/account.h"
#include "util/limits.h"
#include "util/log.h"
#include "util/strmap.h"

struct catalog;
struct catalog_token;
struct event;
struct event_base;
struct link_driver;
struct conn;
struct durable;
struct instance;
struct journal_record;
struct message;
struct session;

/* Logins that miss make the broker look at the database again at most this often. */
#define BROKER_RECHECK_INTERVAL_MS 100

/* Seconds a new connection has to send CONNECT, until the program sets connect-timeout. */
#define BROKER_DEFAULT_CONNECT_TIMEOUT 10

/* One routing match: a session and what its matching subscriptions ask for. */
/*
 * Desktop mode's password-file: whether `user` (`user_len` bytes) with
 * `password` may log in. Called on the core thread, once per CONNECT.
 */
typedef bool broker_password_fn(void *ctx, const char *user, size_t user_len, const void *password,
                                size_t password_len);

/*
 * The cluster this node is part of (cluster/cluster.h implements it): the
 * broker tells it what crosses nodes. Core thread only.
 */
struct broker_cluster {
    /*
     * Take `m`, published in `inst` by `client_id` (NULL: a will of a client
     * long gone, or an HTTP publish), into the instance's stream: true when
     * taken (it comes back to this node's subscribers from the stream, in the
     * one order every node sees), false when this node must route it alone.
     */
    bool (*publish)(struct broker_cluster *cl, struct instance *inst, struct message *m,
                    const char *client_id);
    /* `c` logged in to `inst` with its client id: connections elsewhere with it end. */
    void (*claim)(struct broker_cluster *cl, struct instance *inst, struct conn *c);
    /* An instance was made here (its stream is followed) or is being freed. */
    void (*instance_added)(struct broker_cluster *cl, struct instance *inst);
    void (*instance_removed)(struct broker_cluster *cl, struct instance *inst);
    /*
     * A change to persistent session `s`, as the journal describes one
     * (SESSION_PUT or _DROP, SUB_PUT or _DROP, OUT_PUT with the message `m`
     * it holds, OUT_DROP): written to the session's copy in Redis.
     */
    void (*session_record)(struct broker_cluster *cl, struct session *s,
                           const struct journal_record *r, const struct message *m);
    /*
     * `c` asks to resume persistent session `client_id`, which this node
     * does not hold: true when its copy is being fetched from Redis (the
     * CONNECT waits unread, c->cluster_waiting, until it is in the
     * instance's sessions and client_read_again() reads it again).
     */
    bool (*fetch_session)(struct broker_cluster *cl, struct instance *inst, const char *client_id,
                          struct conn *c);
    /*
     * `c` logs in to `inst`, whose stream this node is not reading yet (the
     * instance was just made here, at its first login): true when the CONNECT
     * waits, unread (c->cluster_waiting), until it is, so that the client's
     * subscriptions miss nothing of the stream or of the retained messages
     * in Redis. Without Redis nothing waits.
     */
    bool (*await_stream)(struct broker_cluster *cl, struct instance *inst, struct conn *c);
    /* `c`, which waited for a fetch or a stream, is closing. */
    void (*forget)(struct broker_cluster *cl, struct conn *c);
    /*
     * Not a hook, the cluster's word: while true, this node's messages not
     * yet back from Redis are past their mark, and a connection's next
     * PUBLISH waits unread (c->cluster_paused) until broker_cluster_resume().
     */
    bool hold_publishers;
};

/* What the cluster did, for /metrics. */
struct broker_cluster_stats {
    bool connected;      /* both links to Redis are up */
    uint64_t sent;       /* messages handed to the streams */
    uint64_t received;   /* records read from them */
    uint64_t local_only; /* messages routed on this node alone: Redis was unreachable */
    uint64_t bad;        /* records that were not well formed, dropped */
    uint64_t taken_over; /* connections ended by a login on another node */
    uint64_t losses;     /* times the connection to Redis was lost */
    uint64_t fetched;    /* persistent sessions taken from Redis at a login */
    uint64_t nodes_dead; /* other nodes found dead by this one (their sessions adopted) */
    uint64_t adopted;    /* persistent sessions of dead nodes taken over here */
    uint64_t replayed;   /* messages they missed, queued for them from the kept stream */
    uint64_t paused;     /* times publishers waited for this node's stream to catch up */
};

struct broker_match {
    struct session *session;
    uint8_t qos;              /* the highest granted QoS among them */
    bool leading_slash;       /* as the subscription that set `qos` was made */
    bool retain_as_published; /* one of them asked for Retain As Published */
    int32_t first_id;         /* its Subscription Identifiers: a list in match_ids, -1 none */
};

/* One Subscription Identifier of a match, chained (routing scratch). */
struct broker_match_id {
    uint32_t id;
    int32_t next; /* index of the next one in match_ids, -1 at the end */
};

struct broker {
    struct event_base *base;
    struct limits limits;          /* desktop: the local instance's; cloud: before login */
    unsigned connect_timeout;      /* seconds from accept to CONNECT (connect-timeout) */
    size_t max_memory;             /* max-memory: bytes resident; 0: no ceiling */
    size_t memory_resident;        /* as last measured */
    uint64_t memory_measured_ms;   /* clock_ms() of that measurement */
    unsigned memory_questions;     /* core_memory_full() calls since it */
    uint64_t memory_refusals;      /* connections and retained messages refused for it */
    struct account *held;          /* bytes held for all instances together (their parent; a ref) */
    struct log_every memory_log;   /* measurements that found the process over max-memory */
    struct instance *local;        /* desktop mode's single instance; NULL in cloud mode */
    broker_password_fn *passwords; /* desktop: the password-file's check; NULL: anonymous */
    void *passwords_ctx;

    /* Cloud mode (broker_set_cloud): tenants and their tokens. */
    bool cloud;
    struct catalog *catalog;     /* owned; replaced by broker_apply_catalog() */
    struct strmap instances;     /* name -> struct instance (owned), made at first login */
    bool allow_keys_without_tls; /* keys accepted on listeners without TLS */
    unsigned token_warning;      /* seconds before expiry that expirywarning goes out */

    struct conn *conns; /* every live or closing conn */
    size_t conn_count;
    struct conn *reap; /* closed conns waiting to be freed */
    struct event *reap_ev;
    struct event *sys_timer;     /* $info's interval (systopic.h); owned */
    struct deadlines *deadlines; /* every conn's (timers.h); owned */
    struct link_driver *driver;  /* polls and writes every conn's socket (net/link.h); owned */
    struct timeval young_turn;   /* the loop's turn young_admitted counts (client.c) */
    uint64_t young_since_us;     /* clock_us() at the first such read of that turn */
    unsigned young_admitted;     /* new connections read in that turn */
    uint64_t young_deferred;     /* reads of new connections put off to a later turn */
    uint64_t next_conn_id;
    bool stopping;           /* SIGTERM: no more wills, no new work */
    struct durable *durable; /* what the database keeps (the program's); NULL: nothing */

    /*
     * Cloud logins that found no such instance or token wait for one fresh
     * look at the database (aviaryctl may have just made it), asked for at
     * most every BROKER_RECHECK_INTERVAL_MS so wrong passwords cannot drive it.
     */
    struct conn *login_waiters;
    void (*recheck)(void *ctx, uint64_t n); /* ask look n; NULL: logins never wait */
    void *recheck_ctx;
    uint64_t recheck_asked;         /* the last look asked for */
    uint64_t recheck_ms;            /* clock_ms() when it was asked */
    struct event *recheck_ev;       /* asks for the next look when its time comes */
    unsigned routing;               /* >0 while a walk of some topic tree is delivering */
    struct broker_cluster *cluster; /* NULL: a node alone; the program's */
    struct broker_cluster_stats cluster_stats;
    uint64_t mirror_seq; /* places of outgoing messages, when the database gives none */

    /* Routing scratch reused by every publish (core thread only). */
    struct broker_match *matches;
    size_t match_count, match_cap;
    struct broker_match_id *match_ids;
    size_t match_id_count, match_id_cap;
    uint64_t match_gen;
};

/* core_memory_full() once a max-memory is set: measure when due, then compare. */
bool core_memory_measure(struct broker *b);

/*
 * True when the process holds more than max-memory: new connections and new
 * retained messages are refused then, and nothing more is queued. Measures
 * (core_memory_measure) every 100 ms, or every 64 calls when that comes
 * sooner (and, when over, hands unused allocator memory back to the system
 * first); without a max-memory it costs a test.
 */
static inline bool core_memory_full(struct broker *b)
{
    return b->max_memory && core_memory_measure(b);
}

/*
 * Is `t` still a live token: in the current catalog (not revoked, its
 * instance not deleted) and not expired?
 */
bool core_token_live(const struct broker *b, const struct catalog_token *t);

#endif
