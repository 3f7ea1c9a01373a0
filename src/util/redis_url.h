/*
 * redis_url — where a cluster's Redis is: redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]
 * or rediss://… for TLS. Pure; the broker's Redis link (cluster/) and
 * aviaryctl's and the watcher's requests (tenancy/) both read it.
 */
#ifndef AVIARY_REDIS_URL_H
#define AVIARY_REDIS_URL_H

#include <stdbool.h>
#include <stddef.h>

#define REDIS_DEFAULT_PORT 6379

struct redis_url {
    bool tls;       /* rediss:// */
    char *host;     /* a name, an IPv4 address, or an IPv6 one without its brackets */
    unsigned port;  /* 1..65535 */
    char *user;     /* NULL: AUTH with the password alone (the default user) */
    char *password; /* NULL: no AUTH */
    unsigned db;    /* SELECT this database when not 0 */
};

/*
 * Parse `text` into `u` (which the caller clears with redis_url_clear()).
 * Percent-escapes are decoded in the user and the password. Returns 0, or -1
 * with the reason in `err` and `u` left empty.
 */
int redis_url_parse(const char *text, struct redis_url *u, char *err, size_t errlen);

/*
 * The URL as logs show it: the password replaced by "***". Writes at most
 * `len` bytes to `out`, NUL included.
 */
void redis_url_format(const struct redis_url *u, char *out, size_t len);

/*
 * A deep copy of `from` into `to` (which the caller clears with
 * redis_url_clear()). Returns 0, or -1 out of memory with `to` left empty.
 */
int redis_url_copy(struct redis_url *to, const struct redis_url *from);

/* Free what redis_url_parse() allocated; an empty `u` is fine. */
void redis_url_clear(struct redis_url *u);

#endif
