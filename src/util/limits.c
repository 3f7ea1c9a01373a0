#include "util/limits.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "util/error.h"

/*
 * Upper bounds of the limits. Each comes from the protocol where the protocol
 * has one, so a value the broker accepts can always be honoured.
 */
#define LIMITS_MQTT_STRING_MAX 65535 /* an MQTT string's length is a 16-bit field */
/* A topic is sent back with a leading '/' to filters that had one: it must still fit. */
#define LIMITS_TOPIC_MAX (LIMITS_MQTT_STRING_MAX - 1)
#define LIMITS_MQTT_PACKET_MAX 268435455 /* the largest remaining length */
#define LIMITS_MQTT_KEEPALIVE_MAX 65535  /* keep-alive is a 16-bit field */
#define LIMITS_MQTT_PACKET_ID_MAX 65535  /* packet identifiers bound the in-flight window */
/*
 * Counts with no protocol bound. A million is far above any sane per-client
 * setting and low enough that a stray extra digit is refused instead of letting
 * one client pin gigabytes.
 */
#define LIMITS_COUNT_MAX 1000000
/* 1 GiB: far past any sensible per-client buffer, and no overflow anywhere. */
#define LIMITS_OUTBOUND_MAX (1024ull * 1024 * 1024)

#define FIELD(f) offsetof(struct limits, f), sizeof(((struct limits *)0)->f)

/* In the order usage texts list them. */
static const struct limits_def defs[] = {
    {"max-client-id", "N", FIELD(max_client_id), 1, LIMITS_MQTT_STRING_MAX, false, NULL,
     "longest client identifier, in characters"},
    {"max-topic-length", "N", FIELD(max_topic_length), 1, LIMITS_TOPIC_MAX, false, NULL,
     "longest topic name or filter, in characters"},
    {"max-payload", "BYTES", FIELD(max_payload), 0, LIMITS_MQTT_PACKET_MAX, true, NULL,
     "largest PUBLISH payload"},
    {"max-subscriptions", "N", FIELD(max_subscriptions), 0, LIMITS_COUNT_MAX, false, NULL,
     "subscriptions one connection may hold"},
    {"keepalive-min", "SECONDS", FIELD(keepalive_min), 0, LIMITS_MQTT_KEEPALIVE_MAX, false, NULL,
     "shorter client keep-alives are raised to this"},
    {"keepalive-max", "SECONDS", FIELD(keepalive_max), 1, LIMITS_MQTT_KEEPALIVE_MAX, false, NULL,
     "longer (or 0) keep-alives are lowered to this"},
    {"max-queued-messages", "N", FIELD(max_queued_messages), 0, LIMITS_COUNT_MAX, false, NULL,
     "QoS 1/2 messages queued per offline session"},
    {"max-inflight", "N", FIELD(max_inflight), 1, LIMITS_MQTT_PACKET_ID_MAX, false, NULL,
     "unacknowledged QoS 1/2 messages per client"},
    {"max-outbound-bytes", "BYTES", FIELD(max_outbound_bytes), 1024, LIMITS_OUTBOUND_MAX, true,
     "8m", "pending output per client before QoS 0 to it is dropped"},
    {"max-topic-aliases", "N", FIELD(max_topic_aliases), 0, LIMITS_MQTT_PACKET_ID_MAX, false, NULL,
     "MQTT 5 topic aliases a client may set; 0: none"},
    {"max-session-expiry", "SECONDS", FIELD(max_session_expiry), 0, UINT32_MAX, false, NULL,
     "longest a session outlives its connection; 0: no cap"},
    {"max-connections", "N", FIELD(max_connections), 0, LIMITS_COUNT_MAX, false, NULL,
     "live connections per instance; 0: no limit"},
    {"max-messages-per-second", "N", FIELD(max_messages_per_second), 0, LIMITS_COUNT_MAX, false,
     NULL, "PUBLISH packets per second per connection; 0: no limit"},
    {"max-instance-messages-per-second", "N", FIELD(max_instance_messages_per_second), 0,
     LIMITS_COUNT_MAX, false, NULL, "the same for an instance's connections together"},
    {"max-retained", "N", FIELD(max_retained), 0, LIMITS_COUNT_MAX, false, NULL,
     "retained messages per instance; 0: no limit"},
    {"idle-timeout", "SECONDS", FIELD(idle_timeout), 0, LIMITS_IDLE_MAX, false, NULL,
     "close connections idle this long; 0: never"},
    {"max-sessions", "N", FIELD(max_sessions), 0, LIMITS_COUNT_MAX, false, NULL,
     "persistent sessions per instance; 0: no limit"},
    {"max-instance-bytes", "BYTES", FIELD(max_instance_bytes), 0, LIMITS_MEMORY_MAX, true, "0",
     "bytes one instance may hold; 0: none"},
    {"utf8-topics", "0|1", FIELD(utf8_topics), 0, 1, false, "1 desktop, 0 cloud",
     "1: any UTF-8 topic (desktop's default); 0: a-z 0-9 .,:;-_$/"},
};

#define DEF_COUNT (sizeof(defs) / sizeof(defs[0]))

size_t limits_count(void)
{
    return DEF_COUNT;
}

const struct limits_def *limits_at(size_t i)
{
    return i < DEF_COUNT ? &defs[i] : NULL;
}

const char *limits_name(size_t i)
{
    return i < DEF_COUNT ? defs[i].name : NULL;
}

const struct limits_def *limits_find(const char *name, size_t len)
{
    for (size_t i = 0; i < DEF_COUNT; i++)
        if (strlen(defs[i].name) == len && memcmp(defs[i].name, name, len) == 0)
            return &defs[i];
    return NULL;
}

void limits_names(char *out, size_t size)
{
    size_t used = 0;

    if (size == 0)
        return;
    out[0] = '\0';
    for (size_t i = 0; i < DEF_COUNT && used < size; i++)
        used += (size_t)snprintf(out + used, size - used, "%s%s", i ? ", " : "", defs[i].name);
}

/*
 * Decimal digits, then (when `suffixes`) one of k K m M g G. Returns 0, -1 for
 * anything else, -2 when the value exceeds `max` (checked without overflowing).
 */
static int parse_digits(const char *s, bool suffixes, unsigned long long max,
                        unsigned long long *out)
{
    unsigned long long n = 0, mult = 1;
    bool too_big = false;
    const char *p = s;

    if (!isdigit((unsigned char)*p))
        return -1;
    for (; isdigit((unsigned char)*p); p++) {
        unsigned digit = (unsigned)(*p - '0');
        if (digit > max || n > (max - digit) / 10)
            too_big = true;
        else
            n = n * 10 + digit;
    }
    if (suffixes && (*p == 'k' || *p == 'K')) {
        mult = 1024;
        p++;
    } else if (suffixes && (*p == 'm' || *p == 'M')) {
        mult = 1024 * 1024;
        p++;
    } else if (suffixes && (*p == 'g' || *p == 'G')) {
        mult = 1024 * 1024 * 1024;
        p++;
    }
    if (*p != '\0')
        return -1;
    if (too_big || n > max / mult)
        return -2;
    *out = n * mult;
    return 0;
}

int limits_parse_number(const char *name, const char *value, unsigned long long min,
                        unsigned long long max, bool suffixes, unsigned long long *out, char *err,
                        size_t errlen)
{
    int rc = parse_digits(value, suffixes, max, out);

    if (rc == -1 && value[0] == '-' && isdigit((unsigned char)value[1]))
        return error_set(err, errlen, "%s: must not be negative: '%s'", name, value);
    if (rc == -1)
        return error_set(err, errlen, "%s: not a number: '%s'", name, value);
    if (rc == -2 || *out < min)
        return error_set(err, errlen, "%s: must be between %llu and %llu, got '%s'", name, min, max,
                         value);
    return 0;
}

int limits_parse(const char *name, const char *value, unsigned long long *out, char *err,
                 size_t errlen)
{
    const struct limits_def *d = limits_find(name, strlen(name));

    if (!d) {
        char known[512];
        limits_names(known, sizeof(known));
        return error_set(err, errlen, "unknown limit '%s' (known: %s)", name, known);
    }
    return limits_parse_number(d->name, value, d->min, d->max, d->suffixes, out, err, errlen);
}

void limits_field_store(void *field, size_t size, unsigned long long n)
{
    if (size == sizeof(unsigned)) {
        unsigned u = (unsigned)n;
        memcpy(field, &u, sizeof(u));
    } else {
        size_t z = (size_t)n;
        memcpy(field, &z, sizeof(z));
    }
}

unsigned long long limits_field_load(const void *field, size_t size)
{
    if (size == sizeof(unsigned)) {
        unsigned u;
        memcpy(&u, field, sizeof(u));
        return u;
    }
    size_t z;
    memcpy(&z, field, sizeof(z));
    return z;
}

int limits_set(struct limits *l, const char *name, unsigned long long value)
{
    const struct limits_def *d = limits_find(name, strlen(name));

    if (!d)
        return -1;
    limits_field_store((unsigned char *)l + d->offset, d->size, value);
    return 0;
}

long long limits_get(const struct limits *l, const char *name)
{
    const struct limits_def *d = limits_find(name, strlen(name));

    if (!d)
        return -1;
    return (long long)limits_field_load((const unsigned char *)l + d->offset, d->size);
}
