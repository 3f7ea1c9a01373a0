/* SUBSCRIBE and UNSUBSCRIBE (MQTT 3.1.1 §3.8-§3.11, MQTT 5 §3.8-§3.11), with aviary's rules. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/conn.h"
#include "broker/handlers.h"
#include "broker/instance.h"
#include "broker/propbuf.h"
#include "broker/route.h"
#include "broker/session.h"
#include "broker/share.h"
#include "broker/systopic.h"
#include "broker/timers.h"
#include "broker/topic.h"
#include "tenancy/access.h"
#include "tenancy/catalog.h"
#include "util/account.h"
#include "util/log.h"
#include "util/scratch.h"
#include "util/strmap.h"

/* A filter granted by one SUBSCRIBE: retained messages may follow the SUBACK for it. */
struct granted {
    char *filter;           /* normalised; owned; NULL when refused, shared, or repeated later */
    struct session_sub sub; /* its options, for the retained messages */
    bool send_retained;     /* as its Retain Handling says */
};

/* The filters one SUBSCRIBE refused, for the one line it logs however many there are. */
struct refusals {
    size_t count;
    size_t over_quota; /* refused for max-instance-bytes: the instance's line counts them */
    size_t out_of_memory;
    char first_filter[160];
    char first_why[128];  /* for the log */
    char first_told[128]; /* for the client's Reason String */
};

/*
 * Count a refusal of `filter` by `rule` (a limit, "token", "topic rules");
 * only the first is kept, and each is logged at debug level and told to
 * $events. The client is told `told`, the log says `why` (which may name
 * the token and the rule that refused it).
 */
static void refusal_note(struct conn *c, struct refusals *r, const struct mqtt_buf *filter,
                         const char *rule, const char *told, const char *why)
{
    struct session *s = c->session;
    char later[sizeof(r->first_filter)];
    bool first = r->count++ == 0;
    char *shown = first ? r->first_filter : later;

    if (!first && !log_enabled(LOG_LEVEL_DEBUG) && !systopic_events_watched(s->instance))
        return;
    log_escape(filter->data, filter->len, shown, sizeof(later));
    systopic_refused(s->instance, s->client_id, "subscribe", rule, shown, why);
    if (first) {
        snprintf(r->first_why, sizeof(r->first_why), "%s", why);
        snprintf(r->first_told, sizeof(r->first_told), "%s", told);
    }
    log_debug("client %s: SUBSCRIBE '%s' refused: %s", c->client_id, shown, why);
}

/* A refusal's code: MQTT 5's `reason`, or 0x80 for MQTT 3.1.1. */
static uint8_t refused(const struct conn *c, uint8_t reason)
{
    return c->out.version == MQTT_V5 ? reason : MQTT_SUBACK_FAILURE;
}

/* A topic filter as it arrived, split into its share group (if any) and the filter proper. */
struct filter_parts {
    bool shared;
    const char *group;
    size_t group_len;
    struct mqtt_buf filter;
};

/* Split `raw`; false when it names a share group that is malformed. */
static bool filter_split(const struct mqtt_buf *raw, struct filter_parts *out)
{
    const char *rest;
    size_t rest_len;
    bool valid;

    memset(out, 0, sizeof(*out));
    out->filter = *raw;
    if (!share_parse((const char *)raw->data, raw->len, &out->group, &out->group_len, &rest,
                     &rest_len, &valid))
        return true;
    if (!valid)
        return false;
    out->shared = true;
    out->filter = (struct mqtt_buf){(const uint8_t *)rest, rest_len};
    return true;
}

/*
 * aviary's topic rules for a filter as sent: its own part as any filter; a
 * share group's name as a topic level (the topic character set, no
 * wildcard), and the whole of "$share/GROUP/FILTER" within the topic length.
 * Returns 0, or -1 with the reason in `why`.
 */
static int filter_check(const struct mqtt_buf *raw, const struct filter_parts *fp,
                        const struct limits *l, char *why, size_t size)
{
    size_t max_len = l->max_topic_length;
    int rc = topic_check_filter((const char *)fp->filter.data, fp->filter.len, max_len,
                                topic_charset_of(l));
    if (rc < 0) {
        topic_describe(rc, fp->filter.len, max_len, why, size);
        return -1;
    }
    if (!fp->shared)
        return 0;
    if (raw->len > max_len) {
        topic_describe(TOPIC_E_TOO_LONG, raw->len, max_len, why, size);
        return -1;
    }
    if ((rc = topic_check_name(fp->group, fp->group_len, max_len, topic_charset_of(l))) < 0) {
        char what[96];
        topic_describe(rc, fp->group_len, max_len, what, sizeof(what));
        snprintf(why, size, "share group name: %s", what);
        return -1;
    }
    return 0;
}

/*
 * The key a subscription is recorded under in its session: the normalised
 * filter, or "$share/GROUP/" and the normalised filter. NULL when out of memory.
 */
static char *filter_key(const struct filter_parts *fp, bool *leading_slash)
{
    char small[256];
    struct scratch sc = SCRATCH_INIT(small);
    const char *norm = topic_normalize_wire(&fp->filter, &sc, leading_slash);
    char *key = NULL;

    if (norm && !fp->shared) {
        key = strdup(norm);
    } else if (norm) {
        size_t n = strlen("$share/") + fp->group_len + 1 + strlen(norm) + 1;
        if ((key = malloc(n)))
            snprintf(key, n, "$share/%.*s/%s", (int)fp->group_len, fp->group, norm);
    }
    scratch_free(&sc);
    return key;
}

/*
 * Enter `sub` (key in sub->filter) in the tree or its share group. Returns as
 * topic_tree_subscribe().
 */
static int subscribe_enter(struct session *s, struct session_sub *sub,
                           const struct filter_parts *fp)
{
    struct instance *inst = s->instance;

    if (!fp->shared) {
        struct topic_sub ts = {.owner = s,
                               .options = sub->options,
                               .leading_slash = sub->leading_slash,
                               .sub_id = sub->sub_id};
        return topic_tree_subscribe(inst->tree, sub->filter, &ts);
    }
    struct share_member m = {.session = s,
                             .options = sub->options,
                             .leading_slash = sub->leading_slash,
                             .sub_id = sub->sub_id};
    /* The instance's key is "GROUP/FILTER": the session's without "$share/". */
    return share_join(inst, sub->filter + strlen("$share/"), fp->group_len, &m, &sub->share);
}

static void subscribe_leave(struct session *s, const struct session_sub *sub)
{
    if (sub->share)
        share_leave(s->instance, sub->share, s);
    else
        topic_tree_unsubscribe(s->instance->tree, sub->filter, s);
}

/* Out of memory for one filter: counted, noted, and refused with 0x80. */
static uint8_t refusal_oom(struct conn *c, struct refusals *r, const struct mqtt_buf *filter)
{
    r->out_of_memory++;
    refusal_note(c, r, filter, "memory", "out of memory", "out of memory");
    return refused(c, MQTT_RC_UNSPECIFIED);
}

/*
 * aviary's rules for a filter as sent, split into *fp. Returns 0, or the
 * refusal code (noted in `r`); refusal codes are all 0x80 and above.
 */
static uint8_t filter_refusal(struct conn *c, const struct mqtt_buf *filter,
                              struct filter_parts *fp, struct refusals *r)
{
    char why[128];

    if (!filter_split(filter, fp)) {
        snprintf(why, sizeof(why),
                 "a shared subscription needs $share/GROUP/FILTER, GROUP "
                 "without wildcards");
        refusal_note(c, r, filter, "topic rules", why, why);
        return refused(c, MQTT_RC_TOPIC_FILTER_INVALID);
    }
    if (filter_check(filter, fp, &c->session->instance->limits, why, sizeof(why)) < 0) {
        refusal_note(c, r, filter, "topic rules", why, why);
        return refused(c, MQTT_RC_TOPIC_FILTER_INVALID);
    }
    return 0;
}

/*
 * Whether the token allows a subscription to the normalised `plain` filter:
 * 0, or the refusal code (noted in `r`). The client is told only "not
 * authorized": which rule of its token refused stays in the log.
 */
static uint8_t access_refusal(struct conn *c, const struct mqtt_buf *filter, const char *plain,
                              struct refusals *r)
{
    char why[128];

    switch (access_subscribe_verdict(c->token, plain)) {
    case ACCESS_ALLOWED:
        break;
    case ACCESS_OUTSIDE:
        snprintf(why, sizeof(why),
                 "not authorized: not allowed by token %s (outside its sub "
                 "filters)",
                 c->token->id);
        refusal_note(c, r, filter, "token", "not authorized", why);
        return refused(c, MQTT_RC_NOT_AUTHORIZED);
    case ACCESS_DENIED:
        /* 0x80: the broker does not say which of a token's prohibitions this is. */
        snprintf(why, sizeof(why), "not allowed by token %s (a deny-sub filter)", c->token->id);
        refusal_note(c, r, filter, "token", "not authorized", why);
        return MQTT_SUBACK_FAILURE;
    }
    return 0;
}

/*
 * A subscription the session does not hold yet counts against
 * max-subscriptions and is refused while the instance holds
 * max-instance-bytes. Returns 0, or the refusal code (noted in `r`).
 */
static uint8_t quota_refusal(struct conn *c, const struct mqtt_buf *filter, const char *key,
                             struct refusals *r)
{
    struct session *s = c->session;
    const struct limits *l = &s->instance->limits;
    char why[128];

    if (session_sub_find(s, key))
        return 0;
    if (s->sub_count >= l->max_subscriptions) {
        snprintf(why, sizeof(why),
                 "quota exceeded: already %u subscriptions "
                 "(max-subscriptions %zu)",
                 s->sub_count, l->max_subscriptions);
        refusal_note(c, r, filter, "max-subscriptions", why, why);
        return refused(c, MQTT_RC_QUOTA_EXCEEDED);
    }
    if (instance_over_bytes(s->instance)) {
        snprintf(why, sizeof(why),
                 "quota exceeded: instance holds %zu bytes "
                 "(max-instance-bytes %zu)",
                 s->instance->account->bytes, l->max_instance_bytes);
        refusal_note(c, r, filter, "max-instance-bytes", why, why);
        r->over_quota++;
        instance_note_refusal(s->instance, INSTANCE_REFUSED_BYTES,
                              "new subscriptions refused (max-instance-bytes %zu)",
                              l->max_instance_bytes);
        return refused(c, MQTT_RC_QUOTA_EXCEEDED);
    }
    return 0;
}

/*
 * Enter `sub` in the tree (or its share group) and the session, which takes
 * sub->filter (freed here or passed to *granted). Returns the granted QoS,
 * or a refusal code when out of memory.
 */
static uint8_t subscribe_take(struct conn *c, const struct mqtt_buf *filter,
                              struct session_sub *sub, const struct filter_parts *fp,
                              struct granted *granted, struct refusals *r)
{
    struct session *s = c->session;
    uint8_t qos = sub->options & MQTT_SUB_OPT_QOS;

    int is_new = subscribe_enter(s, sub, fp);
    if (is_new < 0 || session_sub_record(s, sub, is_new) < 0) {
        if (is_new > 0)
            subscribe_leave(s, sub);
        free(sub->filter);
        return refusal_oom(c, r, filter);
    }
    if (log_enabled(LOG_LEVEL_DEBUG)) {
        char shown[160];
        log_escape(filter->data, filter->len, shown, sizeof(shown));
        log_debug("client %s: subscribed to '%s' at QoS %u", c->client_id, shown, qos);
    }
    systopic_subscribed(s->instance, s->client_id, sub->filter, qos);
    /* No retained messages for a shared subscription (MQTT 5 4.8.2). */
    unsigned handling = c->out.version == MQTT_V5 ? MQTT_SUB_OPT_RETAIN_HANDLING(sub->options) : 0;
    if (!fp->shared && (handling == 0 || (handling == 1 && is_new))) {
        granted->filter = sub->filter;
        granted->sub = *sub;
        granted->send_retained = true;
    } else {
        free(sub->filter);
    }
    return qos;
}

/* Subscribe one filter; returns the granted QoS or a refusal code (noted in `r`). */
static uint8_t subscribe_one(struct conn *c, const struct mqtt_topic_entry *e, uint32_t sub_id,
                             struct granted *granted, struct refusals *r)
{
    struct session *s = c->session;
    uint8_t options = c->out.version == MQTT_V5 ? e->options : (e->options & MQTT_SUB_OPT_QOS);
    struct filter_parts fp;
    uint8_t code;

    memset(granted, 0, sizeof(*granted));
    /* Not a topic of the tree: the broker's own news about the client's token. */
    if (e->filter.len == strlen(TIMERS_TOKEN_EVENTS_TOPIC) &&
        memcmp(e->filter.data, TIMERS_TOKEN_EVENTS_TOPIC, e->filter.len) == 0) {
        s->token_events = true;
        return options & MQTT_SUB_OPT_QOS;
    }
    if ((code = filter_refusal(c, &e->filter, &fp, r)))
        return code;
    struct session_sub sub = {.options = options, .sub_id = sub_id};
    sub.filter = filter_key(&fp, &sub.leading_slash);
    if (!sub.filter)
        return refusal_oom(c, r, &e->filter);
    const char *plain = fp.shared ? sub.filter + strlen("$share/") + fp.group_len + 1 : sub.filter;
    if (!(code = access_refusal(c, &e->filter, plain, r)))
        code = quota_refusal(c, &e->filter, sub.filter, r);
    if (code) {
        free(sub.filter);
        return code;
    }
    return subscribe_take(c, &e->filter, &sub, &fp, granted, r);
}

/* No Local on a shared subscription is a Protocol Error [MQTT-3.8.3-4]: true when found. */
static bool no_local_on_share(const struct mqtt_subscribe *sp)
{
    struct mqtt_topic_entry e;
    struct filter_parts fp;
    size_t pos = 0;

    while (codec_next_topic(sp, true, &pos, &e))
        if ((e.options & MQTT_SUB_OPT_NO_LOCAL) && filter_split(&e.filter, &fp) && fp.shared)
            return true;
    return false;
}

/* SUBACK or UNSUBACK with `codes` and, MQTT 5 permitting, `why` as Reason String. */
static int send_suback(struct conn *c, uint8_t type, uint16_t packet_id, const uint8_t *codes,
                       size_t count, const char *why)
{
    struct mqtt_packet ack = {.type = type};

    ack.u.suback = (struct mqtt_suback){.packet_id = packet_id, .codes = codes, .count = count};
    return sender_send_why(&c->out, &ack, conn_reason_string(c, why));
}

/* What one SUBSCRIBE grants and refuses, filter by filter. */
struct subscribing {
    size_t count;            /* filters handled */
    uint8_t *codes;          /* the SUBACK code of each */
    struct granted *granted; /* the grant of each */
    /* Normalised filter -> 1 + its index in `granted`: a filter repeated within
     * the packet keeps only its last grant (the subscription it ends up with),
     * so its retained messages go out once, found in O(1) per filter. Left
     * empty (no allocation, no key drawn) for the usual one-filter packet. */
    struct strmap last;
    struct refusals refusals;
};

/* A later grant of the same filter in one SUBSCRIBE replaces the earlier. Returns 0 or -1. */
static int keep_last_grant(struct conn *c, struct subscribing *sb, size_t i)
{
    void *earlier;

    if (strmap_put(&sb->last, sb->granted[i].filter, (void *)(uintptr_t)(i + 1), &earlier) < 0)
        return conn_fail(c, "out of memory handling SUBSCRIBE");
    if (earlier) {
        size_t k = (uintptr_t)earlier - 1;
        free(sb->granted[k].filter);
        sb->granted[k].filter = NULL;
    }
    return 0;
}

/* Subscribe each filter of `sp` in turn. Returns 0, or -1 when the connection must end. */
static int subscribe_all(struct conn *c, const struct mqtt_subscribe *sp, struct subscribing *sb)
{
    struct mqtt_topic_entry e;
    struct mqtt_prop id_prop;
    uint32_t sub_id = 0;
    size_t pos = 0;

    if (c->out.version == MQTT_V5) {
        if (no_local_on_share(sp))
            return conn_fail_with(c, MQTT_RC_PROTOCOL_ERROR, "No Local on a shared subscription");
        if (codec_find_prop(&sp->props, MQTT_PROP_SUBSCRIPTION_ID, &id_prop))
            sub_id = id_prop.u32;
    }
    while (sb->count < sp->count && codec_next_topic(sp, true, &pos, &e)) {
        size_t i = sb->count;
        sb->codes[i] = subscribe_one(c, &e, sub_id, &sb->granted[i], &sb->refusals);
        if (sb->granted[i].filter && sp->count > 1 && keep_last_grant(c, sb, i) < 0)
            return -1;
        sb->count++;
    }
    return 0;
}

/*
 * One line for all the filters refused (and one more for those refused for
 * lack of memory). Returns what the SUBACK's Reason String says, in `why`,
 * or NULL when nothing was refused.
 */
static const char *refusals_report(struct conn *c, const struct subscribing *sb, char *why,
                                   size_t size)
{
    const struct refusals *r = &sb->refusals;
    const char *told = NULL;

    if (r->count) {
        snprintf(why, size, "'%s': %s", r->first_filter, r->first_why);
        /* A tenant at its limit must not flood the log: its instance's own line counts these. */
        log_msg(r->over_quota == r->count ? LOG_LEVEL_INFO : LOG_LEVEL_NOTICE,
                "client %s: SUBSCRIBE refused %zu of %zu filters (first: %s)", c->client_id,
                r->count, sb->count, why);
        snprintf(why, size, "'%s': %s", r->first_filter, r->first_told);
        told = why;
    }
    if (r->out_of_memory)
        log_error("client %s: out of memory subscribing to %zu of %zu filters", c->client_id,
                  r->out_of_memory, sb->count);
    return told;
}

/*
 * What follows the SUBACK: the retained messages, once per distinct filter
 * granted (MQTT-3.3.1-6), and a token warning whose time has come.
 */
static void subscribe_follow_up(struct conn *c, const struct subscribing *sb)
{
    struct session *s = c->session;

    /*
     * Routing returns nothing, but a PUBLISH it could not queue closes the
     * connection: the rest would then go to the session's offline queue
     * instead, so they stop there.
     */
    for (size_t k = 0; k < sb->count; k++) {
        const struct granted *g = &sb->granted[k];
        if (!g->filter || c->state != CONN_ACTIVE)
            continue;
        route_send_retained(s->instance, s, g->filter, &g->sub);
        /* $info is no retained message, but is sent as one. */
        if (g->filter[0] == '$' && topic_filter_matches(g->filter, TOPIC_SYS_INFO, false) &&
            c->state == CONN_ACTIVE)
            systopic_info_send(s->instance, s, &g->sub);
    }
    /* Subscribed to [mqtt]tokenevents after the warning's time: it goes out now. */
    if (c->token_warning_due && s->token_events)
        timers_token_warning(c);
}

int handle_subscribe(struct conn *c, const struct mqtt_packet *p)
{
    const struct mqtt_subscribe *sp = &p->u.subscribe;
    struct subscribing sb = {.codes = malloc(sp->count),
                             .granted = calloc(sp->count, sizeof(*sb.granted))};
    char why[320];
    int rc;

    if (!sb.codes || !sb.granted)
        rc = conn_fail(c, "out of memory handling SUBSCRIBE");
    else
        rc = subscribe_all(c, sp, &sb);
    if (rc == 0) {
        const char *told = refusals_report(c, &sb, why, sizeof(why));
        rc = send_suback(c, MQTT_SUBACK, sp->packet_id, sb.codes, sb.count, told);
    }
    if (rc == 0)
        subscribe_follow_up(c, &sb);
    strmap_clear(&sb.last);
    if (sb.granted)
        for (size_t k = 0; k < sp->count; k++)
            free(sb.granted[k].filter);
    free(sb.granted);
    free(sb.codes);
    return rc;
}

/*
 * Unsubscribe one filter; *code: 0x00, 0x11 when there was no such
 * subscription, or 0x8F. Returns 0 or -1 (out of memory).
 */
static int unsubscribe_one(struct conn *c, const struct mqtt_topic_entry *e, uint8_t *code)
{
    struct session *s = c->session;
    struct filter_parts fp;
    bool slash;

    if (e->filter.len == strlen(TIMERS_TOKEN_EVENTS_TOPIC) &&
        memcmp(e->filter.data, TIMERS_TOKEN_EVENTS_TOPIC, e->filter.len) == 0) {
        *code = s->token_events ? MQTT_RC_SUCCESS : MQTT_RC_NO_SUBSCRIPTION_EXISTED;
        s->token_events = false;
        return 0;
    }
    char why[128];
    if (!filter_split(&e->filter, &fp) ||
        filter_check(&e->filter, &fp, &s->instance->limits, why, sizeof(why)) < 0) {
        *code = MQTT_RC_TOPIC_FILTER_INVALID;
        return 0;
    }
    char *key = filter_key(&fp, &slash);
    if (!key)
        return conn_fail(c, "out of memory handling UNSUBSCRIBE");
    struct session_sub *sub = session_sub_find(s, key);
    /* Unknown filters are fine: UNSUBACK is sent all the same (MQTT-3.10.4-5). */
    *code = MQTT_RC_NO_SUBSCRIPTION_EXISTED;
    if (sub) {
        subscribe_leave(s, sub);
        session_sub_forget(s, key);
        systopic_unsubscribed(s->instance, s->client_id, key);
        *code = MQTT_RC_SUCCESS;
    }
    free(key);
    return 0;
}

int handle_unsubscribe(struct conn *c, const struct mqtt_packet *p)
{
    const struct mqtt_subscribe *sp = &p->u.subscribe;
    struct mqtt_topic_entry e;
    uint8_t *codes = malloc(sp->count);
    size_t pos = 0, i = 0;
    int rc = 0;

    if (!codes)
        return conn_fail(c, "out of memory handling UNSUBSCRIBE");
    while (rc == 0 && i < sp->count && codec_next_topic(sp, false, &pos, &e))
        rc = unsubscribe_one(c, &e, &codes[i++]);
    if (rc == 0)
        rc = send_suback(c, MQTT_UNSUBACK, sp->packet_id, codes, i, NULL);
    free(codes);
    return rc;
}
