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

. "$root/examples/common.sh"
work=$(mktemp -d /tmp/nats-relay.XXXXXX)
trap stop_all EXIT
cd "$work"

# 1. NATS with JetStream (stored in ./js) on a free port
start_nats() {
  : > nats.log
  exec nats-server -js -sd "$work/js" -a 127.0.0.1 -p "$1" -l "$work/nats.log"
}
nats_up() { grep -q 'Server is ready' nats.log 2> /dev/null; }
serve_on_free_port start_nats nats_up || { echo "nats-relay: nats-server did not start" >&2; exit 1; }
export OUTBOX_NATS_URL="nats://127.0.0.1:$port"

# 2. an outbox with N events (a fresh table: ids 1..N)
outbox_with_orders relay.db "$N"

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
