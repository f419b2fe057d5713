# The operator's surface: log levels and always-valid JSON lines, hidden database
# passwords, standard metrics, systemd notifications, the CLI's help and errors,
# and hostile text and clients.

t_log_level_flag_env_and_bad_values() {
  printf 'return function(ev) end\n' > h.lua
  ndjson 2 > in.ndjson
  OUTBOX_LOG_LEVEL=verbose "$OUTBOXD" run h.lua --db ndjson:in.ndjson 2> err; local rc=$?
  assert_eq "$rc" 2 "unknown OUTBOX_LOG_LEVEL exits 2"
  assert_eq "$(wc -l < err)" 1 "one line"
  assert_grep '^outboxd: OUTBOX_LOG_LEVEL: invalid value "verbose" \(debug, info, warn or error\)$' err "names the variable"
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --log-level loud 2> err; rc=$?
  assert_eq "$rc" 2 "unknown --log-level exits 2"
  assert_grep '^outboxd: --log-level: invalid value "loud"' err "names the flag"
  "$OUTBOXD" --help > help
  assert_grep '--log-level LEVEL .*OUTBOX_LOG_LEVEL' help "--help lists OUTBOX_LOG_LEVEL"
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --log text --log-level debug 2> debug.log || fail "debug run"
  assert_eq "$(grep -c 'event done' debug.log)" 2 "debug shows each event done"
  OUTBOX_LOG_LEVEL=warn "$OUTBOXD" run h.lua --db ndjson:in.ndjson --log text 2> warn.log || fail "warn run"
  assert_no_grep 'started|stopped|event done' warn.log "warn hides info lines"
  OUTBOX_LOG_LEVEL=error "$OUTBOXD" run h.lua --db ndjson:in.ndjson --log text --log-level info 2> info.log || fail "info run"
  assert_grep ' info started ' info.log "the flag wins over the environment"
}

t_json_logs_stay_valid_with_hostile_values() {
  cat > h.lua <<'LUA'
return function(ev)
  outbox.log.info("from handler", { long = string.rep("y", 20000), bad = "\255\254",
    nested = { a = { 1, 2, { b = "c" } } }, esc = "\27[2J\7" })
  error(string.rep("z", 10000) .. "\255\27]0;title\7")
end
LUA
  printf '{"topic":"t\\u001b[31m","payload":"x"}\n' > in.ndjson
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --log json --max-attempts 2 --backoff 1 2> log
  local n=0 line
  while IFS= read -r line; do
    n=$((n + 1))
    printf '%s' "$line" | jq -e 'type == "object"' > /dev/null || fail "not valid JSON: ${line:0:200}"
    [ ${#line} -le 8192 ] || fail "line of ${#line} bytes"
  done < log
  [ $n -ge 5 ] || fail "only $n lines"
  assert_eq "$(jq -r 'select(.msg == "from handler") | .nested.a[2].b' log | head -1)" c "nested table encoded"
  assert_grep '"long":"y+\.\.\.\[cut [0-9]+ bytes\]"' log "long value cut inside its string"
  assert_grep '"bad":"\\ufffd\\ufffd"' log "invalid UTF-8 replaced"
  assert_eq "$(jq -r 'select(.msg == "event dead") | .error | test("z+[.][.][.]\\[cut [0-9]+ bytes]$")' log)" true "dead error cut"
  assert_eq "$(grep -c $'\x1b' log)" 0 "no raw ESC"
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --log text --max-attempts 1 2> text.log
  assert_eq "$(grep -c $'\x1b' text.log)" 0 "no raw ESC in text logs"
  assert_eq "$(grep -c $'\x07' text.log)" 0 "no raw BEL in text logs"
  assert_grep 'topic="t\\u001b\[31m"' text.log "topic escaped in text logs"
}

t_database_passwords_never_shown() {
  . "$HERE/test_pg.sh" # pg_fresh, sql
  pg_fresh || return 1
  local url=${PGURL/postgres@/postgres:s3cret@} out=all.out port pid
  [ "$url" != "$PGURL" ] || { fail "no user in $PGURL"; return 1; }
  "$OUTBOXD" init --db "$url" 2>> $out || fail "init"
  "$OUTBOXD" enqueue --db "$url" --topic t --payload '"x"' 2>> $out || fail "enqueue"
  "$OUTBOXD" status --db "$url" >> $out 2>&1 || fail "status"
  assert_grep '^outbox postgres://postgres:\*\*\*@127\.0\.0\.1:' $out "status shows the URL redacted"
  cat > h.lua <<'LUA'
outbox.log.info("config", { db = outbox.config.db })
return function(ev)
  while not io.open("scraped") do outbox.sleep(0.05) end -- held until the scrape is done
  error("no")
end
LUA
  "$OUTBOXD" run h.lua --db "$url" --once --max-attempts 1 --log json --metrics 0 2> run.log &
  pid=$!
  port=$(wait_for 'metrics listening' run.log 10 && jq -r 'select(.msg == "metrics listening") | .port' run.log)
  curl -s "http://127.0.0.1:$port/metrics" >> $out
  touch scraped
  wait $pid
  cat run.log >> $out
  "$OUTBOXD" status --db "$url" >> $out 2>&1
  assert_grep '"msg":"started".*"db":"postgres://postgres:\*\*\*@' run.log "started line redacted"
  assert_grep '"msg":"config".*"db":"postgres://postgres:\*\*\*@' run.log "outbox.config.db redacted"
  "$OUTBOXD" status --db "postgres://app:s3cret@127.0.0.1:1/x" >> $out 2> err
  assert_grep 'postgres://app:\*\*\*@127\.0\.0\.1:1/x' err "connection error names the URL redacted"
  cat err >> $out
  "$OUTBOXD" status --db "host=127.0.0.1 port=1 password=s3cret" >> $out 2>&1
  "$OUTBOXD" run h.lua --db "postgresql://app:s3cret@127.0.0.1:1/x?password=s3cret" --once --log text >> $out 2>&1
  assert_grep 'started .*db="postgresql://app:\*\*\*@127.0.0.1:1/x\?password=\*\*\*"' $out "query password redacted"
  assert_grep 'outboxd_events_total' $out "the scrape happened"
  assert_no_grep 's3cret' $out "password anywhere in output"
}

t_metrics_standard_series_pass_promtool() {
  command -v promtool > /dev/null || { fail "promtool missing (Debian package prometheus)"; return 1; }
  printf 'return function(ev) if ev.topic == "bad" then return outbox.reject("poison") end end\n' > h.lua
  "$OUTBOXD" init --db s.db 2> /dev/null || fail "init"
  "$OUTBOXD" enqueue --db s.db --topic bad --payload '"x"' 2> /dev/null
  "$OUTBOXD" enqueue --db s.db --topic good --payload '"x"' 2> /dev/null
  "$OUTBOXD" run h.lua --db s.db --metrics 0 --log text 2> log &
  local pid=$! port i=0 version
  port=$(wait_for 'metrics listening' log 10 && field port log) || return 1
  while [ $i -lt 200 ]; do # the store counts refresh about once a second
    curl -s "http://127.0.0.1:$port/metrics" > m.txt
    grep -q '^outboxd_dead 1$' m.txt && break
    sleep 0.05; i=$((i + 1))
  done
  kill $pid; wait $pid
  promtool check metrics < m.txt > lint.out 2>&1 || { fail "promtool check metrics"; cat lint.out >&2; }
  assert_grep '^outboxd_dead 1$' m.txt "outboxd_dead counts the dead event in the store"
  version=$("$OUTBOXD" --version | awk '{print $2}')
  assert_grep "^outboxd_build_info\\{version=\"$version\"\\} 1$" m.txt "build info"
  assert_grep '^# TYPE process_cpu_seconds_total counter$' m.txt "cpu counter"
  assert_grep '^process_resident_memory_bytes [1-9][0-9]{5,}$' m.txt "resident memory"
  assert_grep '^process_virtual_memory_bytes [1-9]' m.txt "virtual memory"
  assert_grep '^process_open_fds [1-9]' m.txt "open fds"
  assert_grep '^process_max_fds [1-9]' m.txt "max fds"
  local start now
  start=$(awk '/^process_start_time_seconds /{printf "%d", $2}' m.txt); now=$(date +%s)
  [ -n "$start" ] && [ $((now - start)) -ge 0 ] && [ $((now - start)) -lt 600 ] ||
    fail "process_start_time_seconds $start is not within the last 10 minutes of $now"
}
