# One outbox, many services: each host claims only the topics its script handles
# (narrowed by --topics), other topics stay pending untouched; per-key order holds
# across hosts whose keys span topics; pause / resume reach running hosts; an open
# breaker's topics are not claimed while the other route flows. Real SQLite files,
# and the same against a real PostgreSQL server (tests/with-pg.sh).

# topics_recorder FILE PATTERN...: a script handling only PATTERNs, appending
# "host id key topic" to seen.log for each event (O_APPEND, one write per line).
topics_recorder() {
  local file=$1
  shift
  {
    echo 'local f = assert(io.open("seen.log", "a")); f:setvbuf("line")'
    echo 'local me = os.getenv("HOST") or "h"'
    echo 'local function rec(ev) f:write(me, " ", ev.id, " ", ev.key or "-", " ", ev.topic, "\n") end'
    for p in "$@"; do echo "outbox.handle(\"$p\", rec)"; done
  } > "$file"
}

# topics_events N [keyless-audit]: N events each of order.created, user.created and
# audit.log interleaved; keys k0..k9 span the three topics (the first two only, the
# audit.log events keyless, with a second argument).
topics_events() {
  awk -v n="$1" -v free="${2:-}" 'BEGIN { split("order.created user.created audit.log", t, " ")
    for (i = 0; i < 3 * n; i++)
      if (free != "" && i % 3 == 2) printf "{\"topic\":\"%s\",\"payload\":\"{}\"}\n", t[i % 3 + 1]
      else printf "{\"topic\":\"%s\",\"payload\":\"{}\",\"key\":\"k%d\"}\n", t[i % 3 + 1], i % 10 }'
}

# db_sql DB SQL: the query on a SQLite file or a PostgreSQL URL
db_sql() {
  case $1 in
  postgres*) psql -qAtX "$1" -c "$2" ;;
  *) sqlite3 "$1" "$2" ;;
  esac
}

db_is() { [ "$(db_sql "$1" "$2" 2>/dev/null)" = "$3" ]; }

# wait_db DB SQL VALUE [SECONDS]
wait_db() {
  wait_until "${4:-60}" "'$2' to print '$3'" db_is "$1" "$2" "$3" ||
    { echo "      (prints '$(db_sql "$1" "$2" 2>&1)')" >&2; return 1; }
}

# Two hosts, different scripts, one outbox: each delivers only its topics, nothing
# is dead-lettered, a topic neither handles stays pending with attempts 0, per-key
# order holds although each key's events alternate between the hosts; a reload
# that adds a pattern picks up the waiting topic.
topics_two_hosts() {
  local db=$1
  topics_recorder a.lua 'order.*'
  topics_recorder b.lua 'user.created'
  topics_events 100 keyless-audit | "$OUTBOXD" enqueue --db "$db" 2> /dev/null || fail "enqueue" || return 1
  HOST=a "$OUTBOXD" run a.lua --db "$db" --poll 200 --log text 2> a.log &
  BG="$BG $!"
  HOST=b "$OUTBOXD" run b.lua --db "$db" --poll 200 --log text 2> b.log &
  BG="$BG $!"
  trap 'for p in $BG; do kill $p 2>/dev/null; done; wait 2>/dev/null' EXIT
  wait_db "$db" "SELECT count(*) FROM outbox WHERE topic <> 'audit.log' AND status <> 'done'" 0 90 || return 1
  assert_eq "$(grep -c '^a .* order\.created$' seen.log)" 100 "order events run by host a" || return 1
  assert_eq "$(grep -c '^b .* user\.created$' seen.log)" 100 "user events run by host b" || return 1
  assert_eq "$(wc -l < seen.log)" 200 "events run in all" || return 1
  assert_eq "$(db_sql "$db" "SELECT count(*) FROM outbox WHERE status = 'dead'")" 0 "dead events"
  assert_eq "$(db_sql "$db" "SELECT count(*), sum(attempts) FROM outbox WHERE status = 'pending' AND topic = 'audit.log'" | tr '|' ' ')" \
    "100 0" "audit.log pending, untouched" || return 1
  assert_no_grep 'no handler for topic' a.log "host a dead-lettered nothing"
  assert_no_grep 'no handler for topic' b.log "host b dead-lettered nothing"
  # every key's events alternate between the hosts, in id order
  assert_eq "$(awk '{ print $3 }' seen.log | sort -u | wc -l)" 10 "keys seen" || return 1
  check_key_order exactly || return 1
  # a reload adds audit.*: host b takes the waiting events
  topics_recorder b.lua 'user.created' 'audit.*'
  wait_db "$db" "SELECT count(*) FROM outbox WHERE status <> 'done'" 0 90 || return 1
  assert_eq "$(grep -c '^b .* audit\.log$' seen.log)" 100 "audit events run by host b after its reload"
  check_key_order exactly
}

t_topics_two_hosts_share_one_outbox() {
  "$OUTBOXD" init --db x.db 2> /dev/null || fail "init" || return 1
  sqlite3 x.db "PRAGMA busy_timeout = 5000" > /dev/null
  topics_two_hosts x.db
}

# --topics narrows a catch-all; a bad pattern is a usage error naming it.
t_topics_flag_narrows_a_catch_all() {
  "$OUTBOXD" init --db x.db 2> /dev/null || fail "init" || return 1
  topics_events 20 | "$OUTBOXD" enqueue --db x.db 2> /dev/null || fail "enqueue" || return 1
  echo 'return function(ev) end' > h.lua
  "$OUTBOXD" run h.lua --db x.db --topics 'user.*, order.created' --once --log text 2> log ||
    fail "run --once" || return 1
  assert_eq "$(sqlite3 x.db "SELECT topic, status, attempts, count(*) FROM outbox GROUP BY 1, 2, 3 ORDER BY 1" | tr '\n' ' ')" \
    "audit.log|pending|0|20 order.created|pending|0|16 user.created|pending|0|13 " \
    "each key's order/user events before its first audit.log event ran, no later one" || return 1
  OUTBOX_TOPICS='audit.*' "$OUTBOXD" run h.lua --db x.db --once --log text 2> log2 || fail "run" || return 1
  assert_eq "$(sqlite3 x.db "SELECT count(*) FROM outbox WHERE topic = 'audit.log' AND status = 'pending'")" 10 \
    "OUTBOX_TOPICS: each key's first audit.log event ran" || return 1
  "$OUTBOXD" run h.lua --db x.db --topics 'or*der' --once 2> err
  assert_eq "$?" 2 "exit code for a bad --topics"
  assert_grep "topics.*or\*der" err "the message names the pattern"
}

# pause / resume: a running host starts no event of a paused topic (it logs the
# change), other topics flow, the paused ones stay pending untouched; resume
# restarts them. status, /metrics and the status line show the paused patterns.
topics_pause() {
  local db=$1 port
  echo 'local f = assert(io.open("seen.log", "a")); f:setvbuf("line")
return function(ev) f:write(ev.id, " ", ev.topic, "\n") end' > h.lua
  "$OUTBOXD" run h.lua --db "$db" --poll 60000 --metrics 0 --log text 2> log &
  BG="$BG $!"
  trap 'for p in $BG; do kill $p 2>/dev/null; done; wait 2>/dev/null' EXIT
  port=$(metrics_port log) || return 1
  "$OUTBOXD" pause --db "$db" 'order.*' > out || fail "pause" || return 1
  assert_grep '^paused order\.\*' out "pause says so"
  wait_for 'paused topics changed paused=order\.\*' log 60 || return 1
  { ndjson 50 order.created; ndjson 50 user.created; } | "$OUTBOXD" enqueue --db "$db" 2> /dev/null ||
    fail "enqueue" || return 1
  wait_db "$db" "SELECT count(*) FROM outbox WHERE topic = 'user.created' AND status <> 'done'" 0 || return 1
  assert_eq "$(db_sql "$db" "SELECT count(*), sum(attempts) FROM outbox WHERE topic = 'order.created' AND status = 'pending'" | tr '|' ' ')" \
    "50 0" "order.created pending, untouched, while paused" || return 1
  assert_no_grep 'order\.created' seen.log "no paused event ran"
  "$OUTBOXD" status --db "$db" --json > st.json || fail "status" || return 1
  assert_grep '"paused": \["order\.\*"\]' st.json "status --json lists the pattern"
  "$OUTBOXD" status --db "$db" > st.txt
  assert_grep '^  order\.\*$' st.txt "status lists the pattern"
  scrape "$port" /metrics > m.txt
  assert_grep '^outboxd_paused\{pattern="order\.\*"\} 1' m.txt "/metrics shows the pattern"
  "$OUTBOXD" resume --db "$db" 'order.*' > out || fail "resume" || return 1
  wait_for 'paused topics changed paused=-' log 60 || return 1
  wait_db "$db" "SELECT count(*) FROM outbox WHERE status <> 'done'" 0 || return 1
  assert_eq "$(grep -c 'order\.created' seen.log)" 50 "order events after resume"
  scrape "$port" /metrics > m.txt
  assert_no_grep '^outboxd_paused\{' m.txt "/metrics after resume"
}

t_topics_pause_and_resume() {
  "$OUTBOXD" init --db x.db 2> /dev/null || fail "init" || return 1
  topics_pause x.db
}

# A route whose breaker is open: its topics are not claimed at all (rows enqueued
# while it is open keep available_at, attempts and locked_by untouched) while the
# other route delivers everything.
t_topics_open_breaker_is_not_claimed() {
  "$OUTBOXD" init --db x.db 2> /dev/null || fail "init" || return 1
  cat > h.lua <<'LUA'
local f = assert(io.open("seen.log", "a")); f:setvbuf("line")
outbox.handle("a.*", function(ev) error("down") end)
outbox.handle("b.*", function(ev) f:write(ev.id, " ", ev.topic, "\n") end)
LUA
  ndjson 20 a.x | "$OUTBOXD" enqueue --db x.db 2> /dev/null || fail "enqueue" || return 1
  "$OUTBOXD" run h.lua --db x.db --breaker-window 10 --breaker-min-calls 5 \
    --breaker-cooldown 600000 --backoff 100:100 --max-attempts 1000 --poll 100 --log text 2> log &
  BG="$BG $!"
  trap 'for p in $BG; do kill $p 2>/dev/null; done; wait 2>/dev/null' EXIT
  wait_for 'circuit breaker changed state=open breaker=a\.\*' log 30 || return 1
  local before
  before=$(sqlite3 x.db "SELECT sum(attempts) FROM outbox WHERE topic = 'a.x'")
  { ndjson 200 a.y; ndjson 200 b.x; } | "$OUTBOXD" enqueue --db x.db 2> /dev/null || fail "enqueue" || return 1
  wait_sql "SELECT count(*) FROM outbox WHERE topic = 'b.x'" 0 60 || return 1
  assert_eq "$(wc -l < seen.log)" 200 "b.* delivered while a.* is open" || return 1
  assert_eq "$(sqlite3 x.db "SELECT count(*), sum(attempts), sum(available_at), count(locked_by) FROM outbox WHERE topic = 'a.y'" | tr '|' ' ')" \
    "200 0 0 0" "a.y rows enqueued while open: never claimed" || return 1
  assert_eq "$(sqlite3 x.db "SELECT sum(attempts) FROM outbox WHERE topic = 'a.x'")" "$before" \
    "a.x attempts while open"
}

t_pg_topics_two_hosts_share_one_outbox() {
  pg_fresh || return 1
  topics_two_hosts "$PGURL"
}

t_pg_topics_pause_and_resume() {
  pg_fresh || return 1
  topics_pause "$PGURL"
}
