/*
 * share — the shared subscriptions ($share/GROUP/FILTER) of one instance.
 *
 * A share group is every session subscribed to the same $share/GROUP/FILTER.
 * The topic tree holds one subscription for the whole group at FILTER, whose
 * owner is the group; routing (route.c) picks which member gets each
 * message, in turn. The instance owns its groups (instance->shares, keyed
 * "GROUP/FILTER"); a group owns its member array, not the sessions in it.
 * Core thread only.
 */
#ifndef AVIARY_SHARE_H
#define AVIARY_SHARE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct instance;
struct session;

struct share_member {
    struct session *session;
    uint8_t options; /* SUBSCRIBE options: granted QoS in bits 0-1 */
    bool leading_slash;
    uint32_t sub_id;
};

struct share_group {
    char *key;                    /* "GROUP/FILTER"; owned */
    const char *filter;           /* the normalised FILTER, inside key */
    struct share_member *members; /* owned array */
    size_t count, cap;
    size_t next; /* where the next turn starts */
};

/*
 * Split a "$share/GROUP/FILTER" filter (as sent, not normalised) into GROUP
 * and FILTER. Returns false when `filter` is not a shared subscription at
 * all; sets *valid to false when it is one but malformed (an empty GROUP, a
 * wildcard in it, or no FILTER).
 */
bool share_parse(const char *filter, size_t len, const char **group, size_t *group_len,
                 const char **rest, size_t *rest_len, bool *valid);

/*
 * Put `m->session` in the group GROUP/FILTER (`key`, FILTER normalised),
 * made with its entry in the tree when new, or update its options there.
 * Sets *out to the group. Returns 1 for a new member, 0 for an update, or
 * -ENOMEM (nothing changed).
 */
int share_join(struct instance *inst, const char *key, size_t group_len,
               const struct share_member *m, struct share_group **out);

/* Take `s` out of `g`; the last member's leaving frees the group. Returns 0 or -ENOENT. */
int share_leave(struct instance *inst, struct share_group *g, struct session *s);

#endif
