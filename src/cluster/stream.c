#include "cluster/stream.h"

#include <string.h>

#include "util/error.h"

static uint8_t *put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return p + 2;
}

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
    p = put_u16(p, (uint16_t)(v >> 16));
    return put_u16(p, (uint16_t)v);
}

static uint8_t *put_u64(uint8_t *p, uint64_t v)
{
    p = put_u32(p, (uint32_t)(v >> 32));
    return put_u32(p, (uint32_t)v);
}

static uint8_t *put_bytes(uint8_t *p, const void *data, size_t len)
{
    if (len)
        memcpy(p, data, len);
    return p + len;
}

size_t stream_message_size(const struct stream_message *m)
{
    return 2 + 1 + 4 + 8 + 2 + m->node_len + 8 + 2 + m->client_id_len + 4 + m->topic_len + 4 +
           m->props_len + m->payload_len;
}

void stream_encode_message(const struct stream_message *m, uint8_t *out)
{
    uint8_t *p = out;

    *p++ = STREAM_VERSION;
    *p++ = STREAM_MESSAGE;
    *p++ = (uint8_t)((m->qos & 3) | (m->retain ? 4 : 0));
    p = put_u32(p, m->expiry);
    p = put_u64(p, m->published_ms);
    p = put_u16(p, (uint16_t)m->node_len);
    p = put_bytes(p, m->node, m->node_len);
    p = put_u64(p, m->seq);
    p = put_u16(p, (uint16_t)m->client_id_len);
    p = put_bytes(p, m->client_id, m->client_id_len);
    p = put_u32(p, (uint32_t)m->topic_len);
    p = put_bytes(p, m->topic, m->topic_len);
    p = put_u32(p, (uint32_t)m->props_len);
    p = put_bytes(p, m->props, m->props_len);
    put_bytes(p, m->payload, m->payload_len);
}

size_t stream_claim_size(const struct stream_claim *c)
{
    return 2 + 2 + c->node_len + 2 + c->client_id_len + 8;
}

void stream_encode_claim(const struct stream_claim *c, uint8_t *out)
{
    uint8_t *p = out;

    *p++ = STREAM_VERSION;
    *p++ = STREAM_CLAIM;
    p = put_u16(p, (uint16_t)c->node_len);
    p = put_bytes(p, c->node, c->node_len);
    p = put_u16(p, (uint16_t)c->client_id_len);
    p = put_bytes(p, c->client_id, c->client_id_len);
    put_u64(p, c->conn_id);
}

size_t stream_load_size(const struct stream_load *l)
{
    return 2 + 2 + l->node_len + 4 + 4 + 8 + 8;
}

void stream_encode_load(const struct stream_load *l, uint8_t *out)
{
    uint8_t *p = out;

    *p++ = STREAM_VERSION;
    *p++ = STREAM_LOAD;
    p = put_u16(p, (uint16_t)l->node_len);
    p = put_bytes(p, l->node, l->node_len);
    p = put_u32(p, l->conns);
    p = put_u32(p, l->published);
    p = put_u64(p, l->number);
    put_u64(p, l->through);
}

/* A cursor over a record: every take checks the bytes are there. */
struct reader {
    const uint8_t *p, *end;
    bool short_read;
};

static uint64_t take_uint(struct reader *r, size_t size)
{
    uint64_t v = 0;

    if ((size_t)(r->end - r->p) < size) {
        r->short_read = true;
        r->p = r->end;
        return 0;
    }
    for (size_t i = 0; i < size; i++)
        v = v << 8 | *r->p++;
    return v;
}

/* `len` bytes (whose length came before them); NULL when the record is shorter. */
static const uint8_t *take_bytes(struct reader *r, size_t len)
{
    const uint8_t *at = r->p;

    if ((size_t)(r->end - r->p) < len) {
        r->short_read = true;
        r->p = r->end;
        return NULL;
    }
    r->p += len;
    return at;
}

static int decode_message(struct reader *rd, struct stream_message *m, char *err, size_t errlen)
{
    uint8_t flags = (uint8_t)take_uint(rd, 1);

    m->qos = flags & 3;
    m->retain = (flags & 4) != 0;
    m->expiry = (uint32_t)take_uint(rd, 4);
    m->published_ms = take_uint(rd, 8);
    m->node_len = (size_t)take_uint(rd, 2);
    m->node = (const char *)take_bytes(rd, m->node_len);
    m->seq = take_uint(rd, 8);
    m->client_id_len = (size_t)take_uint(rd, 2);
    m->client_id = (const char *)take_bytes(rd, m->client_id_len);
    m->topic_len = (size_t)take_uint(rd, 4);
    m->topic = (const char *)take_bytes(rd, m->topic_len);
    m->props_len = (size_t)take_uint(rd, 4);
    m->props = take_bytes(rd, m->props_len);
    m->payload = rd->p;
    m->payload_len = (size_t)(rd->end - rd->p);
    if (rd->short_read)
        return error_set(err, errlen, "message record cut short");
    if ((flags & ~7) || m->qos > 2)
        return error_set(err, errlen, "message record with flags 0x%02x", flags);
    if (!m->topic_len || memchr(m->topic, '\0', m->topic_len))
        return error_set(err, errlen, "message record with an empty topic or a NUL in it");
    return 0;
}

static int decode_claim(struct reader *rd, struct stream_claim *c, char *err, size_t errlen)
{
    c->node_len = (size_t)take_uint(rd, 2);
    c->node = (const char *)take_bytes(rd, c->node_len);
    c->client_id_len = (size_t)take_uint(rd, 2);
    c->client_id = (const char *)take_bytes(rd, c->client_id_len);
    c->conn_id = take_uint(rd, 8);
    if (rd->short_read || rd->p != rd->end)
        return error_set(err, errlen, "claim record of the wrong length");
    if (!c->node_len || !c->client_id_len)
        return error_set(err, errlen, "claim record without a node or a client id");
    return 0;
}

static int decode_load(struct reader *rd, struct stream_load *l, char *err, size_t errlen)
{
    l->node_len = (size_t)take_uint(rd, 2);
    l->node = (const char *)take_bytes(rd, l->node_len);
    l->conns = (uint32_t)take_uint(rd, 4);
    l->published = (uint32_t)take_uint(rd, 4);
    if (rd->p != rd->end) { /* the numbers (older nodes do not send them) */
        l->number = take_uint(rd, 8);
        l->through = take_uint(rd, 8);
    }
    if (rd->short_read || rd->p != rd->end)
        return error_set(err, errlen, "load record of the wrong length");
    if (!l->node_len)
        return error_set(err, errlen, "load record without a node");
    return 0;
}

int stream_decode(const uint8_t *data, size_t len, struct stream_record *r, char *err,
                  size_t errlen)
{
    struct reader rd = {.p = data, .end = data + len};

    memset(r, 0, sizeof(*r));
    if (len < 2)
        return error_set(err, errlen, "record of %zu bytes", len);
    if (data[0] != STREAM_VERSION)
        return error_set(err, errlen, "record of version %u (this node reads %u)", data[0],
                         STREAM_VERSION);
    r->type = (char)data[1];
    rd.p += 2;
    if (r->type == STREAM_MESSAGE)
        return decode_message(&rd, &r->u.message, err, errlen);
    if (r->type == STREAM_CLAIM)
        return decode_claim(&rd, &r->u.claim, err, errlen);
    if (r->type == STREAM_LOAD)
        return decode_load(&rd, &r->u.load, err, errlen);
    return error_set(err, errlen, "record of unknown type 0x%02x", data[1]);
}
