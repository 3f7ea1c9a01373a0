/*
 * catalog — what the broker knows of the store: every instance with its
 * effective limits, every token and every admin key that is not revoked.
 *
 * A catalog is a snapshot, built in one go by catalog_load() (in the watcher
 * thread, see watcher.h) and never changed afterwards; the core thread
 * replaces the whole catalog when the database changes. Tokens are reference
 * counted so that a connection can keep the token it logged in with after its
 * catalog is gone: the catalog holds one reference to each of its tokens.
 * Reference counts are touched by the core thread only (a catalog is handed
 * over before anybody takes a reference).
 */
#ifndef AVIARY_CATALOG_H
#define AVIARY_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/limits.h"
#include "util/secret.h"
#include "util/strmap.h"

/*
 * Sizes of the store's (store/store.h), repeated so that the broker needs
 * nothing from store/; catalog.c checks that they agree.
 */
#define CATALOG_TOKEN_ID_LEN 16 /* lowercase hex characters */
#define CATALOG_NAME_MAX 64     /* characters in an instance name */

struct store;

/* Normalised topic filters, owned by the token. */
struct catalog_filters {
    char **items;
    size_t count;
};

struct catalog_token {
    unsigned refs;
    char id[CATALOG_TOKEN_ID_LEN + 1];
    char *instance;                /* owned */
    char *label;                   /* owned; "" when none */
    int64_t expires;               /* Unix time; 0: a key, never expires */
    char *client_id;               /* owned; NULL: any client id */
    uint8_t hash[SECRET_HASH_LEN]; /* SHA-256 of the secret (secret_hash) */
    struct catalog_filters pub, sub, deny_pub, deny_sub;
    bool allow_action; /* may close its instance's clients through $action */
};

struct catalog_instance {
    char *name;           /* owned */
    int64_t serial;       /* changes when the instance is deleted and made again */
    struct limits limits; /* configuration, then plan, then the instance's overrides */
};

/* A key of the management API (not revoked). */
struct catalog_admin_key {
    char id[CATALOG_TOKEN_ID_LEN + 1];
    uint8_t hash[SECRET_HASH_LEN];
};

struct catalog {
    struct strmap instances; /* name -> struct catalog_instance (owned) */
    struct strmap tokens;    /* hex of the secret's hash -> struct catalog_token (one ref) */
    struct strmap token_ids; /* id -> the same token (no ref of its own) */
    size_t token_count;
    struct strmap admin_keys; /* hex of the key's hash -> struct catalog_admin_key (owned) */
};

/*
 * Read every plan, instance and live token from `s`. Limits start from `base`
 * (the configuration), then the plan's, then the instance's own.
 * Returns the catalog, or NULL with the reason in `err`.
 */
struct catalog *catalog_load(struct store *s, const struct limits *base, char *err, size_t errlen);

/* Free the catalog and drop its token references. NULL is fine. */
void catalog_free(struct catalog *cat);

const struct catalog_instance *catalog_instance(const struct catalog *cat, const char *name);

/*
 * The token whose secret is `secret` (`len` bytes, as sent at login), or NULL.
 * The look-up is by the secret's SHA-256, and the full hash is then compared
 * in constant time. Memory only: never touches the store.
 */
struct catalog_token *catalog_token_by_secret(const struct catalog *cat, const void *secret,
                                              size_t len);

/*
 * The id of the admin key `key` (`len` bytes, as sent), or NULL. Found and
 * compared as catalog_token_by_secret() finds tokens. Memory only.
 */
const char *catalog_admin_key(const struct catalog *cat, const void *key, size_t len);

struct catalog_token *catalog_token_by_id(const struct catalog *cat, const char *id);

struct catalog_token *catalog_token_ref(struct catalog_token *t);
void catalog_token_unref(struct catalog_token *t);

#endif
