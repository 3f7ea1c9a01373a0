/*
 * manage_json — the JSON that administration prints: what `aviaryctl --json`
 * writes and what the management API answers are the same objects, written
 * here. Every string is escaped, and bytes that are not UTF-8 become U+FFFD,
 * so the output always parses. Writes to a stdio stream (the API's worker
 * writes into memory with open_memstream). Any thread.
 */
#ifndef AVIARY_MANAGE_JSON_H
#define AVIARY_MANAGE_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "store/store.h"
#include "tenancy/manage.h"

/* A JSON string of the NUL-terminated `s`. */
void manage_json_string(FILE *out, const char *s);

/* manage_json_string(), or null for NULL. */
void manage_json_string_or_null(FILE *out, const char *s);

/*
 * The opening of a JSON object: `members` holds a key, its string value, the
 * next key... and NULL. Keys are plain words of ours; the caller closes it.
 */
void manage_json_members(FILE *out, const char *const *members);

/* Limits as a JSON object of numbers: a plan's, or an instance's own. */
void manage_json_limits(FILE *out, const struct store_limit *limits, size_t count);

/* ISO 8601 in UTC, e.g. 2026-11-23T07:30:00Z, into `buf`; returns `buf`. */
const char *manage_iso_time(int64_t t, char *buf, size_t size);

/* The opening of a list element: "[" before the first, "," between, one per line. */
void manage_json_list_next(FILE *out, size_t *n);

/* The end of a list of `n` elements, and the line. */
void manage_json_list_end(FILE *out, size_t n);

/* An instance's object up to the value of its "limits", which differs by use. */
void manage_json_instance(FILE *out, const char *name, const char *plan, int64_t created,
                          size_t tokens);

/* An instance as a listing shows it: its own limits only. */
void manage_json_instance_listed(FILE *out, const struct store_instance *inst);

/* An instance with every effective limit and where it comes from, and the line's end. */
void manage_json_instance_view(FILE *out, const struct manage_instance_view *v);

/* A plan and the limits it sets. */
void manage_json_plan(FILE *out, const char *plan, const struct store_limit *limits, size_t count);

/*
 * A token's members, without the braces; `created` < 0 leaves the creation
 * time and the status out. The status is the one at `now`.
 */
void manage_json_token_members(FILE *out, const struct store_token *t, int64_t now);

/* An admin key (never its secret, which is not kept). */
void manage_json_admin_key(FILE *out, const struct store_admin_key *k);

#endif
