/* config — the run settings: defaults, outbox.configure{} in the script, the
 * environment and flags, in rising precedence. One table describes every option,
 * so parsing, --help and outbox.config never disagree. */
#ifndef OUTBOXD_CONFIG_H
#define OUTBOXD_CONFIG_H

#include <stddef.h>
#include <stdint.h>

enum config_source { CONFIG_DEFAULT = 0, CONFIG_SCRIPT = 1, CONFIG_ENV = 2, CONFIG_FLAG = 3 };

enum config_type {
  CT_INT,      /* positive integer */
  CT_MS,       /* milliseconds (seconds as floats in Lua) */
  CT_PCT,      /* 1..100 */
  CT_SIZE,     /* bytes, "512M" */
  CT_BACKOFF,  /* MS[:MAX] */
  CT_ORDERING, /* key | none */
  CT_LOG,      /* text | json */
  CT_LEVEL,    /* debug | info | warn | error */
  CT_BOOL,     /* a flag without value */
  CT_DURATION, /* retention: 7d, 12h, 30m, 45s, ms; "forever" (-1); the flag alone: forever */
  CT_NEGBOOL,  /* a flag that turns a default-on setting off */
  CT_STRING,
  CT_CONCURRENCY, /* N, auto or auto:MAX */
  CT_TOPICS       /* comma-separated topic patterns */
};

typedef struct config {
  int concurrency;      /* the global limit (MAX under auto) */
  int concurrency_auto; /* 1: each route's limit adapts (--concurrency auto[:MAX]) */
  int batch;
  int64_t poll_ms;
  int max_attempts;
  int64_t backoff_base_ms, backoff_cap_ms;
  int64_t timeout_ms;
  int breaker_pct;
  int breaker_window;
  int breaker_min_calls;
  int64_t breaker_cooldown_ms;
  int64_t breaker_slow_ms; /* a run longer than this counts as a failure; 0: off */
  int64_t memory_limit;    /* 0: detect */
  int memory_high_pct;
  int64_t memory_interval_ms;
  int64_t lease_ms;
  int64_t store_timeout_ms; /* 0: no limit */
  int64_t drain_timeout_ms;
  int64_t cpu_limit_ms;     /* longest run of a handler or hook without yielding; 0: none */
  int64_t lua_memory_limit; /* cap on all Lua heaps together; 0: the memory limit */
  int ordering_key;
  int once;
  int watch;
  int64_t keep_done_ms; /* done rows kept this long; 0: deleted at once; -1: forever */
  int64_t keep_dead_ms; /* dead rows kept this long; -1: forever */
  int log_json;         /* -1: text on a TTY, else json */
  int log_level;        /* enum log_level */
  char metrics[128];
  char db[1024];
  char topics[1024];        /* --topics: patterns claims are narrowed to; "": no narrowing */
  const char *http_stub;    /* outboxd test: outbox.http answered by this Lua file */
  unsigned char source[64]; /* per option, enum config_source */
} config_t;

typedef struct config_opt {
  const char *flag; /* "concurrency" for --concurrency */
  const char *env;  /* environment variable or NULL */
  const char *lua;  /* key in outbox.configure / outbox.config, or NULL */
  int type;
  size_t off;      /* offset in config_t */
  const char *arg; /* placeholder for --help */
  const char *def; /* default as shown in --help */
  const char *help;
} config_opt_t;

extern const config_opt_t config_opts[];
extern const int config_nopts;

/* Fills the defaults: the table's `def` of each option whose default is one of its
 * values (config_default_is_value: not "off", no words); the rest are zero, but
 * log_json -1 (decided by the terminal) and watch 1. */
void config_defaults(config_t *c);
int config_default_is_value(int i);

/* Sets option `i` from text if `source` is at least the option's current source.
 * Returns 0, or -EINVAL with a one-line message naming the option in err. */
int config_set(config_t *c, int i, const char *value, int source, char *err, size_t errlen);

/* Sets option `i` from a Lua number (times in seconds). Same rules. */
int config_set_number(config_t *c, int i, double v, int source, char *err, size_t errlen);

/* Parses a retention: digits with an optional unit (ms, s, m, h, d; none: ms), or
 * "forever" (-1). Returns 0, or -EINVAL. */
int config_parse_duration(const char *s, int64_t *ms);

/* Index of the option whose flag or Lua key is `name`, or -1. */
int config_find(const char *name, int by_lua);

/* Reads every option's environment variable. Returns 0 or -EINVAL. */
int config_from_env(config_t *c, char *err, size_t errlen);

/* Prints the run options with their defaults and environment variables. */
void config_usage(void *file);

#endif
