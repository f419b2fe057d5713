/* blockcache — freed small blocks kept by their exact size and handed out again for
 * the next allocation of that size, in front of an allocator whose small blocks cost
 * more to make and free (LuaJIT's, under every Lua state: a Lua heap frees and
 * makes the same few sizes over and over). Pure C. A block is only handed back for
 * the size it was freed with, so any block of the underlying allocator may be kept. */
#ifndef OUTBOXD_BLOCKCACHE_H
#define OUTBOXD_BLOCKCACHE_H

#include <stddef.h>
#include <string.h>

#define BLOCKCACHE_MIN 16    /* sizes kept: 16 (room for the list link) .. */
#define BLOCKCACHE_SIZES 256 /* .. 256 bytes */

typedef struct blockcache {
  void *head[BLOCKCACHE_SIZES + 1]; /* by size: a list linked through each block's first bytes */
  size_t bytes;                     /* held, in all lists */
  size_t max_bytes;                 /* what may be held */
} blockcache_t;

/* An empty cache that holds at most max_bytes. */
void blockcache_init(blockcache_t *c, size_t max_bytes);

/* A kept block of exactly `size` bytes, or NULL when there is none. (Inline: it is
 * on the path of every allocation of a Lua state.) */
static inline void *blockcache_take(blockcache_t *c, size_t size) {
  if (size < BLOCKCACHE_MIN || size > BLOCKCACHE_SIZES) return NULL;
  void *p = c->head[size];
  if (!p) return NULL;
  memcpy(&c->head[size], p, sizeof(void *)); /* the next block */
  c->bytes -= size;
  return p;
}

/* Keeps the freed block p of `size` bytes and returns 1, or returns 0 (the caller
 * frees it) when its size is not kept or the cache is full. */
static inline int blockcache_keep(blockcache_t *c, void *p, size_t size) {
  if (!p || size < BLOCKCACHE_MIN || size > BLOCKCACHE_SIZES || c->bytes + size > c->max_bytes)
    return 0;
  memcpy(p, &c->head[size], sizeof(void *));
  c->head[size] = p;
  c->bytes += size;
  return 1;
}

/* Empties the cache (before the allocator goes away): release(arg, block, size) is
 * called once for each kept block, to free it. */
void blockcache_drain(blockcache_t *c, void (*release)(void *arg, void *p, size_t size), void *arg);

#endif
