/* Unit tests for src/log.c's writer, apart from test_log.c (which runs without
 * fork, while the way lines reach stderr is chosen once per process): on a pipe
 * nobody reads, log calls return at once, lines past the queue are dropped and
 * counted, the count is logged once the reader catches up, and every line is
 * either written whole or counted; a closed pipe (EPIPE) ends writing without
 * blocking anybody. */
#include <check.h>

#include "check_main.h"
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define LINES 20000

/* stderr becomes the write end of a fresh pipe; returns the read end. */
static int stderr_to_pipe(void) {
  int p[2];
  ck_assert_int_eq(pipe(p), 0);
  ck_assert_int_eq(dup2(p[1], STDERR_FILENO), STDERR_FILENO);
  close(p[1]);
  return p[0];
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int count(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
  return n;
}

START_TEST(stalled_reader_never_blocks_and_drops_are_counted) {
  int rd = stderr_to_pipe();
  char pad[201];
  memset(pad, 'x', 200);
  pad[200] = 0;
  log_setup(LOG_TEXT, LOG_INFO);
  double t0 = now_s();
  for (int i = 0; i < LINES; i++) log_at(LOG_INFO, "line", KI("i", i), KS("pad", pad));
  /* ~5 MB into a 64 KiB pipe nobody reads: a blocking write would hang here */
  ck_assert_double_lt(now_s() - t0, 30.0);

  size_t cap = 16u << 20, len = 0;
  char *all = malloc(cap + 1);
  ck_assert_ptr_nonnull(all);
  const char *note = NULL;
  double give_up = now_s() + 60;
  while (!note && now_s() < give_up) {
    struct pollfd pfd = {.fd = rd, .events = POLLIN};
    if (poll(&pfd, 1, 1000) <= 0) continue;
    ssize_t n = read(rd, all + len, cap - len);
    ck_assert_int_gt(n, 0);
    len += (size_t)n;
    all[len] = 0;
    note = strstr(all, "log lines dropped: stderr was not read count=");
  }
  ck_assert_msg(note != NULL, "no note about dropped lines");
  long dropped = atol(strchr(note, '=') + 1);
  ck_assert_int_gt(dropped, 0);
  ck_assert_int_eq(count(all, " info line i="), LINES - dropped);      /* written or counted */
  ck_assert_int_eq(count(all, "\n"), count(all, " info line i=") + 1); /* whole lines */
  free(all);
  close(rd);
}
END_TEST

START_TEST(closed_reader_ends_writing) {
  int rd = stderr_to_pipe();
  signal(SIGPIPE, SIG_IGN); /* as main() arranges: EPIPE instead of death */
  close(rd);
  log_setup(LOG_TEXT, LOG_INFO);
  double t0 = now_s();
  for (int i = 0; i < LINES; i++) log_at(LOG_INFO, "line", KI("i", i));
  log_flush(60000); /* returns once stderr is known gone, not after the stall bound */
  ck_assert_double_lt(now_s() - t0, 30.0);
}
END_TEST

START_TEST(flush_writes_what_waits) {
  int rd = stderr_to_pipe();
  log_setup(LOG_JSON, LOG_INFO);
  for (int i = 0; i < 100; i++) log_at(LOG_INFO, "line", KI("i", i));
  log_flush(10000);
  char buf[65536];
  ssize_t n = read(rd, buf, sizeof buf - 1); /* all of it is in the pipe already */
  ck_assert_int_gt(n, 0);
  buf[n] = 0;
  ck_assert_int_eq(count(buf, "\"msg\":\"line\""), 100);
  close(rd);
}
END_TEST

static Suite *log_suite(void) {
  Suite *s = suite_create("log_writer");
  TCase *tc = tcase_create("writer");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, stalled_reader_never_blocks_and_drops_are_counted);
  tcase_add_test(tc, closed_reader_ends_writing);
  tcase_add_test(tc, flush_writes_what_waits);
  suite_add_tcase(s, tc);
  return s;
}

Suite *unit_suite(void) { return log_suite(); }
