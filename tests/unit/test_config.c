/* Unit tests for src/config.c: the defaults come from the table, precedence of
 * sources, one-line errors naming the option, lookups by flag and Lua key, the
 * environment. */
#include <check.h>

#include "check_main.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"

static int opt(const char *flag) {
  int i = config_find(flag, 0);
  ck_assert_msg(i >= 0, "no option --%s", flag);
  return i;
}

START_TEST(defaults_match_the_table) {
  config_t c;
  config_defaults(&c);
  ck_assert_int_eq(c.concurrency, 10);
  ck_assert_int_eq(c.concurrency_auto, 0);
  ck_assert_int_eq(c.batch, 50);
  ck_assert_int_eq(c.max_attempts, 10);
  ck_assert_int_eq(c.backoff_base_ms, 1000);
  ck_assert_int_eq(c.backoff_cap_ms, 300000);
  ck_assert_int_eq(c.breaker_pct, 50);
  ck_assert_int_eq(c.breaker_slow_ms, 0);
  ck_assert_int_eq(c.memory_limit, 0);
  ck_assert_int_eq(c.memory_high_pct, 90);
  ck_assert_int_eq(c.cpu_limit_ms, 10000);
  ck_assert_int_eq(c.ordering_key, 1);
  ck_assert_int_eq(c.once, 0);
  ck_assert_int_eq(c.watch, 1);
  ck_assert_int_eq(c.keep_done_ms, 0);  /* done rows deleted at once */
  ck_assert_int_eq(c.keep_dead_ms, -1); /* dead rows kept forever */
  ck_assert_int_eq(c.log_json, -1);
  ck_assert_int_eq(c.log_level, LOG_INFO);
  ck_assert_str_eq(c.db, "outbox.db");
  ck_assert_str_eq(c.metrics, "");
  ck_assert_str_eq(c.topics, "");
  for (int i = 0; i < config_nopts; i++) ck_assert_int_eq(c.source[i], CONFIG_DEFAULT);
}
END_TEST

/* Every default that --help shows as a value is one the option accepts, and setting
 * it again changes nothing: --help and the defaults cannot disagree. */
START_TEST(every_value_default_parses_and_is_the_default) {
  char err[256];
  for (int i = 0; i < config_nopts; i++) {
    const config_opt_t *o = &config_opts[i];
    ck_assert_msg(o->def != NULL, "--%s has no default in --help", o->flag);
    if (!config_default_is_value(i)) continue;
    config_t a, b;
    config_defaults(&a);
    config_defaults(&b);
    ck_assert_msg(config_set(&b, i, o->def, CONFIG_FLAG, err, sizeof err) == 0,
                  "--%s: default \"%s\" refused: %s", o->flag, o->def, err);
    memset(b.source, 0, sizeof b.source);
    ck_assert_msg(memcmp(&a, &b, sizeof a) == 0, "--%s %s differs from the default", o->flag,
                  o->def);
  }
}
END_TEST

START_TEST(higher_source_wins) {
  config_t c;
  char err[256];
  config_defaults(&c);
  int i = opt("batch");
  ck_assert_int_eq(config_set(&c, i, "7", CONFIG_ENV, err, sizeof err), 0);
  ck_assert_int_eq(c.batch, 7);
  ck_assert_int_eq(config_set(&c, i, "9", CONFIG_SCRIPT, err, sizeof err), 0); /* lower: ignored */
  ck_assert_int_eq(c.batch, 7);
  ck_assert_int_eq(config_set(&c, i, "11", CONFIG_FLAG, err, sizeof err), 0);
  ck_assert_int_eq(c.batch, 11);
  ck_assert_int_eq(c.source[i], CONFIG_FLAG);
}
END_TEST

START_TEST(errors_name_the_option_as_given) {
  config_t c;
  char err[256];
  config_defaults(&c);
  ck_assert_int_eq(config_set(&c, opt("breaker"), "120", CONFIG_FLAG, err, sizeof err), -EINVAL);
  ck_assert_str_eq(err, "--breaker: invalid value \"120\" (a percentage from 1 to 100)");
  ck_assert_int_eq(config_set(&c, opt("concurrency"), "0", CONFIG_ENV, err, sizeof err), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "OUTBOX_CONCURRENCY: invalid value \"0\""));
  ck_assert_int_eq(config_set(&c, opt("ordering"), "fifo", CONFIG_SCRIPT, err, sizeof err),
                   -EINVAL);
  ck_assert_str_eq(err, "ordering: invalid value \"fifo\" (key or none)");
  ck_assert_ptr_null(strchr(err, '\n'));
  ck_assert_int_eq(c.concurrency, 10); /* a refused value changes nothing */
}
END_TEST

START_TEST(numbers_from_lua_are_seconds_for_times) {
  config_t c;
  char err[256];
  config_defaults(&c);
  ck_assert_int_eq(config_set_number(&c, opt("timeout"), 1.5, CONFIG_SCRIPT, err, sizeof err), 0);
  ck_assert_int_eq(c.timeout_ms, 1500);
  ck_assert_int_eq(config_set_number(&c, opt("batch"), 20, CONFIG_SCRIPT, err, sizeof err), 0);
  ck_assert_int_eq(c.batch, 20);
  ck_assert_int_eq(config_set_number(&c, opt("batch"), -1, CONFIG_SCRIPT, err, sizeof err),
                   -EINVAL);
  ck_assert_int_eq(config_set_number(&c, opt("backoff"), 2, CONFIG_SCRIPT, err, sizeof err), 0);
  ck_assert_int_eq(c.backoff_base_ms, 2000);
  ck_assert_int_eq(c.backoff_cap_ms, 300000);
}
END_TEST

START_TEST(concurrency_auto) {
  config_t c;
  char err[256];
  config_defaults(&c);
  ck_assert_int_eq(config_set(&c, opt("concurrency"), "auto:64", CONFIG_FLAG, err, sizeof err), 0);
  ck_assert_int_eq(c.concurrency_auto, 1);
  ck_assert_int_eq(c.concurrency, 64);
  ck_assert_int_eq(config_set(&c, opt("concurrency"), "auto:x", CONFIG_FLAG, err, sizeof err),
                   -EINVAL);
}
END_TEST

START_TEST(lookup_by_flag_and_lua_key) {
  int i = config_find("max-attempts", 0);
  ck_assert_int_ge(i, 0);
  ck_assert_int_eq(config_find("max_attempts", 1), i);
  ck_assert_int_eq(config_find("max_attempts", 0), -1);
  ck_assert_int_eq(config_find("db", 1), -1); /* not settable from a script */
}
END_TEST

START_TEST(environment) {
  config_t c;
  char err[256];
  config_defaults(&c);
  setenv("OUTBOX_BATCH_SIZE", "33", 1);
  setenv("OUTBOX_LOG_LEVEL", "warn", 1);
  ck_assert_int_eq(config_from_env(&c, err, sizeof err), 0);
  ck_assert_int_eq(c.batch, 33);
  ck_assert_int_eq(c.log_level, LOG_WARN);
  setenv("OUTBOX_LEASE", "soon", 1);
  ck_assert_int_eq(config_from_env(&c, err, sizeof err), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "OUTBOX_LEASE"));
  unsetenv("OUTBOX_BATCH_SIZE");
  unsetenv("OUTBOX_LOG_LEVEL");
  unsetenv("OUTBOX_LEASE");
}
END_TEST

/* Retention durations (--keep-done, --keep-dead). */
START_TEST(durations_parse) {
  static const struct {
    const char *in;
    int64_t ms;
  } ok[] = {
      {"0", 0},         {"1500", 1500},    {"250ms", 250},    {"45s", 45000},
      {"30m", 1800000}, {"12h", 43200000}, {"7d", 604800000}, {"forever", -1},
  };
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
    int64_t ms = -2;
    ck_assert_msg(config_parse_duration(ok[i].in, &ms) == 0, "%s refused", ok[i].in);
    ck_assert_int_eq(ms, ok[i].ms);
  }
  static const char *bad[] = {
      "", "d", "-1", "7 d", "7w", "1.5h", "12hours", "x", "99999999999999999d"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int64_t ms = 5;
    ck_assert_msg(config_parse_duration(bad[i], &ms) != 0, "'%s' accepted", bad[i]);
    ck_assert_int_eq(ms, 5);
  }
}
END_TEST

START_TEST(retention_flags) {
  config_t c;
  char err[256];
  config_defaults(&c);
  int i = config_find("keep-dead", 0);
  ck_assert_int_ge(i, 0);
  ck_assert_int_eq(config_set(&c, i, "12h", CONFIG_FLAG, err, sizeof err), 0);
  ck_assert_int_eq(c.keep_dead_ms, 43200000);
  ck_assert_int_ne(config_set(&c, i, "soon", CONFIG_FLAG, err, sizeof err), 0);
  ck_assert_str_eq(err, "--keep-dead: invalid value \"soon\" (a duration such as 7d, 12h, 30m, "
                        "45s or milliseconds, or forever)");
  i = config_find("keep_done", 1);
  ck_assert_int_eq(config_set_number(&c, i, 90, CONFIG_SCRIPT, err, sizeof err), 0); /* seconds */
  ck_assert_int_eq(c.keep_done_ms, 90000);
}
END_TEST

Suite *unit_suite(void) {
  Suite *s = suite_create("config");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, defaults_match_the_table);
  tcase_add_test(tc, every_value_default_parses_and_is_the_default);
  tcase_add_test(tc, higher_source_wins);
  tcase_add_test(tc, errors_name_the_option_as_given);
  tcase_add_test(tc, numbers_from_lua_are_seconds_for_times);
  tcase_add_test(tc, concurrency_auto);
  tcase_add_test(tc, lookup_by_flag_and_lua_key);
  tcase_add_test(tc, environment);
  tcase_add_test(tc, durations_parse);
  tcase_add_test(tc, retention_flags);
  suite_add_tcase(s, tc);
  return s;
}
