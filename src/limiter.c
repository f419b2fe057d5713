/* limiter — at most N items in flight, a FIFO of ready items per class, and per-key
 * lanes. The oldest ready item (by `seq`) among the classes that may start goes first.
 * Invariant: a lane exists (is in the hash table) exactly while it holds an item; its
 * `head` is the only one of its items that is READY or ACTIVE, the rest wait behind it. */
#include "limiter.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define INITIAL_BUCKETS 16

struct limiter_lane {
  limiter_lane_t *next;   /* hash chain, or free list */
  limiter_lane_t **pprev; /* the pointer that points at this lane in its chain */
  uint64_t hash;
  limiter_item_t *head;      /* the READY or ACTIVE item of the key */
  limiter_item_t *wait_head; /* WAITING items, in arrival order */
  limiter_item_t *wait_tail;
  char *key; /* copied key bytes (not NUL-terminated) */
  size_t keylen;
  size_t keycap;
};

/* ---- queues ------------------------------------------------------------------ */

static void queue_push(limiter_item_t **head, limiter_item_t **tail, limiter_item_t *it) {
  it->next = NULL;
  it->prev = *tail;
  if (*tail)
    (*tail)->next = it;
  else
    *head = it;
  *tail = it;
}

static void queue_unlink(limiter_item_t **head, limiter_item_t **tail, limiter_item_t *it) {
  if (it->prev)
    it->prev->next = it->next;
  else
    *head = it->next;
  if (it->next)
    it->next->prev = it->prev;
  else
    *tail = it->prev;
  it->next = it->prev = NULL;
}

/* ---- lanes and their hash table ---------------------------------------------- */

static uint64_t fnv1a(const char *key, size_t len) {
  uint64_t h = 14695981039346656037ULL;
  for (size_t i = 0; i < len; i++) {
    h ^= (unsigned char)key[i];
    h *= 1099511628211ULL;
  }
  return h;
}

static limiter_lane_t **bucket_of(const limiter_t *l, uint64_t hash) {
  return &l->lanes[hash & (l->nbuckets - 1)];
}

static void chain_insert(limiter_lane_t **bucket, limiter_lane_t *lane) {
  lane->next = *bucket;
  if (*bucket) (*bucket)->pprev = &lane->next;
  lane->pprev = bucket;
  *bucket = lane;
}

static limiter_lane_t *lane_find(const limiter_t *l, const char *key, size_t len, uint64_t hash) {
  for (limiter_lane_t *lane = *bucket_of(l, hash); lane; lane = lane->next) {
    if (lane->hash == hash && lane->keylen == len && memcmp(lane->key, key, len) == 0) return lane;
  }
  return NULL;
}

/* Doubles the table once the load factor passes 1. Failure is harmless: the chains
 * just get longer. */
static void table_grow(limiter_t *l) {
  if (l->nlanes < l->nbuckets) return;
  size_t n = l->nbuckets * 2;
  limiter_lane_t **t = calloc(n, sizeof(*t));
  if (!t) return;
  limiter_lane_t **old = l->lanes;
  size_t oldn = l->nbuckets;
  l->lanes = t;
  l->nbuckets = n;
  for (size_t i = 0; i < oldn; i++) {
    limiter_lane_t *lane = old[i];
    while (lane) {
      limiter_lane_t *next = lane->next;
      chain_insert(bucket_of(l, lane->hash), lane);
      lane = next;
    }
  }
  free(old);
}

/* A lane from the free list, or a new one, holding a copy of the key. */
static limiter_lane_t *lane_alloc(limiter_t *l, const char *key, size_t len) {
  limiter_lane_t *lane = l->free_lanes;
  if (lane) {
    l->free_lanes = lane->next;
  } else {
    lane = calloc(1, sizeof(*lane));
    if (!lane) return NULL;
  }
  if (lane->keycap < len) {
    char *k = realloc(lane->key, len);
    if (!k) {
      lane->next = l->free_lanes;
      l->free_lanes = lane;
      return NULL;
    }
    lane->key = k;
    lane->keycap = len;
  }
  memcpy(lane->key, key, len);
  lane->keylen = len;
  lane->head = lane->wait_head = lane->wait_tail = NULL;
  return lane;
}

static limiter_lane_t *lane_get(limiter_t *l, const char *key, size_t len) {
  uint64_t hash = fnv1a(key, len);
  limiter_lane_t *lane = lane_find(l, key, len, hash);
  if (lane) return lane;
  lane = lane_alloc(l, key, len);
  if (!lane) return NULL;
  lane->hash = hash;
  l->nlanes++;
  table_grow(l);
  chain_insert(bucket_of(l, hash), lane);
  return lane;
}

/* Takes an empty lane out of the table and onto the free list. */
static void lane_remove(limiter_t *l, limiter_lane_t *lane) {
  assert(!lane->head && !lane->wait_head);
  *lane->pprev = lane->next;
  if (lane->next) lane->next->pprev = lane->pprev;
  lane->pprev = NULL;
  lane->next = l->free_lanes;
  l->free_lanes = lane;
  l->nlanes--;
}

static void make_ready(limiter_t *l, limiter_item_t *it) {
  limiter_class_t *c = &l->cls[it->cls];
  it->state = LIMITER_READY;
  it->seq = ++l->seq;
  queue_push(&c->head, &c->tail, it);
}

/* May class c start an item now? */
static int class_open(const limiter_class_t *c) {
  return c->head && !c->blocked && (c->cap <= 0 || c->active < c->cap);
}

/* The lane's head left it (released or cancelled): the next waiting item becomes the
 * head and ready, or the lane goes away. */
static void lane_advance(limiter_t *l, limiter_lane_t *lane) {
  limiter_item_t *next = lane->wait_head;
  if (!next) {
    lane->head = NULL;
    lane_remove(l, lane);
    return;
  }
  queue_unlink(&lane->wait_head, &lane->wait_tail, next);
  lane->head = next;
  make_ready(l, next);
}

/* ---- public API -------------------------------------------------------------- */

int limiter_init(limiter_t *l, int limit) {
  if (limit < 1) return -EINVAL;
  memset(l, 0, sizeof(*l));
  l->lanes = calloc(INITIAL_BUCKETS, sizeof(*l->lanes));
  if (!l->lanes) return -ENOMEM;
  l->nbuckets = INITIAL_BUCKETS;
  l->limit = limit;
  if (limiter_set_classes(l, 1)) {
    free(l->lanes);
    return -ENOMEM;
  }
  return 0;
}

static void lane_destroy(limiter_lane_t *lane) {
  free(lane->key);
  free(lane);
}

void limiter_free(limiter_t *l) {
  for (size_t i = 0; i < l->nbuckets; i++) {
    limiter_lane_t *lane = l->lanes[i];
    while (lane) {
      limiter_lane_t *next = lane->next;
      lane_destroy(lane);
      lane = next;
    }
  }
  while (l->free_lanes) {
    limiter_lane_t *next = l->free_lanes->next;
    lane_destroy(l->free_lanes);
    l->free_lanes = next;
  }
  free(l->lanes);
  free(l->cls);
  memset(l, 0, sizeof(*l));
}

int limiter_admit(limiter_t *l, limiter_item_t *it, const char *key, size_t keylen) {
  assert(it->state == LIMITER_IDLE);
  assert(it->cls >= 0 && it->cls < l->ncls);
  it->next = it->prev = NULL;
  it->lane = NULL;
  if (keylen == 0) {
    make_ready(l, it);
    l->queued++;
    l->cls[it->cls].queued++;
    return 0;
  }
  limiter_lane_t *lane = lane_get(l, key, keylen);
  if (!lane) return -ENOMEM;
  it->lane = lane;
  l->queued++;
  l->cls[it->cls].queued++;
  if (!lane->head) {
    lane->head = it;
    make_ready(l, it);
    return 0;
  }
  it->state = LIMITER_WAITING;
  queue_push(&lane->wait_head, &lane->wait_tail, it);
  return 0;
}

limiter_item_t *limiter_peek(const limiter_t *l) {
  limiter_item_t *best = NULL;
  if (l->active >= l->limit) return NULL;
  for (int i = 0; i < l->ncls; i++) {
    const limiter_class_t *c = &l->cls[i];
    if (class_open(c) && (!best || c->head->seq < best->seq)) best = c->head;
  }
  return best;
}

limiter_item_t *limiter_next(limiter_t *l) {
  limiter_item_t *it = limiter_peek(l);
  if (!it) return NULL;
  limiter_class_t *c = &l->cls[it->cls];
  queue_unlink(&c->head, &c->tail, it);
  it->state = LIMITER_ACTIVE;
  l->queued--;
  c->queued--;
  c->active++;
  l->active++;
  if (l->active > l->peak) l->peak = l->active;
  return it;
}

void limiter_release(limiter_t *l, limiter_item_t *it) {
  assert(it->state == LIMITER_ACTIVE);
  assert(l->active > 0);
  l->active--;
  l->cls[it->cls].active--;
  it->state = LIMITER_IDLE;
  limiter_lane_t *lane = it->lane;
  it->lane = NULL;
  if (!lane) return;
  assert(lane->head == it);
  lane_advance(l, lane);
}

void limiter_cancel(limiter_t *l, limiter_item_t *it) {
  assert(it->state == LIMITER_READY || it->state == LIMITER_WAITING);
  assert(l->queued > 0);
  limiter_class_t *c = &l->cls[it->cls];
  l->queued--;
  c->queued--;
  limiter_lane_t *lane = it->lane;
  it->lane = NULL;
  if (it->state == LIMITER_WAITING) {
    it->state = LIMITER_IDLE;
    queue_unlink(&lane->wait_head, &lane->wait_tail, it);
    return;
  }
  it->state = LIMITER_IDLE;
  queue_unlink(&c->head, &c->tail, it);
  if (!lane) return;
  assert(lane->head == it);
  lane_advance(l, lane);
}

limiter_item_t *limiter_behind(const limiter_item_t *it) {
  if (!it->lane || it->lane->head != it) return NULL;
  return it->lane->wait_head;
}

void limiter_set_limit(limiter_t *l, int limit) { l->limit = limit < 1 ? 1 : limit; }

int limiter_set_classes(limiter_t *l, int n) {
  if (n <= l->ncls) return 0;
  limiter_class_t *c = realloc(l->cls, (size_t)n * sizeof(*c));
  if (!c) return -ENOMEM;
  memset(c + l->ncls, 0, (size_t)(n - l->ncls) * sizeof(*c));
  l->cls = c;
  l->ncls = n;
  return 0;
}

void limiter_set_cap(limiter_t *l, int c, int cap) { l->cls[c].cap = cap < 0 ? 0 : cap; }

void limiter_block(limiter_t *l, int c, int blocked) { l->cls[c].blocked = blocked != 0; }
