# The PostgreSQL store through the real binary: round trip, several hosts on one
# outbox (exactly once, per-key order), a host killed, the backend killed and the
# server restarted, LISTEN pick-up. Needs OUTBOX_TEST_PG (tests/with-pg.sh sets it).

# pg_fresh: a fresh database for this test; sets PGURL.
pg_fresh() {
  [ -n "${OUTBOX_TEST_PG:-}" ] || { fail "OUTBOX_TEST_PG is not set (run through tests/with-pg.sh)"; return 1; }
  local db="t_${FUNCNAME[1]#t_}_$$"
  local admin="${OUTBOX_TEST_PG%/*}/postgres"
  PGOPTIONS='-c client_min_messages=warning' psql -q "$admin" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" >/dev/null || return 1
  PGURL="${OUTBOX_TEST_PG%/*}/$db"
  "$OUTBOXD" init --db "$PGURL" 2>/dev/null || fail "init"
}

sql() { psql -qAtX "$PGURL" -c "$1"; }

# pg_settled: nothing is pending or processing
pg_settled() { [ "$(sql "SELECT count(*) FROM outbox WHERE status IN ('pending','processing')" 2>/dev/null)" = 0 ]; }

# pg_wait_settled [SECONDS]: until nothing is pending or processing (default 60 s)
pg_wait_settled() {
  wait_until "${1:-60}" "the outbox to settle" pg_settled ||
    { echo "      (left: $(sql "SELECT status, count(*) FROM outbox GROUP BY status" 2>&1 | tr '\n' ' '))" >&2; return 1; }
}

# Handler that appends "host id key" to the shared file seen.log (one write per line,
# O_APPEND: the file order is the order handlers started across processes).
pg_recorder() {
  cat > h.lua <<'LUA'
local f = assert(io.open(os.getenv("SEEN") or "seen.log", "a"))
f:setvbuf("line")
local me = os.getenv("HOST") or "h"
local pause = tonumber(os.getenv("PAUSE") or "0")
return function(ev)
  f:write(me, " ", ev.id, " ", ev.key or "-", "\n")
  if pause > 0 then outbox.sleep(pause) end
end
LUA
}

# check_all N: ids 1..N each handled at least once (at_least) or exactly once.
check_ids() {
  local n=$1 mode=$2 got dup
  got=$(awk '{print $2}' seen.log | sort -un | wc -l)
  assert_eq "$got" "$n" "distinct ids handled" || return 1
  assert_eq "$(awk '{print $2}' seen.log | sort -n | head -1)" 1 "smallest id" || return 1
  assert_eq "$(awk '{print $2}' seen.log | sort -n | tail -1)" "$n" "largest id" || return 1
  if [ "$mode" = exactly ]; then
    dup=$(awk '{print $2}' seen.log | sort -n | uniq -d | wc -l)
    assert_eq "$dup" 0 "ids handled twice" || return 1
  fi
}

# Per key, the ids in handling order must rise (a re-run after a crash repeats an id:
# allowed only with `at_least`).
# check_key_order exactly|at_least: per key, ids run in increasing order. With
# at_least a host that stopped mid-run may have its key's unacknowledged events
# replayed, in order, by the next host: a second run of an id is allowed, but a
# first run never comes after a larger id of its key.
check_key_order() {
  local bad
  bad=$(awk -v mode="$1" '$3 != "-" {
          again = (($2, $3) in ran); ran[$2, $3] = 1
          if (($3 in last) && ($2 < last[$3] || (mode == "exactly" && $2 == last[$3])) &&
              (mode == "exactly" || !again)) { print $3, last[$3], $2; exit }
          if (!($3 in last) || $2 > last[$3]) last[$3] = $2 }' seen.log)
  assert_eq "$bad" "" "per-key order (key, previous id, id)"
}

# enqueue --delay / --at on PostgreSQL: available_at (timestamptz) as given.
t_pg_enqueue_delay_and_at() {
  pg_fresh || return 1
  "$OUTBOXD" enqueue --db "$PGURL" --topic t --payload a --at 2026-12-01T11:00:00.25+01:00 2> /dev/null || fail "enqueue --at"
  "$OUTBOXD" enqueue --db "$PGURL" --topic t --payload b --delay 600000 2> /dev/null || fail "enqueue --delay"
  "$OUTBOXD" enqueue --db "$PGURL" --topic t --payload c 2> /dev/null || fail "enqueue"
  assert_eq "$(sql "SELECT (extract(epoch FROM available_at) * 1000)::bigint FROM outbox WHERE payload = 'a'")" 1796119200250 "--at"
  assert_eq "$(sql "SELECT available_at - now() BETWEEN interval '500 s' AND interval '600 s' FROM outbox WHERE payload = 'b'")" t "--delay"
  assert_eq "$(sql "SELECT available_at <= now() FROM outbox WHERE payload = 'c'")" t "no delay: due at once"
}

# Scheduled keyless events on PostgreSQL: claimed by due time, and one due in a second
# behind 5000 due in ten minutes starts on time within a generous bound (as on SQLite).
t_pg_scheduled_events_run_by_due_time() {
  pg_fresh || return 1
  printf 'return function(ev) outbox.log.info("HANDLED", { p = ev.payload, ms = math.floor(outbox.now() * 1000) }) end\n' > h.lua
  sql "INSERT INTO outbox (topic, payload, available_at) VALUES ('t', 'c', now() - interval '1 s'),
    ('t', 'b', now() - interval '2 s'), ('t', 'a', now() - interval '3 s')" || fail "insert"
  "$OUTBOXD" run h.lua --db "$PGURL" --once --batch 1 --concurrency 1 --log text 2> log1 || fail "run --once exit $?"
  assert_eq "$(grep -oE 'p=[a-c]' log1 | tr '\n' ' ')" "p=a p=b p=c " "due order"
  sql "INSERT INTO outbox (topic, payload, available_at)
    SELECT 't', 'later', now() + interval '10 minutes' FROM generate_series(1, 5000)" || fail "insert later"
  due_soon_on_time "$PGURL" 'database connected'
}

# Keyless events due close together are claimed a little ahead of their time on
# PostgreSQL and held: each still starts at its available_at or after, never before,
# and none is lost or run twice; the later ids are due first (claims go by due time).
t_pg_events_claimed_ahead_never_start_early() {
  pg_fresh || return 1
  printf 'return function(ev) outbox.log.info("HANDLED", { p = ev.payload, ms = math.floor(outbox.now() * 1000) }) end\n' > h.lua
  "$OUTBOXD" run h.lua --db "$PGURL" --log text 2> log &
  local pid=$! first
  wait_for 'database connected' log || { kill $pid; return 1; }
  first=$(($(date +%s%3N) + 1500))
  sql "INSERT INTO outbox (topic, payload, available_at)
    SELECT 't', d::text, to_timestamp(d / 1000.0) FROM (SELECT $first + (200 - g) * 3 AS d
    FROM generate_series(1, 200) g) x" || fail "insert"
  wait_count 'HANDLED' log 200 || { kill $pid; return 1; }
  kill $pid; wait $pid
  assert_eq "$(grep HANDLED log | awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    if (v["ms"] < v["p"]) print v["ms"], v["p"] }' | head -3)" "" "started before due (ms, due)"
  assert_eq "$(grep -oE 'p=[0-9]+' log | sort | uniq -d | head -3)" "" "ran twice"
  assert_eq "$(sql "SELECT count(*) FROM outbox")" 0 "every one acked"
}

# status per topic and requeue --dead --topic on PostgreSQL.
t_pg_status_and_requeue_per_topic() {
  pg_fresh || return 1
  sql "INSERT INTO outbox (topic, payload, status, attempts) VALUES ('a.x', '1', 'dead', 1), ('a.y', '2', 'dead', 1), ('a', '3', 'dead', 1), ('b', '4', 'pending', 0)" || fail "insert"
  assert_eq "$("$OUTBOXD" status --db "$PGURL" --json | sed -E 's/.*"topics": //')" \
    '{"a": {"pending": 0, "processing": 0, "dead": 1}, "a.x": {"pending": 0, "processing": 0, "dead": 1}, "a.y": {"pending": 0, "processing": 0, "dead": 1}, "b": {"pending": 1, "processing": 0, "dead": 0}}, "paused": []}' "--json topics"
  assert_eq "$("$OUTBOXD" requeue --db "$PGURL" --dead --topic 'a.*')" "requeued 2 events" "prefix"
  assert_eq "$("$OUTBOXD" requeue --db "$PGURL" --dead --topic a)" "requeued 1 event" "exact"
  assert_eq "$("$OUTBOXD" requeue --db "$PGURL" --dead --topic a)" "requeued 0 events: no dead events of topic a" "none left"
  assert_eq "$(sql "SELECT count(*) FROM outbox WHERE status = 'pending' AND attempts = 0")" 4 "all pending"
}

t_pg_round_trip() {
  pg_fresh || return 1
  cat > h.lua <<'LUA'
return function(ev)
  if ev.topic == "poison" then return outbox.reject("bad") end
  if ev.topic == "flaky" and ev.attempt < 2 then error("once") end
  outbox.log.info("HANDLED", { topic = ev.topic, key = ev.key, attempt = ev.attempt,
                               payload = ev.payload, h = ev.headers and ev.headers.x })
end
LUA
  "$OUTBOXD" enqueue --db "$PGURL" --topic a --key k1 --payload '{"n":1}' --headers '{"x":"y"}' 2>/dev/null || fail "enqueue"
  printf '%s\n' '{"topic":"flaky","key":"k1","payload":"two"}' '{"topic":"poison","payload":3}' \
    | "$OUTBOXD" enqueue --db "$PGURL" 2>/dev/null || fail "enqueue ndjson"
  sql "INSERT INTO outbox (topic, payload) VALUES ('sql', 'from psql')"
  assert_grep '"pending": 4' <("$OUTBOXD" status --db "$PGURL" --json) "status before" || return 1
  "$OUTBOXD" run h.lua --db "$PGURL" --once --backoff 10:10 --log text 2> log || fail "exit $?"
  # --once may leave a retry that is not yet due; later runs pick it up
  local runs=1
  until pg_settled || [ $runs -ge 100 ]; do
    "$OUTBOXD" run h.lua --db "$PGURL" --once --backoff 10:10 --log text 2>> log || fail "exit $?"
    runs=$((runs + 1))
  done
  grep 'HANDLED id=1 ' log > e1
  assert_grep 'topic=a' e1 "event 1 topic"
  assert_grep 'key=k1' e1 "event 1 key"
  assert_grep 'attempt=1' e1 "event 1 first attempt"
  assert_grep 'payload="\{\\"n\\":1\}"' e1 "event 1 payload"
  assert_grep 'h=y' e1 "event 1 headers"
  grep 'HANDLED id=2 ' log > e2
  assert_grep 'attempt=2' e2 "retried once"
  assert_grep 'payload=two' e2 "event 2 payload"
  assert_grep 'HANDLED id=4 .*topic=sql' log "row inserted with psql"
  assert_grep 'event dead id=3' log "poison dead"
  "$OUTBOXD" status --db "$PGURL" --json > st 2>&1
  assert_grep '"pending": 0, "processing": 0, "done": 0, "dead": 1' st "status after"
  "$OUTBOXD" status --db "$PGURL" > st2 2>&1
  assert_grep 'bad' st2 "status lists the dead event's error"
  "$OUTBOXD" requeue --db "$PGURL" --dead 2>/dev/null || fail "requeue"
  assert_eq "$(sql "SELECT status || attempts FROM outbox WHERE id = 3")" pending0 "requeued"
  "$OUTBOXD" run h.lua --db "$PGURL" --once --keep-done --log text 2> log2 || fail "exit $?"
  assert_eq "$(sql "SELECT status || ':' || attempts || ':' || coalesce(locked_by, '-') FROM outbox WHERE id = 3")" "dead:1:-" "dead again after requeue, attempts counted"
  sql "INSERT INTO outbox (topic, payload) VALUES ('kept', 'x')"
  "$OUTBOXD" run h.lua --db "$PGURL" --once --keep-done --log text 2> log3 || fail "exit $?"
  assert_eq "$(sql "SELECT status || attempts FROM outbox WHERE topic = 'kept'")" done1 "--keep-done keeps the row"
}

t_pg_three_hosts_exactly_once_in_key_order() {
  pg_fresh || return 1
  local n=${PG_E2E_EVENTS:-50000}
  pg_recorder
  # the three hosts are up before the rows come, so each of them takes part
  local pids=""
  for h in 1 2 3; do
    HOST=h$h "$OUTBOXD" run h.lua --db "$PGURL" --batch 500 --concurrency 50 --log text 2> "log$h" &
    pids="$pids $!"
  done
  for h in 1 2 3; do wait_for 'database connected' "log$h" || { kill $pids; return 1; }; done
  sql "INSERT INTO outbox (topic, key, payload) SELECT 't', CASE WHEN g % 10 = 0 THEN NULL ELSE 'k' || (g % 397) END, g::text FROM generate_series(1, $n) g"
  pg_wait_settled 300 || { kill $pids; return 1; }
  kill -TERM $pids
  for p in $pids; do wait "$p" || fail "a host exited with $?"; done
  check_ids "$n" exactly || return 1
  check_key_order exactly || return 1
  for h in 1 2 3; do
    assert_grep "h$h " seen.log "host h$h took part" || return 1
    assert_no_grep 'fenced out|lease lost' "log$h" "no lost lease on h$h" || return 1
  done
  assert_eq "$(sql "SELECT count(*) FROM outbox")" 0 "acked rows deleted"
}

# An event whose handler kills the host is dead after --max-attempts crashes, with the
# lapsed lease as its error; its neighbours complete, its key's later events in order.
t_pg_crash_looping_event_dead_after_max_attempts() {
  pg_fresh || return 1
  crash_handler
  sql "INSERT INTO outbox (topic, key, payload) SELECT 't', CASE WHEN g % 2 = 0 THEN 'k' END,
       CASE WHEN g = 10 THEN 'boom' ELSE g::text END FROM generate_series(1, 40) g"
  : > ok
  left() { sql "SELECT count(*) FROM outbox WHERE status IN ('pending','processing')"; }
  crash_loop 8 left h.lua --db "$PGURL" --lease 300 --max-attempts 3 || return 1
  assert_eq "$(cat crashes)" 3 "hosts the event killed"
  assert_eq "$(sql "SELECT id || ' ' || status || ' ' || attempts || ' ' || last_error FROM outbox")" \
    "10 dead 3 lease expired: the host running it stopped (attempt 3)" "only the crashing event is left, dead"
  assert_eq "$(sort -un ok | wc -l)" 39 "every neighbour handled"
  assert_eq "$(grep -E '^(1[2-9]|[2-4][0-9])$' ok | awk '$1 % 2 == 0' | tr '\n' ' ')" \
    "$(seq 12 2 40 | tr '\n' ' ')" "key k after the dead event, in id order"
}

# A database an earlier version created (its key index covered keyless rows too) is
# upgraded by a dispatching host, and by init.
t_pg_old_schema_upgraded() {
  pg_fresh || return 1
  sql "DROP INDEX outbox_key_head; DROP INDEX outbox_keyless; DROP INDEX outbox_lapsed; DROP INDEX outbox_due;
       CREATE INDEX outbox_key_head ON outbox (key, id) WHERE status IN ('pending','processing')"
  sql "INSERT INTO outbox (topic, key, payload) VALUES ('t', 'k', '1'), ('t', 'k', '2'), ('t', NULL, '3')"
  printf 'return function(ev) outbox.log.info("HANDLED") end\n' > h.lua
  "$OUTBOXD" run h.lua --db "$PGURL" --once --log text 2> log || fail "run exit $?"
  assert_eq "$(grep -oE 'HANDLED id=[0-9]+' log | sort | tr '\n' ' ')" "HANDLED id=1 HANDLED id=2 HANDLED id=3 " "events"
  assert_eq "$(grep -oE 'HANDLED id=[12]' log | tr '\n' ' ')" "HANDLED id=1 HANDLED id=2 " "key k in order"
  assert_grep 'key IS NOT NULL' <(sql "SELECT indexdef FROM pg_indexes WHERE indexname = 'outbox_key_head'") "key index"
  assert_eq "$(sql "SELECT count(*) FROM pg_indexes WHERE indexname IN ('outbox_keyless', 'outbox_lapsed', 'outbox_due')")" 3 "new indexes"
  sql "DROP INDEX outbox_due"
  "$OUTBOXD" init --db "$PGURL" 2> /dev/null || fail "init"
  assert_eq "$(sql "SELECT count(*) FROM pg_indexes WHERE indexname = 'outbox_due'")" 1 "init creates it too"
}

t_pg_sigkill_one_host_loses_nothing() {
  pg_fresh || return 1
  local n=4000
  pg_recorder
  sql "INSERT INTO outbox (topic, key, payload) SELECT 't', 'k' || (g % 1000), g::text FROM generate_series(1, $n) g"
  HOST=a PAUSE=0.01 "$OUTBOXD" run h.lua --db "$PGURL" --lease 1000 --batch 100 --concurrency 20 --log text 2> loga &
  local a=$!
  HOST=b PAUSE=0.01 "$OUTBOXD" run h.lua --db "$PGURL" --lease 1000 --batch 100 --concurrency 20 --log text 2> logb &
  local b=$!
  wait_for '^a ' seen.log || { kill $a $b; return 1; }
  kill -9 $a
  assert_eq "$(sql "SELECT count(*) > 0 FROM outbox WHERE status = 'processing'")" t "events in flight at the kill" || { kill $b; return 1; }
  pg_wait_settled || { kill $b; return 1; }
  kill -TERM $b; wait $b || fail "host b exit $?"
  check_ids "$n" at_least || return 1
  check_key_order at_least
}

t_pg_backend_killed_and_server_restarted() {
  pg_fresh || return 1
  [ -n "${OUTBOX_TEST_PGDATA:-}" ] || { fail "OUTBOX_TEST_PGDATA is not set: cannot restart the server"; return 1; }
  local n=6000
  pg_recorder
  sql "INSERT INTO outbox (topic, key, payload) SELECT 't', 'k' || (g % 40), g::text FROM generate_series(1, $n) g"
  HOST=a PAUSE=0.01 "$OUTBOXD" run h.lua --db "$PGURL" --lease 2000 --batch 100 --concurrency 20 --log text 2> log &
  local a=$!
  wait_for 'database connected' log || { kill $a; return 1; }
  wait_count '^a ' seen.log 100 || { kill $a; return 1; }
  psql -qAtX "$PGURL" -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'outboxd%'" > killed
  assert_grep t killed "a backend was terminated" || { kill $a; return 1; }
  wait_for 'database reachable again' log || { kill $a; return 1; }
  assert_eq "$(sql "SELECT count(*) > 0 FROM outbox")" t "work left at the restart" || { kill $a; return 1; }
  bash "$HERE/../pg.sh" restart "$OUTBOX_TEST_PGDATA" || { kill $a; fail "pg_ctl restart"; return 1; }
  pg_wait_settled 120 || { kill $a; return 1; }
  kill -0 $a || fail "the host exited"
  kill -TERM $a; wait $a || fail "host exit $?"
  assert_eq "$(grep -c 'database unreachable, reconnecting' log)" 2 "one log line per outage"
  assert_eq "$(grep -c 'database reachable again' log)" 2 "one recovery line per outage"
  check_ids "$n" at_least || return 1
  check_key_order at_least
}

t_pg_listen_wakes_an_idle_host() {
  pg_fresh || return 1
  printf 'return function(ev) outbox.log.info("HANDLED", { lag_ms = math.floor((outbox.now() - ev.created_at / 1000) * 1000) }) end\n' > h.lua
  "$OUTBOXD" run h.lua --db "$PGURL" --poll 60000 --log text 2> log &
  local a=$!
  wait_for 'database connected' log || { kill $a; return 1; }
  sql "INSERT INTO outbox (topic, payload) VALUES ('t', 'x')"
  wait_for 'HANDLED id=1' log || { kill $a; return 1; }
  pg_wait_settled || { kill $a; return 1; }    # idle again: only a wake-up can bring the next
  sql "INSERT INTO outbox (topic, payload) VALUES ('t', 'y')"
  # the poll is 60 s: an event handled well before that came through LISTEN
  wait_for 'HANDLED id=2' log 30 || { kill $a; return 1; }
  kill -TERM $a; wait $a || fail "exit $?"
}

t_pg_once_with_unreachable_database_exits_1() {
  printf 'return function() end\n' > h.lua
  # port 1 on 127.0.0.1: nothing listens there
  "$OUTBOXD" run h.lua --db postgres://postgres@127.0.0.1:1/outbox --once --log text 2> log; rc=$?
  assert_eq "$rc" 1 "exit code"
  assert_grep 'database unreachable, reconnecting' log "the cause is logged"
  assert_grep 'the store failed \(--once\)' log "the run says why it stops"
}

# outbox.enqueue on PostgreSQL: a done run's follow-up is written in the statement
# of its fenced ack; a failed or rejected run writes none; hooks and the top level
# write at once (a delay sets available_at).
t_pg_enqueue_follow_ups_only_when_done() {
  pg_fresh || return 1
  follow_handler
  sql "INSERT INTO outbox (topic, key, payload) VALUES ('job', 'k1', 'ok'), ('job', NULL, 'flaky'), ('job', 'k2', 'poison')"
  TOP=1 "$OUTBOXD" run h.lua --db "$PGURL" --keep-done --backoff 10:10 --log text 2> log &
  local pid=$!
  seven_settled() { pg_settled && [ "$(sql "SELECT count(*) FROM outbox")" = 7 ]; }
  wait_until 30 "seven events settled" seven_settled || { kill -9 $pid; return 1; }
  kill -TERM $pid; wait $pid; assert_eq "$?" 0 "exit code"
  assert_eq "$(sql "SELECT string_agg(payload || '/' || coalesce(key, '-') || '/' || headers, ' ' ORDER BY id) FROM outbox WHERE topic = 'follow'")" \
    '1/k1/{"from":1} 2/-/{"from":2}' "one follow-up per done job, none for the rejected one"
  assert_eq "$(sort -n ran | tr '\n' ' ')" "1 2 2 3 " "runs (the flaky job twice)"
  assert_eq "$(sort -n followed | tr '\n' ' ')" "1 2 " "follow-ups handled"
  assert_eq "$(sql "SELECT status FROM outbox WHERE id = 3")" dead "the rejected job"
  assert_eq "$(sql "SELECT payload || ' ' || status FROM outbox WHERE topic = 'hooked'")" '{"from":"start"} done' "enqueued by the start hook"
  assert_eq "$(sql "SELECT payload || ' ' || status || ' ' || ((extract(epoch FROM available_at) * 1000)::bigint >= $(awk '{ printf "%d", $1 + 200 }' top_at)) FROM outbox WHERE topic = 'top'")" 'loaded done true' "enqueued at the top level, done (available_at: when) 0.2 s after the call or later"
}

# Two hosts; twice, while a psql session holds the table (acks wait), one host's
# runs finish and it is killed with SIGKILL before their acks are written. After
# recovery every job is done with exactly one follow-up: the ack statement the
# killed host had sent commits with its follow-ups once the lock goes, the acks it
# never sent are lost with theirs, and those jobs run again elsewhere.
t_pg_enqueue_sigkill_exactly_one_follow_up() {
  pg_fresh || return 1
  follow_handler
  local n=3000
  sql "INSERT INTO outbox (topic, key, payload) SELECT 'job', 'k' || (g % 100), g::text FROM generate_series(1, $n) g"
  local start="--db $PGURL --keep-done --lease 1000 --batch 100 --concurrency 20 --log text"
  # shellcheck disable=SC2086
  RAN=ran.b SLOW=0.004 "$OUTBOXD" run h.lua $start 2> logb &
  local b=$! a i
  for i in 1 2 3; do
    # shellcheck disable=SC2086
    GATE=gate RAN=ran.a$i SLOW=0.004 "$OUTBOXD" run h.lua $start 2>> loga &
    a=$!
    [ $i = 3 ] && break
    # host a is mid-stream; on a busy machine host b may hold every key for the later
    # rounds, which are extra kills (the first one is required): then a runs on
    if [ $i = 1 ]; then
      wait_count '.' ran.a$i 150 60 || { kill -9 $a $b; return 1; }
    else
      local t=0
      until has_lines '.' ran.a$i 150 || [ $t -ge 1200 ]; do sleep 0.05; t=$((t + 1)); done
      has_lines '.' ran.a$i 150 || break
    fi
    # host a's runs wait at the gate (at least one is held there; later rounds go
    # on without a kill when host a has no run left to hold); a psql session takes
    # the table (acks and claims now wait); the runs go on, finish, and their acks
    # cannot be written
    rm -f gate.held
    touch gate
    if [ $i = 1 ]; then
      wait_count '.' gate.held 1 60 || { kill -9 $a $b; return 1; }
    else
      local t=0
      until has_lines '.' gate.held 1 || [ $t -ge 600 ]; do sleep 0.05; t=$((t + 1)); done
      has_lines '.' gate.held 1 || { rm gate; break; }
    fi
    rm -f unlock
    { echo "BEGIN; LOCK TABLE outbox IN EXCLUSIVE MODE; SELECT 'locked';"
      while [ ! -e unlock ]; do sleep 0.05; done; echo "COMMIT;"; } | psql -qAtX "$PGURL" > lock.out &
    local locker=$!
    wait_for '^locked$' lock.out || { kill -9 $a $b; touch unlock; return 1; }
    local before
    before=$(wc -l < ran.a$i)
    rm gate
    wait_count '.' ran.a$i $((before + 1)) 60 || { kill -9 $a $b; touch unlock; return 1; }
    kill -9 $a; wait $a 2> /dev/null
    touch unlock; wait $locker
  done
  pg_wait_settled 90 || { kill -9 $a $b; return 1; }
  kill -TERM $a $b; wait $a || fail "host a exit $?"; wait $b || fail "host b exit $?"
  assert_eq "$(sql "SELECT count(*) FROM outbox WHERE topic = 'job' AND status = 'done'")" "$n" "jobs done"
  assert_eq "$(sql "SELECT count(*) || ' ' || count(DISTINCT payload) || ' ' || min(payload::int) || ' ' || max(payload::int) FROM outbox WHERE topic = 'follow'")" \
    "$n $n 1 $n" "follow-ups: one per job (count, distinct, smallest, largest)"
  local again
  again=$(cat ran.* | sort -n | uniq -d | wc -l)
  echo "jobs run again after the kills: $again"
  [ "$again" -gt 0 ] || fail "no kill came between a run and its ack (nothing ran twice)"
}

# Retention on PostgreSQL: --keep-done 1d --keep-dead 7d delete old done and dead
# rows in batches on the host's connection, between its other statements: events
# inserted once pruning began are done before it ends; newer rows stay.
t_pg_retention_prunes_old_rows_while_dispatching() {
  pg_fresh || return 1
  echo 'return function() end' > h.lua
  sql "INSERT INTO outbox (topic, payload, status, available_at)
       SELECT 'old', g::text, 'done', now() - interval '2 days' FROM generate_series(1, 300000) g"
  sql "INSERT INTO outbox (topic, payload, status, available_at) VALUES
       ('recent', 'r', 'done', now() - interval '1 hour'), ('olddead', 'x', 'dead', now() - interval '8 days'),
       ('newdead', 'y', 'dead', now() - interval '6 days'), ('later', 'l', 'pending', now() + interval '1 day')"
  "$OUTBOXD" run h.lua --db "$PGURL" --keep-done 1d --keep-dead 7d --log text 2> log &
  local pid=$!
  pruning() { [ "$(sql "SELECT count(*) FROM outbox WHERE topic = 'old'")" -lt 300000 ]; }
  wait_until 60 "pruning to begin" pruning || { kill -9 $pid; return 1; }
  sql "INSERT INTO outbox (topic, payload) SELECT 'fresh', g::text FROM generate_series(1, 100) g"
  fresh_done() { [ "$(sql "SELECT count(*) FROM outbox WHERE topic = 'fresh' AND status = 'done'")" = 100 ]; }
  wait_until 60 "the fresh events to be done" fresh_done || { kill -9 $pid; return 1; }
  local left
  left=$(sql "SELECT count(*) FROM outbox WHERE topic = 'old'")
  echo "old rows left when the fresh events were done: $left"
  [ "$left" -gt 0 ] || fail "pruning ended before the fresh events were done"
  pruned() { [ "$(sql "SELECT count(*) FROM outbox WHERE topic IN ('old', 'olddead')")" = 0 ]; }
  wait_until 120 "the old rows to go" pruned || { kill -9 $pid; return 1; }
  kill -TERM $pid; wait $pid; assert_eq "$?" 0 "exit code"
  assert_eq "$(sql "SELECT string_agg(topic || ':' || status, ' ' ORDER BY id) FROM outbox WHERE topic <> 'fresh'")" \
    "recent:done newdead:dead later:pending" "what stays"
  assert_eq "$(sql "SELECT count(*) FROM outbox WHERE topic = 'fresh' AND status = 'done' AND available_at > now() - interval '10 minutes'")" 100 "done rows stamped with the time they settled"
}
