/*
 * mailbox — hands items from a thread to the core thread: a locked FIFO of
 * pointers and a wake-up pipe.
 *
 * Producers call mailbox_put() (or mailbox_replace()) from any thread; the
 * consumer watches mailbox_fd() in its event loop and, when it is readable,
 * calls mailbox_take() until it returns NULL. The mailbox knows no event
 * library: the consumer owns its read event.
 *
 * Ownership: an item put is the mailbox's until taken, then the taker's.
 * Items still waiting when the mailbox is freed go to the `release` passed to
 * mailbox_free(). The consumer frees the mailbox after every producer has
 * stopped.
 */
#ifndef AVIARY_MAILBOX_H
#define AVIARY_MAILBOX_H

struct mailbox;

/*
 * A new, empty mailbox; `who` (copied, e.g. "ws") starts its log lines.
 * Returns NULL with errno set (the pipe could not be made, or ENOMEM).
 */
struct mailbox *mailbox_new(const char *who);

/* The descriptor to watch: readable when something was put or mailbox_wake() called. */
int mailbox_fd(const struct mailbox *m);

/*
 * Append `item` and wake the consumer. Returns 0, or -ENOMEM: then `item`
 * was not put and is still the caller's.
 */
int mailbox_put(struct mailbox *m, void *item);

/*
 * Put `item` in place of the newest item waiting, and wake the consumer: a
 * mailbox used only this way holds at most one item, the latest. The item
 * replaced, now the caller's again, is left in *replaced (NULL when none
 * waited). Returns 0, or -ENOMEM as mailbox_put().
 */
int mailbox_replace(struct mailbox *m, void *item, void **replaced);

/* Wake the consumer without putting anything (something else it reads has changed). */
void mailbox_wake(struct mailbox *m);

/* Consumer: empty the pipe, then take the oldest item (now the caller's), or NULL. */
void *mailbox_take(struct mailbox *m);

/*
 * The two halves of mailbox_take(), for a consumer that also reads state
 * announced by mailbox_wake(): empty the pipe, read that state, then pop.
 * Every change made after the drain leaves a byte behind, so none is missed;
 * a second drain after the read could swallow one.
 */
void mailbox_drain(struct mailbox *m);
void *mailbox_pop(struct mailbox *m);

/*
 * Free the mailbox, handing each item still waiting to `release` (oldest
 * first; NULL to leave them be). NULL is fine.
 */
void mailbox_free(struct mailbox *m, void (*release)(void *item));

#endif
