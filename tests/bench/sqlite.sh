#!/bin/bash
# SQLite store benchmarks on the real binary: end-to-end throughput of `run --once`
# over N pending rows (no-op handler), pick-up latency from another process's
# commit to the handler starting, and CPU time of an idle host.
# BENCH_N (default 10^6), BENCH_RUNS (3), BENCH_LATENCY_EVENTS (200), BENCH_IDLE_S (10).
. "$(dirname "$0")/lib.sh"
set -u
OUTBOXD=${OUTBOXD:-$(cd "$(dirname "$0")/../.." && pwd)/outboxd}
N=${BENCH_N:-1000000}
RUNS=${BENCH_RUNS:-3}
LAT_EVENTS=${BENCH_LATENCY_EVENTS:-200}
IDLE_S=${BENCH_IDLE_S:-10}
dir=$(mktemp -d /tmp/outboxd-bench.XXXXXX)
trap 'rm -rf "$dir"' EXIT
cd "$dir" || exit 1

# percentile P: of the numbers on stdin
percentile() { sort -n | awk -v p="$1" '{ v[NR] = $1 } END { i = int(NR * p / 100 + 0.999); if (i < 1) i = 1; print v[i] }'; }

# A template database with N pending rows, copied for every run.
make_template() {
  "$OUTBOXD" init --db tpl.db 2> /dev/null || exit 1
  sqlite3 tpl.db "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $N)
    INSERT INTO outbox (topic, payload) SELECT 'orders', '{\"order\": ' || i || ', \"amount\": 99.5}' FROM n" || exit 1
}

# throughput BATCH: events/s of one `run --once` over a fresh copy
throughput() {
  cp tpl.db x.db
  rm -f x.db-wal x.db-shm
  local start end
  start=$(date +%s%N)
  "$OUTBOXD" run noop.lua --db x.db --once --batch "$1" --concurrency 1000 --log json 2> run.log \
    || { echo "run failed: $(tail -1 run.log)" >&2; return 1; }
  end=$(date +%s%N)
  grep -q "\"processed\":$N" run.log || { echo "not all processed: $(grep stopped run.log)" >&2; return 1; }
  echo $(( N * 1000000000 / (end - start) ))
}

bench_throughput() {
  printf 'return function(ev) end\n' > noop.lua
  make_template
  for b in 50 1000; do
    local r=() i
    for i in $(seq 1 "$RUNS"); do r+=("$(throughput "$b")") || return 1; done
    echo "sqlite batch=$b: $(printf '%s\n' "${r[@]}" | median) events/s (median of $RUNS; runs: ${r[*]}; N=$N)"
  done
}

# Latency: another process commits one row at a time with random 5-30 ms gaps.
bench_latency() {
  cat > lat.lua <<'LUA'
return function(ev)
  outbox.log.info("LAT", { ms = string.format("%.3f", (outbox.now() - ev.created_at / 1000) * 1000) })
end
LUA
  rm -f l.db*
  "$OUTBOXD" init --db l.db 2> /dev/null
  "$OUTBOXD" run lat.lua --db l.db --poll 5000 --log text 2> lat.log &
  local pid=$! i
  for i in $(seq 1 50); do grep -q started lat.log && break; sleep 0.05; done
  for i in $(seq 1 "$LAT_EVENTS"); do
    echo "INSERT INTO outbox (topic, payload) VALUES ('t', '$i');"
    sleep "0.0$(( RANDOM % 26 + 5 ))"
  done | sqlite3 l.db
  for i in $(seq 1 100); do [ "$(grep -c ' LAT ' lat.log)" -ge "$LAT_EVENTS" ] && break; sleep 0.1; done
  kill -TERM $pid; wait $pid
  grep -oE ' ms=[0-9.-]+' lat.log | cut -d= -f2 > lat.txt
  echo "sqlite pick-up latency (--poll 5000, $(wc -l < lat.txt) events): p50 $(percentile 50 < lat.txt) ms, p99 $(percentile 99 < lat.txt) ms, max $(percentile 100 < lat.txt) ms"
}

# CPU ticks (utime + stime) of PID
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

bench_idle() {
  printf 'return function(ev) end\n' > noop.lua
  rm -f i.db*
  "$OUTBOXD" init --db i.db 2> /dev/null
  "$OUTBOXD" run noop.lua --db i.db --log text 2> idle.log &
  local pid=$! i
  for i in $(seq 1 50); do grep -q started idle.log && break; sleep 0.05; done
  sleep 0.5 # past start-up
  local t0 t1 hz
  t0=$(cpu_ticks $pid)
  sleep "$IDLE_S"
  t1=$(cpu_ticks $pid)
  kill -TERM $pid; wait $pid
  hz=$(getconf CLK_TCK)
  echo "sqlite idle host: $(( (t1 - t0) * 1000 / hz )) ms CPU in ${IDLE_S} s (utime+stime from /proc/PID/stat, ${hz} Hz ticks)"
}

bench_throughput
bench_latency
bench_idle
