# Timers (outbox.every, outbox.after) and the background work of a generation: the
# period kept under load, no overlap, reloads that swap a timer's code and close the
# old generation, a shutdown that names what it waits for and abandons.

# feed_until FILE: events, 200 every 0.1 s, until FILE exists; then the pipe closes
feed_until() {
  awk -v stop="$1" 'BEGIN { for (i = 1; ; i++) { printf "{\"topic\":\"t\",\"payload\":\"x\"}\n"
    if (i % 200 == 0) { fflush(); if (system("test -e " stop) == 0) break; system("sleep 0.1") } } }'
}

# num FIELD LINE: the number after FIELD= in LINE
num() { grep -oE "(^| )$1=[0-9.e+-]+" <<< "$2" | tail -1 | sed -E "s/^ ?$1=//"; }

# A 0.2 s timer whose runs wait 0.05 s each, beside a steady stream of events: the
# runs stay on the timer's grid (a sleep loop would drift by the run time each
# period). The mean period over every tick, skipped ones included, is 0.2 s.
t_every_keeps_its_period_under_load() {
  cat > h.lua <<'LUA'
outbox.every(0.2, function(h)
  outbox.log.info("TICK", { at = string.format("%.4f", outbox.now()), runs = h.runs, skipped = h.skipped })
  outbox.sleep(0.05)
end)
return function(ev)
  local x = 0
  for i = 1, 20000 do x = x + i % 7 end
  outbox.sleep(0.001)
end
LUA
  feed_until stop | "$OUTBOXD" run h.lua --db ndjson:- --concurrency 50 --log text 2> log &
  pid=$!
  wait_count 'TICK at=' log 26 60 || { touch stop; return 1; }
  touch stop
  wait $pid || fail "exit $?"
  assert_grep 'info stopped processed=[1-9]' log "events flowed beside the timer"
  first=$(grep 'TICK at=' log | sed -n 2p)   # the second run: the first may meet the start
  last=$(grep 'TICK at=' log | sed -n 26p)
  t1=$(num at "$first"); t2=$(num at "$last")
  ticks=$(( $(num runs "$last") + $(num skipped "$last") - $(num runs "$first") - $(num skipped "$first") ))
  skipped=$(( $(num skipped "$last") - $(num skipped "$first") ))
  echo "    24 runs over $ticks ticks ($skipped skipped) in $(awk -v a="$t1" -v b="$t2" 'BEGIN { print b - a }') s"
  [ "$skipped" -le 6 ] || fail "$skipped of $ticks ticks skipped"
  awk -v a="$t1" -v b="$t2" -v n="$ticks" 'BEGIN { p = (b - a) / n; exit !(p > 0.19 && p < 0.21) }' ||
    fail "mean period $(awk -v a="$t1" -v b="$t2" -v n="$ticks" 'BEGIN { print (b - a) / n }') s, not 0.2 s"
}

# every never overlaps itself (a tick during a run is skipped and counted), an error
# in a run is logged and the timer goes on, after runs once, cancel stops a timer
# (from outside or from its own run), and outbox.stats() counts timers and runs.
t_timer_runs_skip_fail_and_cancel() {
  cat > h.lua <<'LUA'
local active, n = 0, 0
outbox.every(0.05, function(h)
  active = active + 1
  n = n + 1
  if active > 1 then outbox.log.error("OVERLAP") end
  local s = outbox.stats()
  outbox.log.info("RUN", { n = n, skipped = h.skipped, timers = s.timers, running = s.timers_running })
  if n % 2 == 0 then active = active - 1; error("even run fails") end
  outbox.sleep(0.16)
  active = active - 1
end)
outbox.after(0.05, function() outbox.log.info("AFTER ran") end)
local c = outbox.after(0.05, function() outbox.log.info("CANCELLED ran") end)
outbox.log.info("CANCEL", { first = c:cancel(), second = c:cancel(), scheduled = c.scheduled })
outbox.every(0.02, function(h)
  outbox.log.info("SELF", { runs = h.runs })
  if h.runs == 3 then h:cancel() end
end)
return function(ev) end
LUA
  mkfifo in.pipe
  ( exec sleep 300 ) > in.pipe &
  feeder=$!
  "$OUTBOXD" run h.lua --db ndjson:- --log text < in.pipe 2> log &
  pid=$!
  wait_for 'RUN n=9 ' log || { kill $pid $feeder; return 1; }
  kill -TERM $pid; wait $pid; rc=$?
  kill $feeder 2> /dev/null
  assert_eq "$rc" 0 "exit code"
  assert_no_grep 'OVERLAP' log "no run beside another"
  [ "$(num skipped "$(grep 'RUN n=9 ' log)")" -ge 4 ] || fail "ticks during the 0.16 s runs were not skipped"
  assert_grep 'RUN n=[0-9]+ running=1 skipped=[0-9]+ timers=[1-3]$' log "stats() counts the timers and the run"
  [ "$(grep -c 'timer failed timer="every 0.05 s h.lua:2" error="h.lua:8: even run fails' log)" -ge 4 ] ||
    fail "failing runs are logged naming the timer"
  assert_eq "$(grep -c 'AFTER ran' log)" 1 "after runs once"
  assert_no_grep 'CANCELLED ran' log "a cancelled timer never runs"
  assert_grep 'CANCEL first=true scheduled=false second=false' log "cancel says whether it stopped something"
  assert_eq "$(grep -c 'SELF runs=' log)" 3 "a timer that cancels itself in its third run"
}

# v N: a script whose load hook and timer say which version they are; its handler
# sleeps a little, so events are in flight when the script changes.
write_timer_version() {
  cat > h.lua.tmp <<LUA
outbox.on("load", function(s)
  outbox.log.info("LOADED", { v = $1, at = string.format("%.4f", outbox.now()) })
end)
outbox.every(1, function()
  outbox.log.info("TICK", { v = $1, at = string.format("%.4f", outbox.now()), heap = outbox.stats().lua_heap })
end)
return function(ev) outbox.sleep(0.002) end
LUA
  mv h.lua.tmp h.lua
}

# Under load, a reload stops the old timer at once, the new script's timer runs
# within one period of the new generation serving, and the old generation closes
# (/metrics: one live generation, one timer).
t_reload_swaps_timer_code_and_closes_old_generation() {
  write_timer_version 1
  feed_until stop | "$OUTBOXD" run h.lua --db ndjson:- --concurrency 50 --metrics 0 --log text 2> log &
  pid=$!
  wait_count 'TICK .* v=1$' log 2 || { touch stop; return 1; }
  write_timer_version 2
  wait_for 'TICK .* v=2$' log || { touch stop; return 1; }
  wait_for 'generation closed generation=1' log || { touch stop; return 1; }
  port=$(field port log)
  wait_until 30 "/metrics to show one live generation and one timer" \
    eval "curl -s --max-time 20 http://127.0.0.1:$port/metrics > m.txt && grep -q '^outboxd_live_generations 1$' m.txt && grep -q '^outboxd_timers 1$' m.txt" ||
    { touch stop; return 1; }
  touch stop
  wait $pid || fail "exit $?"
  assert_grep 'old generation: timers stopped generation=1 timers=1 stopped="every 1 s h.lua:4"' log "the old timer stopped, named"
  has_after 'reloaded .*generation=2' 'TICK .* v=1$' log && fail "the old timer ran after the reload"
  loaded=$(num at "$(grep -E 'LOADED .*v=2$' log)")
  tick=$(num at "$(grep -E 'TICK .* v=2$' log | head -1)")
  awk -v a="$loaded" -v b="$tick" 'BEGIN { exit !(b - a < 1.5) }' ||
    fail "the new timer first ran $(awk -v a="$loaded" -v b="$tick" 'BEGIN { print b - a }') s after the new generation served (period 1 s)"
  assert_grep '^# TYPE outboxd_timer_skips_total counter' m.txt "timer skips are a counter"
  assert_grep '^outboxd_hooks_running 0$' m.txt "hooks running in /metrics"
}

# SIGTERM while a start hook and a timer run sleep: timers stop, the drain logs what
# it waits for every second, and at the drain timeout the host abandons them by
# name and exits 0, within the drain timeout (plus the machine's slowness).
t_sigterm_names_timer_and_hook_mid_sleep() {
  cat > h.lua <<'LUA'
outbox.on("start", function() outbox.log.info("HOOK sleeping"); outbox.sleep(3600) end)
outbox.every(0.1, function() outbox.log.info("TIMER sleeping"); outbox.sleep(3600) end)
return function(ev) end
LUA
  mkfifo in.pipe
  ( exec sleep 300 ) > in.pipe &
  feeder=$!
  "$OUTBOXD" run h.lua --db ndjson:- --drain-timeout 3000 --log text < in.pipe 2> log &
  pid=$!
  wait_for 'TIMER sleeping' log || { kill $pid $feeder; return 1; }
  wait_for 'HOOK sleeping' log || { kill $pid $feeder; return 1; }
  start=$(date +%s%N)
  kill -TERM $pid
  wait $pid; rc=$?
  took=$(( ($(date +%s%N) - start) / 1000000 ))
  kill $feeder 2> /dev/null
  echo "    exited $took ms after SIGTERM (drain timeout 3000 ms)"
  assert_eq "$rc" 0 "exit code"
  [ "$took" -lt 8000 ] || fail "exit took $took ms"
  [ "$took" -ge 2900 ] || fail "exit after $took ms: it did not wait for the hook and the timer run"
  assert_eq "$(grep -c 'TIMER sleeping' log)" 1 "one timer run (the others skipped, then the timer stopped)"
  assert_grep 'timers stopped timers=1 stopped="every 0.1 s h.lua:2"' log "the timer stops at the signal"
  assert_grep 'draining events=0 hooks=1 timers=1 waiting_for=".*(start,every 0.1 s h.lua:2|every 0.1 s h.lua:2,start)"' log \
    "the drain says what it waits for"
  assert_grep 'drain timeout: hooks and timer runs abandoned hooks=1 timers=1 abandoned=".*(start,every 0.1 s h.lua:2|every 0.1 s h.lua:2,start)"' log \
    "the abandoned ones are named"
}

# A retired generation whose event still runs keeps its hooks going but starts no
# timer; once the event settles, its load hook (mid-sleep) and its timer run (mid
# HTTP request, cancelled through its cleanup) are cancelled, named, and its state
# closed: the 40 MB it held are given back.
t_old_generation_background_cancelled_and_heap_returns() {
  RECEIVER=${RECEIVER:-$HERE/../../build/receiver}
  "$RECEIVER" --port-file port --delay 600000 > /dev/null 2> recv.err &
  recv=$!
  wait_for '^[0-9]+$' port || { kill $recv; return 1; }
  { gate_lua; cat <<LUA
local big = {}
for i = 1, 400 do big[i] = string.rep(string.char(65 + i % 26), 100000) .. i end
outbox.on("load", function()
  while true do outbox.log.info("LOOP v=1"); wait_file("never") end
end)
outbox.every(0.05, function()
  outbox.log.info("REQUEST v=1")
  outbox.http.get("http://127.0.0.1:$(cat port)/hang", { timeout = 600 })
end)
return function(ev) outbox.log.info("HELD", { n = #big }); wait_file("go") end
LUA
  } > h.lua
  mkfifo in.pipe
  ( ndjson 1; exec sleep 300 ) > in.pipe &
  feeder=$!
  "$OUTBOXD" run h.lua --db ndjson:- --log text < in.pipe 2> log &
  pid=$!
  wait_for 'HELD id=1' log || { kill $pid $feeder $recv; return 1; }
  wait_for 'REQUEST v=1' log || { kill $pid $feeder $recv; return 1; }
  printf 'outbox.every(0.05, function() outbox.log.info("HEAP", { heap = outbox.stats().lua_heap, live = outbox.stats().live_generations }) end)\nreturn function() end\n' > h.lua.tmp
  mv h.lua.tmp h.lua
  wait_for 'HEAP heap=' log || { kill $pid $feeder $recv; return 1; }
  assert_grep 'old generation: timers stopped generation=1 timers=1' log "the old timer stops at the reload"
  assert_no_grep 'generation closed generation=1' log "the old generation stays while its event runs"
  touch go
  wait_for 'generation closed generation=1' log || { kill $pid $feeder $recv; return 1; }
  wait_until 30 "a heap figure after generation 1 closed" \
    has_after 'generation closed generation=1' 'HEAP heap=' log || { kill $pid $feeder $recv; return 1; }
  kill -TERM $pid; wait $pid; rc=$?
  kill $feeder $recv 2> /dev/null
  assert_eq "$rc" 0 "exit code"
  assert_eq "$(grep -c 'REQUEST v=1' log)" 1 "one timer run (the others skipped while its request hung)"
  assert_grep 'old generation: hooks and timer runs cancelled generation=1 reason="its events have settled" hooks=1 timers=1 cancelled="(load,every 0.05 s h.lua:8|every 0.05 s h.lua:8,load)"' log \
    "what was cancelled is named"
  has_after 'generation closed generation=1' 'LOOP v=1|REQUEST v=1' log && fail "old background work went on after the close"
  after=$(grep 'HEAP heap=' log | tail -1)
  [ "$(num heap "$after")" -lt 10000000 ] || fail "heap after generation 1 closed still $(num heap "$after") bytes"
  assert_eq "$(num live "$after")" 1 "live generations"
}

# 20 reloads under load, each script starting its timers in its load hook: no timer
# run starts in a generation after it retired, an `after` runs at most once, and
# every old generation closes. (A save the watcher sees twice is one more reload:
# the checks go by generation, not by version.)
t_no_timer_runs_after_its_generation_retired() {
  for v in $(seq 1 21); do
    cat > "v$v.lua" <<LUA
local G
outbox.on("load", function(s)
  G = s.generation
  outbox.every(0.02, function() outbox.log.info("TICK", { v = $v, g = G }) end)
  outbox.after(0.01, function() outbox.log.info("AFTER", { g = G }) end)
end)
return function(ev) outbox.sleep(0.002) end
LUA
  done
  cp v1.lua h.lua
  feed_until stop | "$OUTBOXD" run h.lua --db ndjson:- --concurrency 50 --log text 2> log &
  pid=$!
  wait_for 'TICK g=[0-9]+ v=1$' log || { touch stop; return 1; }
  for v in $(seq 2 21); do
    cp "v$v.lua" h.lua.tmp && mv h.lua.tmp h.lua
    wait_for "TICK g=[0-9]+ v=$v\$" log 60 || { touch stop; return 1; }
  done
  reloads=$(grep -c ' reloaded ' log)
  wait_count 'generation closed' log "$reloads" 60 || { touch stop; return 1; }
  touch stop
  wait $pid || fail "exit $?"
  [ "$reloads" -ge 20 ] || fail "only $reloads reloads"
  awk '/ reloaded .* generation=/ { match($0, /generation=[0-9]+/); retired[substr($0, RSTART + 11, RLENGTH - 11) - 1] = 1 }
       /TICK g=[0-9]+ v=/ { match($0, /g=[0-9]+/); g = substr($0, RSTART + 2, RLENGTH - 2); if (g in retired) { print; bad++ } }
       END { exit bad > 0 }' log > late || fail "timer runs after their generation retired: $(head -3 late)"
  stops=$(grep -cE 'old generation: timers stopped generation=[0-9]+ timers=1 ' log)
  [ "$stops" -ge 20 ] || fail "$stops of $reloads reloads stopped the old timer"
  assert_eq "$(grep -oE 'AFTER g=[0-9]+' log | sort | uniq -d | wc -l)" 0 "each after ran at most once"
  assert_grep 'stopped processed=[1-9]' log "a clean stop"
}

# A retired generation whose event never settles: at --drain-timeout its event goes
# back to pending and its load hook (mid-sleep) is cancelled, named, and the
# generation closes; the new one runs the event.
t_retired_generation_background_cancelled_at_drain_timeout() {
  { gate_lua; cat <<'LUA'
outbox.on("load", function() while true do outbox.log.info("LOOP v=1"); wait_file("never") end end)
return function(ev) outbox.log.info("HELD v=1"); wait_file("never") end
LUA
  } > h.lua
  mkfifo in.pipe
  ( ndjson 1; exec sleep 300 ) > in.pipe &
  feeder=$!
  "$OUTBOXD" run h.lua --db ndjson:- --drain-timeout 500 --backoff 10 --log text < in.pipe 2> log &
  pid=$!
  wait_for 'HELD v=1' log || { kill $pid $feeder; return 1; }
  wait_for 'LOOP v=1' log || { kill $pid $feeder; return 1; }
  printf 'return function(ev) outbox.log.info("V2 RAN", { attempt = ev.attempt }) end\n' > h.lua.tmp
  mv h.lua.tmp h.lua
  wait_for 'V2 RAN id=1 attempt=1' log || { kill $pid $feeder; return 1; }
  wait_for 'generation closed generation=1' log || { kill $pid $feeder; return 1; }
  kill -TERM $pid; wait $pid; rc=$?
  kill $feeder 2> /dev/null
  assert_eq "$rc" 0 "exit code"
  assert_grep 'old generation: hooks and timer runs cancelled generation=1 reason="drain timeout" hooks=1 timers=0 cancelled=load' log \
    "the hook is cancelled at the drain timeout, named"
  assert_grep 'drain timeout: events of an old generation returned to pending generation=1 events=1' log "its event returned"
  assert_eq "$(grep -c 'old generation: hooks and timer runs cancelled' log)" 1 "cancelled once"
}
