/* metrics — a small HTTP server on the loop: Prometheus text on /metrics, /health
 * and /ready. It knows nothing of the dispatcher: figures come from a callback.
 * Invariant: a request is answered from one buffer built at once, never blocks the
 * loop, and every connection is closed after its one response. */
#ifndef OUTBOXD_METRICS_H
#define OUTBOXD_METRICS_H

#include <stdint.h>
#include <uv.h>

#define METRICS_BUCKETS 14

/* A latency histogram with fixed bucket bounds (seconds); counts are per bucket,
 * made cumulative when exposed. Zero-initialise it; no allocation. */
typedef struct metrics_hist {
  uint64_t bucket[METRICS_BUCKETS + 1]; /* last: above every bound (+Inf) */
  uint64_t count;
  double sum;
} metrics_hist_t;

/* The upper bounds of the histogram buckets, in seconds (METRICS_BUCKETS of them). */
extern const double metrics_bucket_bounds[METRICS_BUCKETS];

/* Adds one observation of `seconds` (negative counts as 0). */
void metrics_hist_observe(metrics_hist_t *h, double seconds);

/* The standard process_* figures, read from /proc at each scrape. */
typedef struct metrics_process {
  int ok; /* 0 when /proc could not be read: the process_* series are left out */
  double cpu_seconds, start_time_seconds;
  uint64_t resident_bytes, virtual_bytes;
  int64_t open_fds, max_fds;
} metrics_process_t;

/* Reads this process's figures. Returns 0, or -errno (p->ok is then 0). */
int metrics_process_read(metrics_process_t *p);

/* One route's and one breaker's series. */
typedef struct metrics_route {
  const char *name;
  int64_t inflight, limit, events;
} metrics_route_t;

typedef struct metrics_breaker {
  const char *name;
  int state; /* 0 closed, 1 open, 2 half-open */
} metrics_breaker_t;

/* What one scrape shows. Filled by the owner's callback just before the response. */
typedef struct metrics_figures {
  int64_t done, failed, dead, retried; /* events_total by outcome */
  int64_t inflight, queued, concurrency;
  int breaker;                   /* the worst breaker: 0 closed, 1 open, 2 half-open */
  int breakers_all_open;         /* every route's breaker is open: /ready says no */
  const metrics_route_t *routes; /* per route (may be NULL) */
  int nroutes;
  const metrics_breaker_t *breakers; /* per breaker (may be NULL) */
  int nbreakers;
  uint64_t rss, lua_heap, memory_limit;
  int memory_high;    /* 0/1 */
  int intake_paused;  /* paused for memory */
  int store_ok;       /* 0 when the last store call failed */
  int64_t pending;    /* events pending in the store; -1 when not known yet */
  int64_t store_dead; /* dead events in the store; -1 when not known yet */
  double oldest_pending_age_s;
  int64_t reloads_ok, reloads_failed;
  char *const *paused; /* topic patterns paused in the store (outboxd pause) */
  int npaused;
  int generation;
  int live_generations;   /* the serving one and those still draining */
  int64_t timers;         /* scheduled timers (outbox.every, outbox.after) */
  int64_t timers_running; /* timer runs going on */
  int64_t timer_skips;    /* ticks skipped */
  int64_t hooks_running;  /* hook coroutines going on */
  double uptime_s;
  const metrics_hist_t *handler_duration; /* may be NULL */
  metrics_process_t process;              /* filled by the server, not the owner */
} metrics_figures_t;

typedef void (*metrics_fill_cb)(void *arg, metrics_figures_t *out);

typedef struct metrics metrics_t;

/* Parses "[HOST:]PORT" (HOST defaults to 127.0.0.1; "[::1]:PORT" for IPv6; PORT 0
 * picks a free port). Returns 0 or -EINVAL. */
int metrics_parse_addr(const char *spec, char *host, size_t hostlen, int *port);

/* Starts listening on `spec` and logs "metrics listening" with the bound host and
 * port. Returns 0, -EINVAL for a malformed spec, or the libuv error of the bind or
 * listen; `err` then holds a one-line message naming --metrics. The server is
 * owned by the caller and released by metrics_close. */
int metrics_start(metrics_t **out, uv_loop_t *loop, const char *spec, metrics_fill_cb fill,
                  void *arg, char *err, size_t errlen);

/* The port actually bound (useful with port 0). */
int metrics_port(const metrics_t *m);

/* Renders the exposition text of `f` into buf (at most cap bytes, NUL-terminated).
 * Returns the length it needs, as snprintf does. */
size_t metrics_render(const metrics_figures_t *f, char *buf, size_t cap);

/* Closes the listener and every open connection; frees the server and then calls
 * `cb` (may be NULL) once every handle is closed. */
void metrics_close(metrics_t *m, void (*cb)(void *arg), void *arg);

#endif
