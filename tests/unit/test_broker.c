/* Tests of the broker clients' shared parts: URL parsing and its messages, and the
 * per-URL registry. */
#include <check.h>

#include "check_main.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"

START_TEST(url_parts) {
  broker_url_t u;
  char err[512];
  ck_assert_int_eq(broker_parse_url("redis://127.0.0.1:6380/2", "redis", 6379, &u, err, sizeof err),
                   0);
  ck_assert_str_eq(u.host, "127.0.0.1");
  ck_assert_int_eq(u.port, 6380);
  ck_assert_str_eq(u.path, "2");
  ck_assert_str_eq(u.password, "");
  ck_assert_int_eq(broker_parse_url("redis://:s%40cret@cache", "redis", 6379, &u, err, sizeof err),
                   0);
  ck_assert_str_eq(u.host, "cache");
  ck_assert_int_eq(u.port, 6379);
  ck_assert_str_eq(u.user, "");
  ck_assert_str_eq(u.password, "s@cret");
  ck_assert_str_eq(u.path, "");
  ck_assert_int_eq(broker_parse_url("nats://app:pw@[::1]:4333", "nats", 4222, &u, err, sizeof err),
                   0);
  ck_assert_str_eq(u.host, "::1");
  ck_assert_int_eq(u.port, 4333);
  ck_assert_str_eq(u.user, "app");
  ck_assert_str_eq(u.password, "pw");
}
END_TEST

START_TEST(url_errors) {
  broker_url_t u;
  char err[512];
  ck_assert_int_eq(broker_parse_url("http://127.0.0.1:6379", "redis", 6379, &u, err, sizeof err),
                   -EINVAL);
  ck_assert_str_eq(
      err,
      "redis: unsupported URL scheme 'http' (expected redis://host:port): http://127.0.0.1:6379");
  ck_assert_int_eq(broker_parse_url("127.0.0.1:4222", "nats", 4222, &u, err, sizeof err), -EINVAL);
  ck_assert_str_eq(err, "nats: malformed URL (expected nats://host:port): 127.0.0.1:4222");
  ck_assert_int_eq(broker_parse_url("nats://", "nats", 4222, &u, err, sizeof err), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "malformed URL"));
  ck_assert_int_eq(broker_parse_url("redis://h:0", "redis", 6379, &u, err, sizeof err), -EINVAL);
  ck_assert_str_eq(err, "redis: bad port in URL: redis://h:0");
  /* a password never reaches a message */
  ck_assert_int_eq(broker_parse_url("http://app:s3cret@h", "redis", 6379, &u, err, sizeof err),
                   -EINVAL);
  ck_assert_str_eq(
      err, "redis: unsupported URL scheme 'http' (expected redis://host:port): http://app:***@h");
}
END_TEST

static int closed;
static void count_close(void *client) { closed += *(int *)client; }

START_TEST(registry_one_client_per_url) {
  static int a = 1, b = 10, c = 100;
  ck_assert_int_eq(broker_add("redis", "redis://a", &a, count_close), 0);
  ck_assert_int_eq(broker_add("nats", "redis://a", &b, count_close), 0);
  ck_assert_int_eq(broker_add("redis", "redis://b", &c, count_close), 0);
  ck_assert_ptr_eq(broker_find("redis", "redis://a"), &a);
  ck_assert_ptr_eq(broker_find("nats", "redis://a"), &b);
  ck_assert_ptr_eq(broker_find("redis", "redis://b"), &c);
  ck_assert_ptr_null(broker_find("redis", "redis://c"));
  broker_shutdown();
  ck_assert_int_eq(closed, 111);
  ck_assert_ptr_null(broker_find("redis", "redis://a"));
}
END_TEST

Suite *unit_suite(void) {
  Suite *su = suite_create("broker");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, url_parts);
  tcase_add_test(tc, url_errors);
  tcase_add_test(tc, registry_one_client_per_url);
  suite_add_tcase(su, tc);
  return su;
}
