/* Tests for src/store_sqlite.c on real temporary SQLite files and a real uv loop.
 * Each test makes its own directory and closes every handle it opens. */
#include <check.h>

#include "check_main.h"
#include <errno.h>
#include <sqlite3.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "log.h"
#include "store.h"
#include "store_backends.h"

#undef fail /* check.h's deprecated fail() would rewrite ops->fail */

static char dir[64];
static char path[128];
static uv_loop_t loop;

static void setup(void) {
  strcpy(dir, "/tmp/test_store_sqlite.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/outbox.db", dir);
  ck_assert_int_eq(uv_loop_init(&loop), 0);
  log_setup(LOG_TEXT, LOG_ERROR);
}

static void teardown(void) {
  ck_assert_int_eq(uv_loop_close(&loop), 0);
  char cmd[160];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  ck_assert_int_eq(system(cmd), 0);
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------ helpers */

typedef struct wakes {
  int n;
  int64_t at[8];
  int stop_after; /* stop the loop after this many wake-ups */
} wakes_t;

static void on_wake(void *arg) {
  wakes_t *w = arg;
  if (w->n < 8) w->at[w->n] = now_ms();
  if (++w->n >= w->stop_after) uv_stop(&loop);
}

static store_opts_t opts_for(const char *host, int ordering, int batch, int64_t lease, wakes_t *w) {
  store_opts_t o = {0};
  o.batch = batch;
  o.ordering_key = ordering;
  o.lease_ms = lease;
  o.poll_ms = 60000;
  o.host_id = host;
  o.wake = w ? on_wake : NULL;
  o.wake_arg = w;
  return o;
}

/* `outboxd init` on `path` (only init creates a database; a no-op on an initialised one). */
static void init_db(void) {
  char err[256] = "";
  ck_assert_msg(store_sqlite_init_schema(path, err, sizeof err) == 0, "init: %s", err);
}

static store_t *open_as(const char *host, int ordering, int batch, int64_t lease, wakes_t *w) {
  store_opts_t o = opts_for(host, ordering, batch, lease, w);
  store_t *s = NULL;
  char err[256] = "";
  init_db();
  int rc = store_sqlite_open(&loop, path, &o, &s, err, sizeof err);
  ck_assert_msg(rc == 0, "open: %s", err);
  return s;
}

static void on_closed(void *arg) { (*(int *)arg)++; }

static void close_store(store_t *s) {
  int closed = 0;
  store_close(s, on_closed, &closed);
  while (!closed) uv_run(&loop, UV_RUN_ONCE);
  ck_assert_int_eq(closed, 1);
}

static void put(store_t *s, const char *topic, const char *key, const char *payload) {
  store_event_t *ev = store_event_new(0, topic, strlen(topic), key, key ? strlen(key) : 0, payload,
                                      strlen(payload), NULL, 0, 0);
  ck_assert_int_eq(s->ops->enqueue(s, &ev, 1), 0);
  store_event_free(ev);
}

static int claim(store_t *s, int max, store_event_t **out) {
  int n = -1;
  ck_assert_int_eq(store_claim(s, max, out, &n), 0);
  return n;
}

static sqlite3 *raw(void) {
  sqlite3 *db;
  ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
  sqlite3_busy_timeout(db, 2000);
  return db;
}

static void raw_exec(const char *sql) {
  sqlite3 *db = raw();
  char *err = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
  ck_assert_msg(rc == SQLITE_OK, "%s: %s", sql, err ? err : "");
  sqlite3_close(db);
}

/* One integer from one SQL query. */
static int64_t raw_int(const char *sql) {
  sqlite3 *db = raw();
  sqlite3_stmt *st;
  ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
  int64_t v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

static void raw_text(const char *sql, char *buf, size_t len) {
  sqlite3 *db = raw();
  sqlite3_stmt *st;
  ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
  const char *t = (const char *)sqlite3_column_text(st, 0);
  snprintf(buf, len, "%s", t ? t : "(null)");
  sqlite3_finalize(st);
  sqlite3_close(db);
}

static void on_stop(uv_timer_t *t) { uv_stop(t->loop); }

/* Runs the loop for at most ms (or until something calls uv_stop). */
static void run_for(uint64_t ms) {
  uv_timer_t t;
  uv_timer_init(&loop, &t);
  uv_timer_start(&t, on_stop, ms, 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&loop, UV_RUN_NOWAIT);
}

/* -------------------------------------------------------------- tests */

START_TEST(schema_created) {
  init_db();
  init_db(); /* idempotent */
  char mode[32];
  raw_text("PRAGMA journal_mode", mode, sizeof mode);
  ck_assert_str_eq(mode, "wal");
  ck_assert_int_eq(raw_int("SELECT count(*) FROM pragma_table_info('outbox')"), 12);
  ck_assert_int_eq(raw_int("SELECT count(*) FROM sqlite_master WHERE type = 'index'"
                           " AND name IN ('outbox_taken', 'outbox_key_head')"),
                   2);
  ck_assert_int_eq(raw_int("SELECT count(*) FROM sqlite_master WHERE name = 'outbox_claim'"), 0);
  raw_exec("INSERT INTO outbox (topic, payload) VALUES ('t', 'p')");
  int64_t created = raw_int("SELECT created_at FROM outbox");
  ck_assert_int_le(llabs(created - now_ms()), 2000);
  ck_assert_int_eq(raw_int("SELECT available_at + attempts FROM outbox"), 0);
}
END_TEST

START_TEST(only_init_creates_the_file) {
  store_opts_t o = opts_for(NULL, 1, 10, 30000, NULL);
  store_t *s = NULL;
  char err[256] = "", want[512];
  snprintf(want, sizeof want, "--db %s: no such database (create it with: outboxd init --db %s)",
           path, path);
  ck_assert_int_eq(store_sqlite_open(&loop, path, &o, &s, err, sizeof err), STORE_NO_DB);
  ck_assert_ptr_null(s);
  ck_assert_str_eq(err, want);
  store_opts_t host = opts_for("h1", 1, 10, 30000, NULL); /* nor does a dispatcher */
  err[0] = 0;
  ck_assert_int_eq(store_sqlite_open(&loop, path, &host, &s, err, sizeof err), STORE_NO_DB);
  ck_assert_str_eq(err, want);
  ck_assert_int_ne(access(path, F_OK), 0); /* not created */
  raw_exec("CREATE TABLE other (x)");      /* a database, but without the table */
  ck_assert_int_eq(store_sqlite_open(&loop, path, &o, &s, err, sizeof err), -ENOENT);
  ck_assert_ptr_nonnull(strstr(err, "no outbox table in"));
  ck_assert_ptr_nonnull(strstr(err, "run: outboxd init --db"));
  ck_assert_int_eq(store_sqlite_open(&loop, path, &host, &s, err, sizeof err), 0);
  close_store(s); /* a dispatcher adds the tables an existing file lacks */
  ck_assert_int_eq(raw_int("SELECT count(*) FROM outbox"), 0);
}
END_TEST

START_TEST(round_trip) {
  store_t *s = open_as("h1", 1, 10, 30000, NULL);
  store_event_t *in =
      store_event_new(0, "orders", 6, "k1", 2, "{\"a\":1}", 7, "{\"h\":\"v\"}", 9, 0);
  ck_assert_int_eq(s->ops->enqueue(s, &in, 1), 0);
  store_event_free(in);
  store_event_t *out[10];
  ck_assert_int_eq(claim(s, 10, out), 1);
  store_event_t *ev = out[0];
  ck_assert_int_eq(ev->id, 1);
  ck_assert_str_eq(ev->topic, "orders");
  ck_assert_str_eq(ev->key, "k1");
  ck_assert_str_eq(ev->payload, "{\"a\":1}");
  ck_assert_uint_eq(ev->payload_len, 7);
  ck_assert_str_eq(ev->headers, "{\"h\":\"v\"}");
  ck_assert_int_eq(ev->attempts, 0);
  ck_assert_int_le(llabs(ev->created_at - now_ms()), 2000);
  char buf[64];
  raw_text("SELECT status || ' ' || locked_by FROM outbox", buf, sizeof buf);
  ck_assert_str_eq(buf, "processing h1");
  ck_assert_int_gt(raw_int("SELECT locked_until FROM outbox"), now_ms() + 20000);
  store_ack(s, ev);
  ck_assert_int_eq(store_flush(s), 0);
  ck_assert_int_eq(raw_int("SELECT count(*) FROM outbox"), 0);
  ck_assert_int_eq(claim(s, 10, out), 0);
  close_store(s);
}
END_TEST

START_TEST(keep_done) {
  store_opts_t o = opts_for("h1", 1, 10, 30000, NULL);
  o.keep_done_ms = -1;
  store_t *s = NULL;
  char err[256];
  init_db();
  ck_assert_int_eq(store_sqlite_open(&loop, path, &o, &s, err, sizeof err), 0);
  put(s, "t", NULL, "p");
  store_event_t *out[4];
  ck_assert_int_eq(claim(s, 4, out), 1);
  store_ack(s, out[0]);
  close_store(s); /* close flushes */
  char buf[64];
  raw_text("SELECT status || ' ' || attempts || ' ' || ifnull(locked_by, '-') FROM outbox", buf,
           sizeof buf);
  ck_assert_str_eq(buf, "done 1 -");
}
END_TEST

/* A new event to follow `ev` (outbox.enqueue in its handler), `delay_ms` from now. */
static void follow(store_event_t *ev, const char *topic, const char *payload, int64_t delay_ms) {
  store_event_t *f = store_event_new(0, topic, strlen(topic), "fk", 2, payload, strlen(payload),
                                     "{\"h\":\"1\"}", 9, 0);
  f->available_at = delay_ms ? now_ms() + delay_ms : 0;
  store_event_t **tail = &ev->follow;
  while (*tail) tail = &(*tail)->next;
  *tail = f;
}

/* Follow-ups are written in the transaction of their event's ack, in order; a
 * failed, dead or released event writes none. */
START_TEST(follow_ups_with_the_ack_only) {
  store_t *s = open_as("h1", 0, 10, 30000, NULL);
  put(s, "t", NULL, "ok");
  put(s, "t", NULL, "fails");
  put(s, "t", NULL, "dies");
  put(s, "t", NULL, "released");
  store_event_t *out[8];
  ck_assert_int_eq(claim(s, 8, out), 4);
  for (int i = 0; i < 4; i++) follow(out[i], "f", out[i]->payload, 0);
  follow(out[0], "f2", "second", 60000);
  store_ack(s, out[0]);
  store_fail(s, out[1], now_ms() + 60000, "no");
  store_dead(s, out[2], 1, "no");
  store_release(s, out[3]);
  ck_assert_int_eq(store_flush(s), 0);
  ck_assert_int_eq(raw_int("SELECT count(*) FROM outbox WHERE topic LIKE 'f%'"), 2);
  char buf[160];
  raw_text("SELECT group_concat(topic || ' ' || key || ' ' || payload || ' ' || headers || ' ' ||"
           " status || ' ' || (available_at > 0), ', ') FROM (SELECT * FROM outbox"
           " WHERE topic LIKE 'f%' ORDER BY id)",
           buf, sizeof buf);
  ck_assert_str_eq(buf, "f fk ok {\"h\":\"1\"} pending 0, f2 fk second {\"h\":\"1\"} pending 1");
  ck_assert_int_gt(raw_int("SELECT available_at FROM outbox WHERE topic = 'f2'"), now_ms() + 50000);
  close_store(s);
}
END_TEST

/* An ack fenced out (the lease was lost and another host took the event over)
 * writes none of its follow-ups; the new owner's ack writes its own. */
START_TEST(fenced_ack_writes_no_follow_ups) {
  store_t *s1 = open_as("h1", 1, 10, 1000, NULL);
  store_t *s2 = open_as("h2", 1, 10, 30000, NULL);
  put(s1, "t", NULL, "x");
  store_event_t *a[2], *b[2];
  ck_assert_int_eq(claim(s1, 2, a), 1);
  usleep(1100 * 1000); /* the loop does not run: no renewal */
  ck_assert_int_eq(claim(s2, 2, b), 1);
  follow(a[0], "late", "from h1", 0);
  store_ack(s1, a[0]);
  ck_assert_int_eq(store_flush(s1), 0);
  ck_assert_int_eq(raw_int("SELECT count(*) FROM outbox WHERE topic = 'late'"), 0);
  follow(b[0], "on.time", "from h2", 0);
  store_ack(s2, b[0]);
  ck_assert_int_eq(store_flush(s2), 0);
  ck_assert_int_eq(raw_int("SELECT count(*) FROM outbox WHERE topic = 'on.time'"), 1);
  ck_assert_int_eq(raw_int("SELECT count(*) FROM outbox"), 1);
  close_store(s1);
  close_store(s2);
}
END_TEST

/* Acks without follow-ups go out as one DELETE whose count tells whether any was
 * fenced out: the row another host took over stays, the one it settled stays gone,
 * the others are written. */
START_TEST(plain_acks_fenced_out_leave_the_other_hosts_rows) {
  store_t *s = open_as("h1", 1, 10, 30000, NULL);
  for (int i = 0; i < 3; i++) put(s, "t", NULL, "x");
  store_event_t *out[3];
  ck_assert_int_eq(claim(s, 3, out), 3);
  char sql[96];
  snprintf(sql, sizeof sql, "UPDATE outbox SET locked_by = 'h2' WHERE id = %" PRId64, out[0]->id);
  raw_exec(sql);
  snprintf(sql, sizeof sql, "DELETE FROM outbox WHERE id = %" PRId64, out[1]->id);
  raw_exec(sql);
  int64_t taken = out[0]->id;
  for (int i = 0; i < 3; i++) store_ack(s, out[i]);
  ck_assert_int_eq(store_flush(s), 0);
  ck_assert_int_eq(raw_int("SELECT count(*) FROM outbox"), 1);
  snprintf(sql, sizeof sql, "SELECT count(*) FROM outbox WHERE id = %" PRId64
           " AND locked_by = 'h2' AND status = 'processing'", taken);
  ck_assert_int_eq(raw_int(sql), 1);
  close_store(s);
}
END_TEST

/* A commit that fails (the database is locked) writes neither the ack nor its
 * follow-ups; both go in the retry. */
START_TEST(follow_ups_roll_back_with_the_ack) {
  store_t *s = open_as("h1", 0, 10, 30000, NULL);
  put(s, "t", NULL, "x");
  store_event_t *out[2];
  ck_assert_int_eq(claim(s, 2, out), 1);
  follow(out[0], "f", "y", 0);
  sqlite3 *db = raw();
  ck_assert_int_eq(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
  store_ack(s, out[0]);
  ck_assert_int_eq(store_flush(s), -EAGAIN);
  ck_assert_int_eq(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);
  ck_assert_int_eq(raw_int("SELECT count(*) FROM outbox WHERE topic = 'f'"), 0);
  ck_assert_int_eq(raw_int("SELECT count(*) FROM outbox WHERE topic = 't'"), 1);
  ck_assert_int_eq(store_flush(s), 0);
  ck_assert_int_eq(raw_int("SELECT count(*) FROM outbox WHERE topic = 'f'"), 1);
  ck_assert_int_eq(raw_int("SELECT count(*) FROM outbox WHERE topic = 't'"), 0);
  close_store(s);
}
END_TEST

/* store_push: events tied to no settlement, written within a flush; the runaway
 * salvage writes buffered acks with their follow-ups and pushed events too. */
START_TEST(pushed_and_salvaged) {
  store_t *s = open_as("h1", 0, 10, 30000, NULL);
  store_event_t *e = store_event_new(0, "pushed", 6, NULL, 0, "p", 1, NULL, 0, 0);
  store_push(s, e);
  ck_assert_int_eq(store_flush(s), 0);
  ck_assert_int_eq(raw_int("SELECT count(*) FROM outbox WHERE topic = 'pushed'"), 1);
  put(s, "t", NULL, "a");
  put(s, "t", NULL, "b");
  store_event_t *out[4];
  ck_assert_int_eq(claim(s, 4, out), 3);
  for (int i = 0; i < 3; i++)
    if (strcmp(out[i]->topic, "t") != 0) store_ack(s, out[i]); /* the pushed event */
  int a = strcmp(out[1]->topic, "t") == 0 ? 1 : 0;
  follow(out[a], "f", "from a", 0);
  store_ack(s, out[a]); /* buffered, not flushed */
  store_push(s, store_event_new(0, "pushed2", 7, NULL, 0, "q", 1, NULL, 0, 0));
  char err[256];
  int64_t other = out[a + 1]->id;
  ck_assert_int_eq(s->ops->salvage(s, other, "runaway: test", err, sizeof err), 0);
  store_event_free(out[a + 1]);
  ck_assert_int_eq(raw_int("SELECT count(*) FROM outbox WHERE topic = 'f'"), 1);
  ck_assert_int_eq(raw_int("SELECT count(*) FROM outbox WHERE topic = 'pushed2'"), 1);
  ck_assert_int_eq(raw_int("SELECT count(*) FROM outbox WHERE status = 'dead'"), 1);
  close_store(s);
}
END_TEST

/* Retention: done and dead rows older than their retention are deleted in batches
 * with the loop free between them; newer ones and live rows stay. An ack or a
 * dead-letter stamps available_at with the time it settled. */
START_TEST(retention_deletes_old_rows_only) {
  init_db();
  int64_t now = now_ms();
  char sql[512];
  snprintf(
      sql, sizeof sql,
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)"
      " INSERT INTO outbox (topic, payload, status, available_at) SELECT 'old', i, 'done', %lld"
      " FROM n",
      (long long)(now - 7200000));
  raw_exec(sql);
  snprintf(
      sql, sizeof sql,
      "INSERT INTO outbox (topic, payload, status, available_at) VALUES"
      " ('new', 'd', 'done', %lld), ('olddead', 'x', 'dead', %lld), ('newdead', 'y', 'dead', %lld),"
      " ('live', 'p', 'pending', 0)",
      (long long)(now - 60000), (long long)(now - 3 * 86400000LL), (long long)(now - 3600000));
  raw_exec(sql);
  store_opts_t o = opts_for("h1", 1, 10, 30000, NULL);
  o.keep_done_ms = 3600000;  /* 1 h */
  o.keep_dead_ms = 86400000; /* 1 d */
  store_t *s = NULL;
  char err[256];
  ck_assert_int_eq(store_sqlite_open(&loop, path, &o, &s, err, sizeof err), 0);
  for (int i = 0;
       i < 200 && raw_int("SELECT count(*) FROM outbox WHERE topic IN ('old', 'olddead')"); i++)
    run_for(50);
  ck_assert_int_eq(raw_int("SELECT count(*) FROM outbox WHERE topic IN ('old', 'olddead')"), 0);
  char buf[96];
  raw_text("SELECT group_concat(topic, ' ') FROM (SELECT topic FROM outbox ORDER BY id)", buf,
           sizeof buf);
  ck_assert_str_eq(buf, "new newdead live");
  store_event_t *out[2];
  ck_assert_int_eq(claim(s, 2, out), 1);
  store_ack(s, out[0]);
  ck_assert_int_eq(store_flush(s), 0);
  ck_assert_int_le(
      llabs(raw_int("SELECT available_at FROM outbox WHERE topic = 'live'") - now_ms()), 5000);
  close_store(s);
}
END_TEST

START_TEST(claim_honours_max) {
  store_t *s = open_as("h1", 1, 10, 30000, NULL);
  for (int i = 0; i < 10; i++) put(s, "t", NULL, "p");
  store_event_t *out[10];
  ck_assert_int_eq(claim(s, 4, out), 4);
  for (int i = 0; i < 4; i++) {
    ck_assert_int_eq(out[i]->id, i + 1);
    store_release(s, out[i]);
  }
  ck_assert_int_eq(claim(s, 10, out), 10); /* the release was flushed by the claim */
  for (int i = 0; i < 10; i++) store_ack(s, out[i]);
  close_store(s);
  ck_assert_int_eq(raw_int("SELECT count(*) FROM outbox"), 0);
}
END_TEST

/* A key's head comes with the due events behind it (a run) while the batch has room;
 * a key with a live event is not claimable again until it settles. */
START_TEST(key_heads_and_runs) {
  store_t *s = open_as("h1", 1, 10, 30000, NULL);
  put(s, "t", "A", "A1");  /* 1 */
  put(s, "t", "A", "A2");  /* 2 */
  put(s, "t", "A", "A3");  /* 3 */
  put(s, "t", "B", "B1");  /* 4 */
  put(s, "t", NULL, "N1"); /* 5 */
  put(s, "t", NULL, "N2"); /* 6 */
  store_event_t *out[10], *more[10];
  /* no room for runs: heads and keyless rows, oldest first */
  ck_assert_int_eq(claim(s, 3, out), 3);
  ck_assert_str_eq(out[0]->payload, "A1");
  ck_assert_str_eq(out[1]->payload, "B1");
  ck_assert_str_eq(out[2]->payload, "N1");
  ck_assert_int_eq(claim(s, 10, more), 1); /* A and B are out */
  ck_assert_str_eq(more[0]->payload, "N2");
  store_release(s, more[0]);
  for (int i = 0; i < 3; i++) store_release(s, out[i]);
  /* room: A's run comes whole, in id order */
  ck_assert_int_eq(claim(s, 10, out), 6);
  for (int i = 0; i < 6; i++) ck_assert_int_eq(out[i]->id, i + 1);
  ck_assert_int_eq(claim(s, 10, more), 0);
  for (int i = 0; i < 6; i++) store_ack(s, out[i]);
  close_store(s);
  ck_assert_int_eq(raw_int("SELECT count(*) FROM outbox"), 0);
}
END_TEST

/* A run stops at the first event not yet due; the budget is shared between keys. */
START_TEST(runs_stop_at_a_delay_and_share_the_batch) {
  store_t *s = open_as("h1", 1, 10, 30000, NULL);
  for (int i = 0; i < 6; i++) put(s, "t", "A", "A");               /* 1..6 */
  for (int i = 0; i < 6; i++) put(s, "t", "B", "B");               /* 7..12 */
  raw_exec("UPDATE outbox SET available_at = 9e15 WHERE id = 10"); /* B4 scheduled later */
  store_event_t *out[10], *more[10];
  ck_assert_int_eq(claim(s, 6, out), 6); /* A1..A3, B1..B3 */
  const int64_t want[] = {1, 2, 3, 7, 8, 9};
  for (int i = 0; i < 6; i++) ck_assert_int_eq(out[i]->id, want[i]);
  ck_assert_int_eq(claim(s, 10, more), 0);
  for (int i = 0; i < 6; i++) store_ack(s, out[i]);
  ck_assert_int_eq(claim(s, 10, out), 3); /* A4..A6; B4 holds B back */
  ck_assert_int_eq(out[0]->id, 4);
  ck_assert_int_eq(out[2]->id, 6);
  for (int i = 0; i < 3; i++) store_ack(s, out[i]);
  ck_assert_int_eq(claim(s, 10, out), 0);
  close_store(s);
}
END_TEST

/* Claims visit keys from where the last one stopped: with more claimable keys than
 * the batch, every key gets its turn. */
/* Nine keys k0..k8 (topic `a` for odd, `b` for even ones), claimed three at a time
 * three times: each key comes once. */
static void keys_take_turns(store_t *s, const char *a, const char *b) {
  char key[16];
  for (int i = 0; i < 9; i++) {
    snprintf(key, sizeof key, "k%d", i);
    put(s, i % 2 ? a : b, key, key);
  }
  store_event_t *out[4];
  int seen[9] = {0};
  for (int round = 0; round < 3; round++) {
    ck_assert_int_eq(claim(s, 3, out), 3);
    for (int i = 0; i < 3; i++) {
      seen[out[i]->payload[1] - '0']++;
      store_release(s, out[i]);
    }
  }
  for (int i = 0; i < 9; i++) ck_assert_int_eq(seen[i], 1);
}

START_TEST(key_scan_takes_turns) {
  store_t *s = open_as("h1", 1, 10, 30000, NULL);
  keys_take_turns(s, "t", "t");
  close_store(s);
}
END_TEST

/* The LIMIT applies after the head rule: a busy key cannot starve the others. */
START_TEST(busy_key_does_not_starve) {
  store_t *s = open_as("h1", 1, 10, 30000, NULL);
  for (int i = 0; i < 20; i++) put(s, "t", "A", "A");
  put(s, "t", "B", "B1");
  store_event_t *out[2];
  ck_assert_int_eq(claim(s, 2, out), 2);
  ck_assert_str_eq(out[0]->payload, "A");
  ck_assert_str_eq(out[1]->payload, "B1");
  store_release(s, out[0]);
  store_release(s, out[1]);
  close_store(s);
}
END_TEST

/* Sets the topics a store claims from a comma-separated pattern list. */
static void claim_only(store_t *s, const char *patterns) {
  topics_t t = {0};
  char err[128];
  ck_assert_int_eq(topics_parse(&t, patterns, err, sizeof err), 0);
  ck_assert_int_eq(store_set_topics(s, &t), 0);
  topics_free(&t);
}

/* Claims by topic: only claimable topics come, keyless ones per topic in id order;
 * a key whose head is of another topic is passed over with all its later events;
 * once that head is settled the key goes on. Runs stop at an unclaimed topic. */
START_TEST(claims_by_topic_keep_key_order) {
  store_t *s = open_as("h1", 1, 10, 30000, NULL);
  put(s, "order.a", NULL, "O1"); /* 1 */
  put(s, "user.x", NULL, "U1");  /* 2 */
  put(s, "order.b", NULL, "O2"); /* 3 */
  put(s, "user.x", "K", "UK1");  /* 4: K's head, another topic */
  put(s, "order.a", "K", "OK2"); /* 5 */
  put(s, "order.a", "J", "OJ1"); /* 6 */
  put(s, "order.a", "J", "OJ2"); /* 7 */
  put(s, "user.x", "J", "UJ3");  /* 8: ends J's run here */
  put(s, "order.a", "J", "OJ4"); /* 9 */
  put(s, "orders", NULL, "X");   /* 10: not order.* */
  claim_only(s, "order.*");
  store_event_t *out[10], *more[10];
  ck_assert_int_eq(claim(s, 10, out), 4);
  const int64_t want[] = {1, 3, 6, 7};
  for (int i = 0; i < 4; i++) ck_assert_int_eq(out[i]->id, want[i]);
  ck_assert_int_eq(claim(s, 10, more), 0);
  for (int i = 0; i < 4; i++) store_ack(s, out[i]);
  ck_assert_int_eq(claim(s, 10, out), 0); /* K and J wait behind user.x events */
  /* another host, handling user.*, settles K's and J's heads */
  store_t *u = open_as("h2", 1, 10, 30000, NULL);
  claim_only(u, "user.x");
  ck_assert_int_eq(claim(u, 10, more), 3); /* U1, UK1, UJ3 */
  ck_assert_int_eq(more[0]->id, 2);
  ck_assert_int_eq(more[1]->id, 4);
  ck_assert_int_eq(more[2]->id, 8);
  for (int i = 0; i < 3; i++) store_ack(u, more[i]);
  close_store(u);
  ck_assert_int_eq(claim(s, 10, out), 2); /* OK2, OJ4 */
  ck_assert_int_eq(out[0]->id, 5);
  ck_assert_int_eq(out[1]->id, 9);
  for (int i = 0; i < 2; i++) store_ack(s, out[i]);
  ck_assert_int_eq(raw_int("SELECT count(*) FROM outbox WHERE status = 'pending'"), 1);
  ck_assert_int_eq(raw_int("SELECT attempts FROM outbox WHERE id = 10"), 0);
  close_store(s);
}
END_TEST

/* Claims by topic read keyless rows as the unfiltered claim does: those due at once
 * in id order, then those whose time has come, earliest due first; never one still
 * ahead. */
START_TEST(claims_by_topic_take_scheduled_rows_by_due_time) {
  store_t *s = open_as("h1", 1, 10, 30000, NULL);
  char sql[320];
  int64_t now = now_ms();
  snprintf(sql, sizeof sql,
           "INSERT INTO outbox (topic, payload, available_at) VALUES"
           " ('order.a', 'ahead', %" PRId64 "), ('order.a', 'due 2 s ago', %" PRId64 "),"
           " ('order.a', 'at once', 0), ('order.a', 'due 5 s ago', %" PRId64 "),"
           " ('user.x', 'not claimed', 0)",
           now + 3600000, now - 2000, now - 5000);
  raw_exec(sql);
  claim_only(s, "order.*");
  store_event_t *out[4];
  ck_assert_int_eq(claim(s, 2, out), 2);
  ck_assert_str_eq(out[0]->payload, "at once");
  ck_assert_str_eq(out[1]->payload, "due 5 s ago");
  for (int i = 0; i < 2; i++) store_ack(s, out[i]);
  ck_assert_int_eq(claim(s, 4, out), 1);
  ck_assert_str_eq(out[0]->payload, "due 2 s ago");
  store_ack(s, out[0]);
  ck_assert_int_eq(claim(s, 4, out), 0);
  ck_assert_int_eq(raw_int("SELECT count(*) FROM outbox WHERE status = 'pending'"), 2);
  close_store(s);
}
END_TEST

/* A paused pattern (outbox_paused) is taken out of what a host claims, whatever it
 * handles; resuming brings it back. The key scan by topic takes turns, too. */
START_TEST(claims_by_topic_pause_and_turns) {
  store_t *s = open_as("h1", 1, 10, 30000, NULL);
  claim_only(s, "a.*,b.*");
  keys_take_turns(s, "a.x", "b.x");
  put(s, "c", NULL, "C");
  int changed = 0;
  ck_assert_int_eq(s->ops->pause(s, "b.*", 1, &changed), 0);
  ck_assert_int_eq(changed, 1);
  ck_assert_int_eq(s->npaused, 1);
  store_event_t *all[10];
  ck_assert_int_eq(claim(s, 10, all), 4); /* a.x only */
  for (int i = 0; i < 4; i++) {
    ck_assert_str_eq(all[i]->topic, "a.x");
    store_release(s, all[i]);
  }
  /* a catch-all host is held back by the pause too */
  ck_assert_int_eq(store_set_topics(s, NULL), 0);
  ck_assert_int_eq(claim(s, 10, all), 5); /* a.x and c */
  for (int i = 0; i < 5; i++) store_release(s, all[i]);
  raw_exec("DELETE FROM outbox_paused"); /* resume, as another process would */
  ck_assert_int_eq(claim(s, 10, all), 10);
  ck_assert_int_eq(s->npaused, 0);
  for (int i = 0; i < 10; i++) store_release(s, all[i]);
  close_store(s);
}
END_TEST

START_TEST(failed_event_blocks_its_key) {
  store_t *s = open_as("h1", 1, 10, 30000, NULL);
  put(s, "t", "A", "A1");
  put(s, "t", "A", "A2");
  put(s, "t", "B", "B1");
  store_event_t *out[10];
  ck_assert_int_eq(claim(s, 10, out), 3); /* A1 A2 (a run) B1 */
  int64_t due = now_ms() + 60000;
  store_fail(s, out[0], due, "boom");
  store_release(s, out[1]); /* what the dispatcher does with the rest of the run */
  store_ack(s, out[2]);
  ck_assert_int_eq(claim(s, 10, out), 0); /* A2 waits behind A1 */
  char buf[128];
  raw_text("SELECT status || ' ' || attempts || ' ' || last_error || ' ' ||"
           " ifnull(locked_by, '-') || ' ' || ifnull(locked_until, '-') FROM outbox WHERE id = 1",
           buf, sizeof buf);
  ck_assert_str_eq(buf, "pending 1 boom - -");
  ck_assert_int_eq(raw_int("SELECT available_at FROM outbox WHERE id = 1"), due);
  ck_assert_int_eq(raw_int("SELECT attempts FROM outbox WHERE id = 2"), 0);
  close_store(s);

  s = open_as("h1", 0, 10, 30000, NULL); /* --ordering none */
  ck_assert_int_eq(claim(s, 10, out), 1);
  ck_assert_str_eq(out[0]->payload, "A2");
  store_ack(s, out[0]);
  close_store(s);
}
END_TEST

START_TEST(retry_comes_due) {
  wakes_t w = {.stop_after = 1};
  store_t *s = open_as("h1", 1, 10, 30000, &w);
  put(s, "t", "A", "A1");
  store_event_t *out[4];
  ck_assert_int_eq(claim(s, 4, out), 1);
  int64_t due = now_ms() + 1000;
  store_fail(s, out[0], due, "later");
  ck_assert_int_eq(store_flush(s), 0);
  run_for(10000); /* the flush itself wakes (a head settled); stops at the wake */
  ck_assert_int_eq(w.n, 1);
  ck_assert_int_eq(claim(s, 4, out), 0); /* not due yet */
  w.stop_after = 2;
  run_for(10000);
  ck_assert_int_eq(w.n, 2);
  ck_assert_int_ge(w.at[1], due - 5);    /* ms rounding between clocks */
  ck_assert_int_lt(w.at[1], due + 8000); /* the poll is 30 s: this wake is the due timer */
  ck_assert_int_eq(claim(s, 4, out), 1);
  ck_assert_int_eq(out[0]->attempts, 1);
  store_ack(s, out[0]);
  close_store(s);
}
END_TEST

START_TEST(release_uses_no_attempt) {
  store_t *s = open_as("h1", 1, 10, 30000, NULL);
  put(s, "t", "A", "A1");
  store_event_t *out[4];
  ck_assert_int_eq(claim(s, 4, out), 1);
  store_release(s, out[0]);
  ck_assert_int_eq(store_flush(s), 0);
  char buf[64];
  raw_text("SELECT status || ' ' || attempts || ' ' || ifnull(locked_by, '-') FROM outbox", buf,
           sizeof buf);
  ck_assert_str_eq(buf, "pending 0 -");
  ck_assert_int_eq(claim(s, 4, out), 1);
  ck_assert_int_eq(out[0]->attempts, 0);
  store_release(s, out[0]);
  close_store(s);
}
END_TEST

typedef struct dead_list {
  int n;
  int64_t id[8];
  char err[8][32];
} dead_list_t;

static void on_dead_row(void *arg, int64_t id, const char *topic, int attempts,
                        const char *last_error) {
  dead_list_t *d = arg;
  d->id[d->n] = id;
  snprintf(d->err[d->n], sizeof d->err[0], "%s/%d/%s", topic, attempts,
           last_error ? last_error : "-");
  d->n++;
}

START_TEST(dead_and_requeue) {
  store_t *s = open_as("h1", 1, 10, 30000, NULL);
  put(s, "t", "A", "A1");
  put(s, "t", "A", "A2");
  put(s, "t", NULL, "N1");
  store_event_t *out[4];
  ck_assert_int_eq(claim(s, 2, out), 2); /* heads only: A1, N1 */
  store_dead(s, out[0], 1, "poison");
  store_dead(s, out[1], 0, "rejected");
  ck_assert_int_eq(claim(s, 4, out), 1); /* a dead head no longer blocks A2 */
  ck_assert_str_eq(out[0]->payload, "A2");
  store_dead(s, out[0], 1, "again");
  ck_assert_int_eq(store_flush(s), 0);
  dead_list_t d = {0};
  ck_assert_int_eq(s->ops->list_dead(s, 5, on_dead_row, &d), 0);
  ck_assert_int_eq(d.n, 3);
  ck_assert_int_eq(d.id[0], 3); /* newest first */
  ck_assert_str_eq(d.err[0], "t/0/rejected");
  ck_assert_int_eq(d.id[1], 2);
  ck_assert_str_eq(d.err[1], "t/1/again");
  ck_assert_int_eq(d.id[2], 1);
  ck_assert_str_eq(d.err[2], "t/1/poison");

  int64_t ids[] = {1, 999}, moved = -1;
  ck_assert_int_eq(s->ops->requeue(s, ids, 2, NULL, &moved), 0);
  ck_assert_int_eq(moved, 1);
  char buf[64];
  raw_text("SELECT status || ' ' || attempts || ' ' || available_at || ' ' || last_error"
           " FROM outbox WHERE id = 1",
           buf, sizeof buf);
  ck_assert_str_eq(buf, "pending 0 0 poison");
  ck_assert_int_eq(s->ops->requeue(s, NULL, 0, NULL, &moved), 0);
  ck_assert_int_eq(moved, 2);
  ck_assert_int_eq(raw_int("SELECT count(*) FROM outbox WHERE status = 'pending'"), 3);
  ck_assert_int_eq(claim(s, 2, out), 2); /* A1 (head of A) and N1 */
  int64_t live = out[0]->id;
  ck_assert_int_eq(s->ops->requeue(s, &live, 1, NULL, &moved), 0);
  ck_assert_int_eq(moved, 0); /* a claimed event is not taken from its host */
  store_release(s, out[0]);
  store_release(s, out[1]);
  close_store(s);
}
END_TEST

START_TEST(expired_lease_and_fencing) {
  /* a 1 s lease: live for the next claim however loaded the machine is */
  store_t *s1 = open_as("h1", 1, 10, 1000, NULL);
  store_t *s2 = open_as("h2", 1, 10, 30000, NULL);
  put(s1, "t", "A", "A1");
  put(s1, "t", "A", "A2");
  store_event_t *a[4], *b[4];
  ck_assert_int_eq(claim(s1, 1, a), 1);
  ck_assert_int_eq(claim(s2, 4, b), 0); /* lease live, key A held */
  usleep(1100 * 1000);                  /* the loop does not run: no renewal */
  ck_assert_int_eq(claim(s2, 4, b), 1); /* taken over alone, no run behind it */
  ck_assert_int_eq(b[0]->id, a[0]->id);
  ck_assert_int_eq(b[0]->attempts, 1); /* the stopped run counts */
  ck_assert_int_eq(b[0]->lapsed, STORE_LAPSED);
  store_ack(s1, a[0]); /* the first host finishes late */
  ck_assert_int_eq(store_flush(s1), 0);
  char buf[96];
  raw_text("SELECT status || ' ' || locked_by || ' ' || last_error FROM outbox WHERE id = 1", buf,
           sizeof buf);
  ck_assert_str_eq(buf, "processing h2 " STORE_LAPSE_ERROR " (attempt 1)");
  store_fail(s1, store_event_new(1, "t", 1, NULL, 0, "x", 1, NULL, 0, 0), 0, "late");
  store_dead(s1, store_event_new(1, "t", 1, NULL, 0, "x", 1, NULL, 0, 0), 1, "late");
  store_release(s1, store_event_new(1, "t", 1, NULL, 0, "x", 1, NULL, 0, 0));
  ck_assert_int_eq(store_flush(s1), 0);
  raw_text("SELECT status || ' ' || locked_by || ' ' || attempts FROM outbox WHERE id = 1", buf,
           sizeof buf);
  ck_assert_str_eq(buf, "processing h2 1");
  store_ack(s2, b[0]);
  ck_assert_int_eq(store_flush(s2), 0);
  ck_assert_int_eq(raw_int("SELECT count(*) FROM outbox WHERE id = 1"), 0);
  close_store(s1);
  close_store(s2);
}
END_TEST

/* An event whose host stopped twice in a row is a suspect: handed out alone, while
 * other events wait for the next claim. */
START_TEST(suspect_comes_alone) {
  store_t *s1 = open_as("h1", 0, 10, 30, NULL);
  store_t *s2 = open_as("h2", 0, 10, 30, NULL);
  store_t *s3 = open_as("h3", 0, 10, 30000, NULL);
  for (int i = 0; i < 4; i++) put(s1, "t", NULL, "N");
  store_event_t *a[4], *b[4], *c[4];
  ck_assert_int_eq(claim(s1, 2, a), 2); /* 1, 2: h1 stops */
  usleep(50 * 1000);
  ck_assert_int_eq(claim(s2, 1, b), 1); /* 1 again: h2 stops too */
  ck_assert_int_eq(b[0]->lapsed, STORE_LAPSED);
  usleep(50 * 1000);
  ck_assert_int_eq(claim(s3, 4, c), 1); /* 1 alone */
  ck_assert_int_eq(c[0]->id, 1);
  ck_assert_int_eq(c[0]->lapsed, STORE_SUSPECT);
  ck_assert_int_eq(c[0]->attempts, 2);
  store_ack(s3, c[0]);
  ck_assert_int_eq(claim(s3, 4, c), 3); /* 2 (lapsed once), 3, 4 */
  ck_assert_int_eq(c[0]->lapsed, STORE_LAPSED);
  ck_assert_int_eq(c[0]->attempts, 1);
  ck_assert_int_eq(c[1]->lapsed, 0);
  ck_assert_int_eq(c[1]->attempts, 0);
  for (int i = 0; i < 3; i++) store_ack(s3, c[i]);
  ck_assert_int_eq(store_flush(s3), 0);
  ck_assert_int_eq(raw_int("SELECT count(*) FROM outbox"), 0);
  for (int i = 0; i < 2; i++) store_event_free(a[i]); /* h1 and h2 are gone */
  store_event_free(b[0]);
  close_store(s1);
  close_store(s2);
  close_store(s3);
}
END_TEST

/* A database made by an earlier version (its key index covered keyless rows) is
 * brought up to date by opening it to dispatch, and its events keep their order. */
START_TEST(old_schema_migrated) {
  raw_exec("CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,"
           " key TEXT, payload TEXT NOT NULL, headers TEXT, created_at INTEGER NOT NULL DEFAULT"
           " (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),"
           " available_at INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,"
           " status TEXT NOT NULL DEFAULT 'pending', locked_by TEXT, locked_until INTEGER,"
           " last_error TEXT);"
           "CREATE INDEX outbox_claim ON outbox(status, id, available_at);"
           "CREATE INDEX outbox_topic_free ON outbox(topic, id, available_at)"
           " WHERE key IS NULL AND status = 'pending';"
           "CREATE INDEX outbox_key_head ON outbox(key, id)"
           " WHERE status IN ('pending','processing');"
           "INSERT INTO outbox (topic, key, payload) VALUES ('t', 'A', 'A1'), ('t', 'A', 'A2'),"
           " ('t', NULL, 'N1');");
  store_t *s = open_as("h1", 1, 10, 30000, NULL);
  char buf[160];
  raw_text("SELECT sql FROM sqlite_master WHERE name = 'outbox_key_head'", buf, sizeof buf);
  ck_assert_ptr_nonnull(strstr(buf, "key IS NOT NULL"));
  ck_assert_int_eq(raw_int("SELECT count(*) FROM sqlite_master WHERE name = 'outbox_keyless'"), 1);
  ck_assert_int_eq(raw_int("SELECT count(*) FROM sqlite_master WHERE name = 'outbox_taken'"), 1);
  ck_assert_int_eq(raw_int("SELECT count(*) FROM sqlite_master WHERE name = 'outbox_claim'"), 0);
  raw_text("SELECT sql FROM sqlite_master WHERE name = 'outbox_topic_free'", buf, sizeof buf);
  ck_assert_ptr_nonnull(strstr(buf, "(topic, available_at)"));
  store_event_t *out[4];
  ck_assert_int_eq(claim(s, 4, out), 3);
  ck_assert_str_eq(out[0]->payload, "A1");
  ck_assert_str_eq(out[1]->payload, "A2");
  ck_assert_str_eq(out[2]->payload, "N1");
  for (int i = 0; i < 3; i++) store_ack(s, out[i]);
  close_store(s);
  ck_assert_int_eq(raw_int("SELECT count(*) FROM outbox"), 0);
}
END_TEST

START_TEST(lease_renewed_while_out) {
  /* renewals every lease / 3: a 1.5 s lease holds over a loop stalled for 1 s */
  store_t *s1 = open_as("h1", 1, 10, 1500, NULL);
  store_t *s2 = open_as("h2", 1, 10, 30000, NULL);
  put(s1, "t", NULL, "N1");
  store_event_t *a[4], *b[4];
  ck_assert_int_eq(claim(s1, 4, a), 1);
  run_for(2500); /* past the first lease: only renewals keep it */
  ck_assert_int_eq(claim(s2, 4, b), 0);
  ck_assert_int_gt(raw_int("SELECT locked_until FROM outbox"), now_ms());
  store_ack(s1, a[0]);
  close_store(s1);
  close_store(s2);
  ck_assert_int_eq(raw_int("SELECT count(*) FROM outbox"), 0);
}
END_TEST

START_TEST(counts) {
  store_t *s = open_as("h1", 1, 10, 30000, NULL);
  store_counts_t c;
  ck_assert_int_eq(store_counts(s, &c), 0);
  ck_assert_int_eq(c.pending + c.processing + c.done + c.dead + c.oldest_pending_age_ms, 0);
  for (int i = 0; i < 4; i++) put(s, "t", NULL, "p");
  raw_exec("INSERT INTO outbox (topic, payload, status) VALUES ('t', 'p', 'done')");
  store_event_t *out[4];
  ck_assert_int_eq(claim(s, 2, out), 2);
  store_dead(s, out[0], 1, "x");
  ck_assert_int_eq(store_flush(s), 0);
  raw_exec("UPDATE outbox SET created_at = created_at - 5000 WHERE id = 3");
  ck_assert_int_eq(store_counts(s, &c), 0);
  ck_assert_int_eq(c.pending, 2);
  ck_assert_int_eq(c.processing, 1);
  ck_assert_int_eq(c.done, 1);
  ck_assert_int_eq(c.dead, 1);
  ck_assert_int_ge(c.oldest_pending_age_ms, 5000);
  ck_assert_int_lt(c.oldest_pending_age_ms, 7000);
  store_release(s, out[1]);
  close_store(s);
}
END_TEST

typedef struct writer {
  uv_timer_t t;
  int64_t at;
} writer_t;

static void on_write(uv_timer_t *t) {
  writer_t *w = (writer_t *)t;
  w->at = now_ms();
  raw_exec("INSERT INTO outbox (topic, payload) VALUES ('t', 'from elsewhere')");
}

START_TEST(wake_on_foreign_commit) {
  wakes_t w = {.stop_after = 1};
  store_t *s = open_as("h1", 1, 10, 30000, &w);
  put(s, "t", NULL, "mine"); /* our own commit wakes nobody */
  run_for(150);
  ck_assert_int_eq(w.n, 0);
  writer_t wr = {0};
  uv_timer_init(&loop, &wr.t);
  uv_timer_start(&wr.t, on_write, 20, 0);
  run_for(10000);
  ck_assert_int_eq(w.n, 1);
  /* the poll is 30 s: a wake inside the 10 s window came from the WAL watcher */
  ck_assert_int_lt(w.at[0] - wr.at, 10000);
  uv_close((uv_handle_t *)&wr.t, NULL);
  store_event_t *out[4];
  ck_assert_int_eq(claim(s, 4, out), 2);
  store_ack(s, out[0]);
  store_ack(s, out[1]);
  close_store(s);
}
END_TEST

START_TEST(poll_fallback) {
  wakes_t w = {.stop_after = 2};
  store_opts_t o = opts_for("h1", 1, 10, 30000, &w);
  o.poll_ms = 40;
  store_t *s = NULL;
  char err[256];
  init_db();
  ck_assert_int_eq(store_sqlite_open(&loop, path, &o, &s, err, sizeof err), 0);
  run_for(10000);
  ck_assert_int_eq(w.n, 2); /* two polls, no writer: only the poll timer wakes */
  close_store(s);
}
END_TEST

START_TEST(busy_database_is_retried) {
  wakes_t w = {.stop_after = 1};
  store_t *s = open_as("h1", 1, 10, 30000, &w);
  put(s, "t", NULL, "p");
  sqlite3 *db = raw();
  ck_assert_int_eq(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
  store_event_t *out[4];
  int n = -1;
  int64_t t0 = now_ms();
  ck_assert_int_eq(store_claim(s, 4, out, &n), -EAGAIN);
  ck_assert_int_eq(n, 0);
  ck_assert_int_lt(now_ms() - t0, 3000); /* not held for the 5 s busy timeout */
  ck_assert_int_eq(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(db);
  run_for(10000); /* a retry wake-up follows (the run stops at it) */
  ck_assert_int_eq(w.n, 1);
  ck_assert_int_eq(claim(s, 4, out), 1);
  store_ack(s, out[0]);
  close_store(s);
}
END_TEST

START_TEST(not_a_database) {
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  for (int i = 0; i < 200; i++) fputs("this is not a database at all\n", f);
  fclose(f);
  char err[256] = "";
  store_opts_t o = opts_for("h1", 1, 10, 30000, NULL);
  store_t *s = NULL;
  ck_assert_int_eq(store_sqlite_open(&loop, path, &o, &s, err, sizeof err), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, path));
  ck_assert_ptr_nonnull(strstr(err, "file is not a database"));
  ck_assert_ptr_null(strchr(err, '\n'));
  err[0] = 0;
  ck_assert_int_eq(store_sqlite_init_schema(path, err, sizeof err), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "file is not a database"));
}
END_TEST

START_TEST(unwritable_paths) {
  char bad[192], err[256] = "";
  snprintf(bad, sizeof bad, "%s/missing/outbox.db", dir);
  ck_assert_int_eq(store_sqlite_init_schema(bad, err, sizeof err), -ENOENT);
  ck_assert_ptr_nonnull(strstr(err, bad));
  ck_assert_ptr_nonnull(strstr(err, "No such file or directory"));

  snprintf(bad, sizeof bad, "%s/file", dir);
  FILE *f = fopen(bad, "w");
  fclose(f);
  strcat(bad, "/outbox.db");
  store_opts_t o = opts_for("h1", 1, 10, 30000, NULL);
  store_t *s = NULL;
  ck_assert_int_eq(store_sqlite_open(&loop, bad, &o, &s, err, sizeof err), -ENOTDIR);
  ck_assert_ptr_nonnull(strstr(err, "is not a directory"));

  if (geteuid() != 0) { /* root writes anywhere */
    snprintf(bad, sizeof bad, "%s/ro", dir);
    ck_assert_int_eq(mkdir(bad, 0500), 0);
    strcat(bad, "/outbox.db");
    ck_assert_int_eq(store_sqlite_init_schema(bad, err, sizeof err), -EACCES);
    ck_assert_ptr_nonnull(strstr(err, "Permission denied"));
  }
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("store_sqlite");
  TCase *tc = tcase_create("store_sqlite");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, schema_created);
  tcase_add_test(tc, only_init_creates_the_file);
  tcase_add_test(tc, round_trip);
  tcase_add_test(tc, keep_done);
  tcase_add_test(tc, retention_deletes_old_rows_only);
  tcase_add_test(tc, follow_ups_with_the_ack_only);
  tcase_add_test(tc, fenced_ack_writes_no_follow_ups);
  tcase_add_test(tc, plain_acks_fenced_out_leave_the_other_hosts_rows);
  tcase_add_test(tc, follow_ups_roll_back_with_the_ack);
  tcase_add_test(tc, pushed_and_salvaged);
  tcase_add_test(tc, claim_honours_max);
  tcase_add_test(tc, key_heads_and_runs);
  tcase_add_test(tc, runs_stop_at_a_delay_and_share_the_batch);
  tcase_add_test(tc, key_scan_takes_turns);
  tcase_add_test(tc, busy_key_does_not_starve);
  tcase_add_test(tc, failed_event_blocks_its_key);
  tcase_add_test(tc, retry_comes_due);
  tcase_add_test(tc, release_uses_no_attempt);
  tcase_add_test(tc, dead_and_requeue);
  tcase_add_test(tc, expired_lease_and_fencing);
  tcase_add_test(tc, suspect_comes_alone);
  tcase_add_test(tc, old_schema_migrated);
  tcase_add_test(tc, lease_renewed_while_out);
  tcase_add_test(tc, counts);
  tcase_add_test(tc, wake_on_foreign_commit);
  tcase_add_test(tc, poll_fallback);
  tcase_add_test(tc, busy_database_is_retried);
  tcase_add_test(tc, not_a_database);
  tcase_add_test(tc, unwritable_paths);
  tcase_add_test(tc, claims_by_topic_keep_key_order);
  tcase_add_test(tc, claims_by_topic_take_scheduled_rows_by_due_time);
  tcase_add_test(tc, claims_by_topic_pause_and_turns);
  suite_add_tcase(s, tc);
  return s;
}

Suite *unit_suite(void) { return suite(); }
