/*
 * account — the bytes the broker holds on behalf of one tenant, and in all.
 *
 * Every instance has an account; everything the broker keeps because of the
 * instance (messages, queue entries, sessions, subscriptions, topic-tree
 * nodes, output waiting for its clients) is charged to it while it is kept
 * and released when it goes. Each charge also reaches the account's parent,
 * the broker's whole-process figure, so the total is always the sum of the
 * tenants' without a walk over them.
 *
 * Ownership: an account is reference counted, because what was charged to it
 * can outlive its owner (a message referenced by the output of a connection
 * still closing, which the event base may free after the broker); each
 * holder of a charge that may outlive the owner keeps a reference, and an
 * account holds one on its parent. Core thread only; nothing here locks.
 */
#ifndef AVIARY_ACCOUNT_H
#define AVIARY_ACCOUNT_H

#include <stddef.h>

struct account {
    size_t bytes; /* held now */
    unsigned refs;
    struct account *parent; /* charged along with this one (a ref); NULL at the top */
};

/*
 * A new account with one reference under `parent` (may be NULL; it gets a
 * reference). NULL when out of memory.
 */
struct account *account_new(struct account *parent);

/* Free an account whose last reference went (account_unref does that), and drop its parent. */
void account_free(struct account *a);

/* One more reference; returns `a`. NULL is passed through. */
static inline struct account *account_ref(struct account *a)
{
    if (a)
        a->refs++;
    return a;
}

/* Drop one reference; the last one frees the account. NULL is ignored. */
static inline void account_unref(struct account *a)
{
    if (a && --a->refs == 0)
        account_free(a);
}

/*
 * `n` bytes more are held for `a` (and its parent). NULL: nothing is counted.
 * Accounts are two levels deep (tenants, the process), which keeps this short.
 */
static inline void account_charge(struct account *a, size_t n)
{
    if (!a)
        return;
    a->bytes += n;
    if (a->parent)
        a->parent->bytes += n;
}

/* `n` bytes charged to `a` earlier are no longer held. */
static inline void account_release(struct account *a, size_t n)
{
    if (!a)
        return;
    a->bytes -= n;
    if (a->parent)
        a->parent->bytes -= n;
}

#endif
