/* dispatch — store -> limiter -> breaker -> host -> outcome -> store, on one loop.
 * Each event belongs to a route (routes.c): its breaker, cap, rate and snooze gate
 * only that route's events. Events of a route that may not start for a while (its
 * breaker is open, it is snoozed, or it holds more than it can start soon) go back
 * to the store deferred: pending, untouched, but not claimable before the route may
 * start again, so no host claims them in vain and every other route keeps flowing.
 * Invariants: every claimed event is handed back to the store exactly once (ack,
 * fail, dead, release or defer); pump() is the only place that claims and starts,
 * and it never re-enters itself (outcomes that arrive inside it ask for another
 * round); a deferred event takes every later unstarted event of its key with it. */
#include "dispatch.h"

#include <errno.h>
#include <linux/close_range.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

extern char **environ;

#include "api.h"
#include "backoff.h"
#include "breaker.h"
#include "broker.h"
#include "host.h"
#include "limiter.h"
#include "log.h"
#include "memmon.h"
#include "metrics.h"
#include "notify.h"
#include "routes.h"
#include "statusline.h"
#include "store.h"
#include "store_open.h"
#include "watch.h"
#include "watchdog.h"

#define CLAIM_MAX 4096
#define PUMP_ROUNDS 64   /* rounds per loop pass; then the loop polls (signals, scrapes) */
#define OPS_TICK_MS 1000 /* status line and store counts refresh */
#define COUNTS_COST 100  /* store counts run at most 1/COUNTS_COST of the time */
/* A restart in place hands these to the new image of the process. */
#define ENV_HOST_ID "OUTBOXD_HOST_ID"
#define ENV_RESTART_ID "OUTBOXD_RESTART_EVENT"
#define ENV_RESTART_WHY "OUTBOXD_RESTART_REASON"
#define RESTART_ENV_MAX 1024
#define DURATION_EMA 0.1       /* weight of a run in its route's average run time */
#define HELD_MARGIN_MS 50      /* --once waits this past the last deferral */
#define CLAIM_REST_MS 20       /* first wait after a claim that brought only surplus */
#define CLAIM_REST_MAX_MS 1000 /* and the longest */
#define HALF_OPEN_HOLD_MS 100  /* surplus of a route on trial waits this (or 2 runs) */
#define SNOOZE_MAX_MS 3600000  /* a route snoozes an hour at most (the event may wait longer) */
#define DRAIN_NOTE_MIN_MS 1000 /* while draining, what it waits for is logged every */
#define DRAIN_NOTE_MAX_MS 5000 /* drain timeout / 4, within these bounds */

typedef struct retired retired_t;

typedef struct job {
  limiter_item_t item; /* first: limiter items cast back to jobs */
  store_event_t *ev;
  struct dispatch *d;
  uint64_t ticket;
  int route;               /* index in routes_t */
  int breaker;             /* the breaker the ticket is from */
  uint64_t start_ns;       /* uv_hrtime() when the handler started */
  int64_t start_ms;        /* loop time when the handler started */
  struct job *next, *prev; /* claimed-but-unstarted list */
  int started;
} job_t;

struct dispatch {
  uv_loop_t *loop;
  config_t *cfg;
  const char *script;
  store_t *store;
  host_t *host;
  limiter_t lim;
  routes_t rt;
  host_route_stats_t *rstats; /* outbox.stats() routes, sized to rt.n */
  host_breaker_stats_t *bstats;
  metrics_route_t *mroutes; /* /metrics per route and breaker */
  metrics_breaker_t *mbreakers;
  char open_names[256];   /* the status line's open breakers */
  char paused_names[256]; /* ...and paused topic patterns */
  memmon_t mem;
  backoff_t bo;
  uv_timer_t tick; /* memory sampling, rate, breaker cooldown */
  uv_timer_t brk_timer;
  uv_timer_t gate_timer; /* a route's breaker, snooze or rate lets it start again */
  int64_t gate_due;      /* when gate_timer fires (loop ms), 0 when stopped */
  int64_t held_until;    /* the latest time an event was deferred to (epoch ms) */
  int64_t claim_rest_until, claim_rest_ms; /* see want_claim */
  uv_timer_t drain_timer;
  uv_timer_t drain_note;    /* "draining ..." every few seconds while stopping */
  int draining;             /* timers stopped and drain_note started */
  uv_timer_t ops_tick;      /* status line, store counts for metrics, systemd STATUS= */
  uv_timer_t notify_ping;   /* systemd WATCHDOG=1 at half of WATCHDOG_USEC */
  uv_idle_t wake_idle;      /* deferred pump after a store wake-up */
  uv_prepare_t fresh_clock; /* refreshes the loop time right before it polls */
  uv_signal_t sig_int, sig_term, sig_hup;
  watch_t *watch;
  struct retired *retired;            /* drain timers of old generations */
  int64_t reloads_ok, reloads_failed; /* counted in reload(): SIGHUP and file watch */
  job_t *unstarted;                   /* claimed, admitted, not started */
  job_t *suspect; /* an event whose earlier hosts stopped while running it: it runs
                     alone, and nothing is claimed while it is held */
  job_t *free_jobs;
  int pumping, again;
  int stopping; /* 1: draining; 2: waiting for shutdown hooks */
  int signals;
  int paused;     /* memory high */
  int store_busy; /* the last claim met a busy store or one still claiming
                     (-EINPROGRESS); its wake-up will follow */
  int finished;
  int exit_code;
  int64_t processed, done, failed, dead, retried;
  int64_t last_processed;
  uint64_t started_ms, last_tick_ms;
  double rate;
  metrics_t *metrics;
  metrics_hist_t handler_duration;
  int statusline;
  int notify;        /* systemd listens on $NOTIFY_SOCKET */
  int notified_stop; /* STOPPING=1 sent */
  int store_err;     /* the last claim failed */
  int counts_err;    /* the last count failed (a count not ready yet is no failure) */
  int counts_known;
  store_counts_t counts; /* cached; refreshed by the ops tick, never by a scrape */
  uint64_t counts_next_ms;
  char hid[200];       /* host identity, kept across a restart in place */
  unsigned char *held; /* per route: held back (breaker open, snoozed) when the store's
                          topics were last set */
  int nheld;
  int topics_dirty;     /* the script's routes changed since the topics were set */
  int catch_all;        /* the serving script handles every topic */
  unsigned paused_gen;  /* the store's paused list the unstarted events were checked against */
  store_event_t *early; /* outbox.enqueue at the top level before the store opened */
};

static void pump(dispatch_t *d);
static void finish(dispatch_t *d);
static void notify_stopping(dispatch_t *d);
static void reload(dispatch_t *d, const char *why);
static void on_wake_idle(uv_idle_t *h);
static void on_gate_timer(uv_timer_t *t);

/* ------------------------------------------------------------------ jobs */

static job_t *job_new(dispatch_t *d, store_event_t *ev) {
  job_t *j = d->free_jobs;
  if (j)
    d->free_jobs = j->next;
  else if (!(j = malloc(sizeof *j)))
    return NULL;
  memset(j, 0, sizeof *j);
  j->ev = ev;
  j->d = d;
  ev->owner = j;
  return j;
}

static void job_free(dispatch_t *d, job_t *j) {
  if (j == d->suspect) d->suspect = NULL;
  j->next = d->free_jobs;
  d->free_jobs = j;
}

static void unstarted_add(dispatch_t *d, job_t *j) {
  j->prev = NULL;
  j->next = d->unstarted;
  if (d->unstarted) d->unstarted->prev = j;
  d->unstarted = j;
}

static void unstarted_del(dispatch_t *d, job_t *j) {
  if (j->prev)
    j->prev->next = j->next;
  else
    d->unstarted = j->next;
  if (j->next) j->next->prev = j->prev;
  j->next = j->prev = NULL;
}

/* Claimed-but-unstarted events go back to pending untouched (no attempt used). */
static void release_unstarted(dispatch_t *d) {
  while (d->unstarted) {
    job_t *j = d->unstarted;
    unstarted_del(d, j);
    limiter_cancel(&d->lim, &j->item);
    store_release(d->store, j->ev);
    job_free(d, j);
  }
}

/* A failed or returned event of a key holds back the rest of its key: the events of
 * that key this host still holds unstarted (the rest of a claimed run) go back to
 * pending untouched, before the lane could start them. */
static void release_behind(dispatch_t *d, job_t *j) {
  limiter_item_t *w;
  while ((w = limiter_behind(&j->item))) {
    job_t *f = (job_t *)w;
    limiter_cancel(&d->lim, w);
    unstarted_del(d, f);
    store_release(d->store, f->ev);
    job_free(d, f);
  }
}

/* ------------------------------------------------------------------ routes */

static int64_t loop_ms(const dispatch_t *d) { return (int64_t)uv_now(d->loop); }

/* Loop time `at` as epoch ms, for the store. */
static int64_t wall_at(const dispatch_t *d, int64_t at) {
  int64_t wait = at - loop_ms(d);
  return store_now_ms() + (wait > 0 ? wait : 0);
}

/* wall_until 0: back at once (released) */
static void defer_one(dispatch_t *d, job_t *j, int64_t wall_until) {
  if (wall_until > d->held_until) d->held_until = wall_until;
  unstarted_del(d, j);
  limiter_cancel(&d->lim, &j->item);
  if (wall_until) {
    log_at(LOG_DEBUG, "event held back", KI("id", j->ev->id), KS("topic", j->ev->topic),
           KI("until", wall_until));
    store_defer(d->store, j->ev, wall_until);
  } else {
    store_release(d->store, j->ev);
  }
  job_free(d, j);
}

/* Gives an unstarted event back until `wall_until` (0: released, claimable at once),
 * with every later unstarted event of its key (they must not overtake it). */
static void defer_job(dispatch_t *d, job_t *j, int64_t wall_until) {
  const char *key = d->cfg->ordering_key ? j->ev->key : NULL;
  for (job_t *o = d->unstarted, *next; o && key; o = next) {
    next = o->next;
    if (o != j && o->ev->key && o->ev->id > j->ev->id && strcmp(o->ev->key, key) == 0) {
      if (next == j) next = j->next;
      defer_one(d, o, wall_until);
    }
  }
  defer_one(d, j, wall_until);
}

/* The unstarted events of every route that is held (breaker open, snoozed) go back
 * until the hold ends. */
static void defer_held(dispatch_t *d) {
  int64_t now = loop_ms(d);
  for (;;) {
    job_t *j = d->unstarted;
    int64_t until = 0;
    while (j && !(until = routes_hold_until(&d->rt, j->route, now))) j = j->next;
    if (!j) return;
    defer_job(d, j, wall_at(d, until));
  }
}

/* ------------------------------------------------------------------ topics */

/* Does the store claim `topic` now? (Always, for a store that does not filter.) */
static int claims_topic(const dispatch_t *d, const char *topic) {
  const store_t *s = d->store;
  return !s->ops->filters || s->claim_all || topics_match(&s->claim, topic);
}

/* The topics route r runs: its pattern (every topic for `default`), less the more
 * specific live routes inside it, which win the match. */
static int route_topics(const routes_t *rt, int r, topics_t *out) {
  const route_t *x = &rt->v[r];
  topics_t own = {0}, inner = {0};
  int rc = r == 0 ? topics_all(&own) : topics_add(&own, x->pattern);
  for (int i = 1; i < rt->n && rc == 0 && (r == 0 || x->prefix); i++) {
    const route_t *y = &rt->v[i];
    if (i == r || !y->live) continue;
    int inside = r == 0 || (y->plen >= x->plen && memcmp(y->pattern, x->pattern, x->plen) == 0 &&
                            (!y->prefix || y->plen > x->plen));
    if (inside) rc = topics_add(&inner, y->pattern);
  }
  if (rc == 0) rc = topics_subtract(out, &own, &inner);
  topics_free(&own);
  topics_free(&inner);
  return rc;
}

/* What this host claims: every topic the script handles (all with a catch-all, else
 * its outbox.handle patterns), narrowed by --topics, less the topics of routes held
 * back (breaker open, snoozed). The store takes out paused patterns. */
static int wanted_topics(dispatch_t *d, topics_t *out) {
  topics_t handled = {0}, narrow = {0}, held = {0}, both = {0};
  char err[256];
  int rc = 0;
  if (d->catch_all) {
    rc = topics_all(&handled);
  } else {
    for (int r = 1; r < d->rt.n && rc == 0; r++)
      if (d->rt.v[r].live) rc = topics_add(&handled, d->rt.v[r].pattern);
  }
  if (rc == 0 && d->cfg->topics[0])
    rc = topics_parse(&narrow, d->cfg->topics, err, sizeof err);
  else if (rc == 0)
    rc = topics_all(&narrow);
  for (int r = 0; r < d->rt.n && rc == 0; r++) {
    if (r >= d->nheld || !d->held[r]) continue;
    topics_t t = {0}, acc = {0};
    rc = route_topics(&d->rt, r, &t);
    if (rc == 0) rc = topics_union(&acc, &held, &t);
    topics_free(&held);
    held = acc;
    topics_free(&t);
  }
  if (rc == 0) rc = topics_intersect(&both, &handled, &narrow);
  if (rc == 0) rc = topics_subtract(out, &both, &held);
  topics_free(&handled);
  topics_free(&narrow);
  topics_free(&held);
  topics_free(&both);
  return rc;
}

/* The paused topic patterns, comma-separated ("" when none). */
static const char *paused_line(dispatch_t *d) {
  size_t n = 0;
  d->paused_names[0] = 0;
  for (int i = 0; d->store && i < d->store->npaused && n < sizeof d->paused_names; i++)
    n += (size_t)snprintf(d->paused_names + n, sizeof d->paused_names - n, "%s%s", i ? "," : "",
                          d->store->paused[i]);
  return d->paused_names;
}

/* Keeps the store's topics in step with the script and the routes held back, and
 * gives back unstarted events of topics no longer claimed (paused, their route held,
 * dropped by a reload): running ones finish. */
static void sync_topics(dispatch_t *d) {
  if (!d->store || !d->store->ops->filters) return;
  int changed = d->topics_dirty;
  int64_t now = loop_ms(d);
  if (d->nheld < d->rt.n) {
    unsigned char *h = realloc(d->held, (size_t)d->rt.n);
    if (!h) return;
    memset(h + d->nheld, 0, (size_t)(d->rt.n - d->nheld));
    d->held = h;
    d->nheld = d->rt.n;
    changed = 1;
  }
  for (int r = 0; r < d->rt.n; r++) {
    unsigned char h = d->rt.v[r].live && routes_hold_until(&d->rt, r, now) > 0;
    if (h != d->held[r]) changed = 1;
    d->held[r] = h;
  }
  if (changed) {
    topics_t want = {0};
    if (wanted_topics(d, &want) || store_set_topics(d->store, &want)) {
      log_at(LOG_ERROR, "out of memory setting the topics to claim");
      topics_free(&want);
      return;
    }
    topics_free(&want);
    d->topics_dirty = 0;
  }
  if (!changed && d->paused_gen == d->store->paused_gen) return;
  if (d->paused_gen != d->store->paused_gen)
    log_at(LOG_INFO, "paused topics changed",
           KS("paused", *paused_line(d) ? d->paused_names : "-"));
  d->paused_gen = d->store->paused_gen;
  for (;;) {
    job_t *j = d->unstarted;
    while (j && claims_topic(d, j->ev->topic)) j = j->next;
    if (!j) return;
    defer_job(d, j, 0);
  }
}

/* Route r's slots: its own concurrency, the adaptive limit, or none (0). */
static int route_cap(const dispatch_t *d, const route_t *x) {
  int cap = x->concurrency;
  if (d->rt.adaptive_max) {
    int a = adaptive_limit(&x->adaptive);
    if (!cap || a < cap) cap = a;
  }
  return cap;
}

/* Opens or closes route r's class in the limiter; returns when to look again
 * (0: nothing to wait for in time). */
static int64_t gate_route(dispatch_t *d, int r, int64_t now) {
  int64_t until = 0;
  int ok = routes_may_start(&d->rt, r, now, &until);
  limiter_block(&d->lim, r, !ok);
  limiter_set_cap(&d->lim, r, route_cap(d, &d->rt.v[r]));
  return !ok && until > now ? until : 0;
}

static void breaker_changed(dispatch_t *d, int b, int state);

/* Moves breakers that are due to half-open and sets every route's gate; arms the
 * gate timer for the next moment a closed gate may open. */
static void update_gates(dispatch_t *d) {
  int64_t now = loop_ms(d), next = 0;
  for (int b = 0; b < d->rt.nbreakers; b++)
    breaker_changed(d, b, breaker_tick(&d->rt.breakers[b].brk, now));
  for (int r = 0; r < d->rt.n; r++) {
    int64_t t = gate_route(d, r, now);
    if (t && (!next || t < next)) next = t;
  }
  if (d->claim_rest_until > now && (!next || d->claim_rest_until < next))
    next = d->claim_rest_until;
  d->gate_due = next;
  if (next)
    uv_timer_start(&d->gate_timer, on_gate_timer, (uint64_t)(next - now), 0);
  else
    uv_timer_stop(&d->gate_timer);
}

/* Is any route held back for a while (a breaker not closed, a snooze, events
 * deferred until later)? --once waits for it rather than calling the store empty;
 * the gate timer looks again once deferred events are due (with a margin for the
 * store's clock). */
static int routes_held(dispatch_t *d) {
  int64_t left = d->held_until + HELD_MARGIN_MS - store_now_ms();
  if (left > 0) {
    if (!d->gate_due || loop_ms(d) + left < d->gate_due) {
      d->gate_due = loop_ms(d) + left;
      uv_timer_start(&d->gate_timer, on_gate_timer, (uint64_t)left, 0);
    }
    return 1;
  }
  for (int b = 0; b < d->rt.nbreakers; b++)
    if (d->rt.breakers[b].brk.state != BREAKER_CLOSED) return 1;
  return 0;
}

static void breaker_changed(dispatch_t *d, int b, int state) {
  if (state == BREAKER_NO_CHANGE) return;
  route_breaker_t *rb = &d->rt.breakers[b];
  const char *name = breaker_state_name(state);
  log_at(state == BREAKER_OPEN ? LOG_WARN : LOG_INFO, "circuit breaker changed", KS("state", name),
         KS("breaker", rb->name), KF("failure_rate", breaker_failure_rate(&rb->brk)),
         KI("cooldown_ms", state == BREAKER_OPEN ? rb->brk.current_ms : 0));
  if (state == BREAKER_OPEN) defer_held(d);
  static const char *hooks[] = {"circuit-breaker:closed", "circuit-breaker:opened",
                                "circuit-breaker:half-open"};
  host_fire_breaker(d->host, hooks[state], rb->name);
}

/* Applies the current generation's routes (at start and after a reload). */
static int apply_specs(void *arg, const route_spec_t *specs, int n) {
  dispatch_t *d = arg;
  int rc = routes_apply(&d->rt, specs, n, loop_ms(d));
  if (rc == 0) rc = limiter_set_classes(&d->lim, d->rt.n);
  return rc;
}

static int apply_routes(dispatch_t *d) {
  int rc = host_routes(d->host, apply_specs, d);
  d->catch_all = host_catch_all(d->host);
  d->topics_dirty = 1;
  if (rc) log_at(LOG_ERROR, "out of memory applying the script's routes");
  return rc;
}

/* ------------------------------------------------------------------ outcomes */

static void fire_event(dispatch_t *d, const char *hook, store_event_t *ev, const char *err) {
  host_fire(d->host, hook, ev, err);
}

static const dispatch_report_t *report; /* outboxd test */

static void report_attempt(const store_event_t *ev, int attempt, const char *outcome,
                           const char *err) {
  if (report) report->attempt(report->arg, ev, attempt, outcome, err);
}

/* outboxd test: the new events of `list` are reported (after `parent`, the event
 * whose done run enqueued them, or NULL) and freed; nothing runs them. */
static void report_enqueued(const store_event_t *parent, store_event_t *list) {
  for (const store_event_t *f = list; f; f = f->next)
    if (report->enqueue) report->enqueue(report->arg, parent, f);
  store_event_list_free(list);
}

/* outbox.enqueue outside an event's run: to the store at once. */
static void on_enqueue(void *arg, store_event_t *ev) {
  dispatch_t *d = arg;
  if (report) {
    report_enqueued(NULL, ev);
  } else if (d->store) {
    store_push(d->store, ev);
  } else { /* the script's top level, before the store opened */
    store_event_t **tail = &d->early;
    while (*tail) tail = &(*tail)->next;
    *tail = ev;
  }
}

/* Dead-letters `ev` (counted for `route` unless -1); `ran`: this claim ran it (one more
 * attempt counted). */
static void settle_dead(dispatch_t *d, store_event_t *ev, int route, int ran, const char *msg) {
  d->dead++;
  if (route >= 0) d->rt.v[route].dead++;
  log_at(LOG_ERROR, "event dead", KI("id", ev->id), KS("topic", ev->topic),
         KI("attempt", ev->attempts + ran), KS("error", msg));
  fire_event(d, "event:dead", ev, msg);
  report_attempt(ev, ev->attempts + ran, "dead", msg);
  store_dead(d->store, ev, ran, msg);
}

static void settle_failure(dispatch_t *d, job_t *j, const char *msg, double delay_s) {
  store_event_t *ev = j->ev;
  int attempt = ev->attempts + 1;
  d->failed++;
  d->rt.v[j->route].failed++;
  fire_event(d, "event:failed", ev, msg);
  if (attempt >= d->cfg->max_attempts) {
    settle_dead(d, ev, j->route, 1, msg);
    return;
  }
  release_behind(d, j); /* the key waits for this retry */
  /* retry(seconds) may ask for any delay: saturate the retry time instead of
   * overflowing it (a wrapped value would run the retry at once). */
  int64_t now = store_now_ms(), room = INT64_MAX - now;
  int64_t delay;
  if (delay_s >= 0)
    delay = delay_s * 1000.0 < (double)room ? (int64_t)(delay_s * 1000.0) : room;
  else if ((delay = backoff_delay(&d->bo, attempt)) > room)
    delay = room;
  d->retried++;
  if (report) { /* fake clock: the delay passes at once */
    api_time_advance(d->host, (double)delay / 1000.0);
    delay = 0;
  }
  report_attempt(ev, attempt, "retry", msg);
  log_at(LOG_WARN, "event failed", KI("id", ev->id), KS("topic", ev->topic), KI("attempt", attempt),
         KI("retry_in_ms", delay), KS("error", msg));
  store_fail(d->store, ev, now + delay, msg);
}

/* A finished run's share in its route's figures: the average run time, and under
 * --concurrency auto a sample for the route's limit. */
static void route_sample(dispatch_t *d, job_t *j, int64_t took_ms, int failed) {
  route_t *x = &d->rt.v[j->route];
  x->events++;
  x->avg_ms =
      x->avg_ms > 0 ? x->avg_ms + DURATION_EMA * ((double)took_ms - x->avg_ms) : (double)took_ms;
  if (!d->rt.adaptive_max) return;
  int64_t rtt_us = j->start_ns ? (int64_t)((uv_hrtime() - j->start_ns) / 1000) : took_ms * 1000;
  int inflight = d->lim.cls[j->route].active + 1; /* this one was released already */
  adaptive_sample(&x->adaptive, rtt_us, inflight, failed, loop_ms(d));
  limiter_set_cap(&d->lim, j->route, route_cap(d, x));
}

static void on_outcome(void *owner, int outcome, const char *msg, double delay_s) {
  job_t *j = owner;
  dispatch_t *d = j->d;
  store_event_t *ev = j->ev;
  route_t *x = &d->rt.v[j->route];
  int verdict = BREAKER_IGNORED;
  int64_t took = loop_ms(d) - j->start_ms;
  if (outcome != HOST_CANCELLED) {
    d->processed++;
    if (j->start_ns)
      metrics_hist_observe(&d->handler_duration, (double)(uv_hrtime() - j->start_ns) / 1e9);
  }
  int64_t slow = x->slow_ms ? x->slow_ms : d->cfg->breaker_slow_ms;
  switch (outcome) {
  case HOST_DONE:
    /* a slow call counts as a failure for the breaker, though the event is done */
    verdict = slow > 0 && took > slow ? BREAKER_FAILURE : BREAKER_SUCCESS;
    d->done++;
    x->done++;
    log_at(LOG_DEBUG, "event done", KI("id", ev->id), KS("topic", ev->topic));
    report_attempt(ev, ev->attempts + 1, "done", NULL);
    if (report && ev->follow) {
      report_enqueued(ev, ev->follow);
      ev->follow = NULL;
    }
    store_ack(d->store, ev);
    break;
  case HOST_SNOOZE: {
    int64_t ms = delay_s * 1000 < SNOOZE_MAX_MS ? (int64_t)(delay_s * 1000) : SNOOZE_MAX_MS;
    routes_snooze(&d->rt, j->route, loop_ms(d) + ms);
    log_at(LOG_WARN, "route snoozed", KS("route", x->pattern), KI("id", ev->id), KI("for_ms", ms),
           KS("reason", msg ? msg : "snoozed"));
  }
    /* the event itself is retried after the delay, as with retry() */
    /* fallthrough */
  case HOST_FAIL:
  case HOST_RETRY:
  case HOST_TIMEOUT:
    verdict = BREAKER_FAILURE;
    settle_failure(d, j, msg ? msg : "error",
                   outcome == HOST_RETRY || outcome == HOST_SNOOZE ? delay_s : -1);
    break;
  case HOST_REJECT: settle_dead(d, ev, j->route, 1, msg ? msg : "rejected"); break;
  default: /* cancelled: back to pending untouched, and the rest of its key with it */
    release_behind(d, j);
    store_release(d->store, ev);
    break;
  }
  limiter_release(&d->lim, &j->item); /* after release_behind: the lane moves on */
  if (outcome != HOST_CANCELLED)
    route_sample(d, j, took, outcome != HOST_DONE && outcome != HOST_REJECT);
  int b = j->breaker;
  int state = breaker_record(&d->rt.breakers[b].brk, j->ticket, verdict, loop_ms(d));
  job_free(d, j);
  breaker_changed(d, b, state);
  if (outcome == HOST_SNOOZE) defer_held(d);
  pump(d);
}

/* ------------------------------------------------------------------ pump */

/* After a start of route r: its breaker may now run a trial, its bucket may be
 * empty; every route sharing the breaker looks again. */
static void regate_after_start(dispatch_t *d, int r, int64_t now) {
  int b = d->rt.v[r].breaker;
  for (int i = 0; i < d->rt.n; i++) {
    if (d->rt.v[i].breaker != b && i != r) continue;
    int64_t t = gate_route(d, i, now);
    if (t && (!d->gate_due || t < d->gate_due)) {
      d->gate_due = t;
      uv_timer_start(&d->gate_timer, on_gate_timer, (uint64_t)(t - now), 0);
    }
  }
}

static void start_ready(dispatch_t *d) {
  if (d->stopping) return;
  update_gates(d);
  job_t *j;
  while (!d->stopping) {
    /* while a suspect is held, one event at a time, and nothing beside it */
    if (d->suspect && (d->suspect->started || d->lim.active)) break;
    if (!(j = (job_t *)limiter_next(&d->lim))) break;
    int64_t now = loop_ms(d);
    route_t *x = &d->rt.v[j->route];
    uint64_t ticket;
    int tr = BREAKER_NO_CHANGE;
    int b = x->breaker;
    int ok = breaker_acquire(&d->rt.breakers[b].brk, now, &ticket, &tr);
    breaker_changed(d, b, tr);
    bucket_take(&x->bucket, now);
    unstarted_del(d, j);
    j->ticket = ok ? ticket : 0; /* the gate said yes, so ok; a 0 ticket counts nothing */
    j->breaker = b;
    j->started = 1;
    j->start_ms = now;
    j->start_ns = d->metrics || d->rt.adaptive_max ? uv_hrtime() : 0; /* timed when needed */
    regate_after_start(d, j->route, now);
    if (host_run(d->host, j->ev, j, x->timeout_ms ? x->timeout_ms : d->cfg->timeout_ms)) {
      log_at(LOG_ERROR, "out of memory starting a handler", KI("id", j->ev->id));
      release_behind(d, j);
      limiter_release(&d->lim, &j->item);
      breaker_record(&d->rt.breakers[b].brk, j->ticket, BREAKER_IGNORED, 0);
      store_release(d->store, j->ev);
      job_free(d, j);
      break;
    }
  }
}

/* Does route r hold as many unstarted events as it can use (its slots and a batch)?
 * More of its events are surplus (see overflow_until). */
static int route_full(const dispatch_t *d, int r) {
  const limiter_class_t *c = &d->lim.cls[r];
  int cap = c->cap > 0 ? c->cap : d->lim.limit;
  return c->queued >= cap + d->cfg->batch;
}

/* How many more events the routes that may take them now could hold: for each live
 * route not held back (breaker open, snoozed) its slots and a batch, less what it
 * holds. `default` counts only when the script has a catch-all: without one it runs
 * nothing (a store that does not filter by topic hands it events that go dead at
 * once), and its room would let claims go on while every route that runs events is
 * full or held, so that an unfiltered source (NDJSON) was read far ahead and the
 * healthy route's events came back as surplus, deferred. A claim asks for no more, so
 * one route's claims do not come back as surplus when the others take nothing. */
static int claim_room(dispatch_t *d) {
  int64_t now = loop_ms(d), room = 0;
  for (int r = 0; r < d->rt.n; r++) {
    if (!d->rt.v[r].live || (r == 0 && !d->catch_all)) continue;
    if (routes_hold_until(&d->rt, r, now)) continue;
    const limiter_class_t *c = &d->lim.cls[r];
    int cap = c->cap > 0 ? c->cap : d->lim.limit;
    if (c->queued < cap + d->cfg->batch) room += cap + d->cfg->batch - c->queued;
  }
  return room > INT32_MAX ? INT32_MAX : (int)room;
}

/* Claims go on while there is room and some live route could use more events. A
 * claim that brought only surplus makes the next one wait (claim_rest_ms, doubling
 * up to CLAIM_REST_MAX_MS), so full routes never turn into a claim-and-defer loop. */
static int want_claim(dispatch_t *d) {
  if (d->stopping || d->paused || d->suspect || loop_ms(d) < d->claim_rest_until) return 0;
  if (d->lim.active + d->lim.queued >= d->lim.limit + d->cfg->batch) return 0;
  return claim_room(d) > 0;
}

/* When route r already holds more unstarted events than it can start soon, a new
 * one goes back to the store until about when the route will have room for it:
 * one average run time per slot (or one rate interval) for each event ahead of it,
 * the surplus spread out one after another so it returns as the route drains; a
 * route on a half-open trial holds it only until the trial's outcome. Returns that
 * time (loop ms) or 0 when the route takes the event now. */
static int64_t overflow_until(dispatch_t *d, int r, int64_t now) {
  route_t *x = &d->rt.v[r];
  const limiter_class_t *c = &d->lim.cls[r];
  int cap = c->cap > 0 ? c->cap : d->lim.limit;
  if (!route_full(d, r)) return 0;
  double avg = x->avg_ms > 1 ? x->avg_ms : 1;
  if (routes_breaker(&d->rt, r)->state == BREAKER_HALF_OPEN) /* the trial's outcome first */
    return now + (avg * 2 > HALF_OPEN_HOLD_MS ? (int64_t)(avg * 2) : HALF_OPEN_HOLD_MS);
  double per_ms = x->rate > 0 ? 1000.0 / x->rate : avg / cap;
  double at = (double)now + per_ms * (c->queued + 1);
  if (x->overflow_next > at) at = x->overflow_next; /* one after another, not all at once */
  x->overflow_next = at + per_ms; /* fractional: a route faster than 1 per ms keeps its pace */
  return (int64_t)at;
}

/* After a claim: one that brought only surplus makes the next wait longer. */
static void claim_rest(dispatch_t *d, int only_surplus) {
  if (!only_surplus) {
    d->claim_rest_ms = 0;
    return;
  }
  d->claim_rest_ms = d->claim_rest_ms ? d->claim_rest_ms * 2 : CLAIM_REST_MS;
  if (d->claim_rest_ms > CLAIM_REST_MAX_MS) d->claim_rest_ms = CLAIM_REST_MAX_MS;
  d->claim_rest_until = loop_ms(d) + d->claim_rest_ms;
  if (!d->gate_due || d->claim_rest_until < d->gate_due) {
    d->gate_due = d->claim_rest_until;
    uv_timer_start(&d->gate_timer, on_gate_timer, (uint64_t)d->claim_rest_ms, 0);
  }
}

/* The events of `key` after evs[i] in a claim go back to pending untouched: the one
 * before them is not run now, and they must not overtake it. */
static void release_rest_of_key(dispatch_t *d, store_event_t **evs, int i, int n, const char *key) {
  for (int k = i + 1; k < n && key; k++)
    if (evs[k] && evs[k]->key && strcmp(evs[k]->key, key) == 0) {
      store_release(d->store, evs[k]);
      evs[k] = NULL;
    }
}

/* Claims one batch; returns how many events came. */
static int claim(dispatch_t *d) {
  store_event_t *evs[CLAIM_MAX];
  int max = d->cfg->batch < CLAIM_MAX ? d->cfg->batch : CLAIM_MAX, n = 0, room = claim_room(d);
  if (room < max) max = room;
  int rc = store_claim(d->store, max, evs, &n);
  d->store_err = rc < 0 && rc != -EINPROGRESS;
  /* not "nothing claimable": --once must wait */
  d->store_busy = rc == -EAGAIN || rc == -EINPROGRESS;
  if (rc < 0) return 0;
  int kept = 0, surplus = 0;
  for (int i = 0; i < n; i++) {
    store_event_t *ev = evs[i];
    if (!ev) continue; /* released with an earlier event of its key */
    if (ev->lapsed) {
      char msg[96];
      snprintf(msg, sizeof msg, "%s (attempt %d)", STORE_LAPSE_ERROR, ev->attempts);
      if (ev->attempts >= d->cfg->max_attempts) {
        settle_dead(d, ev, -1, 0, msg); /* the store counted the stopped run */
        continue;
      }
      log_at(LOG_WARN, "taking over an event", KI("id", ev->id), KS("topic", ev->topic),
             KS("reason", msg), KS("run", ev->lapsed == STORE_SUSPECT ? "alone" : "as usual"));
    }
    if (ev->payload_len > STORE_PAYLOAD_MAX) {
      char msg[96];
      snprintf(msg, sizeof msg, "payload too large (%zu bytes, limit %u)", ev->payload_len,
               STORE_PAYLOAD_MAX);
      settle_dead(d, ev, -1, 0, msg); /* never run: no attempt used */
      continue;
    }
    const char *key = d->cfg->ordering_key ? ev->key : NULL;
    if (!claims_topic(d, ev->topic)) { /* paused or dropped since the claim began */
      store_release(d->store, ev);
      release_rest_of_key(d, evs, i, n, key);
      continue;
    }
    job_t *j = job_new(d, ev);
    if (j) j->item.cls = j->route = routes_match(&d->rt, ev->topic);
    if (!j || limiter_admit(&d->lim, &j->item, key, key ? strlen(key) : 0)) {
      if (j) job_free(d, j);
      store_release(d->store, ev);
      release_rest_of_key(d, evs, i, n, key);
      continue;
    }
    if (ev->lapsed == STORE_SUSPECT) d->suspect = j;
    unstarted_add(d, j);
    int64_t now = loop_ms(d), until = routes_hold_until(&d->rt, j->route, now);
    if (!until && (until = overflow_until(d, j->route, now))) surplus++;
    if (until) {
      release_rest_of_key(d, evs, i, n, key); /* they wait behind it in the store */
      defer_job(d, j, wall_at(d, until));
    } else {
      kept++;
    }
  }
  claim_rest(d, n > 0 && kept == 0 && surplus > 0);
  return n;
}

static void pump(dispatch_t *d) {
  if (d->pumping) {
    d->again = 1;
    return;
  }
  d->pumping = 1;
  sync_topics(d);
  int rounds = 0;
  do {
    d->again = 0;
    start_ready(d);
    if (want_claim(d) && claim(d) > 0) d->again = 1;
  } while (d->again && ++rounds < PUMP_ROUNDS);
  d->pumping = 0;
  /* Handlers that finish at once keep asking for more: go on after the loop has
   * polled, so signals, wake-ups and metrics scrapes are never starved. */
  if (d->again) uv_idle_start(&d->wake_idle, on_wake_idle);
  if (d->finished || d->stopping) {
    if (d->stopping == 1 && d->lim.active == 0) finish(d);
    return;
  }
  int idle = d->lim.active == 0 && d->lim.queued == 0;
  int exhausted = idle ? store_exhausted(d->store) : 0;
  if (exhausted < 0) {
    log_at(LOG_ERROR, "input ended on a read error, every event read settled",
           KI("processed", d->processed));
    d->exit_code = 1;
    d->stopping = 1;
    finish(d);
  } else if (exhausted) {
    log_at(LOG_INFO, "input exhausted, every event settled", KI("processed", d->processed));
    d->stopping = 1;
    finish(d);
  } else if (idle && d->cfg->once && d->store_err && !d->store_busy) {
    log_at(LOG_ERROR, "the store failed (--once): stopping", KI("processed", d->processed));
    d->exit_code = 1;
    d->stopping = 1;
    finish(d);
  } else if (idle && d->cfg->once && !d->paused && !d->store_busy && !routes_held(d)) {
    log_at(LOG_INFO, "nothing claimable (--once)", KI("processed", d->processed));
    d->stopping = 1;
    finish(d);
  }
}

/* ------------------------------------------------------------------ timers, signals */

static void on_wake_idle(uv_idle_t *h) {
  uv_idle_stop(h);
  pump(h->data);
}

/* libuv computes the poll timeout from the time cached when the pass began. After a
 * pass that ran many handlers that cached time is stale, and the loop would sleep a
 * full timer period for sleeps that are already due; refreshing it here, just before
 * the poll, keeps 1 ms sleeps at 1 ms. */
static void on_fresh_clock(uv_prepare_t *h) { uv_update_time(h->loop); }

static void on_store_wake(void *arg) {
  dispatch_t *d = arg;
  uv_idle_start(&d->wake_idle, on_wake_idle);
}

static void on_brk_timer(uv_timer_t *t) {
  dispatch_t *d = t->data;
  if (d->stopping == 2)
    finish(d); /* waiting for shutdown hooks */
  else
    pump(d);
}

static void on_gate_timer(uv_timer_t *t) {
  dispatch_t *d = t->data;
  d->gate_due = 0;
  pump(d);
}

/* Acts on a memory monitor transition: pause or resume intake, fire the hook. */
static void memory_changed(dispatch_t *d, int change) {
  if (change == MEMMON_HIGH) {
    d->paused = 1;
    log_at(LOG_WARN, "memory high: intake paused", KI("rss", d->mem.rss), KI("limit", d->mem.limit),
           KI("lua_heap", d->mem.lua_heap));
    host_full_gc(d->host);
    host_fire(d->host, "memory:high", NULL, NULL);
  } else if (change == MEMMON_NORMAL) {
    d->paused = 0;
    log_at(LOG_INFO, "memory normal: intake resumed", KI("rss", d->mem.rss));
    host_fire(d->host, "memory:normal", NULL, NULL);
    pump(d);
  }
}

/* A handler met the Lua memory limit: memory is high (intake pauses until the next
 * sample finds it normal again). */
static void on_lua_limit_met(void *arg) {
  dispatch_t *d = arg;
  memory_changed(d, memmon_enter_high(&d->mem));
}

static void on_tick(uv_timer_t *t) {
  dispatch_t *d = t->data;
  uint64_t now = uv_now(d->loop);
  if (now > d->last_tick_ms)
    d->rate = (double)(d->processed - d->last_processed) * 1000.0 / (double)(now - d->last_tick_ms);
  d->last_processed = d->processed;
  d->last_tick_ms = now;
  memory_changed(d, memmon_sample(&d->mem, memmon_read_rss(), host_lua_heap(d->host)));
}

/* Starts a drain timeout from now. The loop's cached time can be old here (the first
 * pump runs before the loop does; a load or a long pass), and a timer armed from it
 * would fire before the hooks just fired ever began. */
static void start_drain_timer(dispatch_t *d, uv_timer_t *t, uv_timer_cb cb) {
  uv_update_time(d->loop);
  uv_timer_start(t, cb, (uint64_t)d->cfg->drain_timeout_ms, 0);
}

/* Hooks and timer runs still going, all generations. */
static int background_running(const dispatch_t *d) {
  return host_hooks_running(d->host) + host_timers_running(d->host);
}

static void on_drain_note(uv_timer_t *t) {
  dispatch_t *d = t->data;
  char names[256];
  host_hook_names(d->host, names, sizeof names);
  log_at(LOG_INFO, "draining", KI("events", host_events_running(d->host)),
         KI("hooks", host_hooks_running(d->host)), KI("timers", host_timers_running(d->host)),
         KS("waiting_for", names));
}

/* The host stops: no timer ticks any more (runs going on may finish), and what the
 * drain waits for is logged every few seconds. */
static void drain_begin(dispatch_t *d) {
  char names[256];
  if (d->draining) return;
  d->draining = 1;
  int n = host_stop_timers(d->host, names, sizeof names);
  if (n) log_at(LOG_INFO, "timers stopped", KI("timers", n), KS("stopped", names));
  int64_t every = d->cfg->drain_timeout_ms / 4;
  every = every < DRAIN_NOTE_MIN_MS   ? DRAIN_NOTE_MIN_MS
          : every > DRAIN_NOTE_MAX_MS ? DRAIN_NOTE_MAX_MS
                                      : every;
  uv_timer_start(&d->drain_note, on_drain_note, (uint64_t)every, (uint64_t)every);
}

static void on_drain_timeout(uv_timer_t *t) {
  dispatch_t *d = t->data;
  char names[256];
  host_hook_names(d->host, names, sizeof names);
  if (d->stopping == 1) {
    log_at(LOG_WARN, "drain timeout: returning unfinished events",
           KI("running", host_events_running(d->host)), KI("hooks", host_hooks_running(d->host)),
           KI("timers", host_timers_running(d->host)), KS("abandoned", names));
    host_cancel_all(d->host); /* outcomes arrive as cancelled: released */
    finish(d);
  } else {
    uv_timer_stop(&d->drain_note);
    log_at(LOG_WARN, "drain timeout: hooks and timer runs abandoned",
           KI("hooks", host_hooks_running(d->host)), KI("timers", host_timers_running(d->host)),
           KS("abandoned", names));
    host_cancel_all(d->host);
  }
}

static void store_closed(void *arg) { (void)arg; }
static void host_closed(void *arg) { (void)arg; }

/* Everything settled (or gave up waiting): fire `shutdown`, wait for the hooks,
 * flush and close. */
static void finish(dispatch_t *d) {
  if (d->finished) return;
  if (d->stopping == 1) {
    d->stopping = 2;
    drain_begin(d);
    host_fire(d->host, "shutdown", NULL, NULL);
    start_drain_timer(d, &d->drain_timer, on_drain_timeout);
  }
  if (background_running(d) > 0) { /* look again shortly */
    uv_timer_start(&d->brk_timer, on_brk_timer, 5, 0);
    return;
  }
  d->finished = 1;
  notify_stopping(d);
  uv_timer_stop(&d->notify_ping);
  statusline_stop();
  store_flush(d->store);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  log_at(LOG_INFO, "stopped", KI("processed", d->processed), KI("done", d->done),
         KI("failed", d->failed), KI("dead", d->dead),
         KI("peak_rss", (int64_t)ru.ru_maxrss * 1024));
  uv_timer_stop(&d->drain_timer);
  uv_timer_stop(&d->drain_note);
  uv_timer_stop(&d->tick);
  uv_timer_stop(&d->ops_tick);
  uv_timer_stop(&d->brk_timer);
  uv_signal_stop(&d->sig_int);
  uv_signal_stop(&d->sig_term);
  uv_signal_stop(&d->sig_hup);
  watch_stop(d->watch);
  d->watch = NULL;
  uv_stop(d->loop);
}

static void begin_shutdown(dispatch_t *d, const char *why) {
  if (d->stopping) return;
  log_at(LOG_INFO, "shutting down", KS("reason", why),
         KI("in_flight", host_events_running(d->host)));
  d->stopping = 1;
  notify_stopping(d);
  drain_begin(d);
  release_unstarted(d);
  start_drain_timer(d, &d->drain_timer, on_drain_timeout);
  if (d->lim.active == 0) finish(d);
}

/* ------------------------------------------------------------------ reload */

/* A retired generation's drain timer; kept in d->retired until closed. */
struct retired {
  uv_timer_t timer;
  dispatch_t *d;
  int generation;
  struct retired *next;
};

static void retired_closed(uv_handle_t *h) { free(h->data); }

static void retired_close(dispatch_t *d, retired_t *r) {
  retired_t **pp = &d->retired;
  while (*pp && *pp != r) pp = &(*pp)->next;
  if (*pp) *pp = r->next;
  uv_close((uv_handle_t *)&r->timer, retired_closed);
}

static void on_retired_timeout(uv_timer_t *t) {
  retired_t *r = t->data;
  int n = host_cancel_generation(r->d->host, r->generation);
  if (n > 0)
    log_at(LOG_WARN, "drain timeout: events of an old generation returned to pending",
           KI("generation", r->generation), KI("events", n));
  retired_close(r->d, r);
}

/* Loads the script into a new generation; on failure the serving one stays. */
static void reload(dispatch_t *d, const char *why) {
  char err[1024];
  int old = host_generation(d->host);
  if (d->stopping) return;
  if (access(d->script, R_OK) != 0) {
    log_at(LOG_WARN, "script missing: still serving", KS("script", d->script),
           KI("generation", old));
    return;
  }
  if (host_load(d->host, d->script, err, sizeof err)) {
    d->reloads_failed++;
    log_at(LOG_ERROR, "reload failed", KS("reason", why), KS("error", err), KI("generation", old));
    host_fire(d->host, "reload:failed", NULL, err);
    return;
  }
  d->reloads_ok++;
  /* settings a new script may change: the limit, the routes and the retry delays
   * (breakers keep their state by name, and the memory monitor its settings) */
  limiter_set_limit(&d->lim, d->cfg->concurrency);
  apply_routes(d);
  d->bo.base_ms = d->cfg->backoff_base_ms;
  d->bo.cap_ms = d->cfg->backoff_cap_ms;
  log_at(LOG_INFO, "reloaded", KS("reason", why), KI("generation", host_generation(d->host)),
         KI("live_generations", host_live_generations(d->host)));
  host_fire(d->host, "load", NULL, NULL);
  host_fire(d->host, "reload", NULL, NULL);
  retired_t *r = calloc(1, sizeof *r);
  if (r && host_live_generations(d->host) > 1) {
    r->d = d;
    r->next = d->retired;
    d->retired = r;
    r->generation = old;
    uv_timer_init(d->loop, &r->timer);
    r->timer.data = r;
    start_drain_timer(d, &r->timer, on_retired_timeout);
    uv_unref((uv_handle_t *)&r->timer);
  } else {
    free(r);
  }
  pump(d);
}

static void on_script_changed(void *arg) { reload(arg, "file changed"); }

static void on_signal(uv_signal_t *s, int signum) {
  dispatch_t *d = s->data;
  if (signum == SIGHUP) {
    reload(d, "SIGHUP");
    return;
  }
  if (++d->signals > 1) {
    log_at(LOG_WARN, "second signal: exiting now", KI("in_flight", host_events_running(d->host)));
    store_flush(d->store);
    log_flush(100);
    _exit(1);
  }
  if (d->stopping) { /* already ending (input done, --once): the next signal exits at once */
    log_at(LOG_INFO, "already shutting down",
           KS("signal", signum == SIGINT ? "SIGINT" : "SIGTERM"));
    return;
  }
  begin_shutdown(d, signum == SIGINT ? "SIGINT" : "SIGTERM");
}

/* ------------------------------------------------------------------ stats */

/* Worse first: open, half-open, closed. */
static int severity(int state) {
  return state == BREAKER_OPEN ? 2 : state == BREAKER_HALF_OPEN ? 1 : 0;
}

/* The worst state of the live breakers, the highest failure rate, and whether
 * every live breaker is open. */
static int breakers_summary(const dispatch_t *d, double *rate, int *all_open) {
  int worst = BREAKER_CLOSED, live = 0, open = 0;
  *rate = 0;
  for (int b = 0; b < d->rt.nbreakers; b++) {
    const route_breaker_t *rb = &d->rt.breakers[b];
    if (!rb->live) continue;
    live++;
    open += rb->brk.state == BREAKER_OPEN;
    if (severity(rb->brk.state) > severity(worst)) worst = rb->brk.state;
    double r = breaker_failure_rate(&rb->brk);
    if (r > *rate) *rate = r;
  }
  if (all_open) *all_open = live > 0 && open == live;
  return worst;
}

/* Does route r show in the figures? Live ones, and dropped ones still busy. */
static int route_shown(const dispatch_t *d, int r) {
  return d->rt.v[r].live || d->lim.cls[r].active || d->lim.cls[r].queued;
}

static int64_t route_limit(const dispatch_t *d, int r) {
  int cap = d->lim.cls[r].cap;
  return cap > 0 && cap < d->lim.limit ? cap : d->lim.limit;
}

/* Sizes the per-route and per-breaker arrays to the tables; 0 or -ENOMEM. */
static int figures_room(dispatch_t *d) {
  size_t nr = (size_t)d->rt.n, nb = (size_t)d->rt.nbreakers;
  void *a = realloc(d->rstats, nr * sizeof *d->rstats);
  if (a) d->rstats = a;
  void *b = realloc(d->bstats, nb * sizeof *d->bstats);
  if (b) d->bstats = b;
  void *c = realloc(d->mroutes, nr * sizeof *d->mroutes);
  if (c) d->mroutes = c;
  void *e = realloc(d->mbreakers, nb * sizeof *d->mbreakers);
  if (e) d->mbreakers = e;
  return a && b && c && e ? 0 : -ENOMEM;
}

static void fill_stats(void *arg, host_stats_t *s) {
  dispatch_t *d = arg;
  if (figures_room(d) == 0) {
    for (int r = 0; r < d->rt.n; r++) {
      if (!route_shown(d, r)) continue;
      const route_t *x = &d->rt.v[r];
      host_route_stats_t *o = &d->rstats[s->nroutes++];
      o->name = x->pattern;
      o->active = d->lim.cls[r].active;
      o->queued = d->lim.cls[r].queued;
      o->limit = route_limit(d, r);
      o->done = x->done;
      o->failed = x->failed;
      o->dead = x->dead;
    }
    for (int b = 0; b < d->rt.nbreakers; b++) {
      const route_breaker_t *rb = &d->rt.breakers[b];
      if (!rb->live) continue;
      host_breaker_stats_t *o = &d->bstats[s->nbreakers++];
      o->name = rb->name;
      o->state = breaker_state_name(rb->brk.state);
      o->failure_rate = breaker_failure_rate(&rb->brk);
    }
    s->routes = d->rstats;
    s->breakers = d->bstats;
  }
  s->active = d->lim.active;
  s->queued = d->lim.queued;
  s->processed = d->processed;
  s->done = d->done;
  s->failed = d->failed;
  s->dead = d->dead;
  s->retried = d->retried;
  s->breaker = breaker_state_name(breakers_summary(d, &s->failure_rate, NULL));
  s->rss = memmon_read_rss(); /* live: stats() is not on the per-event path */
  s->memory_limit = d->mem.limit;
  s->memory_high = d->mem.high;
  s->rate = d->rate;
  s->uptime_ms = (int64_t)(uv_now(d->loop) - d->started_ms);
  s->concurrency = d->lim.limit;
}

/* ------------------------------------------------------------------ operations */

static void fill_figures(void *arg, metrics_figures_t *f) {
  dispatch_t *d = arg;
  f->done = d->done;
  f->failed = d->failed;
  f->dead = d->dead;
  f->retried = d->retried;
  f->inflight = d->lim.active;
  f->queued = d->lim.queued;
  f->concurrency = d->lim.limit;
  double rate;
  f->breaker = breakers_summary(d, &rate, &f->breakers_all_open);
  if (figures_room(d) == 0) {
    for (int r = 0; r < d->rt.n; r++) {
      if (!route_shown(d, r)) continue;
      metrics_route_t *o = &d->mroutes[f->nroutes++];
      o->name = d->rt.v[r].pattern;
      o->inflight = d->lim.cls[r].active;
      o->limit = route_limit(d, r);
      o->events = d->rt.v[r].events;
    }
    for (int b = 0; b < d->rt.nbreakers; b++) {
      if (!d->rt.breakers[b].live) continue;
      metrics_breaker_t *o = &d->mbreakers[f->nbreakers++];
      o->name = d->rt.breakers[b].name;
      o->state = d->rt.breakers[b].brk.state;
    }
    f->routes = d->mroutes;
    f->breakers = d->mbreakers;
  }
  f->rss = d->mem.rss ? d->mem.rss : memmon_read_rss();
  f->lua_heap = host_lua_heap(d->host);
  f->memory_limit = d->mem.limit;
  f->memory_high = d->mem.high;
  f->intake_paused = d->paused;
  f->store_ok = !d->store_err && !d->counts_err;
  f->pending = d->counts_known ? d->counts.pending : -1;
  f->store_dead = d->counts_known ? d->counts.dead : -1;
  f->oldest_pending_age_s = (double)d->counts.oldest_pending_age_ms / 1000.0;
  f->reloads_ok = d->reloads_ok;
  f->reloads_failed = d->reloads_failed;
  f->paused = d->store ? d->store->paused : NULL;
  f->npaused = d->store ? d->store->npaused : 0;
  f->generation = host_generation(d->host);
  f->live_generations = host_live_generations(d->host);
  f->timers = (int64_t)host_timers(d->host);
  f->timers_running = host_timers_running(d->host);
  f->timer_skips = (int64_t)host_timer_skips(d->host);
  f->hooks_running = host_hooks_running(d->host);
  f->uptime_s = (double)(uv_now(d->loop) - d->started_ms) / 1000.0;
  f->handler_duration = &d->handler_duration;
}

/* Store counts can scan the whole table: refresh them about once a second, less
 * often when they are slow, so they take at most 1/COUNTS_COST of the loop. */
static void refresh_counts(dispatch_t *d, uint64_t now) {
  if (now < d->counts_next_ms) return;
  uint64_t t0 = uv_hrtime();
  int rc = store_counts(d->store, &d->counts);
  uint64_t took_ms = (uv_hrtime() - t0) / 1000000;
  /* -EAGAIN: no counts at hand yet, or the database is busy; -ENOTSUP: the store
   * cannot count now. Neither says the store is failing. */
  if (rc != -EAGAIN && rc != -ENOTSUP) {
    d->counts_err = rc != 0;
    d->counts_known = rc == 0;
  }
  d->counts_next_ms =
      now + (took_ms * COUNTS_COST > OPS_TICK_MS ? took_ms * COUNTS_COST : OPS_TICK_MS - 50);
}

/* "closed", "half-open", or "open order.*,pay" naming the open breakers. */
static const char *breakers_line(dispatch_t *d) {
  double rate;
  int worst = breakers_summary(d, &rate, NULL);
  if (worst != BREAKER_OPEN) return breaker_state_name(worst);
  size_t n = (size_t)snprintf(d->open_names, sizeof d->open_names, "open");
  const char *sep = " ";
  for (int b = 0; b < d->rt.nbreakers && n < sizeof d->open_names; b++) {
    const route_breaker_t *rb = &d->rt.breakers[b];
    if (!rb->live || rb->brk.state != BREAKER_OPEN) continue;
    n += (size_t)snprintf(d->open_names + n, sizeof d->open_names - n, "%s%s", sep, rb->name);
    sep = ",";
  }
  return d->open_names;
}

/* The status-line text (also systemd's STATUS=) into buf. */
static void status_text(dispatch_t *d, uint64_t now, char *buf, size_t cap, int draw) {
  statusline_figures_t f = {now,
                            d->processed,
                            d->lim.active,
                            d->lim.limit,
                            d->lim.queued,
                            d->counts_known ? d->counts.pending : -1,
                            breakers_line(d),
                            d->mem.rss ? d->mem.rss : memmon_read_rss(),
                            d->mem.limit,
                            host_generation(d->host),
                            paused_line(d)};
  if (draw) statusline_update(&f);
  statusline_format(&f, statusline_rate(&f), buf, cap, 0);
}

/* Tells systemd `state` ("READY=1", "STOPPING=1" or nothing) with the status text. */
static void notify_state(dispatch_t *d, const char *state) {
  char text[512], msg[600];
  if (!d->notify) return;
  status_text(d, uv_now(d->loop), text, sizeof text, 0);
  snprintf(msg, sizeof msg, "%s%sSTATUS=%s", state, *state ? "\n" : "", text);
  notify_send(msg);
}

/* STOPPING=1, once, when a shutdown or the end of the input begins. */
static void notify_stopping(dispatch_t *d) {
  if (d->notified_stop) return;
  d->notified_stop = 1;
  notify_state(d, "STOPPING=1");
}

static void on_ops_tick(uv_timer_t *t) {
  dispatch_t *d = t->data;
  char text[512];
  uint64_t now = uv_now(d->loop);
  refresh_counts(d, now);
  if (d->statusline) status_text(d, now, text, sizeof text, 1);
  if (d->notify && !d->notified_stop) notify_state(d, "");
}

static void on_notify_ping(uv_timer_t *t) { notify_send("WATCHDOG=1"); }

/* Starts the metrics server and the status line when asked for. Returns 0, or the
 * exit code after printing why. */
static int ops_start(dispatch_t *d) {
  char err[256];
  d->statusline = statusline_wanted(log_format() == LOG_JSON) && statusline_start() == 0;
  if (d->cfg->metrics[0]) {
    int rc = metrics_start(&d->metrics, d->loop, d->cfg->metrics, fill_figures, d, err, sizeof err);
    if (rc) {
      fprintf(stderr, "outboxd: %s\n", err);
      return rc == -EINVAL ? 2 : 1;
    }
  }
  d->notify = notify_enabled();
  if (d->metrics || d->statusline || d->notify) {
    uv_timer_start(&d->ops_tick, on_ops_tick, 0, OPS_TICK_MS);
    uv_unref((uv_handle_t *)&d->ops_tick);
  }
  uint64_t ping_ms = notify_watchdog_usec() / 2000; /* half the watchdog period */
  if (notify_watchdog_usec()) {
    uv_timer_start(&d->notify_ping, on_notify_ping, 0, ping_ms ? ping_ms : 1);
    uv_unref((uv_handle_t *)&d->notify_ping);
  }
  return 0;
}

/* ------------------------------------------------------------------ run */

static void init_handle(dispatch_t *d, uv_handle_t *h) { h->data = d; }

static void close_all(dispatch_t *d) {
  uv_handle_t *hs[] = {(uv_handle_t *)&d->tick,        (uv_handle_t *)&d->brk_timer,
                       (uv_handle_t *)&d->gate_timer,  (uv_handle_t *)&d->drain_timer,
                       (uv_handle_t *)&d->wake_idle,   (uv_handle_t *)&d->sig_int,
                       (uv_handle_t *)&d->sig_term,    (uv_handle_t *)&d->sig_hup,
                       (uv_handle_t *)&d->ops_tick,    (uv_handle_t *)&d->fresh_clock,
                       (uv_handle_t *)&d->notify_ping, (uv_handle_t *)&d->drain_note};
  for (size_t i = 0; i < sizeof hs / sizeof hs[0]; i++) uv_close(hs[i], NULL);
  while (d->retired) retired_close(d, d->retired);
  if (d->metrics) metrics_close(d->metrics, NULL, NULL);
  d->metrics = NULL;
}

/* This host's identity: the one it had before a restart in place, else a new one. */
static void host_id(char *out, size_t n) {
  char hn[128] = "host";
  const char *kept = getenv(ENV_HOST_ID);
  if (kept && *kept) {
    snprintf(out, n, "%s", kept);
    return;
  }
  gethostname(hn, sizeof hn - 1);
  snprintf(out, n, "%s:%d:%llx", hn, (int)getpid(), (unsigned long long)uv_hrtime() & 0xffffff);
}

/* ------------------------------------------------------------------ runaway code */

static char **restart_argv; /* main()'s argv, for execv */

void dispatch_set_argv(char **argv) { restart_argv = argv; }

static int is_restart_var(const char *e) {
  static const char *const names[] = {ENV_HOST_ID "=", ENV_RESTART_ID "=", ENV_RESTART_WHY "="};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strncmp(e, names[i], strlen(names[i])) == 0) return 1;
  return 0;
}

/* Replaces the process image with a fresh run of the same command line: same pid,
 * same host identity. Runs on the watchdog thread with the loop thread frozen, so it
 * allocates nothing (the frozen thread may hold the allocator's lock). Returns only
 * when execve failed. */
static void restart_in_place(const dispatch_t *d, int64_t dead_id, const char *why) {
  static char *envp[RESTART_ENV_MAX + 4];
  static char vars[3][512];
  int n = 0;
  for (char **e = environ; *e && n < RESTART_ENV_MAX; e++)
    if (!is_restart_var(*e)) envp[n++] = *e;
  snprintf(vars[0], sizeof vars[0], "%s=%s", ENV_HOST_ID, d->hid);
  snprintf(vars[1], sizeof vars[1], "%s=%lld", ENV_RESTART_ID, (long long)dead_id);
  snprintf(vars[2], sizeof vars[2], "%s=%s", ENV_RESTART_WHY, why);
  for (int i = 0; i < 3; i++) envp[n++] = vars[i];
  envp[n] = NULL;
  /* Files and sockets handlers opened (io.open, client libraries) may lack
   * close-on-exec; the new image keeps only stdin, stdout and stderr. */
  if (close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0 && errno != ENOSYS)
    log_at(LOG_WARN, "descriptors may outlive the restart", KS("error", strerror(errno)));
  sigset_t none;
  sigemptyset(&none);
  pthread_sigmask(SIG_SETMASK, &none, NULL); /* the new image inherits this thread's mask */
  log_flush(500);                            /* queued log lines do not survive exec */
  execve("/proc/self/exe", restart_argv, envp);
  log_at(LOG_ERROR, "cannot restart in place", KS("error", strerror(errno)));
}

/* The watchdog's verdict: the loop thread is frozen inside `r` for good. Blames the
 * event, returns everything else this host holds, and restarts in place (or ends the
 * process: NDJSON source, shutting down, a first load). */
static void on_stall(void *arg, const watchdog_run_t *r, uint64_t ran_ms) {
  dispatch_t *d = arg;
  char why[96], err[512];
  int64_t id = r->kind == WATCHDOG_EVENT ? r->event_id : 0;
  if (r->kind == WATCHDOG_LOAD && !d->store) { /* the first load: nothing is held yet */
    char line[1200];
    int len = snprintf(line, sizeof line, "outboxd: %s: did not finish loading within 5 s\n",
                       r->what ? r->what : "script");
    ssize_t w = write(STDERR_FILENO, line, len > 0 && (size_t)len < sizeof line ? (size_t)len : 0);
    (void)w;
    _exit(2);
  }
  snprintf(why, sizeof why, "runaway: ran %llu ms without yielding", (unsigned long long)ran_ms);
  if (r->kind == WATCHDOG_EVENT)
    log_at(LOG_ERROR, "runaway handler: event dead", KI("id", id), KS("topic", r->what),
           KI("ran_ms", ran_ms), KS("error", why));
  else
    log_at(LOG_ERROR, r->kind == WATCHDOG_LOAD ? "runaway script load" : "runaway hook",
           KS(r->kind == WATCHDOG_LOAD ? "script" : "hook", r->what), KI("ran_ms", ran_ms),
           KS("error", why));
  if (!d->store->ops->salvage) {
    log_at(LOG_ERROR, "runaway code with an NDJSON source: exiting", KI("id", id),
           KS("error", why));
    log_flush(500);
    _exit(1);
  }
  int n = d->store->ops->salvage(d->store, id, why, err, sizeof err);
  if (n < 0)
    log_at(LOG_WARN, "cannot return held events now; the restarted host will", KS("error", err));
  else
    log_at(LOG_INFO, "held events returned to pending", KI("events", n));
  if (d->stopping) {
    log_at(LOG_ERROR, "runaway code while shutting down: exiting", KI("id", id));
    log_flush(500);
    _exit(1);
  }
  log_at(LOG_WARN, "restarting in place", KS("host", d->hid), KI("pid", (int64_t)getpid()));
  restart_in_place(d, id, why);
  log_flush(500);
  _exit(1);
}

/* After a restart in place: say why, and make sure what the old image held is
 * back (the verdict again: it is fenced, so it never counts twice). */
static void after_restart(dispatch_t *d) {
  const char *why = getenv(ENV_RESTART_WHY);
  const char *ids = getenv(ENV_RESTART_ID);
  char err[512];
  if (!why) return;
  int64_t id = ids ? strtoll(ids, NULL, 10) : 0;
  log_at(LOG_WARN, "restarted in place", KS("host", d->hid), KI("id", id), KS("reason", why));
  if (d->store->ops->salvage) {
    int n = d->store->ops->salvage(d->store, id, why, err, sizeof err);
    if (n < 0) log_at(LOG_WARN, "cannot return held events", KS("error", err));
  }
  unsetenv(ENV_RESTART_WHY);
  unsetenv(ENV_RESTART_ID);
  unsetenv(ENV_HOST_ID);
}

int dispatch_run(config_t *cfg, const char *script) {
  dispatch_t dd, *d = &dd;
  char err[1024];
  int rc = 2;
  memset(d, 0, sizeof *d);
  d->cfg = cfg;
  d->script = script;
  d->loop = uv_default_loop();
  host_callbacks_t cb = {on_outcome, fill_stats, NULL, d, on_lua_limit_met, on_enqueue};
  if (host_init(&d->host, d->loop, cfg, &cb, api_push_core)) return 1;
  if (report) api_time_fake(d->host); /* outboxd test */
  uint64_t limit = cfg->memory_limit > 0 ? (uint64_t)cfg->memory_limit : memmon_default_limit();
  host_set_lua_limit(d->host, cfg->lua_memory_limit > 0 ? (uint64_t)cfg->lua_memory_limit : limit);
  if (watchdog_start(on_stall, d))
    log_at(LOG_WARN, "no watchdog thread: runaway code would freeze this host");
  if (host_load(d->host, script, err, sizeof err)) {
    fprintf(stderr, "outboxd: %s\n", err);
    goto fail_host;
  }
  if (routes_init(&d->rt, cfg->breaker_pct, cfg->breaker_window, cfg->breaker_min_calls,
                  cfg->breaker_cooldown_ms, cfg->concurrency_auto ? cfg->concurrency : 0,
                  loop_ms(d))) {
    fprintf(stderr, "outboxd: invalid breaker settings (window %d, min calls %d)\n",
            cfg->breaker_window, cfg->breaker_min_calls);
    goto fail_host;
  }
  if (memmon_init(&d->mem, limit, cfg->memory_high_pct,
                  cfg->memory_high_pct > 80 ? 80 : cfg->memory_high_pct * 8 / 9) ||
      backoff_init(&d->bo, cfg->backoff_base_ms, cfg->backoff_cap_ms, uv_hrtime()) ||
      limiter_init(&d->lim, cfg->concurrency)) {
    fprintf(stderr, "outboxd: invalid memory or backoff settings\n");
    goto fail_breaker;
  }
  if (apply_routes(d)) {
    rc = 1;
    goto fail_limiter;
  }
  host_id(d->hid, sizeof d->hid);
  store_opts_t so = {cfg->batch,
                     cfg->ordering_key,
                     cfg->lease_ms,
                     cfg->keep_done_ms,
                     cfg->keep_dead_ms,
                     cfg->poll_ms,
                     d->hid,
                     on_store_wake,
                     d,
                     cfg->store_timeout_ms};
  store_t *store;
  int orc = store_open(d->loop, cfg->db, &so, &store, err, sizeof err);
  if (orc) {
    fprintf(stderr, "outboxd: %s\n", err);
    rc = orc == STORE_NO_DB ? 2 : 1;
    goto fail_limiter;
  }
  d->store = store; /* from here on a runaway restarts the host */
  after_restart(d);
  init_handle(d, (uv_handle_t *)&d->tick);
  uv_timer_init(d->loop, &d->tick);
  init_handle(d, (uv_handle_t *)&d->brk_timer);
  uv_timer_init(d->loop, &d->brk_timer);
  init_handle(d, (uv_handle_t *)&d->gate_timer);
  uv_timer_init(d->loop, &d->gate_timer);
  init_handle(d, (uv_handle_t *)&d->drain_timer);
  uv_timer_init(d->loop, &d->drain_timer);
  init_handle(d, (uv_handle_t *)&d->drain_note);
  uv_timer_init(d->loop, &d->drain_note);
  init_handle(d, (uv_handle_t *)&d->wake_idle);
  uv_idle_init(d->loop, &d->wake_idle);
  init_handle(d, (uv_handle_t *)&d->fresh_clock);
  uv_prepare_init(d->loop, &d->fresh_clock);
  uv_prepare_start(&d->fresh_clock, on_fresh_clock);
  uv_unref((uv_handle_t *)&d->fresh_clock);
  init_handle(d, (uv_handle_t *)&d->ops_tick);
  uv_timer_init(d->loop, &d->ops_tick);
  init_handle(d, (uv_handle_t *)&d->notify_ping);
  uv_timer_init(d->loop, &d->notify_ping);
  uv_signal_init(d->loop, &d->sig_int);
  init_handle(d, (uv_handle_t *)&d->sig_int);
  uv_signal_init(d->loop, &d->sig_term);
  init_handle(d, (uv_handle_t *)&d->sig_term);
  uv_signal_init(d->loop, &d->sig_hup);
  init_handle(d, (uv_handle_t *)&d->sig_hup);
  uv_signal_start(&d->sig_int, on_signal, SIGINT);
  uv_signal_start(&d->sig_term, on_signal, SIGTERM);
  uv_signal_start(&d->sig_hup, on_signal, SIGHUP);
  uv_unref((uv_handle_t *)&d->sig_int);
  uv_unref((uv_handle_t *)&d->sig_term);
  uv_unref((uv_handle_t *)&d->sig_hup);
  if (cfg->watch) {
    int wrc = watch_start(&d->watch, d->loop, script, 50, on_script_changed, d);
    if (wrc)
      log_at(LOG_WARN, "hot reload off: cannot watch the script's folder",
             KS("error", uv_strerror(wrc)));
  }
  d->started_ms = d->last_tick_ms = uv_now(d->loop);
  if ((rc = ops_start(d))) goto close;
  uv_timer_start(&d->tick, on_tick, (uint64_t)cfg->memory_interval_ms,
                 (uint64_t)cfg->memory_interval_ms);
  log_at(LOG_INFO, "started", KS("script", script),
         KS("db", store_url_redact(cfg->db, err, sizeof err)), KI("concurrency", cfg->concurrency),
         KI("generation", host_generation(d->host)));
  host_fire(d->host, "load", NULL, NULL);
  store_push(store, d->early); /* outbox.enqueue at the script's top level */
  d->early = NULL;
  host_fire(d->host, "start", NULL, NULL);
  host_run_ready(d->host); /* load and start hooks begin before the first event */
  pump(d);
  notify_state(d, "READY=1"); /* serving: the script loaded, the store open */
  uv_run(d->loop, UV_RUN_DEFAULT);
  rc = d->finished ? d->exit_code : 1;
  if (!d->finished) log_at(LOG_ERROR, "loop ended with work left");
close:
  store_event_list_free(d->early);
  d->early = NULL;
  statusline_stop();
  close_all(d);
  store_close(d->store, store_closed, NULL);
  host_close(d->host, host_closed, NULL);
  broker_shutdown();
  uv_run(d->loop, UV_RUN_DEFAULT);
  watchdog_stop();
  while (d->free_jobs) {
    job_t *j = d->free_jobs;
    d->free_jobs = j->next;
    free(j);
  }
  limiter_free(&d->lim);
  routes_free(&d->rt);
  free(d->held);
  free(d->rstats);
  free(d->bstats);
  free(d->mroutes);
  free(d->mbreakers);
  uv_loop_close(d->loop);
  return rc;
fail_limiter:
  store_event_list_free(d->early);
  limiter_free(&d->lim);
fail_breaker:
  routes_free(&d->rt);
fail_host:
  watchdog_stop();
  host_close(d->host, host_closed, NULL);
  uv_run(d->loop, UV_RUN_DEFAULT);
  return rc;
}

/* The backstop of `check`: the load budget did not stop the script (a long C call,
 * or the script turned the JIT back on). */
static void on_check_stall(void *arg, const watchdog_run_t *r, uint64_t ran_ms) {
  dispatch_t d;
  memset(&d, 0, sizeof d);
  (void)arg;
  on_stall(&d, r, ran_ms);
}

int dispatch_test(config_t *cfg, const char *script, const dispatch_report_t *r) {
  report = r;
  int rc = dispatch_run(cfg, script);
  report = NULL;
  return rc;
}

int dispatch_check(const char *script) {
  config_t cfg;
  char err[1024];
  host_t *h;
  config_defaults(&cfg);
  host_callbacks_t cb = {NULL, NULL, NULL, NULL, NULL, NULL};
  uv_loop_t *loop = uv_default_loop();
  if (host_init(&h, loop, &cfg, &cb, api_push_core)) return 1;
  if (watchdog_start(on_check_stall, NULL))
    fprintf(stderr,
            "outboxd: no watchdog thread: a script that never ends would hang this check\n");
  int rc = host_load(h, script, err, sizeof err);
  watchdog_stop();
  if (rc)
    fprintf(stderr, "outboxd: %s\n", err);
  else
    fprintf(stderr, "outboxd: %s: ok\n", script);
  host_close(h, NULL, NULL);
  broker_shutdown();
  uv_run(loop, UV_RUN_DEFAULT);
  return rc ? 2 : 0;
}
