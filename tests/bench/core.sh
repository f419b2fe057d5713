#!/bin/bash
# Core dispatch benchmarks on NDJSON input (no database):
#   (a) 10^6 events, no-op handler
#   (b) 10^6 events, handler reads event.data of a ~200-byte JSON payload
#   (c) 10^6 events, handler sleeps 1 ms, concurrency 1000
#   soak: 10^7 no-op events through a pipe, RSS sampled every 10^6
#   idle: RSS of a host with nothing to do
# Prints events/s (median of RUNS) and peak RSS.
. "$(dirname "$0")/lib.sh"
set -u
RUNS=${RUNS:-3}
OUTBOXD=${OUTBOXD:-$(cd "$(dirname "$0")/../.." && pwd)/outboxd}
tmp=$(mktemp -d /tmp/outboxd-bench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1

gen() { # gen N PAYLOAD
  awk -v n="$1" -v p="$2" 'BEGIN { for (i = 1; i <= n; i++) printf "{\"topic\":\"order.created\",\"payload\":%s}\n", p }'
}
field() { grep -oE "\"$1\":[0-9.]+" "$2" | tail -1 | cut -d: -f2; }

gen 1000000 '"x"' > small.ndjson
P='{"order":{"id":1234567,"customer":"c-99812","email":"ada@example.com","currency":"EUR"},"items":[{"sku":"A-100","qty":2,"price":19.99},{"sku":"B-220","qty":1,"price":5.5}],"total":45.48,"note":"leave at door"}'
gen 1000000 "$P" > big.ndjson
echo 'return function(ev) end' > noop.lua
echo 'return function(ev) local d = ev.data end' > data.lua
echo 'return function(ev) outbox.sleep(0.001) end' > sleep.lua

run() { # run NAME SCRIPT INPUT ARGS...
  local name=$1 script=$2 input=$3; shift 3
  local rates="" rss=""
  for _ in $(seq "$RUNS"); do
    local t0 t1
    t0=$(date +%s%N)
    "$OUTBOXD" run "$script" --db "ndjson:$input" --log json --no-watch "$@" 2> log || { echo "   $name: run failed"; tail -3 log; return; }
    t1=$(date +%s%N)
    rates="$rates $(( 1000000 * 1000000000 / (t1 - t0) ))"
    rss="$rss $(field peak_rss log)"
  done
  printf '   %-44s %9s events/s  peak RSS %5s MB   (runs:%s)\n' "$name" \
    "$(echo $rates | tr ' ' '\n' | median)" \
    "$(( $(echo $rss | tr ' ' '\n' | median) / 1048576 ))" "$rates"
}

echo "   payload for (b): ${#P} bytes"
run "(a) no-op, 10^6" noop.lua small.ndjson
run "(b) event.data of ~200 B, 10^6" data.lua big.ndjson
run "(c) sleep 1 ms, concurrency 1000, 10^6" sleep.lua small.ndjson --concurrency 1000 --batch 1000

cat > soak.lua <<'LUA'
local n = 0
return function(ev)
  n = n + 1
  if n % 1000000 == 0 then outbox.log.info("soak", { n = n, rss = outbox.stats().rss, lua_heap = outbox.stats().lua_heap }) end
end
LUA
t0=$(date +%s%N)
gen 10000000 '"x"' | "$OUTBOXD" run soak.lua --db ndjson:- --log json --no-watch 2> soak.log
t1=$(date +%s%N)
grep '"msg":"soak"' soak.log | while read -r line; do
  n=$(echo "$line" | grep -oE '"n":[0-9]+' | cut -d: -f2); r=$(echo "$line" | grep -oE '"rss":[0-9]+' | cut -d: -f2)
  echo "$n $r"
done > soak.txt
first=$(head -1 soak.txt | cut -d' ' -f2); last=$(tail -1 soak.txt | cut -d' ' -f2)
echo "   soak 10^7 no-op via pipe: $(( 10000000 * 1000000000 / (t1 - t0) )) events/s; RSS at 10^6: $((first / 1024)) KB, at 10^7: $((last / 1024)) KB, growth $(( (last - first) / 1024 )) KB"
awk '{ printf "      at %8d events: RSS %6d KB\n", $1, $2 / 1024 }' soak.txt

# idle: nothing to do on an empty SQLite outbox
"$OUTBOXD" init --db idle.db 2>/dev/null
"$OUTBOXD" run noop.lua --db idle.db --log json 2> idle.log &
pid=$!
sleep 2
rss=$(awk '/VmRSS/ { print $2 }' /proc/$pid/status)
cpu0=$(awk '{ print $14 + $15 }' /proc/$pid/stat)
sleep 5
cpu1=$(awk '{ print $14 + $15 }' /proc/$pid/stat)
kill -TERM $pid; wait $pid
echo "   idle: RSS ${rss} KB; CPU over 5 s idle: $(( (cpu1 - cpu0) * 10 )) ms"
