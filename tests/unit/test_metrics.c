/* Unit tests for metrics_render (src/metrics.c): the exposition text of given
 * figures: counters and gauges by name, per-route and per-breaker series with
 * escaped labels, optional series left out, and snprintf-like sizing. */
#include <check.h>

#include "check_main.h"
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

static int has_line(const char *text, const char *line) {
  size_t n = strlen(line);
  for (const char *p = text; (p = strstr(p, line)) != NULL; p += n)
    if ((p == text || p[-1] == '\n') && p[n] == '\n') return 1;
  return 0;
}

#define ASSERT_LINE(text, line) ck_assert_msg(has_line(text, line), "missing line: %s", line)

static metrics_figures_t figures(void) {
  static const metrics_route_t routes[] = {{"orders", 4, 20, 1000}, {"default", 0, 10, 7}};
  static const metrics_breaker_t breakers[] = {{"orders", 1}, {"we\"ird\\name", 2}};
  static char audit[] = "audit.*";
  static char *const paused[] = {audit};
  metrics_figures_t f = {0};
  f.done = 1000;
  f.failed = 5;
  f.dead = 2;
  f.retried = 3;
  f.inflight = 4;
  f.queued = 9;
  f.concurrency = 10;
  f.breaker = 1;
  f.routes = routes;
  f.nroutes = 2;
  f.breakers = breakers;
  f.nbreakers = 2;
  f.paused = paused;
  f.npaused = 1;
  f.store_ok = 1;
  f.pending = 42;
  f.store_dead = 2;
  f.generation = 3;
  f.live_generations = 2;
  f.timers = 1;
  return f;
}

START_TEST(series_and_values) {
  metrics_figures_t f = figures();
  char buf[32768];
  size_t n = metrics_render(&f, buf, sizeof buf);
  ck_assert_uint_eq(n, strlen(buf));
  ASSERT_LINE(buf, "# TYPE outboxd_events_total counter");
  ASSERT_LINE(buf, "outboxd_events_total{outcome=\"done\"} 1000");
  ASSERT_LINE(buf, "outboxd_events_total{outcome=\"retried\"} 3");
  ASSERT_LINE(buf, "outboxd_inflight 4");
  ASSERT_LINE(buf, "outboxd_breaker_state 1");
  ASSERT_LINE(buf, "outboxd_breaker_state{breaker=\"orders\"} 1");
  ASSERT_LINE(buf, "outboxd_breaker_state{breaker=\"we\\\"ird\\\\name\"} 2");
  ASSERT_LINE(buf, "outboxd_route_inflight{route=\"orders\"} 4");
  ASSERT_LINE(buf, "outboxd_route_limit{route=\"default\"} 10");
  ASSERT_LINE(buf, "outboxd_route_events_total{route=\"orders\"} 1000");
  ASSERT_LINE(buf, "outboxd_paused{pattern=\"audit.*\"} 1");
  ASSERT_LINE(buf, "outboxd_pending 42");
  ASSERT_LINE(buf, "outboxd_store_up 1");
  ASSERT_LINE(buf, "outboxd_generation 3");
  ASSERT_LINE(buf, "outboxd_live_generations 2");
  /* every sample line belongs to a family announced by # TYPE */
  for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
    if (line[0] == '#') continue;
    ck_assert_msg(strncmp(line, "outboxd_", 8) == 0 || strncmp(line, "process_", 8) == 0,
                  "unexpected line: %s", line);
  }
}
END_TEST

START_TEST(unknown_pending_is_left_out) {
  metrics_figures_t f = figures();
  char buf[32768];
  f.pending = -1;
  f.store_ok = 0;
  metrics_render(&f, buf, sizeof buf);
  ck_assert_ptr_null(strstr(buf, "\noutboxd_pending "));
  ASSERT_LINE(buf, "outboxd_store_up 0");
}
END_TEST

/* Like snprintf: the length needed is returned, the buffer stays terminated. */
START_TEST(sizing) {
  metrics_figures_t f = figures();
  char big[32768], small[64];
  size_t need = metrics_render(&f, big, sizeof big);
  memset(small, 'x', sizeof small);
  ck_assert_uint_eq(metrics_render(&f, small, sizeof small), need);
  ck_assert_uint_eq(strlen(small), sizeof small - 1);
  ck_assert_int_eq(memcmp(small, big, sizeof small - 1), 0);
  ck_assert_uint_eq(metrics_render(&f, NULL, 0), need);
}
END_TEST

Suite *unit_suite(void) {
  Suite *s = suite_create("metrics");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, series_and_values);
  tcase_add_test(tc, unknown_pending_is_left_out);
  tcase_add_test(tc, sizing);
  suite_add_tcase(s, tc);
  return s;
}
