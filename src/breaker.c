/* breaker — circuit breaker: CLOSED counts outcomes in a ring, OPEN refuses until the
 * cooldown passes, HALF_OPEN runs one trial. Invariant: every state change goes
 * through set_state(), which bumps `generation`, so stale tickets are recognisable. */
#include "breaker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void ring_clear(breaker_t *b) {
  memset(b->ring, 0, (size_t)b->window);
  b->ring_pos = 0;
  b->ring_count = 0;
  b->failures = 0;
}

/* Adds one outcome, dropping the oldest when the ring is full. */
static void ring_push(breaker_t *b, int failed) {
  if (b->ring_count == b->window)
    b->failures -= b->ring[b->ring_pos];
  else
    b->ring_count++;
  b->ring[b->ring_pos] = failed ? 1 : 0;
  b->failures += failed ? 1 : 0;
  b->ring_pos = (b->ring_pos + 1) % b->window;
}

static int set_state(breaker_t *b, int state, int64_t now) {
  b->state = state;
  b->generation++;
  b->trial_in_flight = 0;
  if (state == BREAKER_OPEN) b->opened_at = now;
  if (state == BREAKER_CLOSED) {
    ring_clear(b);
    b->current_ms = b->cooldown_ms;
  }
  return state;
}

static int should_open(const breaker_t *b) {
  if (b->ring_count < b->min_calls) return 0;
  return (int64_t)b->failures * 100 >= (int64_t)b->threshold_pct * b->ring_count;
}

int breaker_init(breaker_t *b, int threshold_pct, int window, int min_calls, int64_t cooldown_ms) {
  if (threshold_pct < 1 || threshold_pct > 100 || window < 1) return -EINVAL;
  if (min_calls < 0 || min_calls > window || cooldown_ms < 0) return -EINVAL;
  memset(b, 0, sizeof(*b));
  b->ring = calloc((size_t)window, 1);
  if (!b->ring) return -ENOMEM;
  b->state = BREAKER_CLOSED;
  b->generation = 1; /* 0 is never a valid ticket */
  b->threshold_pct = threshold_pct;
  b->window = window;
  b->min_calls = min_calls;
  b->cooldown_ms = cooldown_ms;
  b->current_ms = cooldown_ms;
  return 0;
}

void breaker_free(breaker_t *b) {
  free(b->ring);
  b->ring = NULL;
}

int breaker_tick(breaker_t *b, int64_t now) {
  if (b->state != BREAKER_OPEN || now < breaker_reopen_at(b)) return BREAKER_NO_CHANGE;
  return set_state(b, BREAKER_HALF_OPEN, now);
}

int breaker_acquire(breaker_t *b, int64_t now, uint64_t *ticket, int *transition) {
  int t = breaker_tick(b, now);
  if (transition) *transition = t;
  *ticket = 0;
  if (b->state == BREAKER_OPEN) return 0;
  if (b->state == BREAKER_HALF_OPEN) {
    if (b->trial_in_flight) return 0;
    b->trial_in_flight = 1;
  }
  *ticket = b->generation;
  return 1;
}

static int record_closed(breaker_t *b, int outcome, int64_t now) {
  if (outcome == BREAKER_IGNORED) return BREAKER_NO_CHANGE;
  ring_push(b, outcome == BREAKER_FAILURE);
  if (!should_open(b)) return BREAKER_NO_CHANGE;
  return set_state(b, BREAKER_OPEN, now);
}

/* A failed trial: the next wait is twice the last, at most GROWTH x the base. */
static void grow_cooldown(breaker_t *b) {
  int64_t max = b->cooldown_ms > INT64_MAX / BREAKER_COOLDOWN_GROWTH
                    ? INT64_MAX
                    : b->cooldown_ms * BREAKER_COOLDOWN_GROWTH;
  b->current_ms = b->current_ms > max / 2 ? max : b->current_ms * 2;
}

static int record_trial(breaker_t *b, int outcome, int64_t now) {
  if (!b->trial_in_flight) return BREAKER_NO_CHANGE;
  if (outcome == BREAKER_SUCCESS) return set_state(b, BREAKER_CLOSED, now);
  if (outcome == BREAKER_FAILURE) {
    grow_cooldown(b);
    return set_state(b, BREAKER_OPEN, now);
  }
  b->trial_in_flight = 0; /* ignored: the next acquire may run a new trial */
  return BREAKER_NO_CHANGE;
}

int breaker_record(breaker_t *b, uint64_t ticket, int outcome, int64_t now) {
  if (ticket != b->generation) return BREAKER_NO_CHANGE;
  if (b->state == BREAKER_CLOSED) return record_closed(b, outcome, now);
  if (b->state == BREAKER_HALF_OPEN) return record_trial(b, outcome, now);
  return BREAKER_NO_CHANGE; /* OPEN hands out no tickets */
}

double breaker_failure_rate(const breaker_t *b) {
  if (b->ring_count == 0) return 0.0;
  return (double)b->failures / (double)b->ring_count;
}

int64_t breaker_reopen_at(const breaker_t *b) {
  if (b->state != BREAKER_OPEN) return -1;
  if (b->opened_at > INT64_MAX - b->current_ms)
    return INT64_MAX; /* saturate rather than overflow */
  return b->opened_at + b->current_ms;
}

const char *breaker_state_name(int state) {
  switch (state) {
  case BREAKER_CLOSED: return "closed";
  case BREAKER_OPEN: return "open";
  case BREAKER_HALF_OPEN: return "half-open";
  default: return "unknown";
  }
}
