/*
 * Unit tests of what net/ shares between its listeners: peer addresses for the
 * log, the next-port loop of the desktop defaults (net/addr.h), and the words
 * of OpenSSL's errors (net/tls.h), over a real bufferevent_openssl too.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "check_tap.h"
#include "net/addr.h"
#include "net/tls.h"
#include "util/log.h"

START_TEST(test_addr_format_ipv4_and_ipv6)
{
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(53422)};
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_port = htons(1883)};
    char out[64];

    inet_pton(AF_INET, "127.0.0.1", &in.sin_addr);
    inet_pton(AF_INET6, "::1", &in6.sin6_addr);
    ck_assert_str_eq(addr_format((struct sockaddr *)&in, sizeof(in), out, sizeof(out)),
                     "127.0.0.1:53422");
    ck_assert_str_eq(addr_format((struct sockaddr *)&in6, sizeof(in6), out, sizeof(out)),
                     "[::1]:1883");
}
END_TEST

START_TEST(test_addr_format_unknown_family_or_short_length)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
    char out[64];

    ck_assert_str_eq(addr_format((struct sockaddr *)&un, sizeof(un), out, sizeof(out)), "unknown");
    ck_assert_str_eq(
        addr_format((struct sockaddr *)&in6, sizeof(struct sockaddr_in), out, sizeof(out)),
        "unknown");
}
END_TEST

/* A listen attempt that answers from a script: answers[i] for the i-th port tried. */
struct script {
    const int *answers;
    unsigned ports[ADDR_PORT_TRIES + 1];
    size_t calls;
};

static int scripted_attempt(unsigned port, void *arg)
{
    struct script *s = arg;
    s->ports[s->calls] = port;
    return s->answers[s->calls++];
}

START_TEST(test_addr_listen_port_moves_on_while_the_port_is_taken)
{
    static const int answers[] = {-EADDRINUSE, -EAGAIN, 0};
    struct script s = {.answers = answers};

    ck_assert_int_eq(addr_listen_port("tcp://127.0.0.1:1883", 1883, true, scripted_attempt, &s), 0);
    ck_assert_uint_eq(s.calls, 3);
    ck_assert_uint_eq(s.ports[0], 1883);
    ck_assert_uint_eq(s.ports[2], 1885);
}
END_TEST

START_TEST(test_addr_listen_port_tries_one_port_unless_asked)
{
    static const int answers[] = {-EADDRINUSE, 0};
    struct script s = {.answers = answers};

    ck_assert_int_eq(addr_listen_port("tcp://127.0.0.1:1883", 1883, false, scripted_attempt, &s),
                     -EADDRINUSE);
    ck_assert_uint_eq(s.calls, 1);
}
END_TEST

START_TEST(test_addr_listen_port_gives_up_on_other_errors)
{
    static const int answers[] = {-EADDRINUSE, -EACCES, 0};
    struct script s = {.answers = answers};

    ck_assert_int_eq(addr_listen_port("tcp://127.0.0.1:80", 80, true, scripted_attempt, &s),
                     -EACCES);
    ck_assert_uint_eq(s.calls, 2);
}
END_TEST

START_TEST(test_addr_listen_port_stops_at_the_limit_and_at_65535)
{
    static int taken[ADDR_PORT_TRIES + 1];
    struct script s = {.answers = taken};

    for (size_t i = 0; i <= ADDR_PORT_TRIES; i++)
        taken[i] = -EADDRINUSE;
    ck_assert_int_eq(addr_listen_port("ws://127.0.0.1:1884", 1884, true, scripted_attempt, &s),
                     -EADDRINUSE);
    ck_assert_uint_eq(s.calls, ADDR_PORT_TRIES);
    s.calls = 0;
    ck_assert_int_eq(addr_listen_port("ws://127.0.0.1:65534", 65534, true, scripted_attempt, &s),
                     -EADDRINUSE);
    ck_assert_uint_eq(s.calls, 2);
}
END_TEST

START_TEST(test_tls_error_text_reason_with_the_verify_result)
{
    unsigned long e = ERR_PACK(ERR_LIB_SSL, 0, SSL_R_CERTIFICATE_VERIFY_FAILED);
    char out[160];

    ck_assert_str_eq(tls_error_text(e, X509_V_OK, true, out, sizeof(out)),
                     "certificate verify failed");
    ck_assert_str_eq(tls_error_text(e, X509_V_ERR_CERT_HAS_EXPIRED, false, out, sizeof(out)),
                     "certificate verify failed (certificate has expired)");
}
END_TEST

/* A system error, as OpenSSL records one: no reason text of its own. */
START_TEST(test_tls_error_text_system_error_whole_or_its_words)
{
    char out[160], whole[160];

    ERR_clear_error();
    ERR_raise(ERR_LIB_SYS, ECONNRESET);
    unsigned long e = ERR_get_error();
    ck_assert_ptr_null(ERR_reason_error_string(e));
    ERR_error_string_n(e, whole, sizeof(whole));
    ck_assert_str_eq(tls_error_text(e, X509_V_OK, false, out, sizeof(out)), whole);
    ck_assert_str_eq(tls_error_text(e, X509_V_ERR_CERT_HAS_EXPIRED, true, out, sizeof(out)),
                     strerror(ECONNRESET));
}
END_TEST

START_TEST(test_tls_last_error_takes_the_oldest_and_empties_the_queue)
{
    char out[160];

    ERR_clear_error();
    ck_assert_str_eq(tls_last_error(0, "cannot load", out, sizeof(out)), "cannot load");
    ERR_raise(ERR_LIB_PEM, PEM_R_NO_START_LINE);
    ERR_raise(ERR_LIB_SSL, SSL_R_CERTIFICATE_VERIFY_FAILED);
    ck_assert_str_eq(tls_last_error(0, "cannot load", out, sizeof(out)), "no start line");
    ck_assert_uint_eq(ERR_peek_error(), 0);
}
END_TEST

/* What the event callback of the bufferevent under test saw. */
struct seen {
    short what;
    char why[160];
};

static void record_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct seen *seen = arg;
    seen->what = what;
    tls_bufferevent_error(bev, seen->why, sizeof(seen->why));
    event_base_loopbreak(bufferevent_get_base(bev));
}

/* A client that speaks plain HTTP to a TLS listener: OpenSSL's reason, from the bufferevent. */
START_TEST(test_tls_bufferevent_error_names_the_failed_handshake)
{
    struct event_base *base = event_base_new();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    struct seen seen = {0};
    struct timeval limit = {5, 0};
    int sv[2];
    static const char request[] = "GET /mqtt HTTP/1.1\r\nHost: x\r\n\r\n";

    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    struct bufferevent *bev = bufferevent_openssl_socket_new(
        base, sv[0], SSL_new(ctx), BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    ck_assert_ptr_nonnull(bev);
    bufferevent_setcb(bev, NULL, NULL, record_event_cb, &seen);
    bufferevent_enable(bev, EV_READ);
    ck_assert_int_eq(write(sv[1], request, sizeof(request) - 1), (ssize_t)sizeof(request) - 1);
    event_base_loopexit(base, &limit);
    event_base_dispatch(base);
    ck_assert(seen.what & BEV_EVENT_ERROR);
    ck_assert_str_eq(seen.why, "http request");
    bufferevent_free(bev);
    close(sv[1]);
    SSL_CTX_free(ctx);
    event_base_free(base);
}
END_TEST

/* Without an OpenSSL error (a plain socket, say) the text is errno's. */
START_TEST(test_tls_bufferevent_error_without_openssl_errors)
{
    struct event_base *base = event_base_new();
    struct bufferevent *bev = bufferevent_socket_new(base, -1, 0);
    char out[160];

    errno = ECONNRESET;
    ck_assert_str_eq(tls_bufferevent_error(bev, out, sizeof(out)), strerror(ECONNRESET));
    errno = 0;
    ck_assert_str_eq(tls_bufferevent_error(bev, out, sizeof(out)), "unknown error");
    bufferevent_free(bev);
    event_base_free(base);
}
END_TEST

int main(void)
{
    /* As in aviaryd once a TLS context exists: without it OpenSSL has no SSL reason texts. */
    OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS, NULL);
    /* The next-port loop logs each move at notice: not needed here. */
    log_set_level(LOG_LEVEL_WARNING);
    Suite *s = suite_create("net");
    TCase *tc = tcase_create("addr");
    tcase_add_test(tc, test_addr_format_ipv4_and_ipv6);
    tcase_add_test(tc, test_addr_format_unknown_family_or_short_length);
    tcase_add_test(tc, test_addr_listen_port_moves_on_while_the_port_is_taken);
    tcase_add_test(tc, test_addr_listen_port_tries_one_port_unless_asked);
    tcase_add_test(tc, test_addr_listen_port_gives_up_on_other_errors);
    tcase_add_test(tc, test_addr_listen_port_stops_at_the_limit_and_at_65535);
    suite_add_tcase(s, tc);
    tc = tcase_create("tls");
    tcase_add_test(tc, test_tls_error_text_reason_with_the_verify_result);
    tcase_add_test(tc, test_tls_error_text_system_error_whole_or_its_words);
    tcase_add_test(tc, test_tls_last_error_takes_the_oldest_and_empties_the_queue);
    tcase_add_test(tc, test_tls_bufferevent_error_names_the_failed_handshake);
    tcase_add_test(tc, test_tls_bufferevent_error_without_openssl_errors);
    suite_add_tcase(s, tc);

    return check_tap_run(s);
}
