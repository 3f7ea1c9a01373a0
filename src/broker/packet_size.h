/*
 * packet_size — how large a packet may be under an instance's limits.
 *
 * The read side refuses a packet whose announced length exceeds what any
 * packet within every limit can need, before buffering it; MQTT 5 clients
 * are told the largest of those as the server's Maximum Packet Size.
 */
#ifndef AVIARY_PACKET_SIZE_H
#define AVIARY_PACKET_SIZE_H

#include <stddef.h>
#include <stdint.h>

struct limits;

/*
 * The largest remaining length a packet of `type` may announce under limits
 * `l`. Sets *what to the limits to name when refusing one.
 */
size_t packet_size_max(const struct limits *l, uint8_t type, const char **what);

/*
 * The Maximum Packet Size announced to MQTT 5 clients under limits `l`: the
 * largest packet after CONNECT that a client within every limit can need.
 */
uint32_t packet_size_announced(const struct limits *l);

#endif
