#include "util/error.h"

#include <stdio.h>

void error_vset(char *err, size_t errlen, const char *fmt, va_list ap)
{
    if (err == NULL || errlen == 0)
        return;
    vsnprintf(err, errlen, fmt, ap);
}

int error_set(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    error_vset(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}
