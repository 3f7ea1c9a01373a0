/*
 * Unit tests for util/config: directives from files and from the command line,
 * their precedence, every error message form, and the sample etc/aviary.conf.
 */
#include <check.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check_tap.h"
#include "util/config.h"
#include "util/limits.h"
#include "util/log.h"

#define ERRLEN 512

/* A file under /tmp holding `text`; the caller unlinks it with temp_remove(). */
struct temp {
    char path[64];
};

static void temp_write(struct temp *t, const char *text, size_t len)
{
    int fd;

    snprintf(t->path, sizeof(t->path), "/tmp/aviary-test-config-XXXXXX");
    fd = mkstemp(t->path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, len), (ssize_t)len);
    close(fd);
}

static void temp_remove(struct temp *t)
{
    unlink(t->path);
}

/* Load `text` as a configuration file; `path_out` (may be NULL) receives its name. */
static int load_text(struct config *c, const char *text, char *err, char *path_out)
{
    struct temp t;
    int rc;

    temp_write(&t, text, strlen(text));
    rc = config_load_file(c, t.path, err, ERRLEN);
    if (path_out != NULL)
        strcpy(path_out, t.path);
    temp_remove(&t);
    return rc;
}

/* Expect loading `text` to fail with "PATH:LINE: reason". */
static void expect_file_error(const char *text, unsigned line, const char *reason)
{
    struct config c;
    char err[ERRLEN], path[64], want[ERRLEN];

    config_init(&c);
    ck_assert_int_eq(load_text(&c, text, err, path), -1);
    snprintf(want, sizeof(want), "%s:%u: %s", path, line, reason);
    ck_assert_str_eq(err, want);
    config_free(&c);
}

/* Run config_parse_args on "aviaryd" followed by the NULL-terminated arguments. */
static int parse(struct config *c, enum config_action *action, char *err, ...)
{
    char *argv[64];
    int argc = 0;
    va_list ap;
    const char *a;

    argv[argc++] = (char *)"aviaryd";
    va_start(ap, err);
    while ((a = va_arg(ap, const char *)) != NULL && argc < 63)
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    return config_parse_args(c, argc, argv, action, err, ERRLEN);
}

/* Expect `name value` to be refused by config_set with exactly `want`. */
static void expect_set_error(const char *name, const char *value, const char *want)
{
    struct config c;
    char err[ERRLEN];

    config_init(&c);
    ck_assert_int_eq(config_set(&c, name, value, err, sizeof(err)), -1);
    ck_assert_str_eq(err, want);
    config_free(&c);
}

/* ---- defaults ------------------------------------------------------------ */

START_TEST(test_defaults_are_desktop_mode_with_spec_limits)
{
    struct config c;
    char err[ERRLEN];

    config_init(&c);
    ck_assert_ptr_null(c.listen);
    ck_assert_uint_eq(c.listen_count, 0);
    ck_assert(!c.listen_set);
    ck_assert_int_eq(c.mode, CONFIG_MODE_DESKTOP);
    ck_assert_ptr_null(c.db);
    ck_assert_uint_eq(c.limits.max_client_id, 64);
    ck_assert_uint_eq(c.limits.max_topic_length, 128);
    ck_assert_uint_eq(c.limits.max_payload, 65536);
    ck_assert_uint_eq(c.limits.max_subscriptions, 100);
    ck_assert_uint_eq(c.limits.keepalive_min, 1);
    ck_assert_uint_eq(c.limits.keepalive_max, 300);
    ck_assert_uint_eq(c.limits.max_queued_messages, 1000);
    ck_assert_uint_eq(c.limits.max_inflight, 20);
    ck_assert_uint_eq(c.connect_timeout, 10);
    ck_assert_int_eq(c.log_level, LOG_LEVEL_NOTICE);
    ck_assert(!c.syslog);
    ck_assert(!c.daemonize);
    ck_assert_ptr_null(c.pid_file);
    ck_assert_ptr_null(c.config_file);
    ck_assert_int_eq(config_validate(&c, err, sizeof(err)), 0);
    config_free(&c);
}
END_TEST

START_TEST(test_free_then_init_reuses_the_struct)
{
    struct config c;
    char err[ERRLEN];

    config_init(&c);
    ck_assert_int_eq(config_set(&c, "db", "/tmp/x.db", err, sizeof(err)), 0);
    ck_assert_int_eq(config_set(&c, "listen", "tcp://a:1", err, sizeof(err)), 0);
    config_free(&c);
    config_free(&c); /* a second free of a freed config is harmless */
    config_init(&c);
    ck_assert_ptr_null(c.db);
    ck_assert_uint_eq(c.listen_count, 0);
    config_free(&c);
}
END_TEST

START_TEST(test_cluster_takes_a_redis_url_and_refuses_others)
{
    struct config c;
    char err[ERRLEN];

    config_init(&c);
    ck_assert_msg(config_set(&c, "cluster", "redis://:pw@10.0.0.5:6380/2", err, sizeof(err)) == 0,
                  "%s", err);
    ck_assert_str_eq(c.cluster_url, "redis://:pw@10.0.0.5:6380/2");
    ck_assert_int_eq(config_set(&c, "cluster-ca", "/etc/aviary/redis-ca.crt", err, sizeof(err)), 0);
    ck_assert_str_eq(c.cluster_ca, "/etc/aviary/redis-ca.crt");
    /* a bad URL is an error at start, and the one in force stays */
    ck_assert_int_eq(config_set(&c, "cluster", "http://10.0.0.5", err, sizeof(err)), -1);
    ck_assert_msg(strncmp(err, "cluster: ", 9) == 0, "%s", err);
    ck_assert_str_eq(c.cluster_url, "redis://:pw@10.0.0.5:6380/2");
    config_free(&c);
    expect_set_error("cluster", "", "cluster: empty path");
}
END_TEST

/* ---- the file ------------------------------------------------------------ */

static const char every_directive[] = "listen tcp://0.0.0.0:1883\n"
                                      "listen tcp://[::1]:1884\n"
                                      "mode cloud\n"
                                      "db /var/lib/aviary/aviary.db\n"
                                      "max-client-id 23\n"
                                      "max-topic-length 256\n"
                                      "max-payload 1000\n"
                                      "max-subscriptions 7\n"
                                      "keepalive-min 5\n"
                                      "keepalive-max 600\n"
                                      "max-queued-messages 50\n"
                                      "max-inflight 10\n"
                                      "log-level debug\n"
                                      "syslog yes\n"
                                      "daemonize yes\n"
                                      "pid-file /run/aviaryd.pid\n";

static void check_every_directive(const struct config *c)
{
    ck_assert_uint_eq(c->listen_count, 2);
    ck_assert_str_eq(c->listen[0], "tcp://0.0.0.0:1883");
    ck_assert_str_eq(c->listen[1], "tcp://[::1]:1884");
    ck_assert(c->listen_set);
    ck_assert_int_eq(c->mode, CONFIG_MODE_CLOUD);
    ck_assert_str_eq(c->db, "/var/lib/aviary/aviary.db");
    ck_assert_uint_eq(c->limits.max_client_id, 23);
    ck_assert_uint_eq(c->limits.max_topic_length, 256);
    ck_assert_uint_eq(c->limits.max_payload, 1000);
    ck_assert_uint_eq(c->limits.max_subscriptions, 7);
    ck_assert_uint_eq(c->limits.keepalive_min, 5);
    ck_assert_uint_eq(c->limits.keepalive_max, 600);
    ck_assert_uint_eq(c->limits.max_queued_messages, 50);
    ck_assert_uint_eq(c->limits.max_inflight, 10);
    ck_assert_int_eq(c->log_level, LOG_LEVEL_DEBUG);
    ck_assert(c->syslog);
    ck_assert(c->daemonize);
    ck_assert_str_eq(c->pid_file, "/run/aviaryd.pid");
}

START_TEST(test_file_sets_every_directive)
{
    struct config c;
    char err[ERRLEN] = "";

    config_init(&c);
    ck_assert_msg(load_text(&c, every_directive, err, NULL) == 0, "%s", err);
    check_every_directive(&c);
    ck_assert_int_eq(config_validate(&c, err, sizeof(err)), 0);
    config_free(&c);
}
END_TEST

START_TEST(test_file_comments_blank_lines_and_whitespace)
{
    struct config c;
    char err[ERRLEN] = "";

    config_init(&c);
    ck_assert_msg(load_text(&c,
                            "# a comment\n"
                            "\n"
                            "   \t\n"
                            "   # an indented comment\n"
                            "\t mode \t cloud \t\n"
                            "max-payload 1234 # trailing comment\n"
                            "max-inflight 3\t# after a tab\n"
                            "pid-file /tmp/a#b\n"
                            "db /tmp/with space.db   \n"
                            "syslog#not-a-comment\n",
                            err, NULL) == -1,
                  "the last line names an unknown directive");
    ck_assert_int_eq(c.mode, CONFIG_MODE_CLOUD);
    ck_assert_uint_eq(c.limits.max_payload, 1234);
    ck_assert_uint_eq(c.limits.max_inflight, 3);
    ck_assert_str_eq(c.pid_file, "/tmp/a#b");
    ck_assert_str_eq(c.db, "/tmp/with space.db");
    ck_assert_ptr_nonnull(strstr(err, ":10: unknown directive 'syslog#not-a-comment'"));
    config_free(&c);
}
END_TEST

START_TEST(test_file_quoted_values_and_escapes)
{
    struct config c;
    char err[ERRLEN] = "";

    config_init(&c);
    ck_assert_msg(load_text(&c,
                            "db \"/tmp/my db # not a comment.db\"  # a comment\n"
                            "pid-file \"/tmp/q\\\"uote\\\\back\"\n"
                            "mode \"cloud\"\n"
                            "syslog \"yes\"#\n",
                            err, NULL) == -1,
                  "text right after the closing quote is refused");
    ck_assert_str_eq(c.db, "/tmp/my db # not a comment.db");
    ck_assert_str_eq(c.pid_file, "/tmp/q\"uote\\back");
    ck_assert_int_eq(c.mode, CONFIG_MODE_CLOUD);
    ck_assert_ptr_nonnull(strstr(err, ":4: unexpected text after closing quote: '#'"));
    config_free(&c);
}
END_TEST

START_TEST(test_file_crlf_line_endings)
{
    struct config c;
    char err[ERRLEN] = "";

    config_init(&c);
    ck_assert_msg(load_text(&c, "mode cloud\r\nmax-payload 2k\r\ndaemonize\r\n", err, NULL) == 0,
                  "%s", err);
    ck_assert_int_eq(c.mode, CONFIG_MODE_CLOUD);
    ck_assert_uint_eq(c.limits.max_payload, 2048);
    ck_assert(c.daemonize);
    config_free(&c);
}
END_TEST

START_TEST(test_file_no_final_newline)
{
    struct config c;
    char err[ERRLEN] = "";

    config_init(&c);
    ck_assert_msg(load_text(&c, "mode cloud", err, NULL) == 0, "%s", err);
    ck_assert_int_eq(c.mode, CONFIG_MODE_CLOUD);
    config_free(&c);
}
END_TEST

START_TEST(test_file_empty_is_defaults)
{
    struct config c;
    char err[ERRLEN] = "";

    config_init(&c);
    ck_assert_msg(load_text(&c, "", err, NULL) == 0, "%s", err);
    ck_assert(!c.listen_set);
    ck_assert_uint_eq(c.limits.max_payload, LIMITS_DEFAULT_MAX_PAYLOAD);
    config_free(&c);
}
END_TEST

START_TEST(test_file_last_value_wins_and_listen_accumulates)
{
    struct config c;
    char err[ERRLEN] = "";

    config_init(&c);
    ck_assert_msg(load_text(&c,
                            "listen tcp://127.0.0.1:1883\n"
                            "db /tmp/one.db\n"
                            "mode cloud\n"
                            "listen tcp://127.0.0.1:1884\n"
                            "db /tmp/two.db\n"
                            "mode desktop\n"
                            "listen tcp://127.0.0.1:1885\n",
                            err, NULL) == 0,
                  "%s", err);
    ck_assert_uint_eq(c.listen_count, 3);
    ck_assert_str_eq(c.listen[0], "tcp://127.0.0.1:1883");
    ck_assert_str_eq(c.listen[2], "tcp://127.0.0.1:1885");
    ck_assert_str_eq(c.db, "/tmp/two.db");
    ck_assert_int_eq(c.mode, CONFIG_MODE_DESKTOP);
    config_free(&c);
}
END_TEST

START_TEST(test_file_boolean_without_value_means_yes)
{
    struct config c;
    char err[ERRLEN] = "";

    config_init(&c);
    ck_assert_msg(load_text(&c, "syslog\ndaemonize   # comment\n", err, NULL) == 0, "%s", err);
    ck_assert(c.syslog);
    ck_assert(c.daemonize);
    config_free(&c);
}
END_TEST

START_TEST(test_file_error_unknown_directive)
{
    expect_file_error("mode cloud\n# comment\n\nfoo bar\n", 4, "unknown directive 'foo'");
    expect_file_error("Mode cloud\n", 1, "unknown directive 'Mode'; did you mean mode?");
    expect_file_error("--mode cloud\n", 1, "unknown directive '--mode'; did you mean mode?");
    expect_file_error("config /etc/other.conf\n", 1, "unknown directive 'config'");
}
END_TEST

START_TEST(test_file_error_not_a_number)
{
    expect_file_error("max-payload 12x\n", 1, "max-payload: not a number: '12x'");
    expect_file_error("\n\nmax-inflight ten\n", 3, "max-inflight: not a number: 'ten'");
}
END_TEST

START_TEST(test_file_error_mode)
{
    expect_file_error("log-level info\nmode x\n", 2, "mode: expected desktop or cloud, got 'x'");
}
END_TEST

START_TEST(test_file_error_missing_value)
{
    expect_file_error("mode\n", 1, "mode: missing value");
    expect_file_error("listen # nothing\n", 1, "listen: missing value");
    expect_file_error("max-payload\n", 1, "max-payload: missing value");
    expect_file_error("db\n", 1, "db: missing value");
}
END_TEST

START_TEST(test_file_error_unterminated_quote)
{
    expect_file_error("mode cloud\ndb \"/tmp/x.db\n", 2, "unterminated quote");
    expect_file_error("db \"/tmp/x.db\\\"\n", 1, "unterminated quote");
    expect_file_error("db \"/tmp/x\\", 1, "unterminated quote");
}
END_TEST

START_TEST(test_file_error_bad_escape_and_text_after_quote)
{
    expect_file_error("db \"/tmp/a\\n\"\n", 1,
                      "unknown escape '\\n' in quoted value (only \\\" and \\\\)");
    expect_file_error("db \"/tmp/a\" b\n", 1, "unexpected text after closing quote: 'b'");
}
END_TEST

START_TEST(test_file_error_empty_quoted_path)
{
    expect_file_error("db \"\"\n", 1, "db: empty path");
    expect_file_error("pid-file \"\"\n", 1, "pid-file: empty path");
}
END_TEST

START_TEST(test_file_error_nul_byte)
{
    static const char text[] = "mode cloud\nmode\0cloud\n";
    struct config c;
    struct temp t;
    char err[ERRLEN], want[ERRLEN];

    config_init(&c);
    temp_write(&t, text, sizeof(text) - 1);
    ck_assert_int_eq(config_load_file(&c, t.path, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s:2: NUL byte in line", t.path);
    ck_assert_str_eq(err, want);
    temp_remove(&t);
    config_free(&c);
}
END_TEST

START_TEST(test_file_error_cannot_open)
{
    struct config c;
    char err[ERRLEN];

    config_init(&c);
    ck_assert_int_eq(config_load_file(&c, "/nonexistent/aviary.conf", err, sizeof(err)), -1);
    ck_assert_str_eq(err, "/nonexistent/aviary.conf: cannot open: No such file or directory");
    config_free(&c);
}
END_TEST

START_TEST(test_file_error_directory_cannot_be_read)
{
    struct config c;
    char err[ERRLEN];

    config_init(&c);
    ck_assert_int_eq(config_load_file(&c, "/tmp", err, sizeof(err)), -1);
    ck_assert_msg(strncmp(err, "/tmp: cannot ", 13) == 0, "%s", err);
    config_free(&c);
}
END_TEST

START_TEST(test_file_error_null_err_is_safe)
{
    struct config c;

    config_init(&c);
    ck_assert_int_eq(config_load_file(&c, "/nonexistent/aviary.conf", NULL, 0), -1);
    ck_assert_int_eq(config_set(&c, "foo", "bar", NULL, 0), -1);
    config_free(&c);
}
END_TEST

START_TEST(test_file_error_long_line)
{
    /* getline grows its buffer; a long value must not be cut, only refused by its parser */
    size_t n = 10000;
    char *text = malloc(n + 32);
    struct config c;
    char err[ERRLEN] = "";

    ck_assert_ptr_nonnull(text);
    strcpy(text, "db /tmp/");
    memset(text + 8, 'a', n);
    strcpy(text + 8 + n, "\n");
    config_init(&c);
    ck_assert_msg(load_text(&c, text, err, NULL) == 0, "%s", err);
    ck_assert_uint_eq(strlen(c.db), 8 + n - 3);
    config_free(&c);
    free(text);
}
END_TEST

/* ---- single directives: numbers, suffixes, bounds -------------------------- */

struct bound {
    const char *name;
    unsigned long long min, max;
};

static const struct bound bounds[] = {
    {"max-client-id", 1, 65535},         {"max-topic-length", 1, 65534},
    {"max-payload", 0, 268435455},       {"max-subscriptions", 0, 1000000},
    {"keepalive-min", 0, 65535},         {"keepalive-max", 1, 65535},
    {"max-queued-messages", 0, 1000000}, {"max-inflight", 1, 65535},
    {"connect-timeout", 1, 3600},
};

static unsigned long long limit_value(const struct config *c, const char *name)
{
    const struct limits *l = &c->limits;

    if (strcmp(name, "max-client-id") == 0)
        return l->max_client_id;
    if (strcmp(name, "max-topic-length") == 0)
        return l->max_topic_length;
    if (strcmp(name, "max-payload") == 0)
        return l->max_payload;
    if (strcmp(name, "max-subscriptions") == 0)
        return l->max_subscriptions;
    if (strcmp(name, "keepalive-min") == 0)
        return l->keepalive_min;
    if (strcmp(name, "keepalive-max") == 0)
        return l->keepalive_max;
    if (strcmp(name, "max-queued-messages") == 0)
        return l->max_queued_messages;
    if (strcmp(name, "max-inflight") == 0)
        return l->max_inflight;
    if (strcmp(name, "connect-timeout") == 0)
        return c->connect_timeout;
    ck_abort_msg("no limit %s", name);
    return 0;
}

START_TEST(test_numbers_accept_their_bounds)
{
    const struct bound *b = &bounds[_i];
    struct config c;
    char err[ERRLEN] = "", val[32];

    config_init(&c);
    snprintf(val, sizeof(val), "%llu", b->min);
    ck_assert_msg(config_set(&c, b->name, val, err, sizeof(err)) == 0, "%s", err);
    ck_assert_uint_eq(limit_value(&c, b->name), b->min);
    snprintf(val, sizeof(val), "%llu", b->max);
    ck_assert_msg(config_set(&c, b->name, val, err, sizeof(err)) == 0, "%s", err);
    ck_assert_uint_eq(limit_value(&c, b->name), b->max);
    snprintf(val, sizeof(val), "00%llu", b->max);
    ck_assert_msg(config_set(&c, b->name, val, err, sizeof(err)) == 0, "leading zeros: %s", err);
    config_free(&c);
}
END_TEST

START_TEST(test_numbers_refuse_outside_bounds)
{
    const struct bound *b = &bounds[_i];
    char val[32], want[ERRLEN];

    snprintf(val, sizeof(val), "%llu", b->max + 1);
    snprintf(want, sizeof(want), "%s: must be between %llu and %llu, got '%s'", b->name, b->min,
             b->max, val);
    expect_set_error(b->name, val, want);
    if (b->min > 0) {
        snprintf(val, sizeof(val), "%llu", b->min - 1);
        snprintf(want, sizeof(want), "%s: must be between %llu and %llu, got '%s'", b->name, b->min,
                 b->max, val);
        expect_set_error(b->name, val, want);
    }
    /* far beyond unsigned long long: refused as out of range, not wrapped */
    snprintf(want, sizeof(want), "%s: must be between %llu and %llu, got '%s'", b->name, b->min,
             b->max, "99999999999999999999999999");
    expect_set_error(b->name, "99999999999999999999999999", want);
    snprintf(want, sizeof(want), "%s: must be between %llu and %llu, got '%s'", b->name, b->min,
             b->max, "18446744073709551616");
    expect_set_error(b->name, "18446744073709551616", want);
}
END_TEST

START_TEST(test_numbers_refuse_garbage)
{
    static const char *const garbage[] = {"",    " 1",  "+1",  "1 ",    "0x10", "1.5",
                                          "12x", "x12", "1e3", "1_000", "\t"};
    const struct bound *b = &bounds[_i];
    char want[ERRLEN];

    for (size_t k = 0; k < sizeof(garbage) / sizeof(garbage[0]); k++) {
        snprintf(want, sizeof(want), "%s: not a number: '%s'", b->name, garbage[k]);
        expect_set_error(b->name, garbage[k], want);
    }
    snprintf(want, sizeof(want), "%s: must not be negative: '-1'", b->name);
    expect_set_error(b->name, "-1", want);
    snprintf(want, sizeof(want), "%s: not a number: '-'", b->name);
    expect_set_error(b->name, "-", want);
}
END_TEST

START_TEST(test_max_payload_size_suffixes)
{
    static const struct {
        const char *text;
        size_t value;
    } ok[] = {{"64k", 65536},         {"64K", 65536},          {"1m", 1048576},
              {"1M", 1048576},        {"255m", 267386880},     {"0k", 0},
              {"262143k", 268434432}, {"268435455", 268435455}};
    struct config c;
    char err[ERRLEN] = "";

    config_init(&c);
    for (size_t k = 0; k < sizeof(ok) / sizeof(ok[0]); k++) {
        ck_assert_msg(config_set(&c, "max-payload", ok[k].text, err, sizeof(err)) == 0, "%s: %s",
                      ok[k].text, err);
        ck_assert_uint_eq(c.limits.max_payload, ok[k].value);
    }
    config_free(&c);

    expect_set_error("max-payload", "256m",
                     "max-payload: must be between 0 and 268435455, got '256m'");
    expect_set_error("max-payload", "262144k",
                     "max-payload: must be between 0 and 268435455, got '262144k'");
    expect_set_error("max-payload", "99999999999999999k",
                     "max-payload: must be between 0 and 268435455, got '99999999999999999k'");
    expect_set_error("max-payload", "k", "max-payload: not a number: 'k'");
    expect_set_error("max-payload", "64kb", "max-payload: not a number: '64kb'");
    expect_set_error("max-payload", "64kk", "max-payload: not a number: '64kk'");
    expect_set_error("max-payload", "64 k", "max-payload: not a number: '64 k'");
    expect_set_error("max-payload", "64t", "max-payload: not a number: '64t'");
    expect_set_error("max-payload", "-1k", "max-payload: must not be negative: '-1k'");
}
END_TEST

START_TEST(test_suffixes_only_for_max_payload)
{
    expect_set_error("max-client-id", "1k", "max-client-id: not a number: '1k'");
    expect_set_error("max-queued-messages", "1k", "max-queued-messages: not a number: '1k'");
    expect_set_error("keepalive-max", "1m", "keepalive-max: not a number: '1m'");
}
END_TEST

START_TEST(test_boolean_forms)
{
    static const char *const yes[] = {"yes", "YES", "Yes", "true", "on", "1"};
    static const char *const no[] = {"no", "NO", "false", "False", "off", "0"};
    struct config c;
    char err[ERRLEN] = "";

    config_init(&c);
    for (size_t k = 0; k < sizeof(yes) / sizeof(yes[0]); k++) {
        c.syslog = false;
        c.daemonize = false;
        ck_assert_msg(config_set(&c, "syslog", yes[k], err, sizeof(err)) == 0, "%s", err);
        ck_assert_msg(config_set(&c, "daemonize", yes[k], err, sizeof(err)) == 0, "%s", err);
        ck_assert(c.syslog && c.daemonize);
    }
    for (size_t k = 0; k < sizeof(no) / sizeof(no[0]); k++) {
        c.syslog = true;
        c.daemonize = true;
        ck_assert_msg(config_set(&c, "syslog", no[k], err, sizeof(err)) == 0, "%s", err);
        ck_assert_msg(config_set(&c, "daemonize", no[k], err, sizeof(err)) == 0, "%s", err);
        ck_assert(!c.syslog && !c.daemonize);
    }
    ck_assert_int_eq(config_set(&c, "syslog", NULL, err, sizeof(err)), 0);
    ck_assert(c.syslog);
    config_free(&c);

    expect_set_error("syslog", "maybe", "syslog: expected yes or no, got 'maybe'");
    expect_set_error("daemonize", "", "daemonize: expected yes or no, got ''");
    expect_set_error("daemonize", "2", "daemonize: expected yes or no, got '2'");
}
END_TEST

START_TEST(test_only_booleans_may_omit_the_value)
{
    expect_set_error("mode", NULL, "mode: missing value");
    expect_set_error("log-level", NULL, "log-level: missing value");
    expect_set_error("pid-file", NULL, "pid-file: missing value");
    expect_set_error("max-inflight", NULL, "max-inflight: missing value");
}
END_TEST

START_TEST(test_log_levels)
{
    static const char *const names[] = {"error", "warning", "notice", "info", "debug"};
    struct config c;
    char err[ERRLEN] = "";

    config_init(&c);
    for (int k = 0; k < 5; k++) {
        ck_assert_msg(config_set(&c, "log-level", names[k], err, sizeof(err)) == 0, "%s", err);
        ck_assert_int_eq(c.log_level, k);
    }
    config_free(&c);
    expect_set_error("log-level", "verbose",
                     "log-level: expected error, warning, notice, info or debug, got 'verbose'");
    expect_set_error("log-level", "DEBUG",
                     "log-level: expected error, warning, notice, info or debug, got 'DEBUG'");
}
END_TEST

START_TEST(test_mode_values)
{
    struct config c;
    char err[ERRLEN] = "";

    config_init(&c);
    ck_assert_int_eq(config_set(&c, "mode", "cloud", err, sizeof(err)), 0);
    ck_assert_int_eq(c.mode, CONFIG_MODE_CLOUD);
    ck_assert_int_eq(config_set(&c, "mode", "desktop", err, sizeof(err)), 0);
    ck_assert_int_eq(c.mode, CONFIG_MODE_DESKTOP);
    config_free(&c);
    expect_set_error("mode", "Cloud", "mode: expected desktop or cloud, got 'Cloud'");
    expect_set_error("mode", "", "mode: expected desktop or cloud, got ''");
}
END_TEST

START_TEST(test_unknown_directive)
{
    expect_set_error("foo", "bar", "unknown directive 'foo'");
    expect_set_error("", "bar", "unknown directive ''");
    expect_set_error("max-payloadx", "1",
                     "unknown directive 'max-payloadx'; did you mean max-payload?");
    expect_set_error("help", NULL, "unknown directive 'help'");
}
END_TEST

/* ---- listener URLs ------------------------------------------------------- */

START_TEST(test_listen_urls_accepted)
{
    static const struct {
        const char *url, *scheme, *host;
        unsigned port;
    } ok[] = {
        {"tcp://127.0.0.1:1883", "tcp", "127.0.0.1", 1883},
        {"tls://broker.example.com:8883", "tls", "broker.example.com", 8883},
        {"ws://localhost:1884", "ws", "localhost", 1884},
        {"wss://0.0.0.0:443", "wss", "0.0.0.0", 443},
        {"tcp://[::1]:1883", "tcp", "::1", 1883},
        {"tcp://[::]:1", "tcp", "::", 1},
        {"tcp://[fe80::1%eth0]:1883", "tcp", "fe80::1%eth0", 1883},
        {"tcp://[::ffff:10.0.0.1]:65535", "tcp", "::ffff:10.0.0.1", 65535},
        {"tcp://127.0.0.1:0", "tcp", "127.0.0.1", 0},
        {"tcp://my_host-1:01883", "tcp", "my_host-1", 1883},
    };
    struct config c;
    char err[ERRLEN] = "";

    config_init(&c);
    for (size_t k = 0; k < sizeof(ok) / sizeof(ok[0]); k++) {
        struct config_url u;
        ck_assert_msg(config_url_parse(ok[k].url, &u, err, sizeof(err)) == 0, "%s: %s", ok[k].url,
                      err);
        ck_assert_str_eq(u.scheme, ok[k].scheme);
        ck_assert_str_eq(u.host, ok[k].host);
        ck_assert_uint_eq(u.port, ok[k].port);
        ck_assert_msg(config_set(&c, "listen", ok[k].url, err, sizeof(err)) == 0, "%s", err);
    }
    ck_assert_uint_eq(c.listen_count, sizeof(ok) / sizeof(ok[0]));
    ck_assert(c.listen_set);
    config_free(&c);
}
END_TEST

START_TEST(test_listen_urls_refused)
{
    static const struct {
        const char *url, *reason;
    } bad[] = {
        {"127.0.0.1:1883", "expected SCHEME://HOST:PORT"},
        {"", "expected SCHEME://HOST:PORT"},
        {"gopher://127.0.0.1:70",
         "unknown scheme 'gopher' (expected tcp, tls, ws, wss, http or https)"},
        {"TCP://127.0.0.1:1883",
         "unknown scheme 'TCP' (expected tcp, tls, ws, wss, http or https)"},
        {"://127.0.0.1:1883", "unknown scheme '' (expected tcp, tls, ws, wss, http or https)"},
        {"tcp://:1883", "missing host"},
        {"tcp://", "missing host"},
        {"tcp://[]:1883", "missing host"},
        {"tcp://127.0.0.1", "missing port"},
        {"tcp://127.0.0.1:", "missing port"},
        {"tcp://[::1]", "missing port"},
        {"tcp://[::1]1883", "missing port"},
        {"tcp://[::1:1883", "missing ']' after IPv6 address"},
        {"tcp://::1:1883", "an IPv6 address must be in brackets, e.g. tcp://[::1]:1883"},
        {"tcp://[localhost]:1883", "bad character 'l' in IPv6 address"},
        {"tcp://[1.2.3.4]:1883", "'[1.2.3.4]' is not an IPv6 address"},
        {"tcp://[fe80::1%et/h0]:1883", "bad character '/' in IPv6 zone"},
        {"tcp://127.0.0.1:65536", "port must be between 0 and 65535, got '65536'"},
        {"tcp://127.0.0.1:99999999999999999999", "port must be between 0 and 65535, "
                                                 "got '99999999999999999999'"},
        {"tcp://127.0.0.1:-1", "bad port '-1'"},
        {"tcp://127.0.0.1:http", "bad port 'http'"},
        {"ws://127.0.0.1:1884/mqtt", "bad port '1884/mqtt'"},
        {"tcp://user@host:1883", "bad character '@' in host"},
        {"tcp://host name:1883", "bad character ' ' in host"},
        {"tcp://a/b:1883", "bad character '/' in host"},
    };

    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        struct config_url u;
        char err[ERRLEN] = "", want[ERRLEN];
        ck_assert_msg(config_url_parse(bad[k].url, &u, err, sizeof(err)) == -1, "%s accepted",
                      bad[k].url);
        ck_assert_str_eq(err, bad[k].reason);
        snprintf(want, sizeof(want), "listen: bad URL '%s': %s", bad[k].url, bad[k].reason);
        expect_set_error("listen", bad[k].url, want);
    }
}
END_TEST

START_TEST(test_listen_host_too_long)
{
    char url[400], want[ERRLEN];

    strcpy(url, "tcp://");
    memset(url + 6, 'h', 256);
    strcpy(url + 6 + 256, ":1883");
    snprintf(want, sizeof(want), "listen: bad URL '%s': host longer than 255 characters", url);
    expect_set_error("listen", url, want);
}
END_TEST

/* ---- the command line ------------------------------------------------------ */

START_TEST(test_args_set_every_directive)
{
    struct config c;
    enum config_action act;
    char err[ERRLEN] = "";

    config_init(&c);
    ck_assert_msg(parse(&c, &act, err, "--listen", "tcp://0.0.0.0:1883", "--listen",
                        "tcp://[::1]:1884", "--mode", "cloud", "--db", "/var/lib/aviary/aviary.db",
                        "--max-client-id", "23", "--max-topic-length", "256", "--max-payload",
                        "1000", "--max-subscriptions", "7", "--keepalive-min", "5",
                        "--keepalive-max", "600", "--max-queued-messages", "50", "--max-inflight",
                        "10", "--log-level", "debug", "--syslog", "yes", "--daemonize", "yes",
                        "--pid-file", "/run/aviaryd.pid", NULL) == 0,
                  "%s", err);
    ck_assert_int_eq(act, CONFIG_RUN);
    check_every_directive(&c);
    ck_assert_ptr_null(c.config_file);
    config_free(&c);
}
END_TEST

START_TEST(test_args_equals_form)
{
    struct config c;
    enum config_action act;
    char err[ERRLEN] = "";

    config_init(&c);
    ck_assert_msg(parse(&c, &act, err, "--listen=tcp://0.0.0.0:1883", "--listen=tcp://[::1]:1884",
                        "--mode=cloud", "--db=/var/lib/aviary/aviary.db", "--max-client-id=23",
                        "--max-topic-length=256", "--max-payload=1000", "--max-subscriptions=7",
                        "--keepalive-min=5", "--keepalive-max=600", "--max-queued-messages=50",
                        "--max-inflight=10", "--log-level=debug", "--syslog=yes", "--daemonize=on",
                        "--pid-file=/run/aviaryd.pid", NULL) == 0,
                  "%s", err);
    check_every_directive(&c);
    ck_assert_msg(parse(&c, &act, err, "--db=/tmp/a=b", NULL) == 0, "%s", err);
    ck_assert_str_eq(c.db, "/tmp/a=b");
    config_free(&c);

    config_init(&c);
    ck_assert_int_eq(parse(&c, &act, err, "--db=", NULL), -1);
    ck_assert_str_eq(err, "db: empty path");
    ck_assert_int_eq(parse(&c, &act, err, "--mode=", NULL), -1);
    ck_assert_str_eq(err, "mode: expected desktop or cloud, got ''");
    config_free(&c);
}
END_TEST

START_TEST(test_args_override_the_file)
{
    struct config c;
    enum config_action act;
    struct temp t;
    char err[ERRLEN] = "";
    const char *text = "mode cloud\nmax-payload 1k\nlog-level warning\nsyslog yes\n";

    temp_write(&t, text, strlen(text));
    config_init(&c);
    ck_assert_msg(parse(&c, &act, err, "-c", t.path, "--max-payload", "2k", "--syslog=no", NULL) ==
                      0,
                  "%s", err);
    ck_assert_int_eq(c.mode, CONFIG_MODE_CLOUD);
    ck_assert_uint_eq(c.limits.max_payload, 2048);
    ck_assert_int_eq(c.log_level, LOG_LEVEL_WARNING);
    ck_assert(!c.syslog);
    ck_assert_str_eq(c.config_file, t.path);
    config_free(&c);
    temp_remove(&t);
}
END_TEST

START_TEST(test_args_c_is_loaded_first_wherever_it_stands)
{
    struct config c;
    enum config_action act;
    struct temp t;
    char err[ERRLEN] = "";
    const char *text = "mode desktop\nmax-inflight 5\nmax-payload 100\n";

    temp_write(&t, text, strlen(text));
    config_init(&c);
    ck_assert_msg(parse(&c, &act, err, "--mode", "cloud", "--max-inflight=9", "-c", t.path, NULL) ==
                      0,
                  "%s", err);
    ck_assert_int_eq(c.mode, CONFIG_MODE_CLOUD);
    ck_assert_uint_eq(c.limits.max_inflight, 9);
    ck_assert_uint_eq(c.limits.max_payload, 100);
    config_free(&c);
    temp_remove(&t);
}
END_TEST

START_TEST(test_args_c_forms)
{
    struct config c;
    enum config_action act;
    struct temp t;
    char err[ERRLEN] = "", joined[128], eq[128];
    const char *text = "max-inflight 5\n";

    temp_write(&t, text, strlen(text));
    snprintf(joined, sizeof(joined), "-c%s", t.path);
    snprintf(eq, sizeof(eq), "--config=%s", t.path);

    config_init(&c);
    ck_assert_msg(parse(&c, &act, err, joined, NULL) == 0, "%s", err);
    ck_assert_uint_eq(c.limits.max_inflight, 5);
    ck_assert_str_eq(c.config_file, t.path);
    config_free(&c);

    config_init(&c);
    ck_assert_msg(parse(&c, &act, err, "--config", t.path, NULL) == 0, "%s", err);
    ck_assert_uint_eq(c.limits.max_inflight, 5);
    config_free(&c);

    config_init(&c);
    ck_assert_msg(parse(&c, &act, err, eq, NULL) == 0, "%s", err);
    ck_assert_uint_eq(c.limits.max_inflight, 5);
    config_free(&c);

    config_init(&c);
    ck_assert_msg(parse(&c, &act, err, "-vc", t.path, NULL) == 0, "%s", err);
    ck_assert_uint_eq(c.limits.max_inflight, 5);
    ck_assert_int_eq(c.log_level, LOG_LEVEL_INFO);
    config_free(&c);

    config_init(&c);
    ck_assert_int_eq(parse(&c, &act, err, "-c", t.path, "-c", t.path, NULL), -1);
    ck_assert_str_eq(err, "-c given more than once");
    ck_assert_int_eq(parse(&c, &act, err, "-c", NULL), -1);
    ck_assert_str_eq(err, "-c: missing value");
    ck_assert_int_eq(parse(&c, &act, err, "--config", NULL), -1);
    ck_assert_str_eq(err, "--config: missing value");
    ck_assert_int_eq(parse(&c, &act, err, "-c", "", NULL), -1);
    ck_assert_str_eq(err, "-c: empty file name");
    config_free(&c);
    temp_remove(&t);
}
END_TEST

START_TEST(test_args_c_errors_name_the_file)
{
    struct config c;
    enum config_action act;
    struct temp t;
    char err[ERRLEN] = "", want[ERRLEN];
    const char *text = "mode cloud\nmax-payload 12x\n";

    config_init(&c);
    ck_assert_int_eq(parse(&c, &act, err, "-c", "/nonexistent/a.conf", NULL), -1);
    ck_assert_str_eq(err, "/nonexistent/a.conf: cannot open: No such file or directory");
    config_free(&c);

    temp_write(&t, text, strlen(text));
    config_init(&c);
    ck_assert_int_eq(parse(&c, &act, err, "-c", t.path, NULL), -1);
    snprintf(want, sizeof(want), "%s:2: max-payload: not a number: '12x'", t.path);
    ck_assert_str_eq(err, want);
    config_free(&c);
    temp_remove(&t);
}
END_TEST

START_TEST(test_args_listen_replaces_the_files_list)
{
    struct config c;
    enum config_action act;
    struct temp t;
    char err[ERRLEN] = "";
    const char *text = "listen tcp://10.0.0.1:1883\nlisten tcp://10.0.0.2:1883\n";

    temp_write(&t, text, strlen(text));

    config_init(&c);
    ck_assert_msg(parse(&c, &act, err, "--listen", "tcp://127.0.0.1:1", "-c", t.path,
                        "--listen=tcp://127.0.0.1:2", NULL) == 0,
                  "%s", err);
    ck_assert_uint_eq(c.listen_count, 2);
    ck_assert_str_eq(c.listen[0], "tcp://127.0.0.1:1");
    ck_assert_str_eq(c.listen[1], "tcp://127.0.0.1:2");
    ck_assert(c.listen_set);
    config_free(&c);

    /* without --listen the file's list stands */
    config_init(&c);
    ck_assert_msg(parse(&c, &act, err, "-c", t.path, "--mode", "cloud", NULL) == 0, "%s", err);
    ck_assert_uint_eq(c.listen_count, 2);
    ck_assert_str_eq(c.listen[0], "tcp://10.0.0.1:1883");
    ck_assert_str_eq(c.listen[1], "tcp://10.0.0.2:1883");
    config_free(&c);
    temp_remove(&t);

    /* only the command line */
    config_init(&c);
    ck_assert_msg(parse(&c, &act, err, "--listen", "tcp://127.0.0.1:1", NULL) == 0, "%s", err);
    ck_assert_uint_eq(c.listen_count, 1);
    ck_assert(c.listen_set);
    config_free(&c);
}
END_TEST

START_TEST(test_args_verbose)
{
    struct config c;
    enum config_action act;
    char err[ERRLEN] = "";

    config_init(&c);
    ck_assert_int_eq(parse(&c, &act, err, "-v", NULL), 0);
    ck_assert_int_eq(c.log_level, LOG_LEVEL_INFO);
    config_free(&c);

    config_init(&c);
    ck_assert_int_eq(parse(&c, &act, err, "-vv", NULL), 0);
    ck_assert_int_eq(c.log_level, LOG_LEVEL_DEBUG);
    config_free(&c);

    config_init(&c);
    ck_assert_int_eq(parse(&c, &act, err, "-v", "--mode", "cloud", "-v", NULL), 0);
    ck_assert_int_eq(c.log_level, LOG_LEVEL_DEBUG);
    config_free(&c);

    config_init(&c);
    ck_assert_int_eq(parse(&c, &act, err, "-vvvv", NULL), 0);
    ck_assert_int_eq(c.log_level, LOG_LEVEL_DEBUG);
    config_free(&c);

    /* -v raises, never lowers */
    config_init(&c);
    ck_assert_int_eq(parse(&c, &act, err, "--log-level", "debug", "-v", NULL), 0);
    ck_assert_int_eq(c.log_level, LOG_LEVEL_DEBUG);
    config_free(&c);

    /* options apply in order: a later --log-level wins */
    config_init(&c);
    ck_assert_int_eq(parse(&c, &act, err, "-v", "--log-level=error", NULL), 0);
    ck_assert_int_eq(c.log_level, LOG_LEVEL_ERROR);
    config_free(&c);

    config_init(&c);
    ck_assert_int_eq(parse(&c, &act, err, "--log-level=error", "-v", NULL), 0);
    ck_assert_int_eq(c.log_level, LOG_LEVEL_INFO);
    config_free(&c);
}
END_TEST

START_TEST(test_args_daemonize_forms)
{
    static const struct {
        const char *a, *b;
        bool want;
        enum config_mode mode;
    } cases[] = {
        {"-d", NULL, true, CONFIG_MODE_DESKTOP},
        {"--daemonize", NULL, true, CONFIG_MODE_DESKTOP},
        {"--daemonize", "yes", true, CONFIG_MODE_DESKTOP},
        {"--daemonize", "no", false, CONFIG_MODE_DESKTOP},
        {"--daemonize=no", NULL, false, CONFIG_MODE_DESKTOP},
        {"--daemonize=yes", NULL, true, CONFIG_MODE_DESKTOP},
        {"--daemonize", "--mode=cloud", true, CONFIG_MODE_CLOUD},
        {"-dv", NULL, true, CONFIG_MODE_DESKTOP},
    };

    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        struct config c;
        enum config_action act;
        char err[ERRLEN] = "";
        config_init(&c);
        ck_assert_msg(parse(&c, &act, err, cases[k].a, cases[k].b, NULL) == 0, "%s", err);
        ck_assert_msg(c.daemonize == cases[k].want, "case %zu", k);
        ck_assert_int_eq(c.mode, cases[k].mode);
        config_free(&c);
    }
}
END_TEST

START_TEST(test_args_boolean_refuses_a_bad_word)
{
    struct config c;
    enum config_action act;
    char err[ERRLEN] = "";

    config_init(&c);
    ck_assert_int_eq(parse(&c, &act, err, "--syslog", "maybe", NULL), -1);
    ck_assert_str_eq(err, "syslog: expected yes or no, got 'maybe'");
    ck_assert_int_eq(parse(&c, &act, err, "--daemonize=", NULL), -1);
    ck_assert_str_eq(err, "daemonize: expected yes or no, got ''");
    config_free(&c);
}
END_TEST

START_TEST(test_args_unknown_options)
{
    static const struct {
        const char *arg, *want;
    } cases[] = {
        {"-x", "unknown option '-x'"},
        {"-vx", "unknown option '-x'"},
        {"--foo", "unknown option '--foo'"},
        {"--foo=bar", "unknown option '--foo'"},
        {"--Mode=cloud", "unknown option '--Mode'; did you mean --mode?"},
        {"---mode", "unknown option '---mode'; did you mean --mode?"},
        {"--", NULL},
        {"foo", "unexpected argument 'foo'"},
        {"-", "unexpected argument '-'"},
        {"--help=yes", "--help: takes no value"},
        {"--version=1", "--version: takes no value"},
    };

    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        struct config c;
        enum config_action act;
        char err[ERRLEN] = "";
        config_init(&c);
        if (cases[k].want == NULL) {
            ck_assert_int_eq(parse(&c, &act, err, cases[k].arg, NULL), 0);
        } else {
            ck_assert_msg(parse(&c, &act, err, cases[k].arg, NULL) == -1, "%s accepted",
                          cases[k].arg);
            ck_assert_str_eq(err, cases[k].want);
        }
        config_free(&c);
    }
}
END_TEST

START_TEST(test_args_nothing_after_double_dash)
{
    struct config c;
    enum config_action act;
    char err[ERRLEN] = "";

    config_init(&c);
    ck_assert_int_eq(parse(&c, &act, err, "--", "--mode", NULL), -1);
    ck_assert_str_eq(err, "unexpected argument '--mode'");
    config_free(&c);
}
END_TEST

START_TEST(test_args_missing_and_bad_values)
{
    struct config c;
    enum config_action act;
    char err[ERRLEN] = "";

    config_init(&c);
    ck_assert_int_eq(parse(&c, &act, err, "--mode", NULL), -1);
    ck_assert_str_eq(err, "--mode: missing value");
    ck_assert_int_eq(parse(&c, &act, err, "--listen", NULL), -1);
    ck_assert_str_eq(err, "--listen: missing value");
    ck_assert_int_eq(parse(&c, &act, err, "--max-payload", "12x", NULL), -1);
    ck_assert_str_eq(err, "max-payload: not a number: '12x'");
    ck_assert_int_eq(parse(&c, &act, err, "--mode", "x", NULL), -1);
    ck_assert_str_eq(err, "mode: expected desktop or cloud, got 'x'");
    ck_assert_int_eq(parse(&c, &act, err, "--listen", "ftp://a:1", NULL), -1);
    ck_assert_str_eq(err, "listen: bad URL 'ftp://a:1': unknown scheme 'ftp' "
                          "(expected tcp, tls, ws, wss, http or https)");
    /* a value that looks like an option is still the value, as with getopt */
    ck_assert_int_eq(parse(&c, &act, err, "--pid-file", "-d", NULL), 0);
    ck_assert_str_eq(c.pid_file, "-d");
    ck_assert(!c.daemonize);
    config_free(&c);
}
END_TEST

START_TEST(test_args_help_and_version)
{
    static const struct {
        const char *a, *b;
        enum config_action want;
    } cases[] = {
        {"-h", NULL, CONFIG_HELP},
        {"--help", NULL, CONFIG_HELP},
        {"-V", NULL, CONFIG_VERSION},
        {"--version", NULL, CONFIG_VERSION},
        {"-vh", NULL, CONFIG_HELP},
        {"-h", "-V", CONFIG_HELP},
        {"-V", "-h", CONFIG_VERSION},
        /* help does not read the file, so a broken one cannot hide it */
        {"-c/nonexistent/a.conf", "-h", CONFIG_HELP},
        {"--mode=nonsense", "--version", CONFIG_VERSION},
        {"--mode=cloud", NULL, CONFIG_RUN},
    };

    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        struct config c;
        enum config_action act = (enum config_action) - 1;
        char err[ERRLEN] = "";
        config_init(&c);
        ck_assert_msg(parse(&c, &act, err, cases[k].a, cases[k].b, NULL) == 0, "%s", err);
        ck_assert_int_eq(act, cases[k].want);
        config_free(&c);
    }
}
END_TEST

START_TEST(test_args_unknown_option_beats_help)
{
    struct config c;
    enum config_action act;
    char err[ERRLEN] = "";

    config_init(&c);
    ck_assert_int_eq(parse(&c, &act, err, "-h", "--bogus", NULL), -1);
    ck_assert_str_eq(err, "unknown option '--bogus'");
    config_free(&c);
}
END_TEST

START_TEST(test_args_empty_command_line)
{
    struct config c;
    enum config_action act = CONFIG_HELP;
    char err[ERRLEN] = "";
    char *argv[] = {(char *)"aviaryd", NULL};

    config_init(&c);
    ck_assert_int_eq(config_parse_args(&c, 1, argv, &act, err, sizeof(err)), 0);
    ck_assert_int_eq(act, CONFIG_RUN);
    ck_assert(!c.listen_set);
    ck_assert_int_eq(config_parse_args(&c, 0, argv, &act, err, sizeof(err)), 0);
    config_free(&c);
}
END_TEST

START_TEST(test_args_repeated_calls_start_fresh)
{
    for (int round = 0; round < 3; round++) {
        struct config c;
        enum config_action act;
        char err[ERRLEN] = "";
        config_init(&c);
        ck_assert_int_eq(parse(&c, &act, err, "-v", "--max-inflight", "7", "-d", NULL), 0);
        ck_assert_int_eq(c.log_level, LOG_LEVEL_INFO);
        ck_assert_uint_eq(c.limits.max_inflight, 7);
        ck_assert(c.daemonize);
        ck_assert_int_eq(parse(&c, &act, err, "-x", NULL), -1);
        config_free(&c);
    }
}
END_TEST

/* ---- validation, usage and the sample ------------------------------------------ */

START_TEST(test_validate_keepalive_order)
{
    struct config c;
    char err[ERRLEN] = "";

    config_init(&c);
    ck_assert_int_eq(config_set(&c, "keepalive-min", "600", err, sizeof(err)), 0);
    ck_assert_int_eq(config_validate(&c, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "keepalive-min (600) is greater than keepalive-max (300)");
    ck_assert_int_eq(config_set(&c, "keepalive-max", "600", err, sizeof(err)), 0);
    ck_assert_int_eq(config_validate(&c, err, sizeof(err)), 0);
    config_free(&c);
}
END_TEST

START_TEST(test_validate_duplicate_listener)
{
    struct config c;
    char err[ERRLEN] = "";

    config_init(&c);
    ck_assert_int_eq(config_set(&c, "listen", "tcp://127.0.0.1:1883", err, sizeof(err)), 0);
    ck_assert_int_eq(config_set(&c, "listen", "tcp://127.0.0.1:1884", err, sizeof(err)), 0);
    ck_assert_int_eq(config_validate(&c, err, sizeof(err)), 0);
    ck_assert_int_eq(config_set(&c, "listen", "tcp://127.0.0.1:1883", err, sizeof(err)), 0);
    ck_assert_int_eq(config_validate(&c, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "listen: 'tcp://127.0.0.1:1883' given twice");
    config_free(&c);
}
END_TEST

START_TEST(test_max_outbound_bytes_takes_suffixes_and_a_floor)
{
    struct config c;
    char err[ERRLEN] = "";

    config_init(&c);
    ck_assert_uint_eq(c.limits.max_outbound_bytes, 8u * 1024 * 1024);
    ck_assert_int_eq(config_set(&c, "max-outbound-bytes", "64k", err, sizeof(err)), 0);
    ck_assert_uint_eq(c.limits.max_outbound_bytes, 65536);
    ck_assert_int_eq(config_set(&c, "max-outbound-bytes", "512", err, sizeof(err)), -1);
    ck_assert_str_eq(err, "max-outbound-bytes: must be between 1024 and 1073741824, got '512'");
    config_free(&c);
}
END_TEST

START_TEST(test_max_memory_takes_a_g_suffix_and_defaults_to_none)
{
    struct config c;
    char err[ERRLEN] = "";

    config_init(&c);
    ck_assert_uint_eq(c.max_memory, 0);
    ck_assert_int_eq(config_set(&c, "max-memory", "2g", err, sizeof(err)), 0);
    ck_assert_uint_eq(c.max_memory, 2ull * 1024 * 1024 * 1024);
    ck_assert_int_eq(config_set(&c, "max-memory", "512m", err, sizeof(err)), 0);
    ck_assert_uint_eq(c.max_memory, 512ull * 1024 * 1024);
    ck_assert_int_eq(config_set(&c, "max-memory", "2048g", err, sizeof(err)), -1);
    ck_assert_str_eq(err, "max-memory: must be between 0 and 1099511627776, got '2048g'");
    config_free(&c);
}
END_TEST

START_TEST(test_validate_port_zero_may_repeat)
{
    struct config c;
    char err[ERRLEN] = "";

    /* Port 0 means "any free port": two of them are two different listeners. */
    config_init(&c);
    ck_assert_int_eq(config_set(&c, "listen", "tcp://127.0.0.1:0", err, sizeof(err)), 0);
    ck_assert_int_eq(config_set(&c, "listen", "tcp://127.0.0.1:0", err, sizeof(err)), 0);
    ck_assert_int_eq(config_validate(&c, err, sizeof(err)), 0);
    config_free(&c);
}
END_TEST

/* The text config_usage() or config_dump() writes. The caller frees it. */
__attribute__((noinline)) static char *capture(void (*fn)(FILE *))
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);

    ck_assert_ptr_nonnull(out);
    fn(out);
    fclose(out);
    return text;
}

static void usage_of_aviaryd(FILE *out)
{
    config_usage(out, "aviaryd");
}

/*
 * -h comes from the table: every directive of the dump is in it as
 * "--NAME ARG", with its range (numbers) and its default after it, and each
 * placeholder is a value the parser takes (issue 15, point 14: -h printed
 * "none|optional|require", cut off, and the parser refused it).
 */
START_TEST(test_usage_lists_every_directive_with_its_default)
{
    char *text = capture(usage_of_aviaryd), *dump = capture(config_dump);
    size_t seen = 0;

    ck_assert_ptr_nonnull(strstr(text, "Usage: aviaryd "));
    ck_assert_ptr_nonnull(strstr(text, "-c, --config FILE"));
    ck_assert_ptr_nonnull(strstr(text, "\n  -v, --verbose "));
    ck_assert_ptr_nonnull(strstr(text, "\n  -d "));
    ck_assert_ptr_nonnull(strstr(text, "-h, --help"));
    ck_assert_ptr_nonnull(strstr(text, "-V, --version"));
    for (char *line = strtok(dump, "\n"); line; line = strtok(NULL, "\n")) {
        char name[64], kind[16], arg[64], min[32], max[32], suffixes[4], limit[4], def[256];
        char want[320], *at, *next;
        if (line[0] == '#')
            continue;
        ck_assert_int_eq(sscanf(line,
                                "%63[^\t]\t%15[^\t]\t%63[^\t]\t%31[^\t]\t%31[^\t]\t%3[^\t]"
                                "\t%3[^\t]\t%255[^\n]",
                                name, kind, arg, min, max, suffixes, limit, def),
                         8);
        seen++;
        snprintf(want, sizeof(want), "\n  --%s %s", name, arg);
        at = strstr(text, want);
        ck_assert_msg(at != NULL, "-h lacks %s", want + 1);
        /* its entry runs to the next option */
        next = strstr(at + 1, "\n  --");
        if (next)
            *next = '\0';
        if (strcmp(kind, "number") == 0) {
            snprintf(want, sizeof(want), "(%s..%s", min, max);
            ck_assert_msg(strstr(at, want) != NULL, "-h: %s lacks %s", name, want);
            ck_assert_msg(!strstr(at, "suffixes") == (strcmp(suffixes, "no") == 0),
                          "-h: %s and suffixes=%s", name, suffixes);
        }
        if (strcmp(kind, "number") == 0 || strcmp(kind, "choice") == 0 ||
            strcmp(kind, "bool") == 0) {
            snprintf(want, sizeof(want), "default: %s)", def);
            ck_assert_msg(strstr(at, want) != NULL, "-h: %s lacks %s", name, want);
        }
        if (strcmp(kind, "choice") == 0) {
            for (char *v = arg, *bar; v; v = bar ? bar + 1 : NULL) {
                struct config c;
                char err[ERRLEN], value[64];
                bar = strchr(v, '|');
                snprintf(value, sizeof(value), "%.*s", bar ? (int)(bar - v) : (int)strlen(v), v);
                config_init(&c);
                ck_assert_msg(config_set(&c, name, value, err, sizeof(err)) == 0, "%s", err);
                config_free(&c);
            }
        }
        if (next)
            *next = '\n';
    }
    ck_assert_uint_gt(seen, limits_count());
    for (const char *p = text; *p != '\0';) {
        const char *eol = strchr(p, '\n');
        ck_assert_ptr_nonnull(eol);
        /* A word longer than the room (a deep --prefix's database path) cannot be wrapped. */
        size_t lead = strspn(p, " ");
        bool one_word = memchr(p + lead, ' ', (size_t)(eol - p) - lead) == NULL;
        ck_assert_msg(eol - p < 80 || one_word, "usage line longer than 79 columns: %.*s",
                      (int)(eol - p), p);
        p = eol + 1;
    }
    free(text);
    free(dump);
}
END_TEST

/* -h gives the real defaults of both modes (issue 15, point 15). */
START_TEST(test_usage_shows_the_defaults_of_both_modes)
{
    char *text = capture(usage_of_aviaryd);
    size_t n;
    const char *const *urls;

    ck_assert_ptr_nonnull(strstr(text, AVIARY_DEFAULT_DB));
    for (int mode = 0; mode < 2; mode++) {
        urls = config_default_listeners((enum config_mode)mode, true, &n);
        for (size_t i = 0; i < n; i++)
            ck_assert_msg(strstr(text, urls[i]) != NULL, "-h lacks %s", urls[i]);
    }
    urls = config_default_listeners(CONFIG_MODE_DESKTOP, false, &n);
    ck_assert_uint_eq(n, 3);
    ck_assert_str_eq(urls[0], "tcp://127.0.0.1:1883");
    ck_assert_str_eq(urls[1], "ws://127.0.0.1:1884");
    ck_assert_str_eq(urls[2], "http://127.0.0.1:1885");
    free(text);
}
END_TEST

START_TEST(test_db_path_per_mode)
{
    struct config c;
    char err[ERRLEN];

    config_init(&c);
    ck_assert_ptr_null(config_db_path(&c));
    ck_assert_int_eq(config_set(&c, "mode", "cloud", err, sizeof(err)), 0);
    ck_assert_str_eq(config_db_path(&c), AVIARY_DEFAULT_DB);
    ck_assert_int_eq(config_set(&c, "db", "/tmp/x.db", err, sizeof(err)), 0);
    ck_assert_str_eq(config_db_path(&c), "/tmp/x.db");
    ck_assert(!c.create_db);
    ck_assert_int_eq(config_set(&c, "create-db", "yes", err, sizeof(err)), 0);
    ck_assert(c.create_db);
    config_free(&c);
}
END_TEST

/* What -h once showed, and a common slip, are taken (issue 15, point 14). */
START_TEST(test_choice_aliases)
{
    struct config c;
    char err[ERRLEN];

    config_init(&c);
    ck_assert_int_eq(config_set(&c, "tls-client-cert", "require", err, sizeof(err)), 0);
    ck_assert_int_eq(c.tls_client_cert, CONFIG_CLIENT_CERT_REQUIRED);
    ck_assert_int_eq(config_set(&c, "tls-client-cert", "optional", err, sizeof(err)), 0);
    ck_assert_int_eq(c.tls_client_cert, CONFIG_CLIENT_CERT_OPTIONAL);
    ck_assert_int_eq(config_set(&c, "log-level", "warn", err, sizeof(err)), 0);
    ck_assert_int_eq(c.log_level, LOG_LEVEL_WARNING);
    ck_assert_int_eq(config_set(&c, "tls-client-cert", "requir", err, sizeof(err)), -1);
    ck_assert_str_eq(err, "tls-client-cert: expected none, optional or required, got 'requir'");
    config_free(&c);
}
END_TEST

/* Mosquitto habits get the aviary spelling (issue 15, point 8). */
START_TEST(test_mosquitto_habits_are_answered)
{
    static const struct {
        const char *args[3], *want;
    } cases[] = {
        {{"-p", "1883"},
         "unknown option '-p' (mosquitto's port); aviaryd says --listen tcp://127.0.0.1:1883"},
        {{"-p8000"},
         "unknown option '-p' (mosquitto's port); aviaryd says --listen tcp://127.0.0.1:8000"},
        {{"--port", "1884"},
         "unknown option '--port': that is mosquitto's; aviary says --listen "
         "tcp://127.0.0.1:1884"},
        {{"--daemon"},
         "unknown option '--daemon': that is mosquitto's; aviary says --daemonize "
         "(or -d)"},
        {{"--config-file", "m.conf"},
         "unknown option '--config-file' (mosquitto's); aviaryd says -c FILE or --config FILE"},
        {{"--max-paylod", "1"}, "unknown option '--max-paylod'; did you mean --max-payload?"},
        {{"--max_queued_messages", "1"},
         "unknown option '--max_queued_messages'; did you mean --max-queued-messages?"},
        {{"--lsten", "tcp://127.0.0.1:0"}, "unknown option '--lsten'; did you mean --listen?"},
    };

    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        struct config c;
        enum config_action act;
        char err[ERRLEN] = "";
        config_init(&c);
        ck_assert_int_eq(parse(&c, &act, err, cases[k].args[0], cases[k].args[1], NULL), -1);
        ck_assert_str_eq(err, cases[k].want);
        config_free(&c);
    }
}
END_TEST

START_TEST(test_mosquitto_conf_is_answered)
{
    static const struct {
        const char *line, *want;
    } cases[] = {
        {"listener 1883\n", "unknown directive 'listener': that is mosquitto's; aviary says "
                            "listen tcp://0.0.0.0:1883"},
        {"listener 8883 127.0.0.1\n", "unknown directive 'listener': that is mosquitto's; "
                                      "aviary says listen tcp://127.0.0.1:8883"},
        {"port 1885\n",
         "unknown directive 'port': that is mosquitto's; aviary says listen tcp://0.0.0.0:1885"},
        {"bind_address ::1\n", "unknown directive 'bind_address': that is mosquitto's; aviary "
                               "says listen tcp://[::1]:1883"},
        {"allow_anonymous false\n", NULL},
        {"password_file /etc/mosquitto/passwd\n", NULL},
        {"persistence true\n", NULL},
        {"persistence_location /var/lib/mosquitto/\n", NULL},
        {"max_inflight_messages 10\n", "unknown directive 'max_inflight_messages': that is "
                                       "mosquitto's; aviary says max-inflight N"},
        {"pid_file /run/m.pid\n", "unknown directive 'pid_file'; did you mean pid-file?"},
        {"max-paylod 1k\n", "unknown directive 'max-paylod'; did you mean max-payload?"},
        {"frobnicate 1\n", "unknown directive 'frobnicate'"},
    };

    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        struct config c;
        struct temp t;
        char err[ERRLEN], want[ERRLEN];
        temp_write(&t, cases[k].line, strlen(cases[k].line));
        config_init(&c);
        ck_assert_int_eq(config_load_file(&c, t.path, err, sizeof(err)), -1);
        if (cases[k].want) {
            snprintf(want, sizeof(want), "%s:1: %s", t.path, cases[k].want);
            ck_assert_str_eq(err, want);
        } else {
            ck_assert_msg(strstr(err, "that is mosquitto's; aviary says ") != NULL, "%s: %s",
                          cases[k].line, err);
        }
        config_free(&c);
        temp_remove(&t);
    }
}
END_TEST

START_TEST(test_verbose_and_dump_directives)
{
    struct config c;
    enum config_action act;
    char err[ERRLEN] = "";

    config_init(&c);
    ck_assert_int_eq(parse(&c, &act, err, "--verbose", "--verbose", NULL), 0);
    ck_assert_int_eq(act, CONFIG_RUN);
    ck_assert_int_eq(c.log_level, LOG_LEVEL_DEBUG);
    config_free(&c);
    config_init(&c);
    ck_assert_int_eq(parse(&c, &act, err, "--dump-directives", NULL), 0);
    ck_assert_int_eq(act, CONFIG_DUMP);
    config_free(&c);
}
END_TEST

START_TEST(test_sample_configuration_loads)
{
    const char *dir = getenv("top_srcdir");
    struct config c, defaults;
    char path[4096], err[ERRLEN] = "";

    if (dir == NULL)
        dir = getenv("srcdir");
    if (dir == NULL)
        dir = ".";
    snprintf(path, sizeof(path), "%s/etc/aviary.conf", dir);
    config_init(&c);
    config_init(&defaults);
    ck_assert_msg(config_load_file(&c, path, err, sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(config_validate(&c, err, sizeof(err)), 0);
    /* the sample documents the defaults; loading it changes nothing but the
     * mode: installed as aviary.conf, it configures the cloud service */
    ck_assert(!c.listen_set);
    ck_assert_int_eq(c.mode, CONFIG_MODE_CLOUD);
    ck_assert_int_eq(c.log_level, defaults.log_level);
    ck_assert_ptr_null(c.db);
    ck_assert_ptr_null(c.pid_file);
    ck_assert(memcmp(&c.limits, &defaults.limits, sizeof(c.limits)) == 0);
    config_free(&c);
    config_free(&defaults);
}
END_TEST

START_TEST(test_sample_configuration_commented_values_are_valid)
{
    /* every "#directive value" line of the sample, uncommented, must be accepted */
    const char *dir = getenv("top_srcdir");
    char path[4096], line[1024], err[ERRLEN] = "";
    FILE *f;
    int checked = 0;

    if (dir == NULL)
        dir = getenv("srcdir");
    if (dir == NULL)
        dir = ".";
    snprintf(path, sizeof(path), "%s/etc/aviary.conf", dir);
    f = fopen(path, "r");
    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    while (fgets(line, sizeof(line), f) != NULL) {
        struct config c;
        char *text;
        if (line[0] != '#' || line[1] < 'a' || line[1] > 'z')
            continue;
        text = line + 1;
        config_init(&c);
        ck_assert_msg(load_text(&c, text, err, NULL) == 0, "%s: %s", text, err);
        config_free(&c);
        checked++;
    }
    fclose(f);
    ck_assert_int_ge(checked, 14);
}
END_TEST

/* ---- limits by name (plans and instances) ------------------------------ */

START_TEST(test_limit_names_are_the_limit_directives)
{
    size_t n = limits_count();
    bool saw_payload = false, saw_connections = false;

    ck_assert_uint_ge(n, 13);
    for (size_t i = 0; i < n; i++) {
        const char *name = limits_name(i);
        ck_assert_ptr_nonnull(name);
        ck_assert_str_ne(name, "listen");
        ck_assert_str_ne(name, "log-level");
        saw_payload |= strcmp(name, "max-payload") == 0;
        saw_connections |= strcmp(name, "max-connections") == 0;
    }
    ck_assert(saw_payload && saw_connections);
    ck_assert_ptr_null(limits_name(n));
}
END_TEST

START_TEST(test_limit_parse_set_get)
{
    struct limits l;
    unsigned long long v;
    char err[ERRLEN];

    limits_init(&l);
    ck_assert_int_eq(limits_parse("max-payload", "2k", &v, err, sizeof(err)), 0);
    ck_assert_uint_eq(v, 2048);
    ck_assert_int_eq(limits_set(&l, "max-payload", v), 0);
    ck_assert_uint_eq(l.max_payload, 2048);
    ck_assert_int_eq(limits_get(&l, "max-payload"), 2048);

    ck_assert_int_eq(limits_parse("idle-timeout", "90", &v, err, sizeof(err)), 0);
    ck_assert_int_eq(limits_set(&l, "idle-timeout", v), 0);
    ck_assert_uint_eq(l.idle_timeout, 90); /* an unsigned field */
    ck_assert_int_eq(limits_get(&l, "idle-timeout"), 90);
    ck_assert_int_eq(limits_get(&l, "max-connections"), 0);
}
END_TEST

START_TEST(test_limit_errors)
{
    struct limits l;
    unsigned long long v;
    char err[ERRLEN];

    limits_init(&l);
    ck_assert_int_eq(limits_parse("max-payloads", "1", &v, err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "unknown limit 'max-payloads'"));
    ck_assert_ptr_nonnull(strstr(err, "max-connections"));
    /* Not every directive is a limit. */
    ck_assert_int_eq(limits_parse("log-level", "debug", &v, err, sizeof(err)), -1);
    ck_assert_int_eq(limits_set(&l, "listen", 1), -1);
    ck_assert_int_eq(limits_get(&l, "db"), -1);
    ck_assert_int_eq(limits_parse("max-inflight", "0", &v, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "max-inflight: must be between 1 and 65535, got '0'");
    ck_assert_int_eq(limits_parse("max-retained", "x", &v, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "max-retained: not a number: 'x'");
}
END_TEST

/* Options arrive as "--max-payload=2k": the name is found without its value. */
START_TEST(test_limits_find_at_and_names)
{
    char names[512], small[12];

    ck_assert_ptr_eq(limits_find("max-payload=2k", strlen("max-payload")), limits_at(2));
    ck_assert_str_eq(limits_at(2)->name, "max-payload");
    ck_assert(limits_at(2)->suffixes);
    ck_assert_ptr_null(limits_find("max-payload", 3));
    ck_assert_ptr_null(limits_find("db", 2));
    ck_assert_ptr_null(limits_at(limits_count()));
    limits_names(names, sizeof(names));
    ck_assert(strncmp(names, "max-client-id, max-topic-length, ", 33) == 0);
    ck_assert_ptr_nonnull(strstr(names, ", max-instance-bytes"));
    limits_names(small, sizeof(small));
    ck_assert_str_eq(small, "max-client-"); /* truncated, still terminated */
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc;

    tc = tcase_create("defaults");
    tcase_add_test(tc, test_defaults_are_desktop_mode_with_spec_limits);
    tcase_add_test(tc, test_free_then_init_reuses_the_struct);
    tcase_add_test(tc, test_cluster_takes_a_redis_url_and_refuses_others);
    suite_add_tcase(s, tc);

    tc = tcase_create("file");
    tcase_add_test(tc, test_file_sets_every_directive);
    tcase_add_test(tc, test_file_comments_blank_lines_and_whitespace);
    tcase_add_test(tc, test_file_quoted_values_and_escapes);
    tcase_add_test(tc, test_file_crlf_line_endings);
    tcase_add_test(tc, test_file_no_final_newline);
    tcase_add_test(tc, test_file_empty_is_defaults);
    tcase_add_test(tc, test_file_last_value_wins_and_listen_accumulates);
    tcase_add_test(tc, test_file_boolean_without_value_means_yes);
    tcase_add_test(tc, test_file_error_unknown_directive);
    tcase_add_test(tc, test_file_error_not_a_number);
    tcase_add_test(tc, test_file_error_mode);
    tcase_add_test(tc, test_file_error_missing_value);
    tcase_add_test(tc, test_file_error_unterminated_quote);
    tcase_add_test(tc, test_file_error_bad_escape_and_text_after_quote);
    tcase_add_test(tc, test_file_error_empty_quoted_path);
    tcase_add_test(tc, test_file_error_nul_byte);
    tcase_add_test(tc, test_file_error_cannot_open);
    tcase_add_test(tc, test_file_error_directory_cannot_be_read);
    tcase_add_test(tc, test_file_error_null_err_is_safe);
    tcase_add_test(tc, test_file_error_long_line);
    suite_add_tcase(s, tc);

    tc = tcase_create("directives");
    tcase_add_loop_test(tc, test_numbers_accept_their_bounds, 0,
                        (int)(sizeof(bounds) / sizeof(bounds[0])));
    tcase_add_loop_test(tc, test_numbers_refuse_outside_bounds, 0,
                        (int)(sizeof(bounds) / sizeof(bounds[0])));
    tcase_add_loop_test(tc, test_numbers_refuse_garbage, 0,
                        (int)(sizeof(bounds) / sizeof(bounds[0])));
    tcase_add_test(tc, test_max_payload_size_suffixes);
    tcase_add_test(tc, test_suffixes_only_for_max_payload);
    tcase_add_test(tc, test_boolean_forms);
    tcase_add_test(tc, test_only_booleans_may_omit_the_value);
    tcase_add_test(tc, test_log_levels);
    tcase_add_test(tc, test_mode_values);
    tcase_add_test(tc, test_unknown_directive);
    tcase_add_test(tc, test_listen_urls_accepted);
    tcase_add_test(tc, test_listen_urls_refused);
    tcase_add_test(tc, test_listen_host_too_long);
    suite_add_tcase(s, tc);

    tc = tcase_create("args");
    tcase_add_test(tc, test_args_set_every_directive);
    tcase_add_test(tc, test_args_equals_form);
    tcase_add_test(tc, test_args_override_the_file);
    tcase_add_test(tc, test_args_c_is_loaded_first_wherever_it_stands);
    tcase_add_test(tc, test_args_c_forms);
    tcase_add_test(tc, test_args_c_errors_name_the_file);
    tcase_add_test(tc, test_args_listen_replaces_the_files_list);
    tcase_add_test(tc, test_args_verbose);
    tcase_add_test(tc, test_args_daemonize_forms);
    tcase_add_test(tc, test_args_boolean_refuses_a_bad_word);
    tcase_add_test(tc, test_args_unknown_options);
    tcase_add_test(tc, test_args_nothing_after_double_dash);
    tcase_add_test(tc, test_args_missing_and_bad_values);
    tcase_add_test(tc, test_args_help_and_version);
    tcase_add_test(tc, test_args_unknown_option_beats_help);
    tcase_add_test(tc, test_args_empty_command_line);
    tcase_add_test(tc, test_args_repeated_calls_start_fresh);
    suite_add_tcase(s, tc);

    tc = tcase_create("limits by name");
    tcase_add_test(tc, test_limit_names_are_the_limit_directives);
    tcase_add_test(tc, test_limit_parse_set_get);
    tcase_add_test(tc, test_limit_errors);
    tcase_add_test(tc, test_limits_find_at_and_names);
    suite_add_tcase(s, tc);

    tc = tcase_create("validate-usage-sample");
    tcase_add_test(tc, test_validate_keepalive_order);
    tcase_add_test(tc, test_validate_duplicate_listener);
    tcase_add_test(tc, test_validate_port_zero_may_repeat);
    tcase_add_test(tc, test_max_outbound_bytes_takes_suffixes_and_a_floor);
    tcase_add_test(tc, test_max_memory_takes_a_g_suffix_and_defaults_to_none);
    tcase_add_test(tc, test_usage_lists_every_directive_with_its_default);
    tcase_add_test(tc, test_usage_shows_the_defaults_of_both_modes);
    tcase_add_test(tc, test_db_path_per_mode);
    tcase_add_test(tc, test_choice_aliases);
    tcase_add_test(tc, test_mosquitto_habits_are_answered);
    tcase_add_test(tc, test_mosquitto_conf_is_answered);
    tcase_add_test(tc, test_verbose_and_dump_directives);
    tcase_add_test(tc, test_sample_configuration_loads);
    tcase_add_test(tc, test_sample_configuration_commented_values_are_valid);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return check_tap_run(config_suite());
}
