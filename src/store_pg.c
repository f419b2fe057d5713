/* store_pg — the PostgreSQL outbox on libpq's asynchronous API, driven by the libuv loop.
 * One connection, one query in flight (LISTEN, flush, claim, renew, next-due, in that
 * priority); claims prefetch one batch. Invariant: every write to a claimed row is fenced
 * on (id, locked_by = this host, status = 'processing'), and a settlement leaves the
 * buffer only when its statement succeeded, so a lost connection loses nothing. */
#include "idset.h"
#include "settle.h"
#include "store_backends.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define FLUSH_DELAY_MS 5 /* settlements wait at most this long for company */
#define RETRY_MIN_MS 100 /* first reconnect delay, doubled up to RETRY_MAX_MS */
#define RETRY_MAX_MS 5000
#define CONNECT_TIMEOUT_MS 10000 /* at most; a shorter store timeout wins */
#define CLOSE_TIMEOUT_MS 5000    /* longest wait for the last flush at close */
#define COUNTS_COST 100          /* counts take at most 1/COUNTS_COST of the connection's time */
#define PRUNE_BUDGET_MS 25 /* a retention batch holds the connection about this long at most */
#define CHANNEL "outbox_new"
#define CLAIM_NAME "outboxd_claim"
#define APP_NAME "outboxd"
#define CLAIM_TOPICS_NAME "outboxd_claim_topics"
#define PAUSED_NOTE "paused" /* the payload of a NOTIFY that the paused list changed */
/* Keyless events are claimed up to this long before they are due and started at their
 * time: a claim's round trip (milliseconds, tens on a busy machine) is spent while
 * they wait, not after. Events with a key wait for their time in the table: one held
 * here would hold back its key on other hosts. */
#define HORIZON_MS 50
#define HORIZON " interval '" STORE_STR(HORIZON_MS) " milliseconds'"

/* ---------------------------------------------------------------- schema */

#define LIVE " status IN ('pending','processing')"

/* The indexes claims need, and the upgrade of a database an earlier version created
 * (its key index covered keyless rows too); `init` and every dispatching host run it.
 * Each index is created only when missing, so a host that finds them all takes no
 * lock on the table. */
#define MIGRATE_SQL                                                                                                                            \
  "DO $$ BEGIN\n"                                                                                                                              \
  "  IF to_regclass('outbox') IS NULL THEN RETURN; END IF;\n"                                                                                  \
  "  IF to_regclass('outbox_lapsed') IS NOT NULL AND to_regclass('outbox_due') IS NOT NULL"                                                    \
  " AND to_regclass('outbox_keyless') IS NOT NULL AND to_regclass('outbox_topic_free') IS NOT "                                                \
  "NULL"                                                                                                                                       \
  " AND to_regclass('outbox_topic_key') IS NULL AND to_regclass('outbox_paused') IS NOT NULL"                                                  \
  " AND to_regclass('outbox_settled') IS NOT NULL"                                                                                             \
  " AND EXISTS (SELECT 1 FROM pg_indexes"                                                                                                      \
  " WHERE schemaname = current_schema() AND indexname = 'outbox_key_head'"                                                                     \
  " AND indexdef LIKE '%key IS NOT NULL%')"                                                                                                    \
  " AND EXISTS (SELECT 1 FROM pg_indexes"                                                                                                      \
  " WHERE schemaname = current_schema() AND indexname = 'outbox_keyless'"                                                                      \
  " AND indexdef LIKE '%(available_at)%') THEN RETURN; END IF;\n"                                                                              \
  "  PERFORM pg_advisory_xact_lock(hashtext('outboxd init'));\n"                                                                               \
  "  IF EXISTS (SELECT 1 FROM pg_indexes WHERE schemaname = current_schema()"                                                                  \
  " AND indexname = 'outbox_key_head' AND indexdef NOT LIKE '%key IS NOT NULL%') THEN\n"                                                       \
  "    DROP INDEX outbox_key_head;\n"                                                                                                          \
  "  END IF;\n" /* live rows of each key in id order: heads, skip scans and runs */                                                            \
  "  IF to_regclass('outbox_key_head') IS NULL THEN\n"                                                                                         \
  "    CREATE INDEX outbox_key_head ON outbox (key, id) WHERE key IS NOT NULL AND" LIVE ";\n"                                                  \
  "  END IF;\n" /* keyless waiting rows by due time (an earlier version: id order) */                                                          \
  "  IF EXISTS (SELECT 1 FROM pg_indexes WHERE schemaname = current_schema()"                                                                  \
  " AND indexname = 'outbox_keyless' AND indexdef NOT LIKE '%(available_at)%') THEN\n"                                                         \
  "    DROP INDEX outbox_keyless;\n"                                                                                                           \
  "  END IF;\n"                                                                                                                                \
  "  IF to_regclass('outbox_keyless') IS NULL THEN\n"                                                                                          \
  "    CREATE INDEX outbox_keyless ON outbox (available_at) WHERE key IS NULL AND status = "                                                   \
  "'pending';\n"                                                                                                                               \
  "  END IF;\n" /* leases by expiry: lapsed ones to take over, the next one to wait for */                                                     \
  "  IF to_regclass('outbox_lapsed') IS NULL THEN\n"                                                                                           \
  "    CREATE INDEX outbox_lapsed ON outbox (locked_until) WHERE status = 'processing';\n"                                                     \
  "  END IF;\n" /* pending rows by due time: the next retry to wait for */                                                                     \
  "  IF to_regclass('outbox_due') IS NULL THEN\n"                                                                                              \
  "    CREATE INDEX outbox_due ON outbox (available_at) WHERE status = 'pending';\n"                                                           \
  "  END IF;\n" /* claims by topic: keyless live rows per topic in id order, in byte order (the */ /* ranges a host claims are byte ranges) */ \
  "  IF to_regclass('outbox_topic_free') IS NULL THEN\n"                                                                                       \
  "    CREATE INDEX outbox_topic_free ON outbox (topic COLLATE \"C\", id)"                                                                     \
  " WHERE key IS NULL AND" LIVE ";\n"                                                                                                          \
  "  END IF;\n" /* an earlier version's (topic, key) index: claims by topic use the key index */                                               \
  "  DROP INDEX IF EXISTS outbox_topic_key;\n" /* done and dead rows by the time they settled                                                  \
                                                  (available_at): retention, oldest first */                                                   \
  "  IF to_regclass('outbox_settled') IS NULL THEN\n"                                                                                          \
  "    CREATE INDEX outbox_settled ON outbox (status, available_at)"                                                                           \
  " WHERE status IN ('done', 'dead');\n"                                                                                                       \
  "  END IF;\n" /* topic patterns no host claims for now (outboxd pause); a change wakes every                                                 \
                   host */                                                                                                                     \
  "  IF to_regclass('outbox_paused') IS NULL THEN\n"                                                                                           \
  "    CREATE TABLE outbox_paused (pattern text PRIMARY KEY,"                                                                                  \
  " paused_at timestamptz NOT NULL DEFAULT now());\n"                                                                                          \
  "    CREATE FUNCTION outbox_paused_notify() RETURNS trigger LANGUAGE plpgsql AS"                                                             \
  " 'BEGIN PERFORM pg_notify(''" CHANNEL "'', ''" PAUSED_NOTE "''); RETURN NULL; END';\n"                                                      \
  "    CREATE TRIGGER outbox_paused_notify AFTER INSERT OR UPDATE OR DELETE ON outbox_paused"                                                  \
  " FOR EACH STATEMENT EXECUTE FUNCTION outbox_paused_notify();\n"                                                                             \
  "  END IF;\n"                                                                                                                                \
  "END $$"

static const char schema_sql[] =
    "BEGIN;\n"
    "SET LOCAL client_min_messages = warning;\n"
    "SELECT pg_advisory_xact_lock(hashtext('outboxd init'));\n"
    "CREATE TABLE IF NOT EXISTS outbox (\n"
    "  id           bigserial PRIMARY KEY,\n"
    "  topic        text        NOT NULL,\n"
    "  key          text,\n"
    "  payload      text        NOT NULL,\n"
    "  headers      text,\n"
    "  created_at   timestamptz NOT NULL DEFAULT now(),\n"
    "  available_at timestamptz NOT NULL DEFAULT now(),\n"
    "  attempts     integer     NOT NULL DEFAULT 0,\n"
    "  status       text        NOT NULL DEFAULT 'pending',  -- pending|processing|done|dead\n"
    "  locked_by    text,\n"
    "  locked_until timestamptz,\n"
    "  last_error   text\n"
    ");\n"
    /* Claims walk live rows in id order; done/dead history costs nothing. */
    "CREATE INDEX IF NOT EXISTS outbox_claim ON outbox (id)"
    " WHERE status IN ('pending','processing');\n"
    "CREATE INDEX IF NOT EXISTS outbox_dead ON outbox (id) WHERE status = 'dead';\n" MIGRATE_SQL
    ";\n"
    "CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS\n"
    "  $$ BEGIN PERFORM pg_notify('" CHANNEL "', ''); RETURN NULL; END $$;\n"
    "DO $$ BEGIN\n"
    "  IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'outbox_notify'\n"
    "                 AND tgrelid = 'outbox'::regclass) THEN\n"
    "    CREATE TRIGGER outbox_notify AFTER INSERT ON outbox\n"
    "      FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();\n"
    "  END IF;\n"
    "END $$;\n"
    "COMMIT;\n";

/* ------------------------------------------------------------ statements */

/* $1 host, $2 lease ms, $3 limit, $4 ids this host still has out (never taken over),
 * $5 (per-key order) the key after which the key scan starts.
 * Claimable: pending and due (keyless: due within the horizon), or processing under a
 * lease that ran out. The horizon bound comes first: an index bound for every row. */
#define DUE_BY(x)                                                                                  \
  " " x ".available_at <= now() +" HORIZON " AND (" x ".key IS NULL"                               \
  " OR " x ".available_at <= now())"
#define DUE_BY_C DUE_BY("c")
#define CLAIMABLE(x)                                                                               \
  " ((" x ".status = 'processing' AND " x ".locked_until < now()"                                  \
  " AND NOT (" x ".id = ANY ($4::bigint[]))) OR (" x ".status = 'pending' AND" DUE_BY(x) "))"

/* A row is the head of its key when no live row of that key has a smaller id. */
#define HEAD_OF_KEY                                                                                \
  " AND (c.key IS NULL OR NOT EXISTS (SELECT 1 FROM outbox h WHERE h.key = c.key"                  \
  " AND h.key IS NOT NULL AND h.id < c.id AND h." LIVE "))"

/* A suspect: lapsed again after it was taken over from a stopped host. Claimed alone. */
#define SUSPECT_CTE(head)                                                                          \
  "sus AS (SELECT c.id, c.key FROM outbox c WHERE c.status = 'processing'"                         \
  " AND c.locked_until < now() AND NOT (c.id = ANY ($4::bigint[]))"                                \
  " AND c.last_error LIKE '" STORE_LAPSE_ERROR "%'" head                                           \
  " ORDER BY c.id LIMIT 1 FOR UPDATE SKIP LOCKED)"

/* `pick` locked again with the claimable test re-checked on the newest row version
 * (another host may have claimed or settled it since our snapshot). The ids go in as
 * one array: as a semi-join, a plan made before the table had statistics (a host
 * started on an empty outbox) ran the whole pick once per live row, seconds a claim. */
#define LOCK_PICK                                                                                  \
  " lp AS (SELECT o.id, o.key, o.status = 'processing' AS lapsed FROM outbox o"                    \
  " WHERE o.id = ANY (ARRAY(SELECT id FROM pick)) AND" CLAIMABLE(                                  \
      "o") " FOR UPDATE OF o SKIP LOCKED)"

/* Leases `took`; a lapsed lease counts the stopped run as an attempt. Column 7 says
 * how the row was taken: 0, STORE_LAPSED or STORE_SUSPECT; column 8 (`more`) whether
 * the statement stopped at its limit before it ran out of claimable rows, so that
 * another claim right away could find more; column 9 how long until the row is due,
 * in microseconds (0 when it is); column 10 what the next-due look would say after
 * it (NEXT_DUE), so that a claim that took rows needs no look of its own. Each
 * row is found by its id from `took` (an extra `= ANY` of all the ids, without
 * statistics, was tested against the whole array at every row: a million comparisons
 * for a claim of 1000). */
#define TAKE_SQL(more) TAKE_SQL_FROM("took", more)
#define TAKE_SQL_FROM(took, more)                                                                  \
  " UPDATE outbox o SET status = 'processing', locked_by = $1,"                                    \
  " locked_until = now() + $2::bigint * interval '1 millisecond',"                                 \
  " attempts = o.attempts + t.lapsed::int, last_error = CASE WHEN t.lapsed"                        \
  " THEN '" STORE_LAPSE_ERROR " (attempt ' || (o.attempts + 1) || ')' ELSE o.last_error END"       \
  " FROM " took " t WHERE o.id = t.id"                                                             \
  " RETURNING o.id, o.topic, o.key, o.payload, o.headers, o.attempts,"                             \
  " (extract(epoch FROM o.created_at) * 1000)::bigint,"                                            \
  " CASE WHEN NOT t.lapsed THEN 0 WHEN EXISTS (SELECT 1 FROM sus) THEN 2 ELSE 1 END, " more        \
  ", greatest(0, ceil(extract(epoch FROM o.available_at - clock_timestamp()) * 1000000))::bigint," \
  " (" NEXT_DUE_AFTER(took) ")"

/* The common case, every settlement an ack without --keep-done. $1 host, $2 ids. */
#define ACK_NAME "outboxd_ack"
#define ACK_SQL                                                                                    \
  "DELETE FROM outbox WHERE id = ANY ($2::bigint[])"                                               \
  " AND locked_by = $1 AND status = 'processing' RETURNING id"

/* $1 host. Milliseconds until something not claimable now becomes claimable: a retry
 * coming due (a keyless one: entering the horizon), or another host's lease running
 * out; counted from the server's clock as the answer leaves (not from the start of
 * the statement, which may have waited or run for a while), so that the wait starts
 * from the answer's arrival. NULL when nothing waits. Each is the first entry of its
 * index (an ORDER BY with a limit: as min(), a plan made before the table had
 * statistics read every entry ahead). Leases are left out while a pending row comes
 * due within a second: the claim it brings takes over lapsed leases too, and the
 * lease index holds every row this host has out, all read. `skip`: rows to pass over
 * (a claim's own, still pending in the claim's snapshot). */
#define DUE_NAME "outboxd_due"
#define DUE_PENDING " FROM outbox WHERE status = 'pending' AND available_at > now()"
#define NEXT_DUE(skip)                                                                             \
  "SELECT ceil(extract(epoch FROM min(t) - clock_timestamp()) * 1000)::bigint FROM ("              \
  "(SELECT available_at AS t" DUE_PENDING skip " ORDER BY available_at LIMIT 1) UNION ALL"         \
  " (SELECT available_at -" HORIZON " FROM outbox WHERE key IS NULL AND status = 'pending'"        \
  " AND available_at > now() +" HORIZON " ORDER BY available_at LIMIT 1) UNION ALL"                \
  " (SELECT locked_until FROM outbox WHERE status = 'processing'"                                  \
  " AND locked_by IS DISTINCT FROM $1 AND locked_until >= now()"                                   \
  " AND NOT EXISTS (SELECT 1" DUE_PENDING skip " AND available_at <= now() + interval '1 second')" \
  " ORDER BY locked_until LIMIT 1)) x"
#define NEXT_DUE_SQL NEXT_DUE("")
/* After a claim, in its RETURNING: the rows it took (`took`) pass for pending still. */
#define NEXT_DUE_AFTER(took) NEXT_DUE(" AND id NOT IN (SELECT id FROM " took ")")

/* Claimable rows without the key rule (keyless ones under per-key order: `free_c`
 * and `free_l` say so of c and l), skipping rows other hosts are claiming right now.
 * Each part stops at $3 rows: pending rows whose time has come, in due order off a
 * due-time index, and lapsed leases, the oldest lapse first, off the lease index
 * (their key is tested after the limit: with it inside, a planner without statistics
 * walks an index of every keyless row instead; in id order, one with statistics walks
 * every live row). Rows still ahead are never visited, however many wait. */
#define FREE_CTE(free_c, free_l)                                                                   \
  " fdue AS (SELECT c.id, false AS lapsed FROM outbox c"                                           \
  " WHERE NOT EXISTS (SELECT 1 FROM sus)" free_c " AND c.status = 'pending' AND" DUE_BY_C          \
  " ORDER BY c.available_at LIMIT $3 FOR UPDATE SKIP LOCKED),"                                     \
  " flap AS (SELECT l.id, true AS lapsed FROM (SELECT c.id, c.key FROM outbox c"                   \
  " WHERE NOT EXISTS (SELECT 1 FROM sus) AND c.status = 'processing' AND c.locked_until < now()"   \
  " AND NOT (c.id = ANY ($4::bigint[])) ORDER BY c.locked_until LIMIT $3"                          \
  " FOR UPDATE SKIP LOCKED) l" free_l "),"                                                         \
  " free AS (SELECT id, lapsed FROM fdue UNION ALL SELECT id, lapsed FROM flap)"

/* Without per-key order: the oldest claimable rows by id. */
#define CLAIM_ANY                                                                                  \
  "WITH " SUSPECT_CTE("") "," FREE_CTE(                                                            \
      "",                                                                                          \
      "") ","                                                                                      \
          " took AS (SELECT id, lapsed FROM (SELECT id, lapsed FROM free ORDER BY id LIMIT $3) f"  \
          " UNION ALL SELECT id, true FROM sus)" TAKE_SQL("(SELECT count(*) FROM free) >= $3")

/* With per-key order. The key scan visits one index entry per key with live rows (a
 * recursive CTE as a skip scan over the key index, whose first entry for a key is its
 * head), from the key after $5 to the last and then from the first, until $3
 * claimable heads are found: its cost follows the number of keys, not the backlog
 * behind them. Heads and keyless rows are merged by id; the rest of the batch goes to
 * the due events behind each head (its run), shared out evenly. A run is only taken
 * behind a head this statement locked, so it can never overtake a head another host
 * holds. */
#define NEXT_HEAD(cond)                                                                            \
  "(SELECT key, id FROM outbox WHERE key IS NOT NULL AND" LIVE " AND " cond                        \
  " ORDER BY key, id LIMIT 1)"
/* The claimable heads (`where` true of them) in key order after `cur`, then from the
 * first key. */
#define KEY_HEADS(cur, where)                                                                             \
  " ka(k, id) AS (" NEXT_HEAD(                                                                            \
      "key > " cur) " UNION ALL SELECT n.key, n.id FROM ka"                                               \
                    " CROSS JOIN LATERAL " NEXT_HEAD(                                                     \
                        "key > ka.k") " n),"                                                              \
                                      " kb(k, id) AS (" NEXT_HEAD(                                        \
                                          "key <= " cur) " UNION ALL SELECT n.key, n.id FROM kb"          \
                                                         " CROSS JOIN LATERAL " NEXT_HEAD(                \
                                                             "key > kb.k AND key <= " cur) " n),"         \
                                                                                           " head"        \
                                                                                           "s AS "        \
                                                                                           "(SELE"        \
                                                                                           "CT "          \
                                                                                           "h.id,"        \
                                                                                           " h."          \
                                                                                           "key "         \
                                                                                           "FROM "        \
                                                                                           "(SELE"        \
                                                                                           "CT "          \
                                                                                           "id "          \
                                                                                           "FROM "        \
                                                                                           "ka "          \
                                                                                           "UNION"        \
                                                                                           " ALL "        \
                                                                                           "SELEC"        \
                                                                                           "T id "        \
                                                                                           "FROM "        \
                                                                                           "kb) "         \
                                                                                           "ks"           \
                                                                                           " JOIN"        \
                                                                                           " outb"        \
                                                                                           "ox h "        \
                                                                                           "ON "          \
                                                                                           "h.id "        \
                                                                                           "= "           \
                                                                                           "ks.id"        \
                                                                                           " WHER"        \
                                                                                           "E "           \
                                                                                           "NOT "         \
                                                                                           "EXIST"        \
                                                                                           "S "           \
                                                                                           "(SELE"        \
                                                                                           "CT 1 "        \
                                                                                           "FROM "        \
                                                                                           "sus) "        \
                                                                                           "AN"           \
                                                                                           "D" CLAIMABLE( \
                                                                                               "h")       \
                                                                                               where      \
      " LIMIT $3),"
#define CLAIM_KEY                                                                                  \
  "WITH RECURSIVE " SUSPECT_CTE(HEAD_OF_KEY) "," KEY_HEADS("$5", "")                               \
      FREE_CTE(" AND c.key IS NULL", " WHERE l.key IS NULL") "," KEY_PICK_RUNS("")
/* Heads and keyless rows merged by id, locked, and the runs behind the heads; an
 * event not due (or `due_extra` false) ends its run. */
#define KEY_PICK_RUNS(due_extra)                                                                   \
  " pick AS (SELECT id FROM (SELECT id FROM heads UNION ALL SELECT id FROM free"                   \
  " UNION ALL SELECT id FROM sus) x ORDER BY id LIMIT $3)," LOCK_PICK ","                          \
  " nk AS (SELECT count(*) FILTER (WHERE key IS NOT NULL AND NOT lapsed) AS n,"                    \
  " greatest(0, $3 - count(*)) AS room FROM lp),"                                                  \
  " fol AS (SELECT f.id FROM (SELECT lp.id, lp.key, row_number() OVER (ORDER BY lp.id) - 1 AS i"   \
  " FROM lp WHERE lp.key IS NOT NULL AND NOT lp.lapsed) hd CROSS JOIN nk CROSS JOIN LATERAL"       \
  " (SELECT w.id FROM (SELECT v.id, bool_and(v.due) OVER (ORDER BY v.id) AS due FROM"              \
  " (SELECT x.id, x.status = 'pending' AND x.available_at <= now()" due_extra " AS due"            \
  " FROM outbox x WHERE x.key = hd.key AND x.key IS NOT NULL AND x." LIVE " AND x.id > hd.id"      \
  " ORDER BY x.key, x.id"                                                                          \
  " LIMIT nk.room / nk.n + CASE WHEN hd.i < nk.room % nk.n THEN 1 ELSE 0 END) v) w"                \
  " WHERE w.due) f),"                                                                              \
  " lf AS (SELECT o.id, false AS lapsed FROM outbox o WHERE EXISTS (SELECT 1 FROM fol)"            \
  " AND o.id = ANY (ARRAY(SELECT id FROM fol))"                                                    \
  " AND o.status = 'pending' AND o.available_at <= now() FOR UPDATE OF o),"                        \
  " took AS (SELECT id, lapsed FROM lp UNION ALL SELECT id, lapsed FROM lf)" TAKE_SQL(             \
      "((SELECT count(*) FROM heads) >= $3 OR (SELECT count(*) FROM free) >= $3)")

/* Claims by topic (a host that handles only some topics). $5, $6: the claimable topic
 * ranges (lo, hi; hi NULL: unbounded), in byte order as the topic indexes are built;
 * with per-key order $7, $8: the (topic, key) after which the scan starts. */
#define TC(x) " " x " COLLATE \"C\""
#define RNG_CTE " rng AS (SELECT r.lo, r.hi FROM unnest($5::text[], $6::text[]) AS r(lo, hi))"
#define IN_SET(x)                                                                                  \
  " EXISTS (SELECT 1 FROM rng WHERE" TC(x) " >= rng.lo AND (rng.hi IS NULL OR" TC(x) " < rng.hi))"
#define FREE_ROWS " o.key IS NULL AND o." LIVE
#define KEYED_ROWS " o.key IS NOT NULL AND o." LIVE
/* The first topic of rows `where` in a claimable range and `cmp` (say "> t"): one
 * index seek per range; an unbounded range gets its own branch so every bound is an
 * index bound. */
#define TOPIC_SEEK_IN(where, cmp, bound)                                                           \
  "SELECT x.t FROM rng CROSS JOIN LATERAL (SELECT" TC(                                             \
      "o.topic") " AS t FROM outbox o WHERE" where                                                 \
                 " AND" TC("o.topic") " >= rng.lo" bound                                           \
                                      " AND" TC("o.topic") " " cmp                                 \
                                                           " ORDER BY" TC("o.topic") " LIMIT 1) x"
#define TOPIC_SEEK(where, cmp)                                                                     \
  "(SELECT min(y.t) FROM (" TOPIC_SEEK_IN(                                                         \
      where, cmp, " AND" TC("o.topic") " < rng.hi") " WHERE rng.hi IS NOT NULL UNION "             \
                                                    "ALL " TOPIC_SEEK_IN(where, cmp,               \
                                                                         "") " WHERE rng.hi IS "   \
                                                                             "NULL) y)"
/* Keyless rows of each claimable topic (a skip scan over the topics), oldest first. */
#define TOPIC_FREE(lock)                                                                           \
  " tf(t) AS (SELECT " TOPIC_SEEK(FREE_ROWS, ">= ''") " UNION ALL SELECT " TOPIC_SEEK(             \
      FREE_ROWS,                                                                                   \
      "> tf.t") " FROM tf WHERE tf.t IS NOT NULL),"                                                \
                " free AS (SELECT f.id, f.lapsed FROM tf CROSS JOIN LATERAL (SELECT c.id,"         \
                " c.status = 'processing' AS lapsed FROM outbox c WHERE" TC(                       \
                    "c.topic") " = tf.t AND c.key IS NULL"                                         \
                               " AND c." LIVE                                                      \
                               " AND" CLAIMABLE("c") " ORDER BY c.id LIMIT $3" lock ") f"          \
                                                     " WHERE tf.t IS NOT NULL AND NOT EXISTS "     \
                                                     "(SELECT 1 FROM sus) ORDER BY f.id LIMIT $3)"

/* Without per-key order: the claimable rows of each claimable topic (keyed ones
 * sorted per topic: --ordering none keeps no index of them by topic and id). */
#define CLAIM_TOPIC_ANY                                                                                                                                                                       \
  "WITH RECURSIVE" RNG_CTE "," SUSPECT_CTE(" AND" IN_SET(                                                                                                                                     \
      "c.topic")) "," TOPIC_FREE(" FOR UPDATE SKIP LOCKED") ","                                                                                                                               \
                                                            " kt(t) AS (SELECT " TOPIC_SEEK(KEYED_ROWS, ">= ''") " UNION ALL SELECT " TOPIC_SEEK(                                             \
                                                                KEYED_ROWS,                                                                                                                   \
                                                                "> kt.t") " FROM kt WHERE kt.t "                                                                                              \
                                                                          "IS NOT NULL),"                                                                                                     \
                                                                          " keyed AS (SELECT "                                                                                                \
                                                                          "f.id, f.lapsed FROM "                                                                                              \
                                                                          "kt CROSS JOIN LATERAL "                                                                                            \
                                                                          "(SELECT c.id,"                                                                                                     \
                                                                          " c.status = "                                                                                                      \
                                                                          "'processing' AS "                                                                                                  \
                                                                          "lapsed FROM outbox c "                                                                                             \
                                                                          "WHERE" TC(                                                                                                         \
                                                                              "c.topic") " = kt.t"                                                                                            \
                                                                                         " AND "                                                                                              \
                                                                                         "c.key "                                                                                             \
                                                                                         "IS NOT "                                                                                            \
                                                                                         "NULL "                                                                                              \
                                                                                         "AND "                                                                                               \
                                                                                         "c." LIVE                                                                                            \
                                                                                         " AN"                                                                                                \
                                                                                         "D" CLAIMABLE(                                                                                       \
                                                                                             "c") " ORDER BY c.id LIMIT $3"                                                                   \
                                                                                                  " FOR UPDATE SKIP LOCKED) f WHERE kt.t IS NOT NULL AND NOT EXISTS (SELECT 1 FROM sus)),"    \
                                                                                                  " took AS (SELECT id, lapsed FROM (SELECT id, lapsed FROM free UNION ALL SELECT id, lapsed" \
                                                                                                  " FROM keyed) x ORDER BY id LIMIT $3),"                                                     \
                                                                                                  " took2 AS (SELECT id, lapsed FROM took UNION ALL SELECT id, true FROM sus)" TAKE_SQL_FROM( \
                                                                                                      "took2",                                                                                \
                                                                                                      "(SELECT count(*) FROM took) >= $3")

/* With per-key order: keyless rows as above; key heads from the key scan of
 * CLAIM_KEY (cursor $7), passing over a key whose head is of a topic this host does
 * not claim, so per-key order holds across hosts (a second index of keyed rows by
 * topic would double the pages every keyed claim and ack writes). Runs as in
 * CLAIM_KEY, stopping at an event of a topic this host does not claim. */
#define CLAIM_TOPIC_KEY                                                                            \
  "WITH RECURSIVE" RNG_CTE "," SUSPECT_CTE(HEAD_OF_KEY " AND" IN_SET("c.topic")) "," KEY_HEADS(    \
      "$7", " AND" IN_SET("h.topic")) TOPIC_FREE("") "," KEY_PICK_RUNS(" AND" IN_SET("x.topic"))

/* The hot statements are parsed once per connection. JIT compilation is off for the
 * session: the planner's estimates for the key scans cross jit_above_cost, and compiling
 * would cost a hundred times the statement. Their plans are generic, made once: left to
 * choose, PostgreSQL keeps planning the claim by topic afresh (35-260 ms a time, more
 * than the claim itself takes). */
#define PREPARE_AS(name, params) "PREPARE " name " (" params ") AS "
#define PREPARE_COMMON                                                                             \
  "SET jit = off; SET plan_cache_mode = force_generic_plan; " PREPARE_AS(DUE_NAME, "text")         \
      NEXT_DUE_SQL "; " PREPARE_AS(ACK_NAME, "text, bigint[]") ACK_SQL "; "
static const char prepare_claim_sql[] =
    PREPARE_COMMON PREPARE_AS(CLAIM_NAME, "text, bigint, int, bigint[], text") CLAIM_KEY
    "; " PREPARE_AS(CLAIM_TOPICS_NAME, "text, bigint, int, bigint[], text[], text[], text")
        CLAIM_TOPIC_KEY;
static const char prepare_claim_any_sql[] =
    PREPARE_COMMON PREPARE_AS(CLAIM_NAME, "text, bigint, int, bigint[]") CLAIM_ANY
    "; " PREPARE_AS(CLAIM_TOPICS_NAME, "text, bigint, int, bigint[], text[], text[]")
        CLAIM_TOPIC_ANY;

/* $1 host, $2 ids, $3 kinds (0 ack, 1 fail, 2 dead, 3 release, 4 defer, 5 emit), $4
 * args (fail, defer: available_at ms; dead: attempts to add), $5 errors, $6 keep done
 * rows; new events: $7 the id of the ack they follow (0: none, always written), $8
 * topics, $9 keys, $10 payloads, $11 headers, $12 available_at ms (0: now). Returns
 * the ids written; a missing id was fenced out, and the events following it were not
 * written either: one statement, one transaction. */
#define FOLLOW_SQL                                                                                 \
  " f AS (SELECT * FROM unnest($7::bigint[], $8::text[], $9::text[], $10::text[], $11::text[],"    \
  " $12::bigint[]) WITH ORDINALITY AS f(parent, topic, key, payload, headers, at, n)),"            \
  " ins AS (INSERT INTO outbox (topic, key, payload, headers, available_at)"                       \
  " SELECT f.topic, f.key, f.payload, f.headers, CASE WHEN f.at > 0"                               \
  " THEN to_timestamp(f.at / 1000.0) ELSE now() END FROM f WHERE f.parent = 0"                     \
  " OR f.parent IN (SELECT id FROM del UNION ALL SELECT id FROM upd) ORDER BY f.n RETURNING id)"
static const char flush_sql[] =
    "WITH s AS (SELECT * FROM unnest($2::bigint[], $3::int[], $4::bigint[], $5::text[])"
    " AS s(id, kind, arg, err)),"
    " del AS (DELETE FROM outbox o USING s WHERE o.id = s.id AND s.kind = 0 AND NOT $6"
    " AND o.locked_by = $1 AND o.status = 'processing' RETURNING o.id),"
    " upd AS (UPDATE outbox o SET"
    " status = CASE s.kind WHEN 0 THEN 'done' WHEN 2 THEN 'dead' ELSE 'pending' END,"
    " attempts = o.attempts + CASE s.kind WHEN 0 THEN 1 WHEN 1 THEN 1"
    " WHEN 2 THEN s.arg::int ELSE 0 END,"
    " available_at = CASE WHEN s.kind IN (1, 4) THEN to_timestamp(s.arg / 1000.0)"
    " WHEN s.kind IN (0, 2) THEN now() ELSE o.available_at END,"
    " last_error = CASE WHEN s.kind IN (1, 2) THEN s.err ELSE o.last_error END,"
    " locked_by = NULL, locked_until = NULL"
    " FROM s WHERE o.id = s.id AND (s.kind <> 0 OR $6)"
    " AND o.locked_by = $1 AND o.status = 'processing' RETURNING o.id)," FOLLOW_SQL
    " SELECT id FROM del UNION ALL SELECT id FROM upd";

static const char ack_sql[] = ACK_SQL;

/* $1 host, $2 ids, $3 lease ms. Returns the ids still ours. */
static const char renew_sql[] =
    "UPDATE outbox SET locked_until = now() + $3::bigint * interval '1 millisecond'"
    " WHERE id = ANY ($2::bigint[]) AND locked_by = $1 AND status = 'processing'"
    " RETURNING id";

static const char next_due_sql[] = NEXT_DUE_SQL;

/* $5: available_at in ms since the epoch, 0 for now. */
static const char insert_sql[] =
    "INSERT INTO outbox (topic, key, payload, headers, available_at) VALUES ($1, $2, $3, $4,"
    " CASE WHEN $5::bigint > 0 THEN to_timestamp($5::bigint / 1000.0) ELSE now() END)";
static const char counts_sql[] = "SELECT status, count(*) FROM outbox GROUP BY status";
static const char oldest_sql[] =
    "SELECT (extract(epoch FROM now() - min(created_at)) * 1000)::bigint FROM outbox"
    " WHERE status = 'pending'";
static const char list_dead_sql[] = "SELECT id, topic, attempts, last_error FROM outbox"
                                    " WHERE status = 'dead' ORDER BY id DESC LIMIT $1";
#define REQUEUE_SET                                                                                \
  "UPDATE outbox SET status = 'pending', attempts = 0, available_at = now(),"                      \
  " locked_by = NULL, locked_until = NULL"
/* $1: the topic, or the prefix when $2 (NULL: every topic) */
static const char requeue_dead_sql[] =
    REQUEUE_SET " WHERE status = 'dead' AND ($1::text IS NULL OR topic = $1"
                " OR ($2::boolean AND left(topic, length($1)) = $1))";
static const char topic_counts_sql[] =
    "SELECT topic, count(*) FILTER (WHERE status = 'pending'),"
    " count(*) FILTER (WHERE status = 'processing'), count(*) FILTER (WHERE status = 'dead')"
    " FROM outbox WHERE status IN ('pending', 'processing', 'dead') GROUP BY topic ORDER BY topic";
static const char requeue_ids_sql[] =
    REQUEUE_SET " WHERE id = ANY ($1::bigint[]) AND status IN ('dead', 'pending', 'done')";

/* ------------------------------------------------------------ the store */

enum {
  OP_NONE,
  OP_LISTEN,
  OP_MIGRATE,
  OP_PAUSED,
  OP_PREPARE,
  OP_FLUSH,
  OP_CLAIM,
  OP_RENEW,
  OP_NEXT_DUE,
  OP_COUNTS,
  OP_PRUNE
};

/* A batch of the oldest done (dead) rows that settled more than %lld ms ago, at most
 * %d rows. One implicit transaction whose plan cannot turn into a scan and sort of
 * every old row when the statistics lag behind (a bitmap scan and a sort would
 * read them all at each batch); the ids go in as an array, so the rows are found by
 * primary key. */
#define PRUNE_SQL(status)                                                                          \
  "SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off;"                                \
  " DELETE FROM outbox WHERE id = ANY (ARRAY(SELECT id FROM outbox WHERE status = '" status "'"    \
  " AND available_at < now() - %lld * interval '1 millisecond' ORDER BY available_at"              \
  " LIMIT %d FOR UPDATE SKIP LOCKED))"

static const char paused_sql[] = "SELECT pattern FROM outbox_paused ORDER BY pattern";
enum { ST_DOWN, ST_CONNECTING, ST_READY };

/* A growing text buffer for array literals. */
typedef struct sbuf {
  char *p;
  size_t len, cap;
  int oom;
} sbuf_t;

typedef struct pg {
  store_t base;
  PGconn *conn;
  char *url;
  char *host;
  int dispatching, closing, in_call;
  int state;
  int failures;     /* failed connections or queries in a row */
  int64_t retry_ms; /* next reconnect delay */
  int listening;    /* LISTEN done on this connection */
  int migrated;     /* the schema upgrade ran (or failed, logged) once */
  int prepared;     /* the claim statement is prepared on this connection */
  char *cursor;     /* the key after which the next key scan starts, or NULL */
  int want_paused;  /* the paused list is to be read (connected, or NOTIFY said so) */
  int connected_once;
  uv_poll_t *poll; /* on PQsocket; heap-allocated, the socket changes per connection */
  int poll_fd, poll_events;
  int op; /* the query in flight */
  int want_flush, want_claim, want_renew, want_due, want_counts;
  int op_failed;          /* the statement in flight was refused (the connection is fine) */
  int split;              /* settlements still to write one per statement, after a refusal */
  int stmt_failures;      /* refused statements in a row */
  int stmt_failed_op;     /* the kind of statement that started the streak */
  int64_t stmt_retry_ms;  /* next delay after a refused claim */
  int64_t claim_retry_at; /* after a refused claim: no claim before this (ms since the epoch) */
  int counts_failed;      /* the last counts statement was refused */
  char err_state[6];      /* SQLSTATE of the last refused statement */
  store_counts_t counts;  /* the last counts read while dispatching */
  int counts_known;
  int64_t counts_sent_ms; /* when the counts statement in flight was sent */
  int64_t counts_next_ms; /* no new counts before this: they cost at most 1% of the time */
  int dirty;              /* something may have become claimable since the last claim */
  settles_t set;          /* buffered settlements */
  int set_frees;          /* one of them may free an event for a claim (settle_frees) */
  settles_t sending;      /* the settlements in the flush in flight */
  int64_t *renewing;      /* ids in the renewal in flight */
  size_t nrenewing;
  store_event_t **buf; /* prefetched events, oldest first */
  int nbuf, capbuf, claim_limit;
  idset_t out;    /* every id claimed and not yet settled (buffered or handed out) */
  int64_t due_at; /* when due_timer fires (ms since the epoch), 0 when idle */
  uv_timer_t flush_timer, lease_timer, poll_timer, due_timer, hold_timer, retry_timer, kick_timer,
      close_timer, deadline_timer, prune_timer;
  int64_t hold_at;     /* when hold_timer fires: the first held event is due (ms since the epoch) */
  int want_prune;      /* a retention batch is wanted (lowest priority) */
  int prune_batch;     /* rows per batch (adapts to STORE_PRUNE_BUDGET_MS) */
  int prune_dead;      /* the batch prunes dead rows (else done rows) */
  uint64_t prune_sent; /* uv_hrtime() when the batch was sent */
  int nopen;
  int close_started;
  void (*close_cb)(void *arg);
  void *close_arg;
} pg_t;

static void send_next(pg_t *s);
static void connection_lost(pg_t *s, const char *what);
static void finish_close(pg_t *s);

/* ---------------------------------------------------------------- sbuf */

static void sb_put(sbuf_t *b, const char *p, size_t n) {
  if (b->oom) return;
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1) cap *= 2;
    char *q = realloc(b->p, cap);
    if (!q) {
      b->oom = 1;
      return;
    }
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->len, p, n);
  b->len += n;
  b->p[b->len] = 0;
}

static void sb_str(sbuf_t *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_int(sbuf_t *b, int64_t v) {
  char t[24];
  sb_put(b, t, store_put_int(t, v));
}

/* One element of a text[] literal: NULL, or double-quoted with \ and " escaped. */
static void sb_text_elem(sbuf_t *b, const char *s) {
  if (!s) {
    sb_str(b, "NULL");
    return;
  }
  sb_put(b, "\"", 1);
  for (const char *p = s; *p; p++) {
    if (*p == '"' || *p == '\\') sb_put(b, "\\", 1);
    sb_put(b, p, 1);
  }
  sb_put(b, "\"", 1);
}

/* One more element of an array literal, after a comma unless it is the first. */
static void sb_elem(sbuf_t *b, int64_t v, int *first) {
  if (!*first) sb_put(b, ",", 1);
  sb_int(b, v);
  *first = 0;
}

/* "{1,2,3}" for every id in the set, then those settled in `more` (may be NULL). */
static void sb_ids(sbuf_t *b, const idset_t *set, const settles_t *more) {
  int first = 1;
  sb_put(b, "{", 1);
  for (size_t i = 0; i < set->cap; i++)
    if (set->slot[i]) sb_elem(b, set->slot[i], &first);
  for (int i = 0; more && i < more->n; i++)
    if (more->v[i].kind != SETTLE_EMIT) sb_elem(b, more->v[i].id, &first);
  sb_put(b, "}", 1);
}

/* -------------------------------------------------------------- helpers */

static int64_t lease_ms(const pg_t *s) {
  return s->base.opts.lease_ms > 0 ? s->base.opts.lease_ms : 30000;
}

static void timer_after(uv_timer_t *t, uv_timer_cb cb, int64_t ms) {
  uv_timer_start(t, cb, ms > 0 ? (uint64_t)ms : 0, 0);
}

static void on_kick(uv_timer_t *t) {
  pg_t *s = t->data;
  if (s->base.opts.wake && !s->closing) s->base.opts.wake(s->base.opts.wake_arg);
}

/* Tells the dispatcher to claim again; deferred to the loop when inside a store call. */
static void wake(pg_t *s) {
  if (!s->dispatching || s->closing || !s->base.opts.wake) return;
  if (s->in_call)
    timer_after(&s->kick_timer, on_kick, 0);
  else
    s->base.opts.wake(s->base.opts.wake_arg);
}

static void on_due(uv_timer_t *t) {
  pg_t *s = t->data;
  s->due_at = 0;
  s->dirty = 1;
  wake(s);
}

/* Arms timer t to run cb once `at` (ms since the epoch) has passed, never before it
 * and within a millisecond after, unless it is armed for no later already (*when: its
 * time, 0 when not armed). The loop's clock counts whole milliseconds behind the
 * precise one: a timer fires once that count has moved on by its timeout, so the
 * part of a millisecond it lags is added before rounding up. */
static void arm_at(pg_t *s, uv_timer_t *t, uv_timer_cb cb, int64_t *when, int64_t at) {
  if (!s->dispatching || s->closing) return;
  if (*when && *when <= at) return;
  *when = at;
  uv_update_time(s->base.loop);
  int64_t lag_us = (int64_t)(uv_hrtime() / 1000) - (int64_t)uv_now(s->base.loop) * 1000;
  int64_t in_us = at * 1000 - store_now_us() + (lag_us > 0 ? lag_us : 0);
  timer_after(t, cb, (in_us + 999) / 1000);
}

/* Makes sure a wake-up happens no later than `at` (ms since the epoch). */
static void arm_due(pg_t *s, int64_t at) { arm_at(s, &s->due_timer, on_due, &s->due_at, at); }

static void on_hold(uv_timer_t *t) {
  pg_t *s = t->data;
  s->hold_at = 0;
  wake(s);
}

/* Makes sure the dispatcher asks again once the first held event is due (`at`). */
static void arm_hold(pg_t *s, int64_t at) { arm_at(s, &s->hold_timer, on_hold, &s->hold_at, at); }

/* ------------------------------------------------------------ the socket */

static void handle_gone(pg_t *s);

static void on_poll_closed(uv_handle_t *h) {
  pg_t *s = h->data;
  free(h);
  handle_gone(s);
}

static void poll_close(pg_t *s) {
  if (!s->poll) return;
  uv_close((uv_handle_t *)s->poll, on_poll_closed);
  s->poll = NULL;
  s->poll_fd = -1;
  s->poll_events = 0;
}

static void on_socket(uv_poll_t *h, int status, int events);

/* Watches PQsocket for `events`; a new socket gets a new handle. */
static int poll_watch(pg_t *s, int events) {
  int fd = PQsocket(s->conn);
  if (fd < 0) return -EBADF;
  if (s->poll && s->poll_fd != fd) poll_close(s);
  if (!s->poll) {
    s->poll = malloc(sizeof *s->poll);
    if (!s->poll) return -ENOMEM;
    if (uv_poll_init(s->base.loop, s->poll, fd)) {
      free(s->poll);
      s->poll = NULL;
      return -EBADF;
    }
    s->poll->data = s;
    s->nopen++;
    s->poll_fd = fd;
    s->poll_events = 0;
  }
  if (s->poll_events == events) return 0;
  s->poll_events = events;
  return uv_poll_start(s->poll, events, on_socket) ? -EBADF : 0;
}

/* Pushes queued output; watches for writability while some remains. */
static int flush_output(pg_t *s) {
  int rc = PQflush(s->conn);
  if (rc < 0) return -EIO;
  return poll_watch(s, UV_READABLE | (rc ? UV_WRITABLE : 0));
}

/* ------------------------------------------------------------ connection */

static void on_retry(uv_timer_t *t);

static void drop_conn(pg_t *s) {
  poll_close(s); /* before PQfinish closes the socket under the poll handle */
  if (s->conn) PQfinish(s->conn);
  s->conn = NULL;
  s->state = ST_DOWN;
  s->listening = 0;
  s->prepared = 0;
  uv_timer_stop(&s->retry_timer);
}

/* Undoes the query in flight: settlements go back to the buffer; a claim that may
 * have committed leaves rows leased to us, claimable again when the lease expires. */
static void abandon_op(pg_t *s) {
  uv_timer_stop(&s->deadline_timer);
  s->op_failed = 0;
  if (s->op == OP_FLUSH) {
    settles_restore(&s->sending, &s->set);
    s->set_frees = 1; /* written before the next claim, as it may have been */
  }
  if (s->op == OP_CLAIM) s->dirty = 1;
  if (s->op == OP_RENEW) s->want_renew = 1;
  if (s->op == OP_PRUNE) s->want_prune = 1; /* sent again once connected */
  free(s->renewing);
  s->renewing = NULL;
  s->nrenewing = 0;
  s->op = OP_NONE;
}

static void schedule_reconnect(pg_t *s) {
  if (s->closing) {
    finish_close(s);
    return;
  }
  timer_after(&s->retry_timer, on_retry, s->retry_ms);
  s->retry_ms = s->retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : s->retry_ms * 2;
}

/* Any failure on the connection: log once per streak, drop it, reconnect later.
 * `why` says what went wrong when libpq's own message would not (NULL: libpq's). */
static void connection_lost_why(pg_t *s, const char *what, const char *why) {
  const char *msg = why ? why : s->conn ? PQerrorMessage(s->conn) : "out of memory";
  char line[200];
  snprintf(line, sizeof line, "%s", msg && *msg ? msg : "connection lost");
  line[strcspn(line, "\n")] = 0;
  snprintf(s->base.err, sizeof s->base.err, "%.40s: %s", what, line);
  if (s->failures++ == 0)
    log_at(LOG_ERROR, "database unreachable, reconnecting", KS("during", what), KS("error", line),
           KI("settlements_buffered", s->set.n + s->sending.n), KI("events_out", s->out.n));
  abandon_op(s);
  drop_conn(s);
  schedule_reconnect(s);
  /* a claim waiting for this connection now reports the failure; always from the
   * loop: this runs inside store calls, and inside store_pg_open itself */
  if (s->dispatching && !s->closing) timer_after(&s->kick_timer, on_kick, 0);
}

static void connection_lost(pg_t *s, const char *what) { connection_lost_why(s, what, NULL); }

/* Called after a successful query: the first success after failures says so. */
static void db_ok(pg_t *s) {
  if (s->failures)
    log_at(LOG_INFO, "database reachable again", KI("failures", s->failures),
           KI("settlements_buffered", s->set.n + s->sending.n));
  s->failures = 0;
  s->retry_ms = RETRY_MIN_MS;
}

static void connect_step(pg_t *s) {
  PostgresPollingStatusType st = PQconnectPoll(s->conn);
  if (st == PGRES_POLLING_FAILED) {
    connection_lost(s, "connecting");
    return;
  }
  if (st != PGRES_POLLING_OK) {
    int ev = st == PGRES_POLLING_WRITING ? UV_WRITABLE : UV_READABLE;
    if (poll_watch(s, ev)) connection_lost(s, "connecting");
    return;
  }
  uv_timer_stop(&s->retry_timer);
  if (PQsetnonblocking(s->conn, 1)) {
    connection_lost(s, "connecting");
    return;
  }
  s->state = ST_READY;
  s->dirty = 1;
  if (s->out.n) s->want_renew = 1; /* leases may be near their end */
  if (poll_watch(s, UV_READABLE)) {
    connection_lost(s, "connecting");
    return;
  }
  send_next(s);
  if (s->state == ST_READY) wake(s);
}

static void on_connect_timeout(uv_timer_t *t) {
  pg_t *s = t->data;
  if (s->state != ST_CONNECTING) return;
  connection_lost(s, "connecting (timed out)");
}

/* Connection parameters every connection gets: TCP keepalives, so a peer that
 * vanished (a dead host, a cut network) is noticed without any query in flight. They
 * come before dbname, so settings in the URL win. */
#define CONN_KEYS "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count"
#define CONN_VALS "1", "30", "10", "3"

/* The longest wait for one statement's answer, in ms; 0: no limit. */
static int64_t store_timeout(const pg_t *s) { return s->base.opts.timeout_ms; }

static void start_connect(pg_t *s) {
  const char *keys[] = {CONN_KEYS, "dbname", "fallback_application_name", NULL};
  const char *vals[] = {CONN_VALS, s->url, APP_NAME, NULL};
  int64_t limit = CONNECT_TIMEOUT_MS;
  if (store_timeout(s) > 0 && store_timeout(s) < limit) limit = store_timeout(s);
  s->conn = PQconnectStartParams(keys, vals, 1);
  s->state = ST_CONNECTING;
  if (!s->conn || PQstatus(s->conn) == CONNECTION_BAD) {
    connection_lost(s, "connecting");
    return;
  }
  timer_after(&s->retry_timer, on_connect_timeout, limit);
  connect_step(s);
}

static void on_retry(uv_timer_t *t) {
  pg_t *s = t->data;
  if (s->state == ST_DOWN && !s->closing) start_connect(s);
}

/* -------------------------------------------------------------- queries */

static int send_listen(pg_t *s) {
  s->op = OP_LISTEN;
  return PQsendQuery(s->conn, "LISTEN " CHANNEL) ? 0 : -EIO;
}

#define FLUSH_ARRAYS 10 /* $2..$5 the settlements, $7..$12 the new events */

/* One new event into the follow-up arrays (arr[4..9]) of flush_sql. */
static void follow_elems(sbuf_t *arr, int64_t parent, const store_event_t *f, int first) {
  for (int k = 4; k < FLUSH_ARRAYS && !first; k++) sb_put(&arr[k], ",", 1);
  sb_int(&arr[4], parent);
  sb_text_elem(&arr[5], f->topic);
  sb_text_elem(&arr[6], f->key);
  sb_text_elem(&arr[7], f->payload);
  sb_text_elem(&arr[8], f->headers);
  sb_int(&arr[9], f->available_at > 0 ? store_clamp_time(f->available_at) : 0);
}

/* The array literals of flush_sql ($2..$5, $7..$12 in arr[0..9]) for the
 * settlements of every list in turn and their new events. Returns 0 or -ENOMEM
 * (then free the buffers all the same). */
static int settle_arrays(const settles_t *const *lists, int nlists, sbuf_t arr[FLUSH_ARRAYS]) {
  int first = 1, ffirst = 1, oom = 0;
  for (int k = 0; k < FLUSH_ARRAYS; k++) sb_put(&arr[k], "{", 1);
  for (int l = 0; l < nlists; l++) {
    for (int i = 0; i < lists[l]->n; i++) {
      const settle_t *x = &lists[l]->v[i];
      for (int k = 0; k < 4 && !first; k++) sb_put(&arr[k], ",", 1);
      first = 0;
      sb_int(&arr[0], x->id);
      sb_int(&arr[1], x->kind);
      sb_int(&arr[2], x->arg);
      sb_text_elem(&arr[3], x->err);
      for (const store_event_t *f = x->follow; f; f = f->next, ffirst = 0)
        follow_elems(arr, x->kind == STORE_ACK ? x->id : 0, f, ffirst);
    }
  }
  for (int k = 0; k < FLUSH_ARRAYS; k++) sb_put(&arr[k], "}", 1), oom |= arr[k].oom;
  return oom ? -ENOMEM : 0;
}

/* flush_sql's parameters: host, arrays, keep_done. */
static void flush_params(const pg_t *s, sbuf_t arr[FLUSH_ARRAYS], const char *v[12]) {
  v[0] = s->host;
  for (int k = 0; k < 4; k++) v[1 + k] = arr[k].p;
  v[5] = s->base.opts.keep_done_ms ? "true" : "false";
  for (int k = 4; k < FLUSH_ARRAYS; k++) v[2 + k] = arr[k].p;
}

/* Moves the buffer into the flush in flight and sends it as one statement. */
/* A statement prepared with the claim (PREPARE_AS), sent as text until it is. */
static int send_stmt(pg_t *s, const char *name, const char *sql, int n, const char *const *v) {
  int ok = s->prepared ? PQsendQueryPrepared(s->conn, name, n, v, NULL, NULL, 0)
                       : PQsendQueryParams(s->conn, sql, n, NULL, v, NULL, NULL, 0);
  return ok ? 0 : -EIO;
}

static int send_flush(pg_t *s) {
  sbuf_t arr[FLUSH_ARRAYS] = {{0}};
  if (s->split > 0 && s->set.n > 1 && settles_push(&s->sending, &s->set.v[0]) == 0) {
    /* after a refused batch: one settlement per statement, so one bad row stays alone */
    memmove(s->set.v, s->set.v + 1, (size_t)(s->set.n - 1) * sizeof *s->set.v);
    s->set.n--;
    s->split--;
  } else {
    settles_t t = s->sending;
    s->sending = s->set;
    s->set = t;
    s->split = 0;
    s->set_frees = 0;
  }
  s->want_flush = 0;
  s->op = OP_FLUSH;
  const settles_t *lists[] = {&s->sending};
  int rc = settle_arrays(lists, 1, arr), acks_only = !s->base.opts.keep_done_ms;
  for (int i = 0; i < s->sending.n && acks_only; i++)
    acks_only = s->sending.v[i].kind == STORE_ACK && !s->sending.v[i].follow;
  if (rc == 0 && acks_only) {
    const char *v[] = {s->host, arr[0].p};
    rc = send_stmt(s, ACK_NAME, ack_sql, 2, v);
  } else if (rc == 0) {
    const char *v[12];
    flush_params(s, arr, v);
    rc = PQsendQueryParams(s->conn, flush_sql, 12, NULL, v, NULL, NULL, 0) ? 0 : -EIO;
  }
  for (int k = 0; k < FLUSH_ARRAYS; k++) free(arr[k].p);
  return rc;
}

/* A claim by topic: the claimable ranges as two text[] literals (lo, hi). */
static int send_claim_topics(pg_t *s, const char *lease, const char *limit, sbuf_t *own) {
  sbuf_t lo = {0}, hi = {0};
  const topics_t *set = &s->base.claim;
  sb_put(&lo, "{", 1);
  sb_put(&hi, "{", 1);
  for (int i = 0; i < set->n; i++) {
    if (i) {
      sb_put(&lo, ",", 1);
      sb_put(&hi, ",", 1);
    }
    sb_text_elem(&lo, set->v[i].lo);
    sb_text_elem(&hi, set->v[i].hi);
  }
  sb_put(&lo, "}", 1);
  sb_put(&hi, "}", 1);
  int rc = -ENOMEM;
  const char *v[] = {s->host, lease, limit, own->p, lo.p, hi.p, s->cursor ? s->cursor : ""};
  if (!lo.oom && !hi.oom)
    rc = PQsendQueryPrepared(s->conn, CLAIM_TOPICS_NAME, s->base.opts.ordering_key ? 7 : 6, v, NULL,
                             NULL, 0)
             ? 0
             : -EIO;
  free(lo.p);
  free(hi.p);
  free(own->p);
  return rc;
}

static int send_claim(pg_t *s) {
  sbuf_t own = {0};
  char lease[24], limit[24];
  int batch = s->base.opts.batch > 0 ? s->base.opts.batch : 50;
  s->want_claim = 0;
  s->dirty = 0;
  s->op = OP_CLAIM;
  s->claim_limit = batch;
  snprintf(lease, sizeof lease, "%" PRId64, lease_ms(s));
  snprintf(limit, sizeof limit, "%d", batch);
  /* never taken over: events out, and those settled whose write may follow the claim */
  sb_ids(&own, &s->out, &s->set);
  if (own.oom) {
    free(own.p);
    return -ENOMEM;
  }
  if (!s->base.claim_all) return send_claim_topics(s, lease, limit, &own);
  const char *v[] = {s->host, lease, limit, own.p, s->cursor ? s->cursor : ""};
  int n = s->base.opts.ordering_key ? 5 : 4;
  int rc = PQsendQueryPrepared(s->conn, CLAIM_NAME, n, v, NULL, NULL, 0) ? 0 : -EIO;
  free(own.p);
  return rc;
}

/* The claim, due and ack statements are parsed once per connection. Their plans may be
 * cached (generic): every statement starts from an index, and an ANALYZE of the table
 * (autovacuum's, as it grows) invalidates a cached plan, so it never outlives the
 * statistics it was made from. */
static int send_prepare(pg_t *s) {
  s->op = OP_PREPARE;
  return PQsendQuery(s->conn, s->base.opts.ordering_key ? prepare_claim_sql : prepare_claim_any_sql)
             ? 0
             : -EIO;
}

static int send_paused(pg_t *s) {
  s->want_paused = 0;
  s->op = OP_PAUSED;
  return PQsendQuery(s->conn, paused_sql) ? 0 : -EIO;
}

/* The paused patterns of a result into the store. Returns 1 when they changed, 0, or
 * -ENOMEM. */
static int paused_from(pg_t *s, const PGresult *r) {
  int n = PQntuples(r);
  char **list = calloc(n > 0 ? (size_t)n : 1, sizeof *list);
  if (!list) return -ENOMEM;
  for (int i = 0; i < n; i++)
    if (!(list[i] = strdup(PQgetvalue(r, i, 0)))) {
      while (i--) free(list[i]);
      free(list);
      return -ENOMEM;
    }
  return store_set_paused(&s->base, list, n);
}

static int send_migrate(pg_t *s) {
  s->op = OP_MIGRATE;
  return PQsendQuery(s->conn, MIGRATE_SQL) ? 0 : -EIO;
}

static int send_renew(pg_t *s) {
  sbuf_t ids = {0};
  char lease[24];
  s->want_renew = 0;
  s->op = OP_RENEW;
  s->renewing = malloc((s->out.n ? s->out.n : 1) * sizeof *s->renewing);
  if (!s->renewing) return -ENOMEM;
  s->nrenewing = 0;
  for (size_t i = 0; i < s->out.cap; i++)
    if (s->out.slot[i]) s->renewing[s->nrenewing++] = s->out.slot[i];
  sb_ids(&ids, &s->out, NULL);
  snprintf(lease, sizeof lease, "%" PRId64, lease_ms(s));
  const char *v[] = {s->host, ids.p, lease};
  int rc = ids.oom ? -ENOMEM
                   : (PQsendQueryParams(s->conn, renew_sql, 3, NULL, v, NULL, NULL, 0) ? 0 : -EIO);
  free(ids.p);
  return rc;
}

/* Counts for metrics and readiness, read between the dispatcher's statements. */
static const char counts_async_sql[] =
    "SELECT count(*) FILTER (WHERE status = 'pending'),"
    " count(*) FILTER (WHERE status = 'processing'),"
    " count(*) FILTER (WHERE status = 'done'), count(*) FILTER (WHERE status = 'dead'),"
    " (extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'pending')) * 1000)"
    "::bigint FROM outbox";

static int send_counts(pg_t *s) {
  s->want_counts = 0;
  s->op = OP_COUNTS;
  s->counts_sent_ms = store_now_ms();
  return PQsendQuery(s->conn, counts_async_sql) ? 0 : -EIO;
}

static int send_next_due(pg_t *s) {
  const char *v[] = {s->host};
  s->want_due = 0;
  s->op = OP_NEXT_DUE;
  return send_stmt(s, DUE_NAME, next_due_sql, 1, v);
}

/* ------------------------------------------------------------- retention */

static void on_prune(uv_timer_t *t) {
  pg_t *s = t->data;
  if (s->closing) return;
  s->want_prune = 1;
  send_next(s);
}

/* One batch of old rows of one status (done first, then dead). */
static int send_prune(pg_t *s) {
  char sql[512];
  s->want_prune = 0;
  if (store_keep_ms(&s->base.opts, s->prune_dead) < 0) s->prune_dead = !s->prune_dead;
  long long keep = (long long)store_keep_ms(&s->base.opts, s->prune_dead);
  if (s->prune_dead)
    snprintf(sql, sizeof sql, PRUNE_SQL("dead"), keep, s->prune_batch);
  else
    snprintf(sql, sizeof sql, PRUNE_SQL("done"), keep, s->prune_batch);
  s->op = OP_PRUNE;
  s->prune_sent = uv_hrtime();
  return PQsendQuery(s->conn, sql) ? 0 : -EIO;
}

/* A full batch: the next one after a short gap (other statements go first); else the
 * other status, or a rest. The batch size follows the statement's time. */
static void prune_done(pg_t *s, PGresult *r) {
  if (strncmp(PQcmdStatus(r), "DELETE", 6) != 0) return; /* the SET LOCALs before it */
  int n = atoi(PQcmdTuples(r)), full = n >= s->prune_batch;
  s->prune_batch = store_prune_batch(s->prune_batch, (int64_t)(uv_hrtime() - s->prune_sent) / 1000,
                                     PRUNE_BUDGET_MS);
  if (full) {
    timer_after(&s->prune_timer, on_prune, STORE_PRUNE_GAP_MS);
  } else if (!s->prune_dead && store_keep_ms(&s->base.opts, 1) >= 0) {
    s->prune_dead = 1;
    timer_after(&s->prune_timer, on_prune, STORE_PRUNE_GAP_MS);
  } else {
    s->prune_dead = 0;
    timer_after(&s->prune_timer, on_prune, store_prune_idle_ms(&s->base.opts));
  }
}

/* Sends the most urgent wanted query when the connection is free. */
static void on_deadline(uv_timer_t *t);

static void send_next(pg_t *s) {
  if (s->state != ST_READY || s->op != OP_NONE) return;
  int rc;
  if (!s->listening)
    rc = send_listen(s);
  else if (!s->migrated && !s->closing)
    rc = send_migrate(s);
  else if (s->want_paused && !s->closing)
    rc = send_paused(s);
  else if (s->set.n && (s->want_flush || (s->want_claim && s->set_frees) || s->closing))
    rc = send_flush(s); /* before a claim only when the claim could take more after it */
  else if (s->want_claim && !s->closing)
    rc = s->prepared ? send_claim(s) : send_prepare(s); /* the claim follows the prepare */
  else if (s->want_renew && s->out.n && !s->closing)
    rc = send_renew(s);
  else if (s->want_counts && !s->closing)
    rc = send_counts(s);
  else if (s->want_due && !s->closing)
    rc = send_next_due(s);
  else if (s->want_prune && !s->closing)
    rc = send_prune(s);
  else {
    if (s->closing) finish_close(s);
    return;
  }
  if (rc == 0) rc = flush_output(s);
  if (rc) {
    connection_lost(s, "sending a query");
    return;
  }
  if (store_timeout(s) > 0) timer_after(&s->deadline_timer, on_deadline, store_timeout(s));
}

/* ----------------------------------------------------------- results */

static store_event_t *row_event(const PGresult *r, int i) {
  const char *key = PQgetisnull(r, i, 2) ? NULL : PQgetvalue(r, i, 2);
  const char *headers = PQgetisnull(r, i, 4) ? NULL : PQgetvalue(r, i, 4);
  store_event_t *ev = store_event_new(
      strtoll(PQgetvalue(r, i, 0), NULL, 10), PQgetvalue(r, i, 1), (size_t)PQgetlength(r, i, 1),
      key, key ? (size_t)PQgetlength(r, i, 2) : 0, PQgetvalue(r, i, 3),
      (size_t)PQgetlength(r, i, 3), headers, headers ? (size_t)PQgetlength(r, i, 4) : 0, 0);
  if (!ev) return NULL;
  ev->attempts = atoi(PQgetvalue(r, i, 5));
  ev->created_at = strtoll(PQgetvalue(r, i, 6), NULL, 10);
  ev->lapsed = atoi(PQgetvalue(r, i, 7));
  return ev;
}

static int buf_push(pg_t *s, store_event_t *ev) {
  if (s->nbuf == s->capbuf) {
    int cap = s->capbuf ? s->capbuf * 2 : 64;
    store_event_t **b = realloc(s->buf, (size_t)cap * sizeof *b);
    if (!b) return -ENOMEM;
    s->buf = b;
    s->capbuf = cap;
  }
  s->buf[s->nbuf++] = ev;
  return 0;
}

static int by_id(const void *a, const void *b) {
  int64_t x = (*(store_event_t *const *)a)->id, y = (*(store_event_t *const *)b)->id;
  return (x > y) - (x < y);
}

/* The key scan goes on after the keys this claim took: past the wrap-around point if
 * it wrapped (keys at or before the old cursor), else past the largest key taken. */
static void move_cursor(pg_t *s, const PGresult *r) {
  const char *old = s->cursor ? s->cursor : "", *after = NULL, *wrapped = NULL;
  for (int i = 0; i < PQntuples(r); i++) {
    if (PQgetisnull(r, i, 2)) continue;
    const char *k = PQgetvalue(r, i, 2);
    const char **best = strcmp(k, old) > 0 ? &after : &wrapped;
    if (!*best || strcmp(k, *best) > 0) *best = k;
  }
  const char *next = wrapped ? wrapped : after;
  char *copy = next ? strdup(next) : NULL;
  if (!copy) return;
  free(s->cursor);
  s->cursor = copy;
}

/* A next-due answer (column `col` of row 0): wake up then (now when it is due
 * already); NULL: nothing waits. */
static void due_from(pg_t *s, const PGresult *r, int col) {
  if (PQntuples(r) < 1 || PQgetisnull(r, 0, col)) return;
  int64_t in = strtoll(PQgetvalue(r, 0, col), NULL, 10);
  if (in > 0) {
    arm_due(s, (store_now_us() + 999) / 1000 + in); /* rounded up: never early */
    return;
  }
  s->dirty = 1; /* due already (it came due while the answer was made): no timer */
  wake(s);
}

/* Claimed rows go to the prefetch buffer (in id order) and on lease. A row we cannot
 * hold (out of memory) stays leased to us and comes back when the lease expires. */
static void claim_done(pg_t *s, const PGresult *r) {
  int rows = PQntuples(r), start = s->nbuf;
  int64_t now_us = store_now_us();
  if (s->base.opts.ordering_key) move_cursor(s, r);
  for (int i = 0; i < rows; i++) {
    store_event_t *ev = row_event(r, i);
    int64_t in_us = strtoll(PQgetvalue(r, i, 9), NULL, 10);
    if (ev && in_us > 0) /* claimed ahead: held until due, counted from the answer */
      ev->available_at = (now_us + in_us + 999) / 1000;
    if (ev && idset_add(&s->out, ev->id) == 0) {
      if (buf_push(s, ev) == 0) continue;
      idset_del(&s->out, ev->id);
    }
    store_event_free(ev);
    log_at(LOG_ERROR, "out of memory holding a claimed event; it returns after its lease");
  }
  if (s->nbuf > start) qsort(s->buf + start, (size_t)(s->nbuf - start), sizeof *s->buf, by_id);
  /* A full claim that still left claimable rows behind goes on at once. One that ran
   * out (with per-key order often a full batch of runs behind the heads it took) waits
   * for a settlement, a notification or the next due time instead of asking again:
   * the time it brought along, or (no rows to bring it) a look of its own. */
  if (rows >= s->claim_limit && PQgetvalue(r, 0, 8)[0] == 't')
    s->dirty = 1;
  else if (rows > 0)
    due_from(s, r, 10);
  else
    s->want_due = 1;
}

/* Ids returned by a fenced write: anything sent and not returned was fenced out. */
static int returned_ids(const PGresult *r, idset_t *got) {
  for (int i = 0; i < PQntuples(r); i++)
    if (idset_add(got, strtoll(PQgetvalue(r, i, 0), NULL, 10))) return -ENOMEM;
  return 0;
}

static void flush_done(pg_t *s, const PGresult *r) {
  idset_t got = {0};
  int ok = returned_ids(r, &got) == 0;
  int64_t due;
  for (int i = 0; i < s->sending.n; i++) {
    const settle_t *x = &s->sending.v[i];
    if (ok && x->kind != SETTLE_EMIT && !idset_has(&got, x->id))
      log_at(LOG_WARN, "settlement fenced out: the lease was lost", KI("id", x->id),
             KS("outcome", settle_kind_name(x->kind)));
  }
  if (settles_due(&s->sending, &due)) arm_due(s, due);
  idset_free(&got);
  settles_clear(&s->sending);
  s->dirty = 1; /* a settled head may unblock its key */
}

static void renew_done(pg_t *s, const PGresult *r) {
  idset_t got = {0};
  if (returned_ids(r, &got) == 0) {
    for (size_t i = 0; i < s->nrenewing; i++) {
      int64_t id = s->renewing[i];
      if (idset_has(&got, id) || !idset_has(&s->out, id)) continue;
      log_at(LOG_WARN, "lease lost: another host may run the event", KI("id", id));
      idset_del(&s->out, id);
    }
  }
  idset_free(&got);
  free(s->renewing);
  s->renewing = NULL;
  s->nrenewing = 0;
}

static int64_t count_at(const PGresult *r, int col) {
  return PQgetisnull(r, 0, col) ? 0 : strtoll(PQgetvalue(r, 0, col), NULL, 10);
}

static void counts_done(pg_t *s, const PGresult *r) {
  if (PQntuples(r) != 1 || PQnfields(r) != 5) return;
  s->counts.pending = count_at(r, 0);
  s->counts.processing = count_at(r, 1);
  s->counts.done = count_at(r, 2);
  s->counts.dead = count_at(r, 3);
  int64_t age = count_at(r, 4);
  s->counts.oldest_pending_age_ms = age > 0 ? age : 0;
  s->counts_known = 1;
  s->counts_failed = 0;
  int64_t now = store_now_ms(), took = now - s->counts_sent_ms;
  s->counts_next_ms = now + (took * COUNTS_COST > 900 ? took * COUNTS_COST : 900);
}

/* The first connection says so once; later ones are reported by db_ok. */
static void listen_done(pg_t *s) {
  s->listening = 1;
  s->want_paused = 1; /* what changed while no connection listened */
  if (s->connected_once++) return;
  log_at(LOG_INFO, "database connected", KS("channel", CHANNEL), KS("host_id", s->host));
}

/* One result of the query in flight. Returns 0, or -EIO when it failed. */
static int on_result(pg_t *s, PGresult *r) {
  ExecStatusType st = PQresultStatus(r);
  if (s->op == OP_MIGRATE) {
    s->migrated = 1; /* once per process, whatever the outcome */
    if (st == PGRES_COMMAND_OK) return 0;
    if (PQstatus(s->conn) != CONNECTION_OK) return -EIO;
    char line[200];
    snprintf(line, sizeof line, "%s", PQresultErrorMessage(r));
    line[strcspn(line, "\n")] = 0;
    log_at(LOG_WARN, "schema upgrade failed; claims work, slower (run: outboxd init)",
           KS("error", line));
    return 0;
  }
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) return -EIO;
  switch (s->op) {
  case OP_LISTEN: listen_done(s); break;
  case OP_PAUSED:
    if (paused_from(s, r) > 0) {
      s->dirty = 1;
      wake(s);
    }
    break;
  case OP_PREPARE: break; /* prepared once every statement of it succeeded */
  case OP_FLUSH: flush_done(s, r); break;
  case OP_CLAIM: claim_done(s, r); break;
  case OP_RENEW: renew_done(s, r); break;
  case OP_NEXT_DUE:
    if (PQntuples(r) == 1) due_from(s, r, 0);
    break;
  case OP_COUNTS: counts_done(s, r); break;
  case OP_PRUNE: prune_done(s, r); break;
  default: break;
  }
  return 0;
}

static const char *op_name(int op) {
  switch (op) {
  case OP_LISTEN: return "listening";
  case OP_PAUSED: return "reading paused topics";
  case OP_MIGRATE: return "upgrading the schema";
  case OP_PREPARE: return "preparing the claim";
  case OP_FLUSH: return "writing settlements";
  case OP_CLAIM: return "claiming";
  case OP_RENEW: return "renewing leases";
  case OP_COUNTS: return "counting";
  case OP_PRUNE: return "deleting old rows (retention)";
  default: return "looking for the next due event";
  }
}

/* 1 when the server refused the statement and the session goes on (bad data, a
 * missing table, a cancelled statement); 0 when the connection itself failed. */
static int statement_error(pg_t *s, const PGresult *r) {
  if (s->op == OP_LISTEN) return 0; /* the session is not usable without it */
  if (PQresultStatus(r) != PGRES_FATAL_ERROR || PQstatus(s->conn) != CONNECTION_OK) return 0;
  const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  /* class 08 (connection exception) and 57P (shutdown, terminated) end the session */
  return state && strncmp(state, "08", 2) != 0 && strncmp(state, "57P", 3) != 0;
}

/* A refused flush: a batch is written again one settlement per statement; a single
 * refused settlement is written once more with a plain error in place of its own,
 * and given up after that (its event returns when its lease expires). */
static void flush_refused(pg_t *s) {
  if (s->sending.n > 1) {
    log_at(LOG_WARN, "settlements refused by the database; writing them one at a time",
           KI("events", s->sending.n), KS("error", s->base.err));
    s->split = s->sending.n;
    settles_restore(&s->sending, &s->set);
  } else if (s->sending.n == 1 && !s->sending.v[0].repaired) {
    settle_t *x = &s->sending.v[0];
    char msg[400];
    log_at(LOG_WARN, "settlement refused by the database; writing it with a plain error",
           KI("id", x->id), KS("outcome", settle_kind_name(x->kind)), KS("error", s->base.err));
    snprintf(msg, sizeof msg, "the outcome could not be stored as reported: %s", s->base.err);
    free(x->err);
    x->err = store_error_text(msg);
    x->repaired = 1;
    settles_restore(&s->sending, &s->set);
  } else if (s->sending.n == 1) {
    log_at(LOG_ERROR,
           "settlement refused by the database; the event returns when its lease expires",
           KI("id", s->sending.v[0].id), KS("outcome", settle_kind_name(s->sending.v[0].kind)),
           KS("error", s->base.err));
    settles_clear(&s->sending);
  }
  s->want_flush = s->set.n > 0;
}

/* The server refused the statement in flight; the connection is kept. The first
 * refusal of a streak is logged; a refused claim is tried again after a growing
 * delay, and reports a store failure until then. */
static void statement_failed(pg_t *s, int op) {
  if (op != OP_FLUSH && s->stmt_failures++ == 0) {
    s->stmt_failed_op = op;
    if (strcmp(s->err_state, "42P01") == 0) /* undefined_table */
      log_at(LOG_ERROR, "no outbox table in the database (run: outboxd init), will retry",
             KS("during", op_name(op)), KS("error", s->base.err));
    else
      log_at(LOG_ERROR, "database refused a statement, will retry", KS("during", op_name(op)),
             KS("error", s->base.err));
  }
  switch (op) {
  case OP_FLUSH: flush_refused(s); break;
  case OP_PREPARE: /* as a refused claim (a missing table): tried again later */
  case OP_CLAIM:
    s->want_claim = 0;
    s->claim_retry_at = store_now_ms() + s->stmt_retry_ms;
    s->stmt_retry_ms = s->stmt_retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : s->stmt_retry_ms * 2;
    s->dirty = 1;
    arm_due(s, s->claim_retry_at);
    break;
  case OP_RENEW: /* the lease timer tries again */
    free(s->renewing);
    s->renewing = NULL;
    s->nrenewing = 0;
    break;
  case OP_COUNTS: s->counts_failed = 1; break;
  case OP_PRUNE: timer_after(&s->prune_timer, on_prune, RETRY_MAX_MS); break;
  default: break;
  }
}

/* A statement succeeded: a streak of refusals of its kind is over. */
static void statement_ok(pg_t *s, int op) {
  if (op == OP_PREPARE) s->prepared = 1;
  if (op == OP_CLAIM || op == OP_PREPARE) {
    s->claim_retry_at = 0;
    s->stmt_retry_ms = RETRY_MIN_MS;
  }
  if (!s->stmt_failures || op != s->stmt_failed_op) return;
  log_at(LOG_INFO, "database accepts statements again", KS("during", op_name(op)),
         KI("failures", s->stmt_failures));
  s->stmt_failures = 0;
}

/* The server's message for a failed result (its first line) into s->base.err. */
static void keep_error(pg_t *s, const PGresult *r) {
  const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
  if (!msg || !*msg) msg = PQresultErrorMessage(r);
  const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  snprintf(s->base.err, sizeof s->base.err, "%s", msg && *msg ? msg : "unknown error");
  snprintf(s->err_state, sizeof s->err_state, "%s", state ? state : "");
  s->base.err[strcspn(s->base.err, "\n")] = 0;
}

/* Reads every complete result; the query is over when PQgetResult returns NULL. */
static void read_results(pg_t *s) {
  while (s->op != OP_NONE && !PQisBusy(s->conn)) {
    PGresult *r = PQgetResult(s->conn);
    if (!r) {
      int op = s->op, failed = s->op_failed;
      s->op = OP_NONE;
      s->op_failed = 0;
      uv_timer_stop(&s->deadline_timer);
      db_ok(s);
      if (failed)
        statement_failed(s, op);
      else
        statement_ok(s, op);
      if (op == OP_CLAIM || op == OP_PREPARE || op == OP_FLUSH) wake(s);
      send_next(s);
      continue;
    }
    if (on_result(s, r)) {
      keep_error(s, r);
      if (!statement_error(s, r)) {
        PQclear(r);
        connection_lost(s, op_name(s->op));
        return;
      }
      s->op_failed = 1; /* the rest of the query's results are read before it ends */
    }
    PQclear(r);
  }
}

/* Asks the server to cancel a statement, from a thread of its own: PQcancel opens a
 * connection and waits for it, which the loop must never do. */
static void *cancel_thread(void *arg) {
  char err[256];
  PQcancel(arg, err, sizeof err);
  PQfreeCancel(arg);
  return NULL;
}

static void cancel_in_background(pg_t *s) {
  PGcancel *c = PQgetCancel(s->conn);
  pthread_attr_t a;
  pthread_t t;
  if (!c) return;
  pthread_attr_init(&a);
  pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
  if (pthread_create(&t, &a, cancel_thread, c)) PQfreeCancel(c);
  pthread_attr_destroy(&a);
}

/* The statement in flight got no answer within the store timeout (a stalled server,
 * a network that drops packets): cancel it on the server, drop the connection and
 * reconnect. The failure is logged once per streak, like any lost connection. */
static void on_deadline(uv_timer_t *t) {
  pg_t *s = t->data;
  char why[96];
  if (s->state != ST_READY || s->op == OP_NONE) return;
  snprintf(why, sizeof why, "no answer within %" PRId64 " ms (--store-timeout)", store_timeout(s));
  cancel_in_background(s);
  connection_lost_why(s, op_name(s->op), why);
}

static void read_notifies(pg_t *s) {
  PGnotify *n;
  int any = 0;
  while ((n = PQnotifies(s->conn))) {
    any = 1;
    if (n->extra && strcmp(n->extra, PAUSED_NOTE) == 0) s->want_paused = 1;
    PQfreemem(n);
  }
  if (s->want_paused) send_next(s);
  if (!any) return;
  s->dirty = 1;
  if (s->op != OP_CLAIM) wake(s);
}

static void on_socket(uv_poll_t *h, int status, int events) {
  pg_t *s = h->data;
  if (s->state == ST_CONNECTING) {
    connect_step(s);
    return;
  }
  if (s->state != ST_READY) return;
  if (status < 0) {
    connection_lost(s, op_name(s->op));
    return;
  }
  if ((events & UV_WRITABLE) && flush_output(s)) {
    connection_lost(s, op_name(s->op));
    return;
  }
  if (!(events & UV_READABLE)) return;
  if (!PQconsumeInput(s->conn)) {
    connection_lost(s, op_name(s->op));
    return;
  }
  read_notifies(s);
  read_results(s);
}

/* ---------------------------------------------------------- settlements */

static void on_flush_timer(uv_timer_t *t) {
  pg_t *s = t->data;
  s->want_flush = 1;
  send_next(s);
}

/* Appends settlement x to the buffer (its follow-ups taken over) and arms the flush.
 * `keyed`: x settles an event whose key holds others back. */
static void buffer(pg_t *s, settle_t *x, int keyed) {
  int frees = settle_frees(x, keyed);
  if (settles_add(&s->set, x)) return;
  s->set_frees |= frees;
  int batch = s->base.opts.batch > 0 ? s->base.opts.batch : 1;
  if (s->set.n >= batch) {
    s->want_flush = 1;
    s->in_call++;
    send_next(s);
    s->in_call--;
    return;
  }
  if (!uv_is_active((uv_handle_t *)&s->flush_timer))
    timer_after(&s->flush_timer, on_flush_timer, FLUSH_DELAY_MS);
}

static void pg_settle(store_t *b, store_event_t *ev, int kind, int64_t arg, const char *err);

/* A claimed run may be handed out in parts (a claim asks for fewer events than the
 * buffer holds). When an event of it goes back (failed, released, deferred), the
 * events of its key still in the buffer go back too, untouched, so none overtakes it. */
static void release_buffered_key(pg_t *s, const store_event_t *ev) {
  store_event_t **back = malloc((size_t)(s->nbuf ? s->nbuf : 1) * sizeof *back);
  int k = 0, n = 0;
  if (!back) return; /* they stay; the dispatcher holds back what it can */
  for (int i = 0; i < s->nbuf; i++) {
    store_event_t *b = s->buf[i];
    if (b->key && b->id > ev->id && strcmp(b->key, ev->key) == 0)
      back[n++] = b;
    else
      s->buf[k++] = b;
  }
  s->nbuf = k;
  for (int i = 0; i < n; i++) pg_settle(&s->base, back[i], STORE_RELEASE, 0, NULL);
  free(back);
}

static void pg_settle(store_t *b, store_event_t *ev, int kind, int64_t arg, const char *err) {
  pg_t *s = (pg_t *)b;
  if (kind != STORE_ACK && kind != STORE_DEAD && ev->key && s->base.opts.ordering_key && s->nbuf)
    release_buffered_key(s, ev);
  int keyed = ev->key && s->base.opts.ordering_key;
  idset_del(&s->out, ev->id);
  settle_t x = settle_take(ev, kind, arg, err);
  buffer(s, &x, keyed);
}

static void pg_push(store_t *b, store_event_t *list) {
  pg_t *s = (pg_t *)b;
  if (!s->dispatching) {
    store_event_list_free(list);
    return;
  }
  settle_t x = settle_emit(list);
  buffer(s, &x, 0);
}

/* Asks for the buffer to be written now; the write completes on the loop. */
static int pg_flush(store_t *b) {
  pg_t *s = (pg_t *)b;
  if (!s->dispatching || !s->set.n) return 0;
  s->want_flush = 1;
  s->in_call++;
  send_next(s);
  s->in_call--;
  return 0;
}

static int pg_exhausted(store_t *b) { return 0; }

/* ---------------------------------------------------------------- claims */

/* Hands out prefetched events and starts the next claim query when something may
 * have become claimable. With nothing at hand while a claim is under way it returns
 * -EINPROGRESS: a wake-up follows when the rows arrive. */
static int pg_claim(store_t *b, int max, store_event_t **out, int *n) {
  pg_t *s = (pg_t *)b;
  *n = 0;
  if (!s->dispatching) {
    snprintf(s->base.err, sizeof s->base.err, "claim needs a host id");
    return -EINVAL;
  }
  if (max <= 0 || s->closing) return 0;
  if (s->failures > 0 && s->state != ST_READY && s->nbuf == 0)
    return -ENOTCONN; /* down and reconnecting: a failure, not a claim under way */
  if (s->claim_retry_at && s->nbuf == 0 && store_now_ms() < s->claim_retry_at)
    return -EIO; /* the last claim was refused (s->base.err); tried again when due */
  int64_t now = store_now_ms(), next;
  int got = store_take_due(s->buf, &s->nbuf, max, now, out, &next);
  *n = got;
  int held = next > now; /* every event left is claimed ahead and not due yet */
  if (held) arm_hold(s, next);
  /* A settlement makes room, and what did not fit in the last claim (or what its
   * write frees: heads that unblock their keys, releases, retries) is claimed then: a
   * claim follows a flush in flight, and waits for buffered settlements that may free
   * an event. Plain acks of other events free nothing, so a claim does not wait for
   * their write (within FLUSH_DELAY_MS) and passes over their rows. Without a claim
   * after plain acks, a host whose last claim was full took nothing more while
   * another host took every key. */
  if (s->set.n || s->op == OP_FLUSH) s->dirty = 1;
  if (s->dirty && s->op != OP_CLAIM && !s->want_claim && (s->nbuf == 0 || held)) {
    s->want_claim = 1;
    s->in_call++;
    send_next(s);
    s->in_call--;
  }
  if (uv_is_active((uv_handle_t *)&s->poll_timer)) uv_timer_again(&s->poll_timer);
  if (got == 0 && (s->want_claim || s->op == OP_CLAIM || held)) return -EINPROGRESS;
  return 0;
}

/* ---------------------------------------------------------- timers */

static void on_lease(uv_timer_t *t) {
  pg_t *s = t->data;
  if (!s->out.n && !s->set.n) return;
  s->want_renew = s->out.n > 0;
  s->want_flush = s->set.n > 0;
  send_next(s);
}

static void on_poll(uv_timer_t *t) {
  pg_t *s = t->data;
  s->dirty = 1;
  wake(s);
}

/* ---------------------------------------------------------- open, close */

static uv_timer_t *timer_at(pg_t *s, int i) {
  uv_timer_t *all[] = {&s->flush_timer,    &s->lease_timer, &s->poll_timer, &s->due_timer,
                       &s->hold_timer,     &s->retry_timer, &s->kick_timer, &s->close_timer,
                       &s->deadline_timer, &s->prune_timer};
  return i < (int)(sizeof all / sizeof all[0]) ? all[i] : NULL;
}

static void destroy(pg_t *s) {
  if (s->conn) PQfinish(s->conn);
  for (int i = 0; i < s->nbuf; i++) store_event_free(s->buf[i]);
  free(s->buf);
  settles_free(&s->set);
  settles_free(&s->sending);
  free(s->renewing);
  idset_free(&s->out);
  free(s->url);
  free(s->host);
  free(s->cursor);
  store_topics_free(&s->base);
  free(s);
}

/* One handle fewer; after the last one the store is freed and close_cb runs. */
static void handle_gone(pg_t *s) {
  if (--s->nopen) return;
  void (*cb)(void *) = s->close_cb;
  void *arg = s->close_arg;
  destroy(s);
  if (cb) cb(arg);
}

static void on_closed(uv_handle_t *h) { handle_gone(h->data); }

/* The last flush is done (or given up on): close the socket and every timer. */
static void finish_close(pg_t *s) {
  if (s->close_started) return;
  s->close_started = 1;
  if (s->set.n + s->sending.n)
    log_at(LOG_ERROR, "settlements not written; those events return when their leases expire",
           KI("events", s->set.n + s->sending.n));
  poll_close(s);
  if (s->conn) PQfinish(s->conn);
  s->conn = NULL;
  for (int i = 0; timer_at(s, i); i++) uv_close((uv_handle_t *)timer_at(s, i), on_closed);
}

static void on_close_timeout(uv_timer_t *t) { finish_close(t->data); }

/* Prefetched events go back as releases, buffered settlements are written (up to
 * CLOSE_TIMEOUT_MS), then every handle closes and cb runs. */
static void pg_close(store_t *b, void (*cb)(void *arg), void *arg) {
  pg_t *s = (pg_t *)b;
  s->close_cb = cb;
  s->close_arg = arg;
  int n = s->nbuf;
  s->nbuf = 0; /* released whole: none of them overtakes another */
  for (int i = 0; i < n; i++) pg_settle(&s->base, s->buf[i], STORE_RELEASE, 0, NULL);
  s->closing = 1;
  for (int i = 0; i < 6; i++) uv_timer_stop(timer_at(s, i)); /* flush .. retry */
  if (!s->dispatching || s->state != ST_READY) {
    finish_close(s);
    return;
  }
  timer_after(&s->close_timer, on_close_timeout, CLOSE_TIMEOUT_MS);
  send_next(s);
}

/* ------------------------------------------------------ operations handle */

/* Runs one statement on a blocking (operations) connection. Returns the result, or
 * NULL with s->base.err set. */
static PGresult *ops_exec(pg_t *s, const char *sql, int n, const char *const *vals,
                          const char *what) {
  PGresult *r = PQexecParams(s->conn, sql, n, NULL, vals, NULL, NULL, 0);
  ExecStatusType st = PQresultStatus(r);
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return r;
  snprintf(s->base.err, sizeof s->base.err, "%s: %s", what,
           r ? PQresultErrorMessage(r) : PQerrorMessage(s->conn));
  s->base.err[strcspn(s->base.err, "\n")] = 0;
  PQclear(r);
  return NULL;
}

static int exec_cmd(pg_t *s, const char *sql, const char *what) {
  PGresult *r = ops_exec(s, sql, 0, NULL, what);
  PQclear(r);
  return r ? 0 : -EIO;
}

static int need_ops(pg_t *s) {
  if (!s->dispatching) return 0;
  snprintf(s->base.err, sizeof s->base.err, "not available while dispatching");
  return -ENOTSUP;
}

/* libpq passes text as C strings: a NUL byte would end the payload early. */
static const char *pg_refuses(store_t *b, const store_event_t *ev) {
  if (memchr(ev->payload, 0, ev->payload_len))
    return "payload contains a NUL character (\\u0000), which PostgreSQL text cannot hold";
  return NULL;
}

static int pg_enqueue(store_t *b, store_event_t *const *evs, int n) {
  pg_t *s = (pg_t *)b;
  int rc = need_ops(s);
  if (rc) return rc;
  for (int i = 0; i < n; i++) {
    const char *why = pg_refuses(b, evs[i]);
    if (!why) continue;
    snprintf(s->base.err, sizeof s->base.err, "event %d of %d: %s; nothing written", i + 1, n, why);
    return -EINVAL;
  }
  rc = exec_cmd(s, "BEGIN", "enqueueing");
  if (rc) return rc;
  for (int i = 0; i < n && !rc; i++) {
    char at[24];
    snprintf(at, sizeof at, "%" PRId64, store_clamp_time(evs[i]->available_at));
    const char *v[] = {evs[i]->topic, evs[i]->key, evs[i]->payload, evs[i]->headers, at};
    PGresult *r = ops_exec(s, insert_sql, 5, v, "enqueueing");
    rc = r ? 0 : -EIO;
    PQclear(r);
  }
  if (!rc) rc = exec_cmd(s, "COMMIT", "enqueueing");
  if (rc) PQclear(PQexec(s->conn, "ROLLBACK"));
  return rc;
}

/* Requeued events keep last_error; attempts restart at 0 and they are due at once.
 * Running hosts are woken through the channel. */
static int pg_requeue(store_t *b, const int64_t *ids, int n, const char *topic, int64_t *moved) {
  pg_t *s = (pg_t *)b;
  *moved = 0;
  int rc = need_ops(s);
  if (rc) return rc;
  sbuf_t list = {0};
  sb_put(&list, "{", 1);
  for (int i = 0; i < n; i++) {
    if (i) sb_put(&list, ",", 1);
    sb_int(&list, ids[i]);
  }
  sb_put(&list, "}", 1);
  if (list.oom) {
    free(list.p);
    return -ENOMEM;
  }
  int prefix, len = store_topic_pattern(topic, &prefix);
  char *exact = topic ? strndup(topic, (size_t)len) : NULL;
  if (topic && !exact) {
    free(list.p);
    return -ENOMEM;
  }
  const char *v[] = {list.p};
  const char *dv[] = {exact, prefix ? "true" : "false"};
  rc = exec_cmd(s, "BEGIN", "requeueing");
  PGresult *r =
      rc ? NULL
         : ops_exec(s, n ? requeue_ids_sql : requeue_dead_sql, n ? 1 : 2, n ? v : dv, "requeueing");
  free(exact);
  if (r) *moved = strtoll(PQcmdTuples(r), NULL, 10);
  rc = r ? 0 : -EIO;
  PQclear(r);
  if (!rc) rc = exec_cmd(s, "SELECT pg_notify('" CHANNEL "', '')", "requeueing");
  if (!rc) rc = exec_cmd(s, "COMMIT", "requeueing");
  if (rc) {
    PQclear(PQexec(s->conn, "ROLLBACK"));
    *moved = 0;
  }
  free(list.p);
  return rc;
}

/* Brings the schema up to date first (the paused table and its NOTIFY trigger may be
 * missing in a database an earlier version created). */
static int pg_pause(store_t *b, const char *pattern, int on, int *changed) {
  pg_t *s = (pg_t *)b;
  const char *v[] = {pattern};
  *changed = 0;
  int rc = need_ops(s);
  if (!rc) rc = exec_cmd(s, MIGRATE_SQL, on ? "pausing" : "resuming");
  PGresult *r = rc ? NULL
                   : ops_exec(s,
                              on ? "INSERT INTO outbox_paused (pattern) VALUES ($1)"
                                   " ON CONFLICT DO NOTHING"
                                 : "DELETE FROM outbox_paused WHERE pattern = $1",
                              1, v, on ? "pausing" : "resuming");
  if (r) *changed = strtoll(PQcmdTuples(r), NULL, 10) > 0;
  PQclear(r);
  if (!r) return rc ? rc : -EIO;
  r = ops_exec(s, paused_sql, 0, NULL, "reading paused topics");
  rc = r ? (paused_from(s, r) < 0 ? -ENOMEM : 0) : -EIO;
  PQclear(r);
  return rc;
}

/* While dispatching, counts are read on the loop's connection between other
 * statements: this returns the last ones read and asks for fresh ones; -EAGAIN
 * (not a failure) before the first arrive. */
static int counts_cached(pg_t *s, store_counts_t *c) {
  if (s->failures > 0 && s->state != ST_READY) return -ENOTCONN; /* s->base.err says why */
  if (s->op != OP_COUNTS && !s->closing && store_now_ms() >= s->counts_next_ms) {
    s->want_counts = 1;
    s->in_call++;
    send_next(s);
    s->in_call--;
  }
  if (s->counts_failed) return -EIO;
  if (!s->counts_known) return -EAGAIN;
  *c = s->counts;
  return 0;
}

static int pg_counts(store_t *b, store_counts_t *c) {
  pg_t *s = (pg_t *)b;
  memset(c, 0, sizeof *c);
  if (s->dispatching) return counts_cached(s, c);
  PGresult *r = ops_exec(s, counts_sql, 0, NULL, "counting");
  if (!r) return -EIO;
  for (int i = 0; i < PQntuples(r); i++)
    store_counts_set(c, PQgetvalue(r, i, 0), strtoll(PQgetvalue(r, i, 1), NULL, 10));
  PQclear(r);
  r = ops_exec(s, oldest_sql, 0, NULL, "counting");
  if (!r) return -EIO;
  if (PQntuples(r) == 1 && !PQgetisnull(r, 0, 0)) {
    int64_t age = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
    c->oldest_pending_age_ms = age > 0 ? age : 0;
  }
  PQclear(r);
  return 0;
}

static int pg_topic_counts(store_t *b,
                           void (*cb)(void *arg, const char *topic, int64_t pending,
                                      int64_t processing, int64_t dead),
                           void *arg) {
  pg_t *s = (pg_t *)b;
  int rc = need_ops(s);
  if (rc) return rc;
  PGresult *r = ops_exec(s, topic_counts_sql, 0, NULL, "counting by topic");
  if (!r) return -EIO;
  for (int i = 0; i < PQntuples(r); i++)
    cb(arg, PQgetvalue(r, i, 0), strtoll(PQgetvalue(r, i, 1), NULL, 10),
       strtoll(PQgetvalue(r, i, 2), NULL, 10), strtoll(PQgetvalue(r, i, 3), NULL, 10));
  PQclear(r);
  return 0;
}

static int pg_list_dead(store_t *b, int max,
                        void (*cb)(void *arg, int64_t id, const char *topic, int attempts,
                                   const char *last_error),
                        void *arg) {
  pg_t *s = (pg_t *)b;
  int rc = need_ops(s);
  if (rc) return rc;
  char lim[24];
  snprintf(lim, sizeof lim, "%d", max);
  const char *v[] = {lim};
  PGresult *r = ops_exec(s, list_dead_sql, 1, v, "listing dead events");
  if (!r) return -EIO;
  for (int i = 0; i < PQntuples(r); i++)
    cb(arg, strtoll(PQgetvalue(r, i, 0), NULL, 10), PQgetvalue(r, i, 1), atoi(PQgetvalue(r, i, 2)),
       PQgetisnull(r, i, 3) ? NULL : PQgetvalue(r, i, 3));
  PQclear(r);
  return 0;
}

/* ------------------------------------------------------------- salvage */

#define SALVAGE_TIMEOUT_S "5" /* connect, lock and statement timeouts of a salvage */

/* $1 host. Every event this host still holds, back to pending, no attempt used. */
static const char release_all_sql[] =
    "UPDATE outbox SET status = 'pending', locked_by = NULL, locked_until = NULL"
    " WHERE locked_by = $1 AND status = 'processing'";

/* Another thread, a connection of its own: the loop thread is stopped outside the
 * store, so the buffers hold still. The flush in flight may have committed already;
 * writing it again is harmless, every write being fenced on status 'processing'. */
static int pg_salvage(store_t *b, int64_t dead_id, const char *err, char *errbuf, size_t errlen) {
  pg_t *s = (pg_t *)b;
  const char *keys[] = {"dbname", "fallback_application_name", "connect_timeout", "options", NULL};
  const char *vals[] = {s->url, APP_NAME "-salvage", SALVAGE_TIMEOUT_S,
                        "-c lock_timeout=" SALVAGE_TIMEOUT_S "s"
                        " -c statement_timeout=" SALVAGE_TIMEOUT_S "s",
                        NULL};
  char *why = store_error_text(err);
  settle_t dead = {dead_id, 1, STORE_DEAD, why, 0, NULL};
  settles_t verdict = {&dead, dead_id > 0, 1};
  const settles_t *lists[] = {&s->sending, &s->set, &verdict};
  sbuf_t arr[FLUSH_ARRAYS] = {{0}};
  int rc = -ENOMEM, released = 0;
  PGconn *c = PQconnectdbParams(keys, vals, 1);
  PGresult *r = NULL;
  if (!c || PQstatus(c) != CONNECTION_OK) {
    rc = -ECONNREFUSED;
    goto done;
  }
  if (settle_arrays(lists, 3, arr)) goto done;
  rc = -EIO;
  r = PQexec(c, "BEGIN");
  if (PQresultStatus(r) != PGRES_COMMAND_OK) goto done;
  PQclear(r);
  const char *fv[12];
  flush_params(s, arr, fv);
  r = PQexecParams(c, flush_sql, 12, NULL, fv, NULL, NULL, 0);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) goto done;
  PQclear(r);
  const char *rv[] = {s->host};
  r = PQexecParams(c, release_all_sql, 1, NULL, rv, NULL, NULL, 0);
  if (PQresultStatus(r) != PGRES_COMMAND_OK) goto done;
  released = atoi(PQcmdTuples(r));
  PQclear(r);
  r = PQexec(c, "COMMIT");
  if (PQresultStatus(r) == PGRES_COMMAND_OK) rc = released;
done:
  if (rc < 0) {
    snprintf(errbuf, errlen, "--db %s: %s", s->url, c ? PQerrorMessage(c) : "out of memory");
    errbuf[strcspn(errbuf, "\n")] = 0;
  }
  PQclear(r);
  PQfinish(c);
  for (int k = 0; k < FLUSH_ARRAYS; k++) free(arr[k].p);
  free(why);
  return rc;
}

static const store_ops_t pg_ops = {
    .name = "postgres",
    .claim = pg_claim,
    .settle = pg_settle,
    .flush = pg_flush,
    .exhausted = pg_exhausted,
    .counts = pg_counts,
    .enqueue = pg_enqueue,
    .push = pg_push,
    .requeue = pg_requeue,
    .topic_counts = pg_topic_counts,
    .list_dead = pg_list_dead,
    .salvage = pg_salvage,
    .refuses = pg_refuses,
    .close = pg_close,
    .pause = pg_pause,
    .filters = 1,
};

/* A blocking connection for the operations commands (not the loop). Returns the
 * connection, or NULL with a one-line reason in errbuf. */
static PGconn *connect_blocking(const char *url, char *errbuf, size_t errlen) {
  const char *keys[] = {CONN_KEYS, "dbname", "fallback_application_name", NULL};
  const char *vals[] = {CONN_VALS, url, APP_NAME "-ops", NULL};
  PGconn *c = PQconnectdbParams(keys, vals, 1);
  if (c && PQstatus(c) == CONNECTION_OK) return c;
  snprintf(errbuf, errlen, "--db %s: %s", url, c ? PQerrorMessage(c) : "out of memory");
  errbuf[strcspn(errbuf, "\n")] = 0;
  PQfinish(c);
  return NULL;
}

static int check_table(PGconn *c, const char *url, char *errbuf, size_t errlen) {
  PGresult *r = PQexec(c, "SELECT to_regclass('outbox') IS NOT NULL");
  int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
  int yes = ok && strcmp(PQgetvalue(r, 0, 0), "t") == 0;
  PQclear(r);
  if (yes) return 0;
  if (ok)
    snprintf(errbuf, errlen, "no outbox table in %s (run: outboxd init --db %s)", url, url);
  else
    snprintf(errbuf, errlen, "--db %s: %s", url, PQerrorMessage(c));
  return -ENOENT;
}

static void init_timers(pg_t *s) {
  for (int i = 0; timer_at(s, i); i++) {
    uv_timer_init(s->base.loop, timer_at(s, i));
    timer_at(s, i)->data = s;
    s->nopen++;
  }
}

static void start_dispatching(pg_t *s) {
  int64_t every = lease_ms(s) / 3 > 0 ? lease_ms(s) / 3 : 1;
  uv_timer_start(&s->lease_timer, on_lease, (uint64_t)every, (uint64_t)every);
  if (s->base.opts.poll_ms > 0)
    uv_timer_start(&s->poll_timer, on_poll, (uint64_t)s->base.opts.poll_ms,
                   (uint64_t)s->base.opts.poll_ms);
  s->dirty = 1;
  s->prune_batch = store_prune_batch(0, 0, PRUNE_BUDGET_MS);
  if (store_prunes(&s->base.opts)) timer_after(&s->prune_timer, on_prune, STORE_PRUNE_GAP_MS);
  start_connect(s);
}

/* Without opts->host_id the store is an operations handle (status, enqueue, requeue):
 * it connects with blocking libpq calls and needs the outbox table. With a host id it
 * dispatches: it connects asynchronously (a failure is logged and retried with backoff,
 * never fatal), and never runs DDL — `outboxd init` creates the schema. */
int store_pg_open(uv_loop_t *loop, const char *url, const store_opts_t *opts, store_t **out,
                  char *errbuf, size_t errlen) {
  int rc = -ENOMEM;
  *out = NULL;
  pg_t *s = calloc(1, sizeof *s);
  if (!s) goto fail_nomem;
  s->base.ops = &pg_ops;
  s->base.loop = loop;
  s->base.opts = *opts;
  s->base.want_all = s->base.claim_all = 1;
  s->dispatching = opts->host_id != NULL;
  s->url = strdup(url);
  s->host = opts->host_id ? strdup(opts->host_id) : NULL;
  if (!s->url || (opts->host_id && !s->host)) goto fail_nomem;
  s->base.opts.host_id = s->host;
  s->poll_fd = -1;
  s->retry_ms = RETRY_MIN_MS;
  s->stmt_retry_ms = RETRY_MIN_MS;
  if (!s->dispatching) {
    s->conn = connect_blocking(url, errbuf, errlen);
    rc = s->conn ? check_table(s->conn, url, errbuf, errlen) : -ECONNREFUSED;
    if (rc) goto fail;
    PGresult *r = PQexec(s->conn, paused_sql); /* none when the table is missing */
    if (PQresultStatus(r) == PGRES_TUPLES_OK && paused_from(s, r) < 0) {
      PQclear(r);
      goto fail_nomem;
    }
    PQclear(r);
  }
  init_timers(s);
  if (s->dispatching) start_dispatching(s);
  *out = &s->base;
  return 0;
fail_nomem:
  snprintf(errbuf, errlen, "--db %s: out of memory", url);
fail:
  if (s) destroy(s);
  return rc;
}

/* Creates the outbox table, its indexes and the NOTIFY trigger if missing, under an
 * advisory lock so concurrent inits do not race. */
int store_pg_init_schema(const char *url, char *errbuf, size_t errlen) {
  PGconn *c = connect_blocking(url, errbuf, errlen);
  if (!c) return -ECONNREFUSED;
  PGresult *r = PQexec(c, schema_sql);
  int rc = PQresultStatus(r) == PGRES_COMMAND_OK ? 0 : -EIO;
  if (rc) {
    snprintf(errbuf, errlen, "--db %s: %s", url, PQerrorMessage(c));
    errbuf[strcspn(errbuf, "\n")] = 0;
  }
  PQclear(r);
  PQfinish(c);
  return rc;
}
