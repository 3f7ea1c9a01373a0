/*
 * systopic — the system topics $events and $info of each instance.
 *
 * $events: what happens in the instance, one JSON object per message
 * ("connected", "disconnected", "subscribed", "unsubscribed", "published",
 * "refused", and "dropped" when the cap below discarded some). $info: a
 * summary of the instance (connections, sessions, subscriptions, retained
 * messages, rates, limits), sent at once to a new subscriber with RETAIN 1
 * and every SYSTOPIC_INFO_INTERVAL_SEC seconds to all of them.
 *
 * Both are ordinary topics of the instance's tree to their subscribers (so
 * tokens decide who may read them, and "#" does not match them), but only
 * the broker publishes to them, at QoS 0 and never retained in the store.
 *
 * The cost of watching is capped by the instance's own traffic: an event is
 * built only when some subscription matches $events (instance->sys counts
 * them), and at most SYSTOPIC_EVENTS_PER_SECOND are built per second (a
 * token bucket of one second's burst); those over the cap are counted and
 * reported in one "dropped" event once the bucket allows. An event is never
 * routed from where it happens, which may be inside routing: it waits in the
 * instance's queue for the next loop iteration, so every event goes out in
 * the order it happened. Publishing an event is no "published" event.
 *
 * The instance owns the state (struct instance_sys); this module makes its
 * events and messages. Core thread only.
 */
#ifndef AVIARY_SYSTOPIC_H
#define AVIARY_SYSTOPIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker/instance.h"

struct broker;
struct session;
struct session_sub;

/* $events built per second and instance at most (and the burst). */
#define SYSTOPIC_EVENTS_PER_SECOND 100
/* Seconds between two $info summaries, and the interval their rates cover. */
#define SYSTOPIC_INFO_INTERVAL_SEC 5

/*
 * Is anybody subscribed to $events, or watching the instance through a tap
 * (the web view)? Nothing else is done for an instance nobody watches.
 */
static inline bool systopic_events_watched(const struct instance *inst)
{
    return inst->sys.events_watchers > 0 || inst->taps != NULL;
}

/*
 * The events. `client_id` is the client's (as it sent it); the other
 * strings are copied into the event as they are (they are escaped as JSON).
 * Each does nothing unless $events is watched and the cap allows.
 */
void systopic_connected(struct instance *inst, const char *client_id, const char *transport,
                        unsigned protocol_version, const char *peer);
void systopic_disconnected(struct instance *inst, const char *client_id, const char *reason);
void systopic_subscribed(struct instance *inst, const char *client_id, const char *filter,
                         unsigned qos);
void systopic_unsubscribed(struct instance *inst, const char *client_id, const char *filter);
void systopic_published(struct instance *inst, const char *client_id, const char *topic,
                        size_t size, unsigned qos, bool retain);

/*
 * Something of the client's was refused: `what` is the request ("connect",
 * "publish", "subscribe", "action"), `rule` the limit or permission that
 * refused it (e.g. "max-connections", "token"), `topic` the topic or filter
 * concerned (NULL: none) and `reason` the words of the log.
 */
void systopic_refused(struct instance *inst, const char *client_id, const char *what,
                      const char *rule, const char *topic, const char *reason);

/*
 * Session `s` has just subscribed to a filter that matches $info, with
 * `sub`: send it the current summary with RETAIN 1, as a retained message
 * would be (its token permitting).
 */
void systopic_info_send(struct instance *inst, struct session *s, const struct session_sub *sub);

/*
 * Every SYSTOPIC_INFO_INTERVAL_SEC (the broker's timer): take every
 * instance's rates over the interval, and publish $info where it is watched.
 */
void systopic_tick(struct broker *b);

#endif
