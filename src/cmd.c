/* cmd — the operations commands (init, enqueue, status, requeue), written against
 * the store interface only: no SQL here, so any backend with the ops works.
 * Invariant: every store opened here is closed and its loop run dry before return. */
#include "cmd.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

#include "log.h"
#include "ndjson.h"
#include "store.h"
#include "store_open.h"

#define ENQUEUE_TX 1000 /* NDJSON lines per transaction */
#define DEAD_SHOWN 5    /* dead events listed by `status` */

static const char *default_db(void) {
  const char *env = getenv("OUTBOX_DB");
  return env && *env ? env : "outbox.db";
}

/* Prints "outboxd CMD: message" on stderr and returns `code`. */
__attribute__((format(printf, 3, 4))) static int complain(int code, const char *cmd,
                                                          const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "outboxd %s: ", cmd);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  return code;
}

/* getopt_long's ':' (value missing) or '?' (unknown option) as one line. */
static int bad_option(const char *cmd, int c, char **argv) {
  const char *opt = argv[optind - 1];
  if (c == ':') return complain(2, cmd, "%s needs a value", opt);
  return complain(2, cmd, "unknown option '%s' (see outboxd --help)", opt);
}

static void reset_getopt(void) {
  optind = 0; /* glibc: full re-initialisation, so commands can run twice */
  opterr = 0;
}

/* ----------------------------------------------------------- sessions */

/* A store opened for operations (no host id: no claims, no timers), with the
 * loop it lives on. */
typedef struct session {
  uv_loop_t loop;
  store_t *store;
} session_t;

/* Returns 0, or prints why on stderr and returns 2 (no such database) or 1. */
static int session_open(session_t *ss, const char *cmd, const char *url) {
  char err[512];
  store_opts_t opts;
  memset(&opts, 0, sizeof opts);
  opts.batch = 1;
  if (uv_loop_init(&ss->loop)) {
    fprintf(stderr, "outboxd %s: cannot create an event loop\n", cmd);
    return 1;
  }
  int rc = store_open(&ss->loop, url, &opts, &ss->store, err, sizeof err);
  if (rc) {
    fprintf(stderr, "outboxd %s: %s\n", cmd, err);
    uv_loop_close(&ss->loop);
    return rc == STORE_NO_DB ? 2 : 1;
  }
  return 0;
}

static void on_store_closed(void *arg) { *(int *)arg = 1; }

static void session_close(session_t *ss) {
  int closed = 0;
  store_close(ss->store, on_store_closed, &closed);
  uv_run(&ss->loop, UV_RUN_DEFAULT);
  if (!closed) fprintf(stderr, "outboxd: the store did not finish closing\n");
  uv_loop_close(&ss->loop);
}

/* Reports a failed store call through the store's last error; returns 1. */
static int store_failed(session_t *ss, const char *cmd, int rc) {
  const char *why = ss->store->err[0] ? ss->store->err : strerror(-rc);
  fprintf(stderr, "outboxd %s: %s\n", cmd, why);
  return 1;
}

/* --------------------------------------------------------------- init */

int cmd_init(int argc, char **argv) {
  static const struct option opts[] = {
      {"db", required_argument, NULL, 'd'}, {"help", no_argument, NULL, 'h'}, {0}};
  const char *db = default_db();
  char err[512];
  int c;
  reset_getopt();
  while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
    if (c == 'd')
      db = optarg;
    else if (c == 'h')
      return puts("usage: outboxd init [--db URL]") < 0;
    else
      return bad_option("init", c, argv);
  }
  if (optind < argc) return complain(2, "init", "unexpected argument '%s'", argv[optind]);
  if (store_init_schema(db, err, sizeof err)) {
    fprintf(stderr, "outboxd init: %s\n", err);
    return 1;
  }
  fprintf(stderr, "outboxd init: outbox table ready in %s\n",
          store_url_redact(db, err, sizeof err));
  return 0;
}

/* ------------------------------------------------------------ enqueue */

/* Digits only, as a non-negative int64; -1 otherwise. */
static int64_t parse_count(const char *s) {
  char *end;
  if (*s < '0' || *s > '9') return -1;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  return errno || *end ? -1 : (int64_t)v;
}

/* "2026-12-01T10:00:00Z", with optional .fraction and a zone Z or +HH:MM / -HHMM,
 * as ms since the epoch; -1 when malformed or not a real date. */
static int64_t parse_iso8601(const char *s) {
  struct tm tm;
  int y, mo, d, h, mi, sec, n = 0, ms = 0;
  memset(&tm, 0, sizeof tm);
  if (sscanf(s, "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 || n != 19)
    return -1;
  const char *p = s + n;
  if (*p == '.') { /* milliseconds, further digits ignored */
    int digits = 0;
    for (p++; *p >= '0' && *p <= '9'; p++, digits++)
      if (digits < 3) ms = ms * 10 + (*p - '0');
    if (!digits) return -1;
    for (; digits < 3; digits++) ms *= 10;
  }
  int64_t offset = 0;
  if (*p == 'Z' || *p == 'z') {
    p++;
  } else if (*p == '+' || *p == '-') {
    int oh, om, k = 0;
    if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &k) != 2 &&
        sscanf(p + 1, "%2d%2d%n", &oh, &om, &k) != 2)
      return -1;
    if (oh > 23 || om > 59) return -1;
    offset = (*p == '-' ? -1 : 1) * ((int64_t)oh * 3600 + om * 60);
    p += 1 + k;
  } else {
    return -1; /* a time without a zone means nothing to a server elsewhere */
  }
  if (*p) return -1;
  tm.tm_year = y - 1900, tm.tm_mon = mo - 1, tm.tm_mday = d;
  tm.tm_hour = h, tm.tm_min = mi, tm.tm_sec = sec;
  time_t t = timegm(&tm);
  /* timegm normalises 2026-02-30 to March: refuse what was not a real date */
  if (tm.tm_year != y - 1900 || tm.tm_mon != mo - 1 || tm.tm_mday != d || tm.tm_hour != h ||
      tm.tm_min != mi || tm.tm_sec != sec || t < 0)
    return -1;
  int64_t v = ((int64_t)t - offset) * 1000 + ms;
  return v < 0 ? -1 : v;
}

/* --delay MS / --at TIME into an available_at (ms since the epoch). Returns 0, or 2
 * after printing why. */
static int parse_when(const char *delay, const char *at, int64_t *out) {
  *out = 0;
  if (delay && at) return complain(2, "enqueue", "--delay and --at exclude each other");
  if (delay) {
    int64_t ms = parse_count(delay);
    if (ms < 0) return complain(2, "enqueue", "--delay %s: not a number of milliseconds", delay);
    *out = store_clamp_time(store_now_ms() + (ms > STORE_TIME_MAX ? STORE_TIME_MAX : ms));
  } else if (at) {
    int64_t ms = parse_count(at);
    if (ms >= 0 && ms < INT64_C(100000000000))
      return complain(2, "enqueue", "--at %s: looks like seconds; give milliseconds", at);
    if (ms < 0) ms = parse_iso8601(at);
    if (ms < 0 || ms > STORE_TIME_MAX)
      return complain(2, "enqueue",
                      "--at %s: not a time (epoch milliseconds, or ISO 8601 such as "
                      "2026-12-01T10:00:00Z)",
                      at);
    *out = ms;
  }
  return 0;
}

/* 0 when `s` is one JSON object; otherwise *why says what is wrong. */
static int check_headers(const char *s, const char **why) {
  size_t len = strlen(s);
  const char *p = s + strspn(s, " \t\r\n");
  if (ndjson_validate(s, len, why)) return -EINVAL;
  if (*p != '{') {
    *why = "must be a JSON object";
    return -EINVAL;
  }
  return 0;
}

typedef struct pending {
  store_event_t *ev[ENQUEUE_TX];
  int n;
  long total; /* events committed so far */
} pending_t;

static void pending_drop(pending_t *p) {
  for (int i = 0; i < p->n; i++) store_event_free(p->ev[i]);
  p->n = 0;
}

/* Inserts the held events in one transaction. Returns 0 or a negative code. */
static int pending_write(session_t *ss, pending_t *p) {
  int rc = p->n ? ss->store->ops->enqueue(ss->store, p->ev, p->n) : 0;
  if (rc == 0) p->total += p->n;
  pending_drop(p);
  return rc;
}

/* One event per NDJSON line on `in`, each due at `at` (0: at once). Returns the exit code. */
static int enqueue_lines(session_t *ss, FILE *in, int64_t at) {
  pending_t *p = calloc(1, sizeof *p);
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  long lineno = 0, bad = 0;
  int rc = 0;
  if (!p) return complain(1, "enqueue", "out of memory");
  while ((len = getline(&line, &cap, in)) != -1) {
    ndjson_rec_t rec;
    const char *why = NULL;
    lineno++;
    if (len && line[len - 1] == '\n') line[--len] = 0;
    int r = ndjson_parse(line, (size_t)len, &rec, &why);
    if (r == -ENODATA) continue; /* blank line */
    if (r) {
      fprintf(stderr, "line %ld: %s\n", lineno, why ? why : "malformed event");
      bad++;
      continue;
    }
    if (rec.payload_escaped) rec.payload_len = ndjson_unescape(rec.payload, rec.payload_len);
    store_event_t *ev =
        store_event_new(0, rec.topic, rec.topic_len, rec.key, rec.key_len, rec.payload,
                        rec.payload_len, rec.headers, rec.headers_len, 0);
    if (!ev) {
      rc = complain(1, "enqueue", "line %ld: out of memory", lineno);
      break;
    }
    ev->available_at = at;
    if ((why = store_refuses(ss->store, ev))) {
      fprintf(stderr, "line %ld: %s\n", lineno, why);
      store_event_free(ev);
      bad++;
      continue;
    }
    p->ev[p->n++] = ev;
    if (p->n == ENQUEUE_TX && (r = pending_write(ss, p))) {
      rc = store_failed(ss, "enqueue", r);
      break;
    }
  }
  if (rc == 0 && ferror(in)) rc = complain(1, "enqueue", "stdin: %s", strerror(errno));
  int r = rc == 0 ? pending_write(ss, p) : 0;
  if (r) rc = store_failed(ss, "enqueue", r);
  pending_drop(p);
  fprintf(stderr, "enqueued %ld event%s", p->total, p->total == 1 ? "" : "s");
  if (bad) fprintf(stderr, ", skipped %ld bad line%s", bad, bad == 1 ? "" : "s");
  fputc('\n', stderr);
  free(line);
  free(p);
  return rc ? rc : bad ? 1 : 0;
}

static int enqueue_one(session_t *ss, const char *topic, const char *key, const char *payload,
                       const char *headers, int64_t at) {
  store_event_t *ev = store_event_new(0, topic, strlen(topic), key, key ? strlen(key) : 0, payload,
                                      strlen(payload), headers, headers ? strlen(headers) : 0, 0);
  if (!ev) return complain(1, "enqueue", "out of memory");
  ev->available_at = at;
  int rc = ss->store->ops->enqueue(ss->store, &ev, 1);
  store_event_free(ev);
  if (rc) return store_failed(ss, "enqueue", rc);
  fprintf(stderr, "enqueued 1 event\n");
  return 0;
}

int cmd_enqueue(int argc, char **argv) {
  static const struct option opts[] = {{"db", required_argument, NULL, 'd'},
                                       {"topic", required_argument, NULL, 't'},
                                       {"key", required_argument, NULL, 'k'},
                                       {"payload", required_argument, NULL, 'p'},
                                       {"headers", required_argument, NULL, 'H'},
                                       {"delay", required_argument, NULL, 'w'},
                                       {"at", required_argument, NULL, 'a'},
                                       {"help", no_argument, NULL, 'h'},
                                       {0}};
  const char *db = default_db(), *topic = NULL, *key = NULL, *payload = NULL;
  const char *headers = NULL, *why = NULL, *delay = NULL, *at = NULL;
  int64_t when;
  char err[512];
  session_t ss;
  int c;
  reset_getopt();
  while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
    switch (c) {
    case 'd': db = optarg; break;
    case 't': topic = optarg; break;
    case 'k': key = optarg; break;
    case 'p': payload = optarg; break;
    case 'H': headers = optarg; break;
    case 'w': delay = optarg; break;
    case 'a': at = optarg; break;
    case 'h':
      puts("usage: outboxd enqueue [--db URL] --topic T [--key K] [--payload TEXT] "
           "[--headers JSON] [--delay MS | --at TIME]\n"
           "       (no --payload: one NDJSON event per line on stdin)\n"
           "  --delay MS   not claimable before MS milliseconds from now\n"
           "  --at TIME    not claimable before TIME: epoch milliseconds or ISO 8601\n"
           "               with a zone (2026-12-01T10:00:00Z, 2026-12-01T11:00:00+01:00)");
      return 0;
    default: return bad_option("enqueue", c, argv);
    }
  }
  if (optind < argc) return complain(2, "enqueue", "unexpected argument '%s'", argv[optind]);
  if (payload && !topic) return complain(2, "enqueue", "--topic is required with --payload");
  if (payload && !*topic) return complain(2, "enqueue", "--topic must not be empty");
  if (!payload && (topic || key || headers))
    return complain(2, "enqueue",
                    "--topic, --key and --headers go with --payload "
                    "(NDJSON lines on stdin carry their own)");
  if (headers && check_headers(headers, &why)) return complain(2, "enqueue", "--headers: %s", why);
  if (parse_when(delay, at, &when)) return 2;
  int rc = session_open(&ss, "enqueue", db);
  if (rc) return rc;
  if (!ss.store->ops->enqueue)
    rc = complain(1, "enqueue", "--db %s: this source is read-only",
                  store_url_redact(db, err, sizeof err));
  else if (payload)
    rc = enqueue_one(&ss, topic, key, payload, headers, when);
  else
    rc = enqueue_lines(&ss, stdin, when);
  session_close(&ss);
  return rc;
}

/* ------------------------------------------------------------- status */

/* "850 ms", "12.5 s", "3 min 05 s", "2 h 07 min", "3 d 04 h". */
static void format_age(int64_t ms, char *buf, size_t len) {
  int64_t s = ms / 1000;
  if (ms < 1000)
    snprintf(buf, len, "%" PRId64 " ms", ms);
  else if (s < 60)
    snprintf(buf, len, "%.1f s", (double)ms / 1000);
  else if (s < 3600)
    snprintf(buf, len, "%" PRId64 " min %02" PRId64 " s", s / 60, s % 60);
  else if (s < 86400)
    snprintf(buf, len, "%" PRId64 " h %02" PRId64 " min", s / 3600, s % 3600 / 60);
  else
    snprintf(buf, len, "%" PRId64 " d %02" PRId64 " h", s / 86400, s % 86400 / 3600);
}

/* One table row, escaped as log lines are (a topic or an error cannot move the
 * cursor or retitle the terminal), the error cut at about 100 bytes. */
static void print_dead(void *arg, int64_t id, const char *topic, int attempts,
                       const char *last_error) {
  char err[128], top[256];
  log_escape(last_error ? last_error : "-", err, sizeof err);
  log_escape(topic ? topic : "?", top, sizeof top);
  (*(int *)arg)++;
  printf("  %-10" PRId64 " %-20s %8d  %s\n", id, top, attempts, err);
}

/* The per-topic counts, gathered into a memory stream (printed only once whole). */
typedef struct topic_table {
  FILE *f;
  int n;
  int json;
} topic_table_t;

static void add_topic(void *arg, const char *topic, int64_t pending, int64_t processing,
                      int64_t dead) {
  topic_table_t *t = arg;
  char safe[512];
  log_escape(topic ? topic : "", safe, sizeof safe);
  if (t->json)
    fprintf(t->f,
            "%s\"%s\": {\"pending\": %" PRId64 ", \"processing\": %" PRId64 ", \"dead\": %" PRId64
            "}",
            t->n ? ", " : "", safe, pending, processing, dead);
  else
    fprintf(t->f, "  %-24s %10" PRId64 " %10" PRId64 " %10" PRId64 "\n", safe, pending, processing,
            dead);
  t->n++;
}

/* The topics table or JSON object into *out (malloc'd; NULL when the source
 * cannot count by topic). Returns 0 or the exit code after printing why. */
static int gather_topics(session_t *ss, int json, char **out, int *n) {
  size_t len;
  topic_table_t t = {NULL, 0, json};
  *out = NULL;
  *n = 0;
  if (!ss->store->ops->topic_counts) return 0;
  if (!(t.f = open_memstream(out, &len))) return complain(1, "status", "out of memory");
  int rc = ss->store->ops->topic_counts(ss->store, add_topic, &t);
  if (fclose(t.f) || !*out) rc = rc ? rc : -ENOMEM;
  *n = t.n;
  if (!rc) return 0;
  free(*out);
  *out = NULL;
  return store_failed(ss, "status", rc);
}

static int status_text(session_t *ss, const char *db, const store_counts_t *c) {
  char age[48] = "-";
  if (c->pending) format_age(c->oldest_pending_age_ms, age, sizeof age);
  const char *label[] = {"pending", "processing", "done", "dead"};
  const int64_t value[] = {c->pending, c->processing, c->done, c->dead};
  char safe[1024];
  printf("outbox %s\n", store_url_redact(db, safe, sizeof safe));
  for (int i = 0; i < 4; i++) printf("  %-16s%14" PRId64 "\n", label[i], value[i]);
  printf("  %-16s%14s\n", "oldest pending", age);
  char *topics;
  int n, rc = gather_topics(ss, 0, &topics, &n);
  if (rc) return rc;
  if (n) {
    printf("\nby topic (pending, processing, dead):\n");
    printf("  %-24s %10s %10s %10s\n%s", "topic", "pending", "processing", "dead", topics);
  }
  free(topics);
  if (ss->store->npaused) {
    printf("\npaused (no host starts these topics):\n");
    for (int i = 0; i < ss->store->npaused; i++) {
      char pat[512];
      log_escape(ss->store->paused[i], pat, sizeof pat);
      printf("  %s\n", pat);
    }
  }
  if (!c->dead || !ss->store->ops->list_dead) return 0;
  printf("\nlast dead events (newest first):\n");
  printf("  %-10s %-20s %8s  %s\n", "id", "topic", "attempts", "last error");
  int shown = 0;
  rc = ss->store->ops->list_dead(ss->store, DEAD_SHOWN, print_dead, &shown);
  return rc ? store_failed(ss, "status", rc) : 0;
}

/* The one object of `status --json`, exactly the keys the contract names: the five
 * counts, "topics": {topic: {pending, processing, dead}} and "paused": [pattern]. */
static int status_json(session_t *ss, const store_counts_t *c) {
  char *topics;
  int n, rc = gather_topics(ss, 1, &topics, &n);
  if (rc) return rc;
  printf("{\"pending\": %" PRId64 ", \"processing\": %" PRId64 ", \"done\": %" PRId64
         ", \"dead\": %" PRId64 ", \"oldest_pending_age_ms\": %" PRId64 ", \"topics\": {%s}"
         ", \"paused\": [",
         c->pending, c->processing, c->done, c->dead, c->oldest_pending_age_ms,
         topics ? topics : "");
  for (int i = 0; i < ss->store->npaused; i++) {
    char safe[512];
    log_escape(ss->store->paused[i], safe, sizeof safe);
    printf("%s\"%s\"", i ? ", " : "", safe);
  }
  printf("]}\n");
  free(topics);
  return 0;
}

int cmd_status(int argc, char **argv) {
  static const struct option opts[] = {{"db", required_argument, NULL, 'd'},
                                       {"json", no_argument, NULL, 'j'},
                                       {"help", no_argument, NULL, 'h'},
                                       {0}};
  const char *db = default_db();
  int json = 0, c;
  session_t ss;
  store_counts_t counts;
  reset_getopt();
  while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
    if (c == 'd')
      db = optarg;
    else if (c == 'j')
      json = 1;
    else if (c == 'h')
      return puts("usage: outboxd status [--db URL] [--json]") < 0;
    else
      return bad_option("status", c, argv);
  }
  if (optind < argc) return complain(2, "status", "unexpected argument '%s'", argv[optind]);
  int rc = session_open(&ss, "status", db);
  if (rc) return rc;
  rc = store_counts(ss.store, &counts);
  if (rc)
    rc = store_failed(&ss, "status", rc);
  else if (json)
    rc = status_json(&ss, &counts);
  else
    rc = status_text(&ss, db, &counts);
  session_close(&ss);
  if (fflush(stdout) && !rc) rc = complain(1, "status", "stdout: %s", strerror(errno));
  return rc;
}

/* ------------------------------------------------------------ requeue */

/* A positive event id, or -1. */
static int64_t parse_id(const char *s) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v <= 0) return -1;
  return (int64_t)v;
}

typedef struct requeue_args {
  const char *db;
  const char *topic; /* with --dead: exact, or a prefix ending in '*' */
  int dead;
  int n;
  int64_t *ids; /* room for argc ids */
} requeue_args_t;

/* Returns 0, 2 (usage error, printed) or -1 (--help printed). */
static int requeue_parse(int argc, char **argv, requeue_args_t *a) {
  static const struct option opts[] = {
      {"db", required_argument, NULL, 'd'}, {"dead", no_argument, NULL, 'D'},
      {"id", required_argument, NULL, 'i'}, {"topic", required_argument, NULL, 'T'},
      {"help", no_argument, NULL, 'h'},     {0}};
  int c;
  reset_getopt();
  while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
    switch (c) {
    case 'd': a->db = optarg; break;
    case 'D': a->dead = 1; break;
    case 'T': a->topic = optarg; break;
    case 'i':
      if ((a->ids[a->n] = parse_id(optarg)) < 0)
        return complain(2, "requeue", "--id %s: not an event id", optarg);
      a->n++;
      break;
    case 'h':
      puts("usage: outboxd requeue [--db URL] (--dead [--topic PATTERN] | --id N...)\n"
           "  PATTERN: a topic, or a prefix ending in * (order.*)");
      return -1;
    default: return bad_option("requeue", c, argv);
    }
  }
  for (int i = optind; i < argc; i++) { /* ids may also trail the options */
    if ((a->ids[a->n] = parse_id(argv[i])) < 0)
      return complain(2, "requeue", "'%s' is not an event id", argv[i]);
    a->n++;
  }
  if (a->topic && !a->dead) return complain(2, "requeue", "--topic goes with --dead");
  if (!a->dead && !a->n) return complain(2, "requeue", "give --dead or --id N");
  if (a->dead && a->n) return complain(2, "requeue", "--dead and --id exclude each other");
  const char *star = a->topic ? strchr(a->topic, '*') : NULL;
  if (a->topic && (!*a->topic || (star && star[1])))
    return complain(2, "requeue", "--topic '%s': a topic, or a prefix ending in * (order.*)",
                    a->topic);
  return 0;
}

int cmd_requeue(int argc, char **argv) {
  char safe[1024];
  requeue_args_t a = {default_db(), NULL, 0, 0, calloc((size_t)argc + 1, sizeof(int64_t))};
  int64_t moved = 0;
  session_t ss;
  if (!a.ids) return complain(1, "requeue", "out of memory");
  int rc = requeue_parse(argc, argv, &a);
  if (rc == 0) rc = session_open(&ss, "requeue", a.db);
  if (rc) {
    free(a.ids);
    return rc < 0 ? 0 : rc;
  }
  if (!ss.store->ops->requeue)
    rc = complain(1, "requeue", "--db %s: this source is read-only",
                  store_url_redact(a.db, safe, sizeof safe));
  else if ((rc = ss.store->ops->requeue(ss.store, a.ids, a.n, a.topic, &moved)))
    rc = store_failed(&ss, "requeue", rc);
  else if (a.dead && moved == 0 && a.topic)
    printf("requeued 0 events: no dead events of topic %s\n", a.topic);
  else if (a.dead && moved == 0)
    printf("requeued 0 events: no dead events\n");
  else if (a.n == 1 && moved == 0)
    printf("requeued 0 events: no event %" PRId64 " (or it is being processed)\n", a.ids[0]);
  else if (!a.dead && moved < a.n)
    printf("requeued %" PRId64 " event%s; %" PRId64 " of the %d ids named no event (or one "
           "being processed)\n",
           moved, moved == 1 ? "" : "s", (int64_t)a.n - moved, a.n);
  else
    printf("requeued %" PRId64 " event%s\n", moved, moved == 1 ? "" : "s");
  session_close(&ss);
  free(a.ids);
  return rc;
}

/* ------------------------------------------------------- pause, resume */

static int pause_or_resume(int argc, char **argv, int on) {
  static const struct option opts[] = {
      {"db", required_argument, NULL, 'd'}, {"help", no_argument, NULL, 'h'}, {0}};
  const char *cmd = on ? "pause" : "resume", *db = default_db(), *pattern = NULL;
  char safe[1024], why[256];
  int c, changed = 0;
  session_t ss;
  reset_getopt();
  while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
    if (c == 'd')
      db = optarg;
    else if (c == 'h')
      return printf("usage: outboxd %s [--db URL] PATTERN\n"
                    "  PATTERN: a topic, or a prefix ending in * (order.*)\n",
                    cmd) < 0;
    else
      return bad_option(cmd, c, argv);
  }
  if (optind == argc) return complain(2, cmd, "give a topic or a prefix ending in * (order.*)");
  if (optind + 1 < argc) return complain(2, cmd, "unexpected argument '%s'", argv[optind + 1]);
  pattern = argv[optind];
  topics_t t = {0};
  int rc = topics_parse(&t, pattern, why, sizeof why);
  topics_free(&t);
  if (rc || strchr(pattern, ','))
    return complain(2, cmd, "'%s': one topic, or a prefix ending in * (order.*)", pattern);
  if ((rc = session_open(&ss, cmd, db))) return rc;
  if (!ss.store->ops->pause)
    rc = complain(1, cmd, "--db %s: this source cannot be paused",
                  store_url_redact(db, safe, sizeof safe));
  else if ((rc = ss.store->ops->pause(ss.store, pattern, on, &changed)))
    rc = store_failed(&ss, cmd, rc);
  else if (on)
    printf(changed ? "paused %s: no host starts its events until outboxd resume %s\n"
                   : "%s was already paused (outboxd resume %s)\n",
           pattern, pattern);
  else
    printf(changed ? "resumed %s\n" : "%s was not paused\n", pattern);
  session_close(&ss);
  return rc;
}

int cmd_pause(int argc, char **argv) { return pause_or_resume(argc, argv, 1); }

int cmd_resume(int argc, char **argv) { return pause_or_resume(argc, argv, 0); }
