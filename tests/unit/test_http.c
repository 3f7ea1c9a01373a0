/*
 * Unit tests of net/http: requests read, bounded and answered over a real
 * socket pair, the handler's answers now or later, long answers, the abort
 * hook, and the refusals (4xx, 503) with the connection's end.
 */
#include <check.h>
#include <errno.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "check_tap.h"
#include "net/http.h"
#include "net/link.h"
#include "util/base64.h"

/* What the test handler saw and how it answers. */
struct seen {
    int count;
    char method[16], path[128], query[128], host[64], body[256];
    size_t body_len;
    bool defer;                /* keep the request instead of answering */
    struct http_request *held; /* the request kept */
    int aborted;               /* abort hook calls */
    bool stream;               /* answer with a stream */
};

static void on_abort(void *arg)
{
    struct seen *s = arg;
    s->aborted++;
    s->held = NULL;
}

static void handler(void *ctx, struct http_request *req)
{
    struct seen *s = ctx;
    const char *host = http_header(req, "host");
    char body[300];

    s->count++;
    snprintf(s->method, sizeof(s->method), "%s", req->method);
    snprintf(s->path, sizeof(s->path), "%s", req->path);
    snprintf(s->query, sizeof(s->query), "%s", req->query);
    snprintf(s->host, sizeof(s->host), "%s", host ? host : "");
    s->body_len = req->body_len < sizeof(s->body) - 1 ? req->body_len : sizeof(s->body) - 1;
    memcpy(s->body, req->body, s->body_len);
    s->body[s->body_len] = '\0';
    req->abort = on_abort;
    req->abort_arg = s;
    if (s->stream) {
        http_stream_begin(req, "text/event-stream");
        http_stream_write(req, "data: one\n\n", 11);
        s->held = req;
        return;
    }
    if (s->defer) {
        s->held = req;
        return;
    }
    int n = snprintf(body, sizeof(body), "%s %s #%d", req->method, req->path, s->count);
    http_add_header(req, "X-Test", "yes");
    http_reply(req, 200, "text/plain", body, (size_t)n);
}

struct rig {
    struct event_base *base;
    struct http_server *server;
    struct seen seen;
    int client; /* our end of the pair */
};

static void rig_connect(struct rig *r)
{
    int sv[2];
    struct link_meta meta = {.transport = LINK_TCP};

    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(sv[1], F_SETFL, O_NONBLOCK);
    struct sockaddr_in from = {.sin_family = AF_INET, .sin_port = htons(4242)};
    from.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    meta.peer = link_peer_of((struct sockaddr *)&from, sizeof(from));
    http_server_accept(r->server, bufferevent_socket_new(r->base, sv[1], BEV_OPT_CLOSE_ON_FREE),
                       &meta, 0);
    r->client = sv[0];
}

static void rig_open(struct rig *r, size_t max_connections)
{
    memset(r, 0, sizeof(*r));
    r->base = event_base_new();
    r->server = http_server_new(r->base, handler, &r->seen, max_connections, 1024);
    rig_connect(r);
}

static void rig_close(struct rig *r)
{
    close(r->client);
    http_server_free(r->server);
    event_base_free(r->base);
}

static void pump(struct rig *r)
{
    for (int i = 0; i < 20; i++) {
        event_base_loop(r->base, EVLOOP_NONBLOCK);
        usleep(1000);
    }
}

static void say(struct rig *r, const char *text)
{
    ck_assert_int_eq(write(r->client, text, strlen(text)), (ssize_t)strlen(text));
    pump(r);
}

/* What arrived on our end so far; *eof when the server closed. */
static char *hear(struct rig *r, bool *eof)
{
    static char buf[65536];
    size_t len = 0;
    ssize_t n;

    pump(r);
    *eof = false;
    while (len < sizeof(buf) - 1 && (n = read(r->client, buf + len, sizeof(buf) - 1 - len)) != 0) {
        if (n < 0)
            break;
        len += (size_t)n;
    }
    if (n == 0)
        *eof = true;
    buf[len] = '\0';
    return buf;
}

START_TEST(test_request_parts_reach_the_handler_and_keep_alive_serves_the_next)
{
    struct rig r;
    bool eof;

    rig_open(&r, 8);
    say(&r, "GET /a%20b/c?x=1&y=2 HTTP/1.1\r\nHost: here\r\nX-Empty:\r\n\r\n");
    ck_assert_int_eq(r.seen.count, 1);
    ck_assert_str_eq(r.seen.method, "GET");
    ck_assert_str_eq(r.seen.path, "/a b/c");
    ck_assert_str_eq(r.seen.query, "x=1&y=2");
    ck_assert_str_eq(r.seen.host, "here");
    char *got = hear(&r, &eof);
    ck_assert_msg(strstr(got, "HTTP/1.1 200 OK\r\n") == got, "%s", got);
    ck_assert_ptr_nonnull(strstr(got, "Content-Length: 13\r\n"));
    ck_assert_ptr_nonnull(strstr(got, "X-Test: yes\r\n"));
    ck_assert_ptr_nonnull(
        strstr(got, "Connection: keep-alive\r\nX-Test: yes\r\n\r\nGET /a b/c #1"));
    ck_assert(!eof);
    say(&r, "POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
    ck_assert_int_eq(r.seen.count, 2);
    ck_assert_str_eq(r.seen.body, "hello");
    ck_assert_ptr_nonnull(strstr(hear(&r, &eof), "POST /p #2"));
    ck_assert_uint_eq(http_server_stats(r.server)->requests, 2);
    rig_close(&r);
}
END_TEST

START_TEST(test_blank_lines_before_a_request_are_ignored)
{
    struct rig r;
    bool eof;

    rig_open(&r, 8);
    say(&r, "\r\n\r\nGET /after HTTP/1.1\r\n\r\n\r\n");
    say(&r, "GET /next HTTP/1.1\r\n\r\n");
    ck_assert_int_eq(r.seen.count, 2);
    char *got = hear(&r, &eof);
    ck_assert_ptr_nonnull(strstr(got, "GET /after #1"));
    ck_assert_ptr_nonnull(strstr(got, "GET /next #2"));
    ck_assert(!eof);
    rig_close(&r);
}
END_TEST

START_TEST(test_pipelined_requests_are_answered_in_order)
{
    struct rig r;
    bool eof;

    rig_open(&r, 8);
    say(&r, "GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\nConnection: "
            "close\r\n\r\n");
    ck_assert_int_eq(r.seen.count, 3);
    char *got = hear(&r, &eof);
    char *one = strstr(got, "GET /1 #1"), *two = strstr(got, "GET /2 #2"),
         *three = strstr(got, "GET /3 #3");
    ck_assert(one && two && three && one < two && two < three);
    ck_assert_ptr_nonnull(strstr(got, "Connection: close\r\n"));
    ck_assert(eof);
    rig_close(&r);
}
END_TEST

START_TEST(test_a_later_answer_then_the_waiting_request)
{
    struct rig r;
    bool eof;

    rig_open(&r, 8);
    r.seen.defer = true;
    say(&r, "GET /slow HTTP/1.1\r\n\r\nGET /next HTTP/1.1\r\n\r\n");
    ck_assert_int_eq(r.seen.count, 1); /* the next waits for the first's answer */
    ck_assert_str_eq(hear(&r, &eof), "");
    r.seen.defer = false;
    http_reply(r.seen.held, 204, NULL, NULL, 0);
    pump(&r);
    ck_assert_int_eq(r.seen.count, 2);
    char *got = hear(&r, &eof);
    ck_assert_msg(strstr(got, "HTTP/1.1 204 No Content\r\n") == got, "%s", got);
    ck_assert_ptr_nonnull(strstr(got, "GET /next #2"));
    ck_assert_int_eq(r.seen.aborted, 0);
    rig_close(&r);
}
END_TEST

START_TEST(test_a_client_that_goes_first_aborts_the_held_request)
{
    struct rig r;

    rig_open(&r, 8);
    r.seen.defer = true;
    say(&r, "GET /held HTTP/1.1\r\n\r\n");
    ck_assert_ptr_nonnull(r.seen.held);
    shutdown(r.client, SHUT_RDWR);
    pump(&r);
    /* Reading is paused while the handler holds the request: the next write finds the end. */
    ck_assert_int_eq(r.seen.aborted, 0);
    http_server_free(r.server); /* the server's end aborts what is held */
    ck_assert_int_eq(r.seen.aborted, 1);
    ck_assert_ptr_null(r.seen.held);
    close(r.client);
    event_base_free(r.base);
}
END_TEST

START_TEST(test_a_stream_sends_until_it_ends_and_then_closes)
{
    struct rig r;
    bool eof;

    rig_open(&r, 8);
    r.seen.stream = true;
    say(&r, "GET /events HTTP/1.1\r\n\r\n");
    http_stream_write(r.seen.held, "data: two\n\n", 11);
    char *got = hear(&r, &eof);
    ck_assert_ptr_nonnull(strstr(got, "Content-Type: text/event-stream\r\n"));
    ck_assert_ptr_null(strstr(got, "Content-Length"));
    ck_assert_ptr_nonnull(strstr(got, "\r\n\r\ndata: one\n\ndata: two\n\n"));
    ck_assert(!eof);
    http_stream_end(r.seen.held);
    hear(&r, &eof);
    ck_assert(eof);
    ck_assert_int_eq(r.seen.aborted, 0);
    rig_close(&r);
}
END_TEST

START_TEST(test_expect_100_continue_is_answered_before_the_body)
{
    struct rig r;
    bool eof;

    rig_open(&r, 8);
    say(&r, "PUT /b HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
    ck_assert_str_eq(hear(&r, &eof), "HTTP/1.1 100 Continue\r\n\r\n");
    say(&r, "abc");
    ck_assert_str_eq(r.seen.body, "abc");
    ck_assert_ptr_nonnull(strstr(hear(&r, &eof), "HTTP/1.1 200 OK"));
    rig_close(&r);
}
END_TEST

/* Each malformed or oversized request: its status, no handler call, and the end. */
START_TEST(test_bad_requests_get_their_status_and_the_end)
{
    static char big[HTTP_MAX_HEAD + 200], many[4096];
    static const struct {
        const char *request;
        const char *status;
    } bad[] = {
        {"GARBAGE\r\n\r\n", "400 Bad Request"},
        {"GET  / HTTP/1.1\r\n\r\n", "400 Bad Request"},
        {"get / HTTP/1.1\r\n\r\n", "400 Bad Request"},
        {"GET nopath HTTP/1.1\r\n\r\n", "400 Bad Request"},
        {"GET / HTTP/2.0\r\n\r\n", "505 HTTP Version Not Supported"},
        {"GET / SPDY\r\n\r\n", "400 Bad Request"},
        {"GET /a%00b HTTP/1.1\r\n\r\n", "400 Bad Request"},
        {"GET / HTTP/1.1\r\nNo colon here\r\n\r\n", "400 Bad Request"},
        {"GET / HTTP/1.1\r\n folded: line\r\n\r\n", "400 Bad Request"},
        {"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n", "400 Bad Request"},
        {"GET / HTTP/1.1\r\nX: a\nY: b\r\n\r\n", "400 Bad Request"},
        {"POST / HTTP/1.1\r\nContent-Length: 12x\r\n\r\n", "400 Bad Request"},
        {"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "400 Bad Request"},
        {"POST / HTTP/1.1\r\nContent-Length: 1025\r\n\r\n", "413 Content Too Large"},
        {"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", "411 Length Required"},
        {big, "431 Request Header Fields Too Large"},
        {many, "431 Request Header Fields Too Large"},
    };

    memset(big, 0, sizeof(big));
    snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nX: ");
    memset(big + strlen(big), 'a', HTTP_MAX_HEAD);
    strcpy(many, "GET / HTTP/1.1\r\n");
    for (int i = 0; i <= HTTP_MAX_HEADERS; i++)
        snprintf(many + strlen(many), sizeof(many) - strlen(many), "H%d: v\r\n", i);
    strcat(many, "\r\n");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct rig r;
        bool eof;
        rig_open(&r, 8);
        say(&r, bad[i].request);
        char *got = hear(&r, &eof);
        ck_assert_msg(strncmp(got + 9, bad[i].status, strlen(bad[i].status)) == 0,
                      "request %zu: expected %s, got %.60s", i, bad[i].status, got);
        ck_assert_msg(eof, "request %zu: the connection stays open", i);
        ck_assert_int_eq(r.seen.count, 0);
        ck_assert_uint_eq(http_server_stats(r.server)->bad_requests, 1);
        rig_close(&r);
    }
}
END_TEST

START_TEST(test_past_max_connections_the_next_gets_503)
{
    struct rig r;
    bool eof;

    rig_open(&r, 1);
    int first = r.client;
    rig_connect(&r);
    char *got = hear(&r, &eof);
    ck_assert_msg(strstr(got, "HTTP/1.1 503 Service Unavailable\r\n") == got, "%s", got);
    ck_assert(eof);
    ck_assert_uint_eq(http_server_stats(r.server)->refused_conns, 1);
    ck_assert_uint_eq(http_server_stats(r.server)->connections, 1);
    close(r.client);
    r.client = first; /* the first is still served */
    say(&r, "GET /still HTTP/1.1\r\n\r\n");
    ck_assert_ptr_nonnull(strstr(hear(&r, &eof), "GET /still #1"));
    rig_close(&r);
}
END_TEST

START_TEST(test_http_1_0_closes_after_its_answer)
{
    struct rig r;
    bool eof;

    rig_open(&r, 8);
    say(&r, "HEAD /h HTTP/1.0\r\n\r\n");
    char *got = hear(&r, &eof);
    ck_assert_ptr_nonnull(strstr(got, "Content-Length: 10\r\nConnection: close\r\n"));
    ck_assert_ptr_null(strstr(got, "HEAD /h #1")); /* HEAD: no body */
    ck_assert(eof);
    rig_close(&r);
}
END_TEST

START_TEST(test_a_drain_ends_streams_and_idle_connections_and_answers_the_held)
{
    struct rig r;
    bool eof;

    rig_open(&r, 8);
    r.seen.stream = true;
    say(&r, "GET /events HTTP/1.1\r\n\r\n");
    int streaming = r.client;
    rig_connect(&r); /* idle */
    int idle = r.client;
    rig_connect(&r);
    r.seen.stream = false;
    r.seen.defer = true;
    say(&r, "GET /held HTTP/1.1\r\n\r\n");
    struct http_request *held = r.seen.held;
    ck_assert_ptr_nonnull(held);
    http_server_drain(r.server);
    ck_assert_int_eq(r.seen.aborted, 1); /* the stream's */
    http_reply(held, 200, "text/plain", "late", 4);
    char *got = hear(&r, &eof);
    ck_assert_ptr_nonnull(strstr(got, "Connection: close\r\n"));
    ck_assert(eof);
    r.client = idle;
    hear(&r, &eof);
    ck_assert(eof);
    r.client = streaming;
    hear(&r, &eof);
    ck_assert(eof);
    rig_close(&r);
}
END_TEST

START_TEST(test_base64_round_trips_and_refuses_what_is_not_base64)
{
    static const struct {
        const char *plain, *encoded;
    } v[] = {{"", ""},
             {"f", "Zg=="},
             {"fo", "Zm8="},
             {"foo", "Zm9v"},
             {"foob", "Zm9vYg=="},
             {"fooba", "Zm9vYmE="},
             {"foobar", "Zm9vYmFy"}};
    char out[32];
    unsigned char back[32];

    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        base64_encode(v[i].plain, strlen(v[i].plain), out);
        ck_assert_str_eq(out, v[i].encoded);
        long n = base64_decode(v[i].encoded, back);
        ck_assert_int_eq(n, (long)strlen(v[i].plain));
        ck_assert(memcmp(back, v[i].plain, (size_t)n) == 0);
    }
    ck_assert_int_eq(base64_decode("Zm9", back), -1);
    ck_assert_int_eq(base64_decode("Zm9v!A==", back), -1);
    ck_assert_int_eq(base64_decode("Zg==Zg==", back), -1);
    ck_assert_int_eq(base64_decode("Z===", back), -1);
    ck_assert_int_eq(base64_decode("Zm=v", back), -1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("http");
    TCase *tc = tcase_create("http");

    tcase_add_test(tc, test_request_parts_reach_the_handler_and_keep_alive_serves_the_next);
    tcase_add_test(tc, test_blank_lines_before_a_request_are_ignored);
    tcase_add_test(tc, test_pipelined_requests_are_answered_in_order);
    tcase_add_test(tc, test_a_later_answer_then_the_waiting_request);
    tcase_add_test(tc, test_a_client_that_goes_first_aborts_the_held_request);
    tcase_add_test(tc, test_a_stream_sends_until_it_ends_and_then_closes);
    tcase_add_test(tc, test_expect_100_continue_is_answered_before_the_body);
    tcase_add_test(tc, test_bad_requests_get_their_status_and_the_end);
    tcase_add_test(tc, test_past_max_connections_the_next_gets_503);
    tcase_add_test(tc, test_http_1_0_closes_after_its_answer);
    tcase_add_test(tc, test_a_drain_ends_streams_and_idle_connections_and_answers_the_held);
    tcase_add_test(tc, test_base64_round_trips_and_refuses_what_is_not_base64);
    suite_add_tcase(s, tc);
    return check_tap_run(s);
}
