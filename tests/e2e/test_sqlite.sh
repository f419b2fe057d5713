# The SQLite store end to end: real database files shared with other processes
# (the sqlite3 CLI, other outboxd hosts), crashes, stalls, locks and bad files.

# sql DB STATEMENT...: the sqlite3 CLI, waiting out a lock like an application would
sql() { local db=$1; shift; sqlite3 -cmd '.timeout 10000' "$db" "$@"; }

# settled DB: nothing is pending or processing
settled() { [ "$(sql "$1" "SELECT count(*) FROM outbox WHERE status IN ('pending','processing')")" = 0 ]; }

# wait_settled DB [SECONDS]: until nothing is pending or processing (default 60 s)
wait_settled() {
  wait_until "${2:-60}" "$1 to settle" settled "$1" ||
    { echo "      ($(sql "$1" "SELECT status, count(*) FROM outbox GROUP BY status" | tr '\n' ' '))" >&2; return 1; }
}

# status_is DB JSON: `outboxd status --json` without the age and the topics
status_is() {
  local got
  got=$("$OUTBOXD" status --db "$1" --json | sed -E 's/, "oldest_pending_age_ms": [0-9]+, "topics": .*$/}/')
  assert_eq "$got" "$2" "status of $1"
}

# A handler that logs every id it sees (the test counts them).
log_handler() { printf 'return function(ev) outbox.log.info("HANDLED", { topic = ev.topic }) end\n' > "$1"; }

t_sqlite_round_trip_cli_and_sql_exactly_once() {
  log_handler h.lua
  "$OUTBOXD" init --db x.db 2> /dev/null || fail "init"
  "$OUTBOXD" run h.lua --db x.db --log text 2> log &
  local pid=$!
  wait_for 'started' log || { kill -9 $pid; return 1; }
  # an application inserting rows one transaction at a time, beside the CLI
  ( for i in $(seq 1 100); do sql x.db "INSERT INTO outbox (topic, key, payload) VALUES ('sql', 'k$((i % 7))', '$i')"; done ) &
  local app=$!
  for i in $(seq 1 40); do "$OUTBOXD" enqueue --db x.db --topic cli --payload "$i" 2> /dev/null || fail "enqueue $i"; done
  ndjson 200 nd | "$OUTBOXD" enqueue --db x.db 2> /dev/null || fail "enqueue NDJSON"
  sql x.db "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
            INSERT INTO outbox (topic, payload) SELECT 'bulk', i FROM n"
  wait $app
  wait_count 'HANDLED' log 640 60 || { kill -9 $pid; return 1; }
  kill -TERM $pid; wait $pid; local rc=$?
  assert_eq "$rc" 0 "exit code after SIGTERM"
  grep -oE 'HANDLED id=[0-9]+' log | sort | uniq -d > dups
  assert_eq "$(grep -oE 'HANDLED id=[0-9]+' log | sort -u | wc -l)" 640 "unique events handled"
  assert_eq "$(wc -l < dups)" 0 "events handled twice"
  for t in sql cli nd bulk; do
    assert_eq "$(grep -c "HANDLED id=.* topic=$t\$" log)" \
      "$(case $t in sql) echo 100;; cli) echo 40;; nd) echo 200;; bulk) echo 300;; esac)" "topic $t"
  done
  status_is x.db '{"pending": 0, "processing": 0, "done": 0, "dead": 0}'
}

# Three hosts are killed with SIGKILL mid-run, a fourth finishes: nothing is lost.
# Each killed host stops starting new work once it has handled STOP_AFTER events
# (its later runs wait, holding their leases, and it says so in `stopped`), so the
# kill always finds leased rows and events left, however fast the machine runs.
t_sqlite_sigkill_loses_nothing() {
  cat > h.lua <<'LUA'
local stop_after, n, stopped = tonumber(os.getenv("STOP_AFTER")), 0, false
return function(ev)
  outbox.sleep(0.004)
  if stop_after and n >= stop_after then
    if not stopped then
      stopped = true
      local f = assert(io.open("stopped", "a")); f:write("x\n"); f:close()
    end
    outbox.sleep(3600)
  end
  n = n + 1
  local f = assert(io.open("seen", "a"))
  f:write(ev.id, "\n"); f:flush(); f:close()
end
LUA
  "$OUTBOXD" init --db x.db 2> /dev/null
  sql x.db "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
            INSERT INTO outbox (topic, key, payload) SELECT 't', 'k' || (i % 50), i FROM n"
  : > seen
  local round=0 stop_after
  for stop_after in 300 500 500; do
    round=$((round + 1))
    STOP_AFTER=$stop_after "$OUTBOXD" run h.lua --db x.db --lease 500 --concurrency 20 --log text 2>> log &
    local pid=$!
    wait_count '.' stopped $round 60 || { kill -9 $pid; return 1; }
    assert_grep '' <(sql x.db "SELECT 1 FROM outbox WHERE status = 'processing' LIMIT 1") "round $round: leased rows at the kill"
    kill -9 $pid; wait $pid 2> /dev/null
  done
  "$OUTBOXD" run h.lua --db x.db --lease 500 --concurrency 20 --log text 2>> log &
  local pid=$!
  wait_count ' started ' log 4 60 || { kill -9 $pid; return 1; }
  wait_settled x.db 60 || { kill -9 $pid; return 1; }
  kill -TERM $pid; wait $pid; assert_eq "$?" 0 "final run exits 0"
  assert_eq "$(sort -un seen | wc -l)" 2000 "every event handled at least once"
  assert_eq "$(sort -un seen | head -1),$(sort -un seen | tail -1)" "1,2000" "ids seen"
  status_is x.db '{"pending": 0, "processing": 0, "done": 0, "dead": 0}'
  echo "handled twice after kills: $(sort -n seen | uniq -d | wc -l)"
}

t_sqlite_key_order_under_random_failures() {
  cat > h.lua <<'LUA'
math.randomseed(tonumber(os.getenv("SEED") or "7"))
return function(ev)
  if math.random() < 0.3 then error("random failure") end
  local f = assert(io.open("ok", "a"))
  f:write(ev.key, " ", ev.payload, " ", ev.id, "\n"); f:flush(); f:close()
end
LUA
  "$OUTBOXD" init --db x.db 2> /dev/null
  # 10 keys x 50 events, interleaved: id i has key i % 10 and sequence i / 10
  sql x.db "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 499)
            INSERT INTO outbox (topic, key, payload) SELECT 't', 'k' || (i % 10), i / 10 FROM n"
  : > ok
  SEED=$RANDOM "$OUTBOXD" run h.lua --db x.db --backoff 5:20 --max-attempts 100 --concurrency 10 \
    --breaker 100 --breaker-cooldown 100 --log text 2> log &
  local pid=$!
  wait_settled x.db 60 || { kill -9 $pid; return 1; }
  kill -TERM $pid; wait $pid; assert_eq "$?" 0 "exit code"
  assert_grep 'event failed' log "some runs failed"
  assert_eq "$(wc -l < ok)" 500 "each event succeeded once"
  # per key, successes in id order and in sequence order 0..49
  awk '{ if ($1 in last && $3 <= last[$1]) bad++; if ($2 != n[$1]++) bad++; last[$1] = $3 }
       END { print bad + 0 }' ok > bad
  assert_eq "$(cat bad)" 0 "out-of-order successes"
  status_is x.db '{"pending": 0, "processing": 0, "done": 0, "dead": 0}'
}

# An event whose handler kills the host: every stop counts an attempt, and with
# --max-attempts 3 it is dead after three crashes; its neighbours (keyless ones and the
# events behind it in its key) complete.
t_sqlite_crash_looping_event_dead_after_max_attempts() {
  crash_handler
  "$OUTBOXD" init --db x.db 2> /dev/null
  sql x.db "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40)
            INSERT INTO outbox (topic, key, payload)
            SELECT 't', CASE WHEN i % 2 = 0 THEN 'k' ELSE NULL END, CASE WHEN i = 10 THEN 'boom' ELSE i END FROM n"
  : > ok
  left() { sql x.db "SELECT count(*) FROM outbox WHERE status IN ('pending','processing')"; }
  crash_loop 8 left h.lua --db x.db --lease 300 --max-attempts 3 || return 1
  assert_eq "$(cat crashes)" 3 "hosts the event killed"
  assert_eq "$(sql x.db "SELECT id || ' ' || status || ' ' || attempts || ' ' || last_error FROM outbox")" \
    "10 dead 3 lease expired: the host running it stopped (attempt 3)" "only the crashing event is left, dead"
  assert_eq "$(sort -un ok | wc -l)" 39 "every neighbour handled"
  assert_grep 'event dead id=10 .*lease expired' log "the dead-letter is logged"
  # behind the crashing event, its key ran in order once it was dead
  assert_eq "$(grep -E '^(1[2-9]|[2-4][0-9])$' ok | awk '$1 % 2 == 0' | tr '\n' ' ')" \
    "$(seq 12 2 40 | tr '\n' ' ')" "key k after the dead event, in id order"
}

# Runs claimed together keep key order: a failing event holds back the rest of its
# run, which goes back untouched and runs after it in order.
t_sqlite_runs_keep_key_order_behind_a_failing_head() {
  cat > h.lua <<'LUA'
return function(ev)
  if ev.payload == "3" and ev.attempt < 3 then error("not yet") end
  local f = assert(io.open("ok", "a"))
  f:write(ev.key, " ", ev.payload, " ", ev.attempt, "\n"); f:close()
end
LUA
  "$OUTBOXD" init --db x.db 2> /dev/null
  sql x.db "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10)
            INSERT INTO outbox (topic, key, payload) SELECT 't', 'a', i FROM n"
  : > ok
  "$OUTBOXD" run h.lua --db x.db --backoff 50:50 --batch 50 --log text 2> log &
  local pid=$!
  wait_settled x.db 30 || { kill -9 $pid; return 1; }
  kill -TERM $pid; wait $pid; assert_eq "$?" 0 "exit code"
  assert_eq "$(awk '{print $2}' ok | tr '\n' ' ')" "1 2 3 4 5 6 7 8 9 10 " "key a in order, once each"
  assert_eq "$(awk '$2 == 3 {print $3}' ok)" 3 "the failing event succeeded at its third attempt"
  assert_eq "$(awk '$2 > 3 {print $3}' ok | sort -u)" 1 "the events behind it used no attempt"
  assert_eq "$(grep -c 'event failed' log)" 2 "two failed runs"
}

# A database an earlier version created (its key index covered keyless rows too) is
# upgraded by `init` and by `run`, and its events run as before.
t_sqlite_old_schema_upgraded() {
  local old="CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL,
    key TEXT, payload TEXT NOT NULL, headers TEXT, created_at INTEGER NOT NULL DEFAULT
    (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
    available_at INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'pending', locked_by TEXT, locked_until INTEGER, last_error TEXT);
    CREATE INDEX outbox_claim ON outbox(status, id, available_at);
    CREATE INDEX outbox_key_head ON outbox(key, id) WHERE status IN ('pending','processing');
    PRAGMA journal_mode=WAL;"
  log_handler h.lua
  local db
  for db in a.db b.db; do
    sql $db "$old" > /dev/null
    sql $db "INSERT INTO outbox (topic, key, payload) VALUES ('t', 'k', '1'), ('t', 'k', '2'), ('t', NULL, '3')"
  done
  "$OUTBOXD" init --db a.db 2> init.log || fail "init"
  "$OUTBOXD" run h.lua --db b.db --once --log text 2> log || fail "run exit $?"
  assert_grep 'upgrading the schema' log "run says it upgraded"
  for db in a.db b.db; do
    assert_grep 'key IS NOT NULL' <(sql $db "SELECT sql FROM sqlite_master WHERE name = 'outbox_key_head'") "$db key index"
    assert_eq "$(sql $db "SELECT group_concat(name, ' ') FROM (SELECT name FROM sqlite_master WHERE name IN ('outbox_keyless', 'outbox_due', 'outbox_taken', 'outbox_claim') ORDER BY name)")" "outbox_due outbox_keyless outbox_taken" "$db new indexes, the old status index gone"
  done
  assert_eq "$(grep -oE 'HANDLED id=[0-9]+' log | sort | tr '\n' ' ')" "HANDLED id=1 HANDLED id=2 HANDLED id=3 " "b.db events"
  assert_eq "$(grep -oE 'HANDLED id=[12]' log | tr '\n' ' ')" "HANDLED id=1 HANDLED id=2 " "key k in order"
  "$OUTBOXD" run h.lua --db a.db --once --log text 2> log2 || fail "run a.db exit $?"
  assert_no_grep 'upgrading the schema' log2 "an upgraded database is left alone"
  status_is a.db '{"pending": 0, "processing": 0, "done": 0, "dead": 0}'
}

# The key index is kept over every keyed row (a claim does not rewrite it) unless done
# rows are kept: then over live rows only. A host switches it at start; key order
# holds in both forms, and a dead row does not hold its key back.
t_sqlite_key_index_follows_keep_done() {
  log_handler h.lua
  local form="SELECT sql LIKE '%status%' FROM sqlite_master WHERE name = 'outbox_key_head'"
  "$OUTBOXD" init --db x.db 2> /dev/null || fail "init" || return 1
  assert_eq "$(sql x.db "$form")" 0 "init: over every keyed row"
  sql x.db "INSERT INTO outbox (topic, key, payload) VALUES ('t', 'k', '1'), ('t', 'k', '2'), ('t', 'j', '3')"
  "$OUTBOXD" run h.lua --db x.db --once --keep-done 1d --log text 2> log1 || fail "run 1 exit $?"
  assert_grep 'key index rebuilt over live rows' log1 "--keep-done switches it"
  assert_eq "$(sql x.db "$form")" 1 "over live rows"
  sql x.db "INSERT INTO outbox (topic, key, payload) VALUES ('t', 'k', '4'), ('t', 'k', '5')"
  "$OUTBOXD" run h.lua --db x.db --once --log text 2> log2 || fail "run 2 exit $?"
  assert_no_grep 'key index rebuilt' log2 "kept done rows keep it over live rows"
  assert_eq "$(grep -oE 'HANDLED id=[0-9]+' log2 | tr '\n' ' ')" "HANDLED id=4 HANDLED id=5 " "run 2 in key order"
  sql x.db "DELETE FROM outbox WHERE status = 'done';
    INSERT INTO outbox (topic, key, payload, status, last_error) VALUES ('t', 'k', '6', 'dead', 'x');
    INSERT INTO outbox (topic, key, payload) VALUES ('t', 'k', '7'), ('t', 'k', '8'), ('t', 'k', '9')"
  "$OUTBOXD" run h.lua --db x.db --once --log text 2> log3 || fail "run 3 exit $?"
  assert_grep 'key index rebuilt over every keyed row' log3 "no kept done rows: switched back"
  assert_eq "$(sql x.db "$form")" 0 "over every keyed row"
  assert_eq "$(grep -oE 'HANDLED id=[0-9]+' log3 | tr '\n' ' ')" "HANDLED id=7 HANDLED id=8 HANDLED id=9 " "past the dead row, in key order"
  status_is x.db '{"pending": 0, "processing": 0, "done": 0, "dead": 1}'
}

t_sqlite_stopped_host_events_return_after_lease() {
  printf 'return function(ev) outbox.log.info("HUNG"); outbox.sleep(3600) end\n' > hang.lua
  log_handler ok.lua
  "$OUTBOXD" init --db x.db 2> /dev/null
  sql x.db "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5)
            INSERT INTO outbox (topic, payload) SELECT 't', i FROM n"
  "$OUTBOXD" run hang.lua --db x.db --lease 300 --timeout 3600000 --log text 2> loga &
  local a=$!
  wait_count 'HUNG' loga 5 || { kill -9 $a; return 1; }
  kill -STOP $a
  "$OUTBOXD" run ok.lua --db x.db --lease 300 --log text 2> logb &
  local b=$!
  wait_count 'HANDLED' logb 5 || { kill -9 $a $b; return 1; }
  kill -TERM $b; wait $b; assert_eq "$?" 0 "host B exit code"
  kill -9 $a; wait $a 2> /dev/null
  assert_eq "$(grep -oE 'HANDLED id=[0-9]+' logb | sort -u | wc -l)" 5 "host B ran every event"
  status_is x.db '{"pending": 0, "processing": 0, "done": 0, "dead": 0}'
}

t_sqlite_requeue_dead_and_by_id() {
  printf 'return function(ev) return outbox.reject("not today") end\n' > no.lua
  log_handler ok.lua
  "$OUTBOXD" init --db x.db 2> /dev/null || fail "init"
  for i in 1 2 3 4 5; do "$OUTBOXD" enqueue --db x.db --topic t --payload "$i" 2> /dev/null; done
  "$OUTBOXD" run no.lua --db x.db --once --log text 2> log1 || fail "reject run exit $?"
  status_is x.db '{"pending": 0, "processing": 0, "done": 0, "dead": 5}'
  "$OUTBOXD" status --db x.db > st
  assert_grep '^  5 +t +1  not today$' st "dead events listed with their error"
  assert_eq "$("$OUTBOXD" requeue --db x.db --id 2 --id 4)" "requeued 2 events" "requeue --id"
  "$OUTBOXD" run ok.lua --db x.db --once --log text 2> log2 || fail "run exit $?"
  assert_eq "$(grep -oE 'HANDLED id=[0-9]+' log2 | tr '\n' ' ')" "HANDLED id=2 HANDLED id=4 " "requeued ids ran"
  status_is x.db '{"pending": 0, "processing": 0, "done": 0, "dead": 3}'
  assert_eq "$("$OUTBOXD" requeue --db x.db --dead)" "requeued 3 events" "requeue --dead"
  "$OUTBOXD" run ok.lua --db x.db --once --log text 2> log3 || fail "run exit $?"
  assert_eq "$(grep -oE 'HANDLED id=[0-9]+' log3 | tr '\n' ' ')" "HANDLED id=1 HANDLED id=3 HANDLED id=5 " "dead ids ran"
  status_is x.db '{"pending": 0, "processing": 0, "done": 0, "dead": 0}'
  assert_eq "$("$OUTBOXD" requeue --db x.db --dead)" "requeued 0 events: no dead events" "nothing left to requeue"
}

# run_fails DB WHAT PATTERN [CODE]: `run` exits CODE (1) with one line matching PATTERN
run_fails() {
  "$OUTBOXD" run h.lua --db "$1" --log text 2> err; local rc=$?
  assert_eq "$rc" "${4:-1}" "$2: exit code"
  assert_eq "$(wc -l < err)" 1 "$2: one line"
  assert_grep "$3" err "$2: message"
}

t_sqlite_bad_paths_and_files() {
  log_handler h.lua
  run_fails nodir/x.db "missing directory" '^outboxd: --db nodir/x.db: no such database \(create it with: outboxd init --db nodir/x.db\)$' 2
  "$OUTBOXD" init --db nodir/x.db 2> err; assert_eq "$?" 1 "init in a missing directory"
  assert_grep '^outboxd init: --db nodir/x.db: cannot create the database: nodir: No such file' err "init message"
  echo data > file.txt
  run_fails file.txt/outbox.db "path under a file" 'file.txt is not a directory'
  assert_eq "$(cat file.txt)" data "the file is untouched"
  echo hello > x.db
  run_fails x.db "not a database" '^outboxd: --db x.db: file is not a database$'
  "$OUTBOXD" status --db x.db 2> err; assert_eq "$?" 1 "status on a non-database"
  assert_grep 'file is not a database' err "status message"
  echo '{"topic":"t","payload":1}' | "$OUTBOXD" enqueue --db x.db 2> err; assert_eq "$?" 1 "enqueue on a non-database"
  assert_grep 'file is not a database' err "enqueue message"
  assert_eq "$(cat x.db)" hello "the file is untouched"
  assert_eq "$(ls x.db*)" x.db "no WAL or journal left beside it"
}

t_sqlite_missing_table() {
  log_handler h.lua
  sql e.db "CREATE TABLE other (a)"
  "$OUTBOXD" status --db e.db 2> err; assert_eq "$?" 1 "status exit code"
  assert_eq "$(cat err)" "outboxd status: no outbox table in e.db (run: outboxd init --db e.db)" "status message"
  "$OUTBOXD" requeue --db e.db --dead 2> err; assert_eq "$?" 1 "requeue exit code"
  assert_grep '^outboxd requeue: no outbox table in e.db' err "requeue message"
  "$OUTBOXD" run h.lua --db e.db --once --log text 2> log || fail "run exit $?"
  status_is e.db '{"pending": 0, "processing": 0, "done": 0, "dead": 0}'
  assert_eq "$(sql e.db "SELECT count(*) FROM other")" 0 "other tables untouched"
}

# Only init creates a database: run, enqueue, status and requeue on a missing SQLite
# path (a mistyped --db) exit 2 with one line naming it and `outboxd init`, and
# create nothing; after init the same commands work.
t_sqlite_only_init_creates_the_database() {
  log_handler h.lua
  local want='no such database (create it with: outboxd init --db typo.db)'
  "$OUTBOXD" run h.lua --db typo.db --once --log text 2> err; assert_eq "$?" 2 "run exit code"
  assert_eq "$(cat err)" "outboxd: --db typo.db: $want" "run message"
  "$OUTBOXD" enqueue --db typo.db --topic t --payload 1 2> err; assert_eq "$?" 2 "enqueue exit code"
  assert_eq "$(cat err)" "outboxd enqueue: --db typo.db: $want" "enqueue message"
  echo '{"topic":"t","payload":1}' | "$OUTBOXD" enqueue --db sqlite:typo.db 2> err
  assert_eq "$?" 2 "enqueue from stdin exit code"
  assert_eq "$(cat err)" "outboxd enqueue: --db typo.db: $want" "enqueue (sqlite: URL) message"
  "$OUTBOXD" status --db typo.db 2> err; assert_eq "$?" 2 "status exit code"
  assert_eq "$(cat err)" "outboxd status: --db typo.db: $want" "status message"
  "$OUTBOXD" requeue --db typo.db --dead 2> err; assert_eq "$?" 2 "requeue exit code"
  assert_eq "$(cat err)" "outboxd requeue: --db typo.db: $want" "requeue message"
  OUTBOX_DB=typo.db "$OUTBOXD" status 2> err; assert_eq "$?" 2 "status (OUTBOX_DB) exit code"
  [ -z "$(ls typo.db* 2> /dev/null)" ] || fail "a command created $(ls typo.db*)"
  "$OUTBOXD" init --db typo.db 2> /dev/null || fail "init exit $?"
  "$OUTBOXD" enqueue --db typo.db --topic t --payload 1 2> /dev/null || fail "enqueue after init"
  "$OUTBOXD" run h.lua --db typo.db --once --log text 2> log || fail "run after init exit $?"
  assert_eq "$(grep -c HANDLED log)" 1 "the event ran"
}

# enqueue --delay / --at set available_at: an event due later is not claimed before
# it (a --once run leaves it pending, attempts untouched); one due in a second runs
# on a waiting host no earlier than its available_at.
t_sqlite_enqueue_delay_and_at() {
  printf 'return function(ev) outbox.log.info("HANDLED", { p = ev.payload, ms = math.floor(outbox.now() * 1000) }) end\n' > h.lua
  "$OUTBOXD" init --db x.db 2> /dev/null || fail "init"
  "$OUTBOXD" enqueue --db x.db --topic t --payload later --delay 600000 2> /dev/null || fail "enqueue --delay"
  "$OUTBOXD" enqueue --db x.db --topic t --payload past --at 2020-01-01T00:00:00Z 2> /dev/null || fail "enqueue --at"
  assert_eq "$(sql x.db "SELECT available_at FROM outbox WHERE payload = 'past'")" 1577836800000 "--at ISO 8601 stored as epoch ms"
  "$OUTBOXD" run h.lua --db x.db --once --keep-done --log text 2> log1 || fail "run --once exit $?"
  assert_eq "$(grep -c HANDLED log1)" 1 "only the due event ran"
  assert_grep 'HANDLED .*p=past' log1 "the past event ran"
  assert_eq "$(sql x.db "SELECT status || ' ' || attempts FROM outbox WHERE payload = 'later'")" "pending 0" "the later event untouched"
  "$OUTBOXD" run h.lua --db x.db --keep-done --log text 2> log2 &
  local pid=$!
  wait_for 'started' log2 || { kill $pid; return 1; }
  # due no earlier than 1000 ms after the enqueue began (a done row's available_at
  # becomes its settle time, so the bound is taken here)
  local due=$(( $(date +%s%3N) + 1000 ))
  "$OUTBOXD" enqueue --db x.db --topic t --payload soon --delay 1000 2> /dev/null || fail "enqueue --delay 1000"
  wait_for 'HANDLED .*p=soon' log2 60 || { kill $pid; return 1; }
  kill $pid; wait $pid
  local ran
  ran=$(grep 'p=soon' log2 | grep -oE 'ms=[0-9]+' | cut -d= -f2)
  [ "$ran" -ge "$due" ] || fail "ran at $ran, before it was due ($due)"
  assert_no_grep 'p=later' log2 "the event due in 10 minutes did not run"
}

# Scheduled keyless events are claimed by due time: whose time came first runs first
# (one claimed at a time; the last inserted is the earliest due). And an event due
# in a second, behind 5000 due in ten minutes, starts on a waiting host no earlier
# than its time and well within a generous bound (claims read no row still ahead).
t_sqlite_scheduled_events_run_by_due_time() {
  printf 'return function(ev) outbox.log.info("HANDLED", { p = ev.payload, ms = math.floor(outbox.now() * 1000) }) end\n' > h.lua
  "$OUTBOXD" init --db x.db 2> /dev/null || fail "init"
  sql x.db "INSERT INTO outbox (topic, payload, available_at) VALUES ('t', 'c', 3000), ('t', 'b', 2000), ('t', 'a', 1000)"
  "$OUTBOXD" run h.lua --db x.db --once --batch 1 --concurrency 1 --log text 2> log1 || fail "run --once exit $?"
  assert_eq "$(grep -oE 'p=[a-c]' log1 | tr '\n' ' ')" "p=a p=b p=c " "due order"
  sql x.db "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
    INSERT INTO outbox (topic, payload, available_at) SELECT 't', 'later', unixepoch() * 1000 + 600000 FROM n"
  due_soon_on_time x.db 'started'
}

# status counts per topic (text and --json "topics"); requeue --dead --topic moves
# only the matching topics' dead events, and the next run runs exactly those.
t_sqlite_status_and_requeue_per_topic() {
  printf 'return function(ev) return outbox.reject("no") end\n' > no.lua
  log_handler ok.lua
  "$OUTBOXD" init --db x.db 2> /dev/null || fail "init"
  { ndjson 3 order.paid; ndjson 2 order.sent; ndjson 4 user.created; } | "$OUTBOXD" enqueue --db x.db 2> /dev/null || fail "enqueue"
  "$OUTBOXD" run no.lua --db x.db --once --log text 2> log1 || fail "reject run exit $?"
  "$OUTBOXD" enqueue --db x.db --topic user.created --payload 1 2> /dev/null || fail "enqueue"
  "$OUTBOXD" status --db x.db > st
  assert_grep '^  order\.paid +0 +0 +3$' st "order.paid row"
  assert_grep '^  user\.created +1 +0 +4$' st "user.created row"
  assert_eq "$("$OUTBOXD" status --db x.db --json | sed -E 's/.*"topics": //')" \
    '{"order.paid": {"pending": 0, "processing": 0, "dead": 3}, "order.sent": {"pending": 0, "processing": 0, "dead": 2}, "user.created": {"pending": 1, "processing": 0, "dead": 4}}, "paused": []}' "--json topics"
  "$OUTBOXD" status --db x.db --json | jq -e '.pending == 1 and .dead == 9 and .topics["order.sent"].dead == 2' > /dev/null || fail "status --json is JSON with the five keys and topics"
  assert_eq "$("$OUTBOXD" requeue --db x.db --dead --topic 'order.*')" "requeued 5 events" "requeue --topic order.*"
  assert_eq "$("$OUTBOXD" requeue --db x.db --dead --topic order.paid)" "requeued 0 events: no dead events of topic order.paid" "nothing left of order.paid"
  assert_eq "$("$OUTBOXD" requeue --db x.db --id 999)" "requeued 0 events: no event 999 (or it is being processed)" "unknown id"
  "$OUTBOXD" run ok.lua --db x.db --once --log text 2> log2 || fail "run exit $?"
  assert_eq "$(grep -c 'HANDLED .*topic=order' log2)" 5 "the order events ran"
  assert_eq "$(grep -c 'HANDLED .*topic=user' log2)" 1 "only the pending user event ran"
  status_is x.db '{"pending": 0, "processing": 0, "done": 0, "dead": 4}'
}

# hold_lock DB [SQL]: another writer holds the write lock (and inserts SQL) until
# the test creates the file "release"; returns once the lock is taken. Its pid is
# in $locker.
hold_lock() {
  ( echo 'BEGIN IMMEDIATE;'; echo "${2:-SELECT 1;}"; echo "SELECT 'LOCKED';"
    while [ ! -e release ]; do sleep 0.05; done; echo 'COMMIT;' ) |
    sqlite3 -bail -cmd '.timeout 10000' "$1" > lock.out 2>&1 &
  locker=$!
  wait_for LOCKED lock.out
}

t_sqlite_locked_database_waits_then_serves() {
  cat > h.lua <<'LUA'
return function(ev) outbox.sleep(0.1); outbox.log.info("HANDLED") end
LUA
  "$OUTBOXD" init --db x.db 2> /dev/null
  # 5 s of work at concurrency 2, so the host is still claiming while the lock is held
  sql x.db "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
            INSERT INTO outbox (topic, payload) SELECT 't', i FROM n"
  "$OUTBOXD" run h.lua --db x.db --concurrency 2 --batch 2 --log text 2> log &
  local pid=$!
  wait_count 'HANDLED' log 4 || { kill -9 $pid; return 1; }
  hold_lock x.db "INSERT INTO outbox (topic, payload) VALUES ('in-lock', 'a'), ('in-lock', 'b');" \
    || { touch release; kill -9 $pid; return 1; }
  wait_for 'database busy, will retry' log || { touch release; kill -9 $pid; return 1; }
  touch release
  wait $locker
  wait_count 'HANDLED' log 102 60 || { kill -9 $pid; return 1; }
  kill -TERM $pid; wait $pid; assert_eq "$?" 0 "exit code"
  assert_grep 'database usable again' log "recovery logged"
  assert_eq "$(grep -c 'database busy' log)" 1 "one warning for the whole stall"
  assert_eq "$(grep -oE 'HANDLED id=[0-9]+' log | sort -u | wc -l)" 102 "every event handled once"
  status_is x.db '{"pending": 0, "processing": 0, "done": 0, "dead": 0}'
}

t_sqlite_once_waits_out_a_lock() {
  log_handler h.lua
  "$OUTBOXD" init --db x.db 2> /dev/null
  sql x.db "INSERT INTO outbox (topic, payload) VALUES ('t', '1'), ('t', '2'), ('t', '3')"
  hold_lock x.db || { touch release; return 1; }
  "$OUTBOXD" run h.lua --db x.db --once --log text 2> log &
  local pid=$!
  wait_for 'database busy, will retry' log || { touch release; kill -9 $pid; return 1; }
  touch release
  wait $pid || fail "exit $?"
  wait $locker
  assert_grep 'database busy, will retry' log "the stall was seen"
  assert_eq "$(grep -c 'HANDLED' log)" 3 "--once handled the events behind the lock"
  status_is x.db '{"pending": 0, "processing": 0, "done": 0, "dead": 0}'
}

t_sqlite_oversized_payload_dead_others_done() {
  log_handler h.lua
  "$OUTBOXD" init --db x.db 2> /dev/null
  sql x.db "INSERT INTO outbox (topic, payload) VALUES ('small', 'a')"
  # 17,000,000 characters: the hex of a zeroblob
  sql x.db "INSERT INTO outbox (topic, payload) VALUES ('big', hex(zeroblob(8500000)))"
  sql x.db "INSERT INTO outbox (topic, payload) VALUES ('small', 'b'), ('small', 'c')"
  "$OUTBOXD" run h.lua --db x.db --once --log text 2> log || fail "exit $?"
  assert_grep 'event dead id=2 topic=big attempt=0 error="payload too large \(17000000 bytes' log \
    "dead with its topic and the reason"
  assert_eq "$(grep -oE 'HANDLED id=[0-9]+' log | tr '\n' ' ')" "HANDLED id=1 HANDLED id=3 HANDLED id=4 " "others done"
  status_is x.db '{"pending": 0, "processing": 0, "done": 0, "dead": 1}'
  assert_eq "$(sql x.db "SELECT attempts, substr(last_error, 1, 17) FROM outbox WHERE id = 2")" \
    "0|payload too large" "no attempt used, error kept"
}

t_sqlite_once_drains_and_exits_0() {
  log_handler h.lua
  "$OUTBOXD" init --db x.db 2> /dev/null
  sql x.db "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
            INSERT INTO outbox (topic, key, payload) SELECT 't', 'k' || (i % 3), i FROM n"
  "$OUTBOXD" run h.lua --db x.db --once --keep-done --log text 2> log || fail "exit $?"
  assert_grep 'nothing claimable \(--once\) processed=1000' log "drained"
  status_is x.db '{"pending": 0, "processing": 0, "done": 1000, "dead": 0}'
}

t_sqlite_foreign_commit_wakes_an_idle_host() {
  log_handler h.lua
  "$OUTBOXD" init --db x.db 2> /dev/null
  "$OUTBOXD" run h.lua --db x.db --poll 60000 --log text 2> log &
  local pid=$!
  sql x.db "INSERT INTO outbox (topic, payload) VALUES ('t', 'first')"
  wait_for 'HANDLED id=1' log || { kill -9 $pid; return 1; }
  wait_settled x.db || { kill -9 $pid; return 1; } # the host is idle again
  sql x.db "INSERT INTO outbox (topic, payload) VALUES ('t', 'late')"
  wait_for 'HANDLED id=2' log || { kill -9 $pid; return 1; }
  kill -TERM $pid; wait $pid; assert_eq "$?" 0 "exit code"
}

# outbox.enqueue on SQLite: a done run's follow-up is written with its ack (key,
# headers, payload); a failed or rejected run writes none; hooks and the top level
# write at once (a delay sets available_at).
t_sqlite_enqueue_follow_ups_only_when_done() {
  follow_handler
  "$OUTBOXD" init --db x.db 2> /dev/null || fail "init"
  sql x.db "INSERT INTO outbox (topic, key, payload) VALUES ('job', 'k1', 'ok'), ('job', NULL, 'flaky'), ('job', 'k2', 'poison')"
  TOP=1 "$OUTBOXD" run h.lua --db x.db --keep-done --backoff 10:10 --log text 2> log &
  local pid=$!
  seven_settled() { settled x.db && [ "$(sql x.db "SELECT count(*) FROM outbox")" = 7 ]; }
  wait_until 30 "seven events settled" seven_settled || { kill -9 $pid; return 1; }
  kill -TERM $pid; wait $pid; assert_eq "$?" 0 "exit code"
  assert_eq "$(sql x.db "SELECT group_concat(payload || '/' || ifnull(key, '-') || '/' || headers, ' ') FROM (SELECT * FROM outbox WHERE topic = 'follow' ORDER BY id)")" \
    '1/k1/{"from":1} 2/-/{"from":2}' "one follow-up per done job, none for the rejected one"
  assert_eq "$(sort -n ran | tr '\n' ' ')" "1 2 2 3 " "runs (the flaky job twice)"
  assert_eq "$(sort -n followed | tr '\n' ' ')" "1 2 " "follow-ups handled"
  assert_eq "$(sql x.db "SELECT status FROM outbox WHERE id = 3")" dead "the rejected job"
  assert_eq "$(sql x.db "SELECT payload || ' ' || status FROM outbox WHERE topic = 'hooked'")" '{"from":"start"} done' "enqueued by the start hook"
  assert_eq "$(sql x.db "SELECT payload || ' ' || status || ' ' || (available_at >= $(awk '{ printf "%d", $1 + 200 }' top_at)) FROM outbox WHERE topic = 'top'")" 'loaded done 1' "enqueued at the top level, done (available_at: when) 0.2 s after the call or later"
}

# SIGKILL between handler runs and their acks, three times: after recovery every
# job is done and has exactly one follow-up (the ack and its follow-up commit
# together; a re-run after the kill writes its own, never a second one).
t_sqlite_enqueue_sigkill_exactly_one_follow_up() {
  follow_handler
  "$OUTBOXD" init --db x.db 2> /dev/null || fail "init"
  sql x.db "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
            INSERT INTO outbox (topic, key, payload) SELECT 'job', 'k' || (i % 50), i FROM n"
  : > ran
  local kill_at pid
  for kill_at in 300 800 1300; do
    SLOW=0.004 "$OUTBOXD" run h.lua --db x.db --keep-done --lease 500 --concurrency 20 --log text 2>> log &
    pid=$!
    wait_count '.' ran "$kill_at" 60 || { kill -9 $pid; return 1; }
    kill -9 $pid; wait $pid 2> /dev/null
  done
  SLOW=0.004 "$OUTBOXD" run h.lua --db x.db --keep-done --lease 500 --concurrency 20 --log text 2>> log &
  pid=$!
  wait_settled x.db 90 || { kill -9 $pid; return 1; }
  kill -TERM $pid; wait $pid; assert_eq "$?" 0 "final run exits 0"
  assert_eq "$(sql x.db "SELECT count(*) FROM outbox WHERE topic = 'job' AND status = 'done'")" 2000 "jobs done"
  assert_eq "$(sql x.db "SELECT count(*) || ' ' || count(DISTINCT payload) || ' ' || min(CAST(payload AS INTEGER)) || ' ' || max(CAST(payload AS INTEGER)) FROM outbox WHERE topic = 'follow'")" \
    "2000 2000 1 2000" "follow-ups: one per job (count, distinct, smallest, largest)"
  local again
  again=$(sort -n ran | uniq -d | wc -l)
  echo "jobs run again after the kills: $again"
  [ "$again" -gt 0 ] || fail "no kill came between a run and its ack (nothing ran twice)"
}

# Retention on SQLite: --keep-done 1d --keep-dead 7d delete the done and dead rows
# that settled earlier, in batches, while events keep flowing: events inserted once
# pruning began are done before it ends; newer done and dead rows and live rows stay.
t_sqlite_retention_prunes_old_rows_while_dispatching() {
  log_handler h.lua
  "$OUTBOXD" init --db x.db 2> /dev/null || fail "init"
  local now day=86400000
  now=$(date +%s%3N)
  sql x.db "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000)
            INSERT INTO outbox (topic, payload, status, available_at) SELECT 'old', i, 'done', $now - 2 * $day FROM n"
  sql x.db "INSERT INTO outbox (topic, payload, status, available_at) VALUES
            ('recent', 'r', 'done', $now - 3600000), ('olddead', 'x', 'dead', $now - 8 * $day),
            ('newdead', 'y', 'dead', $now - 6 * $day), ('later', 'l', 'pending', $now + $day)"
  "$OUTBOXD" run h.lua --db x.db --keep-done 1d --keep-dead 7d --log text 2> log &
  local pid=$!
  pruning() { [ "$(sql x.db "SELECT count(*) FROM outbox WHERE topic = 'old'")" -lt 300000 ]; }
  wait_until 60 "pruning to begin" pruning || { kill -9 $pid; return 1; }
  sql x.db "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
            INSERT INTO outbox (topic, payload) SELECT 'fresh', i FROM n"
  fresh_done() { [ "$(sql x.db "SELECT count(*) FROM outbox WHERE topic = 'fresh' AND status = 'done'")" = 100 ]; }
  wait_until 60 "the fresh events to be done" fresh_done || { kill -9 $pid; return 1; }
  local left
  left=$(sql x.db "SELECT count(*) FROM outbox WHERE topic = 'old'")
  echo "old rows left when the fresh events were done: $left"
  [ "$left" -gt 0 ] || fail "pruning ended before the fresh events were done"
  pruned() { [ "$(sql x.db "SELECT count(*) FROM outbox WHERE topic IN ('old', 'olddead')")" = 0 ]; }
  wait_until 120 "the old rows to go" pruned || { kill -9 $pid; return 1; }
  kill -TERM $pid; wait $pid; assert_eq "$?" 0 "exit code"
  assert_eq "$(sql x.db "SELECT group_concat(topic || ':' || status, ' ') FROM (SELECT topic, status FROM outbox WHERE topic <> 'fresh' ORDER BY id)")" \
    "recent:done newdead:dead later:pending" "what stays"
  assert_eq "$(sql x.db "SELECT count(*) FROM outbox WHERE topic = 'fresh' AND status = 'done' AND abs(available_at - $(date +%s%3N)) < 600000")" 100 "done rows stamped with the time they settled"
}
