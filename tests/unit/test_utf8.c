/* Tests of the UTF-8 repair that every store applies to last_error: the output is
 * valid UTF-8, bounded, cut on a character boundary, and unchanged when valid. */
#include <check.h>

#include "check_main.h"
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "utf8.h"

/* 1 when s[0..len] is valid UTF-8 without NUL bytes. */
static int valid(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s, *end = p + len;
  while (p < end) {
    int n = *p ? utf8_len(p, end, NULL) : 0;
    if (!n) return 0;
    p += n;
  }
  return 1;
}

static void expect(const char *in, size_t len, size_t max, const char *want) {
  size_t got_len = 0;
  char *got = utf8_clean(in, len, max, &got_len);
  ck_assert_ptr_nonnull(got);
  ck_assert_uint_eq(got_len, strlen(want));
  ck_assert_mem_eq(got, want, strlen(want) + 1);
  free(got);
}

#define R "\xEF\xBF\xBD" /* U+FFFD */

START_TEST(valid_text_is_kept) {
  expect("plain ascii", 11, 100, "plain ascii");
  expect("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80", 14, 100,
         "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80");
  expect("", 0, 100, "");
}
END_TEST

START_TEST(invalid_bytes_are_replaced) {
  expect("bad \xFF", 5, 100, "bad " R); /* never valid */
  expect("donn\xE9"
         "es",
         7, 100, "donn" R "es");               /* Latin-1 */
  expect("ab\xC3", 3, 100, "ab" R);            /* cut short */
  expect("\xC0\xAF", 2, 100, R R);             /* overlong */
  expect("\xED\xA0\x80", 3, 100, R R R);       /* surrogate */
  expect("\xF4\x90\x80\x80", 4, 100, R R R R); /* above U+10FFFF */
  expect("\x80x", 2, 100, R "x");              /* stray continuation */
  expect("a\0b", 3, 100, "a" R "b");           /* NUL */
}
END_TEST

START_TEST(long_text_is_cut_on_a_character_boundary) {
  /* ten two-byte characters, 20 bytes: 9 bytes leave room for three and "..." */
  const char *e10 =
      "\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9";
  expect(e10, 20, 9, "\xC3\xA9\xC3\xA9\xC3\xA9...");
  expect(e10, 20, 10, "\xC3\xA9\xC3\xA9\xC3\xA9...");
  expect(e10, 20, 20, e10); /* exactly fits: not cut */
  expect("abcdefghij", 10, 9, "abcdef...");
}
END_TEST

/* Every bound over a mixed string: valid, within the bound, and a prefix of the full
 * repaired text followed by "..." whenever it was cut. */
START_TEST(every_bound) {
  const char in[] = "x\xC3\xA9y\xE2\x82\xACz\xF0\x9F\x98\x80\xFF\xC3q\xE9w";
  size_t full_len;
  char *full = utf8_clean(in, sizeof in - 1, 1000, &full_len);
  ck_assert(valid(full, full_len));
  for (size_t max = 8; max < full_len + 4; max++) {
    size_t n;
    char *got = utf8_clean(in, sizeof in - 1, max, &n);
    ck_assert_uint_le(n, max);
    ck_assert(valid(got, n));
    if (n != full_len || memcmp(got, full, n) != 0) {
      ck_assert_uint_ge(n, 3);
      ck_assert_mem_eq(got + n - 3, "...", 3);
      ck_assert_mem_eq(got, full, n - 3);
    }
    free(got);
  }
  free(full);
}
END_TEST

START_TEST(random_bytes) {
  unsigned char buf[300];
  srand(4242);
  for (int round = 0; round < 5000; round++) {
    size_t len = (size_t)(rand() % (int)sizeof buf);
    for (size_t i = 0; i < len; i++) buf[i] = (unsigned char)rand();
    size_t max = 8 + (size_t)(rand() % 400), n;
    char *got = utf8_clean((const char *)buf, len, max, &n);
    ck_assert_uint_le(n, max);
    ck_assert_uint_eq(strlen(got), n);
    if (!valid(got, n)) ck_abort_msg("round %d: invalid output", round);
    free(got);
  }
}
END_TEST

START_TEST(store_error_text_and_times) {
  ck_assert_ptr_null(store_error_text(NULL));
  char *long_err = malloc(5001);
  memset(long_err, 'e', 5000);
  long_err[5000] = 0;
  long_err[4000] = (char)0xFF;
  char *t = store_error_text(long_err);
  ck_assert_uint_eq(strlen(t), STORE_ERROR_MAX);
  ck_assert(valid(t, strlen(t)));
  free(t);
  free(long_err);
  t = store_error_text("bad \xFF");
  ck_assert_str_eq(t, "bad " R);
  free(t);
  ck_assert_int_eq(store_clamp_time(-5), 0);
  ck_assert_int_eq(store_clamp_time(1234), 1234);
  ck_assert_int_eq(store_clamp_time(INT64_MAX), STORE_TIME_MAX);
  ck_assert_int_eq(store_clamp_time(STORE_TIME_MAX + 1), STORE_TIME_MAX);
}
END_TEST

Suite *unit_suite(void) {
  Suite *su = suite_create("utf8");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, valid_text_is_kept);
  tcase_add_test(tc, invalid_bytes_are_replaced);
  tcase_add_test(tc, long_text_is_cut_on_a_character_boundary);
  tcase_add_test(tc, every_bound);
  tcase_add_test(tc, random_bytes);
  tcase_add_test(tc, store_error_text_and_times);
  suite_add_tcase(su, tc);
  return su;
}
