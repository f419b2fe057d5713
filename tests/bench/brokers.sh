#!/bin/bash
# Broker benchmarks: events/s relayed by handlers/redis-stream.lua and handlers/nats.lua
# at concurrency 200 (BROKER_N events from an NDJSON file), against each broker's own
# tool on the same box at the same concurrency:
#   Redis: redis-benchmark -c 200 running the same XADD (one thread, no pipelining
#          beyond one command per connection);
#   NATS:  tests/tools/js_bench.c, cnats' own async JetStream publishing with at most
#          200 acks outstanding, a Nats-Msg-Id on each message (as outboxd sends).
# Servers are throwaway ones on free 127.0.0.1 ports: Redis without persistence,
# JetStream with file storage in a temp folder. Medians of RUNS runs. outboxd's time
# includes its start-up and reading the NDJSON file.
. "$(dirname "$0")/lib.sh"
set -u
RUNS=${RUNS:-3}
N=${BROKER_N:-100000}
C=200
root=$(cd "$(dirname "$0")/../.." && pwd)
OUTBOXD=${OUTBOXD:-$root/outboxd}
JS_BENCH=${JS_BENCH:-$root/build/js_bench}
tmp=$(mktemp -d /tmp/outboxd-bench-brokers.XXXXXX)
pids=
trap 'for p in $pids; do kill $p 2>/dev/null; done; wait; rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
. "$root/tests/e2e/lib.sh" # free_port

PAYLOAD='{"order":1,"amount":4548,"currency":"EUR"}'
awk -v n="$N" 'BEGIN { for (i = 1; i <= n; i++) printf "{\"topic\":\"order.paid\",\"key\":\"k%d\",\"payload\":{\"order\":%d,\"amount\":4548,\"currency\":\"EUR\"}}\n", i % 1000, i }' > events.ndjson

# median_of FN: runs "FN i" for i = 1..RUNS (each prints a rate), prints the median.
median_of() {
  local rates="" i
  for i in $(seq "$RUNS"); do rates="$rates $("$1" "$i")"; done
  echo "      $1 runs:$rates" >&2
  echo "$rates" | tr ' ' '\n' | grep . | median
}

# per_second N CMD...: runs CMD (its stderr in ./log), prints N divided by its time.
per_second() {
  local n=$1 t0 t1
  shift
  t0=$(date +%s%N)
  "$@" 2> log || { echo "   run failed: $(tail -3 log)" >&2; echo 0; return; }
  t1=$(date +%s%N)
  echo $((n * 1000000000 / (t1 - t0)))
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

# ---- Redis
if command -v redis-server > /dev/null && command -v redis-benchmark > /dev/null; then
  rport=$(free_port)
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no > redis.log 2>&1 &
  pids="$pids $!"
  for _ in $(seq 100); do [ "$(redis-cli -p "$rport" ping 2> /dev/null)" = PONG ] && break; sleep 0.05; done
  redis_relay() {
    per_second "$N" env OUTBOX_REDIS_URL="redis://127.0.0.1:$rport" "$OUTBOXD" run \
      "$root/handlers/redis-stream.lua" --db ndjson:events.ndjson --concurrency $C --batch $C --no-watch --log json
  }
  redis_ceiling() {
    redis-benchmark -p "$rport" -c $C -n "$N" -q XADD bench '*' id 1 topic order.paid key k1 \
      payload "$PAYLOAD" 2> /dev/null | tr '\r' '\n' | grep -oE '[0-9.]+ requests per second' | tail -1 | cut -d. -f1
  }
  d=$(median_of redis_relay)
  w=$(median_of redis_ceiling)
  printf '   redis-stream.lua, %d events, concurrency %d: %8s events/s   redis-benchmark -c %d XADD: %8s req/s   ratio %s\n' \
    "$N" $C "$d" $C "$w" "$(ratio "$d" "$w")"
  printf '   redis: %s entries in the stream outbox:order.paid after %d relays\n' \
    "$(redis-cli -p "$rport" XLEN outbox:order.paid)" "$RUNS"
else
  echo "   redis-server or redis-benchmark missing (apt-get install redis-server redis-tools)"
fi

# ---- NATS JetStream
if command -v nats-server > /dev/null && [ -x "$JS_BENCH" ]; then
  nport=$(free_port)
  nats-server -js -sd "$tmp/js" -a 127.0.0.1 -p "$nport" -l "$tmp/nats.log" &
  pids="$pids $!"
  for _ in $(seq 100); do grep -q 'Server is ready' nats.log 2> /dev/null && break; sleep 0.05; done
  # Each run sends new ids (a fresh stream per run), so nothing is a duplicate.
  nats_relay() {
    per_second "$N" env OUTBOX_NATS_URL="nats://127.0.0.1:$nport" OUTBOX_NATS_STREAM="RUN$1" \
      OUTBOX_NATS_SUBJECT="run$1.<topic>" "$OUTBOXD" run "$root/handlers/nats.lua" \
      --db ndjson:events.ndjson --concurrency $C --batch $C --no-watch --log json
  }
  nats_ceiling() { "$JS_BENCH" "nats://127.0.0.1:$nport" "run1.order.paid" "$N" $C "bench$1" "$PAYLOAD"; }
  d=$(median_of nats_relay)
  w=$(median_of nats_ceiling)
  printf '   nats.lua (JetStream, file storage), %d events, concurrency %d: %8s events/s   js_bench (cnats async, %d pending): %8s msgs/s   ratio %s\n' \
    "$N" $C "$d" $C "$w" "$(ratio "$d" "$w")"
else
  echo "   nats-server or $JS_BENCH missing (apt-get install nats-server; make $JS_BENCH)"
fi
