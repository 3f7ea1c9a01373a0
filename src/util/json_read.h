/*
 * json_read — a small, strict JSON reader (RFC 8259) for request bodies.
 *
 * The whole text is read into a tree in one call: objects, arrays, strings
 * (escapes, \u with surrogate pairs, decoded to UTF-8), numbers (kept as
 * their text), true, false and null. Strict: no comments, no trailing
 * commas, no leading zeros, no bytes that are not UTF-8, no duplicate keys,
 * nothing after the value but white space. Bounded: at most JSON_READ_MAX_DEPTH
 * nested arrays and objects and JSON_MAX_TEXT bytes of text. An error says
 * what was wrong and at which byte offset. Pure: no I/O, no globals.
 *
 * Ownership: json_read() returns a tree the caller frees with json_value_free();
 * every string and node in it belongs to the tree.
 */
#ifndef AVIARY_JSON_READ_H
#define AVIARY_JSON_READ_H

#include <stdbool.h>
#include <stddef.h>

#define JSON_READ_MAX_DEPTH 32
#define JSON_MAX_TEXT (1u << 20)

enum json_type {
    JSON_NULL,
    JSON_FALSE,
    JSON_TRUE,
    JSON_NUMBER,
    JSON_STRING,
    JSON_ARRAY,
    JSON_OBJECT,
};

struct json_member;

struct json_value {
    enum json_type type;
    /* JSON_STRING: the decoded text, NUL-terminated (it may hold a NUL: see len).
       JSON_NUMBER: the number as written, NUL-terminated. */
    char *text;
    size_t len;
    /* JSON_ARRAY: `count` items; JSON_OBJECT: `count` members, in the order given. */
    struct json_value *items;
    struct json_member *members;
    size_t count;
};

struct json_member {
    char *key; /* decoded, NUL-terminated */
    size_t key_len;
    struct json_value value;
};

/*
 * Read the `len` bytes at `text` as one JSON value. Returns the tree, or NULL
 * with "offset N: what" in `err` (or "out of memory").
 */
struct json_value *json_read(const char *text, size_t len, char *err, size_t errlen);

/* Free a tree json_read() returned. NULL is fine. */
void json_value_free(struct json_value *v);

/* The value of member `key` of object `obj`, or NULL (also when `obj` is not an object). */
const struct json_value *json_get(const struct json_value *obj, const char *key);

/* The name of a type for messages: "a string", "an object"... */
const char *json_type_name(enum json_type type);

/*
 * A number that is a non-negative integer without fraction or exponent,
 * at most `max`, into *out. Returns false otherwise.
 */
bool json_value_uint(const struct json_value *v, unsigned long long max, unsigned long long *out);

/*
 * Read `len` bytes of `text` as one JSON object whose members are strings,
 * numbers, true, false or null: nothing nested, no name twice, valid UTF-8,
 * no U+0000 in a string. For each of the `n` names in `keys`, values[i] is
 * set to a copy of that member's string (unescaped, NUL-terminated, the
 * caller frees it), or NULL when the object has no such member or its value
 * is not a string. Returns 0, -EINVAL when the text is not such an object
 * (every values[i] NULL then), or -ENOMEM.
 */
int json_read_flat(const char *text, size_t len, const char *const *keys, char **values, size_t n);

#endif
