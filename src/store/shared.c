/*
 * shared — the catalog database kept in Redis (see shared.h).
 */
#include "store/shared.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"
#include "util/error.h"
#include "util/redis_client.h"

struct shared {
    struct redis_url url;
    char *ca_file;
    struct redis_client *client; /* NULL until used, and after a failure */
    char shown[256];
};

struct shared *shared_new(const struct redis_url *url, const char *ca_file)
{
    struct shared *sh = calloc(1, sizeof(*sh));

    if (!sh)
        return NULL;
    if (redis_url_copy(&sh->url, url) < 0 || (ca_file && !(sh->ca_file = strdup(ca_file)))) {
        shared_free(sh);
        return NULL;
    }
    redis_url_format(url, sh->shown, sizeof(sh->shown));
    return sh;
}

void shared_free(struct shared *sh)
{
    if (!sh)
        return;
    redis_client_close(sh->client);
    redis_url_clear(&sh->url);
    free(sh->ca_file);
    free(sh);
}

const char *shared_shown(const struct shared *sh)
{
    return sh->shown;
}

/* The connection, made again when a failure broke the last one. */
static struct redis_client *shared_client(struct shared *sh, char *err, size_t errlen)
{
    if (sh->client && redis_client_broken(sh->client)) {
        redis_client_close(sh->client);
        sh->client = NULL;
    }
    if (!sh->client)
        sh->client = redis_client_connect(&sh->url, sh->ca_file, 0, err, errlen);
    return sh->client;
}

/*
 * Drop the connection after a failure inside MULTI or WATCH: a new one
 * starts with no transaction open and nothing watched.
 */
static void forget(struct shared *sh)
{
    redis_client_close(sh->client);
    sh->client = NULL;
}

/* One command, its error reply an error: the reply, or NULL. */
static redisReply *call(struct shared *sh, int argc, const char **argv, const size_t *lens,
                        char *err, size_t errlen)
{
    struct redis_client *c = shared_client(sh, err, errlen);

    return c ? redis_client_call(c, argc, argv, lens, err, errlen) : NULL;
}

/* Run a command whose answer does not matter beyond its not being an error. */
static int call_ok(struct shared *sh, int argc, const char **argv, const size_t *lens, char *err,
                   size_t errlen)
{
    redisReply *r = call(sh, argc, argv, lens, err, errlen);

    if (!r)
        return SHARED_E_REDIS;
    freeReplyObject(r);
    return 0;
}

/* A version as Redis holds it (a nil reply: none yet, 0). */
static int version_of(struct shared *sh, const redisReply *r, int64_t *version, char *err,
                      size_t errlen)
{
    char *end;

    *version = 0;
    if (r->type == REDIS_REPLY_NIL)
        return 0;
    if (r->type == REDIS_REPLY_INTEGER) {
        *version = r->integer;
        return 0;
    }
    if (r->type == REDIS_REPLY_STRING) {
        long long v = strtoll(r->str, &end, 10);
        if (end != r->str && *end == '\0' && v >= 0) {
            *version = v;
            return 0;
        }
    }
    error_set(err, errlen, "Redis at %s: %s is not a version number", sh->shown,
              SHARED_KEY_VERSION);
    return SHARED_E_BAD;
}

int shared_version(struct shared *sh, int64_t *version, char *err, size_t errlen)
{
    const char *get[] = {"GET", SHARED_KEY_VERSION};
    redisReply *r = call(sh, 2, get, NULL, err, errlen);

    if (!r)
        return SHARED_E_REDIS;
    int rc = version_of(sh, r, version, err, errlen);
    freeReplyObject(r);
    return rc;
}

/* MULTI; GET version; GET db; EXEC: both as of one moment. The EXEC's reply, or NULL. */
static redisReply *fetch_both(struct shared *sh, char *err, size_t errlen)
{
    const char *multi[] = {"MULTI"}, *exec[] = {"EXEC"};
    const char *get_version[] = {"GET", SHARED_KEY_VERSION}, *get_db[] = {"GET", SHARED_KEY_DB};

    if (call_ok(sh, 1, multi, NULL, err, errlen) < 0 ||
        call_ok(sh, 2, get_version, NULL, err, errlen) < 0 ||
        call_ok(sh, 2, get_db, NULL, err, errlen) < 0) {
        forget(sh);
        return NULL;
    }
    redisReply *r = call(sh, 1, exec, NULL, err, errlen);
    if (r && (r->type != REDIS_REPLY_ARRAY || r->elements != 2)) {
        error_set(err, errlen, "Redis at %s: EXEC answered no pair of values", sh->shown);
        freeReplyObject(r);
        r = NULL;
    }
    if (!r)
        forget(sh);
    return r;
}

int shared_fetch(struct shared *sh, bool create, struct store **out, int64_t *version, char *err,
                 size_t errlen)
{
    char name[300];
    redisReply *r = fetch_both(sh, err, errlen);
    int rc;

    *out = NULL;
    if (!r)
        return SHARED_E_REDIS;
    rc = version_of(sh, r->element[0], version, err, errlen);
    const redisReply *db = r->element[1];
    if (rc == 0 && db->type == REDIS_REPLY_NIL && !create) {
        error_set(err, errlen,
                  "no catalog in Redis at %s (create it with 'aviaryctl --cluster URL init')",
                  sh->shown);
        rc = SHARED_E_EMPTY;
    } else if (rc == 0 && db->type != REDIS_REPLY_NIL && db->type != REDIS_REPLY_STRING) {
        error_set(err, errlen, "Redis at %s: %s is not a catalog", sh->shown, SHARED_KEY_DB);
        rc = SHARED_E_BAD;
    }
    if (rc == 0) {
        snprintf(name, sizeof(name), "%s in Redis at %s", SHARED_KEY_DB, sh->shown);
        bool none = db->type == REDIS_REPLY_NIL;
        *out = store_open_image(name, none ? NULL : db->str, none ? 0 : db->len, err, errlen);
        rc = *out ? 0 : none ? STORE_E_NOMEM : SHARED_E_BAD;
    }
    freeReplyObject(r);
    return rc;
}

/* WATCH the version and check it is still `version`: 0, SHARED_E_CONFLICT or SHARED_E_REDIS. */
static int watch_version(struct shared *sh, int64_t version, char *err, size_t errlen)
{
    const char *watch[] = {"WATCH", SHARED_KEY_VERSION}, *unwatch[] = {"UNWATCH"};
    int64_t now;
    int rc;

    if (call_ok(sh, 2, watch, NULL, err, errlen) < 0)
        return SHARED_E_REDIS;
    if ((rc = shared_version(sh, &now, err, errlen)) < 0)
        return SHARED_E_REDIS;
    if (now != version) {
        rc = SHARED_E_CONFLICT;
        error_set(err, errlen,
                  "Redis at %s: the catalog changed (version %" PRId64 ", not %" PRId64 ")",
                  sh->shown, now, version);
        if (call_ok(sh, 1, unwatch, NULL, NULL, 0) < 0)
            rc = SHARED_E_REDIS;
    }
    return rc;
}

int shared_publish(struct shared *sh, struct store *s, int64_t version, char *err, size_t errlen)
{
    const char *multi[] = {"MULTI"}, *exec[] = {"EXEC"}, *incr[] = {"INCR", SHARED_KEY_VERSION};
    unsigned char *image;
    size_t len;
    int rc = store_serialize(s, &image, &len, err, errlen);

    if (rc < 0)
        return rc;
    const char *set[] = {"SET", SHARED_KEY_DB, (const char *)image};
    const size_t set_lens[] = {3, strlen(SHARED_KEY_DB), len};
    if ((rc = watch_version(sh, version, err, errlen)) < 0)
        goto out;
    rc = SHARED_E_REDIS;
    if (call_ok(sh, 1, multi, NULL, err, errlen) < 0 ||
        call_ok(sh, 3, set, set_lens, err, errlen) < 0 ||
        call_ok(sh, 2, incr, NULL, err, errlen) < 0)
        goto out;
    redisReply *r = call(sh, 1, exec, NULL, err, errlen);
    if (!r)
        goto out;
    rc = r->type == REDIS_REPLY_ARRAY ? 0 : SHARED_E_CONFLICT;
    if (rc < 0)
        error_set(err, errlen, "Redis at %s: the catalog changed while it was written", sh->shown);
    freeReplyObject(r);
out:
    if (rc == SHARED_E_REDIS)
        forget(sh);
    free(image);
    return rc;
}

/* Whether `s` differs from `image` (what was fetched): then there is something to publish. */
static int changed(struct store *s, const unsigned char *before, size_t before_len, bool *differs,
                   char *err, size_t errlen)
{
    unsigned char *image;
    size_t len;
    int rc = store_serialize(s, &image, &len, err, errlen);

    if (rc < 0)
        return rc;
    *differs = len != before_len || memcmp(image, before, len) != 0;
    free(image);
    return 0;
}

/* One try of shared_change(): fetch, run, publish when changed. */
static int change_once(struct shared *sh, bool create, int (*fn)(void *ctx, struct store *s),
                       void *ctx, bool *published, char *err, size_t errlen)
{
    struct store *s;
    int64_t version;
    unsigned char *before = NULL;
    size_t before_len = 0;
    bool differs = true;
    int rc = shared_fetch(sh, create, &s, &version, err, errlen);

    if (rc < 0)
        return rc;
    /* A new catalog (version 0) is always written, even as it was made. */
    if (version > 0 && (rc = store_serialize(s, &before, &before_len, err, errlen)) < 0)
        goto out;
    if ((rc = fn(ctx, s)) < 0)
        goto out;
    if (version > 0 && (rc = changed(s, before, before_len, &differs, err, errlen)) < 0)
        goto out;
    if (differs && (rc = shared_publish(sh, s, version, err, errlen)) == 0)
        *published = true;
out:
    free(before);
    store_close(s);
    return rc;
}

int shared_change(struct shared *sh, bool create, int (*fn)(void *ctx, struct store *s), void *ctx,
                  bool *published, char *err, size_t errlen)
{
    bool dummy;
    int rc = SHARED_E_CONFLICT;

    published = published ? published : &dummy;
    *published = false;
    for (int i = 0; i < SHARED_ATTEMPTS && rc == SHARED_E_CONFLICT; i++)
        rc = change_once(sh, create, fn, ctx, published, err, errlen);
    if (rc == SHARED_E_CONFLICT)
        error_set(err, errlen,
                  "Redis at %s: the catalog changed under every one of %d attempts; nothing "
                  "written",
                  sh->shown, SHARED_ATTEMPTS);
    return rc;
}
