/*
 * Unit tests of web/: the rule for admin keys (web_admin_check). The
 * integration tests bind to 127.0.0.1 only, so the listener beyond loopback
 * is made here: a key over plain http there is refused unless
 * allow-keys-without-tls is set, before the key is even looked at.
 */
#include <check.h>
#include <stdbool.h>
#include <string.h>

#include "broker/core.h"
#include "net/http.h"
#include "web/handlers.h"

#include "check_tap.h"

static int asked;

static bool key_is_good(void *ctx, const char *key)
{
    (void)ctx;
    asked++;
    return strcmp(key, "good") == 0;
}

/* A request to `w` carrying `auth` (NULL: no Authorization header). */
static enum web_admin_auth check_request(bool allow_keys_without_tls, bool over_tls,
                                         unsigned listener, const char *auth)
{
    struct broker b = {.allow_keys_without_tls = allow_keys_without_tls};
    struct web w = {.broker = &b, .admin_ok = key_is_good};
    struct http_request req = {.method = "GET",
                               .path = "/admin/plans",
                               .peer = "192.0.2.1:5",
                               .over_tls = over_tls,
                               .listener = listener};

    if (auth)
        req.headers[req.header_count++] = (struct http_header){"authorization", auth};
    return web_admin_check(&w, &req);
}

START_TEST(test_key_over_plain_http_beyond_loopback_is_refused_unlooked)
{
    asked = 0;
    ck_assert_int_eq(check_request(false, false, 0, "Bearer good"), WEB_ADMIN_NEEDS_TLS);
    ck_assert_int_eq(check_request(false, false, 0, "Bearer bad"), WEB_ADMIN_NEEDS_TLS);
    ck_assert_int_eq(asked, 0);
}
END_TEST

START_TEST(test_key_over_https_or_loopback_or_when_allowed_is_checked)
{
    ck_assert_int_eq(check_request(false, true, 0, "Bearer good"), WEB_ADMIN_OK);
    ck_assert_int_eq(check_request(false, false, HTTP_LISTENER_LOOPBACK, "Bearer good"),
                     WEB_ADMIN_OK);
    ck_assert_int_eq(check_request(true, false, 0, "Bearer good"), WEB_ADMIN_OK);
    ck_assert_int_eq(check_request(true, false, 0, "bearer  good"), WEB_ADMIN_OK);
    ck_assert_int_eq(check_request(false, true, 0, "Bearer bad"), WEB_ADMIN_WRONG);
}
END_TEST

START_TEST(test_no_bearer_key_is_missing)
{
    ck_assert_int_eq(check_request(false, true, 0, NULL), WEB_ADMIN_MISSING);
    ck_assert_int_eq(check_request(false, true, 0, "Basic Z29vZDp4"), WEB_ADMIN_MISSING);
    ck_assert_int_eq(check_request(false, false, 0, NULL), WEB_ADMIN_MISSING);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("web");
    TCase *tc = tcase_create("admin keys");
    tcase_add_test(tc, test_key_over_plain_http_beyond_loopback_is_refused_unlooked);
    tcase_add_test(tc, test_key_over_https_or_loopback_or_when_allowed_is_checked);
    tcase_add_test(tc, test_no_bearer_key_is_missing);
    suite_add_tcase(s, tc);
    return check_tap_run(s);
}
