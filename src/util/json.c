#include "util/json.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/*
 * The length of the valid UTF-8 sequence at `s` (`n` bytes available), or 0
 * when it is not one (overlong forms, surrogates and code points past
 * U+10FFFF are not).
 */
static size_t utf8_valid_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF; /* the range of the second byte */

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4;
    else
        return 0;
    if (c == 0xE0)
        lo = 0xA0;
    else if (c == 0xED)
        hi = 0x9F;
    else if (c == 0xF0)
        lo = 0x90;
    else if (c == 0xF4)
        hi = 0x8F;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return len;
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
        size_t n = c >= 0x20 && c != '"' && c != '\\' ? utf8_valid_len(p + i, len - i) : 0;
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

/* ---- the reader of flat objects ------------------------------------------------ */

struct json_cursor {
    const unsigned char *p, *end;
};

static void skip_space(struct json_cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static bool take_char(struct json_cursor *c, char want)
{
    skip_space(c);
    if (c->p == c->end || *c->p != (unsigned char)want)
        return false;
    c->p++;
    return true;
}

/* Four hex digits at the cursor as a number, or -1. */
static long read_hex4(struct json_cursor *c)
{
    long v = 0;

    if (c->end - c->p < 4)
        return -1;
    for (int i = 0; i < 4; i++) {
        unsigned char d = *c->p++;
        int x = d >= '0' && d <= '9'   ? d - '0'
                : d >= 'a' && d <= 'f' ? d - 'a' + 10
                : d >= 'A' && d <= 'F' ? d - 'A' + 10
                                       : -1;
        if (x < 0)
            return -1;
        v = v * 16 + x;
    }
    return v;
}

/* Code point `cp` as UTF-8 at `out`; returns the bytes written. */
static size_t utf8_put(unsigned long cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* The code point of a \u escape (the cursor after "\u"), a surrogate pair joined; -1: invalid. */
static long read_unicode_escape(struct json_cursor *c)
{
    long cp = read_hex4(c);

    if (cp >= 0xDC00 && cp <= 0xDFFF)
        return -1;
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (c->end - c->p < 2 || c->p[0] != '\\' || c->p[1] != 'u')
            return -1;
        c->p += 2;
        long lo = read_hex4(c);
        if (lo < 0xDC00 || lo > 0xDFFF)
            return -1;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    return cp == 0 ? -1 : cp; /* U+0000 could not be told from the string's end */
}

/* One escape (the cursor after the backslash) appended at `out`; returns its bytes, 0: invalid. */
static size_t read_escape(struct json_cursor *c, char *out)
{
    static const char letter[] = "\"\\/bfnrt";
    static const char meant[] = "\"\\/\b\f\n\r\t";

    if (c->p == c->end)
        return 0;
    unsigned char e = *c->p++;
    const char *hit = e ? strchr(letter, e) : NULL;
    if (hit) {
        *out = meant[hit - letter];
        return 1;
    }
    if (e != 'u')
        return 0;
    long cp = read_unicode_escape(c);
    return cp < 0 ? 0 : utf8_put((unsigned long)cp, out);
}

/*
 * A string at the cursor (its opening quote next), unescaped into a new
 * NUL-terminated copy in *out. Returns 0, -EINVAL or -ENOMEM.
 */
static int read_string(struct json_cursor *c, char **out)
{
    if (!take_char(c, '"'))
        return -EINVAL;
    /* Unescaped, a string is never longer than it is written. */
    char *s = malloc((size_t)(c->end - c->p) + 1);
    size_t n = 0;
    if (!s)
        return -ENOMEM;
    while (c->p < c->end && *c->p != '"') {
        size_t len;
        if (*c->p == '\\') {
            c->p++;
            len = read_escape(c, s + n);
        } else {
            len = *c->p < 0x20 ? 0 : utf8_valid_len(c->p, (size_t)(c->end - c->p));
            memcpy(s + n, c->p, len);
            c->p += len;
        }
        if (len == 0) {
            free(s);
            return -EINVAL;
        }
        n += len;
    }
    if (c->p == c->end || *c->p != '"') {
        free(s);
        return -EINVAL;
    }
    c->p++;
    s[n] = '\0';
    *out = s;
    return 0;
}

/* Skip the digits at the cursor; false when there are none. */
static bool skip_digits(struct json_cursor *c)
{
    const unsigned char *start = c->p;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9')
        c->p++;
    return c->p > start;
}

/* A number as RFC 8259 writes one: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool skip_number(struct json_cursor *c)
{
    if (c->p < c->end && *c->p == '-')
        c->p++;
    if (c->p < c->end && *c->p == '0')
        c->p++;
    else if (!skip_digits(c))
        return false;
    if (c->p < c->end && *c->p == '.') {
        c->p++;
        if (!skip_digits(c))
            return false;
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        c->p++;
        if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
            c->p++;
        if (!skip_digits(c))
            return false;
    }
    return true;
}

static bool skip_word(struct json_cursor *c, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0)
        return false;
    c->p += n;
    return true;
}

/*
 * A member's value: a string (copied to *out), or a number or literal
 * (skipped, *out stays NULL). Returns 0, -EINVAL or -ENOMEM.
 */
static int read_value(struct json_cursor *c, char **out)
{
    *out = NULL;
    skip_space(c);
    if (c->p == c->end)
        return -EINVAL;
    if (*c->p == '"')
        return read_string(c, out);
    if (*c->p == '-' || (*c->p >= '0' && *c->p <= '9'))
        return skip_number(c) ? 0 : -EINVAL;
    return skip_word(c, "true") || skip_word(c, "false") || skip_word(c, "null") ? 0 : -EINVAL;
}

/* Keep `value` (taken) as values[i] when `name` is keys[i]; a name seen twice is -EINVAL. */
static int keep_member(const char *name, char *value, bool *seen, const char *const *keys,
                       char **values, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(keys[i], name) != 0)
            continue;
        if (seen[i]) {
            free(value);
            return -EINVAL;
        }
        seen[i] = true;
        values[i] = value;
        return 0;
    }
    free(value);
    return 0;
}

/* The members between the braces (the cursor after '{'). Returns 0, -EINVAL or -ENOMEM. */
static int read_members(struct json_cursor *c, const char *const *keys, char **values, bool *seen,
                        size_t n)
{
    if (take_char(c, '}'))
        return 0;
    for (;;) {
        char *name, *value;
        int rc = read_string(c, &name);
        if (rc < 0)
            return rc;
        rc = take_char(c, ':') ? read_value(c, &value) : -EINVAL;
        if (rc == 0)
            rc = keep_member(name, value, seen, keys, values, n);
        free(name);
        if (rc < 0)
            return rc;
        if (take_char(c, '}'))
            return 0;
        if (!take_char(c, ','))
            return -EINVAL;
    }
}

int json_read_flat(const char *text, size_t len, const char *const *keys, char **values, size_t n)
{
    struct json_cursor c = {(const unsigned char *)text, (const unsigned char *)text + len};
    bool seen_small[8];
    bool *seen = n <= 8 ? seen_small : calloc(n, sizeof(*seen));
    int rc;

    for (size_t i = 0; i < n; i++)
        values[i] = NULL;
    if (!seen)
        return -ENOMEM;
    memset(seen, 0, n * sizeof(*seen));
    rc = take_char(&c, '{') ? read_members(&c, keys, values, seen, n) : -EINVAL;
    skip_space(&c);
    if (rc == 0 && c.p != c.end)
        rc = -EINVAL;
    if (rc < 0) {
        for (size_t i = 0; i < n; i++) {
            free(values[i]);
            values[i] = NULL;
        }
    }
    if (seen != seen_small)
        free(seen);
    return rc;
}
