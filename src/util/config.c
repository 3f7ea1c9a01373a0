#include "util/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util/error.h"
#include "util/log.h"

enum directive_kind {
    KIND_LISTEN,
    KIND_MODE,
    KIND_PATH,
    KIND_NUMBER,
    KIND_LOG_LEVEL,
    KIND_BOOL,
    KIND_CLIENT_CERT,
    KIND_LIMITS, /* not a directive: where the limits (util/limits.h) come in the usage text */
};

struct directive {
    const char *name;
    enum directive_kind kind;
    const char *arg; /* the value's placeholder in the usage text */
    size_t offset;   /* of the field in struct config */
    size_t size;     /* of that field: numbers are size_t or unsigned */
    unsigned long long min, max;
    bool suffixes;      /* the number may end in k/K (x1024), m/M (x1024^2) or g/G (x1024^3) */
    const char *defval; /* the default in the usage text; NULL: print the number */
    const char *help;
};

#define FIELD(f) offsetof(struct config, f), sizeof(((struct config *)0)->f)

static const struct directive directives[] = {
    {"listen", KIND_LISTEN, "URL", FIELD(listen), 0, 0, false, "tcp://127.0.0.1:1883 (desktop)",
     "repeatable listener"},
    {"mode", KIND_MODE, "desktop|cloud", FIELD(mode), 0, 0, false, "desktop",
     "one anonymous instance, or hosted tenants"},
    {"db", KIND_PATH, "PATH", FIELD(db), 0, 0, false, "none", "SQLite database file"},
    {NULL, KIND_LIMITS, NULL, 0, 0, 0, 0, false, NULL, NULL},
    {"tls-cert", KIND_PATH, "PATH", FIELD(tls_cert), 0, 0, false, "none",
     "PEM certificate (chain) for tls:// and wss://"},
    {"tls-key", KIND_PATH, "PATH", FIELD(tls_key), 0, 0, false, "none",
     "PEM private key of tls-cert"},
    {"tls-ca", KIND_PATH, "PATH", FIELD(tls_ca), 0, 0, false, "none",
     "PEM CAs that client certificates must chain to"},
    {"tls-client-cert", KIND_CLIENT_CERT, "none|optional|required", FIELD(tls_client_cert), 0, 0,
     false, "none", "ask TLS clients for a certificate"},
    {"password-file", KIND_PATH, "PATH", FIELD(password_file), 0, 0, false, "none",
     "desktop: admit only the users of PATH (aviaryctl passwd)"},
    {"allow-keys-without-tls", KIND_BOOL, "yes|no", FIELD(allow_keys_without_tls), 0, 0, false,
     "no", "cloud: accept keys (tokens without expiry) without TLS"},
    {"token-warning", KIND_NUMBER, "SECONDS", FIELD(token_warning), 1, LIMITS_IDLE_MAX, false, NULL,
     "lead of expirywarning on [mqtt]tokenevents"},
    {"max-memory", KIND_NUMBER, "BYTES", FIELD(max_memory), 0, LIMITS_MEMORY_MAX, true, "0",
     "resident memory before new clients are refused; 0: none"},
    {"connect-timeout", KIND_NUMBER, "SECONDS", FIELD(connect_timeout), 1, 3600, false, NULL,
     "time from accept to CONNECT, handshakes included"},
    {"log-level", KIND_LOG_LEVEL, "LEVEL", FIELD(log_level), 0, 0, false, "notice",
     "error, warning, notice, info or debug"},
    {"syslog", KIND_BOOL, "yes|no", FIELD(syslog), 0, 0, false, "no",
     "log to syslog instead of standard error"},
    {"daemonize", KIND_BOOL, "yes|no", FIELD(daemonize), 0, 0, false, "no",
     "run in the background"},
    {"pid-file", KIND_PATH, "PATH", FIELD(pid_file), 0, 0, false, "none",
     "write the process id to PATH"},
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

static int set_mode(struct config *c, const struct directive *d, const char *value, char *err,
                    size_t errlen)
{
    if (strcmp(value, "desktop") == 0)
        c->mode = CONFIG_MODE_DESKTOP;
    else if (strcmp(value, "cloud") == 0)
        c->mode = CONFIG_MODE_CLOUD;
    else
        return error_set(err, errlen, "%s: expected desktop or cloud, got '%s'", d->name, value);
    return 0;
}

static int set_path(struct config *c, const struct directive *d, const char *value, char *err,
                    size_t errlen)
{
    char **field = (char **)((char *)c + d->offset);
    char *copy;

    if (*value == '\0')
        return error_set(err, errlen, "%s: empty path", d->name);
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

static int set_log_level(struct config *c, const struct directive *d, const char *value, char *err,
                         size_t errlen)
{
    int level = log_level_parse(value);

    if (level < 0)
        return error_set(err, errlen,
                         "%s: expected error, warning, notice, info or debug, got '%s'", d->name,
                         value);
    c->log_level = level;
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

static int set_client_cert(struct config *c, const struct directive *d, const char *value,
                           char *err, size_t errlen)
{
    static const char *const names[] = {"none", "optional", "required"};

    for (int i = 0; i < 3; i++)
        if (strcmp(value, names[i]) == 0) {
            c->tls_client_cert = (enum config_client_cert)i;
            return 0;
        }
    return error_set(err, errlen, "%s: expected none, optional or required, got '%s'", d->name,
                     value);
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
    [KIND_LISTEN] = set_listen,           [KIND_MODE] = set_mode,           [KIND_PATH] = set_path,
    [KIND_NUMBER] = set_number,           [KIND_LOG_LEVEL] = set_log_level, [KIND_BOOL] = set_bool,
    [KIND_CLIENT_CERT] = set_client_cert,
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

int config_set(struct config *c, const char *name, const char *value, char *err, size_t errlen)
{
    const struct directive *d = directive_find(name, strlen(name));
    const struct limits_def *limit = d ? NULL : limits_find(name, strlen(name));

    if (d == NULL && limit == NULL)
        return error_set(err, errlen, "unknown directive '%s'", name);
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

    if ((len == 4 && memcmp(name, "help", 4) == 0) ||
        (len == 7 && memcmp(name, "version", 7) == 0)) {
        if (value != NULL)
            return error_set(err, errlen, "--%.*s: takes no value", (int)len, name);
        if (*action == CONFIG_RUN)
            *action = len == 4 ? CONFIG_HELP : CONFIG_VERSION;
        return 0;
    }
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
        return error_set(err, errlen, "unknown option '--%.*s'", (int)len, name);
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

/*
 * One directive of the usage text. Without a `defval`, the default shown is the
 * number in `field` (of `size` bytes) of the defaults.
 */
static void usage_line(FILE *out, const char *name, const char *arg, const char *help,
                       const char *defval, const void *field, size_t size)
{
    char left[40], def[32];

    snprintf(left, sizeof(left), "--%s %s", name, arg);
    if (defval == NULL) {
        snprintf(def, sizeof(def), "%llu", limits_field_load(field, size));
        defval = def;
    }
    /* A long option name takes its own line, so the help keeps its column. */
    if (strlen(left) >= 28)
        fprintf(out, "  %s\n  %-28s%s (default: %s)\n", left, "", help, defval);
    else
        fprintf(out, "  %-28s%s (default: %s)\n", left, help, defval);
}

void config_usage(FILE *out, const char *progname)
{
    struct config defaults;

    config_init(&defaults);
    fprintf(out,
            "Usage: %s [-c FILE] [-v] [-d] [--DIRECTIVE VALUE]...\n"
            "       %s -h | -V\n"
            "\n"
            "An MQTT broker. With no arguments it serves MQTT on tcp://127.0.0.1:1883\n"
            "(or the next free port) in desktop mode, for anonymous clients.\n"
            "\n"
            "Options:\n"
            "  -c, --config FILE           read directives from FILE first (aviary.conf(5))\n"
            "  -v                          log at level info; -vv: debug\n"
            "  -d                          daemonize (same as --daemonize)\n"
            "  -h, --help                  print this help and exit\n"
            "  -V, --version               print the version and exit\n"
            "\n"
            "Directives, as \"NAME VALUE\" in the file or --NAME VALUE / --NAME=VALUE here;\n"
            "the command line overrides the file, and its --listen replaces the file's:\n",
            progname, progname);
    for (size_t i = 0; i < DIRECTIVE_COUNT; i++) {
        const struct directive *d = &directives[i];

        if (d->kind != KIND_LIMITS) {
            usage_line(out, d->name, d->arg, d->help, d->defval,
                       (const unsigned char *)&defaults + d->offset, d->size);
            continue;
        }
        for (size_t k = 0; k < limits_count(); k++) {
            const struct limits_def *l = limits_at(k);
            usage_line(out, l->name, l->arg, l->help, l->defval,
                       (const unsigned char *)&defaults.limits + l->offset, l->size);
        }
    }
    config_free(&defaults);
}
