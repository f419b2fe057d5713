/* store — where events come from and where their outcomes go.
 * One interface, one file per backend: store_ndjson.c (stdin or a file, in memory),
 * store_sqlite.c, store_pg.c; store_open.c picks one from a --db value. Every call
 * is non-blocking for the loop: claims return what is at hand (a backend may
 * prefetch), settlements are buffered and written in batches (flushed by size, by a
 * short timer, and by store_flush). Ownership: a claimed event belongs to the
 * dispatcher until it hands it back through exactly one of store_ack / fail / dead /
 * release / defer; the store then frees it. */
#ifndef OUTBOXD_STORE_H
#define OUTBOXD_STORE_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "event.h"
#include "topics.h"

typedef struct store store_t;

/* The largest payload dispatched; a larger one is dead-lettered unread. An NDJSON
 * line may be larger by STORE_ENVELOPE_MAX (topic, key, headers) before it is
 * skipped as it streams. */
#define STORE_PAYLOAD_MAX (16u << 20)
#define STORE_ENVELOPE_MAX (1u << 20)

/* The longest last_error a store writes, in bytes. */
#define STORE_ERROR_MAX 2048
/* The latest time a store writes (9999-12-31T23:59:59.999Z, in ms since the epoch):
 * later times are clamped to it, earlier than the epoch to 0. */
#define STORE_TIME_MAX INT64_C(253402300799999)

/* What a store writes as last_error for `err`: a new string of valid UTF-8 (invalid
 * bytes replaced by U+FFFD) of at most STORE_ERROR_MAX bytes, cut on a character
 * boundary. NULL for NULL, or when out of memory. The caller frees it. */
char *store_error_text(const char *err);

/* `ms` clamped to [0, STORE_TIME_MAX]. */
int64_t store_clamp_time(int64_t ms);

/* The wall clock in the stores' unit, ms since the epoch: every created_at,
 * available_at and retention cut-off is measured with it. */
int64_t store_now_ms(void);

/* Writes the decimal digits of v (an id, a time: >= 0; a negative v gets its sign) to
 * out, which has room for 20 bytes, and returns their count. No terminating NUL. The
 * id lists of a claim and its acks are built with it (snprintf: ~1.5k instructions an
 * event at batch 1000). */
size_t store_put_int(char *out, int64_t v);

/* The same clock in microseconds. */
int64_t store_now_us(void);

/* For a store that claims events before they are due and holds them: moves to `out`
 * (at most `max`) the events of buf[0..*n) due by `now` (available_at 0 or at most
 * `now`, ms since the epoch), in buffer order; the rest stay in order, *n updated.
 * Returns how many moved; *next gets when the first event left is due: `now` when
 * one is due already (max reached), 0 when none is left. */
int store_take_due(store_event_t **buf, int *n, int max, int64_t now, store_event_t **out,
                   int64_t *next);

/* Called by the store when claim() may return more than it did (new rows, a retry
 * came due, a prefetch completed, input arrived). May be called from any loop
 * callback, never from inside a store call. */
typedef void (*store_wake_cb)(void *arg);

typedef struct store_opts {
  int batch;            /* events claimed per claim */
  int ordering_key;     /* 1: a key's events run one at a time in id order: a claim
                           takes a key's head, and may take the events behind it
                           (a run) for the dispatcher to run in order */
  int64_t lease_ms;     /* claim lease, renewed by the store while events are out */
  int64_t keep_done_ms; /* done rows: 0 deleted at once, -1 kept forever, else pruned after */
  int64_t keep_dead_ms; /* dead rows: -1 kept forever, else pruned after this long */
  int64_t poll_ms;      /* longest idle wait between looks at the store */
  const char *host_id;  /* written to locked_by */
  store_wake_cb wake;
  void *wake_arg;
  int64_t timeout_ms; /* longest wait for one statement's answer; 0: no limit */
} store_opts_t;

typedef struct store_counts {
  int64_t pending, processing, done, dead;
  int64_t oldest_pending_age_ms; /* 0 when nothing is pending */
} store_counts_t;

/* Sets the count of `status` ("pending", "processing", "done" or "dead", as the
 * outbox table spells it) in c to n; any other status, or NULL, is ignored. */
void store_counts_set(store_counts_t *c, const char *status, int64_t n);

/* The outcomes a claimed event is handed back with (store_ops_t's settle). */
enum { STORE_ACK, STORE_FAIL, STORE_DEAD, STORE_RELEASE, STORE_DEFER };

typedef struct store_ops {
  const char *name;
  /* Up to `max` claimable events into out[]; *n gets the count (0 is fine).
   * Returns 0 or a negative errno-style code (the store logs the cause).
   * -EINPROGRESS with *n == 0 is not a failure: nothing is at hand yet but a claim
   * is under way (a prefetching backend), and a wake-up follows; 0 with *n == 0
   * means nothing is claimable now. out[] is in id order. With ordering_key it may
   * hold several events of one key (a run): each runs only after the one before it
   * settled done or dead; when one fails or is released, the dispatcher releases the
   * rest of the run it still holds unstarted. */
  int (*claim)(store_t *s, int max, store_event_t **out, int *n);
  /* Hands a claimed event back with its outcome, `kind` one of:
   *   STORE_ACK      the handler succeeded (arg, err unused);
   *   STORE_FAIL     the run failed; claimable again at `arg` (ms since the epoch)
   *                  with one more attempt counted and `err` kept;
   *   STORE_DEAD     dead-lettered with `err`; one more attempt counted when arg is 1
   *                  (the handler ran);
   *   STORE_RELEASE  claimed but never started: back to pending, no attempt used;
   *   STORE_DEFER    claimed but not to be started yet (its route's breaker is open,
   *                  the route is snoozed): back to pending, no attempt used, last
   *                  error kept, not claimable before `arg`, so no host claims it
   *                  again in vain.
   * Call through store_ack .. store_defer. */
  void (*settle)(store_t *s, store_event_t *ev, int kind, int64_t arg, const char *err);
  /* Takes over a list of new events (linked by `next`) tied to no settlement:
   * outbox.enqueue from a hook or the top level of a script. They are written with
   * the next batch of settlements, within milliseconds (databases), or join the run
   * (NDJSON). NULL: the source cannot take new events (they are freed and logged). */
  void (*push)(store_t *s, store_event_t *list);
  /* Writes buffered settlements now. Returns 0 or a negative code. */
  int (*flush)(store_t *s);
  /* 1 when the source can never yield more and holds nothing unsettled (end of
   * NDJSON input with every retry settled), -1 when so but the input ended on a read
   * error; databases return 0. */
  int (*exhausted)(store_t *s);
  /* Counts for `status` and metrics. Returns 0 or a negative code. */
  int (*counts)(store_t *s, store_counts_t *out);
  /* Inserts events (one transaction), each claimable from its available_at; id,
   * attempts and created_at of the given events are ignored. Returns 0 or a
   * negative code. NULL for read-only sources. */
  int (*enqueue)(store_t *s, store_event_t *const *evs, int n);
  /* Moves events back to pending with attempts reset: the listed ids, or when n == 0
   * every dead event whose topic matches `topic` (exact, or a prefix when it ends in
   * '*'; NULL: any topic). *moved gets the count. NULL for read-only sources. */
  int (*requeue)(store_t *s, const int64_t *ids, int n, const char *topic, int64_t *moved);
  /* Calls cb once per topic with pending, processing or dead events, in topic order.
   * Returns 0 or a negative code. NULL when the source cannot tell. */
  int (*topic_counts)(store_t *s,
                      void (*cb)(void *arg, const char *topic, int64_t pending, int64_t processing,
                                 int64_t dead),
                      void *arg);
  /* Calls cb for the `max` most recent dead events, newest first. */
  int (*list_dead)(store_t *s, int max,
                   void (*cb)(void *arg, int64_t id, const char *topic, int attempts,
                              const char *last_error),
                   void *arg);
  /* For a host that stops or restarts at once (a runaway handler): from any thread,
   * on a connection of its own, while the loop thread is stopped outside the store.
   * Writes the settlements still buffered; marks event `dead_id` dead with `err`
   * (one attempt counted; skipped when dead_id <= 0 or the event is no longer this
   * host's); returns every other event this host holds to pending, no attempt used.
   * Returns how many went back to pending, or a negative code with a one-line reason
   * in errbuf. NULL for sources nothing else can read (NDJSON). */
  int (*salvage)(store_t *s, int64_t dead_id, const char *err, char *errbuf, size_t errlen);
  /* Why the store cannot hold `ev` whole (a static one-line reason), or NULL. May be
   * NULL: every event fits. Call through store_refuses. */
  const char *(*refuses)(store_t *s, const store_event_t *ev);
  /* Stops timers and watchers; `cb` runs once every handle is closed. Buffered
   * settlements are flushed first. */
  void (*close)(store_t *s, void (*cb)(void *arg), void *arg);
  /* Adds (on) or removes a paused topic pattern (`outboxd pause` / `resume`), for
   * every host sharing the store. *changed gets 1 when the list changed. NULL for
   * sources nothing else reads (NDJSON). */
  int (*pause)(store_t *s, const char *pattern, int on, int *changed);
  /* 1 when claims filter by topic in the database (see store_set_topics): topics
   * outside the set stay pending for other hosts. 0: every event is claimed. */
  int filters;
} store_ops_t;

struct store {
  const store_ops_t *ops;
  uv_loop_t *loop;
  store_opts_t opts;
  char err[256]; /* last error, for messages */
  /* Topic filter (filtering stores only): what the host handles (`want`, all when
   * `want_all`), the patterns paused in the database as last read, and what claims
   * take: want minus paused (`claim_all`: every topic, no filter in SQL). */
  topics_t want, paused_set, claim;
  int want_all, claim_all;
  char **paused; /* paused patterns, sorted */
  int npaused;
  unsigned paused_gen; /* changes whenever `paused` does */
};

/* Why `s` cannot store `ev` whole (a static one-line reason), or NULL when it can.
 * Writers check it before enqueueing, so nothing is cut silently. */
const char *store_refuses(store_t *s, const store_event_t *ev);

/* Sets the topics claims take: `want` (copied), or every topic when NULL; paused
 * patterns are taken out. Returns 0 or -ENOMEM (the filter is then unchanged). */
int store_set_topics(store_t *s, const topics_t *want);

/* Replaces the paused patterns with `list` (n strings; ownership of the strings and
 * the array passes to the store) when they differ, and updates what claims take.
 * Returns 1 when the list changed, 0 when not, -ENOMEM. */
int store_set_paused(store_t *s, char **list, int n);

/* Frees the filter state (backends call it when they close). */
void store_topics_free(store_t *s);

/* A requeue topic pattern as the stores match it: the length of the text before a
 * final '*' (the whole topic when there is none), with *prefix set when there is
 * one; -1 for NULL (every topic). */
int store_topic_pattern(const char *topic, int *prefix);

/* What store_open (store_open.h) returns for a SQLite path that does not exist:
 * only store_init_schema (`outboxd init`) creates a database. Callers exit 2. */
#define STORE_NO_DB (-ENXIO)

/* Retention (--keep-done, --keep-dead): a dispatching store deletes done and dead
 * rows older than their retention in batches, off the hot path. These say how: */

/* 1 when `o` asks for any pruning (a finite retention above 0 for done rows, or any
 * finite one for dead rows). */
int store_prunes(const store_opts_t *o);

/* The retention of done (dead = 0) or dead rows, in ms, when they are pruned; -1
 * when they are not. */
int64_t store_keep_ms(const store_opts_t *o, int dead);

/* How long to wait before looking for old rows again when none were left: a tenth
 * of the shortest retention, between 1 s and 60 s. */
int64_t store_prune_idle_ms(const store_opts_t *o);

#define STORE_PRUNE_MIN 16 /* rows per batch, adapted between these */
#define STORE_PRUNE_MAX 4096
#define STORE_PRUNE_FIRST 256
#define STORE_PRUNE_GAP_MS 10 /* between batches while old rows remain */

/* The next batch size after a batch of `batch` rows took `took_us` microseconds:
 * halved when it took more than `budget_ms`, doubled under a quarter of it. A store
 * whose batches run on the loop thread (SQLite) gives a few ms; one whose batches
 * only hold its connection (PostgreSQL) more. */
int store_prune_batch(int batch, int64_t took_us, int64_t budget_ms);

#define store_claim(s, max, out, n) ((s)->ops->claim((s), (max), (out), (n)))
#define store_ack(s, ev) ((s)->ops->settle((s), (ev), STORE_ACK, 0, NULL))
#define store_fail(s, ev, at, err) ((s)->ops->settle((s), (ev), STORE_FAIL, (at), (err)))
#define store_dead(s, ev, ran, err) ((s)->ops->settle((s), (ev), STORE_DEAD, (ran) ? 1 : 0, (err)))
#define store_release(s, ev) ((s)->ops->settle((s), (ev), STORE_RELEASE, 0, NULL))
#define store_defer(s, ev, at) ((s)->ops->settle((s), (ev), STORE_DEFER, (at), NULL))
#define store_flush(s) ((s)->ops->flush((s)))
/* Hands `list` to the store's push, or frees it when the store has none. */
void store_push(store_t *s, store_event_t *list);
#define store_exhausted(s) ((s)->ops->exhausted((s)))
#define store_counts(s, c) ((s)->ops->counts((s), (c)))
#define store_close(s, cb, arg) ((s)->ops->close((s), (cb), (arg)))

#endif
