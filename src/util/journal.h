/*
 * journal — changes to what the broker keeps across a restart (retained
 * messages, persistent sessions), as records in one growable byte buffer.
 *
 * One vocabulary for both directions: the core thread appends a record for
 * every change (broker/durable.c) and the store's writer thread applies a
 * batch of them to the database in one transaction (store/keep.c); at start
 * the store's loader writes what the database holds as the same records and
 * the broker replays them (broker/restore.c).
 *
 * A journal belongs to one thread at a time and is never written to disk
 * itself: its layout is this process's. Pure: no I/O, no locks.
 */
#ifndef AVIARY_JOURNAL_H
#define AVIARY_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a record says; the fields each one uses are listed with it. */
enum journal_type {
    /* message, name (topic), payload, props, qos, flags (RETAIN), expiry, when_ms (published) */
    JOURNAL_MESSAGE_PUT = 1,
    JOURNAL_MESSAGE_DROP = 2, /* message: nothing refers to it any more */
    JOURNAL_RETAIN_SET = 3,   /* instance, name (topic), message */
    JOURNAL_RETAIN_CLEAR = 4, /* instance, name (topic) */
    /* session, instance, name (client id), token, expiry, when_ms (offline since; 0: online) */
    JOURNAL_SESSION_PUT = 5,
    JOURNAL_SESSION_DROP = 6, /* session, with all that is kept for it */
    JOURNAL_SUB_PUT = 7,      /* session, name (filter), options, flags (LEADING_SLASH), sub_id */
    JOURNAL_SUB_DROP = 8,     /* session, name (filter) */
    /* session, seq, message (0: a QoS 2 message past PUBREC), qos, state, packet_id,
       flags (RETAIN, LEADING_SLASH), sub_ids */
    JOURNAL_OUT_PUT = 9,
    JOURNAL_OUT_DROP = 10,   /* session, seq */
    JOURNAL_QOS2_ADD = 11,   /* session, packet_id */
    JOURNAL_QOS2_DROP = 12,  /* session, packet_id */
    JOURNAL_WILL_SET = 13,   /* session, message, when_ms (when it is due) */
    JOURNAL_WILL_CLEAR = 14, /* session */
};

#define JOURNAL_RETAIN 0x01        /* flags: the RETAIN flag */
#define JOURNAL_LEADING_SLASH 0x02 /* flags: the filter or delivery had a leading '/' */

/*
 * One record. Strings are NUL-terminated; their lengths exclude the NUL.
 * Read back, every pointer points into the journal and lives as long as it
 * is neither appended to nor reset. Times are wall-clock Unix milliseconds.
 */
struct journal_record {
    uint8_t type; /* enum journal_type */
    uint8_t qos;
    uint8_t state; /* enum outgoing_state of broker/session.h */
    uint8_t flags; /* JOURNAL_RETAIN, JOURNAL_LEADING_SLASH */
    uint8_t options;
    uint16_t packet_id;
    uint32_t expiry; /* a message's expiry interval or a session's, in seconds */
    uint32_t sub_id;
    int64_t instance; /* its serial; 0: desktop mode's instance */
    uint64_t session; /* ids the broker gives, never 0 */
    uint64_t message;
    uint64_t seq; /* an outgoing message's place in its session */
    int64_t when_ms;
    const char *name;
    size_t name_len;
    const char *token; /* a session's token id; "" when none */
    size_t token_len;
    const uint8_t *payload;
    size_t payload_len;
    const uint8_t *props;
    size_t props_len;
    const uint32_t *sub_ids; /* read back: may be unaligned, use journal_sub_id() */
    size_t sub_id_count;
};

struct journal {
    uint8_t *buf; /* owned */
    size_t len, cap;
    size_t count; /* records in it */
};

#define JOURNAL_INIT                                                                               \
    {                                                                                              \
        0                                                                                          \
    }

/*
 * Append `r` (its pointers may be NULL where their lengths are 0). Returns 0,
 * or -ENOMEM (the journal is as it was).
 */
int journal_append(struct journal *j, const struct journal_record *r);

/*
 * Read the record at *pos into `r` and move *pos past it. Start with *pos 0.
 * Returns false at the end.
 */
bool journal_next(const struct journal *j, size_t *pos, struct journal_record *r);

/* Subscription Identifier `i` of a record read back. */
uint32_t journal_sub_id(const struct journal_record *r, size_t i);

/* Empty the journal, keeping its buffer for the next batch. */
void journal_reset(struct journal *j);

/* Free the buffer; the journal is empty and usable again. */
void journal_free(struct journal *j);

#endif
