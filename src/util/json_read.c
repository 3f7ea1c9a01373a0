/*
 * json_read — a recursive-descent reader; recursion is bounded by
 * JSON_READ_MAX_DEPTH, so the stack it takes is too (see json_read.h).
 */
#include "util/json_read.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"
#include "util/utf8.h"

struct reader {
    const unsigned char *p;
    size_t len, pos;
    unsigned depth;
    char *err;
    size_t errlen;
    bool failed;
};

static int read_value(struct reader *r, struct json_value *out);

static int fail_at(struct reader *r, size_t pos, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Record the first failure only: it is the one that explains the others. */
static int fail_at(struct reader *r, size_t pos, const char *fmt, ...)
{
    char what[160];
    va_list ap;

    if (r->failed)
        return -1;
    r->failed = true;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    error_set(r->err, r->errlen, "offset %zu: %s", pos, what);
    return -1;
}

static int no_memory(struct reader *r)
{
    if (!r->failed) {
        r->failed = true;
        error_set(r->err, r->errlen, "out of memory");
    }
    return -1;
}

static void skip_space(struct reader *r)
{
    while (r->pos < r->len && (r->p[r->pos] == ' ' || r->p[r->pos] == '\t' ||
                               r->p[r->pos] == '\n' || r->p[r->pos] == '\r'))
        r->pos++;
}

/* What is at the current position, for messages. */
static int unexpected(struct reader *r, const char *wanted)
{
    if (r->pos >= r->len)
        return fail_at(r, r->pos, "the text ends where %s was expected", wanted);
    unsigned char c = r->p[r->pos];
    if (c >= 0x20 && c < 0x7f)
        return fail_at(r, r->pos, "'%c' where %s was expected", c, wanted);
    return fail_at(r, r->pos, "byte 0x%02x where %s was expected", c, wanted);
}

static size_t utf8_put(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xe0 | cp >> 12);
        out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
        out[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | cp >> 18);
    out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
    out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Four hex digits at the position into *cp; -1 after failing. */
static int read_hex4(struct reader *r, uint32_t *cp)
{
    *cp = 0;
    for (int i = 0; i < 4; i++, r->pos++) {
        unsigned char c = r->pos < r->len ? r->p[r->pos] : 0;
        int v = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (v < 0)
            return unexpected(r, "a hex digit of a \\u escape");
        *cp = *cp << 4 | (uint32_t)v;
    }
    return 0;
}

/* After "\u": one code point, a surrogate pair taken whole, into *cp. */
static int read_unicode_escape(struct reader *r, uint32_t *cp)
{
    size_t start = r->pos - 2;
    uint32_t low;

    if (read_hex4(r, cp) < 0)
        return -1;
    if (*cp >= 0xdc00 && *cp <= 0xdfff)
        return fail_at(r, start, "a low surrogate \\u%04x without a high one before it",
                       (unsigned)*cp);
    if (*cp < 0xd800 || *cp > 0xdbff)
        return 0;
    if (r->pos + 2 > r->len || r->p[r->pos] != '\\' || r->p[r->pos + 1] != 'u')
        return fail_at(r, start, "a high surrogate \\u%04x not followed by a low one",
                       (unsigned)*cp);
    r->pos += 2;
    if (read_hex4(r, &low) < 0)
        return -1;
    if (low < 0xdc00 || low > 0xdfff)
        return fail_at(r, start, "a high surrogate \\u%04x not followed by a low one",
                       (unsigned)*cp);
    *cp = 0x10000 + ((*cp - 0xd800) << 10) + (low - 0xdc00);
    return 0;
}

/* One escape after the backslash, appended at out; its length, or -1. */
static int read_escape(struct reader *r, char *out)
{
    static const char named[] = "\"\\/bfnrt", value[] = "\"\\/\b\f\n\r\t";
    unsigned char c = r->pos < r->len ? r->p[r->pos] : 0;
    const char *k = c ? strchr(named, c) : NULL;
    uint32_t cp;

    if (k) {
        r->pos++;
        *out = value[k - named];
        return 1;
    }
    if (c != 'u')
        return unexpected(r, "an escape (one of \" \\ / b f n r t u)");
    r->pos++;
    if (read_unicode_escape(r, &cp) < 0)
        return -1;
    return (int)utf8_put(cp, out);
}

/*
 * A string at the opening quote, decoded into a new NUL-terminated buffer.
 * The decoded text is never longer than the source, so one allocation of the
 * source's length suffices.
 */
static int read_string(struct reader *r, char **text, size_t *len)
{
    size_t start = r->pos++, n = 0, end = r->pos;

    while (end < r->len && r->p[end] != '"')
        end += r->p[end] == '\\' ? 2 : 1;
    char *out = malloc(end - start + 1);
    if (!out)
        return no_memory(r);
    for (;;) {
        if (r->pos >= r->len) {
            free(out);
            return fail_at(r, start, "a string without its closing quote");
        }
        unsigned char c = r->p[r->pos];
        if (c == '"')
            break;
        if (c < 0x20) {
            free(out);
            return fail_at(r, r->pos, "control character 0x%02x in a string (escape it)", c);
        }
        if (c == '\\') {
            r->pos++;
            int k = read_escape(r, out + n);
            if (k < 0) {
                free(out);
                return -1;
            }
            n += (size_t)k;
            continue;
        }
        size_t k = utf8_length(r->p + r->pos, r->len - r->pos);
        if (k == 0) {
            free(out);
            return fail_at(r, r->pos, "a string that is not valid UTF-8");
        }
        memcpy(out + n, r->p + r->pos, k);
        n += k;
        r->pos += k;
    }
    r->pos++;
    out[n] = '\0';
    *text = out;
    *len = n;
    return 0;
}

static bool is_digit(struct reader *r)
{
    return r->pos < r->len && r->p[r->pos] >= '0' && r->p[r->pos] <= '9';
}

/* -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, kept as text. */
static int read_number(struct reader *r, struct json_value *out)
{
    size_t start = r->pos;

    if (r->p[r->pos] == '-')
        r->pos++;
    if (!is_digit(r))
        return unexpected(r, "a digit");
    if (r->p[r->pos++] == '0' && is_digit(r))
        return fail_at(r, start, "a number with a leading zero");
    while (is_digit(r))
        r->pos++;
    if (r->pos < r->len && r->p[r->pos] == '.') {
        r->pos++;
        if (!is_digit(r))
            return unexpected(r, "a digit after the decimal point");
        while (is_digit(r))
            r->pos++;
    }
    if (r->pos < r->len && (r->p[r->pos] == 'e' || r->p[r->pos] == 'E')) {
        r->pos++;
        if (r->pos < r->len && (r->p[r->pos] == '+' || r->p[r->pos] == '-'))
            r->pos++;
        if (!is_digit(r))
            return unexpected(r, "a digit of the exponent");
        while (is_digit(r))
            r->pos++;
    }
    out->type = JSON_NUMBER;
    out->len = r->pos - start;
    if (!(out->text = malloc(out->len + 1)))
        return no_memory(r);
    memcpy(out->text, r->p + start, out->len);
    out->text[out->len] = '\0';
    return 0;
}

/* Room for one more element of `size` bytes in *items, which holds `count`. */
static int grow(struct reader *r, void **items, size_t count, size_t size)
{
    /* Capacities are the powers of two, so the count says when to grow. */
    if (count != 0 && (count & (count - 1)) != 0)
        return 0;
    void *p = realloc(*items, (count ? count * 2 : 1) * size);
    if (!p)
        return no_memory(r);
    *items = p;
    return 0;
}

/* ',' or `close` after an element; 1 at the close, 0 after a comma, -1. */
static int read_separator(struct reader *r, char close, const char *what)
{
    skip_space(r);
    if (r->pos < r->len && r->p[r->pos] == ',') {
        r->pos++;
        return 0;
    }
    if (r->pos < r->len && r->p[r->pos] == close) {
        r->pos++;
        return 1;
    }
    return unexpected(r, what);
}

static int read_array(struct reader *r, struct json_value *out)
{
    out->type = JSON_ARRAY;
    r->pos++;
    skip_space(r);
    if (r->pos < r->len && r->p[r->pos] == ']') {
        r->pos++;
        return 0;
    }
    for (;;) {
        if (grow(r, (void **)&out->items, out->count, sizeof(*out->items)) < 0)
            return -1;
        struct json_value *item = &out->items[out->count];
        memset(item, 0, sizeof(*item));
        out->count++;
        if (read_value(r, item) < 0)
            return -1;
        int rc = read_separator(r, ']', "',' or ']' after an array element");
        if (rc != 0)
            return rc < 0 ? -1 : 0;
    }
}

static int read_member(struct reader *r, struct json_value *obj)
{
    size_t at;

    skip_space(r);
    if (r->pos >= r->len || r->p[r->pos] != '"')
        return unexpected(r, "a key (a string)");
    at = r->pos;
    if (grow(r, (void **)&obj->members, obj->count, sizeof(*obj->members)) < 0)
        return -1;
    struct json_member *m = &obj->members[obj->count];
    memset(m, 0, sizeof(*m));
    obj->count++;
    if (read_string(r, &m->key, &m->key_len) < 0)
        return -1;
    for (size_t i = 0; i + 1 < obj->count; i++)
        if (obj->members[i].key_len == m->key_len &&
            memcmp(obj->members[i].key, m->key, m->key_len) == 0)
            return fail_at(r, at, "the key \"%.40s\" appears twice", m->key);
    skip_space(r);
    if (r->pos >= r->len || r->p[r->pos] != ':')
        return unexpected(r, "':' after a key");
    r->pos++;
    return read_value(r, &m->value);
}

static int read_object(struct reader *r, struct json_value *out)
{
    out->type = JSON_OBJECT;
    r->pos++;
    skip_space(r);
    if (r->pos < r->len && r->p[r->pos] == '}') {
        r->pos++;
        return 0;
    }
    for (;;) {
        if (read_member(r, out) < 0)
            return -1;
        int rc = read_separator(r, '}', "',' or '}' after an object member");
        if (rc != 0)
            return rc < 0 ? -1 : 0;
    }
}

/* One of the literal words, whose first letter is at the position. */
static int read_word(struct reader *r, struct json_value *out)
{
    static const struct {
        const char *word;
        enum json_type type;
    } words[] = {{"true", JSON_TRUE}, {"false", JSON_FALSE}, {"null", JSON_NULL}};

    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        size_t n = strlen(words[i].word);
        if (r->len - r->pos >= n && memcmp(r->p + r->pos, words[i].word, n) == 0) {
            r->pos += n;
            out->type = words[i].type;
            return 0;
        }
    }
    return unexpected(r, "a value");
}

static int read_nested(struct reader *r, struct json_value *out, bool array)
{
    if (r->depth >= JSON_READ_MAX_DEPTH)
        return fail_at(r, r->pos, "nested deeper than %d arrays and objects", JSON_READ_MAX_DEPTH);
    r->depth++;
    int rc = array ? read_array(r, out) : read_object(r, out);
    r->depth--;
    return rc;
}

static int read_value(struct reader *r, struct json_value *out)
{
    skip_space(r);
    if (r->pos >= r->len)
        return unexpected(r, "a value");
    switch (r->p[r->pos]) {
    case '{':
        return read_nested(r, out, false);
    case '[':
        return read_nested(r, out, true);
    case '"':
        out->type = JSON_STRING;
        return read_string(r, &out->text, &out->len);
    case '-':
    case '0' ... '9':
        return read_number(r, out);
    default:
        return read_word(r, out);
    }
}

static void value_clear(struct json_value *v)
{
    for (size_t i = 0; v->type == JSON_ARRAY && i < v->count; i++)
        value_clear(&v->items[i]);
    for (size_t i = 0; v->type == JSON_OBJECT && i < v->count; i++) {
        free(v->members[i].key);
        value_clear(&v->members[i].value);
    }
    free(v->items);
    free(v->members);
    free(v->text);
}

struct json_value *json_read(const char *text, size_t len, char *err, size_t errlen)
{
    struct reader r = {.p = (const unsigned char *)text, .len = len, .err = err, .errlen = errlen};
    struct json_value *v;

    if (len > JSON_MAX_TEXT) {
        error_set(err, errlen, "the text is longer than %u bytes", JSON_MAX_TEXT);
        return NULL;
    }
    if (!(v = calloc(1, sizeof(*v)))) {
        error_set(err, errlen, "out of memory");
        return NULL;
    }
    if (read_value(&r, v) == 0) {
        skip_space(&r);
        if (r.pos == r.len)
            return v;
        unexpected(&r, "the end of the text");
    }
    json_value_free(v);
    return NULL;
}

void json_value_free(struct json_value *v)
{
    if (!v)
        return;
    value_clear(v);
    free(v);
}

const struct json_value *json_get(const struct json_value *obj, const char *key)
{
    size_t len = strlen(key);

    if (!obj || obj->type != JSON_OBJECT)
        return NULL;
    for (size_t i = 0; i < obj->count; i++)
        if (obj->members[i].key_len == len && memcmp(obj->members[i].key, key, len) == 0)
            return &obj->members[i].value;
    return NULL;
}

const char *json_type_name(enum json_type type)
{
    static const char *const names[] = {"null",     "false",    "true",     "a number",
                                        "a string", "an array", "an object"};
    return (unsigned)type < sizeof(names) / sizeof(names[0]) ? names[type] : "a value";
}

bool json_value_uint(const struct json_value *v, unsigned long long max, unsigned long long *out)
{
    unsigned long long n = 0;

    if (!v || v->type != JSON_NUMBER || v->text[0] == '-')
        return false;
    for (const char *p = v->text; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        unsigned d = (unsigned)(*p - '0');
        if (d > max || n > (max - d) / 10)
            return false;
        n = n * 10 + d;
    }
    *out = n;
    return true;
}

int json_read_flat(const char *text, size_t len, const char *const *keys, char **values, size_t n)
{
    char err[128];
    struct json_value *v = json_read(text, len, err, sizeof(err));
    int rc = v ? 0 : strcmp(err, "out of memory") == 0 ? -ENOMEM : -EINVAL;

    for (size_t i = 0; i < n; i++)
        values[i] = NULL;
    if (rc == 0 && v->type != JSON_OBJECT)
        rc = -EINVAL;
    for (size_t m = 0; rc == 0 && m < v->count; m++) {
        const struct json_member *mem = &v->members[m];
        enum json_type t = mem->value.type;
        /* Flat: no arrays or objects; no U+0000 in a name or a string. */
        if (t == JSON_ARRAY || t == JSON_OBJECT || strlen(mem->key) != mem->key_len ||
            (t == JSON_STRING && strlen(mem->value.text) != mem->value.len))
            rc = -EINVAL;
        for (size_t k = 0; rc == 0 && k < n; k++)
            if (t == JSON_STRING && strcmp(keys[k], mem->key) == 0 &&
                !(values[k] = strdup(mem->value.text)))
                rc = -ENOMEM;
    }
    if (rc < 0)
        for (size_t i = 0; i < n; i++) {
            free(values[i]);
            values[i] = NULL;
        }
    json_value_free(v);
    return rc;
}
