/* timers — a binary heap of timer entries ordered by (due, seq); see timers.h.
 * Invariant: heap[i]->slot == i for every scheduled entry, and an entry is in the
 * heap exactly when its slot is not TIMERS_UNSCHEDULED. */
#include "timers.h"

#include <errno.h>
#include <stdlib.h>

void timers_init(timers_t *ts) {
  ts->heap = NULL;
  ts->n = ts->cap = 0;
  ts->seq = 0;
  ts->skipped = 0;
}

void timers_free(timers_t *ts) {
  for (size_t i = 0; i < ts->n; i++) ts->heap[i]->slot = TIMERS_UNSCHEDULED;
  free(ts->heap);
  timers_init(ts);
}

void timers_entry_init(timers_entry_t *e) {
  e->due = e->period = e->seq = 0;
  e->slot = TIMERS_UNSCHEDULED;
  e->running = 0;
  e->runs = e->skipped = 0;
}

static int before(const timers_entry_t *a, const timers_entry_t *b) {
  return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void place(timers_t *ts, size_t i, timers_entry_t *e) {
  ts->heap[i] = e;
  e->slot = i;
}

static void sift_up(timers_t *ts, size_t i) {
  timers_entry_t *e = ts->heap[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!before(e, ts->heap[parent])) break;
    place(ts, i, ts->heap[parent]);
    i = parent;
  }
  place(ts, i, e);
}

static void sift_down(timers_t *ts, size_t i) {
  timers_entry_t *e = ts->heap[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= ts->n) break;
    if (c + 1 < ts->n && before(ts->heap[c + 1], ts->heap[c])) c++;
    if (!before(ts->heap[c], e)) break;
    place(ts, i, ts->heap[c]);
    i = c;
  }
  place(ts, i, e);
}

int timers_add(timers_t *ts, timers_entry_t *e, uint64_t now, uint64_t delay, uint64_t period) {
  timers_remove(ts, e);
  if (ts->n == ts->cap) {
    size_t cap = ts->cap ? ts->cap * 2 : 16;
    timers_entry_t **heap = realloc(ts->heap, cap * sizeof *heap);
    if (!heap) return -ENOMEM;
    ts->heap = heap;
    ts->cap = cap;
  }
  e->due = delay > UINT64_MAX - now ? UINT64_MAX : now + delay;
  e->period = period;
  e->seq = ++ts->seq;
  place(ts, ts->n++, e);
  sift_up(ts, e->slot);
  return 0;
}

void timers_remove(timers_t *ts, timers_entry_t *e) {
  size_t i = e->slot;
  if (i == TIMERS_UNSCHEDULED || i >= ts->n || ts->heap[i] != e) return;
  e->slot = TIMERS_UNSCHEDULED;
  timers_entry_t *last = ts->heap[--ts->n];
  if (last == e) return;
  place(ts, i, last);
  if (i > 0 && before(last, ts->heap[(i - 1) / 2]))
    sift_up(ts, i);
  else
    sift_down(ts, i);
}

int timers_scheduled(const timers_entry_t *e) { return e->slot != TIMERS_UNSCHEDULED; }

uint64_t timers_next(const timers_t *ts) { return ts->n ? ts->heap[0]->due : UINT64_MAX; }

size_t timers_count(const timers_t *ts) { return ts->n; }

static void skip(timers_t *ts, timers_entry_t *e, uint64_t n) {
  e->skipped += n;
  ts->skipped += n;
}

timers_entry_t *timers_pop(timers_t *ts, uint64_t now, int *run) {
  if (!ts->n || ts->heap[0]->due > now) return NULL;
  timers_entry_t *e = ts->heap[0];
  if (!e->period) {
    timers_remove(ts, e);
  } else {
    uint64_t late = (now - e->due) / e->period; /* later ticks already past */
    skip(ts, e, late);
    e->due += (late + 1) * e->period;
    e->seq = ++ts->seq;
    sift_down(ts, 0);
  }
  if (e->running) {
    skip(ts, e, 1);
    *run = 0;
    return e;
  }
  e->running = 1;
  e->runs++;
  *run = 1;
  return e;
}

void timers_done(timers_entry_t *e) { e->running = 0; }
