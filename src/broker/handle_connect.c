/* CONNECT: validate, pick the instance and session, answer CONNACK (MQTT 3.1.1 §3.1, §3.2). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/util.h>

#include "broker/access.h"
#include "broker/broker.h"
#include "broker/conn.h"
#include "broker/handlers.h"
#include "broker/instance.h"
#include "broker/message.h"
#include "broker/session.h"
#include "broker/topic.h"
#include "store/catalog.h"
#include "util/log.h"

/* MQTT 5.0 CONNACK reason "Unsupported Protocol Version", until MQTT 5 is served. */
#define MQTT5_UNSUPPORTED_PROTOCOL_VERSION 0x84

static void connack(struct conn *c, uint8_t code, bool session_present)
{
    struct mqtt_packet ack = {.type = MQTT_CONNACK};
    ack.u.connack.code = code;
    ack.u.connack.session_present = session_present;
    conn_send(c, &ack);
}

/* Refuse the CONNECT with 3.1.1 return code `code` and close, logging why. */
static void refuse(struct conn *c, uint8_t code, const char *why)
{
    connack(c, code, false);
    conn_close(c, "CONNACK %u: %s", code, why);
}

/* A client id for a client that sent none: unique within this process. */
static void generate_client_id(struct conn *c, char *out, size_t size)
{
    uint32_t salt;
    evutil_secure_rng_get_bytes(&salt, sizeof(salt));
    snprintf(out, size, "auto-%08x%llx", salt, (unsigned long long)c->id);
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

/* Build the will message from CONNECT, or close the connection and return -1. */
static int take_will(struct conn *c, const struct mqtt_connect *ck, const struct limits *l)
{
    int rc = topic_check_name((const char *)ck->will_topic.data, ck->will_topic.len,
                              l->max_topic_length);
    if (rc < 0) {
        char why[96];
        topic_describe(rc, ck->will_topic.len, l->max_topic_length, why, sizeof(why));
        conn_close(c, "will topic refused: %s", why);
        return -1;
    }
    if (ck->will_payload.len > l->max_payload) {
        conn_close(c, "will payload of %zu bytes exceeds max-payload %zu",
                   ck->will_payload.len, l->max_payload);
        return -1;
    }
    char small[256];
    bool slash;
    char *topic = handlers_normalize(&ck->will_topic, small, sizeof(small), &slash);
    if (topic)
        c->will = message_new(topic, strlen(topic), ck->will_payload.data, ck->will_payload.len,
                              ck->will_qos, ck->will_retain);
    if (topic != small)
        free(topic);
    if (!c->will) {
        conn_close(c, "out of memory storing the will");
        return -1;
    }
    return 0;
}

/* Refuse wrong credentials: "`what` 'USER'`detail`", the user name escaped for the log. */
static void refuse_login(struct conn *c, const struct mqtt_buf *username, const char *what,
                         const char *detail)
{
    char user[96], why[256];
    log_escape(username->data, username->len, user, sizeof(user));
    snprintf(why, sizeof(why), "bad user name or password: %s '%s'%s", what, user, detail);
    refuse(c, MQTT_CONNACK_BAD_CREDENTIALS, why);
}

/*
 * Cloud mode: the user name names the instance, the password is a token's
 * secret. Sets *inst and *token (a new reference), or refuses and returns -1.
 * Wrong credentials all get the same code, so that a client cannot tell an
 * unknown instance from a wrong secret; the log says which it was.
 */
static int cloud_login(struct conn *c, const struct mqtt_connect *ck, struct instance **inst,
                       struct catalog_token **token)
{
    struct broker *b = c->broker;
    char name[STORE_NAME_MAX + 1];

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
    if (!ci) {
        refuse_login(c, &ck->username, "no instance", "");
        return -1;
    }
    struct catalog_token *t =
        catalog_token_by_secret(b->catalog, ck->password.data, ck->password.len);
    if (!t || strcmp(t->instance, name) != 0) {
        refuse_login(c, &ck->username, "the password is no live token of instance",
                     t ? " (it belongs to another instance)" : " (unknown or revoked)");
        return -1;
    }
    char why[256];
    if (t->expires && t->expires <= time(NULL)) {
        snprintf(why, sizeof(why), "not authorized: token %s of instance '%s' has expired",
                 t->id, name);
        refuse(c, MQTT_CONNACK_NOT_AUTHORIZED, why);
        return -1;
    }
    if (!t->expires && !c->meta.over_tls && !b->allow_keys_without_tls) {
        snprintf(why, sizeof(why),
                 "not authorized: token %s is a key (no expiry) and keys need TLS; this "
                 "listener has none (see allow-keys-without-tls)",
                 t->id);
        refuse(c, MQTT_CONNACK_NOT_AUTHORIZED, why);
        return -1;
    }
    if (!(*inst = broker_instance_for(b, name))) {
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
    refuse(c, MQTT_CONNACK_NOT_AUTHORIZED, why);
    return -1;
}

void handle_connect(struct conn *c, const struct mqtt_packet *p)
{
    const struct mqtt_connect *ck = &p->u.connect;
    struct broker *b = c->broker;
    char client_id[LIMITS_MAX_CLIENT_ID_BUFFER];

    c->version = ck->version;
    if (ck->version == MQTT_V5) {
        connack(c, MQTT5_UNSUPPORTED_PROTOCOL_VERSION, false);
        conn_close(c, "CONNACK 0x84: MQTT 5.0 is not served yet");
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
        if (!ck->clean || ck->version == MQTT_V31) {
            refuse(c, MQTT_CONNACK_ID_REJECTED,
                   ck->version == MQTT_V31 ? "empty client id (MQTT 3.1 requires one)"
                                           : "empty client id with clean session 0");
            return;
        }
        generate_client_id(c, client_id, sizeof(client_id));
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
        refuse(c, MQTT_CONNACK_UNAVAILABLE, why);
        return;
    }
    if (ck->will && take_will(c, ck, l) < 0)
        return;
    /* A will is a PUBLISH made in advance: the token must allow its topic. */
    if (c->will && !access_may_publish(token, c->will->topic)) {
        char shown[160], why[256];
        log_escape_str(c->will->topic, shown, sizeof(shown));
        snprintf(why, sizeof(why), "not authorized: token %s may not publish the will topic '%s'",
                 token->id, shown);
        refuse(c, MQTT_CONNACK_NOT_AUTHORIZED, why);
        return;
    }

    /* Take-over: the same client id in the same instance closes the older connection. */
    if (s && s->conn) {
        log_notice("client %s: taken over by a new connection from %s", c->client_id,
                   c->meta.peer);
        conn_close(s->conn, "taken over by a new connection with the same client id");
        s = strmap_get(&inst->sessions, client_id); /* gone if it was a clean session */
    }
    if (s && ck->clean) {
        strmap_remove(&inst->sessions, client_id);
        session_free(s);
        s = NULL;
    }
    bool session_present = s != NULL;
    if (!s) {
        s = session_new(inst, client_id, ck->clean);
        if (!s || strmap_put(&inst->sessions, client_id, s, NULL) < 0) {
            session_free(s);
            refuse(c, MQTT_CONNACK_UNAVAILABLE, "out of memory creating the session");
            return;
        }
    }

    s->conn = c;
    c->session = s;
    c->state = CONN_ACTIVE;
    c->instance = inst;
    c->counted = true;
    inst->conn_count++;
    if (token) {
        catalog_token_unref(s->token);
        s->token = catalog_token_ref(token);
    }
    c->keepalive = (uint16_t)clamp_keepalive(ck->keepalive, l);
    conn_start_keepalive(c);
    if (conn_start_token_timer(c) < 0)
        return;

    /* MQTT 3.1 has no session-present flag: that byte is reserved there. */
    connack(c, MQTT_CONNACK_ACCEPTED, session_present && ck->version != MQTT_V31);
    log_info("client %s connected from %s to instance %s%s%s (MQTT %s, clean %d, keep-alive "
             "%u s%s)",
             c->client_id, c->meta.peer, inst->name, token ? " with token " : "",
             token ? token->id : "", ck->version == MQTT_V31 ? "3.1" : "3.1.1", ck->clean,
             c->keepalive, session_present ? ", session resumed" : "");
    if (session_present)
        session_resume(s, c);
    if (c->token_warning_due && c->state == CONN_ACTIVE)
        conn_token_warning(c);
}
