# Hot reload: edits of a running script, under load, lose nothing and repeat nothing.

# version N: a handler that logs which version ran each event
write_version() {
  printf 'outbox.on("reload", function(s) outbox.log.info("HOOK reload", { generation = s.generation }) end)\n' > "$2.tmp"
  printf 'outbox.on("reload:failed", function(a) outbox.log.info("HOOK reload:failed", { err = a.error }) end)\n' >> "$2.tmp"
  printf 'return function(ev) outbox.sleep(0.002); outbox.log.info("HANDLED", { v = %d }) end\n' "$1" >> "$2.tmp"
  mv "$2.tmp" "$2"
}

# feed N events slowly into a pipe, so the run lasts while the test edits
feed() { awk -v n="$1" 'BEGIN { for (i = 1; i <= n; i++) { printf "{\"topic\":\"t\",\"payload\":\"x\"}\n"; if (i % 200 == 0) system("sleep 0.1") } }'; }

# feed_until FILE: events, 200 every 0.1 s, until FILE exists (the test is done
# editing); then the pipe closes and the count fed is written to FILE.fed
feed_until() {
  awk -v stop="$1" 'BEGIN { for (i = 1; ; i++) { printf "{\"topic\":\"t\",\"payload\":\"x\"}\n"
    if (i % 200 == 0) { fflush(); if (system("test -e " stop) == 0) break; system("sleep 0.1") } }
    print i > (stop ".fed") }'
}

# stopped PID: the process is stopped (SIGSTOP took effect)
stopped() { [ "$(awk '{ print $3 }' "/proc/$1/stat")" = T ]; }

t_reloads_under_load_exactly_once() {
  write_version 1 h.lua
  feed_until stop | "$OUTBOXD" run h.lua --db ndjson:- --concurrency 50 --log text 2> log &
  pid=$!
  wait_for 'HANDLED id=[0-9]+ v=1' log || { touch stop; return 1; }
  write_version 2 h.lua
  wait_for 'HANDLED id=[0-9]+ v=2' log || { touch stop; return 1; }
  printf 'return function(ev) local x = = 1 end\n' > h.lua        # broken in the middle
  wait_for 'reload failed' log || { touch stop; return 1; }
  write_version 3 h.lua
  wait_for 'HANDLED id=[0-9]+ v=3' log || { touch stop; return 1; }
  touch stop
  wait $pid || fail "exit $?"
  assert_grep 'reload failed .*error="h.lua:1:' log "the error names file and line"
  assert_grep 'HOOK reload:failed id=|HOOK reload:failed err=' log "reload:failed fired in the serving generation"
  grep -oE 'HANDLED id=[0-9]+' log | sort | uniq -d > dups
  assert_eq "$(wc -l < dups)" 0 "no event handled twice"
  assert_eq "$(grep -oE 'HANDLED id=[0-9]+' log | sort -u | wc -l)" "$(cat stop.fed)" "every event handled"
  assert_grep 'HOOK reload generation=3' log "stats().generation counts up"
}

t_save_styles_each_reload() {
  write_version 1 h.lua
  feed 1000000 | "$OUTBOXD" run h.lua --db ndjson:- --log text 2> log &
  pid=$!
  wait_for 'HANDLED id=[0-9]+ v=1' log || { kill $pid; return 1; }
  write_version 2 h.lua                                       # write a temp file, rename over
  wait_for 'HANDLED id=[0-9]+ v=2' log || { kill $pid; return 1; }
  cp h.lua h2.lua; sed 's/v = 2/v = 3/' h2.lua > h3.lua
  cat h3.lua > h.lua                                          # truncate and write in place
  wait_for 'HANDLED id=[0-9]+ v=3' log || { kill $pid; return 1; }
  rm h.lua                                                    # delete ...
  wait_for 'script missing: still serving' log || { kill $pid; return 1; }
  sed 's/v = 2/v = 4/' h2.lua > h.lua                         # ... and create
  wait_for 'HANDLED id=[0-9]+ v=4' log || { kill $pid; return 1; }
  kill -TERM $pid; wait $pid || fail "exit after SIGTERM: $?"
}

# Saves that reach the host together reload once (the 50 ms debounce restarts on
# each one). The host is stopped while the first burst is written, so the burst
# arrives as one however loaded the machine is; the second burst is written in real
# time: at most one reload per save, and the last save serves. No event is lost or
# run twice across the swaps, and every retired generation closes.
t_rapid_saves_coalesce_and_generations_close() {
  write_version 1 h.lua
  feed 1000000 | "$OUTBOXD" run h.lua --db ndjson:- --log text 2> log &
  pid=$!
  wait_for 'HANDLED id=[0-9]+ v=1' log || { kill $pid; return 1; }
  kill -STOP $pid
  wait_until 60 "outboxd to stop" stopped $pid || { kill -9 $pid; return 1; }
  for i in $(seq 2 51); do write_version $i h.lua; done
  kill -CONT $pid
  wait_for 'HANDLED id=[0-9]+ v=51' log || { kill $pid; return 1; }
  assert_eq "$(grep -c 'info reloaded' log)" 1 "reloads for 50 saves that arrived together"
  wait_for 'generation closed generation=1' log || { kill $pid; return 1; }
  for i in $(seq 52 101); do write_version $i h.lua; done
  wait_for 'HANDLED id=[0-9]+ v=101' log || { kill $pid; return 1; }
  n=$(grep -c 'info reloaded' log)
  [ "$n" -ge 2 ] && [ "$n" -le 51 ] || fail "50 more saves gave $((n - 1)) reloads"
  kill -HUP $pid                                              # SIGHUP reloads too
  wait_for 'reloaded reason=SIGHUP' log || { kill $pid; return 1; }
  # every retired generation closes while the host runs
  wait_count 'generation closed' log "$((n + 1))" || { kill $pid; return 1; }
  kill -TERM $pid; wait $pid || fail "exit after SIGTERM: $?"
  assert_eq "$(grep -oE 'HANDLED id=[0-9]+' log | sort | uniq -d | wc -l)" 0 "events handled twice"
  assert_eq "$(grep -c 'HANDLED id=' log)" "$(field processed log)" "every run finished and logged"
  assert_grep 'stopped processed=[1-9]' log "a clean stop"
}

t_drain_timeout_returns_old_events() {
  printf 'return function(ev) outbox.log.info("V1 START"); outbox.sleep(60) end\n' > h.lua
  mkfifo in.pipe
  ( ndjson 1; exec sleep 300 ) > in.pipe &
  feeder=$!
  "$OUTBOXD" run h.lua --db ndjson:- --drain-timeout 200 --backoff 10 --log text < in.pipe 2> log &
  pid=$!
  wait_for 'V1 START' log || { kill $pid; return 1; }
  printf 'return function(ev) outbox.log.info("V2 RAN", { attempt = ev.attempt }) end\n' > h.lua
  wait_for 'V2 RAN id=1 attempt=1' log || { kill $pid; return 1; }
  kill -TERM $pid; wait $pid; kill $feeder
  assert_grep 'drain timeout: events of an old generation returned to pending generation=1 events=1' log "old generation's event released"
  assert_no_grep 'event failed' log "released, not failed"
}

t_closed_generation_gives_memory_back() {
  # v1 holds ~40 MB of Lua heap; after the swap to v2 and v1's close, lua_heap falls
  cat > h.lua <<'LUA'
local big = {}
for i = 1, 400 do big[i] = string.rep(string.char(65 + i % 26), 100000) .. i end
return function(ev) outbox.sleep(0.01); outbox.log.info("HEAP", { v = 1, n = #big, heap = outbox.stats().lua_heap }) end
LUA
  feed 1000000 | "$OUTBOXD" run h.lua --db ndjson:- --log text 2> log &
  pid=$!
  wait_for 'HEAP .*v=1' log || { kill $pid; return 1; }
  printf 'return function(ev) outbox.sleep(0.01); outbox.log.info("HEAP", { v = 2, heap = outbox.stats().lua_heap }) end\n' > h.lua.tmp
  mv h.lua.tmp h.lua
  wait_for 'generation closed generation=1' log || { kill $pid; return 1; }
  wait_until 30 "a heap figure after generation 1 closed" \
    has_after 'generation closed generation=1' 'HEAP .*v=2' log || { kill $pid; return 1; }
  kill -TERM $pid; wait $pid
  before=$(grep 'HEAP' log | grep 'v=1' | tail -1 | grep -oE 'heap=[0-9]+' | cut -d= -f2)
  after=$(grep 'HEAP' log | grep 'v=2' | tail -1 | grep -oE 'heap=[0-9]+' | cut -d= -f2)
  [ -n "$before" ] && [ -n "$after" ] || { fail "no heap figures"; return 1; }
  [ "$before" -gt 40000000 ] || fail "v1 heap only $before bytes"
  [ "$after" -lt 10000000 ] || fail "heap after v1 closed still $after bytes (was $before)"
}

# A script that emits (queues hook coroutines) at its top level and then fails to
# load must leave nothing of its discarded Lua state behind in the ready queue.
t_failed_reload_with_top_level_emit_keeps_serving() {
  write_version 1 h.lua
  feed 1000000 | "$OUTBOXD" run h.lua --db ndjson:- --log text 2> log &
  pid=$!
  wait_for 'HANDLED id=[0-9]+ v=1' log || { kill $pid; return 1; }
  printf 'outbox.on("x", function() end)\noutbox.emit("x")\nerror("boom")\n' > h.lua
  wait_for 'reload failed' log || { kill $pid; return 1; }
  wait_until 30 "an event handled after the failed reload" \
    has_after 'reload failed' 'HANDLED id=[0-9]+ v=1' log || { kill $pid; return 1; }
  write_version 2 h.lua
  wait_for 'HANDLED id=[0-9]+ v=2' log || { kill $pid; return 1; }
  kill -TERM $pid; wait $pid || fail "exit after SIGTERM: $?"
}
