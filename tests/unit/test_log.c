/* Tests of the log writer and the UTF-8 helpers: every JSON line is valid JSON
 * whatever the values hold (invalid UTF-8, control characters, huge values, many
 * fields, JSON text), and text lines escape what a terminal would act on. */
#include <check.h>

#include "check_main.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "ndjson.h"
#include "utf8.h"

/* Runs fn with stderr sent to a file and returns what was written (caller frees). */
static char *capture(void (*fn)(void)) {
  FILE *f = tmpfile();
  int saved = dup(STDERR_FILENO);
  ck_assert_ptr_nonnull(f);
  dup2(fileno(f), STDERR_FILENO);
  fn();
  dup2(saved, STDERR_FILENO);
  close(saved);
  long n = ftell(f) > 0 ? ftell(f) : lseek(fileno(f), 0, SEEK_END);
  char *out = calloc(1, (size_t)n + 1);
  lseek(fileno(f), 0, SEEK_SET);
  ck_assert_int_eq(read(fileno(f), out, (size_t)n), n);
  fclose(f);
  return out;
}

/* Asserts each line of `text` is one valid JSON object; returns the line count. */
static int valid_lines(char *text) {
  int lines = 0;
  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
    const char *why = NULL;
    ck_assert_msg(ndjson_validate(line, strlen(line), &why) == 0, "invalid JSON (%s): %.200s", why,
                  line);
    ck_assert_msg(line[0] == '{' && line[strlen(line) - 1] == '}', "not an object: %.200s", line);
    ck_assert_msg(strlen(line) <= 8192, "line of %zu bytes", strlen(line));
    lines++;
  }
  return lines;
}

static char big[20000];

static void log_hostile(void) {
  memset(big, 'x', sizeof big - 1);
  big[100] = '\xff'; /* invalid UTF-8 */
  big[200] = '\x1b'; /* ESC */
  big[300] = '"';
  big[400] = '\\';
  memcpy(big + 5000, "\xc3\xa9", 2); /* é across the cut point region */
  log_setup(LOG_JSON, LOG_DEBUG);
  log_at(LOG_INFO, "bad \xc3\x28 utf8 \x07 bell", KS("a", "\xff\xfe"),
         KS("c1", "\xc2\x9b"
                  "31m"),
         KS("big", big), KI("n", 5), KF("f", 1.0 / 0.0), KJ("t", "{\"a\":[1,\"\xff\x1b\"]}"));
  log_at(LOG_WARN, "many", KS("f1", big), KS("f2", big), KS("f3", big), KS("f4", big),
         KS("f5", big), KS("f6", big), KJ("j", big));
  log_at(LOG_ERROR, big, KS("k\"ey\x1b", "v"));
}

START_TEST(json_lines_stay_valid) {
  char *out = capture(log_hostile);
  ck_assert(strstr(out, "\\ufffd"));  /* invalid bytes replaced */
  ck_assert(strstr(out, "\\u001b"));  /* ESC escaped */
  ck_assert(strstr(out, "\\u009b"));  /* C1 CSI escaped */
  ck_assert(strstr(out, "...[cut ")); /* long values cut inside the string */
  ck_assert(strstr(out, "\"fields_dropped\":"));
  ck_assert(strstr(out, "\"t\":{\"a\":[1,\"\\ufffd\\u001b\"]}")); /* JSON text kept as JSON */
  ck_assert(!strchr(out, '\x1b'));
  ck_assert_int_eq(valid_lines(out), 3);
  free(out);
}
END_TEST

static void log_text(void) {
  log_setup(LOG_TEXT, LOG_INFO);
  log_at(LOG_INFO, "topic \x1b]0;pwned\x07", KS("topic", "a\x1b[2Jb"), KS("plain", "ok"),
         KS("c1", "x\xc2\x9by"), KS("bad", "\xff"));
  log_at(LOG_DEBUG, "not shown");
}

START_TEST(text_lines_escape_controls) {
  char *out = capture(log_text);
  ck_assert(!strchr(out, '\x1b'));
  ck_assert(!strchr(out, '\x07'));
  ck_assert(!strstr(out, "\xc2\x9b"));
  ck_assert(strstr(out, "topic=\"a\\u001b[2Jb\""));
  ck_assert(strstr(out, " plain=ok "));
  ck_assert(strstr(out, "c1=\"x\\u009by\""));
  ck_assert(strstr(out, "bad=\"\\ufffd\""));
  ck_assert(!strstr(out, "not shown"));
  ck_assert_int_eq((int)(strchr(out, '\n') - out) + 1, (int)strlen(out)); /* one line */
  free(out);
}
END_TEST

START_TEST(escape_for_terminals) {
  char out[32], full[64];
  ck_assert_uint_eq(log_escape("a\x1b[2J\x07\xc2\x9b\xff\"q\"", full, sizeof full), strlen(full));
  ck_assert_str_eq(full, "a\\u001b[2J\\u0007\\u009b\\ufffd\\\"q\\\"");
  log_escape("0123456789012345678901234567890123456789", out, sizeof out);
  ck_assert_str_eq(out, "...[cut 40 bytes]"); /* no room for content before the marker */
  char wide[64];
  log_escape("0123456789012345678901234567890123456789012345678901234567890123", wide, sizeof wide);
  ck_assert_msg(strstr(wide, "...[cut ") && strlen(wide) < sizeof wide, "%s", wide);
  log_escape(NULL, out, sizeof out);
  ck_assert_str_eq(out, "");
}
END_TEST

START_TEST(levels_parse) {
  ck_assert_int_eq(log_level_parse("debug"), LOG_DEBUG);
  ck_assert_int_eq(log_level_parse("warn"), LOG_WARN);
  ck_assert_int_eq(log_level_parse("warning"), LOG_WARN);
  ck_assert_int_eq(log_level_parse("verbose"), -1);
  ck_assert_int_eq(log_level_parse(""), -1);
}
END_TEST

START_TEST(utf8_rules) {
  ck_assert(utf8_valid("h\xc3\xa9llo \xf0\x9f\x98\x80", 11));
  ck_assert(!utf8_valid("\xc0\xaf", 2));         /* overlong */
  ck_assert(!utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
  ck_assert(!utf8_valid("\xf4\x90\x80\x80", 4)); /* past U+10FFFF */
  ck_assert(!utf8_valid("\xe2\x82", 2));         /* truncated */
  char *r = utf8_repair("a\xff"
                        "b\xe2\x82",
                        5);
  ck_assert_str_eq(r, "a" UTF8_REPLACEMENT "b" UTF8_REPLACEMENT UTF8_REPLACEMENT);
  ck_assert(utf8_valid(r, strlen(r)));
  free(r);
  char buf[8];
  ck_assert_int_eq((int)(utf8_put(buf, 0x1F600) - buf), 4);
  ck_assert(memcmp(buf, "\xf0\x9f\x98\x80", 4) == 0);
}
END_TEST

/* Runs in the runner's process (see check_main.c). */
const int unit_no_fork = 1;

Suite *unit_suite(void) {
  Suite *s = suite_create("log");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, json_lines_stay_valid);
  tcase_add_test(tc, text_lines_escape_controls);
  tcase_add_test(tc, escape_for_terminals);
  tcase_add_test(tc, levels_parse);
  tcase_add_test(tc, utf8_rules);
  suite_add_tcase(s, tc);
  return s;
}
