/* idset — a set of positive 64-bit ids (the events a store has out on lease).
 * Pure C: open addressing with linear probing, 0 marks a free slot, deletion
 * without tombstones. Iterate with `for (i = 0; i < s.cap; i++) if (s.slot[i])`. */
#ifndef OUTBOXD_IDSET_H
#define OUTBOXD_IDSET_H

#include <stddef.h>
#include <stdint.h>

typedef struct idset {
  int64_t *slot; /* cap slots; 0 is free */
  size_t cap, n;
} idset_t;

/* Adds id (> 0); adding a member again is a no-op. Returns 0 or -ENOMEM. */
int idset_add(idset_t *s, int64_t id);

/* 1 when id is a member. */
int idset_has(const idset_t *s, int64_t id);

/* Removes id if present. */
void idset_del(idset_t *s, int64_t id);

/* Frees the slots; the set is empty and usable afterwards. */
void idset_free(idset_t *s);

#endif
