/* watchdog — a thread that notices when the loop thread has stayed inside one run
 * of Lua code (a handler, a hook, a script load) longer than that run's limit.
 * LuaJIT calls no hook inside compiled traces, so nothing can interrupt such a run
 * from within; instead the watchdog freezes the loop thread (a signal whose handler
 * waits), confirms the same run is still under way, and hands the verdict to the
 * owner's callback, which restarts or ends the process. One watchdog per process. */
#ifndef OUTBOXD_WATCHDOG_H
#define OUTBOXD_WATCHDOG_H

#include <stdint.h>

enum watchdog_kind { WATCHDOG_EVENT = 1, WATCHDOG_HOOK = 2, WATCHDOG_LOAD = 3 };

/* One run as the loop thread announced it. */
typedef struct watchdog_run {
  int kind;
  int64_t event_id;    /* the event it runs for, or -1 */
  const char *what;    /* topic, hook name or script; owned by the loop thread */
  uint64_t started_ms; /* monotonic clock */
  uint64_t limit_ms;   /* 0: never overdue */
} watchdog_run_t;

/* Called on the watchdog thread while the loop thread is frozen inside `run`;
 * `ran_ms` is how long it has run. It is expected to end or replace the process
 * (exit, execv); if it returns, the loop thread goes on. */
typedef void (*watchdog_stall_cb)(void *arg, const watchdog_run_t *run, uint64_t ran_ms);

/* Starts the thread; the calling thread is the loop thread it watches. Returns 0 or
 * a negative errno-style code (then nothing is watched). */
int watchdog_start(watchdog_stall_cb cb, void *arg);

/* Stops and joins the thread. Safe when it never started. */
void watchdog_stop(void);

/* Loop thread: a run begins (`what` must stay valid until watchdog_leave). */
void watchdog_enter(int kind, int64_t event_id, const char *what, uint64_t limit_ms);

/* Loop thread: the run that began last has yielded or ended. */
void watchdog_leave(void);

/* Milliseconds of the monotonic clock. */
uint64_t watchdog_now_ms(void);

/* Pure: 1 when `run` has gone past its limit at `now_ms`, else 0. */
int watchdog_overdue(const watchdog_run_t *run, uint64_t now_ms);

/* Pure: how long the watchdog may sleep before it next looks, in ms: a tenth of the
 * limit, between 5 and 100 ms, and never past the moment `run` becomes overdue
 * (NULL: nothing runs). */
uint64_t watchdog_next_look_ms(const watchdog_run_t *run, uint64_t now_ms);

#endif
