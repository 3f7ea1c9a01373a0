/*
 * handlers — one function per incoming packet type (handle_*.c).
 *
 * Called by client.c's client_dispatch() with a decoded packet whose buffers are
 * valid only during the call. A handler answers the client and updates the
 * broker. It never frees the conn, and never closes it itself: conn_close()
 * and its kin are for other connections (a take-over), not for its own.
 *
 * Each returns 0 (carry on: the connection reads its next packet) or -1 (the
 * connection must end). Before returning -1 a handler says why with
 * conn_fail(), conn_fail_at(), conn_fail_with() (an MQTT 5 DISCONNECT
 * reason) or conn_finish() (after the client's DISCONNECT), and returns at
 * once; a failed conn_send() has closed the connection already, and its -1
 * is just passed up. client_dispatch() then closes the connection as recorded,
 * in one place (conn_close_ended). The helpers in handle_*.c follow the
 * same rule: a helper that can fail returns a code its caller passes up.
 *
 * A CONNECT whose cloud login waits for a fresh look at the database returns
 * 0 with c->login_waiting set: the packet stays unread, nothing is answered.
 */
#ifndef AVIARY_HANDLERS_H
#define AVIARY_HANDLERS_H

#include "codec/codec.h"

struct conn;

int handle_connect(struct conn *c, const struct mqtt_packet *p);
int handle_publish(struct conn *c, const struct mqtt_packet *p);
int handle_ack(struct conn *c, const struct mqtt_packet *p); /* PUBACK, PUBREC, PUBREL, PUBCOMP */
int handle_subscribe(struct conn *c, const struct mqtt_packet *p);
int handle_unsubscribe(struct conn *c, const struct mqtt_packet *p);
int handle_disconnect(struct conn *c, const struct mqtt_packet *p);

#endif
