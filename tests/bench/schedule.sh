#!/bin/bash
# Scheduling, per store (SQLite; PostgreSQL when OUTBOX_TEST_PG is set):
#   (a) a host runs idle; then N events (BENCH_SCHEDULE_N, 10^5) are inserted with
#       available_at spread evenly over SPAN_S s (10), the first LEAD_S s (8) ahead:
#       the insert must be committed before the first is due (10^5 rows took 2-5 s on
#       PostgreSQL on a busy machine; rows that come in late measure the insert, not
#       the host), and how far ahead it was is printed.
#       The handler records how late each one started after its available_at
#       (outbox.now() - available_at, the payload). Prints p50 / p99 / max.
#   (b) an idle host waiting IDLE_S s (10) for one event: how late it started, and
#       the CPU time and wake-ups (voluntary context switches of the loop thread)
#       it spent waiting: a host sleeps until the next due event, it does not poll.
# Run options: BENCH_SCHEDULE_OPTS (default --batch 1000 --concurrency 100). Nothing
# here polls the database while measuring (the handler writes its results to a file
# once it has seen every event). Nothing here asserts.
set -u
OUTBOXD=${OUTBOXD:-$(cd "$(dirname "$0")/../.." && pwd)/outboxd}
N=${BENCH_SCHEDULE_N:-100000}
SPAN_S=${BENCH_SCHEDULE_SPAN_S:-10}
LEAD_S=${BENCH_SCHEDULE_LEAD_S:-8}
IDLE_S=${BENCH_IDLE_S:-10}
read -r -a RUN_OPTS <<< "${BENCH_SCHEDULE_OPTS:---batch 1000 --concurrency 100}"
dir=$(mktemp -d /tmp/outboxd-bench-schedule.XXXXXX)
pgdb=""
admin=""
cleanup() {
  [ -n "$pgdb" ] && psql -qX "$admin" -c "DROP DATABASE IF EXISTS $pgdb WITH (FORCE)" > /dev/null 2>&1
  rm -rf "$dir"
}
trap cleanup EXIT
cd "$dir" || exit 1

# percentile P: of the numbers on stdin
percentile() { sort -n | awk -v p="$1" '{ v[NR] = $1 } END { i = int(NR * p / 100 + 0.999); if (i < 1) i = 1; print v[i] }'; }
# cpu_ms PID: user + system CPU time of the process so far, in ms
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{ print int(($14 + $15) * 1000 / hz) }' "/proc/$1/stat"; }
# switches PID: voluntary context switches of its main (loop) thread so far
switches() { awk '/^voluntary_ctxt_switches/ { print $2 }' "/proc/$1/status"; }

# The handler: the payload is the event's available_at in epoch ms. Latenesses (ms)
# are kept in memory and written to `late` once EXPECT events ran.
cat > late.lua <<'LUA'
local expect, late, n = tonumber(os.getenv("EXPECT")), {}, 0
return function(ev)
  n = n + 1
  late[n] = string.format("%.1f", outbox.now() * 1000 - tonumber(ev.payload))
  if n == expect then
    local f = assert(io.open("late.tmp", "w"))
    f:write(table.concat(late, "\n", 1, n), "\n")
    f:close()
    os.rename("late.tmp", "late")
  end
end
LUA

# wait_file SECONDS: until the file `late` exists
wait_late() { local i=0; while [ ! -e late ] && [ $i -lt $(($1 * 10)) ]; do sleep 0.1; i=$((i + 1)); done; [ -e late ]; }

# measure LABEL DB INSERT_FN: (a) then (b) on DB; INSERT_FN FIRST_MS COUNT STEP_US
# inserts COUNT events due from FIRST_MS (epoch ms), STEP_US apart.
measure() {
  local label=$1 db=$2 insert=$3 pid cpu0 sw0 cpu1 sw1 first ahead
  rm -f late
  EXPECT=$N "$OUTBOXD" run late.lua --db "$db" "${RUN_OPTS[@]}" --log json 2> run.log &
  pid=$!
  sleep 1 # idle, connected
  first=$(($(date +%s%3N) + LEAD_S * 1000))
  $insert "$first" "$N" $((SPAN_S * 1000000 / N))
  ahead=$((first - $(date +%s%3N)))
  if wait_late $((LEAD_S + SPAN_S + 600)); then
    echo "   $label: $N events due over ${SPAN_S} s (${RUN_OPTS[*]}): lateness p50 $(percentile 50 < late) ms, p99 $(percentile 99 < late) ms, max $(percentile 100 < late) ms (inserted $ahead ms before the first was due)"
  else
    echo "   $label: not every event ran ($(tail -1 run.log))"
  fi
  kill -TERM $pid; wait $pid
  rm -f late
  EXPECT=1 "$OUTBOXD" run late.lua --db "$db" --log json 2> idle.log &
  pid=$!
  sleep 1
  $insert $(($(date +%s%3N) + IDLE_S * 1000)) 1 0
  cpu0=$(cpu_ms $pid); sw0=$(switches $pid)
  wait_late $((IDLE_S + 60))
  cpu1=$(cpu_ms $pid); sw1=$(switches $pid)
  kill -TERM $pid; wait $pid
  echo "   $label: idle host, one event due in ${IDLE_S} s: started $(cat late 2> /dev/null || echo '?') ms late; meanwhile $((cpu1 - cpu0)) ms CPU, $((sw1 - sw0)) wake-ups (once-a-second status and memory ticks included)"
}

# ---------------------------------------------------------------- SQLite
"$OUTBOXD" init --db s.db 2> /dev/null || exit 1
sqlite_insert() {
  sqlite3 s.db "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $2 - 1)
    INSERT INTO outbox (topic, payload, available_at)
    SELECT 'due', $1 + i * $3 / 1000, $1 + i * $3 / 1000 FROM n"
}
measure sqlite s.db sqlite_insert

# ---------------------------------------------------------------- PostgreSQL
[ -n "${OUTBOX_TEST_PG:-}" ] || { echo "   pg: OUTBOX_TEST_PG not set (run through tests/with-pg.sh)"; exit 0; }
admin="${OUTBOX_TEST_PG%/*}/postgres"
pgdb="bench_schedule_$$"
PGOPTIONS='-c client_min_messages=warning' psql -qX "$admin" -c "DROP DATABASE IF EXISTS $pgdb" -c "CREATE DATABASE $pgdb" > /dev/null
PG="${OUTBOX_TEST_PG%/*}/$pgdb"
"$OUTBOXD" init --db "$PG" 2> /dev/null || exit 1
pg_insert() {
  psql -qAtX "$PG" -c "INSERT INTO outbox (topic, payload, available_at)
    SELECT 'due', ($1 + g * $3 / 1000)::text, to_timestamp(($1 + g * $3 / 1000) / 1000.0)
    FROM generate_series(0, $2 - 1) g"
}
measure postgres "$PG" pg_insert
