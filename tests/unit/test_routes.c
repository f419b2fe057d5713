/* Unit tests for src/routes.c with a fake clock: matching (exact, longest prefix,
 * default), shared breakers, the start gate (open breaker, half-open trial, snooze,
 * rate) and a reload that keeps breaker state by name. */
#include <check.h>

#include "check_main.h"
#include <stdint.h>
#include <stdlib.h>

#include "routes.h"

static routes_t R;
static int64_t now;

static void setup(void) {
  now = 1000;
  ck_assert_int_eq(routes_init(&R, 50, 4, 2, 1000, 0, now), 0);
}

static void teardown(void) { routes_free(&R); }

static const route_spec_t SPECS[] = {
    {"order.*", NULL, 2, 0, 0, 0},       {"order.paid", "payments", 0, 0, 5000, 0},
    {"pay.*", "payments", 0, 0, 0, 250}, {"user.*", NULL, 0, 10, 0, 0},
    {"user.vip.*", NULL, 0, 0, 0, 0},
};
#define NSPECS ((int)(sizeof SPECS / sizeof SPECS[0]))

static int idx(const char *topic) { return routes_match(&R, topic); }

/* Fails route r's breaker open. */
static void open_breaker(int r) {
  breaker_t *b = routes_breaker(&R, r);
  int rc = BREAKER_NO_CHANGE;
  while (rc == BREAKER_NO_CHANGE) {
    uint64_t t;
    ck_assert_int_eq(breaker_acquire(b, now, &t, NULL), 1);
    rc = breaker_record(b, t, BREAKER_FAILURE, now);
  }
  ck_assert_int_eq(b->state, BREAKER_OPEN);
}

START_TEST(match_rules) {
  ck_assert_int_eq(R.n, 1);
  ck_assert_str_eq(R.v[0].pattern, "default");
  ck_assert_int_eq(idx("anything"), 0);
  ck_assert_int_eq(routes_apply(&R, SPECS, NSPECS, now), 0);
  ck_assert_int_eq(R.n, 6);
  ck_assert_str_eq(R.v[idx("order.created")].pattern, "order.*");
  ck_assert_str_eq(R.v[idx("order.paid")].pattern, "order.paid");    /* exact beats prefix */
  ck_assert_str_eq(R.v[idx("user.vip.gold")].pattern, "user.vip.*"); /* longest prefix */
  ck_assert_str_eq(R.v[idx("user.x")].pattern, "user.*");
  ck_assert_int_eq(idx("order"), 0);
  ck_assert_int_eq(idx("users"), 0);
  ck_assert_int_eq(idx(""), 0);
  /* breakers: by name, the pattern when none is named */
  ck_assert_int_eq(R.nbreakers, 5); /* default, order.*, payments, user.*, user.vip.* */
  ck_assert_int_eq(R.v[idx("order.paid")].breaker, R.v[idx("pay.x")].breaker);
  ck_assert_int_ne(R.v[idx("order.x")].breaker, R.v[idx("order.paid")].breaker);
  ck_assert_int_eq(routes_find_breaker(&R, "payments"), R.v[idx("pay.x")].breaker);
  ck_assert_int_eq(R.v[idx("order.paid")].timeout_ms, 5000);
  ck_assert_int_eq(R.v[idx("pay.x")].slow_ms, 250);
}
END_TEST

START_TEST(gate_breaker_snooze_rate) {
  int64_t until;
  ck_assert_int_eq(routes_apply(&R, SPECS, NSPECS, now), 0);
  int pay = idx("pay.x"), paid = idx("order.paid"), order = idx("order.x"), user = idx("user.x");
  ck_assert_int_eq(routes_may_start(&R, pay, now, &until), 1);
  open_breaker(pay);
  /* the shared breaker holds both its routes; the others go on */
  ck_assert_int_eq(routes_may_start(&R, paid, now, &until), 0);
  ck_assert_int_eq(until, now + 1000);
  ck_assert_int_eq(routes_hold_until(&R, paid, now), now + 1000);
  ck_assert_int_eq(routes_may_start(&R, order, now, &until), 1);
  ck_assert_int_eq(routes_hold_until(&R, order, now), 0);
  /* cooldown over: the caller ticks it half-open; one trial, then wait for it */
  now += 1000;
  ck_assert_int_eq(routes_may_start(&R, pay, now, &until), 0);
  ck_assert_int_eq(until, now);
  breaker_t *b = routes_breaker(&R, pay);
  ck_assert_int_eq(breaker_tick(b, now), BREAKER_HALF_OPEN);
  ck_assert_int_eq(routes_may_start(&R, pay, now, &until), 1);
  uint64_t t;
  ck_assert_int_eq(breaker_acquire(b, now, &t, NULL), 1);
  ck_assert_int_eq(routes_may_start(&R, paid, now, &until), 0);
  ck_assert_int_eq(until, -1);
  ck_assert_int_eq(breaker_record(b, t, BREAKER_SUCCESS, now), BREAKER_CLOSED);
  ck_assert_int_eq(routes_may_start(&R, paid, now, &until), 1);
  /* snooze: a later one wins, an earlier one changes nothing */
  routes_snooze(&R, order, now + 3000);
  routes_snooze(&R, order, now + 2000);
  ck_assert_int_eq(routes_may_start(&R, order, now, &until), 0);
  ck_assert_int_eq(until, now + 3000);
  ck_assert_int_eq(routes_may_start(&R, order, now + 3000, &until), 1);
  /* rate 10/s: ten at once, then one each 100 ms */
  for (int i = 0; i < 10; i++) ck_assert_int_eq(bucket_take(&R.v[user].bucket, now), 1);
  ck_assert_int_eq(routes_may_start(&R, user, now, &until), 0);
  ck_assert_int_eq(until, now + 100);
  ck_assert_int_eq(routes_hold_until(&R, user, now), 0); /* rate-limited events stay queued */
}
END_TEST

START_TEST(reload_keeps_breakers_by_name) {
  ck_assert_int_eq(routes_apply(&R, SPECS, NSPECS, now), 0);
  int order = idx("order.x"), user = idx("user.x");
  open_breaker(order);
  R.v[order].done = 7;
  /* the new script drops user.* and order.paid, renames nothing else */
  route_spec_t next[] = {{"order.*", NULL, 5, 0, 0, 0}, {"pay.*", "payments", 0, 0, 0, 0}};
  ck_assert_int_eq(routes_apply(&R, next, 2, now), 0);
  ck_assert_int_eq(idx("order.x"), order); /* same index */
  ck_assert_int_eq(R.v[order].done, 7);
  ck_assert_int_eq(R.v[order].concurrency, 5);
  ck_assert_int_eq(routes_breaker(&R, order)->state, BREAKER_OPEN); /* state kept */
  ck_assert_int_eq(R.v[user].live, 0);
  ck_assert_int_eq(idx("user.x"), 0); /* dropped routes match nothing */
  ck_assert_int_eq(idx("order.paid"), order);
  ck_assert_int_eq(R.breakers[R.v[user].breaker].live, 0);
  ck_assert_int_eq(R.breakers[R.v[order].breaker].live, 1);
  ck_assert_int_eq(R.n, 6); /* never removed: claimed events may still use them */
  /* the route comes back with its old index and a closed breaker of its own */
  ck_assert_int_eq(routes_apply(&R, SPECS, NSPECS, now), 0);
  ck_assert_int_eq(idx("user.x"), user);
  ck_assert_int_eq(R.nbreakers, 5);
}
END_TEST

START_TEST(init_validates) {
  routes_t r;
  ck_assert_int_eq(routes_init(&r, 0, 4, 2, 1000, 0, 0), -22);
  ck_assert_int_eq(routes_init(&r, 50, 4, 5, 1000, 0, 0), -22);
}
END_TEST

Suite *unit_suite(void) {
  Suite *s = suite_create("routes");
  TCase *tc = tcase_create("routes");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, match_rules);
  tcase_add_test(tc, gate_breaker_snooze_rate);
  tcase_add_test(tc, reload_keeps_breakers_by_name);
  tcase_add_test(tc, init_validates);
  suite_add_tcase(s, tc);
  return s;
}
