/* routes — the unit of isolation: each route (an `outbox.handle` pattern, or
 * `default` for the catch-all) has its own breaker (shared by routes naming the same
 * one), concurrency cap, token bucket, timeout, slow-call threshold and snooze.
 * Pure C: no libuv, no Lua; time is passed in (ms, monotonic).
 * Invariant: a route or breaker, once created, keeps its index for the whole run
 * (claimed events refer to it); a reload marks the ones the script dropped as not
 * live and keeps every breaker's state by name. Route 0 is `default`. */
#ifndef OUTBOXD_ROUTES_H
#define OUTBOXD_ROUTES_H

#include <stddef.h>
#include <stdint.h>

#include "adaptive.h"
#include "breaker.h"
#include "bucket.h"

#define ROUTES_DEFAULT "default"

/* What the script asked for one route. Strings are only read during the call. */
typedef struct route_spec {
  const char *pattern; /* "order.*" (prefix), "user.created" (exact) */
  const char *breaker; /* breaker name; NULL: the pattern */
  int concurrency;     /* most in flight; 0: only the global limit */
  double rate;         /* starts a second (token bucket per host); 0: unlimited */
  int64_t timeout_ms;  /* 0: the global --timeout */
  int64_t slow_ms;     /* 0: the global --breaker-slow (which may be off) */
} route_spec_t;

typedef struct route {
  char *pattern;
  size_t plen;     /* length of the prefix ("order." for "order.*") or the topic */
  int prefix;      /* 1: a pattern ending in '*' */
  int live;        /* in the serving script */
  int breaker;     /* index in routes_t.breakers */
  int concurrency; /* 0: none of its own (but see `adaptive`) */
  double rate;     /* 0: unlimited */
  bucket_t bucket; /* rate tokens */
  int64_t timeout_ms, slow_ms;
  int64_t snooze_until;               /* no start before this time (outbox.snooze); 0: none */
  adaptive_t adaptive;                /* --concurrency auto: this route's limit */
  int64_t done, failed, dead, events; /* events: runs finished, any outcome */
  double avg_ms;                      /* average run time (kept by the dispatcher) */
  double overflow_next;               /* the dispatcher's next deferral slot for surplus (ms) */
} route_t;

typedef struct route_breaker {
  char *name;
  breaker_t brk;
  int live; /* named by a live route */
} route_breaker_t;

typedef struct routes {
  route_t *v;
  int n, cap;
  route_breaker_t *breakers;
  int nbreakers, capbreakers;
  /* settings every breaker is created with */
  int pct, window, min_calls;
  int64_t cooldown_ms;
  /* --concurrency auto[:MAX]: 0 off, else the most a route's limit may grow to */
  int adaptive_max;
} routes_t;

/* Creates the table with route 0, `default`, and its breaker. Returns 0, -EINVAL
 * for out-of-range breaker settings, or -ENOMEM. */
int routes_init(routes_t *rt, int pct, int window, int min_calls, int64_t cooldown_ms,
                int adaptive_max, int64_t now);

void routes_free(routes_t *rt);

/* Makes `specs` the live routes (and `default`): a route whose pattern existed keeps
 * its index, counters and snooze, a breaker whose name existed keeps its state; the
 * others are created. Routes and breakers not named any more stop being live.
 * Returns 0, or -ENOMEM (the table is then left as far as it got, still usable). */
int routes_apply(routes_t *rt, const route_spec_t *specs, int n, int64_t now);

/* The live route for `topic`: an exact topic, else the longest matching prefix,
 * else 0 (`default`) — the same rule the Lua side routes by. */
int routes_match(const routes_t *rt, const char *topic);

/* The breaker of route r. */
breaker_t *routes_breaker(routes_t *rt, int r);

/* May route r start an event at `now` (its breaker not open, no trial running, not
 * snoozed, a rate token there)? Returns 1; else 0 and *until gets when to look
 * again (-1: when an outcome arrives, e.g. the half-open trial's). Does not change
 * the breaker's state: call breaker_tick() first. */
int routes_may_start(routes_t *rt, int r, int64_t now, int64_t *until);

/* The time before which route r must not run events that come in now because its
 * breaker is open or it is snoozed; 0 when neither. */
int64_t routes_hold_until(routes_t *rt, int r, int64_t now);

/* Snoozes route r until `until` (a later snooze wins). */
void routes_snooze(routes_t *rt, int r, int64_t until);

/* Index of the breaker named `name`, or -1. */
int routes_find_breaker(const routes_t *rt, const char *name);

#endif
