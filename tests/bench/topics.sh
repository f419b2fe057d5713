#!/bin/bash
# Claims by topic on SQLite: `run --once` throughput (no-op handler) over N handled
# events, alone in the table (a catch-all script: no filter) against the same N
# events among 9*N rows of topics the host does not handle (90% of the pending
# rows), claimed by a script with three services' worth of patterns (exact topics
# and prefixes); and, to tell the filter's own cost from the table's, the filtered
# script over the handled events alone. Keyless events, then keyed ones (1000 keys;
# the unhandled rows have keys of their own). TOPICS_N (default 10^5), RUNS (3).
# Prints medians.
. "$(dirname "$0")/lib.sh"
set -u
OUTBOXD=${OUTBOXD:-$(cd "$(dirname "$0")/../.." && pwd)/outboxd}
N=${TOPICS_N:-100000}
RUNS=${RUNS:-3}
dir=$(mktemp -d /tmp/outboxd-bench-topics.XXXXXX)
trap 'rm -rf "$dir"' EXIT
cd "$dir" || exit 1

# The handled topics: what three services' scripts route, one host's share of it.
cat > filtered.lua <<'LUA'
local function noop(ev) end
outbox.handle("order.*", noop)
outbox.handle("payment.captured", noop)
outbox.handle("payment.refunded", noop)
outbox.handle("invoice.*", noop)
LUA
printf 'return function(ev) end\n' > all.lua

# template NAME OTHERS KEYED: N handled rows (order.created, payment.captured,
# invoice.sent in turn) and OTHERS rows per handled row of unhandled topics,
# interleaved; KEYED=1 gives every row a key.
template() {
  local name=$1 others=$2 keyed=$3
  rm -f "$name.db"
  "$OUTBOXD" init --db "$name.db" 2> /dev/null || exit 1
  sqlite3 "$name.db" "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < $N * ($others + 1) - 1)
    INSERT INTO outbox (topic, key, payload)
    SELECT CASE WHEN i % ($others + 1) = 0 THEN
             CASE (i / ($others + 1)) % 3 WHEN 0 THEN 'order.created' WHEN 1 THEN 'payment.captured' ELSE 'invoice.sent' END
           ELSE CASE i % 3 WHEN 0 THEN 'user.created' WHEN 1 THEN 'audit.log' ELSE 'payment.failed' END END,
           CASE WHEN $keyed THEN CASE WHEN i % ($others + 1) = 0 THEN 'k' || ((i / ($others + 1)) % 1000)
                                 ELSE 'u' || (i % 5000) END END,
           '{\"n\": ' || i || '}' FROM n" || exit 1
}

# rate NAME SCRIPT: handled events/s of one `run --once` over a fresh copy
rate() {
  cp "$1.db" x.db
  rm -f x.db-wal x.db-shm
  local start end
  start=$(date +%s%N)
  "$OUTBOXD" run "$2" --db x.db --once --batch 50 --concurrency 1000 --log json 2> run.log ||
    { echo "run failed: $(tail -1 run.log)" >&2; return 1; }
  end=$(date +%s%N)
  grep -q "\"processed\":$N," run.log || { echo "not all processed: $(grep stopped run.log)" >&2; return 1; }
  echo $(( N * 1000000000 / (end - start) ))
}

for keyed in 0 1; do
  label=$([ $keyed = 1 ] && echo "keyed (1000 keys)" || echo keyless)
  template alone 0 $keyed
  template mixed 9 $keyed
  a=() q=() f=()
  for _ in $(seq "$RUNS"); do
    a+=("$(rate alone all.lua)") || exit 1
    q+=("$(rate alone filtered.lua)") || exit 1
    f+=("$(rate mixed filtered.lua)") || exit 1
  done
  ma=$(printf '%s\n' "${a[@]}" | median)
  mq=$(printf '%s\n' "${q[@]}" | median)
  mf=$(printf '%s\n' "${f[@]}" | median)
  pct() { echo $(( $1 * 100 / (ma > 0 ? ma : 1) )); }
  echo "   topics $label (N=$N): unfiltered $ma events/s (runs: ${a[*]});" \
    "filtered, no other rows $mq ($(pct "$mq")%; runs: ${q[*]});" \
    "filtered among 90% unhandled rows $mf ($(pct "$mf")%; runs: ${f[*]})"
done
