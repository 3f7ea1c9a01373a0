#include "util/redis_url.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* A copy of `len` bytes at `s` with %XX decoded, or NULL (bad escape, NUL, no memory). */
static char *unescape(const char *s, size_t len)
{
    char *out = malloc(len + 1);
    size_t n = 0;

    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            int hi = i + 2 < len ? hex_digit(s[i + 1]) : -1;
            int lo = hi >= 0 ? hex_digit(s[i + 2]) : -1;
            if (lo < 0 || (hi == 0 && lo == 0)) {
                free(out);
                return NULL;
            }
            c = hi * 16 + lo;
            i += 2;
        }
        out[n++] = (char)c;
    }
    out[n] = '\0';
    return out;
}

static int parse_userinfo(const char *s, size_t len, struct redis_url *u, char *err, size_t errlen)
{
    const char *colon = memchr(s, ':', len);
    size_t user_len = colon ? (size_t)(colon - s) : len;

    if (!colon)
        return error_set(err, errlen,
                         "a password in a Redis URL follows a colon: "
                         "redis://:PASSWORD@HOST or redis://USER:PASSWORD@HOST");
    if (user_len && !(u->user = unescape(s, user_len)))
        return error_set(err, errlen, "bad %%-escape in the Redis URL's user");
    if (!(u->password = unescape(colon + 1, len - user_len - 1)))
        return error_set(err, errlen, "bad %%-escape in the Redis URL's password");
    return 0;
}

static int parse_port(const char *s, size_t len, unsigned *port, char *err, size_t errlen)
{
    unsigned v = 0;

    if (!len || len > 5)
        return error_set(err, errlen, "the Redis URL's port must be 1..65535");
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i]))
            return error_set(err, errlen, "the Redis URL's port must be 1..65535");
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v < 1 || v > 65535)
        return error_set(err, errlen, "the Redis URL's port must be 1..65535");
    *port = v;
    return 0;
}

/* HOST[:PORT] or [IPV6][:PORT], `len` bytes at `s`. */
static int parse_hostport(const char *s, size_t len, struct redis_url *u, char *err, size_t errlen)
{
    const char *host = s, *port = NULL;
    size_t host_len = len;

    if (len && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (!close)
            return error_set(err, errlen, "the Redis URL's IPv6 address lacks its ']'");
        host = s + 1;
        host_len = (size_t)(close - host);
        if (close + 1 < s + len) {
            if (close[1] != ':')
                return error_set(err, errlen, "text after the Redis URL's ']'");
            port = close + 2;
        }
    } else {
        const char *colon = memchr(s, ':', len);
        if (colon) {
            host_len = (size_t)(colon - s);
            port = colon + 1;
        }
    }
    if (!host_len)
        return error_set(err, errlen, "the Redis URL names no host");
    for (size_t i = 0; i < host_len; i++)
        if (!isalnum((unsigned char)host[i]) && !strchr(".-_:", host[i]))
            return error_set(err, errlen,
                             "the Redis URL's host has a character that no host name has");
    u->port = REDIS_DEFAULT_PORT;
    if (port && parse_port(port, (size_t)(s + len - port), &u->port, err, errlen) < 0)
        return -1;
    if (!(u->host = strndup(host, host_len)))
        return error_set(err, errlen, "out of memory");
    return 0;
}

static int parse_db(const char *s, unsigned *db, char *err, size_t errlen)
{
    unsigned long v = 0;

    if (!*s)
        return 0;
    for (const char *p = s; *p; p++) {
        if (!isdigit((unsigned char)*p) || p - s >= 5)
            return error_set(err, errlen,
                             "the Redis URL's database must be a number (/0, /1, ...)");
        v = v * 10 + (unsigned long)(*p - '0');
    }
    *db = (unsigned)v;
    return 0;
}

static int parse(const char *text, struct redis_url *u, char *err, size_t errlen)
{
    const char *rest;

    if (!strncmp(text, "redis://", 8)) {
        rest = text + 8;
    } else if (!strncmp(text, "rediss://", 9)) {
        u->tls = true;
        rest = text + 9;
    } else {
        return error_set(err, errlen, "a Redis URL starts with redis:// or rediss:// (TLS): '%s'",
                         text);
    }
    const char *slash = strchr(rest, '/');
    const char *end = slash ? slash : rest + strlen(rest);
    const char *at = NULL;
    for (const char *p = rest; p < end; p++)
        if (*p == '@')
            at = p;
    if (at && parse_userinfo(rest, (size_t)(at - rest), u, err, errlen) < 0)
        return -1;
    const char *hp = at ? at + 1 : rest;
    if (parse_hostport(hp, (size_t)(end - hp), u, err, errlen) < 0)
        return -1;
    return slash ? parse_db(slash + 1, &u->db, err, errlen) : 0;
}

int redis_url_parse(const char *text, struct redis_url *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof(*u));
    if (parse(text, u, err, errlen) == 0)
        return 0;
    redis_url_clear(u);
    return -1;
}

void redis_url_format(const struct redis_url *u, char *out, size_t len)
{
    bool v6 = u->host && strchr(u->host, ':');

    snprintf(out, len, "%s://%s%s%s%s%s%s:%u%s%.0u", u->tls ? "rediss" : "redis",
             u->user ? u->user : "", u->password ? ":***" : "", u->password ? "@" : "",
             v6 ? "[" : "", u->host ? u->host : "", v6 ? "]" : "", u->port, u->db ? "/" : "",
             u->db);
}

/* strdup() of NULL is NULL; else the copy, or NULL with *failed set. */
static char *copy_or_null(const char *s, bool *failed)
{
    char *copy = s ? strdup(s) : NULL;

    *failed |= s && !copy;
    return copy;
}

int redis_url_copy(struct redis_url *to, const struct redis_url *from)
{
    bool failed = false;

    *to = *from;
    to->host = copy_or_null(from->host, &failed);
    to->user = copy_or_null(from->user, &failed);
    to->password = copy_or_null(from->password, &failed);
    if (!failed)
        return 0;
    redis_url_clear(to);
    return -1;
}

void redis_url_clear(struct redis_url *u)
{
    free(u->host);
    free(u->user);
    free(u->password);
    memset(u, 0, sizeof(*u));
}
