/*
 * config — aviaryd's settings from the command line and the configuration file.
 *
 * Every directive of the file is also a long option and every long option a
 * directive: "listen tcp://0.0.0.0:1883" in a file is "--listen
 * tcp://0.0.0.0:1883" on the command line. The file named by -c is read first
 * and the other options override it (list directives such as `listen` given on
 * the command line replace the file's list). Errors name the file, the line and
 * the reason.
 *
 * struct config owns all its strings; config_free() releases them. Both
 * programs read it: aviaryd all of it, aviaryctl the file of -c (for `db`
 * and the limits). Besides, the store and aviaryctl parse plan and instance
 * limits with config_limit_*(), and net/ parses listen URLs with
 * config_url_parse() and takes the tls-* settings from struct config.
 */
#ifndef AVIARY_CONFIG_H
#define AVIARY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "util/limits.h"

enum config_mode {
    CONFIG_MODE_DESKTOP = 0,
    CONFIG_MODE_CLOUD = 1,
};

/* tls-client-cert: whether TLS clients are asked for a certificate. */
enum config_client_cert {
    CONFIG_CLIENT_CERT_NONE = 0,
    CONFIG_CLIENT_CERT_OPTIONAL = 1, /* asked for; if sent, it must verify against tls-ca */
    CONFIG_CLIENT_CERT_REQUIRED = 2, /* a client without a valid one is refused */
};

struct config {
    char **listen; /* listener URLs, e.g. "tcp://127.0.0.1:1883" */
    size_t listen_count;
    bool listen_set; /* listen given explicitly (desktop defaults otherwise) */
    enum config_mode mode;
    char *db;                    /* sqlite path, NULL = none yet (see config_db_path()) */
    bool create_db;              /* cloud: create `db` when it does not exist */
    struct limits limits;        /* set by the limit directives, named in util/limits.h */
    bool utf8_topics_set;        /* utf8-topics given; else config_parse_args() sets it by mode */
    int log_level;               /* enum log_level */
    bool syslog;                 /* log to syslog instead of stderr */
    bool daemonize;              /* -d */
    char *pid_file;              /* written after start, removed at exit; NULL = none */
    char *config_file;           /* the -c argument, NULL if none */
    char *password_file;         /* desktop: only its users log in (util/passwd.h); NULL = anyone */
    bool allow_keys_without_tls; /* cloud: keys accepted on listeners without TLS */
    unsigned token_warning;      /* seconds before expiry that expirywarning is sent */
    unsigned connect_timeout;    /* seconds from accept to CONNECT (TLS and WebSocket
                                    handshakes included) */
    size_t max_memory;           /* bytes resident before new connections and retained
                                    messages are refused; 0: no ceiling */
    char *tls_cert;              /* PEM certificate chain for tls:// and wss://; NULL = none */
    char *tls_key;               /* its private key */
    char *tls_ca;                /* CA certificates for client certificates */
    char *cluster_url;           /* redis:// or rediss:// of the cluster (checked with
                                    redis_url_parse); NULL: alone, the catalog is `db`'s */
    char *cluster_ca;            /* CAs for rediss://; NULL: the system's */
    enum config_client_cert tls_client_cert;
};

/* Listeners without a listen directive (config_default_listeners()). */
#define CONFIG_DESKTOP_LISTEN_TCP "tcp://127.0.0.1:1883"
#define CONFIG_DESKTOP_LISTEN_WS "ws://127.0.0.1:1884"
/* The web view and /metrics, for the desktop's own user only. */
#define CONFIG_DESKTOP_LISTEN_HTTP "http://127.0.0.1:1885"
#define CONFIG_CLOUD_LISTEN_TCP "tcp://0.0.0.0:1883"
#define CONFIG_CLOUD_LISTEN_WS "ws://0.0.0.0:80"
#define CONFIG_CLOUD_LISTEN_TLS "tls://0.0.0.0:8883"
#define CONFIG_CLOUD_LISTEN_WSS "wss://0.0.0.0:443"

#define CONFIG_DEFAULT_TOKEN_WARNING 30
#define CONFIG_DEFAULT_CONNECT_TIMEOUT 10

/* What the command line asks the program to do. */
enum config_action {
    CONFIG_RUN = 0,
    CONFIG_HELP = 1,    /* -h / --help: print config_usage() and exit 0 */
    CONFIG_VERSION = 2, /* -V / --version: print the version and exit 0 */
    CONFIG_DUMP = 3,    /* --dump-directives: print config_dump() and exit 0 */
};

/* Fill `c` with the defaults (desktop mode, limits_init()'s limits, log level notice). */
void config_init(struct config *c);

/* Release everything `c` owns; `c` may be reused after config_init(). */
void config_free(struct config *c);

/*
 * Apply one directive `name` (without "--") with `value` (NULL for a flag such
 * as `daemonize`). Returns 0, or -1 with a reason in `err` (size `errlen`),
 * e.g. "max-payload: not a number: 12x".
 */
int config_set(struct config *c, const char *name, const char *value, char *err, size_t errlen);

/*
 * Read a configuration file: one directive per line, "name value", '#' starts
 * a comment, blank lines are ignored, values may be quoted with "...".
 * Returns 0, or -1 with "FILE:LINE: reason" in `err`.
 */
int config_load_file(struct config *c, const char *path, char *err, size_t errlen);

/*
 * Parse the whole command line: short options -c FILE, -v (raise the log
 * level to info; twice: debug), -d, -h, -V, and every directive as --name
 * VALUE or --name=VALUE. Loads -c first, then applies the rest.
 * Sets *action. Returns 0, or -1 with a reason in `err`.
 */
int config_parse_args(struct config *c, int argc, char **argv, enum config_action *action,
                      char *err, size_t errlen);

/* Check cross-directive consistency after parsing (e.g. keepalive-min <= keepalive-max). */
int config_validate(const struct config *c, char *err, size_t errlen);

/*
 * Print the usage text to `out`: every directive and limit of the one table
 * the parser reads, with its range, suffixes and default.
 */
void config_usage(FILE *out, const char *progname);

/*
 * Print the same table for programs (tests compare the manual pages and the
 * sample configuration with it): a "#" header, then one line per directive,
 * tab-separated: name, kind (listen, choice, path, number, bool), the value's
 * placeholder (choices as a|b|c), min and max ("-" unless a number), suffixes
 * (yes/no), limit (yes/no: also a plan and instance limit), the default.
 */
void config_dump(FILE *out);

/*
 * The listeners of `mode` when no listen directive is given (cloud mode's
 * tls:// and wss:// ones only with `tls`): a static array, *count long.
 */
const char *const *config_default_listeners(enum config_mode mode, bool tls, size_t *count);

/* The database in use: `db`, else in cloud mode AVIARY_DEFAULT_DB, else NULL. */
const char *config_db_path(const struct config *c);

/* A listener URL split into its parts. */
struct config_url {
    char scheme[6]; /* "tcp", "tls", "ws", "wss", "http" or "https" */
    char host[256]; /* name or address; an IPv6 literal without its brackets */
    unsigned port;  /* 0 = any free port */
};

/*
 * Split `url` ("SCHEME://HOST:PORT", IPv6 as "tcp://[::1]:1883") into `out`.
 * `listen` accepts exactly the URLs this accepts, so a program may call it on
 * every entry of config.listen without checking the result again.
 * Returns 0, or -1 with the reason in `err`, e.g. "missing port".
 */
int config_url_parse(const char *url, struct config_url *out, char *err, size_t errlen);

#endif
