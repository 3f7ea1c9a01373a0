#include "util/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/error.h"
#include "util/log.h"
#include "util/redis_url.h"

enum directive_kind {
    KIND_LISTEN,
    KIND_CHOICE, /* one of `choices`, stored as its index in an int-sized field */
    KIND_PATH,
    KIND_NUMBER,
    KIND_BOOL,
    KIND_LIMITS, /* not a directive: where the limits (util/limits.h) come in the usage text */
};

struct directive {
    const char *name;
    enum directive_kind kind;
    const char *arg; /* the value's placeholder in the usage text; KIND_CHOICE: the choices */
    size_t offset;   /* of the field in struct config */
    size_t size;     /* of that field: numbers are size_t or unsigned */
    unsigned long long min, max;
    bool suffixes; /* the number may end in k/K (x1024), m/M (x1024^2) or g/G (x1024^3) */
    const char *const *choices; /* KIND_CHOICE: the values, in the order of the enum */
    const char *help;
};

static const char *const mode_choices[] = {"desktop", "cloud", NULL};
static const char *const client_cert_choices[] = {"none", "optional", "required", NULL};
/* In the order of enum log_level. */
static const char *const log_level_choices[] = {"error", "warning", "notice",
                                                "info",  "debug",   NULL};

/* Other spellings a choice accepts: what earlier help texts showed, or a common slip. */
static const struct {
    const char *directive, *alias, *value;
} choice_aliases[] = {
    {"tls-client-cert", "require", "required"},
    {"log-level", "warn", "warning"},
};

#define FIELD(f) offsetof(struct config, f), sizeof(((struct config *)0)->f)
#define CHOICE(f, c) "", FIELD(f), 0, 0, false, c
#define PATH(f) "PATH", FIELD(f), 0, 0, false, NULL
#define BOOL(f) "yes|no", FIELD(f), 0, 0, false, NULL

/* cluster: a Redis URL that redis_url_parse() takes, so that a typo stops the start. */
static int cluster_url_check(const char *value, char *err, size_t errlen)
{
    struct redis_url u;
    char why[256];
    int rc = redis_url_parse(value, &u, why, sizeof(why));

    redis_url_clear(&u);
    return rc < 0 ? error_set(err, errlen, "cluster: %s", why) : 0;
}

/* The KIND_PATH directives whose value is checked beyond its not being empty. */
static const struct {
    const char *directive;
    int (*check)(const char *value, char *err, size_t errlen);
} path_checks[] = {
    {"cluster", cluster_url_check},
};

/*
 * Every directive of aviaryd, in the order of the usage text. The parser, -h
 * (config_usage) and --dump-directives (config_dump) all read this table, and
 * tests/integration/test_directives.py holds the man pages and the sample
 * configuration to it.
 */
static const struct directive directives[] = {
    {"listen", KIND_LISTEN, "URL", FIELD(listen), 0, 0, false, NULL, "repeatable listener"},
    {"mode", KIND_CHOICE, CHOICE(mode, mode_choices), "one anonymous instance, or hosted tenants"},
    {"db", KIND_PATH, PATH(db), "SQLite database file"},
    {"create-db", KIND_BOOL, BOOL(create_db), "cloud: create a db that does not exist yet"},
    {NULL, KIND_LIMITS, NULL, 0, 0, 0, 0, false, NULL, NULL},
    {"tls-cert", KIND_PATH, PATH(tls_cert), "PEM certificate (chain) for tls:// and wss://"},
    {"tls-key", KIND_PATH, PATH(tls_key), "PEM private key of tls-cert"},
    {"tls-ca", KIND_PATH, PATH(tls_ca), "PEM CAs that client certificates must chain to"},
    {"cluster", KIND_PATH, "URL", FIELD(cluster_url), 0, 0, false, NULL,
     "join the cluster whose Redis is at this URL"},
    {"cluster-ca", KIND_PATH, PATH(cluster_ca), "PEM CAs a rediss:// server must chain to"},
    {"tls-client-cert", KIND_CHOICE, CHOICE(tls_client_cert, client_cert_choices),
     "ask TLS clients for a certificate"},
    {"password-file", KIND_PATH, PATH(password_file),
     "desktop: admit only the users of PATH (aviaryctl passwd)"},
    {"allow-keys-without-tls", KIND_BOOL, BOOL(allow_keys_without_tls),
     "cloud: accept keys (tokens without expiry) without TLS"},
    {"token-warning", KIND_NUMBER, "SECONDS", FIELD(token_warning), 1, LIMITS_IDLE_MAX, false, NULL,
     "lead of expirywarning on [mqtt]tokenevents"},
    {"max-memory", KIND_NUMBER, "BYTES", FIELD(max_memory), 0, LIMITS_MEMORY_MAX, true, NULL,
     "resident memory before new clients are refused; 0: none"},
    {"connect-timeout", KIND_NUMBER, "SECONDS", FIELD(connect_timeout), 1, 3600, false, NULL,
     "time from accept to CONNECT, handshakes included"},
    {"log-level", KIND_CHOICE, CHOICE(log_level, log_level_choices), "log this and above"},
    {"syslog", KIND_BOOL, BOOL(syslog), "log to syslog instead of standard error"},
    {"daemonize", KIND_BOOL, BOOL(daemonize), "run in the background"},
    {"pid-file", KIND_PATH, PATH(pid_file), "write the process id to PATH"},
};

#define DIRECTIVE_COUNT (sizeof(directives) / sizeof(directives[0]))

static const struct directive *directive_find(const char *name, size_t len)
{
    for (size_t i = 0; i < DIRECTIVE_COUNT; i++)
        if (directives[i].name && strlen(directives[i].name) == len &&
            memcmp(directives[i].name, name, len) == 0)
            return &directives[i];
    return NULL;
}

/* The default listeners of each mode (the cloud ones that need tls-cert last). */
static const char *const desktop_listeners[] = {CONFIG_DESKTOP_LISTEN_TCP, CONFIG_DESKTOP_LISTEN_WS,
                                                CONFIG_DESKTOP_LISTEN_HTTP};
static const char *const cloud_listeners[] = {CONFIG_CLOUD_LISTEN_TCP, CONFIG_CLOUD_LISTEN_WS,
                                              CONFIG_CLOUD_LISTEN_TLS, CONFIG_CLOUD_LISTEN_WSS};

const char *const *config_default_listeners(enum config_mode mode, bool tls, size_t *count)
{
    if (mode == CONFIG_MODE_CLOUD) {
        *count = tls ? 4 : 2;
        return cloud_listeners;
    }
    *count = 3;
    return desktop_listeners;
}

const char *config_db_path(const struct config *c)
{
    if (c->db)
        return c->db;
    return c->mode == CONFIG_MODE_CLOUD ? AVIARY_DEFAULT_DB : NULL;
}

void config_init(struct config *c)
{
    memset(c, 0, sizeof(*c));
    c->mode = CONFIG_MODE_DESKTOP;
    limits_init(&c->limits);
    c->log_level = LOG_LEVEL_NOTICE;
    c->token_warning = CONFIG_DEFAULT_TOKEN_WARNING;
    c->connect_timeout = CONFIG_DEFAULT_CONNECT_TIMEOUT;
}

static void config_clear_listen(struct config *c)
{
    for (size_t i = 0; i < c->listen_count; i++)
        free(c->listen[i]);
    free(c->listen);
    c->listen = NULL;
    c->listen_count = 0;
}

void config_free(struct config *c)
{
    config_clear_listen(c);
    free(c->db);
    free(c->pid_file);
    free(c->password_file);
    free(c->tls_cert);
    free(c->tls_key);
    free(c->tls_ca);
    free(c->cluster_url);
    free(c->cluster_ca);
    free(c->config_file);
    memset(c, 0, sizeof(*c));
}

/* ---- listener URLs ----------------------------------------------------- */

static bool host_char_ok(char ch)
{
    return isalnum((unsigned char)ch) || ch == '.' || ch == '-' || ch == '_';
}

/* Inside brackets: hex digits, colons and dots, then an optional %zone. */
static int check_ipv6(const char *h, size_t len, char *err, size_t errlen)
{
    bool colon = false, zone = false;

    for (size_t i = 0; i < len; i++) {
        char ch = h[i];
        if (zone) {
            if (!host_char_ok(ch))
                return error_set(err, errlen, "bad character '%c' in IPv6 zone", ch);
        } else if (ch == '%' && i > 0) {
            zone = true;
        } else if (ch == ':') {
            colon = true;
        } else if (!isxdigit((unsigned char)ch) && ch != '.') {
            return error_set(err, errlen, "bad character '%c' in IPv6 address", ch);
        }
    }
    if (!colon)
        return error_set(err, errlen, "'[%.*s]' is not an IPv6 address", (int)len, h);
    return 0;
}

int config_url_parse(const char *url, struct config_url *out, char *err, size_t errlen)
{
    static const char *const schemes[] = {"tcp", "tls", "ws", "wss", "http", "https"};
    const char *sep = strstr(url, "://");
    const char *host, *rest;
    size_t host_len;
    unsigned long port = 0;
    bool known = false;

    if (sep == NULL)
        return error_set(err, errlen, "expected SCHEME://HOST:PORT");
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++)
        if (strlen(schemes[i]) == (size_t)(sep - url) &&
            memcmp(schemes[i], url, (size_t)(sep - url)) == 0)
            known = true;
    if (!known)
        return error_set(err, errlen,
                         "unknown scheme '%.*s' (expected tcp, tls, ws, wss, http or https)",
                         (int)(sep - url), url);

    host = sep + 3;
    if (*host == '[') {
        const char *close = strchr(host, ']');
        if (close == NULL)
            return error_set(err, errlen, "missing ']' after IPv6 address");
        host++;
        host_len = (size_t)(close - host);
        rest = close + 1;
        if (host_len == 0)
            return error_set(err, errlen, "missing host");
        if (check_ipv6(host, host_len, err, errlen) < 0)
            return -1;
    } else {
        const char *colon = strrchr(host, ':');
        rest = colon != NULL ? colon : host + strlen(host);
        host_len = (size_t)(rest - host);
        if (memchr(host, ':', host_len) != NULL)
            return error_set(err, errlen,
                             "an IPv6 address must be in brackets, e.g. tcp://[::1]:1883");
        if (host_len == 0)
            return error_set(err, errlen, "missing host");
        for (size_t i = 0; i < host_len; i++)
            if (!host_char_ok(host[i]))
                return error_set(err, errlen, "bad character '%c' in host", host[i]);
    }
    if (host_len >= sizeof(out->host))
        return error_set(err, errlen, "host longer than %zu characters", sizeof(out->host) - 1);

    if (*rest != ':' || rest[1] == '\0')
        return error_set(err, errlen, "missing port");
    rest++;
    for (const char *p = rest; *p != '\0'; p++) {
        if (!isdigit((unsigned char)*p))
            return error_set(err, errlen, "bad port '%s'", rest);
        if (port <= 65535)
            port = port * 10 + (unsigned long)(*p - '0');
    }
    if (port > 65535)
        return error_set(err, errlen, "port must be between 0 and 65535, got '%s'", rest);

    memcpy(out->scheme, url, (size_t)(sep - url));
    out->scheme[sep - url] = '\0';
    memcpy(out->host, host, host_len);
    out->host[host_len] = '\0';
    out->port = (unsigned)port;
    return 0;
}

/* ---- one directive ------------------------------------------------------ */

static int set_listen(struct config *c, const struct directive *d, const char *value, char *err,
                      size_t errlen)
{
    struct config_url url;
    char reason[128];
    char *copy, **grown;

    if (config_url_parse(value, &url, reason, sizeof(reason)) < 0)
        return error_set(err, errlen, "%s: bad URL '%s': %s", d->name, value, reason);
    copy = strdup(value);
    if (copy == NULL)
        return error_set(err, errlen, "%s: out of memory", d->name);
    grown = realloc(c->listen, (c->listen_count + 1) * sizeof(*grown));
    if (grown == NULL) {
        free(copy);
        return error_set(err, errlen, "%s: out of memory", d->name);
    }
    c->listen = grown;
    c->listen[c->listen_count++] = copy;
    c->listen_set = true;
    return 0;
}

static int set_path(struct config *c, const struct directive *d, const char *value, char *err,
                    size_t errlen)
{
    char **field = (char **)((char *)c + d->offset);
    char *copy;

    if (*value == '\0')
        return error_set(err, errlen, "%s: empty path", d->name);
    for (size_t i = 0; i < sizeof(path_checks) / sizeof(path_checks[0]); i++)
        if (strcmp(d->name, path_checks[i].directive) == 0 &&
            path_checks[i].check(value, err, errlen) < 0)
            return -1;
    copy = strdup(value);
    if (copy == NULL)
        return error_set(err, errlen, "%s: out of memory", d->name);
    free(*field);
    *field = copy;
    return 0;
}

static int set_number(struct config *c, const struct directive *d, const char *value, char *err,
                      size_t errlen)
{
    unsigned long long n;

    if (limits_parse_number(d->name, value, d->min, d->max, d->suffixes, &n, err, errlen) < 0)
        return -1;
    limits_field_store((unsigned char *)c + d->offset, d->size, n);
    return 0;
}

/* A flag given without a value (in a file or as --flag) means yes. */
static int set_bool(struct config *c, const struct directive *d, const char *value, char *err,
                    size_t errlen)
{
    static const char *const yes[] = {"yes", "true", "on", "1"};
    static const char *const no[] = {"no", "false", "off", "0"};
    bool *field = (bool *)((char *)c + d->offset);

    if (value == NULL) {
        *field = true;
        return 0;
    }
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(value, yes[i]) == 0) {
            *field = true;
            return 0;
        }
        if (strcasecmp(value, no[i]) == 0) {
            *field = false;
            return 0;
        }
    }
    return error_set(err, errlen, "%s: expected yes or no, got '%s'", d->name, value);
}

/* The choices of `d` into `out`: "a|b|c" for the usage text, "a, b or c" in prose. */
static void choices_join(const struct directive *d, bool prose, char *out, size_t size)
{
    size_t used = 0;

    out[0] = '\0';
    for (size_t i = 0; d->choices[i] && used < size; i++) {
        const char *sep = i == 0 ? "" : !prose ? "|" : d->choices[i + 1] ? ", " : " or ";
        used += (size_t)snprintf(out + used, size - used, "%s%s", sep, d->choices[i]);
    }
}

static int set_choice(struct config *c, const struct directive *d, const char *value, char *err,
                      size_t errlen)
{
    char known[96];

    _Static_assert(sizeof(enum config_mode) == sizeof(int) &&
                       sizeof(enum config_client_cert) == sizeof(int),
                   "choices are stored as int");
    for (size_t k = 0; k < sizeof(choice_aliases) / sizeof(choice_aliases[0]); k++)
        if (strcmp(d->name, choice_aliases[k].directive) == 0 &&
            strcmp(value, choice_aliases[k].alias) == 0)
            value = choice_aliases[k].value;
    for (int i = 0; d->choices[i]; i++)
        if (strcmp(value, d->choices[i]) == 0) {
            memcpy((char *)c + d->offset, &i, sizeof(i));
            return 0;
        }
    choices_join(d, true, known, sizeof(known));
    return error_set(err, errlen, "%s: expected %s, got '%s'", d->name, known, value);
}

static int set_limit(struct config *c, const struct limits_def *l, const char *value, char *err,
                     size_t errlen)
{
    unsigned long long n;

    if (value == NULL)
        return error_set(err, errlen, "%s: missing value", l->name);
    if (limits_parse_number(l->name, value, l->min, l->max, l->suffixes, &n, err, errlen) < 0)
        return -1;
    limits_field_store((unsigned char *)&c->limits + l->offset, l->size, n);
    if (l->offset == offsetof(struct limits, utf8_topics))
        c->utf8_topics_set = true;
    return 0;
}

typedef int setter_fn(struct config *c, const struct directive *d, const char *value, char *err,
                      size_t errlen);

/* How each kind of directive takes its value; KIND_LIMITS is no directive and has none. */
static setter_fn *const setters[KIND_LIMITS + 1] = {
    [KIND_LISTEN] = set_listen, [KIND_CHOICE] = set_choice, [KIND_PATH] = set_path,
    [KIND_NUMBER] = set_number, [KIND_BOOL] = set_bool,
};

/* Apply config's own directive `d`, or when `d` is NULL the limit `limit`. */
static int directive_apply(struct config *c, const struct directive *d,
                           const struct limits_def *limit, const char *value, char *err,
                           size_t errlen)
{
    if (d == NULL)
        return set_limit(c, limit, value, err, errlen);
    if (value == NULL && d->kind != KIND_BOOL)
        return error_set(err, errlen, "%s: missing value", d->name);
    if (setters[d->kind] == NULL)
        return error_set(err, errlen, "%s: internal error", d->name);
    return setters[d->kind](c, d, value, err, errlen);
}

/* ---- names that are not ours ---------------------------------------------- */

/* Levenshtein distance of `a` (`alen` bytes) and `b`, capped at 64 for long names. */
static size_t edit_distance(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b), row[65];

    if (alen > 64 || blen > 64)
        return 64;
    for (size_t j = 0; j <= blen; j++)
        row[j] = j;
    for (size_t i = 1; i <= alen; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= blen; j++) {
            size_t up = row[j];
            size_t best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[blen];
}

/* The directive or limit nearest to `name`, if near enough to be what was meant. */
static const char *nearest_name(const char *name, size_t len)
{
    const char *best = NULL;
    size_t best_d = len / 3 > 2 ? len / 3 : 2;
    char dashed[65];

    if (len == 0)
        return NULL;

    /* mosquitto.conf spells them with '_': max_inflight_messages, pid_file */
    if (len < sizeof(dashed)) {
        for (size_t i = 0; i < len; i++)
            dashed[i] = name[i] == '_' ? '-' : name[i];
        name = dashed;
    }
    for (size_t i = 0; i < DIRECTIVE_COUNT + limits_count(); i++) {
        const char *cand =
            i < DIRECTIVE_COUNT ? directives[i].name : limits_at(i - DIRECTIVE_COUNT)->name;
        size_t d = cand ? edit_distance(name, len, cand) : SIZE_MAX;
        if (d < best_d + (best == NULL)) {
            best = cand;
            best_d = d;
        }
    }
    return best;
}

/*
 * What a Mosquitto user writes, and how aviary says it; NULL: "listen URL" with
 * the URL made of the value (PORT [HOST], or a HOST for bind_address).
 */
static const struct {
    const char *name, *say;
} mosquitto_names[] = {
    {"listener", NULL},
    {"port", NULL},
    {"bind_address", NULL},
    {"allow_anonymous", "mode desktop serves anonymous clients (password-file asks them for a "
                        "password); mode cloud lets in only clients with a token from aviaryctl"},
    {"password_file", "password-file PATH (desktop mode), or in cloud mode tokens from "
                      "aviaryctl token create"},
    {"acl_file", "mode cloud, where each token carries its own --pub and --sub filters"},
    {"persistence", "db PATH: desktop mode keeps retained messages and sessions there (cloud "
                    "mode always does)"},
    {"persistence_location", "db PATH"},
    {"persistence_file", "db PATH"},
    {"log_dest", "syslog yes, or nothing for standard error"},
    {"log_type", "log-level error|warning|notice|info|debug"},
    {"cafile", "tls-ca PATH"},
    {"certfile", "tls-cert PATH"},
    {"keyfile", "tls-key PATH"},
    {"require_certificate", "tls-client-cert required"},
    {"protocol", "the scheme of listen: listen ws://HOST:PORT for WebSocket"},
    {"message_size_limit", "max-payload BYTES"},
    {"max_packet_size", "max-payload BYTES"},
    {"max_keepalive", "keepalive-max SECONDS"},
    {"max_inflight_messages", "max-inflight N"},
    {"user", "nothing: aviaryd does not change user; start it as that user (User= of its "
             "systemd unit)"},
    {"daemon", "daemonize (or -d)"},
    {"include_dir", "nothing: aviaryd reads one file (-c FILE)"},
};

/*
 * A listener URL from mosquitto's "PORT [HOST]" (listener, port, -p) or "HOST"
 * (bind_address); `host` when the value names none.
 */
static void mosquitto_url(const char *name, const char *value, const char *any, char *out,
                          size_t size)
{
    const char *host = strcmp(name, "bind_address") == 0 ? value : NULL;
    unsigned long port = 1883;
    char *end = NULL;

    if (!host && value) {
        port = strtoul(value, &end, 10);
        if (end == value || port > 65535)
            port = 1883;
        while (end && *end == ' ')
            end++;
        host = end && *end ? end : NULL;
    }
    host = host ? host : any;
    snprintf(out, size, strchr(host, ':') ? "listen tcp://[%s]:%lu" : "listen tcp://%s:%lu", host,
             port);
}

/*
 * The error for a name that is no directive: `what` is "option '--" or
 * "directive '", `prefix` what precedes a suggested name ("--" or "").
 */
static int unknown_name(const char *what, const char *prefix, const char *name, size_t len,
                        const char *value, char *err, size_t errlen)
{
    const char *near;

    for (size_t i = 0; i < sizeof(mosquitto_names) / sizeof(mosquitto_names[0]); i++) {
        char url[300];
        const char *say = mosquitto_names[i].say;
        if (strlen(mosquitto_names[i].name) != len ||
            memcmp(mosquitto_names[i].name, name, len) != 0)
            continue;
        /* mosquitto's listener without an address takes every interface */
        if (!say) {
            mosquitto_url(mosquitto_names[i].name, value, *prefix ? "127.0.0.1" : "0.0.0.0", url,
                          sizeof(url));
            say = url;
        }
        return error_set(err, errlen, "unknown %s%.*s': that is mosquitto's; aviary says %s%s",
                         what, (int)len, name, prefix, say);
    }
    near = nearest_name(name, len);
    if (near)
        return error_set(err, errlen, "unknown %s%.*s'; did you mean %s%s?", what, (int)len, name,
                         prefix, near);
    return error_set(err, errlen, "unknown %s%.*s'", what, (int)len, name);
}

int config_set(struct config *c, const char *name, const char *value, char *err, size_t errlen)
{
    const struct directive *d = directive_find(name, strlen(name));
    const struct limits_def *limit = d ? NULL : limits_find(name, strlen(name));

    if (d == NULL && limit == NULL)
        return unknown_name("directive '", "", name, strlen(name), value, err, errlen);
    return directive_apply(c, d, limit, value, err, errlen);
}

/* ---- the file ----------------------------------------------------------- */

/*
 * `p` points at an opening quote. Unescape the quoted text in place and return
 * it; everything after the closing quote must be blank or a comment.
 */
static char *unquote(char *p, char *err, size_t errlen)
{
    char *src = p + 1, *dst = p + 1, *value = p + 1;

    for (;;) {
        if (*src == '\0') {
            error_set(err, errlen, "unterminated quote");
            return NULL;
        }
        if (*src == '"')
            break;
        if (*src == '\\') {
            src++;
            if (*src == '\0') {
                error_set(err, errlen, "unterminated quote");
                return NULL;
            }
            if (*src != '"' && *src != '\\') {
                error_set(err, errlen, "unknown escape '\\%c' in quoted value (only \\\" and \\\\)",
                          *src);
                return NULL;
            }
        }
        *dst++ = *src++;
    }
    src++;
    while (isspace((unsigned char)*src))
        src++;
    /* a comment needs whitespace before it, as everywhere else */
    if (*src != '\0' && (*src != '#' || !isspace((unsigned char)src[-1]))) {
        error_set(err, errlen, "unexpected text after closing quote: '%s'", src);
        return NULL;
    }
    *dst = '\0';
    return value;
}

/* Split one line (modified in place) into name and value and apply it. */
static int config_parse_line(struct config *c, char *line, char *err, size_t errlen)
{
    char *p = line, *name, *value, *end;

    end = line + strlen(line);
    while (end > line && isspace((unsigned char)end[-1]))
        *--end = '\0';
    while (isspace((unsigned char)*p))
        p++;
    if (*p == '\0' || *p == '#')
        return 0;

    name = p;
    while (*p != '\0' && !isspace((unsigned char)*p))
        p++;
    if (*p != '\0')
        *p++ = '\0';
    while (isspace((unsigned char)*p))
        p++;

    if (*p == '\0' || *p == '#') {
        value = NULL;
    } else if (*p == '"') {
        value = unquote(p, err, errlen);
        if (value == NULL)
            return -1;
    } else {
        value = p;
        for (char *q = p + 1; *q != '\0'; q++) {
            if (*q == '#' && isspace((unsigned char)q[-1])) {
                *q = '\0';
                break;
            }
        }
        end = value + strlen(value);
        while (end > value && isspace((unsigned char)end[-1]))
            *--end = '\0';
    }
    return config_set(c, name, value, err, errlen);
}

int config_load_file(struct config *c, const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    unsigned lineno = 0;
    char reason[512];
    int rc = 0;

    if (f == NULL)
        return error_set(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    while ((n = getline(&line, &cap, f)) != -1) {
        lineno++;
        if (memchr(line, '\0', (size_t)n) != NULL) {
            rc = error_set(err, errlen, "%s:%u: NUL byte in line", path, lineno);
            goto out;
        }
        if (config_parse_line(c, line, reason, sizeof(reason)) < 0) {
            rc = error_set(err, errlen, "%s:%u: %s", path, lineno, reason);
            goto out;
        }
    }
    if (ferror(f))
        rc = error_set(err, errlen, "%s: cannot read: %s", path, strerror(errno));
out:
    free(line);
    fclose(f);
    return rc;
}

/* ---- the command line --------------------------------------------------- */

/*
 * The command line is read twice: first to check its syntax and find -c, then,
 * after the file is loaded, to apply the options in the order given. `d` and
 * `limit` both NULL mark a -v.
 */
struct pending {
    const struct directive *d;
    const struct limits_def *limit; /* when `d` is NULL */
    const char *value;
};

static int set_config_path(const char **config_path, const char *value, char *err, size_t errlen)
{
    if (*config_path != NULL)
        return error_set(err, errlen, "-c given more than once");
    if (*value == '\0')
        return error_set(err, errlen, "-c: empty file name");
    *config_path = value;
    return 0;
}

/* The long options that are actions rather than settings. */
static enum config_action long_action(const char *name, size_t len)
{
    static const struct {
        const char *name;
        enum config_action action;
    } actions[] = {
        {"help", CONFIG_HELP},
        {"version", CONFIG_VERSION},
        {"dump-directives", CONFIG_DUMP},
    };

    for (size_t i = 0; i < sizeof(actions) / sizeof(actions[0]); i++)
        if (strlen(actions[i].name) == len && memcmp(actions[i].name, name, len) == 0)
            return actions[i].action;
    return CONFIG_RUN;
}

static int parse_long(int argc, char **argv, int *i, struct pending *pend, size_t *npend,
                      const char **config_path, enum config_action *action, char *err,
                      size_t errlen)
{
    const char *name = argv[*i] + 2;
    const char *eq = strchr(name, '=');
    size_t len = eq != NULL ? (size_t)(eq - name) : strlen(name);
    const char *value = eq != NULL ? eq + 1 : NULL;
    const struct directive *d;
    const struct limits_def *limit;

    enum config_action act = long_action(name, len);

    if (act != CONFIG_RUN || (len == 7 && memcmp(name, "verbose", 7) == 0)) {
        if (value != NULL)
            return error_set(err, errlen, "--%.*s: takes no value", (int)len, name);
        if (act == CONFIG_RUN) /* --verbose: -v, as mosquitto users write it */
            pend[(*npend)++] = (struct pending){NULL, NULL, NULL};
        else if (*action == CONFIG_RUN)
            *action = act;
        return 0;
    }
    if (len == 11 && memcmp(name, "config-file", 11) == 0)
        return error_set(err, errlen,
                         "unknown option '--config-file' (mosquitto's); aviaryd "
                         "says -c FILE or --config FILE");
    if (len == 6 && memcmp(name, "config", 6) == 0) {
        if (value == NULL) {
            if (*i + 1 >= argc)
                return error_set(err, errlen, "--config: missing value");
            value = argv[++*i];
        }
        return set_config_path(config_path, value, err, errlen);
    }

    d = directive_find(name, len);
    limit = d ? NULL : limits_find(name, len);
    if (d == NULL && limit == NULL)
        return unknown_name("option '--", "--", name, len,
                            value           ? value
                            : *i + 1 < argc ? argv[*i + 1]
                                            : NULL,
                            err, errlen);
    if (value == NULL) {
        /* No positional arguments exist, so a following word can only be this flag's value. */
        if (d && d->kind == KIND_BOOL) {
            if (*i + 1 < argc && argv[*i + 1][0] != '-')
                value = argv[++*i];
        } else {
            if (*i + 1 >= argc)
                return error_set(err, errlen, "--%s: missing value", d ? d->name : limit->name);
            value = argv[++*i];
        }
    }
    pend[*npend].d = d;
    pend[*npend].limit = limit;
    pend[*npend].value = value;
    ++*npend;
    return 0;
}

/* A cluster of short options such as "-vv", "-dv" or "-cFILE". */
static int parse_short(int argc, char **argv, int *i, struct pending *pend, size_t *npend,
                       const char **config_path, enum config_action *action, char *err,
                       size_t errlen)
{
    for (const char *p = argv[*i] + 1; *p != '\0'; p++) {
        switch (*p) {
        case 'v':
            pend[*npend].d = NULL;
            pend[*npend].limit = NULL;
            pend[*npend].value = NULL;
            ++*npend;
            break;
        case 'd':
            pend[*npend].d = directive_find("daemonize", strlen("daemonize"));
            pend[*npend].limit = NULL;
            pend[*npend].value = NULL;
            ++*npend;
            break;
        case 'h':
            if (*action == CONFIG_RUN)
                *action = CONFIG_HELP;
            break;
        case 'V':
            if (*action == CONFIG_RUN)
                *action = CONFIG_VERSION;
            break;
        case 'c':
            if (p[1] != '\0')
                return set_config_path(config_path, p + 1, err, errlen);
            if (*i + 1 >= argc)
                return error_set(err, errlen, "-c: missing value");
            return set_config_path(config_path, argv[++*i], err, errlen);
        case 'p': {
            /* mosquitto -p PORT */
            char url[300];
            mosquitto_url("port",
                          p[1]            ? p + 1
                          : *i + 1 < argc ? argv[*i + 1]
                                          : NULL,
                          "127.0.0.1", url, sizeof(url));
            return error_set(err, errlen,
                             "unknown option '-p' (mosquitto's port); aviaryd says --%s", url);
        }
        default:
            return error_set(err, errlen, "unknown option '-%c'", *p);
        }
    }
    return 0;
}

/* Apply the command line's settings, after the file's: -v raises the log level. */
static int apply_pending(struct config *c, const struct pending *pend, size_t npend, char *err,
                         size_t errlen)
{
    size_t verbose = 0;
    bool cleared_listen = false;

    for (size_t k = 0; k < npend; k++) {
        const struct directive *d = pend[k].d;

        if (d == NULL && pend[k].limit == NULL) {
            int want = LOG_LEVEL_NOTICE + (int)++verbose;
            if (want > LOG_LEVEL_DEBUG)
                want = LOG_LEVEL_DEBUG;
            if (c->log_level < want)
                c->log_level = want;
            continue;
        }
        /* The command line's listeners replace the file's instead of adding to them. */
        if (d && d->kind == KIND_LISTEN && !cleared_listen) {
            config_clear_listen(c);
            cleared_listen = true;
        }
        if (directive_apply(c, d, pend[k].limit, pend[k].value, err, errlen) < 0)
            return -1;
    }
    return 0;
}

int config_parse_args(struct config *c, int argc, char **argv, enum config_action *action,
                      char *err, size_t errlen)
{
    struct pending *pend = NULL;
    size_t npend = 0;
    const char *config_path = NULL;
    int rc = -1;

    *action = CONFIG_RUN;
    if (argc < 1)
        return 0;
    /* A short-option cluster yields at most one entry per character. */
    {
        size_t slots = 0;
        for (int i = 1; i < argc; i++)
            slots += strlen(argv[i]);
        pend = calloc(slots + 1, sizeof(*pend));
        if (pend == NULL)
            return error_set(err, errlen, "out of memory");
    }

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int r;

        if (strcmp(a, "--") == 0) {
            if (i + 1 < argc) {
                error_set(err, errlen, "unexpected argument '%s'", argv[i + 1]);
                goto out;
            }
            break;
        }
        if (a[0] == '-' && a[1] == '-')
            r = parse_long(argc, argv, &i, pend, &npend, &config_path, action, err, errlen);
        else if (a[0] == '-' && a[1] != '\0')
            r = parse_short(argc, argv, &i, pend, &npend, &config_path, action, err, errlen);
        else
            r = error_set(err, errlen, "unexpected argument '%s'", a);
        if (r < 0)
            goto out;
    }
    if (*action != CONFIG_RUN) {
        rc = 0;
        goto out;
    }

    if (config_path != NULL) {
        free(c->config_file);
        c->config_file = strdup(config_path);
        if (c->config_file == NULL) {
            error_set(err, errlen, "out of memory");
            goto out;
        }
        if (config_load_file(c, config_path, err, errlen) < 0)
            goto out;
    }

    rc = apply_pending(c, pend, npend, err, errlen);
    /*
     * People bring their Mosquitto topics to the desktop; tenants keep the
     * narrow set. Only aviaryd's command line decides this: a file read by
     * aviaryctl keeps the cloud default.
     */
    if (rc == 0 && !c->utf8_topics_set)
        c->limits.utf8_topics = c->mode == CONFIG_MODE_DESKTOP;
out:
    free(pend);
    return rc;
}

static bool url_has_port_zero(const char *url)
{
    size_t n = strlen(url);
    return n >= 2 && strcmp(url + n - 2, ":0") == 0;
}

int config_validate(const struct config *c, char *err, size_t errlen)
{
    const struct limits *l = &c->limits;

    if (l->keepalive_min > l->keepalive_max)
        return error_set(err, errlen, "keepalive-min (%u) is greater than keepalive-max (%u)",
                         l->keepalive_min, l->keepalive_max);
    if (c->password_file && c->mode == CONFIG_MODE_CLOUD)
        return error_set(err, errlen,
                         "password-file is for desktop mode: cloud clients log in with an "
                         "instance's tokens (aviaryctl token create)");
    if (!c->tls_cert != !c->tls_key)
        return error_set(err, errlen, "tls-cert and tls-key go together: %s is missing",
                         c->tls_cert ? "tls-key" : "tls-cert");
    if (c->tls_client_cert != CONFIG_CLIENT_CERT_NONE && !c->tls_ca)
        return error_set(err, errlen, "tls-client-cert %s needs tls-ca (the CAs to verify against)",
                         c->tls_client_cert == CONFIG_CLIENT_CERT_REQUIRED ? "required"
                                                                           : "optional");
    for (size_t i = 0; i < c->listen_count; i++) {
        bool secure =
            strncmp(c->listen[i], "tls://", 6) == 0 || strncmp(c->listen[i], "wss://", 6) == 0;
        if (secure && !c->tls_cert)
            return error_set(err, errlen, "listen %s needs tls-cert and tls-key", c->listen[i]);
    }
    /*
     * The second bind of the same address would fail later with a less helpful
     * message. Port 0 asks for any free port, so it may well appear twice.
     */
    for (size_t i = 0; i < c->listen_count; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->listen[i], c->listen[j]) == 0 && !url_has_port_zero(c->listen[i]))
                return error_set(err, errlen, "listen: '%s' given twice", c->listen[i]);
    return 0;
}

/* ---- the usage text and the dump ------------------------------------------ */

/* A directive or a limit as the usage text and the dump show it. */
struct entry {
    const char *name, *arg, *help, *kind;
    unsigned long long min, max;
    bool number, suffixes, limit;
    char def[256]; /* the default, as the file would write it */
};

/* `n` with the largest suffix that writes it exactly (8m, 64k), when `suffixes`. */
static void format_number(unsigned long long n, bool suffixes, char *out, size_t size)
{
    static const char units[] = "gmk";

    for (int i = 0; suffixes && n != 0 && i < 3; i++) {
        unsigned long long mult = 1ull << (10 * (3 - i));
        if (n % mult == 0) {
            snprintf(out, size, "%llu%c", n / mult, units[i]);
            return;
        }
    }
    snprintf(out, size, "%llu", n);
}

/* The default listeners of `mode` (with tls-cert when `tls`), joined by ", ". */
static size_t join_listeners(enum config_mode mode, bool tls, size_t from, char *out, size_t size)
{
    size_t count, used = 0;
    const char *const *urls = config_default_listeners(mode, tls, &count);

    for (size_t i = from; i < count && used < size; i++)
        used += (size_t)snprintf(out + used, size - used, "%s%s", i > from ? ", " : "", urls[i]);
    return used;
}

static void listen_default(char *out, size_t size)
{
    size_t used = (size_t)snprintf(out, size, "desktop ");
    size_t cloud_plain;

    config_default_listeners(CONFIG_MODE_CLOUD, false, &cloud_plain);
    used += join_listeners(CONFIG_MODE_DESKTOP, false, 0, out + used, size - used);
    used += (size_t)snprintf(out + used, size - used, "; cloud ");
    used += join_listeners(CONFIG_MODE_CLOUD, false, 0, out + used, size - used);
    used += (size_t)snprintf(out + used, size - used, ", with tls-cert ");
    join_listeners(CONFIG_MODE_CLOUD, true, cloud_plain, out + used, size - used);
}

static void entry_of_directive(const struct directive *d, const struct config *defaults,
                               struct entry *e)
{
    const void *field = (const unsigned char *)defaults + d->offset;
    static const char *const kinds[] = {
        [KIND_LISTEN] = "listen", [KIND_CHOICE] = "choice", [KIND_PATH] = "path",
        [KIND_NUMBER] = "number", [KIND_BOOL] = "bool",     [KIND_LIMITS] = ""};

    *e = (struct entry){.name = d->name,
                        .arg = d->arg,
                        .help = d->help,
                        .kind = kinds[d->kind],
                        .min = d->min,
                        .max = d->max,
                        .number = d->kind == KIND_NUMBER,
                        .suffixes = d->suffixes};
    switch (d->kind) {
    case KIND_LISTEN:
        listen_default(e->def, sizeof(e->def));
        break;
    case KIND_CHOICE: {
        int i;
        memcpy(&i, field, sizeof(i));
        snprintf(e->def, sizeof(e->def), "%s", d->choices[i]);
        break;
    }
    case KIND_PATH:
        if (strcmp(d->name, "db") == 0)
            snprintf(e->def, sizeof(e->def), "desktop none; cloud %s", AVIARY_DEFAULT_DB);
        else
            snprintf(e->def, sizeof(e->def), "none");
        break;
    case KIND_BOOL:
        snprintf(e->def, sizeof(e->def), "%s", *(const bool *)field ? "yes" : "no");
        break;
    default:
        format_number(limits_field_load(field, d->size), d->suffixes, e->def, sizeof(e->def));
    }
}

static void entry_of_limit(const struct limits_def *l, const struct config *defaults,
                           struct entry *e)
{
    const void *field = (const unsigned char *)&defaults->limits + l->offset;

    *e = (struct entry){.name = l->name,
                        .arg = l->arg,
                        .help = l->help,
                        .kind = "number",
                        .min = l->min,
                        .max = l->max,
                        .number = true,
                        .suffixes = l->suffixes,
                        .limit = true};
    format_number(limits_field_load(field, l->size), l->suffixes, e->def, sizeof(e->def));
}

/* A space usage_wrap() does not break a line at. */
#define NBSP '\x01'

/* Write `text` from column `col` on, wrapping at word boundaries to column 30. */
static void usage_wrap(FILE *out, const char *text, size_t col)
{
    const size_t width = 79, indent = 30;

    while (*text) {
        size_t word = strcspn(text, " ");
        if (col > indent && col + 1 + word > width) {
            fprintf(out, "\n%*s", (int)indent, "");
            col = indent;
        } else if (col > indent) {
            fputc(' ', out);
            col++;
        }
        for (size_t i = 0; i < word; i++)
            fputc(text[i] == NBSP ? ' ' : text[i], out);
        col += word;
        text += word;
        while (*text == ' ')
            text++;
    }
    fputc('\n', out);
}

static void usage_entry(FILE *out, const struct entry *e)
{
    char left[128], text[512];
    size_t used;

    snprintf(left, sizeof(left), "--%s %s", e->name, e->arg);
    used = (size_t)snprintf(text, sizeof(text), "%s (", e->help);
    if (e->number)
        used += (size_t)snprintf(text + used, sizeof(text) - used, "%llu..%llu%s; ", e->min, e->max,
                                 e->suffixes ? ", k/m/g suffixes" : "");
    snprintf(text + used, sizeof(text) - used, "default:%c%s)", NBSP, e->def);
    /* A long option name takes its own line, so the help keeps its column. */
    if (strlen(left) >= 28)
        fprintf(out, "  %s\n%30s", left, "");
    else
        fprintf(out, "  %-28s", left);
    usage_wrap(out, text, 30);
}

/* Call `fn` for each directive and limit, in the order of the usage text. */
static void for_each_entry(void (*fn)(FILE *, const struct entry *), FILE *out)
{
    struct config defaults;
    struct entry e;

    config_init(&defaults);
    for (size_t i = 0; i < DIRECTIVE_COUNT; i++) {
        const struct directive *d = &directives[i];
        char choices[96];

        if (d->kind != KIND_LIMITS) {
            entry_of_directive(d, &defaults, &e);
            if (d->kind == KIND_CHOICE) {
                choices_join(d, false, choices, sizeof(choices));
                e.arg = choices;
            }
            fn(out, &e);
            continue;
        }
        for (size_t k = 0; k < limits_count(); k++) {
            entry_of_limit(limits_at(k), &defaults, &e);
            fn(out, &e);
        }
    }
    config_free(&defaults);
}

void config_usage(FILE *out, const char *progname)
{
    fprintf(out,
            "Usage: %s [-c FILE] [-v] [-d] [--DIRECTIVE VALUE]...\n"
            "       %s -h | -V\n"
            "\n"
            "An MQTT broker. With no arguments it serves anonymous clients on loopback\n"
            "(desktop mode): MQTT on %s, MQTT over WebSocket on\n"
            "%s and the web view on %s. A port another\n"
            "program holds moves that listener to the next free port, with a warning.\n"
            "\n"
            "Options:\n"
            "  -c, --config FILE           read directives from FILE first (aviary.conf(5))\n"
            "  -v, --verbose               log at level info; -vv: debug\n"
            "  -d                          daemonize (same as --daemonize)\n"
            "  -h, --help                  print this help and exit\n"
            "  -V, --version               print the version and exit\n"
            "\n"
            "Directives, as \"NAME VALUE\" in the file or --NAME VALUE / --NAME=VALUE here;\n"
            "the command line overrides the file, and its --listen replaces the file's:\n",
            progname, progname, CONFIG_DESKTOP_LISTEN_TCP, CONFIG_DESKTOP_LISTEN_WS,
            CONFIG_DESKTOP_LISTEN_HTTP);
    for_each_entry(usage_entry, out);
}

static void dump_entry(FILE *out, const struct entry *e)
{
    fprintf(out, "%s\t%s\t%s\t", e->name, e->kind, e->arg);
    if (e->number)
        fprintf(out, "%llu\t%llu\t", e->min, e->max);
    else
        fprintf(out, "-\t-\t");
    fprintf(out, "%s\t%s\t%s\n", e->suffixes ? "yes" : "no", e->limit ? "yes" : "no", e->def);
}

void config_dump(FILE *out)
{
    fprintf(out, "# name\tkind\targ\tmin\tmax\tsuffixes\tlimit\tdefault\n");
    for_each_entry(dump_entry, out);
}
