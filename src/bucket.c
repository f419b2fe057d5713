/* bucket — token bucket over a fake-able clock. Tokens refill continuously; a
 * clock that goes backwards refills nothing. */
#include "bucket.h"

#include <math.h>

#define EPSILON 1e-9 /* refills in floating point: a token due now counts */

void bucket_init(bucket_t *b, double rate, double burst, int64_t now) {
  b->rate = rate > 0 ? rate : 0;
  b->burst = burst < 1 ? 1 : burst;
  b->tokens = b->burst;
  b->last = now;
}

static void refill(bucket_t *b, int64_t now) {
  if (now <= b->last) return;
  b->tokens += (double)(now - b->last) * b->rate / 1000.0;
  if (b->tokens > b->burst) b->tokens = b->burst;
  b->last = now;
}

int bucket_take(bucket_t *b, int64_t now) {
  if (b->rate <= 0) return 1;
  refill(b, now);
  if (b->tokens < 1 - EPSILON) return 0;
  b->tokens = b->tokens > 1 ? b->tokens - 1 : 0;
  return 1;
}

int64_t bucket_ready_at(bucket_t *b, int64_t now) {
  if (b->rate <= 0) return now;
  refill(b, now);
  if (b->tokens >= 1 - EPSILON) return now;
  double wait = ceil((1 - b->tokens) * 1000.0 / b->rate);
  return now + (int64_t)wait;
}
