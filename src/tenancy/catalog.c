#include "tenancy/catalog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "store/store.h"
#include "util/hex.h"

_Static_assert(CATALOG_TOKEN_ID_LEN == STORE_TOKEN_ID_LEN, "token ids as the store makes them");
_Static_assert(CATALOG_NAME_MAX == STORE_NAME_MAX, "instance names as the store takes them");
_Static_assert(SECRET_HASH_LEN == STORE_HASH_LEN, "the hashes the store keeps");

/* State of one catalog_load(): the first failure stops the filling. */
struct load {
    struct catalog *cat;
    const struct limits *base;
    struct strmap plans; /* plan name -> struct limits (owned) */
    int failed;          /* a STORE_E_* code, 0 while all is well */
};

/* Apply `count` named limits over `l`; names util/limits.h does not know are skipped. */
static void apply_limits(struct limits *l, const struct store_limit *limits, size_t count)
{
    for (size_t i = 0; i < count; i++)
        limits_set(l, limits[i].name, limits[i].value);
}

static void load_plan(void *ctx, const char *plan, const struct store_limit *limits, size_t count)
{
    struct load *ld = ctx;
    struct limits *l = malloc(sizeof(*l));

    if (!l || strmap_put(&ld->plans, plan, l, NULL) < 0) {
        free(l);
        ld->failed = STORE_E_NOMEM;
        return;
    }
    *l = *ld->base;
    apply_limits(l, limits, count);
}

static void load_instance(void *ctx, const struct store_instance *si)
{
    struct load *ld = ctx;
    struct catalog_instance *ci = calloc(1, sizeof(*ci));

    if (ld->failed || !ci || !(ci->name = strdup(si->name)) ||
        strmap_put(&ld->cat->instances, si->name, ci, NULL) < 0) {
        if (ci)
            free(ci->name);
        free(ci);
        ld->failed = STORE_E_NOMEM;
        return;
    }
    ci->serial = si->serial;
    const struct limits *plan = strmap_get(&ld->plans, si->plan);
    ci->limits = plan ? *plan : *ld->base;
    apply_limits(&ci->limits, si->overrides, si->override_count);
}

static int copy_filters(struct catalog_filters *out, const struct store_filters *in)
{
    if (in->count == 0)
        return 0;
    out->items = calloc(in->count, sizeof(*out->items));
    if (!out->items)
        return -1;
    out->count = in->count;
    for (size_t i = 0; i < in->count; i++)
        if (!(out->items[i] = strdup(in->items[i])))
            return -1;
    return 0;
}

static void free_filters(struct catalog_filters *f)
{
    for (size_t i = 0; i < f->count; i++)
        free(f->items[i]);
    free(f->items);
}

static void token_free(struct catalog_token *t)
{
    free(t->instance);
    free(t->label);
    free(t->client_id);
    free_filters(&t->pub);
    free_filters(&t->sub);
    free_filters(&t->deny_pub);
    free_filters(&t->deny_sub);
    free(t);
}

static void load_token(void *ctx, const struct store_token *st)
{
    struct load *ld = ctx;
    char key[HEX_SIZE(SECRET_HASH_LEN)];

    if (ld->failed)
        return;
    struct catalog_token *t = calloc(1, sizeof(*t));
    if (!t)
        goto oom;
    t->refs = 1;
    snprintf(t->id, sizeof(t->id), "%s", st->id);
    t->expires = st->expires;
    t->allow_action = st->allow_action;
    memcpy(t->hash, st->secret_hash, SECRET_HASH_LEN);
    if (!(t->instance = strdup(st->instance)) || !(t->label = strdup(st->label)) ||
        (st->client_id && !(t->client_id = strdup(st->client_id))) ||
        copy_filters(&t->pub, &st->pub) < 0 || copy_filters(&t->sub, &st->sub) < 0 ||
        copy_filters(&t->deny_pub, &st->deny_pub) < 0 ||
        copy_filters(&t->deny_sub, &st->deny_sub) < 0)
        goto oom;
    hex_encode(t->hash, SECRET_HASH_LEN, key);
    if (strmap_put(&ld->cat->tokens, key, t, NULL) < 0)
        goto oom;
    ld->cat->token_count++;
    if (strmap_put(&ld->cat->token_ids, t->id, t, NULL) < 0) {
        ld->failed = STORE_E_NOMEM; /* owned by the map now: catalog_free() frees it */
        return;
    }
    return;
oom:
    if (t)
        token_free(t);
    ld->failed = STORE_E_NOMEM;
}

static void load_admin_key(void *ctx, const struct store_admin_key *sk)
{
    struct load *ld = ctx;
    struct catalog_admin_key *k = calloc(1, sizeof(*k));
    char key[HEX_SIZE(SECRET_HASH_LEN)];

    if (ld->failed || !k) {
        free(k);
        ld->failed = STORE_E_NOMEM;
        return;
    }
    snprintf(k->id, sizeof(k->id), "%s", sk->id);
    memcpy(k->hash, sk->secret_hash, SECRET_HASH_LEN);
    hex_encode(k->hash, SECRET_HASH_LEN, key);
    if (strmap_put(&ld->cat->admin_keys, key, k, NULL) < 0) {
        free(k);
        ld->failed = STORE_E_NOMEM;
    }
}

struct catalog *catalog_load(struct store *s, const struct limits *base, char *err, size_t errlen)
{
    struct load ld = {.base = base};

    ld.cat = calloc(1, sizeof(*ld.cat));
    if (!ld.cat) {
        snprintf(err, errlen, "out of memory loading the catalog");
        return NULL;
    }
    /* One snapshot: an instance made with a new plan in between must not miss the plan. */
    int rc = store_read_begin(s, err, errlen);
    if (rc == 0)
        rc = store_plan_list(s, load_plan, &ld, err, errlen);
    if (rc == 0 && !ld.failed)
        rc = store_instance_list(s, load_instance, &ld, err, errlen);
    if (rc == 0 && !ld.failed)
        rc = store_token_all(s, load_token, &ld, err, errlen);
    if (rc == 0 && !ld.failed)
        rc = store_admin_key_list(s, true, load_admin_key, &ld, err, errlen);
    store_read_end(s);

    size_t pos = 0;
    void *plan;
    while ((plan = strmap_next(&ld.plans, &pos, NULL)))
        free(plan);
    strmap_clear(&ld.plans);

    if (rc == 0 && ld.failed) {
        rc = ld.failed;
        snprintf(err, errlen, "out of memory loading the catalog");
    }
    if (rc < 0) {
        catalog_free(ld.cat);
        return NULL;
    }
    return ld.cat;
}

void catalog_free(struct catalog *cat)
{
    if (!cat)
        return;
    size_t pos = 0;
    struct catalog_instance *ci;
    while ((ci = strmap_next(&cat->instances, &pos, NULL))) {
        free(ci->name);
        free(ci);
    }
    pos = 0;
    struct catalog_token *t;
    while ((t = strmap_next(&cat->tokens, &pos, NULL)))
        catalog_token_unref(t);
    pos = 0;
    struct catalog_admin_key *k;
    while ((k = strmap_next(&cat->admin_keys, &pos, NULL)))
        free(k);
    strmap_clear(&cat->admin_keys);
    strmap_clear(&cat->instances);
    strmap_clear(&cat->tokens);
    strmap_clear(&cat->token_ids);
    free(cat);
}

const struct catalog_instance *catalog_instance(const struct catalog *cat, const char *name)
{
    return strmap_get(&cat->instances, name);
}

struct catalog_token *catalog_token_by_secret(const struct catalog *cat, const void *secret,
                                              size_t len)
{
    uint8_t hash[SECRET_HASH_LEN];
    char key[HEX_SIZE(SECRET_HASH_LEN)];

    secret_hash(secret, len, hash);
    hex_encode(hash, sizeof(hash), key);
    struct catalog_token *t = strmap_get(&cat->tokens, key);
    /* The map compared the hex key already; this comparison takes the same time always. */
    if (!t || CRYPTO_memcmp(t->hash, hash, sizeof(hash)) != 0)
        return NULL;
    return t;
}

const char *catalog_admin_key(const struct catalog *cat, const void *key, size_t len)
{
    uint8_t hash[SECRET_HASH_LEN];
    char hex[HEX_SIZE(SECRET_HASH_LEN)];

    secret_hash(key, len, hash);
    hex_encode(hash, sizeof(hash), hex);
    const struct catalog_admin_key *k = strmap_get(&cat->admin_keys, hex);
    if (!k || CRYPTO_memcmp(k->hash, hash, sizeof(hash)) != 0)
        return NULL;
    return k->id;
}

struct catalog_token *catalog_token_by_id(const struct catalog *cat, const char *id)
{
    return strmap_get(&cat->token_ids, id);
}

struct catalog_token *catalog_token_ref(struct catalog_token *t)
{
    if (t)
        t->refs++;
    return t;
}

void catalog_token_unref(struct catalog_token *t)
{
    if (t && --t->refs == 0)
        token_free(t);
}
