#include "broker/access.h"

#include "broker/topic.h"
#include "store/catalog.h"

static bool any_matches(const struct catalog_filters *f, const char *topic)
{
    for (size_t i = 0; i < f->count; i++)
        if (topic_filter_matches(f->items[i], topic))
            return true;
    return false;
}

static bool any_covers(const struct catalog_filters *f, const char *filter)
{
    for (size_t i = 0; i < f->count; i++)
        if (topic_filter_covers(f->items[i], filter))
            return true;
    return false;
}

bool access_may_publish(const struct catalog_token *t, const char *topic)
{
    if (!t)
        return true;
    if (t->pub.count && !any_matches(&t->pub, topic))
        return false;
    return !any_matches(&t->deny_pub, topic);
}

bool access_may_subscribe(const struct catalog_token *t, const char *filter)
{
    if (!t)
        return true;
    if (t->sub.count && !any_covers(&t->sub, filter))
        return false;
    return !any_covers(&t->deny_sub, filter);
}

bool access_may_read(const struct catalog_token *t, const char *topic)
{
    if (!t)
        return true;
    if (t->sub.count && !any_matches(&t->sub, topic))
        return false;
    return !any_matches(&t->deny_sub, topic);
}
