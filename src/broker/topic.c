/*
 * topic — aviary's topic rules (see topic.h) and the topic tree.
 *
 * The tree is a trie with one node per level. A node's ordinary children live
 * in an open-addressing table (util/probe.h: linear probing, power-of-two
 * size) so that a node with thousands of children (one per device, typically)
 * is still found in O(1); the `+` and `#` children of a filter have their own
 * pointers, since matching asks for them at every level. Level names are hashed with a keyed
 * SipHash-1-3 whose key is drawn per tree: topic names come from clients, and
 * an unkeyed hash would let one client pile all its topics into one probe
 * chain and stall the core thread that every instance shares.
 *
 * Recursion: matching loops along literal levels and recurses only into `+`
 * children; retained matching and nothing else recurses over a subtree. Both
 * are bounded by the number of levels of a stored topic, which is at most
 * max-topic-length + 1 (129 with the default limit), so the stack is never at
 * risk for any sane configuration. Freeing the tree uses no recursion at all.
 */
#include "broker/topic.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "util/account.h"
#include "util/probe.h"
#include "util/scratch.h"
#include "util/siphash.h"
#include "util/utf8.h"

/* ---------------------------------------------------------------- rules */

const char *topic_strerror(int err)
{
    switch (err) {
    case TOPIC_OK:
        return "no error";
    case TOPIC_E_EMPTY:
        return "empty topic (or only \"/\")";
    case TOPIC_E_TOO_LONG:
        return "topic longer than the limit";
    case TOPIC_E_CHARSET:
        return "character outside the allowed set";
    case TOPIC_E_WILDCARD:
        return "wildcard (+, # or *) in a topic name or misplaced in a filter";
    default:
        return "unknown topic error";
    }
}

void topic_describe(int err, size_t len, size_t max_len, char *out, size_t size)
{
    if (err == TOPIC_E_TOO_LONG)
        snprintf(out, size, "%zu characters, longer than max-topic-length %zu", len, max_len);
    else
        snprintf(out, size, "%s", topic_strerror(err));
}

/* The allowed characters but the wildcards; spelled out so no locale can widen the set. */
static bool topic_char_plain(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    switch (c) {
    case '.':
    case ',':
    case ':':
    case ';':
    case '-':
    case '_':
    case '$':
    case '/':
        return true;
    default:
        return false;
    }
}

/*
 * The length of the character at `p`, of the `n` bytes left, that is neither
 * a wildcard nor in topic_char_plain()'s set (which the loops below take
 * inline, so that ASCII topics cost what they did before utf8-topics), or 0
 * when `charset` does not allow it.
 */
static size_t topic_char_other(const unsigned char *p, size_t n, enum topic_charset charset)
{
    if (charset == TOPIC_CHARSET_SAFE || *p < 0x20 || *p == 0x7f)
        return 0;
    if (*p < 0x80)
        return 1;
    size_t len = utf8_length(p, n);
    /* U+0080..U+009F, the C1 controls, are 0xC2 0x80..0x9F. */
    if (len == 2 && p[0] == 0xc2 && p[1] < 0xa0)
        return 0;
    return len;
}

/* Length before content: an oversized string from the wire is refused unread. */
/*
 * A lone "/" counts as empty: dropping the insignificant leading slash leaves
 * nothing, and MQTT forbids sending a PUBLISH with an empty topic.
 */
static int topic_check_length(const char *t, size_t len, size_t max_len)
{
    if (len == 0 || (len == 1 && t[0] == '/'))
        return TOPIC_E_EMPTY;
    if (len > max_len)
        return TOPIC_E_TOO_LONG;
    return TOPIC_OK;
}

int topic_check_name(const char *topic, size_t len, size_t max_len, enum topic_charset charset)
{
    const unsigned char *t = (const unsigned char *)topic;
    int rc = topic_check_length(topic, len, max_len);
    if (rc != TOPIC_OK)
        return rc;
    for (size_t i = 0; i < len;) {
        if (topic_char_plain(t[i])) {
            i++;
            continue;
        }
        /* `*` is outside a name's character set, but "wildcard" tells the client why. */
        if (t[i] == '+' || t[i] == '#' || t[i] == '*')
            return TOPIC_E_WILDCARD;
        size_t n = topic_char_other(t + i, len - i, charset);
        if (n == 0)
            return TOPIC_E_CHARSET;
        i += n;
    }
    return TOPIC_OK;
}

int topic_check_filter(const char *filter, size_t len, size_t max_len, enum topic_charset charset)
{
    const unsigned char *f = (const unsigned char *)filter;
    int rc = topic_check_length(filter, len, max_len);
    if (rc != TOPIC_OK)
        return rc;
    for (size_t i = 0; i < len;) {
        if (topic_char_plain(f[i])) {
            i++;
            continue;
        }
        bool starts_level = i == 0 || f[i - 1] == '/';
        bool ends_level = i + 1 == len || f[i + 1] == '/';
        size_t n = 1;
        if (f[i] == '+' || f[i] == '*') {
            if (!starts_level || !ends_level)
                return TOPIC_E_WILDCARD;
        } else if (f[i] == '#') {
            if (!starts_level || i + 1 != len)
                return TOPIC_E_WILDCARD;
        } else if ((n = topic_char_other(f + i, len - i, charset)) == 0) {
            return TOPIC_E_CHARSET;
        }
        i += n;
    }
    return TOPIC_OK;
}

size_t topic_normalize(const char *in, size_t len, char *out, bool *had_slash)
{
    size_t start = len > 0 && in[0] == '/' ? 1 : 0;
    size_t n = 0;

    if (had_slash)
        *had_slash = start == 1;
    for (size_t i = start; i < len; i++) {
        char c = in[i];
        if (c == '*' && (i == start || in[i - 1] == '/') && (i + 1 == len || in[i + 1] == '/'))
            c = '+';
        out[n++] = c;
    }
    out[n] = '\0';
    return n;
}

/* ---------------------------------------------------------------- tree */

struct topic_node {
    struct topic_node *parent;
    struct topic_node *child_plus; /* the "+" level of a filter */
    struct topic_node *child_hash; /* the "#" level of a filter */
    struct topic_node **slots;     /* other children: open addressing, NULL = free */
    void *retained;
    /*
     * Most filters have one subscriber: it lives in the node (sub_bits 0),
     * and an array of their own holds two and more (node_subs).
     */
    union {
        struct topic_sub one;
        struct topic_sub *many;
    } subs;
    /*
     * Small fields: a node per topic level adds up. Counts in 32 bits, which
     * none comes near; a level is at most a topic's 65535 bytes; the tables'
     * sizes, powers of two, as their log2 + 1 (0: no table).
     */
    uint32_t hash; /* of `level`, kept for rehashing the parent's table */
    uint32_t child_count;
    uint32_t sub_count;
    uint16_t len;
    uint8_t child_bits; /* the child table's size (child_cap) */
    uint8_t sub_bits;   /* the subs array's size (sub_cap); 0: none, `one` */
    char level[];       /* NUL-terminated; may be empty */
};

/* The size a table's bits stand for, and the bits of a size (0 or a power of two). */
static inline size_t cap_of_bits(uint8_t bits)
{
    return bits ? (size_t)1 << (bits - 1) : 0;
}

static inline uint8_t bits_of_cap(size_t cap)
{
    return cap ? (uint8_t)(__builtin_ctzl(cap) + 1) : 0;
}

static inline size_t child_cap(const struct topic_node *n)
{
    return cap_of_bits(n->child_bits);
}

static inline size_t sub_cap(const struct topic_node *n)
{
    return cap_of_bits(n->sub_bits);
}

/* The node's sub_count subscribers, where they are. */
static inline struct topic_sub *node_subs(struct topic_node *n)
{
    return n->sub_bits ? n->subs.many : &n->subs.one;
}

struct topic_tree {
    struct topic_node *root; /* stands for "no level yet"; never pruned, never retains */
    struct siphash_key key;  /* keyed: clients choose the levels */
    size_t node_count;       /* nodes besides the root */
    size_t sub_count;
    size_t retained_count;
    size_t bytes;            /* allocated for the tree itself, charged to `account` */
    struct account *account; /* not owned; NULL: counted in `bytes` only */
    long fail_after;         /* test hook: allocations left before failing, < 0 = never */
};

#define CHILD_MIN_CAP 4

/* Every allocation that changes the tree goes through here, so tests can fail any one. */
static void *tree_alloc(struct topic_tree *t, void *old, size_t size)
{
    if (t->fail_after == 0)
        return NULL;
    if (t->fail_after > 0)
        t->fail_after--;
    return realloc(old, size);
}

/* The tree holds `n` bytes more (or, with tree_release, fewer). */
static void tree_charge(struct topic_tree *t, size_t n)
{
    t->bytes += n;
    account_charge(t->account, n);
}

static void tree_release(struct topic_tree *t, size_t n)
{
    t->bytes -= n;
    account_release(t->account, n);
}

static size_t node_size(size_t len)
{
    return offsetof(struct topic_node, level) + len + 1;
}

void topic_tree_set_account(struct topic_tree *t, struct account *a)
{
    account_release(t->account, t->bytes);
    t->account = a;
    account_charge(a, t->bytes);
}

size_t topic_tree_bytes(const struct topic_tree *t)
{
    return t->bytes;
}

void topic_tree_fail_allocs_after(struct topic_tree *t, long n)
{
    t->fail_after = n;
}

/* 32 bits of it: tables stay far below 2^32 slots. */
static uint32_t level_hash(const struct topic_tree *t, const char *s, size_t len)
{
    return (uint32_t)siphash13(&t->key, s, len);
}

static struct topic_node *node_new(struct topic_tree *t, struct topic_node *parent,
                                   const char *level, size_t len, uint32_t hash)
{
    /* Longer than a topic can be: not from a packet, and not what `len` holds. */
    struct topic_node *n = len <= UINT16_MAX ? tree_alloc(t, NULL, node_size(len)) : NULL;
    if (!n)
        return NULL;
    tree_charge(t, node_size(len));
    memset(n, 0, offsetof(struct topic_node, level));
    n->parent = parent;
    n->hash = hash;
    n->len = (uint16_t)len;
    memcpy(n->level, level, len);
    n->level[len] = '\0';
    return n;
}

static bool node_is_empty(const struct topic_node *n)
{
    return n->sub_count == 0 && !n->retained && n->child_count == 0 && !n->child_plus &&
           !n->child_hash;
}

/* A level a lookup compares the children with: its hash first, to skip most memcmp(). */
struct level_key {
    const char *level;
    size_t len;
    uint32_t hash;
};

/* The callbacks of util/probe.h for a child table (an array of node pointers). */
static bool slot_empty(const void *slots, size_t i)
{
    return !((struct topic_node *const *)slots)[i];
}

static size_t slot_hash(const void *slots, size_t i)
{
    return (size_t)((struct topic_node *const *)slots)[i]->hash;
}

static bool slot_match(const void *slots, size_t i, const void *key)
{
    const struct topic_node *c = ((struct topic_node *const *)slots)[i];
    const struct level_key *k = key;
    return c->hash == k->hash && c->len == k->len && memcmp(c->level, k->level, k->len) == 0;
}

static void slot_move(void *slots, size_t to, size_t from)
{
    struct topic_node **s = slots;
    s[to] = s[from];
    s[from] = NULL;
}

static struct topic_node *node_find_child(const struct topic_tree *t, const struct topic_node *n,
                                          const char *level, size_t len)
{
    /* Most nodes have no table at all: leave before hashing. */
    size_t cap = child_cap(n);
    if (cap == 0)
        return NULL;
    struct level_key k = {level, len, level_hash(t, level, len)};
    size_t i = probe_find(n->slots, cap, k.hash, slot_empty, slot_match, &k);
    return i == PROBE_NONE ? NULL : n->slots[i];
}

static void slots_put(struct topic_node **slots, size_t cap, struct topic_node *c)
{
    slots[probe_free_slot(slots, cap, c->hash, slot_empty)] = c;
}

/* Move the children into a table of `cap` slots; the old table stays on failure. */
static int node_rehash(struct topic_tree *t, struct topic_node *n, size_t cap)
{
    struct topic_node **slots = tree_alloc(t, NULL, cap * sizeof(*slots));
    if (!slots)
        return -ENOMEM;
    memset(slots, 0, cap * sizeof(*slots));
    for (size_t i = 0; i < child_cap(n); i++)
        if (n->slots[i])
            slots_put(slots, cap, n->slots[i]);
    free(n->slots);
    tree_release(t, child_cap(n) * sizeof(*slots));
    tree_charge(t, cap * sizeof(*slots));
    n->slots = slots;
    n->child_bits = bits_of_cap(cap);
    return 0;
}

static struct topic_node *node_add_child(struct topic_tree *t, struct topic_node *n,
                                         const char *level, size_t len)
{
    if (probe_must_grow(n->child_count, child_cap(n))) {
        size_t cap = child_cap(n) ? child_cap(n) * 2 : CHILD_MIN_CAP;
        if (node_rehash(t, n, cap) < 0)
            return NULL;
    }
    struct topic_node *c = node_new(t, n, level, len, level_hash(t, level, len));
    if (!c)
        return NULL;
    slots_put(n->slots, child_cap(n), c);
    n->child_count++;
    t->node_count++;
    return c;
}

/* Take `c` out of its parent's table (backward shift: see util/probe.h). */
static void node_remove_child(struct topic_tree *t, struct topic_node *n, struct topic_node *c)
{
    /* Found by identity: the node is at hand, so no level is compared. */
    size_t cap = child_cap(n);
    size_t hole = probe_home(c->hash, cap);
    while (n->slots[hole] != c)
        hole = probe_next(hole, cap);
    n->slots[hole] = NULL;
    probe_delete(n->slots, cap, hole, slot_empty, slot_hash, slot_move);
    n->child_count--;
    if (n->child_count == 0) {
        tree_release(t, cap * sizeof(*n->slots));
        free(n->slots);
        n->slots = NULL;
        n->child_bits = 0;
    } else if (cap > CHILD_MIN_CAP && (size_t)n->child_count * 8 <= cap) {
        /* Give back a table emptied by a mass unsubscribe; failing to is harmless. */
        (void)node_rehash(t, n, cap / 4);
    }
}

static void node_free(struct topic_node *n)
{
    free(n->slots);
    if (n->sub_bits)
        free(n->subs.many);
    free(n);
}

/* Free `n` and each ancestor left with nothing in it, stopping at the root. */
static void tree_prune(struct topic_tree *t, struct topic_node *n)
{
    while (n != t->root && node_is_empty(n)) {
        struct topic_node *parent = n->parent;
        if (parent->child_plus == n)
            parent->child_plus = NULL;
        else if (parent->child_hash == n)
            parent->child_hash = NULL;
        else
            node_remove_child(t, parent, n);
        tree_release(t, node_size(n->len)); /* an empty node has no table and no subs */
        node_free(n);
        t->node_count--;
        n = parent;
    }
}

static const char *level_end(const char *p)
{
    while (*p && *p != '/')
        p++;
    return p;
}

/*
 * The node of a normalised topic or filter, created when `create` is set.
 * Returns NULL when it does not exist, or when creating it ran out of memory
 * (then no node created on the way is left behind).
 */
static struct topic_node *tree_find(struct topic_tree *t, const char *topic, bool create)
{
    struct topic_node *n = t->root;
    const char *p = topic;

    for (;;) {
        const char *e = level_end(p);
        size_t len = (size_t)(e - p);
        struct topic_node **special = NULL;
        if (len == 1 && *p == '+')
            special = &n->child_plus;
        else if (len == 1 && *p == '#')
            special = &n->child_hash;

        struct topic_node *c = special ? *special : node_find_child(t, n, p, len);
        if (!c && create) {
            if (special) {
                c = node_new(t, n, p, len, 0);
                if (c) {
                    *special = c;
                    t->node_count++;
                }
            } else {
                c = node_add_child(t, n, p, len);
            }
            if (!c) {
                tree_prune(t, n);
                return NULL;
            }
        }
        if (!c)
            return NULL;
        n = c;
        if (*e == '\0')
            return n;
        p = e + 1;
    }
}

struct topic_tree *topic_tree_new(void)
{
    struct topic_tree *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->fail_after = -1;
    t->bytes = sizeof(*t);
    siphash_key_random(&t->key);
    t->root = node_new(t, NULL, "", 0, 0);
    if (!t->root) {
        free(t);
        return NULL;
    }
    return t;
}

/*
 * Take one child away from `n` for destruction. The table is never probed
 * again, so child_count serves as a cursor that only moves down, from the
 * table's size (topic_tree_free sets it on the way in): every slot is looked
 * at once, whatever the number of children.
 */
static struct topic_node *node_take_child(struct topic_node *n)
{
    struct topic_node *c;
    if ((c = n->child_plus)) {
        n->child_plus = NULL;
        return c;
    }
    if ((c = n->child_hash)) {
        n->child_hash = NULL;
        return c;
    }
    while (n->child_count > 0) {
        c = n->slots[--n->child_count];
        if (c)
            return c;
    }
    return NULL;
}

void topic_tree_free(struct topic_tree *t, void (*release)(void *msg))
{
    if (!t)
        return;
    struct topic_node *n = t->root;
    n->child_count = (uint32_t)child_cap(n);
    while (n) {
        struct topic_node *c = node_take_child(n);
        if (c) {
            n = c;
            n->child_count = (uint32_t)child_cap(n);
            continue;
        }
        struct topic_node *parent = n->parent;
        if (n->retained && release)
            release(n->retained);
        node_free(n);
        n = parent;
    }
    tree_release(t, t->bytes);
    free(t);
}

int topic_tree_subscribe(struct topic_tree *t, const char *filter, const struct topic_sub *sub)
{
    struct topic_node *n = tree_find(t, filter, true);
    if (!n)
        return -ENOMEM;
    struct topic_sub *subs = node_subs(n);
    for (size_t i = 0; i < n->sub_count; i++) {
        if (subs[i].owner == sub->owner) {
            subs[i] = *sub;
            return 0;
        }
    }
    /* The one in the node moves to an array of two, which then doubles. */
    if (n->sub_count >= 1 && n->sub_count >= sub_cap(n)) {
        size_t cap = n->sub_count * 2;
        struct topic_sub *grown =
            tree_alloc(t, n->sub_bits ? n->subs.many : NULL, cap * sizeof(*grown));
        if (!grown)
            return -ENOMEM; /* the node has a subscriber: nothing to prune */
        if (!n->sub_bits)
            grown[0] = n->subs.one;
        tree_charge(t, (cap - sub_cap(n)) * sizeof(*grown));
        n->subs.many = grown;
        n->sub_bits = bits_of_cap(cap);
        subs = grown;
    }
    subs[n->sub_count++] = *sub;
    t->sub_count++;
    return 1;
}

int topic_tree_unsubscribe(struct topic_tree *t, const char *filter, const void *owner)
{
    struct topic_node *n = tree_find(t, filter, false);
    if (!n)
        return -ENOENT;
    struct topic_sub *subs = node_subs(n);
    for (size_t i = 0; i < n->sub_count; i++) {
        if (subs[i].owner != owner)
            continue;
        /* Order among subscribers carries no meaning, so the last one fills the gap. */
        subs[i] = subs[--n->sub_count];
        t->sub_count--;
        if (n->sub_bits && n->sub_count == 1) {
            /* Back into the node: the array goes. */
            struct topic_sub last = subs[0];
            tree_release(t, sub_cap(n) * sizeof(*subs));
            free(subs);
            n->subs.one = last;
            n->sub_bits = 0;
        }
        tree_prune(t, n);
        return 0;
    }
    return -ENOENT;
}

static void node_report_subs(const struct topic_node *n, topic_match_fn fn, void *ctx)
{
    const struct topic_sub *subs = n->sub_bits ? n->subs.many : &n->subs.one;
    for (size_t i = 0; i < n->sub_count; i++)
        fn(ctx, &subs[i]);
}

/*
 * Report the subscriptions below `n` that match the rest of the topic, `p`
 * (the start of a level, or NULL once every level is used). Literal levels are
 * followed in the loop; only a `+` child costs a recursion.
 */
static void tree_match_from(const struct topic_tree *t, const struct topic_node *n, const char *p,
                            topic_match_fn fn, void *ctx)
{
    while (n) {
        if (!p) {
            node_report_subs(n, fn, ctx);
            if (n->child_hash) /* "a/#" matches "a" */
                node_report_subs(n->child_hash, fn, ctx);
            return;
        }
        const char *e = level_end(p);
        const char *next = *e ? e + 1 : NULL;
        /* MQTT-4.7.2-1: a wildcard first level never matches a `$` topic. */
        bool dollar = n == t->root && *p == '$';
        if (!dollar) {
            if (n->child_hash)
                node_report_subs(n->child_hash, fn, ctx);
            if (n->child_plus)
                tree_match_from(t, n->child_plus, next, fn, ctx);
        }
        n = node_find_child(t, n, p, (size_t)(e - p));
        p = next;
    }
}

/* Length of the level starting at `p` (up to '/' or the end). */
static size_t level_len(const char *p)
{
    return (size_t)(level_end(p) - p);
}

static bool level_is(const char *p, char wildcard)
{
    return p[0] == wildcard && (p[1] == '/' || p[1] == '\0');
}

/* The level after the one at `p`, or NULL when it was the last. */
static const char *level_next(const char *p)
{
    const char *e = level_end(p);
    return *e ? e + 1 : NULL;
}

/* Is `topic` the system topic `name` or below it? */
static bool topic_at_or_below(const char *topic, const char *name)
{
    size_t n = strlen(name);
    return strncmp(topic, name, n) == 0 && (topic[n] == '\0' || topic[n] == '/');
}

bool topic_is_reserved(const char *topic)
{
    if (topic[0] != '$')
        return false;
    if (topic_at_or_below(topic, TOPIC_SYS_EVENTS) || topic_at_or_below(topic, TOPIC_SYS_INFO))
        return true;
    return topic_at_or_below(topic, TOPIC_SYS_ACTION) && strcmp(topic, TOPIC_SYS_ACTION) != 0;
}

bool topic_filter_matches(const char *filter, const char *topic, bool dollar_too)
{
    const char *f = filter, *t = topic;

    if (!dollar_too && *t == '$' && (level_is(f, '+') || level_is(f, '#')))
        return false;
    while (f) {
        if (level_is(f, '#'))
            return true; /* also when the topic has ended: "a/#" matches "a" */
        if (!t)
            return false;
        if (!level_is(f, '+') && (level_len(f) != level_len(t) || memcmp(f, t, level_len(f)) != 0))
            return false;
        f = level_next(f);
        t = level_next(t);
    }
    return t == NULL;
}

bool topic_filter_covers(const char *outer, const char *inner, bool dollar_too)
{
    const char *o = outer, *i = inner;

    /* "+/x" does not cover "$SYS/x", and neither can any filter starting with a wildcard. */
    if (!dollar_too && *i == '$' && (level_is(o, '+') || level_is(o, '#')))
        return false;
    while (o) {
        if (level_is(o, '#'))
            return true;
        if (!i || level_is(i, '#'))
            return false;
        if (level_is(o, '+')) {
            /* "+" covers any one level, wildcard or not. */
        } else if (level_is(i, '+') || level_len(o) != level_len(i) ||
                   memcmp(o, i, level_len(o)) != 0) {
            return false;
        }
        o = level_next(o);
        i = level_next(i);
    }
    return i == NULL;
}

void topic_tree_match(const struct topic_tree *t, const char *topic, topic_match_fn fn, void *ctx)
{
    tree_match_from(t, t->root, topic, fn, ctx);
}

void *topic_tree_retain(struct topic_tree *t, const char *topic, void *msg, bool *ok)
{
    if (ok)
        *ok = true;
    if (!msg) {
        /* Clearing allocates nothing: a topic that was never retained stays absent. */
        struct topic_node *n = tree_find(t, topic, false);
        if (!n || !n->retained)
            return NULL;
        void *old = n->retained;
        n->retained = NULL;
        t->retained_count--;
        tree_prune(t, n);
        return old;
    }
    struct topic_node *n = tree_find(t, topic, true);
    if (!n) {
        if (ok)
            *ok = false;
        return msg;
    }
    void *old = n->retained;
    n->retained = msg;
    if (!old)
        t->retained_count++;
    return old;
}

void *topic_tree_retained_get(const struct topic_tree *t, const char *topic)
{
    struct topic_node *n = tree_find((struct topic_tree *)t, topic, false);
    return n ? n->retained : NULL;
}

/* The topic name of the node being visited, grown on the heap past the inline part. */
struct name_buf {
    char *p;
    size_t len;
    size_t cap;
    char inline_buf[256];
};

/*
 * Append `n`'s level. Returns false when memory ran out; the buffer is then
 * unchanged and the caller skips that subtree, since it cannot name it.
 */
static bool name_push(const struct topic_tree *t, struct name_buf *b, const struct topic_node *n)
{
    bool sep = n->parent != t->root;
    size_t need = b->len + (sep ? 1 : 0) + n->len + 1;
    if (need > b->cap) {
        size_t cap = b->cap * 2 > need ? b->cap * 2 : need;
        char *p = NULL;
        /* A tree failing every allocation (the test hook) fails this one too. */
        if (t->fail_after != 0)
            p = b->p == b->inline_buf ? malloc(cap) : realloc(b->p, cap);
        if (!p)
            return false;
        if (b->p == b->inline_buf)
            memcpy(p, b->inline_buf, b->len + 1);
        b->p = p;
        b->cap = cap;
    }
    if (sep)
        b->p[b->len++] = '/';
    memcpy(b->p + b->len, n->level, n->len);
    b->len += n->len;
    b->p[b->len] = '\0';
    return true;
}

static void name_pop(struct name_buf *b, size_t len)
{
    b->len = len;
    b->p[len] = '\0';
}

static void retained_report(const struct topic_node *n, struct name_buf *b, topic_retained_fn fn,
                            void *ctx)
{
    if (n->retained)
        fn(ctx, b->p, n->retained);
}

/* Retained messages live only on literal levels, so `+` and `#` children are not visited. */
static void retained_all(const struct topic_tree *t, const struct topic_node *n, struct name_buf *b,
                         topic_retained_fn fn, void *ctx)
{
    retained_report(n, b, fn, ctx);
    for (size_t i = 0; i < child_cap(n); i++) {
        const struct topic_node *c = n->slots[i];
        if (!c || (n == t->root && c->level[0] == '$'))
            continue;
        size_t len = b->len;
        if (!name_push(t, b, c))
            continue;
        retained_all(t, c, b, fn, ctx);
        name_pop(b, len);
    }
}

static void retained_match_from(const struct topic_tree *t, const struct topic_node *n,
                                const char *p, struct name_buf *b, topic_retained_fn fn, void *ctx)
{
    if (!p) {
        retained_report(n, b, fn, ctx);
        return;
    }
    const char *e = level_end(p);
    const char *next = *e ? e + 1 : NULL;
    size_t len = (size_t)(e - p);

    if (len == 1 && *p == '#') {
        retained_all(t, n, b, fn, ctx); /* includes `n` itself: "a/#" matches "a" */
        return;
    }
    if (len == 1 && *p == '+') {
        for (size_t i = 0; i < child_cap(n); i++) {
            const struct topic_node *c = n->slots[i];
            if (!c || (n == t->root && c->level[0] == '$'))
                continue;
            size_t saved = b->len;
            if (!name_push(t, b, c))
                continue;
            retained_match_from(t, c, next, b, fn, ctx);
            name_pop(b, saved);
        }
        return;
    }
    const struct topic_node *c = node_find_child(t, n, p, len);
    size_t saved = b->len;
    if (!c || !name_push(t, b, c))
        return;
    retained_match_from(t, c, next, b, fn, ctx);
    name_pop(b, saved);
}

void topic_tree_retained_match(const struct topic_tree *t, const char *filter, topic_retained_fn fn,
                               void *ctx)
{
    struct name_buf b;
    b.p = b.inline_buf;
    b.len = 0;
    b.cap = sizeof(b.inline_buf);
    b.inline_buf[0] = '\0';
    retained_match_from(t, t->root, filter, &b, fn, ctx);
    if (b.p != b.inline_buf)
        free(b.p);
}

size_t topic_tree_retained_count(const struct topic_tree *t)
{
    return t->retained_count;
}

size_t topic_tree_sub_count(const struct topic_tree *t)
{
    return t->sub_count;
}

size_t topic_tree_node_count(const struct topic_tree *t)
{
    return t->node_count;
}
