#include "broker/inject.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker/core.h"
#include "broker/durable.h"
#include "broker/instance.h"
#include "broker/login.h"
#include "broker/message.h"
#include "broker/route.h"
#include "broker/systopic.h"
#include "broker/topic.h"
#include "tenancy/access.h"
#include "tenancy/catalog.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/scratch.h"

enum inject_login inject_login(struct broker *b, const char *name, const char *secret,
                               size_t secret_len, bool over_tls, struct instance **inst,
                               const struct catalog_token **token, char *why, size_t whylen)
{
    *token = NULL;
    if (!b->cloud) {
        *inst = b->local;
        return INJECT_LOGIN_OK;
    }
    const struct catalog_instance *ci = catalog_instance(b->catalog, name);
    const struct catalog_token *t =
        ci ? catalog_token_by_secret(b->catalog, secret, secret_len) : NULL;
    if (!ci || !t || strcmp(t->instance, name) != 0) {
        snprintf(why, whylen, "%s",
                 !ci  ? "no such instance"
                 : !t ? "the password is no live token of the instance (unknown or revoked)"
                      : "the password is a token of another instance");
        return INJECT_LOGIN_REFUSED;
    }
    if (t->expires && t->expires <= time(NULL)) {
        snprintf(why, whylen, "token %s has expired", t->id);
        return INJECT_LOGIN_EXPIRED;
    }
    if (!t->expires && !over_tls && !b->allow_keys_without_tls) {
        snprintf(why, whylen, "token %s is a key (no expiry) and keys need https", t->id);
        return INJECT_LOGIN_NEEDS_TLS;
    }
    if (t->client_id) {
        snprintf(why, whylen, "token %s is bound to client id '%s' (MQTT only)", t->id,
                 t->client_id);
        return INJECT_LOGIN_BOUND;
    }
    if (!(*inst = login_instance(b, name))) {
        snprintf(why, whylen, "out of memory creating the instance");
        return INJECT_LOGIN_NO_MEMORY;
    }
    *token = t;
    return INJECT_LOGIN_OK;
}

/* Limits met before the message is made. */
static enum inject_status inject_admit(struct instance *inst, size_t len, struct inject_result *res)
{
    const struct limits *l = &inst->limits;

    if (len > l->max_payload) {
        snprintf(res->why, sizeof(res->why), "payload of %zu bytes exceeds max-payload %zu", len,
                 l->max_payload);
        systopic_refused(inst, NULL, "publish", "max-payload", NULL, res->why);
        return INJECT_TOO_LARGE;
    }
    if (instance_over_bytes(inst)) {
        snprintf(res->why, sizeof(res->why),
                 "quota exceeded: instance holds %zu bytes (max-instance-bytes %zu)",
                 inst->account->bytes, l->max_instance_bytes);
        instance_note_refusal(inst, INSTANCE_REFUSED_BYTES,
                              "HTTP publish refused (max-instance-bytes %zu)",
                              l->max_instance_bytes);
        systopic_refused(inst, NULL, "publish", "max-instance-bytes", NULL, res->why);
        return INJECT_OVER_BYTES;
    }
    /* The database writer is behind: MQTT publishers of the instance wait unread too. */
    struct durable *d = inst->broker->durable;
    if (d && durable_over(d, inst->kept_backlog)) {
        res->retry_after = 1;
        snprintf(res->why, sizeof(res->why),
                 "the database writer is behind; try again in a moment");
        return INJECT_BUSY;
    }
    /* HTTP publishers of an instance share one connection's bucket, and the instance's. */
    double wait = instance_rate_take(inst, &inst->http_rate);
    if (wait > 0) {
        res->retry_after = wait;
        snprintf(res->why, sizeof(res->why),
                 "over the message rate (max-messages-per-second %zu for the instance's HTTP "
                 "publishers together, max-instance-messages-per-second %zu)",
                 l->max_messages_per_second, l->max_instance_messages_per_second);
        systopic_refused(inst, NULL, "publish", "max-instance-messages-per-second", NULL, res->why);
        return INJECT_RATE;
    }
    return INJECT_OK;
}

enum inject_status inject_publish(struct instance *inst, const struct catalog_token *token,
                                  const char *topic, const void *payload, size_t len, uint8_t qos,
                                  bool retain, struct inject_result *res)
{
    size_t topic_len = strlen(topic);
    char small[256];
    struct scratch sc = SCRATCH_INIT(small);
    enum inject_status st = INJECT_OK;
    bool slash;

    *res = (struct inject_result){0};
    int rc = topic_check_name(topic, topic_len, inst->limits.max_topic_length,
                              topic_charset_of(&inst->limits));
    if (rc < 0) {
        topic_describe(rc, topic_len, inst->limits.max_topic_length, res->why, sizeof(res->why));
        return INJECT_BAD_TOPIC;
    }
    char *name = scratch_get(&sc, topic_len + 1);
    if (!name)
        return INJECT_NO_MEMORY;
    topic_normalize(topic, topic_len, name, &slash);
    /* $action acts for an MQTT client; over HTTP it is a system topic like the others. */
    bool system = topic_is_reserved(name) || strcmp(name, TOPIC_SYS_ACTION) == 0;
    if (system || !access_may_publish(token, name)) {
        snprintf(res->why, sizeof(res->why), "%s",
                 system ? "only the broker publishes to the system topics"
                        : "not authorized to publish to this topic");
        systopic_refused(inst, NULL, "publish", system ? "system topic" : "token", name, res->why);
        st = INJECT_DENIED;
    } else if ((st = inject_admit(inst, len, res)) == INJECT_OK) {
        struct message *m = message_new(name, strlen(name), payload, len, qos, retain, NULL);
        if (!m) {
            st = INJECT_NO_MEMORY;
        } else {
            message_charge(m, inst->account);
            if (retain && route_retained_full(inst, m)) {
                snprintf(res->why, sizeof(res->why),
                         "quota exceeded: the retained store is full "
                         "(max-retained or max-memory)");
                st = INJECT_RETAINED_FULL;
            } else {
                res->delivered = route_publish(inst, m, NULL);
                systopic_published(inst, NULL, name, len, qos, retain);
            }
            message_unref(m);
        }
    }
    scratch_free(&sc);
    return st;
}

struct retained_read {
    const struct catalog_token *token;
    uint64_t now;
    size_t max, count;
    inject_retained_fn fn;
    void *ctx;
};

static void inject_one_retained(void *arg, const char *topic, void *msg)
{
    struct retained_read *r = arg;
    const struct message *m = msg;

    if (r->count >= r->max || message_expired(m, r->now) || !access_may_read(r->token, topic))
        return;
    r->count++;
    r->fn(r->ctx, m);
}

long inject_retained(struct instance *inst, const struct catalog_token *token, const char *filter,
                     size_t max, inject_retained_fn fn, void *ctx)
{
    size_t len = strlen(filter);
    char small[256];
    struct scratch sc = SCRATCH_INIT(small);
    bool slash;

    if (topic_check_filter(filter, len, inst->limits.max_topic_length,
                           topic_charset_of(&inst->limits)) < 0)
        return INJECT_BAD_FILTER;
    char *norm = scratch_get(&sc, len + 1);
    if (!norm)
        return INJECT_BAD_FILTER;
    topic_normalize(filter, len, norm, &slash);
    if (!access_may_subscribe(token, norm)) {
        scratch_free(&sc);
        return INJECT_FILTER_DENIED;
    }
    struct retained_read r = {token, clock_ms(), max, 0, fn, ctx};
    topic_tree_retained_match(inst->tree, norm, inject_one_retained, &r);
    scratch_free(&sc);
    return (long)r.count;
}
