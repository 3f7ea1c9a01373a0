#include "broker/message.h"

#include <stdlib.h>
#include <string.h>

struct message *message_new(const char *topic, size_t topic_len, const uint8_t *payload,
                            size_t payload_len, uint8_t qos, bool retain)
{
    /* One allocation: header, topic with its NUL, then the payload. */
    struct message *m = malloc(sizeof(*m) + topic_len + 1 + payload_len);
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
    return m;
}

struct message *message_ref(struct message *m)
{
    m->refs++;
    return m;
}

void message_unref(struct message *m)
{
    if (m && --m->refs == 0)
        free(m);
}
