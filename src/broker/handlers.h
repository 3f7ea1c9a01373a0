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

void handle_connect(struct conn *c, const struct mqtt_packet *p);
void handle_publish(struct conn *c, const struct mqtt_packet *p);
void handle_ack(struct conn *c, const struct mqtt_packet *p); /* PUBACK, PUBREC, PUBREL, PUBCOMP */
void handle_subscribe(struct conn *c, const struct mqtt_packet *p);
void handle_unsubscribe(struct conn *c, const struct mqtt_packet *p);
void handle_disconnect(struct conn *c, const struct mqtt_packet *p);

#endif
