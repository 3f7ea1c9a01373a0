/*
 * limits — what each instance may hold and do (the max-* and keep-alive
 * directives of aviary.conf(5)): their defaults, and their schema (names,
 * ranges, how values are written).
 *
 * A plain value type: configuration fills one, the broker copies it into each
 * instance. Every limit has a name, which is at once a directive of
 * aviary.conf(5) and what a plan or an instance sets (aviaryctl plan set /
 * instance set); limits_parse() and limits_set() serve all three, so a value
 * means the same wherever it is written. Owns nothing; no state; any module
 * may include it.
 */
#ifndef AVIARY_LIMITS_H
#define AVIARY_LIMITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct limits {
    size_t max_client_id;        /* characters in a client identifier */
    size_t max_topic_length;     /* characters in a topic name or filter */
    size_t max_payload;          /* bytes in a PUBLISH payload */
    size_t max_subscriptions;    /* active subscriptions per connection */
    unsigned keepalive_min;      /* seconds; a smaller keep-alive is raised to it */
    unsigned keepalive_max;      /* seconds; 0 or a larger keep-alive is lowered to it */
    size_t max_queued_messages;  /* QoS 1/2 messages queued for one offline session */
    size_t max_inflight;         /* unacknowledged QoS 1/2 messages sent to one client */
    size_t max_outbound_bytes;   /* output a slow reader may have pending before QoS 0 to it
                                    is dropped */
    size_t max_topic_aliases;    /* MQTT 5 Topic Alias Maximum offered to clients; 0: none */
    uint32_t max_session_expiry; /* seconds a session may outlive its connection; 0: no cap */
    /* Cloud plans (0 means no limit, the desktop default). */
    size_t max_connections;         /* live connections per instance */
    size_t max_messages_per_second; /* PUBLISH packets one connection may send per second */
    size_t max_instance_messages_per_second; /* ... all of an instance's connections together */
    size_t max_retained;                     /* retained messages per instance */
    unsigned idle_timeout;                   /* seconds without PUBLISH, SUBSCRIBE or UNSUBSCRIBE */
    size_t max_sessions;       /* persistent sessions (outliving their connection) per instance */
    size_t max_instance_bytes; /* bytes an instance may hold (see util/account.h) */
    unsigned utf8_topics;      /* 1: topics may hold any UTF-8 but controls (broker/topic.h) */
};

#define LIMITS_DEFAULT_MAX_CLIENT_ID 64
/* No configured max-client-id may exceed this (the broker keeps ids in buffers of it). */
#define LIMITS_MAX_CLIENT_ID_BUFFER 65536
#define LIMITS_DEFAULT_MAX_TOPIC_LENGTH 128
#define LIMITS_DEFAULT_MAX_PAYLOAD 65536
#define LIMITS_DEFAULT_MAX_SUBSCRIPTIONS 100
#define LIMITS_DEFAULT_KEEPALIVE_MIN 1
#define LIMITS_DEFAULT_KEEPALIVE_MAX 300
#define LIMITS_DEFAULT_MAX_QUEUED_MESSAGES 1000
#define LIMITS_DEFAULT_MAX_INFLIGHT 20
#define LIMITS_DEFAULT_MAX_OUTBOUND_BYTES (8u * 1024 * 1024)
#define LIMITS_DEFAULT_MAX_TOPIC_ALIASES 10

/* Fill `l` with the defaults above. */
static inline void limits_init(struct limits *l)
{
    l->max_client_id = LIMITS_DEFAULT_MAX_CLIENT_ID;
    l->max_topic_length = LIMITS_DEFAULT_MAX_TOPIC_LENGTH;
    l->max_payload = LIMITS_DEFAULT_MAX_PAYLOAD;
    l->max_subscriptions = LIMITS_DEFAULT_MAX_SUBSCRIPTIONS;
    l->keepalive_min = LIMITS_DEFAULT_KEEPALIVE_MIN;
    l->keepalive_max = LIMITS_DEFAULT_KEEPALIVE_MAX;
    l->max_queued_messages = LIMITS_DEFAULT_MAX_QUEUED_MESSAGES;
    l->max_inflight = LIMITS_DEFAULT_MAX_INFLIGHT;
    l->max_outbound_bytes = LIMITS_DEFAULT_MAX_OUTBOUND_BYTES;
    l->max_topic_aliases = LIMITS_DEFAULT_MAX_TOPIC_ALIASES;
    l->max_session_expiry = 0;
    l->max_connections = 0;
    l->max_messages_per_second = 0;
    l->max_instance_messages_per_second = 0;
    l->max_retained = 0;
    l->idle_timeout = 0;
    l->max_sessions = 0;
    l->max_instance_bytes = 0;
    l->utf8_topics = 0;
}

/* Field by field: struct padding must not make equal limits look different. */
static inline bool limits_equal(const struct limits *a, const struct limits *b)
{
    return a->max_client_id == b->max_client_id && a->max_topic_length == b->max_topic_length &&
           a->max_payload == b->max_payload && a->max_subscriptions == b->max_subscriptions &&
           a->keepalive_min == b->keepalive_min && a->keepalive_max == b->keepalive_max &&
           a->max_queued_messages == b->max_queued_messages && a->max_inflight == b->max_inflight &&
           a->max_outbound_bytes == b->max_outbound_bytes &&
           a->max_topic_aliases == b->max_topic_aliases &&
           a->max_session_expiry == b->max_session_expiry &&
           a->max_connections == b->max_connections &&
           a->max_messages_per_second == b->max_messages_per_second &&
           a->max_instance_messages_per_second == b->max_instance_messages_per_second &&
           a->max_retained == b->max_retained && a->idle_timeout == b->idle_timeout &&
           a->max_sessions == b->max_sessions && a->max_instance_bytes == b->max_instance_bytes &&
           a->utf8_topics == b->utf8_topics;
}

/*
 * Bounds shared with aviaryd's other settings (util/config.c). A week: past any
 * sensible idle timeout or warning lead, far from any overflow. 1 TiB: past any
 * machine this runs on.
 */
#define LIMITS_IDLE_MAX (7u * 24 * 3600)
#define LIMITS_MEMORY_MAX (1024ull * 1024 * 1024 * 1024)

/* One limit of the schema. */
struct limits_def {
    const char *name;    /* e.g. "max-payload" */
    const char *arg;     /* the value's placeholder in usage texts: N, BYTES or SECONDS */
    size_t offset, size; /* of the field in struct limits (a size_t or an unsigned) */
    unsigned long long min, max;
    bool suffixes;      /* the value may end in k/K (x1024), m/M (x1024^2) or g/G (x1024^3) */
    const char *defval; /* the default as usage texts show it; NULL: the number */
    const char *help;
};

/* How many limits there are; limits_at(i) is the i-th (NULL from limits_count() on). */
size_t limits_count(void);
const struct limits_def *limits_at(size_t i);

/* The name of the i-th limit, or NULL from limits_count() on. */
const char *limits_name(size_t i);

/* The limit named by the `len` bytes at `name` (not NUL-terminated), or NULL. */
const struct limits_def *limits_find(const char *name, size_t len);

/* Write every limit's name, separated by ", ", to `out` (truncated to `size`). */
void limits_names(char *out, size_t size);

/*
 * Parse a number setting `name` (named in messages) from `value`: decimal
 * digits, then when `suffixes` one of k K m M g G, between `min` and `max`.
 * The checks of every numeric directive, limits or not. Returns 0, or -1 with
 * the reason in `err`, e.g. "max-payload: not a number: '12x'".
 */
int limits_parse_number(const char *name, const char *value, unsigned long long min,
                        unsigned long long max, bool suffixes, unsigned long long *out, char *err,
                        size_t errlen);

/*
 * Parse `value` for limit `name` exactly as the configuration file would
 * (range, suffixes). Returns 0, or -1 with the reason in `err` (an unknown
 * limit lists the known ones).
 */
int limits_parse(const char *name, const char *value, unsigned long long *out, char *err,
                 size_t errlen);

/* Set limit `name` of `l` to `value` (as parsed above). Returns 0, or -1 for an unknown name. */
int limits_set(struct limits *l, const char *name, unsigned long long value);

/* The value of limit `name` in `l`, or -1 for an unknown name. */
long long limits_get(const struct limits *l, const char *name);

/*
 * A numeric setting's field at `field`, of `size` bytes: sizeof(unsigned) or
 * sizeof(size_t), the two kinds that settings use.
 */
void limits_field_store(void *field, size_t size, unsigned long long n);
unsigned long long limits_field_load(const void *field, size_t size);

#endif
