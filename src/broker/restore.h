/*
 * restore — at start, before the listeners open: rebuild the retained
 * messages and persistent sessions the database kept, from the journal
 * records store/keep.c loaded (keep_load), into a broker whose keeper
 * (durable.h) is set and whose cloud catalog, in cloud mode, is in place.
 *
 * Expiries count the time the broker was down: a message's from its
 * publication, a session's from when it went offline (for a session that
 * was online when the broker died, from now), a delayed will's from when it
 * was due. What has expired is dropped; a will that fell due is published.
 * Core thread only.
 */
#ifndef AVIARY_RESTORE_H
#define AVIARY_RESTORE_H

#include <stddef.h>
#include <stdint.h>

struct broker;
struct journal;

/* What a restore brought back, for the log. */
struct restore_counts {
    size_t retained, sessions, subscriptions, messages, dropped;
};

/*
 * Replay `loaded` into `b`. `next_*` are the ids the keeper gives from now
 * on. Returns 0, or -ENOMEM (the broker holds what was restored so far).
 */
int restore_replay(struct broker *b, const struct journal *loaded, uint64_t next_message,
                   uint64_t next_session, uint64_t next_seq, struct restore_counts *counts);

#endif
