/*
 * admin_ops — the management API's calls that read or write the database:
 * one struct admin_call per request, checked on the core thread (admin.c),
 * run in the jobs thread (tenancy/jobs.h) through tenancy/manage, and
 * answered on the core thread again. Its JSON is aviaryctl --json's
 * (tenancy/manage_json.h).
 */
#ifndef AVIARY_WEB_ADMIN_OPS_H
#define AVIARY_WEB_ADMIN_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tenancy/jobs.h"
#include "tenancy/manage.h"
#include "util/limits.h"

struct http_request;
struct json_value;
struct web;

enum admin_op {
    ADMIN_RECHECK_KEY, /* no database work: the key is asked again after a look */
    ADMIN_INSTANCES_LIST,
    ADMIN_INSTANCE_CREATE,
    ADMIN_INSTANCE_GET,
    ADMIN_INSTANCE_DELETE,
    ADMIN_INSTANCE_PATCH,
    ADMIN_TOKENS_LIST,
    ADMIN_TOKEN_CREATE,
    ADMIN_TOKEN_REVOKE,
    ADMIN_PLANS_LIST,
    ADMIN_PLAN_SET,
};

/* One limit to set, checked: its name borrowed from the body or the path. */
struct admin_limit {
    const char *name;
    unsigned long long value;
};

struct admin_call {
    struct job job; /* first: the jobs thread runs it */
    struct web *web;
    struct http_request *req; /* NULL once its client went (the abort hook) */
    bool waiting;             /* on web->admin_waiting for look number `look` */
    uint64_t look;
    struct admin_call *next; /* web->admin_waiting */

    /* What to do, checked on the core thread. */
    enum admin_op op;
    char *name;                 /* instance or plan; owned */
    char *id;                   /* token id or limit name; owned */
    const char *plan;           /* from the body */
    struct admin_limit *limits; /* owned array */
    size_t limit_count;
    struct manage_token token; /* ADMIN_TOKEN_CREATE */
    struct json_value *body;   /* owned: the strings above point into it */
    struct limits base;        /* the configuration's: an instance's effective limits */

    /* The answer, made in the jobs thread. */
    int status;
    bool changed; /* the database changed: answer after a look */
    char *answer; /* JSON, or an error's words when status >= 400; owned */
    size_t answer_len;
};

/* A new call for `req` of `w` (NULL when out of memory). */
struct admin_call *admin_call_new(struct web *w, struct http_request *req, enum admin_op op);

void admin_call_free(struct admin_call *c);

/* jobs.h's run: the call's database work and its answer. */
void admin_ops_run(struct job *j, struct store *s);

#endif
