#include "cluster/bridge.h"

#include <string.h>
#include <time.h>

#include "broker/core.h"
#include "broker/instance.h"
#include "broker/message.h"
#include "cluster/stream.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/strmap.h"

struct instance *bridge_instance(struct broker *b, const char *name)
{
    if (b->cloud)
        return strmap_get(&b->instances, name);
    return b->local && !strcmp(b->local->name, name) ? b->local : NULL;
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
