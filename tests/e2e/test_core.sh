# The heart: limiter, outcomes, retries, breaker, memory monitor, timeouts,
# script errors, bad input and signals, all through the real binary on NDJSON.

t_concurrency_reaches_and_never_exceeds_n() {
  cat > h.lua <<'LUA'
local cur, max = 0, 0
outbox.on("shutdown", function() outbox.log.info("RESULT", { max = max }) end)
return function(ev)
  cur = cur + 1
  if cur > max then max = cur end
  assert(outbox.stats().active <= 7, "limiter let more than 7 run")
  outbox.sleep(0.002)
  cur = cur - 1
end
LUA
  ndjson 300 > in.ndjson
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --concurrency 7 --log text 2> log || fail "exit $?"
  assert_eq "$(field max log)" 7 "peak handlers in flight"
  assert_eq "$(field done log)" 300 "events done"
  assert_eq "$(field failed log)" 0 "failed runs"
}

t_reject_is_dead_at_once() {
  printf 'return function(ev) return outbox.reject("poison") end\n' > h.lua
  ndjson 1 > in.ndjson
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --log text 2> log || fail "exit $?"
  assert_grep 'event dead id=1 .*attempt=1 error=poison' log "dead on first attempt"
  assert_eq "$(field processed log)" 1 "one run only"
  assert_eq "$(field dead log)" 1 "dead count"
}

t_error_retries_then_done() {
  cat > h.lua <<'LUA'
outbox.on("event:failed", function(a) outbox.log.info("HOOK failed", { id = a.event.id, err = a.error }) end)
return function(ev)
  if ev.attempt < 3 then error("flaky " .. ev.attempt) end
  outbox.log.info("SUCCEEDED", { attempt = ev.attempt })
end
LUA
  ndjson 1 > in.ndjson
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --backoff 10:40 --log text 2> log || fail "exit $?"
  assert_grep 'event failed id=1 .*attempt=1 ' log "first failure"
  assert_grep 'event failed id=1 .*attempt=2 ' log "second failure"
  assert_grep 'SUCCEEDED id=1 attempt=3' log "third attempt succeeds"
  assert_grep 'HOOK failed .*err="h.lua:3: flaky 1"' log "event:failed hook with the error"
  assert_grep 'HOOK failed .*id=1' log "event:failed hook with the event"
  assert_eq "$(field done log)" 1 "done"
  assert_eq "$(field failed log)" 2 "failed runs"
}

t_false_and_retry_forms() {
  cat > h.lua <<'LUA'
outbox.handle("f", function(ev) if ev.attempt == 1 then return false, "said no" end end)
outbox.handle("r", function(ev) if ev.attempt == 1 then return outbox.retry(0.05) end end)
outbox.on("shutdown", function(s) outbox.log.info("RESULT", { retried = s.retried, done = s.done }) end)
return function() end
LUA
  printf '%s\n' '{"topic":"f","payload":"1"}' '{"topic":"r","payload":"2"}' > in.ndjson
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --backoff 10 --log text 2> log || fail "exit $?"
  assert_grep 'event failed id=1 .*error="said no"' log "return false, e fails with e"
  assert_grep 'event failed id=2 .*retry_in_ms=50 ' log "retry(0.05) waits 50 ms"
  assert_eq "$(field retried log)" 2 "both retried once"
  assert_eq "$(field done log)" 2 "then done"
}

t_max_attempts_then_dead() {
  printf 'outbox.on("event:dead", function(a) outbox.log.info("HOOK dead", {id = a.event.id}) end)\nreturn function() error("always") end\n' > h.lua
  ndjson 2 > in.ndjson
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --backoff 5:5 --max-attempts 3 --log text 2> log || fail "exit $?"
  assert_eq "$(grep -c 'event failed id=1' log)" 2 "two retries before dead"
  assert_grep 'event dead id=1 .*attempt=3' log "dead at the third attempt"
  assert_grep 'HOOK dead id=2' log "event:dead hook"
  assert_eq "$(field dead log)" 2 "dead count"
}

# The downstream recovers while the breaker is open: the half-open probe is the
# first run to succeed (a hook would run after the probe if the host stalled past
# the cooldown, so the handler looks at the breaker itself).
t_breaker_opens_half_opens_closes_in_order() {
  cat > h.lua <<'LUA'
local healthy = false
for _, name in ipairs({ "circuit-breaker:opened", "circuit-breaker:half-open", "circuit-breaker:closed" }) do
  outbox.on(name, function(s) outbox.log.info("HOOK " .. name, { breaker = s.breaker }) end)
end
return function(ev)
  if outbox.stats().breaker ~= "closed" then healthy = true end
  if not healthy then error("downstream down") end
end
LUA
  ndjson 40 > in.ndjson
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --concurrency 1 --breaker-window 4 --breaker-min-calls 4 \
    --breaker-cooldown 200 --backoff 10:10 --log text 2> log || fail "exit $?"
  grep -oE 'HOOK circuit-breaker:[a-z-]+' log | head -3 > order
  printf 'HOOK circuit-breaker:opened\nHOOK circuit-breaker:half-open\nHOOK circuit-breaker:closed\n' > want
  cmp -s order want || { fail "hook order: $(tr '\n' ' ' < order)"; return 1; }
  assert_eq "$(grep -c 'HOOK circuit-breaker:opened' log)" 1 "exactly one open transition"
  assert_eq "$(field done log)" 40 "every event done after recovery"
  assert_eq "$(field failed log)" 4 "failures until the breaker opened"
}

t_memory_high_then_normal() {
  cat > h.lua <<'LUA'
local cache = {}
outbox.on("memory:high", function() outbox.log.info("HOOK memory:high"); cache = {}; collectgarbage() end)
outbox.on("memory:normal", function() outbox.log.info("HOOK memory:normal") end)
return function(ev)
  -- big strings are mapped on their own, so freeing them gives the memory back
  for i = 1, 8 do cache[#cache + 1] = string.rep("x", 262144) .. ev.id .. ":" .. i end
  outbox.sleep(0.005)
end
LUA
  ndjson 150 > in.ndjson
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --memory-limit 160M --memory-interval 20 --concurrency 1 \
    --log text 2> log || fail "exit $?"
  assert_grep 'HOOK memory:high' log "memory:high fired"
  grep -nE 'HOOK memory:(high|normal)' log | head -2 | grep -oE 'memory:[a-z]+' | tr '\n' ' ' > order
  assert_eq "$(cat order)" "memory:high memory:normal " "high then normal"
  assert_eq "$(field done log)" 150 "nothing lost while paused"
}

t_handler_timeout_and_host_goes_on() {
  printf 'return function(ev) if ev.topic == "hang" then outbox.sleep(3600) end end\n' > h.lua
  { ndjson 1 hang; ndjson 5 ok; } > in.ndjson
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --timeout 150 --max-attempts 1 --log text 2> log || fail "exit $?"
  assert_grep 'handler timed out id=1' log "timeout logged with the event id"
  assert_grep 'event dead id=1 .*error=timeout' log "timed out run fails with timeout"
  assert_eq "$(field done log)" 5 "the others ran"
}

t_syntax_error_exits_2_naming_file_and_line() {
  printf 'return function(ev)\n  local x = = 1\nend\n' > bad.lua
  ndjson 1 > in.ndjson
  "$OUTBOXD" run bad.lua --db ndjson:in.ndjson 2> err; rc=$?
  assert_eq "$rc" 2 "exit code"
  assert_grep 'bad.lua:2:' err "file and line"
  assert_eq "$(wc -l < err)" 1 "one line"
  "$OUTBOXD" check bad.lua 2> err2; assert_eq "$?" 2 "check exit code"
  printf 'return function() end\n' > good.lua
  "$OUTBOXD" check good.lua 2> /dev/null || fail "check of a good script"
  printf 'error("at load")\n' > raise.lua
  "$OUTBOXD" check raise.lua 2> err3; assert_eq "$?" 2 "raise at load"
  assert_grep 'raise.lua:1: at load' err3 "load error names file and line"
  printf 'return 42\n' > nofn.lua
  "$OUTBOXD" check nofn.lua 2> err4; assert_eq "$?" 2 "no handler"
  assert_grep 'nofn.lua: the script returned a number' err4 "names what is wrong"
}

t_bad_flag_exits_2() {
  printf 'return function() end\n' > h.lua
  "$OUTBOXD" run h.lua --concurrency zero 2> err; assert_eq "$?" 2 "exit code"
  assert_grep '\-\-concurrency: invalid value "zero"' err "names the flag"
  OUTBOX_CONCURRENCY=-3 "$OUTBOXD" run h.lua 2> err; assert_eq "$?" 2 "env exit code"
  assert_grep 'OUTBOX_CONCURRENCY' err "names the variable"
}

t_bad_ndjson_lines_skipped() {
  { ndjson 2; echo 'not json'; echo '{"topic":"t"}'; echo '{"topic":"t","payload":"x",}'; printf '{"topic":"t","payload":"\xff"}\n'; echo; ndjson 3; } > in.ndjson
  printf 'return function() end\n' > h.lua
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --log text 2> log || fail "exit $?"
  assert_grep 'bad NDJSON line skipped line=3 ' log "line 3 named"
  assert_grep 'line=4 error="missing \\"payload\\""' log "missing payload named"
  assert_grep 'line=5 ' log "trailing comma"
  assert_grep 'line=6 error="invalid UTF-8"' log "invalid UTF-8"
  assert_eq "$(field done log)" 5 "good lines all handled"
}

t_routes_and_event_fields() {
  cat > h.lua <<'LUA'
outbox.handle("order.*", function(ev)
  outbox.log.info("ROUTE prefix", { topic = ev.topic, key = ev.key, attempt = ev.attempt,
    h = ev.headers and ev.headers.trace or "none", v = ev.data.v })
end)
outbox.handle("order.special", function(ev) outbox.log.info("ROUTE exact", { topic = ev.topic }) end)
return function(ev) outbox.log.info("ROUTE default", { topic = ev.topic, payload = ev.payload }) end
LUA
  printf '%s\n' '{"topic":"order.created","payload":{"v":7},"key":"k1","headers":{"trace":"abc"}}' \
    '{"topic":"order.special","payload":"{}"}' '{"topic":"misc","payload":"raw text","id":99}' > in.ndjson
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --log text 2> log || fail "exit $?"
  assert_grep 'ROUTE prefix id=1 .*topic=order.created' log "prefix route"
  assert_grep 'key=k1' log "key field"
  assert_grep 'h=abc' log "headers decoded"
  assert_grep 'v=7' log "data decoded"
  assert_grep 'ROUTE exact id=2 topic=order.special' log "exact route wins"
  assert_grep 'ROUTE default id=99 .*payload="raw text"' log "returned function, id from the line"
}

# pairs(event) shows the event's fields and nothing of how they are kept: before and
# after the lazy fields are read, for an escaped string payload with headers, a plain
# one, and an event from SQLite with headers.
t_pairs_shows_only_event_fields() {
  cat > h.lua <<'LUA'
local function keys(ev)
  local t = {}
  for k in pairs(ev) do t[#t + 1] = tostring(k) end
  table.sort(t)
  return table.concat(t, ",")
end
return function(ev)
  local before = keys(ev)
  local p, d, h = ev.payload, ev.data, ev.headers
  outbox.log.info("KEYS", { before = before, after = keys(ev), h = h and h.trace or "none",
                            p = tostring(p == '{"a":"x\\"y"}' or p == '{"a":2}' or p == '{"a":3}'),
                            d = tostring(d.a == 'x"y' or d.a == 2 or d.a == 3) })
end
LUA
  printf '%s\n' '{"topic":"t","payload":"{\"a\":\"x\\\"y\"}","key":"k","headers":{"trace":"abc"}}' \
    '{"topic":"t","payload":{"a":2}}' > in.ndjson
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --log text 2> log || fail "exit $?" || return 1
  local all=attempt,created_at,id,key,topic
  assert_grep "KEYS id=1 after=attempt,created_at,data,headers,id,key,payload,topic before=$all d=true h=abc p=true" log "escaped payload with headers" || return 1
  assert_grep "KEYS id=2 after=attempt,created_at,data,id,payload,topic before=attempt,created_at,id,payload,topic d=true h=none p=true" log "plain payload" || return 1
  "$OUTBOXD" init --db x.db 2> /dev/null || fail "init" || return 1
  "$OUTBOXD" enqueue --db x.db --topic t --key k --payload '{"a":3}' --headers '{"trace":"sql"}' 2> /dev/null ||
    fail "enqueue" || return 1
  "$OUTBOXD" run h.lua --db x.db --once --log text 2> log2 || fail "exit $?" || return 1
  assert_grep "KEYS id=1 after=attempt,created_at,data,headers,id,key,payload,topic before=attempt,created_at,id,key,payload,topic d=true h=sql p=true" log2 "SQLite event" || return 1
}

t_all_settled_fans_out_with_limit() {
  cat > h.lua <<'LUA'
return function(ev)
  local cur, max = 0, 0
  local res = outbox.all_settled({ 1, 2, 3, 4, 5, 6 }, function(x)
    cur = cur + 1; if cur > max then max = cur end
    outbox.sleep(0.01)
    cur = cur - 1
    if x == 4 then error("four") end
    return x * 10
  end, 2)
  outbox.log.info("SETTLED", { n = #res, v1 = res[1].value, ok4 = tostring(res[4].ok), max = max })
end
LUA
  ndjson 1 > in.ndjson
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --log text 2> log || fail "exit $?"
  assert_eq "$(field n log)" 6 "one result per item"
  assert_eq "$(field v1 log)" 10 "values in item order"
  assert_eq "$(field ok4 log)" false "an error is a result, not a failure"
  assert_eq "$(field max log)" 2 "at most 2 at a time"
}

t_sigterm_drains_and_exits_0() {
  cat > h.lua <<'LUA'
outbox.on("shutdown", function(s)
  outbox.sleep(0.05)
  outbox.log.info("HOOK shutdown", { done = s.done, active = s.active })
end)
return function(ev) outbox.log.info("STARTED"); outbox.sleep(0.3) end
LUA
  mkfifo in.pipe
  ( ndjson 3; exec sleep 300 ) > in.pipe &
  feeder=$!
  "$OUTBOXD" run h.lua --db ndjson:- --log text < in.pipe 2> log &
  pid=$!
  wait_count 'STARTED' log 3 || { kill $feeder $pid; return 1; }
  kill -TERM $pid
  wait $pid; rc=$?
  kill $feeder 2>/dev/null
  assert_eq "$rc" 0 "exit code after SIGTERM"
  assert_grep 'shutting down reason=SIGTERM' log "signal logged"
  assert_grep 'HOOK shutdown' log "shutdown hook ran"
  assert_eq "$(field done log)" 3 "in-flight handlers finished before the shutdown hook"
  assert_eq "$(field active log)" 0 "nothing active at shutdown"
}

t_configure_precedence() {
  cat > h.lua <<'LUA'
outbox.configure { concurrency = 3, batch = 7, timeout = 1.5, backoff = 0.25 }
outbox.on("start", function()
  local c = outbox.config
  outbox.log.info("CONFIG", { concurrency = c.concurrency, batch = c.batch, timeout = c.timeout, backoff = c.backoff })
  local ok = pcall(function() outbox.config.batch = 1 end)
  outbox.log.info("READONLY", { ok = ok })
end)
return function() end
LUA
  ndjson 1 > in.ndjson
  OUTBOX_BATCH_SIZE=9 "$OUTBOXD" run h.lua --db ndjson:in.ndjson --timeout 2500 --log text 2> log || fail "exit $?"
  assert_eq "$(field concurrency log)" 3 "script value over the default"
  assert_eq "$(field batch log)" 9 "environment over the script"
  assert_eq "$(field timeout log)" 2.5 "flag over the script (ms on the command line, s in Lua)"
  assert_eq "$(field backoff log)" 0.25 "script value in seconds"
  assert_eq "$(field ok log)" false "outbox.config is read-only"
  printf 'outbox.configure { concurency = 3 }\nreturn function() end\n' > typo.lua
  "$OUTBOXD" check typo.lua 2> err; assert_eq "$?" 2 "unknown setting is a script error"
  assert_grep "typo.lua:1: outbox.configure: unknown setting 'concurency'" err "names the setting and line"
}

t_per_key_order_with_random_failures() {
  cat > h.lua <<'LUA'
math.randomseed(7)
return function(ev)
  outbox.sleep(0.001)
  if math.random() < 0.3 then error("random failure") end
  outbox.log.info("OK", { key = ev.key, seq = ev.data.seq })
end
LUA
  awk 'BEGIN { for (s = 1; s <= 40; s++) for (k = 1; k <= 5; k++) printf "{\"topic\":\"t\",\"key\":\"k%d\",\"payload\":{\"seq\":%d}}\n", k, s }' > in.ndjson
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --concurrency 20 --backoff 2:5 --max-attempts 100 --breaker 100 --log text 2> log || fail "exit $?"
  assert_eq "$(grep -c ' OK ' log)" 200 "every event succeeded once"
  for k in 1 2 3 4 5; do
    grep -oE "OK id=[0-9]+ .*" log | grep "key=k$k\b" | grep -oE 'seq=[0-9]+' | cut -d= -f2 > got
    seq 1 40 > want
    cmp -s got want || { fail "key k$k out of order: $(tr '\n' ' ' < got | head -c 200)"; return 1; }
  done
  assert_grep 'event failed' log "failures happened"
}

t_foreign_yields_fail_clearly() {
  cat > h.lua <<'LUA'
local saved
outbox.handle("yield", function() coroutine.yield(1) end)
outbox.handle("nested", function()
  saved = coroutine.create(function() outbox.sleep(0.01) end)
  local ok, err = coroutine.resume(saved)
  outbox.log.info("NESTED", { ok = ok, err = err })
end)
outbox.handle("stale", function()
  outbox.sleep(0.05) -- the first handler's struct is reused by now
  local ok, err = coroutine.resume(saved or coroutine.create(function() end))
  outbox.log.info("STALE", { ok = ok })
end)
return function() end
LUA
  printf '%s\n' '{"topic":"yield","payload":"1"}' '{"topic":"nested","payload":"2"}' '{"topic":"stale","payload":"3"}' > in.ndjson
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --max-attempts 1 --log text 2> log || fail "exit $?"
  assert_grep 'event dead id=1 .*coroutine.yield\(\) is not allowed' log "a raw yield fails the event"
  assert_grep 'NESTED id=2 .*outbox.sleep can only wait inside a handler or hook' log "sleep in a foreign coroutine: clear error"
  assert_grep 'STALE id=3' log "a stale coroutine is harmless"
}

# retry(seconds) with a delay past the end of time: the retry waits (saturated),
# it is not scheduled at a wrapped, negative time and run again at once.
# Event 2 sleeps 0.3 s on the host's own timer: once it is done, the loop has run well
# past the moment a wrapped retry would have run event 1 again.
t_huge_retry_delay_does_not_run_again_at_once() {
  cat > h.lua <<'LUA'
return function(ev)
  if ev.topic == "later" then outbox.sleep(0.3); outbox.log.info("LATER"); return end
  outbox.log.info("RAN", { attempt = ev.attempt })
  return outbox.retry(1e300)
end
LUA
  { ndjson 1; ndjson 1 later; } > in.ndjson
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --concurrency 2 --log text 2> log &
  pid=$!
  wait_for 'event failed id=1 ' log || { kill $pid; return 1; }
  wait_for 'LATER id=2' log || { kill $pid; return 1; }
  kill -TERM $pid; wait $pid
  assert_no_grep 'RAN id=1 attempt=2' log "no second run"
  assert_no_grep 'retry_in_ms=-' log "no negative retry delay"
}

t_drain_timeout_still_runs_shutdown_hooks() {
  cat > h.lua <<'LUA'
outbox.on("shutdown", function() outbox.log.info("HOOK shutdown") end)
return function(ev) outbox.log.info("STARTED"); outbox.sleep(3600) end
LUA
  mkfifo in.pipe
  ( ndjson 2; exec sleep 300 ) > in.pipe &
  feeder=$!
  "$OUTBOXD" run h.lua --db ndjson:- --drain-timeout 100 --log text < in.pipe 2> log &
  pid=$!
  wait_for 'STARTED' log || { kill $feeder $pid; return 1; }
  kill -TERM $pid
  wait $pid; rc=$?
  kill $feeder 2>/dev/null
  assert_eq "$rc" 0 "exit code"
  assert_grep 'drain timeout: returning unfinished events' log "stuck handlers given up"
  assert_grep 'HOOK shutdown' log "shutdown hook ran after the drain timeout"
}

t_signal_while_finishing_is_not_a_second_signal() {
  { gate_lua; cat <<'LUA'
outbox.on("shutdown", function() outbox.log.info("HOOK begin"); wait_file("go"); outbox.log.info("HOOK end") end)
return function() end
LUA
  } > h.lua
  ndjson 3 > in.ndjson
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --log text 2> log &
  pid=$!
  wait_for 'HOOK begin' log || { kill $pid; return 1; }
  kill -TERM $pid
  wait_for 'already shutting down' log || { kill -9 $pid; return 1; }
  touch go
  wait $pid; rc=$?
  assert_eq "$rc" 0 "exit code"
  assert_grep 'already shutting down' log "the signal is noted"
  assert_grep 'HOOK end' log "the shutdown hook finished"
}

t_log_fields_sorted_and_json() {
  printf 'return function(ev) outbox.log.info("FIELDS", { zeta = 1, alpha = "two words", mid = true }) end\n' > h.lua
  ndjson 1 > in.ndjson
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --log text 2> log || fail "exit $?"
  assert_grep 'info FIELDS id=1 alpha="two words" mid=true zeta=1$' log "the event id first, then fields by name"
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --log json 2> jlog || fail "exit $?"
  assert_grep '"level":"info","msg":"FIELDS","id":1,"alpha":"two words","mid":"true","zeta":1\}$' jlog "one JSON object per line"
}
