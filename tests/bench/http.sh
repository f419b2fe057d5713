#!/bin/bash
# Webhook delivery benchmarks against the local receiver (tests/tools/receiver.c):
#   deliveries/s of handlers/webhook.lua at concurrency 10 and 200 (HTTP_N events
#   from an NDJSON file), the same receiver driven by wrk for a ceiling, the ratio;
#   RSS over 10^5 deliveries (sampled every 10^4 with outbox.stats().rss).
# Prints medians of RUNS runs. wrk is installed with apt-get when missing and root.
# Fairness: outboxd is one thread, so wrk runs one thread (-t1) with as many
# connections as outboxd's concurrency; both share the machine with the receiver
# and nothing is pinned. HTTP_N is large enough that outboxd's start-up and NDJSON
# parsing (included in its time) are a small part of it.
. "$(dirname "$0")/lib.sh"
set -u
RUNS=${RUNS:-3}
N=${HTTP_N:-100000}
SOAK=${HTTP_SOAK:-100000}
root=$(cd "$(dirname "$0")/../.." && pwd)
OUTBOXD=${OUTBOXD:-$root/outboxd}
RECEIVER=${RECEIVER:-$root/build/receiver}
WEBHOOK=$root/handlers/webhook.lua
[ -x "$RECEIVER" ] || { echo "   $RECEIVER missing: make $RECEIVER"; exit 1; }
tmp=$(mktemp -d /tmp/outboxd-bench-http.XXXXXX)
rpid=
trap '[ -n "$rpid" ] && kill $rpid; wait; rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1

gen() { awk -v n="$1" 'BEGIN { for (i = 1; i <= n; i++) printf "{\"topic\":\"order.paid\",\"key\":\"k%d\",\"payload\":{\"order\":%d,\"amount\":4548,\"currency\":\"EUR\"}}\n", i % 1000, i }'; }

"$RECEIVER" --port 0 --port-file port > /dev/null &
rpid=$!
for _ in $(seq 100); do [ -s port ] && break; sleep 0.05; done
URL="http://127.0.0.1:$(cat port)/hook"
gen "$N" > events.ndjson

deliver() { # deliver CONCURRENCY -> median deliveries/s
  local rates="" t0 t1
  for _ in $(seq "$RUNS"); do
    t0=$(date +%s%N)
    OUTBOX_WEBHOOK_URL=$URL "$OUTBOXD" run "$WEBHOOK" --db ndjson:events.ndjson --concurrency "$1" \
      --batch "$1" --no-watch --log json 2> log || { echo "   run failed" >&2; tail -3 log >&2; return 1; }
    t1=$(date +%s%N)
    rates="$rates $(( N * 1000000000 / (t1 - t0) ))"
  done
  echo "$rates" | tr ' ' '\n' | grep . | median
  echo "      runs:$rates" >&2
}

if ! command -v wrk > /dev/null && [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
  echo "   installing wrk"
  (DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk || { apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }) > /dev/null 2>&1
fi
cat > post.lua <<'LUA'
wrk.method = "POST"
wrk.body = '{"order":1,"amount":4548,"currency":"EUR"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Idempotency-Key"] = "1"
wrk.headers["X-Outbox-Topic"] = "order.paid"
wrk.headers["X-Outbox-Attempt"] = "1"
LUA
ceiling() { # ceiling CONCURRENCY -> median requests/s of wrk
  command -v wrk > /dev/null || { echo 0; return; }
  local rates="" r
  for _ in $(seq "$RUNS"); do
    r=$(wrk -t1 -c"$1" -d3s -s post.lua "$URL" 2>&1 | awk '/^Requests\/sec:/ { printf "%d", $2 }')
    rates="$rates ${r:-0}"
  done
  echo "$rates" | tr ' ' '\n' | grep . | median
  echo "      runs:$rates" >&2
}

for c in 10 200; do
  d=$(deliver "$c") || continue
  w=$(ceiling "$c")
  ratio=$(awk -v d="$d" -v w="$w" 'BEGIN { if (w > 0) printf "%.2f", d / w; else print "n/a (no wrk)" }')
  printf '   webhook, %d events, concurrency %-4d %8s deliveries/s   wrk -t1 -c%-4d %8s req/s   ratio %s\n' \
    "$N" "$c" "$d" "$c" "$w" "$ratio"
done

cat > soak.lua <<LUA
local deliver = dofile("$WEBHOOK")
local n = 0
return function(ev)
  local r = deliver(ev)
  n = n + 1
  if n % 10000 == 0 then outbox.log.info("soak", { n = n, rss = outbox.stats().rss }) end
  return r
end
LUA
gen "$SOAK" > soak.ndjson
OUTBOX_WEBHOOK_URL=$URL "$OUTBOXD" run soak.lua --db ndjson:soak.ndjson --concurrency 200 --batch 200 \
  --memory-interval 50 --no-watch --log json 2> soak.log || { echo "   soak failed"; tail -3 soak.log; }
rss() { grep '"msg":"soak"' soak.log | grep "\"n\":$1[,}]" | grep -oE '"rss":[0-9]+' | cut -d: -f2; }
first=$(rss 10000)
last=$(rss "$SOAK")
printf '   RSS over %d deliveries (concurrency 200): %d MB at 10^4, %d MB at %d, growth %d KB\n' \
  "$SOAK" $((first / 1048576)) $((last / 1048576)) "$SOAK" $(((last - first) / 1024))
printf '   receiver: %s\n' "$(exec 3<> "/dev/tcp/127.0.0.1/$(cat port)"; printf 'GET /stats HTTP/1.0\r\n\r\n' >&3; tail -1 <&3)"
