/*
 * manage — administration of cloud mode: what a valid limit value, token
 * duration, label, client id and topic filter is, and the calls to the store
 * that make the change. aviaryctl and the management API (web/admin.c) both
 * go through here, so they accept the same things and refuse the rest with
 * the same words.
 *
 * Every message is one line for a person, starting with the field as its
 * caller names it (`field`: "--ttl" for aviaryctl, "ttl" for the API).
 * Functions return 0 or a negative STORE_E_* code (store/store.h), which
 * says what kind of failure it is: STORE_E_INVALID for a bad value,
 * STORE_E_NOT_FOUND, STORE_E_EXISTS, STORE_E_DB, STORE_E_NOMEM. Any thread;
 * one struct store per thread, as the store requires.
 */
#ifndef AVIARY_MANAGE_H
#define AVIARY_MANAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/store.h"
#include "util/limits.h"

/* Topic filters are MQTT strings; one more byte is kept for a leading '/'. */
#define MANAGE_FILTER_MAX 65534
#define MANAGE_LABEL_MAX 1024
#define MANAGE_CLIENT_ID_MAX 65535
/* A token living longer than a century is a mistake in the duration. */
#define MANAGE_TTL_MAX (100LL * 365 * 24 * 3600)
/* The four filter lists, in the order of struct store_token_spec. */
#define MANAGE_FILTER_KINDS 4
/*
 * A generated client id: hex characters only and at most 23 of them, which
 * every MQTT 3.1.1 server must accept (MQTT-3.1.3-5).
 */
#define MANAGE_AUTO_CLIENT_ID_LEN 22
/* The client id that asks for a generated one. */
#define MANAGE_CLIENT_ID_AUTO "auto"

/* What a token update changes (struct manage_token's `given`). */
enum manage_given {
    MANAGE_GIVEN_LABEL = 1u << 0,
    MANAGE_GIVEN_EXPIRES = 1u << 1,
    MANAGE_GIVEN_CLIENT_ID = 1u << 2,
    MANAGE_GIVEN_ACTION = 1u << 3,
    MANAGE_GIVEN_FILTERS = 1u << 4, /* shifted by the kind: 1u << (4 + kind) */
};

/* "90s", "15m", "2h", "7d": a positive integer and one unit. Seconds, or -1. */
long long manage_duration_parse(const char *text);

/*
 * Limit `limit` set to `value` as aviary.conf(5) writes it (suffixes
 * included): *out, or STORE_E_INVALID with a message naming the limit.
 */
int manage_limit_value(const char *limit, const char *value, unsigned long long *out, char *err,
                       size_t errlen);

/* A label (of a token or an admin key): UTF-8 without control characters, <= MANAGE_LABEL_MAX. */
int manage_label_check(const char *field, const char *label, size_t len, char *err, size_t errlen);

/* A token being asked for: its options, checked as they are added. */
struct manage_token {
    const char *instance;  /* borrowed */
    const char *label;     /* borrowed; NULL: none */
    const char *client_id; /* borrowed; NULL: any */
    int64_t now;           /* the clock of the request */
    int64_t expires;       /* 0: a key */
    bool allow_action;     /* may close the instance's clients through $action */
    /* Normalised copies of the filters, in the order given; owned. */
    char **filters[MANAGE_FILTER_KINDS];
    size_t filter_count[MANAGE_FILTER_KINDS];
    unsigned given; /* enum manage_given: what was set, for an update */
    char made_client_id[MANAGE_AUTO_CLIENT_ID_LEN + 1]; /* "auto": client_id points here */
};

/* An empty request for a token of `instance`, made at the current time. */
void manage_token_init(struct manage_token *t, const char *instance);

/* Free the filters. */
void manage_token_clear(struct manage_token *t);

/* The token expires `ttl` (manage_duration_parse's text) after t->now. */
int manage_token_ttl(struct manage_token *t, const char *field, const char *ttl, char *err,
                     size_t errlen);

/* A label of `len` bytes (kept by reference): UTF-8 without control characters. */
int manage_token_label(struct manage_token *t, const char *field, const char *label, size_t len,
                       char *err, size_t errlen);

/*
 * The only client id the token may log in with, checked as a label, and not
 * empty; "auto" (MANAGE_CLIENT_ID_AUTO) draws a new one into
 * t->made_client_id. NULL (len 0) for an update: any client id again.
 */
int manage_token_client_id(struct manage_token *t, const char *field, const char *client_id,
                           size_t len, char *err, size_t errlen);

/*
 * Add a filter of kind `kind` (0 pub, 1 sub, 2 deny-pub, 3 deny-sub), checked
 * as a SUBSCRIBE's filter is and normalised (a copy is kept).
 */
int manage_token_filter(struct manage_token *t, int kind, const char *field, const char *filter,
                        size_t len, char *err, size_t errlen);

/*
 * Create the token. Writes its id and secret (see store_token_create) and,
 * into *view, the token as created (its strings borrowed from `t` and from
 * `id`; created -1: the store's clock is not ours to show).
 */
int manage_token_create(struct store *s, const struct manage_token *t,
                        char id[STORE_TOKEN_ID_LEN + 1], char secret[STORE_SECRET_LEN + 1],
                        struct store_token *view, char *err, size_t errlen);

/*
 * Change token `id` of t->instance: what t->given names, from `t` (a label,
 * client id or filter list that was cleared is NULL or empty; expires 0
 * makes it a key). STORE_E_INVALID when nothing is given.
 */
int manage_token_update(struct store *s, const struct manage_token *t, const char *id, char *err,
                        size_t errlen);

/* "active", "expired" or "revoked" at `now`. */
const char *manage_token_status(const struct store_token *t, int64_t now);

/* An instance and its effective limits, each with where its value comes from. */
struct manage_instance_view {
    char *name, *plan; /* owned */
    int64_t created;
    size_t tokens;
    unsigned long long *value; /* per limit index (limits_name), owned */
    const char **source;       /* "config", "plan" or "instance"; the array owned */
};

/*
 * Read instance `name` into *v: its effective limits start from `base` (the
 * configuration's), then its plan's, then its own. Free *v with
 * manage_instance_view_free() whatever the result.
 */
int manage_instance_view(struct store *s, const struct limits *base, const char *name,
                         struct manage_instance_view *v, char *err, size_t errlen);

void manage_instance_view_free(struct manage_instance_view *v);

#endif
