#!/bin/bash
# Hot-reload benchmarks under load (NDJSON from an endless generator, no-op handler):
#   - save -> first event handled by the new generation: p50 / p99 over RELOADS saves
#   - events/s during one reload per second against steady state (medians of 1 s
#     samples of outboxd_events_total from /metrics)
. "$(dirname "$0")/lib.sh"
set -u
RELOADS=${RELOADS:-100}
SECONDS_EACH=${SECONDS_EACH:-6}
OUTBOXD=${OUTBOXD:-$(cd "$(dirname "$0")/../.." && pwd)/outboxd}
tmp=$(mktemp -d /tmp/outboxd-bench.XXXXXX)
cd "$tmp" || exit 1
pid=""
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$tmp"' EXIT

version() { # version N: logs the first event each generation handles
  cat > h.tmp <<LUA
local first = true
return function(ev)
  if first then first = false; outbox.log.info("FIRST", { v = $1, t = outbox.now() }) end
  outbox.sleep(0)
end
LUA
  mv h.tmp h.lua
}
pct() { sort -n | awk -v p="$1" '{ a[NR] = $1 } END { i = int(NR * p / 100 + 0.5); if (i < 1) i = 1; print a[i] }'; }
done_total() { curl -s "127.0.0.1:$port/metrics" | awk '/^outboxd_events_total\{outcome="done"\}/ { print $2 }'; }

version 0
yes '{"topic":"t","payload":"x"}' | "$OUTBOXD" run h.lua --db ndjson:- --concurrency 100 --metrics 0 --log text 2> log &
pid=$!
for _ in $(seq 100); do grep -q 'metrics listening' log && break; sleep 0.05; done
port=$(grep -oE 'metrics listening .*port=[0-9]+' log | grep -oE '[0-9]+$')

# steady state, then one reload per second
sample() { # sample N: N one-second rates
  local prev now
  prev=$(done_total)
  for _ in $(seq "$1"); do
    sleep 1; now=$(done_total); echo $(( now - prev )); prev=$now
    [ "${2:-}" = reload ] && { n=$((n + 1)); version $n; }
  done
}
n=0
steady=$(sample "$SECONDS_EACH" | median)
storm=$(sample "$SECONDS_EACH" reload | median)
echo "   steady state: $steady events/s; one reload per second: $storm events/s ($(( storm * 100 / (steady > 0 ? steady : 1) ))% of steady)"

# save -> first event on the new generation
: > lat.txt
for i in $(seq 1 "$RELOADS"); do
  v=$((1000 + i))
  t0=$(date +%s.%N)
  version $v
  for _ in $(seq 200); do grep -q "FIRST .*v=$v\b" log && break; sleep 0.005; done
  t1=$(grep -E "FIRST .*v=$v( |$)" log | grep -oE 't=[0-9.]+' | cut -d= -f2)
  [ -n "$t1" ] && echo "$t0 $t1" | awk '{ printf "%.1f\n", ($2 - $1) * 1000 }' >> lat.txt
  sleep 0.1
done
echo "   save -> new generation serving over $(wc -l < lat.txt) reloads: p50 $(pct 50 < lat.txt) ms, p99 $(pct 99 < lat.txt) ms (50 ms of it is the debounce)"
echo "   generations still open at the end: $(( $(grep -c 'info reloaded' log) - $(grep -c 'generation closed' log) + 1 ))"
kill -TERM $pid; wait $pid 2>/dev/null; pid=""
