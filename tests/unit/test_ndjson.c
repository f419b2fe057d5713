/* Tests of the NDJSON event-line scanner: fields, unescaping, and every way a line
 * can be malformed. */
#include <check.h>
#include <errno.h>
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

int main(void) {
  Suite *s = suite_create("ndjson");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, fields);
  tcase_add_test(tc, string_payload_unescaped);
  tcase_add_test(tc, blank_line);
  tcase_add_loop_test(tc, malformed, 0, (int)(sizeof bad / sizeof bad[0]));
  tcase_add_test(tc, nesting_limit);
  tcase_add_test(tc, validate);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed ? 1 : 0;
}
