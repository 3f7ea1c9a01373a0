/*
 * cluster — this node's part in a cluster of aviaryd nodes that share their
 * instances through Redis (doc/ARCHITECTURE.md, "Cluster").
 *
 * Every message published in an instance goes to the instance's sharded
 * channel `aviary:{NAME}` (SPUBLISH), and every node that has the instance
 * delivers to its own subscribers from that channel (SSUBSCRIBE), its own
 * publishers' messages included: so all subscribers of an instance, on
 * whichever node, see its messages in the one order Redis gave the channel.
 * Retained messages are also kept in the hash `aviary:{NAME}:retained`,
 * which a node reads when it starts following the instance. A login claims
 * its client id on the channel, and the connection with that id on another
 * node ends (taken over). While Redis cannot be reached, each node routes
 * its instances' messages to its own clients alone, and says so.
 *
 * The cluster owns its two links to Redis (commands, and subscriptions),
 * its TLS context, and what it holds per instance; the broker holds a
 * pointer to it (struct broker_cluster) between cluster_start() and
 * cluster_stop(). Core thread only.
 */
#ifndef AVIARY_CLUSTER_H
#define AVIARY_CLUSTER_H

#include <stddef.h>

struct broker;
struct cluster;

/*
 * Join `b` to the cluster whose Redis is at `url` (redis:// or rediss://;
 * `ca_file`, may be NULL, holds the CAs a rediss:// server must chain to,
 * else the system's). The instances `b` has now are followed at once, later
 * ones as they are made. Connecting goes on in the background. Returns the
 * cluster, or NULL with the reason in `err`.
 */
struct cluster *cluster_start(struct broker *b, const char *url, const char *ca_file, char *err,
                              size_t errlen);

/* This node's id in the cluster (16 hex digits, new at each start). */
const char *cluster_node_id(const struct cluster *cl);

/* Leave the broker and free everything. NULL is fine. */
void cluster_stop(struct cluster *cl);

#endif
