/* Unit tests for src/topics.c: patterns as ranges, union, intersection, difference,
 * matching, --topics parsing. Every set is checked against a list of sample topics
 * with the rule a user states: exact topic, or prefix before a final '*'. */
#include <check.h>

#include "check_main.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "topics.h"

static const char *const SAMPLES[] = {"",
                                      "a",
                                      "order",
                                      "order.",
                                      "order.created",
                                      "order.eu.paid",
                                      "order/",
                                      "order-x",
                                      "orders",
                                      "pay",
                                      "user.created",
                                      "user.createdx",
                                      "user.vip.gold",
                                      "zz",
                                      "\xff",
                                      "\xff\xff",
                                      "order.\xff",
                                      "order.\xff\xff"
                                      "a",
                                      "order/a"};
#define NSAMPLES ((int)(sizeof SAMPLES / sizeof SAMPLES[0]))

static int pattern_matches(const char *pat, const char *topic) {
  size_t n = strlen(pat);
  if (n && pat[n - 1] == '*') return strncmp(pat, topic, n - 1) == 0;
  return strcmp(pat, topic) == 0;
}

static int any_matches(const char *const *pats, int n, const char *topic) {
  for (int i = 0; i < n; i++)
    if (pattern_matches(pats[i], topic)) return 1;
  return 0;
}

static void build(topics_t *t, const char *const *pats, int n) {
  for (int i = 0; i < n; i++) ck_assert_int_eq(topics_add(t, pats[i]), 0);
}

/* The set invariant: sorted by lo, non-empty, never touching. */
static void check_invariant(const topics_t *t) {
  for (int i = 0; i < t->n; i++) {
    if (t->v[i].hi) ck_assert_int_lt(strcmp(t->v[i].lo, t->v[i].hi), 0);
    if (i) {
      ck_assert_ptr_nonnull(t->v[i - 1].hi);
      ck_assert_int_lt(strcmp(t->v[i - 1].hi, t->v[i].lo), 0);
    }
  }
}

START_TEST(patterns_as_ranges) {
  topics_t t = {0};
  ck_assert_int_eq(topics_add(&t, "order.*"), 0);
  ck_assert_int_eq(t.n, 1);
  ck_assert_str_eq(t.v[0].lo, "order.");
  ck_assert_str_eq(t.v[0].hi, "order/"); /* the index range a claim seeks */
  ck_assert_int_eq(topics_add(&t, "user.created"), 0);
  ck_assert_int_eq(t.n, 2);
  ck_assert_str_eq(t.v[1].lo, "user.created");
  ck_assert_str_eq(t.v[1].hi, "user.created\x01");
  /* a pattern inside one already there changes nothing */
  ck_assert_int_eq(topics_add(&t, "order.eu.*"), 0);
  ck_assert_int_eq(topics_add(&t, "order.paid"), 0);
  ck_assert_int_eq(t.n, 2);
  ck_assert(!topics_is_all(&t));
  ck_assert_int_eq(topics_add(&t, "*"), 0);
  ck_assert(topics_is_all(&t));
  topics_free(&t);
  ck_assert_int_eq(t.n, 0);
  ck_assert(!topics_match(&t, "a")); /* empty: no topic */
  ck_assert_int_eq(topics_add(&t, "\xff*"), 0);
  ck_assert_ptr_null(t.v[0].hi); /* nothing sorts after every \xff... */
  ck_assert(topics_match(&t, "\xff\xff"));
  ck_assert(!topics_match(&t, "zz"));
  topics_free(&t);
}
END_TEST

static const char *const INC[] = {"order.*", "user.created", "pay", "\xff*", "order.\xff*"};
static const char *const NAR[] = {"order.eu.*", "user.*", "pay*", "zz", "order.\xff\xff*"};
static const char *const EXC[] = {"order.eu.paid", "user.created", "pa*", "order.\xff*"};
#define N(a) ((int)(sizeof a / sizeof a[0]))

START_TEST(algebra_agrees_with_patterns) {
  topics_t inc = {0}, nar = {0}, exc = {0}, both = {0}, left = {0}, all = {0}, none = {0};
  build(&inc, INC, N(INC));
  build(&nar, NAR, N(NAR));
  build(&exc, EXC, N(EXC));
  ck_assert_int_eq(topics_intersect(&both, &inc, &nar), 0);
  ck_assert_int_eq(topics_subtract(&left, &both, &exc), 0);
  check_invariant(&inc);
  check_invariant(&both);
  check_invariant(&left);
  for (int i = 0; i < NSAMPLES; i++) {
    const char *s = SAMPLES[i];
    int in = any_matches(INC, N(INC), s), na = any_matches(NAR, N(NAR), s),
        ex = any_matches(EXC, N(EXC), s);
    ck_assert_msg(topics_match(&inc, s) == in, "inc %s", s);
    ck_assert_msg(topics_match(&both, s) == (in && na), "both %s", s);
    ck_assert_msg(topics_match(&left, s) == (in && na && !ex), "left %s", s);
  }
  /* everything minus a set is its complement; the complement's complement is it */
  ck_assert_int_eq(topics_all(&all), 0);
  topics_t comp = {0}, back = {0};
  ck_assert_int_eq(topics_subtract(&comp, &all, &inc), 0);
  ck_assert_int_eq(topics_subtract(&back, &all, &comp), 0);
  check_invariant(&comp);
  ck_assert(topics_equal(&back, &inc));
  for (int i = 0; i < NSAMPLES; i++)
    ck_assert(topics_match(&comp, SAMPLES[i]) != topics_match(&inc, SAMPLES[i]));
  ck_assert_int_eq(topics_intersect(&back, &inc, &none), 0);
  ck_assert_int_eq(back.n, 0);
  ck_assert_int_eq(topics_subtract(&back, &inc, &all), 0);
  ck_assert_int_eq(back.n, 0);
  ck_assert_int_eq(topics_subtract(&back, &inc, &none), 0);
  ck_assert(topics_equal(&back, &inc));
  topics_t *sets[] = {&inc, &nar, &exc, &both, &left, &all, &comp, &back};
  for (int i = 0; i < N(sets); i++) topics_free(sets[i]);
}
END_TEST

START_TEST(parse_list) {
  topics_t t = {0};
  char err[200];
  ck_assert_int_eq(topics_parse(&t, " order.* , user.created,pay*", err, sizeof err), 0);
  ck_assert(topics_match(&t, "order.x"));
  ck_assert(topics_match(&t, "user.created"));
  ck_assert(topics_match(&t, "payment"));
  ck_assert(!topics_match(&t, "user.deleted"));
  ck_assert_int_eq(topics_parse(&t, "order.*,,user", err, sizeof err), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "empty pattern"));
  ck_assert_int_eq(t.n, 0);
  ck_assert_int_eq(topics_parse(&t, "or*der", err, sizeof err), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "'or*der'"));
  ck_assert_int_eq(topics_parse(&t, "", err, sizeof err), -EINVAL);
  ck_assert_int_eq(topics_parse(&t, "*", err, sizeof err), 0);
  ck_assert(topics_is_all(&t));
  topics_free(&t);
}
END_TEST

Suite *unit_suite(void) {
  Suite *s = suite_create("topics");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, patterns_as_ranges);
  tcase_add_test(tc, algebra_agrees_with_patterns);
  tcase_add_test(tc, parse_list);
  suite_add_tcase(s, tc);
  return s;
}
