/* Unit tests for src/adaptive.c on a fake clock and a model downstream: the limit
 * settles near the knee of a server that runs 20 requests at a time and queues the
 * rest (at about twice it: latency may double before the limit shrinks), grows at
 * once while latency stays low, tells a few slow runs from queueing, keeps the
 * server busy when the host itself stalls now and then, backs off on failures,
 * stays put when the route does not use its limit, and never leaves [1, max]. */
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

/* Runs the route saturated (always `limit` in flight) for `ms` of fake time; every
 * `stall_every`-th round (0: never) the host was away `stall_ms` (descheduled on a
 * busy machine): every run finishing then took that much longer, though the server
 * was not slower. Returns the limit; *avg gets the mean limit over the rounds. */
static int drive_stalls(adaptive_t *a, int64_t *now, int64_t ms, int slots, int srv_ms,
                        int stall_every, int stall_ms, double *avg) {
  int64_t end = *now + ms, rounds = 0;
  double sum = 0;
  while (*now < end) {
    int n = adaptive_limit(a);
    int64_t rtt = model_rtt_us(n, slots, srv_ms);
    rounds++;
    if (stall_every && rounds % stall_every == 0) rtt += (int64_t)stall_ms * 1000;
    for (int i = 0; i < n; i++) adaptive_sample(a, rtt, n, 0, *now);
    *now += rtt / 1000 > 0 ? rtt / 1000 : 1;
    sum += n;
  }
  if (avg) *avg = rounds ? sum / (double)rounds : 0;
  return adaptive_limit(a);
}

static int drive(adaptive_t *a, int64_t *now, int64_t ms, int slots, int srv_ms) {
  return drive_stalls(a, now, ms, slots, srv_ms, 0, 0, NULL);
}

START_TEST(settles_near_the_knee) {
  adaptive_t a;
  int64_t now = 0;
  adaptive_init(&a, 1, 1000, now);
  /* latency doubles at 40 in flight: the limit settles where
   * 40 + sqrt(limit) = limit, about 47 (the server's queue, about 27, is 2.7 ms) */
  int l = drive(&a, &now, 20000, 20, 2);
  printf("adaptive: from 1, after 20 s against 20 slots at 2 ms: limit %d\n", l);
  ck_assert_int_ge(l, 40);
  ck_assert_int_le(l, 60);
  /* From far above: the first no-load RTT seen is 90 ms, so the limit stays high
   * until the first probe drops it to sqrt(limit), about 31, and measures again.
   * 31 in flight is past the knee, so that no-load RTT (3.1 ms) is still above the
   * true one and the limit settles higher than from below (about 70), until a later
   * probe; far below 900 all the same. */
  adaptive_init(&a, 900, 1000, now);
  l = drive(&a, &now, 60000, 20, 2);
  printf("adaptive: from 900: limit %d\n", l);
  ck_assert_int_ge(l, 40);
  ck_assert_int_le(l, 100);
  /* the downstream grows: the limit follows */
  l = drive(&a, &now, 60000, 100, 2);
  printf("adaptive: 100 slots: limit %d\n", l);
  ck_assert_int_ge(l, 200);
  ck_assert_int_le(l, 260);
}
END_TEST

/* One window (10 runs, 20 ms later) of runs that took rtt_us, the route using its
 * whole limit. Returns the new limit. */
static int one_window(adaptive_t *a, int64_t *now, int64_t rtt_us) {
  int l = adaptive_limit(a);
  *now += 20;
  for (int i = 0; i < 10; i++) adaptive_sample(a, rtt_us, l, 0, *now);
  return adaptive_limit(a);
}

START_TEST(grows_at_once_while_latency_is_low) {
  adaptive_t a;
  int64_t now = 0;
  adaptive_init(&a, 20, 1000, now);
  /* one window at the no-load latency: 20 + sqrt(20), not a fifth of that step */
  ck_assert_int_eq(one_window(&a, &now, 2000), 24);
  /* latency below twice the no-load latency is tolerated: the limit still grows */
  for (int w = 0; w < 5; w++) {
    int l = adaptive_limit(&a);
    ck_assert_int_gt(one_window(&a, &now, 3800), l);
  }
  /* well past it: the limit shrinks, smoothed (a fifth of the way to the target,
   * which is at most half the limit plus sqrt(limit)) */
  int l = adaptive_limit(&a);
  int after = one_window(&a, &now, 20000);
  ck_assert_int_lt(after, l);
  ck_assert_int_ge(after, (int)(l * 0.9));
}
END_TEST

START_TEST(a_few_slow_runs_are_not_queueing) {
  adaptive_t a;
  int64_t now = 0;
  adaptive_init(&a, 40, 1000, now);
  one_window(&a, &now, 2000); /* the no-load RTT: 2 ms */
  /* two runs of ten held up 50 ms (the host was away), the rest at no-load speed:
   * the limit grows as before (their average, 11.6 ms, would have shrunk it) */
  int l = adaptive_limit(&a);
  now += 20;
  for (int i = 0; i < 10; i++) adaptive_sample(&a, i < 2 ? 50000 : 2000, l, 0, now);
  ck_assert_int_gt(adaptive_limit(&a), l);
  /* every run slower (the downstream queues): it shrinks */
  l = adaptive_limit(&a);
  ck_assert_int_lt(one_window(&a, &now, 11600), l);
}
END_TEST

START_TEST(host_stalls_keep_the_server_busy) {
  /* Every 20th round the host was away 30 ms: those windows look like queueing.
   * The limit must stay above the knee (20) on average, or the server idles while
   * the host catches up; and below what would queue far (200). */
  adaptive_t a;
  int64_t now = 0;
  double avg;
  adaptive_init(&a, 20, 1000, now);
  drive_stalls(&a, &now, 5000, 20, 2, 20, 30, NULL);
  drive_stalls(&a, &now, 20000, 20, 2, 20, 30, &avg);
  printf("adaptive: host away 30 ms every 20 rounds: mean limit %.1f\n", avg);
  ck_assert(avg >= 25);
  ck_assert(avg <= 100);
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
  tcase_add_test(tc, grows_at_once_while_latency_is_low);
  tcase_add_test(tc, a_few_slow_runs_are_not_queueing);
  tcase_add_test(tc, host_stalls_keep_the_server_busy);
  tcase_add_test(tc, failures_back_off);
  tcase_add_test(tc, unused_limit_stays);
  tcase_add_test(tc, bounded_by_max);
  suite_add_tcase(s, tc);
  return s;
}
