/* Unit tests for src/limiter.c: FIFO, the slot limit, per-key lanes, cancel, runtime
 * limit changes, and a property test that runs a shadow model beside the limiter for
 * millions of random operations. */
#include <check.h>

#include "check_main.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "limiter.h"

static limiter_t L;

static void setup(void) { ck_assert_int_eq(limiter_init(&L, 2), 0); }

static void teardown(void) { limiter_free(&L); }

static void admit(limiter_item_t *it, const char *key) {
  memset(it, 0, sizeof(*it));
  ck_assert_int_eq(limiter_admit(&L, it, key, key ? strlen(key) : 0), 0);
}

static int lanes_empty(const limiter_t *l) {
  for (size_t i = 0; i < l->nbuckets; i++) {
    if (l->lanes[i]) return 0;
  }
  return l->nlanes == 0;
}

/* ---- examples ---------------------------------------------------------------- */

START_TEST(init_rejects_zero) {
  limiter_t l;
  ck_assert_int_lt(limiter_init(&l, 0), 0);
  ck_assert_int_lt(limiter_init(&l, -3), 0);
}
END_TEST

START_TEST(basic_fifo) {
  limiter_item_t it[5];
  limiter_set_limit(&L, 10);
  for (int i = 0; i < 5; i++) admit(&it[i], NULL);
  ck_assert_int_eq(L.queued, 5);
  ck_assert_ptr_eq(limiter_peek(&L), &it[0]);
  for (int i = 0; i < 5; i++) {
    limiter_item_t *got = limiter_next(&L);
    ck_assert_ptr_eq(got, &it[i]);
    ck_assert_int_eq(got->state, LIMITER_ACTIVE);
  }
  ck_assert_ptr_null(limiter_next(&L));
  ck_assert_ptr_null(limiter_peek(&L));
  ck_assert_int_eq(L.active, 5);
  ck_assert_int_eq(L.queued, 0);
  for (int i = 0; i < 5; i++) {
    limiter_release(&L, &it[i]);
    ck_assert_int_eq(it[i].state, LIMITER_IDLE);
  }
  ck_assert_int_eq(L.active, 0);
}
END_TEST

START_TEST(never_above_limit) {
  limiter_item_t it[6];
  for (int i = 0; i < 6; i++) admit(&it[i], NULL);
  ck_assert_ptr_eq(limiter_next(&L), &it[0]);
  ck_assert_ptr_eq(limiter_next(&L), &it[1]);
  ck_assert_int_eq(L.active, 2); /* reached N */
  ck_assert_ptr_null(limiter_next(&L));
  ck_assert_ptr_null(limiter_peek(&L));
  ck_assert_int_eq(L.active, 2);
  ck_assert_int_eq(L.queued, 4);
  limiter_release(&L, &it[1]);
  ck_assert_ptr_eq(limiter_next(&L), &it[2]);
  ck_assert_ptr_null(limiter_next(&L));
  limiter_release(&L, &it[0]);
  limiter_release(&L, &it[2]);
  ck_assert_ptr_eq(limiter_next(&L), &it[3]);
  ck_assert_ptr_eq(limiter_next(&L), &it[4]);
  ck_assert_ptr_null(limiter_next(&L));
  ck_assert_int_eq(L.active, 2);
  ck_assert_int_eq(L.peak, 2);
  limiter_release(&L, &it[3]);
  limiter_release(&L, &it[4]);
  ck_assert_ptr_eq(limiter_next(&L), &it[5]);
  limiter_release(&L, &it[5]);
}
END_TEST

START_TEST(per_key_order) {
  limiter_item_t a1, a2, a3, b1, b2, n1;
  limiter_set_limit(&L, 10);
  admit(&a1, "a");
  admit(&a2, "a");
  admit(&b1, "b");
  admit(&a3, "a");
  admit(&n1, NULL);
  admit(&b2, "b");
  ck_assert_int_eq(a1.state, LIMITER_READY);
  ck_assert_int_eq(a2.state, LIMITER_WAITING);
  ck_assert_int_eq(a3.state, LIMITER_WAITING);
  ck_assert_int_eq(b1.state, LIMITER_READY);
  ck_assert_int_eq(b2.state, LIMITER_WAITING);
  ck_assert_int_eq(L.queued, 6);
  ck_assert_uint_eq(L.nlanes, 2);
  /* different keys (and no key) run in parallel; the same key one at a time */
  ck_assert_ptr_eq(limiter_next(&L), &a1);
  ck_assert_ptr_eq(limiter_next(&L), &b1);
  ck_assert_ptr_eq(limiter_next(&L), &n1);
  ck_assert_ptr_null(limiter_next(&L));
  ck_assert_int_eq(L.active, 3);
  limiter_release(&L, &a1);
  ck_assert_int_eq(a2.state, LIMITER_READY);
  ck_assert_ptr_eq(limiter_next(&L), &a2);
  ck_assert_ptr_null(limiter_next(&L));
  limiter_release(&L, &b1);
  limiter_release(&L, &a2);
  ck_assert_ptr_eq(limiter_next(&L), &b2);
  ck_assert_ptr_eq(limiter_next(&L), &a3);
  limiter_release(&L, &b2);
  ck_assert_uint_eq(L.nlanes, 1);
  limiter_release(&L, &a3);
  limiter_release(&L, &n1);
  ck_assert(lanes_empty(&L));
  ck_assert_int_eq(L.active, 0);
  ck_assert_int_eq(L.queued, 0);
}
END_TEST

START_TEST(keys_compare_bytes) {
  limiter_item_t a, b, c;
  limiter_set_limit(&L, 10);
  memset(&a, 0, sizeof(a));
  memset(&b, 0, sizeof(b));
  memset(&c, 0, sizeof(c));
  char k[4] = {'x', '\0', 'y', 'z'};
  ck_assert_int_eq(limiter_admit(&L, &a, k, 4), 0);
  ck_assert_int_eq(limiter_admit(&L, &b, k, 2), 0); /* "x\0" differs from "x\0yz" */
  k[2] = 'Q'; /* the key was copied: changing the caller's bytes changes nothing */
  ck_assert_int_eq(limiter_admit(&L, &c, "x\0yz", 4), 0);
  ck_assert_int_eq(a.state, LIMITER_READY);
  ck_assert_int_eq(b.state, LIMITER_READY);
  ck_assert_int_eq(c.state, LIMITER_WAITING);
  limiter_cancel(&L, &a);
  ck_assert_int_eq(c.state, LIMITER_READY);
  limiter_cancel(&L, &b);
  limiter_cancel(&L, &c);
  ck_assert(lanes_empty(&L));
}
END_TEST

START_TEST(cancel_ready) {
  limiter_item_t it[4];
  for (int i = 0; i < 4; i++) admit(&it[i], NULL);
  limiter_cancel(&L, &it[1]); /* middle */
  ck_assert_int_eq(it[1].state, LIMITER_IDLE);
  ck_assert_int_eq(L.queued, 3);
  limiter_cancel(&L, &it[0]); /* head */
  ck_assert_ptr_eq(limiter_peek(&L), &it[2]);
  limiter_cancel(&L, &it[3]); /* tail */
  ck_assert_int_eq(L.queued, 1);
  ck_assert_ptr_eq(limiter_next(&L), &it[2]);
  ck_assert_ptr_null(limiter_next(&L));
  admit(&it[3], NULL); /* a cancelled item can be admitted again */
  ck_assert_ptr_eq(limiter_next(&L), &it[3]);
  limiter_release(&L, &it[2]);
  limiter_release(&L, &it[3]);
  ck_assert_int_eq(L.active, 0);
  ck_assert_int_eq(L.queued, 0);
}
END_TEST

START_TEST(cancel_waiting_and_head) {
  limiter_item_t a1, a2, a3, a4;
  limiter_set_limit(&L, 10);
  admit(&a1, "k");
  admit(&a2, "k");
  admit(&a3, "k");
  admit(&a4, "k");
  /* a waiting item in the middle */
  limiter_cancel(&L, &a3);
  ck_assert_int_eq(a3.state, LIMITER_IDLE);
  ck_assert_int_eq(L.queued, 3);
  /* the lane head while ready: the next of the key becomes ready */
  limiter_cancel(&L, &a1);
  ck_assert_int_eq(a2.state, LIMITER_READY);
  ck_assert_int_eq(a4.state, LIMITER_WAITING);
  ck_assert_ptr_eq(limiter_next(&L), &a2);
  ck_assert_ptr_null(limiter_next(&L));
  /* the last waiting item */
  limiter_cancel(&L, &a4);
  ck_assert_int_eq(L.queued, 0);
  ck_assert_uint_eq(L.nlanes, 1); /* a2 still holds the lane */
  limiter_release(&L, &a2);
  ck_assert(lanes_empty(&L));
  /* a lone ready item: its lane goes away */
  admit(&a1, "k");
  ck_assert_uint_eq(L.nlanes, 1);
  limiter_cancel(&L, &a1);
  ck_assert(lanes_empty(&L));
  ck_assert_int_eq(L.queued, 0);
  ck_assert_ptr_null(limiter_peek(&L));
}
END_TEST

/* limiter_behind: what waits behind a lane head, ready or active. */
START_TEST(behind_a_head) {
  limiter_item_t a1, a2, a3, n1;
  limiter_set_limit(&L, 10);
  admit(&a1, "k");
  admit(&a2, "k");
  admit(&a3, "k");
  admit(&n1, NULL);
  ck_assert_ptr_eq(limiter_behind(&a1), &a2); /* ready head */
  ck_assert_ptr_null(limiter_behind(&a2));    /* not a head */
  ck_assert_ptr_null(limiter_behind(&n1));    /* no key */
  ck_assert_ptr_eq(limiter_next(&L), &a1);
  ck_assert_ptr_eq(limiter_behind(&a1), &a2); /* active head */
  limiter_cancel(&L, &a2);
  ck_assert_ptr_eq(limiter_behind(&a1), &a3);
  limiter_cancel(&L, &a3);
  ck_assert_ptr_null(limiter_behind(&a1));
  limiter_release(&L, &a1);
  ck_assert_ptr_eq(limiter_next(&L), &n1);
  limiter_release(&L, &n1);
  ck_assert(lanes_empty(&L));
}
END_TEST

START_TEST(runtime_limit_change) {
  limiter_item_t it[8];
  for (int i = 0; i < 8; i++) admit(&it[i], NULL);
  ck_assert_ptr_nonnull(limiter_next(&L));
  ck_assert_ptr_nonnull(limiter_next(&L));
  ck_assert_ptr_null(limiter_next(&L));
  /* up: more start at once */
  limiter_set_limit(&L, 5);
  ck_assert_ptr_eq(limiter_next(&L), &it[2]);
  ck_assert_ptr_eq(limiter_next(&L), &it[3]);
  ck_assert_ptr_eq(limiter_next(&L), &it[4]);
  ck_assert_ptr_null(limiter_next(&L));
  ck_assert_int_eq(L.peak, 5);
  /* down: nobody is stopped, but nothing starts until active < limit */
  limiter_set_limit(&L, 2);
  ck_assert_int_eq(L.active, 5);
  ck_assert_ptr_null(limiter_next(&L));
  limiter_release(&L, &it[0]);
  limiter_release(&L, &it[1]);
  limiter_release(&L, &it[2]);
  ck_assert_int_eq(L.active, 2);
  ck_assert_ptr_null(limiter_next(&L));
  limiter_release(&L, &it[3]);
  ck_assert_ptr_eq(limiter_next(&L), &it[5]);
  ck_assert_ptr_null(limiter_next(&L));
  limiter_set_limit(&L, 0); /* clamped to 1 */
  ck_assert_int_eq(L.limit, 1);
  limiter_release(&L, &it[4]);
  limiter_release(&L, &it[5]);
  ck_assert_ptr_eq(limiter_next(&L), &it[6]);
  ck_assert_ptr_null(limiter_next(&L));
  limiter_release(&L, &it[6]);
  ck_assert_ptr_eq(limiter_next(&L), &it[7]);
  limiter_release(&L, &it[7]);
  ck_assert_int_eq(L.peak, 5);
}
END_TEST

START_TEST(peak_counter) {
  limiter_item_t it[4];
  limiter_set_limit(&L, 4);
  ck_assert_int_eq(L.peak, 0);
  for (int i = 0; i < 4; i++) admit(&it[i], NULL);
  limiter_next(&L);
  limiter_next(&L);
  limiter_next(&L);
  ck_assert_int_eq(L.peak, 3);
  limiter_release(&L, &it[0]);
  limiter_release(&L, &it[1]);
  ck_assert_int_eq(L.peak, 3);
  limiter_next(&L);
  ck_assert_int_eq(L.active, 2);
  ck_assert_int_eq(L.peak, 3);
  limiter_release(&L, &it[2]);
  limiter_release(&L, &it[3]);
}
END_TEST

START_TEST(many_lanes_grow_table) {
  enum { N = 5000 };
  limiter_item_t *it = calloc(N, sizeof(*it));
  char key[32];
  ck_assert_ptr_nonnull(it);
  limiter_set_limit(&L, N);
  for (int i = 0; i < N; i++) {
    snprintf(key, sizeof(key), "key-%d", i);
    ck_assert_int_eq(limiter_admit(&L, &it[i], key, strlen(key)), 0);
    ck_assert_int_eq(it[i].state, LIMITER_READY);
  }
  ck_assert_uint_eq(L.nlanes, N);
  ck_assert_uint_ge(L.nbuckets, N);
  for (int i = 0; i < N; i++) ck_assert_ptr_eq(limiter_next(&L), &it[i]);
  for (int i = 0; i < N; i++) limiter_release(&L, &it[i]);
  ck_assert(lanes_empty(&L));
  /* recycled lanes serve new keys */
  snprintf(key, sizeof(key), "a-much-longer-key-than-before-%d", 1);
  ck_assert_int_eq(limiter_admit(&L, &it[0], key, strlen(key)), 0);
  ck_assert_int_eq(limiter_admit(&L, &it[1], key, strlen(key)), 0);
  ck_assert_int_eq(it[1].state, LIMITER_WAITING);
  limiter_cancel(&L, &it[1]);
  limiter_cancel(&L, &it[0]);
  ck_assert(lanes_empty(&L));
  free(it);
}
END_TEST

/* A blocked or capped class holds back only its own items, in order. */
START_TEST(classes_cap_and_block) {
  limiter_item_t it[6];
  limiter_set_limit(&L, 10);
  ck_assert_int_eq(limiter_set_classes(&L, 2), 0);
  ck_assert_int_eq(L.ncls, 2);
  limiter_set_cap(&L, 1, 1);
  for (int i = 0; i < 6; i++) {
    memset(&it[i], 0, sizeof it[i]);
    it[i].cls = i % 2; /* 0, 2, 4 in class 0; 1, 3, 5 in class 1 */
    ck_assert_int_eq(limiter_admit(&L, &it[i], NULL, 0), 0);
  }
  ck_assert_int_eq(L.cls[1].queued, 3);
  limiter_block(&L, 0, 1);
  ck_assert_ptr_eq(limiter_next(&L), &it[1]);
  ck_assert_ptr_null(limiter_next(&L)); /* class 1 at its cap, class 0 blocked */
  limiter_block(&L, 0, 0);
  ck_assert_ptr_eq(limiter_next(&L), &it[0]);
  ck_assert_ptr_eq(limiter_next(&L), &it[2]);
  limiter_release(&L, &it[1]);
  ck_assert_ptr_eq(limiter_next(&L), &it[3]); /* older than it[4] */
  ck_assert_ptr_eq(limiter_next(&L), &it[4]);
  ck_assert_ptr_null(limiter_next(&L));
  ck_assert_int_eq(L.cls[0].active, 3);
  ck_assert_int_eq(L.cls[1].active, 1);
  ck_assert_int_eq(limiter_set_classes(&L, 1), 0); /* never shrinks */
  ck_assert_int_eq(L.ncls, 2);
  limiter_cancel(&L, &it[5]);
  for (int i = 0; i < 5; i++)
    if (i != 1) limiter_release(&L, &it[i]);
  ck_assert_int_eq(L.active, 0);
  ck_assert_int_eq(L.queued, 0);
}
END_TEST

/* ---- property test ------------------------------------------------------------ */

/* ck_assert_* talks to the test runner on every success (a mark point); the hot loop
 * checks with a plain `if` and only calls into Check on failure. */
#define REQUIRE(cond)                                                                              \
  do {                                                                                             \
    if (!(cond)) ck_abort_msg("%s:%d: %s", __FILE__, __LINE__, #cond);                             \
  } while (0)

enum { P_ITEMS = 300, P_KEYS = 50, P_OPS = 1000000, P_CLASSES = 4 };

typedef struct {
  limiter_item_t item;
  int state;    /* shadow state (enum limiter_item_state) */
  int key;      /* -1: no key */
  uint64_t seq; /* admission number */
  int cls;
} pitem_t;

typedef struct {
  pitem_t items[P_ITEMS];
  int ready[P_ITEMS]; /* shadow ready FIFO (item indices) */
  int nready;
  int lane[P_KEYS][P_ITEMS]; /* shadow lanes: live items of the key, arrival order */
  int nlane[P_KEYS];
  uint64_t last_released[P_KEYS]; /* seq of the key's last released item */
  uint64_t rng;
  uint64_t seq;
  long admitted, released, cancelled;
  int active, queued;
  int ceiling; /* active may exceed limit only after a lowering, never grow past it */
  int classes; /* 1: items spread over P_CLASSES classes with caps and blocks */
  int cap[P_CLASSES], blocked[P_CLASSES], cls_active[P_CLASSES];
  long blocked_skips; /* starts that passed over an older item of a closed class */
} model_t;

static uint64_t prng(model_t *m) {
  uint64_t z = (m->rng += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static int pick(model_t *m, int n) { return (int)(prng(m) % (uint64_t)n); }

static void list_remove(int *list, int *n, int v) {
  for (int i = 0; i < *n; i++) {
    if (list[i] == v) {
      memmove(&list[i], &list[i + 1], (size_t)(*n - i - 1) * sizeof(int));
      (*n)--;
      return;
    }
  }
  ck_abort_msg("item %d missing from a shadow list", v);
}

static void shadow_ready(model_t *m, int i) {
  m->items[i].state = LIMITER_READY;
  m->ready[m->nready++] = i;
}

/* The head of key k left: the next live item of the key becomes ready. */
static void shadow_advance(model_t *m, int k) {
  if (m->nlane[k] > 0) shadow_ready(m, m->lane[k][0]);
}

/* Random item in shadow state `state`, or -1. */
static int find_in_state(model_t *m, int state) {
  int start = pick(m, P_ITEMS);
  for (int j = 0; j < P_ITEMS; j++) {
    int i = (start + j) % P_ITEMS;
    if (m->items[i].state == state) return i;
  }
  return -1;
}

static void op_admit(model_t *m) {
  int i = find_in_state(m, LIMITER_IDLE);
  if (i < 0) return;
  pitem_t *p = &m->items[i];
  char key[16];
  p->key = pick(m, 5) == 0 ? -1 : pick(m, P_KEYS);
  p->seq = ++m->seq;
  p->cls = m->classes ? pick(m, P_CLASSES) : 0;
  p->item.cls = p->cls;
  int n = p->key < 0 ? 0 : snprintf(key, sizeof(key), "key:%d", p->key);
  REQUIRE(limiter_admit(&L, &p->item, key, (size_t)n) == 0);
  m->admitted++;
  m->queued++;
  if (p->key < 0) {
    shadow_ready(m, i);
    return;
  }
  m->lane[p->key][m->nlane[p->key]++] = i;
  if (m->nlane[p->key] == 1)
    shadow_ready(m, i);
  else
    p->state = LIMITER_WAITING;
}

static int class_may_start(const model_t *m, int c) {
  return !m->blocked[c] && (m->cap[c] == 0 || m->cls_active[c] < m->cap[c]);
}

/* The oldest ready item of a class that may start, or -1. */
static int shadow_next(model_t *m) {
  if (m->active >= L.limit) return -1;
  for (int j = 0; j < m->nready; j++) {
    if (class_may_start(m, m->items[m->ready[j]].cls)) {
      if (j > 0) m->blocked_skips++;
      return m->ready[j];
    }
  }
  return -1;
}

static void op_next(model_t *m) {
  limiter_item_t *got = limiter_next(&L);
  int i = shadow_next(m);
  if (i < 0) {
    REQUIRE(got == NULL);
    return;
  }
  REQUIRE(got == &m->items[i].item); /* the oldest ready item that may start */
  list_remove(m->ready, &m->nready, i);
  m->items[i].state = LIMITER_ACTIVE;
  m->active++;
  m->queued--;
  int c = m->items[i].cls;
  m->cls_active[c]++;
  REQUIRE(L.active <= L.limit);                            /* a start never goes above the limit */
  REQUIRE(m->cap[c] == 0 || L.cls[c].active <= m->cap[c]); /* nor above its class's cap */
  REQUIRE(!m->blocked[c]);
}

static void op_set_cap(model_t *m) {
  int c = pick(m, P_CLASSES), cap = pick(m, 6);
  limiter_set_cap(&L, c, cap);
  m->cap[c] = cap;
}

static void op_block(model_t *m) {
  int c = pick(m, P_CLASSES);
  m->blocked[c] = !m->blocked[c];
  limiter_block(&L, c, m->blocked[c]);
}

static void release_item(model_t *m, int i) {
  pitem_t *p = &m->items[i];
  limiter_release(&L, &p->item);
  p->state = LIMITER_IDLE;
  m->active--;
  m->cls_active[p->cls]--;
  m->released++;
  if (m->ceiling > L.limit && m->active < m->ceiling)
    m->ceiling = m->active > L.limit ? m->active : L.limit;
  if (p->key < 0) return;
  REQUIRE(p->seq > m->last_released[p->key]); /* same key: admit order */
  m->last_released[p->key] = p->seq;
  REQUIRE(m->lane[p->key][0] == i);
  list_remove(m->lane[p->key], &m->nlane[p->key], i);
  shadow_advance(m, p->key);
}

static void op_release(model_t *m) {
  int i = find_in_state(m, LIMITER_ACTIVE);
  if (i >= 0) release_item(m, i);
}

static void op_cancel(model_t *m) {
  int i = find_in_state(m, pick(m, 2) ? LIMITER_READY : LIMITER_WAITING);
  if (i < 0) return;
  pitem_t *p = &m->items[i];
  int was_ready = p->state == LIMITER_READY;
  limiter_cancel(&L, &p->item);
  p->state = LIMITER_IDLE;
  m->queued--;
  m->cancelled++;
  if (was_ready) list_remove(m->ready, &m->nready, i);
  if (p->key < 0) return;
  list_remove(m->lane[p->key], &m->nlane[p->key], i);
  if (was_ready) shadow_advance(m, p->key);
}

static void op_set_limit(model_t *m) {
  int limit = 1 + pick(m, 40);
  limiter_set_limit(&L, limit);
  m->ceiling = m->active > limit ? m->active : limit;
}

/* Every invariant, after every operation. */
static void check_model(model_t *m) {
  int head_of[P_KEYS];
  REQUIRE(L.active == m->active);
  REQUIRE(L.queued == m->queued);
  REQUIRE(L.active <= m->ceiling);
  REQUIRE(L.peak >= L.active);
  memset(head_of, 0, sizeof(head_of));
  for (int i = 0; i < P_ITEMS; i++) {
    const pitem_t *p = &m->items[i];
    REQUIRE(p->item.state == p->state);
    if (p->key < 0 || (p->state != LIMITER_READY && p->state != LIMITER_ACTIVE)) continue;
    head_of[p->key]++;
    REQUIRE(head_of[p->key] <= 1); /* per key: at most one ready or active */
    REQUIRE(m->lane[p->key][0] == i);
  }
  size_t lanes = 0;
  for (int k = 0; k < P_KEYS; k++) lanes += m->nlane[k] > 0;
  REQUIRE(L.nlanes == lanes);
  for (int c = 0; c < L.ncls; c++) REQUIRE(L.cls[c].active == m->cls_active[c]);
  int queued = 0;
  for (int c = 0; c < L.ncls; c++) queued += L.cls[c].queued;
  REQUIRE(queued == m->queued);
  long skips = m->blocked_skips;
  int next = shadow_next(m);
  m->blocked_skips = skips;
  REQUIRE(limiter_peek(&L) == (next < 0 ? NULL : &m->items[next].item));
}

static void drain(model_t *m) {
  limiter_set_limit(&L, P_ITEMS);
  m->ceiling = P_ITEMS;
  for (int c = 0; c < P_CLASSES && m->classes; c++) {
    limiter_block(&L, c, m->blocked[c] = 0);
    limiter_set_cap(&L, c, m->cap[c] = 0);
  }
  while (m->active > 0 || m->queued > 0) {
    while (m->nready > 0) op_next(m);
    for (int i = 0; i < P_ITEMS; i++) {
      if (m->items[i].state == LIMITER_ACTIVE) release_item(m, i);
    }
    check_model(m);
  }
}

enum { FIXED_LIMIT = 0, CHANGING_LIMIT = 1, CLASSES = 2 };

static void run_property(int mode, uint64_t seed) {
  static model_t m;
  int change_limit = mode == CHANGING_LIMIT;
  memset(&m, 0, sizeof(m));
  m.rng = seed;
  m.classes = mode == CLASSES;
  limiter_set_limit(&L, 8);
  m.ceiling = 8;
  if (m.classes) REQUIRE(limiter_set_classes(&L, P_CLASSES) == 0);
  for (long n = 0; n < P_OPS; n++) {
    int op = pick(&m, 100);
    if (m.classes && op >= 97) {
      if (op == 99)
        op_block(&m);
      else
        op_set_cap(&m);
    } else if (op < 35)
      op_admit(&m);
    else if (op < 65)
      op_next(&m);
    else if (op < 90)
      op_release(&m);
    else if (op < 99 || !change_limit)
      op_cancel(&m);
    else
      op_set_limit(&m);
    check_model(&m);
    if (!change_limit) REQUIRE(L.active <= L.limit);
  }
  int peak = L.peak;
  drain(&m);
  REQUIRE(L.active == 0);
  REQUIRE(L.queued == 0);
  REQUIRE(lanes_empty(&L));
  REQUIRE(m.admitted == m.released + m.cancelled); /* each ends exactly once */
  REQUIRE(m.released > P_OPS / 10);
  REQUIRE(m.cancelled > P_OPS / 100);
  if (m.classes) REQUIRE(m.blocked_skips > P_OPS / 100); /* closed classes were passed over */
  static const char *names[] = {"fixed limit", "changing limit", "classes, caps, blocks"};
  printf("limiter property (%s): %ld admitted, %ld released, %ld cancelled, peak %d before "
         "drain, %ld starts passed a closed class\n",
         names[mode], m.admitted, m.released, m.cancelled, peak, m.blocked_skips);
}

START_TEST(property_fixed_limit) { run_property(FIXED_LIMIT, 0x5eed0001); }
END_TEST

START_TEST(property_changing_limit) { run_property(CHANGING_LIMIT, 0x5eed0002); }
END_TEST

START_TEST(property_classes) { run_property(CLASSES, 0x5eed0003); }
END_TEST

static Suite *limiter_suite(void) {
  Suite *s = suite_create("limiter");
  TCase *tc = tcase_create("examples");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, init_rejects_zero);
  tcase_add_test(tc, basic_fifo);
  tcase_add_test(tc, never_above_limit);
  tcase_add_test(tc, per_key_order);
  tcase_add_test(tc, keys_compare_bytes);
  tcase_add_test(tc, behind_a_head);
  tcase_add_test(tc, cancel_ready);
  tcase_add_test(tc, cancel_waiting_and_head);
  tcase_add_test(tc, runtime_limit_change);
  tcase_add_test(tc, peak_counter);
  tcase_add_test(tc, many_lanes_grow_table);
  tcase_add_test(tc, classes_cap_and_block);
  suite_add_tcase(s, tc);
  TCase *prop = tcase_create("property");
  tcase_add_checked_fixture(prop, setup, teardown);
  tcase_set_timeout(prop, 300);
  tcase_add_test(prop, property_fixed_limit);
  tcase_add_test(prop, property_changing_limit);
  tcase_add_test(prop, property_classes);
  suite_add_tcase(s, prop);
  return s;
}

Suite *unit_suite(void) { return limiter_suite(); }
