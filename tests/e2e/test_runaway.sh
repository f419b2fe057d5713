# Runaway code never freezes the host: a handler or hook that never yields, a script
# whose top level never ends (run, check, reload), a handler that allocates without
# end, a shutdown hook that never returns. Small --cpu-limit values keep them quick;
# every wait polls with a generous deadline.

# runaway_script: handler that spins forever on topic "spin" (after leaving a marker
# file), and sleeps a little on every other event.
runaway_script() {
  cat > h.lua <<'LUA'
local kept = assert(io.open("kept.txt", "a")) -- open for good, without close-on-exec
return function(ev)
  kept:write(ev.id, "\n"); kept:flush()
  if ev.topic == "spin" then
    local f = assert(io.open("spinning", "w")); f:write("x\n"); f:close()
    local x = 0
    while true do x = x + 1 end
  end
  outbox.sleep(0.1)
end
LUA
}

# wait_query SQL_COMMAND QUERY EXPECTED SECONDS: polls until the query gives EXPECTED.
wait_query() {
  local i=0 max=$(( $4 * 10 )) got
  while [ $i -lt $max ]; do
    got=$($1 "$2" 2>/dev/null)
    [ "$got" = "$3" ] && return 0
    sleep 0.1; i=$((i + 1))
  done
  fail "'$2' gave '$got', expected '$3' within $4 s"
}

# health_code PORT: the HTTP status of /health, 000 when nothing answers within 1 s.
health_code() { curl -s -o /dev/null -m 1 -w '%{http_code}' "http://127.0.0.1:$1/health"; }

# inheritable_fds PID: the host's sockets and database files without close-on-exec.
inheritable_fds() {
  local fd target
  for fd in /proc/"$1"/fd/*; do
    target=$(readlink "$fd") || continue
    case $target in socket:*|*/o.db|*/o.db-*) ;; *) continue ;; esac
    grep -qE '^flags:\s+[0-7]*[2367][0-7]{6}$' /proc/"$1"/fdinfo/"${fd##*/}" || echo "${fd##*/} -> $target"
  done
}

# runaway_checks PID QUERY_CMD: what a runaway handler must leave behind, on any store.
# 10 "ok" events, then event 11 on topic "spin", then 10 more "ok" events.
runaway_checks() {
  local pid=$1 q=$2 port host1 host2
  port=$(wait_for 'metrics listening' log 60 && field port log) || return 1
  wait_for . spinning 30 || return 1
  assert_eq "$(health_code "$port")" 000 "/health while the loop is stalled"
  wait_for 'restarted in place' log 30 || return 1
  wait_query "$q" "SELECT count(*) FROM outbox WHERE status = 'done'" 20 60 || return 1
  assert_eq "$($q "SELECT status || ' ' || attempts FROM outbox WHERE id = 11")" "dead 1" "the spinning event is dead at once"
  $q "SELECT last_error FROM outbox WHERE id = 11" > last_error
  assert_grep '^runaway: ran [0-9]+ ms without yielding$' last_error "last_error"
  assert_eq "$($q "SELECT max(attempts) FROM outbox WHERE status = 'done'")" 1 "no attempt used by the restart"
  assert_eq "$($q "SELECT count(*) FROM outbox WHERE status <> 'done' AND id <> 11")" 0 "nothing lost"
  assert_grep "runaway handler: event dead id=11 topic=spin ran_ms=[0-9]+" log "logged with id and topic"
  kill -0 "$pid" 2>/dev/null || fail "the host is gone"
  assert_grep "restarting in place host=[^ ]+ pid=$pid\$" log "same process id"
  host1=$(grep -oE 'restarting in place host=[^ ]+' log | sed 's/.*host=//')
  host2=$(grep -oE 'restarted in place host=[^ ]+' log | sed 's/.*host=//')
  assert_eq "$host2" "$host1" "same host identity"
  port=$(grep 'metrics listening' log | tail -1 | grep -oE 'port=[0-9]+' | cut -d= -f2)
  assert_eq "$(health_code "$port")" 200 "/health after the restart (its port bound again)"
  # nothing the host opens outlives a restart: every socket and database file
  # descriptor is close-on-exec
  assert_eq "$(inheritable_fds "$pid")" "" "descriptors a restart would leak"
  assert_eq "$(ls -l /proc/"$pid"/fd | grep -c '/kept.txt$')" 1 "a file the handler opened, once"
  kill -TERM "$pid"; wait "$pid" || fail "exit $?"
}

t_runaway_handler_sqlite_restarts_in_place() {
  runaway_script
  "$OUTBOXD" init --db o.db 2>/dev/null || fail "init"
  { ndjson 10 ok; ndjson 1 spin; ndjson 10 ok; } | "$OUTBOXD" enqueue --db o.db 2>/dev/null
  "$OUTBOXD" run h.lua --db o.db --cpu-limit 1500 --concurrency 4 --keep-done --metrics 0 \
    --log text 2> log &
  runaway_checks $! "sqlite3 o.db"
}

t_runaway_handler_pg_restarts_in_place() {
  pg_fresh || return 1
  runaway_script
  { ndjson 10 ok; ndjson 1 spin; ndjson 10 ok; } | "$OUTBOXD" enqueue --db "$PGURL" 2>/dev/null
  "$OUTBOXD" run h.lua --db "$PGURL" --cpu-limit 1500 --concurrency 4 --keep-done --metrics 0 \
    --log text 2> log &
  runaway_checks $! sql
}

t_runaway_handler_ndjson_exits_1_naming_the_event() {
  runaway_script
  { ndjson 3 ok; ndjson 1 spin; } > in.ndjson
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --cpu-limit 300 --log text 2> log; rc=$?
  assert_eq "$rc" 1 "exit code"
  assert_grep 'runaway handler: event dead id=4 topic=spin' log "names the event"
  assert_grep 'runaway code with an NDJSON source: exiting id=4' log "says why it exits"
}

t_runaway_hook_restarts_in_place() {
  cat > h.lua <<'LUA'
outbox.on("start", function()
  local f = io.open("armed")
  if f then
    f:close(); os.remove("armed")
    local x = 0
    while true do x = x + 1 end
  end
end)
return function(ev) end
LUA
  touch armed
  "$OUTBOXD" init --db o.db 2>/dev/null || fail "init"
  ndjson 5 | "$OUTBOXD" enqueue --db o.db 2>/dev/null
  "$OUTBOXD" run h.lua --db o.db --cpu-limit 500 --keep-done --log text 2> log &
  pid=$!
  wait_for 'restarted in place' log 30 || { kill $pid; return 1; }
  wait_query "sqlite3 o.db" "SELECT count(*) FROM outbox WHERE status = 'done'" 5 30
  assert_grep 'runaway hook hook=start ran_ms=[0-9]+' log "names the hook"
  assert_eq "$(sqlite3 o.db "SELECT count(*) FROM outbox WHERE status = 'dead'")" 0 "no event blamed"
  kill -0 $pid 2>/dev/null || fail "the host is gone"
  assert_grep "restarting in place host=[^ ]+ pid=$pid\$" log "same process id"
  kill -TERM $pid; wait $pid || fail "exit $?"
}

t_runaway_top_level_on_reload_keeps_serving() {
  cat > h.lua <<'LUA'
outbox.on("reload:failed", function(s) outbox.log.info("HOOK reload:failed", { error = s.error }) end)
return function(ev) outbox.log.info("RAN", { generation = outbox.stats().generation }) end
LUA
  "$OUTBOXD" init --db o.db 2>/dev/null || fail "init"
  "$OUTBOXD" run h.lua --db o.db --cpu-limit 500 --log text 2> log &
  pid=$!
  wait_for 'started' log 60 || { kill $pid; return 1; }
  { echo 'local n = 0'; echo 'while true do n = n + 1 end'; cat h.lua; } > h.new && mv h.new h.lua
  wait_for 'reload failed' log 30 || { kill $pid; return 1; }
  assert_grep 'reload failed .*h.lua: did not finish loading within 5 s' log "the load budget held"
  wait_for 'HOOK reload:failed' log 60
  "$OUTBOXD" enqueue --db o.db --topic t --payload '"x"' 2>/dev/null
  wait_for 'RAN .*generation=1' log 60 || fail "the serving generation goes on"
  assert_no_grep 'restart' log "no restart needed"
  kill -TERM $pid; wait $pid || fail "exit $?"
}

t_runaway_top_level_in_check_and_run_exits_2() {
  printf 'local n = 0\nwhile true do n = n + 1 end\nreturn function() end\n' > spin.lua
  "$OUTBOXD" check spin.lua 2> err; assert_eq "$?" 2 "check exit code"
  assert_grep '^outboxd: spin.lua: did not finish loading within 5 s$' err "check says why"
  ndjson 1 > in.ndjson
  "$OUTBOXD" run spin.lua --db ndjson:in.ndjson 2> err2; assert_eq "$?" 2 "run exit code"
  assert_grep '^outboxd: spin.lua: did not finish loading within 5 s$' err2 "run says why"
  # a script that turns the JIT back on: the watchdog still ends the load
  printf 'jit.on()\nlocal n = 0\nwhile true do n = n + 1 end\n' > jit.lua
  "$OUTBOXD" check jit.lua 2> err3; assert_eq "$?" 2 "check exit code (JIT on)"
  assert_grep 'jit.lua: did not finish loading within 5 s' err3 "says why (JIT on)"
}

t_lua_memory_bomb_fails_the_event_and_host_goes_on() {
  cat > h.lua <<'LUA'
outbox.on("memory:high", function(s) outbox.log.info("HOOK memory:high", { lua_heap = s.lua_heap }) end)
return function(ev)
  if ev.topic == "bomb" then
    local t, i = {}, 0
    while true do i = i + 1; t[i] = string.rep("x", 100) .. i end
  end
  outbox.log.info("HEAP", { lua_heap = outbox.stats().lua_heap })
end
LUA
  { ndjson 1 bomb; ndjson 5 ok; } > in.ndjson
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --lua-memory-limit 32M --max-attempts 2 --backoff 10:10 \
    --log text 2> log || fail "exit $?"
  assert_grep 'event failed id=1 .*error="not enough memory"' log "the bomb fails in its handler"
  assert_grep 'event dead id=1 .*attempt=2 .*not enough memory' log "and is retried"
  assert_grep 'Lua memory limit reached: allocation refused id=1 ' log "logged with the event id"
  assert_grep 'HOOK memory:high' log "memory:high fired"
  assert_eq "$(field done log)" 5 "the other events ran"
  grep -oE '(HEAP|HOOK memory:high).*lua_heap=[0-9]+' log | grep -oE '[0-9]+$' > heaps
  assert_eq "$(awk '$1 > 33554432' heaps | wc -l)" 0 "stats().lua_heap never above the limit"
  peak=$(field peak_rss log)
  [ "${peak:-999999999}" -lt $((160 << 20)) ] || fail "peak RSS $peak: the Lua heap went past its cap"
}

t_shutdown_hook_never_returns_drain_timeout_ends_it() {
  cat > h.lua <<'LUA'
outbox.on("shutdown", function() outbox.log.info("HOOK shutdown"); outbox.sleep(3600) end)
return function(ev) end
LUA
  ndjson 3 > in.ndjson
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --drain-timeout 300 --log text 2> log; rc=$?
  assert_eq "$rc" 0 "exit code"
  assert_grep 'HOOK shutdown' log "the hook began"
  assert_grep 'drain timeout: hooks and timer runs abandoned hooks=1 timers=0 abandoned=shutdown' log \
    "says what it was waiting for"
  assert_grep 'stopped processed=3' log "the run ended"
  # a shutdown hook that never yields: no restart while stopping, the run ends
  printf 'outbox.on("shutdown", function() local n = 0; while true do n = n + 1 end end)\nreturn function() end\n' > spin.lua
  "$OUTBOXD" init --db o.db 2>/dev/null || fail "init"
  "$OUTBOXD" run spin.lua --db o.db --cpu-limit 300 --log text 2> log2 &
  pid=$!
  wait_for 'started' log2 60 || { kill $pid; return 1; }
  kill -TERM $pid; wait $pid; rc=$?
  assert_eq "$rc" 1 "exit code (spinning hook)"
  assert_grep 'runaway hook hook=shutdown' log2 "names the hook"
  assert_grep 'runaway code while shutting down: exiting' log2 "says it ends the run"
}
