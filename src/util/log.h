/*
 * log — one line per event, to stderr or syslog, filtered by level.
 *
 * The only process-wide state in aviary: the level and the sink, set once by
 * the program at start-up (log_open) before any other thread exists. Any
 * module but codec may call log_msg().
 */
#ifndef AVIARY_LOG_H
#define AVIARY_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

enum log_level {
    LOG_LEVEL_ERROR = 0,
    LOG_LEVEL_WARNING = 1,
    LOG_LEVEL_NOTICE = 2,
    LOG_LEVEL_INFO = 3,
    LOG_LEVEL_DEBUG = 4,
};

/* Set the threshold and the sink (`use_syslog` false: stderr). `ident` names the program. */
void log_open(const char *ident, enum log_level level, bool use_syslog);

/* Change the threshold at run time. */
void log_set_level(enum log_level level);

/* True when a message at `level` would be written (to skip building costly arguments). */
bool log_enabled(enum log_level level);

/* Parse "error", "warning", "notice", "info" or "debug". Returns the level or -1. */
int log_level_parse(const char *name);

/* Write one line at `level`; a newline is added. */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Copy `len` bytes of untrusted text (a topic, a client id) into `out` for a
 * log line: printable ASCII as it is, everything else as \xHH, so no client
 * can forge a line or a terminal escape. Truncates to fit `size`, ending
 * with "..." then. Returns `out`.
 */
char *log_escape(const void *data, size_t len, char *out, size_t size);

/* log_escape() of a NUL-terminated string; also for one-line error messages. */
char *log_escape_str(const char *s, char *out, size_t size);

/*
 * Events that could flood the log (refusals, drops) are counted, and logged
 * at most once per interval with the count so far:
 *
 *     if (log_every_due(&inst->refused_log, time(NULL), 10))
 *         log_notice("... (%llu so far)", (unsigned long long)inst->refused_log.count);
 */
struct log_every {
    uint64_t count; /* events so far */
    time_t last;    /* when a line was last due; 0: never */
};

/* Count one more event; true when a line is due (none in the last `interval` seconds). */
static inline bool log_every_due(struct log_every *e, time_t now, unsigned interval)
{
    e->count++;
    if (e->last && now - e->last < (time_t)interval)
        return false;
    e->last = now;
    return true;
}

/*
 * Count one more event in *count; true for the first and then every `n`th,
 * for events whose count says more than their time (a queue that drops, a
 * listener that pauses): one line per batch, with the count so far.
 */
static inline bool log_every_nth(uint64_t *count, unsigned n)
{
    return (*count)++ % n == 0;
}

#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_LEVEL_NOTICE, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)

#endif
