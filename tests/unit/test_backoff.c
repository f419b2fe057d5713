/* Unit tests for src/backoff.c: determinism per seed, the [d/2, d] jitter bounds, the
 * cap, no overflow for huge attempts, and the MS[:MAX] parser. */
#include <check.h>

#include "check_main.h"
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "backoff.h"

/* The nominal delay, computed independently (no shifts past 2^62). */
static int64_t nominal(int64_t base, int64_t cap, int attempt) {
  int64_t d = base;
  for (int i = 1; i < attempt && d < cap; i++) d = d > cap / 2 ? cap : d * 2;
  return d < cap ? d : cap;
}

START_TEST(init_validates) {
  backoff_t b;
  ck_assert_int_eq(backoff_init(&b, 0, 100, 1), -EINVAL);
  ck_assert_int_eq(backoff_init(&b, -5, 100, 1), -EINVAL);
  ck_assert_int_eq(backoff_init(&b, 200, 100, 1), -EINVAL);
  ck_assert_int_eq(backoff_init(&b, 100, 100, 1), 0);
}
END_TEST

START_TEST(deterministic_per_seed) {
  backoff_t a, b, c;
  ck_assert_int_eq(backoff_init(&a, 1000, 300000, 42), 0);
  ck_assert_int_eq(backoff_init(&b, 1000, 300000, 42), 0);
  ck_assert_int_eq(backoff_init(&c, 1000, 300000, 43), 0);
  int differ = 0;
  for (int i = 0; i < 10000; i++) {
    int attempt = 1 + i % 20;
    int64_t da = backoff_delay(&a, attempt);
    ck_assert_int_eq(da, backoff_delay(&b, attempt));
    differ += da != backoff_delay(&c, attempt);
  }
  ck_assert_int_gt(differ, 9000);
  ck_assert_uint_eq(backoff_rand(&a), backoff_rand(&b));
}
END_TEST

START_TEST(splitmix64_reference) {
  /* First outputs of splitmix64 seeded with 0 (the published reference values). */
  backoff_t b;
  ck_assert_int_eq(backoff_init(&b, 1, 1, 0), 0);
  ck_assert_uint_eq(backoff_rand(&b), 0xe220a8397b1dcdafULL);
  ck_assert_uint_eq(backoff_rand(&b), 0x6e789e6aa1b965f4ULL);
  ck_assert_uint_eq(backoff_rand(&b), 0x06c45d188009454fULL);
}
END_TEST

START_TEST(delays_within_equal_jitter) {
  static const int64_t settings[][2] = {{1000, 300000}, {1, 1}, {1, 2}, {3, 1000}, {7, 7}};
  for (size_t s = 0; s < sizeof(settings) / sizeof(settings[0]); s++) {
    backoff_t b;
    int64_t base = settings[s][0], cap = settings[s][1];
    ck_assert_int_eq(backoff_init(&b, base, cap, 0xfeed + s), 0);
    for (int attempt = 1; attempt <= 40; attempt++) {
      int64_t d = nominal(base, cap, attempt);
      int64_t lo = INT64_MAX, hi = 0;
      for (int i = 0; i < 2000; i++) {
        int64_t v = backoff_delay(&b, attempt);
        ck_assert_int_ge(v, d / 2);
        ck_assert_int_le(v, d);
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
      }
      if (d >= 1000) { /* the jitter actually spreads over the range */
        ck_assert_int_lt(lo, d / 2 + d / 20);
        ck_assert_int_gt(hi, d - d / 20);
      }
    }
  }
}
END_TEST

START_TEST(nominal_doubles_then_caps) {
  backoff_t b;
  ck_assert_int_eq(backoff_init(&b, 1000, 300000, 1), 0);
  /* d/2 <= v <= d pins the nominal d within a factor of two */
  int64_t want[] = {1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000, 300000, 300000};
  for (int a = 1; a <= 11; a++) {
    for (int i = 0; i < 200; i++) {
      int64_t v = backoff_delay(&b, a);
      ck_assert_int_ge(v, want[a - 1] / 2);
      ck_assert_int_le(v, want[a - 1]);
    }
  }
}
END_TEST

START_TEST(huge_attempts_no_overflow) {
  backoff_t b;
  int attempts[] = {62, 63, 64, 65, 100, 1000, 100000, INT32_MAX};
  ck_assert_int_eq(backoff_init(&b, 1000, 300000, 9), 0);
  for (size_t i = 0; i < sizeof(attempts) / sizeof(attempts[0]); i++) {
    int64_t v = backoff_delay(&b, attempts[i]);
    ck_assert_int_ge(v, 150000);
    ck_assert_int_le(v, 300000);
  }
  /* a cap near the top of int64 */
  ck_assert_int_eq(backoff_init(&b, 1, INT64_MAX, 9), 0);
  for (int a = 1; a <= 1000; a++) {
    int64_t d = nominal(1, INT64_MAX, a);
    int64_t v = backoff_delay(&b, a);
    ck_assert_int_ge(v, d / 2);
    ck_assert_int_le(v, d);
  }
  ck_assert_int_ge(backoff_delay(&b, 1000), INT64_MAX / 2);
  /* attempt below 1 is treated as 1 */
  ck_assert_int_eq(backoff_init(&b, 1000, 300000, 9), 0);
  ck_assert_int_le(backoff_delay(&b, 0), 1000);
  ck_assert_int_le(backoff_delay(&b, -7), 1000);
}
END_TEST

START_TEST(parse_valid) {
  int64_t base = 0, cap = 0;
  ck_assert_int_eq(backoff_parse("1000", &base, &cap), 0);
  ck_assert_int_eq(base, 1000);
  ck_assert_int_eq(cap, 300000);
  ck_assert_int_eq(backoff_parse("1000:300000", &base, &cap), 0);
  ck_assert_int_eq(base, 1000);
  ck_assert_int_eq(cap, 300000);
  ck_assert_int_eq(backoff_parse("250:5000", &base, &cap), 0);
  ck_assert_int_eq(base, 250);
  ck_assert_int_eq(cap, 5000);
  ck_assert_int_eq(backoff_parse("5000:5000", &base, &cap), 0);
  ck_assert_int_eq(cap, 5000);
  /* a base above the default cap raises the cap to the base */
  ck_assert_int_eq(backoff_parse("600000", &base, &cap), 0);
  ck_assert_int_eq(base, 600000);
  ck_assert_int_eq(cap, 600000);
  ck_assert_int_eq(backoff_parse("1", &base, &cap), 0);
  ck_assert_int_eq(base, 1);
  ck_assert_int_eq(cap, 300000);
}
END_TEST

START_TEST(parse_invalid) {
  /* clang-format off */
  static const char *const bad[] = {
      "",          "0",       "0:100",    "100:0",     "-1",    "-1:100",    "100:-1",
      "abc",       "100ms",   "1e3",      "100:",      ":100",  "100:200:300", "100 ",
      " 100",      "+100",    "2000:1000", "100::200", "1.5",   "99999999999999999999",
      "1:99999999999999999999",
  };
  /* clang-format on */
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    int64_t base = -9, cap = -9;
    ck_assert_msg(backoff_parse(bad[i], &base, &cap) == -EINVAL, "accepted '%s'", bad[i]);
    ck_assert_msg(base == -9 && cap == -9, "'%s' wrote the outputs", bad[i]);
  }
  int64_t base, cap;
  ck_assert_int_eq(backoff_parse(NULL, &base, &cap), -EINVAL);
}
END_TEST

static Suite *backoff_suite(void) {
  Suite *s = suite_create("backoff");
  TCase *tc = tcase_create("backoff");
  tcase_add_test(tc, init_validates);
  tcase_add_test(tc, deterministic_per_seed);
  tcase_add_test(tc, splitmix64_reference);
  tcase_add_test(tc, delays_within_equal_jitter);
  tcase_add_test(tc, nominal_doubles_then_caps);
  tcase_add_test(tc, huge_attempts_no_overflow);
  tcase_add_test(tc, parse_valid);
  tcase_add_test(tc, parse_invalid);
  suite_add_tcase(s, tc);
  return s;
}

Suite *unit_suite(void) { return backoff_suite(); }
