/* Unit tests for src/breaker.c with a fake clock: the window and min_calls, the exact
 * threshold, one open per burst, cooldown and the single half-open trial, and that a
 * stale ticket never changes the state. */
#include <check.h>

#include "check_main.h"
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "breaker.h"

static breaker_t B;
static int64_t now; /* the fake clock, in ms */

/* 50% of a window of 10, rate counts from 4 outcomes, 1 s cooldown. */
static void setup(void) {
  now = 1000;
  ck_assert_int_eq(breaker_init(&B, 50, 10, 4, 1000), 0);
}

static void teardown(void) { breaker_free(&B); }

static uint64_t acquire(void) {
  uint64_t ticket = 0;
  ck_assert_int_eq(breaker_acquire(&B, now, &ticket, NULL), 1);
  ck_assert_uint_eq(ticket, B.generation);
  return ticket;
}

static int run(int outcome) { return breaker_record(&B, acquire(), outcome, now); }

static void refused(void) {
  uint64_t ticket = 77;
  ck_assert_int_eq(breaker_acquire(&B, now, &ticket, NULL), 0);
  ck_assert_uint_eq(ticket, 0);
}

/* Drives the breaker open with failures; returns the generation it opened with. */
static uint64_t open_it(void) {
  int rc = BREAKER_NO_CHANGE;
  while (rc == BREAKER_NO_CHANGE) rc = run(BREAKER_FAILURE);
  ck_assert_int_eq(rc, BREAKER_OPEN);
  ck_assert_int_eq(B.state, BREAKER_OPEN);
  return B.generation;
}

START_TEST(init_validates) {
  breaker_t b;
  ck_assert_int_eq(breaker_init(&b, 0, 10, 5, 100), -EINVAL);
  ck_assert_int_eq(breaker_init(&b, 101, 10, 5, 100), -EINVAL);
  ck_assert_int_eq(breaker_init(&b, 50, 0, 0, 100), -EINVAL);
  ck_assert_int_eq(breaker_init(&b, 50, 10, 11, 100), -EINVAL);
  ck_assert_int_eq(breaker_init(&b, 50, 10, -1, 100), -EINVAL);
  ck_assert_int_eq(breaker_init(&b, 50, 10, 5, -1), -EINVAL);
  ck_assert_int_eq(breaker_init(&b, 100, 1, 1, 0), 0);
  ck_assert_int_eq(b.state, BREAKER_CLOSED);
  ck_assert_str_eq(breaker_state_name(b.state), "closed");
  ck_assert_int_eq(breaker_reopen_at(&b), -1);
  breaker_free(&b);
  ck_assert_str_eq(breaker_state_name(BREAKER_OPEN), "open");
  ck_assert_str_eq(breaker_state_name(BREAKER_HALF_OPEN), "half-open");
}
END_TEST

START_TEST(min_calls_respected) {
  /* 3 failures out of 3 is 100%, but fewer than min_calls (4) are in */
  for (int i = 0; i < 3; i++) ck_assert_int_eq(run(BREAKER_FAILURE), BREAKER_NO_CHANGE);
  ck_assert_int_eq(B.state, BREAKER_CLOSED);
  ck_assert_int_eq(run(BREAKER_FAILURE), BREAKER_OPEN);
}
END_TEST

START_TEST(opens_at_exact_threshold) {
  breaker_t *b = &B;
  breaker_free(b);
  ck_assert_int_eq(breaker_init(b, 50, 10, 10, 1000), 0);
  for (int i = 0; i < 5; i++) ck_assert_int_eq(run(BREAKER_SUCCESS), BREAKER_NO_CHANGE);
  for (int i = 0; i < 4; i++) ck_assert_int_eq(run(BREAKER_FAILURE), BREAKER_NO_CHANGE);
  ck_assert_int_eq(b->ring_count, 9); /* 4/9 < 50%, and min_calls not reached anyway */
  /* 5 of 10 = 50%: at the threshold, so it opens */
  ck_assert_int_eq(run(BREAKER_FAILURE), BREAKER_OPEN);
  ck_assert_int_eq(b->opened_at, now);
  ck_assert_int_eq(breaker_reopen_at(b), now + 1000);
}
END_TEST

START_TEST(below_threshold_stays_closed) {
  breaker_free(&B);
  ck_assert_int_eq(breaker_init(&B, 50, 10, 10, 1000), 0);
  /* 4 failures in every 10: 40% forever */
  for (int i = 0; i < 1000; i++)
    ck_assert_int_eq(run(i % 10 < 4 ? BREAKER_FAILURE : BREAKER_SUCCESS), BREAKER_NO_CHANGE);
  ck_assert_int_eq(B.state, BREAKER_CLOSED);
  ck_assert_uint_eq(B.generation, 1);
}
END_TEST

START_TEST(burst_opens_once) {
  uint64_t tickets[1000];
  for (int i = 0; i < 1000; i++) tickets[i] = acquire(); /* all started while closed */
  int opens = 0;
  for (int i = 0; i < 1000; i++) {
    int rc = breaker_record(&B, tickets[i], BREAKER_FAILURE, now);
    if (rc == BREAKER_OPEN)
      opens++;
    else
      ck_assert_int_eq(rc, BREAKER_NO_CHANGE);
  }
  ck_assert_int_eq(opens, 1);
  ck_assert_int_eq(B.state, BREAKER_OPEN);
  ck_assert_uint_eq(B.generation, 2);
  ck_assert_int_eq(B.ring_count, 4); /* the stale outcomes were not counted */
}
END_TEST

START_TEST(open_refuses_until_cooldown) {
  open_it();
  int64_t opened = now;
  refused();
  now = opened + 999;
  refused();
  ck_assert_int_eq(breaker_tick(&B, now), BREAKER_NO_CHANGE);
  ck_assert_int_eq(B.state, BREAKER_OPEN);
  now = opened + 1000;
  int transition = 0;
  uint64_t ticket = 0;
  ck_assert_int_eq(breaker_acquire(&B, now, &ticket, &transition), 1);
  ck_assert_int_eq(transition, BREAKER_HALF_OPEN);
  ck_assert_int_eq(B.state, BREAKER_HALF_OPEN);
  ck_assert_uint_eq(ticket, B.generation);
  ck_assert_int_eq(breaker_reopen_at(&B), -1);
}
END_TEST

START_TEST(tick_turns_half_open) {
  open_it();
  now += 1000;
  ck_assert_int_eq(breaker_tick(&B, now), BREAKER_HALF_OPEN);
  ck_assert_int_eq(breaker_tick(&B, now), BREAKER_NO_CHANGE);
  int transition = 5;
  acquire();
  uint64_t ticket;
  ck_assert_int_eq(breaker_acquire(&B, now, &ticket, &transition), 0);
  ck_assert_int_eq(transition, BREAKER_NO_CHANGE);
}
END_TEST

START_TEST(half_open_single_trial) {
  open_it();
  now += 1000;
  uint64_t trial = acquire();
  ck_assert_int_eq(B.trial_in_flight, 1);
  for (int i = 0; i < 10; i++) {
    refused(); /* second acquire refused while the trial runs */
    now += 500;
  }
  ck_assert_int_eq(B.state, BREAKER_HALF_OPEN);
  ck_assert_uint_eq(trial, B.generation);
}
END_TEST

START_TEST(trial_success_closes_empty) {
  open_it();
  now += 1000;
  uint64_t trial = acquire();
  ck_assert_int_eq(breaker_record(&B, trial, BREAKER_SUCCESS, now), BREAKER_CLOSED);
  ck_assert_int_eq(B.state, BREAKER_CLOSED);
  ck_assert_uint_eq(B.generation, trial + 1);
  ck_assert_int_eq(B.ring_count, 0);
  ck_assert_int_eq(B.failures, 0);
  ck_assert_double_eq(breaker_failure_rate(&B), 0.0);
  ck_assert_int_eq(B.trial_in_flight, 0);
  /* a fresh window: min_calls applies again */
  for (int i = 0; i < 3; i++) ck_assert_int_eq(run(BREAKER_FAILURE), BREAKER_NO_CHANGE);
  ck_assert_int_eq(run(BREAKER_FAILURE), BREAKER_OPEN);
}
END_TEST

START_TEST(trial_failure_reopens) {
  open_it();
  now += 1000;
  uint64_t trial = acquire();
  now += 250;
  ck_assert_int_eq(breaker_record(&B, trial, BREAKER_FAILURE, now), BREAKER_OPEN);
  ck_assert_int_eq(B.state, BREAKER_OPEN);
  ck_assert_int_eq(B.opened_at, now);
  ck_assert_int_eq(breaker_reopen_at(&B), now + 2000); /* a failed trial doubles it */
  ck_assert_int_eq(B.trial_in_flight, 0);
  refused();
  now += 1999;
  refused();
  now += 1;
  acquire();
}
END_TEST

/* Each failed trial doubles the cooldown, up to 10x the base; a success resets it. */
START_TEST(cooldown_grows_and_resets) {
  static const int64_t want[] = {2000, 4000, 8000, 10000, 10000, 10000};
  open_it();
  ck_assert_int_eq(breaker_reopen_at(&B), now + 1000); /* the first opening: the base */
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    now = breaker_reopen_at(&B);
    ck_assert_int_eq(breaker_tick(&B, now - 1 > 0 ? now - 1 : 0), BREAKER_NO_CHANGE);
    ck_assert_int_eq(run(BREAKER_FAILURE), BREAKER_OPEN);
    ck_assert_int_eq(breaker_reopen_at(&B) - now, want[i]);
  }
  now = breaker_reopen_at(&B);
  ck_assert_int_eq(run(BREAKER_SUCCESS), BREAKER_CLOSED);
  open_it();
  ck_assert_int_eq(breaker_reopen_at(&B), now + 1000); /* closing reset it */
  now += 1000;
  uint64_t trial = acquire();
  /* an ignored trial is no failure: the cooldown stays */
  ck_assert_int_eq(breaker_record(&B, trial, BREAKER_IGNORED, now), BREAKER_NO_CHANGE);
  ck_assert_int_eq(run(BREAKER_FAILURE), BREAKER_OPEN);
  ck_assert_int_eq(breaker_reopen_at(&B), now + 2000);
}
END_TEST

/* A huge base cooldown saturates instead of overflowing. */
START_TEST(cooldown_growth_saturates) {
  breaker_t b;
  uint64_t t;
  ck_assert_int_eq(breaker_init(&b, 100, 1, 1, INT64_MAX / 4), 0);
  ck_assert_int_eq(breaker_acquire(&b, 0, &t, NULL), 1);
  ck_assert_int_eq(breaker_record(&b, t, BREAKER_FAILURE, 0), BREAKER_OPEN);
  for (int i = 0; i < 4; i++) {
    b.opened_at = 0;
    ck_assert_int_eq(breaker_tick(&b, INT64_MAX), BREAKER_HALF_OPEN);
    ck_assert_int_eq(breaker_acquire(&b, INT64_MAX, &t, NULL), 1);
    ck_assert_int_eq(breaker_record(&b, t, BREAKER_FAILURE, 0), BREAKER_OPEN);
    ck_assert_int_ge(b.current_ms, INT64_MAX / 4);
  }
  ck_assert_int_eq(b.current_ms, INT64_MAX);
  breaker_free(&b);
}
END_TEST

START_TEST(ignored_trial_frees_slot) {
  open_it();
  now += 1000;
  ck_assert_int_eq(breaker_tick(&B, now), BREAKER_HALF_OPEN);
  uint64_t gen_half = B.generation;
  uint64_t trial = acquire();
  refused();
  ck_assert_int_eq(breaker_record(&B, trial, BREAKER_IGNORED, now), BREAKER_NO_CHANGE);
  ck_assert_int_eq(B.state, BREAKER_HALF_OPEN);
  ck_assert_uint_eq(B.generation, gen_half);
  ck_assert_int_eq(B.trial_in_flight, 0);
  uint64_t again = acquire(); /* the slot is free for a new trial */
  ck_assert_uint_eq(again, gen_half);
  refused();
  ck_assert_int_eq(breaker_record(&B, again, BREAKER_SUCCESS, now), BREAKER_CLOSED);
}
END_TEST

START_TEST(ignored_not_counted_when_closed) {
  for (int i = 0; i < 100; i++) ck_assert_int_eq(run(BREAKER_IGNORED), BREAKER_NO_CHANGE);
  ck_assert_int_eq(B.ring_count, 0);
  run(BREAKER_SUCCESS);
  run(BREAKER_IGNORED);
  ck_assert_int_eq(B.ring_count, 1);
}
END_TEST

START_TEST(stale_outcomes_ignored) {
  uint64_t old_closed = acquire(); /* started while closed, gen 1 */
  uint64_t gen_open = open_it();
  ck_assert_uint_lt(old_closed, gen_open);
  /* an old success cannot close an open breaker */
  ck_assert_int_eq(breaker_record(&B, old_closed, BREAKER_SUCCESS, now), BREAKER_NO_CHANGE);
  ck_assert_int_eq(B.state, BREAKER_OPEN);
  now += 1000;
  uint64_t trial = acquire();
  /* an old success or failure cannot end the trial */
  ck_assert_int_eq(breaker_record(&B, old_closed, BREAKER_SUCCESS, now), BREAKER_NO_CHANGE);
  ck_assert_int_eq(breaker_record(&B, old_closed, BREAKER_FAILURE, now), BREAKER_NO_CHANGE);
  ck_assert_int_eq(breaker_record(&B, old_closed, BREAKER_IGNORED, now), BREAKER_NO_CHANGE);
  ck_assert_int_eq(B.state, BREAKER_HALF_OPEN);
  ck_assert_int_eq(B.trial_in_flight, 1);
  ck_assert_int_eq(breaker_record(&B, trial, BREAKER_SUCCESS, now), BREAKER_CLOSED);
  /* the finished trial's ticket, replayed, is stale too */
  ck_assert_int_eq(breaker_record(&B, trial, BREAKER_FAILURE, now), BREAKER_NO_CHANGE);
  /* old failures cannot reopen or even enter the fresh window */
  for (int i = 0; i < 100; i++)
    ck_assert_int_eq(breaker_record(&B, old_closed, BREAKER_FAILURE, now), BREAKER_NO_CHANGE);
  ck_assert_int_eq(B.state, BREAKER_CLOSED);
  ck_assert_int_eq(B.ring_count, 0);
  ck_assert_int_eq(breaker_record(&B, 0, BREAKER_FAILURE, now), BREAKER_NO_CHANGE);
  ck_assert_int_eq(B.ring_count, 0);
}
END_TEST

START_TEST(failure_rate_values) {
  breaker_free(&B);
  ck_assert_int_eq(breaker_init(&B, 100, 10, 10, 1000), 0);
  ck_assert_double_eq(breaker_failure_rate(&B), 0.0);
  run(BREAKER_FAILURE);
  ck_assert_double_eq(breaker_failure_rate(&B), 1.0);
  run(BREAKER_SUCCESS);
  ck_assert_double_eq(breaker_failure_rate(&B), 0.5);
  run(BREAKER_SUCCESS);
  run(BREAKER_SUCCESS);
  ck_assert_double_eq(breaker_failure_rate(&B), 0.25);
  for (int i = 0; i < 6; i++) run(BREAKER_SUCCESS);
  ck_assert_double_eq_tol(breaker_failure_rate(&B), 0.1, 1e-12);
}
END_TEST

START_TEST(window_slides) {
  breaker_free(&B);
  ck_assert_int_eq(breaker_init(&B, 50, 10, 10, 1000), 0);
  for (int i = 0; i < 4; i++) run(BREAKER_FAILURE);
  for (int i = 0; i < 6; i++) run(BREAKER_SUCCESS);
  ck_assert_double_eq_tol(breaker_failure_rate(&B), 0.4, 1e-12);
  /* 4 more successes push the 4 old failures out */
  for (int i = 0; i < 4; i++) ck_assert_int_eq(run(BREAKER_SUCCESS), BREAKER_NO_CHANGE);
  ck_assert_int_eq(B.ring_count, 10);
  ck_assert_int_eq(B.failures, 0);
  ck_assert_double_eq(breaker_failure_rate(&B), 0.0);
  /* now 4 failures are 40% again, not 80%: still closed; the 5th opens */
  for (int i = 0; i < 4; i++) ck_assert_int_eq(run(BREAKER_FAILURE), BREAKER_NO_CHANGE);
  ck_assert_int_eq(B.failures, 4);
  ck_assert_int_eq(run(BREAKER_FAILURE), BREAKER_OPEN);
}
END_TEST

static Suite *breaker_suite(void) {
  Suite *s = suite_create("breaker");
  TCase *tc = tcase_create("breaker");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, init_validates);
  tcase_add_test(tc, min_calls_respected);
  tcase_add_test(tc, opens_at_exact_threshold);
  tcase_add_test(tc, below_threshold_stays_closed);
  tcase_add_test(tc, burst_opens_once);
  tcase_add_test(tc, open_refuses_until_cooldown);
  tcase_add_test(tc, tick_turns_half_open);
  tcase_add_test(tc, half_open_single_trial);
  tcase_add_test(tc, trial_success_closes_empty);
  tcase_add_test(tc, trial_failure_reopens);
  tcase_add_test(tc, ignored_trial_frees_slot);
  tcase_add_test(tc, cooldown_grows_and_resets);
  tcase_add_test(tc, cooldown_growth_saturates);
  tcase_add_test(tc, ignored_not_counted_when_closed);
  tcase_add_test(tc, stale_outcomes_ignored);
  tcase_add_test(tc, failure_rate_values);
  tcase_add_test(tc, window_slides);
  suite_add_tcase(s, tc);
  return s;
}

Suite *unit_suite(void) { return breaker_suite(); }
