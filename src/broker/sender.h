/*
 * sender — what goes to one client: packets encoded for its protocol level
 * and within what it said it can take.
 *
 * The sender sits below sessions: a session hands it PUBLISHes without
 * knowing anything else of the connection. It encodes (the payload of a
 * large PUBLISH is referenced, not copied), keeps the topic aliases toward
 * the client, leaves out what exceeds the client's Maximum Packet Size,
 * drops QoS 0 beyond max-outbound-bytes, and charges the output to the
 * instance's account while it is pending. When it cannot go on (out of
 * memory, a packet that cannot be encoded) it calls its `fail`,
 * which closes the connection. Embedded in struct conn; core thread only.
 */
#ifndef AVIARY_SENDER_H
#define AVIARY_SENDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec/codec.h"
#include "net/link.h"
#include "util/limits.h"
#include "util/log.h"
#include "util/strmap.h"

struct account;
struct message;

/* How one message goes to one session, as its matching subscriptions decided. */
struct delivery {
    uint8_t qos;             /* already the minimum of the message's and the subscription's */
    bool retain;             /* the RETAIN flag to send */
    bool leading_slash;      /* send the topic with a leading '/' */
    const uint32_t *sub_ids; /* Subscription Identifiers to send with it (MQTT 5) */
    size_t sub_id_count;
};

/* What most senders never need, made at its first use: most clients take no alias. */
struct sender_rare {
    struct strmap aliases;    /* topic -> alias we gave it (as uintptr_t) */
    struct log_every dropped; /* QoS 0 messages dropped because the output was full */
};

struct sender {
    struct link *link;           /* where the bytes go (the connection's) */
    const struct limits *limits; /* max-outbound-bytes: the instance's once logged in */
    const char *who;             /* the client, for the log (the conn's client id) */
    /* Close the connection, logging `why`; `owner` is the link's. */
    void (*fail)(void *owner, const char *why);
    struct sender_rare *rare; /* owned; NULL until the first alias or drop */

    /* Its output counts against its instance's bytes from login until it is freed. */
    struct account *account; /* a reference; NULL before login */
    size_t charged;          /* bytes of output charged: never less than pending */

    uint32_t published; /* PUBLISH packets queued to it (wraps): idle-timeout looks */

    /* What the client said it can take (MQTT 5 CONNECT). */
    uint32_t max_packet;  /* its Maximum Packet Size; 0: no limit */
    uint16_t receive_max; /* its Receive Maximum: bounds our window; 0: max-inflight */
    uint16_t alias_max;   /* Topic Alias Maximum it accepts from us */
    uint16_t alias_count;

    /* Small fields last, where they pack: every connection holds a sender. */
    uint8_t version; /* protocol level from CONNECT */
    bool closed;     /* the connection is closing: nothing more is sent */
};

/* sender_publish(): the client cannot take it (its Maximum Packet Size). */
#define SENDER_SKIPPED 1

/* Set up `s` for `link`, failing through `fail(link's owner, why)`. */
void sender_init(struct sender *s, struct link *link, const struct limits *limits,
                 void (*fail)(void *owner, const char *why));

/* Release what `s` holds: its aliases and the charge of its output. */
void sender_release(struct sender *s);

/* The connection cannot go on: close it through the owner, logging `why` (printf-style). */
void sender_fail(struct sender *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Encode `pkt` for the client's protocol level and queue it. When it would
 * exceed an MQTT 5 client's Maximum Packet Size it goes without its
 * properties (Reason String, User Properties), or not at all
 * [MQTT-3.1.2-25]. Returns 0, or -1 when it could not be encoded or queued
 * (the connection is then closed) or the connection is closing.
 */
int sender_send(struct sender *s, const struct mqtt_packet *pkt);

/*
 * sender_send() with `why` (when not NULL) as the packet's Reason String,
 * in place of any properties `pkt` had (a CONNACK, an acknowledgement, a
 * DISCONNECT). The client may go without it (see sender_send).
 */
int sender_send_why(struct sender *s, struct mqtt_packet *pkt, const char *why);

/*
 * Queue a PUBLISH of `m` as `d` says (QoS, RETAIN, leading '/', MQTT 5
 * Subscription Identifiers) with `packet_id` and DUP. MQTT 5 clients get the
 * message's properties, its remaining expiry and, when they allow it, a
 * topic alias. The output holds a reference to a large payload until it is
 * written. Returns 0; SENDER_SKIPPED when it would exceed the client's
 * Maximum Packet Size (nothing sent); or -1 (the connection is then closed,
 * or was closing). QoS 0 beyond max-outbound-bytes is dropped (and counted)
 * with 0.
 */
int sender_publish(struct sender *s, struct message *m, const struct delivery *d,
                   uint16_t packet_id, bool dup);

/* Charge the pending output to `a` from now on (a reference is kept until release). */
void sender_charge(struct sender *s, struct account *a);

/* Output went out: bring the charge down to what is still pending. */
void sender_settle(struct sender *s);

/* Bytes waiting to be written. */
static inline size_t sender_pending(const struct sender *s)
{
    return link_output_pending(s->link);
}

/* max-outbound-bytes that applies now. */
static inline size_t sender_max_outbound(const struct sender *s)
{
    return s->limits->max_outbound_bytes;
}

/* QoS 0 messages dropped at max-outbound-bytes so far, in the whole process. */
uint64_t sender_qos0_drops(void);

#endif
