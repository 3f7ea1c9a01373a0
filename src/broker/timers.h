/*
 * timers — the deadlines of a client connection.
 *
 * One deadline per connection (util/deadlines.h: the broker's heap of them,
 * under one timer), re-armed only when it is due: first the CONNECT
 * deadline (connect-timeout), then the keep-alive (1.5 times the client's,
 * from the last whole packet) and the idle timeout (from the last PUBLISH,
 * SUBSCRIBE or UNSUBSCRIBE), whichever is nearer; with an expiring token
 * (cloud), its expiry warning and then the close at its expiry are measured
 * there too. conn_free cancels the deadline. Core thread only.
 */
#ifndef AVIARY_TIMERS_H
#define AVIARY_TIMERS_H

#include <stdbool.h>

struct conn;
struct deadline;

/* A client topic that hears about its token: "expirywarning" before expiry. */
#define TIMERS_TOKEN_EVENTS_TOPIC "[mqtt]tokenevents"
#define TIMERS_TOKEN_WARNING_PAYLOAD "expirywarning"

/* The broker's deadlines call this for a conn's (struct conn.deadline). */
void timers_conn_due(struct deadline *d);

/* A new connection has connect-timeout seconds to send CONNECT. Returns 0 or -1 (closed). */
int timers_start_connect(struct conn *c);

/*
 * CONNECT was accepted with keep-alive `c->keepalive` (already clamped): from
 * now on the connection is closed when no whole packet arrives for 1.5 times
 * that [MQTT-3.1.2-24], or nothing but pings for idle-timeout.
 */
void timers_start_keepalive(struct conn *c);

/* A whole packet arrived; `activity`: a PUBLISH, SUBSCRIBE or UNSUBSCRIBE (idle-timeout). */
void timers_packet_arrived(struct conn *c, bool activity);

/* The instance's limits changed: apply a new keep-alive or idle deadline at once. */
void timers_limits_changed(struct conn *c);

/*
 * CONNECT was accepted with an expiring token: bring the deadline to the
 * warning (token-warning seconds ahead), or the close at expiry. Returns 0 or
 * -1 (out of memory: the connection is closed).
 */
int timers_start_token(struct conn *c);

/*
 * The warning time has come: send expirywarning on [mqtt]tokenevents once,
 * if the session subscribed to it (a later subscription gets it then).
 */
void timers_token_warning(struct conn *c);

#endif
