/* testrun — `outboxd test`: a handler author's test runner. Fixture events go
 * through the script as in `run` with an ndjson: source, on a fake clock, with
 * outbox.http answered by a stub; one line per attempt on stdout. */
#ifndef OUTBOXD_TESTRUN_H
#define OUTBOXD_TESTRUN_H

#include "config.h"

/* Runs `fixture` (NDJSON events) through `script` with `cfg`; `stub` (may be NULL)
 * is a Lua file returning function(req). Prints `id topic done`, `id topic retry N:
 * error` or `id topic dead: reason` per attempt (one JSON object each with `json`).
 * Returns 0 when every event ended done, 1 when one ended dead or the run failed,
 * 2 for a script, fixture or stub that cannot be used (one line says why). */
int testrun(config_t *cfg, const char *script, const char *fixture, const char *stub, int json);

#endif
