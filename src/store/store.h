/*
 * store — the SQLite database of instances, plans and tokens.
 *
 * One struct store is one SQLite connection: use it from one thread only
 * (aviaryctl has one; aviaryd has one for start-up and one in its watcher
 * thread). The database runs in WAL mode, so aviaryctl may write while the
 * broker reads. store_open() creates the schema or migrates it to the current
 * version (PRAGMA user_version) and makes sure the plan "default" exists.
 *
 * A token's secret is never stored: only its SHA-256 (secret_hash() of
 * util/secret.h). Secrets are 32 bytes from OpenSSL's RAND_bytes, so a plain
 * hash suffices; a slow password hash would protect nothing that 256 random
 * bits do not.
 *
 * Errors: every function that can fail returns 0 on success or a negative
 * STORE_E_* code, with one line for a person in `err` (may be NULL).
 * Strings handed to callbacks live only during the call.
 */
#ifndef AVIARY_STORE_H
#define AVIARY_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum store_error {
    STORE_E_DB = -1,        /* the database could not be opened, read or written */
    STORE_E_NOT_FOUND = -2, /* unknown instance, plan or token */
    STORE_E_EXISTS = -3,    /* an instance of that name exists already */
    STORE_E_INVALID = -4,   /* a bad name, limit, value or filter */
    STORE_E_NOMEM = -5,
};

#define STORE_DEFAULT_PLAN "default"
#define STORE_HASH_LEN 32      /* SHA-256, as util/secret.h computes it */
#define STORE_TOKEN_ID_LEN 16  /* lowercase hex characters */
#define STORE_SECRET_LEN 43    /* base64url of 32 random bytes, no padding */
#define STORE_NAME_MAX 64      /* instance and plan names */
#define STORE_SCHEMA_VERSION 5 /* PRAGMA user_version of a current database */

/*
 * What the broker keeps (store/keep.h): the messages no retained topic,
 * queue or will refers to. A message and what refers to it are always
 * written in one transaction, so this never takes a message the broker is
 * about to refer to.
 */
#define STORE_KEPT_UNREFERENCED_SQL                                                                \
    "DELETE FROM kept_messages WHERE id NOT IN (SELECT message FROM kept_retained) "               \
    "AND id NOT IN (SELECT message FROM kept_outgoing WHERE message IS NOT NULL) "                 \
    "AND id NOT IN (SELECT will_message FROM kept_sessions WHERE will_message IS NOT NULL)"

struct store;

/*
 * Open (creating it when missing) the database at `path`, migrate it and
 * return the handle, or NULL with the reason in `err`.
 */
struct store *store_open(const char *path, char *err, size_t errlen);

/*
 * store_open() of a database that must exist already: when there is no file
 * at `path`, NULL with STORE_E_NOT_FOUND in *code (else STORE_E_DB or
 * STORE_E_NOMEM) and "no database at PATH" in `err`. Nothing is created.
 * `code` may be NULL.
 */
struct store *store_open_existing(const char *path, int *code, char *err, size_t errlen);

/*
 * An in-memory database made from `image` (`len` bytes as store_serialize()
 * wrote them; len 0: a new, empty catalog), migrated as store_open()
 * migrates a file. The store owns a copy; `image` stays the caller's.
 * `name` says in messages which database it is (the cluster's Redis).
 * Returns the handle, or NULL with the reason in `err`.
 */
struct store *store_open_image(const char *name, const void *image, size_t len, char *err,
                               size_t errlen);

/*
 * An in-memory copy (as store_open_image() makes) of the existing database
 * at `path`, migrated first. Returns it, or NULL with the reason in `err`.
 */
struct store *store_open_copy(const char *path, char *err, size_t errlen);

/*
 * The whole database as one image (sqlite3_serialize), for
 * store_open_image(): *image is the caller's to free(). Returns 0 or
 * STORE_E_NOMEM.
 */
int store_serialize(struct store *s, unsigned char **image, size_t *len, char *err, size_t errlen);

/*
 * Drop what the broker keeps (retained messages, sessions: the kept_
 * tables) and compact the database, leaving the catalog: instances, plans,
 * tokens and admin keys. For an image another database's catalog is made
 * from (aviaryctl --cluster URL init --from DB). Returns 0 or STORE_E_*.
 */
int store_catalog_only(struct store *s, char *err, size_t errlen);

/*
 * Make the instances of `s` (a node's own database in a cluster) those of
 * `catalog` (the cluster's), names and serials, so that what the node kept
 * for them is loaded and what it kept for deleted ones is dropped
 * (store/keep.h). Returns 0 or STORE_E_*.
 */
int store_mirror_instances(struct store *s, struct store *catalog, char *err, size_t errlen);

void store_close(struct store *s);

/*
 * SQLite's PRAGMA data_version: changes whenever another connection (aviaryctl)
 * commits. Returns it (>= 0), or STORE_E_DB.
 */
int64_t store_data_version(struct store *s);

/*
 * Read several lists as one snapshot: between store_read_begin() and
 * store_read_end() nothing another connection commits is seen (a deferred
 * read transaction). Only for reads.
 */
int store_read_begin(struct store *s, char *err, size_t errlen);
void store_read_end(struct store *s);

/*
 * Instance and plan names: 1 to STORE_NAME_MAX characters of A-Z a-z 0-9 . _ -
 * (an instance name is a login user name). Returns true when `name` is one.
 */
bool store_name_valid(const char *name);

/* ---- plans --------------------------------------------------------------- */

/*
 * Set limit `limit` (a limit directive of aviary.conf(5), e.g. "max-connections")
 * of plan `plan` to `value`, creating the plan when it does not exist.
 * The caller has checked `value` against the limit's range (limits_parse).
 */
int store_plan_set(struct store *s, const char *plan, const char *limit, unsigned long long value,
                   char *err, size_t errlen);

/* One limit set by a plan or an instance. */
struct store_limit {
    const char *name;
    unsigned long long value;
};

/* Called once per plan, in name order, with the limits it sets (name order). */
typedef void (*store_plan_fn)(void *ctx, const char *plan, const struct store_limit *limits,
                              size_t count);

int store_plan_list(struct store *s, store_plan_fn fn, void *ctx, char *err, size_t errlen);

/*
 * Delete plan `plan` with its limits. STORE_E_NOT_FOUND when there is none;
 * STORE_E_INVALID for the default plan (new instances need it) and for a
 * plan that instances are on (the message names them).
 */
int store_plan_delete(struct store *s, const char *plan, char *err, size_t errlen);

/* ---- instances ----------------------------------------------------------- */

struct store_instance {
    const char *name;
    const char *plan;
    int64_t created;                     /* Unix time */
    int64_t serial;                      /* random, set at creation: tells a deleted and
                                            re-created instance of one name apart */
    const struct store_limit *overrides; /* limits set on the instance itself, name order */
    size_t override_count;
    size_t token_count; /* tokens not revoked (expired ones included) */
};

typedef void (*store_instance_fn)(void *ctx, const struct store_instance *inst);

/* Create instance `name` on `plan` (NULL: the default plan). */
int store_instance_create(struct store *s, const char *name, const char *plan, char *err,
                          size_t errlen);

/* Delete the instance with its overrides and tokens. */
int store_instance_delete(struct store *s, const char *name, char *err, size_t errlen);

/* Call `fn` once for instance `name`. */
int store_instance_get(struct store *s, const char *name, store_instance_fn fn, void *ctx,
                       char *err, size_t errlen);

/* Call `fn` once per instance, in name order. */
int store_instance_list(struct store *s, store_instance_fn fn, void *ctx, char *err, size_t errlen);

/* Move instance `name` to plan `plan` (STORE_E_NOT_FOUND when either is missing). */
int store_instance_set_plan(struct store *s, const char *name, const char *plan, char *err,
                            size_t errlen);

/* Override limit `limit` for instance `name` (the value is checked as for plans). */
int store_instance_set_limit(struct store *s, const char *name, const char *limit,
                             unsigned long long value, char *err, size_t errlen);

/*
 * Remove instance `name`'s own value of `limit` (its plan's or the
 * configuration's applies again). *was_set says whether it had one.
 */
int store_instance_unset_limit(struct store *s, const char *name, const char *limit, bool *was_set,
                               char *err, size_t errlen);

/* ---- tokens -------------------------------------------------------------- */

/* A list of topic filters, already checked and normalised by the caller. */
struct store_filters {
    const char *const *items;
    size_t count;
};

/*
 * Permissions: empty allow lists allow everything; a deny wins over an allow.
 * $action (closing another client) needs allow_action as well as publish
 * permission for the topic $action.
 */
struct store_token_spec {
    const char *instance;
    const char *label;     /* NULL: none */
    int64_t expires;       /* Unix time; 0: never (a key) */
    const char *client_id; /* NULL: any client id */
    struct store_filters pub, sub, deny_pub, deny_sub;
    bool allow_action; /* may close its instance's clients through $action */
};

struct store_token {
    const char *id; /* STORE_TOKEN_ID_LEN hex characters */
    const char *instance;
    const char *label; /* "" when none */
    int64_t created;
    int64_t expires;       /* 0: a key */
    const char *client_id; /* NULL: any */
    bool revoked;
    bool allow_action;          /* may close its instance's clients through $action */
    const uint8_t *secret_hash; /* STORE_HASH_LEN bytes */
    struct store_filters pub, sub, deny_pub, deny_sub;
};

typedef void (*store_token_fn)(void *ctx, const struct store_token *tok);

/*
 * Create a token. Writes its id (STORE_TOKEN_ID_LEN + 1 bytes with the NUL)
 * and its secret (STORE_SECRET_LEN + 1 bytes); the secret exists nowhere else.
 */
int store_token_create(struct store *s, const struct store_token_spec *spec,
                       char id[STORE_TOKEN_ID_LEN + 1], char secret[STORE_SECRET_LEN + 1],
                       char *err, size_t errlen);

/* Tokens of instance `instance`, oldest first (revoked ones included). */
int store_token_list(struct store *s, const char *instance, store_token_fn fn, void *ctx, char *err,
                     size_t errlen);

/* Every token of every instance that is not revoked (the broker's catalog). */
int store_token_all(struct store *s, store_token_fn fn, void *ctx, char *err, size_t errlen);

/* Revoke token `id` of instance `instance`. Revoking twice is not an error. */
int store_token_revoke(struct store *s, const char *instance, const char *id, char *err,
                       size_t errlen);

/* What store_token_update() changes: each part whose `set_` flag is true. */
struct store_token_patch {
    const char *instance, *id;
    bool set_label, set_expires, set_client_id, set_allow_action;
    const char *label;     /* NULL or "": none */
    int64_t expires;       /* 0: a key */
    const char *client_id; /* NULL: any */
    bool allow_action;
    bool set_filters[4]; /* pub, sub, deny-pub, deny-sub: the list is replaced */
    struct store_filters filters[4];
};

/*
 * Change token `p->id` of instance `p->instance` in one transaction.
 * STORE_E_NOT_FOUND for an unknown instance or token; STORE_E_INVALID for a
 * revoked token (a revocation is final). Its secret and id stay.
 */
int store_token_update(struct store *s, const struct store_token_patch *p, char *err,
                       size_t errlen);

/* ---- admin keys ------------------------------------------------------------ */

/*
 * The keys of the management API (/admin/ of aviaryd's web). Like a token's,
 * a key's secret is shown once and only its hash is kept.
 */
struct store_admin_key {
    const char *id;    /* STORE_TOKEN_ID_LEN hex characters */
    const char *label; /* "" when none */
    int64_t created;
    bool revoked;
    const uint8_t *secret_hash; /* STORE_HASH_LEN bytes */
};

typedef void (*store_admin_key_fn)(void *ctx, const struct store_admin_key *key);

/* Create an admin key: its id and secret are written as store_token_create()'s are. */
int store_admin_key_create(struct store *s, const char *label, char id[STORE_TOKEN_ID_LEN + 1],
                           char secret[STORE_SECRET_LEN + 1], char *err, size_t errlen);

/* Admin keys, oldest first; `live_only`: those not revoked. */
int store_admin_key_list(struct store *s, bool live_only, store_admin_key_fn fn, void *ctx,
                         char *err, size_t errlen);

/* Revoke admin key `id` (STORE_E_NOT_FOUND when there is none). Twice is not an error. */
int store_admin_key_revoke(struct store *s, const char *id, char *err, size_t errlen);

#endif
