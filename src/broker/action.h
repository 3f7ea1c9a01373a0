/*
 * action — what a client may ask of its instance by publishing to $action.
 *
 * One action so far: {"type":"close","client_id":"ID"} closes the
 * connection of client ID in the publisher's instance (MQTT 5: DISCONNECT
 * 0x98 Administrative action; MQTT 3.1.1: the connection is closed), and
 * $events says so in the "disconnected" event. Who may ask is the caller's
 * question (access_may_act). The payload is read by a strict, small parser
 * (util/json.h); anything else is refused with a log line and changes
 * nothing. Owns nothing. Core thread only.
 */
#ifndef AVIARY_ACTION_H
#define AVIARY_ACTION_H

#include <stddef.h>
#include <stdint.h>

struct conn;

enum action_result {
    ACTION_DONE = 0,      /* the client was closed */
    ACTION_MALFORMED = 1, /* not a JSON object naming a known action and its arguments */
    ACTION_NO_CLIENT = 2, /* no client of that id is connected to the instance */
    ACTION_SELF = 3,      /* the publisher closed itself: its handler ends it (conn_fail_with) */
};

/*
 * Carry out the action that `c` published in `payload` (`len` bytes). Writes
 * what happened, for the log and the acknowledgement's Reason String, to
 * `why`, and logs it. Returns what happened.
 */
enum action_result action_run(struct conn *c, const uint8_t *payload, size_t len, char *why,
                              size_t size);

#endif
