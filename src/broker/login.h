/*
 * login — what a cloud CONNECT logs in to.
 *
 * The instance a client names is made at its first login, with its limits
 * from the catalog. A login that finds no such instance or token may have
 * raced aviaryctl, which has just made it: the CONNECT then waits, unread,
 * for one fresh look at the database, asked for at most every
 * BROKER_RECHECK_INTERVAL_MS so that wrong passwords cannot drive the
 * database. The program answers with broker_login_rechecked(). Core thread
 * only.
 */
#ifndef AVIARY_LOGIN_H
#define AVIARY_LOGIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct broker;
struct conn;
struct instance;

/* A cloud login's instance name and token secret, pointing into the CONNECT. */
struct login_credentials {
    const uint8_t *name, *secret;
    size_t name_len, secret_len;
    bool in_user_name; /* both came in the user name, INSTANCE:SECRET */
};

/*
 * Where a cloud CONNECT carries its credentials: user name INSTANCE and
 * password SECRET; or, with an empty or absent password, user name
 * INSTANCE:SECRET (a token in the user name, as clients made for token
 * authentication send it). Instance names hold no ':' and secrets are
 * base64url, so the first ':' splits them. Returns false when there is no
 * secret at all (no password and no ':' in the user name).
 */
bool login_credentials(const uint8_t *user, size_t user_len, const uint8_t *password,
                       size_t password_len, struct login_credentials *out);

/*
 * The instance named `name` (cloud), made on first use with its limits from
 * the catalog; NULL when the catalog has no such instance or memory ran out.
 * Desktop mode: always the local instance.
 */
struct instance *login_instance(struct broker *b, const char *name);

/*
 * A cloud login found no such instance or token: when a fresh look at the
 * database may change that, `c` waits for it (its CONNECT unread, reading
 * off) and true is returned; false means the miss is final.
 */
bool login_wait(struct broker *b, struct conn *c);

/* Logins still wait for a look not asked yet: ask now, or when the interval allows. */
void login_recheck_soon(struct broker *b);

#endif
