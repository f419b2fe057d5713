/* bucket — a token bucket: `rate` tokens a second, at most `burst` saved up.
 * Pure C: time is passed in (milliseconds, any monotonic origin).
 * Invariant: 0 <= tokens <= burst; a take never makes tokens negative. */
#ifndef OUTBOXD_BUCKET_H
#define OUTBOXD_BUCKET_H

#include <stdint.h>

typedef struct bucket {
  double rate;   /* tokens per second; <= 0: unlimited */
  double burst;  /* most tokens saved up (>= 1) */
  double tokens; /* tokens now */
  int64_t last;  /* time of the last refill */
} bucket_t;

/* A full bucket of `rate` tokens a second holding at most `burst` (raised to 1).
 * rate <= 0 makes an unlimited bucket. */
void bucket_init(bucket_t *b, double rate, double burst, int64_t now);

/* Takes one token if there is one: returns 1, else 0. An unlimited bucket always
 * returns 1. */
int bucket_take(bucket_t *b, int64_t now);

/* When the next token is there: `now` when one is already, else a later time. */
int64_t bucket_ready_at(bucket_t *b, int64_t now);

#endif
