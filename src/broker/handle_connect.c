/* CONNECT: validate, pick the instance and session, answer CONNACK (MQTT 3.1.1 §3.1, §3.2). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/util.h>

#include "broker/broker.h"
#include "broker/conn.h"
#include "broker/handlers.h"
#include "broker/instance.h"
#include "broker/message.h"
#include "broker/session.h"
#include "broker/topic.h"
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

    char username[256] = "";
    if (ck->has_username)
        snprintf(username, sizeof(username), "%.*s", (int)ck->username.len,
                 (const char *)ck->username.data);
    struct instance *inst = broker_instance_for(b, username);
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

    if (ck->will && take_will(c, ck, l) < 0)
        return;

    /* Take-over: the same client id in the same instance closes the older connection. */
    struct session *s = strmap_get(&inst->sessions, client_id);
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
    c->keepalive = (uint16_t)clamp_keepalive(ck->keepalive, l);
    conn_start_keepalive(c);

    /* MQTT 3.1 has no session-present flag: that byte is reserved there. */
    connack(c, MQTT_CONNACK_ACCEPTED, session_present && ck->version != MQTT_V31);
    log_info("client %s connected from %s (MQTT %s, clean %d, keep-alive %u s%s)", c->client_id,
             c->meta.peer, ck->version == MQTT_V31 ? "3.1" : "3.1.1", ck->clean, c->keepalive,
             session_present ? ", session resumed" : "");
    if (session_present)
        session_resume(s, c);
}
