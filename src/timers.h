/* timers — the schedule behind outbox.every and outbox.after (pure C: no libuv, no
 * Lua, time passed in, in milliseconds of the owner's clock). A periodic timer stays
 * on its grid (first due + k·period) however late it is served, and never overlaps
 * itself: a tick due while its run still goes, or one the owner served too late to
 * keep, is skipped and counted. Entries are embedded in the owner's structs; the set
 * only orders them (a binary heap by due time, then by insertion). */
#ifndef OUTBOXD_TIMERS_H
#define OUTBOXD_TIMERS_H

#include <stddef.h>
#include <stdint.h>

#define TIMERS_UNSCHEDULED ((size_t)-1)

typedef struct timers_entry {
  uint64_t due;     /* the next tick (ms) */
  uint64_t period;  /* 0: fires once */
  uint64_t seq;     /* insertion order, for ties */
  size_t slot;      /* index in the heap, or TIMERS_UNSCHEDULED */
  int running;      /* a run is going on (between timers_pop and timers_done) */
  uint64_t runs;    /* runs started */
  uint64_t skipped; /* ticks that started no run */
} timers_entry_t;

typedef struct timers {
  timers_entry_t **heap;
  size_t n, cap;
  uint64_t seq;
  uint64_t skipped; /* every entry's skipped ticks together */
} timers_t;

/* An empty set (no allocation until the first add). */
void timers_init(timers_t *ts);

/* Frees the set's own memory; the entries are the owner's. */
void timers_free(timers_t *ts);

/* Prepares an entry: unscheduled, not running, nothing counted. */
void timers_entry_init(timers_entry_t *e);

/* Schedules e (initialised; if scheduled already, it moves) to be due `delay` ms after
 * `now`, then every `period` ms (0: once). Returns 0 or -ENOMEM. */
int timers_add(timers_t *ts, timers_entry_t *e, uint64_t now, uint64_t delay, uint64_t period);

/* Takes e out of the schedule (no further ticks); a run going on is not touched.
 * Does nothing when e is not scheduled. */
void timers_remove(timers_t *ts, timers_entry_t *e);

/* Whether e will tick again. */
int timers_scheduled(const timers_entry_t *e);

/* The earliest due time in the set, or UINT64_MAX when it is empty. */
uint64_t timers_next(const timers_t *ts);

/* Scheduled entries. */
size_t timers_count(const timers_t *ts);

/* The earliest entry due at `now` or before, or NULL. A one-shot entry leaves the
 * set; a periodic one moves to its first tick after `now`. *run is 1 when a run
 * should start (e is then marked running), 0 when the tick is skipped because a
 * run still goes. Ticks that passed unserved (the owner came late by more than a
 * period) start no run of their own and are counted as skipped. */
timers_entry_t *timers_pop(timers_t *ts, uint64_t now, int *run);

/* A run of e ended: its next tick may start one again. */
void timers_done(timers_entry_t *e);

#endif
