/* Unit tests for src/bucket.c with a fake clock: the burst, the refill rate, the
 * time of the next token, an unlimited bucket and a clock that goes backwards. */
#include <check.h>

#include "check_main.h"
#include <stdint.h>
#include <stdlib.h>

#include "bucket.h"

START_TEST(burst_then_rate) {
  bucket_t b;
  int64_t now = 5000;
  bucket_init(&b, 10, 10, now); /* 10/s, a second's worth saved up */
  for (int i = 0; i < 10; i++) ck_assert_int_eq(bucket_take(&b, now), 1);
  ck_assert_int_eq(bucket_take(&b, now), 0);
  ck_assert_int_eq(bucket_ready_at(&b, now), now + 100);
  ck_assert_int_eq(bucket_take(&b, now + 99), 0);
  ck_assert_int_eq(bucket_take(&b, now + 100), 1);
  /* over 10 s at most 10/s (plus nothing saved, since it was empty) */
  int taken = 0;
  for (int64_t t = now + 100; t <= now + 10100; t++) taken += bucket_take(&b, t);
  ck_assert_int_eq(taken, 100);
  /* an idle bucket saves up no more than the burst */
  now += 1000000;
  taken = 0;
  while (bucket_take(&b, now)) taken++;
  ck_assert_int_eq(taken, 10);
}
END_TEST

START_TEST(slow_rates) {
  bucket_t b;
  bucket_init(&b, 2.0 / 60.0, 0, 0); /* 2/m: burst raised to 1 */
  ck_assert_int_eq(bucket_take(&b, 0), 1);
  ck_assert_int_eq(bucket_take(&b, 0), 0);
  ck_assert_int_eq(bucket_ready_at(&b, 0), 30000);
  ck_assert_int_eq(bucket_take(&b, 29999), 0);
  ck_assert_int_eq(bucket_take(&b, 30000), 1);
}
END_TEST

START_TEST(unlimited_and_backwards_clock) {
  bucket_t b;
  bucket_init(&b, 0, 1, 100);
  for (int i = 0; i < 1000; i++) ck_assert_int_eq(bucket_take(&b, 100), 1);
  ck_assert_int_eq(bucket_ready_at(&b, 100), 100);
  bucket_init(&b, 1, 1, 1000);
  ck_assert_int_eq(bucket_take(&b, 1000), 1);
  ck_assert_int_eq(bucket_take(&b, 10), 0); /* earlier than the last refill: nothing */
  ck_assert_int_eq(bucket_take(&b, 2000), 1);
}
END_TEST

Suite *unit_suite(void) {
  Suite *s = suite_create("bucket");
  TCase *tc = tcase_create("bucket");
  tcase_add_test(tc, burst_then_rate);
  tcase_add_test(tc, slow_rates);
  tcase_add_test(tc, unlimited_and_backwards_clock);
  suite_add_tcase(s, tc);
  return s;
}
