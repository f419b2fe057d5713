/* Unit tests for src/statusline.c: the line's text from given figures, cut to the
 * terminal width, and events/s measured on an injected clock. */
#include <check.h>

#include "check_main.h"
#include <stdlib.h>
#include <string.h>

#include "statusline.h"

static statusline_figures_t figures(void) {
  statusline_figures_t f = {0};
  f.inflight = 3;
  f.limit = 10;
  f.queued = 40;
  f.pending = 1234;
  f.breaker = "closed";
  f.rss = 12u * 1024 * 1024;
  f.memory_limit = 2ull * 1024 * 1024 * 1024;
  f.generation = 2;
  return f;
}

START_TEST(format_all_figures) {
  statusline_figures_t f = figures();
  char buf[256];
  size_t n = statusline_format(&f, 512.25, buf, sizeof buf, 0);
  ck_assert_str_eq(buf, "512.2 ev/s | in flight 3/10 | queued 40 | pending 1234 | breaker closed"
                        " | mem 12M/2.0G | gen 2");
  ck_assert_uint_eq(n, strlen(buf));
}
END_TEST

START_TEST(unknown_pending_open_breakers_and_paused) {
  statusline_figures_t f = figures();
  char buf[256];
  f.pending = -1;
  f.breaker = "open: orders";
  f.paused = "audit.*,user.created";
  statusline_format(&f, 0, buf, sizeof buf, 0);
  ck_assert_ptr_nonnull(strstr(buf, "| pending ? |"));
  ck_assert_ptr_nonnull(strstr(buf, "| breaker open: orders |"));
  ck_assert_ptr_nonnull(strstr(buf, " | paused audit.*,user.created"));
  f.paused = "";
  statusline_format(&f, 0, buf, sizeof buf, 0);
  ck_assert_ptr_null(strstr(buf, "paused"));
}
END_TEST

/* Never wider than the terminal (one column short, so it never wraps), never past
 * the buffer. */
START_TEST(cut_to_width_and_buffer) {
  statusline_figures_t f = figures();
  char buf[256], small[16];
  size_t n = statusline_format(&f, 1, buf, sizeof buf, 20);
  ck_assert_uint_eq(n, 19);
  ck_assert_uint_eq(strlen(buf), 19);
  ck_assert_str_eq(buf, "1.0 ev/s | in fligh");
  n = statusline_format(&f, 1, small, sizeof small, 0);
  ck_assert_uint_eq(n, sizeof small - 1);
  ck_assert_uint_eq(strlen(small), sizeof small - 1);
}
END_TEST

START_TEST(rate_on_an_injected_clock) {
  statusline_figures_t f = figures();
  f.now_ms = 1000;
  f.processed = 100;
  ck_assert_double_eq(statusline_rate(&f), 0); /* first sample: nothing to compare with */
  f.now_ms = 3000;
  f.processed = 1100;
  ck_assert_double_eq_tol(statusline_rate(&f), 500.0, 1e-9);
  f.processed = 5000; /* no time passed: the last rate stays */
  ck_assert_double_eq_tol(statusline_rate(&f), 500.0, 1e-9);
  f.now_ms = 3500;
  f.processed = 1150;
  ck_assert_double_eq_tol(statusline_rate(&f), 100.0, 1e-9);
}
END_TEST

Suite *unit_suite(void) {
  Suite *s = suite_create("statusline");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, format_all_figures);
  tcase_add_test(tc, unknown_pending_open_breakers_and_paused);
  tcase_add_test(tc, cut_to_width_and_buffer);
  tcase_add_test(tc, rate_on_an_injected_clock);
  suite_add_tcase(s, tc);
  return s;
}
