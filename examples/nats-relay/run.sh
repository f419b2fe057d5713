#!/bin/bash
# nats-relay, end to end and non-interactive: starts a throwaway nats-server with
# JetStream on a free 127.0.0.1 port, enqueues 100 events into a fresh SQLite outbox,
# relays them with handlers/nats.lua (--once; it creates the stream OUTBOX), relays
# the same ids a second time, and checks that the stream holds each event once.
# Exits 0 on success. OUTBOXD may point at another build.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
OUTBOXD=${OUTBOXD:-$root/outboxd}
N=${N:-100}
[ -x "$OUTBOXD" ] || make -C "$root" outboxd

work=$(mktemp -d /tmp/nats-relay.XXXXXX)
npid=
cleanup() { [ -n "$npid" ] && kill "$npid" 2> /dev/null; wait; rm -rf "$work"; }
trap cleanup EXIT
cd "$work"

# 1. NATS with JetStream (stored in ./js) on a free port
for _ in $(seq 20); do
  port=$((20000 + RANDOM % 40000))
  : > nats.log
  nats-server -js -sd "$work/js" -a 127.0.0.1 -p "$port" -l "$work/nats.log" &
  npid=$!
  for _ in $(seq 100); do
    grep -q 'Server is ready' nats.log && break 2
    kill -0 "$npid" 2> /dev/null || break
    sleep 0.05
  done
  kill "$npid" 2> /dev/null || true; npid=
done
[ -n "$npid" ] || { echo "nats-relay: nats-server did not start" >&2; exit 1; }
export OUTBOX_NATS_URL="nats://127.0.0.1:$port"

# 2. an outbox with N events (a fresh table: ids 1..N)
"$OUTBOXD" init --db relay.db 2> /dev/null
for i in $(seq "$N"); do
  printf '{"topic":"order.paid","key":"order-%d","payload":{"order":%d,"amount":%d}}\n' "$i" "$i" $((i * 100))
done | "$OUTBOXD" enqueue --db relay.db 2> /dev/null

# 3. relay them to the subject outbox.order.paid, each with Nats-Msg-Id = its id
"$OUTBOXD" run "$root/handlers/nats.lua" --db relay.db --once --no-watch --log text 2> relay.log

# 4. the same ids once more (as a retry would send them), from NDJSON lines with ids:
#    JetStream acknowledges them as duplicates and stores nothing
for i in $(seq "$N"); do
  printf '{"id":%d,"topic":"order.paid","payload":{"order":%d,"amount":%d}}\n' "$i" "$i" $((i * 100))
done | "$OUTBOXD" run "$root/handlers/nats.lua" --db ndjson:- --no-watch --log text 2> again.log
again=$(grep -oE 'done=[0-9]+' again.log | tail -1)

# 5. the stream's count, asked through outboxd itself ($JS.API.STREAM.INFO)
cat > count.lua <<'LUA'
local c = assert(outbox.nats.connect(os.getenv("OUTBOX_NATS_URL")))
return function()
  local raw = assert(c:request("$JS.API.STREAM.INFO.OUTBOX", ""))
  local info = outbox.json.decode(raw)
  io.stdout:write(string.format("%d %s\n", info.state.messages, info.config.subjects[1]))
end
LUA
echo '{"topic":"count","payload":"{}"}' | "$OUTBOXD" run count.lua --db ndjson:- --no-watch 2> /dev/null > count
read -r msgs subjects < count
left=$("$OUTBOXD" status --db relay.db --json 2> /dev/null)
echo "stream OUTBOX ($subjects): $msgs messages after relaying $N events twice (second relay: $again); outbox: $left"
if [ "$msgs" -ne "$N" ] || [ "$again" != "done=$N" ] || ! grep -q '^{"pending": 0,' <<< "$left"; then
  echo "nats-relay: FAILED" >&2
  tail -20 relay.log again.log >&2
  exit 1
fi
echo "nats-relay: ok ($N events in the stream, the second relay deduplicated)"
