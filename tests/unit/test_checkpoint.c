/* Tests for src/checkpoint.c: the rules on their own, then real SQLite files in WAL
 * mode checkpointed by the libuv pool while the test thread keeps writing. */
#include <check.h>

#include "check_main.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "checkpoint.h"
#include "log.h"

static char dir[64];
static char path[128];
static uv_loop_t loop;
static sqlite3 *db;

static void setup(void) {
  strcpy(dir, "/tmp/test_checkpoint.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/wal.db", dir);
  ck_assert_int_eq(uv_loop_init(&loop), 0);
  log_setup(LOG_TEXT, LOG_ERROR);
  ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
  ck_assert_int_eq(sqlite3_exec(db,
                                "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                                " CREATE TABLE t (x BLOB)",
                                NULL, NULL, NULL),
                   SQLITE_OK);
}

static void teardown(void) {
  ck_assert_int_eq(uv_loop_close(&loop), 0);
  char cmd[160];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  ck_assert_int_eq(system(cmd), 0);
}

/* One commit of a row two pages long. */
static void write_row(void) {
  ck_assert_int_eq(sqlite3_exec(db, "INSERT INTO t VALUES (randomblob(8000))", NULL, NULL, NULL),
                   SQLITE_OK);
}

static int64_t rows(void) {
  sqlite3 *other;
  sqlite3_stmt *st;
  ck_assert_int_eq(sqlite3_open(path, &other), SQLITE_OK);
  ck_assert_int_eq(sqlite3_prepare_v2(other, "SELECT count(*) FROM t", -1, &st, NULL), SQLITE_OK);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
  int64_t n = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(other);
  return n;
}

static int closed;
static void on_closed(void *arg) { closed++; }

START_TEST(rules) {
  ck_assert_int_eq(checkpoint_wanted(99, 0, 100, 0), 0);
  ck_assert_int_eq(checkpoint_wanted(100, 0, 100, 0), 1);
  ck_assert_int_eq(checkpoint_wanted(100, 0, 100, 1), 0);   /* one run at a time */
  ck_assert_int_eq(checkpoint_wanted(149, 100, 100, 0), 0); /* copied already */
  ck_assert_int_eq(checkpoint_wanted(150, 100, 100, 0), 1);
  ck_assert_int_eq(checkpoint_finish(149, 120, 100), 0); /* the log is not long yet */
  ck_assert_int_eq(checkpoint_finish(150, 120, 100), 1);
  ck_assert_int_eq(checkpoint_finish(150, 150, 100), 0); /* nothing left to copy */
}
END_TEST

/* The loop's connection writes without a pause; the pool copies the log back, the log
 * starts over and stays short, and every row is there. */
START_TEST(runs_in_the_pool_and_the_log_starts_over) {
  checkpoint_t c;
  ck_assert_int_eq(checkpoint_attach(&c, &loop, db, path, 50), 0);
  int over = 0, last = 0, n = 0;
  for (; n < 4000 && (c.runs < 3 || over < 3); n++) {
    write_row();
    uv_run(&loop, UV_RUN_NOWAIT);
    if (c.frames < last) over++;
    last = c.frames;
  }
  ck_assert_int_ge(c.runs, 3);
  ck_assert_int_gt(c.copied, 0); /* the pool's connection copied pages */
  ck_assert_int_ge(over, 3);
  closed = 0;
  checkpoint_close(&c, on_closed, NULL);
  while (!closed) uv_run(&loop, UV_RUN_ONCE);
  ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
  ck_assert_int_eq(rows(), n);
}
END_TEST

/* Closing while a run is under way waits for it; the connection then closes cleanly. */
START_TEST(close_waits_for_a_run) {
  checkpoint_t c;
  ck_assert_int_eq(checkpoint_attach(&c, &loop, db, path, 20), 0);
  int n = 0;
  while (!c.running && n < 1000) {
    write_row();
    n++;
  }
  ck_assert_int_eq(c.running, 1);
  closed = 0;
  checkpoint_close(&c, on_closed, NULL);
  ck_assert_int_eq(closed, 0);
  write_row(); /* no new run once closing */
  n++;
  while (!closed) uv_run(&loop, UV_RUN_ONCE);
  ck_assert_int_eq(c.running, 0);
  ck_assert_int_eq(sqlite3_close(db), SQLITE_OK);
  ck_assert_int_eq(rows(), n);
}
END_TEST

Suite *unit_suite(void) {
  Suite *s = suite_create("checkpoint");
  TCase *tc = tcase_create("checkpoint");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, rules);
  tcase_add_test(tc, runs_in_the_pool_and_the_log_starts_over);
  tcase_add_test(tc, close_waits_for_a_run);
  suite_add_tcase(s, tc);
  return s;
}
