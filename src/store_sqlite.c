/* store_sqlite — the SQLite outbox: leased claims, batched settlements, wake-ups
 * from the WAL file. One connection, used only on the loop thread.
 * Invariant: every write to a claimed row is fenced on (id, locked_by = this host,
 * status = 'processing'), so a host whose lease lapsed never overwrites a newer claim. */
#include "checkpoint.h"
#include "idset.h"
#include "settle.h"
#include "store_backends.h"
#include "walvfs.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

#define LOOP_BUSY_MS 100  /* busy timeout for calls made from the loop */
#define CMD_BUSY_MS 5000  /* busy timeout for operations commands and close */
#define FLUSH_DELAY_MS 5  /* settlements wait at most this long for company */
#define RETRY_MS 250      /* retry delay after SQLITE_BUSY */
#define CHECK_DELAY_MS 1  /* debounce for WAL file events */
#define CHECK_TRIES 10    /* looks after one event, the delay doubling: ~1 s in all */
#define BUSY_LOG_MS 60000 /* "database busy" at most this often */
#define PRUNE_BUDGET_MS 4 /* a retention batch holds the loop about this long at most */
#define WAL_PAGES 10000   /* log pages between checkpoints (see open_db) */

/* ---------------------------------------------------------------- schema */

#define LIVE " status IN ('pending','processing')"
#define KEY_HEAD_WHERE " WHERE key IS NOT NULL AND" LIVE
/* The key index comes in two forms. Over every keyed row, a claim does not rewrite
 * it (its columns and condition do not change when a row is taken), so a keyed claim
 * and its acks write about half the pages; settled rows of a key stay in it until
 * deleted, and a claim walks past them. Over live rows only, it is rewritten at every
 * claim, but kept done rows cost nothing: hosts that keep done rows (--keep-done)
 * build it so. The statements below work on either. */
#define KEY_INDEX_ALL " WHERE key IS NOT NULL"
#define KEY_INDEX_SQL(where) "CREATE INDEX IF NOT EXISTS outbox_key_head ON outbox(key, id)" where
#define TOPIC_FREE_WHERE " WHERE key IS NULL AND status = 'pending'"
/* A statement reads outbox_taken when its WHERE repeats this condition. */
#define TAKEN " status <> 'pending'"
#define TAKEN_WHERE " WHERE" TAKEN

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS outbox (\n"
    "  id           INTEGER PRIMARY KEY AUTOINCREMENT,\n"
    "  topic        TEXT    NOT NULL,\n"
    "  key          TEXT,\n"
    "  payload      TEXT    NOT NULL,\n"
    "  headers      TEXT,\n"
    "  created_at   INTEGER NOT NULL DEFAULT "
    "(CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),\n"
    "  available_at INTEGER NOT NULL DEFAULT 0,\n"
    "  attempts     INTEGER NOT NULL DEFAULT 0,\n"
    "  status       TEXT    NOT NULL DEFAULT 'pending',  -- pending|processing|done|dead\n"
    "  locked_by    TEXT,\n"
    "  locked_until INTEGER,\n"
    "  last_error   TEXT\n"
    ");\n"
    /* Rows taken (processing, done, dead) by status in id order: leases that ran out,
     * the dead. Waiting rows are not in it, so a claim adds an entry and deletes none
     * (the waiting rows are found through the indexes below): a claim of 1000 rows
     * and its acks cost about a fifth fewer instructions. */
    "CREATE INDEX IF NOT EXISTS outbox_taken ON outbox(status, id)" TAKEN_WHERE ";\n"
    /* Keyless rows waiting, by due time (0, at once, in id order): claims with
     * per-key order take them here, reading only rows that are due. */
    "CREATE INDEX IF NOT EXISTS outbox_keyless ON outbox(available_at)"
    " WHERE key IS NULL AND status = 'pending';\n"
    /* Rows waiting for a retry or a scheduled time: the next wake-up is their min. */
    "CREATE INDEX IF NOT EXISTS outbox_due ON outbox(available_at)"
    " WHERE status = 'pending' AND available_at > 0;\n"
    /* Rows of each key in id order: a key's head is its first live entry, and a skip
     * scan over it visits one entry per key. Keyless rows cost nothing. */
    KEY_INDEX_SQL(KEY_INDEX_ALL) ";\n"
    /* Claims by topic (a host that handles some topics): keyless rows waiting, per
     * topic by due time (0, at once, in id order). Key heads of the claimable topics
     * come from the key index (a second index of keyed rows by topic would double the
     * pages every keyed claim and ack writes). */
    "CREATE INDEX IF NOT EXISTS outbox_topic_free ON outbox(topic, available_at)"
    TOPIC_FREE_WHERE ";\n"
    /* Done and dead rows by the time they settled (their available_at): retention
     * deletes the oldest first. Empty unless rows are kept (--keep-done). */
    "CREATE INDEX IF NOT EXISTS outbox_settled ON outbox(status, available_at)"
    " WHERE status IN ('done', 'dead');\n"
    /* Topic patterns no host claims for now (outboxd pause / resume). */
    "CREATE TABLE IF NOT EXISTS outbox_paused (\n"
    "  pattern   TEXT    PRIMARY KEY,\n"
    "  paused_at INTEGER NOT NULL DEFAULT "
    "(CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))\n"
    ");\n";

/* Without per-key order, claims take every waiting row in id order (of a topic, when
 * claiming by topic); dispatching hosts with --ordering none create these indexes. */
static const char topic_pending_sql[] =
    "CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(id, available_at)"
    " WHERE status = 'pending';"
    "CREATE INDEX IF NOT EXISTS outbox_topic_pending ON outbox(topic, id, available_at)"
    " WHERE status = 'pending'";

/* ------------------------------------------------------------ statements */

enum {
  ST_BEGIN,
  ST_COMMIT,
  ST_ROLLBACK,
  ST_SUSPECT,
  ST_SUSPECT_ANY,
  ST_CAND_FREE,
  ST_DUE_FREE,
  ST_CAND_ANY,
  ST_LAPSED_FREE,
  ST_LAPSED_ANY,
  ST_FIRST_HEAD,
  ST_NEXT_HEAD,
  ST_FOLLOWERS,
  ST_TAKE,
  ST_TAKEN,
  ST_ACK_DELETE,
  ST_ACK_GONE,
  ST_ACK_DONE,
  ST_FAIL,
  ST_DEAD,
  ST_RELEASE,
  ST_DEFER,
  ST_RENEW,
  ST_NEXT_DUE,
  ST_DATA_VERSION,
  ST_INSERT,
  ST_REQUEUE_DEAD,
  ST_REQUEUE_ID,
  ST_COUNTS,
  ST_OLDEST,
  ST_LIST_DEAD,
  ST_TOPIC_COUNTS,
  ST_PAUSED,
  ST_PRUNE_DONE,
  ST_PRUNE_DEAD,
  /* claims by topic */
  ST_F_SUSPECT,
  ST_F_SUSPECT_ANY,
  ST_F_LAPSED_FREE,
  ST_F_LAPSED_ANY,
  ST_F_TOPIC_FREE,
  ST_F_ROWS_FREE,
  ST_F_TOPIC_ANY, /* these two: --ordering none only (outbox_topic_pending) */
  ST_F_ROWS_ANY,
  ST_COUNT
};

/* Rows under lease are found through the status index: they are few (what hosts hold
 * now), but with ANALYZE statistics of a table where nearly every row is pending,
 * SQLite would rather scan the whole table for them. */
#define LEASED_ROWS " INDEXED BY outbox_taken"
/* ?1 now, ?2 host. Held by another host whose lease ran out: it stopped mid-run. */
#define LAPSED                                                                                     \
  " o." TAKEN " AND o.status = 'processing' AND o.locked_until < ?1 AND o.locked_by IS NOT ?2"
/* ...and it had already been taken over after such a lapse. */
#define SUSPECT LAPSED " AND o.last_error LIKE '" STORE_LAPSE_ERROR "%'"
/* A row is the head of its key when no live row of that key has a smaller id. */
#define HEAD_OF_KEY                                                                                \
  " AND (o.key IS NULL OR NOT EXISTS (SELECT 1 FROM outbox h WHERE h.key = o.key"                  \
  " AND h.key IS NOT NULL AND h.id < o.id AND h." LIVE "))"

/* ?1 now, ?3 max: pending and due rows in id order (each its own statement: a UNION
 * with an ORDER BY would build a temporary b-tree at every claim). */
#define CAND_SQL(index, where)                                                                     \
  "SELECT o.id FROM outbox o" index " WHERE" where                                                 \
  " o.status = 'pending' AND o.available_at <= ?1"                                                 \
  " ORDER BY o.id LIMIT ?3"
/* Waiting rows off a due-time index (`rows`: a SELECT of id whose WHERE ends in
 * "available_at"), each read stopping at ?3 rows: those due at once (available_at 0)
 * in id order, and those whose time has come (`now`) in due order, the few with a
 * time before the epoch first. Rows still ahead are never visited, however many wait. */
#define DUE_AT_ONCE(rows) rows " = 0 ORDER BY id LIMIT ?3"
#define DUE_BY_NOW(rows, now)                                                                      \
  "SELECT id FROM (" rows " < 0 ORDER BY available_at LIMIT ?3) UNION ALL SELECT id FROM (" rows   \
  " > 0 AND available_at <= " now " ORDER BY available_at LIMIT ?3) LIMIT ?3"
/* Keyless waiting rows (?1 now). */
#define FREE_ROWS                                                                                  \
  "SELECT id FROM outbox INDEXED BY outbox_keyless WHERE key IS NULL AND"                          \
  " status = 'pending' AND available_at"
/* ?1 now, ?2 host, ?3 max: rows whose lease lapsed, in id order. */
#define LAPSED_SQL(where)                                                                          \
  "SELECT o.id FROM outbox o" LEASED_ROWS " WHERE" where LAPSED " ORDER BY o.id LIMIT ?3"

/* The head of the first key (after ?1): the first entry of the key index. */
#define HEAD_SQL(after)                                                                            \
  "SELECT key, id, status, available_at, locked_by, locked_until, topic"                           \
  " FROM outbox INDEXED BY outbox_key_head" KEY_HEAD_WHERE after " ORDER BY key, id LIMIT 1"

#define FENCE " WHERE id = ?1 AND locked_by = ?2 AND status = 'processing'"
/* ?2 settled before (ms since the epoch), ?3 rows at most: the oldest rows of a status. */
#define PRUNE_SQL(status)                                                                          \
  "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox INDEXED BY outbox_settled"                \
  " WHERE status IN ('done', 'dead') AND status = '" status "' AND available_at < ?2"              \
  " ORDER BY available_at LIMIT ?3)"
/* Now in ms since the epoch, as SQL: a done or dead row's available_at (retention). */
#define NOW_MS " CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
#define UNLOCK " locked_by = NULL, locked_until = NULL"

/* Claims by topic. A topic range is ?1 <= topic < ?2 (?2 a blob when unbounded: a
 * blob sorts after every text); the next topic after t is t "\x01" on. */
#define NEXT_TOPIC(index, where)                                                                   \
  "SELECT topic FROM outbox INDEXED BY " index where " AND topic >= ?1 AND topic < ?2"             \
  " ORDER BY topic LIMIT 1"
/* ?1 topic, ?2 now, ?3 max: the due rows of one topic in id order. */
#define TOPIC_ROWS(index, where)                                                                   \
  "SELECT id FROM outbox INDEXED BY " index where " AND topic = ?1 AND available_at <= ?2"         \
  " ORDER BY id LIMIT ?3"
/* The same for keyless rows, off their per-topic due-time index, read as the keyless
 * claim reads all topics (DUE_AT_ONCE, then DUE_BY_NOW), in one statement. */
#define TOPIC_FREE_ROWS                                                                            \
  "SELECT id FROM outbox INDEXED BY outbox_topic_free" TOPIC_FREE_WHERE " AND topic = ?1 AND"      \
  " available_at"
#define TOPIC_FREE_SQL                                                                             \
  "SELECT id FROM (" DUE_AT_ONCE(TOPIC_FREE_ROWS) ") UNION ALL SELECT id FROM ("                   \
  DUE_BY_NOW(TOPIC_FREE_ROWS, "?2") ") LIMIT ?3"

/* ?1 JSON array of ids, ?2 host: the acked rows still leased to this host. */
#define ACK_DELETE_SQL                                                                             \
  "DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?1))"                               \
  " AND locked_by = ?2 AND status = 'processing'"

/* Statements that may write several rows say OR FAIL: a failure keeps the rows already
 * written instead of undoing them, so SQLite opens no statement journal for them (the
 * surrounding transaction is rolled back as a whole on error anyway). */
static const char *const sql_text[ST_COUNT] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_SUSPECT] = "SELECT o.id FROM outbox o" LEASED_ROWS " WHERE" SUSPECT HEAD_OF_KEY
                   " ORDER BY o.id LIMIT 1",
    [ST_SUSPECT_ANY] =
        "SELECT o.id FROM outbox o" LEASED_ROWS " WHERE" SUSPECT " ORDER BY o.id LIMIT 1",
    [ST_CAND_FREE] = DUE_AT_ONCE(FREE_ROWS),
    [ST_DUE_FREE] = DUE_BY_NOW(FREE_ROWS, "?1"),
    [ST_CAND_ANY] = CAND_SQL("", ""),
    [ST_LAPSED_FREE] = LAPSED_SQL(" o.key IS NULL AND"),
    [ST_LAPSED_ANY] = LAPSED_SQL(""),
    [ST_FIRST_HEAD] = HEAD_SQL(""),
    [ST_NEXT_HEAD] = HEAD_SQL(" AND key > ?1"),
    /* ?1 key, ?2 head id, ?3 now, ?4 max: the events behind a head, 1 when due. */
    [ST_FOLLOWERS] = "SELECT id, status = 'pending' AND available_at <= ?3, topic"
                     " FROM outbox INDEXED BY outbox_key_head" KEY_HEAD_WHERE
                     " AND key = ?1 AND id > ?2 ORDER BY key, id LIMIT ?4",
    /* ?1 JSON array of ids, ?2 host, ?3 locked_until. A row taken over from a lapsed
     * lease (still 'processing') counts the stopped run. One statement per claim. */
    [ST_TAKE] = "UPDATE OR FAIL outbox SET status = 'processing', locked_by = ?2,"
                " locked_until = ?3, attempts = attempts + (status = 'processing'),"
                " last_error = CASE WHEN status = 'processing'"
                " THEN '" STORE_LAPSE_ERROR " (attempt ' || (attempts + 1) || ')'"
                " ELSE last_error END WHERE id IN (SELECT value FROM json_each(?1))",
    /* ?1 the same array: the rows just taken, read in the same transaction (a
     * RETURNING clause would copy each row, payload and all, into a temporary table
     * first: 2*10^5 events at batch 1000, ~10% of a claim). */
    [ST_TAKEN] = "SELECT o.id, o.topic, o.key, o.payload, o.headers, o.attempts, o.created_at"
                 " FROM json_each(?1) j JOIN outbox o ON o.id = j.value",
    /* ?1 JSON array of ids, ?2 host. Returns the ids written. */
    [ST_ACK_DELETE] = ACK_DELETE_SQL " RETURNING id",
    /* The same, when no ack has follow-ups: the count written says whether any was
     * fenced out (RETURNING gathers its rows in a temporary table: ~8% of a claim
     * and its acks). */
    [ST_ACK_GONE] = ACK_DELETE_SQL,
    [ST_ACK_DONE] =
        "UPDATE OR FAIL outbox SET status = 'done', attempts = attempts + 1,"
        " available_at =" NOW_MS "," UNLOCK " WHERE id IN (SELECT value FROM json_each(?1))"
        " AND locked_by = ?2 AND status = 'processing' RETURNING id",
    [ST_FAIL] = "UPDATE outbox SET status = 'pending', attempts = attempts + 1,"
                " available_at = ?3, last_error = ?4," UNLOCK FENCE,
    [ST_DEAD] = "UPDATE outbox SET status = 'dead', attempts = attempts + ?3,"
                " last_error = ?4, available_at =" NOW_MS "," UNLOCK FENCE,
    [ST_RELEASE] = "UPDATE outbox SET status = 'pending'," UNLOCK FENCE,
    [ST_DEFER] = "UPDATE outbox SET status = 'pending', available_at = ?3," UNLOCK FENCE,
    [ST_RENEW] = "UPDATE outbox SET locked_until = ?3" FENCE,
    /* The next moment something not claimable now becomes claimable: a retry
     * coming due, or another host's lease running out. ?1 now, ?2 host. */
    [ST_NEXT_DUE] = "SELECT min(t) FROM (SELECT min(available_at) AS t"
                    " FROM outbox INDEXED BY outbox_due"
                    " WHERE status = 'pending' AND available_at > 0 AND available_at > ?1"
                    " UNION ALL SELECT min(locked_until) FROM outbox INDEXED BY outbox_taken"
                    " WHERE" TAKEN " AND status = 'processing' AND locked_by IS NOT ?2"
                    " AND locked_until >= ?1)",
    [ST_DATA_VERSION] = "PRAGMA data_version",
    [ST_INSERT] = "INSERT INTO outbox (topic, key, payload, headers, available_at)"
                  " VALUES (?1, ?2, ?3, ?4, ?5)",
    [ST_REQUEUE_DEAD] = "UPDATE OR FAIL outbox INDEXED BY outbox_taken SET status = 'pending',"
                        " attempts = 0, available_at = 0," UNLOCK " WHERE" TAKEN
                        " AND status = 'dead'"
                        " AND (?1 IS NULL OR topic = ?1"
                        " OR (?2 AND substr(topic, 1, length(?1)) = ?1))",
    [ST_REQUEUE_ID] =
        "UPDATE outbox SET status = 'pending', attempts = 0,"
        " available_at = 0," UNLOCK " WHERE id = ?1 AND status IN ('dead', 'pending', 'done')",
    /* every row, then the taken ones by status: one statement, one snapshot */
    [ST_COUNTS] = "SELECT NULL, count(*) FROM outbox UNION ALL SELECT status, count(*)"
                  " FROM outbox INDEXED BY outbox_taken" TAKEN_WHERE " GROUP BY status",
    /* the first waiting row in id order: the oldest but for rows given a created_at */
    [ST_OLDEST] = "SELECT created_at FROM outbox WHERE status = 'pending' ORDER BY id LIMIT 1",
    [ST_LIST_DEAD] = "SELECT id, topic, attempts, last_error FROM outbox INDEXED BY outbox_taken"
                     " WHERE" TAKEN " AND status = 'dead' ORDER BY id DESC LIMIT ?1",
    [ST_TOPIC_COUNTS] = "SELECT topic, sum(status = 'pending'), sum(status = 'processing'),"
                        " sum(status = 'dead') FROM outbox"
                        " WHERE status IN ('pending', 'processing', 'dead')"
                        " GROUP BY topic ORDER BY topic",
    [ST_PAUSED] = "SELECT pattern FROM outbox_paused ORDER BY pattern",
    [ST_PRUNE_DONE] = PRUNE_SQL("done"),
    [ST_PRUNE_DEAD] = PRUNE_SQL("dead"),
    [ST_F_SUSPECT] = "SELECT o.id, o.topic FROM outbox o" LEASED_ROWS " WHERE" SUSPECT HEAD_OF_KEY
                     " ORDER BY o.id",
    [ST_F_SUSPECT_ANY] =
        "SELECT o.id, o.topic FROM outbox o" LEASED_ROWS " WHERE" SUSPECT " ORDER BY o.id",
    [ST_F_LAPSED_FREE] = "SELECT o.id, o.topic FROM outbox o" LEASED_ROWS
                         " WHERE o.key IS NULL AND" LAPSED " ORDER BY o.id",
    [ST_F_LAPSED_ANY] =
        "SELECT o.id, o.topic FROM outbox o" LEASED_ROWS " WHERE" LAPSED " ORDER BY o.id",
    [ST_F_TOPIC_FREE] = NEXT_TOPIC("outbox_topic_free", TOPIC_FREE_WHERE),
    [ST_F_ROWS_FREE] = TOPIC_FREE_SQL,
    [ST_F_TOPIC_ANY] = NEXT_TOPIC("outbox_topic_pending", " WHERE status = 'pending'"),
    [ST_F_ROWS_ANY] = TOPIC_ROWS("outbox_topic_pending", " WHERE status = 'pending'"),
};

/* ------------------------------------------------------------ the store */

typedef struct sq {
  store_t base;
  sqlite3 *db;
  char *path;
  char *wal_path;
  char *host;
  sqlite3_stmt *st[ST_COUNT];
  settles_t set; /* buffered settlements */
  idset_t out;
  int64_t data_version;
  char *cursor;    /* the key after which the next key scan starts, or NULL */
  int64_t due_at;  /* when due_timer fires, 0 when idle */
  int failing;     /* failed transactions in a row */
  int checks;      /* looks at data_version since the last file event */
  int dispatching; /* opened with a host id: claims, timers, watchers */
  int closing;
  dev_t dev; /* the database file we opened, to notice it being removed or replaced */
  ino_t ino;
  int gone;               /* it was: no more claims */
  int64_t busy_logged_ms; /* when "database busy" was last logged */
  int busy_quiet;         /* busy streaks since then, not logged */
  int streak_logged;      /* the current failure streak was logged */
  uv_timer_t flush_timer, lease_timer, poll_timer, due_timer, check_timer, kick_timer, prune_timer;
  int prune_batch; /* rows per retention batch (adapts to PRUNE_BUDGET_MS) */
  int prune_dead;  /* the batch prunes dead rows (else done rows) */
  uv_fs_event_t wal_watch, db_watch;
  checkpoint_t ckpt; /* a dispatching host checkpoints off the loop thread */
  int ckpt_on;
  int unwatched;    /* the watches are stopped while claims come back full */
  int watch_failed; /* a watch could not start (logged once) */
  int nopen; /* handles not yet closed */
  void (*close_cb)(void *arg);
  void *close_arg;
} sq_t;

/* -------------------------------------------------------------- helpers */

/* Does this host claim `topic` now (what it handles, less paused patterns)? */
static int read_paused(sq_t *s);
static void watch_while_idle(sq_t *s, int busy);

static int claims_topic(const sq_t *s, const char *topic) {
  return s->base.claim_all || (topic && topics_match(&s->base.claim, topic));
}

static int map_rc(int rc) {
  switch (rc & 0xff) {
  case SQLITE_OK:
  case SQLITE_DONE:
  case SQLITE_ROW: return 0;
  case SQLITE_BUSY:
  case SQLITE_LOCKED: return -EAGAIN;
  case SQLITE_NOMEM: return -ENOMEM;
  case SQLITE_READONLY:
  case SQLITE_PERM:
  case SQLITE_AUTH: return -EACCES;
  case SQLITE_FULL: return -ENOSPC;
  case SQLITE_CANTOPEN: return -ENOENT;
  case SQLITE_NOTADB:
  case SQLITE_CORRUPT: return -EINVAL;
  default: return -EIO;
  }
}

/* Records the connection's error in s->base.err; a dispatching store also logs
 * it, once per run of failures (the next success says so). A busy database is
 * ordinary when several processes share the file (one writer at a time): it is
 * logged at most once per BUSY_LOG_MS, with the streaks since. Returns a code. */
static int db_error(sq_t *s, int rc, const char *what) {
  snprintf(s->base.err, sizeof s->base.err, "--db %s: %s: %s", s->path, what,
           sqlite3_errmsg(s->db));
  if (!s->dispatching || s->failing++) return map_rc(rc);
  s->streak_logged = 1;
  if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED) {
    int64_t now = store_now_ms();
    if (s->busy_logged_ms && now - s->busy_logged_ms < BUSY_LOG_MS) {
      s->busy_quiet++;
      s->streak_logged = 0;
      return map_rc(rc);
    }
    log_at(LOG_WARN, "database busy, will retry", KS("db", s->path), KS("during", what),
           KS("why", "another process is writing to this file; SQLite has one writer at a "
                     "time, so hosts sharing a file take turns"),
           KI("busy_since_last_said", s->busy_quiet));
    s->busy_logged_ms = now;
    s->busy_quiet = 0;
  } else {
    log_at(LOG_ERROR, "database error, will retry", KS("db", s->path), KS("during", what),
           KS("error", sqlite3_errmsg(s->db)));
  }
  return map_rc(rc);
}

/* After any successful transaction. */
static void db_ok(sq_t *s) {
  if (s->failing && s->dispatching && s->streak_logged)
    log_at(LOG_INFO, "database usable again", KS("db", s->path), KI("failures", s->failing));
  s->failing = 0;
}

/* 1 when the database file we opened is no longer at its path (removed, or replaced
 * by another file): logged once; the host then claims nothing more. */
static int file_gone(sq_t *s) {
  struct stat st;
  if (s->gone) goto gone;
  if (!s->ino) return 0; /* never known */
  if (stat(s->path, &st) == 0 && st.st_dev == s->dev && st.st_ino == s->ino) return 0;
  if (stat(s->path, &st) != 0 && errno != ENOENT) return 0; /* cannot tell: go on */
  s->gone = 1;
  log_at(LOG_ERROR, "database file removed or replaced: this host no longer serves it",
         KS("db", s->path), KS("fix", "restart outboxd (after outboxd init if it was removed)"));
gone:
  snprintf(s->base.err, sizeof s->base.err, "--db %s: the database file was removed or replaced",
           s->path);
  return 1;
}

/* Runs a statement that returns no rows; resets it. Returns an SQLite code. */
static int run(sq_t *s, int which) {
  sqlite3_stmt *st = s->st[which];
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  return rc == SQLITE_ROW ? SQLITE_DONE : rc;
}

static int begin(sq_t *s) { return run(s, ST_BEGIN); }

static void rollback(sq_t *s) {
  if (!sqlite3_get_autocommit(s->db)) run(s, ST_ROLLBACK);
}

static void bind_host(sq_t *s, sqlite3_stmt *st) {
  sqlite3_bind_text(st, 2, s->host, -1, SQLITE_STATIC);
}

static void timer_after(uv_timer_t *t, uv_timer_cb cb, int64_t ms) {
  uv_timer_start(t, cb, ms > 0 ? (uint64_t)ms : 0, 0);
}

/* Only from loop callbacks, never from inside a store call. */
static void wake(sq_t *s) {
  if (s->base.opts.wake && !s->closing) s->base.opts.wake(s->base.opts.wake_arg);
}

/* Resets a statement and drops its bindings (they may point at freed text). */
static void done_stmt(sqlite3_stmt *st) {
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
}

static void on_due(uv_timer_t *t) {
  sq_t *s = t->data;
  s->due_at = 0;
  wake(s);
}

static void on_kick(uv_timer_t *t) { wake(t->data); }

/* Makes sure a wake-up happens no later than `at` (ms since the epoch). */
static void arm_due(sq_t *s, int64_t at) {
  if (!s->dispatching || s->closing) return;
  if (s->due_at && s->due_at <= at) return;
  s->due_at = at;
  uv_update_time(s->base.loop); /* the timer counts from the loop's cached time */
  timer_after(&s->due_timer, on_due, at - store_now_ms() + 1); /* +1: ms truncation */
}

/* Arms the due timer for the next retry or foreign lease expiry, if any. */
static void arm_next_due(sq_t *s, int64_t now) {
  sqlite3_stmt *st = s->st[ST_NEXT_DUE];
  sqlite3_bind_int64(st, 1, now);
  bind_host(s, st);
  if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
    arm_due(s, sqlite3_column_int64(st, 0));
  done_stmt(st);
}

/* ---------------------------------------------------------- settlements */

/* The statement that writes settlement x (acks take a JSON array of ids in ?1). */
static int settle_stmt(const sq_t *s, const settle_t *x) {
  return x->kind == STORE_ACK     ? (s->base.opts.keep_done_ms ? ST_ACK_DONE : ST_ACK_DELETE)
         : x->kind == STORE_FAIL  ? ST_FAIL
         : x->kind == STORE_DEAD  ? ST_DEAD
         : x->kind == STORE_DEFER ? ST_DEFER
                                  : ST_RELEASE;
}

static void bind_settle(sq_t *s, sqlite3_stmt *st, const settle_t *x) {
  if (x->kind == STORE_ACK) {
    char one[32];
    int n = snprintf(one, sizeof one, "[%" PRId64 "]", x->id);
    sqlite3_bind_text(st, 1, one, n, SQLITE_TRANSIENT);
  } else {
    sqlite3_bind_int64(st, 1, x->id);
  }
  bind_host(s, st);
  if (x->kind == STORE_FAIL || x->kind == STORE_DEAD) {
    sqlite3_bind_int64(st, 3, x->arg);
    sqlite3_bind_text(st, 4, x->err, -1, SQLITE_STATIC); /* NULL binds NULL */
  }
  if (x->kind == STORE_DEFER) sqlite3_bind_int64(st, 3, x->arg);
}

static void fenced_out(sq_t *s, int64_t id, int kind) {
  log_at(LOG_WARN, "settlement fenced out: the lease was lost", KI("id", id),
         KS("outcome", settle_kind_name(kind)), KS("db", s->path));
}

/* Inserts one new event with statement st (ST_INSERT's text). Returns an SQLite code. */
static int insert_event(sqlite3_stmt *st, const store_event_t *ev) {
  sqlite3_bind_text(st, 1, ev->topic, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, ev->key, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 3, ev->payload, (int)ev->payload_len, SQLITE_STATIC);
  sqlite3_bind_text(st, 4, ev->headers, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 5, store_clamp_time(ev->available_at));
  int rc = sqlite3_step(st);
  done_stmt(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Inserts every event of a list linked by `next`. */
static int insert_list(sqlite3_stmt *st, const store_event_t *list) {
  int rc = SQLITE_OK;
  for (const store_event_t *ev = list; ev && rc == SQLITE_OK; ev = ev->next)
    rc = insert_event(st, ev);
  return rc;
}

/* A failure, dead-letter or release: one row. */
static int write_one(sq_t *s, const settle_t *x) {
  sqlite3_stmt *st = s->st[settle_stmt(s, x)];
  bind_settle(s, st, x);
  int rc = sqlite3_step(st);
  done_stmt(st);
  if (rc != SQLITE_DONE) return rc;
  if (sqlite3_changes(s->db) == 0) fenced_out(s, x->id, x->kind);
  return SQLITE_OK;
}

/* A JSON array of ids, the ?1 of a statement that reads it with json_each. */
typedef struct idlist {
  char *text;
  size_t len;
} idlist_t;

/* An empty list with room for n ids; SQLITE_NOMEM when there is none. */
static int idlist_open(idlist_t *l, int n) {
  l->len = 0;
  l->text = malloc((size_t)n * 21 + 3); /* "[", n of "-9223372036854775808,", "]" */
  if (!l->text) return SQLITE_NOMEM;
  l->text[l->len++] = '[';
  return SQLITE_OK;
}

static void idlist_add(idlist_t *l, int64_t id) {
  if (l->len > 1) l->text[l->len++] = ',';
  l->len += store_put_int(l->text + l->len, id);
}

static void idlist_close(idlist_t *l) { l->text[l->len++] = ']'; }

/* After ST_ACK_GONE wrote `written` of nacks acks (ids: their JSON array): the rows
 * still there were fenced out (another host holds them); the rest of the shortfall
 * had been settled by another host already. Logs them. Returns an SQLite code. */
static int report_fenced(sq_t *s, const idlist_t *ids, int nacks, int written) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(
      s->db, "SELECT id FROM outbox WHERE id IN (SELECT value FROM json_each(?1))", -1, &st, NULL);
  if (rc != SQLITE_OK) return rc;
  sqlite3_bind_text(st, 1, ids->text, (int)ids->len, SQLITE_STATIC);
  int held = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    fenced_out(s, sqlite3_column_int64(st, 0), STORE_ACK);
    held++;
  }
  sqlite3_finalize(st);
  if (nacks - written > held)
    log_at(LOG_WARN, "settlements fenced out: another host had settled the events",
           KI("acks", nacks - written - held), KS("db", s->path));
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Every buffered ack in one statement: the ids go in as a JSON array. When some have
 * follow-ups (or done rows are kept), the rows written come back, and an id missing
 * from them was fenced out; else the count written tells. */
static int write_acks(sq_t *s, int nacks) {
  idlist_t ids;
  idset_t got = {0};
  int follows = 0;
  if (idlist_open(&ids, nacks) != SQLITE_OK) return SQLITE_NOMEM;
  for (int i = 0; i < s->set.n; i++)
    if (s->set.v[i].kind == STORE_ACK) {
      idlist_add(&ids, s->set.v[i].id);
      follows |= s->set.v[i].follow != NULL;
    }
  idlist_close(&ids);
  int gone = !follows && !s->base.opts.keep_done_ms;
  sqlite3_stmt *st =
      s->st[gone ? ST_ACK_GONE : s->base.opts.keep_done_ms ? ST_ACK_DONE : ST_ACK_DELETE];
  sqlite3_bind_text(st, 1, ids.text, (int)ids.len, SQLITE_STATIC);
  bind_host(s, st);
  int rc, oom = 0;
  if (gone) {
    rc = sqlite3_step(st);
    done_stmt(st);
    int written = sqlite3_changes(s->db);
    if (rc == SQLITE_DONE) rc = written < nacks ? report_fenced(s, &ids, nacks, written) : SQLITE_OK;
    free(ids.text);
    return rc;
  }
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) oom |= idset_add(&got, sqlite3_column_int64(st, 0));
  done_stmt(st);
  free(ids.text);
  if (rc == SQLITE_DONE && oom) rc = SQLITE_NOMEM; /* which acks were written is unknown */
  /* the follow-ups of the acks written, in the same transaction; none for the fenced */
  for (int i = 0; i < s->set.n && rc == SQLITE_DONE; i++) {
    const settle_t *x = &s->set.v[i];
    if (x->kind != STORE_ACK) continue;
    if (!idset_has(&got, x->id))
      fenced_out(s, x->id, STORE_ACK);
    else if (x->follow)
      rc = insert_list(s->st[ST_INSERT], x->follow) == SQLITE_OK ? SQLITE_DONE : SQLITE_ERROR;
  }
  idset_free(&got);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Writes every buffered settlement inside the caller's transaction. */
static int write_settlements(sq_t *s) {
  int nacks = 0;
  for (int i = 0; i < s->set.n; i++) {
    if (s->set.v[i].kind == STORE_ACK) {
      nacks++;
      continue;
    }
    int rc = s->set.v[i].kind == SETTLE_EMIT ? insert_list(s->st[ST_INSERT], s->set.v[i].follow)
                                             : write_one(s, &s->set.v[i]);
    if (rc != SQLITE_OK) return rc;
  }
  return nacks ? write_acks(s, nacks) : SQLITE_OK;
}

/* After the commit that wrote them: retries and scheduled new events get a timer,
 * the buffer empties. */
static void settlements_committed(sq_t *s) {
  int64_t due;
  if (settles_due(&s->set, &due)) arm_due(s, due);
  settles_clear(&s->set);
  db_ok(s);
}

/* Writes buffered settlements in their own transaction. Returns the number
 * written, or a negative code with the settlements still buffered. */
static int flush_now(sq_t *s) {
  int n = s->set.n;
  if (!n) return 0;
  int rc = begin(s);
  if (rc != SQLITE_DONE) goto fail;
  rc = write_settlements(s);
  if (rc != SQLITE_OK) goto fail;
  rc = run(s, ST_COMMIT);
  if (rc != SQLITE_DONE) goto fail;
  settlements_committed(s);
  return n;
fail:;
  int code = db_error(s, rc, "writing settlements");
  rollback(s);
  return code;
}

static void on_flush(uv_timer_t *t) {
  sq_t *s = t->data;
  int n = flush_now(s);
  if (n < 0) timer_after(&s->flush_timer, on_flush, RETRY_MS);
  if (n > 0) wake(s); /* a settled head may unblock its key */
}

/* Flushes now and defers the wake-up to the loop (we are inside a store call). */
static int flush_in_call(sq_t *s) {
  uv_timer_stop(&s->flush_timer);
  int n = flush_now(s);
  if (n < 0) {
    timer_after(&s->flush_timer, on_flush, RETRY_MS);
    return n;
  }
  if (n > 0 && s->dispatching && !s->closing) timer_after(&s->kick_timer, on_kick, 0);
  return 0;
}

/* Appends settlement x to the buffer (what it owns taken over) and arms the flush. */
static void buffer(sq_t *s, settle_t *x) {
  if (settles_add(&s->set, x)) return;
  /* A full batch is written on the next loop pass, unless a claim comes first and
   * writes it in its own transaction (one commit instead of two). */
  int batch = s->base.opts.batch > 0 ? s->base.opts.batch : 1;
  if (s->set.n >= batch)
    timer_after(&s->flush_timer, on_flush, 0);
  else if (!uv_is_active((uv_handle_t *)&s->flush_timer))
    timer_after(&s->flush_timer, on_flush, FLUSH_DELAY_MS);
}

static void sq_settle(store_t *b, store_event_t *ev, int kind, int64_t arg, const char *err) {
  sq_t *s = (sq_t *)b;
  idset_del(&s->out, ev->id);
  settle_t x = settle_take(ev, kind, arg, err);
  buffer(s, &x);
}

static void sq_push(store_t *b, store_event_t *list) {
  sq_t *s = (sq_t *)b;
  if (!s->dispatching) {
    store_event_list_free(list);
    return;
  }
  settle_t x = settle_emit(list);
  buffer(s, &x);
}

static int sq_flush(store_t *b) { return flush_in_call((sq_t *)b); }

static int sq_exhausted(store_t *b) { return 0; }

/* ---------------------------------------------------------------- claims */

/* A row a claim may take: its id, whether its lease lapsed, and for a key's head the
 * key (owned) and its place in the key scan. */
typedef struct cand {
  int64_t id;
  int lapsed;
  int visit; /* order in the key scan; -1 for keyless rows */
  char *key;
} cand_t;

typedef struct claim {
  int64_t now;
  int max;
  cand_t *c; /* picked rows, id order once merged */
  int nc;
  cand_t *heads; /* claimable key heads, in key scan order */
  int nheads;
  char *last_key; /* the last key the scan visited */
} claim_t;

static void cand_free(cand_t *c, int n) {
  for (int i = 0; i < n; i++) free(c[i].key);
}

static void claim_done(claim_t *cl) {
  cand_free(cl->c, cl->nc);
  cand_free(cl->heads, cl->nheads);
  free(cl->c);
  free(cl->heads);
  free(cl->last_key);
}

static int by_cand_id(const void *a, const void *b) {
  int64_t x = ((const cand_t *)a)->id, y = ((const cand_t *)b)->id;
  return (x > y) - (x < y);
}

/* Appends the ids of statement `which` (?1 now, ?2 host, ?3 max) to cl->c. */
static int read_ids(sq_t *s, int which, int lapsed, claim_t *cl) {
  sqlite3_stmt *st = s->st[which];
  sqlite3_bind_int64(st, 1, cl->now);
  if (lapsed) bind_host(s, st);
  sqlite3_bind_int(st, 3, cl->max);
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW)
    cl->c[cl->nc++] = (cand_t){sqlite3_column_int64(st, 0), lapsed, -1, NULL};
  done_stmt(st);
  return rc;
}

/* Keeps the oldest max candidates (keyless: nothing to free). */
static void keep_oldest(claim_t *cl) {
  if (cl->nc <= cl->max) return;
  qsort(cl->c, (size_t)cl->nc, sizeof *cl->c, by_cand_id);
  cl->nc = cl->max;
}

/* Claimable rows without the key rule (keyless ones only with per-key order): due
 * pending rows and lapsed leases, the oldest max of them. */
static int read_cands(sq_t *s, claim_t *cl) {
  int keyed = s->base.opts.ordering_key;
  int rc = read_ids(s, keyed ? ST_CAND_FREE : ST_CAND_ANY, 0, cl);
  if (rc == SQLITE_DONE && keyed) rc = read_ids(s, ST_DUE_FREE, 0, cl);
  keep_oldest(cl);
  if (rc == SQLITE_DONE) rc = read_ids(s, keyed ? ST_LAPSED_FREE : ST_LAPSED_ANY, 1, cl);
  keep_oldest(cl);
  return rc;
}

/* Whether the head row under `st` (HEAD_SQL columns) can be claimed; *lapsed is set. */
static int head_claimable(sq_t *s, sqlite3_stmt *st, int64_t now, int *lapsed) {
  const char *status = (const char *)sqlite3_column_text(st, 2);
  *lapsed = 0;
  if (!status) return 0;
  if (strcmp(status, "pending") == 0) return sqlite3_column_int64(st, 3) <= now;
  if (strcmp(status, "processing") != 0 || sqlite3_column_type(st, 5) == SQLITE_NULL ||
      sqlite3_column_int64(st, 5) >= now)
    return 0;
  const char *by = (const char *)sqlite3_column_text(st, 4);
  *lapsed = 1;
  return !by || strcmp(by, s->host) != 0;
}

/* The skip scan: one index seek per key with live rows, in key order from the key
 * after the last claim's, wrapping around once; collects up to max claimable heads.
 * Its cost follows the number of keys, never the backlog behind them. A host that
 * claims only some topics passes over a key whose head is of a topic it does not
 * claim (or runs elsewhere): it takes none of that key's later events until the head
 * has settled, wherever it ran, so per-key order holds across hosts. */
static int scan_heads(sq_t *s, claim_t *cl) {
  char *at = s->cursor ? strdup(s->cursor) : NULL;
  int wrapped = !s->cursor, rc = SQLITE_DONE;
  if (s->cursor && !at) return SQLITE_NOMEM;
  while (cl->nheads < cl->max) {
    sqlite3_stmt *st = s->st[at ? ST_NEXT_HEAD : ST_FIRST_HEAD];
    if (at) sqlite3_bind_text(st, 1, at, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
      done_stmt(st);
      if (rc != SQLITE_DONE || wrapped) break;
      wrapped = 1; /* past the last key: once more from the first */
      free(at);
      at = NULL;
      continue;
    }
    const char *key = (const char *)sqlite3_column_text(st, 0);
    if (!key || (wrapped && s->cursor && strcmp(key, s->cursor) > 0)) { /* lapped */
      done_stmt(st);
      rc = SQLITE_DONE;
      break;
    }
    int lapsed, ok = head_claimable(s, st, cl->now, &lapsed) &&
                     claims_topic(s, (const char *)sqlite3_column_text(st, 6));
    int64_t id = sqlite3_column_int64(st, 1);
    char *copy = strdup(key);
    done_stmt(st);
    free(at);
    at = copy;
    if (!copy) {
      rc = SQLITE_NOMEM;
      break;
    }
    free(cl->last_key);
    cl->last_key = strdup(copy);
    if (!ok) continue;
    char *k = strdup(copy);
    if (!k) {
      rc = SQLITE_NOMEM;
      break;
    }
    cl->heads[cl->nheads] = (cand_t){id, lapsed, cl->nheads, k};
    cl->nheads++;
  }
  free(at);
  return rc == SQLITE_ROW ? SQLITE_DONE : rc;
}

/* Keyless rows and key heads merged by id, the oldest max kept; the key cursor moves
 * past the last head kept in scan order, so heads dropped now come first next time. */
static void merge_heads(sq_t *s, claim_t *cl) {
  int nh = cl->nheads, i = cl->nc, first_dropped = nh;
  for (int h = 0; h < nh; h++) cl->c[i++] = cl->heads[h];
  cl->nheads = 0; /* the keys now belong to cl->c */
  qsort(cl->c, (size_t)i, sizeof *cl->c, by_cand_id);
  for (int k = cl->max; k < i; k++)
    if (cl->c[k].visit >= 0 && cl->c[k].visit < first_dropped) first_dropped = cl->c[k].visit;
  if (i > cl->max) cand_free(cl->c + cl->max, i - cl->max);
  cl->nc = i < cl->max ? i : cl->max;
  const char *next = first_dropped == nh ? cl->last_key : NULL;
  for (int k = 0; k < cl->nc && first_dropped > 0 && first_dropped < nh; k++)
    if (cl->c[k].visit == first_dropped - 1) next = cl->c[k].key;
  char *copy = next ? strdup(next) : NULL;
  if (!copy) return; /* the cursor stays */
  free(s->cursor);
  s->cursor = copy;
}

/* Adds the due events behind each picked head (a run), up to max in all: the budget
 * left after the heads is shared out evenly. A run stops at the first event not due. */
static int add_runs(sq_t *s, claim_t *cl) {
  int keyed = 0, budget = cl->max - cl->nc, n = cl->nc;
  for (int i = 0; i < n; i++) keyed += cl->c[i].key != NULL;
  if (!keyed || budget <= 0) return SQLITE_OK;
  int each = budget / keyed, extra = budget % keyed, seen = 0;
  sqlite3_stmt *st = s->st[ST_FOLLOWERS];
  for (int i = 0; i < n && cl->nc < cl->max; i++) {
    if (!cl->c[i].key || cl->c[i].lapsed) continue;
    int cap = each + (seen++ < extra);
    if (cap <= 0) continue;
    sqlite3_bind_text(st, 1, cl->c[i].key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, cl->c[i].id);
    sqlite3_bind_int64(st, 3, cl->now);
    sqlite3_bind_int(st, 4, cap);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && sqlite3_column_int(st, 1) &&
           claims_topic(s, (const char *)sqlite3_column_text(st, 2)))
      cl->c[cl->nc++] = (cand_t){sqlite3_column_int64(st, 0), 0, -1, NULL};
    done_stmt(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) return rc;
  }
  return SQLITE_OK;
}

/* ------------------------------------------------------- claims by topic */

static void bind_range(sqlite3_stmt *st, int i, const char *lo, const topics_range_t *r) {
  sqlite3_bind_text(st, i, lo, -1, SQLITE_STATIC);
  if (r->hi)
    sqlite3_bind_text(st, i + 1, r->hi, -1, SQLITE_STATIC);
  else
    sqlite3_bind_blob(st, i + 1, "\xff", 1, SQLITE_STATIC); /* after every text */
}

/* Appends the rows of `which` (id, topic; ?1 now, ?2 host) in claimable topics, up to
 * max: lapsed leases or suspects, which are few, so their topics are tested here. */
static int read_filtered(sq_t *s, int which, claim_t *cl, int max) {
  sqlite3_stmt *st = s->st[which];
  sqlite3_bind_int64(st, 1, cl->now);
  bind_host(s, st);
  int rc = SQLITE_DONE, got = 0;
  while (got < max && (rc = sqlite3_step(st)) == SQLITE_ROW)
    if (claims_topic(s, (const char *)sqlite3_column_text(st, 1))) {
      cl->c[cl->nc++] = (cand_t){sqlite3_column_int64(st, 0), 1, -1, NULL};
      got++;
    }
  if (got == max) rc = SQLITE_DONE;
  done_stmt(st);
  return rc;
}

/* The due waiting rows (keyless ones under per-key order) of every claimable topic:
 * one seek per topic in each range and the oldest max of each, so rows of topics
 * this host does not claim are never read. */
static int read_topic_rows(sq_t *s, claim_t *cl) {
  int keyed = s->base.opts.ordering_key, rc = SQLITE_DONE;
  sqlite3_stmt *next = s->st[keyed ? ST_F_TOPIC_FREE : ST_F_TOPIC_ANY];
  sqlite3_stmt *rows = s->st[keyed ? ST_F_ROWS_FREE : ST_F_ROWS_ANY];
  char *at = NULL;
  for (int r = 0; r < s->base.claim.n && rc == SQLITE_DONE; r++) {
    const topics_range_t *range = &s->base.claim.v[r];
    free(at);
    if (!(at = strdup(range->lo))) return SQLITE_NOMEM;
    for (;;) {
      bind_range(next, 1, at, range);
      rc = sqlite3_step(next);
      if (rc != SQLITE_ROW) break;
      const char *t = (const char *)sqlite3_column_text(next, 0);
      size_t len = t ? strlen(t) : 0;
      char *topic = malloc(len + 2);
      if (!topic) {
        rc = SQLITE_NOMEM;
        break;
      }
      memcpy(topic, t ? t : "", len + 1);
      done_stmt(next);
      sqlite3_bind_text(rows, 1, topic, -1, SQLITE_STATIC);
      sqlite3_bind_int64(rows, 2, cl->now);
      sqlite3_bind_int(rows, 3, cl->max);
      while ((rc = sqlite3_step(rows)) == SQLITE_ROW)
        cl->c[cl->nc++] = (cand_t){sqlite3_column_int64(rows, 0), 0, -1, NULL};
      done_stmt(rows);
      keep_oldest(cl);
      topic[len] = '\x01'; /* the next topic after it */
      topic[len + 1] = 0;
      free(at);
      at = topic;
      if (rc != SQLITE_DONE) break;
    }
    done_stmt(next);
  }
  free(at);
  return rc;
}

/* pick_rows for a host that claims only some topics (none at all when everything it
 * handles is paused). */
static int pick_by_topic(sq_t *s, claim_t *cl, int *lapse_kind) {
  int keyed = s->base.opts.ordering_key;
  if (s->base.claim.n == 0) return SQLITE_OK;
  int rc = read_filtered(s, keyed ? ST_F_SUSPECT : ST_F_SUSPECT_ANY, cl, 1);
  if (rc != SQLITE_DONE) return rc;
  if (cl->nc) {
    *lapse_kind = STORE_SUSPECT;
    return SQLITE_OK;
  }
  *lapse_kind = STORE_LAPSED;
  rc = read_topic_rows(s, cl);
  if (rc == SQLITE_DONE)
    rc = read_filtered(s, keyed ? ST_F_LAPSED_FREE : ST_F_LAPSED_ANY, cl, cl->max);
  if (rc != SQLITE_DONE) return rc;
  keep_oldest(cl);
  if (!keyed) return SQLITE_OK;
  rc = scan_heads(s, cl);
  if (rc != SQLITE_DONE) return rc;
  merge_heads(s, cl);
  return add_runs(s, cl);
}

static store_event_t *row_event(sqlite3_stmt *st) {
  const char *topic = (const char *)sqlite3_column_text(st, 1);
  size_t topic_len = (size_t)sqlite3_column_bytes(st, 1);
  const char *key = (const char *)sqlite3_column_text(st, 2);
  size_t key_len = (size_t)sqlite3_column_bytes(st, 2);
  const char *payload = (const char *)sqlite3_column_text(st, 3);
  size_t payload_len = (size_t)sqlite3_column_bytes(st, 3);
  const char *headers = (const char *)sqlite3_column_text(st, 4);
  size_t headers_len = (size_t)sqlite3_column_bytes(st, 4);
  store_event_t *ev =
      store_event_new(sqlite3_column_int64(st, 0), topic ? topic : "", topic_len, key, key_len,
                      payload ? payload : "", payload_len, headers, headers_len, 0);
  if (!ev) return NULL;
  ev->attempts = sqlite3_column_int(st, 5);
  ev->created_at = sqlite3_column_int64(st, 6);
  return ev;
}

/* Leases the picked rows to this host in one statement, then reads them; the events
 * go to out[] and on lease, marked `lapse_kind` when their lease had lapsed. */
static int take_rows(sq_t *s, claim_t *cl, int lapse_kind, store_event_t **out, int *got) {
  if (!cl->nc) return SQLITE_OK;
  qsort(cl->c, (size_t)cl->nc, sizeof *cl->c, by_cand_id);
  idlist_t ids;
  if (idlist_open(&ids, cl->nc) != SQLITE_OK) return SQLITE_NOMEM;
  for (int i = 0; i < cl->nc; i++) idlist_add(&ids, cl->c[i].id);
  idlist_close(&ids);
  sqlite3_stmt *st = s->st[ST_TAKE];
  int64_t lease = s->base.opts.lease_ms > 0 ? s->base.opts.lease_ms : 30000;
  sqlite3_bind_text(st, 1, ids.text, (int)ids.len, SQLITE_STATIC);
  bind_host(s, st);
  sqlite3_bind_int64(st, 3, cl->now + lease);
  int rc = sqlite3_step(st);
  done_stmt(st);
  if (rc != SQLITE_DONE) {
    free(ids.text);
    return rc;
  }
  st = s->st[ST_TAKEN];
  sqlite3_bind_text(st, 1, ids.text, (int)ids.len, SQLITE_STATIC);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW && *got < cl->max) {
    store_event_t *ev = row_event(st);
    if (!ev || idset_add(&s->out, ev->id)) {
      store_event_free(ev);
      rc = SQLITE_NOMEM;
      break;
    }
    cand_t key = {.id = ev->id};
    const cand_t *c = bsearch(&key, cl->c, (size_t)cl->nc, sizeof *cl->c, by_cand_id);
    ev->lapsed = c && c->lapsed ? lapse_kind : 0;
    out[(*got)++] = ev;
  }
  done_stmt(st);
  free(ids.text);
  return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

/* Picks what to claim: a suspect alone if there is one; else the claimable rows in id
 * order (with per-key order: keyless rows and key heads, then the runs behind the
 * heads). Returns an SQLite code; *lapse_kind says how lapsed rows are marked. */
static int pick_rows(sq_t *s, claim_t *cl, int *lapse_kind) {
  int keyed = s->base.opts.ordering_key;
  if (!s->base.claim_all) return pick_by_topic(s, cl, lapse_kind);
  sqlite3_stmt *st = s->st[keyed ? ST_SUSPECT : ST_SUSPECT_ANY];
  sqlite3_bind_int64(st, 1, cl->now);
  bind_host(s, st);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    cl->c[cl->nc++] = (cand_t){sqlite3_column_int64(st, 0), 1, -1, NULL};
    *lapse_kind = STORE_SUSPECT;
  }
  done_stmt(st);
  if (rc != SQLITE_DONE) return rc == SQLITE_ROW ? SQLITE_OK : rc;
  *lapse_kind = STORE_LAPSED;
  rc = read_cands(s, cl);
  if (rc != SQLITE_DONE || !keyed) return rc == SQLITE_DONE ? SQLITE_OK : rc;
  rc = scan_heads(s, cl);
  if (rc != SQLITE_DONE) return rc;
  merge_heads(s, cl);
  return add_runs(s, cl);
}

/* Undoes take_rows after a rollback. */
static void unclaim(sq_t *s, store_event_t **out, int got) {
  for (int i = 0; i < got; i++) {
    idset_del(&s->out, out[i]->id);
    store_event_free(out[i]);
    out[i] = NULL;
  }
}

static int by_id(const void *a, const void *b) {
  int64_t x = (*(store_event_t *const *)a)->id, y = (*(store_event_t *const *)b)->id;
  return (x > y) - (x < y);
}

/* Writes buffered settlements and claims, in one transaction. A busy database
 * returns -EAGAIN and a wake-up follows after RETRY_MS. */
static int sq_claim(store_t *b, int max, store_event_t **out, int *n) {
  sq_t *s = (sq_t *)b;
  *n = 0;
  if (!s->dispatching) {
    snprintf(s->base.err, sizeof s->base.err, "%s: claim needs a host id", s->path);
    return -EINVAL;
  }
  if (max <= 0 || s->closing) return 0;
  if (file_gone(s)) return -ENOENT;
  uv_timer_stop(&s->flush_timer);
  claim_t cl = {.now = store_now_ms(), .max = max};
  int got = 0, lapse_kind = STORE_LAPSED;
  cl.c = malloc(2 * (size_t)max * sizeof *cl.c);
  cl.heads = malloc((size_t)max * sizeof *cl.heads);
  int rc = cl.c && cl.heads ? begin(s) : SQLITE_NOMEM;
  if (rc != SQLITE_DONE) goto fail;
  rc = write_settlements(s);
  if (rc != SQLITE_OK) goto fail;
  if (read_paused(s) < 0) {
    rc = SQLITE_NOMEM;
    goto fail;
  }
  rc = pick_rows(s, &cl, &lapse_kind);
  if (rc != SQLITE_OK) goto fail;
  rc = take_rows(s, &cl, lapse_kind, out, &got);
  if (rc != SQLITE_OK) goto fail;
  rc = run(s, ST_COMMIT);
  if (rc != SQLITE_DONE) goto fail;
  settlements_committed(s);
  qsort(out, (size_t)got, sizeof *out, by_id);
  *n = got;
  if (uv_is_active((uv_handle_t *)&s->poll_timer)) uv_timer_again(&s->poll_timer);
  watch_while_idle(s, got == max);
  if (got < max) arm_next_due(s, cl.now);
  claim_done(&cl);
  return 0;
fail:;
  int code = db_error(s, rc, "claiming");
  rollback(s);
  unclaim(s, out, got);
  claim_done(&cl);
  if (s->set.n) timer_after(&s->flush_timer, on_flush, RETRY_MS);
  if (code == -EAGAIN) arm_due(s, cl.now + RETRY_MS);
  return code;
}

/* ---------------------------------------------------------------- leases */

static int renew_all(sq_t *s, int64_t until, int64_t **lost, size_t *nlost) {
  sqlite3_stmt *st = s->st[ST_RENEW];
  for (size_t i = 0; i < s->out.cap; i++) {
    int64_t id = s->out.slot[i];
    if (!id) continue;
    sqlite3_bind_int64(st, 1, id);
    bind_host(s, st);
    sqlite3_bind_int64(st, 3, until);
    int rc = sqlite3_step(st);
    done_stmt(st);
    if (rc != SQLITE_DONE) return rc;
    if (sqlite3_changes(s->db)) continue;
    int64_t *l = realloc(*lost, (*nlost + 1) * sizeof **lost);
    if (!l) return SQLITE_NOMEM;
    *lost = l;
    l[(*nlost)++] = id;
  }
  return SQLITE_OK;
}

/* Every lease/3: settlements out, then locked_until pushed forward for every id
 * still out. An id whose row is no longer ours is logged and forgotten. */
static void on_lease(uv_timer_t *t) {
  sq_t *s = t->data;
  if (!s->out.n && !s->set.n) return;
  int64_t lease = s->base.opts.lease_ms > 0 ? s->base.opts.lease_ms : 30000;
  int64_t *lost = NULL;
  size_t nlost = 0;
  int settled = s->set.n;
  int rc = begin(s);
  if (rc != SQLITE_DONE) goto fail;
  rc = write_settlements(s);
  if (rc != SQLITE_OK) goto fail;
  rc = renew_all(s, store_now_ms() + lease, &lost, &nlost);
  if (rc != SQLITE_OK) goto fail;
  rc = run(s, ST_COMMIT);
  if (rc != SQLITE_DONE) goto fail;
  settlements_committed(s);
  for (size_t i = 0; i < nlost; i++) {
    log_at(LOG_WARN, "lease lost: another host may run the event", KI("id", lost[i]),
           KS("db", s->path));
    idset_del(&s->out, lost[i]);
  }
  free(lost);
  if (settled) wake(s); /* a settled head may unblock its key */
  return;
fail:
  db_error(s, rc, "renewing leases");
  rollback(s);
  free(lost);
}

/* -------------------------------------------------------------- wake-ups */

static int read_data_version(sq_t *s, int64_t *v) {
  sqlite3_stmt *st = s->st[ST_DATA_VERSION];
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) *v = sqlite3_column_int64(st, 0);
  done_stmt(st);
  return rc == SQLITE_ROW ? 0 : map_rc(rc);
}

/* Reads the paused patterns into the store (a missing outbox_paused table, in a
 * database an earlier version created, pauses nothing). Returns 1 when they changed,
 * 0, or a negative code. */
static int read_paused(sq_t *s) {
  sqlite3_stmt *st = s->st[ST_PAUSED], *own = NULL;
  if (!st && sqlite3_prepare_v2(s->db, sql_text[ST_PAUSED], -1, &own, NULL) != SQLITE_OK)
    return store_set_paused(&s->base, NULL, 0);
  if (own) st = own;
  char **list = NULL;
  int n = 0, rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    char **l = realloc(list, (size_t)(n + 1) * sizeof *l);
    const char *p = (const char *)sqlite3_column_text(st, 0);
    char *copy = l ? strdup(p ? p : "") : NULL;
    if (l) list = l;
    if (!copy) {
      rc = SQLITE_NOMEM;
      break;
    }
    list[n++] = copy;
  }
  if (own)
    sqlite3_finalize(own);
  else
    done_stmt(st);
  if (rc != SQLITE_DONE) {
    for (int i = 0; i < n; i++) free(list[i]);
    free(list);
    return map_rc(rc);
  }
  return store_set_paused(&s->base, list, n);
}

/* Our own commits leave data_version alone, so only foreign commits wake. A
 * writer's last write to the WAL file comes before its commit is visible (it
 * still syncs, then publishes the wal-index header in shared memory, which no file
 * event reports), so an unchanged version is looked at again, later and later. */
static void on_check(uv_timer_t *t) {
  sq_t *s = t->data;
  int64_t v;
  if (!s->gone && file_gone(s)) { /* the claim that follows reports it */
    wake(s);
    return;
  }
  if (read_data_version(s, &v) == 0 && v != s->data_version) {
    s->data_version = v;
    s->checks = 0;
    read_paused(s); /* a pause reaches the dispatcher without waiting for a claim */
    wake(s);
    return;
  }
  if (++s->checks < CHECK_TRIES)
    timer_after(&s->check_timer, on_check, (int64_t)CHECK_DELAY_MS << s->checks);
}

/* A look is due CHECK_DELAY_MS after the first of a burst of events; an event
 * during the later looks brings the next one forward again. */
static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status) {
  sq_t *s = h->data;
  if (s->checks == 0 && uv_is_active((uv_handle_t *)&s->check_timer)) return;
  s->checks = 0;
  timer_after(&s->check_timer, on_check, CHECK_DELAY_MS);
}

static void on_poll(uv_timer_t *t) { wake(t->data); }

static void watch(sq_t *s, uv_fs_event_t *h, const char *path) {
  int rc = uv_fs_event_start(h, on_fs_event, path, 0);
  if (rc && !s->watch_failed)
    log_at(LOG_WARN, "cannot watch the database; polling only", KS("path", path),
           KS("error", uv_strerror(rc)));
  if (rc) s->watch_failed = 1;
}

/* While claims come back full the dispatcher claims again as soon as it has room, so
 * file events would only report our own writes, each costing the kernel an event and
 * us a read (a tenth of a busy host's CPU). The watches stop then, and start again
 * at the first claim that finds less than it asked for, with a look at data_version
 * for what others committed meanwhile. */
static void watch_while_idle(sq_t *s, int busy) {
  if (busy == s->unwatched || s->closing) return;
  s->unwatched = busy;
  if (busy) {
    uv_fs_event_stop(&s->wal_watch);
    uv_fs_event_stop(&s->db_watch);
    return;
  }
  watch(s, &s->wal_watch, s->wal_path);
  watch(s, &s->db_watch, s->path);
  s->checks = 0;
  timer_after(&s->check_timer, on_check, CHECK_DELAY_MS);
}

/* ------------------------------------------------------------- retention */

static void on_prune(uv_timer_t *t);

/* One batch of old rows of one status in its own transaction; returns the rows
 * deleted, or a negative code. */
static int prune_batch(sq_t *s, int dead, int64_t keep) {
  sqlite3_stmt *st = s->st[dead ? ST_PRUNE_DEAD : ST_PRUNE_DONE];
  int rc = begin(s);
  if (rc != SQLITE_DONE) goto fail;
  sqlite3_bind_int64(st, 2, store_now_ms() - keep);
  sqlite3_bind_int(st, 3, s->prune_batch);
  rc = sqlite3_step(st);
  done_stmt(st);
  if (rc != SQLITE_DONE) goto fail;
  int n = sqlite3_changes(s->db);
  rc = run(s, ST_COMMIT);
  if (rc != SQLITE_DONE) goto fail;
  db_ok(s);
  return n;
fail:;
  int code = db_error(s, rc, "deleting old rows (retention)");
  rollback(s);
  return code;
}

/* Deletes old done rows, then old dead rows, a batch at a time with the loop free
 * between batches; the batch size follows how long a batch holds the loop. */
static void on_prune(uv_timer_t *t) {
  sq_t *s = t->data;
  if (s->closing || s->gone) return;
  int64_t keep = store_keep_ms(&s->base.opts, s->prune_dead);
  if (keep < 0) { /* this status is kept forever: the other one */
    s->prune_dead = !s->prune_dead;
    keep = store_keep_ms(&s->base.opts, s->prune_dead);
  }
  uint64_t t0 = uv_hrtime();
  int n = prune_batch(s, s->prune_dead, keep);
  int full = n == s->prune_batch;
  if (n >= 0)
    s->prune_batch =
        store_prune_batch(s->prune_batch, (int64_t)(uv_hrtime() - t0) / 1000, PRUNE_BUDGET_MS);
  if (n < 0) {
    timer_after(&s->prune_timer, on_prune, RETRY_MS);
  } else if (full) {
    timer_after(&s->prune_timer, on_prune, STORE_PRUNE_GAP_MS);
  } else if (!s->prune_dead && store_keep_ms(&s->base.opts, 1) >= 0) {
    s->prune_dead = 1; /* done rows are through: now the dead ones */
    timer_after(&s->prune_timer, on_prune, STORE_PRUNE_GAP_MS);
  } else {
    s->prune_dead = 0;
    timer_after(&s->prune_timer, on_prune, store_prune_idle_ms(&s->base.opts));
  }
}

static void start_dispatching(sq_t *s) {
  int64_t lease = s->base.opts.lease_ms > 0 ? s->base.opts.lease_ms : 30000;
  uint64_t every = (uint64_t)(lease / 3 > 0 ? lease / 3 : 1);
  uv_timer_start(&s->lease_timer, on_lease, every, every);
  if (s->base.opts.poll_ms > 0)
    uv_timer_start(&s->poll_timer, on_poll, (uint64_t)s->base.opts.poll_ms,
                   (uint64_t)s->base.opts.poll_ms);
  watch(s, &s->wal_watch, s->wal_path);
  watch(s, &s->db_watch, s->path);
  s->prune_batch = store_prune_batch(0, 0, PRUNE_BUDGET_MS);
  s->ckpt_on = checkpoint_attach(&s->ckpt, s->base.loop, s->db, s->path, WAL_PAGES) == 0;
  if (store_prunes(&s->base.opts)) timer_after(&s->prune_timer, on_prune, STORE_PRUNE_GAP_MS);
}

/* ------------------------------------------------------------ operations */

static int sq_enqueue(store_t *b, store_event_t *const *evs, int n) {
  sq_t *s = (sq_t *)b;
  sqlite3_stmt *st = s->st[ST_INSERT];
  int rc = begin(s);
  if (rc != SQLITE_DONE) goto fail;
  for (int i = 0; i < n; i++) {
    rc = insert_event(st, evs[i]);
    if (rc != SQLITE_OK) goto fail;
  }
  rc = run(s, ST_COMMIT);
  if (rc != SQLITE_DONE) goto fail;
  return 0;
fail:;
  int code = db_error(s, rc, "enqueueing");
  rollback(s);
  return code;
}

/* Requeued events keep last_error (the history of why they died) until their
 * next failure overwrites it; attempts restart at 0 and they are due at once. */
static int sq_requeue(store_t *b, const int64_t *ids, int n, const char *topic, int64_t *moved) {
  sq_t *s = (sq_t *)b;
  *moved = 0;
  int rc = begin(s);
  if (rc != SQLITE_DONE) goto fail;
  if (n == 0) {
    int prefix, len = store_topic_pattern(topic, &prefix);
    if (len >= 0) sqlite3_bind_text(s->st[ST_REQUEUE_DEAD], 1, topic, len, SQLITE_STATIC);
    sqlite3_bind_int(s->st[ST_REQUEUE_DEAD], 2, prefix);
    rc = run(s, ST_REQUEUE_DEAD);
    sqlite3_clear_bindings(s->st[ST_REQUEUE_DEAD]);
    if (rc != SQLITE_DONE) goto fail;
    *moved = sqlite3_changes(s->db);
  }
  for (int i = 0; i < n; i++) {
    sqlite3_stmt *st = s->st[ST_REQUEUE_ID];
    sqlite3_bind_int64(st, 1, ids[i]);
    rc = sqlite3_step(st);
    done_stmt(st);
    if (rc != SQLITE_DONE) goto fail;
    *moved += sqlite3_changes(s->db);
  }
  rc = run(s, ST_COMMIT);
  if (rc != SQLITE_DONE) goto fail;
  return 0;
fail:;
  int code = db_error(s, rc, "requeueing");
  rollback(s);
  *moved = 0;
  return code;
}

static int sq_counts(store_t *b, store_counts_t *c) {
  sq_t *s = (sq_t *)b;
  memset(c, 0, sizeof *c);
  sqlite3_stmt *st = s->st[ST_COUNTS];
  int64_t all = 0;
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (sqlite3_column_type(st, 0) == SQLITE_NULL)
      all = sqlite3_column_int64(st, 1);
    else
      store_counts_set(c, (const char *)sqlite3_column_text(st, 0), sqlite3_column_int64(st, 1));
  }
  done_stmt(st);
  if (rc != SQLITE_DONE) return db_error(s, rc, "counting");
  c->pending = all - c->processing - c->done - c->dead; /* the rows not taken */
  st = s->st[ST_OLDEST];
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
    int64_t age = store_now_ms() - sqlite3_column_int64(st, 0);
    c->oldest_pending_age_ms = age > 0 ? age : 0;
  }
  done_stmt(st);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return db_error(s, rc, "counting");
  return 0;
}

static int sq_topic_counts(store_t *b,
                           void (*cb)(void *arg, const char *topic, int64_t pending,
                                      int64_t processing, int64_t dead),
                           void *arg) {
  sq_t *s = (sq_t *)b;
  sqlite3_stmt *st = s->st[ST_TOPIC_COUNTS];
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW)
    cb(arg, (const char *)sqlite3_column_text(st, 0), sqlite3_column_int64(st, 1),
       sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3));
  done_stmt(st);
  return rc == SQLITE_DONE ? 0 : db_error(s, rc, "counting by topic");
}

static int sq_list_dead(store_t *b, int max,
                        void (*cb)(void *arg, int64_t id, const char *topic, int attempts,
                                   const char *last_error),
                        void *arg) {
  sq_t *s = (sq_t *)b;
  sqlite3_stmt *st = s->st[ST_LIST_DEAD];
  sqlite3_bind_int(st, 1, max);
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW)
    cb(arg, sqlite3_column_int64(st, 0), (const char *)sqlite3_column_text(st, 1),
       sqlite3_column_int(st, 2), (const char *)sqlite3_column_text(st, 3));
  done_stmt(st);
  return rc == SQLITE_DONE ? 0 : db_error(s, rc, "listing dead events");
}

/* ---------------------------------------------------------- open, close */

static void destroy(sq_t *s) {
  for (int i = 0; i < ST_COUNT; i++) sqlite3_finalize(s->st[i]);
  sqlite3_close(s->db);
  settles_free(&s->set);
  idset_free(&s->out);
  free(s->path);
  free(s->wal_path);
  free(s->host);
  free(s->cursor);
  store_topics_free(&s->base);
  free(s);
}

/* One more handle (or the checkpoint) closed; the last one frees the store. */
static void one_closed(void *store) {
  sq_t *s = store;
  if (--s->nopen) return;
  void (*cb)(void *) = s->close_cb;
  void *arg = s->close_arg;
  destroy(s);
  if (cb) cb(arg);
}

static void on_closed(uv_handle_t *h) { one_closed(h->data); }

/* Every libuv handle the store owns; returns how many. */
static int handles(sq_t *s, uv_handle_t **list) {
  list[0] = (uv_handle_t *)&s->flush_timer;
  list[1] = (uv_handle_t *)&s->lease_timer;
  list[2] = (uv_handle_t *)&s->poll_timer;
  list[3] = (uv_handle_t *)&s->due_timer;
  list[4] = (uv_handle_t *)&s->check_timer;
  list[5] = (uv_handle_t *)&s->kick_timer;
  list[6] = (uv_handle_t *)&s->prune_timer;
  list[7] = (uv_handle_t *)&s->wal_watch;
  list[8] = (uv_handle_t *)&s->db_watch;
  return 9;
}

/* Flushes what is buffered (a failure is logged: those events come back when
 * their leases expire), then closes every handle; cb runs after the last one. */
static void sq_close(store_t *b, void (*cb)(void *arg), void *arg) {
  sq_t *s = (sq_t *)b;
  s->closing = 1;
  s->close_cb = cb;
  s->close_arg = arg;
  sqlite3_busy_timeout(s->db, CMD_BUSY_MS);
  if (flush_now(s) < 0) {
    log_at(LOG_ERROR, "settlements not written; those events return when their leases expire",
           KS("db", s->path), KI("events", s->set.n));
    settles_clear(&s->set);
  }
  uv_handle_t *list[9];
  int n = handles(s, list);
  s->nopen = n + s->ckpt_on;
  if (s->ckpt_on) checkpoint_close(&s->ckpt, one_closed, s);
  for (int i = 0; i < n; i++) uv_close(list[i], on_closed);
}

/* ------------------------------------------------------------- salvage */

/* Runs `sql` on db with settlement x bound (x may be NULL: only the host is bound).
 * Returns an SQLite code; *changed gets the rows changed. */
static int salvage_step(sq_t *s, sqlite3 *db, const char *sql, const settle_t *x, int *changed) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  if (rc != SQLITE_OK) return rc;
  if (x)
    bind_settle(s, st, x);
  else
    bind_host(s, st);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) continue; /* acks return their ids */
  sqlite3_finalize(st);
  if (changed) *changed = sqlite3_changes(db);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Writes buffered settlement x on db: an ack's follow-ups only when the ack was
 * written, new events of an emit always. */
static int salvage_settle(sq_t *s, sqlite3 *db, const settle_t *x) {
  int changed = 0, rc = SQLITE_OK;
  if (x->kind != SETTLE_EMIT) rc = salvage_step(s, db, sql_text[settle_stmt(s, x)], x, &changed);
  if (rc != SQLITE_OK || !x->follow || (x->kind == STORE_ACK && !changed)) return rc;
  sqlite3_stmt *st;
  rc = sqlite3_prepare_v2(db, sql_text[ST_INSERT], -1, &st, NULL);
  if (rc != SQLITE_OK) return rc;
  rc = insert_list(st, x->follow);
  sqlite3_finalize(st);
  return rc;
}

/* Another thread, its own connection: the loop thread is stopped outside the store,
 * so the buffer of settlements holds still. */
static int sq_salvage(store_t *b, int64_t dead_id, const char *err, char *errbuf, size_t errlen) {
  sq_t *s = (sq_t *)b;
  sqlite3 *db = NULL;
  int released = 0;
  int rc = sqlite3_open_v2(s->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_busy_timeout(db, CMD_BUSY_MS);
    rc = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
  }
  for (int i = 0; i < s->set.n && rc == SQLITE_OK; i++) rc = salvage_settle(s, db, &s->set.v[i]);
  if (rc == SQLITE_OK && dead_id > 0) {
    settle_t x = {dead_id, 1, STORE_DEAD, store_error_text(err), 0, NULL};
    rc = salvage_step(s, db, sql_text[ST_DEAD], &x, NULL);
    free(x.err);
  }
  if (rc == SQLITE_OK)
    rc = salvage_step(s, db,
                      "UPDATE outbox INDEXED BY outbox_taken SET status = 'pending'," UNLOCK
                      " WHERE" TAKEN " AND status = 'processing' AND locked_by = ?2",
                      NULL, &released);
  if (rc == SQLITE_OK) rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    snprintf(errbuf, errlen, "--db %s: %s", s->path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_close(db);
    return map_rc(rc) ? map_rc(rc) : -EIO;
  }
  sqlite3_close(db);
  return released;
}

static int sq_pause(store_t *b, const char *pattern, int on, int *changed) {
  sq_t *s = (sq_t *)b;
  sqlite3_stmt *st = NULL;
  *changed = 0;
  int rc = sqlite3_exec(s->db,
                        "CREATE TABLE IF NOT EXISTS outbox_paused (pattern TEXT PRIMARY KEY,"
                        " paused_at INTEGER NOT NULL DEFAULT "
                        "(CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)))",
                        NULL, NULL, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(s->db,
                            on ? "INSERT OR IGNORE INTO outbox_paused (pattern) VALUES (?1)"
                               : "DELETE FROM outbox_paused WHERE pattern = ?1",
                            -1, &st, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(st, 1, pattern, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    *changed = rc == SQLITE_DONE && sqlite3_changes(s->db) > 0;
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE && rc != SQLITE_OK) return db_error(s, rc, on ? "pausing" : "resuming");
  return read_paused(s) < 0 ? -ENOMEM : 0;
}

static const store_ops_t sqlite_ops = {
    .pause = sq_pause,
    .filters = 1,
    .name = "sqlite",
    .claim = sq_claim,
    .settle = sq_settle,
    .flush = sq_flush,
    .exhausted = sq_exhausted,
    .counts = sq_counts,
    .enqueue = sq_enqueue,
    .push = sq_push,
    .requeue = sq_requeue,
    .list_dead = sq_list_dead,
    .topic_counts = sq_topic_counts,
    .salvage = sq_salvage,
    .close = sq_close,
};

/* A one-line reason why `path` could not be opened. */
static int open_error(sqlite3 *db, const char *path, int rc, char *errbuf, size_t errlen) {
  int e = db ? sqlite3_system_errno(db) : 0;
  if ((rc & 0xff) == SQLITE_NOTADB) {
    snprintf(errbuf, errlen, "--db %s: file is not a database", path);
    return -EINVAL;
  }
  if ((rc & 0xff) != SQLITE_CANTOPEN) {
    snprintf(errbuf, errlen, "--db %s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    return map_rc(rc);
  }
  char *copy = strdup(path);
  const char *dir = copy ? dirname(copy) : ".";
  struct stat st;
  if (stat(dir, &st) != 0) {
    snprintf(errbuf, errlen, "--db %s: cannot create the database: %s: %s", path, dir,
             strerror(errno));
    e = errno;
  } else if (!S_ISDIR(st.st_mode)) {
    snprintf(errbuf, errlen, "--db %s: cannot create the database: %s is not a directory", path,
             dir);
    e = ENOTDIR;
  } else {
    snprintf(errbuf, errlen, "--db %s: cannot open the database: %s", path,
             e ? strerror(e) : sqlite3_errmsg(db));
  }
  free(copy);
  return e ? -e : -EIO;
}

static int no_table(const char *path, char *errbuf, size_t errlen) {
  snprintf(errbuf, errlen, "no outbox table in %s (run: outboxd init --db %s)", path, path);
  return -ENOENT;
}

static int has_table(sqlite3 *db, int *yes) {
  sqlite3_stmt *st;
  int rc = sqlite3_prepare_v2(
      db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'outbox'", -1, &st, NULL);
  if (rc != SQLITE_OK) return rc;
  rc = sqlite3_step(st);
  *yes = rc == SQLITE_ROW;
  sqlite3_finalize(st);
  return rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Creates `path` empty, readable by its owner only (0600), when it does not exist:
 * the outbox holds application data. SQLite gives the -wal and -shm files the mode
 * of the database file. A failure here is left to sqlite3_open_v2 to report. */
static void create_private(const char *path) {
  int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd >= 0) close(fd);
}

/* Sets *has to -1 when index `name` does not exist, else to whether its definition
 * contains `text`. Returns an SQLite code. */
static int index_has(sqlite3 *db, const char *name, const char *text, int *has) {
  sqlite3_stmt *st;
  *has = -1;
  int rc = sqlite3_prepare_v2(
      db, "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?1", -1, &st, NULL);
  if (rc != SQLITE_OK) return rc;
  sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
  if (sqlite3_step(st) == SQLITE_ROW) {
    const char *sql = (const char *)sqlite3_column_text(st, 0);
    *has = sql && strstr(sql, text) != NULL;
  }
  sqlite3_finalize(st);
  return SQLITE_OK;
}

/* Drops index `name` when it exists and its definition lacks `text` (an earlier
 * version's; NULL: whatever it is), logging `why`; the schema then builds what
 * replaces it. Returns an SQLite code. */
static int drop_old_index(sqlite3 *db, const char *path, const char *name, const char *text,
                          const char *why) {
  int has, rc = index_has(db, name, text ? text : "", &has);
  if (rc != SQLITE_OK || has < 0 || (text && has)) return rc;
  log_at(LOG_INFO, "upgrading the schema", KS("index", name), KS("change", why), KS("db", path));
  char sql[96];
  snprintf(sql, sizeof sql, "DROP INDEX %s", name);
  return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

/* Brings a database written by an earlier version up to this schema: the key index
 * used to cover keyless rows too (it is rebuilt over keyed rows only), the keyless
 * index and its per-topic form were in id order (they are rebuilt by due time), the
 * status index covered the waiting rows too (outbox_taken replaces it), and a (topic,
 * key) index is gone. Runs inside the caller's transaction, before the schema's
 * CREATE ... IF NOT EXISTS. */
static int migrate(sqlite3 *db, const char *path) {
  static const struct {
    const char *name, *has, *why; /* has: what this version's definition says; NULL: gone */
  } old[] = {
      {"outbox_key_head", "key IS NOT NULL", "key index limited to rows with a key"},
      {"outbox_keyless", "(available_at)", "keyless rows indexed by due time"},
      {"outbox_topic_free", "(topic, available_at)", "keyless rows by topic indexed by due time"},
      {"outbox_claim", NULL, "status index without the waiting rows (outbox_taken)"},
      {"outbox_topic_key", NULL, "claims by topic use the key index"},
  };
  int rc = SQLITE_OK;
  for (size_t i = 0; i < sizeof old / sizeof *old && rc == SQLITE_OK; i++)
    rc = drop_old_index(db, path, old[i].name, old[i].has, old[i].why);
  return rc;
}

/* Creates the table and indexes if missing, migrating an older schema first. The
 * transaction is deferred: when nothing is missing it never takes the write lock, so
 * a host starts while an application holds it. */
static int create_schema(sqlite3 *db, const char *path) {
  int rc = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
  if (rc == SQLITE_OK) rc = migrate(db, path);
  if (rc == SQLITE_OK) rc = sqlite3_exec(db, schema_sql, NULL, NULL, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
  if (rc != SQLITE_OK && !sqlite3_get_autocommit(db)) {
    int keep = rc;
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    rc = keep;
  }
  return rc;
}

/* A mistyped --db must not become a new, empty database waited on forever. */
static int no_database(const char *path, char *errbuf, size_t errlen) {
  snprintf(errbuf, errlen, "--db %s: no such database (create it with: outboxd init --db %s)", path,
           path);
  return STORE_NO_DB;
}

/* How open_db treats the file and the schema. */
enum open_mode {
  OPEN_EXISTING, /* operations: the file and the outbox table must exist */
  OPEN_SCHEMA,   /* dispatching: the file must exist; missing tables are created */
  OPEN_CREATE    /* init: the file and the tables are created when missing */
};

/* Opens `path` in WAL mode as `mode` says. On error *out is NULL. */
static int open_db(const char *path, enum open_mode mode, sqlite3 **out, char *errbuf,
                   size_t errlen) {
  sqlite3 *db = NULL;
  int yes = 0, code;
  *out = NULL;
  if (mode != OPEN_CREATE && access(path, F_OK) != 0 && errno == ENOENT)
    return no_database(path, errbuf, errlen);
  if (mode == OPEN_CREATE) create_private(path);
  /* NOMUTEX: a connection is only ever used by the thread that opened it. */
  int flags =
      SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (mode == OPEN_CREATE ? SQLITE_OPEN_CREATE : 0);
  /* On the VFS that writes each transaction's log in one block (walvfs.h); on the
   * default one if that could not be set up. */
  const char *vfs = walvfs_register() == SQLITE_OK ? WALVFS_NAME : NULL;
  int rc = sqlite3_open_v2(path, &db, flags, vfs);
  if (rc != SQLITE_OK) goto fail;
  sqlite3_busy_timeout(db, CMD_BUSY_MS);
  /* A checkpoint every 10000 WAL pages instead of 1000: the pages a claim and its acks
   * write (key heads, the rows of many keys) are written again and again, and each
   * checkpoint copies each of them once and syncs. 10^5 events over 1000 keys: 262
   * syncs -> 28, 216k page writes -> 186k, 39k page reads -> 9k. The WAL file is cut
   * back to 64 MiB after a checkpoint that let it grow past that. A dispatching host
   * runs its checkpoints on a thread of its own (checkpoint.c). */
  rc = sqlite3_exec(db,
                    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                    " PRAGMA journal_size_limit=67108864;"
                    " PRAGMA wal_autocheckpoint=" STORE_STR(WAL_PAGES),
                    NULL, NULL, NULL);
  if (rc != SQLITE_OK) goto fail;
  if (mode != OPEN_EXISTING) rc = create_schema(db, path);
  if (rc != SQLITE_OK) goto fail;
  rc = has_table(db, &yes);
  if (rc != SQLITE_OK) goto fail;
  if (!yes) {
    sqlite3_close(db);
    return no_table(path, errbuf, errlen);
  }
  *out = db;
  return 0;
fail:
  code = open_error(db, path, rc, errbuf, errlen);
  sqlite3_close(db);
  return code;
}

/* Gives the key index the form this host's claims want (see KEY_INDEX_ALL): over live
 * rows when done rows are kept, by this host or by another (keyed done rows are
 * there); else over every keyed row. Either form serves every statement, so a
 * failure here (another host holds the write lock) is logged and left alone. */
static void fit_key_index(sq_t *s) {
  sqlite3_stmt *st;
  int live, want = s->base.opts.keep_done_ms != 0;
  if (index_has(s->db, "outbox_key_head", "status", &live) != SQLITE_OK) return;
  live = live > 0;
  if (live && !want &&
      sqlite3_prepare_v2(s->db,
                         "SELECT 1 FROM outbox INDEXED BY outbox_settled"
                         " WHERE status IN ('done', 'dead') AND status = 'done'"
                         " AND key IS NOT NULL LIMIT 1",
                         -1, &st, NULL) == SQLITE_OK) {
    want = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
  }
  if (live == want) return;
  int rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE; DROP INDEX outbox_key_head;", NULL, NULL, NULL);
  if (rc == SQLITE_OK)
    rc = sqlite3_exec(s->db, want ? KEY_INDEX_SQL(KEY_HEAD_WHERE) : KEY_INDEX_SQL(KEY_INDEX_ALL),
                      NULL, NULL, NULL);
  if (rc == SQLITE_OK) rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
  if (rc != SQLITE_OK) {
    log_at(LOG_WARN, "key index left as it is", KS("db", s->path),
           KS("error", sqlite3_errmsg(s->db)));
    if (!sqlite3_get_autocommit(s->db)) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return;
  }
  log_at(LOG_INFO, want ? "key index rebuilt over live rows (done rows are kept)"
                        : "key index rebuilt over every keyed row (claims write less)",
         KS("db", s->path));
}

/* Statements only a dispatching store runs: they name indexes that an unmigrated
 * database (one an operations command opens) may not have yet. */
static int dispatch_only(int i) {
  return (i >= ST_SUSPECT && i <= ST_TAKE) || i == ST_NEXT_DUE || i >= ST_PAUSED;
}

static int prepare_all(sq_t *s, char *errbuf, size_t errlen) {
  for (int i = 0; i < ST_COUNT; i++) {
    if (!s->dispatching && dispatch_only(i)) continue;
    if (s->base.opts.ordering_key && (i == ST_F_TOPIC_ANY || i == ST_F_ROWS_ANY)) continue;
    int rc = sqlite3_prepare_v3(s->db, sql_text[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i], NULL);
    if (rc == SQLITE_OK) continue;
    snprintf(errbuf, errlen, "--db %s: the outbox table does not match this version: %s", s->path,
             sqlite3_errmsg(s->db));
    return -EINVAL;
  }
  return 0;
}

static void init_handles(sq_t *s) {
  uv_handle_t *list[9];
  int n = handles(s, list);
  for (int i = 0; i < 7; i++) uv_timer_init(s->base.loop, (uv_timer_t *)list[i]);
  uv_fs_event_init(s->base.loop, &s->wal_watch);
  uv_fs_event_init(s->base.loop, &s->db_watch);
  for (int i = 0; i < n; i++) list[i]->data = s;
}

/* Without opts->host_id the store is an operations handle (status, requeue,
 * enqueue): it never creates the schema, starts no timers and logs nothing;
 * failures are reported through the return code and s->err only. With a host id
 * it dispatches: the schema is created if missing, leases are renewed, and
 * wake-ups come from the WAL file, retries coming due and the poll interval. */
int store_sqlite_open(uv_loop_t *loop, const char *path, const store_opts_t *opts, store_t **out,
                      char *errbuf, size_t errlen) {
  *out = NULL;
  sq_t *s = calloc(1, sizeof *s);
  if (!s) goto fail_nomem;
  s->base.ops = &sqlite_ops;
  s->base.loop = loop;
  s->base.opts = *opts;
  s->base.want_all = s->base.claim_all = 1;
  s->dispatching = opts->host_id != NULL;
  s->path = strdup(path);
  s->wal_path = malloc(strlen(path) + 5);
  s->host = opts->host_id ? strdup(opts->host_id) : NULL;
  if (!s->path || !s->wal_path || (opts->host_id && !s->host)) goto fail_nomem;
  sprintf(s->wal_path, "%s-wal", path);
  s->base.opts.host_id = s->host;
  int rc = open_db(path, s->dispatching ? OPEN_SCHEMA : OPEN_EXISTING, &s->db, errbuf, errlen);
  if (rc) goto fail;
  sqlite3_busy_timeout(s->db, s->dispatching ? LOOP_BUSY_MS : CMD_BUSY_MS);
  if (s->dispatching && !opts->ordering_key &&
      sqlite3_exec(s->db, topic_pending_sql, NULL, NULL, NULL) != SQLITE_OK) {
    snprintf(errbuf, errlen, "--db %s: %s", path, sqlite3_errmsg(s->db));
    rc = -EIO;
    goto fail;
  }
  if (s->dispatching) fit_key_index(s);
  rc = prepare_all(s, errbuf, errlen);
  if (rc) goto fail;
  if (read_paused(s) < 0) goto fail_nomem;
  struct stat st;
  if (stat(path, &st) == 0) s->dev = st.st_dev, s->ino = st.st_ino;
  rc = read_data_version(s, &s->data_version);
  if (rc) {
    snprintf(errbuf, errlen, "--db %s: %s", path, sqlite3_errmsg(s->db));
    goto fail;
  }
  init_handles(s);
  if (s->dispatching) start_dispatching(s);
  *out = &s->base;
  return 0;
fail_nomem:
  snprintf(errbuf, errlen, "--db %s: out of memory", path);
  rc = -ENOMEM;
fail:
  if (s) destroy(s);
  return rc;
}

/* Creates the database file and the outbox table and indexes if missing. */
int store_sqlite_init_schema(const char *path, char *errbuf, size_t errlen) {
  sqlite3 *db;
  int rc = open_db(path, OPEN_CREATE, &db, errbuf, errlen);
  if (rc) return rc;
  sqlite3_close(db);
  return 0;
}
