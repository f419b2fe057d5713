#!/bin/bash
# redis-relay, end to end and non-interactive: starts a throwaway redis-server on a
# free 127.0.0.1 port, enqueues 100 events into a fresh SQLite outbox, relays them
# with handlers/redis-stream.lua (--once), and checks that the stream holds every
# event once. Exits 0 on success. OUTBOXD may point at another build.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
OUTBOXD=${OUTBOXD:-$root/outboxd}
N=${N:-100}
[ -x "$OUTBOXD" ] || make -C "$root" outboxd

. "$root/examples/common.sh"
work=$(mktemp -d /tmp/redis-relay.XXXXXX)
trap stop_all EXIT
cd "$work"

# 1. Redis on a free port, nothing written to disk
start_redis() { exec redis-server --port "$1" --bind 127.0.0.1 --save '' --appendonly no > redis.log 2>&1; }
redis_up() { [ "$(redis-cli -p "$1" ping 2> /dev/null)" = PONG ]; }
serve_on_free_port start_redis redis_up || { echo "redis-relay: redis-server did not start" >&2; exit 1; }

# 2. an outbox with N events
outbox_with_orders relay.db "$N"

# 3. relay them: XADD each to the stream outbox:order.paid, exit when nothing is left
OUTBOX_REDIS_URL="redis://127.0.0.1:$port" \
  "$OUTBOXD" run "$root/handlers/redis-stream.lua" --db relay.db --once --no-watch --log text 2> relay.log

# 4. every event is in the stream once
len=$(redis-cli -p "$port" XLEN outbox:order.paid)
ids=$(redis-cli -p "$port" --raw XRANGE outbox:order.paid - + | awk 'p == "id" { print } { p = $0 }' | sort -u | wc -l)
left=$("$OUTBOXD" status --db relay.db --json 2> /dev/null)
echo "stream outbox:order.paid: $len entries, $ids distinct event ids; outbox: $left"
redis-cli -p "$port" XRANGE outbox:order.paid - + COUNT 1
if [ "$len" -ne "$N" ] || [ "$ids" -ne "$N" ] || ! grep -q '^{"pending": 0,' <<< "$left"; then
  echo "redis-relay: FAILED" >&2
  tail -20 relay.log >&2
  exit 1
fi
echo "redis-relay: ok ($N events in the stream)"
