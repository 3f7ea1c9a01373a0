/*
 * aviaryctl — the administration program of aviary's cloud mode: instances,
 * plans and tokens in the database that aviaryd follows.
 *
 * Thin on purpose: it parses the command line, checks what can be checked
 * without the database (limits, durations, topic filters), calls the store
 * and prints. Every error is one line on standard error starting with
 * "aviaryctl: "; the exit status says what kind (see aviaryctl(1)).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <libgen.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "store/keep.h"
#include "store/shared.h"
#include "store/store.h"
#include "tenancy/manage.h"
#include "tenancy/manage_json.h"
#include "util/config.h"
#include "util/limits.h"
#include "util/log.h"
#include "util/passwd.h"
#include "util/redis_url.h"

enum ctl_exit {
    CTL_EXIT_OK = 0,
    CTL_EXIT_USAGE = 1, /* a bad command line, or the database refused (unknown name...) */
    CTL_EXIT_DB = 2,    /* the database cannot be opened, read or written */
    CTL_EXIT_NOMEM = 3,
};

/* Room for an argument or a name quoted in a message. */
#define CTL_SHOWN 72

/* The command options; each command accepts some of them. */
enum ctl_option {
    OPT_PLAN = 1u << 0,
    OPT_LABEL = 1u << 1,
    OPT_TTL = 1u << 2,
    OPT_CLIENT_ID = 1u << 3,
    OPT_PUB = 1u << 4,
    OPT_SUB = 1u << 5,
    OPT_DENY_PUB = 1u << 6,
    OPT_DENY_SUB = 1u << 7,
    /* flags: they take no value */
    OPT_ALLOW_ACTION = 1u << 8,
    OPT_YES = 1u << 9,
    OPT_NO_LABEL = 1u << 10,
    OPT_NO_EXPIRY = 1u << 11,
    OPT_NO_CLIENT_ID = 1u << 12,
    OPT_NO_ALLOW_ACTION = 1u << 13,
    OPT_NO_PUB = 1u << 14,
    OPT_NO_SUB = 1u << 15,
    OPT_NO_DENY_PUB = 1u << 16,
    OPT_NO_DENY_SUB = 1u << 17,
    OPT_DELETE = 1u << 18, /* passwd --delete */
    OPT_FROM = 1u << 19,   /* init --from DB (with --cluster) */
};

#define OPT_NO_FILTERS (OPT_NO_PUB | OPT_NO_SUB | OPT_NO_DENY_PUB | OPT_NO_DENY_SUB)

static const struct {
    const char *name;
    unsigned bit;
} flags[] = {
    {"--allow-action", OPT_ALLOW_ACTION},
    {"--yes", OPT_YES},
    {"--no-label", OPT_NO_LABEL},
    {"--no-expiry", OPT_NO_EXPIRY},
    {"--no-client-id", OPT_NO_CLIENT_ID},
    {"--no-allow-action", OPT_NO_ALLOW_ACTION},
    {"--no-pub", OPT_NO_PUB},
    {"--no-sub", OPT_NO_SUB},
    {"--no-deny-pub", OPT_NO_DENY_PUB},
    {"--no-deny-sub", OPT_NO_DENY_SUB},
    {"--delete", OPT_DELETE},
};

#define OPT_FILTERS (OPT_PUB | OPT_SUB | OPT_DENY_PUB | OPT_DENY_SUB)

static const struct {
    const char *name;
    unsigned bit;
} options[] = {
    {"--plan", OPT_PLAN},           {"--label", OPT_LABEL},       {"--ttl", OPT_TTL},
    {"--client-id", OPT_CLIENT_ID}, {"--pub", OPT_PUB},           {"--sub", OPT_SUB},
    {"--deny-pub", OPT_DENY_PUB},   {"--deny-sub", OPT_DENY_SUB}, {"--from", OPT_FROM},
};

/* The four filter lists, in the order of struct store_token_spec. */
#define FILTER_KINDS MANAGE_FILTER_KINDS
static const char *const filter_option[FILTER_KINDS] = {"--pub", "--sub", "--deny-pub",
                                                        "--deny-sub"};
static const char *const filter_key[FILTER_KINDS] = {"pub", "sub", "deny-pub", "deny-sub"};

/* One filter option as given; `text` points into argv. */
struct raw_filter {
    int kind;
    const char *text;
};

struct args {
    const char *operands[3];
    size_t operand_count;
    const char *plan, *label, *ttl, *client_id, *from;
    unsigned flags;             /* the flags given (OPT_ALLOW_ACTION, OPT_YES, OPT_NO_...) */
    unsigned given;             /* the options with a value given (OPT_LABEL...) */
    struct raw_filter *filters; /* up to argc of them; owned */
    size_t filter_count;
    /* what a command's check made of the text above */
    unsigned long long value;  /* the set commands' VALUE */
    const char *new_plan;      /* instance set NAME plan PLAN */
    struct manage_token token; /* token create: checked, its filters normalised */
};

struct ctl {
    FILE *out;  /* standard output, held back until the command succeeded */
    char *text; /* what `out` holds */
    size_t len;
    const char *db_path;
    struct shared *shared; /* --cluster: the catalog in Redis, not the file at db_path */
    bool confirmed;        /* instance delete was answered yes: a run again asks no more */
    struct limits base;    /* the configuration's limits: the defaults, or the -c file's */
    bool json;
    struct store *store;
};

struct command {
    const char *group, *verb;
    const char *operand_names[3]; /* exactly these operands, in this order */
    unsigned options;
    const char *synopsis; /* everything after "aviaryctl GROUP VERB" */
    /*
     * What can be checked without the database, checked before it is opened
     * (a bad value is a bad value even when the database is missing); NULL
     * when there is nothing to check.
     */
    int (*check)(struct args *a);
    int (*run)(struct ctl *ctl, const struct args *a);
    /*
     * Whether the command may create a missing database (instance create,
     * plan set, init); the others refuse to, a command on the file
     * itself (backup) does not open it through the store at all, and one
     * on another file (passwd) leaves it alone.
     */
    enum { DB_EXISTING = 0, DB_CREATE, DB_FILE, DB_NONE } db;
};

/* ---- messages ------------------------------------------------------------- */

static int complain(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Print one "aviaryctl: ..." line on standard error and return `status`. */
static int complain(int status, const char *fmt, ...)
{
    va_list ap;

    fputs("aviaryctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return status;
}

/* The exit status for a failed store call; its message is printed. */
static int store_failed(int rc, const char *err)
{
    int status = rc == STORE_E_DB      ? CTL_EXIT_DB
                 : rc == STORE_E_NOMEM ? CTL_EXIT_NOMEM
                                       : CTL_EXIT_USAGE;
    return complain(status, "%s", err);
}

static int out_of_memory(void)
{
    return complain(CTL_EXIT_NOMEM, "out of memory");
}

/* ---- text and JSON output --------------------------------------------------- */

/* Text from the database on one line of text output: control characters become '?'. */
static void text_put(FILE *out, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
        fputc(*p < 0x20 || *p == 0x7f ? '?' : *p, out);
}

static void report(const struct ctl *ctl, const char *const *members, const char *json_rest,
                   const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/*
 * The one line that tells what a change did: in JSON the object of `members`
 * (see json_members) closed by `json_rest`; in text `fmt`'s sentence.
 */
static void report(const struct ctl *ctl, const char *const *members, const char *json_rest,
                   const char *fmt, ...)
{
    va_list ap;

    if (ctl->json) {
        manage_json_members(ctl->out, members);
        fprintf(ctl->out, "%s\n", json_rest);
        return;
    }
    va_start(ap, fmt);
    vfprintf(ctl->out, fmt, ap);
    va_end(ap);
    fputc('\n', ctl->out);
}

/* ---- checks made before the database is opened -------------------------------- */

/* `instance set`, `plan set`: VALUE as aviary.conf(5) takes the limit; the message names it. */
static int check_limit(struct args *a)
{
    char err[768];

    if (manage_limit_value(a->operands[1], a->operands[2], &a->value, err, sizeof(err)) < 0)
        return complain(CTL_EXIT_USAGE, "%s", err);
    return 0;
}

/* `instance set`: a limit and its value, or "plan" and the plan's name. */
static int check_instance_set(struct args *a)
{
    if (strcmp(a->operands[1], "plan") == 0) {
        a->new_plan = a->operands[2];
        return 0;
    }
    return check_limit(a);
}

/* `instance unset`: a limit's name (the store checks it too, but before the database). */
static int check_unset(struct args *a)
{
    char known[512], buf[CTL_SHOWN];

    if (limits_find(a->operands[1], strlen(a->operands[1])) != NULL)
        return 0;
    limits_names(known, sizeof(known));
    return complain(CTL_EXIT_USAGE, "unknown limit '%s' (known: %s)",
                    log_escape_str(a->operands[1], buf, sizeof(buf)), known);
}

/*
 * `instance delete`: it asks on a terminal (cmd_instance_delete); without
 * one, only --yes deletes, so that a script never deletes by accident.
 */
static int check_delete(struct args *a)
{
    char buf[CTL_SHOWN];

    if ((a->flags & OPT_YES) || isatty(STDIN_FILENO))
        return 0;
    return complain(CTL_EXIT_USAGE,
                    "instance delete: not deleting '%s' without confirmation: standard input "
                    "is not a terminal (add --yes)",
                    log_escape_str(a->operands[0], buf, sizeof(buf)));
}

/* `token create`, `token update`: the duration, the texts and the filters, in this order. */
static int check_token(struct args *a)
{
    struct manage_token *t = &a->token;
    char err[768];
    int rc = 0;

    manage_token_init(t, NULL);
    t->allow_action = a->flags & OPT_ALLOW_ACTION;
    if (a->ttl != NULL)
        rc = manage_token_ttl(t, "--ttl", a->ttl, err, sizeof(err));
    if (rc == 0 && a->label != NULL)
        rc = manage_token_label(t, "--label", a->label, strlen(a->label), err, sizeof(err));
    if (rc == 0 && a->client_id != NULL)
        rc = manage_token_client_id(t, "--client-id", a->client_id, strlen(a->client_id), err,
                                    sizeof(err));
    for (size_t i = 0; rc == 0 && i < a->filter_count; i++) {
        const struct raw_filter *raw = &a->filters[i];
        rc = manage_token_filter(t, raw->kind, filter_option[raw->kind], raw->text,
                                 strlen(raw->text), err, sizeof(err));
    }
    return rc == 0 ? 0 : store_failed(rc, err);
}

/* An option that sets a part of a token, and the flag that clears it. */
static const struct {
    unsigned set, clear;
    const char *set_name, *clear_name;
    unsigned given; /* enum manage_given */
} token_parts[] = {
    {OPT_LABEL, OPT_NO_LABEL, "--label", "--no-label", MANAGE_GIVEN_LABEL},
    {OPT_TTL, OPT_NO_EXPIRY, "--ttl", "--no-expiry", MANAGE_GIVEN_EXPIRES},
    {OPT_CLIENT_ID, OPT_NO_CLIENT_ID, "--client-id", "--no-client-id", MANAGE_GIVEN_CLIENT_ID},
    {OPT_ALLOW_ACTION, OPT_NO_ALLOW_ACTION, "--allow-action", "--no-allow-action",
     MANAGE_GIVEN_ACTION},
    {OPT_PUB, OPT_NO_PUB, "--pub", "--no-pub", MANAGE_GIVEN_FILTERS << 0},
    {OPT_SUB, OPT_NO_SUB, "--sub", "--no-sub", MANAGE_GIVEN_FILTERS << 1},
    {OPT_DENY_PUB, OPT_NO_DENY_PUB, "--deny-pub", "--no-deny-pub", MANAGE_GIVEN_FILTERS << 2},
    {OPT_DENY_SUB, OPT_NO_DENY_SUB, "--deny-sub", "--no-deny-sub", MANAGE_GIVEN_FILTERS << 3},
};

/*
 * `token update`: token create's checks, then the clearing flags: each
 * part changes only when its option or its --no- flag is given, not both.
 */
static int check_token_update(struct args *a)
{
    unsigned given = a->given | (a->flags & OPT_ALLOW_ACTION);
    int rc = check_token(a);

    if (rc != 0)
        return rc;
    for (size_t i = 0; i < sizeof(token_parts) / sizeof(token_parts[0]); i++) {
        if (!(a->flags & token_parts[i].clear))
            continue;
        if (given & token_parts[i].set)
            return complain(CTL_EXIT_USAGE, "token update: %s and %s together",
                            token_parts[i].set_name, token_parts[i].clear_name);
        a->token.given |= token_parts[i].given;
    }
    if (a->flags & OPT_ALLOW_ACTION)
        a->token.given |= MANAGE_GIVEN_ACTION;
    if (a->token.given == 0)
        return complain(CTL_EXIT_USAGE,
                        "token update: nothing to change (see aviaryctl token update --help)");
    return 0;
}

/* ---- the database ------------------------------------------------------------- */

/*
 * Run as root over a database that another user owns (aviaryd's service
 * account): become that user before SQLite opens anything, so that every
 * file it makes (the database, -wal, -shm, -journal) is the service's and
 * aviaryd can still open them. The owner is the database file's, or its
 * directory's when there is no file yet; a root-owned one changes nothing.
 */
static int ctl_become_owner(const char *db_path)
{
    struct stat st;
    char *copy = strdup(db_path);

    if (copy == NULL)
        return out_of_memory();
    int found = stat(db_path, &st) == 0 || stat(dirname(copy), &st) == 0;
    free(copy);
    if (geteuid() != 0 || !found || st.st_uid == 0)
        return 0;
    const struct passwd *pw = getpwuid(st.st_uid);
    uid_t uid = st.st_uid;
    gid_t gid = pw != NULL ? pw->pw_gid : st.st_gid;
    const char *who = pw != NULL ? pw->pw_name : "its owner";
    if (setgroups(1, &gid) != 0)
        return complain(CTL_EXIT_DB, "cannot become %s (uid %u) to open %s: setgroups: %s", who,
                        (unsigned)uid, db_path, strerror(errno));
    if (setgid(gid) != 0)
        return complain(CTL_EXIT_DB, "cannot become %s (uid %u) to open %s: setgid(%u): %s", who,
                        (unsigned)uid, db_path, (unsigned)gid, strerror(errno));
    if (setuid(uid) != 0)
        return complain(CTL_EXIT_DB, "cannot become %s (uid %u) to open %s: setuid: %s", who,
                        (unsigned)uid, db_path, strerror(errno));
    return 0;
}

static int ctl_open(struct ctl *ctl, bool create)
{
    char err[1024];
    int code;

    ctl->store = create ? store_open(ctl->db_path, err, sizeof(err))
                        : store_open_existing(ctl->db_path, &code, err, sizeof(err));
    if (ctl->store != NULL)
        return 0;
    if (!create && code == STORE_E_NOT_FOUND)
        return complain(CTL_EXIT_DB,
                        "no database at %s (create it with 'aviaryctl init', given the same -c or "
                        "--db; instance create and plan set create it too)",
                        ctl->db_path);
    return complain(CTL_EXIT_DB, "%s", err);
}

/* ---- instance ----------------------------------------------------------------- */

static int cmd_instance_create(struct ctl *ctl, const struct args *a)
{
    const char *plan = a->plan != NULL ? a->plan : STORE_DEFAULT_PLAN;
    char err[512];
    int rc = store_instance_create(ctl->store, a->operands[0], plan, err, sizeof(err));

    if (rc < 0)
        return store_failed(rc, err);
    report(ctl, (const char *const[]){"name", a->operands[0], "plan", plan, NULL}, "}",
           "created instance %s on plan %s", a->operands[0], plan);
    return 0;
}

/* A listing's callbacks count their entries here; `now` tells a token's status. */
struct list_state {
    struct ctl *ctl;
    size_t n;
    int64_t now;
};

/*
 * The end of a listing whose store call returned `rc`: its failure, or the
 * JSON list's end, or in text `none` (unless NULL) when nothing was listed.
 */
static int list_end(const struct list_state *ls, int rc, const char *err, const char *none)
{
    if (rc < 0)
        return store_failed(rc, err);
    if (ls->ctl->json)
        manage_json_list_end(ls->ctl->out, ls->n);
    else if (ls->n == 0 && none != NULL)
        fprintf(ls->ctl->out, "%s\n", none);
    return 0;
}

static void list_instance(void *arg, const struct store_instance *inst)
{
    struct list_state *ls = arg;
    FILE *out = ls->ctl->out;
    char when[32];

    manage_iso_time(inst->created, when, sizeof(when));
    if (ls->ctl->json) {
        manage_json_list_next(out, &ls->n);
        manage_json_instance_listed(out, inst);
        return;
    }
    if (ls->n++ == 0)
        fprintf(out, "%-24s %-16s %6s  %s\n", "NAME", "PLAN", "TOKENS", "CREATED");
    fprintf(out, "%-24s %-16s %6zu  %s\n", inst->name, inst->plan, inst->token_count, when);
}

static int cmd_instance_list(struct ctl *ctl, const struct args *a)
{
    struct list_state ls = {.ctl = ctl};
    char err[512];

    int rc = store_instance_list(ctl->store, list_instance, &ls, err, sizeof(err));

    return list_end(&ls, rc, err, "no instances");
}

static void show_print(const struct ctl *ctl, const struct manage_instance_view *v)
{
    FILE *out = ctl->out;
    char when[32];

    if (ctl->json) {
        manage_json_instance_view(out, v);
        return;
    }
    fprintf(out, "name: %s\nplan: %s\ncreated: %s\ntokens: %zu\nlimits:\n", v->name, v->plan,
            manage_iso_time(v->created, when, sizeof(when)), v->tokens);
    /* The columns as wide as their widest entry, so that they line up whatever the names. */
    int name_width = 0, value_width = 0;
    for (size_t i = 0; i < limits_count(); i++) {
        int n = (int)strlen(limits_name(i)), w = snprintf(NULL, 0, "%llu", v->value[i]);
        name_width = n > name_width ? n : name_width;
        value_width = w > value_width ? w : value_width;
    }
    for (size_t i = 0; i < limits_count(); i++)
        fprintf(out, "  %-*s  %*llu  %s\n", name_width, limits_name(i), value_width, v->value[i],
                v->source[i]);
}

static int cmd_instance_show(struct ctl *ctl, const struct args *a)
{
    struct manage_instance_view v;
    char err[512];
    int rc = manage_instance_view(ctl->store, &ctl->base, a->operands[0], &v, err, sizeof(err));

    if (rc < 0)
        rc = store_failed(rc, err);
    else
        show_print(ctl, &v);
    manage_instance_view_free(&v);
    return rc;
}

static void count_tokens(void *arg, const struct store_instance *inst)
{
    *(size_t *)arg = inst->token_count;
}

/* On a terminal without --yes: ask; 0 when the answer is yes, else the exit status. */
static int confirm_delete(struct ctl *ctl, const char *name)
{
    size_t tokens = 0;
    char err[512], answer[16];
    int rc = store_instance_get(ctl->store, name, count_tokens, &tokens, err, sizeof(err));

    if (rc < 0)
        return store_failed(rc, err);
    fprintf(stderr,
            "Delete instance %s with its %zu token%s and everything aviaryd keeps for it "
            "(sessions, retained messages)? [y/N] ",
            name, tokens, tokens == 1 ? "" : "s");
    fflush(stderr);
    if (fgets(answer, sizeof(answer), stdin) == NULL) {
        fputc('\n', stderr);
        answer[0] = '\0';
    }
    answer[strcspn(answer, "\r\n")] = '\0';
    if (strcasecmp(answer, "y") != 0 && strcasecmp(answer, "yes") != 0)
        return complain(CTL_EXIT_USAGE, "instance %s not deleted", name);
    return 0;
}

static int cmd_instance_delete(struct ctl *ctl, const struct args *a)
{
    char err[512];
    int rc = (a->flags & OPT_YES) || ctl->confirmed ? 0 : confirm_delete(ctl, a->operands[0]);

    if (rc != 0)
        return rc;
    ctl->confirmed = true;
    rc = store_instance_delete(ctl->store, a->operands[0], err, sizeof(err));

    if (rc < 0)
        return store_failed(rc, err);
    report(ctl, (const char *const[]){"name", a->operands[0], NULL}, ", \"deleted\": true}",
           "deleted instance %s with its tokens", a->operands[0]);
    return 0;
}

/* `instance set` and `plan set`: the same checks (check_limit), the same output. */
static int set_limit(struct ctl *ctl, const struct args *a, const char *what,
                     int (*set)(struct store *, const char *, const char *, unsigned long long,
                                char *, size_t))
{
    FILE *out = ctl->out;
    char err[768];
    int rc = set(ctl->store, a->operands[0], a->operands[1], a->value, err, sizeof(err));

    if (rc < 0)
        return store_failed(rc, err);
    if (ctl->json) {
        manage_json_members(out, (const char *const[]){what, a->operands[0], NULL});
        fprintf(out, ", \"limit\": \"%s\", \"value\": %llu}\n", a->operands[1], a->value);
    } else {
        fprintf(out, "%s %s: %s = %llu\n", what, a->operands[0], a->operands[1], a->value);
    }
    return 0;
}

static int cmd_instance_set(struct ctl *ctl, const struct args *a)
{
    char err[512];
    int rc;

    if (a->new_plan == NULL)
        return set_limit(ctl, a, "instance", store_instance_set_limit);
    rc = store_instance_set_plan(ctl->store, a->operands[0], a->new_plan, err, sizeof(err));
    if (rc < 0)
        return store_failed(rc, err);
    report(ctl, (const char *const[]){"instance", a->operands[0], "plan", a->new_plan, NULL}, "}",
           "instance %s: plan = %s", a->operands[0], a->new_plan);
    return 0;
}

static int cmd_instance_unset(struct ctl *ctl, const struct args *a)
{
    char err[512];
    bool was_set;
    int rc = store_instance_unset_limit(ctl->store, a->operands[0], a->operands[1], &was_set, err,
                                        sizeof(err));

    if (rc < 0)
        return store_failed(rc, err);
    if (ctl->json) {
        manage_json_members(ctl->out, (const char *const[]){"instance", a->operands[0], "limit",
                                                            a->operands[1], NULL});
        fprintf(ctl->out, ", \"unset\": true, \"was_set\": %s}\n", was_set ? "true" : "false");
    } else {
        fprintf(ctl->out, "instance %s: %s unset (%s)\n", a->operands[0], a->operands[1],
                was_set ? "its plan's or the configuration's value applies"
                        : "it had no value of its own");
    }
    return 0;
}

/* ---- plan --------------------------------------------------------------------- */

static void list_plan(void *arg, const char *plan, const struct store_limit *limits, size_t count)
{
    struct list_state *ls = arg;
    FILE *out = ls->ctl->out;

    if (ls->ctl->json) {
        manage_json_list_next(out, &ls->n);
        manage_json_plan(out, plan, limits, count);
        return;
    }
    ls->n++;
    fprintf(out, "%s:", plan);
    for (size_t i = 0; i < count; i++)
        fprintf(out, " %s %llu%s", limits[i].name, limits[i].value, i + 1 < count ? "," : "");
    fprintf(out, "%s\n", count == 0 ? " (no limits of its own)" : "");
}

static int cmd_plan_list(struct ctl *ctl, const struct args *a)
{
    struct list_state ls = {.ctl = ctl};
    char err[512];

    int rc = store_plan_list(ctl->store, list_plan, &ls, err, sizeof(err));

    return list_end(&ls, rc, err, NULL);
}

static int cmd_plan_set(struct ctl *ctl, const struct args *a)
{
    return set_limit(ctl, a, "plan", store_plan_set);
}

static int cmd_plan_delete(struct ctl *ctl, const struct args *a)
{
    char err[768];
    int rc = store_plan_delete(ctl->store, a->operands[0], err, sizeof(err));

    if (rc < 0)
        return store_failed(rc, err);
    report(ctl, (const char *const[]){"plan", a->operands[0], NULL}, ", \"deleted\": true}",
           "deleted plan %s", a->operands[0]);
    return 0;
}

/* ---- token -------------------------------------------------------------------- */

/* A filter list as text: allow lists are "any" when empty, deny lists "none". */
static void text_filters(FILE *out, const char *key, const struct store_filters *f, bool deny)
{
    fprintf(out, "%s:", key);
    if (f->count == 0)
        fprintf(out, " %s", deny ? "none" : "any");
    for (size_t i = 0; i < f->count; i++) {
        fputc(' ', out);
        text_put(out, f->items[i]);
    }
    fputc('\n', out);
}

/*
 * A token as "key: value" lines or as the members of a JSON object (without
 * the braces). `created` < 0 leaves the creation time out.
 */
static void token_print(const struct ctl *ctl, const struct store_token *t, int64_t now)
{
    FILE *out = ctl->out;
    const struct store_filters *lists[FILTER_KINDS] = {&t->pub, &t->sub, &t->deny_pub,
                                                       &t->deny_sub};
    char created[32], expires[32];

    manage_iso_time(t->created, created, sizeof(created));
    manage_iso_time(t->expires, expires, sizeof(expires));
    if (ctl->json) {
        manage_json_token_members(out, t, now);
        return;
    }
    fprintf(out, "id: %s\ninstance: %s\n", t->id, t->instance);
    if (t->label[0] != '\0') {
        fputs("label: ", out);
        text_put(out, t->label);
        fputc('\n', out);
    }
    if (t->created >= 0)
        fprintf(out, "created: %s\n", created);
    fprintf(out, "expires: %s\n", t->expires ? expires : "never (key)");
    fputs("client id: ", out);
    text_put(out, t->client_id != NULL ? t->client_id : "any");
    fputc('\n', out);
    for (int k = 0; k < FILTER_KINDS; k++)
        text_filters(out, filter_key[k], lists[k], k >= 2);
    fprintf(out, "action: %s\n", t->allow_action ? "allowed" : "no");
    if (t->created >= 0)
        fprintf(out, "status: %s\n", manage_token_status(t, now));
}

static int cmd_token_create(struct ctl *ctl, const struct args *a)
{
    FILE *out = ctl->out;
    struct manage_token request = a->token; /* its filters stay a's */
    struct store_token t;
    char id[STORE_TOKEN_ID_LEN + 1], secret[STORE_SECRET_LEN + 1], err[512];

    request.instance = a->operands[0];
    int rc = manage_token_create(ctl->store, &request, id, secret, &t, err, sizeof(err));
    if (rc < 0) {
        rc = store_failed(rc, err);
        goto out;
    }
    if (ctl->json) {
        fputc('{', out);
        token_print(ctl, &t, request.now);
        fprintf(out, ", \"secret\": \"%s\"}\n", secret);
    } else {
        token_print(ctl, &t, request.now);
        fprintf(out, "secret (shown only now; aviary keeps only its hash):\n%s\n", secret);
    }
out:
    explicit_bzero(secret, sizeof(secret));
    return rc;
}

/* `token update`: the token as it is after the change, printed as token list prints it. */
struct token_find {
    struct ctl *ctl;
    const char *id;
    int64_t now;
    bool found;
};

static void print_updated(void *arg, const struct store_token *t)
{
    struct token_find *f = arg;

    if (strcmp(t->id, f->id) != 0)
        return;
    f->found = true;
    if (f->ctl->json)
        fputc('{', f->ctl->out);
    token_print(f->ctl, t, f->now);
    if (f->ctl->json)
        fputs("}\n", f->ctl->out);
}

static int cmd_token_update(struct ctl *ctl, const struct args *a)
{
    struct manage_token request = a->token; /* its filters stay a's */
    struct token_find f = {.ctl = ctl, .id = a->operands[1], .now = request.now};
    char err[768];
    int rc;

    request.instance = a->operands[0];
    rc = manage_token_update(ctl->store, &request, a->operands[1], err, sizeof(err));
    if (rc == 0)
        rc = store_token_list(ctl->store, a->operands[0], print_updated, &f, err, sizeof(err));
    if (rc < 0)
        return store_failed(rc, err);
    return f.found ? 0 : complain(CTL_EXIT_USAGE, "token %s vanished", a->operands[1]);
}

static void list_token(void *arg, const struct store_token *t)
{
    struct list_state *ls = arg;
    FILE *out = ls->ctl->out;

    if (ls->ctl->json) {
        manage_json_list_next(out, &ls->n);
        fputc('{', out);
        token_print(ls->ctl, t, ls->now);
        fputc('}', out);
        return;
    }
    if (ls->n++ > 0)
        fputc('\n', out);
    token_print(ls->ctl, t, ls->now);
}

static int cmd_token_list(struct ctl *ctl, const struct args *a)
{
    struct list_state ls = {.ctl = ctl, .now = (int64_t)time(NULL)};
    char err[512];
    int rc = store_token_list(ctl->store, a->operands[0], list_token, &ls, err, sizeof(err));

    return list_end(&ls, rc, err, "no tokens");
}

static int cmd_token_revoke(struct ctl *ctl, const struct args *a)
{
    char err[512];
    int rc = store_token_revoke(ctl->store, a->operands[0], a->operands[1], err, sizeof(err));

    if (rc < 0)
        return store_failed(rc, err);
    report(ctl, (const char *const[]){"instance", a->operands[0], "id", a->operands[1], NULL},
           ", \"revoked\": true}", "revoked token %s of instance %s", a->operands[1],
           a->operands[0]);
    return 0;
}

/* ---- admin keys --------------------------------------------------------------- */

/* `admin-key create`: the label. */
static int check_admin_key(struct args *a)
{
    char err[512];

    if (a->label != NULL &&
        manage_label_check("--label", a->label, strlen(a->label), err, sizeof(err)) < 0)
        return complain(CTL_EXIT_USAGE, "%s", err);
    return 0;
}

static int cmd_admin_key_create(struct ctl *ctl, const struct args *a)
{
    FILE *out = ctl->out;
    const char *label = a->label != NULL ? a->label : "";
    char id[STORE_TOKEN_ID_LEN + 1], secret[STORE_SECRET_LEN + 1], err[512];
    int rc = store_admin_key_create(ctl->store, label, id, secret, err, sizeof(err));

    if (rc < 0) {
        rc = store_failed(rc, err);
        goto out;
    }
    if (ctl->json) {
        fprintf(out, "{\"id\": \"%s\", \"label\": ", id);
        manage_json_string_or_null(out, label[0] != '\0' ? label : NULL);
        fprintf(out, ", \"secret\": \"%s\"}\n", secret);
    } else {
        fprintf(out, "id: %s\n", id);
        if (label[0] != '\0') {
            fputs("label: ", out);
            text_put(out, label);
            fputc('\n', out);
        }
        fprintf(out, "key (shown only now; aviary keeps only its hash):\n%s\n", secret);
    }
out:
    explicit_bzero(secret, sizeof(secret));
    return rc;
}

static void list_admin_key(void *arg, const struct store_admin_key *k)
{
    struct list_state *ls = arg;
    FILE *out = ls->ctl->out;
    char when[32];

    if (ls->ctl->json) {
        manage_json_list_next(out, &ls->n);
        manage_json_admin_key(out, k);
        return;
    }
    if (ls->n++ == 0)
        fprintf(out, "%-16s  %-20s  %-7s  %s\n", "ID", "CREATED", "STATUS", "LABEL");
    fprintf(out, "%-16s  %-20s  %-7s  ", k->id, manage_iso_time(k->created, when, sizeof(when)),
            k->revoked ? "revoked" : "active");
    text_put(out, k->label);
    fputc('\n', out);
}

static int cmd_admin_key_list(struct ctl *ctl, const struct args *a)
{
    struct list_state ls = {.ctl = ctl};
    char err[512];
    int rc = store_admin_key_list(ctl->store, false, list_admin_key, &ls, err, sizeof(err));

    return list_end(&ls, rc, err, "no admin keys");
}

static int cmd_admin_key_revoke(struct ctl *ctl, const struct args *a)
{
    char err[512];
    int rc = store_admin_key_revoke(ctl->store, a->operands[0], err, sizeof(err));

    if (rc < 0)
        return store_failed(rc, err);
    report(ctl, (const char *const[]){"id", a->operands[0], NULL}, ", \"revoked\": true}",
           "revoked admin key %s", a->operands[0]);
    return 0;
}

/* ---- init --------------------------------------------------------------------- */

/* The database made, or found, with the current schema (ctl_open did the work). */
static int cmd_init(struct ctl *ctl, const struct args *a)
{
    char rest[32];

    snprintf(rest, sizeof(rest), ", \"schema\": %d}", STORE_SCHEMA_VERSION);
    if (ctl->shared) {
        report(ctl, (const char *const[]){"cluster", shared_shown(ctl->shared), NULL}, rest,
               "catalog in Redis at %s ready (schema version %d)", shared_shown(ctl->shared),
               STORE_SCHEMA_VERSION);
        return 0;
    }
    if (a->from)
        return complain(CTL_EXIT_USAGE, "init --from: only with --cluster URL (it uploads a "
                                        "database's catalog to the cluster's Redis)");
    report(ctl, (const char *const[]){"database", ctl->db_path, NULL}, rest,
           "database %s ready (schema version %d)", ctl->db_path, STORE_SCHEMA_VERSION);
    return 0;
}

/* ---- backup ------------------------------------------------------------------- */

/*
 * A consistent copy of the database while aviaryd writes to it (SQLite's
 * online backup). Not through store_open(): a missing database is an error
 * here, not one to create.
 */
static int cmd_backup(struct ctl *ctl, const struct args *a)
{
    char err[1024];
    int rc = keep_backup(ctl->db_path, a->operands[0], err, sizeof(err));

    if (rc < 0)
        return complain(CTL_EXIT_DB, "backup: %s", err);
    report(ctl, (const char *const[]){"database", ctl->db_path, "backup", a->operands[0], NULL},
           "}", "copied %s to %s", ctl->db_path, a->operands[0]);
    return 0;
}

/* ---- desktop passwords ---------------------------------------------------------- */

/* One line of standard input into `buf`, without its line end; false at its end or error. */
static bool read_line(char *buf, size_t size)
{
    if (!fgets(buf, (int)size, stdin))
        return false;
    buf[strcspn(buf, "\r\n")] = '\0';
    return true;
}

/*
 * The terminal's echo off, then `prompt` on standard error, then a line. In
 * this order: an answer typed as soon as the prompt shows is neither echoed
 * nor flushed away (TCSAFLUSH drops only what was typed before the prompt).
 */
static bool read_hidden(const char *prompt, char *buf, size_t size)
{
    struct termios saved, quiet;
    bool ok;

    if (tcgetattr(STDIN_FILENO, &saved) < 0)
        return false;
    quiet = saved;
    quiet.c_lflag &= ~(tcflag_t)ECHO;
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    fputs(prompt, stderr);
    fflush(stderr);
    ok = read_line(buf, size);
    tcsetattr(STDIN_FILENO, TCSANOW, &saved);
    fputc('\n', stderr);
    return ok;
}

/*
 * The new password: asked twice on a terminal, else the first line of
 * standard input (for scripts: printf '%s\n' "$pw" | aviaryctl passwd ...).
 */
static int read_new_password(char *pw, size_t size)
{
    char again[PASSWD_LINE_MAX];
    int rc = 0;

    if (isatty(STDIN_FILENO)) {
        if (!read_hidden("Password: ", pw, size) || !read_hidden("Again: ", again, sizeof(again)))
            rc = complain(CTL_EXIT_USAGE, "passwd: no password read");
        else if (strcmp(pw, again) != 0)
            rc = complain(CTL_EXIT_USAGE, "passwd: the two passwords differ; nothing changed");
        explicit_bzero(again, sizeof(again));
    } else if (!read_line(pw, size)) {
        rc = complain(CTL_EXIT_USAGE, "passwd: no password on standard input");
    }
    if (rc == 0 && pw[0] == '\0')
        rc = complain(CTL_EXIT_USAGE, "passwd: empty password");
    return rc;
}

/* Set or delete a user of a desktop password-file (aviary.conf(5)); no database. */
static int cmd_passwd(struct ctl *ctl, const struct args *a)
{
    const char *file = a->operands[0], *user = a->operands[1];
    bool delete = a->flags & OPT_DELETE;
    char pw[PASSWD_LINE_MAX], err[512];
    int rc;

    if (passwd_user_check(user, err, sizeof(err)) < 0)
        return complain(CTL_EXIT_USAGE, "passwd: %s", err);
    if (!delete &&(rc = read_new_password(pw, sizeof(pw))) != 0)
        return rc;
    rc = passwd_file_update(file, user, delete ? NULL : pw, err, sizeof(err));
    explicit_bzero(pw, sizeof(pw));
    if (rc < 0)
        return complain(CTL_EXIT_DB, "passwd: %s", err);
    if (rc == 1)
        return complain(CTL_EXIT_USAGE, "passwd: no user '%s' in %s", user, file);
    report(ctl,
           (const char *const[]){"file", file, "user", user, "action", delete ? "deleted" : "set",
                                 NULL},
           "}", "%s %s in %s (aviaryd reads it again on SIGHUP)",
           delete ? "deleted user" : "set the password of", user, file);
    return 0;
}

/* ---- --cluster: the catalog in Redis ------------------------------------------------ */

/* A command's failure inside shared_change(): its status is in struct ctl_run. */
#define CTL_RUN_FAILED (-1000)

/* The held-back output, dropped: it may hold a new token's secret. */
static void output_discard(struct ctl *ctl)
{
    if (ctl->out)
        fclose(ctl->out);
    ctl->out = NULL;
    if (ctl->text)
        explicit_bzero(ctl->text, ctl->len);
    free(ctl->text);
    ctl->text = NULL;
    ctl->len = 0;
}

/* Start the held-back output afresh (a run again after a conflict prints once). */
static int output_open(struct ctl *ctl)
{
    output_discard(ctl);
    ctl->out = open_memstream(&ctl->text, &ctl->len);
    return ctl->out ? 0 : out_of_memory();
}

struct ctl_run {
    const struct command *cmd;
    struct ctl *ctl;
    const struct args *a;
    int status;
};

/* shared_change()'s change: the command, as it runs on a file, on the fetched catalog. */
static int run_on_catalog(void *arg, struct store *s)
{
    struct ctl_run *r = arg;

    r->ctl->store = s;
    r->status = output_open(r->ctl);
    if (r->status == 0)
        r->status = r->cmd->run(r->ctl, r->a);
    r->ctl->store = NULL;
    return r->status == 0 ? 0 : CTL_RUN_FAILED;
}

static int shared_failed(int rc, const char *err)
{
    return complain(rc == STORE_E_NOMEM ? CTL_EXIT_NOMEM : CTL_EXIT_DB, "%s", err);
}

/*
 * init --from DB: the catalog of an existing database (not what its broker
 * kept) becomes the cluster's first. Never over a catalog Redis holds.
 */
static int cluster_upload(struct ctl *ctl, const struct args *a)
{
    char err[1024], rest[32];
    int64_t version = 0;
    struct store *copy = store_open_copy(a->from, err, sizeof(err));
    int rc = copy ? store_catalog_only(copy, err, sizeof(err)) : STORE_E_DB;

    if (rc == 0)
        rc = shared_version(ctl->shared, &version, err, sizeof(err));
    if (rc == 0 && version == 0)
        rc = shared_publish(ctl->shared, copy, 0, err, sizeof(err));
    store_close(copy);
    if (version > 0 || rc == SHARED_E_CONFLICT)
        return complain(CTL_EXIT_USAGE,
                        "init --from: Redis at %s holds a catalog already; nothing uploaded",
                        shared_shown(ctl->shared));
    if (rc < 0)
        return shared_failed(rc, err);
    snprintf(rest, sizeof(rest), ", \"schema\": %d}", STORE_SCHEMA_VERSION);
    report(ctl, (const char *const[]){"cluster", shared_shown(ctl->shared), "from", a->from, NULL},
           rest, "uploaded the catalog of %s to Redis at %s (schema version %d)", a->from,
           shared_shown(ctl->shared), STORE_SCHEMA_VERSION);
    return 0;
}

/*
 * `len` bytes into `path`, as the file backup writes: beside it first,
 * readable by its owner only, then renamed over it. 0, or -1 with errno.
 */
static int write_private(const char *path, const void *data, size_t len)
{
    char tmp[PATH_MAX];
    int saved;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    bool ok = write(fd, data, len) == (ssize_t)len;
    ok = fsync(fd) == 0 && ok;
    saved = errno;
    ok = close(fd) == 0 && ok;
    if (ok && rename(tmp, path) == 0)
        return 0;
    saved = errno ? errno : saved;
    unlink(tmp);
    errno = saved ? saved : EIO;
    return -1;
}

/* backup FILE with --cluster: the catalog as it is now, as an SQLite file. */
static int cluster_backup(struct ctl *ctl, const struct args *a)
{
    char err[1024];
    struct store *s;
    int64_t version;
    unsigned char *image = NULL;
    size_t len = 0;
    int rc = shared_fetch(ctl->shared, false, &s, &version, err, sizeof(err));

    if (rc == 0) {
        rc = store_serialize(s, &image, &len, err, sizeof(err));
        store_close(s);
    }
    if (rc < 0)
        return shared_failed(rc, err);
    rc = write_private(a->operands[0], image, len);
    free(image);
    if (rc < 0)
        return complain(CTL_EXIT_DB, "backup: cannot write %s: %s", a->operands[0],
                        strerror(errno));
    report(
        ctl,
        (const char *const[]){"cluster", shared_shown(ctl->shared), "backup", a->operands[0], NULL},
        "}", "copied the catalog in Redis at %s (version %lld) to %s", shared_shown(ctl->shared),
        (long long)version, a->operands[0]);
    return 0;
}

/* A command with --cluster: fetch, run, publish what changed, again after a conflict. */
static int cluster_run(const struct command *cmd, struct ctl *ctl, const struct args *a)
{
    struct ctl_run r = {cmd, ctl, a, 0};
    char err[1024];
    int rc;

    if (cmd->db == DB_NONE)
        return cmd->run(ctl, a);
    if (cmd->db == DB_FILE)
        return cluster_backup(ctl, a);
    if (a->from)
        return cluster_upload(ctl, a);
    rc = shared_change(ctl->shared, cmd->db == DB_CREATE, run_on_catalog, &r, NULL, err,
                       sizeof(err));
    if (rc == CTL_RUN_FAILED)
        return r.status;
    return rc < 0 ? shared_failed(rc, err) : 0;
}

/* ---- the command line ----------------------------------------------------------- */

#define OPT_TOKEN (OPT_LABEL | OPT_TTL | OPT_CLIENT_ID | OPT_FILTERS | OPT_ALLOW_ACTION)
#define OPT_TOKEN_CLEAR                                                                            \
    (OPT_NO_LABEL | OPT_NO_EXPIRY | OPT_NO_CLIENT_ID | OPT_NO_ALLOW_ACTION | OPT_NO_FILTERS)
#define TOKEN_CREATE_SYNOPSIS                                                                      \
    "INSTANCE [--label TEXT] [--ttl DURATION] [--client-id ID|auto] [--pub FILTER]... [--sub "     \
    "FILTER]... [--deny-pub FILTER]... [--deny-sub FILTER]... [--allow-action]"
#define TOKEN_UPDATE_SYNOPSIS                                                                      \
    "INSTANCE TOKEN_ID [--label TEXT|--no-label] [--ttl DURATION|--no-expiry] [--client-id "       \
    "ID|auto|--no-client-id] [--pub FILTER...|--no-pub] [--sub FILTER...|--no-sub] [--deny-pub "   \
    "FILTER...|--no-deny-pub] [--deny-sub FILTER...|--no-deny-sub] "                               \
    "[--allow-action|--no-allow-action]"

static const struct command commands[] = {
    {"init", "", {NULL}, OPT_FROM, "[--from DB]", NULL, cmd_init, DB_CREATE},
    {"instance",
     "create",
     {"NAME"},
     OPT_PLAN,
     "NAME [--plan PLAN]",
     NULL,
     cmd_instance_create,
     DB_CREATE},
    {"instance", "list", {NULL}, 0, "", NULL, cmd_instance_list, DB_EXISTING},
    {"instance", "show", {"NAME"}, 0, "NAME", NULL, cmd_instance_show, DB_EXISTING},
    {"instance",
     "delete",
     {"NAME"},
     OPT_YES,
     "NAME [--yes]",
     check_delete,
     cmd_instance_delete,
     DB_EXISTING},
    {"instance",
     "set",
     {"NAME", "LIMIT", "VALUE"},
     0,
     "NAME LIMIT VALUE | NAME plan PLAN",
     check_instance_set,
     cmd_instance_set,
     DB_EXISTING},
    {"instance",
     "unset",
     {"NAME", "LIMIT"},
     0,
     "NAME LIMIT",
     check_unset,
     cmd_instance_unset,
     DB_EXISTING},
    {"plan", "list", {NULL}, 0, "", NULL, cmd_plan_list, DB_EXISTING},
    {"plan",
     "set",
     {"PLAN", "LIMIT", "VALUE"},
     0,
     "PLAN LIMIT VALUE",
     check_limit,
     cmd_plan_set,
     DB_CREATE},
    {"plan", "delete", {"PLAN"}, 0, "PLAN", NULL, cmd_plan_delete, DB_EXISTING},
    {"token",
     "create",
     {"INSTANCE"},
     OPT_TOKEN,
     TOKEN_CREATE_SYNOPSIS,
     check_token,
     cmd_token_create,
     DB_EXISTING},
    {"token",
     "update",
     {"INSTANCE", "TOKEN_ID"},
     OPT_TOKEN | OPT_TOKEN_CLEAR,
     TOKEN_UPDATE_SYNOPSIS,
     check_token_update,
     cmd_token_update,
     DB_EXISTING},
    {"token", "list", {"INSTANCE"}, 0, "INSTANCE", NULL, cmd_token_list, DB_EXISTING},
    {"token",
     "revoke",
     {"INSTANCE", "TOKEN_ID"},
     0,
     "INSTANCE TOKEN_ID",
     NULL,
     cmd_token_revoke,
     DB_EXISTING},
    {"admin-key",
     "create",
     {NULL},
     OPT_LABEL,
     "[--label TEXT]",
     check_admin_key,
     cmd_admin_key_create,
     DB_EXISTING},
    {"admin-key", "list", {NULL}, 0, "", NULL, cmd_admin_key_list, DB_EXISTING},
    {"admin-key", "revoke", {"ID"}, 0, "ID", NULL, cmd_admin_key_revoke, DB_EXISTING},
    /* A command without a verb works on the database file, not through the store. */
    {"backup", "", {"FILE"}, 0, "FILE", NULL, cmd_backup, DB_FILE},
    {"passwd", "", {"FILE", "USER"}, OPT_DELETE, "FILE USER [--delete]", NULL, cmd_passwd, DB_NONE},
};

#define COMMAND_COUNT (sizeof(commands) / sizeof(commands[0]))

/* "  group verb SYNOPSIS", wrapped before 80 columns between bracketed groups. */
static void usage_command(FILE *out, const struct command *c)
{
    int col = fprintf(out, "  %s%s%s", c->group, c->verb[0] ? " " : "", c->verb), indent = col + 1;
    const char *p = c->synopsis;

    while (*p != '\0') {
        /* one piece: a word, or a bracketed group with its "..." */
        size_t len = 0, depth = 0;
        while (p[len] != '\0' && (p[len] != ' ' || depth > 0)) {
            depth += p[len] == '[';
            depth -= p[len] == ']' && depth > 0;
            len++;
        }
        if (col + 1 + (int)len > 79)
            col = fprintf(out, "\n%*s", indent - 1, "") - 1;
        col += fprintf(out, " %.*s", (int)len, p);
        p += len;
        while (*p == ' ')
            p++;
    }
    fputc('\n', out);
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: aviaryctl [-c CONF | --db PATH | --cluster URL] [--json] COMMAND "
            "[ARGUMENTS]\n"
            "\n"
            "Manage the instances, plans, tokens and admin keys of aviaryd's cloud mode,\n"
            "back up its database, and keep desktop mode's password-file.\n"
            "\n"
            "Options:\n"
            "  -c, --config CONF  take the database (directive db) and the base limits\n"
            "                     from the aviary.conf file CONF\n"
            "  --db PATH          the database (default %s)\n"
            "  --cluster URL      the catalog of a cluster, in Redis at URL\n"
            "                     (redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], rediss://...;\n"
            "                     default: $AVIARY_CLUSTER, else the -c file's cluster)\n"
            "  --cluster-ca FILE  the CAs that sign a rediss:// server's certificate\n"
            "  --json             print JSON instead of text\n"
            "  -h, --help         print this help and exit\n"
            "  -V, --version      print the version and exit\n"
            "\n"
            "Commands:\n",
            AVIARY_DEFAULT_DB);
    for (size_t i = 0; i < COMMAND_COUNT; i++)
        usage_command(out, &commands[i]);
    fputs("\nLimits (as in aviary.conf(5)):", out);
    for (size_t i = 0; i < limits_count(); i++)
        fprintf(out, "%s %s", i % 4 == 0 ? "\n " : "", limits_name(i));
    fputs("\n\nDURATION is a positive number and s, m, h or d: 90s, 15m, 2h, 7d.\n"
          "Without --ttl a token is a key, which never expires. --allow-action lets a\n"
          "token's clients close other clients of its instance by publishing to $action.\n"
          "--client-id auto draws a client id. token update changes only what it is given;\n"
          "the --no- options clear. Only init, instance create and plan set create a\n"
          "missing database. instance delete asks on a terminal; elsewhere it needs --yes.\n"
          "Run as root over a database another user owns, aviaryctl becomes that user.\n",
          out);
}

/*
 * When argv[*i] is option `name` ("--name VALUE", "--name=VALUE", or for a
 * short name "-c VALUE"), set *value and return 1 (2 after printing that the
 * value is missing); return 0 when it is another option.
 */
static int option_value(const char *name, int argc, char **argv, int *i, const char **value)
{
    const char *arg = argv[*i];
    size_t len = strlen(name);

    if (strncmp(arg, name, len) != 0)
        return 0;
    if (arg[len] == '=' && name[1] == '-') {
        *value = arg + len + 1;
        return 1;
    }
    if (arg[len] != '\0')
        return 0;
    if (*i + 1 >= argc) {
        complain(CTL_EXIT_USAGE, "%s: missing value", name);
        return 2;
    }
    *value = argv[++*i];
    return 1;
}

static const struct command *command_find(const char *group, const char *verb)
{
    for (size_t i = 0; i < COMMAND_COUNT; i++)
        if (strcmp(commands[i].group, group) == 0 && strcmp(commands[i].verb, verb) == 0)
            return &commands[i];
    return NULL;
}

static bool group_known(const char *group)
{
    for (size_t i = 0; i < COMMAND_COUNT; i++)
        if (strcmp(commands[i].group, group) == 0)
            return true;
    return false;
}

/* "create, list, show, delete or set": the verbs of `group`, for messages. */
static const char *group_verbs(const char *group, char *buf, size_t size)
{
    size_t n = 0, seen = 0, used = 0;

    for (size_t i = 0; i < COMMAND_COUNT; i++)
        n += strcmp(commands[i].group, group) == 0;
    buf[0] = '\0';
    for (size_t i = 0; i < COMMAND_COUNT && used < size; i++) {
        if (strcmp(commands[i].group, group) != 0)
            continue;
        seen++;
        used += (size_t)snprintf(buf + used, size - used, "%s%s",
                                 seen == 1   ? ""
                                 : seen == n ? " or "
                                             : ", ",
                                 commands[i].verb);
    }
    return buf;
}

static size_t operand_count(const struct command *cmd)
{
    size_t n = 0;
    while (n < 3 && cmd->operand_names[n] != NULL)
        n++;
    return n;
}

/* Record one command option; returns 0, or an exit status after complaining. */
static int command_option(const struct command *cmd, struct args *a, int argc, char **argv, int *i)
{
    char buf[CTL_SHOWN];
    const char *value;

    for (size_t k = 0; k < sizeof(flags) / sizeof(flags[0]); k++) {
        if ((cmd->options & flags[k].bit) && strcmp(argv[*i], flags[k].name) == 0) {
            a->flags |= flags[k].bit;
            return 0;
        }
    }
    for (size_t k = 0; k < sizeof(options) / sizeof(options[0]); k++) {
        if (!(cmd->options & options[k].bit))
            continue;
        int found = option_value(options[k].name, argc, argv, i, &value);
        if (found == 0)
            continue;
        if (found == 2)
            return CTL_EXIT_USAGE;
        a->given |= options[k].bit;
        const char **single = options[k].bit == OPT_PLAN        ? &a->plan
                              : options[k].bit == OPT_LABEL     ? &a->label
                              : options[k].bit == OPT_TTL       ? &a->ttl
                              : options[k].bit == OPT_CLIENT_ID ? &a->client_id
                              : options[k].bit == OPT_FROM      ? &a->from
                                                                : NULL;
        if (single != NULL) {
            if (*single != NULL)
                return complain(CTL_EXIT_USAGE, "%s given more than once", options[k].name);
            *single = value;
            return 0;
        }
        for (int kind = 0; kind < FILTER_KINDS; kind++)
            if (strcmp(filter_option[kind], options[k].name) == 0)
                a->filters[a->filter_count++] = (struct raw_filter){kind, value};
        return 0;
    }
    return complain(CTL_EXIT_USAGE, "%s %s: unknown option '%s' (usage: aviaryctl %s %s %s)",
                    cmd->group, cmd->verb, log_escape_str(argv[*i], buf, sizeof(buf)), cmd->group,
                    cmd->verb, cmd->synopsis);
}

/*
 * The command's operands and options, in any order; "--" ends the options.
 * Sets *help for -h/--help. Returns 0 or an exit status after complaining.
 */
static int command_args(const struct command *cmd, int argc, char **argv, int i, struct ctl *ctl,
                        struct args *a, bool *help)
{
    size_t want = operand_count(cmd);
    bool options_done = false;
    char buf[CTL_SHOWN];
    int rc;

    a->filters = calloc((size_t)argc, sizeof(*a->filters));
    if (a->filters == NULL)
        return out_of_memory();
    for (; i < argc; i++) {
        const char *arg = argv[i];
        if (!options_done && strcmp(arg, "--") == 0) {
            options_done = true;
        } else if (!options_done && (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0)) {
            *help = true;
        } else if (!options_done && strcmp(arg, "--json") == 0) {
            ctl->json = true;
        } else if (!options_done && strncmp(arg, "--", 2) == 0) {
            /* single-dash words are operands: "-5" is a (bad) value, not an option */
            if ((rc = command_option(cmd, a, argc, argv, &i)) != 0)
                return rc;
        } else if (a->operand_count < want) {
            a->operands[a->operand_count++] = arg;
        } else {
            return complain(CTL_EXIT_USAGE, "%s %s: unexpected argument '%s'", cmd->group,
                            cmd->verb, log_escape_str(arg, buf, sizeof(buf)));
        }
    }
    if (!*help && a->operand_count < want)
        return complain(CTL_EXIT_USAGE, "%s %s: missing %s (usage: aviaryctl %s %s %s)", cmd->group,
                        cmd->verb, cmd->operand_names[a->operand_count], cmd->group, cmd->verb,
                        cmd->synopsis);
    return 0;
}

/* Where the global options go. */
struct globals {
    const char *conf, *db, *cluster, *cluster_ca;
};

/* -c, --db, --cluster, --cluster-ca, --json, -h, -V before the command. 0 or an exit status. */
static int global_args(int argc, char **argv, int *i, struct globals *g, struct ctl *ctl,
                       bool *help, bool *version)
{
    char buf[CTL_SHOWN];

    for (; *i < argc && argv[*i][0] == '-'; (*i)++) {
        const char *arg = argv[*i];
        int found;
        if (strcmp(arg, "--") == 0) {
            (*i)++;
            break;
        }
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            *help = true;
            continue;
        }
        if (strcmp(arg, "-V") == 0 || strcmp(arg, "--version") == 0) {
            *version = true;
            continue;
        }
        if (strcmp(arg, "--json") == 0) {
            ctl->json = true;
            continue;
        }
        if ((found = option_value("-c", argc, argv, i, &g->conf)) != 0 ||
            (found = option_value("--config", argc, argv, i, &g->conf)) != 0 ||
            (found = option_value("--db", argc, argv, i, &g->db)) != 0 ||
            (found = option_value("--cluster-ca", argc, argv, i, &g->cluster_ca)) != 0 ||
            (found = option_value("--cluster", argc, argv, i, &g->cluster)) != 0) {
            if (found == 2)
                return CTL_EXIT_USAGE;
            continue;
        }
        return complain(CTL_EXIT_USAGE, "unknown option '%s' (see aviaryctl --help)",
                        log_escape_str(arg, buf, sizeof(buf)));
    }
    if (g->conf != NULL && g->conf[0] == '\0')
        return complain(CTL_EXIT_USAGE, "-c: empty file name");
    if (g->db != NULL && g->db[0] == '\0')
        return complain(CTL_EXIT_USAGE, "--db: empty path");
    if (g->db != NULL && g->cluster != NULL)
        return complain(CTL_EXIT_USAGE, "--db and --cluster: one or the other (the catalog is "
                                        "either a database file or in the cluster's Redis)");
    return 0;
}

/*
 * Check `cmd`'s arguments, open the database and run `cmd` with its output
 * held in memory and written to standard output only when it succeeded: a
 * failure prints its one line on standard error and nothing else, even when
 * the database fails in the middle of a listing.
 */
static int command_run(const struct command *cmd, struct ctl *ctl, struct args *a)
{
    int rc = output_open(ctl);

    if (rc == 0 && cmd->check != NULL)
        rc = cmd->check(a);
    if (rc == 0 && ctl->shared)
        rc = cluster_run(cmd, ctl, a);
    else if (rc == 0) {
        if (cmd->db != DB_NONE)
            rc = ctl_become_owner(ctl->db_path);
        if (rc == 0 && cmd->db != DB_FILE && cmd->db != DB_NONE)
            rc = ctl_open(ctl, cmd->db == DB_CREATE);
        if (rc == 0)
            rc = cmd->run(ctl, a);
    }
    if (ctl->out && fclose(ctl->out) != 0 && rc == 0)
        rc = out_of_memory();
    ctl->out = NULL;
    if (rc == 0)
        fwrite(ctl->text, 1, ctl->len, stdout); /* checked with the final fflush */
    output_discard(ctl);
    return rc;
}

/*
 * The catalog in Redis, when --cluster, else AVIARY_CLUSTER (without --db),
 * else the -c file's cluster directive (without --db) names one; its CA
 * file from --cluster-ca, else the file's cluster-ca. 0 or an exit status.
 */
static int ctl_cluster(struct ctl *ctl, const struct globals *g, const struct config *cfg)
{
    const char *env = getenv("AVIARY_CLUSTER");
    const char *text = g->cluster         ? g->cluster
                       : g->db            ? NULL
                       : env && env[0]    ? env
                       : cfg->cluster_url ? cfg->cluster_url
                                          : NULL;
    const char *ca = g->cluster_ca ? g->cluster_ca : cfg->cluster_ca;
    struct redis_url url = {0};
    char err[512];

    if (!text)
        return 0;
    if (redis_url_parse(text, &url, err, sizeof(err)) < 0)
        return complain(CTL_EXIT_USAGE, "--cluster: %s", err);
    ctl->shared = shared_new(&url, ca);
    redis_url_clear(&url);
    return ctl->shared ? 0 : out_of_memory();
}

int main(int argc, char **argv)
{
    struct ctl ctl = {0};
    struct args a = {0};
    struct config cfg;
    const struct command *cmd;
    struct globals g = {0};
    bool help = false, version = false;
    char err[1024], buf[CTL_SHOWN], buf2[CTL_SHOWN], verbs[128];
    int i = 1, rc;

    config_init(&cfg);
    rc = global_args(argc, argv, &i, &g, &ctl, &help, &version);
    if (rc != 0)
        goto out;
    if (help || version) {
        if (help)
            usage(stdout);
        else
            printf("aviaryctl %s\n", PACKAGE_VERSION);
        goto out;
    }
    if (i >= argc) {
        rc = complain(CTL_EXIT_USAGE, "missing command (see aviaryctl --help)");
        goto out;
    }
    if (!group_known(argv[i])) {
        rc = complain(CTL_EXIT_USAGE, "unknown command '%s' (see aviaryctl --help)",
                      log_escape_str(argv[i], buf, sizeof(buf)));
        goto out;
    }
    if ((cmd = command_find(argv[i], "")) != NULL) {
        i -= 1; /* no verb: its operands follow the command's name */
    } else if (i + 1 >= argc) {
        rc = complain(CTL_EXIT_USAGE, "%s: missing command (%s)", argv[i],
                      group_verbs(argv[i], verbs, sizeof(verbs)));
        goto out;
    }
    if (cmd == NULL && (cmd = command_find(argv[i], argv[i + 1])) == NULL) {
        rc = complain(CTL_EXIT_USAGE, "unknown command '%s %s' (expected %s)", argv[i],
                      log_escape_str(argv[i + 1], buf2, sizeof(buf2)),
                      group_verbs(argv[i], verbs, sizeof(verbs)));
        goto out;
    }
    rc = command_args(cmd, argc, argv, i + 2, &ctl, &a, &help);
    if (rc != 0 || help) {
        if (help)
            usage(stdout);
        goto out;
    }
    if (g.conf != NULL && config_load_file(&cfg, g.conf, err, sizeof(err)) < 0) {
        rc = complain(CTL_EXIT_USAGE, "%s", err);
        goto out;
    }
    ctl.db_path = g.db != NULL ? g.db : cfg.db != NULL ? cfg.db : AVIARY_DEFAULT_DB;
    ctl.base = cfg.limits;
    if ((rc = ctl_cluster(&ctl, &g, &cfg)) == 0)
        rc = command_run(cmd, &ctl, &a);
out:
    /* A secret that never reached the terminal or the pipe must not pass for shown. */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        int saved = errno;
        if (rc == 0)
            rc = complain(CTL_EXIT_USAGE, "cannot write to standard output: %s", strerror(saved));
    }
    store_close(ctl.store);
    shared_free(ctl.shared);
    free(a.filters);
    manage_token_clear(&a.token);
    config_free(&cfg);
    return rc;
}
