/*
 * codec — the MQTT 3.1, 3.1.1 and 5.0 wire format, from and to memory.
 *
 * Owns nothing and keeps no state: no sockets, no globals, no logging, no
 * allocation. Decoded packets borrow their strings and payloads from the
 * caller's input buffer (struct mqtt_buf), so they are valid exactly as long
 * as that buffer is. Any module may call it.
 *
 * Decoding validates everything the specification tells a receiver to check
 * and answers with an enum codec_err, which names the problem in words through
 * codec_strerror() so the caller can log it and answer the client.
 */
#ifndef AVIARY_CODEC_H
#define AVIARY_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum mqtt_type {
    MQTT_CONNECT = 1,
    MQTT_CONNACK = 2,
    MQTT_PUBLISH = 3,
    MQTT_PUBACK = 4,
    MQTT_PUBREC = 5,
    MQTT_PUBREL = 6,
    MQTT_PUBCOMP = 7,
    MQTT_SUBSCRIBE = 8,
    MQTT_SUBACK = 9,
    MQTT_UNSUBSCRIBE = 10,
    MQTT_UNSUBACK = 11,
    MQTT_PINGREQ = 12,
    MQTT_PINGRESP = 13,
    MQTT_DISCONNECT = 14,
    MQTT_AUTH = 15,
};

/* Protocol levels as they appear in CONNECT. */
enum mqtt_version {
    MQTT_V31 = 3,  /* protocol name "MQIsdp" */
    MQTT_V311 = 4, /* protocol name "MQTT" */
    MQTT_V5 = 5,   /* protocol name "MQTT" */
};

/* MQTT 3.1.1 CONNACK return codes. */
enum mqtt_connack_code {
    MQTT_CONNACK_ACCEPTED = 0,
    MQTT_CONNACK_BAD_VERSION = 1,
    MQTT_CONNACK_ID_REJECTED = 2,
    MQTT_CONNACK_UNAVAILABLE = 3,
    MQTT_CONNACK_BAD_CREDENTIALS = 4,
    MQTT_CONNACK_NOT_AUTHORIZED = 5,
};

#define MQTT_SUBACK_FAILURE 0x80

/* Largest remaining length the four-byte variable integer can express. */
#define MQTT_MAX_REMAINING_LENGTH 268435455u

/* A borrowed byte range: points into the buffer that was decoded. */
struct mqtt_buf {
    const uint8_t *data;
    size_t len;
};

/*
 * MQTT 5 properties, kept as the raw, already validated property block
 * (without its length prefix). Empty for 3.1 and 3.1.1.
 */
struct mqtt_props {
    const uint8_t *data;
    size_t len;
};

struct mqtt_connect {
    uint8_t version; /* enum mqtt_version */
    bool clean;      /* clean session (3.x) / clean start (5) */
    bool will;
    uint8_t will_qos;
    bool will_retain;
    bool has_username;
    bool has_password;
    uint16_t keepalive;
    struct mqtt_buf protocol_name;
    struct mqtt_buf client_id;
    struct mqtt_buf will_topic;
    struct mqtt_buf will_payload;
    struct mqtt_buf username;
    struct mqtt_buf password;
    struct mqtt_props props;
    struct mqtt_props will_props;
};

struct mqtt_connack {
    bool session_present;
    uint8_t code; /* enum mqtt_connack_code, or an MQTT 5 reason code */
    struct mqtt_props props;
};

struct mqtt_publish {
    uint8_t qos;
    bool dup;
    bool retain;
    uint16_t packet_id; /* 0 when qos == 0 */
    struct mqtt_buf topic;
    struct mqtt_buf payload;
    struct mqtt_props props;
};

/* PUBACK, PUBREC, PUBREL, PUBCOMP. reason is 0 unless MQTT 5 says otherwise. */
struct mqtt_ack {
    uint16_t packet_id;
    uint8_t reason;
    struct mqtt_props props;
};

/*
 * SUBSCRIBE and UNSUBSCRIBE: `entries` is the validated payload, walked with
 * codec_next_topic(). `count` is the number of filters (at least one).
 */
struct mqtt_subscribe {
    uint16_t packet_id;
    struct mqtt_buf entries;
    size_t count;
    struct mqtt_props props;
};

/* One filter of a SUBSCRIBE (with its options byte) or an UNSUBSCRIBE (options 0). */
struct mqtt_topic_entry {
    struct mqtt_buf filter;
    uint8_t options; /* MQTT_SUB_OPT_* */
};

/* The SUBSCRIBE options byte (MQTT 5 §3.8.3.1); MQTT 3.x has the QoS bits only. */
#define MQTT_SUB_OPT_QOS 0x03
#define MQTT_SUB_OPT_NO_LOCAL 0x04
#define MQTT_SUB_OPT_RETAIN_AS_PUBLISHED 0x08
#define MQTT_SUB_OPT_RETAIN_HANDLING(o) (((o) >> 4) & 3)

/* SUBACK and UNSUBACK: one reason code per filter (UNSUBACK has none before MQTT 5). */
struct mqtt_suback {
    uint16_t packet_id;
    const uint8_t *codes;
    size_t count;
    struct mqtt_props props;
};

/* DISCONNECT and AUTH. */
struct mqtt_disconnect {
    uint8_t reason;
    struct mqtt_props props;
};

struct mqtt_packet {
    uint8_t type;  /* enum mqtt_type */
    uint8_t flags; /* low nibble of the fixed header */
    union {
        struct mqtt_connect connect;
        struct mqtt_connack connack;
        struct mqtt_publish publish;
        struct mqtt_ack ack;
        struct mqtt_subscribe subscribe;   /* also UNSUBSCRIBE */
        struct mqtt_suback suback;         /* also UNSUBACK */
        struct mqtt_disconnect disconnect; /* also AUTH */
    } u;
};

enum codec_err {
    CODEC_OK = 0,
    CODEC_INCOMPLETE = -1,           /* not an error: more bytes are needed */
    CODEC_E_REMAINING_LENGTH = -2,   /* variable integer longer than 4 bytes */
    CODEC_E_PACKET_TYPE = -3,        /* type 0, or 15 before MQTT 5 */
    CODEC_E_HEADER_FLAGS = -4,       /* reserved fixed-header flags wrong */
    CODEC_E_TRUNCATED = -5,          /* a field runs past the packet */
    CODEC_E_TRAILING = -6,           /* bytes left after the last field */
    CODEC_E_UTF8 = -7,               /* invalid UTF-8, or a surrogate */
    CODEC_E_NUL = -8,                /* U+0000 in a string */
    CODEC_E_PROTOCOL_NAME = -9,      /* name/level pair not MQIsdp/3 or MQTT/4,5 */
    CODEC_E_CONNECT_FLAGS = -10,     /* reserved bit, will or password flags inconsistent */
    CODEC_E_QOS = -11,               /* QoS 3 */
    CODEC_E_PACKET_ID = -12,         /* packet identifier 0 where one is required */
    CODEC_E_NO_TOPICS = -13,         /* SUBSCRIBE or UNSUBSCRIBE without a filter */
    CODEC_E_SUB_OPTIONS = -14,       /* reserved subscription option bits set */
    CODEC_E_TOPIC = -15,             /* empty topic name, or a wildcard in a topic name */
    CODEC_E_PROPERTY = -16,          /* unknown, duplicated or misplaced property, or bad length */
    CODEC_E_REASON = -17,            /* reason code not valid for this packet */
    CODEC_E_TOO_LARGE = -18,         /* packet larger than the caller's maximum */
    CODEC_E_NOSPACE = -19,           /* encode: not representable (e.g. over the maximum length) */
    CODEC_E_PROPERTY_PROTOCOL = -20, /* a property repeated, or a value MQTT 5 calls a Protocol
                                        Error (0 where it must not be, a flag above 1) */
};

/* A short English description of `err`, e.g. "invalid UTF-8 in a string". */
const char *codec_strerror(int err);

/*
 * Read the fixed header at the start of `buf`.
 * On CODEC_OK sets *type_flags (first byte), *header_len (1 + bytes of the
 * remaining length) and *remaining (the remaining length). Returns
 * CODEC_INCOMPLETE when the remaining length is not yet all there, or
 * CODEC_E_REMAINING_LENGTH. Checks nothing else, so a caller can bound the
 * packet size before it has received the packet.
 */
int codec_frame(const uint8_t *buf, size_t len, uint8_t *type_flags, size_t *header_len,
                uint32_t *remaining);

/*
 * Decode one whole packet: `buf` holds exactly the fixed header and the
 * remaining length bytes that codec_frame() announced. `version` is the
 * connection's protocol level (ignored for CONNECT, which carries its own;
 * pass 0 before CONNECT). Fills *out, whose buffers point into `buf`.
 * Returns CODEC_OK or a negative enum codec_err.
 *
 * Only MQTT_V5 turns on the MQTT 5 layout (properties, reason codes, AUTH);
 * MQTT_V31 differs from the rest only in allowing DUP on a QoS 0 PUBLISH
 * and on PUBREL, SUBSCRIBE and UNSUBSCRIBE (out->flags then has 0x08 set);
 * 0 and every other value decode with the 3.1.1 rules.
 *
 * A CONNECT whose protocol name is readable but does not pair with its level
 * (e.g. "MQTT" level 6, "MQIsdp" level 4, or another name) returns
 * CODEC_E_PROTOCOL_NAME with out->type, out->u.connect.protocol_name and
 * out->u.connect.version filled (all else zero), so the broker can answer
 * CONNACK 0x01 (3.1.1) / 0x84 (5) when the name is "MQTT" or "MQIsdp" and
 * simply close otherwise. A name or level cut short is CODEC_E_TRUNCATED.
 *
 * Errors inside an MQTT 5 property block are CODEC_E_PROPERTY (an unknown
 * property, one the packet type does not allow, a value of the wrong shape:
 * a Malformed Packet), except a repeated property or a forbidden value
 * (CODEC_E_PROPERTY_PROTOCOL: a Protocol Error), a string property that is
 * not valid UTF-8 (CODEC_E_UTF8 / CODEC_E_NUL), and a property length
 * running past the packet (CODEC_E_TRUNCATED). A will
 * topic must be a valid topic name (CODEC_E_TOPIC). A reason or return code
 * the packet type does not define is CODEC_E_REASON. Never returns
 * CODEC_INCOMPLETE or CODEC_E_TOO_LARGE: sizes are the caller's to bound.
 *
 * Left to the caller, because the codec does not know the direction or the
 * session: a Subscription Identifier in a PUBLISH from a client
 * [MQTT-3.3.4-6], the syntax of topic filters (topic_check_filter()),
 * client identifier rules, topic alias ranges, and a payload that must be
 * UTF-8 under Payload Format Indicator 1.
 */
int codec_decode(const uint8_t *buf, size_t len, uint8_t version, struct mqtt_packet *out);

/*
 * Walk the filters of a decoded SUBSCRIBE (`subscribe` true) or UNSUBSCRIBE.
 * *pos starts at 0. Returns true and fills *entry while there is another one.
 * Only valid on a packet that codec_decode() accepted.
 */
bool codec_next_topic(const struct mqtt_subscribe *s, bool subscribe, size_t *pos,
                      struct mqtt_topic_entry *entry);

/*
 * Encode `pkt` for protocol level `version` into `out` (capacity `cap`).
 * Returns the number of bytes the packet needs; when that exceeds `cap`
 * nothing is written, so a caller may size a buffer with cap = 0 first, as
 * with snprintf. Returns a negative enum codec_err when `pkt` cannot be
 * represented. For SUBSCRIBE and UNSUBSCRIBE, `entries`/`count` must hold
 * the encoded payload (see codec_put_topic()).
 *
 * pkt->flags is ignored: the fixed-header flags follow from the type, and for
 * PUBLISH from dup/qos/retain (DUP is never written on QoS 0, nor a packet
 * identifier). CONNECT is written for level `version` with the name that
 * level needs ("MQIsdp" for 3, "MQTT" otherwise); u.connect.version and
 * protocol_name are ignored. Property blocks are written as given (only
 * MQTT_V5 writes them) and not validated: build them with codec_put_prop().
 * MQTT 5 acks, DISCONNECT and AUTH use the short forms when the reason is 0
 * and there are no properties. Errors: CODEC_E_QOS for a QoS above 2,
 * CODEC_E_PACKET_TYPE for type 0 or AUTH before MQTT 5, CODEC_E_NOSPACE for a
 * string over 65535 bytes or a packet over MQTT_MAX_REMAINING_LENGTH.
 */
long codec_encode(const struct mqtt_packet *pkt, uint8_t version, uint8_t *out, size_t cap);

/*
 * Append one filter to a SUBSCRIBE/UNSUBSCRIBE payload being built in `out`
 * at offset *pos. Returns the bytes it needs (written only if they fit).
 * A helper for clients and tests; the broker never sends these packets.
 * *pos advances by the returned size even when nothing was written, so the
 * payload can be sized with cap = 0 first; it is complete when *pos <= cap.
 * Returns 0 (and leaves *pos alone) for a filter over 65535 bytes.
 */
size_t codec_put_topic(uint8_t *out, size_t cap, size_t *pos, const char *filter, size_t filter_len,
                       bool subscribe, uint8_t options);

/*
 * Encode the head of a PUBLISH: fixed header, topic, packet id and (MQTT 5)
 * properties, with a remaining length that counts `p->payload.len` payload
 * bytes, which the caller sends after it (p->payload.data is not read). Lets
 * one payload be shared by many encoded deliveries. Returns the head's size,
 * written only when it fits in `cap`, or a negative enum codec_err.
 */
long codec_encode_publish_head(const struct mqtt_publish *p, uint8_t version, uint8_t *out,
                               size_t cap);

/* Check a string field against MQTT's UTF-8 rules: CODEC_OK, CODEC_E_UTF8 or CODEC_E_NUL. */
int codec_check_utf8(const uint8_t *s, size_t len);

/* MQTT 5 reason codes (one byte; 0x80 and above are failures). */
enum mqtt_reason {
    MQTT_RC_SUCCESS = 0x00, /* also normal disconnection, granted QoS 0 */
    MQTT_RC_GRANTED_QOS1 = 0x01,
    MQTT_RC_GRANTED_QOS2 = 0x02,
    MQTT_RC_DISCONNECT_WITH_WILL = 0x04,
    MQTT_RC_NO_MATCHING_SUBSCRIBERS = 0x10,
    MQTT_RC_NO_SUBSCRIPTION_EXISTED = 0x11,
    MQTT_RC_CONTINUE_AUTH = 0x18,
    MQTT_RC_REAUTHENTICATE = 0x19,
    MQTT_RC_UNSPECIFIED = 0x80,
    MQTT_RC_MALFORMED_PACKET = 0x81,
    MQTT_RC_PROTOCOL_ERROR = 0x82,
    MQTT_RC_IMPLEMENTATION_SPECIFIC = 0x83,
    MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION = 0x84,
    MQTT_RC_CLIENT_ID_NOT_VALID = 0x85,
    MQTT_RC_BAD_USERNAME_OR_PASSWORD = 0x86,
    MQTT_RC_NOT_AUTHORIZED = 0x87,
    MQTT_RC_SERVER_UNAVAILABLE = 0x88,
    MQTT_RC_SERVER_BUSY = 0x89,
    MQTT_RC_BANNED = 0x8A,
    MQTT_RC_SERVER_SHUTTING_DOWN = 0x8B,
    MQTT_RC_BAD_AUTH_METHOD = 0x8C,
    MQTT_RC_KEEP_ALIVE_TIMEOUT = 0x8D,
    MQTT_RC_SESSION_TAKEN_OVER = 0x8E,
    MQTT_RC_TOPIC_FILTER_INVALID = 0x8F,
    MQTT_RC_TOPIC_NAME_INVALID = 0x90,
    MQTT_RC_PACKET_ID_IN_USE = 0x91,
    MQTT_RC_PACKET_ID_NOT_FOUND = 0x92,
    MQTT_RC_RECEIVE_MAXIMUM_EXCEEDED = 0x93,
    MQTT_RC_TOPIC_ALIAS_INVALID = 0x94,
    MQTT_RC_PACKET_TOO_LARGE = 0x95,
    MQTT_RC_MESSAGE_RATE_TOO_HIGH = 0x96,
    MQTT_RC_QUOTA_EXCEEDED = 0x97,
    MQTT_RC_ADMINISTRATIVE_ACTION = 0x98,
    MQTT_RC_PAYLOAD_FORMAT_INVALID = 0x99,
    MQTT_RC_RETAIN_NOT_SUPPORTED = 0x9A,
    MQTT_RC_QOS_NOT_SUPPORTED = 0x9B,
    MQTT_RC_USE_ANOTHER_SERVER = 0x9C,
    MQTT_RC_SERVER_MOVED = 0x9D,
    MQTT_RC_SHARED_SUBS_NOT_SUPPORTED = 0x9E,
    MQTT_RC_CONNECTION_RATE_EXCEEDED = 0x9F,
    MQTT_RC_MAXIMUM_CONNECT_TIME = 0xA0,
    MQTT_RC_SUB_IDS_NOT_SUPPORTED = 0xA1,
    MQTT_RC_WILDCARD_SUBS_NOT_SUPPORTED = 0xA2,
};

/* MQTT 5 property identifiers; the comment gives the value's type. */
enum mqtt_prop_id {
    MQTT_PROP_PAYLOAD_FORMAT = 0x01,         /* byte, 0 or 1 */
    MQTT_PROP_MESSAGE_EXPIRY = 0x02,         /* four-byte integer */
    MQTT_PROP_CONTENT_TYPE = 0x03,           /* UTF-8 string */
    MQTT_PROP_RESPONSE_TOPIC = 0x08,         /* UTF-8 string, a topic name */
    MQTT_PROP_CORRELATION_DATA = 0x09,       /* binary data */
    MQTT_PROP_SUBSCRIPTION_ID = 0x0B,        /* variable byte integer, not 0 */
    MQTT_PROP_SESSION_EXPIRY = 0x11,         /* four-byte integer */
    MQTT_PROP_ASSIGNED_CLIENT_ID = 0x12,     /* UTF-8 string */
    MQTT_PROP_SERVER_KEEP_ALIVE = 0x13,      /* two-byte integer */
    MQTT_PROP_AUTH_METHOD = 0x15,            /* UTF-8 string */
    MQTT_PROP_AUTH_DATA = 0x16,              /* binary data */
    MQTT_PROP_REQUEST_PROBLEM_INFO = 0x17,   /* byte, 0 or 1 */
    MQTT_PROP_WILL_DELAY = 0x18,             /* four-byte integer */
    MQTT_PROP_REQUEST_RESPONSE_INFO = 0x19,  /* byte, 0 or 1 */
    MQTT_PROP_RESPONSE_INFO = 0x1A,          /* UTF-8 string */
    MQTT_PROP_SERVER_REFERENCE = 0x1C,       /* UTF-8 string */
    MQTT_PROP_REASON_STRING = 0x1F,          /* UTF-8 string */
    MQTT_PROP_RECEIVE_MAXIMUM = 0x21,        /* two-byte integer, not 0 */
    MQTT_PROP_TOPIC_ALIAS_MAXIMUM = 0x22,    /* two-byte integer */
    MQTT_PROP_TOPIC_ALIAS = 0x23,            /* two-byte integer, not 0 */
    MQTT_PROP_MAXIMUM_QOS = 0x24,            /* byte, 0 or 1 */
    MQTT_PROP_RETAIN_AVAILABLE = 0x25,       /* byte, 0 or 1 */
    MQTT_PROP_USER_PROPERTY = 0x26,          /* UTF-8 string pair, may repeat */
    MQTT_PROP_MAXIMUM_PACKET_SIZE = 0x27,    /* four-byte integer, not 0 */
    MQTT_PROP_WILDCARD_SUB_AVAILABLE = 0x28, /* byte, 0 or 1 */
    MQTT_PROP_SUB_ID_AVAILABLE = 0x29,       /* byte, 0 or 1 */
    MQTT_PROP_SHARED_SUB_AVAILABLE = 0x2A,   /* byte, 0 or 1 */
};

/*
 * One MQTT 5 property. Integer types (byte, two-byte, four-byte, variable
 * byte integer) use `u32`; UTF-8 strings and binary data use `str`; the
 * User Property pair uses `str` (name) and `str2` (value). Unused members
 * are zero.
 */
struct mqtt_prop {
    uint8_t id; /* enum mqtt_prop_id */
    uint32_t u32;
    struct mqtt_buf str;
    struct mqtt_buf str2;
};

/*
 * Walk a property block: *pos starts at 0. Returns true and fills *out
 * (borrowing from `p`) while there is another property; false at the end or
 * on a block that codec_decode() would have refused.
 */
bool codec_next_prop(const struct mqtt_props *p, size_t *pos, struct mqtt_prop *out);

/* Find the first property `id` in `p`. Returns true and fills *out if present. */
bool codec_find_prop(const struct mqtt_props *p, uint8_t id, struct mqtt_prop *out);

/*
 * Append property `prop` to a property block being built in `out` at offset
 * *pos, encoded as its identifier's type demands. Like codec_put_topic(),
 * *pos always advances by the size returned, and bytes are written only if
 * they fit in `cap`, so a caller may size the block first with cap = 0. The
 * finished block is { out, *pos } as a struct mqtt_props. Returns 0 (and
 * leaves *pos alone) for an unknown identifier, an integer too large for its
 * type, or a string over 65535 bytes. Values are not otherwise checked.
 */
size_t codec_put_prop(uint8_t *out, size_t cap, size_t *pos, const struct mqtt_prop *prop);

#endif
