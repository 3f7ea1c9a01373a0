/* DISCONNECT from a client (MQTT 3.1.1 §3.14, MQTT 5 §3.14). */
#include "broker/conn.h"
#include "broker/handlers.h"
#include "broker/instance.h"
#include "broker/session.h"
#include "util/log.h"

int handle_disconnect(struct conn *c, const struct mqtt_packet *p)
{
    const struct mqtt_disconnect *d = &p->u.disconnect;
    struct session *s = c->session;
    struct mqtt_prop prop;

    if (c->out.version != MQTT_V5) {
        return conn_finish(c, "client sent DISCONNECT");
    }
    if (codec_find_prop(&d->props, MQTT_PROP_SESSION_EXPIRY, &prop)) {
        /* A session that was to end with its connection cannot be kept now [MQTT-3.14.2-2]. */
        if (s->expiry == 0 && prop.u32 != 0) {
            return conn_fail_with(c, MQTT_RC_PROTOCOL_ERROR,
                                  "DISCONNECT sets a Session Expiry Interval of %lu s where "
                                  "CONNECT set 0",
                                  (unsigned long)prop.u32);
        }
        uint32_t max = s->instance->limits.max_session_expiry;
        session_set_expiry(s, max && prop.u32 > max ? max : prop.u32);
    }
    if (d->reason == MQTT_RC_DISCONNECT_WITH_WILL)
        return conn_fail(c, "client sent DISCONNECT 0x04: disconnect with its will");
    if (d->reason != MQTT_RC_SUCCESS)
        return conn_finish(c, "client sent DISCONNECT 0x%02x", d->reason);
    return conn_finish(c, "client sent DISCONNECT");
}
