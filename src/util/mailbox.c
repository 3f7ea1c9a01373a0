#define _GNU_SOURCE /* pipe2 */
#include "util/mailbox.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/log.h"

struct mailbox_node {
    void *item;
    struct mailbox_node *next;
};

struct mailbox {
    int pipe_fd[2]; /* [0] read by the consumer, [1] written by the producers */
    char who[16];
    pthread_mutex_t lock;
    struct mailbox_node *head, *tail; /* guarded by lock, oldest first */
};

struct mailbox *mailbox_new(const char *who)
{
    struct mailbox *m = calloc(1, sizeof(*m));

    if (!m)
        return NULL;
    if (pipe2(m->pipe_fd, O_NONBLOCK | O_CLOEXEC) < 0) {
        int saved = errno;
        free(m);
        errno = saved;
        return NULL;
    }
    snprintf(m->who, sizeof(m->who), "%s", who);
    pthread_mutex_init(&m->lock, NULL);
    return m;
}

int mailbox_fd(const struct mailbox *m)
{
    return m->pipe_fd[0];
}

void mailbox_wake(struct mailbox *m)
{
    char one = 1;
    /* A full pipe already holds a wake-up: nothing is lost. */
    if (write(m->pipe_fd[1], &one, 1) < 0 && errno != EAGAIN)
        log_warning("%s: cannot wake the core thread: %s", m->who, strerror(errno));
}

/* Append `item` in a new node; the caller holds the lock. Returns 0 or -ENOMEM. */
static int mailbox_append_locked(struct mailbox *m, void *item)
{
    struct mailbox_node *n = malloc(sizeof(*n));

    if (!n)
        return -ENOMEM;
    n->item = item;
    n->next = NULL;
    if (m->tail)
        m->tail->next = n;
    else
        m->head = n;
    m->tail = n;
    return 0;
}

int mailbox_put(struct mailbox *m, void *item)
{
    pthread_mutex_lock(&m->lock);
    int rc = mailbox_append_locked(m, item);
    pthread_mutex_unlock(&m->lock);
    /* After the unlock: a consumer woken finds the item. */
    if (rc == 0)
        mailbox_wake(m);
    return rc;
}

int mailbox_replace(struct mailbox *m, void *item, void **replaced)
{
    int rc = 0;

    *replaced = NULL;
    pthread_mutex_lock(&m->lock);
    if (m->tail) {
        *replaced = m->tail->item;
        m->tail->item = item;
    } else {
        rc = mailbox_append_locked(m, item);
    }
    pthread_mutex_unlock(&m->lock);
    if (rc == 0)
        mailbox_wake(m);
    return rc;
}

void mailbox_drain(struct mailbox *m)
{
    char buf[64];

    while (read(m->pipe_fd[0], buf, sizeof(buf)) > 0)
        ;
}

void *mailbox_pop(struct mailbox *m)
{
    pthread_mutex_lock(&m->lock);
    struct mailbox_node *n = m->head;
    if (n) {
        m->head = n->next;
        if (!m->head)
            m->tail = NULL;
    }
    pthread_mutex_unlock(&m->lock);
    if (!n)
        return NULL;
    void *item = n->item;
    free(n);
    return item;
}

void *mailbox_take(struct mailbox *m)
{
    /*
     * The pipe first: a producer writes its byte after its item is in, so an
     * item this take misses leaves a byte behind, and the consumer is woken again.
     */
    mailbox_drain(m);
    return mailbox_pop(m);
}

void mailbox_free(struct mailbox *m, void (*release)(void *item))
{
    if (!m)
        return;
    while (m->head) {
        struct mailbox_node *n = m->head;
        m->head = n->next;
        if (release)
            release(n->item);
        free(n);
    }
    close(m->pipe_fd[0]);
    close(m->pipe_fd[1]);
    pthread_mutex_destroy(&m->lock);
    free(m);
}
