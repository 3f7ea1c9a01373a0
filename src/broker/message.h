/*
 * message — one published application message, immutable and shared.
 *
 * A message is created once per PUBLISH (or will) and shared by reference
 * among every subscriber's queue, the in-flight windows and the retained
 * store; its payload is never copied per subscriber. The last message_unref()
 * frees it. Core thread only: the count is not atomic.
 */
#ifndef AVIARY_MESSAGE_H
#define AVIARY_MESSAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct account;

/*
 * Told when a message it keeps in the database (kept_id) is freed, so that
 * the database drops it too (broker/durable.c implements it).
 */
struct message_keeper {
    void (*dropped)(struct message_keeper *k, uint64_t kept_id);
};

struct message {
    unsigned refs;
    uint8_t qos; /* QoS it was published with */
    bool retain; /* published with the retain flag */
    size_t topic_len;
    size_t payload_len;
    char *topic;      /* normalised (no leading '/'), NUL-terminated; points into the same block */
    uint8_t *payload; /* points into the same block */
    /*
     * MQTT 5: the properties passed on to subscribers untouched (Payload
     * Format Indicator, Content Type, Response Topic, Correlation Data, User
     * Properties), in wire form, in the same block; empty from MQTT 3.1.1.
     */
    uint8_t *props;
    size_t props_len;
    uint32_t expiry;         /* Message Expiry Interval in seconds; 0: never expires */
    uint64_t created_ms;     /* clock_ms() when it was published: the expiry counts from it */
    struct account *account; /* charged with its bytes while it lives (a reference), or NULL */
    uint64_t kept_id;        /* its id in the database (durable.h); 0: not kept */
    struct message_keeper *keeper; /* set with kept_id */
};

/* What MQTT 5 adds to a message; NULL or zeroed for MQTT 3.1.1. */
struct message_v5 {
    const uint8_t *props; /* the properties to pass on, in wire form */
    size_t props_len;
    uint32_t expiry; /* seconds; 0: none */
};

/*
 * A new message with one reference, copying `topic` (normalised), `payload`
 * and v5's properties (`v5` may be NULL). Returns NULL when out of memory.
 */
struct message *message_new(const char *topic, size_t topic_len, const uint8_t *payload,
                            size_t payload_len, uint8_t qos, bool retain,
                            const struct message_v5 *v5);

/*
 * Count the message's bytes against `a` (its instance's account, which it
 * keeps a reference to) for as long as the message lives, wherever it is
 * held. Once, right after message_new().
 */
void message_charge(struct message *m, struct account *a);

/* The bytes the message holds: its block with topic, payload and properties. */
size_t message_bytes(const struct message *m);

/* Take one more reference; returns `m`. */
struct message *message_ref(struct message *m);

/* Drop one reference; frees the message with the last. NULL is ignored. */
void message_unref(struct message *m);

/* True when the message's expiry interval has passed at `now_ms` (clock_ms()). */
bool message_expired(const struct message *m, uint64_t now_ms);

/*
 * The Message Expiry Interval to send at `now_ms`: the original less the
 * whole seconds the message has waited, at least 1. Only for messages that
 * have an expiry and have not expired.
 */
uint32_t message_expiry_left(const struct message *m, uint64_t now_ms);

/*
 * A will is made at CONNECT and published later: its expiry counts from its
 * publication. Only while nobody else holds a reference.
 */
void message_restart_expiry(struct message *m);

struct mqtt_props;
struct propbuf;

/*
 * Take from the PUBLISH (or will) properties `in` those a message carries to
 * its subscribers (Payload Format Indicator, Content Type, Response Topic,
 * Correlation Data, User Properties, in order) into `out`, and point `v5` at
 * them (valid while `out` lives and gets nothing more) with the Message Expiry
 * Interval (0: none). `out` may have failed (out of memory): the caller checks
 * out->failed. Returns true when the Payload Format Indicator says the payload
 * is UTF-8 text.
 */
bool message_props_take(const struct mqtt_props *in, struct propbuf *out, struct message_v5 *v5);

#endif
