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
#include "broker/timers.h"
#include "broker/session.h"
#include "broker/topic.h"
#include "tenancy/access.h"
#include "tenancy/catalog.h"
#include "util/account.h"
#include "util/log.h"

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
 * Refuse the CONNECT and close: MQTT 3.1.1 return code `code`, or MQTT 5
 * reason `reason` (0: the one that matches `code`) with `told` as its Reason
 * String. The log says `why`, which may name what the client is not to learn
 * (a token, which of its credentials was wrong).
 */
static void refuse_at(struct conn *c, enum log_level level, uint8_t code, uint8_t reason,
                      const char *told, const char *why)
{
    struct mqtt_packet ack = {.type = MQTT_CONNACK};
    struct propbuf pb;

    propbuf_init(&pb);
    if (c->out.version == MQTT_V5) {
        code = reason ? reason : v5_reason(code);
        propbuf_str(&pb, MQTT_PROP_REASON_STRING, told, strlen(told));
        if (!pb.failed)
            ack.u.connack.props = propbuf_props(&pb);
    }
    ack.u.connack.code = code;
    conn_send(c, &ack);
    propbuf_free(&pb);
    conn_close_at(c, level, c->out.version == MQTT_V5 ? "CONNACK 0x%02x: %s" : "CONNACK %u: %s", code,
                  why);
}

static void refuse_as(struct conn *c, uint8_t code, uint8_t reason, const char *told,
                      const char *why)
{
    refuse_at(c, LOG_LEVEL_NOTICE, code, reason, told, why);
}

/* Refuse, telling the client what the log says. */
static void refuse5(struct conn *c, uint8_t code, uint8_t reason, const char *why)
{
    refuse_as(c, code, reason, why, why);
}

static void refuse(struct conn *c, uint8_t code, const char *why)
{
    refuse5(c, code, 0, why);
}

/* Random bytes in an assigned client id: unique by chance, and telling nothing. */
#define ASSIGNED_ID_RANDOM_BYTES 12

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

/* Build the will message from CONNECT, or refuse and return -1. */
static int take_will(struct conn *c, const struct mqtt_connect *ck, const struct limits *l)
{
    char why[160];
    int rc = topic_check_name((const char *)ck->will_topic.data, ck->will_topic.len,
                              l->max_topic_length);
    if (rc < 0) {
        char topic_why[96];
        topic_describe(rc, ck->will_topic.len, l->max_topic_length, topic_why,
                       sizeof(topic_why));
        snprintf(why, sizeof(why), "will topic refused: %s", topic_why);
        refuse5(c, MQTT_CONNACK_UNAVAILABLE, MQTT_RC_TOPIC_NAME_INVALID, why);
        return -1;
    }
    if (ck->will_payload.len > l->max_payload) {
        snprintf(why, sizeof(why), "will payload of %zu bytes exceeds max-payload %zu",
                 ck->will_payload.len, l->max_payload);
        refuse5(c, MQTT_CONNACK_UNAVAILABLE, MQTT_RC_PACKET_TOO_LARGE, why);
        return -1;
    }
    struct message_v5 v5 = {0};
    struct propbuf pb;
    propbuf_init(&pb);
    if (ck->version == MQTT_V5) {
        struct mqtt_prop delay;
        if (codec_find_prop(&ck->will_props, MQTT_PROP_WILL_DELAY, &delay))
            c->will_delay = delay.u32;
        bool text = handlers_message_props(&ck->will_props, &pb, &v5.expiry);
        if (text && codec_check_utf8(ck->will_payload.data, ck->will_payload.len) != CODEC_OK) {
            propbuf_free(&pb);
            refuse5(c, MQTT_CONNACK_UNAVAILABLE, MQTT_RC_PAYLOAD_FORMAT_INVALID,
                    "the will's payload is not UTF-8 though its Payload Format Indicator says "
                    "so");
            return -1;
        }
        v5.props = pb.data;
        v5.props_len = pb.len;
    }
    char small[256];
    bool slash;
    char *topic = handlers_normalize(&ck->will_topic, small, sizeof(small), &slash);
    if (topic && !pb.failed)
        c->will = message_new(topic, strlen(topic), ck->will_payload.data, ck->will_payload.len,
                              ck->will_qos, ck->will_retain, &v5);
    if (topic != small)
        free(topic);
    propbuf_free(&pb);
    if (!c->will) {
        refuse(c, MQTT_CONNACK_UNAVAILABLE, "out of memory storing the will");
        return -1;
    }
    return 0;
}

/*
 * Refuse wrong credentials: the client hears only that they were wrong; the
 * log says "`what` 'USER'`detail`", the user name escaped, or hidden when it
 * is a token's secret sent in the wrong field.
 */
static void refuse_login(struct conn *c, const struct mqtt_buf *username, const char *what,
                         const char *detail)
{
    char user[96], why[256];

    if (catalog_token_by_secret(c->broker->catalog, username->data, username->len))
        snprintf(user, sizeof(user), "<a token's secret, not shown>");
    else
        log_escape(username->data, username->len, user, sizeof(user));
    snprintf(why, sizeof(why), "bad user name or password: %s '%s'%s", what, user, detail);
    refuse_as(c, MQTT_CONNACK_BAD_CREDENTIALS, 0, "bad user name or password", why);
}

/*
 * Cloud mode: the user name names the instance, the password is a token's
 * secret. Sets *inst and *token (a new reference), or refuses and returns -1;
 * also -1 when the login waits for a fresh look at the database (an instance
 * or token aviaryctl has just made). Wrong credentials all get the same
 * code and text, so that a client cannot tell an unknown instance from a
 * wrong secret; the log says which it was.
 */
static int cloud_login(struct conn *c, const struct mqtt_connect *ck, struct instance **inst,
                       struct catalog_token **token)
{
    struct broker *b = c->broker;
    char name[CATALOG_NAME_MAX + 1];
    char why[256];

    if (!ck->has_username || !ck->has_password) {
        refuse(c, MQTT_CONNACK_NOT_AUTHORIZED,
               "not authorized: cloud mode needs a user name (the instance) and a password "
               "(a token)");
        return -1;
    }
    const struct catalog_instance *ci = NULL;
    if (ck->username.len < sizeof(name)) {
        memcpy(name, ck->username.data, ck->username.len);
        name[ck->username.len] = '\0';
        ci = catalog_instance(b->catalog, name);
    }
    struct catalog_token *t =
        ci ? catalog_token_by_secret(b->catalog, ck->password.data, ck->password.len) : NULL;
    if ((!ci || !t) && login_wait(b, c))
        return -1;
    if (!ci) {
        refuse_login(c, &ck->username, "no instance", "");
        return -1;
    }
    if (!t || strcmp(t->instance, name) != 0) {
        refuse_login(c, &ck->username, "the password is no live token of instance",
                     t ? " (it belongs to another instance)" : " (unknown or revoked)");
        return -1;
    }
    if (t->expires && t->expires <= time(NULL)) {
        snprintf(why, sizeof(why), "not authorized: token %s of instance '%s' has expired",
                 t->id, name);
        refuse_as(c, MQTT_CONNACK_NOT_AUTHORIZED, 0, "not authorized: the token has expired",
                  why);
        return -1;
    }
    if (!t->expires && !c->link->meta.over_tls && !b->allow_keys_without_tls) {
        snprintf(why, sizeof(why),
                 "not authorized: token %s is a key (no expiry) and keys need TLS; this "
                 "listener has none (see allow-keys-without-tls)",
                 t->id);
        refuse_as(c, MQTT_CONNACK_NOT_AUTHORIZED, 0,
                  "not authorized: a key (a token without expiry) needs a TLS connection", why);
        return -1;
    }
    if (!(*inst = login_instance(b, name))) {
        refuse(c, MQTT_CONNACK_UNAVAILABLE, "out of memory creating the instance");
        return -1;
    }
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
    refuse_as(c, MQTT_CONNACK_NOT_AUTHORIZED, 0,
              "not authorized: the token is bound to another client id", why);
    return -1;
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
        snprintf(why, sizeof(why), "quota exceeded: instance '%s' has %zu persistent sessions "
                 "(max-sessions %zu)", inst->name, inst->persistent_sessions, l->max_sessions);
        instance_note_refusal(inst, INSTANCE_REFUSED_SESSIONS,
                              "new persistent sessions refused (max-sessions %zu)",
                              l->max_sessions);
    } else if (instance_over_bytes(inst)) {
        snprintf(why, sizeof(why), "quota exceeded: instance '%s' holds %zu bytes "
                 "(max-instance-bytes %zu)", inst->name, inst->account->bytes,
                 l->max_instance_bytes);
        instance_note_refusal(inst, INSTANCE_REFUSED_BYTES,
                              "new persistent sessions refused (max-instance-bytes %zu)",
                              l->max_instance_bytes);
    } else {
        return 0;
    }
    /* The instance's line counts these; each one is logged at info level. */
    refuse_at(c, LOG_LEVEL_INFO, MQTT_CONNACK_UNAVAILABLE, MQTT_RC_QUOTA_EXCEEDED, why, why);
    return -1;
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
            refuse5(c, MQTT_CONNACK_NOT_AUTHORIZED, MQTT_RC_BAD_AUTH_METHOD, why);
            return -1;
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
    const char *assigned_id;  /* the id the broker gave it, or NULL */
    bool keepalive_changed;   /* announce Server Keep Alive */
    bool expiry_changed;      /* announce the Session Expiry Interval granted */
    uint32_t expiry;
    bool response_info;       /* it asked for Response Information */
};

static void connack_accept(struct conn *c, bool session_present, const struct connack5 *v5,
                           const struct limits *l)
{
    struct mqtt_packet ack = {.type = MQTT_CONNACK};
    struct propbuf pb;
    char response[LIMITS_MAX_CLIENT_ID_BUFFER + 16];

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
        /* A topic prefix the client may build its response topics on (MQTT 5 4.10). */
        if (v5->response_info && topic_safe(c->session->client_id)) {
            snprintf(response, sizeof(response), "response/%s", c->session->client_id);
            propbuf_str(&pb, MQTT_PROP_RESPONSE_INFO, response, strlen(response));
        }
        if (pb.failed) {
            propbuf_free(&pb);
            conn_close(c, "out of memory building CONNACK");
            return;
        }
        ack.u.connack.props = propbuf_props(&pb);
    }
    conn_send(c, &ack);
    propbuf_free(&pb);
}

static void handle_connect_body(struct conn *c, const struct mqtt_packet *p)
{
    const struct mqtt_connect *ck = &p->u.connect;
    struct broker *b = c->broker;
    char client_id[LIMITS_MAX_CLIENT_ID_BUFFER];
    struct connack5 v5 = {0};
    uint32_t asked_expiry = 0;

    c->out.version = ck->version;
    if (ck->version == MQTT_V5 && take_connect_props(c, ck, &asked_expiry, &v5.response_info) < 0)
        return;

    /* Past max-memory the broker keeps serving whom it has, and takes nobody new. */
    if (core_memory_full(b)) {
        char why[160];
        b->memory_refusals++;
        snprintf(why, sizeof(why), "server unavailable: %zu MB resident, over max-memory %zu MB",
                 b->memory_resident >> 20, b->max_memory >> 20);
        refuse5(c, MQTT_CONNACK_UNAVAILABLE, MQTT_RC_QUOTA_EXCEEDED, why);
        return;
    }
    struct instance *inst = b->local;
    struct catalog_token *token = NULL;
    if (b->cloud && cloud_login(c, ck, &inst, &token) < 0)
        return;
    /* The conn owns the reference from here: conn_free() drops it whatever happens. */
    c->token = token;
    const struct limits *l = &inst->limits;

    size_t id_chars = utf8_length(ck->client_id.data, ck->client_id.len);
    if (id_chars > l->max_client_id || ck->client_id.len >= sizeof(client_id)) {
        char why[96];
        snprintf(why, sizeof(why), "client id of %zu characters is longer than max-client-id %zu",
                 id_chars, l->max_client_id);
        refuse(c, MQTT_CONNACK_ID_REJECTED, why);
        return;
    }
    if (ck->client_id.len == 0) {
        /* MQTT 5 assigns an id whatever Clean Start says (MQTT 5 3.1.3.1). */
        if (ck->version == MQTT_V31 || (!ck->clean && ck->version != MQTT_V5)) {
            refuse(c, MQTT_CONNACK_ID_REJECTED,
                   ck->version == MQTT_V31 ? "empty client id (MQTT 3.1 requires one)"
                                           : "empty client id with clean session 0");
            return;
        }
        generate_client_id(client_id, sizeof(client_id));
        v5.assigned_id = client_id;
    } else {
        memcpy(client_id, ck->client_id.data, ck->client_id.len);
        client_id[ck->client_id.len] = '\0';
    }
    /* The log's copy: escaped, so an id cannot forge log lines, and truncated to fit. */
    log_escape(client_id, strlen(client_id), c->client_id, sizeof(c->client_id));

    if (check_binding(c, token, client_id) < 0)
        return;
    struct session *s = strmap_get(&inst->sessions, client_id);
    bool takes_over = s && s->conn;
    if (l->max_connections && inst->conn_count >= l->max_connections && !takes_over) {
        char why[160];
        snprintf(why, sizeof(why), "server unavailable: instance '%s' has %zu connections "
                 "(max-connections %zu)", inst->name, inst->conn_count, l->max_connections);
        refuse5(c, MQTT_CONNACK_UNAVAILABLE, MQTT_RC_QUOTA_EXCEEDED, why);
        return;
    }
    uint32_t expiry = ck->version == MQTT_V5 ? asked_expiry
                                             : (ck->clean ? 0 : SESSION_NEVER_EXPIRES);
    uint32_t granted = grant_session_expiry(expiry, l);
    /* One more session outliving its connection (a Clean Start replacing one is not). */
    if (granted && !(s && s->expiry) && refuse_over_quota(c, inst) < 0)
        return;
    if (ck->will && take_will(c, ck, l) < 0)
        return;
    if (c->will)
        message_charge(c->will, inst->account);
    /* A will is a PUBLISH made in advance: the token must allow its topic. */
    if (c->will && !access_may_publish(token, c->will->topic)) {
        char shown[160], why[256], told[256];
        log_escape_str(c->will->topic, shown, sizeof(shown));
        snprintf(why, sizeof(why), "not authorized: token %s may not publish the will topic '%s'",
                 token->id, shown);
        snprintf(told, sizeof(told), "not authorized: the will topic '%s' is not allowed", shown);
        refuse_as(c, MQTT_CONNACK_NOT_AUTHORIZED, 0, told, why);
        return;
    }

    /* Take-over: the same client id in the same instance closes the older connection. */
    if (s && s->conn) {
        log_notice("client %s: taken over by a new connection from %s", c->client_id,
                   c->link->meta.peer);
        conn_disconnect(s->conn, MQTT_RC_SESSION_TAKEN_OVER,
                        "taken over by a new connection with the same client id");
        s = strmap_get(&inst->sessions, client_id); /* gone if it ended with its connection */
    }
    /* Clean Start: the old session ends here, and with it a will that waited for its delay. */
    if (s && ck->clean) {
        conn_end_session(s);
        s = NULL;
    }
    v5.expiry_changed = granted != expiry;
    v5.expiry = granted;
    bool session_present = s != NULL;
    if (s) {
        session_set_expiry(s, granted);
    } else {
        s = session_new(inst, client_id, granted);
        if (!s || strmap_put(&inst->sessions, client_id, s, NULL) < 0) {
            session_free(s);
            refuse(c, MQTT_CONNACK_UNAVAILABLE, "out of memory creating the session");
            return;
        }
    }

    c->in_alias_max = (uint16_t)l->max_topic_aliases;
    /* Aliases toward the client cost a map entry each: max-topic-aliases bounds them too. */
    if (c->out.alias_max > l->max_topic_aliases)
        c->out.alias_max = (uint16_t)l->max_topic_aliases;
    conn_attach(c, s);
    if (token) {
        catalog_token_unref(s->token);
        s->token = catalog_token_ref(token);
    }
    c->keepalive = (uint16_t)clamp_keepalive(ck->keepalive, l);
    v5.keepalive_changed = c->keepalive != ck->keepalive;
    timers_start_keepalive(c);
    if (timers_start_token(c) < 0)
        return;

    /* MQTT 3.1 has no session-present flag: that byte is reserved there. */
    connack_accept(c, session_present && ck->version != MQTT_V31, &v5, l);
    log_info("client %s connected from %s to instance %s%s%s (MQTT %s, clean %d, keep-alive "
             "%u s, session expiry %ld s%s)",
             c->client_id, c->link->meta.peer, inst->name, token ? " with token " : "",
             token ? token->id : "",
             ck->version == MQTT_V31 ? "3.1" : ck->version == MQTT_V5 ? "5.0" : "3.1.1",
             ck->clean, c->keepalive, granted == SESSION_NEVER_EXPIRES ? -1L : (long)granted,
             session_present ? ", session resumed" : "");
    if (c->state != CONN_ACTIVE)
        return;
    if (session_present)
        session_resume(s);
    if (c->token_warning_due && c->state == CONN_ACTIVE)
        timers_token_warning(c);
}

int handle_connect(struct conn *c, const struct mqtt_packet *p)
{
    handle_connect_body(c, p);
    return 0;
}
