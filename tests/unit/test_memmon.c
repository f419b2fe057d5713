/* Unit tests for src/memmon.c: hysteresis (90% in, below 80% out, no flapping), the
 * size parser, and sanity of the /proc and /sys readers on this machine. */
#include <check.h>

#include "check_main.h"
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "memmon.h"

#define MiB (1024ULL * 1024ULL)

START_TEST(init_validates) {
  memmon_t m;
  ck_assert_int_eq(memmon_init(&m, 0, 90, 80), -EINVAL);
  ck_assert_int_eq(memmon_init(&m, 100, 80, 80), -EINVAL);
  ck_assert_int_eq(memmon_init(&m, 100, 80, 90), -EINVAL);
  ck_assert_int_eq(memmon_init(&m, 100, 101, 80), -EINVAL);
  ck_assert_int_eq(memmon_init(&m, 100, 90, 0), -EINVAL);
  ck_assert_int_eq(memmon_init(&m, 100, 100, 99), 0);
  ck_assert_int_eq(memmon_init(&m, 100, 90, 80), 0);
  ck_assert_int_eq(m.high, 0);
}
END_TEST

START_TEST(enter_high_from_outside) {
  memmon_t m;
  ck_assert_int_eq(memmon_init(&m, 1000, 90, 80), 0);
  ck_assert_int_eq(memmon_enter_high(&m), MEMMON_HIGH); /* a transition */
  ck_assert_int_eq(m.high, 1);
  ck_assert_int_eq(memmon_enter_high(&m), MEMMON_NO_CHANGE); /* already high */
  ck_assert_int_eq(memmon_sample(&m, 850, 0), MEMMON_NO_CHANGE);
  ck_assert_int_eq(memmon_sample(&m, 100, 0), MEMMON_NORMAL); /* a low sample ends it */
}
END_TEST

START_TEST(hysteresis_thresholds) {
  memmon_t m;
  ck_assert_int_eq(memmon_init(&m, 1000, 90, 80), 0);
  ck_assert_int_eq(memmon_sample(&m, 899, 7), MEMMON_NO_CHANGE);
  ck_assert_uint_eq(m.rss, 899);
  ck_assert_uint_eq(m.lua_heap, 7);
  ck_assert_int_eq(memmon_sample(&m, 900, 0), MEMMON_HIGH); /* at 90%: enters */
  ck_assert_int_eq(m.high, 1);
  ck_assert_int_eq(memmon_sample(&m, 2000, 0), MEMMON_NO_CHANGE);
  ck_assert_int_eq(memmon_sample(&m, 850, 0), MEMMON_NO_CHANGE);
  ck_assert_int_eq(memmon_sample(&m, 800, 0), MEMMON_NO_CHANGE); /* at 80%: stays */
  ck_assert_int_eq(memmon_sample(&m, 799, 0), MEMMON_NORMAL);    /* below: leaves */
  ck_assert_int_eq(m.high, 0);
  ck_assert_int_eq(memmon_sample(&m, 899, 0), MEMMON_NO_CHANGE);
  ck_assert_int_eq(memmon_sample(&m, 901, 0), MEMMON_HIGH);
}
END_TEST

START_TEST(thresholds_not_divisible) {
  memmon_t m;
  /* 90% of 1001 is 900.9: 900 is below, 901 is at or above */
  ck_assert_int_eq(memmon_init(&m, 1001, 90, 80), 0);
  ck_assert_int_eq(memmon_sample(&m, 900, 0), MEMMON_NO_CHANGE);
  ck_assert_int_eq(memmon_sample(&m, 901, 0), MEMMON_HIGH);
  /* 80% of 1001 is 800.8: 800 is below it */
  ck_assert_int_eq(memmon_sample(&m, 801, 0), MEMMON_NO_CHANGE);
  ck_assert_int_eq(memmon_sample(&m, 800, 0), MEMMON_NORMAL);
}
END_TEST

START_TEST(huge_limit_no_overflow) {
  memmon_t m;
  ck_assert_int_eq(memmon_init(&m, UINT64_MAX, 90, 80), 0);
  ck_assert_int_eq(memmon_sample(&m, UINT64_MAX / 10 * 8, 0), MEMMON_NO_CHANGE);
  ck_assert_int_eq(memmon_sample(&m, UINT64_MAX, 0), MEMMON_HIGH);
  ck_assert_int_eq(memmon_init(&m, UINT64_MAX, 100, 99), 0);
  ck_assert_int_eq(memmon_sample(&m, UINT64_MAX - 1, 0), MEMMON_NO_CHANGE);
  ck_assert_int_eq(memmon_sample(&m, UINT64_MAX, 0), MEMMON_HIGH);
}
END_TEST

START_TEST(oscillation_never_flaps) {
  memmon_t m;
  uint64_t limit = 1000 * MiB;
  int high = 0, normal = 0;
  ck_assert_int_eq(memmon_init(&m, limit, 90, 80), 0);
  for (int i = 0; i < 1000; i++) {
    uint64_t rss = limit / 100 * (i % 2 ? 91 : 89);
    int rc = memmon_sample(&m, rss, 0);
    high += rc == MEMMON_HIGH;
    normal += rc == MEMMON_NORMAL;
  }
  ck_assert_int_eq(high, 1);
  ck_assert_int_eq(normal, 0);
  ck_assert_int_eq(m.high, 1);
}
END_TEST

typedef struct {
  const char *in;
  uint64_t want;
} size_case_t;

START_TEST(parse_size_valid) {
  static const size_case_t cases[] = {
      {"512M", 512 * MiB},
      {"2G", 2048 * MiB},
      {"1048576", 1048576},
      {"64k", 64 * 1024},
      {"64K", 64 * 1024},
      {"1GiB", 1024 * MiB},
      {"1gib", 1024 * MiB},
      {"10MB", 10 * MiB},
      {"10mb", 10 * MiB},
      {"3T", 3 * 1024 * 1024 * MiB},
      {"100B", 100},
      {"0", 0},
      {"16777215T", 16777215ULL << 40},     /* the largest T that fits */
      {"18446744073709551615", UINT64_MAX}, /* the largest plain number */
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    uint64_t got = 12345;
    ck_assert_msg(memmon_parse_size(cases[i].in, &got) == 0, "rejected %s", cases[i].in);
    ck_assert_msg(got == cases[i].want, "%s: got %llu", cases[i].in, (unsigned long long)got);
  }
}
END_TEST

START_TEST(parse_size_invalid) {
  /* clang-format off */
  static const char *const bad[] = {
      "",      "M",   "-1",    "-1M",  "+5",   " 5",    "5 ",     "5 M",   "1.5G", "12X",
      "1MX",   "1Mi", "1iB",   "1BB",  "1MBB", "0x10",  "1e6",    "G1",    "abc",  "1KK",
      "16777216T", "18446744073709551616", "99999999999999999999999", "17179869184G",
  };
  /* clang-format on */
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    uint64_t got = 777;
    ck_assert_msg(memmon_parse_size(bad[i], &got) == -EINVAL, "accepted '%s'", bad[i]);
    ck_assert_msg(got == 777, "'%s' wrote the output", bad[i]);
  }
  uint64_t got;
  ck_assert_int_eq(memmon_parse_size(NULL, &got), -EINVAL);
}
END_TEST

START_TEST(readers) {
  uint64_t rss = memmon_read_rss();
  uint64_t phys = memmon_physical();
  uint64_t def = memmon_default_limit();
  uint64_t cg = memmon_cgroup_limit();
  ck_assert_uint_gt(rss, 0);
  ck_assert_uint_gt(phys, 0);
  ck_assert_uint_lt(rss, phys);
  ck_assert_uint_gt(def, 0);
  ck_assert_uint_le(def, phys);
  ck_assert(cg == 0 || def <= cg);
  ck_assert(cg < (1ULL << 60));
  /* RSS follows touched memory */
  size_t n = 64 * MiB;
  char *p = malloc(n);
  ck_assert_ptr_nonnull(p);
  for (size_t i = 0; i < n; i += 4096) p[i] = 1;
  uint64_t after = memmon_read_rss();
  ck_assert_uint_ge(after, rss + 32 * MiB);
  free(p);
}
END_TEST

static Suite *memmon_suite(void) {
  Suite *s = suite_create("memmon");
  TCase *tc = tcase_create("memmon");
  tcase_add_test(tc, init_validates);
  tcase_add_test(tc, hysteresis_thresholds);
  tcase_add_test(tc, enter_high_from_outside);
  tcase_add_test(tc, thresholds_not_divisible);
  tcase_add_test(tc, huge_limit_no_overflow);
  tcase_add_test(tc, oscillation_never_flaps);
  tcase_add_test(tc, parse_size_valid);
  tcase_add_test(tc, parse_size_invalid);
  tcase_add_test(tc, readers);
  suite_add_tcase(s, tc);
  return s;
}

Suite *unit_suite(void) { return memmon_suite(); }
