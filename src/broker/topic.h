/*
 * topic — aviary's topic rules and the topic tree of one instance.
 *
 * The rules: by default narrower than MQTT's (which allow any UTF-8 but
 * U+0000), a topic or filter is ASCII letters, digits and . , : ; - _ $ / + #
 * (and * in filters); with the utf8-topics limit, any well-formed UTF-8 but
 * control characters. A whole-level `*` in a filter is `+`; one leading `/` is
 * insignificant, so "/a/b" and "a/b" are the same topic. Callers check with
 * topic_check_name()/topic_check_filter() and then normalise once at the edge
 * with topic_normalize(); the tree only ever sees normalised strings.
 *
 * The tree holds subscriptions (owner pointer plus options) and retained
 * messages (opaque pointers) at the nodes of a trie of levels. It owns its
 * nodes and its copies of level strings; it never owns or frees an owner or a
 * retained message except through the callback given to topic_tree_free().
 * Only the broker's core thread calls it; it has no locks.
 */
#ifndef AVIARY_TOPIC_H
#define AVIARY_TOPIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec/codec.h"
#include "util/limits.h"
#include "util/scratch.h"

/* Which characters a topic may hold (the utf8-topics limit of its instance). */
enum topic_charset {
    TOPIC_CHARSET_SAFE = 0, /* letters, digits and . , : ; - _ $ / (and the wildcards) */
    TOPIC_CHARSET_UTF8 = 1, /* any well-formed UTF-8 but U+0000-U+001F and U+007F-U+009F */
};

enum topic_err {
    TOPIC_OK = 0,
    TOPIC_E_EMPTY = -1,    /* zero length, or just "/" (empty once normalised) */
    TOPIC_E_TOO_LONG = -2, /* longer than the limit */
    TOPIC_E_CHARSET = -3,  /* a character outside the allowed set */
    TOPIC_E_WILDCARD = -4, /* a wildcard in a topic name, or misplaced in a filter */
};

/* "topic longer than 128 characters" style text needs the limit: this gives the
 * fixed part, e.g. "character outside the allowed set". */
const char *topic_strerror(int err);

/*
 * Describe a failed check for the log: "201 characters, longer than
 * max-topic-length 128" for TOPIC_E_TOO_LONG (given the topic's `len` and the
 * limit), topic_strerror(err) otherwise. Writes a NUL-terminated line to `out`.
 */
void topic_describe(int err, size_t len, size_t max_len, char *out, size_t size);

/*
 * Check a topic name (PUBLISH) of `len` bytes: not empty, at most `max_len`
 * bytes, only characters of `charset`, no `+`, `#` or `*`.
 * Returns TOPIC_OK or a negative enum topic_err.
 */
int topic_check_name(const char *topic, size_t len, size_t max_len, enum topic_charset charset);

/*
 * Check a topic filter (SUBSCRIBE): as topic_check_name(), but `+` and `*`
 * must fill a whole level and `#` must be a whole level and the last one.
 */
int topic_check_filter(const char *filter, size_t len, size_t max_len, enum topic_charset charset);

/* The character set that an instance's limits `l` allow (utf8-topics). */
static inline enum topic_charset topic_charset_of(const struct limits *l)
{
    return l->utf8_topics ? TOPIC_CHARSET_UTF8 : TOPIC_CHARSET_SAFE;
}

/*
 * Normalise a checked topic or filter: drop one leading '/', and turn every
 * level that is exactly "*" into "+". Writes a NUL-terminated result to `out`,
 * which must hold len + 1 bytes. Sets *had_slash when a '/' was dropped.
 * Returns the length of the result.
 */
size_t topic_normalize(const char *in, size_t len, char *out, bool *had_slash);

/*
 * True when the normalised `filter` matches the normalised topic name `topic`,
 * with the rules of topic_tree_match() (`a/#` matches `a`), and the `$` rule
 * unless `dollar_too` (a deny list: "#" denies `$` topics as well).
 */
bool topic_filter_matches(const char *filter, const char *topic, bool dollar_too);

/*
 * True when every topic that normalised filter `inner` matches is also
 * matched by normalised filter `outer`: "a/+/c" covers "a/b/c" and
 * "a/+/c" itself, "a/#" covers "a/b/#" and "a", "+" does not cover "#".
 * With `dollar_too`, a leading wildcard of `outer` covers `$` levels too.
 */
bool topic_filter_covers(const char *outer, const char *inner, bool dollar_too);

/*
 * The system topics of every instance (systopic.h): the broker publishes
 * $events and $info, and reads what a client publishes to $action. Their
 * first level starts with '$', so no filter starting with a wildcard
 * matches them.
 */
#define TOPIC_SYS_EVENTS "$events"
#define TOPIC_SYS_INFO "$info"
#define TOPIC_SYS_ACTION "$action"

/*
 * Is the normalised topic name `topic` one that no client may publish to:
 * $events, $info or a topic below one of them, or a topic below $action
 * ($action itself is the broker's to read, not to route)?
 */
bool topic_is_reserved(const char *topic);

/* One subscription as the tree stores it. */
struct topic_sub {
    void *owner;        /* the subscriber (a session, or a share group when `shared`);
                           never dereferenced by the tree */
    uint8_t options;    /* SUBSCRIBE options byte: QoS in bits 0-1, MQTT 5 flags above */
    bool leading_slash; /* the filter as subscribed had a leading '/' */
    bool shared;        /* owner is a struct share_group */
    uint32_t sub_id;    /* MQTT 5 subscription identifier, 0 for none */
};

struct account;
struct topic_tree;

/* A new empty tree, or NULL when out of memory. The caller owns it. */
struct topic_tree *topic_tree_new(void);

/*
 * Charge the tree's own memory (nodes, child tables, subscription arrays;
 * not the retained messages, which are the caller's) to `a` from now on,
 * what it holds already included. The caller keeps `a` alive until
 * topic_tree_free(), which releases everything charged.
 */
void topic_tree_set_account(struct topic_tree *t, struct account *a);

/* The bytes the tree holds for itself now (what it charges to its account). */
size_t topic_tree_bytes(const struct topic_tree *t);

/*
 * Free the tree. `release` (may be NULL) is called once for every retained
 * message still in it. Subscriptions' owners are not touched.
 */
void topic_tree_free(struct topic_tree *t, void (*release)(void *msg));

/*
 * Add or replace the subscription of `sub->owner` to the normalised `filter`.
 * Returns 1 when it is new, 0 when it replaced that owner's existing
 * subscription to the same filter (options updated), -ENOMEM.
 */
int topic_tree_subscribe(struct topic_tree *t, const char *filter, const struct topic_sub *sub);

/*
 * Remove the subscription of `owner` to the normalised `filter`.
 * Returns 0, or -ENOENT when there was none. Empty nodes are pruned.
 */
int topic_tree_unsubscribe(struct topic_tree *t, const char *filter, const void *owner);

typedef void (*topic_match_fn)(void *ctx, const struct topic_sub *sub);

/*
 * Call `fn` once for every subscription whose filter matches the normalised
 * topic name `topic`, applying the `$` rule: a filter whose first level is
 * `+` or `#` does not match a topic whose first level starts with '$'.
 * `a/#` matches `a`. The same owner may be reported once per matching filter;
 * deduplication is the caller's. `fn` must not change the tree.
 */
void topic_tree_match(const struct topic_tree *t, const char *topic, topic_match_fn fn, void *ctx);

/*
 * Set the retained message of the normalised topic name `topic` to `msg`
 * (NULL clears it). Returns the message it replaces (NULL if none), which the
 * caller releases. When setting fails for lack of memory, returns `msg`
 * itself, so the caller can tell (and keeps ownership); *ok is set to false.
 */
void *topic_tree_retain(struct topic_tree *t, const char *topic, void *msg, bool *ok);

/* The retained message of the normalised topic name `topic`, or NULL. */
void *topic_tree_retained_get(const struct topic_tree *t, const char *topic);

typedef void (*topic_retained_fn)(void *ctx, const char *topic, void *msg);

/*
 * Call `fn` for every retained message whose topic matches the normalised
 * `filter` (with the `$` rule), passing the normalised topic name.
 * `fn` must not change the tree.
 */
void topic_tree_retained_match(const struct topic_tree *t, const char *filter, topic_retained_fn fn,
                               void *ctx);

/* Number of retained messages in the tree. */
size_t topic_tree_retained_count(const struct topic_tree *t);

/* Number of subscriptions in the tree. */
size_t topic_tree_sub_count(const struct topic_tree *t);

/*
 * Number of nodes besides the root: one per distinct level prefix of a filter
 * or retained topic. Emptied nodes are pruned, so a tree with no subscriptions
 * and no retained messages has 0. For tests and memory statistics.
 */
size_t topic_tree_node_count(const struct topic_tree *t);

/*
 * For tests only: after `n` more allocations the tree's own allocations fail,
 * until called again; a negative `n` (the default) never fails. Lets the
 * out-of-memory paths of subscribe and retain be exercised one by one.
 * topic_tree_retained_match() takes no allocation from the count but fails
 * its (rare, heap-grown) name buffer while the count is 0.
 */
void topic_tree_fail_allocs_after(struct topic_tree *t, long n);

/*
 * topic_normalize() for a topic or filter from the wire, already checked
 * (topic_check_name/topic_check_filter): the NUL-terminated result goes to
 * `sc` (its small array when it fits, else the heap, which the caller's
 * scratch_free() releases). Returns it, or NULL when out of memory.
 * Sets *leading_slash.
 */
static inline char *topic_normalize_wire(const struct mqtt_buf *in, struct scratch *sc,
                                         bool *leading_slash)
{
    char *out = scratch_get(sc, in->len + 1);
    if (out)
        topic_normalize((const char *)in->data, in->len, out, leading_slash);
    return out;
}

#endif
