/* backoff — retry delays: nominal d = min(cap, base * 2^(attempt-1)), returned with
 * equal jitter in [d/2, d] from a splitmix64 generator. Invariant: 0 < base <= cap, and
 * d is computed without ever shifting or multiplying past cap (no overflow). */
#include "backoff.h"

#include <errno.h>
#include <stddef.h>

#define DEFAULT_CAP_MS 300000

int backoff_init(backoff_t *b, int64_t base_ms, int64_t cap_ms, uint64_t seed) {
  if (base_ms <= 0 || cap_ms < base_ms) return -EINVAL;
  b->base_ms = base_ms;
  b->cap_ms = cap_ms;
  b->rng = seed;
  return 0;
}

uint64_t backoff_rand(backoff_t *b) {
  uint64_t z = (b->rng += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* min(cap, base * 2^(attempt-1)) for attempt >= 1. */
static int64_t nominal(const backoff_t *b, int attempt) {
  int shift = attempt < 1 ? 0 : attempt - 1;
  if (shift >= 63 || b->base_ms > (b->cap_ms >> shift)) return b->cap_ms;
  return b->base_ms << shift;
}

int64_t backoff_delay(backoff_t *b, int attempt) {
  int64_t d = nominal(b, attempt);
  int64_t lo = d / 2;
  uint64_t span = (uint64_t)(d - lo) + 1; /* values in [lo, d] */
  return lo + (int64_t)(backoff_rand(b) % span);
}

/* Parses a positive decimal number of milliseconds at *s, advancing *s. */
static int parse_ms(const char **s, int64_t *out) {
  const char *p = *s;
  int64_t v = 0;
  if (*p < '0' || *p > '9') return -EINVAL;
  for (; *p >= '0' && *p <= '9'; p++) {
    int d = *p - '0';
    if (v > (INT64_MAX - d) / 10) return -EINVAL;
    v = v * 10 + d;
  }
  if (v == 0) return -EINVAL;
  *s = p;
  *out = v;
  return 0;
}

int backoff_parse(const char *s, int64_t *base_ms, int64_t *cap_ms) {
  int64_t base, cap;
  if (!s || parse_ms(&s, &base) < 0) return -EINVAL;
  if (*s == '\0') {
    *base_ms = base;
    *cap_ms = base > DEFAULT_CAP_MS ? base : DEFAULT_CAP_MS;
    return 0;
  }
  if (*s++ != ':' || parse_ms(&s, &cap) < 0 || *s != '\0') return -EINVAL;
  if (base > cap) return -EINVAL;
  *base_ms = base;
  *cap_ms = cap;
  return 0;
}
