/* PUBACK, PUBREC, PUBCOMP for messages we sent; PUBREL for QoS 2 messages we received. */
#include <errno.h>

#include "broker/conn.h"
#include "broker/handlers.h"
#include "broker/session.h"
#include "util/log.h"

static const char *ack_name(uint8_t type)
{
    switch (type) {
    case MQTT_PUBACK:
        return "PUBACK";
    case MQTT_PUBREC:
        return "PUBREC";
    case MQTT_PUBCOMP:
        return "PUBCOMP";
    default:
        return "PUBREL";
    }
}

static void handle_ack_body(struct conn *c, const struct mqtt_packet *p)
{
    struct session *s = c->session;
    uint16_t id = p->u.ack.packet_id;

    if (p->type == MQTT_PUBREL) {
        /* Answer PUBCOMP even for an unknown id: the sender may be retrying after a loss. */
        struct mqtt_packet comp = {.type = MQTT_PUBCOMP};
        if (session_qos2_release(s, id) < 0) {
            log_debug("client %s: PUBREL for unknown packet id %u", c->client_id, id);
            comp.u.ack.reason = MQTT_RC_PACKET_ID_NOT_FOUND;
        }
        comp.u.ack.packet_id = id;
        conn_send(c, &comp);
        return;
    }
    /* A PUBREC with a failure code ends its QoS 2 exchange: no PUBREL follows (MQTT 5 4.3.3). */
    uint8_t type = p->type == MQTT_PUBREC && p->u.ack.reason >= 0x80 ? MQTT_PUBCOMP : p->type;
    if (type != p->type)
        log_info("client %s: PUBREC 0x%02x for packet id %u: it refused the message",
                 c->client_id, p->u.ack.reason, id);
    int rc = session_ack(s, type, id, type != p->type);
    if (rc == -EPROTO)
        conn_disconnect(c, MQTT_RC_PROTOCOL_ERROR,
                        "protocol error: %s for packet id %u, whose QoS exchange waits for "
                        "another acknowledgement",
                        ack_name(p->type), id);
    else if (rc < 0)
        log_info("client %s: %s for packet id %u, which is not in flight (ignored)",
                 c->client_id, ack_name(p->type), id);
}

int handle_ack(struct conn *c, const struct mqtt_packet *p)
{
    handle_ack_body(c, p);
    return 0;
}
