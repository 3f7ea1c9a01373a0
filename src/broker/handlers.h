/*
 * handlers — one function per incoming packet type (handle_*.c).
 *
 * Called by conn.c with a decoded packet whose buffers are valid only during
 * the call. A handler answers the client, updates the broker, or closes the
 * connection with a reason; it never frees the conn.
 */
#ifndef AVIARY_HANDLERS_H
#define AVIARY_HANDLERS_H

#include <stdbool.h>
#include <stdint.h>

#include "codec/codec.h"

struct conn;
struct propbuf;

int handle_connect(struct conn *c, const struct mqtt_packet *p);
int handle_publish(struct conn *c, const struct mqtt_packet *p);
int handle_ack(struct conn *c, const struct mqtt_packet *p); /* PUBACK, PUBREC, PUBREL, PUBCOMP */
int handle_subscribe(struct conn *c, const struct mqtt_packet *p);
int handle_unsubscribe(struct conn *c, const struct mqtt_packet *p);
int handle_disconnect(struct conn *c, const struct mqtt_packet *p);

/*
 * Normalise a checked topic or filter from the wire (see topic_normalize) into
 * `small` when it fits (size `small_size`), else into a new heap buffer.
 * Returns the NUL-terminated result (free it when it is not `small`), or NULL
 * when out of memory. Sets *leading_slash.
 */
char *handlers_normalize(const struct mqtt_buf *in, char *small, size_t small_size,
                         bool *leading_slash);

/*
 * Copy from the PUBLISH (or will) properties `in` those a message carries to
 * its subscribers (Payload Format Indicator, Content Type, Response Topic,
 * Correlation Data, User Properties, in order) into `out`, and set *expiry to
 * its Message Expiry Interval (0: none). Returns true when the Payload Format
 * Indicator says the payload is UTF-8 text.
 */
bool handlers_message_props(const struct mqtt_props *in, struct propbuf *out, uint32_t *expiry);

#endif
