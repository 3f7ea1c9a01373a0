#include "tenancy/manage_json.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/json.h"
#include "util/limits.h"

void manage_json_string(FILE *out, const char *s)
{
    struct json j;
    size_t len;

    json_init(&j);
    json_string(&j, s);
    char *text = json_take(&j, &len);
    if (text)
        fwrite(text, 1, len, out);
    else
        fputs("null", out); /* out of memory */
    free(text);
}

void manage_json_string_or_null(FILE *out, const char *s)
{
    if (s != NULL)
        manage_json_string(out, s);
    else
        fputs("null", out);
}

static void json_strings(FILE *out, const struct store_filters *f)
{
    fputc('[', out);
    for (size_t i = 0; i < f->count; i++) {
        if (i > 0)
            fputs(", ", out);
        manage_json_string(out, f->items[i]);
    }
    fputc(']', out);
}

void manage_json_members(FILE *out, const char *const *members)
{
    for (size_t i = 0; members[i] != NULL; i += 2) {
        fprintf(out, "%s\"%s\": ", i == 0 ? "{" : ", ", members[i]);
        manage_json_string(out, members[i + 1]);
    }
}

void manage_json_limits(FILE *out, const struct store_limit *limits, size_t count)
{
    fputc('{', out);
    for (size_t i = 0; i < count; i++) {
        if (i > 0)
            fputs(", ", out);
        manage_json_string(out, limits[i].name);
        fprintf(out, ": %llu", limits[i].value);
    }
    fputc('}', out);
}

const char *manage_iso_time(int64_t t, char *buf, size_t size)
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (gmtime_r(&tt, &tm) == NULL || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, size, "@%lld", (long long)t);
    return buf;
}

void manage_json_list_next(FILE *out, size_t *n)
{
    fputs(*n == 0 ? "[\n  " : ",\n  ", out);
    (*n)++;
}

void manage_json_list_end(FILE *out, size_t n)
{
    fputs(n == 0 ? "[]\n" : "\n]\n", out);
}

void manage_json_instance(FILE *out, const char *name, const char *plan, int64_t created,
                          size_t tokens)
{
    char when[32];

    manage_json_members(out, (const char *const[]){"name", name, "plan", plan, NULL});
    fprintf(out, ", \"created\": \"%s\", \"tokens\": %zu, \"limits\": ",
            manage_iso_time(created, when, sizeof(when)), tokens);
}

void manage_json_instance_listed(FILE *out, const struct store_instance *inst)
{
    manage_json_instance(out, inst->name, inst->plan, inst->created, inst->token_count);
    manage_json_limits(out, inst->overrides, inst->override_count);
    fputc('}', out);
}

void manage_json_instance_view(FILE *out, const struct manage_instance_view *v)
{
    manage_json_instance(out, v->name, v->plan, v->created, v->tokens);
    fputc('{', out);
    for (size_t i = 0; i < limits_count(); i++)
        fprintf(out, "%s\n  \"%s\": {\"value\": %llu, \"source\": \"%s\"}", i ? "," : "",
                limits_name(i), v->value[i], v->source[i]);
    fputs("\n}}\n", out);
}

void manage_json_plan(FILE *out, const char *plan, const struct store_limit *limits, size_t count)
{
    manage_json_members(out, (const char *const[]){"name", plan, NULL});
    fputs(", \"limits\": ", out);
    manage_json_limits(out, limits, count);
    fputc('}', out);
}

void manage_json_token_members(FILE *out, const struct store_token *t, int64_t now)
{
    static const char *const keys[MANAGE_FILTER_KINDS] = {"pub", "sub", "deny_pub", "deny_sub"};
    const struct store_filters *lists[MANAGE_FILTER_KINDS] = {&t->pub, &t->sub, &t->deny_pub,
                                                              &t->deny_sub};
    char created[32], expires[32];

    manage_iso_time(t->created, created, sizeof(created));
    manage_iso_time(t->expires, expires, sizeof(expires));
    fprintf(out, "\"id\": \"%s\", \"instance\": ", t->id);
    manage_json_string(out, t->instance);
    fputs(", \"label\": ", out);
    manage_json_string_or_null(out, t->label[0] != '\0' ? t->label : NULL);
    if (t->created >= 0)
        fprintf(out, ", \"created\": \"%s\"", created);
    fprintf(out, ", \"expires\": %s%s%s, \"key\": %s", t->expires ? "\"" : "",
            t->expires ? expires : "null", t->expires ? "\"" : "", t->expires ? "false" : "true");
    fputs(", \"client_id\": ", out);
    manage_json_string_or_null(out, t->client_id);
    for (int k = 0; k < MANAGE_FILTER_KINDS; k++) {
        fprintf(out, ", \"%s\": ", keys[k]);
        json_strings(out, lists[k]);
    }
    fprintf(out, ", \"allow_action\": %s", t->allow_action ? "true" : "false");
    if (t->created >= 0)
        fprintf(out, ", \"status\": \"%s\"", manage_token_status(t, now));
}

void manage_json_admin_key(FILE *out, const struct store_admin_key *k)
{
    char created[32];

    fprintf(out, "{\"id\": \"%s\", \"label\": ", k->id);
    manage_json_string_or_null(out, k->label[0] != '\0' ? k->label : NULL);
    fprintf(out, ", \"created\": \"%s\", \"status\": \"%s\"}",
            manage_iso_time(k->created, created, sizeof(created)),
            k->revoked ? "revoked" : "active");
}
