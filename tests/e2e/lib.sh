# Helpers for end-to-end tests: each test is a bash function `t_NAME` in a
# tests/e2e/test_*.sh file; run.sh calls them one by one in a fresh temp folder.
# Tests wait for the state they assert (the wait_* helpers, generous deadlines: they
# cost nothing when the state comes early) and never sleep a fixed time.
OUTBOXD=${OUTBOXD:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/outboxd}

# Every failed assertion is recorded, so a test fails even when a later line passes.
fail() { echo "    FAIL: $*" >&2; [ -n "${FAILFLAG:-}" ] && echo "$*" >> "$FAILFLAG"; return 1; }

# assert_eq ACTUAL EXPECTED WHAT
assert_eq() { [ "$1" = "$2" ] || fail "$3: got '$1', expected '$2'"; }

# assert_grep PATTERN FILE WHAT
assert_grep() { grep -qE -- "$1" "$2" || { fail "$3: /$1/ not in $2"; sed 's/^/      | /' "$2" | tail -20 >&2; return 1; }; }
assert_no_grep() { ! grep -qE -- "$1" "$2" || fail "$3: /$1/ found in $2"; }

# ndjson N [TOPIC] [PAYLOAD]: N event lines
ndjson() {
  local n=$1 topic=${2:-t} payload=${3:-'"x"'}
  awk -v n="$n" -v t="$topic" -v p="$payload" 'BEGIN { for (i = 1; i <= n; i++) printf "{\"topic\":\"%s\",\"payload\":%s}\n", t, p }'
}

# field NAME FILE: value of the last text-log field NAME=VALUE in FILE
field() { grep -oE "(^| )$1=[^ ]+" "$2" | tail -1 | sed -E "s/^ ?$1=//"; }

# wait_until SECONDS WHAT COMMAND...: runs COMMAND every 50 ms until it succeeds;
# fails naming WHAT after SECONDS of wall-clock time.
wait_until() {
  local secs=$1 end=$((SECONDS + $1 + 1)) what=$2
  shift 2
  until "$@"; do
    [ $SECONDS -ge $end ] && { fail "timed out after $secs s waiting for $what"; return 1; }
    sleep 0.05
  done
}

# has_lines PATTERN FILE N: FILE has at least N lines matching PATTERN
has_lines() { [ "$(grep -cE -- "$1" "$2" 2>/dev/null)" -ge "$3" ]; }

# has_after FIRST THEN FILE: a line matching THEN comes after a line matching FIRST
has_after() { awk -v a="$1" -v b="$2" 'f && $0 ~ b { ok = 1; exit } $0 ~ a { f = 1 } END { exit !ok }' "$3" 2>/dev/null; }

# wait_count PATTERN FILE N [SECONDS]: until FILE has at least N lines matching (default 30 s)
wait_count() {
  wait_until "${4:-90}" "$3 lines /$1/ in $2" has_lines "$1" "$2" "$3" ||
    { echo "      (has $(grep -cE -- "$1" "$2" 2>/dev/null))" >&2; return 1; }
}

# wait_for PATTERN FILE [SECONDS]: until a line of FILE matches (default 90 s: a busy
# machine may be slow; a test that passes waits no longer for it)
wait_for() { wait_until "${3:-90}" "/$1/ in $2" has_lines "$1" "$2" 1; }

# gate_lua: Lua defining exists(path) and wait_file(path); a handler or hook that
# calls wait_file waits (outbox.sleep, the host keeps serving) until the test
# creates the file, so the test, not a timer, decides when it moves on.
gate_lua() {
  cat <<'LUA'
local function exists(p) local f = io.open(p); if f then f:close() end; return f ~= nil end
local function wait_file(p) while not exists(p) do outbox.sleep(0.02) end end
LUA
}

# free_port: a 127.0.0.1 port nothing listens on now (a server that loses a race
# for it fails to start, and its starter tries another).
free_port() {
  local p
  for _ in $(seq 100); do
    p=$((20000 + RANDOM % 40000))
    (exec 3<> "/dev/tcp/127.0.0.1/$p") 2> /dev/null || { echo "$p"; return 0; }
  done
  return 1
}

# crash_loop MAX_STARTS LEFT_CMD HOST_ARGS...: runs `outboxd run HOST_ARGS` again each
# time a handler kills it (exit 3), until LEFT_CMD prints 0 (nothing left to do); then
# stops it with SIGTERM. Writes the number of crashes to the file `crashes`. Fails on
# any other exit code, or when MAX_STARTS starts were not enough (60 s each at most).
crash_loop() {
  local max=$1 left=$2 starts=0 crashes=0 pid rc i
  shift 2
  while [ $starts -lt "$max" ]; do
    starts=$((starts + 1))
    # os.exit leaves the host mid-run like a crash: what it holds is never freed, so
    # a sanitizer build must not count that as a leak (and change the exit code)
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" "$OUTBOXD" run "$@" --log text 2>> log &
    pid=$!
    i=0
    while kill -0 $pid 2> /dev/null && [ "$($left)" != 0 ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
    if kill -0 $pid 2> /dev/null; then
      kill -TERM $pid; wait $pid; rc=$?
      echo $crashes > crashes
      [ $i -lt 600 ] || { fail "start $starts: still busy after 60 s"; return 1; }
      [ $rc = 0 ] || { fail "exit code after SIGTERM: $rc"; return 1; }
      return 0
    fi
    wait $pid; rc=$?
    [ $rc = 3 ] || { echo $crashes > crashes; fail "start $starts exited $rc, not 3"; return 1; }
    crashes=$((crashes + 1))
  done
  echo $crashes > crashes
  fail "still work left after $max starts"
}

# A handler that kills its host (os.exit(3)) on the payload "boom" and appends every
# other event's id to the file `ok`.
crash_handler() {
  cat > h.lua <<'LUA'
return function(ev)
  if ev.payload == "boom" then os.exit(3) end
  local f = assert(io.open("ok", "a"))
  f:write(ev.id, "\n"); f:close()
end
LUA
}

# follow_handler: h.lua for outbox.enqueue tests. Topic "job": enqueues one
# follow-up ("follow", payload = the job's id, key = its key) and appends the id to
# the file `ran` ($RAN; while the file $GATE exists the run waits first), then (payload "flaky") fails its first run or (payload "poison") is
# rejected: those runs enqueue nothing. Topic "follow" appends to `followed`. The
# `start` hook and the top level each enqueue one event at once.
follow_handler() {
  cat > h.lua <<'LUA'
local function append(file, line)
  local f = assert(io.open(file, "a")); f:write(line, "\n"); f:close()
end
outbox.handle("job", function(ev)
  outbox.enqueue{ topic = "follow", payload = tostring(ev.id), key = ev.key,
                  headers = { from = ev.id } }
  if os.getenv("SLOW") then outbox.sleep(tonumber(os.getenv("SLOW"))) end
  local held -- a run held at the gate says so once, in GATE.held
  while os.getenv("GATE") and io.open(os.getenv("GATE")) do
    if not held then held = true; append(os.getenv("GATE") .. ".held", ev.id) end
    outbox.sleep(0.01)
  end
  append(os.getenv("RAN") or "ran", ev.id)
  if ev.payload == "flaky" and ev.attempt == 1 then error("flaky once") end
  if ev.payload == "poison" then return outbox.reject("poison") end
end)
outbox.handle("follow", function(ev) append("followed", ev.payload) end)
outbox.handle("hooked", function() end)
outbox.handle("top", function() end)
outbox.on("start", function() outbox.enqueue{ topic = "hooked", payload = { from = "start" } } end)
if os.getenv("TOP") then -- the file top_at: epoch ms before and after the call
  local before = outbox.now() * 1000
  outbox.enqueue{ topic = "top", payload = "loaded", delay = 0.2 }
  append("top_at", string.format("%d %d", before, outbox.now() * 1000))
end
LUA
}

# due_soon_on_time DB READY: with h.lua logging HANDLED p= ms= and DB holding rows due
# in ten minutes, a waiting host (ready once its log has READY) starts an event
# enqueued --at one second ahead no earlier than its time and within 10 s, and runs
# nothing else.
due_soon_on_time() {
  local db=$1 ready=$2 pid due ran
  "$OUTBOXD" run h.lua --db "$db" --log text 2> log2 &
  pid=$!
  wait_for "$ready" log2 || { kill $pid; return 1; }
  due=$(( $(date +%s%3N) + 1000 ))
  "$OUTBOXD" enqueue --db "$db" --topic t --payload soon --at "$due" 2> /dev/null || fail "enqueue --at"
  wait_for 'HANDLED .*p=soon' log2 60 || { kill $pid; return 1; }
  kill $pid; wait $pid
  ran=$(grep 'p=soon' log2 | grep -oE 'ms=[0-9]+' | cut -d= -f2)
  [ "$ran" -ge "$due" ] || fail "ran at $ran, before it was due ($due)"
  [ $((ran - due)) -le 10000 ] || fail "ran $((ran - due)) ms after it was due"
  assert_no_grep 'p=later' log2 "nothing due in ten minutes ran"
}
