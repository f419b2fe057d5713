/* Tests for src/cmd.c: the operations commands against real SQLite files, with
 * stdin, stdout and stderr redirected to files. Each test runs in its own fork. */
#include <check.h>

#include "check_main.h"
#include <fcntl.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cmd.h"

static char dir[64];
static char db[128];

static void setup(void) {
  strcpy(dir, "/tmp/test_cmd.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(db, sizeof db, "%s/outbox.db", dir);
  unsetenv("OUTBOX_DB");
}

static void teardown(void) {
  char cmd[160];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  ck_assert_int_eq(system(cmd), 0);
}

typedef struct result {
  int rc;
  char out[8192];
  char err[8192];
} result_t;

static void slurp(const char *path, char *buf, size_t len) {
  FILE *f = fopen(path, "r");
  ck_assert_ptr_nonnull(f);
  size_t n = fread(buf, 1, len - 1, f);
  buf[n] = 0;
  fclose(f);
}

/* Runs `fn` with argv built from the NULL-terminated list, `input` on stdin. */
static result_t run(int (*fn)(int, char **), const char *input, ...) {
  static result_t r;
  char *argv[32], in[160], out[160], err[160];
  int argc = 0;
  va_list ap;
  va_start(ap, input);
  for (char *a; (a = va_arg(ap, char *));) argv[argc++] = a;
  va_end(ap);
  argv[argc] = NULL;
  snprintf(in, sizeof in, "%s/stdin", dir);
  snprintf(out, sizeof out, "%s/stdout", dir);
  snprintf(err, sizeof err, "%s/stderr", dir);
  FILE *f = fopen(in, "w");
  fputs(input ? input : "", f);
  fclose(f);
  ck_assert_ptr_nonnull(freopen(in, "r", stdin));
  fflush(stdout);
  fflush(stderr);
  int so = dup(1), se = dup(2);
  int fo = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  int fe = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  dup2(fo, 1);
  dup2(fe, 2);
  r.rc = fn(argc, argv);
  fflush(stdout);
  fflush(stderr);
  dup2(so, 1);
  dup2(se, 2);
  close(so);
  close(se);
  close(fo);
  close(fe);
  slurp(out, r.out, sizeof r.out);
  slurp(err, r.err, sizeof r.err);
  return r;
}

static int64_t sql_int(const char *sql) {
  sqlite3 *h;
  sqlite3_stmt *st;
  ck_assert_int_eq(sqlite3_open(db, &h), SQLITE_OK);
  ck_assert_int_eq(sqlite3_prepare_v2(h, sql, -1, &st, NULL), SQLITE_OK);
  ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
  int64_t v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(h);
  return v;
}

static void sql_exec(const char *sql) {
  sqlite3 *h;
  ck_assert_int_eq(sqlite3_open(db, &h), SQLITE_OK);
  ck_assert_int_eq(sqlite3_exec(h, sql, NULL, NULL, NULL), SQLITE_OK);
  sqlite3_close(h);
}

/* One line on stderr, no more. */
static void one_line(const char *s) {
  const char *nl = strchr(s, '\n');
  ck_assert_ptr_nonnull(nl);
  ck_assert_str_eq(nl + 1, "");
}

static void init_db(void) {
  result_t r = run(cmd_init, NULL, "init", "--db", db, NULL);
  ck_assert_msg(r.rc == 0, "%s", r.err);
}

/* Only init creates a database: every other command on a missing path exits 2
 * with one line naming the path and `outboxd init`, and leaves nothing behind. */
START_TEST(only_init_creates_a_database) {
  char want[512];
  result_t r = run(cmd_status, NULL, "status", "--db", db, "--json", NULL);
  ck_assert_int_eq(r.rc, 2);
  r = run(cmd_requeue, NULL, "requeue", "--db", db, "--dead", NULL);
  ck_assert_int_eq(r.rc, 2);
  r = run(cmd_enqueue, NULL, "enqueue", "--db", db, "--topic", "t", "--payload", "p", NULL);
  ck_assert_int_eq(r.rc, 2);
  snprintf(want, sizeof want,
           "outboxd enqueue: --db %s: no such database (create it with: outboxd init --db %s)\n",
           db, db);
  ck_assert_str_eq(r.err, want);
  r = run(cmd_enqueue, "{\"topic\":\"t\",\"payload\":1}\n", "enqueue", "--db", db, NULL);
  ck_assert_int_eq(r.rc, 2);
  one_line(r.err);
  ck_assert_int_ne(access(db, F_OK), 0);
  /* the same through a sqlite: URL and the environment */
  char url[192];
  snprintf(url, sizeof url, "sqlite:%s", db);
  setenv("OUTBOX_DB", url, 1);
  r = run(cmd_status, NULL, "status", NULL);
  ck_assert_int_eq(r.rc, 2);
  ck_assert_ptr_nonnull(strstr(r.err, "no such database (create it with: outboxd init --db"));
  unsetenv("OUTBOX_DB");
  ck_assert_int_ne(access(db, F_OK), 0);
  /* a file without the outbox table is a different error, still one line */
  sql_exec("CREATE TABLE other (a)");
  r = run(cmd_status, NULL, "status", "--db", db, "--json", NULL);
  ck_assert_int_eq(r.rc, 1);
  ck_assert_ptr_nonnull(strstr(r.err, "no outbox table in"));
  ck_assert_ptr_nonnull(strstr(r.err, "run: outboxd init --db"));
  one_line(r.err);
  init_db();
  r = run(cmd_status, NULL, "status", "--db", db, "--json", NULL);
  ck_assert_int_eq(r.rc, 0);
  ck_assert_str_eq(r.out, "{\"pending\": 0, \"processing\": 0, \"done\": 0, \"dead\": 0,"
                          " \"oldest_pending_age_ms\": 0, \"topics\": {}, \"paused\": []}\n");
}
END_TEST

START_TEST(enqueue_with_flags) {
  init_db();
  result_t r = run(cmd_enqueue, NULL, "enqueue", "--db", db, "--topic", "orders", "--key", "k1",
                   "--payload", "{\"a\": 1}", "--headers", " {\"x\": \"y\"}", NULL);
  ck_assert_msg(r.rc == 0, "%s", r.err);
  r = run(cmd_enqueue, NULL, "enqueue", "--db", db, "--topic", "plain", "--payload",
          "not json at all", NULL);
  ck_assert_int_eq(r.rc, 0);
  ck_assert_int_eq(sql_int("SELECT count(*) FROM outbox"), 2);
  ck_assert_int_eq(sql_int("SELECT count(*) FROM outbox WHERE id = 1 AND topic = 'orders'"
                           " AND key = 'k1' AND payload = '{\"a\": 1}'"
                           " AND headers = ' {\"x\": \"y\"}' AND status = 'pending'"),
                   1);
  ck_assert_int_eq(sql_int("SELECT count(*) FROM outbox WHERE payload = 'not json at all'"
                           " AND key IS NULL AND headers IS NULL"),
                   1);
}
END_TEST

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* --delay and --at set available_at; anything else given to them exits 2 and
 * writes nothing. */
START_TEST(enqueue_delay_and_at) {
  init_db();
  int64_t before = wall_ms();
  result_t r = run(cmd_enqueue, NULL, "enqueue", "--db", db, "--topic", "t", "--payload", "1",
                   "--delay", "60000", NULL);
  int64_t after = wall_ms();
  ck_assert_msg(r.rc == 0, "%s", r.err);
  int64_t at = sql_int("SELECT available_at FROM outbox WHERE id = 1");
  ck_assert_int_ge(at, before + 60000);
  ck_assert_int_le(at, after + 60000);
  const char *ok[][2] = {{"2026-12-01T10:00:00Z", "1796119200000"},
                         {"2026-12-01T11:00:00.25+01:00", "1796119200250"},
                         {"2026-12-01t04:30:00-0530", "1796119200000"},
                         {"1796119200123", "1796119200123"}};
  for (int i = 0; i < 4; i++) {
    r = run(cmd_enqueue, NULL, "enqueue", "--db", db, "--topic", "t", "--payload", "p", "--at",
            ok[i][0], NULL);
    ck_assert_msg(r.rc == 0, "%s: %s", ok[i][0], r.err);
    char q[128];
    snprintf(q, sizeof q, "SELECT available_at = %s FROM outbox WHERE id = %d", ok[i][1], i + 2);
    ck_assert_msg(sql_int(q) == 1, "%s", ok[i][0]);
  }
  /* NDJSON lines on stdin all get the time */
  r = run(cmd_enqueue, "{\"topic\":\"a\",\"payload\":1}\n{\"topic\":\"b\",\"payload\":2}\n",
          "enqueue", "--db", db, "--at", "2030-01-01T00:00:00Z", NULL);
  ck_assert_msg(r.rc == 0, "%s", r.err);
  ck_assert_int_eq(sql_int("SELECT count(*) FROM outbox WHERE available_at = 1893456000000"), 2);
  const char *bad[][4] = {
      {"--delay", "-5", NULL, "--delay -5: not a number of milliseconds"},
      {"--delay", "5s", NULL, "--delay 5s: not a number of milliseconds"},
      {"--at", "1764000000", NULL, "looks like seconds"},
      {"--at", "2026-02-30T10:00:00Z", NULL, "--at 2026-02-30T10:00:00Z: not a time"},
      {"--at", "2026-12-01T10:00:00", NULL, "not a time"},
      {"--at", "2026-12-01T10:00:00Zjunk", NULL, "not a time"},
      {"--at", "tomorrow", NULL, "not a time"},
      {"--delay", "5", "--at=1796119200000", "--delay and --at exclude each other"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    r = run(cmd_enqueue, NULL, "enqueue", "--db", db, "--topic", "t", "--payload", "p", bad[i][0],
            bad[i][1], bad[i][2], NULL);
    ck_assert_msg(r.rc == 2, "case %zu: rc %d", i, r.rc);
    ck_assert_msg(strstr(r.err, bad[i][3]), "case %zu: %s", i, r.err);
    one_line(r.err);
  }
  ck_assert_int_eq(sql_int("SELECT count(*) FROM outbox"), 7);
}
END_TEST

START_TEST(enqueue_usage_errors) {
  struct {
    const char *a, *b, *c, *d, *e, *f;
    const char *says;
  } cases[] = {
      {"--payload", "x", NULL, NULL, NULL, NULL, "--topic is required"},
      {"--topic", "t", "--payload", "x", "--headers", "[1]", "--headers: must be a JSON object"},
      {"--topic", "t", "--payload", "x", "--headers", "{bad", "--headers:"},
      {"--topic", "t", NULL, NULL, NULL, NULL, "go with --payload"},
      {"--bogus", NULL, NULL, NULL, NULL, NULL, "unknown option '--bogus'"},
      {"--topic", NULL, NULL, NULL, NULL, NULL, "--topic needs a value"},
      {"--topic", "t", "--payload", "x", "extra", NULL, "unexpected argument 'extra'"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    result_t r = run(cmd_enqueue, "", "enqueue", "--db", db, cases[i].a, cases[i].b, cases[i].c,
                     cases[i].d, cases[i].e, cases[i].f, NULL);
    ck_assert_msg(r.rc == 2, "case %zu: rc %d", i, r.rc);
    ck_assert_msg(strstr(r.err, cases[i].says), "case %zu: %s", i, r.err);
    one_line(r.err);
  }
  ck_assert_int_ne(access(db, F_OK), 0); /* nothing was created */
}
END_TEST

START_TEST(enqueue_ndjson_stdin) {
  const char *in = "{\"topic\":\"a\",\"payload\":{\"n\":1},\"key\":\"k\",\"headers\":{\"h\":1}}\n"
                   "\n"
                   "{\"topic\":\"b\"}\n"
                   "not json\n"
                   "{\"topic\":\"c\",\"payload\":\"s\\n\",\"id\":99}";
  init_db();
  result_t r = run(cmd_enqueue, in, "enqueue", "--db", db, NULL);
  ck_assert_int_eq(r.rc, 1); /* bad lines make the exit code 1 */
  ck_assert_ptr_nonnull(strstr(r.err, "line 3: missing \"payload\""));
  ck_assert_ptr_nonnull(strstr(r.err, "line 4: "));
  ck_assert_ptr_nonnull(strstr(r.err, "enqueued 2 events, skipped 2 bad lines"));
  ck_assert_int_eq(sql_int("SELECT count(*) FROM outbox"), 2);
  ck_assert_int_eq(sql_int("SELECT count(*) FROM outbox WHERE topic = 'a' AND key = 'k'"
                           " AND payload = '{\"n\":1}' AND headers = '{\"h\":1}'"),
                   1);
  ck_assert_int_eq(sql_int("SELECT count(*) FROM outbox WHERE topic = 'c'"
                           " AND payload = 's' || char(10) AND id = 2"),
                   1);
}
END_TEST

START_TEST(enqueue_many_lines) {
  size_t n = 2500, len = n * 40 + 1, off = 0;
  char *in = malloc(len);
  for (size_t i = 0; i < n; i++)
    off += (size_t)snprintf(in + off, len - off, "{\"topic\":\"t\",\"payload\":%zu}\n", i);
  init_db();
  result_t r = run(cmd_enqueue, in, "enqueue", "--db", db, NULL);
  free(in);
  ck_assert_msg(r.rc == 0, "%s", r.err);
  ck_assert_str_eq(r.err, "enqueued 2500 events\n");
  ck_assert_int_eq(sql_int("SELECT count(*) FROM outbox"), 2500);
  ck_assert_int_eq(sql_int("SELECT payload FROM outbox WHERE id = 2500"), 2499);
}
END_TEST

START_TEST(status_table_and_json) {
  result_t r = run(cmd_init, NULL, "init", "--db", db, NULL);
  ck_assert_int_eq(r.rc, 0);
  sql_exec("INSERT INTO outbox (topic, payload, created_at) VALUES ('t', 'p', 1000);"
           "INSERT INTO outbox (topic, payload, status) VALUES ('t', 'p', 'processing');"
           "INSERT INTO outbox (topic, payload, status) VALUES ('t', 'p', 'done');"
           "INSERT INTO outbox (topic, payload, status, attempts, last_error)"
           " VALUES ('orders', 'p', 'dead', 10, 'timeout' || char(10) || 'more');");
  r = run(cmd_status, NULL, "status", "--db", db, "--json", NULL);
  ck_assert_int_eq(r.rc, 0);
  long long age = 0;
  ck_assert_int_eq(sscanf(r.out,
                          "{\"pending\": 1, \"processing\": 1, \"done\": 1, \"dead\": 1,"
                          " \"oldest_pending_age_ms\": %lld}",
                          &age),
                   1);
  ck_assert_int_gt(age, 1000000000);
  ck_assert_ptr_null(strstr(r.out, "last_dead")); /* exactly the contract's keys */
  ck_assert_ptr_nonnull(strstr(r.out, ", \"topics\": {\"orders\": {\"pending\": 0,"
                                      " \"processing\": 0, \"dead\": 1}, \"t\": {\"pending\": 1,"
                                      " \"processing\": 1, \"dead\": 0}}, \"paused\": []}\n"));
  r = run(cmd_status, NULL, "status", "--db", db, NULL);
  ck_assert_int_eq(r.rc, 0);
  ck_assert_ptr_nonnull(strstr(r.out, "pending "));
  ck_assert_ptr_nonnull(strstr(r.out, "oldest pending"));
  ck_assert_ptr_nonnull(strstr(r.out, "by topic"));
  ck_assert_ptr_nonnull(strstr(r.out, "\n  orders                            0   "
                                      "       0          1\n"));
  ck_assert_ptr_nonnull(strstr(r.out, "\n  t                                 1   "
                                      "       1          0\n"));
  ck_assert_ptr_nonnull(strstr(r.out, "last dead events"));
  ck_assert_ptr_nonnull(strstr(r.out, "orders"));
  ck_assert_ptr_nonnull(strstr(r.out, "timeout\\nmore")); /* escaped: one line per event */
}
END_TEST

START_TEST(pause_and_resume) {
  result_t r = run(cmd_init, NULL, "init", "--db", db, NULL);
  ck_assert_int_eq(r.rc, 0);
  r = run(cmd_pause, NULL, "pause", "--db", db, "order.*", NULL);
  ck_assert_int_eq(r.rc, 0);
  ck_assert_ptr_nonnull(strstr(r.out, "paused order.*"));
  r = run(cmd_pause, NULL, "pause", "--db", db, "order.*", NULL);
  ck_assert_ptr_nonnull(strstr(r.out, "already paused"));
  r = run(cmd_pause, NULL, "pause", "--db", db, "user.created", NULL);
  ck_assert_int_eq(r.rc, 0);
  r = run(cmd_status, NULL, "status", "--db", db, "--json", NULL);
  ck_assert_ptr_nonnull(strstr(r.out, ", \"paused\": [\"order.*\", \"user.created\"]}\n"));
  r = run(cmd_status, NULL, "status", "--db", db, NULL);
  ck_assert_ptr_nonnull(strstr(r.out, "paused (no host starts these topics):\n  order.*\n"
                                      "  user.created\n"));
  r = run(cmd_resume, NULL, "resume", "--db", db, "order.*", NULL);
  ck_assert_int_eq(r.rc, 0);
  ck_assert_ptr_nonnull(strstr(r.out, "resumed order.*"));
  r = run(cmd_resume, NULL, "resume", "--db", db, "order.*", NULL);
  ck_assert_ptr_nonnull(strstr(r.out, "was not paused"));
  r = run(cmd_status, NULL, "status", "--db", db, "--json", NULL);
  ck_assert_ptr_nonnull(strstr(r.out, ", \"paused\": [\"user.created\"]}\n"));
  /* bad patterns: exit 2, one line, nothing written */
  const char *bad[] = {"or*der", "", "a,b"};
  for (int i = 0; i < 3; i++) {
    r = run(cmd_pause, NULL, "pause", "--db", db, bad[i], NULL);
    ck_assert_int_eq(r.rc, 2);
    one_line(r.err);
  }
  r = run(cmd_pause, NULL, "pause", "--db", db, NULL);
  ck_assert_int_eq(r.rc, 2);
  r = run(cmd_status, NULL, "status", "--db", db, "--json", NULL);
  ck_assert_ptr_nonnull(strstr(r.out, ", \"paused\": [\"user.created\"]}\n"));
}
END_TEST

START_TEST(requeue_dead_and_ids) {
  result_t r = run(cmd_init, NULL, "init", "--db", db, NULL);
  sql_exec("INSERT INTO outbox (topic, payload, status, attempts) VALUES"
           " ('t', 'p', 'dead', 3), ('t', 'p', 'dead', 3), ('t', 'p', 'dead', 3),"
           " ('t', 'p', 'processing', 1)");
  r = run(cmd_requeue, NULL, "requeue", "--db", db, "--id", "1", NULL);
  ck_assert_int_eq(r.rc, 0);
  ck_assert_str_eq(r.out, "requeued 1 event\n");
  r = run(cmd_requeue, NULL, "requeue", "--db", db, "2", "--id", "4", NULL);
  ck_assert_int_eq(r.rc, 0);
  ck_assert_str_eq(r.out, "requeued 1 event; 1 of the 2 ids named no event (or one being "
                          "processed)\n"); /* 4 is being processed */
  r = run(cmd_requeue, NULL, "requeue", "--db", db, "--dead", NULL);
  ck_assert_str_eq(r.out, "requeued 1 event\n");
  ck_assert_int_eq(sql_int("SELECT count(*) FROM outbox WHERE status = 'pending'"
                           " AND attempts = 0 AND available_at = 0"),
                   3);
  const char *bad[][3] = {{"--id", "x", "--id x: not an event id"},
                          {"0", NULL, "'0' is not an event id"},
                          {"--dead", "--id=3", "exclude each other"},
                          {NULL, NULL, "give --dead or --id N"}};
  for (int i = 0; i < 4; i++) {
    r = run(cmd_requeue, NULL, "requeue", "--db", db, bad[i][0], bad[i][1], NULL);
    ck_assert_msg(r.rc == 2, "case %d", i);
    ck_assert_msg(strstr(r.err, bad[i][2]), "case %d: %s", i, r.err);
    one_line(r.err);
  }
}
END_TEST

/* requeue --dead --topic: exact topics and prefixes ending in '*'; an unknown id
 * or a topic without dead events says so. */
START_TEST(requeue_by_topic) {
  init_db();
  sql_exec("INSERT INTO outbox (topic, payload, status, attempts) VALUES"
           " ('order.paid', 'p', 'dead', 3), ('order.sent', 'p', 'dead', 3),"
           " ('order', 'p', 'dead', 3), ('user.created', 'p', 'dead', 3),"
           " ('order.x', 'p', 'pending', 0)");
  result_t r =
      run(cmd_requeue, NULL, "requeue", "--db", db, "--dead", "--topic", "order.paid", NULL);
  ck_assert_int_eq(r.rc, 0);
  ck_assert_str_eq(r.out, "requeued 1 event\n");
  ck_assert_int_eq(sql_int("SELECT status = 'pending' FROM outbox WHERE id = 1"), 1);
  r = run(cmd_requeue, NULL, "requeue", "--db", db, "--dead", "--topic", "order.*", NULL);
  ck_assert_str_eq(r.out, "requeued 1 event\n"); /* order.sent, not 'order' */
  ck_assert_int_eq(sql_int("SELECT count(*) FROM outbox WHERE status = 'dead'"), 2);
  r = run(cmd_requeue, NULL, "requeue", "--db", db, "--dead", "--topic", "order.*", NULL);
  ck_assert_int_eq(r.rc, 0);
  ck_assert_str_eq(r.out, "requeued 0 events: no dead events of topic order.*\n");
  r = run(cmd_requeue, NULL, "requeue", "--db", db, "--dead", "--topic", "*", NULL);
  ck_assert_str_eq(r.out, "requeued 2 events\n");
  r = run(cmd_requeue, NULL, "requeue", "--db", db, "--id", "99", NULL);
  ck_assert_int_eq(r.rc, 0);
  ck_assert_str_eq(r.out, "requeued 0 events: no event 99 (or it is being processed)\n");
  const char *bad[][4] = {{"--topic", "order.*", NULL, "--topic goes with --dead"},
                          {"--dead", "--topic", "a*b", "--topic 'a*b': a topic, or a prefix"},
                          {"--dead", "--topic", "", "--topic '': a topic, or a prefix"},
                          {"--dead", "--topic", "**", "--topic '**'"}};
  for (int i = 0; i < 4; i++) {
    r = run(cmd_requeue, NULL, "requeue", "--db", db, bad[i][0], bad[i][1], bad[i][2], NULL);
    ck_assert_msg(r.rc == 2, "case %d", i);
    ck_assert_msg(strstr(r.err, bad[i][3]), "case %d: %s", i, r.err);
    one_line(r.err);
  }
}
END_TEST

START_TEST(env_and_bad_files) {
  setenv("OUTBOX_DB", db, 1);
  result_t r = run(cmd_init, NULL, "init", NULL);
  ck_assert_int_eq(r.rc, 0);
  ck_assert_int_eq(access(db, F_OK), 0);
  char notdb[160];
  snprintf(notdb, sizeof notdb, "%s/notdb", dir);
  FILE *f = fopen(notdb, "w");
  for (int i = 0; i < 100; i++) fputs("definitely not sqlite\n", f);
  fclose(f);
  r = run(cmd_status, NULL, "status", "--db", notdb, NULL);
  ck_assert_int_eq(r.rc, 1);
  ck_assert_ptr_nonnull(strstr(r.err, "file is not a database"));
  ck_assert_ptr_nonnull(strstr(r.err, notdb));
  one_line(r.err);
  char missing[192];
  snprintf(missing, sizeof missing, "sqlite:%s/nope/outbox.db", dir);
  r = run(cmd_enqueue, NULL, "enqueue", "--db", missing, "--topic", "t", "--payload", "p", NULL);
  ck_assert_int_eq(r.rc, 2);
  ck_assert_ptr_nonnull(strstr(r.err, "nope/outbox.db: no such database"));
  one_line(r.err);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("cmd");
  TCase *tc = tcase_create("cmd");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, only_init_creates_a_database);
  tcase_add_test(tc, enqueue_with_flags);
  tcase_add_test(tc, enqueue_delay_and_at);
  tcase_add_test(tc, enqueue_usage_errors);
  tcase_add_test(tc, enqueue_ndjson_stdin);
  tcase_add_test(tc, enqueue_many_lines);
  tcase_add_test(tc, status_table_and_json);
  tcase_add_test(tc, pause_and_resume);
  tcase_add_test(tc, requeue_dead_and_ids);
  tcase_add_test(tc, requeue_by_topic);
  tcase_add_test(tc, env_and_bad_files);
  suite_add_tcase(s, tc);
  return s;
}

Suite *unit_suite(void) { return suite(); }
