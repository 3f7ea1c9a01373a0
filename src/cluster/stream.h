/*
 * stream — the records that go through an instance's Redis channel, and the
 * retained messages kept in its Redis hash, in one binary form. Pure: no
 * I/O, no broker state; what arrives from Redis is checked here before any
 * of it is believed.
 *
 * A record starts with a version byte and a type byte:
 *   'P' a message:  u8 flags (QoS in bits 0-1, retain in bit 2), u32 expiry
 *                   interval, u64 wall-clock ms when published, u16 + the
 *                   sending node's id, u64 its number on that node, u16 +
 *                   the publisher's client id, u32 + topic, u32 + MQTT 5
 *                   properties, then the payload to the end
 *   'C' a claim:    u16 + node id, u16 + client id, u64 connection id
 *   'L' a load:     u16 + node id, u32 live connections, u32 messages
 *                   published in the last second, on that node, u64 the
 *                   report's number, u64 the number of the node's latest
 *                   own report it has read back (the two u64 may be absent:
 *                   read as 0)
 * Integers are big-endian. A retained message in the hash is a 'P' record.
 */
#ifndef AVIARY_STREAM_H
#define AVIARY_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STREAM_VERSION 1
#define STREAM_MESSAGE 'P'
#define STREAM_CLAIM 'C'
#define STREAM_LOAD 'L'

/* A message as the stream carries it: every pointer points into the record. */
struct stream_message {
    uint8_t qos;
    bool retain;
    uint32_t expiry;       /* seconds; 0: never */
    uint64_t published_ms; /* wall clock (CLOCK_REALTIME) */
    const char *node;      /* the node that sent it (empty in the hashes) */
    size_t node_len;
    uint64_t seq; /* its number among that node's messages: the node knows its own come back */
    const char *client_id; /* the publisher's; empty for a will or the broker's own */
    size_t client_id_len;
    const char *topic;
    size_t topic_len;
    const uint8_t *props;
    size_t props_len;
    const uint8_t *payload;
    size_t payload_len;
};

/* A connection's claim to its client id, cluster-wide (take-over). */
struct stream_claim {
    const char *node;
    size_t node_len;
    const char *client_id;
    size_t client_id_len;
    uint64_t conn_id;
};

/* What one node has of an instance: what the cluster-wide limits add up. */
struct stream_load {
    const char *node;
    size_t node_len;
    uint32_t conns;
    uint32_t published;
    uint64_t number;  /* counts the node's reports of the instance, from 1 */
    uint64_t through; /* the node has read back its report of this number, so it has
                         taken every record before it in the stream; 0: none yet */
};

struct stream_record {
    char type; /* STREAM_MESSAGE, STREAM_CLAIM or STREAM_LOAD */
    union {
        struct stream_message message;
        struct stream_claim claim;
        struct stream_load load;
    } u;
};

/* The size of the record stream_encode_message() writes for `m`. */
size_t stream_message_size(const struct stream_message *m);

/* Write `m` to `out`, which holds stream_message_size(m) bytes. */
void stream_encode_message(const struct stream_message *m, uint8_t *out);

size_t stream_claim_size(const struct stream_claim *c);
void stream_encode_claim(const struct stream_claim *c, uint8_t *out);

size_t stream_load_size(const struct stream_load *l);
void stream_encode_load(const struct stream_load *l, uint8_t *out);

/*
 * Read the record of `len` bytes at `data` into `r` (pointing into `data`).
 * Returns 0, or -1 with the reason in `err` when it is not a whole, well-formed
 * record of this version.
 */
int stream_decode(const uint8_t *data, size_t len, struct stream_record *r, char *err,
                  size_t errlen);

#endif
