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
