/* Unit tests for src/settle.c: settlements taken over from events (follow-ups,
 * clamped times, cleaned errors), the list's order through a failed write, and the
 * earliest due time a written list leaves behind; the outcomes whose write can free
 * an event for a claim. Leaks show under make asan. */
#include <check.h>

#include "check_main.h"
#include <stdlib.h>
#include <string.h>

#include "settle.h"

static store_event_t *event(int64_t id, int64_t available_at) {
  store_event_t *ev = store_event_new(id, "t", 1, NULL, 0, "{}", 2, NULL, 0, 0);
  ck_assert_ptr_nonnull(ev);
  ev->available_at = available_at;
  return ev;
}

/* Two new events linked by `next`, due at `at1` and `at2`. */
static store_event_t *list(int64_t at1, int64_t at2) {
  store_event_t *l = event(0, at1);
  l->next = event(0, at2);
  return l;
}

/* An event with two follow-ups due at `at1` and `at2`. */
static store_event_t *event_with_follow(int64_t id, int64_t at1, int64_t at2) {
  store_event_t *ev = event(id, 0);
  ev->follow = list(at1, at2);
  return ev;
}

START_TEST(kind_names) {
  ck_assert_str_eq(settle_kind_name(STORE_ACK), "ack");
  ck_assert_str_eq(settle_kind_name(STORE_FAIL), "fail");
  ck_assert_str_eq(settle_kind_name(STORE_DEAD), "dead");
  ck_assert_str_eq(settle_kind_name(STORE_RELEASE), "release");
  ck_assert_str_eq(settle_kind_name(STORE_DEFER), "defer");
  ck_assert_str_eq(settle_kind_name(SETTLE_EMIT), "emit");
  ck_assert_str_eq(settle_kind_name(99), "?");
}
END_TEST

START_TEST(ack_keeps_follow_ups) {
  settle_t x = settle_take(event_with_follow(7, 100, 200), STORE_ACK, 0, NULL);
  ck_assert_int_eq(x.id, 7);
  ck_assert_int_eq(x.kind, STORE_ACK);
  ck_assert_ptr_null(x.err);
  ck_assert_ptr_nonnull(x.follow);
  ck_assert_int_eq(x.follow->available_at, 100);
  ck_assert_int_eq(x.follow->next->available_at, 200);
  settle_drop(&x);
  ck_assert_ptr_null(x.follow);
}
END_TEST

START_TEST(other_kinds_drop_follow_ups) {
  int kinds[] = {STORE_FAIL, STORE_DEAD, STORE_RELEASE, STORE_DEFER};
  for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) {
    settle_t x = settle_take(event_with_follow(3, 100, 200), kinds[i], 5, "boom");
    ck_assert_ptr_null(x.follow);
    ck_assert_int_eq(x.kind, kinds[i]);
    ck_assert_int_eq(x.arg, 5);
    ck_assert_str_eq(x.err, "boom");
    settle_drop(&x);
  }
}
END_TEST

START_TEST(times_clamped_errors_cleaned) {
  settle_t x = settle_take(event(1, 0), STORE_FAIL, -5, "bad \xff byte");
  ck_assert_int_eq(x.arg, 0);
  ck_assert_str_eq(x.err, "bad \xef\xbf\xbd byte"); /* U+FFFD */
  settle_drop(&x);
  x = settle_take(event(1, 0), STORE_DEFER, INT64_MAX, NULL);
  ck_assert_int_eq(x.arg, STORE_TIME_MAX);
  settle_drop(&x);
  /* dead: arg is the attempts to add, not a time */
  x = settle_take(event(1, 0), STORE_DEAD, 1, NULL);
  ck_assert_int_eq(x.arg, 1);
  settle_drop(&x);
  char *big = malloc(STORE_ERROR_MAX * 2 + 1);
  memset(big, 'e', STORE_ERROR_MAX * 2);
  big[STORE_ERROR_MAX * 2] = 0;
  x = settle_take(event(1, 0), STORE_FAIL, 10, big);
  ck_assert_uint_le(strlen(x.err), STORE_ERROR_MAX);
  settle_drop(&x);
  free(big);
}
END_TEST

START_TEST(emit_owns_the_list) {
  settle_t x = settle_emit(list(1, 2));
  ck_assert_int_eq(x.kind, SETTLE_EMIT);
  ck_assert_int_eq(x.id, 0);
  ck_assert_ptr_nonnull(x.follow);
  settle_drop(&x);
}
END_TEST

START_TEST(list_grows_in_order) {
  settles_t v = {0};
  for (int i = 1; i <= 200; i++) {
    settle_t x = settle_take(event(i, 0), STORE_RELEASE, 0, NULL);
    ck_assert_int_eq(settles_add(&v, &x), 0);
  }
  ck_assert_int_eq(v.n, 200);
  ck_assert_int_ge(v.cap, 200);
  for (int i = 0; i < 200; i++) ck_assert_int_eq(v.v[i].id, i + 1);
  settles_clear(&v);
  ck_assert_int_eq(v.n, 0);
  ck_assert_ptr_nonnull(v.v); /* storage kept for the next batch */
  settles_free(&v);
  ck_assert_ptr_null(v.v);
  ck_assert_int_eq(v.cap, 0);
}
END_TEST

static void add(settles_t *v, int64_t id, int kind, int64_t arg) {
  settle_t x = settle_take(event(id, 0), kind, arg, kind == STORE_FAIL ? "e" : NULL);
  ck_assert_int_eq(settles_add(v, &x), 0);
}

START_TEST(restore_puts_the_failed_write_first) {
  settles_t sending = {0}, set = {0};
  add(&sending, 1, STORE_ACK, 0);
  add(&sending, 2, STORE_FAIL, 50);
  add(&set, 3, STORE_RELEASE, 0); /* made while the write was in flight */
  settles_restore(&sending, &set);
  ck_assert_int_eq(sending.n, 0);
  ck_assert_int_eq(set.n, 3);
  ck_assert_int_eq(set.v[0].id, 1);
  ck_assert_int_eq(set.v[1].id, 2);
  ck_assert_str_eq(set.v[1].err, "e");
  ck_assert_int_eq(set.v[2].id, 3);
  /* nothing made meanwhile: the same settlements come back */
  settles_restore(&set, &sending);
  ck_assert_int_eq(set.n, 0);
  ck_assert_int_eq(sending.n, 3);
  ck_assert_int_eq(sending.v[2].id, 3);
  settles_free(&sending);
  settles_free(&set);
}
END_TEST

START_TEST(due_is_the_earliest_wait) {
  settles_t v = {0};
  int64_t at = -1;
  ck_assert_int_eq(settles_due(&v, &at), 0);
  add(&v, 1, STORE_ACK, 0);
  add(&v, 2, STORE_DEAD, 1);
  add(&v, 3, STORE_RELEASE, 0);
  ck_assert_int_eq(settles_due(&v, &at), 0); /* nothing waits for a time */
  add(&v, 4, STORE_FAIL, 900);
  ck_assert_int_eq(settles_due(&v, &at), 1);
  ck_assert_int_eq(at, 900);
  add(&v, 5, STORE_DEFER, 700);
  ck_assert_int_eq(settles_due(&v, &at), 1);
  ck_assert_int_eq(at, 700);
  /* an ack's scheduled follow-up; one due at once (0) waits for nothing */
  settle_t x = settle_take(event_with_follow(6, 0, 400), STORE_ACK, 0, NULL);
  ck_assert_int_eq(settles_add(&v, &x), 0);
  ck_assert_int_eq(settles_due(&v, &at), 1);
  ck_assert_int_eq(at, 400);
  x = settle_emit(list(300, 0));
  ck_assert_int_eq(settles_add(&v, &x), 0);
  ck_assert_int_eq(settles_due(&v, &at), 1);
  ck_assert_int_eq(at, 300);
  /* a retry asked for at once (time 0) still counts */
  add(&v, 8, STORE_FAIL, 0);
  ck_assert_int_eq(settles_due(&v, &at), 1);
  ck_assert_int_eq(at, 0);
  settles_free(&v);
}
END_TEST

/* What a claim must wait for: only writes that can free a claimable event. */
START_TEST(frees_only_what_a_claim_could_take) {
  const int kinds[] = {STORE_FAIL, STORE_RELEASE, STORE_DEFER};
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
    settle_t x = settle_take(event(1, 0), kinds[i], 5, NULL);
    ck_assert_int_eq(settle_frees(&x, 0), 1); /* the event itself comes back */
    settle_drop(&x);
  }
  settle_t x = settle_take(event(1, 0), STORE_ACK, 0, NULL);
  ck_assert_int_eq(settle_frees(&x, 0), 0);
  ck_assert_int_eq(settle_frees(&x, 1), 1); /* the next of its key */
  settle_drop(&x);
  x = settle_take(event(1, 0), STORE_DEAD, 1, NULL);
  ck_assert_int_eq(settle_frees(&x, 0), 0);
  ck_assert_int_eq(settle_frees(&x, 1), 1);
  settle_drop(&x);
  x = settle_take(event_with_follow(2, 0, 0), STORE_ACK, 0, NULL);
  ck_assert_int_eq(settle_frees(&x, 0), 1); /* its follow-ups are new events */
  settle_drop(&x);
  x = settle_emit(list(0, 0));
  ck_assert_int_eq(settle_frees(&x, 0), 1);
  settle_drop(&x);
}
END_TEST

Suite *unit_suite(void) {
  Suite *s = suite_create("settle");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, kind_names);
  tcase_add_test(tc, ack_keeps_follow_ups);
  tcase_add_test(tc, other_kinds_drop_follow_ups);
  tcase_add_test(tc, times_clamped_errors_cleaned);
  tcase_add_test(tc, emit_owns_the_list);
  tcase_add_test(tc, list_grows_in_order);
  tcase_add_test(tc, restore_puts_the_failed_write_first);
  tcase_add_test(tc, due_is_the_earliest_wait);
  tcase_add_test(tc, frees_only_what_a_claim_could_take);
  suite_add_tcase(s, tc);
  return s;
}
