#include "tenancy/manage.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "broker/topic.h"
#include "util/error.h"
#include "util/hex.h"
#include "util/log.h"
#include "util/utf8.h"

/* Room for a value quoted in a message. */
#define MANAGE_SHOWN 72

static int invalid(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int invalid(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    error_vset(err, errlen, fmt, ap);
    va_end(ap);
    return STORE_E_INVALID;
}

static int no_memory(char *err, size_t errlen)
{
    error_set(err, errlen, "out of memory");
    return STORE_E_NOMEM;
}

long long manage_duration_parse(const char *text)
{
    long long n = 0, unit;
    const char *p = text;

    if (*p < '0' || *p > '9')
        return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        n = n * 10 + (*p - '0');
        if (n > MANAGE_TTL_MAX)
            return -1;
    }
    switch (*p) {
    case 's':
        unit = 1;
        break;
    case 'm':
        unit = 60;
        break;
    case 'h':
        unit = 3600;
        break;
    case 'd':
        unit = 24 * 3600;
        break;
    default:
        return -1;
    }
    if (p[1] != '\0' || n == 0 || n > MANAGE_TTL_MAX / unit)
        return -1;
    return n * unit;
}

int manage_limit_value(const char *limit, const char *value, unsigned long long *out, char *err,
                       size_t errlen)
{
    return limits_parse(limit, value, out, err, errlen) < 0 ? STORE_E_INVALID : 0;
}

/* A label or client id: UTF-8 without control characters, at most `max` bytes. */
static int text_check(const char *field, const char *text, size_t len, size_t max, char *err,
                      size_t errlen)
{
    const unsigned char *p = (const unsigned char *)text, *end = p + len;

    if (len > max)
        return invalid(err, errlen, "%s: longer than %zu bytes", field, max);
    while (p < end) {
        size_t n = utf8_length(p, (size_t)(end - p));
        if (n == 0)
            return invalid(err, errlen, "%s: not valid UTF-8", field);
        if (n == 1 && (*p < 0x20 || *p == 0x7f))
            return invalid(err, errlen, "%s: control characters are not allowed", field);
        p += n;
    }
    return 0;
}

int manage_label_check(const char *field, const char *label, size_t len, char *err, size_t errlen)
{
    return text_check(field, label, len, MANAGE_LABEL_MAX, err, errlen);
}

void manage_token_init(struct manage_token *t, const char *instance)
{
    memset(t, 0, sizeof(*t));
    t->instance = instance;
    t->now = (int64_t)time(NULL);
}

void manage_token_clear(struct manage_token *t)
{
    for (int k = 0; k < MANAGE_FILTER_KINDS; k++) {
        for (size_t i = 0; i < t->filter_count[k]; i++)
            free(t->filters[k][i]);
        free(t->filters[k]);
        t->filters[k] = NULL;
        t->filter_count[k] = 0;
    }
}

int manage_token_ttl(struct manage_token *t, const char *field, const char *ttl, char *err,
                     size_t errlen)
{
    char buf[MANAGE_SHOWN];
    long long seconds = manage_duration_parse(ttl);

    if (seconds < 0)
        return invalid(err, errlen,
                       "%s: bad duration '%s' (a positive number and s, m, h or d, e.g. 90s, "
                       "15m, 2h, 7d; at most 100 years)",
                       field, log_escape_str(ttl, buf, sizeof(buf)));
    t->expires = t->now + seconds;
    t->given |= MANAGE_GIVEN_EXPIRES;
    return 0;
}

int manage_token_label(struct manage_token *t, const char *field, const char *label, size_t len,
                       char *err, size_t errlen)
{
    int rc = manage_label_check(field, label, len, err, errlen);

    if (rc == 0) {
        t->label = len > 0 ? label : NULL;
        t->given |= MANAGE_GIVEN_LABEL;
    }
    return rc;
}

/* A new client id of MANAGE_AUTO_CLIENT_ID_LEN hex characters into t->made_client_id. */
static int made_client_id(struct manage_token *t, const char *field, char *err, size_t errlen)
{
    uint8_t raw[MANAGE_AUTO_CLIENT_ID_LEN / 2];

    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
        return invalid(err, errlen, "%s: cannot draw random bytes for a client id", field);
    hex_encode(raw, sizeof(raw), t->made_client_id);
    t->client_id = t->made_client_id;
    t->given |= MANAGE_GIVEN_CLIENT_ID;
    return 0;
}

int manage_token_client_id(struct manage_token *t, const char *field, const char *client_id,
                           size_t len, char *err, size_t errlen)
{
    if (len == 0)
        return invalid(err, errlen, "%s: empty", field);
    if (len == strlen(MANAGE_CLIENT_ID_AUTO) && memcmp(client_id, MANAGE_CLIENT_ID_AUTO, len) == 0)
        return made_client_id(t, field, err, errlen);
    int rc = text_check(field, client_id, len, MANAGE_CLIENT_ID_MAX, err, errlen);
    if (rc == 0) {
        t->client_id = client_id;
        t->given |= MANAGE_GIVEN_CLIENT_ID;
    }
    return rc;
}

int manage_token_filter(struct manage_token *t, int kind, const char *field, const char *filter,
                        size_t len, char *err, size_t errlen)
{
    char buf[MANAGE_SHOWN];
    int rc = topic_check_filter(filter, len, MANAGE_FILTER_MAX, TOPIC_CHARSET_UTF8);
    bool slash;

    if (rc == TOPIC_E_TOO_LONG)
        return invalid(err, errlen, "%s '%s': longer than %d characters", field,
                       log_escape_str(filter, buf, sizeof(buf)), MANAGE_FILTER_MAX);
    if (rc != TOPIC_OK)
        return invalid(err, errlen, "%s '%s': %s", field, log_escape_str(filter, buf, sizeof(buf)),
                       topic_strerror(rc));
    size_t n = t->filter_count[kind];
    char **grown = realloc(t->filters[kind], (n + 2) * sizeof(*grown));
    if (!grown)
        return no_memory(err, errlen);
    t->filters[kind] = grown;
    if (!(grown[n] = malloc(len + 1)))
        return no_memory(err, errlen);
    topic_normalize(filter, len, grown[n], &slash);
    grown[n + 1] = NULL;
    t->filter_count[kind] = n + 1;
    t->given |= MANAGE_GIVEN_FILTERS << kind;
    return 0;
}

static struct store_filters filters_of(const struct manage_token *t, int kind)
{
    return (struct store_filters){.items = (const char *const *)t->filters[kind],
                                  .count = t->filter_count[kind]};
}

int manage_token_create(struct store *s, const struct manage_token *t,
                        char id[STORE_TOKEN_ID_LEN + 1], char secret[STORE_SECRET_LEN + 1],
                        struct store_token *view, char *err, size_t errlen)
{
    struct store_token_spec spec = {
        .instance = t->instance,
        .label = t->label,
        .expires = t->expires,
        .client_id = t->client_id,
        .pub = filters_of(t, 0),
        .sub = filters_of(t, 1),
        .deny_pub = filters_of(t, 2),
        .deny_sub = filters_of(t, 3),
        .allow_action = t->allow_action,
    };
    int rc = store_token_create(s, &spec, id, secret, err, errlen);

    if (rc < 0)
        return rc;
    *view = (struct store_token){
        .id = id,
        .instance = spec.instance,
        .label = spec.label != NULL ? spec.label : "",
        .created = -1,
        .expires = spec.expires,
        .client_id = spec.client_id,
        .pub = spec.pub,
        .sub = spec.sub,
        .deny_pub = spec.deny_pub,
        .deny_sub = spec.deny_sub,
        .allow_action = spec.allow_action,
    };
    return 0;
}

int manage_token_update(struct store *s, const struct manage_token *t, const char *id, char *err,
                        size_t errlen)
{
    struct store_token_patch p = {
        .instance = t->instance,
        .id = id,
        .set_label = t->given & MANAGE_GIVEN_LABEL,
        .label = t->label,
        .set_expires = t->given & MANAGE_GIVEN_EXPIRES,
        .expires = t->expires,
        .set_client_id = t->given & MANAGE_GIVEN_CLIENT_ID,
        .client_id = t->client_id,
        .set_allow_action = t->given & MANAGE_GIVEN_ACTION,
        .allow_action = t->allow_action,
    };

    if (t->given == 0)
        return invalid(err, errlen, "nothing to change (give at least one option)");
    for (int k = 0; k < MANAGE_FILTER_KINDS; k++) {
        p.set_filters[k] = t->given & (MANAGE_GIVEN_FILTERS << k);
        p.filters[k] = filters_of(t, k);
    }
    return store_token_update(s, &p, err, errlen);
}

const char *manage_token_status(const struct store_token *t, int64_t now)
{
    if (t->revoked)
        return "revoked";
    if (t->expires != 0 && t->expires <= now)
        return "expired";
    return "active";
}

/* The index of limit `name` among limits_name(), or -1. */
static long limit_index(const char *name)
{
    for (size_t i = 0; i < limits_count(); i++)
        if (strcmp(limits_name(i), name) == 0)
            return (long)i;
    return -1;
}

/* manage_instance_view's callbacks: the instance's own limits, then its plan's. */
struct view_state {
    struct manage_instance_view *v;
    bool failed;
};

static void view_instance(void *arg, const struct store_instance *inst)
{
    struct view_state *vs = arg;
    struct manage_instance_view *v = vs->v;

    if ((v->name = strdup(inst->name)) == NULL || (v->plan = strdup(inst->plan)) == NULL) {
        vs->failed = true;
        return;
    }
    v->created = inst->created;
    v->tokens = inst->token_count;
    for (size_t i = 0; i < inst->override_count; i++) {
        long k = limit_index(inst->overrides[i].name);
        if (k >= 0) {
            v->value[k] = inst->overrides[i].value;
            v->source[k] = "instance";
        }
    }
}

static void view_plan(void *arg, const char *plan, const struct store_limit *limits, size_t count)
{
    struct view_state *vs = arg;
    struct manage_instance_view *v = vs->v;

    if (v->plan == NULL || strcmp(plan, v->plan) != 0)
        return;
    for (size_t i = 0; i < count; i++) {
        long k = limit_index(limits[i].name);
        /* the instance's own value wins over its plan's */
        if (k >= 0 && strcmp(v->source[k], "instance") != 0) {
            v->value[k] = limits[i].value;
            v->source[k] = "plan";
        }
    }
}

int manage_instance_view(struct store *s, const struct limits *base, const char *name,
                         struct manage_instance_view *v, char *err, size_t errlen)
{
    size_t n = limits_count();
    struct view_state vs = {.v = v};
    int rc;

    memset(v, 0, sizeof(*v));
    v->value = calloc(n, sizeof(*v->value));
    v->source = calloc(n, sizeof(*v->source));
    if (v->value == NULL || v->source == NULL)
        return no_memory(err, errlen);
    for (size_t i = 0; i < n; i++) {
        v->value[i] = (unsigned long long)limits_get(base, limits_name(i));
        v->source[i] = "config";
    }
    /* One snapshot: the plan read is the one the instance had. */
    rc = store_read_begin(s, err, errlen);
    if (rc == 0)
        rc = store_instance_get(s, name, view_instance, &vs, err, errlen);
    if (rc == 0 && !vs.failed)
        rc = store_plan_list(s, view_plan, &vs, err, errlen);
    store_read_end(s);
    if (rc == 0 && vs.failed)
        rc = no_memory(err, errlen);
    return rc;
}

void manage_instance_view_free(struct manage_instance_view *v)
{
    free(v->name);
    free(v->plan);
    free(v->value);
    free(v->source);
    memset(v, 0, sizeof(*v));
}
