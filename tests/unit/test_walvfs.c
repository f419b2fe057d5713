/* Tests for src/walvfs.c on real SQLite files in WAL mode: a transaction's log goes
 * out in a few large writes (counted by the kernel: syscw in /proc/self/io), every
 * commit is seen at once by another connection on the default VFS, frames of a
 * rolled-back transaction never overwrite another writer's, and a writer killed with
 * SIGKILL mid-transaction leaves every commit before it. */
#include <check.h>

#include "check_main.h"
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "walvfs.h"

static char dir[64];
static char path[128];

static void setup(void) {
  strcpy(dir, "/tmp/test_walvfs.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(path, sizeof path, "%s/wal.db", dir);
  ck_assert_int_eq(walvfs_register(), SQLITE_OK);
}

static void teardown(void) {
  char cmd[160];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  ck_assert_int_eq(system(cmd), 0);
}

static void exec_ok(sqlite3 *db, const char *sql) {
  char *err = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
  ck_assert_msg(rc == SQLITE_OK, "%s: %s", sql, err ? err : "?");
}

/* A connection on walvfs (vfs WALVFS_NAME) or the default VFS (NULL). */
static sqlite3 *open_on(const char *vfs) {
  sqlite3 *db;
  ck_assert_int_eq(
      sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs), SQLITE_OK);
  exec_ok(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL");
  return db;
}

static int64_t one(sqlite3 *db, const char *sql) {
  sqlite3_stmt *st;
  ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
  int64_t v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return v;
}

static void integrity_ok(void) {
  sqlite3 *db = open_on(NULL);
  sqlite3_stmt *st;
  ck_assert_int_eq(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
  ck_assert_str_eq((const char *)sqlite3_column_text(st, 0), "ok");
  sqlite3_finalize(st);
  sqlite3_close(db);
}

/* Write system calls of this process so far (pwrite counts). */
static long writes(void) {
  FILE *f = fopen("/proc/self/io", "r");
  ck_assert_ptr_nonnull(f);
  char line[128];
  long n = -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "syscw: %ld", &n) == 1) break;
  fclose(f);
  ck_assert_int_ge(n, 0);
  return n;
}

/* 200 rows of 2000 bytes: about 100 table pages. */
static void fill(sqlite3 *db) {
  exec_ok(db, "CREATE TABLE t (i INTEGER PRIMARY KEY, v INTEGER, b BLOB);"
              " WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)"
              " INSERT INTO t SELECT i, 0, randomblob(2000) FROM n");
}

START_TEST(a_transaction_is_a_few_writes) {
  sqlite3 *w = open_on(WALVFS_NAME), *plain = open_on(NULL);
  fill(w);
  long before = writes();
  exec_ok(w, "UPDATE t SET v = 1");
  long ours = writes() - before;
  before = writes();
  exec_ok(plain, "UPDATE t SET v = 2");
  long theirs = writes() - before;
  /* ~100 frames of 4 KiB: 7 blocks of 64 KiB at most, against two writes a frame */
  ck_assert_int_le(ours, 10);
  ck_assert_int_ge(theirs, 200);
  ck_assert_int_eq(one(w, "SELECT count(*) FROM t WHERE v = 2"), 200);
  sqlite3_close(plain);
  sqlite3_close(w);
  integrity_ok();
}
END_TEST

START_TEST(every_commit_is_seen_by_others_at_once) {
  sqlite3 *w = open_on(WALVFS_NAME), *r = open_on(NULL);
  fill(w);
  for (int i = 1; i <= 50; i++) {
    char sql[96];
    snprintf(sql, sizeof sql, "UPDATE t SET v = %d, b = randomblob(2000) WHERE i <= %d", i, i * 4);
    exec_ok(w, sql);
    ck_assert_int_eq(one(r, "SELECT count(*) FROM t WHERE v > 0"), i * 4);
    ck_assert_int_eq(one(r, "SELECT max(v) FROM t"), i);
  }
  sqlite3_close(r);
  sqlite3_close(w);
  integrity_ok();
}
END_TEST

/* A page cache of a few pages makes SQLite write frames before the commit; after the
 * rollback another writer appends where those frames were. */
START_TEST(rolled_back_frames_never_overwrite_another_writer) {
  sqlite3 *w = open_on(WALVFS_NAME), *other = open_on(NULL);
  fill(w);
  exec_ok(w, "PRAGMA cache_size = 5");
  for (int round = 1; round <= 5; round++) {
    /* 10 pages through a cache of 5: some frames written, none read back */
    exec_ok(w, "BEGIN IMMEDIATE; UPDATE t SET v = -1 WHERE i <= 20; ROLLBACK");
    char sql[64];
    snprintf(sql, sizeof sql, "UPDATE t SET v = %d WHERE i = %d", round, round);
    exec_ok(other, sql);
    snprintf(sql, sizeof sql, "UPDATE t SET v = %d WHERE i = %d", round, 100 + round);
    exec_ok(w, sql);
  }
  ck_assert_int_eq(one(other, "SELECT count(*) FROM t WHERE v > 0"), 10);
  ck_assert_int_eq(one(other, "SELECT count(*) FROM t WHERE v < 0"), 0);
  sqlite3_close(other);
  sqlite3_close(w);
  integrity_ok();
}
END_TEST

START_TEST(a_writer_killed_mid_transaction_keeps_every_commit) {
  sqlite3 *setup_db = open_on(NULL);
  fill(setup_db);
  sqlite3_close(setup_db);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    sqlite3 *w;
    if (sqlite3_open_v2(path, &w, SQLITE_OPEN_READWRITE, WALVFS_NAME) != SQLITE_OK) _exit(2);
    sqlite3_exec(w, "PRAGMA cache_size = 5", NULL, NULL, NULL);
    for (int i = 1; i <= 20; i++) {
      char sql[64];
      snprintf(sql, sizeof sql, "UPDATE t SET v = 1 WHERE i = %d", i);
      if (sqlite3_exec(w, sql, NULL, NULL, NULL) != SQLITE_OK) _exit(3);
    }
    /* frames of this one are written (the cache spills) but it never commits */
    sqlite3_exec(w, "BEGIN IMMEDIATE; UPDATE t SET v = -1, b = randomblob(2000)", NULL, NULL,
                 NULL);
    raise(SIGKILL);
    _exit(4);
  }
  int status;
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  integrity_ok();
  sqlite3 *r = open_on(NULL);
  ck_assert_int_eq(one(r, "SELECT count(*) FROM t WHERE v = 1"), 20);
  ck_assert_int_eq(one(r, "SELECT count(*) FROM t WHERE v < 0"), 0);
  sqlite3_close(r);
}
END_TEST

Suite *unit_suite(void) {
  Suite *s = suite_create("walvfs");
  TCase *tc = tcase_create("walvfs");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, a_transaction_is_a_few_writes);
  tcase_add_test(tc, every_commit_is_seen_by_others_at_once);
  tcase_add_test(tc, rolled_back_frames_never_overwrite_another_writer);
  tcase_add_test(tc, a_writer_killed_mid_transaction_keeps_every_commit);
  suite_add_tcase(s, tc);
  return s;
}
