#!/bin/bash
# PostgreSQL store benchmarks (needs OUTBOX_TEST_PG; `make bench` starts a throwaway
# server through tests/with-pg.sh):
#   (a) one host, no-op handler, batch 1000, ROWS rows inserted with generate_series, --once
#   (b) two hosts on the same outbox, same rows
#   (c) pick-up latency: events inserted one at a time into an idle host (--poll 60000);
#       the handler logs outbox.now() - created_at; p50 and p99 over LAT_N events
# Prints events/s (median of RUNS) and latency percentiles. Nothing here asserts.
. "$(dirname "$0")/lib.sh"
set -u
RUNS=${RUNS:-3}
ROWS=${ROWS:-200000}
LAT_N=${LAT_N:-200}
OUTBOXD=${OUTBOXD:-$(cd "$(dirname "$0")/../.." && pwd)/outboxd}
[ -n "${OUTBOX_TEST_PG:-}" ] || { echo "   pg: OUTBOX_TEST_PG not set (run through tests/with-pg.sh)"; exit 0; }
tmp=$(mktemp -d /tmp/outboxd-bench-pg.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
admin="${OUTBOX_TEST_PG%/*}/postgres"
DB="${OUTBOX_TEST_PG%/*}/bench_pg_$$"
PGOPTIONS='-c client_min_messages=warning' psql -qX "$admin" -c "DROP DATABASE IF EXISTS bench_pg_$$" -c "CREATE DATABASE bench_pg_$$" >/dev/null
trap 'psql -qX "$admin" -c "DROP DATABASE IF EXISTS bench_pg_$$ WITH (FORCE)" >/dev/null 2>&1; rm -rf "$tmp"' EXIT
"$OUTBOXD" init --db "$DB" 2>/dev/null
sql() { psql -qAtX "$DB" -c "$1"; }
now_ns() { date +%s%N; }
echo 'return function(ev) end' > noop.lua

fill() {
  sql "TRUNCATE outbox" && sql "INSERT INTO outbox (topic, payload) SELECT 'bench', g::text FROM generate_series(1, $ROWS) g" \
    && sql "VACUUM ANALYZE outbox"
}

# throughput HOSTS: events/s from the first start to the last exit.
throughput() {
  local hosts=$1 pids="" t0 t1
  fill
  t0=$(now_ns)
  for _ in $(seq 1 "$hosts"); do
    "$OUTBOXD" run noop.lua --db "$DB" --once --batch 1000 --concurrency 100 --log json 2>> run.log &
    pids="$pids $!"
  done
  for p in $pids; do wait "$p"; done
  t1=$(now_ns)
  left=$(sql "SELECT count(*) FROM outbox")
  [ "$left" = 0 ] || echo "   warning: $left rows left" >&2
  echo $(( ROWS * 1000000000 / (t1 - t0) ))
}

one=$(for _ in $(seq 1 "$RUNS"); do throughput 1; done | median)
echo "   one host:  $one events/s  ($ROWS rows, batch 1000, concurrency 100, --once, median of $RUNS)"
two=$(for _ in $(seq 1 "$RUNS"); do throughput 2; done | median)
echo "   two hosts: $two events/s  ($(awk -v a="$two" -v b="$one" 'BEGIN { printf "%.2f", a / b }')x one host)"

# Latency: one idle host, events inserted one at a time.
sql "TRUNCATE outbox"
printf 'return function(ev) outbox.log.info("LAT", { ms = (outbox.now() - ev.created_at / 1000) * 1000 }) end\n' > lat.lua
"$OUTBOXD" run lat.lua --db "$DB" --poll 60000 --log text 2> lat.log &
host=$!
for _ in $(seq 1 100); do grep -q 'database connected' lat.log && break; sleep 0.05; done
for _ in $(seq 1 "$LAT_N"); do sql "INSERT INTO outbox (topic, payload) VALUES ('lat', 'x')"; sleep 0.01; done
sleep 0.5
kill -TERM $host; wait $host
grep -oE 'LAT id=[0-9]+ ms=[-0-9.]+' lat.log | sed -E 's/.*ms=//' | sort -n > lat.txt
n=$(wc -l < lat.txt)
p50=$(awk -v n="$n" 'NR == int(n * 0.50 + 0.5) { print }' lat.txt)
p99=$(awk -v n="$n" 'NR == int(n * 0.99 + 0.5) { print }' lat.txt)
echo "   pick-up latency: p50 ${p50} ms, p99 ${p99} ms  ($n events inserted one at a time, LISTEN, --poll 60000)"
