#!/bin/bash
# Cost of being scraped: dispatch throughput of N no-op NDJSON events (default 5e6)
# with a scraper polling /metrics ten times a second, against the same run with
# nobody scraping and against a run without --metrics. Medians of 3 runs each.
# Target: scraping costs less than 2% of throughput (ratio >= 0.98).
. "$(dirname "$0")/lib.sh"
set -u
cd "$(dirname "$0")/../.." || exit 1
N=${N:-5000000}
RUNS=${RUNS:-3}
BIN=${OUTBOXD:-$(pwd)/outboxd}
tmp=$(mktemp -d /tmp/outboxd-bench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
printf 'return function(ev) end\n' > "$tmp/noop.lua"
awk -v n="$N" 'BEGIN { for (i = 1; i <= n; i++) print "{\"topic\":\"t\",\"payload\":\"x\"}" }' > "$tmp/in.ndjson"

# scraper LOG PID: GET /metrics every 100 ms while PID runs; counts into $tmp/scrapes
scraper() {
  local port="" n=0
  while [ -z "$port" ] && kill -0 "$2" 2>/dev/null; do
    port=$(grep -oE '"port":[0-9]+' "$1" | head -1 | cut -d: -f2)
  done
  while kill -0 "$2" 2>/dev/null; do
    curl -s -o /dev/null "http://127.0.0.1:$port/metrics" && n=$((n + 1))
    sleep 0.1
  done
  echo "$n" >> "$tmp/scrapes"
}

# one MODE: events per wall second of one run (MODE: off | idle | scraped); events
# per CPU second (user + sys of outboxd) go to $tmp/cpu.MODE
one() {
  local args=() start end pid
  [ "$1" != off ] && args=(--metrics 0)
  start=$(date +%s%N)
  /usr/bin/time -o "$tmp/time" -f '%U %S' "$BIN" run "$tmp/noop.lua" --db "ndjson:$tmp/in.ndjson" --log json "${args[@]}" 2> "$tmp/log" &
  pid=$!
  [ "$1" = scraped ] && scraper "$tmp/log" $pid &
  wait $pid || { echo "bench: outboxd failed" >&2; cat "$tmp/log" >&2; exit 1; }
  end=$(date +%s%N)
  wait
  grep -q "\"processed\":$N" "$tmp/log" || { echo "bench: not every event processed" >&2; exit 1; }
  awk -v n="$N" '{ printf "%d\n", n / ($1 + $2) }' "$tmp/time" >> "$tmp/cpu.$1"
  echo $(( N * 1000000000 / (end - start) ))
}

# Rounds interleave the three modes so drift in machine load hits them alike.
: > "$tmp/scrapes"
for _ in $(seq "$RUNS"); do
  for mode in off idle scraped; do one $mode >> "$tmp/rates.$mode"; done
done
declare -A med cpu
for mode in off idle scraped; do
  med[$mode]=$(median < "$tmp/rates.$mode")
  cpu[$mode]=$(median < "$tmp/cpu.$mode")
  printf '%-8s %10s events/s %10s events/cpu-s  (runs: %s)\n' "$mode" "${med[$mode]}" \
    "${cpu[$mode]}" "$(tr '\n' ' ' < "$tmp/rates.$mode")"
done
scrapes=$(awk '{ n += $1 } END { print n + 0 }' "$tmp/scrapes")
ratio=$(awk -v a="${med[scraped]}" -v b="${med[idle]}" 'BEGIN { printf "%.4f", a / b }')
ratio_off=$(awk -v a="${med[scraped]}" -v b="${med[off]}" 'BEGIN { printf "%.4f", a / b }')
echo "metrics: $N no-op events, median of $RUNS; $scrapes scrapes in the scraped runs"
cpu_ratio=$(awk -v a="${cpu[scraped]}" -v b="${cpu[idle]}" 'BEGIN { printf "%.4f", a / b }')
echo "metrics: throughput scraped / not scraped = $ratio (scraped / no --metrics = $ratio_off); target >= 0.98"
echo "metrics: per CPU second, scraped / not scraped = $cpu_ratio"

# The direct price of a scrape: outboxd's CPU time over 1000 back-to-back scrapes of
# an idle host, against 2 s of the same host left alone.
printf 'return function(ev) outbox.sleep(60) end\n' > "$tmp/idle.lua"
echo '{"topic":"t","payload":"x"}' > "$tmp/one.ndjson"
"$BIN" run "$tmp/idle.lua" --db "ndjson:$tmp/one.ndjson" --metrics 0 --drain-timeout 10 --log json 2> "$tmp/log" &
pid=$!
for _ in $(seq 100); do grep -q '"port"' "$tmp/log" && break; sleep 0.05; done
port=$(grep -oE '"port":[0-9]+' "$tmp/log" | head -1 | cut -d: -f2)
ticks() { awk '{ print $14 + $15 }' "/proc/$pid/stat"; }
t0=$(ticks); s0=$(date +%s%N)
for _ in $(seq 1000); do curl -s -o /dev/null "http://127.0.0.1:$port/metrics"; done
t1=$(ticks); s1=$(date +%s%N)
sleep 2
t2=$(ticks)
kill -TERM $pid; wait $pid
hz=$(getconf CLK_TCK)
awk -v a="$t0" -v b="$t1" -v c="$t2" -v hz="$hz" -v ns=$((s1 - s0)) 'BEGIN {
  idle = (c - b) / 2 * ns / 1e9          # ticks an idle host spends in as long
  per = ((b - a) - idle) / hz / 1000 * 1e6
  if (per < 0) per = 0
  printf "metrics: one scrape costs about %.0f us of outboxd CPU (clock tick %.0f us; 1000 scrapes took %d ticks); at 10/s that is %.3f%% of one core\n", per, 1e6 / hz, b - a, per * 10 / 1e4 }'
