/* Tests for src/store_ndjson.c: new events (outbox.enqueue) join an NDJSON run in
 * memory. A real file and a real uv loop; every handle is closed. */
#include <check.h>

#include "check_main.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>
#include <uv.h>

#include "log.h"
#include "store.h"
#include "store_backends.h"

#undef fail /* check.h's deprecated fail() would rewrite ops->fail */

static char path[64];
static uv_loop_t loop;

static void setup(void) {
  strcpy(path, "/tmp/test_store_ndjson.XXXXXX");
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  const char *lines = "{\"topic\":\"a\",\"payload\":1,\"key\":\"k\"}\n"
                      "{\"topic\":\"b\",\"payload\":2}\n";
  ck_assert_int_eq(write(fd, lines, strlen(lines)), (ssize_t)strlen(lines));
  close(fd);
  ck_assert_int_eq(uv_loop_init(&loop), 0);
  log_setup(LOG_TEXT, LOG_ERROR);
}

static void teardown(void) {
  ck_assert_int_eq(uv_loop_close(&loop), 0);
  unlink(path);
}

static int64_t now_ms(void) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static store_t *open_store(void) {
  store_opts_t o = {0};
  o.batch = 10;
  o.ordering_key = 1;
  store_t *s = NULL;
  char err[256] = "";
  ck_assert_msg(store_ndjson_open(&loop, path, &o, &s, err, sizeof err) == 0, "open: %s", err);
  return s;
}

static void on_closed(void *arg) { (*(int *)arg)++; }

static void close_store(store_t *s) {
  int closed = 0;
  store_close(s, on_closed, &closed);
  while (!closed) uv_run(&loop, UV_RUN_ONCE);
}

static store_event_t *new_event(const char *topic, const char *key, int64_t available_at) {
  store_event_t *ev =
      store_event_new(0, topic, strlen(topic), key, key ? strlen(key) : 0, "{}", 2, NULL, 0, 0);
  ev->available_at = available_at;
  return ev;
}

static int claim(store_t *s, store_event_t **out) {
  int n = -1;
  ck_assert_int_eq(store_claim(s, 10, out, &n), 0);
  return n;
}

/* A done run's follow-ups are claimable next, with ids from 10^12 + 1 on; a failed
 * run's are dropped (its retry carries none); a follow-up waits for its key. */
START_TEST(follow_ups_join_the_run) {
  store_t *s = open_store();
  store_event_t *out[10];
  ck_assert_int_eq(claim(s, out), 2);
  out[0]->follow = new_event("a.next", "k", 0); /* key k: waits for a's run to settle */
  out[0]->follow->next = new_event("free", NULL, 0);
  out[1]->follow = new_event("b.next", NULL, 0);
  store_fail(s, out[1], 0, "failed"); /* b's follow-up goes with the failure */
  store_ack(s, out[0]);
  ck_assert_int_eq(store_exhausted(s), 0);
  store_event_t *got[10];
  int n = claim(s, got);
  ck_assert_int_eq(n, 3);
  const char *seen[3] = {0};
  int64_t ids[3] = {0};
  for (int i = 0; i < n; i++) seen[i] = got[i]->topic, ids[i] = got[i]->id;
  ck_assert_str_eq(seen[0], "b"); /* the retry comes first */
  ck_assert_ptr_null(got[0]->follow);
  ck_assert_str_eq(seen[1], "a.next");
  ck_assert_str_eq(seen[2], "free");
  ck_assert_int_eq(ids[1], INT64_C(1000000000001));
  ck_assert_int_eq(ids[2], INT64_C(1000000000002));
  for (int i = 0; i < n; i++) store_ack(s, got[i]);
  ck_assert_int_eq(claim(s, got), 0);
  ck_assert_int_eq(store_exhausted(s), 1);
  close_store(s);
}
END_TEST

/* A follow-up of the first line, added before the second line is read, does not
 * take the second line's id (its line number). */
START_TEST(follow_ups_never_take_a_later_lines_id) {
  store_t *s = open_store();
  store_event_t *out[10];
  int n = -1;
  ck_assert_int_eq(store_claim(s, 1, out, &n), 0);
  ck_assert_int_eq(n, 1);
  ck_assert_int_eq(out[0]->id, 1);
  out[0]->follow = new_event("a.next", NULL, 0);
  store_ack(s, out[0]);
  ck_assert_int_eq(claim(s, out), 2);
  ck_assert_int_ne(out[0]->id, out[1]->id);
  int line = strcmp(out[0]->topic, "b") == 0 ? 0 : 1;
  ck_assert_str_eq(out[line]->topic, "b");
  ck_assert_int_eq(out[line]->id, 2);
  ck_assert_int_eq(out[1 - line]->id, INT64_C(1000000000001));
  for (int i = 0; i < 2; i++) store_ack(s, out[i]);
  close_store(s);
}
END_TEST

/* store_push: events tied to no run join too; a scheduled one waits for its time
 * and keeps the run from ending. */
START_TEST(pushed_events_wait_for_their_time) {
  store_t *s = open_store();
  store_event_t *out[10];
  ck_assert_int_eq(claim(s, out), 2);
  for (int i = 0; i < 2; i++) store_ack(s, out[i]);
  store_push(s, new_event("later", NULL, now_ms() + 3600000));
  store_push(s, new_event("now", NULL, 0));
  ck_assert_int_eq(claim(s, out), 1);
  ck_assert_str_eq(out[0]->topic, "now");
  store_ack(s, out[0]);
  store_counts_t c;
  ck_assert_int_eq(store_counts(s, &c), 0);
  ck_assert_int_eq(c.pending, 1);
  ck_assert_int_eq(store_exhausted(s), 0);
  close_store(s); /* frees the one still waiting */
}
END_TEST

Suite *unit_suite(void) {
  Suite *su = suite_create("store_ndjson");
  TCase *tc = tcase_create("core");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, follow_ups_join_the_run);
  tcase_add_test(tc, follow_ups_never_take_a_later_lines_id);
  tcase_add_test(tc, pushed_events_wait_for_their_time);
  suite_add_tcase(su, tc);
  return su;
}
