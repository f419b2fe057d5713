/* Tests of the id set: a random workload checked against a plain array. */
#include <check.h>

#include "check_main.h"
#include <stdlib.h>

#include "idset.h"

START_TEST(basic) {
  idset_t s = {0};
  ck_assert_int_eq(idset_has(&s, 5), 0);
  idset_del(&s, 5); /* empty set: nothing to do */
  ck_assert_int_eq(idset_add(&s, 5), 0);
  ck_assert_int_eq(idset_add(&s, 5), 0);
  ck_assert_uint_eq(s.n, 1);
  ck_assert_int_eq(idset_has(&s, 5), 1);
  idset_del(&s, 5);
  ck_assert_int_eq(idset_has(&s, 5), 0);
  ck_assert_uint_eq(s.n, 0);
  idset_free(&s);
}
END_TEST

/* 200,000 random add/del over ids that collide on purpose (multiples of 2^29 hash
 * close together), checked against a shadow array after every step. */
START_TEST(random_against_shadow) {
  enum { RANGE = 3000 };
  static char in[RANGE];
  idset_t s = {0};
  size_t n = 0;
  srand(12345);
  for (int step = 0; step < 200000; step++) {
    int k = rand() % RANGE;
    int64_t id = (int64_t)(k + 1) * ((k % 3) ? 1 : ((int64_t)1 << 29));
    if (rand() % 2) {
      ck_assert_int_eq(idset_add(&s, id), 0);
      n += !in[k];
      in[k] = 1;
    } else {
      idset_del(&s, id);
      n -= in[k];
      in[k] = 0;
    }
    if (step % 997 == 0) {
      for (int j = 0; j < RANGE; j++) {
        int64_t jd = (int64_t)(j + 1) * ((j % 3) ? 1 : ((int64_t)1 << 29));
        if (idset_has(&s, jd) != in[j]) ck_abort_msg("step %d: id %lld wrong", step, (long long)jd);
      }
    }
    if (s.n != n) ck_abort_msg("step %d: count %zu, expected %zu", step, s.n, n);
  }
  size_t members = 0;
  for (size_t i = 0; i < s.cap; i++) members += s.slot[i] != 0;
  ck_assert_uint_eq(members, n);
  idset_free(&s);
}
END_TEST

Suite *unit_suite(void) {
  Suite *su = suite_create("idset");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, basic);
  tcase_add_test(tc, random_against_shadow);
  suite_add_tcase(su, tc);
  return su;
}
