/* Unit tests for src/watchdog.c: when a run is overdue and how long the thread may
 * sleep before it looks again, on an injected clock. */
#include <check.h>

#include "check_main.h"
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "watchdog.h"

START_TEST(overdue_only_past_the_limit) {
  watchdog_run_t r = {WATCHDOG_EVENT, 7, "t", 1000, 500};
  ck_assert_int_eq(watchdog_overdue(&r, 1000), 0);
  ck_assert_int_eq(watchdog_overdue(&r, 1500), 0); /* at the limit: not yet */
  ck_assert_int_eq(watchdog_overdue(&r, 1501), 1);
  ck_assert_int_eq(watchdog_overdue(&r, 999), 0); /* a clock read before the start */
  r.limit_ms = 0;                                 /* no limit: never */
  ck_assert_int_eq(watchdog_overdue(&r, UINT64_MAX), 0);
}
END_TEST

START_TEST(next_look_tracks_the_limit) {
  watchdog_run_t r = {WATCHDOG_HOOK, -1, "start", 1000, 10000};
  ck_assert_uint_eq(watchdog_next_look_ms(NULL, 0), 100);  /* idle: the longest step */
  ck_assert_uint_eq(watchdog_next_look_ms(&r, 1000), 100); /* a tenth, at most 100 */
  r.limit_ms = 500;
  ck_assert_uint_eq(watchdog_next_look_ms(&r, 1000), 50);
  r.limit_ms = 20;
  ck_assert_uint_eq(watchdog_next_look_ms(&r, 1000), 5); /* at least 5 ms */
  r.limit_ms = 500;
  ck_assert_uint_eq(watchdog_next_look_ms(&r, 1480), 21); /* never past the moment */
  ck_assert_uint_eq(watchdog_next_look_ms(&r, 1600), 50); /* already overdue */
  r.limit_ms = 0;
  ck_assert_uint_eq(watchdog_next_look_ms(&r, 1000), 100);
}
END_TEST

START_TEST(runs_announced_and_left) {
  /* Only the loop-thread half, without the thread: enter/leave pair up. */
  watchdog_enter(WATCHDOG_EVENT, 1, "t", 100);
  watchdog_leave();
  watchdog_leave(); /* a second leave is harmless */
  watchdog_enter(WATCHDOG_HOOK, -1, "h", 100);
  watchdog_leave();
  ck_assert_uint_gt(watchdog_now_ms(), 0);
}
END_TEST

static atomic_int verdicts;
static int64_t blamed_id;
static char blamed_what[16];

static void on_stall(void *arg, const watchdog_run_t *r, uint64_t ran_ms) {
  (void)arg;
  ck_assert_uint_gt(ran_ms, r->limit_ms);
  blamed_id = r->event_id;
  strncpy(blamed_what, r->what, sizeof blamed_what - 1);
  atomic_fetch_add(&verdicts, 1);
}

/* The real thread: a run that spins past its limit is judged once the loop thread
 * is frozen; the callback returns, so the loop thread goes on. Waits with a
 * generous deadline, asserts only the outcome. */
START_TEST(thread_judges_a_spinning_run) {
  ck_assert_int_eq(watchdog_start(on_stall, NULL), 0);
  watchdog_enter(WATCHDOG_EVENT, 42, "spin", 30);
  uint64_t until = watchdog_now_ms() + 60000;
  while (atomic_load(&verdicts) == 0 && watchdog_now_ms() < until) {
  }
  watchdog_leave();
  watchdog_stop();
  ck_assert_int_ge(atomic_load(&verdicts), 1);
  ck_assert_int_eq(blamed_id, 42);
  ck_assert_str_eq(blamed_what, "spin");
}
END_TEST

Suite *unit_suite(void) {
  Suite *s = suite_create("watchdog");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, overdue_only_past_the_limit);
  tcase_add_test(tc, next_look_tracks_the_limit);
  tcase_add_test(tc, runs_announced_and_left);
  tcase_add_test(tc, thread_judges_a_spinning_run);
  tcase_set_timeout(tc, 120);
  suite_add_tcase(s, tc);
  return s;
}
