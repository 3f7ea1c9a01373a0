/*
 * bridge — between the broker's objects and the cluster's records: the
 * instance a name stands for, the message a record carries (made and charged
 * as a PUBLISH's would be), and the record of a message. Core thread only.
 */
#ifndef AVIARY_BRIDGE_H
#define AVIARY_BRIDGE_H

#include <stddef.h>
#include <stdint.h>

struct broker;
struct instance;
struct message;
struct stream_message;

/* The instance `name` on this node (desktop mode's is "local"), or NULL. */
struct instance *bridge_instance(struct broker *b, const char *name);

/*
 * The message `sm` carries, with one reference, charged to `inst`, its
 * expiry counted from when it was published; NULL when out of memory (logged).
 */
struct message *bridge_message(struct instance *inst, const struct stream_message *sm);

/*
 * May this node hand `sm` to the subscribers of `inst`? A record from Redis
 * is well formed (stream.h) but its message must also be one a PUBLISH could
 * have made: a topic name under the instance's rules, and only the MQTT 5
 * properties a message carries, whole. Returns 0, or -1 with the reason.
 */
int bridge_check(const struct instance *inst, const struct stream_message *sm, char *err,
                 size_t errlen);

/* Milliseconds of the wall clock: what a record's published time is on. */
uint64_t bridge_wall_ms(void);

/*
 * The record of `m`, published by `client_id` (NULL: none), pointing into
 * `m` and `client_id`.
 */
void bridge_record_of(const struct message *m, const char *client_id, struct stream_message *sm);

#endif
