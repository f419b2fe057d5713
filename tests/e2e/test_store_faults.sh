# Stores that must never wedge: bad values in settlements (invalid UTF-8, times out of
# range, webhook answers), refused statements, a stalled PostgreSQL backend, a missing
# table, a wrong password, readiness while idle, NUL characters, a removed SQLite
# file, and the smaller edges (a directory as NDJSON input, retry(NaN), file modes,
# two hosts on one SQLite file). Real PostgreSQL (tests/with-pg.sh), real SQLite files.
# Uses pg_fresh (test_pg.sh), recv_start and WEBHOOK (test_http.sh),
# metrics_port and scrape (test_ops.sh): run.sh sources those files first.

# pgq SQL: one statement on this test's PostgreSQL database (PGURL, set by pg_fresh)
pgq() { psql -qAtX "$PGURL" -c "$1"; }

# faults_handler: h.lua — outcomes with bad values by topic; the rest through the
# shipped webhook handler (OUTBOX_WEBHOOK_URL), "ok" events succeed.
faults_handler() {
  cat > h.lua <<LUA
local webhook = dofile("$WEBHOOK")
return function(ev)
  if ev.topic == "ok" then return end
  if ev.topic == "bad-utf8" then error("bad \255 byte", 0) end
  if ev.topic == "far" then return outbox.retry(1e13) end
  if ev.topic == "reject" then return outbox.reject("nope \200\201") end
  return webhook(ev)
end
LUA
}

# faults_answers: the receiver's answers by topic: a Latin-1 error body, a UTF-8 body
# whose 200-byte snippet ends inside a character, and an absurd Retry-After.
faults_answers() {
  mkdir -p ans
  printf '500\n\nerreur: donn\xe9es refus\xe9es' > ans/latin1
  { printf '500\n\n'; printf 'a%.0s' $(seq 1 199); printf '\xc3\xa9 and more'; } > ans/cut
  printf '503\nRetry-After: 99999999999999\n\nbusy' > ans/later
}

faults_events() {
  local t
  for t in ok bad-utf8 ok far ok reject latin1 ok cut ok later ok; do
    printf '{"topic":"%s","payload":{"n":1}}\n' "$t"
  done
}

t_pg_bad_outcome_values_never_wedge_settlement() {
  pg_fresh || return 1
  faults_answers
  recv_start --answers ans || return 1
  faults_handler
  faults_events | "$OUTBOXD" enqueue --db "$PGURL" 2>/dev/null || fail "enqueue"
  OUTBOX_WEBHOOK_URL=$URL timeout 60 "$OUTBOXD" run h.lua --db "$PGURL" --once --log text \
    --max-attempts 5 --backoff 600000 2> log
  assert_eq "$?" 0 "exit code" || sed 's/^/      | /' log >&2
  assert_no_grep 'database unreachable' log "a bad value is not a lost connection"
  assert_eq "$(pgq "SELECT count(*) FROM outbox WHERE topic = 'ok'")" 0 "every ok event acked"
  assert_eq "$(pgq "SELECT string_agg(topic || ':' || status || ':' || attempts, ' ' ORDER BY id) FROM outbox")" \
    "bad-utf8:pending:1 far:pending:1 reject:dead:1 latin1:pending:1 cut:pending:1 later:pending:1" \
    "every bad outcome settled once"
  assert_eq "$(pgq "SELECT last_error FROM outbox WHERE topic = 'bad-utf8'")" "bad � byte" "invalid byte replaced"
  assert_eq "$(pgq "SELECT last_error FROM outbox WHERE topic = 'reject'")" "nope ��" "reject reason repaired"
  assert_eq "$(pgq "SELECT last_error FROM outbox WHERE topic = 'latin1'")" \
    "webhook: HTTP 500: erreur: donn�es refus�es" "Latin-1 body repaired"
  assert_eq "$(pgq "SELECT right(last_error, 6) FROM outbox WHERE topic = 'cut'")" "aa�..." \
    "snippet cut inside a character repaired"
  assert_eq "$(pgq "SELECT string_agg(extract(year FROM available_at)::text, ' ' ORDER BY id) FROM outbox WHERE topic IN ('far', 'later')")" \
    "9999 9999" "retry times clamped"
}

t_sqlite_bad_outcome_values_are_repaired() {
  "$OUTBOXD" init --db x.db 2>/dev/null || fail "init"
  faults_answers
  recv_start --answers ans || return 1
  faults_handler
  faults_events | "$OUTBOXD" enqueue --db x.db 2>/dev/null || fail "enqueue"
  OUTBOX_WEBHOOK_URL=$URL timeout 60 "$OUTBOXD" run h.lua --db x.db --once --log text \
    --max-attempts 5 --backoff 600000 2> log || fail "exit $?"
  assert_eq "$(sqlite3 x.db "SELECT count(*) FROM outbox WHERE topic = 'ok'")" 0 "every ok event acked"
  assert_eq "$(sqlite3 x.db "SELECT last_error FROM outbox WHERE topic = 'bad-utf8'")" "bad � byte" "invalid byte replaced"
  assert_eq "$(sqlite3 x.db "SELECT last_error FROM outbox WHERE topic = 'latin1'")" \
    "webhook: HTTP 500: erreur: donn�es refus�es" "Latin-1 body repaired"
  assert_eq "$(sqlite3 x.db "SELECT substr(last_error, -6) FROM outbox WHERE topic = 'cut'")" "aa�..." \
    "snippet cut inside a character repaired"
  assert_eq "$(sqlite3 x.db "SELECT group_concat(available_at, ' ') FROM outbox WHERE topic IN ('far', 'later')")" \
    "253402300799999 253402300799999" "retry times clamped"
}

t_pg_refused_settlement_is_written_alone() {
  pg_fresh || return 1
  # the database refuses what the host cannot foresee: "zap" in last_error, and any
  # settlement of the row whose payload is "stuck"
  pgq "ALTER TABLE outbox ADD CONSTRAINT no_bad_word CHECK (last_error IS NULL OR last_error NOT LIKE '%zap%')"
  pgq "CREATE FUNCTION refuse_stuck() RETURNS trigger LANGUAGE plpgsql AS \$\$ BEGIN
         IF NEW.payload = 'stuck' AND NEW.status <> 'processing' THEN RAISE EXCEPTION 'stuck row'; END IF;
         RETURN NEW; END \$\$"
  pgq "CREATE TRIGGER refuse_stuck BEFORE UPDATE ON outbox FOR EACH ROW EXECUTE FUNCTION refuse_stuck()"
  cat > h.lua <<'LUA'
return function(ev)
  if ev.payload == "zap" then error("zap it", 0) end
  if ev.payload == "stuck" then error("plain", 0) end
end
LUA
  local p
  for p in ok zap ok ok stuck ok zap ok; do printf '{"topic":"t","payload":"%s"}\n' "$p"; done |
    "$OUTBOXD" enqueue --db "$PGURL" 2>/dev/null || fail "enqueue"
  timeout 60 "$OUTBOXD" run h.lua --db "$PGURL" --once --keep-done --log text --max-attempts 5 \
    --backoff 600000 2> log || fail "exit $?"
  assert_no_grep 'database unreachable' log "a refused statement is not a lost connection"
  assert_eq "$(pgq "SELECT count(*) FROM outbox WHERE payload = 'ok' AND status = 'done'")" 5 "the other rows settled"
  assert_eq "$(pgq "SELECT count(*) FROM outbox WHERE payload = 'zap' AND status = 'pending' AND attempts = 1
                    AND last_error LIKE 'the outcome could not be stored as reported: %'")" 2 \
    "refused rows written with a plain error"
  assert_grep 'settlement refused by the database; writing it with a plain error' log "the repair is logged"
  assert_eq "$(pgq "SELECT status FROM outbox WHERE payload = 'stuck'")" processing "an unwritable row is left to its lease"
  assert_grep 'settlement refused by the database; the event returns when its lease expires.*id=5' log \
    "giving up is logged with the id"
}

t_pg_idle_host_is_ready_and_counts() {
  pg_fresh || return 1
  pgq "INSERT INTO outbox (topic, payload, available_at) SELECT 't', 'later', now() + interval '1 hour' FROM generate_series(1, 3)"
  printf 'return function(ev) end\n' > h.lua
  "$OUTBOXD" run h.lua --db "$PGURL" --metrics 0 --log text 2> log &
  local pid=$! port
  port=$(metrics_port log) || { kill $pid; return 1; }
  wait_until 60 "outboxd_pending 3" eval 'scrape $port /metrics | grep -qx "outboxd_pending 3"' || { kill $pid; return 1; }
  # ready through several count refreshes (they come once a second)
  local bad=0
  until scrape "$port" /metrics | grep -qE '^outboxd_uptime_seconds ([4-9]|[1-9][0-9])'; do
    [ "$(scrape "$port" /ready; cat code)" = "ready
200" ] || bad=$((bad + 1))
    sleep 0.1
  done
  assert_eq "$bad" 0 "/ready answers that were not 200"
  assert_grep '^outboxd_store_up 1' <(scrape "$port" /metrics) "store up"
  kill $pid; wait $pid || fail "exit $?"
}

t_pg_stalled_backend_is_noticed_and_left_behind() {
  pg_fresh || return 1
  printf 'return function(ev) outbox.log.info("HANDLED", { payload = ev.payload }) end\n' > h.lua
  "$OUTBOXD" run h.lua --db "$PGURL" --store-timeout 1500 --poll 300 --metrics 0 --log text 2> log &
  local pid=$! port backend=""
  port=$(metrics_port log) || { kill $pid; return 1; }
  wait_for 'database connected' log || { kill $pid; return 1; }
  backend=$(pgq "SELECT pid FROM pg_stat_activity WHERE application_name = 'outboxd' AND datname = current_database()")
  [ -n "$backend" ] && [ "$(echo "$backend" | wc -l)" = 1 ] || { fail "the host's backend: '$backend'"; kill $pid; return 1; }
  kill -STOP "$backend"
  trap 'kill -CONT '"$backend"' 2>/dev/null; kill '"$pid"' 2>/dev/null' EXIT
  wait_for 'database unreachable, reconnecting .*error="no answer within 1500 ms' log 30 || return 1
  pgq "INSERT INTO outbox (topic, payload) VALUES ('t', 'after the stall')"
  wait_for 'HANDLED .*payload="after the stall"' log 30 || return 1
  wait_until 30 "/ready 200 on the new connection" eval '[ "$(scrape $port /ready)" = ready ]'
  assert_eq "$(grep -c 'database unreachable' log)" 1 "the stall is logged once"
  kill -CONT "$backend"
  kill $pid; wait $pid || fail "exit $?"
  trap - EXIT
}

t_pg_missing_table_once_exits_1_and_run_waits_for_init() {
  pg_fresh || return 1
  pgq "DROP TABLE outbox CASCADE"
  printf 'return function(ev) outbox.log.info("HANDLED", { payload = ev.payload }) end\n' > h.lua
  local t0=$SECONDS
  timeout 60 "$OUTBOXD" run h.lua --db "$PGURL" --once --poll 60000 --log text 2> log1
  assert_eq "$?" 1 "--once exit code"
  [ $((SECONDS - t0)) -le 15 ] || fail "--once took $((SECONDS - t0)) s"
  assert_grep 'no outbox table in the database \(run: outboxd init\)' log1 "says why"
  [ "$(wc -l < log1)" -le 6 ] || fail "--once logged $(wc -l < log1) lines"
  "$OUTBOXD" run h.lua --db "$PGURL" --log text 2> log &
  local pid=$!
  wait_for 'no outbox table' log || { kill $pid; return 1; }
  "$OUTBOXD" init --db "$PGURL" 2>/dev/null || fail "init"
  pgq "INSERT INTO outbox (topic, payload) VALUES ('t', 'after init')"
  wait_for 'HANDLED .*payload="after init"' log 30
  assert_eq "$(grep -c 'no outbox table' log)" 1 "the missing table is logged once"
  assert_grep 'database accepts statements again' log "recovery is logged"
  kill $pid; wait $pid || fail "exit $?"
}

t_pg_wrong_password_once_exits_1_and_run_backs_off() {
  pg_fresh || return 1
  [ -n "${OUTBOX_TEST_PGDATA:-}" ] || { fail "OUTBOX_TEST_PGDATA is not set (run through tests/with-pg.sh)"; return 1; }
  local role="pw_$$" hba="$OUTBOX_TEST_PGDATA/data/pg_hba.conf" slog="$OUTBOX_TEST_PGDATA/server.log"
  pgq "CREATE ROLE $role LOGIN PASSWORD 'right'; GRANT ALL ON outbox TO $role; GRANT ALL ON SEQUENCE outbox_id_seq TO $role"
  local rest
  rest=$(cat "$hba")
  printf 'host all %s 127.0.0.1/32 scram-sha-256\n%s\n' "$role" "$rest" > "$hba" # same file: keeps its owner
  pgq "SELECT pg_reload_conf()" > /dev/null
  local bad="postgres://$role:wrong@${PGURL#postgres://*@}"
  printf 'return function(ev) outbox.log.info("HANDLED", { payload = ev.payload }) end\n' > h.lua
  wait_until 60 "the reloaded hba to refuse the password" eval \
    '! psql -qAtX "$bad" -c "SELECT 1" > /dev/null 2>&1' || return 1
  local t0=$SECONDS
  # a long --poll: the refusal itself must end the run, not the next idle look
  timeout 60 "$OUTBOXD" run h.lua --db "$bad" --once --poll 60000 --log text 2> log1
  assert_eq "$?" 1 "--once exit code"
  [ $((SECONDS - t0)) -le 15 ] || fail "--once took $((SECONDS - t0)) s"
  assert_grep 'password authentication failed' log1 "says why"
  local before
  before=$(grep -c "password authentication failed for user \"$role\"" "$slog")
  "$OUTBOXD" run h.lua --db "$bad" --log text 2> log &
  local pid=$!
  # the server sees the attempts; the host says so once
  wait_until 30 "4 more refused attempts in the server log" eval \
    '[ $(grep -c "password authentication failed for user \"$role\"" "$slog") -ge $((before + 5)) ]' ||
    { kill $pid; return 1; }
  assert_eq "$(grep -c 'database unreachable' log)" 1 "the refusal is logged once"
  pgq "ALTER ROLE $role PASSWORD 'wrong'"
  pgq "INSERT INTO outbox (topic, payload) VALUES ('t', 'password fixed')"
  wait_for 'HANDLED .*payload="password fixed"' log 30
  assert_grep 'database reachable again' log "recovery is logged"
  kill $pid; wait $pid || fail "exit $?"
}

t_nul_characters_are_refused_never_cut() {
  pg_fresh || return 1
  printf '%s\n' '{"topic":"t","payload":"abc\u0000def"}' '{"topic":"t","payload":"fine"}' \
    '{"topic":"a\u0000b","payload":"x"}' '{"topic":"t","key":"k\u0000","payload":"x"}' > in.ndjson
  "$OUTBOXD" enqueue --db "$PGURL" < in.ndjson 2> pg.err
  assert_eq "$?" 1 "PostgreSQL enqueue exit code"
  assert_grep '^line 1: payload contains a NUL character \(\\u0000\), which PostgreSQL text cannot hold' pg.err "payload refused"
  assert_grep '^line 3: "topic" contains a NUL character' pg.err "topic refused"
  assert_grep '^line 4: "key" contains a NUL character' pg.err "key refused"
  assert_eq "$(pgq "SELECT string_agg(payload, ',') FROM outbox")" fine "only the whole event stored"
  # SQLite stores a NUL in the payload whole; topics and keys are refused
  "$OUTBOXD" init --db x.db 2>/dev/null || fail "init"
  "$OUTBOXD" enqueue --db x.db < in.ndjson 2> sq.err
  assert_eq "$?" 1 "SQLite enqueue exit code"
  assert_no_grep '^line 1' sq.err "SQLite holds the payload"
  assert_grep '^line 3: "topic" contains a NUL character' sq.err "topic refused"
  assert_eq "$(sqlite3 x.db "SELECT group_concat(length(CAST(payload AS BLOB)), ',') FROM outbox")" "7,4" "payload stored whole"
  printf 'return function(ev) outbox.log.info("HANDLED", { len = #ev.payload }) end\n' > h.lua
  "$OUTBOXD" run h.lua --db x.db --once --log text 2> log || fail "exit $?"
  assert_grep 'HANDLED id=1 len=7' log "the handler sees the whole payload"
  # an NDJSON source skips such lines as bad, naming the line
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --log text 2> log2 || fail "ndjson exit $?"
  assert_grep 'bad NDJSON line skipped line=3 error=.*NUL character' log2 "ndjson topic"
  assert_grep 'bad NDJSON line skipped line=4 error=.*NUL character' log2 "ndjson key"
  assert_grep 'HANDLED id=1 len=7' log2 "ndjson payload whole"
}

t_sqlite_removed_file_is_noticed() {
  "$OUTBOXD" init --db x.db 2>/dev/null || fail "init"
  printf 'return function(ev) end\n' > h.lua
  "$OUTBOXD" run h.lua --db x.db --metrics 0 --log text 2> log &
  local pid=$! port
  port=$(metrics_port log) || { kill $pid; return 1; }
  wait_until 60 "/ready 200" eval '[ "$(scrape $port /ready)" = ready ]' || { kill $pid; return 1; }
  rm -f x.db x.db-wal x.db-shm
  wait_for 'database file removed or replaced' log 60 || { kill $pid; return 1; }
  wait_until 60 "/ready 503" eval 'scrape $port /ready > /dev/null; [ "$(cat code)" = 503 ]'
  "$OUTBOXD" init --db x.db 2>/dev/null || fail "init again"
  "$OUTBOXD" enqueue --db x.db --topic t --payload p 2>/dev/null || fail "enqueue"
  wait_until 60 "/ready still 503 with a new file in place" eval 'scrape $port /ready > /dev/null; [ "$(cat code)" = 503 ]'
  assert_eq "$(grep -c 'database file removed or replaced' log)" 1 "logged once"
  kill $pid; wait $pid
  # --once: a run that loses its file while a handler runs exits 1
  { gate_lua; printf 'return function(ev) outbox.log.info("RUNNING"); wait_file("go") end\n'; } > g.lua
  "$OUTBOXD" enqueue --db x.db --topic t --payload q 2>/dev/null || fail "enqueue"
  "$OUTBOXD" run g.lua --db x.db --once --log text 2> log2 &
  pid=$!
  wait_for RUNNING log2 || { kill $pid; return 1; }
  rm -f x.db x.db-wal x.db-shm
  touch go
  wait $pid
  assert_eq "$?" 1 "--once exit code"
  assert_grep 'database file removed or replaced' log2 "--once says why"
}

t_small_store_edges() {
  printf 'return function(ev) if ev.topic == "nan" then return outbox.retry(0/0) end
    if ev.topic == "inf" then return outbox.retry(math.huge) end end\n' > h.lua
  mkdir d
  "$OUTBOXD" run h.lua --db ndjson:d 2> err1
  assert_eq "$?" 1 "a directory as NDJSON input"
  assert_grep 'ndjson:d: is a directory' err1 "says why"
  printf '%s\n' '{"topic":"nan","payload":1}' '{"topic":"inf","payload":1}' |
    "$OUTBOXD" run h.lua --db ndjson:- --max-attempts 1 --log text 2> log || fail "exit $?"
  assert_grep 'event dead id=1 .*error=".*outbox.retry: seconds must be a finite number >= 0, got nan"' log "NaN refused"
  assert_grep 'event dead id=2 .*error=".*outbox.retry: seconds must be a finite number >= 0, got inf"' log "inf refused"
  # file modes: owner only, the WAL and shared-memory files too
  "$OUTBOXD" init --db p.db 2>/dev/null || fail "init"
  assert_eq "$(stat -c %a p.db)" 600 "database file mode"
  { gate_lua; printf 'return function(ev) outbox.log.info("RUNNING"); wait_file("go") end\n'; } > g.lua
  "$OUTBOXD" enqueue --db p.db --topic t --payload x 2>/dev/null || fail "enqueue"
  "$OUTBOXD" run g.lua --db p.db --once --log text 2> log2 &
  local pid=$!
  wait_for RUNNING log2 || { kill $pid; return 1; }
  assert_eq "$(stat -c %a p.db-wal p.db-shm | tr '\n' ' ')" "600 600 " "-wal and -shm modes"
  touch go
  wait $pid || fail "exit $?"
}

t_sqlite_two_hosts_on_one_file_say_busy_once() {
  "$OUTBOXD" init --db x.db 2>/dev/null || fail "init"
  awk 'BEGIN { for (i = 1; i <= 3000; i++) printf "{\"topic\":\"t\",\"key\":\"k%d\",\"payload\":\"x\"}\n", i % 20 }' |
    "$OUTBOXD" enqueue --db x.db 2>/dev/null || fail "enqueue"
  cat > h.lua <<'LUA'
local f = assert(io.open("seen.log", "a"))
f:setvbuf("line")
local me = os.getenv("HOST")
return function(ev) f:write(me, " ", ev.id, "\n") end
LUA
  # b keeps running while a drains the file: b meets the lock again and again
  HOST=b "$OUTBOXD" run h.lua --db x.db --log text 2> logb &
  local b=$!
  HOST=a "$OUTBOXD" run h.lua --db x.db --once --log text 2> loga
  assert_eq "$?" 0 "host a exit code"
  wait_until 30 "every event handled" eval '[ "$(awk "{print \$2}" seen.log | sort -un | wc -l)" = 3000 ]'
  kill $b; wait $b || fail "host b exit $?"
  [ "$(grep -c 'database busy' loga)" -le 1 ] || fail "host a said busy $(grep -c 'database busy' loga) times"
  [ "$(grep -c 'database busy' logb)" -le 1 ] || fail "host b said busy $(grep -c 'database busy' logb) times"
  ! grep -h 'database busy' loga logb | grep -qv 'SQLite has one writer at a time' || fail "busy without the reason"
}
