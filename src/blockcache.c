/* blockcache — freed blocks by exact size (see blockcache.h). Invariant: `bytes` is
 * the sum of the sizes of the blocks in the lists, at most `max_bytes`. */
#include "blockcache.h"

void blockcache_init(blockcache_t *c, size_t max_bytes) {
  memset(c, 0, sizeof *c);
  c->max_bytes = max_bytes;
}

void blockcache_drain(blockcache_t *c, void (*release)(void *arg, void *p, size_t size),
                      void *arg) {
  for (size_t s = BLOCKCACHE_MIN; s <= BLOCKCACHE_SIZES; s++)
    for (void *p; (p = blockcache_take(c, s));) release(arg, p, s);
}
