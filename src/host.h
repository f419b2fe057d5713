/* host — Lua states (one per generation of the script) and the coroutines that run
 * handlers and hooks in them. One resume path (host_resume) enters Lua; every
 * coroutine is anchored once in its state's registry and released once. */
#ifndef OUTBOXD_HOST_H
#define OUTBOXD_HOST_H

#include <lua.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "event.h"
#include "routes.h"

typedef struct host host_t;
typedef struct host_gen host_gen_t;
typedef struct task task_t;

/* How a handler run ended. */
enum host_outcome {
  HOST_DONE = 0,      /* returned normally */
  HOST_FAIL = 1,      /* error(e) or return false, e */
  HOST_RETRY = 2,     /* return outbox.retry(seconds) */
  HOST_REJECT = 3,    /* return outbox.reject(reason), unreadable payload, no route */
  HOST_TIMEOUT = 4,   /* ran longer than the timeout */
  HOST_CANCELLED = 5, /* abandoned by shutdown or a reload drain: counts as nothing */
  HOST_SNOOZE = 6     /* return outbox.snooze(seconds): a retry, and its route waits */
};

/* What the dispatcher learns when an event's run ends. `msg` is valid only during
 * the call; `delay_s` is the retry() or snooze() delay (negative when none). */
typedef void (*host_outcome_cb)(void *owner, int outcome, const char *msg, double delay_s);

/* One route's and one breaker's figures in outbox.stats(). */
typedef struct host_route_stats {
  const char *name;
  int64_t active, queued, limit, done, failed, dead;
} host_route_stats_t;

typedef struct host_breaker_stats {
  const char *name;
  const char *state;
  double failure_rate;
} host_breaker_stats_t;

/* The figures outbox.stats() and the hooks show. Filled by the dispatcher (the
 * route and breaker arrays stay the dispatcher's). */
typedef struct host_stats {
  int64_t active, queued, processed, done, failed, dead, retried;
  double failure_rate;
  const char *breaker;
  uint64_t rss, memory_limit;
  int memory_high;
  double rate;
  int64_t uptime_ms;
  int concurrency;
  const host_route_stats_t *routes; /* live routes */
  int nroutes;
  const host_breaker_stats_t *breakers; /* live breakers */
  int nbreakers;
} host_stats_t;

/* A pending asynchronous call of a task (a sleep, an HTTP transfer). `cancel` is
 * called when the task is abandoned (timeout, shutdown); it must free what the call
 * holds and must not resume the task. */
typedef struct host_wait {
  void (*cancel)(task_t *t, void *data);
  void *data;
} host_wait_t;

typedef struct host_callbacks {
  host_outcome_cb outcome;
  void (*stats)(void *arg, host_stats_t *out);  /* fill current figures */
  void (*gen_closed)(void *arg, host_gen_t *g); /* a drained generation was closed */
  void *arg;
  void (*lua_limit_met)(void *arg); /* a run met the Lua memory limit (states collected) */
  /* outbox.enqueue outside an event's run: new events (a list linked by `next`) to
   * write at once, taken over; those of a script's top level come once it loaded.
   * NULL: such events are dropped (outboxd check). */
  void (*enqueue)(void *arg, store_event_t *list);
} host_callbacks_t;

/* The C half of the `outbox` module (api_push_core): pushes the `core` table that
 * lua/outbox.lua receives; `done` is the sentinel a worker yields to say a run ended. */
typedef void (*host_module_fn)(lua_State *L, void *done);

/* Creates the host on `loop`; every state it makes opens the outbox module with
 * `module`. `cfg` is the live configuration (outbox.configure writes into it with
 * the lowest precedence). Returns 0 or a negative code. */
int host_init(host_t **out, uv_loop_t *loop, config_t *cfg, const host_callbacks_t *cb,
              host_module_fn module);

/* Loads `path` into a fresh Lua state. On success it becomes the current
 * generation and 0 is returned; the previous one retires: its timers stop, its
 * events finish there, and then its hooks and timer runs are cancelled and it
 * closes (host_cancel_generation ends it sooner). On failure the current
 * generation is untouched, `err` holds "file:line: message" and -EINVAL is
 * returned. */
int host_load(host_t *h, const char *path, char *err, size_t errlen);

/* Runs the current generation's handler for `ev` in a coroutine, timed out after
 * `timeout_ms` (0: none). The outcome comes through the outcome callback, possibly
 * before this returns. Returns 0 or -ENOMEM. */
int host_run(host_t *h, store_event_t *ev, void *owner, int64_t timeout_ms);

/* Calls fn with the routes the current generation's script declared with
 * outbox.handle (the strings are valid during the call). Returns fn's result, or
 * -ENOMEM. */
int host_routes(host_t *h, int (*fn)(void *arg, const route_spec_t *specs, int n), void *arg);

/* 1 when the serving generation's script returned a handler for every topic (or no
 * script is loaded), 0 when it routes only the topics of its outbox.handle patterns. */
int host_catch_all(host_t *h);

/* Fires hook `name` in the current generation with the stats table (or, when
 * `ev` is given, {event=, error=}; when only `err` is given, {error=}). */
void host_fire(host_t *h, const char *name, const store_event_t *ev, const char *err);

/* Fires a circuit-breaker hook: the stats table plus `breaker` (its name). */
void host_fire_breaker(host_t *h, const char *name, const char *breaker);

/* Starts or resumes now every task queued for the next loop pass. Call it from a
 * loop callback, never from inside Lua. */
void host_run_ready(host_t *h);

/* Abandons every running event (outcome HOST_CANCELLED) and every hook. */
void host_cancel_all(host_t *h);

/* Drain timeout of a retired generation: abandons what still runs there (events
 * come back as HOST_CANCELLED; the hooks and timer runs cancelled are logged), so
 * the generation closes. Returns how many events were cancelled; 0 when the
 * generation is already gone or is the current one. */
int host_cancel_generation(host_t *h, int number);

/* Running hook coroutines (for waiting on `shutdown` hooks); timer runs not included. */
int host_hooks_running(const host_t *h);

/* The names of the running hooks and timer runs (children of an event: its topic),
 * comma-separated, each once, cut to fit `len`. */
void host_hook_names(const host_t *h, char *buf, size_t len);

/* Running event coroutines, all generations. */
int host_events_running(const host_t *h);

/* Current generation number (1 for the first load), 0 before any. */
int host_generation(const host_t *h);

/* Generations still open (the current one and draining ones). */
int host_live_generations(const host_t *h);

/* Sum of the Lua heaps of all live states, in bytes (counted by their allocator). */
uint64_t host_lua_heap(const host_t *h);

/* Caps host_lua_heap at `bytes` (0: no cap). Lua code that allocates past it gets
 * "not enough memory"; after such a run the host collects every state, logs it and
 * calls lua_limit_met. */
void host_set_lua_limit(host_t *h, uint64_t bytes);

/* Runs a full garbage collection in every live state. */
void host_full_gc(host_t *h);

/* Cancels every task, closes every state, releases the API areas' state (see
 * host_area_state) and closes the host's handles; `cb` runs when the host itself is
 * released. Run the loop afterwards: areas may finish in close callbacks of their own. */
void host_close(host_t *h, void (*cb)(void *arg), void *arg);

/* ---- for the Lua API files (api_*.c, http.c) ---- */

/* An API area that keeps state for the host's lifetime (sleep's reusable timers,
 * HTTP's multi handle and transfers), known by its address. */
typedef struct host_area {
  size_t size;                /* bytes of state, zeroed when made */
  void (*close)(void *state); /* run by host_close once every task is cancelled: releases
                                 what the state holds and the state itself (at once, or
                                 from close callbacks of its own handles) */
} host_area_t;

/* The state of `area` in h, made on first use. Returns NULL when out of memory or
 * once the host is closing. */
void *host_area_state(host_t *h, const host_area_t *area);

/* The task running in coroutine L, or NULL (main chunk, foreign coroutine). */
task_t *host_task(lua_State *L);

/* Registers a wait on the running task; the caller then returns lua_yield(L, 0).
 * Returns 0, or -EINVAL when L is not a task's own coroutine. */
int host_wait(lua_State *L, void (*cancel)(task_t *t, void *data), void *data);

/* Ends a wait: pushes nothing itself; `push` (may be NULL) pushes the values the
 * yielded call returns, then the task resumes. Called from loop callbacks only. */
void host_wake(task_t *t, int (*push)(lua_State *co, void *arg), void *arg);

/* Like host_wake, but the task resumes on the next loop pass: for results that
 * arrive inside a client library's callback, where Lua must not run. `push` runs
 * now (it may only push values); the task still times out if its deadline passes
 * before it resumes. */
void host_wake_later(task_t *t, int (*push)(lua_State *co, void *arg), void *arg);

/* The loop, host and generation a Lua state (or any of its coroutines) belongs to;
 * set when the generation's state is created, valid for its lifetime. */
uv_loop_t *host_loop(lua_State *L);
host_t *host_of(lua_State *L);
host_gen_t *host_gen_of(lua_State *L);

/* The id of the event a task runs, or -1 for hooks. */
int64_t host_task_event(task_t *t);

/* Seconds left before the running task's timeout, or a large number. */
double host_task_time_left(task_t *t);

/* Queues fn (at fn_idx) to run with the value at arg_idx in a new coroutine of L's
 * generation on the next loop pass, as a hook named `name` (errors are logged). A
 * child of a running event inherits its deadline; with `child` (all_settled, all)
 * it also works for the caller's run: its outbox.enqueue joins that run. Returns 0
 * or -ENOMEM. */
int host_spawn(lua_State *L, int fn_idx, int arg_idx, const char *name, int child);

/* outbox.enqueue: takes over new event `ev`. Inside an event's run (or a child
 * working for it) it becomes one of the event's follow-ups, written with its ack
 * when the run is done and dropped otherwise; returns 1. Elsewhere it goes to the
 * enqueue callback at once (at the top level: once the script loaded, never when it
 * fails to load); returns 0. */
int host_enqueue(lua_State *L, store_event_t *ev);

/* A fresh token for a wait woken by another task (all_settled). */
unsigned host_token(task_t *t);
/* Registers a wait on the running task ended by host_wake_token(t, token). */
int host_wait_token(lua_State *L, unsigned token);
/* Queues the task to resume on the next loop pass if it waits on `token`. */
void host_wake_token(task_t *t, unsigned token);

/* The serial of the task's current run (changes each time the struct is reused). */
unsigned host_task_serial(task_t *t);

/* Cancels child task t (spawned by host_spawn) if it still runs the run `serial`
 * and is not the caller (L's task): what it waits on is cancelled and it never
 * resumes; a queued one is dropped when its turn comes. Returns 1, or 0 when there
 * was nothing to cancel. */
int host_cancel_task(lua_State *L, task_t *t, unsigned serial);

/* ---- timers (outbox.every, outbox.after) ---- */

typedef struct host_timer host_timer_t;

#define HOST_TIMER_MT "outbox.timer" /* the handles' metatable, in the registry */
#define HOST_TIMER_NAME 128

typedef struct host_timer_info {
  const char *name; /* "every 1 s h.lua:3": kind, period, where fn was defined */
  uint64_t runs, skipped;
  int scheduled; /* will tick again */
  int running;   /* a run goes on */
} host_timer_info_t;

/* Schedules fn (at fn_idx) to run in a new coroutine of L's generation `delay_ms`
 * from now, then every `period_ms` (0: once), as the timer `name`; each run gets the
 * handle. Pushes the handle (a userdata with the metatable HOST_TIMER_MT, which the
 * caller registered) and returns 0; or returns -ECANCELED (the host is stopping, or
 * L's generation was replaced) or -ENOMEM, pushes nothing, and `why` says it. */
int host_timer_start(lua_State *L, int fn_idx, uint64_t delay_ms, uint64_t period_ms,
                     const char *name, const char **why);

/* Stops x ticking (a run going on finishes). Returns 1, or 0 when it would not have
 * ticked again anyway. */
int host_timer_cancel(host_timer_t *x);

/* x's figures (the name stays valid as long as the handle). */
void host_timer_info(const host_timer_t *x, host_timer_info_t *out);

/* Shutting down: every timer stops ticking and none can start. Their names go to
 * `names` (comma-separated). Returns how many were scheduled. */
int host_stop_timers(host_t *h, char *names, size_t len);

/* Scheduled timers, all generations. */
size_t host_timers(const host_t *h);

/* Timer runs going on, all generations. */
int host_timers_running(const host_t *h);

/* Ticks skipped (a run still going, or the loop late by more than a period). */
uint64_t host_timer_skips(const host_t *h);

/* Copies the stats into a new table on L's stack. */
void host_push_stats(lua_State *L);

/* The effective configuration. */
config_t *host_config(lua_State *L);

#endif
