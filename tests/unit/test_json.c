/* Tests of the JSON decoder (src/json.c) against cjson: the payloads the bench and
 * the end-to-end tests use, edge cases where a decoder could differ, and random
 * documents (valid ones and the same mutated), each decoded both ways. */
#include <check.h>

#include "check_main.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_diff.h"

static lua_State *L;

static void setup(void) {
  L = json_diff_state();
  ck_assert_ptr_nonnull(L);
}

static void teardown(void) { lua_close(L); }

static void check_same(const char *text, size_t len) {
  const char *why = json_diff(L, "same", text, len);
  ck_assert_msg(why == NULL, "decode differs on <%.*s>: %.200s", (int)(len < 300 ? len : 300), text,
                why);
  why = json_diff(L, "same_payload", text, len);
  ck_assert_msg(why == NULL, "payload decode differs on <%.*s>: %.200s",
                (int)(len < 300 ? len : 300), text, why);
  why = json_diff(L, "same_raw", text, len);
  ck_assert_msg(why == NULL, "raw payload decode differs on <%.*s>: %.200s",
                (int)(len < 300 ? len : 300), text, why);
}

/* A string payload as it comes in an NDJSON line: its escaped body. */
static void check_raw(const char *raw) {
  const char *why = json_diff(L, "same_raw", raw, strlen(raw));
  ck_assert_msg(why == NULL, "raw payload decode differs on <%s>: %.200s", raw, why);
}

/* The ~200-byte payload of the side-by-side bench (lib/outbox.js, makePayload). */
static size_t bench_payload(char *out, size_t cap, int i) {
  int n = snprintf(out, cap,
                   "{\"id\":%d,\"type\":\"order.created\",\"key\":\"order-%06d\",\"data\":{"
                   "\"customer\":\"cust-%04d\",\"amount\":%d.%02d,\"currency\":\"EUR\",\"items\":["
                   "{\"sku\":\"A-%03d\",\"qty\":%d},{\"sku\":\"B-%03d\",\"qty\":%d}],\"note\":\"",
                   1000000 + i, i % 1000000, i % 10000, 100 + (i * 37) % 900, i % 100, i % 1000,
                   1 + i % 9, (i * 7) % 1000, 1 + (i * 3) % 9);
  while (n < 197) out[n++] = 'x';
  memcpy(out + n, "\"}}", 4);
  return (size_t)n + 3;
}

START_TEST(acceptance_payloads) {
  char buf[512];
  for (int i = 0; i < 2000; i++) {
    size_t n = bench_payload(buf, sizeof buf, i);
    check_same(buf, n);
  }
  static const char *docs[] = {
      /* tests/bench/core.sh, tests/bench/http.sh, the README's examples */
      "{\"order\":{\"id\":1234567,\"customer\":\"c-99812\",\"email\":\"ada@example.com\","
      "\"currency\":\"EUR\"},\"items\":[{\"sku\":\"A-100\",\"qty\":2,\"price\":19.99},{\"sku\":"
      "\"B-220\",\"qty\":1,\"price\":5.5}],\"total\":45.48,\"note\":\"leave at door\"}",
      "{\"order\":17,\"amount\":4548,\"currency\":\"EUR\"}",
      "{\"email\":\"a@b.c\"}",
      "{\"order\":7}",
  };
  for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) check_same(docs[i], strlen(docs[i]));
}
END_TEST

static const char *edge[] = {"0",
                             "-0",
                             "-0.0",
                             "1",
                             "-1",
                             "1.5",
                             "1e3",
                             "1E+3",
                             "1e-3",
                             "123456789012345678",
                             "9007199254740993",
                             "12345678901234567890",
                             "-9223372036854775809",
                             "1e400",
                             "-1e400",
                             "1e-400",
                             "0.1",
                             "0.30000000000000004",
                             "2.2250738585072014e-308",
                             "4.9e-324",
                             "1.7976931348623157e308",
                             "123.456e-7",
                             "0.000000000000000000000000001",
                             "100.00",
                             "1234567890123456789",
                             "12345678901234567891",
                             "[1e22,1e23,9007199254740992.0]",
                             "true",
                             "false",
                             "null",
                             "[null,null]",
                             "{\"a\":null}",
                             "\"\"",
                             "\"a\\u0000b\"",
                             "\"\\ud83d\\ude00\"",
                             "\"\\u00e9\\u20ac\"",
                             "\"\\ud83d\"",
                             "\"\\ude00\"",
                             "\"\\ud83dx\"",
                             "\"\\u12\"",
                             "\"\\x\"",
                             "\"\\/\\b\\f\\n\\r\\t\\\"\\\\\"",
                             "\"\xff\xfe\"",
                             "\"\xc3\"",
                             "\"\xed\xa0\x80\"",
                             "\"a\tb\"",
                             "\"a\nb\"",
                             "{\"a\":1,\"a\":2}",
                             "{\"a\":{\"a\":[]}}",
                             "[]",
                             "{}",
                             "[[]]",
                             "[{}]",
                             " [ 1 , 2 ] ",
                             "\t\r\n1\n",
                             "",
                             " ",
                             "[",
                             "]",
                             "{",
                             "[1,]",
                             "[1 2]",
                             "{\"a\"}",
                             "{\"a\":}",
                             "{\"a\" 1}",
                             "{1:2}",
                             "{\"a\":1,}",
                             "[1]x",
                             "1 2",
                             "01",
                             "-01",
                             "+1",
                             ".5",
                             "1.",
                             "1.e3",
                             "1e",
                             "1e+",
                             "-",
                             "--1",
                             "0x10",
                             "-0x10",
                             "Infinity",
                             "-Infinity",
                             "NaN",
                             "nan",
                             "inf",
                             "tru",
                             "truex",
                             "nul",
                             "falsey",
                             "[true,false]",
                             "\"abc",
                             "[\"a\",",
                             "\"\\\"",
                             "\x01",
                             "\"\x7f\"",
                             "[1,\"2\",[3,{\"4\":5}]]",
                             "{\"\":\"\"}",
                             "{\"k\\u0041\":\"v\\u0042\"}"};

START_TEST(edge_cases) {
  for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++) check_same(edge[i], strlen(edge[i]));
  /* bytes a Lua string may hold but C strings may not */
  check_same("[1]\0", 4);
  check_same("\"a\0b\"", 5);
  check_same("\0\0", 2);
}
END_TEST

/* Bodies read straight (their only escapes are the quotes of their strings) and
 * bodies that must be unescaped first: escapes inside strings, escaped blanks,
 * quotes written as \u0022, stray quotes and backslashes. */
START_TEST(raw_bodies) {
  static const char *raw[] = {
      "{\\\"a\\\":1}",
      "{\\\"a\\\":\\\"b\\\"}",
      "\\\"a\\\"",
      "{\\\"a\\\":\\\"x\\\\\\\"y\\\"}", /* x\"y: an escaped quote inside */
      "{\\\"a\\\":\\\"x\\\\\\\\\\\"}",  /* x\\ */
      "{\\\"a\\\":\\\"x\\\\ny\\\"}",    /* x\ny */
      "{\\\"a\\\":\\\"x\\\\u00e9\\\"}", /* x\u00e9 */
      "{\\\"a\\\":\\\"x\\/\\\"}",       /* x/ written x\/ in the body */
      "{\\\"a\\\":\\\"x\\ny\\\"}",      /* a newline inside the string */
      "{\\\"a\\\":\\\"\\u00e9\\u20ac\\\"}",
      "{\\\"a\\\":\\\"\\ud83d\\ude00\\\"}",
      "{\\\"a\\\":\\\"\\ud83d\\\"}",
      "{\\n  \\\"a\\\": [1, 2]\\n}", /* escaped blanks */
      "{\\t\\\"a\\\":\\r\\n1}",
      "{\\u0022a\\u0022:1}", /* quotes written \u0022 */
      "\\u0022a\\u0022",
      "\\u005b1,2\\u005d",
      "{\\/\\\"a\\\":1}",
      "{\\\"a\\\":1}\\\\",
      "\\\"",
      "\\\"abc",
      "\\\"abc\\\\\\\"",
      "\"a\"", /* quotes that are not escaped */
      "\\\"a\\\"b\\\"",
      "\\\"\xc3\xa9\\\"",
      "\\\"\xc3\\\"",
      "\\\"\xff\\\"",
      "\\\"a\tb\\\"",
      "[\\\"\\\\\\\"\\\\\\\"\\\"]",
      "[1,\\\"x\\\",{\\\"y\\\":[true,false,null]},-0.5e3]",
      "",
      "\\\\",
      "\\u",
      "\\u00",
      "{\\\"a\\\":1,\\\"a\\\":2}",
      "{\\\"a\\\":01}",
      "[1e5\\\"]",
  };
  for (size_t i = 0; i < sizeof raw / sizeof raw[0]; i++) check_raw(raw[i]);
}
END_TEST

/* Documents of one shape whose strings change, so that the memo of short strings
 * (by place in the document) holds a different string from the one that comes. */
START_TEST(changing_strings) {
  char buf[256];
  static const char *v[] = {"a", "b", "ab", "", "abcdefghijklmnopqrstuvwxyz", "ba", "a"};
  for (int i = 0; i < 3000; i++) {
    const char *x = v[i % 7], *y = v[(i / 7) % 7];
    int n =
        snprintf(buf, sizeof buf, "{\"%s\":\"%s\",\"k\":[\"%s\",\"%s\"]}", y, x, i % 3 ? x : y, y);
    check_same(buf, (size_t)n);
  }
}
END_TEST

START_TEST(nesting) {
  static char buf[4000];
  for (int depth = 250; depth <= 1010; depth += 5) {
    int n = 0;
    for (int i = 0; i < depth; i++) buf[n++] = i % 2 ? '[' : '[';
    buf[n++] = '1';
    for (int i = 0; i < depth; i++) buf[n++] = ']';
    check_same(buf, (size_t)n);
    n = 0;
    for (int i = 0; i < depth; i++) n += snprintf(buf + n, sizeof buf - (size_t)n, "{\"a\":");
    if (n > 3000) break;
    buf[n++] = '1';
    for (int i = 0; i < depth; i++) buf[n++] = '}';
    check_same(buf, (size_t)n);
  }
}
END_TEST

START_TEST(large_containers) {
  static char buf[200000];
  int n = 0;
  buf[n++] = '[';
  for (int i = 0; i < 20000; i++)
    n += snprintf(buf + n, sizeof buf - (size_t)n, "%s%d", i ? "," : "", i * 7);
  buf[n++] = ']';
  check_same(buf, (size_t)n);
  n = 0;
  buf[n++] = '{';
  for (int i = 0; i < 5000; i++)
    n += snprintf(buf + n, sizeof buf - (size_t)n, "%s\"k%d\":[%d]", i ? "," : "", i % 4000, i);
  buf[n++] = '}';
  check_same(buf, (size_t)n);
}
END_TEST

/* ---- random documents */

typedef struct out {
  char buf[8192];
  size_t n;
} out_t;

static uint64_t rng = 0x9E3779B97F4A7C15ULL;

static unsigned rnd(unsigned n) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return (unsigned)(rng % n);
}

static void put(out_t *o, const char *s) {
  size_t n = strlen(s);
  if (o->n + n < sizeof o->buf) memcpy(o->buf + o->n, s, n), o->n += n;
}

static void ws(out_t *o) {
  static const char *w[] = {"", "", "", " ", "\n", "\t", "\r\n  "};
  put(o, w[rnd(7)]);
}

static void rnd_string(out_t *o) {
  static const char *parts[] = {"a",
                                "key",
                                "EUR",
                                "\\\"",
                                "\\\\",
                                "\\/",
                                "\\n",
                                "\\t",
                                "\\u00e9",
                                "\\u20AC",
                                "\\ud83d\\ude00",
                                "\xc3\xa9",
                                "\xe2\x82\xac",
                                "\xf0\x9f\x98\x80",
                                "x",
                                " ",
                                "0123456789abcdef",
                                "\\u0000",
                                "\\b\\f\\r"};
  put(o, "\"");
  for (unsigned i = rnd(6); i > 0; i--) put(o, parts[rnd(sizeof parts / sizeof parts[0])]);
  put(o, "\"");
}

static void rnd_number(out_t *o) {
  char b[64];
  switch (rnd(8)) {
  case 0: snprintf(b, sizeof b, "%u", rnd(10)); break;
  case 1: snprintf(b, sizeof b, "-%u", rnd(100000)); break;
  case 2: snprintf(b, sizeof b, "%u%09u%09u", rnd(1000), rnd(1000000000), rnd(1000000000)); break;
  case 3: snprintf(b, sizeof b, "%u.%0*u", rnd(100000), 1 + (int)rnd(9), rnd(1000000000)); break;
  case 4:
    snprintf(b, sizeof b, "%u.%ue%s%u", rnd(10), rnd(1000), rnd(2) ? "-" : "+", rnd(400));
    break;
  case 5: snprintf(b, sizeof b, "%uE%u", 1 + rnd(9), rnd(30)); break;
  case 6: snprintf(b, sizeof b, "-0.%0*u", 1 + (int)rnd(25), rnd(1000)); break;
  default: snprintf(b, sizeof b, "%u.%u", rnd(1u << 31), rnd(1u << 31)); break;
  }
  put(o, b);
}

static void rnd_value(out_t *o, int depth) {
  unsigned k = rnd(depth > 5 ? 6 : 8);
  switch (k) {
  case 0: rnd_string(o); break;
  case 1:
  case 2: rnd_number(o); break;
  case 3: put(o, "true"); break;
  case 4: put(o, "false"); break;
  case 5: put(o, "null"); break;
  case 6:
    put(o, "[");
    for (unsigned i = 0, n = rnd(6); i < n; i++) {
      if (i) put(o, ",");
      ws(o), rnd_value(o, depth + 1), ws(o);
    }
    put(o, "]");
    break;
  default:
    put(o, "{");
    for (unsigned i = 0, n = rnd(6); i < n; i++) {
      if (i) put(o, ",");
      ws(o), rnd_string(o), ws(o), put(o, ":"), ws(o), rnd_value(o, depth + 1), ws(o);
    }
    put(o, "}");
    break;
  }
}

START_TEST(random_documents) {
  static const char junk[] = "{}[],:\"\\ 0123456789.eE+-tfnaxu\x01\xff\xc3";
  static out_t o;
  for (int i = 0; i < 20000; i++) {
    o.n = 0;
    ws(&o), rnd_value(&o, 0), ws(&o);
    check_same(o.buf, o.n);
    if (o.n == 0) continue;
    /* the same with one byte changed, dropped or added, or cut short */
    size_t at = rnd((unsigned)o.n);
    switch (rnd(4)) {
    case 0: o.buf[at] = junk[rnd(sizeof junk - 1)]; break;
    case 1: memmove(o.buf + at, o.buf + at + 1, o.n - at - 1), o.n--; break;
    case 2:
      if (o.n + 1 < sizeof o.buf) {
        memmove(o.buf + at + 1, o.buf + at, o.n - at), o.n++;
        o.buf[at] = junk[rnd(sizeof junk - 1)];
      }
      break;
    default: o.n = at; break;
    }
    check_same(o.buf, o.n);
  }
}
END_TEST

Suite *unit_suite(void) {
  Suite *s = suite_create("json");
  TCase *tc = tcase_create("core");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, acceptance_payloads);
  tcase_add_test(tc, edge_cases);
  tcase_add_test(tc, raw_bodies);
  tcase_add_test(tc, changing_strings);
  tcase_add_test(tc, nesting);
  tcase_add_test(tc, large_containers);
  tcase_add_test(tc, random_documents);
  suite_add_tcase(s, tc);
  return s;
}
