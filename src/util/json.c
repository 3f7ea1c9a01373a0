#include "util/json.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/utf8.h"

/* ---- the writer ------------------------------------------------------------ */

void json_init(struct json *j)
{
    memset(j, 0, sizeof(*j));
}

void json_free(struct json *j)
{
    free(j->text);
    json_init(j);
}

char *json_take(struct json *j, size_t *len)
{
    char *text = j->failed || j->depth || j->after_key ? NULL : j->text;

    if (!text)
        free(j->text);
    *len = text ? j->len : 0;
    json_init(j);
    return text;
}

/* Room for `more` bytes and the NUL. Returns false (and marks the writer failed) when out of
 * memory. */
static bool json_reserve(struct json *j, size_t more)
{
    if (j->failed)
        return false;
    if (j->len + more + 1 <= j->cap)
        return true;
    size_t cap = j->cap ? j->cap : 128;
    while (cap < j->len + more + 1)
        cap *= 2;
    char *grown = realloc(j->text, cap);
    if (!grown) {
        j->failed = true;
        return false;
    }
    j->text = grown;
    j->cap = cap;
    return true;
}

static void json_put(struct json *j, const char *s, size_t n)
{
    if (!json_reserve(j, n))
        return;
    memcpy(j->text + j->len, s, n);
    j->len += n;
    j->text[j->len] = '\0';
}

/* What goes before a value or a member's name: a comma after an earlier item. */
static void json_separate(struct json *j)
{
    if (j->after_key) {
        j->after_key = false;
        return;
    }
    if (j->depth == 0)
        return;
    uint64_t bit = 1ull << (j->depth - 1);
    if (j->non_empty & bit)
        json_put(j, ",", 1);
    j->non_empty |= bit;
}

static void json_open(struct json *j, char c)
{
    json_separate(j);
    if (j->depth >= JSON_MAX_DEPTH) {
        j->failed = true;
        return;
    }
    json_put(j, &c, 1);
    j->depth++;
    j->non_empty &= ~(1ull << (j->depth - 1));
}

static void json_close(struct json *j, char c)
{
    if (j->depth == 0 || j->after_key) {
        j->failed = true;
        return;
    }
    j->depth--;
    json_put(j, &c, 1);
}

void json_object_begin(struct json *j)
{
    json_open(j, '{');
}

void json_object_end(struct json *j)
{
    json_close(j, '}');
}

void json_array_begin(struct json *j)
{
    json_open(j, '[');
}

void json_array_end(struct json *j)
{
    json_close(j, ']');
}

/* One byte below U+0020, a quote or a backslash, escaped. */
static void json_escape_byte(struct json *j, unsigned char c)
{
    static const char named[] = "\"\\\b\f\n\r\t";
    static const char letter[] = "\"\\bfnrt";
    const char *hit = c ? strchr(named, c) : NULL;
    char esc[8];

    if (hit)
        snprintf(esc, sizeof(esc), "\\%c", letter[hit - named]);
    else
        snprintf(esc, sizeof(esc), "\\u%04x", c);
    json_put(j, esc, strlen(esc));
}

void json_string_n(struct json *j, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, run = 0; /* bytes from p + i - run on that pass through as they are */

    json_separate(j);
    json_put(j, "\"", 1);
    while (i < len) {
        unsigned char c = p[i];
        size_t n = c >= 0x20 && c != '"' && c != '\\' ? utf8_length(p + i, len - i) : 0;
        if (n) {
            i += n;
            run += n;
            continue;
        }
        json_put(j, (const char *)p + i - run, run);
        run = 0;
        if (c < 0x20 || c == '"' || c == '\\')
            json_escape_byte(j, c);
        else
            json_put(j, "\xEF\xBF\xBD", 3); /* U+FFFD for a byte that is not UTF-8 */
        i++;
    }
    json_put(j, (const char *)p + i - run, run);
    json_put(j, "\"", 1);
}

void json_string(struct json *j, const char *s)
{
    if (!s)
        json_null(j);
    else
        json_string_n(j, s, strlen(s));
}

void json_key(struct json *j, const char *key)
{
    if (j->depth == 0 || j->after_key) {
        j->failed = true;
        return;
    }
    json_string(j, key);
    json_put(j, ":", 1);
    j->after_key = true;
}

/* A value written as it is (a number, a literal). */
static void json_raw(struct json *j, const char *text)
{
    json_separate(j);
    json_put(j, text, strlen(text));
}

void json_int(struct json *j, int64_t v)
{
    char num[24];
    snprintf(num, sizeof(num), "%" PRId64, v);
    json_raw(j, num);
}

void json_uint(struct json *j, uint64_t v)
{
    char num[24];
    snprintf(num, sizeof(num), "%" PRIu64, v);
    json_raw(j, num);
}

void json_double(struct json *j, double v)
{
    char num[48];

    if (!isfinite(v)) {
        json_raw(j, "null");
        return;
    }
    /* %.6f for the usual magnitudes, trailing zeros cut: 2.5, not 2.500000. */
    if (v < 1e15 && v > -1e15) {
        snprintf(num, sizeof(num), "%.6f", v);
        size_t n = strlen(num);
        while (n > 1 && num[n - 1] == '0')
            num[--n] = '\0';
        if (num[n - 1] == '.')
            num[--n] = '\0';
        if (strcmp(num, "-0") == 0)
            strcpy(num, "0");
    } else {
        snprintf(num, sizeof(num), "%.17g", v);
    }
    json_raw(j, num);
}

void json_bool(struct json *j, bool v)
{
    json_raw(j, v ? "true" : "false");
}

void json_null(struct json *j)
{
    json_raw(j, "null");
}

void json_member_string(struct json *j, const char *key, const char *s)
{
    json_key(j, key);
    json_string(j, s);
}

void json_member_int(struct json *j, const char *key, int64_t v)
{
    json_key(j, key);
    json_int(j, v);
}

void json_member_uint(struct json *j, const char *key, uint64_t v)
{
    json_key(j, key);
    json_uint(j, v);
}

void json_member_double(struct json *j, const char *key, double v)
{
    json_key(j, key);
    json_double(j, v);
}

void json_member_bool(struct json *j, const char *key, bool v)
{
    json_key(j, key);
    json_bool(j, v);
}
