/* CONNECT: validate, pick the instance and session, answer CONNACK (MQTT 3.1.1 §3.1, §3.2). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/util.h>

#include "broker/core.h"
#include "broker/conn.h"
#include "broker/handlers.h"
#include "broker/instance.h"
#include "broker/login.h"
#include "broker/message.h"
#include "broker/packet_size.h"
#include "broker/propbuf.h"
#include "broker/route.h"
#include "broker/session.h"
#include "broker/systopic.h"
#include "broker/timers.h"
#include "broker/topic.h"
#include "tenancy/access.h"
#include "tenancy/catalog.h"
#include "util/account.h"
#include "util/log.h"
#include "util/scratch.h"

/* The MQTT 5 reason code that says what an MQTT 3.1.1 CONNACK return code says. */
static uint8_t v5_reason(uint8_t code)
{
    switch (code) {
    case MQTT_CONNACK_BAD_VERSION:
        return MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION;
    case MQTT_CONNACK_ID_REJECTED:
        return MQTT_RC_CLIENT_ID_NOT_VALID;
    case MQTT_CONNACK_UNAVAILABLE:
        return MQTT_RC_SERVER_UNAVAILABLE;
    case MQTT_CONNACK_BAD_CREDENTIALS:
        return MQTT_RC_BAD_USERNAME_OR_PASSWORD;
    case MQTT_CONNACK_NOT_AUTHORIZED:
        return MQTT_RC_NOT_AUTHORIZED;
    default:
        return MQTT_RC_UNSPECIFIED;
    }
}

/*
 * Refuse the CONNECT: MQTT 3.1.1 return code `code`, or MQTT 5 reason
 * `reason` (0: the one that matches `code`) with `told` as its Reason
 * String. The log says `why`, which may name what the client is not to learn
 * (a token, which of its credentials was wrong). Returns -1: the connection
 * ends (after the CONNACK).
 */
static int refuse_at(struct conn *c, enum log_level level, uint8_t code, uint8_t reason,
                     const char *told, const char *why)
{
    struct mqtt_packet ack = {.type = MQTT_CONNACK};
    bool v5 = c->out.version == MQTT_V5;

    if (v5)
        code = reason ? reason : v5_reason(code);
    ack.u.connack.code = code;
    sender_send_why(&c->out, &ack, v5 ? told : NULL);
    return conn_fail_at(
        c, level, c->out.version == MQTT_V5 ? "CONNACK 0x%02x: %s" : "CONNACK %u: %s", code, why);
}

static int refuse_as(struct conn *c, uint8_t code, uint8_t reason, const char *told,
                     const char *why)
{
    return refuse_at(c, LOG_LEVEL_NOTICE, code, reason, told, why);
}

/* Refuse, telling the client what the log says. */
static int refuse5(struct conn *c, uint8_t code, uint8_t reason, const char *why)
{
    return refuse_as(c, code, reason, why, why);
}

static int refuse(struct conn *c, uint8_t code, const char *why)
{
    return refuse5(c, code, 0, why);
}

/* Random bytes in an assigned client id: unique by chance, and telling nothing. */
#define ASSIGNED_ID_RANDOM_BYTES 12
/* "auto-", two hex digits a byte, NUL. */
#define ASSIGNED_ID_SIZE (sizeof("auto-") + 2 * ASSIGNED_ID_RANDOM_BYTES)

/*
 * A client id for a client that sent none: "auto-" and 96 random bits, so
 * that it tells nothing about the broker (no counter of connections) and
 * fits the smallest sensible max-client-id.
 */
static void generate_client_id(char *out, size_t size)
{
    uint8_t r[ASSIGNED_ID_RANDOM_BYTES];
    size_t n = (size_t)snprintf(out, size, "auto-");

    evutil_secure_rng_get_bytes(r, sizeof(r));
    for (size_t i = 0; i < sizeof(r) && n + 2 < size; i++, n += 2)
        snprintf(out + n, size - n, "%02x", r[i]);
}

/* Characters in valid UTF-8 (the codec has checked it): every byte but continuation bytes. */
static size_t utf8_length(const uint8_t *s, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += (s[i] & 0xc0) != 0x80;
    return n;
}

static unsigned clamp_keepalive(unsigned requested, const struct limits *l)
{
    /* A plan may raise keepalive-min above an instance's keepalive-max: the maximum wins. */
    if (l->keepalive_min > l->keepalive_max)
        return l->keepalive_max;
    if (requested == 0 || requested > l->keepalive_max)
        return l->keepalive_max;
    if (requested < l->keepalive_min)
        return l->keepalive_min;
    return requested;
}

/* Build the will message from CONNECT. Returns 0, or -1 after refusing. */
static int take_will(struct conn *c, const struct mqtt_connect *ck, const struct limits *l)
{
    char why[160];
    int rc = topic_check_name((const char *)ck->will_topic.data, ck->will_topic.len,
                              l->max_topic_length, topic_charset_of(l));
    if (rc < 0) {
        char topic_why[96];
        topic_describe(rc, ck->will_topic.len, l->max_topic_length, topic_why, sizeof(topic_why));
        snprintf(why, sizeof(why), "will topic refused: %s", topic_why);
        return refuse5(c, MQTT_CONNACK_UNAVAILABLE, MQTT_RC_TOPIC_NAME_INVALID, why);
    }
    if (ck->will_payload.len > l->max_payload) {
        snprintf(why, sizeof(why), "will payload of %zu bytes exceeds max-payload %zu",
                 ck->will_payload.len, l->max_payload);
        return refuse5(c, MQTT_CONNACK_UNAVAILABLE, MQTT_RC_PACKET_TOO_LARGE, why);
    }
    struct message_v5 v5 = {0};
    struct propbuf pb;
    propbuf_init(&pb);
    if (ck->version == MQTT_V5) {
        struct mqtt_prop delay;
        if (codec_find_prop(&ck->will_props, MQTT_PROP_WILL_DELAY, &delay) && delay.u32) {
            struct conn_rare *rare = conn_rare(c);
            if (!rare)
                return refuse(c, MQTT_CONNACK_UNAVAILABLE, "out of memory keeping its will");
            rare->will_delay = delay.u32;
        }
        bool text = message_props_take(&ck->will_props, &pb, &v5);
        if (text && codec_check_utf8(ck->will_payload.data, ck->will_payload.len) != CODEC_OK) {
            propbuf_free(&pb);
            return refuse5(c, MQTT_CONNACK_UNAVAILABLE, MQTT_RC_PAYLOAD_FORMAT_INVALID,
                           "the will's payload is not UTF-8 though its Payload Format "
                           "Indicator says so");
        }
    }
    char small[256];
    struct scratch sc = SCRATCH_INIT(small);
    bool slash;
    char *topic = topic_normalize_wire(&ck->will_topic, &sc, &slash);
    if (topic && !pb.failed)
        c->will = message_new(topic, strlen(topic), ck->will_payload.data, ck->will_payload.len,
                              ck->will_qos, ck->will_retain, &v5);
    scratch_free(&sc);
    propbuf_free(&pb);
    if (!c->will)
        return refuse(c, MQTT_CONNACK_UNAVAILABLE, "out of memory storing the will");
    return 0;
}

/*
 * Refuse wrong credentials: the client hears only that they were wrong; the
 * log says "`what` 'USER'`detail`", the user name escaped, or hidden when it
 * is a token's secret sent in the wrong field.
 */
static int refuse_login(struct conn *c, const struct mqtt_buf *username, const char *what,
                        const char *detail)
{
    char user[96], why[256];

    const uint8_t *colon = memchr(username->data, ':', username->len);
    size_t shown = colon ? (size_t)(colon - username->data) : username->len;

    if (catalog_token_by_secret(c->broker->catalog, username->data, username->len))
        snprintf(user, sizeof(user), "<a token's secret, not shown>");
    else
        log_escape(username->data, shown, user, sizeof(user) - sizeof(":<not shown>"));
    /* What follows a colon may be a secret (INSTANCE:SECRET): never logged. */
    if (colon)
        strncat(user, ":<not shown>", sizeof(user) - strlen(user) - 1);
    snprintf(why, sizeof(why), "bad user name or password: %s '%s'%s", what, user, detail);
    return refuse_as(c, MQTT_CONNACK_BAD_CREDENTIALS, 0, "bad user name or password", why);
}

/* cloud_login(): the CONNECT waits, unanswered, for a fresh look at the database. */
#define LOGIN_WAITS 1

/*
 * Cloud mode: the user name names the instance, the password is a token's
 * secret; or the user name is INSTANCE:SECRET and the password empty or
 * absent (login_credentials). Sets *inst and *token (a new reference) and returns 0; returns
 * LOGIN_WAITS when the login waits for a fresh look at the database (an
 * instance or token aviaryctl has just made); or -1 after refusing. Wrong
 * credentials all get the same code and text, so that a client cannot tell
 * an unknown instance from a wrong secret; the log says which it was.
 */
static int cloud_login(struct conn *c, const struct mqtt_connect *ck, struct instance **inst,
                       struct catalog_token **token)
{
    struct broker *b = c->broker;
    char name[CATALOG_NAME_MAX + 1];
    char why[256];
    struct login_credentials cr;

    if (!ck->has_username || !login_credentials(ck->username.data, ck->username.len,
                                                ck->has_password ? ck->password.data : NULL,
                                                ck->has_password ? ck->password.len : 0, &cr))
        return refuse(c, MQTT_CONNACK_NOT_AUTHORIZED,
                      "not authorized: cloud mode needs a user name (the instance) and a "
                      "password (a token), or the user name INSTANCE:TOKEN");
    /* The log names the instance, never a secret sent in the user name. */
    const struct mqtt_buf user = {cr.name, cr.name_len};
    const struct catalog_instance *ci = NULL;
    if (cr.name_len < sizeof(name)) {
        memcpy(name, cr.name, cr.name_len);
        name[cr.name_len] = '\0';
        ci = catalog_instance(b->catalog, name);
    }
    struct catalog_token *t =
        ci ? catalog_token_by_secret(b->catalog, cr.secret, cr.secret_len) : NULL;
    if ((!ci || !t) && login_wait(b, c))
        return LOGIN_WAITS;
    if (!ci)
        return refuse_login(c, &user, "no instance", "");
    if (!t || strcmp(t->instance, name) != 0)
        return refuse_login(c, &user,
                            cr.in_user_name ? "the token in the user name is no live token of "
                                              "instance"
                                            : "the password is no live token of instance",
                            t ? " (it belongs to another instance)" : " (unknown or revoked)");
    if (t->expires && t->expires <= time(NULL)) {
        snprintf(why, sizeof(why), "not authorized: token %s of instance '%s' has expired", t->id,
                 name);
        return refuse_as(c, MQTT_CONNACK_NOT_AUTHORIZED, 0, "not authorized: the token has expired",
                         why);
    }
    if (!t->expires && !c->link.meta.over_tls && !b->allow_keys_without_tls) {
        snprintf(why, sizeof(why),
                 "not authorized: token %s is a key (no expiry) and keys need TLS; this "
                 "listener has none (see allow-keys-without-tls)",
                 t->id);
        return refuse_as(c, MQTT_CONNACK_NOT_AUTHORIZED, 0,
                         "not authorized: a key (a token without expiry) needs a TLS "
                         "connection",
                         why);
    }
    if (!(*inst = login_instance(b, name)))
        return refuse(c, MQTT_CONNACK_UNAVAILABLE, "out of memory creating the instance");
    *token = catalog_token_ref(t);
    return 0;
}

/* A token bound to a client id (a device credential) accepts that id only. */
static int check_binding(struct conn *c, const struct catalog_token *t, const char *client_id)
{
    if (!t || !t->client_id || strcmp(t->client_id, client_id) == 0)
        return 0;
    char bound[96], why[256];
    log_escape(t->client_id, strlen(t->client_id), bound, sizeof(bound));
    snprintf(why, sizeof(why), "not authorized: token %s is bound to client id '%s', not '%s'",
             t->id, bound, c->client_id);
    return refuse_as(c, MQTT_CONNACK_NOT_AUTHORIZED, 0,
                     "not authorized: the token is bound to another client id", why);
}

/*
 * A new persistent session for `inst`: refused (CONNACK 3 / 0x97) when the
 * instance has max-sessions of them or holds max-instance-bytes. Returns 0,
 * or -1 after refusing.
 */
static int refuse_over_quota(struct conn *c, struct instance *inst)
{
    const struct limits *l = &inst->limits;
    char why[160];

    if (l->max_sessions && inst->persistent_sessions >= l->max_sessions) {
        snprintf(why, sizeof(why),
                 "quota exceeded: instance '%s' has %zu persistent sessions "
                 "(max-sessions %zu)",
                 inst->name, inst->persistent_sessions, l->max_sessions);
        instance_note_refusal(inst, INSTANCE_REFUSED_SESSIONS,
                              "new persistent sessions refused (max-sessions %zu)",
                              l->max_sessions);
    } else if (instance_over_bytes(inst)) {
        snprintf(why, sizeof(why),
                 "quota exceeded: instance '%s' holds %zu bytes "
                 "(max-instance-bytes %zu)",
                 inst->name, inst->account->bytes, l->max_instance_bytes);
        instance_note_refusal(inst, INSTANCE_REFUSED_BYTES,
                              "new persistent sessions refused (max-instance-bytes %zu)",
                              l->max_instance_bytes);
    } else {
        return 0;
    }
    /* The instance's line counts these; each one is logged at info level. */
    return refuse_at(c, LOG_LEVEL_INFO, MQTT_CONNACK_UNAVAILABLE, MQTT_RC_QUOTA_EXCEEDED, why, why);
}

/* The MQTT 5 CONNECT properties that shape the connection. Returns -1 after refusing. */
static int take_connect_props(struct conn *c, const struct mqtt_connect *ck,
                              uint32_t *session_expiry, bool *response_info)
{
    struct mqtt_prop prop;
    size_t pos = 0;

    while (codec_next_prop(&ck->props, &pos, &prop)) {
        switch (prop.id) {
        case MQTT_PROP_SESSION_EXPIRY:
            *session_expiry = prop.u32;
            break;
        case MQTT_PROP_RECEIVE_MAXIMUM:
            c->out.receive_max = (uint16_t)prop.u32;
            break;
        case MQTT_PROP_MAXIMUM_PACKET_SIZE:
            c->out.max_packet = prop.u32;
            break;
        case MQTT_PROP_TOPIC_ALIAS_MAXIMUM:
            c->out.alias_max = (uint16_t)prop.u32;
            break;
        case MQTT_PROP_REQUEST_PROBLEM_INFO:
            c->problem_info = prop.u32 != 0;
            break;
        case MQTT_PROP_REQUEST_RESPONSE_INFO:
            *response_info = prop.u32 != 0;
            break;
        case MQTT_PROP_AUTH_METHOD: {
            char method[64], why[160];
            log_escape(prop.str.data, prop.str.len, method, sizeof(method));
            snprintf(why, sizeof(why),
                     "authentication method '%s' not supported: aviary offers no enhanced "
                     "authentication",
                     method);
            return refuse5(c, MQTT_CONNACK_NOT_AUTHORIZED, MQTT_RC_BAD_AUTH_METHOD, why);
        }
        default:
            break; /* User Properties: nothing for the broker to do with them */
        }
    }
    return 0;
}

/* The Session Expiry Interval granted: as asked, at most max-session-expiry when set. */
static uint32_t grant_session_expiry(uint32_t asked, const struct limits *l)
{
    if (l->max_session_expiry && asked > l->max_session_expiry)
        return l->max_session_expiry;
    return asked;
}

/* Characters a client id may have to become part of the Response Information topic. */
static bool topic_safe(const char *s)
{
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              strchr(".,:;-_$", *s)))
            return false;
    return true;
}

/* What the CONNACK to an MQTT 5 client says about the connection it got. */
struct connack5 {
    const char *assigned_id; /* the id the broker gave it, or NULL */
    bool keepalive_changed;  /* announce Server Keep Alive */
    bool expiry_changed;     /* announce the Session Expiry Interval granted */
    uint32_t expiry;
    bool response_info; /* it asked for Response Information */
};

/* A client id within the default max-client-id fits on the stack, whatever its UTF-8. */
#define CLIENT_ID_SMALL (4 * LIMITS_DEFAULT_MAX_CLIENT_ID + 1)

/* What handle_connect() learns about one CONNECT, step by step. */
struct connecting {
    const struct mqtt_connect *ck;
    struct instance *inst;       /* where it logs in */
    struct catalog_token *token; /* cloud: its token (c->token owns the reference) */
    const struct limits *l;      /* the instance's */
    char *client_id;             /* NUL-terminated, in `id` */
    struct scratch id;
    uint32_t asked_expiry; /* Session Expiry Interval asked (MQTT 5) */
    uint32_t expiry;       /* ... or implied by clean session (MQTT 3.x) */
    uint32_t granted;      /* ... as max-session-expiry allows */
    struct session *s;     /* the client id's session: found, then the one it gets */
    bool session_present;
    const char *rule; /* the limit or permission that refused it, for $events */
    struct connack5 v5;
};

/*
 * Add Response Information (MQTT 5 4.10): a topic prefix the client may build
 * its response topics on. Out of memory marks `pb` failed, as any property.
 */
static void add_response_info(struct propbuf *pb, const char *client_id)
{
    char small[LIMITS_DEFAULT_MAX_CLIENT_ID + 16];
    struct scratch sc = SCRATCH_INIT(small);
    size_t size = strlen("response/") + strlen(client_id) + 1;
    char *topic = scratch_get(&sc, size);

    if (!topic) {
        pb->failed = true;
        return;
    }
    snprintf(topic, size, "response/%s", client_id);
    propbuf_str(pb, MQTT_PROP_RESPONSE_INFO, topic, size - 1);
    scratch_free(&sc);
}

/* Returns 0, or -1 when the connection must end. */
static int connack_accept(struct conn *c, bool session_present, const struct connack5 *v5,
                          const struct limits *l)
{
    struct mqtt_packet ack = {.type = MQTT_CONNACK};
    struct propbuf pb;

    propbuf_init(&pb);
    ack.u.connack.session_present = session_present;
    if (c->out.version == MQTT_V5) {
        if (v5->expiry_changed)
            propbuf_int(&pb, MQTT_PROP_SESSION_EXPIRY, v5->expiry);
        propbuf_int(&pb, MQTT_PROP_RECEIVE_MAXIMUM, (uint32_t)l->max_inflight);
        propbuf_int(&pb, MQTT_PROP_MAXIMUM_PACKET_SIZE, packet_size_announced(l));
        if (l->max_topic_aliases)
            propbuf_int(&pb, MQTT_PROP_TOPIC_ALIAS_MAXIMUM, (uint32_t)l->max_topic_aliases);
        propbuf_int(&pb, MQTT_PROP_RETAIN_AVAILABLE, 1);
        propbuf_int(&pb, MQTT_PROP_WILDCARD_SUB_AVAILABLE, 1);
        propbuf_int(&pb, MQTT_PROP_SUB_ID_AVAILABLE, 1);
        propbuf_int(&pb, MQTT_PROP_SHARED_SUB_AVAILABLE, 1);
        if (v5->assigned_id)
            propbuf_str(&pb, MQTT_PROP_ASSIGNED_CLIENT_ID, v5->assigned_id,
                        strlen(v5->assigned_id));
        if (v5->keepalive_changed)
            propbuf_int(&pb, MQTT_PROP_SERVER_KEEP_ALIVE, c->keepalive);
        if (v5->response_info && topic_safe(c->session->client_id))
            add_response_info(&pb, c->session->client_id);
        if (pb.failed) {
            propbuf_free(&pb);
            return conn_fail(c, "out of memory building CONNACK");
        }
        ack.u.connack.props = propbuf_props(&pb);
    }
    int rc = conn_send(c, &ack);
    propbuf_free(&pb);
    return rc;
}

/* Desktop mode with a password-file: the CONNECT must name one of its users. */
static int desktop_login(struct conn *c, const struct mqtt_connect *ck)
{
    struct broker *b = c->broker;

    if (!ck->has_username)
        return refuse5(c, MQTT_CONNACK_NOT_AUTHORIZED, MQTT_RC_NOT_AUTHORIZED,
                       "not authorized: no user name, and password-file admits only its users");
    if (!b->passwords(b->passwords_ctx, (const char *)ck->username.data, ck->username.len,
                      ck->password.data, ck->has_password ? ck->password.len : 0))
        return refuse5(c, MQTT_CONNACK_BAD_CREDENTIALS, MQTT_RC_BAD_USERNAME_OR_PASSWORD,
                       "bad user name or password (password-file)");
    return 0;
}

/*
 * Its MQTT 5 properties, the memory ceiling, and (cloud) its credentials:
 * sets cn->inst and cn->token. Returns 0, LOGIN_WAITS, or -1 after refusing.
 */
static int connect_login(struct conn *c, struct connecting *cn)
{
    const struct mqtt_connect *ck = cn->ck;
    struct broker *b = c->broker;

    c->out.version = ck->version;
    if (ck->version == MQTT_V5 &&
        take_connect_props(c, ck, &cn->asked_expiry, &cn->v5.response_info) < 0)
        return -1;
    /* Past max-memory the broker keeps serving whom it has, and takes nobody new. */
    if (core_memory_full(b)) {
        char why[160];
        b->memory_refusals++;
        snprintf(why, sizeof(why), "server unavailable: %zu MB resident, over max-memory %zu MB",
                 b->memory_resident >> 20, b->max_memory >> 20);
        return refuse5(c, MQTT_CONNACK_UNAVAILABLE, MQTT_RC_QUOTA_EXCEEDED, why);
    }
    cn->inst = b->local;
    if (b->cloud) {
        int rc = cloud_login(c, ck, &cn->inst, &cn->token);
        if (rc != 0)
            return rc;
    } else if (b->passwords && desktop_login(c, ck) < 0) {
        return -1;
    }
    /*
     * The conn owns the reference from here: conn_free() drops it whatever
     * happens. A CONNECT read again after waiting logs in again: the first
     * login's reference goes.
     */
    catalog_token_unref(c->token);
    c->token = cn->token;
    cn->l = &cn->inst->limits;
    return 0;
}

/*
 * The client id: within max-client-id, assigned when empty where the
 * protocol allows, allowed by a token bound to one. Sets cn->client_id and
 * c->client_id (the log's). Returns 0, or -1 after refusing.
 */
static int connect_client_id(struct conn *c, struct connecting *cn)
{
    const struct mqtt_buf *in = &cn->ck->client_id;
    uint8_t version = cn->ck->version;
    size_t chars = utf8_length(in->data, in->len);

    if (chars > cn->l->max_client_id || in->len >= LIMITS_MAX_CLIENT_ID_BUFFER) {
        char why[96];
        snprintf(why, sizeof(why), "client id of %zu characters is longer than max-client-id %zu",
                 chars, cn->l->max_client_id);
        cn->rule = "max-client-id";
        return refuse(c, MQTT_CONNACK_ID_REJECTED, why);
    }
    /* MQTT 5 assigns an id whatever Clean Start says (MQTT 5 3.1.3.1). */
    if (in->len == 0 && (version == MQTT_V31 || (!cn->ck->clean && version != MQTT_V5)))
        return refuse(c, MQTT_CONNACK_ID_REJECTED,
                      version == MQTT_V31 ? "empty client id (MQTT 3.1 requires one)"
                                          : "empty client id with clean session 0");
    cn->client_id = scratch_get(&cn->id, in->len ? in->len + 1 : ASSIGNED_ID_SIZE);
    if (!cn->client_id)
        return refuse(c, MQTT_CONNACK_UNAVAILABLE, "out of memory storing the client id");
    if (in->len == 0) {
        generate_client_id(cn->client_id, ASSIGNED_ID_SIZE);
        cn->v5.assigned_id = cn->client_id;
    } else {
        memcpy(cn->client_id, in->data, in->len);
        cn->client_id[in->len] = '\0';
    }
    conn_name(c, cn->client_id);
    int rc = check_binding(c, cn->token, cn->client_id);
    if (rc < 0)
        cn->rule = "token";
    return rc;
}

/*
 * In a cluster, an instance made here by this login is not yet read from its
 * stream: the CONNECT waits, unread, until it is. Returns 0 or LOGIN_WAITS.
 */
static int connect_await_stream(struct conn *c, struct connecting *cn)
{
    struct broker_cluster *cl = c->broker->cluster;

    return cl && cl->await_stream(cl, cn->inst, c) ? LOGIN_WAITS : 0;
}

/*
 * In a cluster, a persistent session this node does not hold may be in
 * Redis, left by the node its client was on: the CONNECT waits, unread, until
 * it is here (once per connection). Returns 0 or LOGIN_WAITS.
 */
static int connect_fetch_session(struct conn *c, struct connecting *cn)
{
    struct broker_cluster *cl = c->broker->cluster;

    if (!cl || cn->ck->clean || c->cluster_fetched ||
        strmap_get(&cn->inst->sessions, cn->client_id))
        return 0;
    c->cluster_fetched = true;
    return cl->fetch_session(cl, cn->inst, cn->client_id, c) ? LOGIN_WAITS : 0;
}

/*
 * The instance's limits on connections and on sessions that outlive them;
 * sets cn->s (the id's session, if any) and the expiry granted. Returns 0,
 * or -1 after refusing.
 */
static int connect_quotas(struct conn *c, struct connecting *cn)
{
    struct instance *inst = cn->inst;
    const struct limits *l = cn->l;
    const struct mqtt_connect *ck = cn->ck;

    cn->s = strmap_get(&inst->sessions, cn->client_id);
    bool takes_over = cn->s && cn->s->conn;
    /* In a cluster, the other nodes' connections count too (as they last said). */
    size_t conns = inst->conn_count + inst->remote_conns;
    if (l->max_connections && conns >= l->max_connections && !takes_over) {
        char why[160];
        snprintf(why, sizeof(why),
                 "server unavailable: instance '%s' has %zu connections "
                 "(max-connections %zu)",
                 inst->name, conns, l->max_connections);
        cn->rule = "max-connections";
        return refuse5(c, MQTT_CONNACK_UNAVAILABLE, MQTT_RC_QUOTA_EXCEEDED, why);
    }
    cn->expiry =
        ck->version == MQTT_V5 ? cn->asked_expiry : (ck->clean ? 0 : SESSION_NEVER_EXPIRES);
    cn->granted = grant_session_expiry(cn->expiry, l);
    /* One more session outliving its connection (a Clean Start replacing one is not). */
    if (!cn->granted || (cn->s && cn->s->expiry))
        return 0;
    bool at_sessions = l->max_sessions && inst->persistent_sessions >= l->max_sessions;
    int rc = refuse_over_quota(c, inst);
    if (rc < 0)
        cn->rule = at_sessions ? "max-sessions" : "max-instance-bytes";
    return rc;
}

/* Its will, if any, charged to the instance and allowed by its token. Returns 0 or -1. */
static int connect_will(struct conn *c, struct connecting *cn)
{
    if (!cn->ck->will)
        return 0;
    if (take_will(c, cn->ck, cn->l) < 0) {
        cn->rule = "will";
        return -1;
    }
    message_charge(c->will, cn->inst->account);
    if (topic_is_reserved(c->will->topic)) {
        char shown[160], why[256];
        log_escape_str(c->will->topic, shown, sizeof(shown));
        snprintf(why, sizeof(why), "not authorized: the will topic '%s' is the broker's", shown);
        cn->rule = "system topic";
        return refuse5(c, MQTT_CONNACK_NOT_AUTHORIZED, 0, why);
    }
    /* A will is a PUBLISH made in advance: the token must allow its topic. */
    if (!access_may_publish(cn->token, c->will->topic)) {
        char shown[160], why[256], told[256];
        log_escape_str(c->will->topic, shown, sizeof(shown));
        snprintf(why, sizeof(why), "not authorized: token %s may not publish the will topic '%s'",
                 cn->token->id, shown);
        snprintf(told, sizeof(told), "not authorized: the will topic '%s' is not allowed", shown);
        cn->rule = "token";
        return refuse_as(c, MQTT_CONNACK_NOT_AUTHORIZED, 0, told, why);
    }
    return 0;
}

/*
 * The session it gets: an older connection with its id is taken over, Clean
 * Start ends the old session, else it is resumed; or a new one. Sets cn->s
 * and cn->session_present. Returns 0, or -1 after refusing.
 */
static int connect_session(struct conn *c, struct connecting *cn)
{
    struct instance *inst = cn->inst;
    struct session *s = cn->s;

    /* Take-over: the same client id in the same instance closes the older connection. */
    if (s && s->conn) {
        log_notice("client %s: taken over by a new connection from %s", c->client_id,
                   link_peer_name(&c->link.meta.peer).s);
        conn_disconnect(s->conn, MQTT_RC_SESSION_TAKEN_OVER,
                        "taken over by a new connection with the same client id");
        s = strmap_get(&inst->sessions, cn->client_id); /* gone if it ended with its connection */
    }
    /* Clean Start: the old session ends here, and with it a will that waited for its delay. */
    if (s && cn->ck->clean) {
        conn_end_session(s);
        s = NULL;
    }
    cn->v5.expiry_changed = cn->granted != cn->expiry;
    cn->v5.expiry = cn->granted;
    cn->session_present = s != NULL;
    if (s) {
        session_set_expiry(s, cn->granted);
    } else {
        s = session_new(inst, cn->client_id, cn->granted);
        if (!s || strmap_put(&inst->sessions, s->client_id, s, NULL) < 0) {
            session_free(s);
            return refuse(c, MQTT_CONNACK_UNAVAILABLE, "out of memory creating the session");
        }
    }
    cn->s = s;
    return 0;
}

/*
 * The connection becomes its session's, counted in its instance, with its
 * keep-alive and token timers. Returns 0, or -1 (closed: no timer).
 */
static int connect_activate(struct conn *c, struct connecting *cn)
{
    struct session *s = cn->s;
    const struct limits *l = cn->l;

    c->in_alias_max = (uint16_t)l->max_topic_aliases;
    /* Aliases toward the client cost a map entry each: max-topic-aliases bounds them too. */
    if (c->out.alias_max > l->max_topic_aliases)
        c->out.alias_max = (uint16_t)l->max_topic_aliases;
    conn_attach(c, s);
    if (cn->token) {
        catalog_token_unref(s->token);
        s->token = catalog_token_ref(cn->token);
        s->token_lost = false;
    }
    session_keep_state(s, 0);
    c->keepalive = (uint16_t)clamp_keepalive(cn->ck->keepalive, l);
    cn->v5.keepalive_changed = c->keepalive != cn->ck->keepalive;
    timers_start_keepalive(c);
    return timers_start_token(c);
}

/* CONNACK, then what waited in a resumed session and a token warning already due. */
static int connect_accept(struct conn *c, struct connecting *cn)
{
    const struct mqtt_connect *ck = cn->ck;
    const struct catalog_token *token = cn->token;

    /* MQTT 3.1 has no session-present flag: that byte is reserved there. */
    int rc = connack_accept(c, cn->session_present && ck->version != MQTT_V31, &cn->v5, cn->l);
    char expiry[32] = "never"; /* an MQTT 3.1.1 persistent session, without max-session-expiry */
    if (cn->granted != SESSION_NEVER_EXPIRES)
        snprintf(expiry, sizeof(expiry), "%lu s", (unsigned long)cn->granted);
    log_info("client %s connected from %s to instance %s%s%s (MQTT %s, clean %d, keep-alive "
             "%u s, session expiry %s%s)",
             c->client_id, link_peer_name(&c->link.meta.peer).s, cn->inst->name,
             token ? " with token " : "", token ? token->id : "",
             ck->version == MQTT_V31  ? "3.1"
             : ck->version == MQTT_V5 ? "5.0"
                                      : "3.1.1",
             ck->clean, c->keepalive, expiry, cn->session_present ? ", session resumed" : "");
    if (rc < 0)
        return -1;
    if (c->broker->cluster)
        c->broker->cluster->claim(c->broker->cluster, cn->inst, c);
    systopic_connected(cn->inst, cn->client_id, link_transport_name(c->link.meta.transport),
                       ck->version, link_peer_name(&c->link.meta.peer).s);
    if (cn->session_present)
        session_resume(cn->s);
    if (c->token_warning_due)
        timers_token_warning(c); /* it does nothing on a connection that session_resume() closed */
    return 0;
}

/*
 * A CONNECT refused after its login found the instance: $events hears of it
 * (what refused it before then, wrong credentials say, is no instance's).
 */
static void connect_refused(struct conn *c, const struct connecting *cn)
{
    if (!cn->l || !c->end.set)
        return;
    systopic_refused(cn->inst, cn->client_id ? cn->client_id : "", "connect",
                     cn->rule ? cn->rule : "connect", NULL, c->end.why ? c->end.why : "refused");
}

int handle_connect(struct conn *c, const struct mqtt_packet *p)
{
    char id_small[CLIENT_ID_SMALL];
    struct connecting cn = {.ck = &p->u.connect, .id = SCRATCH_INIT(id_small)};

    int rc = connect_login(c, &cn);
    if (rc == 0)
        rc = connect_client_id(c, &cn);
    if (rc == 0)
        rc = connect_await_stream(c, &cn);
    if (rc == 0)
        rc = connect_fetch_session(c, &cn);
    if (rc == 0)
        rc = connect_quotas(c, &cn);
    if (rc == 0)
        rc = connect_will(c, &cn);
    if (rc == 0)
        rc = connect_session(c, &cn);
    if (rc == 0)
        rc = connect_activate(c, &cn);
    if (rc == 0)
        rc = connect_accept(c, &cn);
    if (rc < 0)
        connect_refused(c, &cn);
    scratch_free(&cn.id);
    /*
     * A login that waits is no failure: the CONNECT stays unread until the
     * broker looked again, or its session came from the cluster.
     */
    return rc == LOGIN_WAITS ? 0 : rc;
}
