/* Unit tests for src/adaptive.c on a fake clock and a model downstream: the limit
 * settles near the knee of a server that runs 20 requests at a time and queues the
 * rest, backs off on failures, stays put when the route does not use its limit, and
 * never leaves [1, max]. */
#include <check.h>

#include "check_main.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "adaptive.h"

/* A server with `slots` workers taking `ms` each: with n in flight, a request takes
 * ms * max(1, n / slots) (Little's law once it queues). */
static int64_t model_rtt_us(int n, int slots, int ms) {
  int64_t base = (int64_t)ms * 1000;
  return n <= slots ? base : base * n / slots;
}

/* Runs the route saturated (always `limit` in flight) for `ms` of fake time. */
static int drive(adaptive_t *a, int64_t *now, int64_t ms, int slots, int srv_ms) {
  int64_t end = *now + ms;
  while (*now < end) {
    int n = adaptive_limit(a);
    int64_t rtt = model_rtt_us(n, slots, srv_ms);
    for (int i = 0; i < n; i++) adaptive_sample(a, rtt, n, 0, *now);
    *now += rtt / 1000 > 0 ? rtt / 1000 : 1;
  }
  return adaptive_limit(a);
}

START_TEST(settles_near_the_knee) {
  adaptive_t a;
  int64_t now = 0;
  adaptive_init(&a, 1, 1000, now);
  int l = drive(&a, &now, 20000, 20, 2);
  printf("adaptive: from 1, after 20 s against 20 slots at 2 ms: limit %d\n", l);
  ck_assert_int_ge(l, 20);
  ck_assert_int_le(l, 40);
  adaptive_init(&a, 900, 1000, now); /* from far above: the first probe brings it down */
  l = drive(&a, &now, 60000, 20, 2);
  printf("adaptive: from 900: limit %d\n", l);
  ck_assert_int_ge(l, 20);
  ck_assert_int_le(l, 40);
  /* the downstream grows: the limit follows */
  l = drive(&a, &now, 60000, 100, 2);
  printf("adaptive: 100 slots: limit %d\n", l);
  ck_assert_int_ge(l, 100);
  ck_assert_int_le(l, 160);
}
END_TEST

START_TEST(failures_back_off) {
  adaptive_t a;
  int64_t now = 0;
  adaptive_init(&a, 100, 1000, now);
  for (int w = 0; w < 10; w++) {
    for (int i = 0; i < 10; i++) adaptive_sample(&a, 2000, 100, i == 0, now);
    now += 50;
  }
  ck_assert_int_le(adaptive_limit(&a), 100 * 0.9 * 0.9 * 0.9 * 0.9 * 0.9 * 0.9 * 0.9 * 0.9 * 0.9);
  for (int w = 0; w < 1000; w++) {
    for (int i = 0; i < 10; i++) adaptive_sample(&a, 2000, 100, 1, now);
    now += 50;
  }
  ck_assert_int_eq(adaptive_limit(&a), 1); /* never below 1 */
}
END_TEST

START_TEST(unused_limit_stays) {
  adaptive_t a;
  int64_t now = 0;
  adaptive_init(&a, 50, 1000, now);
  for (int w = 0; w < 100; w++) {
    for (int i = 0; i < 10; i++) adaptive_sample(&a, 1000 + w * 100, 3, 0, now);
    now += 50;
  }
  ck_assert_int_eq(adaptive_limit(&a), 50);
}
END_TEST

START_TEST(bounded_by_max) {
  adaptive_t a;
  int64_t now = 0;
  adaptive_init(&a, 5000, 64, now);
  ck_assert_int_eq(adaptive_limit(&a), 64);
  ck_assert_int_eq(drive(&a, &now, 10000, 1000, 2), 64); /* no queueing: grows to max */
  adaptive_init(&a, 0, 0, now);
  ck_assert_int_eq(adaptive_limit(&a), 1);
  /* a window needs enough samples and enough time */
  adaptive_init(&a, 10, 100, 0);
  for (int i = 0; i < 100; i++) adaptive_sample(&a, 1000, 10, 1, 0);
  ck_assert_int_eq(adaptive_limit(&a), 10);
  adaptive_sample(&a, 1000, 10, 1, 1000);
  ck_assert_int_eq(adaptive_limit(&a), 9);
}
END_TEST

Suite *unit_suite(void) {
  Suite *s = suite_create("adaptive");
  TCase *tc = tcase_create("adaptive");
  tcase_add_test(tc, settles_near_the_knee);
  tcase_add_test(tc, failures_back_off);
  tcase_add_test(tc, unused_limit_stays);
  tcase_add_test(tc, bounded_by_max);
  suite_add_tcase(s, tc);
  return s;
}
