#include "util/journal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/*
 * A record in the buffer: this head, then the name and the token each with
 * its NUL, the payload, the properties and the Subscription Identifiers.
 * Copied in and out with memcpy, so the buffer needs no alignment.
 */
struct journal_head {
    uint32_t name_len, token_len, payload_len, props_len, sub_id_count;
    uint8_t type, qos, state, flags, options;
    uint16_t packet_id;
    uint32_t expiry, sub_id;
    int64_t instance;
    uint64_t session, message, seq;
    int64_t when_ms;
};

static size_t record_size(const struct journal_head *h)
{
    return sizeof(*h) + h->name_len + 1 + h->token_len + 1 + h->payload_len + h->props_len +
           (size_t)h->sub_id_count * sizeof(uint32_t);
}

static uint8_t *put(uint8_t *at, const void *src, size_t n)
{
    if (n)
        memcpy(at, src, n);
    return at + n;
}

static uint8_t *put_string(uint8_t *at, const char *s, size_t n)
{
    at = put(at, s, n);
    *at = '\0';
    return at + 1;
}

static int journal_reserve(struct journal *j, size_t n)
{
    if (j->cap - j->len >= n)
        return 0;
    size_t cap = j->cap ? j->cap : 4096;
    while (cap - j->len < n)
        cap *= 2;
    uint8_t *buf = realloc(j->buf, cap);
    if (!buf)
        return -ENOMEM;
    j->buf = buf;
    j->cap = cap;
    return 0;
}

int journal_append(struct journal *j, const struct journal_record *r)
{
    struct journal_head h = {
        .name_len = (uint32_t)r->name_len,
        .token_len = (uint32_t)r->token_len,
        .payload_len = (uint32_t)r->payload_len,
        .props_len = (uint32_t)r->props_len,
        .sub_id_count = (uint32_t)r->sub_id_count,
        .type = r->type,
        .qos = r->qos,
        .state = r->state,
        .flags = r->flags,
        .options = r->options,
        .packet_id = r->packet_id,
        .expiry = r->expiry,
        .sub_id = r->sub_id,
        .instance = r->instance,
        .session = r->session,
        .message = r->message,
        .seq = r->seq,
        .when_ms = r->when_ms,
    };
    size_t n = record_size(&h);

    if (journal_reserve(j, n) < 0)
        return -ENOMEM;
    uint8_t *at = put(j->buf + j->len, &h, sizeof(h));
    at = put_string(at, r->name, r->name_len);
    at = put_string(at, r->token, r->token_len);
    at = put(at, r->payload, r->payload_len);
    at = put(at, r->props, r->props_len);
    put(at, r->sub_ids, r->sub_id_count * sizeof(uint32_t));
    j->len += n;
    j->count++;
    return 0;
}

bool journal_next(const struct journal *j, size_t *pos, struct journal_record *r)
{
    struct journal_head h;

    if (*pos + sizeof(h) > j->len)
        return false;
    memcpy(&h, j->buf + *pos, sizeof(h));
    const uint8_t *at = j->buf + *pos + sizeof(h);
    *r = (struct journal_record){
        .type = h.type,
        .qos = h.qos,
        .state = h.state,
        .flags = h.flags,
        .options = h.options,
        .packet_id = h.packet_id,
        .expiry = h.expiry,
        .sub_id = h.sub_id,
        .instance = h.instance,
        .session = h.session,
        .message = h.message,
        .seq = h.seq,
        .when_ms = h.when_ms,
        .name = (const char *)at,
        .name_len = h.name_len,
        .token = (const char *)at + h.name_len + 1,
        .token_len = h.token_len,
        .payload_len = h.payload_len,
        .props_len = h.props_len,
        .sub_id_count = h.sub_id_count,
    };
    at += h.name_len + 1 + h.token_len + 1;
    r->payload = at;
    r->props = at + h.payload_len;
    r->sub_ids = (const uint32_t *)(const void *)(at + h.payload_len + h.props_len);
    *pos += record_size(&h);
    return true;
}

uint32_t journal_sub_id(const struct journal_record *r, size_t i)
{
    uint32_t id;
    memcpy(&id, (const uint8_t *)r->sub_ids + i * sizeof(id), sizeof(id));
    return id;
}

void journal_reset(struct journal *j)
{
    j->len = 0;
    j->count = 0;
}

void journal_free(struct journal *j)
{
    free(j->buf);
    *j = (struct journal)JOURNAL_INIT;
}
