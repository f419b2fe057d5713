/* memmon — memory monitor: process RSS against a limit, with hysteresis.
 * Pure C, no libuv, no Lua: samples are passed in; the readers below only read
 * /proc and /sys. Invariant: HIGH is entered at or above high_pct of the limit and
 * left only below low_pct, so a signal oscillating around high_pct never flaps. */
#ifndef OUTBOXD_MEMMON_H
#define OUTBOXD_MEMMON_H

#include <stdint.h>

enum memmon_change { MEMMON_NO_CHANGE = 0, MEMMON_HIGH = 1, MEMMON_NORMAL = 2 };

typedef struct memmon {
  uint64_t limit;    /* bytes that count as 100% */
  int high_pct;      /* enter HIGH at rss >= limit * high_pct / 100 */
  int low_pct;       /* leave HIGH at rss < limit * low_pct / 100 */
  int high;          /* 1 while HIGH */
  uint64_t rss;      /* last sample */
  uint64_t lua_heap; /* last sample: Lua heap of every live state, reported beside */
} memmon_t;

/* Initialises with a limit in bytes (> 0) and thresholds (0 < low < high <= 100).
 * Returns 0 or -EINVAL. */
int memmon_init(memmon_t *m, uint64_t limit, int high_pct, int low_pct);

/* Feeds one sample. Returns MEMMON_HIGH or MEMMON_NORMAL on a transition, else
 * MEMMON_NO_CHANGE. */
int memmon_sample(memmon_t *m, uint64_t rss, uint64_t lua_heap);

/* Enters HIGH now, whatever the sample (the Lua heap met its own cap). Returns
 * MEMMON_HIGH when that is a transition, else MEMMON_NO_CHANGE. */
int memmon_enter_high(memmon_t *m);

/* Resident set size of this process in bytes (/proc/self/statm), or 0 if unknown. */
uint64_t memmon_read_rss(void);

/* Physical RAM in bytes, or 0 if unknown. */
uint64_t memmon_physical(void);

/* The cgroup (v2 memory.max, else v1 memory.limit_in_bytes) limit in bytes, or 0
 * when there is none ("max" or absurdly large). */
uint64_t memmon_cgroup_limit(void);

/* The default limit: the smaller of the cgroup limit and physical RAM. */
uint64_t memmon_default_limit(void);

/* Parses "512M", "2G", "1048576", "64k" (binary units, case-insensitive, optional
 * trailing B/iB). Returns 0 and stores bytes, or -EINVAL. */
int memmon_parse_size(const char *s, uint64_t *bytes);

#endif
