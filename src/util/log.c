#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>

static enum log_level log_threshold = LOG_LEVEL_NOTICE;
static bool log_to_syslog;
static const char *log_ident = "aviary";

static const char *const level_names[] = {"error", "warning", "notice", "info", "debug"};

void log_open(const char *ident, enum log_level level, bool use_syslog)
{
    log_ident = ident;
    log_threshold = level;
    log_to_syslog = use_syslog;
    if (use_syslog)
        openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

void log_set_level(enum log_level level)
{
    log_threshold = level;
}

bool log_enabled(enum log_level level)
{
    return level <= log_threshold;
}

int log_level_parse(const char *name)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
        if (strcmp(name, level_names[i]) == 0)
            return (int)i;
    return -1;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    static const int syslog_priority[] = {LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG};
    char line[1024];
    va_list ap;

    if (!log_enabled(level))
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);

    if (log_to_syslog) {
        syslog(syslog_priority[level], "%s", line);
        return;
    }
    struct timeval tv;
    struct tm tm;
    char stamp[32];
    gettimeofday(&tv, NULL);
    localtime_r(&tv.tv_sec, &tm);
    strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ld %s[%s] %s\n", stamp, (long)(tv.tv_usec / 1000), log_ident,
            level_names[level], line);
}

char *log_escape(const void *data, size_t len, char *out, size_t size)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = data;
    size_t o = 0;

    if (size == 0)
        return out;
    for (size_t i = 0; i < len; i++) {
        bool plain = p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\';
        size_t need = plain ? 1 : 4;
        /* Keep room for "..." and the NUL in case this is not the last byte. */
        if (o + need + 4 > size) {
            if (size >= 4) {
                o = o + 4 > size ? size - 4 : o;
                memcpy(out + o, "...", 3);
                o += 3;
            }
            break;
        }
        if (plain) {
            out[o++] = (char)p[i];
        } else {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[p[i] >> 4];
            out[o++] = hex[p[i] & 15];
        }
    }
    out[o] = '\0';
    return out;
}

char *log_escape_str(const char *s, char *out, size_t size)
{
    return log_escape(s, strlen(s), out, size);
}
