#!/bin/bash
# Runaway-code benchmarks:
#   - stall -> serving again: a handler spins on the 3rd of 8 events (concurrency 4,
#     SQLite, --cpu-limit 1000); time from its first log line to the restarted host's
#     `started`, median of RUNS; what the other events went through
#   - peak RSS of a handler that builds an endless table, --lua-memory-limit 128M
. "$(dirname "$0")/lib.sh"
set -u
RUNS=${RUNS:-5}
OUTBOXD=${OUTBOXD:-$(cd "$(dirname "$0")/../.." && pwd)/outboxd}
tmp=$(mktemp -d /tmp/outboxd-bench.XXXXXX)
cd "$tmp" || exit 1
pid=""
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$tmp"' EXIT

ms() { date -d "$(cut -d' ' -f1)" +%s%3N; }
events() {
  for i in 1 2; do echo '{"topic":"ok","payload":1}'; done
  echo '{"topic":"spin","payload":1}'
  for i in 1 2 3 4 5; do echo '{"topic":"ok","payload":1}'; done
}
cat > h.lua <<'LUA'
return function(ev)
  if ev.topic == "spin" then outbox.log.info("SPIN"); local x = 0; while true do x = x + 1 end end
  outbox.sleep(0.5)
end
LUA
for r in $(seq "$RUNS"); do
  rm -f o.db*
  "$OUTBOXD" init --db o.db 2>/dev/null
  events | "$OUTBOXD" enqueue --db o.db 2>/dev/null
  "$OUTBOXD" run h.lua --db o.db --cpu-limit 1000 --concurrency 4 --keep-done --log text 2> log &
  pid=$!
  for _ in $(seq 600); do
    [ "$(sqlite3 o.db "SELECT count(*) FROM outbox WHERE status IN ('done','dead')")" = 8 ] && break
    sleep 0.1
  done
  kill $pid; wait $pid 2>/dev/null; pid=""
  spin=$(grep -m1 SPIN log | ms)
  serving=$(sed -n '/restarted in place/,$p' log | grep -m1 ' started ' | ms)
  echo $((serving - spin)) >> stall.ms
  held=$(grep -oE 'held events returned to pending events=[0-9]+' log | grep -oE '[0-9]+$')
  others=$(sqlite3 o.db "SELECT count(*) || ' done, attempts ' || group_concat(DISTINCT attempts) FROM outbox WHERE topic = 'ok'")
  spun=$(sqlite3 o.db "SELECT status || ', attempts ' || attempts || ': ' || last_error FROM outbox WHERE topic = 'spin'")
done
echo "runaway handler, --cpu-limit 1000: stall -> serving again p50 $(median < stall.ms) ms (runs: $(tr '\n' ' ' < stall.ms))"
echo "  last run: $held claimed events back to pending at once; the other 7: $others; the spinning one: $spun"

cat > bomb.lua <<'LUA'
return function(ev)
  if ev.topic == "bomb" then
    local t, i = {}, 0
    while true do i = i + 1; t[i] = string.rep("x", 64) .. i end
  end
end
LUA
{ echo '{"topic":"bomb","payload":1}'; echo '{"topic":"ok","payload":1}'; } > in.ndjson
"$OUTBOXD" run bomb.lua --db ndjson:in.ndjson --lua-memory-limit 128M --cpu-limit 0 --max-attempts 1 \
  --log text 2> log
rc=$?
peak=$(grep -oE 'peak_rss=[0-9]+' log | grep -oE '[0-9]+$')
echo "memory bomb, --lua-memory-limit 128M: peak RSS $((peak >> 20)) MiB; $(grep -c 'Lua memory limit reached' log) refusal(s), exit $rc"
