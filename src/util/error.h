/*
 * error — filling a caller's error buffer. util and store report failures
 * as text in a (char *err, size_t errlen) pair that the caller may leave
 * NULL or empty when it wants no text; this is the one place that knows.
 */
#ifndef AVIARY_ERROR_H
#define AVIARY_ERROR_H

#include <stdarg.h>
#include <stddef.h>

/*
 * Format the message into `err` (when it has room for anything) and return
 * -1, so that a failing function can end with `return error_set(...)`.
 */
int error_set(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* The same from a va_list, for callers that return a code of their own. */
void error_vset(char *err, size_t errlen, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

#endif
