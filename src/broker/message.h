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

struct message {
    unsigned refs;
    uint8_t qos;     /* QoS it was published with */
    bool retain;     /* published with the retain flag */
    size_t topic_len;
    size_t payload_len;
    char *topic;     /* normalised (no leading '/'), NUL-terminated; points into the same block */
    uint8_t *payload; /* points into the same block */
};

/*
 * A new message with one reference, copying `topic` (normalised) and `payload`.
 * Returns NULL when out of memory.
 */
struct message *message_new(const char *topic, size_t topic_len, const uint8_t *payload,
                            size_t payload_len, uint8_t qos, bool retain);

/* Take one more reference; returns `m`. */
struct message *message_ref(struct message *m);

/* Drop one reference; frees the message with the last. NULL is ignored. */
void message_unref(struct message *m);

#endif
