/* adaptive — a concurrency limit that follows latency, after the gradient limit of
 * Netflix's concurrency-limits (GradientLimit: "the gradient of change in the
 * samples minimum RTT and absolute minimum RTT"): each window's RTT is its fastest
 * run's, the no-load latency the lowest window RTT seen; they give the gradient
 * 2 * noload / rtt (clamped to [0.5, 1]: its rttTolerance of 2, latency may double
 * before the limit shrinks) and the new limit is limit * gradient + sqrt(limit),
 * taken at once when it grows and smoothed when it shrinks, as GradientLimit does.
 * A failed or timed-out run multiplies the limit by 0.9 (the AIMD back-off). Pure C:
 * time and RTTs are passed in.
 * Invariant: min <= limit <= max. */
#ifndef OUTBOXD_ADAPTIVE_H
#define OUTBOXD_ADAPTIVE_H

#include <stdint.h>

typedef struct adaptive {
  double limit;      /* current estimate */
  int min, max;      /* bounds of the limit */
  int64_t noload_us; /* lowest window RTT seen since the last probe; 0: none yet */
  int64_t min_us;    /* lowest RTT of this window */
  int count;         /* samples in this window */
  int max_inflight;  /* highest in-flight count seen in this window */
  int dropped;       /* a failure in this window */
  int64_t window_start;
  int windows; /* windows closed since the last probe */
} adaptive_t;

/* Starts at `initial` (clamped to [1, max]); the limit stays within [1, max]. */
void adaptive_init(adaptive_t *a, int initial, int max, int64_t now);

/* One finished run: its round-trip time, how many of the route's runs were in flight
 * when it finished (itself included), whether it failed or timed out, at `now` (ms).
 * Returns the limit (integer, at least 1), changed when a window closed. */
int adaptive_sample(adaptive_t *a, int64_t rtt_us, int inflight, int dropped, int64_t now);

/* The current limit, as an integer >= 1. */
int adaptive_limit(const adaptive_t *a);

#endif
