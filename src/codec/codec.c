/*
 * codec — the MQTT 3.1, 3.1.1 and 5.0 wire format. See codec.h for the contract.
 *
 * Decoding reads through a bounded cursor (struct reader) that never looks
 * past the packet; every field is checked before it is trusted. Encoding runs
 * each packet's writer twice: once without a buffer to learn the size, then,
 * if it fits, for real. That keeps one description of every layout.
 */
#include "codec/codec.h"

#include <string.h>

#define MQTT_MAX_STRING 0xFFFFu

/* ---- variable byte integers ------------------------------------------------ */

/*
 * Parse a variable byte integer from `p` (len bytes available).
 * CODEC_INCOMPLETE when it is cut short, CODEC_E_REMAINING_LENGTH when a
 * fourth byte still has its continuation bit set.
 */
static int vbi_parse(const uint8_t *p, size_t len, uint32_t *value, size_t *used)
{
    uint32_t v = 0;

    for (size_t i = 0; i < 4; i++) {
        if (i >= len)
            return CODEC_INCOMPLETE;
        v |= (uint32_t)(p[i] & 0x7F) << (7 * i);
        if (!(p[i] & 0x80)) {
            *value = v;
            *used = i + 1;
            return CODEC_OK;
        }
    }
    return CODEC_E_REMAINING_LENGTH;
}

static size_t vbi_size(uint32_t v)
{
    if (v < 128)
        return 1;
    if (v < 16384)
        return 2;
    if (v < 2097152)
        return 3;
    return 4;
}

/*
 * vbi_parse() that also refuses an overlong form such as 0x81 0x00 for 1: the
 * value "MUST use the minimum number of bytes necessary" [MQTT-1.5.5-1]. Used
 * inside MQTT 5 property blocks; the remaining length keeps vbi_parse().
 */
static int vbi_parse_minimal(const uint8_t *p, size_t len, uint32_t *value, size_t *used)
{
    int rc = vbi_parse(p, len, value, used);

    if (rc == CODEC_OK && *used != vbi_size(*value))
        return CODEC_E_REMAINING_LENGTH;
    return rc;
}

static size_t vbi_write(uint8_t *out, uint32_t v)
{
    size_t n = 0;

    do {
        uint8_t b = v & 0x7F;
        v >>= 7;
        out[n++] = b | (v ? 0x80 : 0);
    } while (v);
    return n;
}

/* ---- strings ----------------------------------------------------------------- */

int codec_check_utf8(const uint8_t *s, size_t len)
{
    size_t i = 0;

    while (i < len) {
        uint8_t c = s[i];
        size_t more;
        uint32_t cp, min;

        if (c < 0x80) {
            if (c == 0)
                return CODEC_E_NUL;
            i++;
            continue;
        }
        if ((c & 0xE0) == 0xC0) {
            more = 1;
            cp = c & 0x1F;
            min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            more = 2;
            cp = c & 0x0F;
            min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            more = 3;
            cp = c & 0x07;
            min = 0x10000;
        } else {
            return CODEC_E_UTF8; /* a continuation byte, or 0xF8-0xFF */
        }
        if (len - i - 1 < more)
            return CODEC_E_UTF8;
        for (size_t k = 1; k <= more; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return CODEC_E_UTF8;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        /* The minimum catches overlong forms, which would smuggle U+0000 or '/'. */
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return CODEC_E_UTF8;
        i += more + 1;
    }
    return CODEC_OK;
}

static bool has_wildcard(const struct mqtt_buf *b)
{
    return memchr(b->data, '+', b->len) || memchr(b->data, '#', b->len);
}

/* ---- bounded reader ---------------------------------------------------------- */

struct reader {
    const uint8_t *p;
    size_t len;
    size_t pos;
};

static size_t rd_left(const struct reader *r)
{
    return r->len - r->pos;
}

static int rd_u8(struct reader *r, uint8_t *v)
{
    if (rd_left(r) < 1)
        return CODEC_E_TRUNCATED;
    *v = r->p[r->pos++];
    return CODEC_OK;
}

static int rd_u16(struct reader *r, uint16_t *v)
{
    if (rd_left(r) < 2)
        return CODEC_E_TRUNCATED;
    *v = (uint16_t)(r->p[r->pos] << 8 | r->p[r->pos + 1]);
    r->pos += 2;
    return CODEC_OK;
}

/* Binary data: a two-byte length, then that many bytes. */
/* A big-endian unsigned integer of `n` bytes, at most 4. */
static int rd_uint(struct reader *r, size_t n, uint32_t *v)
{
    if (rd_left(r) < n)
        return CODEC_E_TRUNCATED;
    *v = 0;
    for (size_t i = 0; i < n; i++)
        *v = *v << 8 | r->p[r->pos++];
    return CODEC_OK;
}

static int rd_bin(struct reader *r, struct mqtt_buf *b)
{
    uint16_t n;

    if (rd_u16(r, &n) != CODEC_OK || rd_left(r) < n)
        return CODEC_E_TRUNCATED;
    b->data = r->p + r->pos;
    b->len = n;
    r->pos += n;
    return CODEC_OK;
}

static int rd_str(struct reader *r, struct mqtt_buf *b)
{
    int rc = rd_bin(r, b);

    if (rc != CODEC_OK)
        return rc;
    return codec_check_utf8(b->data, b->len);
}

/* A packet identifier, which must not be 0 wherever one appears [MQTT-2.3.1-1]. */
static int rd_packet_id(struct reader *r, uint16_t *id)
{
    int rc = rd_u16(r, id);

    if (rc != CODEC_OK)
        return rc;
    return *id ? CODEC_OK : CODEC_E_PACKET_ID;
}

/* ---- MQTT 5 properties -------------------------------------------------------- */

enum prop_type { PT_NONE, PT_BYTE, PT_U16, PT_U32, PT_VBI, PT_STR, PT_BIN, PT_PAIR };

#define PROP_ID_MAX 0x2A

static const uint8_t prop_types[PROP_ID_MAX + 1] = {
    [MQTT_PROP_PAYLOAD_FORMAT] = PT_BYTE,
    [MQTT_PROP_MESSAGE_EXPIRY] = PT_U32,
    [MQTT_PROP_CONTENT_TYPE] = PT_STR,
    [MQTT_PROP_RESPONSE_TOPIC] = PT_STR,
    [MQTT_PROP_CORRELATION_DATA] = PT_BIN,
    [MQTT_PROP_SUBSCRIPTION_ID] = PT_VBI,
    [MQTT_PROP_SESSION_EXPIRY] = PT_U32,
    [MQTT_PROP_ASSIGNED_CLIENT_ID] = PT_STR,
    [MQTT_PROP_SERVER_KEEP_ALIVE] = PT_U16,
    [MQTT_PROP_AUTH_METHOD] = PT_STR,
    [MQTT_PROP_AUTH_DATA] = PT_BIN,
    [MQTT_PROP_REQUEST_PROBLEM_INFO] = PT_BYTE,
    [MQTT_PROP_WILL_DELAY] = PT_U32,
    [MQTT_PROP_REQUEST_RESPONSE_INFO] = PT_BYTE,
    [MQTT_PROP_RESPONSE_INFO] = PT_STR,
    [MQTT_PROP_SERVER_REFERENCE] = PT_STR,
    [MQTT_PROP_REASON_STRING] = PT_STR,
    [MQTT_PROP_RECEIVE_MAXIMUM] = PT_U16,
    [MQTT_PROP_TOPIC_ALIAS_MAXIMUM] = PT_U16,
    [MQTT_PROP_TOPIC_ALIAS] = PT_U16,
    [MQTT_PROP_MAXIMUM_QOS] = PT_BYTE,
    [MQTT_PROP_RETAIN_AVAILABLE] = PT_BYTE,
    [MQTT_PROP_USER_PROPERTY] = PT_PAIR,
    [MQTT_PROP_MAXIMUM_PACKET_SIZE] = PT_U32,
    [MQTT_PROP_WILDCARD_SUB_AVAILABLE] = PT_BYTE,
    [MQTT_PROP_SUB_ID_AVAILABLE] = PT_BYTE,
    [MQTT_PROP_SHARED_SUB_AVAILABLE] = PT_BYTE,
};

/* The size in bytes of the fixed-size integer types. */
static const uint8_t prop_width[] = {[PT_BYTE] = 1, [PT_U16] = 2, [PT_U32] = 4};

static enum prop_type prop_type(uint8_t id)
{
    return id <= PROP_ID_MAX ? (enum prop_type)prop_types[id] : PT_NONE;
}

#define P(id) ((uint64_t)1 << (id))

/* Which properties each packet may carry (MQTT 5 section 2.2.2.2). */
static const uint64_t props_connect =
    P(MQTT_PROP_SESSION_EXPIRY) | P(MQTT_PROP_AUTH_METHOD) | P(MQTT_PROP_AUTH_DATA) |
    P(MQTT_PROP_REQUEST_PROBLEM_INFO) | P(MQTT_PROP_REQUEST_RESPONSE_INFO) |
    P(MQTT_PROP_RECEIVE_MAXIMUM) | P(MQTT_PROP_TOPIC_ALIAS_MAXIMUM) | P(MQTT_PROP_USER_PROPERTY) |
    P(MQTT_PROP_MAXIMUM_PACKET_SIZE);
static const uint64_t props_will = P(MQTT_PROP_PAYLOAD_FORMAT) | P(MQTT_PROP_MESSAGE_EXPIRY) |
                                   P(MQTT_PROP_CONTENT_TYPE) | P(MQTT_PROP_RESPONSE_TOPIC) |
                                   P(MQTT_PROP_CORRELATION_DATA) | P(MQTT_PROP_WILL_DELAY) |
                                   P(MQTT_PROP_USER_PROPERTY);
static const uint64_t props_connack =
    P(MQTT_PROP_SESSION_EXPIRY) | P(MQTT_PROP_ASSIGNED_CLIENT_ID) | P(MQTT_PROP_SERVER_KEEP_ALIVE) |
    P(MQTT_PROP_AUTH_METHOD) | P(MQTT_PROP_AUTH_DATA) | P(MQTT_PROP_RESPONSE_INFO) |
    P(MQTT_PROP_SERVER_REFERENCE) | P(MQTT_PROP_REASON_STRING) | P(MQTT_PROP_RECEIVE_MAXIMUM) |
    P(MQTT_PROP_TOPIC_ALIAS_MAXIMUM) | P(MQTT_PROP_MAXIMUM_QOS) | P(MQTT_PROP_RETAIN_AVAILABLE) |
    P(MQTT_PROP_USER_PROPERTY) | P(MQTT_PROP_MAXIMUM_PACKET_SIZE) |
    P(MQTT_PROP_WILDCARD_SUB_AVAILABLE) | P(MQTT_PROP_SUB_ID_AVAILABLE) |
    P(MQTT_PROP_SHARED_SUB_AVAILABLE);
static const uint64_t props_publish = P(MQTT_PROP_PAYLOAD_FORMAT) | P(MQTT_PROP_MESSAGE_EXPIRY) |
                                      P(MQTT_PROP_CONTENT_TYPE) | P(MQTT_PROP_RESPONSE_TOPIC) |
                                      P(MQTT_PROP_CORRELATION_DATA) | P(MQTT_PROP_SUBSCRIPTION_ID) |
                                      P(MQTT_PROP_TOPIC_ALIAS) | P(MQTT_PROP_USER_PROPERTY);
/* PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK. */
static const uint64_t props_ack = P(MQTT_PROP_REASON_STRING) | P(MQTT_PROP_USER_PROPERTY);
static const uint64_t props_subscribe = P(MQTT_PROP_SUBSCRIPTION_ID) | P(MQTT_PROP_USER_PROPERTY);
static const uint64_t props_unsubscribe = P(MQTT_PROP_USER_PROPERTY);
static const uint64_t props_disconnect = P(MQTT_PROP_SESSION_EXPIRY) |
                                         P(MQTT_PROP_SERVER_REFERENCE) |
                                         P(MQTT_PROP_REASON_STRING) | P(MQTT_PROP_USER_PROPERTY);
static const uint64_t props_auth = P(MQTT_PROP_AUTH_METHOD) | P(MQTT_PROP_AUTH_DATA) |
                                   P(MQTT_PROP_REASON_STRING) | P(MQTT_PROP_USER_PROPERTY);

/* Properties whose only legal values are 0 and 1. */
static const uint64_t props_boolean =
    P(MQTT_PROP_PAYLOAD_FORMAT) | P(MQTT_PROP_REQUEST_PROBLEM_INFO) |
    P(MQTT_PROP_REQUEST_RESPONSE_INFO) | P(MQTT_PROP_MAXIMUM_QOS) | P(MQTT_PROP_RETAIN_AVAILABLE) |
    P(MQTT_PROP_WILDCARD_SUB_AVAILABLE) | P(MQTT_PROP_SUB_ID_AVAILABLE) |
    P(MQTT_PROP_SHARED_SUB_AVAILABLE);

/*
 * Properties for which 0 is a protocol error. A Topic Alias of 0 is one too,
 * but its receiver answers it with its own reason code (0x94, MQTT 5
 * 3.3.2.3.4), so it is left to the caller with the alias's other bounds.
 */
static const uint64_t props_nonzero =
    P(MQTT_PROP_SUBSCRIPTION_ID) | P(MQTT_PROP_RECEIVE_MAXIMUM) | P(MQTT_PROP_MAXIMUM_PACKET_SIZE);

/*
 * Read the property at *pos of a block of `len` bytes, checking only its
 * shape: a known identifier and a value that fits in the block.
 */
static int prop_read(const uint8_t *p, size_t len, size_t *pos, struct mqtt_prop *out)
{
    struct reader r = {p, len, *pos};
    enum prop_type type;
    uint8_t id;
    size_t used;

    memset(out, 0, sizeof *out);
    /* The identifier is a variable byte integer, but every defined one is a
     * single byte, so a byte with the top bit set is as unknown as any other. */
    if (rd_u8(&r, &id) != CODEC_OK)
        return CODEC_E_PROPERTY;
    out->id = id;
    type = prop_type(id);
    switch (type) {
    case PT_BYTE:
    case PT_U16:
    case PT_U32:
        if (rd_uint(&r, prop_width[type], &out->u32) != CODEC_OK)
            return CODEC_E_PROPERTY;
        break;
    case PT_VBI:
        if (vbi_parse_minimal(p + r.pos, rd_left(&r), &out->u32, &used) != CODEC_OK)
            return CODEC_E_PROPERTY;
        r.pos += used;
        break;
    case PT_STR:
    case PT_BIN:
        if (rd_bin(&r, &out->str) != CODEC_OK)
            return CODEC_E_PROPERTY;
        break;
    case PT_PAIR:
        if (rd_bin(&r, &out->str) != CODEC_OK || rd_bin(&r, &out->str2) != CODEC_OK)
            return CODEC_E_PROPERTY;
        break;
    case PT_NONE:
        return CODEC_E_PROPERTY;
    }
    *pos = r.pos;
    return CODEC_OK;
}

/*
 * Validate a whole property block against the set `allowed` for its packet.
 * `repeat_sub_id` allows several Subscription Identifiers (PUBLISH only).
 * Sets *seen to the identifiers present.
 */
static int props_validate(const struct mqtt_props *props, uint64_t allowed, bool repeat_sub_id,
                          uint64_t *seen)
{
    size_t pos = 0;
    struct mqtt_prop prop;
    int rc;

    *seen = 0;
    while (pos < props->len) {
        rc = prop_read(props->data, props->len, &pos, &prop);
        if (rc != CODEC_OK)
            return rc;
        uint64_t bit = P(prop.id);
        if (!(allowed & bit))
            return CODEC_E_PROPERTY;
        /* Repeats and forbidden values are Protocol Errors (MQTT 5 2.2.2.2), not malformations. */
        if ((*seen & bit) && prop.id != MQTT_PROP_USER_PROPERTY &&
            !(prop.id == MQTT_PROP_SUBSCRIPTION_ID && repeat_sub_id))
            return CODEC_E_PROPERTY_PROTOCOL;
        *seen |= bit;
        if ((props_boolean & bit) && prop.u32 > 1)
            return CODEC_E_PROPERTY_PROTOCOL;
        if ((props_nonzero & bit) && prop.u32 == 0)
            return CODEC_E_PROPERTY_PROTOCOL;
        if (prop_type(prop.id) == PT_STR || prop_type(prop.id) == PT_PAIR) {
            rc = codec_check_utf8(prop.str.data, prop.str.len);
            if (rc == CODEC_OK)
                rc = codec_check_utf8(prop.str2.data, prop.str2.len);
            if (rc != CODEC_OK)
                return rc;
        }
        /* The Response Topic is a topic name (MQTT 5 3.3.2.3.5). */
        if (prop.id == MQTT_PROP_RESPONSE_TOPIC && (prop.str.len == 0 || has_wildcard(&prop.str)))
            return CODEC_E_PROPERTY;
    }
    /* Authentication Data without a method is a protocol error (MQTT 5 3.1.2.11.10). */
    if ((*seen & P(MQTT_PROP_AUTH_DATA)) && !(*seen & P(MQTT_PROP_AUTH_METHOD)))
        return CODEC_E_PROPERTY_PROTOCOL;
    return CODEC_OK;
}

/* Read a property length and its block; the block must lie inside the packet. */
static int rd_props(struct reader *r, uint64_t allowed, bool repeat_sub_id,
                    struct mqtt_props *props, uint64_t *seen)
{
    uint32_t n;
    size_t used;
    int rc = vbi_parse_minimal(r->p + r->pos, rd_left(r), &n, &used);

    if (rc == CODEC_INCOMPLETE)
        return CODEC_E_TRUNCATED;
    if (rc != CODEC_OK)
        return CODEC_E_PROPERTY;
    r->pos += used;
    if (rd_left(r) < n)
        return CODEC_E_TRUNCATED;
    props->data = r->p + r->pos;
    props->len = n;
    r->pos += n;
    return props_validate(props, allowed, repeat_sub_id, seen);
}

bool codec_next_prop(const struct mqtt_props *p, size_t *pos, struct mqtt_prop *out)
{
    if (*pos >= p->len)
        return false;
    return prop_read(p->data, p->len, pos, out) == CODEC_OK;
}

bool codec_find_prop(const struct mqtt_props *p, uint8_t id, struct mqtt_prop *out)
{
    size_t pos = 0;

    while (codec_next_prop(p, &pos, out))
        if (out->id == id)
            return true;
    return false;
}

static size_t prop_size(const struct mqtt_prop *prop)
{
    switch (prop_type(prop->id)) {
    case PT_BYTE:
        return prop->u32 <= 0xFF ? 2 : 0;
    case PT_U16:
        return prop->u32 <= 0xFFFF ? 3 : 0;
    case PT_U32:
        return 5;
    case PT_VBI:
        return prop->u32 <= MQTT_MAX_REMAINING_LENGTH ? 1 + vbi_size(prop->u32) : 0;
    case PT_STR:
    case PT_BIN:
        return prop->str.len <= MQTT_MAX_STRING ? 3 + prop->str.len : 0;
    case PT_PAIR:
        if (prop->str.len > MQTT_MAX_STRING || prop->str2.len > MQTT_MAX_STRING)
            return 0;
        return 5 + prop->str.len + prop->str2.len;
    case PT_NONE:
        break;
    }
    return 0;
}

static size_t put_bin_raw(uint8_t *out, const struct mqtt_buf *b)
{
    out[0] = (uint8_t)(b->len >> 8);
    out[1] = (uint8_t)b->len;
    if (b->len)
        memcpy(out + 2, b->data, b->len);
    return 2 + b->len;
}

size_t codec_put_prop(uint8_t *out, size_t cap, size_t *pos, const struct mqtt_prop *prop)
{
    size_t need = prop_size(prop);
    uint32_t v = prop->u32;

    if (need == 0)
        return 0;
    if (*pos <= cap && need <= cap - *pos) {
        uint8_t *o = out + *pos;
        *o++ = prop->id;
        switch (prop_type(prop->id)) {
        case PT_BYTE:
            *o = (uint8_t)v;
            break;
        case PT_U16:
            o[0] = (uint8_t)(v >> 8);
            o[1] = (uint8_t)v;
            break;
        case PT_U32:
            o[0] = (uint8_t)(v >> 24);
            o[1] = (uint8_t)(v >> 16);
            o[2] = (uint8_t)(v >> 8);
            o[3] = (uint8_t)v;
            break;
        case PT_VBI:
            vbi_write(o, v);
            break;
        case PT_STR:
        case PT_BIN:
            put_bin_raw(o, &prop->str);
            break;
        case PT_PAIR:
            o += put_bin_raw(o, &prop->str);
            put_bin_raw(o, &prop->str2);
            break;
        case PT_NONE:
            break;
        }
    }
    *pos += need;
    return need;
}

/* ---- reason codes ------------------------------------------------------------- */

static const uint8_t rc_connack[] = {0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86,
                                     0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
                                     0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F};
static const uint8_t rc_puback[] = {0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99};
static const uint8_t rc_pubrel[] = {0x00, 0x92};
static const uint8_t rc_suback[] = {0x00, 0x01, 0x02, 0x80, 0x83, 0x87,
                                    0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2};
static const uint8_t rc_unsuback[] = {0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91};
static const uint8_t rc_disconnect[] = {0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D,
                                        0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99,
                                        0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2};
static const uint8_t rc_auth[] = {0x00, 0x18, 0x19};
/* 3.1 and 3.1.1 SUBACK: a granted QoS, or failure (3.1.1). */
static const uint8_t rc_suback_v3[] = {0x00, 0x01, 0x02, 0x80};

#define RC_VALID(list, rc) (memchr((list), (rc), sizeof(list)) != NULL)

/* ---- decoding ------------------------------------------------------------------ */

static int decode_connect(struct reader *r, struct mqtt_connect *c)
{
    uint8_t flags;
    uint64_t seen;
    int rc;

    if (rd_bin(r, &c->protocol_name) != CODEC_OK || rd_u8(r, &c->version) != CODEC_OK)
        return CODEC_E_TRUNCATED;
    const struct mqtt_buf *name = &c->protocol_name;
    bool mqtt = name->len == 4 && memcmp(name->data, "MQTT", 4) == 0;
    bool mqisdp = name->len == 6 && memcmp(name->data, "MQIsdp", 6) == 0;
    if (!((mqtt && (c->version == MQTT_V311 || c->version == MQTT_V5)) ||
          (mqisdp && c->version == MQTT_V31)))
        return CODEC_E_PROTOCOL_NAME;
    bool v5 = c->version == MQTT_V5;

    if ((rc = rd_u8(r, &flags)) != CODEC_OK || (rc = rd_u16(r, &c->keepalive)) != CODEC_OK)
        return rc;
    if (flags & 0x01) /* reserved [MQTT-3.1.2-3] */
        return CODEC_E_CONNECT_FLAGS;
    c->clean = flags & 0x02;
    c->will = flags & 0x04;
    c->will_qos = (flags >> 3) & 0x03;
    c->will_retain = flags & 0x20;
    c->has_password = flags & 0x40;
    c->has_username = flags & 0x80;
    if (!c->will && (c->will_qos || c->will_retain)) /* [MQTT-3.1.2-13], [MQTT-3.1.2-15] */
        return CODEC_E_CONNECT_FLAGS;
    if (c->will_qos == 3) /* [MQTT-3.1.2-14] */
        return CODEC_E_QOS;
    if (c->has_password && !c->has_username && !v5) /* [MQTT-3.1.2-22] */
        return CODEC_E_CONNECT_FLAGS;

    if (v5 && (rc = rd_props(r, props_connect, false, &c->props, &seen)) != CODEC_OK)
        return rc;
    if ((rc = rd_str(r, &c->client_id)) != CODEC_OK)
        return rc;
    if (c->will) {
        if (v5 && (rc = rd_props(r, props_will, false, &c->will_props, &seen)) != CODEC_OK)
            return rc;
        if ((rc = rd_str(r, &c->will_topic)) != CODEC_OK)
            return rc;
        if (c->will_topic.len == 0 || has_wildcard(&c->will_topic))
            return CODEC_E_TOPIC;
        if ((rc = rd_bin(r, &c->will_payload)) != CODEC_OK)
            return rc;
    }
    if (c->has_username && (rc = rd_str(r, &c->username)) != CODEC_OK)
        return rc;
    if (c->has_password && (rc = rd_bin(r, &c->password)) != CODEC_OK)
        return rc;
    return CODEC_OK;
}

static int decode_connack(struct reader *r, bool v5, struct mqtt_connack *c)
{
    uint8_t flags;
    uint64_t seen;
    int rc;

    if ((rc = rd_u8(r, &flags)) != CODEC_OK || (rc = rd_u8(r, &c->code)) != CODEC_OK)
        return rc;
    if (flags & 0xFE) /* bits 7-1 of the acknowledge flags are reserved */
        return CODEC_E_CONNECT_FLAGS;
    c->session_present = flags & 0x01;
    if (v5 ? !RC_VALID(rc_connack, c->code) : c->code > MQTT_CONNACK_NOT_AUTHORIZED)
        return CODEC_E_REASON;
    /* A refused connection has no session [MQTT-3.2.2-4] (3.1.1), [MQTT-3.2.2-6] (5). */
    if (c->session_present && c->code != 0)
        return CODEC_E_CONNECT_FLAGS;
    if (v5)
        return rd_props(r, props_connack, false, &c->props, &seen);
    return CODEC_OK;
}

static int decode_publish(struct reader *r, uint8_t version, uint8_t flags, struct mqtt_publish *p)
{
    bool v5 = version == MQTT_V5;
    uint64_t seen = 0;
    int rc;

    p->retain = flags & 0x01;
    p->qos = (flags >> 1) & 0x03;
    p->dup = flags & 0x08;
    if (p->qos == 3) /* [MQTT-3.3.1-4] */
        return CODEC_E_QOS;
    if (p->dup && p->qos == 0 && version != MQTT_V31) /* [MQTT-3.3.1-2] */
        return CODEC_E_HEADER_FLAGS;
    if ((rc = rd_str(r, &p->topic)) != CODEC_OK)
        return rc;
    if (p->qos && (rc = rd_packet_id(r, &p->packet_id)) != CODEC_OK)
        return rc;
    if (v5 && (rc = rd_props(r, props_publish, true, &p->props, &seen)) != CODEC_OK)
        return rc;
    /* An empty name is only a placeholder for a Topic Alias (MQTT 5 3.3.2.3.4). */
    if (p->topic.len == 0 && !(seen & P(MQTT_PROP_TOPIC_ALIAS)))
        return CODEC_E_TOPIC;
    if (has_wildcard(&p->topic)) /* [MQTT-3.3.2-2] */
        return CODEC_E_TOPIC;
    p->payload.data = r->p + r->pos;
    p->payload.len = rd_left(r);
    r->pos = r->len;
    return CODEC_OK;
}

/* PUBACK, PUBREC, PUBREL and PUBCOMP. */
static int decode_ack(struct reader *r, bool v5, uint8_t type, struct mqtt_ack *a)
{
    uint64_t seen;
    int rc;

    if ((rc = rd_packet_id(r, &a->packet_id)) != CODEC_OK)
        return rc;
    if (!v5 || rd_left(r) == 0) /* MQTT 5: no reason code means success */
        return CODEC_OK;
    rd_u8(r, &a->reason);
    bool ok = (type == MQTT_PUBACK || type == MQTT_PUBREC) ? RC_VALID(rc_puback, a->reason)
                                                           : RC_VALID(rc_pubrel, a->reason);
    if (!ok)
        return CODEC_E_REASON;
    if (rd_left(r) == 0) /* and no property length means no properties */
        return CODEC_OK;
    return rd_props(r, props_ack, false, &a->props, &seen);
}

/*
 * One SUBSCRIBE options byte. MQTT 5 adds no local, retain as published and
 * retain handling; 3.x reserves everything above the QoS (3.1.1 calls that
 * rule [MQTT-3-8.3-4], spelt so). No Local on a shared subscription is the
 * caller's (a Protocol Error, not a malformation: [MQTT-3.8.3-4] in MQTT 5),
 * like everything else about filters.
 */
static int check_sub_options(bool v5, uint8_t options)
{
    if (v5) {
        if ((options & 0xC0) || MQTT_SUB_OPT_RETAIN_HANDLING(options) == 3) /* [MQTT-3.8.3-5] */
            return CODEC_E_SUB_OPTIONS;
    } else if (options & 0xFC) {
        return CODEC_E_SUB_OPTIONS;
    }
    if ((options & MQTT_SUB_OPT_QOS) == 3)
        return CODEC_E_QOS;
    return CODEC_OK;
}

/* SUBSCRIBE (`subscribe` true) and UNSUBSCRIBE. */
static int decode_subscribe(struct reader *r, bool v5, bool subscribe, struct mqtt_subscribe *s)
{
    uint64_t seen;
    int rc;

    if ((rc = rd_packet_id(r, &s->packet_id)) != CODEC_OK)
        return rc;
    if (v5 && (rc = rd_props(r, subscribe ? props_subscribe : props_unsubscribe, false, &s->props,
                             &seen)) != CODEC_OK)
        return rc;
    s->entries.data = r->p + r->pos;
    s->entries.len = rd_left(r);
    if (s->entries.len == 0) /* [MQTT-3.8.3-3], [MQTT-3.10.3-2] */
        return CODEC_E_NO_TOPICS;
    while (rd_left(r)) {
        struct mqtt_buf filter;
        uint8_t options;

        if ((rc = rd_str(r, &filter)) != CODEC_OK)
            return rc;
        if (filter.len == 0) /* [MQTT-4.7.3-1] */
            return CODEC_E_TOPIC;
        if (subscribe) {
            if ((rc = rd_u8(r, &options)) != CODEC_OK)
                return rc;
            if ((rc = check_sub_options(v5, options)) != CODEC_OK)
                return rc;
        }
        s->count++;
    }
    return CODEC_OK;
}

/* SUBACK (`suback` true) and UNSUBACK. */
static int decode_suback(struct reader *r, bool v5, bool suback, struct mqtt_suback *s)
{
    uint64_t seen;
    int rc;

    if ((rc = rd_packet_id(r, &s->packet_id)) != CODEC_OK)
        return rc;
    if (!v5 && !suback) /* a 3.x UNSUBACK is just the packet identifier */
        return CODEC_OK;
    if (v5 && (rc = rd_props(r, props_ack, false, &s->props, &seen)) != CODEC_OK)
        return rc;
    s->codes = r->p + r->pos;
    s->count = rd_left(r);
    if (s->count == 0) /* one code per filter, and a request has at least one */
        return CODEC_E_TRUNCATED;
    for (size_t i = 0; i < s->count; i++) {
        uint8_t c = s->codes[i];
        bool ok = !v5      ? RC_VALID(rc_suback_v3, c)
                  : suback ? RC_VALID(rc_suback, c)
                           : RC_VALID(rc_unsuback, c);
        if (!ok)
            return CODEC_E_REASON;
    }
    r->pos = r->len;
    return CODEC_OK;
}

/* MQTT 5 DISCONNECT and AUTH; both may drop the reason code when it is 0. */
static int decode_disconnect(struct reader *r, uint8_t type, struct mqtt_disconnect *d)
{
    uint64_t seen;
    int rc;

    if (rd_left(r) == 0)
        return CODEC_OK;
    rd_u8(r, &d->reason);
    if (type == MQTT_DISCONNECT) {
        if (!RC_VALID(rc_disconnect, d->reason))
            return CODEC_E_REASON;
        if (rd_left(r) == 0)
            return CODEC_OK;
        return rd_props(r, props_disconnect, false, &d->props, &seen);
    }
    if (!RC_VALID(rc_auth, d->reason))
        return CODEC_E_REASON;
    /* AUTH omits the property length only together with the reason. */
    if ((rc = rd_props(r, props_auth, false, &d->props, &seen)) != CODEC_OK)
        return rc;
    /* "It is a Protocol Error to omit the Authentication Method" (MQTT 5 3.15.2.2.2);
     * only the empty short form above (3.15.2.1) goes without one. */
    if (!(seen & P(MQTT_PROP_AUTH_METHOD)))
        return CODEC_E_PROPERTY_PROTOCOL;
    return CODEC_OK;
}

/* The fixed-header flags every type but PUBLISH must carry [MQTT-2.2.2-1]. */
static const uint8_t fixed_flags[16] = {
    [MQTT_PUBREL] = 0x02,
    [MQTT_SUBSCRIBE] = 0x02,
    [MQTT_UNSUBSCRIBE] = 0x02,
};

/*
 * MQTT 3.1 let a sender set DUP on a retried PUBREL, SUBSCRIBE or UNSUBSCRIBE
 * (its §2.1); 3.1.1 fixed their flags. The DUP bit there means nothing more.
 */
static bool dup_allowed_v31(uint8_t version, uint8_t type, uint8_t flags)
{
    return version == MQTT_V31 && fixed_flags[type] == 0x02 && flags == (0x02 | 0x08);
}

int codec_frame(const uint8_t *buf, size_t len, uint8_t *type_flags, size_t *header_len,
                uint32_t *remaining)
{
    size_t used;
    int rc;

    if (len < 2)
        return CODEC_INCOMPLETE;
    rc = vbi_parse(buf + 1, len - 1, remaining, &used);
    if (rc != CODEC_OK)
        return rc;
    *type_flags = buf[0];
    *header_len = 1 + used;
    return CODEC_OK;
}

int codec_decode(const uint8_t *buf, size_t len, uint8_t version, struct mqtt_packet *out)
{
    uint8_t first;
    size_t header_len;
    uint32_t remaining;
    bool v5 = version == MQTT_V5;
    int rc;

    memset(out, 0, sizeof *out);
    rc = codec_frame(buf, len, &first, &header_len, &remaining);
    if (rc == CODEC_INCOMPLETE)
        return CODEC_E_TRUNCATED;
    if (rc != CODEC_OK)
        return rc;
    if (len - header_len < remaining)
        return CODEC_E_TRUNCATED;
    if (len - header_len > remaining)
        return CODEC_E_TRAILING;

    out->type = first >> 4;
    out->flags = first & 0x0F;
    if (out->type == 0 || (out->type == MQTT_AUTH && !v5))
        return CODEC_E_PACKET_TYPE;
    if (out->type != MQTT_PUBLISH && out->flags != fixed_flags[out->type] &&
        !dup_allowed_v31(version, out->type, out->flags))
        return CODEC_E_HEADER_FLAGS;

    struct reader r = {buf + header_len, remaining, 0};
    switch (out->type) {
    case MQTT_CONNECT:
        rc = decode_connect(&r, &out->u.connect);
        if (rc == CODEC_E_PROTOCOL_NAME) {
            /* Keep what the broker needs to refuse politely, nothing else. */
            struct mqtt_connect c = {.version = out->u.connect.version,
                                     .protocol_name = out->u.connect.protocol_name};
            out->u.connect = c;
        }
        break;
    case MQTT_CONNACK:
        rc = decode_connack(&r, v5, &out->u.connack);
        break;
    case MQTT_PUBLISH:
        rc = decode_publish(&r, version, out->flags, &out->u.publish);
        break;
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP:
        rc = decode_ack(&r, v5, out->type, &out->u.ack);
        break;
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE:
        rc = decode_subscribe(&r, v5, out->type == MQTT_SUBSCRIBE, &out->u.subscribe);
        break;
    case MQTT_SUBACK:
    case MQTT_UNSUBACK:
        rc = decode_suback(&r, v5, out->type == MQTT_SUBACK, &out->u.suback);
        break;
    case MQTT_PINGREQ:
    case MQTT_PINGRESP:
        break;
    case MQTT_DISCONNECT:
    case MQTT_AUTH:
        if (v5)
            rc = decode_disconnect(&r, out->type, &out->u.disconnect);
        break;
    }
    if (rc == CODEC_OK && rd_left(&r) != 0)
        rc = CODEC_E_TRAILING;
    return rc;
}

bool codec_next_topic(const struct mqtt_subscribe *s, bool subscribe, size_t *pos,
                      struct mqtt_topic_entry *entry)
{
    struct reader r = {s->entries.data, s->entries.len, *pos};

    if (*pos >= s->entries.len || rd_bin(&r, &entry->filter) != CODEC_OK)
        return false;
    entry->options = 0;
    if (subscribe && rd_u8(&r, &entry->options) != CODEC_OK)
        return false;
    *pos = r.pos;
    return true;
}

/* ---- encoding ------------------------------------------------------------------ */

/*
 * An output cursor over a packet body. With buf NULL it only counts, which
 * is how codec_encode() learns the size before writing. pos never exceeds
 * MQTT_MAX_REMAINING_LENGTH; the first failure sticks in err.
 */
struct writer {
    uint8_t *buf;
    size_t pos;
    int err;
};

static void put_raw(struct writer *w, const void *data, size_t n)
{
    if (w->err)
        return;
    if (n > MQTT_MAX_REMAINING_LENGTH - w->pos) {
        w->err = CODEC_E_NOSPACE;
        return;
    }
    if (w->buf && n)
        memcpy(w->buf + w->pos, data, n);
    w->pos += n;
}

static void put_u8(struct writer *w, uint8_t v)
{
    put_raw(w, &v, 1);
}

static void put_u16(struct writer *w, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};

    put_raw(w, b, 2);
}

static void put_bin(struct writer *w, const struct mqtt_buf *b)
{
    if (b->len > MQTT_MAX_STRING) {
        if (!w->err)
            w->err = CODEC_E_NOSPACE;
        return;
    }
    put_u16(w, (uint16_t)b->len);
    put_raw(w, b->data, b->len);
}

static void put_props(struct writer *w, const struct mqtt_props *p)
{
    uint8_t b[4];

    if (p->len > MQTT_MAX_REMAINING_LENGTH) {
        if (!w->err)
            w->err = CODEC_E_NOSPACE;
        return;
    }
    put_raw(w, b, vbi_write(b, (uint32_t)p->len));
    put_raw(w, p->data, p->len);
}

static void encode_connect(struct writer *w, const struct mqtt_connect *c, uint8_t version)
{
    static const struct mqtt_buf mqisdp = {(const uint8_t *)"MQIsdp", 6};
    static const struct mqtt_buf mqtt = {(const uint8_t *)"MQTT", 4};
    bool v5 = version == MQTT_V5;
    uint8_t flags = 0;

    if (c->will && c->will_qos > 2) {
        w->err = CODEC_E_QOS;
        return;
    }
    put_bin(w, version == MQTT_V31 ? &mqisdp : &mqtt);
    put_u8(w, version);
    if (c->clean)
        flags |= 0x02;
    if (c->will)
        flags |= 0x04 | (uint8_t)(c->will_qos << 3) | (c->will_retain ? 0x20 : 0);
    if (c->has_password)
        flags |= 0x40;
    if (c->has_username)
        flags |= 0x80;
    put_u8(w, flags);
    put_u16(w, c->keepalive);
    if (v5)
        put_props(w, &c->props);
    put_bin(w, &c->client_id);
    if (c->will) {
        if (v5)
            put_props(w, &c->will_props);
        put_bin(w, &c->will_topic);
        put_bin(w, &c->will_payload);
    }
    if (c->has_username)
        put_bin(w, &c->username);
    if (c->has_password)
        put_bin(w, &c->password);
}

static void encode_publish_head(struct writer *w, const struct mqtt_publish *p, uint8_t version);

/* The body of `pkt`; also checks what only the body can get wrong. */
static void encode_body(struct writer *w, const struct mqtt_packet *pkt, uint8_t version)
{
    bool v5 = version == MQTT_V5;

    switch (pkt->type) {
    case MQTT_CONNECT:
        encode_connect(w, &pkt->u.connect, version);
        break;
    case MQTT_CONNACK:
        put_u8(w, pkt->u.connack.session_present ? 1 : 0);
        put_u8(w, pkt->u.connack.code);
        if (v5)
            put_props(w, &pkt->u.connack.props);
        break;
    case MQTT_PUBLISH: {
        const struct mqtt_publish *p = &pkt->u.publish;
        encode_publish_head(w, p, version);
        put_raw(w, p->payload.data, p->payload.len);
        break;
    }
    case MQTT_PUBACK:
    case MQTT_PUBREC:
    case MQTT_PUBREL:
    case MQTT_PUBCOMP: {
        const struct mqtt_ack *a = &pkt->u.ack;
        put_u16(w, a->packet_id);
        if (v5 && (a->reason || a->props.len))
            put_u8(w, a->reason);
        if (v5 && a->props.len)
            put_props(w, &a->props);
        break;
    }
    case MQTT_SUBSCRIBE:
    case MQTT_UNSUBSCRIBE:
        put_u16(w, pkt->u.subscribe.packet_id);
        if (v5)
            put_props(w, &pkt->u.subscribe.props);
        put_raw(w, pkt->u.subscribe.entries.data, pkt->u.subscribe.entries.len);
        break;
    case MQTT_SUBACK:
    case MQTT_UNSUBACK:
        put_u16(w, pkt->u.suback.packet_id);
        if (!v5 && pkt->type == MQTT_UNSUBACK)
            break;
        if (v5)
            put_props(w, &pkt->u.suback.props);
        put_raw(w, pkt->u.suback.codes, pkt->u.suback.count);
        break;
    case MQTT_PINGREQ:
    case MQTT_PINGRESP:
        break;
    case MQTT_DISCONNECT:
    case MQTT_AUTH: {
        const struct mqtt_disconnect *d = &pkt->u.disconnect;
        if (!v5 || (d->reason == 0 && d->props.len == 0))
            break;
        put_u8(w, d->reason);
        /* DISCONNECT may stop after the reason; AUTH may not. */
        if (d->props.len || pkt->type == MQTT_AUTH)
            put_props(w, &d->props);
        break;
    }
    }
}

long codec_encode(const struct mqtt_packet *pkt, uint8_t version, uint8_t *out, size_t cap)
{
    struct writer w = {NULL, 0, 0};
    uint8_t first;

    if (pkt->type == 0 || pkt->type > MQTT_AUTH || (pkt->type == MQTT_AUTH && version != MQTT_V5))
        return CODEC_E_PACKET_TYPE;
    first = (uint8_t)(pkt->type << 4);
    if (pkt->type == MQTT_PUBLISH) {
        const struct mqtt_publish *p = &pkt->u.publish;
        if (p->qos > 2)
            return CODEC_E_QOS;
        first |= (uint8_t)(p->qos << 1) | (p->retain ? 0x01 : 0) | (p->dup && p->qos ? 0x08 : 0);
    } else {
        first |= fixed_flags[pkt->type];
    }

    encode_body(&w, pkt, version);
    if (w.err)
        return w.err;
    size_t body = w.pos;
    size_t total = 1 + vbi_size((uint32_t)body) + body;
    if (total > cap)
        return (long)total;

    out[0] = first;
    size_t header = 1 + vbi_write(out + 1, (uint32_t)body);
    w = (struct writer){out + header, 0, 0};
    encode_body(&w, pkt, version);
    return (long)total;
}

/* The PUBLISH variable header: everything between the fixed header and the payload. */
static void encode_publish_head(struct writer *w, const struct mqtt_publish *p, uint8_t version)
{
    put_bin(w, &p->topic);
    if (p->qos)
        put_u16(w, p->packet_id);
    if (version == MQTT_V5)
        put_props(w, &p->props);
}

long codec_encode_publish_head(const struct mqtt_publish *p, uint8_t version, uint8_t *out,
                               size_t cap)
{
    struct writer w = {NULL, 0, 0};

    if (p->qos > 2)
        return CODEC_E_QOS;
    encode_publish_head(&w, p, version);
    put_raw(&w, p->payload.data, p->payload.len); /* counts only: w.buf is NULL */
    if (w.err)
        return w.err;
    size_t body = w.pos;
    size_t head = body - p->payload.len;
    size_t total = 1 + vbi_size((uint32_t)body) + head;
    if (total > cap)
        return (long)total;

    out[0] = (uint8_t)(MQTT_PUBLISH << 4) | (uint8_t)(p->qos << 1) | (p->retain ? 0x01 : 0) |
             (p->dup && p->qos ? 0x08 : 0);
    size_t fixed = 1 + vbi_write(out + 1, (uint32_t)body);
    w = (struct writer){out + fixed, 0, 0};
    encode_publish_head(&w, p, version);
    return (long)total;
}

size_t codec_put_topic(uint8_t *out, size_t cap, size_t *pos, const char *filter, size_t filter_len,
                       bool subscribe, uint8_t options)
{
    size_t need = 2 + filter_len + (subscribe ? 1 : 0);

    if (filter_len > MQTT_MAX_STRING)
        return 0;
    if (*pos <= cap && need <= cap - *pos) {
        uint8_t *o = out + *pos;
        o[0] = (uint8_t)(filter_len >> 8);
        o[1] = (uint8_t)filter_len;
        if (filter_len)
            memcpy(o + 2, filter, filter_len);
        if (subscribe)
            o[2 + filter_len] = options;
    }
    *pos += need;
    return need;
}

const char *codec_strerror(int err)
{
    switch (err) {
    case CODEC_OK:
        return "success";
    case CODEC_INCOMPLETE:
        return "packet incomplete";
    case CODEC_E_REMAINING_LENGTH:
        return "remaining length longer than 4 bytes";
    case CODEC_E_PACKET_TYPE:
        return "invalid packet type";
    case CODEC_E_HEADER_FLAGS:
        return "invalid fixed-header flags";
    case CODEC_E_TRUNCATED:
        return "a field runs past the end of the packet";
    case CODEC_E_TRAILING:
        return "bytes after the last field of the packet";
    case CODEC_E_UTF8:
        return "invalid UTF-8 in a string";
    case CODEC_E_NUL:
        return "U+0000 in a string";
    case CODEC_E_PROTOCOL_NAME:
        return "unknown protocol name or level";
    case CODEC_E_CONNECT_FLAGS:
        return "invalid CONNECT or CONNACK flags";
    case CODEC_E_QOS:
        return "QoS 3";
    case CODEC_E_PACKET_ID:
        return "packet identifier 0";
    case CODEC_E_NO_TOPICS:
        return "SUBSCRIBE without a topic filter";
    case CODEC_E_SUB_OPTIONS:
        return "reserved subscription options set";
    case CODEC_E_TOPIC:
        return "empty topic, or a wildcard in a topic name";
    case CODEC_E_PROPERTY:
        return "unknown or misplaced property, or one of the wrong shape";
    case CODEC_E_PROPERTY_PROTOCOL:
        return "a property repeated, or a forbidden property value";
    case CODEC_E_REASON:
        return "reason code not valid for this packet";
    case CODEC_E_TOO_LARGE:
        return "packet larger than the maximum packet size";
    case CODEC_E_NOSPACE:
        return "packet too large to encode";
    }
    return "unknown codec error";
}
