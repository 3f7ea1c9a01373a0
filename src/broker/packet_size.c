#include "broker/packet_size.h"

#include "codec/codec.h"
#include "util/limits.h"

/* Room for MQTT 5 properties in any one packet, beyond what the limits account for. */
#define PACKET_PROPERTY_ROOM 1024
/* Acknowledgements, pings and the rest: a few bytes in MQTT 3.1.1, never this many. */
#define PACKET_MAX_CONTROL 65536

size_t packet_size_max(const struct limits *l, uint8_t type, const char **what)
{
    /* A string field on the wire: 2-byte length, then at most 65535 bytes. */
    const size_t any_string = 2 + 65535;

    switch (type) {
    case MQTT_PUBLISH:
        *what = "max-payload";
        return 2 + l->max_topic_length + 2 + l->max_payload + PACKET_PROPERTY_ROOM;
    case MQTT_CONNECT:
        /* Fixed part; client id (4 bytes per UTF-8 character at most); will; credentials. */
        *what = "max-client-id, max-topic-length and max-payload";
        return 10 + 2 * PACKET_PROPERTY_ROOM + 2 + 4 * l->max_client_id + 2 +
               l->max_topic_length + 2 + l->max_payload + 2 * any_string;
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE: {
        /* Enough for every allowed subscription at full length, and never less than 64 KB. */
        size_t filters = l->max_subscriptions * (3 + l->max_topic_length);
        *what = "max-subscriptions and max-topic-length";
        return 2 + PACKET_PROPERTY_ROOM +
               (filters > PACKET_MAX_CONTROL ? filters : PACKET_MAX_CONTROL);
    }
    default:
        *what = "the control packet size";
        return PACKET_MAX_CONTROL;
    }
}

uint32_t packet_size_announced(const struct limits *l)
{
    const char *what;
    size_t most = packet_size_max(l, MQTT_PUBLISH, &what);
    size_t subscribe = packet_size_max(l, MQTT_SUBSCRIBE, &what);

    if (subscribe > most)
        most = subscribe;
    if (most > MQTT_MAX_REMAINING_LENGTH)
        most = MQTT_MAX_REMAINING_LENGTH;
    /* The fixed header: a type byte and the remaining length's own bytes. */
    size_t length_bytes = most < 128 ? 1 : most < 16384 ? 2 : most < 2097152 ? 3 : 4;
    return (uint32_t)(most + 1 + length_bytes);
}
