#include "broker/instance.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "broker/core.h"
#include "broker/message.h"
#include "broker/tap.h"
#include "broker/topic.h"
#include "broker/durable.h"
#include "util/account.h"
#include "util/clock.h"
#include "util/log.h"

/* At most one line per instance and reason this often about what its limits refused. */
#define INSTANCE_REFUSAL_LOG_INTERVAL_SEC 10

struct instance *instance_new(struct broker *b, const char *name, const struct limits *limits)
{
    struct instance *inst = calloc(1, sizeof(*inst));
    if (!inst)
        return NULL;
    inst->broker = b;
    inst->limits = *limits;
    inst->name = strdup(name);
    strmap_borrow_keys(&inst->sessions); /* each session's own client id */
    inst->tree = topic_tree_new();
    inst->account = account_new(b->held);
    inst->kept_backlog = durable_backlog_new();
    if (!inst->name || !inst->tree || !inst->account || !inst->kept_backlog) {
        durable_backlog_unref(inst->kept_backlog);
        free(inst->name);
        topic_tree_free(inst->tree, NULL);
        account_unref(inst->account);
        free(inst);
        return NULL;
    }
    topic_tree_set_account(inst->tree, inst->account);
    inst->sys.sample_ms = clock_ms(); /* $info's first rates count from here */
    if (b->cluster)
        b->cluster->instance_added(b->cluster, inst);
    return inst;
}

/* The system topics' events and the messages still waiting to be routed. */
static void instance_sys_free(struct instance_sys *sys)
{
    if (sys->flush_ev)
        event_free(sys->flush_ev);
    if (sys->dropped_ev)
        event_free(sys->dropped_ev);
    for (size_t i = 0; i < sys->pending_count; i++)
        message_unref(sys->pending[i]);
    free(sys->pending);
}

static void instance_release_retained(void *msg)
{
    message_unref(msg);
}

void instance_free(struct instance *inst)
{
    if (!inst)
        return;
    if (inst->broker->cluster)
        inst->broker->cluster->instance_removed(inst->broker->cluster, inst);
    tap_all_gone(&inst->taps);
    /* Its sessions went first (broker_drop_instance): they held its share groups. */
    instance_sys_free(&inst->sys);
    strmap_clear(&inst->sessions);
    strmap_clear(&inst->shares);
    topic_tree_free(inst->tree, instance_release_retained);
    /* Messages still in closing connections' output keep the account until they go. */
    account_unref(inst->account);
    durable_backlog_unref(inst->kept_backlog);
    free(inst->name);
    free(inst);
}

void instance_note_refusal(struct instance *inst, enum instance_refusal why, const char *fmt, ...)
{
    struct log_every *e = &inst->refused[why];
    char what[256];
    va_list ap;

    if (!log_every_due(e, time(NULL), INSTANCE_REFUSAL_LOG_INTERVAL_SEC))
        return;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    log_notice("instance %s: quota exceeded: %s (%llu so far; %zu bytes held)", inst->name, what,
               (unsigned long long)e->count, inst->account->bytes);
}

double instance_rate_wait(struct instance *inst, struct bucket *conn_rate)
{
    const struct limits *l = &inst->limits;
    struct timeval now;
    double wait;

    event_base_gettimeofday_cached(inst->broker->base, &now);
    /* A cluster's nodes share the instance's rate: each takes its part (at least 1). */
    size_t instance_rate = l->max_instance_messages_per_second;
    if (inst->rate_nodes > 1 && instance_rate)
        instance_rate = instance_rate / inst->rate_nodes ? instance_rate / inst->rate_nodes : 1;
    if (instance_rate && (wait = bucket_take(&inst->rate, instance_rate, &now)) > 0)
        return wait;
    if (conn_rate && l->max_messages_per_second &&
        (wait = bucket_take(conn_rate, l->max_messages_per_second, &now)) > 0) {
        /* The instance's token goes back: this message waits for the connection's. */
        if (l->max_instance_messages_per_second)
            inst->rate.tokens += 1.0;
        return wait;
    }
    return 0;
}

void instance_sub_counted(struct instance *inst, const char *filter, int delta)
{
    if (filter[0] != '$')
        return; /* the usual filter: no system topic can match it */
    if (topic_filter_matches(filter, TOPIC_SYS_EVENTS, false))
        inst->sys.events_watchers += (size_t)delta;
    if (topic_filter_matches(filter, TOPIC_SYS_INFO, false))
        inst->sys.info_watchers += (size_t)delta;
}

struct message *instance_retain(struct instance *inst, const char *topic, struct message *m,
                                bool *ok)
{
    struct message *old = topic_tree_retain(inst->tree, topic, m, ok);

    if (!*ok)
        return old;
    if (m)
        inst->retained_bytes += m->payload_len;
    if (old)
        inst->retained_bytes -= old->payload_len;
    return old;
}
