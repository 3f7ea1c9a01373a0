#include "cluster/bridge.h"

#include <string.h>
#include <time.h>

#include "broker/core.h"
#include "broker/instance.h"
#include "broker/message.h"
#include "broker/topic.h"
#include "codec/codec.h"
#include "cluster/stream.h"
#include "util/clock.h"
#include "util/error.h"
#include "util/log.h"
#include "util/scratch.h"
#include "util/strmap.h"

struct instance *bridge_instance(struct broker *b, const char *name)
{
    if (b->cloud)
        return strmap_get(&b->instances, name);
    return b->local && !strcmp(b->local->name, name) ? b->local : NULL;
}

/* Only what message_props_take() passes on, each well formed, and nothing after them. */
static bool props_whole(const uint8_t *data, size_t len)
{
    struct mqtt_props props = {data, len};
    struct mqtt_prop prop;
    size_t pos = 0;

    while (codec_next_prop(&props, &pos, &prop)) {
        switch (prop.id) {
        case MQTT_PROP_PAYLOAD_FORMAT:
        case MQTT_PROP_CONTENT_TYPE:
        case MQTT_PROP_RESPONSE_TOPIC:
        case MQTT_PROP_CORRELATION_DATA:
        case MQTT_PROP_USER_PROPERTY:
            break;
        default:
            return false;
        }
    }
    return pos == len;
}

int bridge_check(const struct instance *inst, const struct stream_message *sm, char *err,
                 size_t errlen)
{
    int rc = topic_check_name(sm->topic, sm->topic_len, inst->limits.max_topic_length,
                              topic_charset_of(&inst->limits));

    if (rc != TOPIC_OK)
        return error_set(err, errlen, "a message whose topic is not a topic name here (%s)",
                         topic_strerror(rc));
    if (sm->topic[0] == '$') {
        char small[128];
        struct scratch sc = SCRATCH_INIT(small);
        char *topic = scratch_get(&sc, sm->topic_len + 1);
        bool reserved = !topic;
        if (topic) {
            memcpy(topic, sm->topic, sm->topic_len);
            topic[sm->topic_len] = '\0';
            reserved = topic_is_reserved(topic) || !strcmp(topic, TOPIC_SYS_ACTION);
        }
        scratch_free(&sc);
        if (reserved)
            return error_set(err, errlen, "a message on a topic only the broker publishes to");
    }
    if (!props_whole(sm->props, sm->props_len))
        return error_set(err, errlen, "a message whose MQTT 5 properties are not well formed");
    return 0;
}

uint64_t bridge_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

struct message *bridge_message(struct instance *inst, const struct stream_message *sm)
{
    struct message_v5 v5 = {.props = sm->props, .props_len = sm->props_len, .expiry = sm->expiry};
    struct message *m = message_new(sm->topic, sm->topic_len, sm->payload, sm->payload_len, sm->qos,
                                    sm->retain, &v5);

    if (!m) {
        log_warning("cluster: out of memory taking a message of instance %s", inst->name);
        return NULL;
    }
    /* Its expiry counts from when it was published, on whichever node. */
    uint64_t now = bridge_wall_ms(), age = now > sm->published_ms ? now - sm->published_ms : 0;
    if (m->expiry)
        m->created_ms = m->created_ms > age ? m->created_ms - age : 0;
    message_charge(m, inst->account);
    return m;
}

void bridge_record_of(const struct message *m, const char *client_id, struct stream_message *sm)
{
    uint64_t now = bridge_wall_ms(), age = m->expiry ? clock_ms() - m->created_ms : 0;

    *sm = (struct stream_message){
        .qos = m->qos,
        .retain = m->retain,
        .expiry = m->expiry,
        .published_ms = now > age ? now - age : 0,
        .client_id = client_id ? client_id : "",
        .client_id_len = client_id ? strlen(client_id) : 0,
        .topic = m->topic,
        .topic_len = m->topic_len,
        .props = m->props,
        .props_len = m->props_len,
        .payload = m->payload,
        .payload_len = m->payload_len,
    };
}
