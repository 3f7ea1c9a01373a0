#include "broker/action.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/conn.h"
#include "broker/instance.h"
#include "broker/session.h"
#include "codec/codec.h"
#include "util/json_read.h"
#include "util/log.h"

/* The members an action may have: "type" first. */
enum { ACTION_TYPE = 0, ACTION_CLIENT_ID = 1, ACTION_MEMBERS = 2 };

/* Close client `id` of `c`'s instance for `c`. */
static enum action_result action_close(struct conn *c, const char *id, char *why, size_t size)
{
    struct conn *target = conn_of_client(c->session->instance, id);
    char shown[96];

    log_escape_str(id, shown, sizeof(shown));
    if (!target) {
        snprintf(why, size, "$action close: no client '%s' is connected", shown);
        return ACTION_NO_CLIENT;
    }
    snprintf(why, size, "closed through $action by client %s", c->client_id);
    if (target == c)
        return ACTION_SELF;
    conn_disconnect(target, MQTT_RC_ADMINISTRATIVE_ACTION, "%s", why);
    snprintf(why, size, "$action close: client '%s' closed", shown);
    return ACTION_DONE;
}

enum action_result action_run(struct conn *c, const uint8_t *payload, size_t len, char *why,
                              size_t size)
{
    static const char *const keys[ACTION_MEMBERS] = {"type", "client_id"};
    char *values[ACTION_MEMBERS];
    enum action_result result = ACTION_MALFORMED;

    int rc = json_read_flat((const char *)payload, len, keys, values, ACTION_MEMBERS);
    if (rc < 0)
        snprintf(why, size, "$action ignored: %s",
                 rc == -ENOMEM ? "out of memory reading it" : "not a flat JSON object");
    else if (!values[ACTION_TYPE] || strcmp(values[ACTION_TYPE], "close") != 0)
        snprintf(why, size, "$action ignored: \"type\" is not \"close\"");
    else if (!values[ACTION_CLIENT_ID])
        snprintf(why, size, "$action close ignored: no \"client_id\" string");
    else
        result = action_close(c, values[ACTION_CLIENT_ID], why, size);
    for (size_t i = 0; i < ACTION_MEMBERS; i++)
        free(values[i]);
    if (result != ACTION_SELF)
        log_notice("client %s: %s", c->client_id, why);
    return result;
}
