/*
 * limits — what each instance may hold and do (the max-* and keep-alive
 * directives of aviary.conf(5)), with their defaults.
 *
 * A plain value type: configuration fills one, the broker copies it into each
 * instance. Owns nothing; any module may include it.
 */
#ifndef AVIARY_LIMITS_H
#define AVIARY_LIMITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct limits {
    size_t max_client_id;       /* characters in a client identifier */
    size_t max_topic_length;    /* characters in a topic name or filter */
    size_t max_payload;         /* bytes in a PUBLISH payload */
    size_t max_subscriptions;   /* active subscriptions per connection */
    unsigned keepalive_min;     /* seconds; a smaller keep-alive is raised to it */
    unsigned keepalive_max;     /* seconds; 0 or a larger keep-alive is lowered to it */
    size_t max_queued_messages; /* QoS 1/2 messages queued for one offline session */
    size_t max_inflight;        /* unacknowledged QoS 1/2 messages sent to one client */
    size_t max_outbound_bytes;  /* output a slow reader may have pending before QoS 0 to it
                                   is dropped */
    size_t max_topic_aliases;   /* MQTT 5 Topic Alias Maximum offered to clients; 0: none */
    uint32_t max_session_expiry; /* seconds a session may outlive its connection; 0: no cap */
    /* Cloud plans (0 means no limit, the desktop default). */
    size_t max_connections;     /* live connections per instance */
    size_t max_messages_per_second; /* PUBLISH packets one connection may send per second */
    size_t max_instance_messages_per_second; /* ... all of an instance's connections together */
    size_t max_retained;        /* retained messages per instance */
    unsigned idle_timeout;      /* seconds without PUBLISH, SUBSCRIBE or UNSUBSCRIBE */
    size_t max_sessions;        /* persistent sessions (outliving their connection) per instance */
    size_t max_instance_bytes;  /* bytes an instance may hold (see util/account.h) */
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
}

/* Field by field: struct padding must not make equal limits look different. */
static inline bool limits_equal(const struct limits *a, const struct limits *b)
{
    return a->max_client_id == b->max_client_id &&
           a->max_topic_length == b->max_topic_length && a->max_payload == b->max_payload &&
           a->max_subscriptions == b->max_subscriptions &&
           a->keepalive_min == b->keepalive_min && a->keepalive_max == b->keepalive_max &&
           a->max_queued_messages == b->max_queued_messages &&
           a->max_inflight == b->max_inflight &&
           a->max_outbound_bytes == b->max_outbound_bytes &&
           a->max_topic_aliases == b->max_topic_aliases &&
           a->max_session_expiry == b->max_session_expiry &&
           a->max_connections == b->max_connections &&
           a->max_messages_per_second == b->max_messages_per_second &&
           a->max_instance_messages_per_second == b->max_instance_messages_per_second &&
           a->max_retained == b->max_retained && a->idle_timeout == b->idle_timeout &&
           a->max_sessions == b->max_sessions && a->max_instance_bytes == b->max_instance_bytes;
}

#endif
