/* Tests of the backend-neutral store code: passwords never survive redaction of a
 * database URL, whatever form the URL takes; retention plans; events claimed ahead
 * are handed out only once due. */
#include <check.h>

#include "check_main.h"
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "store.h"
#include "store_open.h"

static const char *cases[][2] = {
    {"postgres://app:s3cret@db/shop", "postgres://app:***@db/shop"},
    {"postgresql://app:p%40ss@db:5432/shop?sslmode=require",
     "postgresql://app:***@db:5432/shop?sslmode=require"},
    {"postgres://app:we/ird:p@ss@db/shop", "postgres://app:***@db/shop"},
    {"postgres://app@db/shop", "postgres://app@db/shop"},
    {"postgres://db/shop?user=app&password=s3cret&sslmode=disable",
     "postgres://db/shop?user=app&password=***&sslmode=disable"},
    {"host=db user=app password=s3cret dbname=shop", "host=db user=app password=*** dbname=shop"},
    {"host=db PASSWORD='a b\\' c' dbname=shop", "host=db PASSWORD=*** dbname=shop"},
    {"password=s3cret", "password=***"},
    {"outbox.db", "outbox.db"},
    {"sqlite:/var/lib/outbox/password=x.db", "sqlite:/var/lib/outbox/password=x.db"},
    {"ndjson:-", "ndjson:-"},
};

START_TEST(redacts_passwords) {
  char out[256];
  const char *in = cases[_i][0], *want = cases[_i][1];
  ck_assert_str_eq(store_url_redact(in, out, sizeof out), want);
  ck_assert_msg(!strstr(out, "s3cret") && !strstr(out, "p%40ss") && !strstr(out, "we/ird"),
                "password left in %s", out);
}
END_TEST

START_TEST(redaction_fits_small_buffers) {
  char out[12];
  store_url_redact("postgres://app:s3cret@db/shop", out, sizeof out);
  ck_assert_str_eq(out, "postgres://");
  ck_assert_str_eq(store_url_redact("postgres://app:s3cret@db/shop", out, 1), "");
}
END_TEST

/* Ids and times as text, against snprintf, at the edges of int64. */
START_TEST(integers_as_text) {
  const int64_t v[] = {0, 7, 10, 99, 1234567890123, INT64_MAX, -1, -42, INT64_MIN};
  for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
    char want[32], got[32] = {0};
    snprintf(want, sizeof want, "%" PRId64, v[i]);
    size_t n = store_put_int(got, v[i]);
    ck_assert_uint_eq(n, strlen(want));
    ck_assert_str_eq(got, want);
  }
}
END_TEST

/* Retention: which statuses are pruned, how long a store rests, how a batch adapts. */
START_TEST(retention_plan) {
  store_opts_t o = {0};
  o.keep_dead_ms = -1;
  ck_assert_int_eq(store_prunes(&o), 0); /* done deleted on ack, dead kept: nothing */
  ck_assert_int_eq(store_keep_ms(&o, 0), -1);
  o.keep_done_ms = -1; /* --keep-done alone: forever */
  ck_assert_int_eq(store_prunes(&o), 0);
  o.keep_done_ms = 3600000;
  ck_assert_int_eq(store_prunes(&o), 1);
  ck_assert_int_eq(store_keep_ms(&o, 0), 3600000);
  ck_assert_int_eq(store_prune_idle_ms(&o), 60000); /* a tenth, at most 60 s */
  o.keep_dead_ms = 0;                               /* --keep-dead 0: dead rows go at once */
  ck_assert_int_eq(store_keep_ms(&o, 1), 0);
  ck_assert_int_eq(store_prune_idle_ms(&o), 1000); /* at least 1 s */
  o.keep_dead_ms = 20000;
  ck_assert_int_eq(store_prune_idle_ms(&o), 2000);
  ck_assert_int_eq(store_prune_batch(0, 0, 4), STORE_PRUNE_FIRST);
  ck_assert_int_eq(store_prune_batch(256, 4001, 4), 128); /* over the budget: halved */
  ck_assert_int_eq(store_prune_batch(256, 2000, 4), 256); /* within: kept */
  ck_assert_int_eq(store_prune_batch(256, 999, 4), 512);  /* under a quarter: doubled */
  ck_assert_int_eq(store_prune_batch(256, 20000, 25), 256);
  ck_assert_int_eq(store_prune_batch(STORE_PRUNE_MIN, 1000000, 4), STORE_PRUNE_MIN);
  ck_assert_int_eq(store_prune_batch(STORE_PRUNE_MAX, 0, 4), STORE_PRUNE_MAX);
}
END_TEST

/* Events claimed ahead wait in the buffer until due; the rest keep their order. */
START_TEST(take_due_holds_events_not_due) {
  const int64_t at[] = {0, 120, 100, 0, 150, 90};
  store_event_t *buf[6], *out[6];
  int n = 6;
  int64_t next;
  for (int i = 0; i < n; i++) {
    buf[i] = store_event_new(i + 1, "t", 1, NULL, 0, "{}", 2, NULL, 0, 0);
    ck_assert_ptr_nonnull(buf[i]);
    buf[i]->available_at = at[i];
  }
  ck_assert_int_eq(store_take_due(buf, &n, 6, 100, out, &next), 4); /* 0, 100, 0, 90 */
  ck_assert_int_eq(out[0]->id, 1);
  ck_assert_int_eq(out[1]->id, 3);
  ck_assert_int_eq(out[2]->id, 4);
  ck_assert_int_eq(out[3]->id, 6);
  ck_assert_int_eq(n, 2);
  ck_assert_int_eq(buf[0]->id, 2);
  ck_assert_int_eq(buf[1]->id, 5);
  ck_assert_int_eq(next, 120); /* the first held one */
  for (int i = 0; i < 4; i++) store_event_free(out[i]);
  ck_assert_int_eq(store_take_due(buf, &n, 6, 119, out, &next), 0); /* nothing due yet */
  ck_assert_int_eq(next, 120);
  ck_assert_int_eq(store_take_due(buf, &n, 1, 200, out, &next), 1); /* at most max */
  ck_assert_int_eq(out[0]->id, 2);
  ck_assert_int_eq(n, 1);
  ck_assert_int_eq(next, 200); /* one due left behind: due now */
  store_event_free(out[0]);
  ck_assert_int_eq(store_take_due(buf, &n, 6, 200, out, &next), 1);
  ck_assert_int_eq(n, 0);
  ck_assert_int_eq(next, 0); /* none left */
  store_event_free(out[0]);
}
END_TEST

Suite *unit_suite(void) {
  Suite *s = suite_create("store");
  TCase *tc = tcase_create("core");
  tcase_add_loop_test(tc, redacts_passwords, 0, (int)(sizeof cases / sizeof cases[0]));
  tcase_add_test(tc, redaction_fits_small_buffers);
  tcase_add_test(tc, retention_plan);
  tcase_add_test(tc, integers_as_text);
  tcase_add_test(tc, take_due_holds_events_not_due);
  suite_add_tcase(s, tc);
  return s;
}
