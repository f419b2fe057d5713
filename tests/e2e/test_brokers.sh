# outbox.redis, outbox.nats and the handlers built on them (handlers/redis-stream.lua,
# handlers/nats.lua) against real servers each test starts on a free 127.0.0.1 port:
# every event published once per done outcome, the broker killed (SIGKILL) and
# restarted mid-run, JetStream dedupe, a handler timeout cancelling a pending call,
# clear errors for bad URLs.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
REDIS_STREAM=$ROOT/handlers/redis-stream.lua
NATS_HANDLER=$ROOT/handlers/nats.lua

bg_track() {
  BG="$BG $1"
  trap 'for p in $BG; do kill -9 $p 2>/dev/null; done; wait 2>/dev/null' EXIT
}

# start_on_port PORT LAUNCH READY: runs "LAUNCH port" in the background until
# "READY port" succeeds, on a free port each try unless PORT is given; sets SPORT, SPID.
start_on_port() {
  local fixed=$1 launch=$2 ready=$3 port
  for _ in 1 2 3 4 5; do
    port=${fixed:-$(free_port)}
    $launch "$port" &
    SPID=$!
    bg_track $SPID
    for _ in $(seq 400); do
      if $ready "$port"; then SPORT=$port; return 0; fi
      kill -0 $SPID 2> /dev/null || break
      sleep 0.05
    done
    kill -9 $SPID 2> /dev/null
  done
  return 1
}

# redis_start [PORT]: redis-server in ./redis with an append-only file synced on every
# write (what it acknowledged survives a SIGKILL); sets RPORT and RPID.
redis_launch() {
  exec redis-server --port "$1" --bind 127.0.0.1 --dir "$PWD/redis" --appendonly yes \
    --appendfsync always --save '' --daemonize no > "redis/log.$1" 2>&1
}
redis_ready() { [ "$(redis-cli -p "$1" ping 2> /dev/null)" = PONG ]; }
redis_start() {
  mkdir -p redis
  start_on_port "${1:-}" redis_launch redis_ready || fail "redis-server did not start" || return 1
  RPORT=$SPORT RPID=$SPID
}

# nats_start [PORT]: nats-server with JetStream stored in ./nats; sets NPORT and NPID.
nats_launch() { exec nats-server -js -sd "$PWD/nats" -a 127.0.0.1 -p "$1" -l "$PWD/nats/log.$1"; }
nats_ready() { grep -q 'Server is ready' "nats/log.$1" 2> /dev/null; }
nats_start() {
  mkdir -p nats
  rm -f nats/log.* # a restart must not read the killed server's log
  start_on_port "${1:-}" nats_launch nats_ready || fail "nats-server did not start" || return 1
  NPORT=$SPORT NPID=$SPID
}

# stream_ids STREAM: the id field of every entry of a Redis stream, one per line.
stream_ids() { redis-cli -p "$RPORT" --raw XRANGE "$1" - + | awk 'p == "id" { print } { p = $0 }'; }

# js_count STREAM: the messages in a JetStream stream, asked through outboxd itself.
js_count() {
  cat > count.lua <<'LUA'
local c = assert(outbox.nats.connect(os.getenv("NURL")))
return function()
  local raw, err = c:request("$JS.API.STREAM.INFO." .. os.getenv("STREAM"), "")
  if not raw then error(err, 0) end
  local info = outbox.json.decode(raw)
  if not info.state then error("no stream: " .. raw, 0) end
  io.stdout:write(string.format("%d\n", info.state.messages))
end
LUA
  echo '{"topic":"count","payload":"{}"}' > count.ndjson
  NURL="nats://127.0.0.1:$NPORT" STREAM=$1 "$OUTBOXD" run count.lua --db ndjson:count.ndjson \
    --max-attempts 1 --no-watch --log text 2> count.log
}

# wait_cmd SECONDS EXPECTED CMD...: polls CMD until it prints EXPECTED.
wait_cmd() {
  local secs=$1 want=$2 got i=0
  shift 2
  while [ $i -lt $((secs * 20)) ]; do
    got=$("$@" 2> /dev/null) && [ "$got" = "$want" ] && return 0
    sleep 0.05; i=$((i + 1))
  done
  fail "'$*' printed '$got', expected '$want'"
}

# wait_ge SECONDS MIN CMD...: polls CMD until it prints a number >= MIN.
wait_ge() {
  local secs=$1 min=$2 got i=0
  shift 2
  while [ $i -lt $((secs * 20)) ]; do
    got=$("$@" 2> /dev/null) && [ "${got:-0}" -ge "$min" ] 2> /dev/null && return 0
    sleep 0.05; i=$((i + 1))
  done
  fail "'$*' printed '$got', expected >= $min"
}

sql() { sqlite3 x.db "$1"; }

# enqueue_orders N: N events on topic order.paid into a fresh x.db; odd ones have a key.
enqueue_orders() {
  "$OUTBOXD" init --db x.db 2> /dev/null || fail "init" || return 1
  awk -v n="$1" 'BEGIN { for (i = 1; i <= n; i++)
    if (i % 2) printf "{\"topic\":\"order.paid\",\"key\":\"order-%d\",\"payload\":{\"n\":%d}}\n", i, i
    else printf "{\"topic\":\"order.paid\",\"payload\":{\"n\":%d}}\n", i }' |
    "$OUTBOXD" enqueue --db x.db 2> /dev/null || fail "enqueue"
}

# slow.lua: the handler named by $HANDLER, each run 20 ms longer (so a test can act mid-run).
write_slow() {
  cat > slow.lua <<'LUA'
local relay = dofile(os.getenv("HANDLER"))
return function(ev)
  outbox.sleep(0.02)
  return relay(ev)
end
LUA
}

t_redis_stream_publishes_each_event_once() {
  redis_start || return 1
  enqueue_orders 300 || return 1
  OUTBOX_REDIS_URL="redis://127.0.0.1:$RPORT" "$OUTBOXD" run "$REDIS_STREAM" --db x.db --once \
    --keep-done --concurrency 50 --no-watch --log text 2> log || fail "exit $?" || return 1
  assert_eq "$(field done log)" 300 "done" || return 1
  assert_eq "$(redis-cli -p "$RPORT" XLEN outbox:order.paid)" 300 "stream length" || return 1
  stream_ids outbox:order.paid | sort -n > got
  sql "SELECT id FROM outbox WHERE status = 'done' ORDER BY id" > want
  assert_eq "$(wc -l < want)" 300 "done rows" || return 1
  cmp -s got want || fail "stream ids differ from the done events: $(diff got want | head -5)" || return 1
  # fields: id, topic, key (when set), payload
  local first second
  first=$(redis-cli -p "$RPORT" --raw XRANGE outbox:order.paid - + COUNT 300 | grep -m1 -A6 -x "$(head -1 want)" | head -7 | tr '\n' ' ')
  assert_eq "$first" "$(head -1 want) topic order.paid key order-1 payload {\"n\":1} " "fields with a key" || return 1
  second=$(redis-cli -p "$RPORT" --raw XRANGE outbox:order.paid - + COUNT 300 | grep -m1 -A4 -x "$(sed -n 2p want)" | head -5 | tr '\n' ' ')
  assert_eq "$second" "$(sed -n 2p want) topic order.paid payload {\"n\":2} " "fields without a key"
}

t_nats_publishes_each_event_once_and_dedupes_reruns() {
  nats_start || return 1
  local i
  for i in $(seq 200); do printf '{"topic":"order.paid","key":"k%d","payload":{"n":%d}}\n' "$i" "$i"; done > in.ndjson
  OUTBOX_NATS_URL="nats://127.0.0.1:$NPORT" "$OUTBOXD" run "$NATS_HANDLER" --db ndjson:in.ndjson \
    --concurrency 50 --no-watch --log text 2> log || fail "exit $?" || return 1
  assert_eq "$(field done log)" 200 "done" || return 1
  assert_grep 'nats stream created .*stream=OUTBOX subjects=outbox.>' log "stream created" || return 1
  assert_eq "$(grep -c 'nats stream created' log)" 1 "created once" || return 1
  js_count OUTBOX > count || fail "count: $(tail -3 count.log)" || return 1
  assert_eq "$(cat count)" 200 "messages in the stream" || return 1
  # The same ids again: every publish is acknowledged as a duplicate, nothing is added.
  OUTBOX_NATS_URL="nats://127.0.0.1:$NPORT" "$OUTBOXD" run "$NATS_HANDLER" --db ndjson:in.ndjson \
    --concurrency 50 --no-watch --log text 2> log2 || fail "rerun exit $?" || return 1
  assert_eq "$(field done log2)" 200 "done on the rerun" || return 1
  js_count OUTBOX > count || fail "count: $(tail -3 count.log)" || return 1
  assert_eq "$(cat count)" 200 "messages after the rerun"
}

# run_through_outage KIND: relays 300 events with slow.lua; kills the broker (SIGKILL)
# after 50, restarts it on the same port once the breaker opened, then waits for
# every event to be done. Leaves the run's log in ./log.
run_through_outage() {
  local kind=$1 pid
  enqueue_orders 300 || return 1
  write_slow
  OUTBOX_REDIS_URL="redis://127.0.0.1:${RPORT:-1}" OUTBOX_NATS_URL="nats://127.0.0.1:${NPORT:-1}" \
    HANDLER=$([ "$kind" = redis ] && echo "$REDIS_STREAM" || echo "$NATS_HANDLER") \
    "$OUTBOXD" run slow.lua --db x.db --keep-done --concurrency 4 --backoff 50:200 --poll 50 \
    --max-attempts 1000 --breaker-window 10 --breaker-min-calls 5 --breaker-cooldown 300 \
    --no-watch --log text 2> log &
  pid=$!
  bg_track $pid
  wait_ge 30 50 sql "SELECT count(*) FROM outbox WHERE status = 'done'" || return 1
  if [ "$kind" = redis ]; then kill -9 "$RPID"; else kill -9 "$NPID"; fi
  wait_for 'circuit breaker changed state=open' log 30 || return 1
  if [ "$kind" = redis ]; then redis_start "$RPORT"; else nats_start "$NPORT"; fi || return 1
  wait_for 'circuit breaker changed state=closed' log 30 || return 1
  wait_cmd 40 300 sql "SELECT count(*) FROM outbox WHERE status = 'done'" || return 1
  kill -TERM $pid
  wait $pid
  assert_eq "$?" 0 "exit after SIGTERM" || return 1
  assert_eq "$(sql "SELECT count(*) FROM outbox WHERE status <> 'done'")" 0 "events not done (dead or pending)" || return 1
  assert_grep 'event failed .*attempt=1 ' log "events failed while the broker was down" || return 1
  [ "$(sql "SELECT count(*) FROM outbox WHERE attempts > 1")" -gt 0 ] || fail "no event was retried"
}

t_redis_killed_and_restarted_mid_run_loses_nothing() {
  redis_start || return 1
  run_through_outage redis || return 1
  assert_grep "error=\"redis-stream: redis 127.0.0.1:$RPORT: (Connection refused|connection lost)" log \
    "the broker's failure is the error" || return 1
  # At least once: every event is in the stream (a retried one may be there twice).
  stream_ids outbox:order.paid | sort -nu > got
  sql "SELECT id FROM outbox ORDER BY id" > want
  cmp -s got want || fail "distinct stream ids differ from the events: $(diff got want | head -5)" || return 1
  [ "$(redis-cli -p "$RPORT" XLEN outbox:order.paid)" -ge 300 ] || fail "stream shorter than 300"
}

t_nats_killed_and_restarted_mid_run_loses_nothing() {
  nats_start || return 1
  run_through_outage nats || return 1
  assert_grep "error=\"nats 127.0.0.1:$NPORT: (not connected|connection lost)" log \
    "the broker's failure is the error" || return 1
  # Effectively once: retried events were dropped as duplicates by the stream.
  js_count OUTBOX > count || fail "count: $(tail -3 count.log)" || return 1
  assert_eq "$(cat count)" 300 "messages in the stream"
}

t_redis_handler_timeout_cancels_pending_call() {
  redis_start || return 1
  # Attempt 1 blocks on BLPOP (its own connection: database 1) until the test pushes
  # to the list, long after the handler timed out. Its reply then reaches a call
  # that was cancelled: it must be dropped, never resume the dead coroutine.
  cat > h.lua <<'LUA'
local db1 = assert(outbox.redis.connect(os.getenv("URL") .. "/1"))
return function(ev)
  if ev.attempt == 1 then
    local v = db1:call("BLPOP", "gate", "0")
    outbox.log.info("RESUMED AFTER TIMEOUT", { v = tostring(v) })
    return
  end
  local n, err = db1:call("RPUSH", "attempts", "second")
  if not n then error(err, 0) end
end
LUA
  ndjson 1 > in.ndjson
  URL="redis://127.0.0.1:$RPORT" "$OUTBOXD" run h.lua --db ndjson:in.ndjson --timeout 1000 \
    --backoff 50:50 --no-watch --log text 2> log &
  local pid=$!
  bg_track $pid
  wait_for 'handler timed out id=1' log 60 || return 1
  redis-cli -p "$RPORT" -n 1 LPUSH gate x > /dev/null
  wait $pid
  assert_eq "$?" 0 "exit" || return 1
  assert_eq "$(field done log)" 1 "done on the retry" || return 1
  assert_no_grep 'RESUMED AFTER TIMEOUT' log "a cancelled call resumed its coroutine" || return 1
  assert_eq "$(redis-cli -p "$RPORT" -n 1 LLEN gate)" 0 "the cancelled BLPOP took the value" || return 1
  # The retry ran (more than once if the machine stalled past a timeout again: a
  # RPUSH queued behind the blocked BLPOP is at least once too).
  assert_eq "$(redis-cli -p "$RPORT" -n 1 LRANGE attempts 0 -1 | sort -u)" second "the retry ran"
}

t_nats_handler_timeout_cancels_pending_ack() {
  nats_start || return 1
  # Event 2 publishes once the server is stopped (SIGSTOP) and waits for its ack: the
  # handler times out; after SIGCONT the late ack is dropped and the retry is
  # acknowledged as a duplicate.
  cat > h.lua <<'LUA'
local relay = dofile(os.getenv("HANDLER"))
return function(ev)
  if ev.id == 2 and ev.attempt == 1 then
    outbox.log.info("SLOW START")
    while not io.open("stopped") do outbox.sleep(0.02) end -- the test stopped the server
    relay(ev)
    outbox.log.info("RESUMED AFTER TIMEOUT")
    return
  end
  relay(ev)
  outbox.log.info("RELAYED")
end
LUA
  ndjson 2 > in.ndjson
  OUTBOX_NATS_URL="nats://127.0.0.1:$NPORT" HANDLER=$NATS_HANDLER "$OUTBOXD" run h.lua \
    --db ndjson:in.ndjson --timeout 3000 --backoff 50:50 --no-watch --log text 2> log &
  local pid=$!
  bg_track $pid
  wait_for 'SLOW START' log 60 || return 1
  wait_for 'RELAYED id=1' log 60 || return 1
  kill -STOP "$NPID"
  touch stopped
  wait_for 'event failed id=2 .*error=timeout' log 60 || { kill -CONT "$NPID"; return 1; }
  kill -CONT "$NPID"
  wait $pid
  assert_eq "$?" 0 "exit" || return 1
  assert_eq "$(field done log)" 2 "both done" || return 1
  assert_no_grep 'RESUMED AFTER TIMEOUT' log "a cancelled call resumed its coroutine" || return 1
  js_count OUTBOX > count || fail "count: $(tail -3 count.log)" || return 1
  assert_eq "$(cat count)" 2 "messages in the stream (the retry was a duplicate)"
}

t_broker_bad_urls_are_clear_errors() {
  OUTBOX_REDIS_URL=http://127.0.0.1:6379 "$OUTBOXD" check "$REDIS_STREAM" 2> err
  assert_eq "$?" 2 "redis: wrong scheme exits 2" || return 1
  assert_grep "OUTBOX_REDIS_URL: redis: unsupported URL scheme 'http' \(expected redis://host:port\): http://127.0.0.1:6379" err "wrong scheme named" || return 1
  OUTBOX_REDIS_URL=redis://127.0.0.1:6379/cache "$OUTBOXD" check "$REDIS_STREAM" 2> err
  assert_grep "redis: the database in the URL must be a number, got 'cache'" err "database named" || return 1
  OUTBOX_REDIS_URL=redis://127.0.0.1:99999 "$OUTBOXD" check "$REDIS_STREAM" 2> err
  assert_grep "redis: malformed URL \(expected redis://host:port\): redis://127.0.0.1:99999" err "bad port" || return 1
  OUTBOX_NATS_URL=127.0.0.1:4222 "$OUTBOXD" check "$NATS_HANDLER" 2> err
  assert_eq "$?" 2 "nats: no scheme exits 2" || return 1
  assert_grep "OUTBOX_NATS_URL: nats: malformed URL \(expected nats://host:port\): 127.0.0.1:4222" err "malformed named" || return 1
  OUTBOX_NATS_STREAM=a.b "$OUTBOXD" check "$NATS_HANDLER" 2> err
  assert_grep "OUTBOX_NATS_STREAM must be a name without" err "bad stream name" || return 1
  # Nothing listens: each event fails with the reason, and is retried.
  ndjson 1 > in.ndjson
  OUTBOX_REDIS_URL=redis://127.0.0.1:1 "$OUTBOXD" run "$REDIS_STREAM" --db ndjson:in.ndjson \
    --max-attempts 2 --backoff 10:10 --no-watch --log text 2> log
  assert_grep 'event failed id=1 .*error="redis-stream: redis 127.0.0.1:1: Connection refused"' log "refused (redis)" || return 1
  assert_grep 'event dead id=1 ' log "dead after max attempts (redis)" || return 1
  OUTBOX_NATS_URL=nats://127.0.0.1:1 "$OUTBOXD" run "$NATS_HANDLER" --db ndjson:in.ndjson \
    --max-attempts 2 --backoff 10:10 --no-watch --log text 2> log
  assert_grep 'event failed id=1 .*error="nats 127.0.0.1:1: No server available for connection"' log "refused (nats)" || return 1
  assert_grep 'event dead id=1 ' log "dead after max attempts (nats)"
}

t_example_redis_relay() {
  OUTBOXD=$OUTBOXD bash "$ROOT/examples/redis-relay/run.sh" > out 2>&1 ||
    { sed 's/^/      | /' out | tail -20; fail "run.sh failed"; return 1; }
  assert_grep 'redis-relay: ok' out "example finished"
}

t_example_nats_relay() {
  OUTBOXD=$OUTBOXD bash "$ROOT/examples/nats-relay/run.sh" > out 2>&1 ||
    { sed 's/^/      | /' out | tail -20; fail "run.sh failed"; return 1; }
  assert_grep 'nats-relay: ok' out "example finished"
}
