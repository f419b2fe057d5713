/* Tests of the NDJSON event-line scanner: fields, unescaping, and every way a line
 * can be malformed. */
#include <check.h>

#include "check_main.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ndjson.h"

/* Parses a copy of `line` (the scanner rewrites its buffer); the copy is returned
 * through *keep so field pointers stay valid. */
static int parse(const char *line, ndjson_rec_t *r, const char **err, char **keep) {
  size_t n = strlen(line);
  char *buf = malloc(n + 1);
  memcpy(buf, line, n + 1);
  *keep = buf;
  return ndjson_parse(buf, n, r, err);
}

START_TEST(fields) {
  ndjson_rec_t r;
  const char *err = NULL;
  char *b;
  ck_assert_int_eq(parse("{\"topic\":\"a.b\",\"payload\":{\"x\":[1,2.5e3,true,null]},\"key\":\"k\","
                         "\"headers\":{\"h\":\"v\"},\"id\":42,\"other\":[{}]}",
                         &r, &err, &b),
                   0);
  ck_assert_str_eq(r.topic, "a.b");
  ck_assert_str_eq(r.payload, "{\"x\":[1,2.5e3,true,null]}");
  ck_assert_str_eq(r.key, "k");
  ck_assert_str_eq(r.headers, "{\"h\":\"v\"}");
  ck_assert_int_eq(r.has_id, 1);
  ck_assert_int_eq(r.id, 42);
  free(b);
}
END_TEST

START_TEST(string_payload_unescaped) {
  ndjson_rec_t r;
  const char *err = NULL;
  char *b;
  ck_assert_int_eq(
      parse(
          "{\"payload\":\"a\\\"b\\\\c\\n\\u00e9\\ud83d\\ude00\",\"topic\":\"t\\/x\",\"key\":null}",
          &r, &err, &b),
      0);
  ck_assert_int_eq(r.payload_escaped, 1);
  r.payload_len = ndjson_unescape(r.payload, r.payload_len);
  r.payload[r.payload_len] = 0;
  ck_assert_str_eq(r.payload, "a\"b\\c\n\xc3\xa9\xf0\x9f\x98\x80");
  ck_assert_uint_eq(r.payload_len, strlen("a\"b\\c\n\xc3\xa9\xf0\x9f\x98\x80"));
  ck_assert_str_eq(r.topic, "t/x");
  ck_assert_ptr_null(r.key);
  ck_assert_int_eq(r.has_id, 0);
  free(b);
}
END_TEST

START_TEST(blank_line) {
  ndjson_rec_t r;
  const char *err = NULL;
  char *b;
  ck_assert_int_eq(parse("   \t ", &r, &err, &b), -ENODATA);
  free(b);
}
END_TEST

static const struct {
  const char *line;
  const char *err;
} bad[] = {
    {"[1,2]", "a line must be a JSON object"},
    {"{\"topic\":\"t\"}", "missing \"payload\""},
    {"{\"payload\":1}", "missing \"topic\""},
    {"{\"topic\":\"\",\"payload\":1}", "\"topic\" must be a non-empty string"},
    {"{\"topic\":5,\"payload\":1}", "\"topic\" must be a non-empty string"},
    {"{\"topic\":\"t\",\"payload\":null}", "\"payload\" is null"},
    {"{\"topic\":\"t\",\"payload\":1,\"key\":3}", "\"key\" must be a string"},
    {"{\"topic\":\"t\",\"payload\":1,\"headers\":[1]}", "\"headers\" must be an object"},
    {"{\"topic\":\"t\",\"payload\":1,\"id\":\"7\"}", "\"id\" must be an integer"},
    {"{\"topic\":\"t\",\"payload\":1,\"id\":1.5}", "\"id\" must be an integer"},
    {"{\"topic\":\"t\",\"payload\":1,}", "trailing comma"},
    {"{\"topic\":\"t\",\"payload\":1} x", "trailing characters after the object"},
    {"{\"topic\":\"t\",\"payload\":[1,]}", "unexpected character"},
    {"{\"topic\":\"t\",\"payload\":01}", "expected ',' or '}'"},
    {"{\"topic\":\"t\",\"payload\":\"\\x\"}", "bad escape in string"},
    {"{\"topic\":\"t\",\"payload\":\"\\ud800\"}", "unpaired surrogate in \\u escape"},
    {"{\"topic\":\"t\",\"payload\":\"\xff\"}", "invalid UTF-8"},
    {"{\"topic\":\"t\",\"payload\":\"\xc0\xaf\"}", "invalid UTF-8"},
    {"{\"topic\":\"t\",\"payload\":\"\xed\xa0\x80\"}", "invalid UTF-8"},
    {"{\"topic\":\"t\",\"payload\":\"a\tb\"}", "control character in string"},
    {"{\"topic\":\"t\",\"payload\":\"abc", "unterminated string"},
    {"{\"topic\":\"t\",\"payload\":tru}", "unexpected character"},
    {"{\"topic\":\"t\",\"payload\":{\"a\" 1}}", "expected ':'"},
    {"{\"topic\":\"t\" \"payload\":1}", "expected ',' or '}'"},
    {"{\"topic\":\"t\",\"payload\":-}", "bad number"},
    {"{\"topic\":\"t\",\"payload\":1.}", "bad number"},
    {"{\"topic\":\"t\",\"payload\":{", "unexpected end of line"},
    {"{\"topic\":\"a\\u0000b\",\"payload\":1}", "\"topic\" contains a NUL character (\\u0000)"},
    {"{\"topic\":\"t\",\"key\":\"k\\u0000\",\"payload\":1}",
     "\"key\" contains a NUL character (\\u0000)"},
};

START_TEST(malformed) {
  ndjson_rec_t r;
  const char *err = NULL;
  char *b;
  int rc = parse(bad[_i].line, &r, &err, &b);
  ck_assert_msg(rc == -EINVAL, "line %d accepted: %s", _i, bad[_i].line);
  ck_assert_str_eq(err, bad[_i].err);
  free(b);
}
END_TEST

START_TEST(nesting_limit) {
  char line[2000] = "{\"topic\":\"t\",\"payload\":";
  size_t n = strlen(line);
  for (int i = 0; i < 300; i++) line[n++] = '[';
  for (int i = 0; i < 300; i++) line[n++] = ']';
  line[n++] = '}';
  line[n] = 0;
  ndjson_rec_t r;
  const char *err = NULL;
  char *b;
  ck_assert_int_eq(parse(line, &r, &err, &b), -EINVAL);
  ck_assert_str_eq(err, "nesting too deep");
  free(b);
}
END_TEST

START_TEST(validate) {
  const char *err = NULL;
  ck_assert_int_eq(ndjson_validate(" {\"a\":[1,{\"b\":null}]} ", 22, &err), 0);
  ck_assert_int_eq(ndjson_validate("{\"a\":1} 2", 9, &err), -EINVAL);
  ck_assert_str_eq(err, "trailing characters after the value");
}
END_TEST

/* Every special byte at every offset of a long string: the 16-byte scan must stop
 * on it wherever it falls, and the tail after the last full block is scanned too. */
START_TEST(special_byte_at_every_offset) {
  static const struct {
    const char *ins, *err, *text;
  } cases[] = {
      {"\\n", NULL, "\n"},
      {"\\u00e9", NULL, "\xc3\xa9"},
      {"\\ud83d\\ude00", NULL, "\xf0\x9f\x98\x80"},
      {"\xc3\xa9", NULL, "\xc3\xa9"},
      {"\x01", "control character in string", NULL},
      {"\xff", "invalid UTF-8", NULL},
      {"\\q", "bad escape in string", NULL},
      /* several escapes in one block: classified together, or one at a time when a
       * backslash is escaped, an escape crosses the block or one is not one letter */
      {"\\\"x\\/y\\t", NULL, "\"x/y\t"},
      {"\\\\", NULL, "\\"},
      {"\\\\\\\"", NULL, "\\\""},
      {"\\n\\u0041\\r", NULL, "\nA\r"},
      {"\\n\\q", "bad escape in string", NULL},
      {"\\\"\x01", "control character in string", NULL},
      {"\\t\xc3\xa9\\b", NULL, "\t\xc3\xa9\b"},
      {"\\f\xff", "invalid UTF-8", NULL},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    for (int at = 0; at < 40; at++) {
      char line[200], want[100];
      int n = snprintf(line, sizeof line, "{\"topic\":\"t\",\"payload\":\"%.*s%s%.*s\"}", at,
                       "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", cases[c].ins,
                       40 - at, "0123456789012345678901234567890123456789012345");
      ndjson_rec_t r;
      const char *err = NULL;
      int rc = ndjson_parse(line, (size_t)n, &r, &err);
      if (cases[c].err) {
        ck_assert_msg(rc == -EINVAL, "case %zu at %d accepted", c, at);
        ck_assert_str_eq(err, cases[c].err);
        continue;
      }
      ck_assert_msg(rc == 0, "case %zu at %d: %s", c, at, err);
      snprintf(want, sizeof want, "%.*s%s%.*s", at,
               "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", cases[c].text, 40 - at,
               "0123456789012345678901234567890123456789012345");
      char copy[200];
      size_t m = ndjson_unescape_to(copy, r.payload, r.payload_len);
      copy[m] = 0;
      ck_assert_str_eq(copy, want);
      r.payload_len = ndjson_unescape(r.payload, r.payload_len);
      r.payload[r.payload_len] = 0;
      ck_assert_str_eq(r.payload, want);
    }
  }
}
END_TEST

START_TEST(ids) {
  ndjson_rec_t r;
  const char *err = NULL;
  char *b;
  ck_assert_int_eq(
      parse("{\"topic\":\"t\",\"payload\":1,\"id\":-9223372036854775808}", &r, &err, &b), 0);
  ck_assert(r.id == INT64_MIN);
  free(b);
  ck_assert_int_eq(
      parse("{\"topic\":\"t\",\"payload\":1,\"id\":9223372036854775807}", &r, &err, &b), 0);
  ck_assert(r.id == INT64_MAX);
  free(b);
  ck_assert_int_eq(
      parse("{\"topic\":\"t\",\"payload\":1,\"id\":9223372036854775808}", &r, &err, &b), -EINVAL);
  ck_assert_str_eq(err, "\"id\" must be an integer");
  free(b);
  ck_assert_int_eq(parse("{\"topic\":\"t\",\"payload\":1,\"id\":1e3}", &r, &err, &b), -EINVAL);
  free(b);
}
END_TEST

Suite *unit_suite(void) {
  Suite *s = suite_create("ndjson");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, fields);
  tcase_add_test(tc, string_payload_unescaped);
  tcase_add_test(tc, blank_line);
  tcase_add_loop_test(tc, malformed, 0, (int)(sizeof bad / sizeof bad[0]));
  tcase_add_test(tc, nesting_limit);
  tcase_add_test(tc, validate);
  tcase_add_test(tc, special_byte_at_every_offset);
  tcase_add_test(tc, ids);
  suite_add_tcase(s, tc);
  return s;
}
