#!/bin/bash
# webhook-relay, end to end and non-interactive: starts the test receiver on a free
# port, enqueues 100 events into a fresh SQLite outbox, relays them with
# handlers/webhook.lua (--once), and checks that every event arrived exactly once.
# Exits 0 on success. OUTBOXD and RECEIVER may point at other builds.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
OUTBOXD=${OUTBOXD:-$root/outboxd}
RECEIVER=${RECEIVER:-$root/build/receiver}
N=${N:-100}
if [ ! -x "$OUTBOXD" ] || [ ! -x "$RECEIVER" ]; then make -C "$root" outboxd build/receiver; fi

. "$root/examples/common.sh"
work=$(mktemp -d /tmp/webhook-relay.XXXXXX)
trap stop_all EXIT
cd "$work"

# 1. the receiver: 127.0.0.1, a free port (it picks one and writes it), one log line
#    per request
"$RECEIVER" --port 0 --port-file port --log received.log > /dev/null &
server_pid=$!
for _ in $(seq 100); do [ -s port ] && break; sleep 0.05; done
port=$(cat port)

# 2. an outbox with N events
outbox_with_orders relay.db "$N"

# 3. relay them: post each to the receiver, exit when nothing is left to claim
OUTBOX_WEBHOOK_URL="http://127.0.0.1:$port/events" \
  "$OUTBOXD" run "$root/handlers/webhook.lua" --db relay.db --once --no-watch --log text 2> relay.log

# 4. every event arrived once, with a 2xx
got=$(grep -c 'status=200' received.log || true)
keys=$(grep 'status=200' received.log | grep -oE 'key=[0-9]+' | sort -u | wc -l)
left=$("$OUTBOXD" status --db relay.db --json 2> /dev/null)
echo "received: $got requests, $keys distinct Idempotency-Keys; outbox: $left"
head -3 received.log
if [ "$got" -ne "$N" ] || [ "$keys" -ne "$N" ] || ! grep -q '^{"pending": 0,' <<< "$left"; then
  echo "webhook-relay: FAILED" >&2
  tail -20 relay.log >&2
  exit 1
fi
echo "webhook-relay: ok ($N events delivered)"
