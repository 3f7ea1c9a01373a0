/*
 * json — JSON text: a writer that builds one document into a growing
 * buffer (json_read.h reads JSON).
 *
 * The writer is for documents the program makes (system topics, HTTP
 * answers): the caller opens objects and arrays, names members and adds
 * values; commas and escaping are the writer's. Strings are escaped as
 * RFC 8259 asks (quote, backslash, control characters); valid UTF-8 passes
 * through and an invalid byte becomes U+FFFD, so the text is always valid
 * JSON in UTF-8. Out of memory (or nesting deeper than JSON_MAX_DEPTH) marks
 * the writer failed; every later call does nothing, and the caller checks
 * `failed` once at the end rather than after each call.
 *
 *     struct json j;
 *     json_init(&j);
 *     json_object_begin(&j);
 *     json_member_string(&j, "type", "connected");
 *     json_member_uint(&j, "size", 12);
 *     json_object_end(&j);
 *     if (!j.failed) use(j.text, j.len);
 *     json_free(&j);
 *
 * The writer owns its buffer until json_take() hands it over. Pure: no
 * globals, no I/O.
 */
#ifndef AVIARY_JSON_H
#define AVIARY_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Objects and arrays nest at most this deep. */
#define JSON_MAX_DEPTH 32

struct json {
    char *text; /* NUL-terminated while not failed; owned */
    size_t len; /* bytes of text, the NUL not counted */
    size_t cap;
    bool failed;        /* out of memory, or a misuse (too deep, unbalanced) */
    bool after_key;     /* a member's name was written: its value comes next */
    unsigned depth;     /* open objects and arrays */
    uint64_t non_empty; /* bit d: the container at depth d has an item already */
};

/* An empty writer; it allocates nothing until the first value. */
void json_init(struct json *j);

/* Free the writer's buffer (NULL after json_take()). */
void json_free(struct json *j);

/*
 * Hand over the text: returns it (the caller frees it) and its length in
 * *len, or NULL when the writer failed or nesting is unbalanced. The writer
 * is empty again afterwards.
 */
char *json_take(struct json *j, size_t *len);

void json_object_begin(struct json *j);
void json_object_end(struct json *j);
void json_array_begin(struct json *j);
void json_array_end(struct json *j);

/* The name of the next member of the open object; its value follows. */
void json_key(struct json *j, const char *key);

/* Values: in an array, after json_key() in an object, or alone at the top. */
void json_string(struct json *j, const char *s);
void json_string_n(struct json *j, const char *s, size_t len);
void json_int(struct json *j, int64_t v);
void json_uint(struct json *j, uint64_t v);
/* A number with up to 6 significant decimals after the point; NaN and infinities are null. */
void json_double(struct json *j, double v);
void json_bool(struct json *j, bool v);
void json_null(struct json *j);

/* A member: json_key() and the value. A NULL string is written as null. */
void json_member_string(struct json *j, const char *key, const char *s);
void json_member_int(struct json *j, const char *key, int64_t v);
void json_member_uint(struct json *j, const char *key, uint64_t v);
void json_member_double(struct json *j, const char *key, double v);
void json_member_bool(struct json *j, const char *key, bool v);

#endif
