#include "cluster/pressure.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* "*3 $8 smessage $N channel $N record": what Redis adds around a record, at most. */
#define PRESSURE_FRAMING 48

void pressure_init(struct pressure *p)
{
    *p = (struct pressure){.mark = PRESSURE_MARK_DEFAULT};
}

size_t pressure_cost(size_t record_len, size_t channel_len)
{
    return record_len + channel_len + PRESSURE_FRAMING;
}

bool pressure_add(struct pressure *p, size_t bytes)
{
    p->bytes += bytes;
    if (p->over || p->bytes <= p->mark)
        return false;
    p->over = true;
    p->pauses++;
    return true;
}

bool pressure_sub(struct pressure *p, size_t bytes)
{
    /* Never below zero: a count that went wrong must not hold publishers for ever. */
    p->bytes = bytes < p->bytes ? p->bytes - bytes : 0;
    if (!p->over || p->bytes >= p->mark / 2)
        return false;
    p->over = false;
    return true;
}

bool pressure_set_mark(struct pressure *p, size_t mark)
{
    p->mark = mark ? mark : PRESSURE_MARK_DEFAULT;
    return pressure_sub(p, 0);
}

/* The next number in `*s` (advanced past it); false at the end or on what is not one. */
static bool next_number(const char **s, unsigned long long *v)
{
    char *end;

    while (**s == ' ')
        (*s)++;
    if (**s < '0' || **s > '9')
        return false;
    errno = 0;
    *v = strtoull(*s, &end, 10);
    if (errno)
        return false;
    *s = end;
    return true;
}

size_t pressure_mark_of(const char *limits)
{
    const char *s = limits ? strstr(limits, "pubsub ") : NULL;
    unsigned long long hard, soft;
    size_t mark = PRESSURE_MARK_DEFAULT;

    if (!s)
        return 0;
    s += strlen("pubsub ");
    if (!next_number(&s, &hard) || !next_number(&s, &soft))
        return 0;
    /* 0 is "no limit" in Redis: that one bounds nothing. */
    if (hard && hard / 4 < mark)
        mark = (size_t)(hard / 4);
    if (soft && soft / 2 < mark)
        mark = (size_t)(soft / 2);
    return mark ? mark : 1;
}
