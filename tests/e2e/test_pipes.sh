# The host against its pipes: a log reader that goes away or stalls must neither
# kill nor freeze it, and an input line too long to hold must not stall intake.

# rows N: a fresh x.db with N pending events
rows() {
  "$OUTBOXD" init --db x.db 2> /dev/null || { fail "init"; return 1; }
  add_rows "$1"
}

# add_rows N: N more pending events in x.db.
add_rows() {
  sqlite3 -cmd '.timeout 10000' x.db "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1)
                INSERT INTO outbox (topic, payload) SELECT 't', i FROM n"
}

# left x.db: events pending or processing
left() { sqlite3 -cmd '.timeout 10000' x.db "SELECT count(*) FROM outbox WHERE status IN ('pending', 'processing')"; }
none_left() { [ "$(left)" = 0 ]; }

# A handler that logs a 200-byte line per event.
chatty() { printf 'return function(ev) outbox.log.info("HANDLED", { pad = string.rep("x", 200) }) end\n' > h.lua; }

# `2>&1 | head -1`: the reader is gone after one line. The host is not killed by
# SIGPIPE: it dispatches every event and exits 0; nothing is left processing.
t_log_reader_gone_host_goes_on() {
  chatty
  rows 3000 || return 1
  "$OUTBOXD" run h.lua --db x.db --once --log text 2>&1 | head -1 > first
  local rc=${PIPESTATUS[0]}
  assert_eq "$rc" 0 "exit status with the log reader gone"
  assert_grep 'started' first "the one line read"
  assert_eq "$(left)" 0 "events pending or processing"
  assert_eq "$(sqlite3 x.db "SELECT count(*) FROM outbox")" 0 "events done and deleted"
  # the same with JSON logs and the metrics server on
  rows 3000 || return 1
  "$OUTBOXD" run h.lua --db x.db --once --metrics 0 --log json 2>&1 | head -c 10 > /dev/null
  assert_eq "${PIPESTATUS[0]}" 0 "exit status (json, metrics)"
  assert_eq "$(left)" 0 "events pending or processing (json, metrics)"
}

# A reader that stops reading (stopped `cat` on a fifo): /health answers and every
# event is dispatched meanwhile; lines past the queue are dropped and counted, and
# once the reader reads again the count is logged: lines written + dropped = logged.
# Stopped again, the host still ends within its bounded flush on SIGTERM. The events
# are added once the reader is stopped, so however fast the host runs, their lines
# meet a stalled reader.
t_log_reader_stalled_host_keeps_serving() {
  chatty
  "$OUTBOXD" init --db x.db 2> /dev/null || { fail "init"; return 1; }
  mkfifo err.pipe
  cat err.pipe > out &
  local reader=$!
  "$OUTBOXD" run h.lua --db x.db --metrics 0 --poll 50 --log text 2> err.pipe &
  local pid=$!
  wait_for 'metrics listening' out || { kill $pid $reader; return 1; }
  local port; port=$(field port out)
  kill -STOP $reader
  add_rows 20000
  wait_until 120 "every event dispatched while the log is not read" none_left ||
    { kill -CONT $reader; kill $pid; return 1; }
  assert_eq "$(curl -s --max-time 10 "http://127.0.0.1:$port/health")" ok "/health while the log is not read"
  kill -CONT $reader
  wait_for 'log lines dropped: stderr was not read count=[1-9]' out || { kill $pid; return 1; }
  local dropped; dropped=$(grep -oE 'not read count=[0-9]+' out | cut -d= -f2)
  assert_eq "$(( $(grep -c 'info HANDLED ' out) + dropped ))" 20000 "lines written + dropped"
  # stalled again with a full queue: SIGTERM still ends the run, within its bounded flush
  kill -STOP $reader
  add_rows 20000
  wait_until 120 "the second batch dispatched" none_left || { kill -CONT $reader; kill $pid; return 1; }
  local t0=$SECONDS
  kill -TERM $pid; wait $pid; local rc=$?
  assert_eq "$rc" 0 "exit status after SIGTERM with the log not read"
  [ $((SECONDS - t0)) -le 15 ] || fail "the run took $((SECONDS - t0)) s to end with a stalled log"
  kill -CONT $reader; wait $reader
}

# long_line BYTES: one NDJSON event line whose payload string has BYTES characters
long_line() { printf '{"topic":"big","payload":"'; head -c "$1" /dev/zero | tr '\0' 'a'; printf '"}\n'; }

# A line over the limit (16 MiB payload + 1 MiB) between good lines, on a pipe: it is
# skipped as it streams, reported with its line number and length, and the lines
# after it are handled.
t_ndjson_line_too_long_skipped_on_a_pipe() {
  printf 'return function(ev) outbox.log.info("HANDLED", { topic = ev.topic, len = #ev.payload }) end\n' > h.lua
  { ndjson 2 before; long_line 40000000; ndjson 3 after; long_line 5000000; ndjson 1 last; } |
    "$OUTBOXD" run h.lua --db ndjson:- --log text 2> log || fail "exit $?"
  assert_grep 'bad NDJSON line skipped line=3 error="line too long: 40000028 bytes, limit 17825792"' log "named with its line and length"
  assert_eq "$(grep -c 'bad NDJSON line skipped' log)" 1 "one line skipped"

  # from a file, and as the final line without a newline
  { ndjson 1 before; long_line 20000000 | head -c -1; } > in.ndjson
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --log text 2> log2 || fail "exit $?"
  assert_grep 'bad NDJSON line skipped line=2 error="line too long: 20000028 bytes' log2 "unterminated last line of a file"
  assert_grep 'HANDLED id=1 len=1 topic=before' log2 "the line before it"
}

# A line larger than the memory limit: intake neither pauses for good nor grows
# toward the limit; peak RSS stays well under it.
t_ndjson_line_over_the_memory_limit_does_not_stall() {
  printf 'return function(ev) outbox.log.info("HANDLED", { topic = ev.topic }) end\n' > h.lua
  { ndjson 1 before; long_line 150000000; ndjson 1 after; } |
    timeout 300 "$OUTBOXD" run h.lua --db ndjson:- --memory-limit 128M --log text 2> log || fail "exit $?"
  assert_grep 'bad NDJSON line skipped line=2 error="line too long: 150000028 bytes' log "reported"
  assert_grep 'HANDLED id=3 topic=after' log "the line after it handled"
  local peak; peak=$(field peak_rss log)
  echo "peak RSS $peak bytes"
  if ldd "$OUTBOXD" | grep -q libasan; then return 0; fi # ASan's shadow memory inflates RSS
  assert_no_grep 'memory high' log "intake never paused"
  [ "${peak:-999999999}" -lt $((64 << 20)) ] || fail "peak RSS $peak bytes with a 128M limit"
}
