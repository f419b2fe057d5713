#!/bin/bash
# Side by side with the seed's design written in Node (the peer program in
# ../shared/bench/peer_node, or PEER_NODE=DIR): whole-process wall time of the same
# work, the same 200-byte payloads (lib/outbox.js), concurrency 10. Runs alternate
# outboxd, Node, outboxd, Node... RUNS times (default 3); printed: the median times
# and their ratio, Node / outboxd (above 1: outboxd is faster).
# The peer is copied to build/peer_node and set up there with `npm install
# --nodedir=/usr` (once); without node and npm this bench says so and ends.
. "$(dirname "$0")/lib.sh"
set -u
RUNS=${RUNS:-3}
N=${NODE_BENCH_N:-1000000}
NSQL=${NODE_BENCH_SQLITE_N:-200000}
root=$(cd "$(dirname "$0")/../.." && pwd)
OUTBOXD=${OUTBOXD:-$root/outboxd}
src=${PEER_NODE:-}
for d in "$root/../shared/bench/peer_node" "$root/../../shared/bench/peer_node"; do
  [ -z "$src" ] && [ -f "$d/bench.js" ] && src=$d
done
if [ -z "$src" ] || ! command -v node > /dev/null || ! command -v npm > /dev/null; then
  echo "   skipped: needs node, npm and the peer program (PEER_NODE=DIR)"
  exit 0
fi
peer=$root/build/peer_node
if ! cmp -s "$src/package-lock.json" "$peer/package-lock.json" || [ ! -d "$peer/node_modules/better-sqlite3" ]; then
  echo "   setting up $peer (npm install --nodedir=/usr)"
  rm -rf "$peer" && mkdir -p "$root/build" && cp -r "$src" "$peer" && chmod -R u+w "$peer"
  (cd "$peer" && npm install --nodedir=/usr > npm.log 2>&1) || { echo "   npm install failed: $(tail -3 "$peer/npm.log")"; exit 0; }
fi
(cd "$peer" && node -e 'require("better-sqlite3")') 2> /dev/null || { echo "   better-sqlite3 does not load in $peer"; exit 0; }
tmp=$(mktemp -d /tmp/outboxd-bench-node.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1

# The peer's payloads as NDJSON, as its README says: {"id":i+1,"topic":type,"payload":payload}
node -e '
  const { makeEvent } = require(process.argv[1] + "/lib/outbox.js");
  const n = Number(process.argv[2]);
  let buf = "";
  for (let i = 0; i < n; i++) {
    const e = makeEvent(i);
    buf += JSON.stringify({ id: i + 1, topic: e.type, payload: e.payload }) + "\n";
    if (buf.length > 1 << 20) { process.stdout.write(buf); buf = ""; }
  }
  process.stdout.write(buf);' "$peer" "$N" > events.ndjson
echo 'return function(ev) end' > noop.lua
echo 'return function(ev) local d = ev.data end' > data.lua
"$OUTBOXD" init --db tpl.db 2> /dev/null && head -n "$NSQL" events.ndjson | "$OUTBOXD" enqueue --db tpl.db 2> /dev/null ||
  { echo "   could not build the SQLite template"; exit 1; }
# The peer builds its own template once per size; do it outside the timed runs.
(cd "$peer" && node bench.js sqlite --n "$NSQL" --c 10 --batch 1000 --db "$tmp/peer.db" > /dev/null) ||
  { echo "   the peer's sqlite run failed"; exit 1; }

ms() { # ms CMD... -> wall time in ms of CMD (its output discarded), or nothing when it fails
  local t0 t1
  t0=$(date +%s%N)
  "$@" > out.log 2>&1 || { echo "   failed: $* : $(tail -2 out.log)" >&2; return 1; }
  t1=$(date +%s%N)
  echo $(((t1 - t0) / 1000000))
}
c_ndjson() { "$OUTBOXD" run "$1" --db ndjson:events.ndjson --no-watch --log json; }
c_sqlite() { cp tpl.db run.db && rm -f run.db-wal run.db-shm && "$OUTBOXD" run data.lua --db run.db --once --batch "$1" --no-watch --log json; }
node_run() { (cd "$peer" && node bench.js "$@"); }

side() { # side LABEL "C COMMAND" "NODE COMMAND"
  local label=$1 c n ct="" nt=""
  for _ in $(seq "$RUNS"); do
    c=$(ms bash -c "$2") || return 0
    n=$(ms bash -c "$3") || return 0
    ct="$ct $c" nt="$nt $n"
  done
  c=$(echo $ct | tr ' ' '\n' | median) n=$(echo $nt | tr ' ' '\n' | median)
  printf '   %-52s outboxd %6d ms  node %6d ms  ratio %sx   (outboxd:%s; node:%s)\n' "$label" "$c" "$n" \
    "$(awk -v c="$c" -v n="$n" 'BEGIN { printf "%.2f", n / c }')" "$ct" "$nt"
}
export -f c_ndjson c_sqlite node_run
export OUTBOXD peer

echo "   ratio = Node time / outboxd time, medians of $RUNS alternating runs (concurrency 10)"
side "$N NDJSON events, handler reads event.data" "c_ndjson data.lua" "node_run mem --n $N --c 10 --batch 50"
side "$N NDJSON events, no-op handler" "c_ndjson noop.lua" "node_run noop --n $N --c 10 --batch 50"
side "SQLite run --once, $NSQL events, batch 1000" "c_sqlite 1000" \
  "node_run sqlite --n $NSQL --c 10 --batch 1000 --db $tmp/peer.db"
side "SQLite run --once, $NSQL events, batch 50" "c_sqlite 50" \
  "node_run sqlite --n $NSQL --c 10 --batch 50 --db $tmp/peer.db"
echo "   (webhook deliveries against wrk -t1: see http.sh)"
