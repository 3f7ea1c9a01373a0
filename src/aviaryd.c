/*
 * aviaryd — the broker program: parse the configuration, open the
 * listeners, run the core thread's event loop until SIGTERM or SIGINT.
 * In cloud mode it also loads the instances and tokens from the database
 * and starts the watcher that applies aviaryctl's changes while it runs.
 * Thin by design: the work is in broker/, net/, store/ and codec/.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "cloud.h"
#include "desktop.h"
#include "broker/broker.h"
#include "broker/durable.h"
#include "broker/restore.h"
#include "cluster/cluster.h"
#include "net/listener.h"
#include "net/tls.h"
#include "net/ws.h"
#include "store/keep.h"
#include "store/store.h"
#include "tenancy/catalog.h"
#include "tenancy/jobs.h"
#include "tenancy/watcher.h"
#include "util/clock.h"
#include "util/config.h"
#include "util/journal.h"
#include "util/log.h"
#include "util/mailbox.h"
#include "util/memory.h"
#include "web/web.h"

/* On SIGTERM, connections get this long to flush before the loop ends regardless. */
#define SHUTDOWN_GRACE_MSEC 2000
/* SIGTERM, SIGINT and SIGHUP: see install_signals(). */
#define SIGNAL_COUNT 3

enum exit_code {
    EXIT_OK = 0,
    EXIT_CONFIG = 1,  /* bad command line or configuration */
    EXIT_LISTEN = 2,  /* a listener could not be opened */
    EXIT_RUNTIME = 3, /* out of memory or an event loop failure at start */
};

struct daemon_state {
    struct event_base *base;
    struct broker *broker;
    struct listener **listeners;
    size_t listener_count;
    struct event *signals[SIGNAL_COUNT], *drain;
    struct watcher *watcher;  /* cloud mode */
    int64_t catalog_version;  /* cloud mode in a cluster: the version loaded at start */
    struct tls_server *tls;   /* when tls-cert is set */
    struct ws_server *ws;     /* when a ws:// or wss:// listener is configured */
    struct web *web;          /* what http:// and https:// listeners serve */
    struct cluster *cluster;  /* with a cluster URL */
    struct desktop desktop;   /* desktop mode: the password-file */
    struct event *catalog_ev; /* the watcher has a new catalog */
    struct jobs *jobs;        /* cloud mode: the management API's database work */
    struct event *jobs_ev;    /* jobs are finished */
    struct durable *durable;  /* with a database: what the broker keeps (broker->durable) */
    struct keep_writer *writer;
    struct mailbox *settled; /* batches the writer committed */
    struct event *settled_ev;
    int drain_ticks;
    int argc; /* the command line, re-read on SIGHUP */
    char **argv;
    const struct config *cfg; /* what is in force */
};

static void close_listeners(struct daemon_state *d)
{
    for (size_t i = 0; i < d->listener_count; i++)
        listener_free(d->listeners[i]);
    d->listener_count = 0;
}

/* Wait for the closing connections to flush, then end the loop. */
static void drain_cb(evutil_socket_t fd, short what, void *arg)
{
    struct daemon_state *d = arg;
    if (d->broker->conn_count == 0 || ++d->drain_ticks * 50 >= SHUTDOWN_GRACE_MSEC)
        event_base_loopbreak(d->base);
}

static void stop_cb(evutil_socket_t sig, short what, void *arg)
{
    struct daemon_state *d = arg;
    struct timeval tick = {0, 50000};

    if (d->broker->stopping)
        return;
    log_notice("received %s: shutting down", strsignal((int)sig));
    d->broker->stopping = true;
    close_listeners(d);
    web_stop(d->web);
    broker_close_all(d->broker, "server shutting down");
    d->drain = event_new(d->base, -1, EV_PERSIST, drain_cb, d);
    if (!d->drain || event_add(d->drain, &tick) < 0)
        event_base_loopbreak(d->base);
}

static bool same_listeners(const struct config *a, const struct config *b)
{
    if (a->listen_set != b->listen_set || a->listen_count != b->listen_count)
        return false;
    for (size_t i = 0; i < a->listen_count; i++)
        if (strcmp(a->listen[i], b->listen[i]) != 0)
            return false;
    return true;
}

/*
 * SIGHUP: read the command line and the configuration file again and apply
 * what can change at run time: the log level and the limits (for decisions
 * from now on). Listeners and the mode need a restart, and the log says so.
 */
static void reload_cb(evutil_socket_t sig, short what, void *arg)
{
    struct daemon_state *d = arg;
    struct config next;
    enum config_action action;
    char err[512];

    config_init(&next);
    if (config_parse_args(&next, d->argc, d->argv, &action, err, sizeof(err)) < 0 ||
        config_validate(&next, err, sizeof(err)) < 0) {
        log_error("SIGHUP: configuration not reloaded: %s", err);
        config_free(&next);
        return;
    }
    log_set_level((enum log_level)next.log_level);
    broker_set_limits(d->broker, &next.limits);
    d->broker->connect_timeout = next.connect_timeout;
    d->broker->max_memory = next.max_memory;
    if (d->tls && next.tls_cert) {
        if (tls_server_reload(d->tls, &next, err, sizeof(err)) < 0) {
            log_error("SIGHUP: TLS certificate not reloaded (the old one stays): %s", err);
        } else {
            log_notice("SIGHUP: TLS certificate reloaded from %s", next.tls_cert);
            if (d->ws)
                ws_server_reload_tls(d->ws);
        }
    }
    if (next.mode == CONFIG_MODE_DESKTOP && d->cfg->mode == CONFIG_MODE_DESKTOP)
        desktop_reload(&d->desktop, &next);
    if (d->watcher) {
        watcher_set_base(d->watcher, &next.limits);
        broker_set_token_rules(d->broker, next.allow_keys_without_tls, next.token_warning);
    }
    if (!same_listeners(d->cfg, &next) || next.mode != d->cfg->mode)
        log_warning("SIGHUP: listen and mode changes take effect at the next start");
    log_notice("SIGHUP: configuration reloaded (log level, limits, token rules)");
    config_free(&next);
}

/* The error that stops the start: logged, and on stderr too when the log goes to syslog. */
static void start_error(const struct config *cfg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void start_error(const struct config *cfg, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_error("%s", msg);
    /* Before -d detaches, stderr is still the terminal that started us. */
    if (cfg->syslog || cfg->daemonize)
        fprintf(stderr, "aviaryd: %s\n", msg);
}

static int open_listeners(struct daemon_state *d, const struct config *cfg)
{
    const char *const *urls = (const char *const *)cfg->listen;
    size_t count = cfg->listen_count;
    /* Only the desktop defaults move to the next free port when their own is taken. */
    bool defaults = !cfg->listen_set && cfg->mode == CONFIG_MODE_DESKTOP;
    char err[512];

    if (!cfg->listen_set) {
        urls = config_default_listeners(cfg->mode, cfg->tls_cert != NULL, &count);
        if (cfg->mode == CONFIG_MODE_CLOUD && !cfg->tls_cert)
            log_notice("%s and %s not served: no tls-cert and tls-key", CONFIG_CLOUD_LISTEN_TLS,
                       CONFIG_CLOUD_LISTEN_WSS);
    }
    d->listeners = calloc(count, sizeof(*d->listeners));
    if (!d->listeners)
        return -1;
    for (size_t i = 0; i < count; i++) {
        char bound[160];
        if (strncmp(urls[i], "ws", 2) == 0) {
            if (!d->ws && !(d->ws = ws_server_new(d->broker, cfg, err, sizeof(err))))
                goto fail;
            if (ws_server_listen(d->ws, urls[i], defaults, bound, sizeof(bound), err, sizeof(err)) <
                0)
                goto fail;
        } else {
            struct listener *l =
                strncmp(urls[i], "http", 4) == 0
                    ? listener_open_http(d->base, web_http(d->web), urls[i], defaults, d->tls, err,
                                         sizeof(err))
                    : listener_open(d->broker, urls[i], defaults, d->tls, err, sizeof(err));
            if (!l)
                goto fail;
            d->listeners[d->listener_count++] = l;
            snprintf(bound, sizeof(bound), "%s", listener_url(l));
        }
        printf("listening on %s\n", bound);
        log_notice("listening on %s", bound);
        if (cfg->mode == CONFIG_MODE_DESKTOP)
            desktop_warn_exposed(&d->desktop, bound);
    }
    fflush(stdout);
    return 0;
fail:
    start_error(cfg, "%s", err);
    return -1;
}

static void catalog_cb(evutil_socket_t fd, short what, void *arg)
{
    struct daemon_state *d = arg;
    uint64_t looked;
    struct catalog *cat = watcher_take(d->watcher, &looked);
    if (cat)
        broker_apply_catalog(d->broker, cat);
    broker_login_rechecked(d->broker, looked);
    web_looked(d->web, looked);
}

/* web.h's admin check: a live admin key of the current catalog. */
static bool admin_key_ok(void *ctx, const char *key)
{
    struct daemon_state *d = ctx;
    return d->broker->catalog && catalog_admin_key(d->broker->catalog, key, strlen(key)) != NULL;
}

static void jobs_cb(evutil_socket_t fd, short what, void *arg)
{
    struct daemon_state *d = arg;
    jobs_finish(d->jobs);
}

/* A login missed: the broker asks for a fresh look at the database. */
static void recheck_cb(void *ctx, uint64_t n)
{
    struct daemon_state *d = ctx;
    watcher_look(d->watcher, n);
}

/* The database named by the configuration, or the default one. */
static const char *db_path(const struct config *cfg)
{
    return config_db_path(cfg);
}

/*
 * Cloud mode opens an existing database only, unless create-db says
 * otherwise: a typo in --db must not start an empty broker that refuses
 * everyone. Desktop mode creates the db it is given (it holds only what the
 * broker keeps).
 */
static int check_db_exists(const struct config *cfg)
{
    const char *path = config_db_path(cfg);
    struct stat st;

    /* In a cluster the file holds only what this node keeps: it is the node's to create. */
    if (cfg->mode != CONFIG_MODE_CLOUD || cfg->create_db || cfg->cluster_url ||
        stat(path, &st) == 0)
        return 0;
    if (errno != ENOENT) {
        start_error(cfg, "cannot start in cloud mode: database %s: %s", path, strerror(errno));
        return -1;
    }
    start_error(cfg,
                "cannot start in cloud mode: database %s does not exist. Create it with "
                "`aviaryctl --db %s init` (or start once with --create-db yes), or fix the "
                "path given with db / --db",
                path, path);
    return -1;
}

/* Cloud mode, before the listeners open: load the instances and tokens once. */
static int start_cloud(struct daemon_state *d, const struct config *cfg)
{
    char err[512];
    if (check_db_exists(cfg) < 0)
        return -1;
    struct catalog *cat = cloud_catalog_load(cfg, &d->catalog_version, err, sizeof(err));

    if (!cat) {
        start_error(cfg, "cannot start in cloud mode: %s", err);
        return -1;
    }
    broker_set_cloud(d->broker, cat, cfg->allow_keys_without_tls, cfg->token_warning);
    return 0;
}

/* Cloud mode, after any fork: follow aviaryctl's changes from now on. */
static int start_watcher(struct daemon_state *d, const struct config *cfg)
{
    char err[512];

    d->watcher = cloud_watcher_start(cfg, d->catalog_version, err, sizeof(err));
    if (!d->watcher) {
        log_error("cannot watch the database: %s", err);
        return -1;
    }
    d->catalog_ev = event_new(d->base, watcher_fd(d->watcher), EV_READ | EV_PERSIST, catalog_cb, d);
    if (!d->catalog_ev || event_add(d->catalog_ev, NULL) < 0) {
        log_error("cannot watch the database: out of memory");
        return -1;
    }
    broker_set_recheck(d->broker, recheck_cb, d);
    /* The management API writes through a thread of its own, never the core's. */
    d->jobs = cloud_jobs_start(cfg, err, sizeof(err));
    if (!d->jobs) {
        log_error("cannot serve the management API: %s", err);
        return -1;
    }
    d->jobs_ev = event_new(d->base, jobs_fd(d->jobs), EV_READ | EV_PERSIST, jobs_cb, d);
    if (!d->jobs_ev || event_add(d->jobs_ev, NULL) < 0) {
        log_error("cannot serve the management API: out of memory");
        return -1;
    }
    web_set_jobs(d->web, d->jobs);
    web_set_admin_check(d->web, admin_key_ok, d);
    return 0;
}

/* The broker keeps its retained messages and persistent sessions in the database. */
static bool keeping(const struct config *cfg)
{
    return cfg->mode == CONFIG_MODE_CLOUD || cfg->db;
}

/* durable.h's submit: hand a batch to the writer (none yet: keep it for later). */
static int keep_submit(void *ctx, struct journal *batch)
{
    struct daemon_state *d = ctx;
    return d->writer ? keep_writer_submit(d->writer, batch) : -ENOMEM;
}

/* The writer committed batches: they come back to the keeper. */
static void settled_cb(evutil_socket_t fd, short what, void *arg)
{
    struct daemon_state *d = arg;
    struct journal *batch;

    while ((batch = mailbox_take(d->settled)))
        durable_settled(d->durable, batch);
}

static int keep_failed(const struct config *cfg, const char *what, const char *err)
{
    start_error(cfg, "%s: %s", what, err);
    return -1;
}

/*
 * Before the listeners open: bring back what the database kept, and keep
 * what changes from now on (the writer starts after any fork).
 */
static int start_keeping(struct daemon_state *d, const struct config *cfg)
{
    char err[512];
    const char *path = db_path(cfg);
    struct journal loaded = JOURNAL_INIT;
    struct keep_next_ids next;
    struct restore_counts counts;
    uint64_t began = clock_ms();

    /* Cloud mode opened (and migrated) it already to load the catalog. */
    if (cfg->mode != CONFIG_MODE_CLOUD) {
        struct store *st = store_open(path, err, sizeof(err));
        if (!st)
            return keep_failed(cfg, "cannot keep retained messages and sessions", err);
        store_close(st);
    }
    d->durable = durable_new(d->base, keep_submit, d, broker_keep_resume, d->broker);
    if (!d->durable)
        return keep_failed(cfg, "cannot keep retained messages and sessions", "out of memory");
    d->broker->durable = d->durable;
    if (keep_load(path, cfg->mode == CONFIG_MODE_CLOUD, &loaded, &next, err, sizeof(err)) < 0)
        return keep_failed(cfg, "cannot load retained messages and sessions", err);
    int rc = restore_replay(d->broker, &loaded, next.message, next.session, next.seq, &counts);
    journal_free(&loaded);
    if (rc < 0)
        return keep_failed(cfg, "cannot restore retained messages and sessions", "out of memory");
    log_notice("restored %zu retained messages and %zu sessions (%zu subscriptions, %zu queued "
               "or in-flight messages) from %s in %llu ms",
               counts.retained, counts.sessions, counts.subscriptions, counts.messages, path,
               (unsigned long long)(clock_ms() - began));
    return 0;
}

/* After any fork: the thread that writes what the broker keeps. */
static int start_writer(struct daemon_state *d, const struct config *cfg)
{
    char err[512];

    if (!(d->settled = mailbox_new("keep")))
        return keep_failed(cfg, "cannot start the database writer", strerror(errno));
    d->settled_ev = event_new(d->base, mailbox_fd(d->settled), EV_READ | EV_PERSIST, settled_cb, d);
    if (!d->settled_ev || event_add(d->settled_ev, NULL) < 0)
        return keep_failed(cfg, "cannot start the database writer", "out of memory");
    if (!(d->writer = keep_writer_start(db_path(cfg), d->settled, err, sizeof(err))))
        return keep_failed(cfg, "cannot start the database writer", err);
    return 0;
}

/* Stopping: everything the keeper has goes to the database before the broker is freed. */
static void stop_keeping(struct daemon_state *d, const struct config *cfg)
{
    struct journal *batch;

    durable_finish(d->durable);
    if (d->writer) {
        uint64_t failed = keep_writer_stop(d->writer);
        if (failed)
            log_error("database %s: %llu writes of retained messages and sessions failed "
                      "(logged above)",
                      db_path(cfg), (unsigned long long)failed);
        else
            log_notice("retained messages and sessions are written to %s", db_path(cfg));
    }
    d->writer = NULL;
    while (d->settled && (batch = mailbox_take(d->settled)))
        durable_settled(d->durable, batch);
}

/*
 * Every connection costs a descriptor (a WebSocket one three): take the hard
 * limit as our own where the system lets us, and say what we have.
 */
static void raise_descriptor_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
        log_warning("cannot read the descriptor limit: %s", strerror(errno));
        return;
    }
    rlim_t was = rl.rlim_cur;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
            log_warning("cannot raise the descriptor limit from %llu to %llu: %s",
                        (unsigned long long)was, (unsigned long long)rl.rlim_max, strerror(errno));
            rl.rlim_cur = was;
        }
    }
    if (rl.rlim_cur == was)
        log_notice("file descriptors: at most %llu (the hard limit)",
                   (unsigned long long)rl.rlim_cur);
    else
        log_notice("file descriptors: at most %llu (raised from %llu)",
                   (unsigned long long)rl.rlim_cur, (unsigned long long)was);
}

static int write_pid_file(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        log_error("pid-file %s: %s", path, strerror(errno));
        return -1;
    }
    fprintf(f, "%ld\n", (long)getpid());
    return fclose(f) == 0 ? 0 : -1;
}

/* Detach from the terminal; the parent exits at once. */
static int daemonize(void)
{
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid > 0)
        _exit(EXIT_OK);
    if (setsid() < 0)
        return -1;
    int fd = open("/dev/null", O_RDWR);
    if (fd < 0)
        return -1;
    dup2(fd, STDIN_FILENO);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    if (fd > STDERR_FILENO)
        close(fd);
    return 0;
}

/*
 * Read the command line and the file it names. Returns true to run; false
 * when the program is done (help, version, or a bad configuration, reported
 * on stderr), with the exit status in *status.
 */
static bool read_configuration(struct config *cfg, int argc, char **argv, int *status)
{
    enum config_action action;
    char err[512];

    if (config_parse_args(cfg, argc, argv, &action, err, sizeof(err)) < 0 ||
        config_validate(cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "aviaryd: %s\n", err);
        *status = EXIT_CONFIG;
        return false;
    }
    *status = EXIT_OK;
    if (action == CONFIG_HELP) {
        config_usage(stdout, "aviaryd");
        return false;
    }
    if (action == CONFIG_DUMP) {
        config_dump(stdout);
        return false;
    }
    if (action == CONFIG_VERSION) {
        printf("aviaryd %s\n", PACKAGE_VERSION);
        return false;
    }
    return true;
}

/* The log, and what the process needs of the system before it serves anyone. */
static void set_up_process(const struct config *cfg)
{
    /* A daemon has no stderr: its log goes to syslog. */
    log_open("aviaryd", (enum log_level)cfg->log_level, cfg->syslog || cfg->daemonize);
    /* A peer that vanishes must cost us an error code, not the process. */
    signal(SIGPIPE, SIG_IGN);
    raise_descriptor_limit();
    memory_keep_freed(16 << 20, 4 << 20);
}

static int make_broker(struct daemon_state *d, const struct config *cfg)
{
    d->base = event_base_new();
    d->broker = d->base ? broker_new(d->base, &cfg->limits) : NULL;
    d->web = d->broker ? web_new(d->broker) : NULL;
    if (!d->web) {
        log_error("cannot start: out of memory");
        return -1;
    }
    d->broker->connect_timeout = cfg->connect_timeout;
    d->broker->max_memory = cfg->max_memory;
    return 0;
}

static int install_signals(struct daemon_state *d)
{
    static const struct {
        int signo;
        event_callback_fn cb;
    } handled[SIGNAL_COUNT] = {{SIGTERM, stop_cb}, {SIGINT, stop_cb}, {SIGHUP, reload_cb}};

    for (size_t i = 0; i < SIGNAL_COUNT; i++) {
        d->signals[i] = evsignal_new(d->base, handled[i].signo, handled[i].cb, d);
        if (!d->signals[i] || event_add(d->signals[i], NULL) < 0) {
            log_error("cannot install signal handlers");
            return -1;
        }
    }
    return 0;
}

/* The context of tls:// listeners, from tls-cert and tls-key. */
static int start_tls(struct daemon_state *d, const struct config *cfg)
{
    char err[512];

    if (!(d->tls = tls_server_new(cfg, err, sizeof(err)))) {
        start_error(cfg, "cannot start: %s", err);
        return -1;
    }
    return 0;
}

/* Everything before the loop, in order. Returns EXIT_OK, or the status to exit with. */
static int start(struct daemon_state *d, const struct config *cfg)
{
    char err[512];

    if (make_broker(d, cfg) < 0)
        return EXIT_RUNTIME;
    /* Signals first: a supervisor may signal us as soon as we say we listen. */
    if (install_signals(d) < 0)
        return EXIT_RUNTIME;
    if (cfg->tls_cert && start_tls(d, cfg) < 0)
        return EXIT_CONFIG;
    if (cfg->mode == CONFIG_MODE_CLOUD && start_cloud(d, cfg) < 0)
        return EXIT_CONFIG;
    if (cfg->mode == CONFIG_MODE_DESKTOP &&
        desktop_start(&d->desktop, d->broker, cfg, err, sizeof(err)) < 0) {
        log_error("cannot start: %s", err);
        return EXIT_CONFIG;
    }
    if (keeping(cfg) && start_keeping(d, cfg) < 0)
        return EXIT_CONFIG;
    if (!keeping(cfg))
        log_notice("retained messages and sessions are kept in memory only; --db PATH keeps them");
    if (cfg->cluster_url && !(d->cluster = cluster_start(d->broker, cfg->cluster_url,
                                                         cfg->cluster_ca, err, sizeof(err)))) {
        log_error("cannot join the cluster: %s", err);
        return EXIT_CONFIG;
    }
    if (open_listeners(d, cfg) < 0)
        return EXIT_LISTEN;
    /*
     * Detach only now, so that `aviaryd -d` reports a listener it cannot open
     * with its exit status, and has printed the addresses it serves.
     */
    if (cfg->daemonize && (daemonize() < 0 || event_reinit(d->base) < 0)) {
        log_error("cannot daemonize: %s", strerror(errno));
        return EXIT_RUNTIME;
    }
    if (cfg->pid_file && write_pid_file(cfg->pid_file) < 0)
        return EXIT_RUNTIME;
    if (cfg->mode == CONFIG_MODE_CLOUD && start_watcher(d, cfg) < 0)
        return EXIT_RUNTIME;
    if (d->durable && start_writer(d, cfg) < 0)
        return EXIT_RUNTIME;
    /* A thread does not survive the fork of -d: the WebSocket one starts only now. */
    if (d->ws && ws_server_start(d->ws, err, sizeof(err)) < 0) {
        log_error("%s", err);
        return EXIT_RUNTIME;
    }
    return EXIT_OK;
}

/* Serve until SIGTERM or SIGINT ends the loop. Returns the exit status. */
static int run(struct daemon_state *d, const struct config *cfg)
{
    if (cfg->mode == CONFIG_MODE_CLOUD)
        log_notice("aviaryd %s started in cloud mode with database %s%s (pid %ld)", PACKAGE_VERSION,
                   db_path(cfg), cfg->cluster_url ? " and the cluster's catalog in Redis" : "",
                   (long)getpid());
    else
        log_notice("aviaryd %s started in desktop mode (pid %ld)", PACKAGE_VERSION, (long)getpid());
    if (event_base_dispatch(d->base) < 0) {
        log_error("event loop failed");
        return EXIT_RUNTIME;
    }
    log_notice("stopped");
    return EXIT_OK;
}

/* event_free() takes no NULL, and start() may have stopped before making an event. */
static void event_drop(struct event *ev)
{
    if (ev)
        event_free(ev);
}

/* Free whatever start() made, however far it got; the pid file goes after a clean stop. */
static void tear_down(struct daemon_state *d, const struct config *cfg, int status)
{
    if (cfg->pid_file && status == EXIT_OK)
        unlink(cfg->pid_file);
    close_listeners(d);
    free(d->listeners);
    web_free(d->web);
    event_drop(d->jobs_ev);
    jobs_stop(d->jobs); /* after the web: the calls it still runs have lost their requests */
    ws_server_free(d->ws);
    event_drop(d->catalog_ev);
    watcher_stop(d->watcher);
    stop_keeping(d, cfg);
    cluster_stop(d->cluster);
    broker_free(d->broker);
    desktop_free(&d->desktop);
    event_drop(d->settled_ev);
    mailbox_free(d->settled, NULL);
    tls_server_free(d->tls);
    for (size_t i = 0; i < SIGNAL_COUNT; i++)
        event_drop(d->signals[i]);
    event_drop(d->drain);
    if (d->base)
        event_base_free(d->base);
    durable_free(d->durable); /* the base's last output may hold kept messages */
}

int main(int argc, char **argv)
{
    struct config cfg;
    struct daemon_state d = {.argc = argc, .argv = argv, .cfg = &cfg};
    int status;

    config_init(&cfg);
    if (read_configuration(&cfg, argc, argv, &status)) {
        set_up_process(&cfg);
        status = start(&d, &cfg);
        if (status == EXIT_OK)
            status = run(&d, &cfg);
        tear_down(&d, &cfg, status);
    }
    config_free(&cfg);
    return status;
}
