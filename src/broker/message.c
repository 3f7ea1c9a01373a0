#include "broker/message.h"

#include <stdlib.h>
#include <string.h>

#include "broker/propbuf.h"
#include "codec/codec.h"
#include "util/account.h"
#include "util/clock.h"

struct message *message_new(const char *topic, size_t topic_len, const uint8_t *payload,
                            size_t payload_len, uint8_t qos, bool retain,
                            const struct message_v5 *v5)
{
    size_t props_len = v5 ? v5->props_len : 0;
    /* One allocation: header, topic with its NUL, the payload, then the properties. */
    struct message *m = malloc(sizeof(*m) + topic_len + 1 + payload_len + props_len);
    if (!m)
        return NULL;
    m->refs = 1;
    m->qos = qos;
    m->retain = retain;
    m->topic_len = topic_len;
    m->payload_len = payload_len;
    m->topic = (char *)(m + 1);
    memcpy(m->topic, topic, topic_len);
    m->topic[topic_len] = '\0';
    m->payload = (uint8_t *)m->topic + topic_len + 1;
    if (payload_len)
        memcpy(m->payload, payload, payload_len);
    m->props = m->payload + payload_len;
    m->props_len = props_len;
    if (props_len)
        memcpy(m->props, v5->props, props_len);
    m->expiry = v5 ? v5->expiry : 0;
    m->created_ms = m->expiry ? clock_ms() : 0;
    m->account = NULL;
    m->kept_id = 0;
    m->keeper = NULL;
    return m;
}

size_t message_bytes(const struct message *m)
{
    return sizeof(*m) + m->topic_len + 1 + m->payload_len + m->props_len;
}

void message_charge(struct message *m, struct account *a)
{
    m->account = account_ref(a);
    account_charge(a, message_bytes(m));
}

struct message *message_ref(struct message *m)
{
    m->refs++;
    return m;
}

void message_unref(struct message *m)
{
    if (!m || --m->refs > 0)
        return;
    if (m->account) {
        account_release(m->account, message_bytes(m));
        account_unref(m->account);
    }
    if (m->keeper)
        m->keeper->dropped(m->keeper, m->kept_id);
    free(m);
}

bool message_expired(const struct message *m, uint64_t now_ms)
{
    return m->expiry && now_ms - m->created_ms >= (uint64_t)m->expiry * 1000u;
}

uint32_t message_expiry_left(const struct message *m, uint64_t now_ms)
{
    uint64_t waited = (now_ms - m->created_ms) / 1000u;
    return waited < m->expiry ? m->expiry - (uint32_t)waited : 1;
}

void message_restart_expiry(struct message *m)
{
    if (m->expiry)
        m->created_ms = clock_ms();
}

bool message_props_take(const struct mqtt_props *in, struct propbuf *out, struct message_v5 *v5)
{
    struct mqtt_prop prop;
    size_t pos = 0;
    bool text = false;

    v5->expiry = 0;
    while (codec_next_prop(in, &pos, &prop)) {
        switch (prop.id) {
        case MQTT_PROP_PAYLOAD_FORMAT:
            text = prop.u32 == 1;
            propbuf_add(out, &prop);
            break;
        case MQTT_PROP_CONTENT_TYPE:
        case MQTT_PROP_RESPONSE_TOPIC:
        case MQTT_PROP_CORRELATION_DATA:
        case MQTT_PROP_USER_PROPERTY:
            propbuf_add(out, &prop);
            break;
        case MQTT_PROP_MESSAGE_EXPIRY:
            v5->expiry = prop.u32;
            break;
        default:
            break; /* the Topic Alias and Will Delay are the receiver's, not the message's */
        }
    }
    /* Only now: a growing builder may have moved its block to the heap. */
    v5->props = out->data;
    v5->props_len = out->len;
    return text;
}
