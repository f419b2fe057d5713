/* backoff — retry delays: min(cap, base * 2^(attempt-1)) with jitter.
 * Pure C; deterministic for a given rng state (splitmix64). */
#ifndef OUTBOXD_BACKOFF_H
#define OUTBOXD_BACKOFF_H

#include <stdint.h>

typedef struct backoff {
  int64_t base_ms;
  int64_t cap_ms;
  uint64_t rng; /* state; seed it with backoff_init */
} backoff_t;

/* Sets base and cap (0 < base <= cap) and seeds the generator. Returns 0 or -EINVAL. */
int backoff_init(backoff_t *b, int64_t base_ms, int64_t cap_ms, uint64_t seed);

/* Delay before attempt `attempt + 1`, after `attempt` (>= 1) failed runs:
 * d = min(cap, base * 2^(attempt-1)); returns a value in [d/2, d] ("equal jitter",
 * so a retry never comes sooner than half the nominal delay). Never overflows. */
int64_t backoff_delay(backoff_t *b, int attempt);

/* Next pseudo-random 64-bit number from the generator (splitmix64). */
uint64_t backoff_rand(backoff_t *b);

/* Parses "MS" or "MS:MAX" (milliseconds). Returns 0 or -EINVAL. */
int backoff_parse(const char *s, int64_t *base_ms, int64_t *cap_ms);

#endif
