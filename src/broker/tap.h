/*
 * tap — a watcher of an instance's messages from outside MQTT (the web
 * view's live tail).
 *
 * A tap belongs to its watcher, which attaches it to one instance; every
 * message routed in the instance is shown to its taps (a pointer test when
 * there are none). When the instance is freed each tap hears `gone`, after
 * which it is no longer attached. Callbacks must not attach or detach taps.
 * Core thread only.
 */
#ifndef AVIARY_TAP_H
#define AVIARY_TAP_H

struct message;

struct tap {
    struct tap *next;
    void (*message)(void *ctx, const struct message *m); /* routed in the instance */
    void (*gone)(void *ctx);                             /* the instance is being freed */
    void *ctx;
};

/* Attach `t` to the list `*taps` (an instance's). */
static inline void tap_attach(struct tap **taps, struct tap *t)
{
    t->next = *taps;
    *taps = t;
}

/* Detach `t` from `*taps`; nothing when it is not there. */
static inline void tap_detach(struct tap **taps, struct tap *t)
{
    for (struct tap **p = taps; *p; p = &(*p)->next)
        if (*p == t) {
            *p = t->next;
            t->next = NULL;
            return;
        }
}

/* Show `m` to every tap of the list. */
static inline void tap_show(struct tap *taps, const struct message *m)
{
    for (struct tap *t = taps; t; t = t->next)
        t->message(t->ctx, m);
}

/* The list's owner is going: tell every tap, emptying the list. */
static inline void tap_all_gone(struct tap **taps)
{
    while (*taps) {
        struct tap *t = *taps;
        *taps = t->next;
        t->next = NULL;
        t->gone(t->ctx);
    }
}

#endif
