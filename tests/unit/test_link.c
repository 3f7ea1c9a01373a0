/*
 * Unit tests of net/link.h over a plain socket (one end of a socketpair, the
 * other read and written here): buffers that exist only while bytes wait,
 * output written once per turn of the loop, a full socket, the close with its
 * linger and drain, a peer that goes, and a read put off by may_read.
 */
#include <check.h>
#include <errno.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "check_tap.h"
#include "net/link.h"
#include "util/log.h"

/* One link under test and what it told its owner. */
struct owner {
    struct event_base *base;
    struct link_driver *driver;
    struct link link;
    int peer;       /* the other end of the socketpair */
    size_t consume; /* bytes `readable` takes from the input each time; SIZE_MAX: all */
    char got[256];
    size_t got_len;
    int readable, written, lost, done;
    bool orderly;
    char why[256];
    bool allow_read;
    int may_read_asked;
    int read_order;       /* when `readable` was first heard, counted over all owners */
    struct owner **frees; /* `readable` frees this owner (and clears the pointer) */
    bool joined;          /* shares another owner's base and driver */
};

static int readable_heard;

static void owner_free(struct owner *o);

static void on_readable(void *arg)
{
    struct owner *o = arg;
    struct evbuffer *in = link_input(&o->link);
    size_t n = evbuffer_get_length(in);

    if (o->readable++ == 0)
        o->read_order = ++readable_heard;
    if (n > o->consume)
        n = o->consume;
    if (n > sizeof(o->got) - o->got_len)
        n = sizeof(o->got) - o->got_len;
    o->got_len += (size_t)evbuffer_remove(in, o->got + o->got_len, n);
    if (o->frees && *o->frees) {
        owner_free(*o->frees);
        *o->frees = NULL;
    }
}

static void on_written(void *arg)
{
    ((struct owner *)arg)->written++;
}

static void on_lost(void *arg, bool orderly, const char *why)
{
    struct owner *o = arg;

    o->lost++;
    o->orderly = orderly;
    snprintf(o->why, sizeof(o->why), "%s", why ? why : "");
}

static void on_done(void *arg)
{
    ((struct owner *)arg)->done++;
}

static bool on_may_read(void *arg)
{
    struct owner *o = arg;

    o->may_read_asked++;
    return o->allow_read;
}

static const struct link_events events = {on_readable, on_written, on_lost, on_done, on_may_read};

/* An owner of a link on `base` and `driver`, or on new ones when they are NULL. */
static struct owner *owner_on(struct event_base *base, struct link_driver *driver)
{
    struct owner *o = calloc(1, sizeof(*o));
    int sv[2];

    ck_assert_ptr_nonnull(o);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    o->joined = base != NULL;
    o->base = base ? base : event_base_new();
    o->driver = driver ? driver : link_driver_new(o->base);
    ck_assert_ptr_nonnull(o->driver);
    o->peer = sv[1];
    o->consume = SIZE_MAX;
    o->allow_read = true;
    struct link_meta meta = {.transport = LINK_TCP}; /* its peer unknown: a socketpair */
    struct link_stream stream = {.fd = sv[0], .driver = o->driver};
    link_init(&o->link, &stream, &meta, &events, o);
    return o;
}

static struct owner *owner_new(void)
{
    return owner_on(NULL, NULL);
}

/* Freed before the owner it joined. */
static void owner_free(struct owner *o)
{
    link_release(&o->link);
    if (!o->joined) {
        link_driver_free(o->driver);
        event_base_free(o->base);
    }
    if (o->peer >= 0)
        close(o->peer);
    free(o);
}

/* Run the loop until nothing is left to do now. */
static void turn(struct owner *o)
{
    for (int i = 0; i < 4; i++)
        event_base_loop(o->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
}

/* What the peer can read now, as a string (at most `size` - 1 bytes). */
static const char *peer_read(struct owner *o, char *buf, size_t size)
{
    ssize_t n = read(o->peer, buf, size - 1);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

START_TEST(test_output_goes_in_one_write_and_idle_links_keep_no_buffer)
{
    struct owner *o = owner_new();
    char buf[64];

    ck_assert_int_eq(link_write(&o->link, "ab", 2), 0);
    ck_assert_int_eq(link_write(&o->link, "cd", 2), 0);
    ck_assert_uint_eq(link_output_pending(&o->link), 4);
    ck_assert_str_eq(peer_read(o, buf, sizeof(buf)), ""); /* nothing before the loop's turn */
    turn(o);
    ck_assert_str_eq(peer_read(o, buf, sizeof(buf)), "abcd");
    ck_assert_int_eq(o->written, 1);
    ck_assert_ptr_null(o->link.out);
    ck_assert(!o->link.write_waiting);

    ck_assert_int_eq(write(o->peer, "hello", 5), 5);
    turn(o);
    ck_assert_int_eq(o->readable, 1);
    ck_assert_uint_eq(o->got_len, 5);
    ck_assert_ptr_null(o->link.in); /* all consumed: the buffer went */
    owner_free(o);
}
END_TEST

START_TEST(test_unconsumed_input_stays_for_the_next_read)
{
    struct owner *o = owner_new();

    o->consume = 2;
    ck_assert_int_eq(write(o->peer, "abcde", 5), 5);
    turn(o);
    ck_assert_uint_eq(o->got_len, 2);
    ck_assert_ptr_nonnull(link_input(&o->link));
    ck_assert_uint_eq(evbuffer_get_length(link_input(&o->link)), 3);
    o->consume = SIZE_MAX;
    ck_assert_int_eq(write(o->peer, "f", 1), 1);
    turn(o);
    ck_assert_uint_eq(o->got_len, 6);
    ck_assert_mem_eq(o->got, "abcdef", 6);
    link_input_settled(&o->link);
    ck_assert_ptr_null(o->link.in);
    owner_free(o);
}
END_TEST

START_TEST(test_a_full_socket_waits_and_written_comes_at_the_low_mark)
{
    struct owner *o = owner_new();
    static char big[1 << 20], sink[1 << 16];
    size_t drained = 0;

    memset(big, 'x', sizeof(big));
    link_watch_output(&o->link, 1000);
    ck_assert_int_eq(link_write(&o->link, big, sizeof(big)), 0);
    turn(o);
    ck_assert(o->link.write_waiting); /* the socketpair holds far less than 1 MiB */
    ck_assert(o->link.polled_out);
    ck_assert_int_eq(o->written, 0);
    for (int i = 0; i < 10000 && drained < sizeof(big); i++) {
        ssize_t n = read(o->peer, sink, sizeof(sink));
        if (n > 0)
            drained += (size_t)n;
        turn(o);
    }
    ck_assert_uint_eq(drained, sizeof(big));
    ck_assert_int_ge(o->written, 1);
    ck_assert_uint_eq(link_output_pending(&o->link), 0);
    ck_assert_ptr_null(o->link.out);
    owner_free(o);
}
END_TEST

START_TEST(test_the_peer_closing_is_an_orderly_loss)
{
    struct owner *o = owner_new();

    close(o->peer);
    o->peer = -1;
    turn(o);
    ck_assert_int_eq(o->lost, 1);
    ck_assert(o->orderly);
    ck_assert(o->link.peer_eof);
    owner_free(o);
}
END_TEST

START_TEST(test_a_write_to_a_gone_peer_is_a_loss_with_its_reason)
{
    struct owner *o = owner_new();

    o->allow_read = false; /* the loss must come from the write, not from reading EOF */
    close(o->peer);
    o->peer = -1;
    ck_assert_int_eq(link_write(&o->link, "late", 4), 0);
    turn(o);
    ck_assert_int_eq(o->lost, 1);
    ck_assert(!o->orderly);
    ck_assert_msg(strstr(o->why, "connection lost: ") == o->why, "why: %s", o->why);
    ck_assert_msg(strstr(o->why, strerror(EPIPE)) != NULL, "why: %s", o->why);
    /* Nothing more is written, and a second write is no second loss. */
    ck_assert_int_eq(link_write(&o->link, "more", 4), 0);
    turn(o);
    ck_assert_int_eq(o->lost, 1);
    owner_free(o);
}
END_TEST

START_TEST(test_close_sends_what_is_queued_then_shuts_and_waits_for_the_peer)
{
    struct owner *o = owner_new();
    char buf[64];

    ck_assert_int_eq(link_write(&o->link, "bye", 3), 0);
    link_close(&o->link, false, 5, 5);
    ck_assert_int_eq(o->done, 0);
    turn(o);
    ck_assert_str_eq(peer_read(o, buf, sizeof(buf)), "bye");
    ck_assert_int_eq((int)read(o->peer, buf, sizeof(buf)), 0); /* our side is shut */
    ck_assert_int_eq(o->done, 0);                              /* the peer has a moment */
    ck_assert_int_eq(write(o->peer, "ignored", 7), 7);         /* what it sends is dropped */
    turn(o);
    ck_assert_int_eq(o->readable, 0);
    close(o->peer);
    o->peer = -1;
    turn(o);
    ck_assert_int_eq(o->done, 1);
    ck_assert_int_eq(o->lost, 0);
    owner_free(o);
}
END_TEST

START_TEST(test_an_abandoned_link_writes_nothing_more)
{
    struct owner *o = owner_new();
    char buf[64];

    ck_assert_int_eq(link_write(&o->link, "dropped", 7), 0);
    link_close(&o->link, true, 5, 5);
    ck_assert_int_eq(o->done, 1);
    turn(o);
    errno = 0;
    ck_assert_int_eq((int)read(o->peer, buf, sizeof(buf)), -1);
    ck_assert_int_eq(errno, EAGAIN);
    owner_free(o);
}
END_TEST

START_TEST(test_a_read_put_off_stays_in_the_socket)
{
    struct owner *o = owner_new();

    o->allow_read = false;
    ck_assert_int_eq(write(o->peer, "wait", 4), 4);
    turn(o);
    ck_assert_int_eq(o->readable, 0);
    ck_assert_ptr_null(o->link.in);
    o->allow_read = true;
    turn(o);
    ck_assert_int_eq(o->readable, 1);
    ck_assert_mem_eq(o->got, "wait", 4);
    owner_free(o);
}
END_TEST

START_TEST(test_reads_put_off_are_not_polled_and_resume_oldest_first)
{
    struct owner *first = owner_new();
    struct owner *gone = owner_on(first->base, first->driver);
    struct owner *second = owner_on(first->base, first->driver);

    first->allow_read = gone->allow_read = second->allow_read = false;
    ck_assert_int_eq(write(first->peer, "one", 3), 3);
    turn(first);
    ck_assert_int_eq(write(gone->peer, "gone", 4), 4);
    ck_assert_int_eq(write(second->peer, "two", 3), 3);
    turn(first);
    ck_assert(first->link.deferred && second->link.deferred);
    /* The poll no longer watches them; the next turn asks again. */
    ck_assert(!first->link.polled_in && !second->link.polled_in);
    int asked = first->may_read_asked;
    ck_assert_int_ge(asked, 2);
    event_base_loop(first->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    ck_assert_int_eq(first->may_read_asked, asked + 1);
    /* The oldest says no: those after it are not asked in that turn. */
    ck_assert_int_eq(second->may_read_asked, 1);
    owner_free(gone); /* its place on the list is skipped */

    second->allow_read = true;
    event_base_loop(first->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    ck_assert_int_eq(second->readable, 0);
    first->allow_read = true;
    turn(first);
    ck_assert_int_eq(first->readable, 1);
    ck_assert_int_eq(second->readable, 1);
    ck_assert_int_lt(first->read_order, second->read_order);
    ck_assert(!first->link.deferred && !second->link.deferred);
    ck_assert(second->link.polled_in);
    ck_assert_int_eq(write(second->peer, "more", 4), 4);
    turn(first);
    ck_assert_uint_eq(second->got_len, 7);
    owner_free(second);
    owner_free(first);
}
END_TEST

/* Run the loop once at a time until `done` holds (at most 8 turns). */
#define TURN_UNTIL(o, done)                                                                        \
    for (int turns_ = 0; !(done) && turns_ < 8; turns_++)                                          \
    event_base_loop((o)->base, EVLOOP_ONCE | EVLOOP_NONBLOCK)

/*
 * Links keep being put off while the older ones are read: the list never
 * empties, and must reuse the room the read ones left instead of growing.
 */
START_TEST(test_a_list_that_never_empties_does_not_grow)
{
    struct owner *a = owner_new();
    struct owner *b = owner_on(a->base, a->driver);
    enum { ROUNDS = 400 };

    a->allow_read = b->allow_read = false;
    ck_assert_int_eq(write(a->peer, "x", 1), 1);
    TURN_UNTIL(a, a->link.deferred);
    ck_assert(a->link.deferred);
    for (int i = 0; i < ROUNDS; i++) {
        struct owner *waiting = i % 2 ? b : a, *next = i % 2 ? a : b;
        ck_assert_int_eq(write(next->peer, "x", 1), 1);
        TURN_UNTIL(a, next->link.deferred);
        ck_assert_msg(next->link.deferred, "round %d: the new read was not put off", i);
        int heard = waiting->readable;
        waiting->allow_read = true;
        TURN_UNTIL(a, waiting->readable > heard);
        ck_assert_msg(waiting->readable > heard, "round %d: the oldest was not read", i);
        waiting->allow_read = false;
    }
    ck_assert_uint_eq(a->got_len + b->got_len, ROUNDS);
    ck_assert_uint_le(link_driver_waiting_room(a->driver), 64);
    owner_free(b);
    owner_free(a);
}
END_TEST

START_TEST(test_a_read_put_off_then_paused_waits_for_resume)
{
    struct owner *o = owner_new();

    o->allow_read = false;
    ck_assert_int_eq(write(o->peer, "held", 4), 4);
    turn(o);
    ck_assert(o->link.deferred);
    link_pause_reading(&o->link);
    ck_assert(!o->link.deferred);
    o->allow_read = true;
    turn(o);
    ck_assert_int_eq(o->readable, 0);
    link_resume_reading(&o->link);
    turn(o);
    ck_assert_int_eq(o->readable, 1);
    owner_free(o);
}
END_TEST

/*
 * Two links are ready in one poll and the first one read frees the other
 * (as a client taking over a session ends the old connection): the other's
 * readiness, already taken from the poll, must not reach freed memory.
 */
START_TEST(test_a_link_freed_by_another_in_one_poll_hears_nothing)
{
    struct owner *host = owner_new(); /* holds the loop and the driver */
    struct owner *a = owner_on(host->base, host->driver);
    struct owner *b = owner_on(host->base, host->driver);

    ck_assert_int_eq(write(a->peer, "a", 1), 1);
    ck_assert_int_eq(write(b->peer, "b", 1), 1);
    /* Whichever is read first frees the other. */
    a->frees = &b;
    b->frees = &a;
    turn(host);
    ck_assert((a == NULL) != (b == NULL));
    struct owner *left = a ? a : b;
    ck_assert_int_eq(left->readable, 1);
    owner_free(left);
    owner_free(host);
}
END_TEST

START_TEST(test_paused_reading_reads_nothing_until_resumed)
{
    struct owner *o = owner_new();

    link_pause_reading(&o->link);
    ck_assert_int_eq(write(o->peer, "later", 5), 5);
    turn(o);
    ck_assert_int_eq(o->readable, 0);
    link_resume_reading(&o->link);
    turn(o);
    ck_assert_int_eq(o->readable, 1);
    ck_assert_uint_eq(o->got_len, 5);
    owner_free(o);
}
END_TEST

/* A peer is kept as its address and named in the log as it always was. */
START_TEST(test_a_peer_is_kept_as_its_address_and_named_as_text)
{
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(53422)};
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_port = htons(1883)};
    struct sockaddr_un un = {.sun_family = AF_UNIX};

    ck_assert_int_eq(inet_pton(AF_INET, "192.0.2.7", &in.sin_addr), 1);
    ck_assert_int_eq(inet_pton(AF_INET6, "2001:db8::1", &in6.sin6_addr), 1);
    struct link_peer p = link_peer_of((struct sockaddr *)&in, sizeof(in));
    ck_assert_str_eq(link_peer_name(&p).s, "192.0.2.7:53422");
    p = link_peer_of((struct sockaddr *)&in6, sizeof(in6));
    ck_assert_str_eq(link_peer_name(&p).s, "[2001:db8::1]:1883");
    /* Neither IPv4 nor IPv6, or shorter than its family's address: unknown. */
    p = link_peer_of((struct sockaddr *)&un, sizeof(un));
    ck_assert_uint_eq(p.family, 0);
    ck_assert_str_eq(link_peer_name(&p).s, "?");
    p = link_peer_of((struct sockaddr *)&in6, sizeof(in));
    ck_assert_str_eq(link_peer_name(&p).s, "?");
}
END_TEST

int main(void)
{
    log_set_level(LOG_LEVEL_ERROR);
    signal(SIGPIPE, SIG_IGN); /* as aviaryd: a write to a gone peer fails with EPIPE */
    Suite *s = suite_create("link");
    TCase *tc = tcase_create("socket");
    tcase_add_test(tc, test_a_peer_is_kept_as_its_address_and_named_as_text);
    tcase_add_test(tc, test_output_goes_in_one_write_and_idle_links_keep_no_buffer);
    tcase_add_test(tc, test_unconsumed_input_stays_for_the_next_read);
    tcase_add_test(tc, test_a_full_socket_waits_and_written_comes_at_the_low_mark);
    tcase_add_test(tc, test_the_peer_closing_is_an_orderly_loss);
    tcase_add_test(tc, test_a_write_to_a_gone_peer_is_a_loss_with_its_reason);
    tcase_add_test(tc, test_close_sends_what_is_queued_then_shuts_and_waits_for_the_peer);
    tcase_add_test(tc, test_an_abandoned_link_writes_nothing_more);
    tcase_add_test(tc, test_a_read_put_off_stays_in_the_socket);
    tcase_add_test(tc, test_reads_put_off_are_not_polled_and_resume_oldest_first);
    tcase_add_test(tc, test_a_list_that_never_empties_does_not_grow);
    tcase_add_test(tc, test_a_read_put_off_then_paused_waits_for_resume);
    tcase_add_test(tc, test_paused_reading_reads_nothing_until_resumed);
    tcase_add_test(tc, test_a_link_freed_by_another_in_one_poll_hears_nothing);
    suite_add_tcase(s, tc);
    return check_tap_run(s);
}
