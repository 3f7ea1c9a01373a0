#include "desktop.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "broker/broker.h"
#include "util/config.h"
#include "util/log.h"
#include "util/passwd.h"

static bool check_password(void *ctx, const char *user, size_t user_len, const void *password,
                           size_t password_len)
{
    struct desktop *dt = ctx;
    return passwd_file_check(dt->passwords, user, user_len, password, password_len);
}

/* Load `path` in place of what `dt` had. */
static int load(struct desktop *dt, const char *path, char *err, size_t errlen)
{
    struct passwd_file *pf = passwd_file_load(path, err, errlen);
    char *copy = pf ? strdup(path) : NULL;

    if (!copy) {
        if (pf)
            snprintf(err, errlen, "out of memory");
        passwd_file_free(pf);
        return -1;
    }
    passwd_file_free(dt->passwords);
    free(dt->password_file);
    dt->passwords = pf;
    dt->password_file = copy;
    if (passwd_file_count(pf) == 0)
        log_warning("password-file %s names no user: every client is refused "
                    "(aviaryctl passwd %s USER adds one)",
                    path, path);
    else
        log_notice("password-file %s: %zu users; clients without one of them are refused", path,
                   passwd_file_count(pf));
    return 0;
}

int desktop_start(struct desktop *dt, struct broker *b, const struct config *cfg, char *err,
                  size_t errlen)
{
    *dt = (struct desktop){.broker = b};
    if (!cfg->password_file)
        return 0;
    if (load(dt, cfg->password_file, err, errlen) < 0)
        return -1;
    broker_set_passwords(b, check_password, dt);
    return 0;
}

void desktop_reload(struct desktop *dt, const struct config *cfg)
{
    char err[512];

    if (!cfg->password_file) {
        if (dt->passwords)
            log_warning("SIGHUP: password-file removed: anonymous clients are welcome again");
        broker_set_passwords(dt->broker, NULL, NULL);
        passwd_file_free(dt->passwords);
        free(dt->password_file);
        dt->passwords = NULL;
        dt->password_file = NULL;
        return;
    }
    if (load(dt, cfg->password_file, err, sizeof(err)) < 0) {
        log_error("SIGHUP: password-file not reloaded (the old one stays): %s", err);
        return;
    }
    broker_set_passwords(dt->broker, check_password, dt);
}

/* Whether `host` (a name or an address, IPv6 without brackets) is this machine only. */
static bool host_is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;

    if (strcmp(host, "localhost") == 0)
        return true;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return false;
}

void desktop_warn_exposed(const struct desktop *dt, const char *url)
{
    struct config_url u;
    char err[128];

    if (dt->passwords || config_url_parse(url, &u, err, sizeof(err)) < 0 ||
        host_is_loopback(u.host))
        return;
    log_warning("!!! %s lets ANYONE who can reach this machine publish and subscribe without a "
                "password: desktop mode has no login. Set password-file (aviaryctl passwd FILE "
                "USER makes one), listen on 127.0.0.1 only, or run in cloud mode.",
                url);
}

void desktop_free(struct desktop *dt)
{
    passwd_file_free(dt->passwords);
    free(dt->password_file);
    dt->passwords = NULL;
    dt->password_file = NULL;
}
