/* breaker — circuit breaker over a sliding window of outcomes.
 * Pure C: time is passed in (milliseconds, any monotonic origin).
 * Invariant: every state change bumps `generation`; an outcome carries the ticket
 * (generation) it started under, and a stale ticket never changes the state. */
#ifndef OUTBOXD_BREAKER_H
#define OUTBOXD_BREAKER_H

#include <stdint.h>

enum breaker_state { BREAKER_CLOSED = 0, BREAKER_OPEN = 1, BREAKER_HALF_OPEN = 2 };

enum breaker_outcome {
  BREAKER_SUCCESS = 0,
  BREAKER_FAILURE = 1,
  BREAKER_IGNORED = 2 /* cancelled by shutdown, reload or the breaker: counts as neither */
};

/* Returned by functions that may change state: the new state, or BREAKER_NO_CHANGE. */
/* The longest cooldown, as a multiple of the base (reached by repeated failed trials). */
#define BREAKER_COOLDOWN_GROWTH 10

#define BREAKER_NO_CHANGE (-1)

typedef struct breaker {
  int state;           /* enum breaker_state */
  uint64_t generation; /* bumped on every state change */
  int threshold_pct;   /* opens when failure rate >= this (1..100) */
  int window;          /* outcomes kept */
  int min_calls;       /* outcomes needed before the rate counts */
  int64_t cooldown_ms; /* base open time before a half-open trial */
  int64_t current_ms;  /* this opening's cooldown: doubles after each failed trial,
                          up to BREAKER_COOLDOWN_GROWTH x cooldown_ms; closing resets */
  uint8_t *ring;       /* last `window` outcomes, 1 = failure */
  int ring_pos;
  int ring_count;
  int failures; /* failures in the ring */
  int64_t opened_at;
  int trial_in_flight; /* half-open: 1 while the single trial runs */
} breaker_t;

/* Initialises a closed breaker. Returns 0, -EINVAL for out-of-range settings, or
 * -ENOMEM. */
int breaker_init(breaker_t *b, int threshold_pct, int window, int min_calls, int64_t cooldown_ms);

/* Releases what breaker_init allocated; b may be initialised again. */
void breaker_free(breaker_t *b);

/* Applies time-based transitions: OPEN becomes HALF_OPEN once the cooldown has
 * passed. Returns the new state or BREAKER_NO_CHANGE. */
int breaker_tick(breaker_t *b, int64_t now);

/* May a handler start now? Calls breaker_tick() first (its transition is stored in
 * *transition when non-NULL). CLOSED: yes. OPEN: no. HALF_OPEN: yes for exactly one
 * trial at a time. On yes returns 1 and stores the ticket for breaker_record(). */
int breaker_acquire(breaker_t *b, int64_t now, uint64_t *ticket, int *transition);

/* Records the outcome of a run started with `ticket`. A stale ticket (from before a
 * state change) is ignored. CLOSED: the rate is checked once min_calls outcomes are
 * in and the breaker opens at or above the threshold. HALF_OPEN: the trial's success
 * closes (with an empty window, the cooldown back to its base), failure reopens with
 * the cooldown doubled (at most BREAKER_COOLDOWN_GROWTH x the base); an IGNORED
 * trial frees the trial slot. Returns the new state or BREAKER_NO_CHANGE. */
int breaker_record(breaker_t *b, uint64_t ticket, int outcome, int64_t now);

/* Failure rate of the window in [0, 1] (0 when empty). */
double breaker_failure_rate(const breaker_t *b);

/* When OPEN: the time at which it turns half-open; otherwise -1. */
int64_t breaker_reopen_at(const breaker_t *b);

/* "closed", "open", "half-open". */
const char *breaker_state_name(int state);

#endif
