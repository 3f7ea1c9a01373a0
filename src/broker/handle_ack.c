/* PUBACK, PUBREC, PUBCOMP for messages we sent; PUBREL for QoS 2 messages we received. */
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

void handle_ack(struct conn *c, const struct mqtt_packet *p)
{
    struct session *s = c->session;
    uint16_t id = p->u.ack.packet_id;

    if (p->type == MQTT_PUBREL) {
        /* Answer PUBCOMP even for an unknown id: the sender may be retrying after a loss. */
        if (session_qos2_release(s, id) < 0)
            log_debug("client %s: PUBREL for unknown packet id %u", c->client_id, id);
        struct mqtt_packet comp = {.type = MQTT_PUBCOMP};
        comp.u.ack.packet_id = id;
        conn_send(c, &comp);
        return;
    }
    if (session_ack(s, p->type, id) < 0)
        log_info("client %s: %s for packet id %u, which is not in flight (ignored)",
                 c->client_id, ack_name(p->type), id);
}
