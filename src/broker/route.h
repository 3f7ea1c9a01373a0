/*
 * route — where a message goes within its instance.
 *
 * A PUBLISH (or a will, or the broker's own message) is matched against the
 * instance's topic tree once; each matching session gets one copy at the
 * highest QoS of its matching subscriptions, each matching share group gives
 * it to one member in turn, and a retained message updates the retained
 * store. Wills go through the same door, under the rules a PUBLISH of their
 * client would meet. Routing is not reentrant: core->routing counts the walks
 * under way, and whoever would route from inside one (a connection closed by
 * a delivery, with a will) waits until it is over. Core thread only.
 */
#ifndef AVIARY_ROUTE_H
#define AVIARY_ROUTE_H

#include <stdbool.h>
#include <stddef.h>

struct bucket;
struct catalog_token;
struct instance;
struct message;
struct session;
struct session_sub;
struct share_group;
struct share_member;

/*
 * Publish the will `will` of a client that is gone (the caller keeps its
 * reference). It goes only as a PUBLISH of that client would have gone: not
 * when `token` (its login; NULL in desktop mode) has been revoked or has
 * expired, not over the message rates (`conn_rate` is its connection's
 * bucket, NULL when the connection is long gone), not while the instance is
 * over max-instance-bytes. Returns true when it was published.
 */
bool route_will(struct instance *inst, struct message *will, const struct catalog_token *token,
                struct bucket *conn_rate, const char *client_id);

/*
 * Route `m` to every session with a matching subscription, once per session
 * at the highest QoS of its matching subscriptions with every matching
 * Subscription Identifier, and to one member of each matching share group;
 * when `m->retain`, update the retained store (an empty payload clears it).
 * `origin` is the publishing session (NULL for a will or the broker's own):
 * its No Local subscriptions are skipped. A new retained topic beyond
 * max-retained is delivered but not kept (and logged). Counts it in the
 * instance's messages_in and bytes_in, and each delivery in messages_out and
 * bytes_out. Returns how many sessions it went to; in a cluster, 1 once the
 * instance's stream took it (its subscribers may be on any node). The caller
 * keeps its reference to `m`.
 */
size_t route_publish(struct instance *inst, struct message *m, const struct session *origin);

/*
 * A message of the instance's stream (the cluster): route_publish() to this
 * node's sessions, not counted again in messages_in (its node counted it).
 */
size_t route_publish_streamed(struct instance *inst, struct message *m,
                              const struct session *origin);

/*
 * A message of the instance's stream that some sessions missed (the cluster:
 * a node that died held them, and this node adopts them): delivered only to
 * the sessions whose `adopting` is set, never to a share group (whose one
 * member may have had it on another node), without touching the retained
 * store or the instance's counts.
 */
size_t route_replay(struct instance *inst, struct message *m, const struct session *origin);
/*
 * Update the retained store with `m` (an empty payload clears its topic),
 * under max-retained and max-memory, without delivering it: what
 * route_publish() does first for a retained message, and what the cluster
 * does with the retained messages it reads from Redis.
 */
void route_retain(struct instance *inst, struct message *m);

/*
 * route_publish() for the broker's own message on a system topic (never
 * retained): not counted as one its clients published.
 */
size_t route_publish_system(struct instance *inst, struct message *m);

/*
 * Would retaining `m` add a topic beyond max-retained, or a message while the
 * broker is over max-memory? (MQTT 5 refuses such a PUBLISH instead of
 * delivering it unretained.)
 */
bool route_retained_full(struct instance *inst, const struct message *m);

/*
 * Send `s` the retained messages matching the normalised `filter`, as its
 * subscription `sub` allows (QoS, identifier), with RETAIN 1. Expired ones
 * are dropped from the store instead.
 */
void route_send_retained(struct instance *inst, struct session *s, const char *filter,
                         const struct session_sub *sub);

/*
 * The member of share group `g` that gets the next message, on `topic`:
 * among the members whose token may read the topic, the next connected one
 * in turn, or, when none is connected, the next one (its session queues it).
 * NULL when no member may read it: then nobody in the group gets it.
 */
const struct share_member *route_pick_member(struct share_group *g, const char *topic);

#endif
