/* limiter — at most N handlers in flight, FIFO, with per-key lanes.
 * Pure C: no libuv, no Lua. Items are intrusive (caller allocates, limiter links).
 * Invariant: active <= limit at every admission; a lane has at most one item that is
 * ready or active (its head); the others wait in the lane in arrival order. */
#ifndef OUTBOXD_LIMITER_H
#define OUTBOXD_LIMITER_H

#include <stddef.h>
#include <stdint.h>

typedef struct limiter_lane limiter_lane_t;

enum limiter_item_state {
  LIMITER_IDLE = 0, /* not known to the limiter */
  LIMITER_READY,    /* in the FIFO of items that may start when a slot frees */
  LIMITER_WAITING,  /* in its key lane behind an earlier item of the same key */
  LIMITER_ACTIVE    /* started, holding a slot (and its lane) */
};

typedef struct limiter_item {
  struct limiter_item *next; /* FIFO link: ready queue or lane queue */
  struct limiter_item *prev;
  limiter_lane_t *lane; /* NULL when the item has no key */
  int state;            /* enum limiter_item_state */
} limiter_item_t;

typedef struct limiter {
  int limit;            /* slots; may change at run time */
  int active;           /* items holding a slot */
  int queued;           /* items READY or WAITING */
  int peak;             /* highest `active` seen */
  limiter_item_t *head; /* ready FIFO */
  limiter_item_t *tail;
  limiter_lane_t **lanes; /* hash table of lanes with at least one item */
  size_t nbuckets;
  size_t nlanes;
  limiter_lane_t *free_lanes; /* recycled lanes */
} limiter_t;

/* Initialises `l` with `limit` slots (>= 1). Returns 0 or -ENOMEM. */
int limiter_init(limiter_t *l, int limit);

/* Frees the limiter's own memory (lanes); items are the caller's. */
void limiter_free(limiter_t *l);

/* Queues `it` (state IDLE). With a key (keylen > 0), the item joins that key's lane:
 * it becomes ready only when every earlier item of the key was released or
 * cancelled. The key bytes are copied. Returns 0 or -ENOMEM (item left IDLE). */
int limiter_admit(limiter_t *l, limiter_item_t *it, const char *key, size_t keylen);

/* Takes the oldest ready item if a slot is free: marks it ACTIVE and returns it.
 * Returns NULL when nothing is ready or every slot is taken. O(1). */
limiter_item_t *limiter_next(limiter_t *l);

/* Peeks at the item limiter_next() would return, without taking it. */
limiter_item_t *limiter_peek(const limiter_t *l);

/* An ACTIVE item finished: frees its slot and lets the next item of its key become
 * ready. The item is IDLE afterwards. O(1). */
void limiter_release(limiter_t *l, limiter_item_t *it);

/* Withdraws a READY or WAITING item (never started). If it headed its lane, the
 * next item of the key becomes ready. The item is IDLE afterwards. O(1). */
void limiter_cancel(limiter_t *l, limiter_item_t *it);

/* Changes the number of slots (>= 1). Lowering it never stops active items;
 * new starts wait until active < limit. */
void limiter_set_limit(limiter_t *l, int limit);

#endif
