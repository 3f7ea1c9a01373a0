#include "broker/share.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "broker/instance.h"
#include "broker/topic.h"
#include "util/account.h"

#define SHARE_PREFIX "$share/"

bool share_parse(const char *filter, size_t len, const char **group, size_t *group_len,
                 const char **rest, size_t *rest_len, bool *valid)
{
    const size_t plen = strlen(SHARE_PREFIX);

    if (len < plen || memcmp(filter, SHARE_PREFIX, plen) != 0)
        return false;
    const char *g = filter + plen;
    const char *slash = memchr(g, '/', len - plen);
    *valid = false;
    if (!slash || slash == g || slash + 1 == filter + len)
        return true; /* no GROUP, or no FILTER after it */
    for (const char *p = g; p < slash; p++)
        if (*p == '+' || *p == '#' || *p == '*')
            return true;
    *group = g;
    *group_len = (size_t)(slash - g);
    *rest = slash + 1;
    *rest_len = (size_t)(filter + len - *rest);
    *valid = true;
    return true;
}

static struct share_member *share_find(struct share_group *g, const struct session *s)
{
    for (size_t i = 0; i < g->count; i++)
        if (g->members[i].session == s)
            return &g->members[i];
    return NULL;
}

/* What a group holds, charged to its instance: the group, its key and its member array. */
static size_t share_group_bytes(const struct share_group *g)
{
    return sizeof(*g) + strlen(g->key) + 1 + g->cap * sizeof(*g->members);
}

static void share_group_free(struct instance *inst, struct share_group *g)
{
    account_release(inst->account, share_group_bytes(g));
    free(g->members);
    free(g->key);
    free(g);
}

/* A new group for `key` with its subscription in the tree, or NULL. */
static struct share_group *share_group_new(struct instance *inst, const char *key, size_t group_len)
{
    struct share_group *g = calloc(1, sizeof(*g));
    if (!g || !(g->key = strdup(key))) {
        free(g);
        return NULL;
    }
    account_charge(inst->account, share_group_bytes(g));
    g->filter = g->key + group_len + 1;
    /* The group subscribes at QoS 2: each member's own QoS caps its deliveries. */
    struct topic_sub sub = {.owner = g, .options = 2, .shared = true};
    if (topic_tree_subscribe(inst->tree, g->filter, &sub) < 0) {
        share_group_free(inst, g);
        return NULL;
    }
    if (strmap_put(&inst->shares, key, g, NULL) < 0) {
        topic_tree_unsubscribe(inst->tree, g->filter, g);
        share_group_free(inst, g);
        return NULL;
    }
    return g;
}

int share_join(struct instance *inst, const char *key, size_t group_len,
               const struct share_member *m, struct share_group **out)
{
    struct share_group *g = strmap_get(&inst->shares, key);
    bool made = false;

    if (!g) {
        if (!(g = share_group_new(inst, key, group_len)))
            return -ENOMEM;
        made = true;
    }
    *out = g;
    struct share_member *old = share_find(g, m->session);
    if (old) {
        *old = *m;
        return 0;
    }
    if (g->count == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 2;
        struct share_member *members = realloc(g->members, cap * sizeof(*members));
        if (!members) {
            if (made)
                share_leave(inst, g, NULL);
            return -ENOMEM;
        }
        account_charge(inst->account, (cap - g->cap) * sizeof(*members));
        g->members = members;
        g->cap = cap;
    }
    g->members[g->count++] = *m;
    return 1;
}

int share_leave(struct instance *inst, struct share_group *g, struct session *s)
{
    struct share_member *m = s ? share_find(g, s) : NULL;

    if (s && !m)
        return -ENOENT;
    if (m)
        *m = g->members[--g->count];
    if (g->next >= g->count)
        g->next = 0;
    if (g->count == 0) {
        strmap_remove(&inst->shares, g->key);
        topic_tree_unsubscribe(inst->tree, g->filter, g);
        share_group_free(inst, g);
    }
    return 0;
}
