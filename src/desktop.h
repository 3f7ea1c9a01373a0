/*
 * desktop — what aviaryd adds around the broker in desktop mode: the
 * password-file that, when set, admits only its users, and a loud warning
 * for every listener that serves anonymous clients beyond this machine.
 *
 * Owns the loaded password file; the broker calls back into it at each
 * CONNECT (core thread only).
 */
#ifndef AVIARY_DESKTOP_H
#define AVIARY_DESKTOP_H

#include <stdbool.h>
#include <stddef.h>

struct broker;
struct config;

struct desktop {
    struct broker *broker;
    char *password_file;           /* its path, owned; NULL: anonymous clients */
    struct passwd_file *passwords; /* as last loaded */
};

/*
 * Load cfg's password-file, if any, and make `b` ask it at every CONNECT.
 * Returns 0, or -1 with the reason in `err`.
 */
int desktop_start(struct desktop *dt, struct broker *b, const struct config *cfg, char *err,
                  size_t errlen);

/* SIGHUP: read the password file (possibly a new path) again; on error the old one stays. */
void desktop_reload(struct desktop *dt, const struct config *cfg);

/* Log a warning when `url`, a listener just bound, lets anyone on the network in. */
void desktop_warn_exposed(const struct desktop *dt, const char *url);

void desktop_free(struct desktop *dt);

#endif
