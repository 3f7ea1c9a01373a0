#include "broker/login.h"

#include <string.h>

#include <event2/event.h>

#include "broker/conn.h"
#include "broker/core.h"
#include "broker/instance.h"
#include "tenancy/catalog.h"
#include "util/clock.h"
#include "util/log.h"
#include "util/strmap.h"

bool login_credentials(const uint8_t *user, size_t user_len, const uint8_t *password,
                       size_t password_len, struct login_credentials *out)
{
    const uint8_t *colon = password_len == 0 ? memchr(user, ':', user_len) : NULL;

    if (colon) {
        *out = (struct login_credentials){.name = user,
                                          .name_len = (size_t)(colon - user),
                                          .secret = colon + 1,
                                          .secret_len = user_len - (size_t)(colon - user) - 1,
                                          .in_user_name = true};
        return true;
    }
    *out = (struct login_credentials){
        .name = user, .name_len = user_len, .secret = password, .secret_len = password_len};
    return password_len > 0;
}

struct instance *login_instance(struct broker *b, const char *name)
{
    if (!b->cloud)
        return b->local;
    struct instance *inst = strmap_get(&b->instances, name);
    if (inst)
        return inst;
    const struct catalog_instance *ci = catalog_instance(b->catalog, name);
    if (!ci)
        return NULL;
    inst = instance_new(b, name, &ci->limits);
    if (inst)
        inst->serial = ci->serial;
    if (inst && strmap_put(&b->instances, name, inst, NULL) < 0) {
        instance_free(inst); /* new: no sessions yet */
        inst = NULL;
    }
    return inst;
}

/* Ask for the next look at the database (its time has come). */
static void login_recheck_cb(evutil_socket_t fd, short what, void *arg)
{
    struct broker *b = arg;

    b->recheck_ms = clock_ms();
    b->recheck(b->recheck_ctx, ++b->recheck_asked);
}

void login_recheck_soon(struct broker *b)
{
    uint64_t since = clock_ms() - b->recheck_ms;

    if (!b->recheck_ev && !(b->recheck_ev = evtimer_new(b->base, login_recheck_cb, b)))
        since = BROKER_RECHECK_INTERVAL_MS; /* out of memory: ask at once */
    else if (evtimer_pending(b->recheck_ev, NULL))
        return;
    if (b->recheck_ms == 0 || since >= BROKER_RECHECK_INTERVAL_MS) {
        login_recheck_cb(-1, 0, b);
        return;
    }
    uint64_t wait = BROKER_RECHECK_INTERVAL_MS - since;
    struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)(wait % 1000) * 1000};
    evtimer_add(b->recheck_ev, &tv);
}

bool login_wait(struct broker *b, struct conn *c)
{
    if (!b->recheck || c->login_rechecked)
        return false;
    struct conn_rare *rare = conn_rare(c);
    if (!rare) {
        log_error("client %s: out of memory: its login miss is final without a fresh look",
                  c->client_id);
        return false;
    }
    /* A look asked before this login arrived may have missed what aviaryctl just made. */
    rare->login_look = b->recheck_asked + 1;
    c->login_waiting = true;
    rare->login_next = b->login_waiters;
    b->login_waiters = c;
    link_pause_reading(&c->link);
    login_recheck_soon(b);
    return true;
}
