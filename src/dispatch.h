/* dispatch — the run loop's conductor: claims events from the store, admits them
 * through the limiter, starts them in the host when the breaker allows, and turns
 * each outcome into a store settlement, a retry time and the hooks. */
#ifndef OUTBOXD_DISPATCH_H
#define OUTBOXD_DISPATCH_H

#include <uv.h>

#include "config.h"
#include "store.h"

typedef struct dispatch dispatch_t;

/* Runs `script` with `cfg` (already holding flags and environment) until the input
 * ends (NDJSON), --once finishes, or a signal drains it. Returns the process exit
 * code: 0 clean end, 1 runtime failure, 2 script or configuration error. */
int dispatch_run(config_t *cfg, const char *script);

/* Remembers main()'s argv: a host restarts in place with it after runaway code. */
void dispatch_set_argv(char **argv);

/* What `outboxd test` is told: each attempt's outcome, "done", "retry" (the error
 * then says why) or "dead". `ev` is only valid during the call. */
typedef struct dispatch_report {
  void (*attempt)(void *arg, const store_event_t *ev, int attempt, const char *outcome,
                  const char *error);
  void *arg;
  /* A new event from outbox.enqueue: `parent` is the event whose done run enqueued
   * it (reported after that run's "done"), NULL outside a handler. Nothing runs it. */
  void (*enqueue)(void *arg, const store_event_t *parent, const store_event_t *ev);
} dispatch_report_t;

/* Runs like dispatch_run on a fake clock: sleeps and retry delays take no real time
 * (outbox.now() moves on by them), and every outcome goes to `report`. */
int dispatch_test(config_t *cfg, const char *script, const dispatch_report_t *report);

/* Loads `script` once and reports errors (outboxd check). Returns 0 or 2. */
int dispatch_check(const char *script);

#endif
