/* config — one table of options; every reader and writer goes through it.
 * Invariant: a value set from a higher-precedence source is never overwritten by a
 * lower one (flag > environment > outbox.configure > default). */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backoff.h"
#include "log.h"
#include "memmon.h"
#include "topics.h"

#define OFF(f) offsetof(config_t, f)
#define ADAPTIVE_MAX_DEFAULT 1000 /* --concurrency auto: a route's limit at most */

const config_opt_t config_opts[] = {
    {"concurrency", "OUTBOX_CONCURRENCY", "concurrency", CT_CONCURRENCY, OFF(concurrency),
     "N|auto[:MAX]", "10", "handlers in flight at most; auto: each route's limit adapts up to MAX"},
    {"batch", "OUTBOX_BATCH_SIZE", "batch", CT_INT, OFF(batch), "N", "50",
     "events claimed per claim"},
    {"poll", "OUTBOX_POLL_INTERVAL", "poll", CT_MS, OFF(poll_ms), "MS", "5000",
     "longest idle wait between claims"},
    {"max-attempts", "OUTBOX_MAX_ATTEMPTS", "max_attempts", CT_INT, OFF(max_attempts), "N", "10",
     "attempts before an event is dead"},
    {"backoff", "OUTBOX_BACKOFF", "backoff", CT_BACKOFF, OFF(backoff_base_ms), "MS[:MAX]",
     "1000:300000", "retry delay base and cap (exponential, jitter)"},
    {"timeout", "OUTBOX_TIMEOUT", "timeout", CT_MS, OFF(timeout_ms), "MS", "30000",
     "a handler running longer fails with \"timeout\""},
    {"breaker", "OUTBOX_BREAKER", "breaker", CT_PCT, OFF(breaker_pct), "PCT", "50",
     "failure rate (percent) that opens the breaker"},
    {"breaker-window", "OUTBOX_BREAKER_WINDOW", "breaker_window", CT_INT, OFF(breaker_window), "N",
     "20", "outcomes in the sliding window"},
    {"breaker-min-calls", "OUTBOX_BREAKER_MIN_CALLS", "breaker_min_calls", CT_INT,
     OFF(breaker_min_calls), "N", "10", "outcomes needed before the rate counts"},
    {"breaker-cooldown", "OUTBOX_BREAKER_COOLDOWN", "breaker_cooldown", CT_MS,
     OFF(breaker_cooldown_ms), "MS", "30000", "open time before a half-open trial"},
    {"breaker-slow", "OUTBOX_BREAKER_SLOW", "breaker_slow", CT_MS, OFF(breaker_slow_ms), "MS",
     "off", "a run longer than this counts as a failure for its breaker"},
    {"memory-limit", "OUTBOX_MEMORY_LIMIT", "memory_limit", CT_SIZE, OFF(memory_limit), "SIZE",
     "cgroup, else RAM", "what 100% memory means"},
    {"memory-high", "OUTBOX_MEMORY_HIGH", "memory_high", CT_PCT, OFF(memory_high_pct), "PCT", "90",
     "memory:high above this; intake resumes below 80"},
    {"memory-interval", "OUTBOX_MEMORY_INTERVAL", "memory_interval", CT_MS, OFF(memory_interval_ms),
     "MS", "1000", "memory sampling period"},
    {"lease", "OUTBOX_LEASE", "lease", CT_MS, OFF(lease_ms), "MS", "30000",
     "claim lease, renewed while a handler runs"},
    {"store-timeout", "OUTBOX_STORE_TIMEOUT", "store_timeout", CT_MS, OFF(store_timeout_ms), "MS",
     "30000", "longest wait for the database to answer a statement (PostgreSQL); 0: none"},
    {"drain-timeout", "OUTBOX_DRAIN_TIMEOUT", "drain_timeout", CT_MS, OFF(drain_timeout_ms), "MS",
     "30000", "graceful-shutdown wait for in-flight handlers"},
    {"cpu-limit", "OUTBOX_CPU_LIMIT", "cpu_limit", CT_MS, OFF(cpu_limit_ms), "MS", "10000",
     "a handler or hook running longer without yielding: event dead, host restarts in place (0: "
     "off)"},
    {"lua-memory-limit", "OUTBOX_LUA_MEMORY_LIMIT", "lua_memory_limit", CT_SIZE,
     OFF(lua_memory_limit), "SIZE", "the memory limit",
     "hard cap on all Lua heaps together; past it an allocation fails in the code that asked"},
    {"ordering", "OUTBOX_ORDERING", "ordering", CT_ORDERING, OFF(ordering_key), "key|none", "key",
     "same-key events one at a time, in id order"},
    {"once", NULL, NULL, CT_BOOL, OFF(once), NULL, "off",
     "stop when nothing is claimable, settle, exit 0"},
    {"no-watch", NULL, NULL, CT_NEGBOOL, OFF(watch), NULL, "watch on", "disable hot reload"},
    {"keep-done", "OUTBOX_KEEP_DONE", "keep_done", CT_DURATION, OFF(keep_done_ms), "[DURATION]",
     "0: deleted at once",
     "keep done rows this long (7d, 12h, 30m, ms; alone: forever), then delete them in batches"},
    {"keep-dead", "OUTBOX_KEEP_DEAD", "keep_dead", CT_DURATION, OFF(keep_dead_ms), "[DURATION]",
     "forever", "delete dead rows older than this (7d, 12h, 30m, ms), in batches"},
    {"metrics", "OUTBOX_METRICS", NULL, CT_STRING, OFF(metrics), "[HOST:]PORT", "off",
     "/metrics, /health, /ready; 127.0.0.1 unless a host is given"},
    {"log", "OUTBOX_LOG", NULL, CT_LOG, OFF(log_json), "text|json", "text on a TTY, else json",
     "log format on stderr"},
    {"log-level", "OUTBOX_LOG_LEVEL", NULL, CT_LEVEL, OFF(log_level), "LEVEL", "info",
     "lowest level logged: debug, info, warn or error"},
    {"topics", "OUTBOX_TOPICS", "topics", CT_TOPICS, OFF(topics), "PATTERNS", "all it handles",
     "claim only these topics (comma-separated, '*' at the end for a prefix)"},
    {"db", "OUTBOX_DB", NULL, CT_STRING, OFF(db), "URL", "outbox.db",
     "sqlite:PATH, PATH, postgres://..., ndjson:PATH, ndjson:-"},
};
const int config_nopts = (int)(sizeof config_opts / sizeof config_opts[0]);

/* A default is one of the option's values unless it is "off" or words (with a
 * space) saying what the zero value means. */
int config_default_is_value(int i) {
  const char *def = config_opts[i].def;
  return def && strcmp(def, "off") != 0 && !strchr(def, ' ');
}

/* The defaults come from the table: an option whose `def` is one of its values is
 * set from it; the others say in words what the zero value means ("off", "cgroup,
 * else RAM") and stay zero, but for the two set here. */
void config_defaults(config_t *c) {
  memset(c, 0, sizeof *c);
  c->log_json = -1; /* text on a terminal, else json: decided when logging starts */
  c->watch = 1;
  for (int i = 0; i < config_nopts; i++)
    if (config_default_is_value(i)) config_set(c, i, config_opts[i].def, CONFIG_DEFAULT, NULL, 0);
}

int config_find(const char *name, int by_lua) {
  for (int i = 0; i < config_nopts; i++) {
    const char *n = by_lua ? config_opts[i].lua : config_opts[i].flag;
    if (n && strcmp(n, name) == 0) return i;
  }
  return -1;
}

static int parse_i64(const char *s, int64_t *out) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v < 0) return -EINVAL;
  *out = v;
  return 0;
}

int config_parse_duration(const char *s, int64_t *ms) {
  static const struct {
    const char *unit;
    int64_t ms;
  } units[] = {{"", 1}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
  char *end;
  if (strcmp(s, "forever") == 0) {
    *ms = -1;
    return 0;
  }
  if (*s < '0' || *s > '9') return -EINVAL;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || v < 0) return -EINVAL;
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
    if (strcmp(end, units[i].unit) != 0) continue;
    if (v > ((int64_t)1 << 50) / units[i].ms) return -EINVAL;
    *ms = v * units[i].ms;
    return 0;
  }
  return -EINVAL;
}

static int bad(const config_opt_t *o, int source, const char *value, const char *why, char *err,
               size_t errlen) {
  const char *where = source == CONFIG_ENV ? o->env : source == CONFIG_SCRIPT ? o->lua : o->flag;
  snprintf(err, errlen, "%s%s: invalid value \"%s\" (%s)", source == CONFIG_FLAG ? "--" : "",
           where ? where : o->flag, value, why);
  return -EINVAL;
}

int config_set(config_t *c, int i, const char *value, int source, char *err, size_t errlen) {
  const config_opt_t *o = &config_opts[i];
  char *field = (char *)c + o->off;
  int64_t v = 0;
  if (source < c->source[i]) return 0;
  switch (o->type) {
  case CT_CONCURRENCY:
    if (strncmp(value, "auto", 4) == 0 && (value[4] == 0 || value[4] == ':')) {
      v = ADAPTIVE_MAX_DEFAULT;
      if (value[4] == ':' && (parse_i64(value + 5, &v) || v < 1 || v > 10000000))
        return bad(o, source, value, "auto or auto:MAX with MAX a whole number from 1", err,
                   errlen);
      c->concurrency_auto = 1;
      *(int *)field = (int)v;
      break;
    }
    c->concurrency_auto = 0;
    /* fallthrough */
  case CT_INT:
    if (parse_i64(value, &v) || v < 1 || v > 10000000)
      return bad(o, source, value, "a whole number from 1", err, errlen);
    *(int *)field = (int)v;
    break;
  case CT_PCT:
    if (parse_i64(value, &v) || v < 1 || v > 100)
      return bad(o, source, value, "a percentage from 1 to 100", err, errlen);
    *(int *)field = (int)v;
    break;
  case CT_MS:
    if (parse_i64(value, &v) || v > (int64_t)1 << 40)
      return bad(o, source, value, "milliseconds", err, errlen);
    *(int64_t *)field = v;
    break;
  case CT_SIZE: {
    uint64_t b;
    if (memmon_parse_size(value, &b) || b == 0)
      return bad(o, source, value, "a size such as 512M or 2G", err, errlen);
    *(int64_t *)field = (int64_t)b;
    break;
  }
  case CT_BACKOFF:
    if (backoff_parse(value, &c->backoff_base_ms, &c->backoff_cap_ms))
      return bad(o, source, value, "MS or MS:MAX with 0 < MS <= MAX", err, errlen);
    break;
  case CT_ORDERING:
    if (strcmp(value, "key") && strcmp(value, "none"))
      return bad(o, source, value, "key or none", err, errlen);
    *(int *)field = strcmp(value, "key") == 0;
    break;
  case CT_LOG:
    if (strcmp(value, "text") && strcmp(value, "json"))
      return bad(o, source, value, "text or json", err, errlen);
    *(int *)field = strcmp(value, "json") == 0;
    break;
  case CT_LEVEL:
    if ((*(int *)field = log_level_parse(value)) < 0)
      return bad(o, source, value, "debug, info, warn or error", err, errlen);
    break;
  case CT_DURATION:
    if (config_parse_duration(value, &v))
      return bad(o, source, value,
                 "a duration such as 7d, 12h, 30m, 45s or milliseconds, or forever", err, errlen);
    *(int64_t *)field = v;
    break;
  case CT_BOOL:
  case CT_NEGBOOL: {
    int on = !(strcmp(value, "0") == 0 || strcmp(value, "false") == 0 || strcmp(value, "no") == 0);
    *(int *)field = o->type == CT_BOOL ? on : !on;
    break;
  }
  case CT_TOPICS: {
    topics_t t = {0};
    char why[200];
    int rc = topics_parse(&t, value, why, sizeof why);
    topics_free(&t);
    if (rc == -EINVAL) return bad(o, source, value, why, err, errlen);
    if (rc || strlen(value) >= sizeof c->topics)
      return bad(o, source, value, "too long", err, errlen);
    strcpy(field, value);
    break;
  }
  case CT_STRING:
    if (strlen(value) >= (o->off == OFF(db) ? sizeof c->db : sizeof c->metrics))
      return bad(o, source, value, "too long", err, errlen);
    strcpy(field, value);
    break;
  }
  c->source[i] = (unsigned char)source;
  return 0;
}

int config_set_number(config_t *c, int i, double v, int source, char *err, size_t errlen) {
  char buf[64];
  const config_opt_t *o = &config_opts[i];
  if (!isfinite(v) || v < 0)
    return bad(o, source, "non-finite or negative", "a number", err, errlen);
  if (o->type == CT_MS || o->type == CT_BACKOFF || o->type == CT_DURATION)
    snprintf(buf, sizeof buf, "%lld", (long long)llround(v * 1000.0));
  else
    snprintf(buf, sizeof buf, "%lld", (long long)llround(v));
  if (o->type == CT_BACKOFF && source < c->source[i]) return 0;
  if (o->type == CT_BACKOFF) {
    int64_t base = llround(v * 1000.0);
    if (base < 1) return bad(o, source, buf, "a positive number of seconds", err, errlen);
    c->backoff_base_ms = base;
    if (c->backoff_cap_ms < base) c->backoff_cap_ms = base;
    c->source[i] = (unsigned char)source;
    return 0;
  }
  return config_set(c, i, buf, source, err, errlen);
}

int config_from_env(config_t *c, char *err, size_t errlen) {
  for (int i = 0; i < config_nopts; i++) {
    const char *v = config_opts[i].env ? getenv(config_opts[i].env) : NULL;
    if (v && *v && config_set(c, i, v, CONFIG_ENV, err, errlen)) return -EINVAL;
  }
  return 0;
}

void config_usage(void *file) {
  FILE *f = file;
  for (int i = 0; i < config_nopts; i++) {
    const config_opt_t *o = &config_opts[i];
    char flag[64];
    snprintf(flag, sizeof flag, "--%s%s%s", o->flag, o->arg ? " " : "", o->arg ? o->arg : "");
    fprintf(f, "  %-28s %s (default: %s%s%s)\n", flag, o->help, o->def, o->env ? "; env " : "",
            o->env ? o->env : "");
  }
}
