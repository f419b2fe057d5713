/* Unit tests for src/timers.c with a fake clock: one-shot and periodic ticks, the
 * grid a periodic timer keeps when served late, skipped ticks while a run goes on,
 * removal, ordering of many entries and ties. */
#include <check.h>

#include "check_main.h"
#include <stdint.h>
#include <stdlib.h>

#include "timers.h"

/* Serves every entry due at `now`; returns how many runs started. */
static int serve(timers_t *ts, uint64_t now) {
  int runs = 0, run;
  while (timers_pop(ts, now, &run)) runs += run;
  return runs;
}

START_TEST(after_fires_once) {
  timers_t ts;
  timers_entry_t e;
  int run;
  timers_init(&ts);
  timers_entry_init(&e);
  ck_assert_int_eq(timers_scheduled(&e), 0);
  ck_assert_int_eq(timers_add(&ts, &e, 1000, 250, 0), 0);
  ck_assert_int_eq(timers_scheduled(&e), 1);
  ck_assert_uint_eq(timers_next(&ts), 1250);
  ck_assert_ptr_null(timers_pop(&ts, 1249, &run));
  ck_assert_ptr_eq(timers_pop(&ts, 1300, &run), &e);
  ck_assert_int_eq(run, 1);
  ck_assert_int_eq(e.running, 1);
  ck_assert_int_eq(timers_scheduled(&e), 0);
  ck_assert_uint_eq(timers_count(&ts), 0);
  ck_assert_uint_eq(timers_next(&ts), UINT64_MAX);
  ck_assert_ptr_null(timers_pop(&ts, 100000, &run));
  timers_done(&e);
  ck_assert_int_eq(e.running, 0);
  timers_free(&ts);
}
END_TEST

/* Served on time or a little late, a periodic timer stays on its grid: the tick
 * after a late one comes at the grid time, not a period after the late service. */
START_TEST(every_keeps_its_grid) {
  timers_t ts;
  timers_entry_t e;
  int run;
  timers_init(&ts);
  timers_entry_init(&e);
  timers_add(&ts, &e, 0, 100, 100);
  uint64_t now = 0;
  for (int i = 1; i <= 50; i++) {
    uint64_t late = (uint64_t)(i * 37 % 90); /* served up to 89 ms late */
    now = (uint64_t)i * 100 + late;
    ck_assert_ptr_eq(timers_pop(&ts, now, &run), &e);
    ck_assert_int_eq(run, 1);
    timers_done(&e);
    ck_assert_uint_eq(timers_next(&ts), (uint64_t)(i + 1) * 100);
  }
  ck_assert_uint_eq(e.runs, 50);
  ck_assert_uint_eq(e.skipped, 0);
  timers_free(&ts);
}
END_TEST

/* A run longer than the period: the ticks due meanwhile are skipped and counted,
 * never started beside it; the first tick after it ends starts the next run. */
START_TEST(every_never_overlaps) {
  timers_t ts;
  timers_entry_t e;
  int run;
  timers_init(&ts);
  timers_entry_init(&e);
  timers_add(&ts, &e, 0, 100, 100);
  ck_assert_ptr_eq(timers_pop(&ts, 100, &run), &e);
  ck_assert_int_eq(run, 1);
  /* the run goes on for 350 ms: ticks 200, 300 and 400 pass */
  for (uint64_t t = 200; t <= 400; t += 100) {
    ck_assert_ptr_eq(timers_pop(&ts, t, &run), &e);
    ck_assert_int_eq(run, 0);
  }
  ck_assert_uint_eq(e.skipped, 3);
  ck_assert_uint_eq(ts.skipped, 3);
  timers_done(&e); /* at 450 */
  ck_assert_ptr_null(timers_pop(&ts, 450, &run));
  ck_assert_ptr_eq(timers_pop(&ts, 500, &run), &e);
  ck_assert_int_eq(run, 1);
  ck_assert_uint_eq(e.runs, 2);
  timers_free(&ts);
}
END_TEST

/* Served far too late (the loop was held up for several periods): one run, the
 * ticks that passed are counted as skipped, and the next one is back on the grid. */
START_TEST(late_service_folds_ticks) {
  timers_t ts;
  timers_entry_t e;
  int run;
  timers_init(&ts);
  timers_entry_init(&e);
  timers_add(&ts, &e, 0, 100, 100);
  ck_assert_ptr_eq(timers_pop(&ts, 1050, &run), &e); /* ticks 100 .. 1000 */
  ck_assert_int_eq(run, 1);
  ck_assert_ptr_null(timers_pop(&ts, 1050, &run)); /* once per service */
  ck_assert_uint_eq(e.runs, 1);
  ck_assert_uint_eq(e.skipped, 9);
  ck_assert_uint_eq(timers_next(&ts), 1100);
  timers_free(&ts);
}
END_TEST

START_TEST(remove_and_reschedule) {
  timers_t ts;
  timers_entry_t a, b, c;
  timers_init(&ts);
  timers_entry_init(&a);
  timers_entry_init(&b);
  timers_entry_init(&c);
  timers_add(&ts, &a, 0, 300, 0);
  timers_add(&ts, &b, 0, 100, 50);
  timers_add(&ts, &c, 0, 200, 0);
  timers_remove(&ts, &b);
  timers_remove(&ts, &b); /* twice: nothing */
  ck_assert_int_eq(timers_scheduled(&b), 0);
  ck_assert_uint_eq(timers_count(&ts), 2);
  ck_assert_uint_eq(timers_next(&ts), 200);
  ck_assert_int_eq(serve(&ts, 10000), 2);
  ck_assert_uint_eq(a.runs + c.runs, 2);
  ck_assert_uint_eq(b.runs, 0);
  /* a removed entry may be scheduled again, and adding a scheduled one moves it */
  timers_add(&ts, &b, 10000, 10, 0);
  timers_add(&ts, &b, 10000, 20, 0);
  ck_assert_uint_eq(timers_count(&ts), 1);
  ck_assert_uint_eq(timers_next(&ts), 10020);
  timers_free(&ts);
  ck_assert_int_eq(timers_scheduled(&b), 0);
}
END_TEST

/* Many entries come out in due order; equal due times in the order added. */
START_TEST(order_of_many) {
  enum { N = 1000 };
  timers_t ts;
  timers_entry_t *e = calloc(N, sizeof *e);
  int run;
  timers_init(&ts);
  for (int i = 0; i < N; i++) {
    timers_entry_init(&e[i]);
    ck_assert_int_eq(timers_add(&ts, &e[i], 0, (uint64_t)((i * 7919) % 100), 0), 0);
  }
  for (int i = 0; i < N; i += 3) timers_remove(&ts, &e[i]);
  uint64_t last_due = 0;
  const timers_entry_t *last = NULL;
  int n = 0;
  for (timers_entry_t *x; (x = timers_pop(&ts, 1000, &run)); n++) {
    ck_assert_uint_ge(x->due, last_due);
    if (last && x->due == last_due)
      ck_assert_int_lt((int)(last - e), (int)(x - e)); /* added later */
    last_due = x->due;
    last = x;
  }
  ck_assert_int_eq(n, N - (N + 2) / 3);
  timers_free(&ts);
  free(e);
}
END_TEST

Suite *unit_suite(void) {
  Suite *s = suite_create("timers");
  TCase *tc = tcase_create("timers");
  tcase_add_test(tc, after_fires_once);
  tcase_add_test(tc, every_keeps_its_grid);
  tcase_add_test(tc, every_never_overlaps);
  tcase_add_test(tc, late_service_folds_ticks);
  tcase_add_test(tc, remove_and_reschedule);
  tcase_add_test(tc, order_of_many);
  suite_add_tcase(s, tc);
  return s;
}
