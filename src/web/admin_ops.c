/*
 * admin_ops — what the jobs thread does for a management API call (see
 * admin_ops.h). Nothing here touches the broker: only the call and the store.
 */
#include "web/admin_ops.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/store.h"
#include "tenancy/manage_json.h"
#include "util/json_read.h"

/* The HTTP status of a failed store or manage call. */
static int status_of(int rc)
{
    switch (rc) {
    case STORE_E_INVALID:
        return 400;
    case STORE_E_NOT_FOUND:
        return 404;
    case STORE_E_EXISTS:
        return 409;
    case STORE_E_NOMEM:
        return 503;
    default:
        return 500;
    }
}

struct admin_list {
    FILE *out;
    size_t n;
    int64_t now;
};

static void list_instance(void *arg, const struct store_instance *inst)
{
    struct admin_list *l = arg;
    manage_json_list_next(l->out, &l->n);
    manage_json_instance_listed(l->out, inst);
}

static void list_token(void *arg, const struct store_token *t)
{
    struct admin_list *l = arg;
    manage_json_list_next(l->out, &l->n);
    fputc('{', l->out);
    manage_json_token_members(l->out, t, l->now);
    fputc('}', l->out);
}

static void list_plan(void *arg, const char *plan, const struct store_limit *limits, size_t count)
{
    struct admin_list *l = arg;
    manage_json_list_next(l->out, &l->n);
    manage_json_plan(l->out, plan, limits, count);
}

/* The listings: one snapshot each, written as aviaryctl --json writes them. */
static int run_list(struct admin_call *c, struct store *s, FILE *out, char *err, size_t errlen)
{
    struct admin_list l = {.out = out, .now = (int64_t)time(NULL)};
    int rc;

    if (c->op == ADMIN_INSTANCES_LIST)
        rc = store_instance_list(s, list_instance, &l, err, errlen);
    else if (c->op == ADMIN_TOKENS_LIST)
        rc = store_token_list(s, c->name, list_token, &l, err, errlen);
    else
        rc = store_plan_list(s, list_plan, &l, err, errlen);
    if (rc == 0)
        manage_json_list_end(out, l.n);
    return rc;
}

static int run_instance_view(struct admin_call *c, struct store *s, FILE *out, char *err,
                             size_t errlen)
{
    struct manage_instance_view v;
    int rc = manage_instance_view(s, &c->base, c->name, &v, err, errlen);

    if (rc == 0)
        manage_json_instance_view(out, &v);
    manage_instance_view_free(&v);
    return rc;
}

/* PATCH: the plan first (it may not exist), then each limit; then the instance as it is. */
static int run_instance_patch(struct admin_call *c, struct store *s, FILE *out, char *err,
                              size_t errlen)
{
    int rc = 0;

    if (c->plan)
        rc = store_instance_set_plan(s, c->name, c->plan, err, errlen);
    for (size_t i = 0; rc == 0 && i < c->limit_count; i++) {
        rc = store_instance_set_limit(s, c->name, c->limits[i].name, c->limits[i].value, err,
                                      errlen);
        c->changed |= rc == 0;
    }
    c->changed |= rc == 0 && c->plan;
    return rc == 0 ? run_instance_view(c, s, out, err, errlen) : rc;
}

static int run_token_create(struct admin_call *c, struct store *s, FILE *out, char *err,
                            size_t errlen)
{
    char id[STORE_TOKEN_ID_LEN + 1], secret[STORE_SECRET_LEN + 1];
    struct store_token view;
    int rc;

    c->token.instance = c->name;
    rc = manage_token_create(s, &c->token, id, secret, &view, err, errlen);
    if (rc == 0) {
        fputc('{', out);
        manage_json_token_members(out, &view, c->token.now);
        fprintf(out, ", \"secret\": \"%s\"}\n", secret);
        c->status = 201;
    }
    explicit_bzero(secret, sizeof(secret));
    return rc;
}

/* The changes that answer as aviaryctl --json reports them. */
static int run_change(struct admin_call *c, struct store *s, FILE *out, char *err, size_t errlen)
{
    const char *plan = c->plan ? c->plan : STORE_DEFAULT_PLAN;
    int rc;

    switch (c->op) {
    case ADMIN_INSTANCE_CREATE:
        if ((rc = store_instance_create(s, c->name, plan, err, errlen)) == 0) {
            manage_json_members(out, (const char *const[]){"name", c->name, "plan", plan, NULL});
            fputs("}\n", out);
            c->status = 201;
        }
        return rc;
    case ADMIN_INSTANCE_DELETE:
        if ((rc = store_instance_delete(s, c->name, err, errlen)) == 0) {
            manage_json_members(out, (const char *const[]){"name", c->name, NULL});
            fputs(", \"deleted\": true}\n", out);
        }
        return rc;
    case ADMIN_TOKEN_REVOKE:
        if ((rc = store_token_revoke(s, c->name, c->id, err, errlen)) == 0) {
            manage_json_members(out, (const char *const[]){"instance", c->name, "id", c->id, NULL});
            fputs(", \"revoked\": true}\n", out);
        }
        return rc;
    default: /* ADMIN_PLAN_SET */
        rc = store_plan_set(s, c->name, c->limits[0].name, c->limits[0].value, err, errlen);
        if (rc == 0) {
            manage_json_members(out, (const char *const[]){"plan", c->name, NULL});
            fprintf(out, ", \"limit\": \"%s\", \"value\": %llu}\n", c->limits[0].name,
                    c->limits[0].value);
        }
        return rc;
    }
}

static int run_op(struct admin_call *c, struct store *s, FILE *out, char *err, size_t errlen)
{
    switch (c->op) {
    case ADMIN_INSTANCES_LIST:
    case ADMIN_TOKENS_LIST:
    case ADMIN_PLANS_LIST:
        return run_list(c, s, out, err, errlen);
    case ADMIN_INSTANCE_GET:
        return run_instance_view(c, s, out, err, errlen);
    case ADMIN_INSTANCE_PATCH:
        return run_instance_patch(c, s, out, err, errlen);
    case ADMIN_TOKEN_CREATE:
        c->changed = true;
        return run_token_create(c, s, out, err, errlen);
    default:
        c->changed = true;
        return run_change(c, s, out, err, errlen);
    }
}

/* The answer so far dropped: a run again (in a cluster, after a conflict) starts afresh. */
static void answer_drop(struct admin_call *c)
{
    if (c->answer)
        explicit_bzero(c->answer, c->answer_len); /* a new token's secret */
    free(c->answer);
    c->answer = NULL;
    c->answer_len = 0;
}

void admin_ops_run(struct job *j, struct store *s)
{
    struct admin_call *c = (struct admin_call *)j;
    char err[768] = "out of memory";
    int rc = STORE_E_NOMEM;

    answer_drop(c);
    c->changed = false;
    FILE *out = open_memstream(&c->answer, &c->answer_len);
    c->status = 200;
    if (out) {
        rc = run_op(c, s, out, err, sizeof(err));
        if (fclose(out) != 0 && rc == 0) {
            rc = STORE_E_NOMEM;
            snprintf(err, sizeof(err), "out of memory");
        }
    }
    if (rc == 0)
        return;
    /* A failed change wrote nothing (one transaction each), so nothing waits for a look. */
    c->changed = c->op == ADMIN_INSTANCE_PATCH && c->changed;
    c->status = status_of(rc);
    free(c->answer);
    c->answer = strdup(err);
    c->answer_len = c->answer ? strlen(c->answer) : 0;
}

/* In a cluster: Redis could not be read or written, so nothing changed. */
static void admin_ops_fail(struct job *j, const char *err)
{
    struct admin_call *c = (struct admin_call *)j;

    answer_drop(c);
    c->changed = false;
    c->status = 503;
    c->answer = strdup(err);
    c->answer_len = c->answer ? strlen(c->answer) : 0;
}

struct admin_call *admin_call_new(struct web *w, struct http_request *req, enum admin_op op)
{
    struct admin_call *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->web = w;
    c->req = req;
    c->op = op;
    c->job.run = admin_ops_run;
    c->job.fail = admin_ops_fail;
    manage_token_init(&c->token, NULL);
    return c;
}

void admin_call_free(struct admin_call *c)
{
    if (!c)
        return;
    answer_drop(c);
    free(c->name);
    free(c->id);
    free(c->limits);
    manage_token_clear(&c->token);
    json_value_free(c->body);
    free(c);
}
