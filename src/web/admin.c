/*
 * /admin/ — the management API: instances, plans, tokens and live clients,
 * for an admin key (aviaryctl admin-key create). See aviaryd(8), MANAGEMENT
 * API, for the resources and their JSON.
 *
 * A request is checked here on the core thread (the key, the route, the
 * body); what needs the database becomes an admin_call that the jobs thread
 * runs (admin_ops.c). A change is answered only once a look at the database
 * that started after it has been applied to the broker's catalog
 * (broker_look_soon, then web_looked from the program), so whatever the
 * answer says was done is already in force for MQTT: a token created is
 * accepted by a CONNECT sent right after the answer. Live clients are the
 * broker's own state, answered at once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "broker/broker.h"
#include "broker/conn.h"
#include "broker/core.h"
#include "broker/instance.h"
#include "broker/session.h"
#include "net/http.h"
#include "tenancy/catalog.h"
#include "tenancy/jobs.h"
#include "util/json_read.h"
#include "util/strmap.h"
#include "web/admin_ops.h"
#include "web/handlers.h"

/* A path's parts: /admin/instances/NAME/tokens/ID; the last one takes the rest. */
#define ADMIN_PARTS 4

static void admin_handle(struct web *w, struct http_request *req, bool rechecked);

static bool method_is(const struct http_request *req, const char *method)
{
    return strcmp(req->method, method) == 0;
}

/* 405 with the methods `allow` lists ("GET, POST"). */
static void admin_not_allowed(struct http_request *req, const char *allow)
{
    http_add_header(req, "Allow", allow);
    web_error(req, 405, "%s is not served here (allowed: %s)", req->method, allow);
}

/* ---- answers -------------------------------------------------------------- */

static void admin_answer(struct admin_call *c)
{
    struct http_request *req = c->req;

    req->abort = NULL;
    if (!c->answer)
        web_error(req, 503, "out of memory");
    else if (c->status >= 400)
        web_error(req, c->status, "%s", c->answer);
    else
        http_reply(req, c->status, "application/json", c->answer, c->answer_len);
    admin_call_free(c);
}

static void admin_unwait(struct admin_call *c)
{
    struct admin_call **p = &c->web->admin_waiting;

    while (*p && *p != c)
        p = &(*p)->next;
    if (*p)
        *p = c->next;
    c->waiting = false;
}

/* The client went before its answer: a call in the jobs thread is freed when it returns. */
static void admin_abort(void *arg)
{
    struct admin_call *c = arg;

    c->req = NULL;
    if (c->waiting) {
        admin_unwait(c);
        admin_call_free(c);
    }
}

/* Wait for the next look at the database; false when none can be asked for. */
static bool admin_wait_look(struct admin_call *c)
{
    c->look = broker_look_soon(c->web->broker);
    if (c->look == 0)
        return false;
    c->waiting = true;
    c->next = c->web->admin_waiting;
    c->web->admin_waiting = c;
    return true;
}

/* jobs.h's done: answer now, or after the look that makes the change visible. */
static void admin_job_done(struct job *j)
{
    struct admin_call *c = (struct admin_call *)j;

    if (!c->req)
        admin_call_free(c);
    else if (!c->changed || !admin_wait_look(c))
        admin_answer(c);
}

static void admin_job_release(struct job *j)
{
    admin_call_free((struct admin_call *)j);
}

void web_admin_looked(struct web *w, uint64_t n)
{
    struct admin_call *ready = NULL, **p = &w->admin_waiting;

    /* Taken off first: an answer may let the next request in, which may wait anew. */
    while (*p) {
        struct admin_call *c = *p;
        if (c->look > n) {
            p = &c->next;
            continue;
        }
        *p = c->next;
        c->waiting = false;
        c->next = ready;
        ready = c;
    }
    while (ready) {
        struct admin_call *c = ready;
        ready = c->next;
        if (c->op != ADMIN_RECHECK_KEY) {
            admin_answer(c);
            continue;
        }
        struct http_request *req = c->req;
        admin_call_free(c);
        req->abort = NULL;
        admin_handle(w, req, true);
    }
}

void web_admin_free(struct web *w)
{
    while (w->admin_waiting) {
        struct admin_call *c = w->admin_waiting;
        w->admin_waiting = c->next;
        admin_call_free(c);
    }
}

/* Hand `c` to the jobs thread; its answer comes in admin_job_done. */
static void admin_submit(struct web *w, struct admin_call *c)
{
    c->job.done = admin_job_done;
    c->job.release = admin_job_release;
    c->base = w->broker->limits;
    c->req->abort = admin_abort;
    c->req->abort_arg = c;
    jobs_submit(w->jobs, &c->job);
}

/* ---- request bodies ------------------------------------------------------- */

/*
 * The body as a JSON object whose members are all among `known` (NULL
 * ended) into c->body; an empty body is an empty object. 0, or -1 after
 * answering.
 */
static int admin_body(struct admin_call *c, const char *const *known)
{
    struct http_request *req = c->req;
    char err[256], names[256] = "";

    if (req->body_len == 0)
        c->body = json_read("{}", 2, err, sizeof(err));
    else
        c->body = json_read((const char *)req->body, req->body_len, err, sizeof(err));
    if (!c->body) {
        web_error(req, strcmp(err, "out of memory") == 0 ? 503 : 400, "malformed JSON: %s", err);
        return -1;
    }
    if (c->body->type != JSON_OBJECT) {
        web_error(req, 400, "the body must be a JSON object, not %s",
                  json_type_name(c->body->type));
        return -1;
    }
    for (size_t i = 0; known[i]; i++)
        snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s", i ? ", " : "",
                 known[i]);
    for (size_t i = 0; i < c->body->count; i++) {
        const char *key = c->body->members[i].key;
        size_t k = 0;
        while (known[k] && strcmp(known[k], key) != 0)
            k++;
        if (!known[k] || strlen(key) != c->body->members[i].key_len) {
            web_error(req, 400, "unknown field \"%.64s\" (known: %s)", key, names);
            return -1;
        }
    }
    return 0;
}

/* A string member: *out (NULL when absent and not `required`). 0, or -1 after answering. */
static int admin_string(struct admin_call *c, const char *key, bool required, const char **out)
{
    const struct json_value *v = json_get(c->body, key);

    *out = NULL;
    if (!v && !required)
        return 0;
    if (!v) {
        web_error(c->req, 400, "%s: missing", key);
        return -1;
    }
    if (v->type != JSON_STRING) {
        web_error(c->req, 400, "%s: expected a string, got %s", key, json_type_name(v->type));
        return -1;
    }
    if (strlen(v->text) != v->len) {
        web_error(c->req, 400, "%s: U+0000 is not allowed", key);
        return -1;
    }
    *out = v->text;
    return 0;
}

/*
 * A limit's value, a number or aviary.conf's text ("64k"), checked for limit
 * `name`; `field` names it in messages. 0, or -1 after answering.
 */
static int admin_limit_value(struct admin_call *c, const char *field, const char *name,
                             const struct json_value *v, struct admin_limit *out)
{
    char text[32], err[768];
    const char *value = text;
    unsigned long long n;

    if (v->type == JSON_STRING && strlen(v->text) == v->len)
        value = v->text;
    else if (json_value_uint(v, ~0ULL, &n))
        snprintf(text, sizeof(text), "%llu", n);
    else {
        web_error(c->req, 400, "%s: expected a whole number or a string such as \"64k\", got %s",
                  field, json_type_name(v->type));
        return -1;
    }
    if (manage_limit_value(name, value, &out->value, err, sizeof(err)) < 0) {
        web_error(c->req, 400, "%s", err);
        return -1;
    }
    out->name = name;
    return 0;
}

/* ---- the routes ----------------------------------------------------------- */

/* POST /admin/instances {"name": NAME, "plan": PLAN}. */
static int admin_instance_create(struct admin_call *c)
{
    static const char *const known[] = {"name", "plan", NULL};
    const char *name;

    if (admin_body(c, known) < 0 || admin_string(c, "name", true, &name) < 0 ||
        admin_string(c, "plan", false, &c->plan) < 0)
        return -1;
    c->name = strdup(name);
    return 0;
}

/* PATCH /admin/instances/NAME {"plan": PLAN, "limits": {LIMIT: VALUE...}}. */
static int admin_instance_patch(struct admin_call *c)
{
    static const char *const known[] = {"plan", "limits", NULL};
    const struct json_value *limits;
    char field[96];

    if (admin_body(c, known) < 0 || admin_string(c, "plan", false, &c->plan) < 0)
        return -1;
    if ((limits = json_get(c->body, "limits")) && limits->type != JSON_OBJECT) {
        web_error(c->req, 400, "limits: expected an object, got %s", json_type_name(limits->type));
        return -1;
    }
    if (!c->plan && (!limits || limits->count == 0)) {
        web_error(c->req, 400, "nothing to change: give \"plan\" or \"limits\"");
        return -1;
    }
    if (limits && !(c->limits = calloc(limits->count + 1, sizeof(*c->limits)))) {
        web_error(c->req, 503, "out of memory");
        return -1;
    }
    for (size_t i = 0; limits && i < limits->count; i++) {
        const struct json_member *m = &limits->members[i];
        snprintf(field, sizeof(field), "limits.%.64s", m->key);
        if (admin_limit_value(c, field, m->key, &m->value, &c->limits[c->limit_count++]) < 0)
            return -1;
    }
    return 0;
}

/* PUT /admin/plans/PLAN/limits/LIMIT {"value": VALUE}. */
static int admin_plan_set(struct admin_call *c)
{
    static const char *const known[] = {"value", NULL};
    const struct json_value *v;

    if (admin_body(c, known) < 0)
        return -1;
    if (!(v = json_get(c->body, "value"))) {
        web_error(c->req, 400, "value: missing");
        return -1;
    }
    if (!(c->limits = calloc(1, sizeof(*c->limits)))) {
        web_error(c->req, 503, "out of memory");
        return -1;
    }
    c->limit_count = 1;
    return admin_limit_value(c, "value", c->id, v, &c->limits[0]);
}

/* The token's ttl: a duration as aviaryctl takes it ("15m"), or seconds. */
static int admin_token_ttl(struct admin_call *c, const struct json_value *v)
{
    char text[32], err[256];
    const char *ttl = text;
    unsigned long long n;

    if (v->type == JSON_STRING && strlen(v->text) == v->len) {
        ttl = v->text;
    } else if (json_value_uint(v, MANAGE_TTL_MAX, &n)) {
        snprintf(text, sizeof(text), "%llus", n);
    } else {
        web_error(c->req, 400,
                  "ttl: expected a duration such as \"15m\" or a whole number of seconds "
                  "(at most 100 years), got %s",
                  v->type == JSON_NUMBER ? v->text : json_type_name(v->type));
        return -1;
    }
    if (manage_token_ttl(&c->token, "ttl", ttl, err, sizeof(err)) < 0) {
        web_error(c->req, 400, "%s", err);
        return -1;
    }
    return 0;
}

/* One of the token's filter lists: an array of strings. */
static int admin_token_filters(struct admin_call *c, int kind, const char *key)
{
    const struct json_value *list = json_get(c->body, key);
    char err[768];

    if (!list)
        return 0;
    if (list->type != JSON_ARRAY) {
        web_error(c->req, 400, "%s: expected an array of topic filters, got %s", key,
                  json_type_name(list->type));
        return -1;
    }
    for (size_t i = 0; i < list->count; i++) {
        const struct json_value *f = &list->items[i];
        if (f->type != JSON_STRING) {
            web_error(c->req, 400, "%s[%zu]: expected a string, got %s", key, i,
                      json_type_name(f->type));
            return -1;
        }
        int rc = manage_token_filter(&c->token, kind, key, f->text, f->len, err, sizeof(err));
        if (rc < 0) {
            web_error(c->req, rc == STORE_E_NOMEM ? 503 : 400, "%s", err);
            return -1;
        }
    }
    return 0;
}

/* POST /admin/instances/NAME/tokens: the options of aviaryctl token create. */
static int admin_token_create(struct admin_call *c)
{
    static const char *const known[] = {"label",    "ttl",      "client_id",    "pub", "sub",
                                        "deny_pub", "deny_sub", "allow_action", NULL};
    const char *label, *client_id;
    const struct json_value *ttl;
    char err[768];
    int rc = 0;

    if (admin_body(c, known) < 0 || admin_string(c, "label", false, &label) < 0 ||
        admin_string(c, "client_id", false, &client_id) < 0)
        return -1;
    if ((ttl = json_get(c->body, "ttl")) && admin_token_ttl(c, ttl) < 0)
        return -1;
    const struct json_value *act = json_get(c->body, "allow_action");
    if (act && act->type != JSON_TRUE && act->type != JSON_FALSE) {
        web_error(c->req, 400, "allow_action: expected true or false");
        return -1;
    }
    c->token.allow_action = act && act->type == JSON_TRUE;
    if (label)
        rc = manage_token_label(&c->token, "label", label, strlen(label), err, sizeof(err));
    if (rc == 0 && client_id)
        rc = manage_token_client_id(&c->token, "client_id", client_id, strlen(client_id), err,
                                    sizeof(err));
    if (rc < 0) {
        web_error(c->req, 400, "%s", err);
        return -1;
    }
    for (int k = 0; k < MANAGE_FILTER_KINDS; k++)
        if (admin_token_filters(c, k, known[3 + k]) < 0)
            return -1;
    return 0;
}

/* ---- live clients: the broker's own state ------------------------------- */

static void admin_client_json(struct evbuffer *out, const struct conn *c, size_t *n)
{
    const char *id = c->session->client_id;

    evbuffer_add_printf(out, "%s{\"client_id\": ", (*n)++ ? ",\n  " : "[\n  ");
    web_json_string(out, id, strlen(id));
    evbuffer_add_printf(out,
                        ", \"protocol\": %u, \"transport\": \"%s\", \"peer\": \"%s\", "
                        "\"keepalive\": %u, \"token\": ",
                        (unsigned)c->out.version, web_transport_name(c->link.meta.transport),
                        link_peer_name(&c->link.meta.peer).s, (unsigned)c->keepalive);
    if (c->token)
        evbuffer_add_printf(out, "\"%s\"}", c->token->id);
    else
        evbuffer_add(out, "null}", 5);
}

/* GET /admin/instances/NAME/clients: every client connected to it now. */
static void admin_clients(struct web *w, struct http_request *req, const char *name)
{
    struct instance *inst = strmap_get(&w->broker->instances, name);
    struct evbuffer *out = evbuffer_new();
    size_t n = 0;

    if (!out) {
        web_error(req, 503, "out of memory");
        return;
    }
    for (const struct conn *c = w->broker->conns; inst && c; c = c->next)
        if (c->instance == inst && c->state == CONN_ACTIVE && c->session)
            admin_client_json(out, c, &n);
    evbuffer_add_printf(out, "%s", n ? "\n]\n" : "[]\n");
    http_reply_buffer(req, 200, "application/json", out);
    evbuffer_free(out);
}

/* /admin/instances/NAME/clients[/CLIENT_ID]: the instance must be in the catalog. */
static void admin_route_clients(struct web *w, struct http_request *req, const char *name,
                                const char *client_id)
{
    if (!catalog_instance(w->broker->catalog, name)) {
        web_error(req, 404, "no instance '%.64s'", name);
        return;
    }
    if (!client_id) {
        if (!method_is(req, "GET"))
            admin_not_allowed(req, "GET");
        else
            admin_clients(w, req, name);
        return;
    }
    if (!method_is(req, "DELETE")) {
        admin_not_allowed(req, "DELETE");
    } else if (broker_close_client(w->broker, name, client_id) < 0) {
        web_error(req, 404, "no client '%.128s' is connected to instance '%s'", client_id, name);
    } else {
        struct evbuffer *out = evbuffer_new();
        if (!out) {
            web_error(req, 503, "out of memory");
            return;
        }
        evbuffer_add_printf(out, "{\"instance\": ");
        web_json_string(out, name, strlen(name));
        evbuffer_add_printf(out, ", \"client_id\": ");
        web_json_string(out, client_id, strlen(client_id));
        evbuffer_add_printf(out, ", \"closed\": true}\n");
        http_reply_buffer(req, 200, "application/json", out);
        evbuffer_free(out);
    }
}

/* ---- routing -------------------------------------------------------------- */

/* The operation of `method` among the pairs of `ops` ("GET", op, ..., NULL), or -1 after 405. */
static int admin_pick(struct http_request *req, const char *allow, const char *const *methods,
                      const enum admin_op *ops)
{
    for (size_t i = 0; methods[i]; i++)
        if (method_is(req, methods[i]))
            return (int)ops[i];
    admin_not_allowed(req, allow);
    return -1;
}

/* The operation the path `part` (count of them) and the method name; -1 after answering. */
static int admin_route(struct http_request *req, char **part, size_t count)
{
    static const char *const get_post[] = {"GET", "POST", NULL};
    static const char *const item[] = {"GET", "DELETE", "PATCH", NULL};
    static const char *const del[] = {"DELETE", NULL}, *const get[] = {"GET", NULL};
    static const char *const put[] = {"PUT", NULL};
    bool instances = strcmp(part[0], "instances") == 0, plans = strcmp(part[0], "plans") == 0;

    if (instances && count == 1)
        return admin_pick(req, "GET, POST", get_post,
                          (const enum admin_op[]){ADMIN_INSTANCES_LIST, ADMIN_INSTANCE_CREATE});
    if (instances && count == 2)
        return admin_pick(req, "GET, DELETE, PATCH", item,
                          (const enum admin_op[]){ADMIN_INSTANCE_GET, ADMIN_INSTANCE_DELETE,
                                                  ADMIN_INSTANCE_PATCH});
    if (instances && count == 3 && strcmp(part[2], "tokens") == 0)
        return admin_pick(req, "GET, POST", get_post,
                          (const enum admin_op[]){ADMIN_TOKENS_LIST, ADMIN_TOKEN_CREATE});
    if (instances && count == 4 && strcmp(part[2], "tokens") == 0)
        return admin_pick(req, "DELETE", del, (const enum admin_op[]){ADMIN_TOKEN_REVOKE});
    if (plans && count == 1)
        return admin_pick(req, "GET", get, (const enum admin_op[]){ADMIN_PLANS_LIST});
    if (plans && count == 4 && strcmp(part[2], "limits") == 0)
        return admin_pick(req, "PUT", put, (const enum admin_op[]){ADMIN_PLAN_SET});
    web_error(req, 404, "no such resource: %s (see aviaryd(8), MANAGEMENT API)", req->path);
    return -1;
}

/* Split `path` (after /admin/) into at most ADMIN_PARTS parts, the last taking the rest. */
static size_t admin_split(char *path, char **part)
{
    size_t n = 0;

    while (n < ADMIN_PARTS && *path) {
        part[n++] = path;
        char *slash = n < ADMIN_PARTS ? strchr(path, '/') : NULL;
        if (!slash)
            break;
        *slash = '\0';
        path = slash + 1;
        if (!*path)
            part[n++] = path; /* a trailing or doubled slash: an empty part */
    }
    return n;
}

/* The checked request as a call for the jobs thread. */
static void admin_dispatch(struct web *w, struct http_request *req, char **part, size_t count)
{
    int op = admin_route(req, part, count);
    if (op < 0)
        return;
    struct admin_call *c = admin_call_new(w, req, (enum admin_op)op);
    if (!c || (count > 1 && !(c->name = strdup(part[1]))) ||
        (count > 3 && !(c->id = strdup(part[3])))) {
        admin_call_free(c);
        web_error(req, 503, "out of memory");
        return;
    }
    int rc = op == ADMIN_INSTANCE_CREATE  ? admin_instance_create(c)
             : op == ADMIN_INSTANCE_PATCH ? admin_instance_patch(c)
             : op == ADMIN_TOKEN_CREATE   ? admin_token_create(c)
             : op == ADMIN_PLAN_SET       ? admin_plan_set(c)
                                          : 0;
    if (rc == 0 && op == ADMIN_INSTANCE_CREATE && !c->name) {
        web_error(req, 503, "out of memory");
        rc = -1;
    }
    if (rc < 0) {
        admin_call_free(c);
        return;
    }
    admin_submit(w, c);
}

/* A key the catalog does not have may be one aviaryctl has just made: look once more. */
static bool admin_recheck(struct web *w, struct http_request *req)
{
    struct admin_call *c = admin_call_new(w, req, ADMIN_RECHECK_KEY);

    if (!c)
        return false;
    if (!admin_wait_look(c)) {
        admin_call_free(c);
        return false;
    }
    req->abort = admin_abort;
    req->abort_arg = c;
    return true;
}

static void admin_handle(struct web *w, struct http_request *req, bool rechecked)
{
    char path[HTTP_MAX_HEAD], *part[ADMIN_PARTS];

    if (!w->broker->cloud || !w->jobs) {
        web_error(req, 404,
                  "the management API is served in cloud mode only (desktop mode has "
                  "no instances or tokens)");
        return;
    }
    enum web_admin_auth auth = web_admin_check(w, req);
    if (auth == WEB_ADMIN_WRONG && !rechecked && admin_recheck(w, req))
        return;
    if (auth != WEB_ADMIN_OK) {
        web_admin_refuse(req, auth, "the management API");
        return;
    }
    /* req->path is "/admin" or "/admin/..." */
    snprintf(path, sizeof(path), "%s", req->path + strlen("/admin") + (req->path[6] == '/'));
    size_t count = admin_split(path, part);
    if (count >= 3 && strcmp(part[0], "instances") == 0 && strcmp(part[2], "clients") == 0) {
        /* A client id may hold '/': the last part is everything after clients/. */
        admin_route_clients(w, req, part[1], count > 3 ? part[3] : NULL);
        return;
    }
    if (count == 0 || (count > 1 && !*part[1]) || (count > 3 && !*part[3])) {
        web_error(req, 404, "no such resource: %s (see aviaryd(8), MANAGEMENT API)", req->path);
        return;
    }
    admin_dispatch(w, req, part, count);
}

void web_admin(struct web *w, struct http_request *req)
{
    admin_handle(w, req, false);
}
