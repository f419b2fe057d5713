# outbox.enqueue without a database: an ndjson: run keeps new events in memory and
# runs them; `outboxd test` prints them; bad calls fail with one line naming the
# field. (SQLite and PostgreSQL: test_sqlite.sh and test_pg.sh.)

# With ndjson: a done run's follow-up joins the run (after its event), a failed run's
# does not; events from a hook and the top level join too; the run ends when all settled.
t_enqueue_ndjson_joins_the_run() {
  follow_handler
  printf '%s\n' '{"topic":"job","payload":"ok","key":"k"}' '{"topic":"job","payload":"flaky"}' \
    '{"topic":"job","payload":"poison"}' > in.ndjson
  TOP=1 timeout 60 "$OUTBOXD" run h.lua --db ndjson:in.ndjson --backoff 10:10 --log text 2> log
  assert_eq "$?" 0 "exit code"
  assert_eq "$(sort -n ran | tr '\n' ' ')" "1 2 2 3 " "runs (the flaky job twice)"
  assert_eq "$(sort -n followed | tr '\n' ' ')" "1 2 " "follow-ups of the done jobs ran"
  TOP=1 "$OUTBOXD" run h.lua --db ndjson:in.ndjson --backoff 10:10 --log-level debug --log text 2> log2
  assert_grep 'event done id=[0-9]+ topic=hooked' log2 "the hook's event ran"
  assert_grep 'event done id=[0-9]+ topic=top' log2 "the top level's event ran"
  assert_grep 'processed=8 done=6 failed=1 dead=1' log "3 jobs (4 runs), 2 follow-ups, the hook's and the top level's"
}

# With ndjson: follow-ups enqueued while later lines are still unread never take a
# line's id (its line number): every event of the run has an id of its own.
t_enqueue_ndjson_ids_stay_unique() {
  cat > h.lua <<'LUA'
local f = assert(io.open("ids", "a"))
outbox.handle("a", function(ev)
  f:write(ev.id, "\n"); f:flush()
  outbox.enqueue{ topic = "b", payload = "x" }
end)
outbox.handle("b", function(ev) f:write(ev.id, "\n"); f:flush() end)
LUA
  for i in $(seq 200); do echo '{"topic":"a","payload":"x"}'; done > in.ndjson
  timeout 60 "$OUTBOXD" run h.lua --db ndjson:in.ndjson --batch 10 --log text 2> log
  assert_eq "$?" 0 "exit code"
  assert_eq "$(wc -l < ids)" 400 "200 lines and 200 follow-ups ran"
  assert_eq "$(sort ids | uniq -d | head -3 | tr '\n' ' ')" "" "no id twice"
  assert_eq "$(sort -n ids | tail -1)" 1000000000200 "follow-ups numbered after 10^12"
}

# outboxd test prints each enqueued event after the done line of its run (none for
# a failed run), and those of hooks and the top level; nothing runs them.
t_enqueue_outboxd_test_prints_enqueue_lines() {
  follow_handler
  printf '%s\n' '{"topic":"job","payload":"ok","key":"k"}' '{"topic":"job","payload":"flaky"}' > in.ndjson
  TOP=1 "$OUTBOXD" test h.lua in.ndjson > out 2> err
  assert_eq "$?" 0 "exit code"
  local line # where follow_handler raises "flaky once"
  line=$(grep -n 'error("flaky once")' h.lua | cut -d: -f1)
  assert_eq "$(cat out)" "enqueue top delay=0.2s loaded
enqueue hooked {\"from\":\"start\"}
1 job done
1 job enqueue follow key=k 1
2 job retry 1: h.lua:$line: flaky once
2 job done
2 job enqueue follow 2" "lines"
  assert_grep '^outboxd test: 2 done, 0 dead, 3 attempts, 4 enqueued \(not run\)$' err "summary"
  assert_no_grep 'followed' <(ls) "follow-ups not run"
  "$OUTBOXD" test h.lua in.ndjson --json > out.json 2> /dev/null
  assert_grep '^\{"id":1,"topic":"job","outcome":"enqueue","enqueue":\{"topic":"follow","key":"k","payload":"1","delay":0\}\}$' out.json "--json"
}

# Bad calls raise one line naming what is wrong, at the caller's line: the run fails
# (and writes nothing); at the top level the script does not load.
t_enqueue_bad_calls_say_what_is_wrong() {
  cat > h.lua <<'LUA'
local calls = {
  function() outbox.enqueue("job") end,
  function() outbox.enqueue{ payload = "x" } end,
  function() outbox.enqueue{ topic = "", payload = "x" } end,
  function() outbox.enqueue{ topic = "t" } end,
  function() outbox.enqueue{ topic = "t", payload = 42 } end,
  function() outbox.enqueue{ topic = "t", payload = "a\0b" } end,
  function() outbox.enqueue{ topic = "t", payload = "\255" } end,
  function() outbox.enqueue{ topic = "t\0", payload = "x" } end,
  function() outbox.enqueue{ topic = "t", payload = "x", delay = -1 } end,
  function() outbox.enqueue{ topic = "t", payload = "x", delay = 0/0 } end,
  function() outbox.enqueue{ topic = "t", payload = "x", delay = "soon" } end,
  function() outbox.enqueue{ topic = "t", payload = "x", headers = "h" } end,
  function() outbox.enqueue{ topic = "t", payload = "x", headers = { a = {} } } end,
  function() outbox.enqueue{ topic = "t", payload = "x", key = {} } end,
  function() outbox.enqueue{ topic = "t", payload = "x", delai = 1 } end,
  function() outbox.enqueue{ topic = "t", payload = { f = print } } end,
}
return function(ev) calls[ev.id]() end
LUA
  for i in $(seq 16); do echo '{"topic":"t","payload":"x"}'; done > in.ndjson
  "$OUTBOXD" test h.lua in.ndjson --max-attempts 1 --breaker-window 100 --breaker-min-calls 100 > out 2> /dev/null
  assert_eq "$?" 1 "exit code (dead events)"
  local expect=(
    'expects a table \{topic=, payload=, key=, headers=, delay=\}, got string'
    'topic is missing'
    'topic must be a non-empty string, got \\"\\"'
    'payload is missing \(a string, or a table encoded as JSON\)'
    'payload must be a string or a table, got number'
    'payload contains a NUL byte'
    'payload is not valid UTF-8'
    'topic contains a NUL byte'
    'delay must be a finite number of seconds >= 0, got -1'
    'delay must be a finite number of seconds >= 0, got (nan|-nan)'
    'delay must be a finite number of seconds >= 0, got soon'
    'headers must be a table, got string'
    "header 'a' must be a string, number or boolean, got table"
    'key must be a string or a number, got table'
    "unknown field 'delai' \(topic, payload, key, headers, delay\)"
    'payload cannot be encoded as JSON: '
  )
  local i
  for i in $(seq 16); do
    assert_grep "^$i t dead: h.lua:$((i + 1)): outbox.enqueue: ${expect[$((i - 1))]}" out "call $i" || true
  done
  assert_no_grep 'enqueue t' out "nothing enqueued"
  printf 'outbox.enqueue{ topic = "t", payload = "x", delay = -1 }\nreturn function() end\n' > top.lua
  "$OUTBOXD" check top.lua 2> err
  assert_eq "$?" 2 "check exit code"
  assert_grep '^outboxd: top.lua:1: outbox.enqueue: delay must be a finite number of seconds >= 0, got -1$' err "check names the line"
}
