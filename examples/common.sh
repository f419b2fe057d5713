# Sourced by the examples' run.sh scripts: a fresh SQLite outbox filled with order
# events, and a throwaway server on a free 127.0.0.1 port. Expects OUTBOXD.

# outbox_with_orders DB N: creates DB and enqueues N order.paid events (ids 1..N),
# each with its own key.
outbox_with_orders() {
  "$OUTBOXD" init --db "$1" 2> /dev/null
  for i in $(seq "$2"); do
    printf '{"topic":"order.paid","key":"order-%d","payload":{"order":%d,"amount":%d}}\n' \
      "$i" "$i" $((i * 100))
  done | "$OUTBOXD" enqueue --db "$1" 2> /dev/null
}

# serve_on_free_port START READY: runs `START PORT` in the background (START execs
# the server) and waits until `READY PORT` succeeds, trying up to 20 random ports.
# Sets `port` and `server_pid`; returns 1 when no port worked.
server_pid=
serve_on_free_port() {
  local start=$1 ready=$2
  for _ in $(seq 20); do
    port=$((20000 + RANDOM % 40000))
    "$start" "$port" &
    server_pid=$!
    for _ in $(seq 100); do
      "$ready" "$port" && return 0
      kill -0 "$server_pid" 2> /dev/null || break
      sleep 0.05
    done
    kill "$server_pid" 2> /dev/null || true
    server_pid=
  done
  return 1
}

# Stops the server and removes the work folder (for `trap stop_all EXIT`).
stop_all() {
  [ -n "$server_pid" ] && kill "$server_pid" 2> /dev/null
  wait
  rm -rf "$work"
}
