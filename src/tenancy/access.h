/*
 * access — what a token allows: publishing to a topic, subscribing to a
 * filter, receiving a message.
 *
 * A token's allow lists (pub, sub) allow everything when empty; its deny
 * lists (deny-pub, deny-sub) win over any allow, as in cloud IoT policies.
 * Topics and filters are normalised (topic_normalize). A NULL token (desktop
 * mode) allows everything. Pure functions; no state.
 */
#ifndef AVIARY_ACCESS_H
#define AVIARY_ACCESS_H

#include <stdbool.h>

struct catalog_token;

/* May a client holding `t` publish to `topic`? */
bool access_may_publish(const struct catalog_token *t, const char *topic);

/*
 * May it subscribe to `filter`? Only when the filter lies inside an allowed
 * filter and not inside a denied one. A filter that merely overlaps a denied
 * one is granted; access_may_read() then keeps the denied topics from it.
 */
bool access_may_subscribe(const struct catalog_token *t, const char *filter);

/* Why a subscription is allowed or not. */
enum access_verdict {
    ACCESS_ALLOWED = 0,
    ACCESS_OUTSIDE = 1, /* not inside any of the token's sub filters */
    ACCESS_DENIED = 2,  /* inside one of its deny-sub filters */
};

/* access_may_subscribe(), saying which rule refused. */
enum access_verdict access_subscribe_verdict(const struct catalog_token *t, const char *filter);

/* May it receive a message published to `topic`? Checked at every delivery. */
bool access_may_read(const struct catalog_token *t, const char *topic);

/*
 * May it act on its instance through $action (close a client)? Only with the
 * action permission and publish permission for $action itself.
 */
bool access_may_act(const struct catalog_token *t);

#endif
