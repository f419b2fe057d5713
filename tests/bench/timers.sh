#!/bin/bash
# Timer benchmarks (outbox.every):
#   - lateness of a 50 ms timer while the host dispatches a no-op NDJSON stream at
#     full speed: each run against its grid time (first run + whole periods), p50/p99
#   - cost of many timers: 10,000 timers of 0.5 s on an idle host, runs per second
#     and CPU per run (utime + stime from /proc over a 4 s window)
set -u
OUTBOXD=${OUTBOXD:-$(cd "$(dirname "$0")/../.." && pwd)/outboxd}
tmp=$(mktemp -d /tmp/outboxd-bench.XXXXXX)
cd "$tmp" || exit 1
pid=""
feeder=""
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; [ -n "$feeder" ] && kill $feeder 2>/dev/null; rm -rf "$tmp"' EXIT
pct() { sort -n | awk -v p="$1" '{ a[NR] = $1 } END { i = int(NR * p / 100 + 0.5); if (i < 1) i = 1; print a[i] }'; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

cat > late.lua <<'LUA'
outbox.every(0.05, function(h)
  outbox.log.info("TICK", { at = string.format("%.6f", outbox.now()), n = h.runs + h.skipped })
end)
return function(ev) end
LUA
yes '{"topic":"t","payload":"x"}' | "$OUTBOXD" run late.lua --db ndjson:- --concurrency 100 --log text 2> log &
pid=$!
for _ in $(seq 600); do [ "$(grep -c 'TICK' log)" -ge 121 ] && break; sleep 0.05; done
kill $pid; wait $pid 2> /dev/null; pid=""
grep -oE 'TICK at=[0-9.]+ n=[0-9]+' log | sed -E 's/TICK at=([0-9.]+) n=([0-9]+)/\1 \2/' |
  awk 'NR == 1 { t0 = $1; n0 = $2 } { d[NR] = ($1 - t0 - ($2 - n0) * 0.05) * 1000; if (NR == 1 || d[NR] < m) m = d[NR] }
       END { for (i = 1; i <= NR; i++) printf "%.2f\n", d[i] - m }' > late.txt
skipped=$(grep -oE 'n=[0-9]+' log | tail -1 | cut -d= -f2)
echo "   every 0.05 s beside a full-speed no-op stream: $(wc -l < late.txt) runs over $skipped ticks, late p50 $(pct 50 < late.txt) ms, p99 $(pct 99 < late.txt) ms (against the earliest run)"

cat > many.lua <<'LUA'
local runs = 0
for i = 1, 10000 do outbox.every(0.5, function() runs = runs + 1 end) end
outbox.every(1, function() outbox.log.info("RUNS", { at = string.format("%.6f", outbox.now()), runs = runs }) end)
return function(ev) end
LUA
mkfifo in.pipe
sleep 600 > in.pipe &
feeder=$!
"$OUTBOXD" run many.lua --db ndjson:- --log text < in.pipe 2> log2 &
pid=$!
lines() { grep -c 'RUNS' log2; }
for _ in $(seq 600); do [ "$(lines)" -ge 2 ] && break; sleep 0.01; done
c0=$(cpu_ticks $pid)
for _ in $(seq 1000); do [ "$(lines)" -ge 6 ] && break; sleep 0.01; done
c1=$(cpu_ticks $pid)
kill $pid $feeder; wait $pid 2> /dev/null; pid=""; feeder=""
grep -oE 'RUNS at=[0-9.]+ runs=[0-9]+' log2 | sed -n '2p;6p' | sed -E 's/RUNS at=([0-9.]+) runs=([0-9]+)/\1 \2/' | tr '\n' ' ' |
  awk -v c0="$c0" -v c1="$c1" -v hz="$(getconf CLK_TCK)" '{
  runs = $4 - $2; secs = $3 - $1; cpu = (c1 - c0) / hz
  printf "   10,000 timers of 0.5 s on an idle host: %d runs/s, %.1f us CPU per run (%.0f%% of a core)\n", runs / secs, (runs > 0 ? cpu * 1e6 / runs : 0), cpu * 100 / secs }'
