/* routes — the route table: matching topics to routes, one breaker per name, the
 * start gate (breaker, snooze, rate) of each route. Routes and breakers are only ever
 * added, so the indices held by claimed events stay valid across reloads. */
#include "routes.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define ADAPTIVE_START 20 /* a route's first limit under --concurrency auto */

static int grow(void **v, int *cap, int n, size_t size) {
  if (n < *cap) return 0;
  int c = *cap ? *cap * 2 : 8;
  void *p = realloc(*v, (size_t)c * size);
  if (!p) return -ENOMEM;
  memset((char *)p + (size_t)*cap * size, 0, (size_t)(c - *cap) * size);
  *v = p;
  *cap = c;
  return 0;
}

int routes_find_breaker(const routes_t *rt, const char *name) {
  for (int i = 0; i < rt->nbreakers; i++)
    if (strcmp(rt->breakers[i].name, name) == 0) return i;
  return -1;
}

/* The breaker named `name`, created closed when new. Returns its index or -ENOMEM. */
static int breaker_get(routes_t *rt, const char *name) {
  int i = routes_find_breaker(rt, name);
  if (i >= 0) return i;
  if (grow((void **)&rt->breakers, &rt->capbreakers, rt->nbreakers, sizeof *rt->breakers))
    return -ENOMEM;
  route_breaker_t *b = &rt->breakers[rt->nbreakers];
  if (!(b->name = strdup(name))) return -ENOMEM;
  if (breaker_init(&b->brk, rt->pct, rt->window, rt->min_calls, rt->cooldown_ms)) {
    free(b->name);
    b->name = NULL;
    return -ENOMEM;
  }
  return rt->nbreakers++;
}

static int route_find(const routes_t *rt, const char *pattern) {
  for (int i = 1; i < rt->n; i++)
    if (strcmp(rt->v[i].pattern, pattern) == 0) return i;
  return -1;
}

/* A new route for `pattern`; returns its index or -ENOMEM. */
static int route_add(routes_t *rt, const char *pattern, int64_t now) {
  if (grow((void **)&rt->v, &rt->cap, rt->n, sizeof *rt->v)) return -ENOMEM;
  route_t *r = &rt->v[rt->n];
  memset(r, 0, sizeof *r);
  if (!(r->pattern = strdup(pattern))) return -ENOMEM;
  size_t len = strlen(pattern);
  r->prefix = len > 0 && pattern[len - 1] == '*';
  r->plen = r->prefix ? len - 1 : len;
  bucket_init(&r->bucket, 0, 1, now);
  adaptive_init(&r->adaptive, ADAPTIVE_START, rt->adaptive_max, now);
  return rt->n++;
}

/* Sets route r from `spec` (NULL: the defaults of the catch-all). */
static int route_set(routes_t *rt, int r, const route_spec_t *spec, int64_t now) {
  const char *bname = spec && spec->breaker ? spec->breaker : rt->v[r].pattern;
  int b = breaker_get(rt, bname);
  if (b < 0) return b;
  route_t *x = &rt->v[r];
  double rate = spec ? spec->rate : 0;
  x->live = 1;
  x->breaker = b;
  rt->breakers[b].live = 1;
  x->concurrency = spec ? spec->concurrency : 0;
  x->timeout_ms = spec ? spec->timeout_ms : 0;
  x->slow_ms = spec ? spec->slow_ms : 0;
  if (rate != x->rate) bucket_init(&x->bucket, rate, rate, now); /* a second's worth */
  x->rate = rate;
  return 0;
}

int routes_init(routes_t *rt, int pct, int window, int min_calls, int64_t cooldown_ms,
                int adaptive_max, int64_t now) {
  breaker_t probe;
  memset(rt, 0, sizeof *rt);
  if (breaker_init(&probe, pct, window, min_calls, cooldown_ms)) return -EINVAL;
  breaker_free(&probe);
  rt->pct = pct;
  rt->window = window;
  rt->min_calls = min_calls;
  rt->cooldown_ms = cooldown_ms;
  rt->adaptive_max = adaptive_max;
  if (route_add(rt, ROUTES_DEFAULT, now) < 0 || route_set(rt, 0, NULL, now)) {
    routes_free(rt);
    return -ENOMEM;
  }
  return 0;
}

void routes_free(routes_t *rt) {
  for (int i = 0; i < rt->n; i++) free(rt->v[i].pattern);
  for (int i = 0; i < rt->nbreakers; i++) {
    free(rt->breakers[i].name);
    breaker_free(&rt->breakers[i].brk);
  }
  free(rt->v);
  free(rt->breakers);
  memset(rt, 0, sizeof *rt);
}

int routes_apply(routes_t *rt, const route_spec_t *specs, int n, int64_t now) {
  for (int i = 1; i < rt->n; i++) rt->v[i].live = 0;
  for (int i = 0; i < rt->nbreakers; i++) rt->breakers[i].live = 0;
  int rc = route_set(rt, 0, NULL, now);
  for (int i = 0; i < n && rc == 0; i++) {
    int r = route_find(rt, specs[i].pattern);
    if (r < 0) r = route_add(rt, specs[i].pattern, now);
    rc = r < 0 ? r : route_set(rt, r, &specs[i], now);
  }
  return rc;
}

int routes_match(const routes_t *rt, const char *topic) {
  size_t len = strlen(topic), best_len = 0;
  int best = 0;
  for (int i = 1; i < rt->n; i++) {
    const route_t *r = &rt->v[i];
    if (!r->live) continue;
    if (!r->prefix) {
      if (r->plen == len && memcmp(r->pattern, topic, len) == 0) return i;
    } else if (r->plen <= len && memcmp(r->pattern, topic, r->plen) == 0 &&
               (!best || r->plen > best_len)) {
      best = i;
      best_len = r->plen;
    }
  }
  return best;
}

breaker_t *routes_breaker(routes_t *rt, int r) { return &rt->breakers[rt->v[r].breaker].brk; }

int64_t routes_hold_until(routes_t *rt, int r, int64_t now) {
  const breaker_t *b = routes_breaker(rt, r);
  int64_t until = b->state == BREAKER_OPEN ? breaker_reopen_at(b) : 0;
  if (rt->v[r].snooze_until > now && rt->v[r].snooze_until > until) until = rt->v[r].snooze_until;
  return until > now ? until : 0;
}

int routes_may_start(routes_t *rt, int r, int64_t now, int64_t *until) {
  route_t *x = &rt->v[r];
  const breaker_t *b = routes_breaker(rt, r);
  *until = routes_hold_until(rt, r, now);
  if (*until) return 0;
  if (b->state == BREAKER_OPEN) { /* due for half-open: the caller ticks it */
    *until = now;
    return 0;
  }
  if (b->state == BREAKER_HALF_OPEN && b->trial_in_flight) {
    *until = -1;
    return 0;
  }
  int64_t t = bucket_ready_at(&x->bucket, now);
  if (t > now) {
    *until = t;
    return 0;
  }
  return 1;
}

void routes_snooze(routes_t *rt, int r, int64_t until) {
  if (until > rt->v[r].snooze_until) rt->v[r].snooze_until = until;
}
