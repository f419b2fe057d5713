/* idset — open-addressing set of ids, shared by the database stores to know which
 * events they have out on lease. Invariant: every member sits in the probe run that
 * starts at its hash slot, with no free slot in between (deletion shifts back). */
#include "idset.h"

#include <errno.h>
#include <stdlib.h>

static size_t id_hash(int64_t id, size_t mask) {
  return (size_t)(((uint64_t)id * 0x9E3779B97F4A7C15ull) >> 29) & mask;
}

static int grow(idset_t *s) {
  size_t cap = s->cap ? s->cap * 2 : 64;
  int64_t *slot = calloc(cap, sizeof *slot);
  if (!slot) return -ENOMEM;
  for (size_t i = 0; i < s->cap; i++) {
    if (!s->slot[i]) continue;
    size_t j = id_hash(s->slot[i], cap - 1);
    while (slot[j]) j = (j + 1) & (cap - 1);
    slot[j] = s->slot[i];
  }
  free(s->slot);
  s->slot = slot;
  s->cap = cap;
  return 0;
}

int idset_add(idset_t *s, int64_t id) {
  if ((s->n + 1) * 2 > s->cap && grow(s)) return -ENOMEM;
  size_t mask = s->cap - 1, i = id_hash(id, mask);
  while (s->slot[i]) {
    if (s->slot[i] == id) return 0;
    i = (i + 1) & mask;
  }
  s->slot[i] = id;
  s->n++;
  return 0;
}

int idset_has(const idset_t *s, int64_t id) {
  if (!s->cap) return 0;
  size_t mask = s->cap - 1, i = id_hash(id, mask);
  for (; s->slot[i]; i = (i + 1) & mask)
    if (s->slot[i] == id) return 1;
  return 0;
}

void idset_del(idset_t *s, int64_t id) {
  if (!s->cap) return;
  size_t mask = s->cap - 1, i = id_hash(id, mask);
  while (s->slot[i] != id) {
    if (!s->slot[i]) return;
    i = (i + 1) & mask;
  }
  s->slot[i] = 0;
  s->n--;
  for (size_t j = (i + 1) & mask; s->slot[j]; j = (j + 1) & mask) {
    size_t k = id_hash(s->slot[j], mask);
    int stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
    if (stays) continue;
    s->slot[i] = s->slot[j];
    s->slot[j] = 0;
    i = j;
  }
}

void idset_free(idset_t *s) {
  free(s->slot);
  s->slot = NULL;
  s->cap = s->n = 0;
}
