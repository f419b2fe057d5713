/* limiter — at most N handlers in flight, FIFO, with per-key lanes and classes.
 * Pure C: no libuv, no Lua. Items are intrusive (caller allocates, limiter links).
 * A class (a route) may have its own cap and may be blocked (its breaker is open, it
 * is snoozed or out of rate tokens); the next item to start is the oldest ready item
 * of any class that may start. Invariant: active <= limit and a class's active <= its
 * cap at every admission; a lane has at most one item that is ready or active (its
 * head); the others wait in the lane in arrival order. */
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
  int cls;              /* class, set by the caller before limiter_admit (0: the first) */
  uint64_t seq;         /* order in which items became ready */
} limiter_item_t;

typedef struct limiter_class {
  limiter_item_t *head; /* ready FIFO of the class */
  limiter_item_t *tail;
  int cap;     /* at most this many active; 0: only the global limit */
  int active;  /* items of the class holding a slot */
  int queued;  /* items of the class READY or WAITING */
  int blocked; /* 1: none of its items starts */
} limiter_class_t;

typedef struct limiter {
  int limit;            /* slots; may change at run time */
  int active;           /* items holding a slot */
  int queued;           /* items READY or WAITING */
  int peak;             /* highest `active` seen */
  limiter_class_t *cls; /* classes 0 .. ncls-1 */
  int ncls;
  uint64_t seq;           /* last `seq` handed out */
  limiter_lane_t **lanes; /* hash table of lanes with at least one item */
  size_t nbuckets;
  size_t nlanes;
  limiter_lane_t *free_lanes; /* recycled lanes */
} limiter_t;

/* Initialises `l` with `limit` slots (>= 1) and one class (0) without a cap.
 * Returns 0, -EINVAL or -ENOMEM. */
int limiter_init(limiter_t *l, int limit);

/* Frees the limiter's own memory (lanes); items are the caller's. */
void limiter_free(limiter_t *l);

/* Queues `it` (state IDLE). With a key (keylen > 0), the item joins that key's lane:
 * it becomes ready only when every earlier item of the key was released or
 * cancelled. The key bytes are copied. Returns 0 or -ENOMEM (item left IDLE). */
int limiter_admit(limiter_t *l, limiter_item_t *it, const char *key, size_t keylen);

/* Takes the oldest ready item of a class that may start (not blocked, below its cap)
 * if a slot is free: marks it ACTIVE and returns it. Returns NULL when no such item
 * is ready or every slot is taken. O(number of classes). */
limiter_item_t *limiter_next(limiter_t *l);

/* Peeks at the item limiter_next() would return, without taking it. */
limiter_item_t *limiter_peek(const limiter_t *l);

/* An ACTIVE item finished: frees its slot and lets the next item of its key become
 * ready. The item is IDLE afterwards. O(1). */
void limiter_release(limiter_t *l, limiter_item_t *it);

/* Withdraws a READY or WAITING item (never started). If it headed its lane, the
 * next item of the key becomes ready. The item is IDLE afterwards. O(1). */
void limiter_cancel(limiter_t *l, limiter_item_t *it);

/* The first item waiting behind `it` in its key lane (`it` READY or ACTIVE), or NULL
 * when none waits or `it` has no key. O(1). */
limiter_item_t *limiter_behind(const limiter_item_t *it);

/* Changes the number of slots (>= 1). Lowering it never stops active items;
 * new starts wait until active < limit. */
void limiter_set_limit(limiter_t *l, int limit);

/* Makes classes 0 .. n-1 exist (never removes any: items may still use them).
 * New classes have no cap and are not blocked. Returns 0 or -ENOMEM. */
int limiter_set_classes(limiter_t *l, int n);

/* Class `c`'s cap (0: none). Lowering it never stops active items. */
void limiter_set_cap(limiter_t *l, int c, int cap);

/* Blocks (1) or unblocks (0) class `c`: its ready items stay queued, in order. */
void limiter_block(limiter_t *l, int c, int blocked);

#endif
