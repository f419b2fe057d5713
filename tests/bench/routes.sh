#!/bin/bash
# Route isolation and adaptive concurrency against the local receiver
# (tests/tools/receiver.c):
#   1. Two routes, a.* and b.*, interleaved: the throughput of b.* when a.*'s
#      downstream is down (connection refused) against when both are healthy, from
#      an NDJSON file and from a SQLite outbox (where the open breaker's topics are
#      left out of the claim query).
#   2. One downstream serving 20 requests at a time at 2 ms and queueing the rest
#      (receiver --slots 20 --delay 2): deliveries/s and p99 latency of a delivery
#      with fixed --concurrency 10, 20, 50, 200 and with --concurrency auto.
# Prints medians of RUNS runs. Nothing here asserts.
. "$(dirname "$0")/lib.sh"
set -u
RUNS=${RUNS:-3}
N=${ROUTES_N:-20000}
root=$(cd "$(dirname "$0")/../.." && pwd)
OUTBOXD=${OUTBOXD:-$root/outboxd}
RECEIVER=${RECEIVER:-$root/build/receiver}
[ -x "$RECEIVER" ] || { echo "   $RECEIVER missing: make $RECEIVER"; exit 1; }
tmp=$(mktemp -d /tmp/outboxd-bench-routes.XXXXXX)
pids=
trap 'for p in $pids; do kill $p 2> /dev/null; done; wait 2> /dev/null; rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1

# recv NAME FLAGS...: a receiver on a free port; its port in NAME.port.
recv() {
  local name=$1
  shift
  "$RECEIVER" --port 0 --port-file "$name.port" "$@" > /dev/null &
  pids="$pids $!"
  for _ in $(seq 100); do [ -s "$name.port" ] && break; sleep 0.05; done
}

# A handler per route posting to its URL; the b.* route logs when its last event is
# done; every delivery's latency is kept and the p99 logged at shutdown.
cat > h.lua <<'LUA'
local B_N = tonumber(os.getenv("B_N"))
local lat, done_b, t0 = {}, 0, outbox.now()
local function post(url, count_b)
  return function(ev)
    local s = outbox.now()
    local res, err = outbox.http.post(url, ev.payload)
    if not res then error(err) end
    if res.status ~= 200 then error("HTTP " .. res.status) end
    lat[#lat + 1] = outbox.now() - s
    if count_b then
      done_b = done_b + 1
      if done_b == B_N then outbox.log.warn("B DONE", { ms = math.floor((outbox.now() - t0) * 1000) }) end
    end
  end
end
if os.getenv("A_URL") then
  outbox.handle("a.*", post(os.getenv("A_URL")))
  outbox.handle("b.*", post(os.getenv("B_URL"), true))
else
  outbox.handle("k.*", post(os.getenv("K_URL")))
end
outbox.on("shutdown", function()
  table.sort(lat)
  outbox.log.warn("P99", { ms = lat[1] and lat[math.ceil(#lat * 0.99)] * 1000 or -1 })
end)
LUA

# ---- 1. isolation
recv A
recv B
DOWN="http://127.0.0.1:1/a" # nothing listens on port 1: connection refused
awk -v n="$N" 'BEGIN { for (i = 1; i <= n; i++) printf "{\"topic\":\"%s.x\",\"payload\":\"{}\"}\n", i % 2 ? "a" : "b" }' > two.ndjson

"$OUTBOXD" init --db two.tpl 2> /dev/null && "$OUTBOXD" enqueue --db two.tpl < two.ndjson > /dev/null 2>&1

b_rate() { # b_rate A_URL DB -> median b.* events/s until its last one is done
  local rates="" ms db=$2
  for _ in $(seq "$RUNS"); do
    if [ "$db" = sqlite ]; then
      cp two.tpl two.db
      rm -f two.db-wal two.db-shm
      db=two.db
    fi
    : > log # a line left from the last run must not end this one's wait
    A_URL=$1 B_URL="http://127.0.0.1:$(cat B.port)/b" B_N=$((N / 2)) "$OUTBOXD" run h.lua \
      --db "$db" --concurrency 20 --batch 100 --max-attempts 1000 --backoff 50:50 \
      --breaker-cooldown 60000 --no-watch --log text 2> log &
    local pid=$!
    for _ in $(seq 1200); do grep -q 'B DONE' log && break; sleep 0.05; done
    kill $pid 2> /dev/null; wait $pid 2> /dev/null
    ms=$(grep 'B DONE' log | grep -oE ' ms=[0-9]+' | cut -d= -f2)
    [ -n "$ms" ] && rates="$rates $(( N / 2 * 1000 / (ms > 0 ? ms : 1) ))"
    db=$2
  done
  echo "$rates" | tr ' ' '\n' | grep . | median
  echo "      runs:$rates" >&2
}
for src in ndjson:two.ndjson sqlite; do
  both=$(b_rate "http://127.0.0.1:$(cat A.port)/a" $src)
  down=$(b_rate "$DOWN" $src)
  echo "   isolation ($src): b.* events/s with a.* healthy $both, with a.* down $down ($(( down * 100 / (both > 0 ? both : 1) ))%)"
done

# ---- 2. adaptive against a downstream with a knee at 20
recv K --slots 20 --delay 2
awk -v n="$N" 'BEGIN { for (i = 1; i <= n; i++) print "{\"topic\":\"k.x\",\"payload\":\"{}\"}" }' > k.ndjson
knee() { # knee CONCURRENCY -> "median events/s median p99 ms"
  local rates="" p99s="" t0 t1
  for _ in $(seq "$RUNS"); do
    t0=$(date +%s%N)
    K_URL="http://127.0.0.1:$(cat K.port)/k" "$OUTBOXD" run h.lua --db ndjson:k.ndjson \
      --concurrency "$1" --batch 200 --no-watch --log text 2> log || { tail -3 log >&2; return 1; }
    t1=$(date +%s%N)
    rates="$rates $(( N * 1000000000 / (t1 - t0) ))"
    p99s="$p99s $(grep 'P99' log | grep -oE ' ms=[0-9.]+' | cut -d= -f2 | cut -d. -f1)"
  done
  echo "$(echo "$rates" | tr ' ' '\n' | grep . | median) $(echo "$p99s" | tr ' ' '\n' | grep . | median)"
  echo "      $1 runs:$rates; p99 ms:$p99s" >&2
}
for c in 10 20 50 200 auto; do
  read -r rate p99 <<< "$(knee $c)"
  echo "   knee at 20 (2 ms): --concurrency $c: $rate events/s, p99 ${p99} ms"
done
