#include "tenancy/access.h"

#include "broker/topic.h"
#include "tenancy/catalog.h"

/*
 * Allow lists follow MQTT's matching ("#" does not reach `$` topics); deny
 * lists do not make that exception, so "--deny-pub #" denies everything.
 */
static bool any_matches(const struct catalog_filters *f, const char *topic, bool deny)
{
    for (size_t i = 0; i < f->count; i++)
        if (topic_filter_matches(f->items[i], topic, deny))
            return true;
    return false;
}

static bool any_covers(const struct catalog_filters *f, const char *filter, bool deny)
{
    for (size_t i = 0; i < f->count; i++)
        if (topic_filter_covers(f->items[i], filter, deny))
            return true;
    return false;
}

/* A topic is allowed when `allow` is empty or matches it, and `deny` does not. */
static bool topic_allowed(const struct catalog_filters *allow, const struct catalog_filters *deny,
                          const char *topic)
{
    if (allow->count && !any_matches(allow, topic, false))
        return false;
    return !any_matches(deny, topic, true);
}

bool access_may_publish(const struct catalog_token *t, const char *topic)
{
    return !t || topic_allowed(&t->pub, &t->deny_pub, topic);
}

enum access_verdict access_subscribe_verdict(const struct catalog_token *t, const char *filter)
{
    if (!t)
        return ACCESS_ALLOWED;
    if (t->sub.count && !any_covers(&t->sub, filter, false))
        return ACCESS_OUTSIDE;
    return any_covers(&t->deny_sub, filter, true) ? ACCESS_DENIED : ACCESS_ALLOWED;
}

bool access_may_subscribe(const struct catalog_token *t, const char *filter)
{
    return access_subscribe_verdict(t, filter) == ACCESS_ALLOWED;
}

bool access_may_read(const struct catalog_token *t, const char *topic)
{
    return !t || topic_allowed(&t->sub, &t->deny_sub, topic);
}

bool access_may_act(const struct catalog_token *t)
{
    return !t || (t->allow_action && access_may_publish(t, TOPIC_SYS_ACTION));
}
