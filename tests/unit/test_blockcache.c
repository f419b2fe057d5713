/* Tests of the cache of freed blocks: a block comes back only for its own size, the
 * byte cap holds, and draining hands every block back once. */
#include <check.h>

#include "check_main.h"
#include <stdlib.h>

#include "blockcache.h"

START_TEST(same_size_only) {
  blockcache_t c;
  blockcache_init(&c, 1 << 20);
  ck_assert_ptr_null(blockcache_take(&c, 64));
  void *a = malloc(64), *b = malloc(64), *d = malloc(96);
  ck_assert_int_eq(blockcache_keep(&c, a, 64), 1);
  ck_assert_int_eq(blockcache_keep(&c, b, 64), 1);
  ck_assert_int_eq(blockcache_keep(&c, d, 96), 1);
  ck_assert_uint_eq(c.bytes, 224);
  ck_assert_ptr_null(blockcache_take(&c, 63));
  ck_assert_ptr_null(blockcache_take(&c, 65));
  ck_assert_ptr_eq(blockcache_take(&c, 64), b); /* last kept, first out */
  ck_assert_ptr_eq(blockcache_take(&c, 64), a);
  ck_assert_ptr_null(blockcache_take(&c, 64));
  ck_assert_ptr_eq(blockcache_take(&c, 96), d);
  ck_assert_uint_eq(c.bytes, 0);
  free(a), free(b), free(d);
}
END_TEST

START_TEST(sizes_and_cap) {
  blockcache_t c;
  blockcache_init(&c, 100);
  char small[8], big[BLOCKCACHE_SIZES + 1];
  ck_assert_int_eq(blockcache_keep(&c, NULL, 32), 0);
  ck_assert_int_eq(blockcache_keep(&c, small, sizeof small), 0); /* too small for a link */
  ck_assert_int_eq(blockcache_keep(&c, big, sizeof big), 0);     /* too big to be kept */
  void *a = malloc(48), *b = malloc(48), *d = malloc(48);
  ck_assert_int_eq(blockcache_keep(&c, a, 48), 1);
  ck_assert_int_eq(blockcache_keep(&c, b, 48), 1);
  ck_assert_int_eq(blockcache_keep(&c, d, 48), 0); /* 144 > 100 */
  ck_assert_uint_eq(c.bytes, 96);
  ck_assert_ptr_eq(blockcache_take(&c, 48), b);
  ck_assert_int_eq(blockcache_keep(&c, d, 48), 1); /* room again */
  ck_assert_ptr_eq(blockcache_take(&c, 48), d);
  ck_assert_ptr_eq(blockcache_take(&c, 48), a);
  ck_assert_uint_eq(c.bytes, 0);
  free(a), free(b), free(d);
}
END_TEST

static int released;

/* Counts a drained block off its size's count (arg) and frees it. */
static void release(void *arg, void *p, size_t size) {
  int *kept = arg;
  kept[size]--, released++;
  free(p);
}

/* Random keeps and takes over many sizes, checked against a count per size; then
 * draining returns each block once with its size. */
START_TEST(random_then_drain) {
  enum { N = 4000 };
  static void *blocks[N];
  static size_t sizes[N];
  static int kept[BLOCKCACHE_SIZES + 1];
  blockcache_t c;
  blockcache_init(&c, 64 * 1024);
  int live = 0;
  size_t bytes = 0;
  srand(7);
  for (int step = 0; step < 100000; step++) {
    size_t s = 16 + (size_t)(rand() % (BLOCKCACHE_SIZES - 15));
    if (rand() % 2) {
      if (live == N) continue;
      void *p = malloc(s);
      if (blockcache_keep(&c, p, s)) {
        kept[s]++, bytes += s;
        blocks[live] = p, sizes[live++] = s;
      } else {
        ck_assert_uint_gt(bytes + s, 64 * 1024);
        free(p);
      }
    } else {
      void *p = blockcache_take(&c, s);
      ck_assert_int_eq(p != NULL, kept[s] > 0);
      if (!p) continue;
      kept[s]--, bytes -= s;
      int i = 0;
      while (blocks[i] != p) i++; /* it must be one kept with this size */
      ck_assert_uint_eq(sizes[i], s);
      free(p);
      blocks[i] = blocks[--live], sizes[i] = sizes[live];
    }
    ck_assert_uint_eq(c.bytes, bytes);
  }
  released = 0;
  blockcache_drain(&c, release, kept);
  ck_assert_int_eq(released, live);
  ck_assert_ptr_null(blockcache_take(&c, sizes[0]));
  ck_assert_uint_eq(c.bytes, 0);
  for (size_t k = 0; k <= BLOCKCACHE_SIZES; k++) ck_assert_int_eq(kept[k], 0);
}
END_TEST

Suite *unit_suite(void) {
  Suite *s = suite_create("blockcache");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, same_size_only);
  tcase_add_test(tc, sizes_and_cap);
  tcase_add_test(tc, random_then_drain);
  suite_add_tcase(s, tc);
  return s;
}
