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
  port=$(wait_for 'metrics listening' run.log 60 && jq -r 'select(.msg == "metrics listening") | .port' run.log)
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
  port=$(wait_for 'metrics listening' log 60 && field port log) || return 1
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

# notify_listen SOCKET FILE: a datagram listener standing in for systemd.
notify_listen() {
  local tool=${NOTIFY_LISTEN:-$HERE/../../build/notify-listen}
  [ -x "$tool" ] || { fail "no $tool (make build/notify-listen)"; return 1; }
  "$tool" "$1" > "$2" 2>&1 &
  echo $! > listener.pid
  wait_for '^listening$' "$2" 60
}

t_systemd_notify_ready_watchdog_status_stopping() {
  printf 'return function(ev) end\n' > h.lua
  "$OUTBOXD" init --db s.db 2> /dev/null || fail "init"
  notify_listen "$PWD/notify.sock" notes || return 1
  NOTIFY_SOCKET=$PWD/notify.sock WATCHDOG_USEC=200000 "$OUTBOXD" run h.lua --db s.db --log text 2> log &
  local pid=$!
  wait_for '^READY=1\|STATUS=[0-9.]+ ev/s \| in flight 0/10 .* \| gen 1$' notes 60 || return 1
  "$OUTBOXD" enqueue --db s.db --topic t --payload '"x"' 2> /dev/null
  wait_for '^STATUS=.*pending 0 ' notes 60
  local i=0
  while [ "$(grep -c '^WATCHDOG=1$' notes)" -lt 5 ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done
  [ "$(grep -c '^WATCHDOG=1$' notes)" -ge 5 ] || fail "fewer than 5 WATCHDOG=1 in 10 s at a 100 ms period"
  kill -TERM $pid; wait $pid || fail "exit $?"
  wait_for '^STOPPING=1\|STATUS=' notes 60
  kill "$(cat listener.pid)"
  assert_eq "$(grep -c '^READY=1' notes)" 1 "READY=1 once"
  assert_eq "$(grep -c '^STOPPING=1' notes)" 1 "STOPPING=1 once"
  [ "$(grep -n '^READY=1' notes | cut -d: -f1)" -lt "$(grep -n '^STOPPING=1' notes | cut -d: -f1)" ] ||
    fail "READY=1 after STOPPING=1"
  assert_eq "$(sed -n '/^STOPPING=1/,$p' notes | grep -c '^READY')" 0 "nothing ready after stopping"
}

t_systemd_notify_abstract_socket_and_unset() {
  printf 'return function(ev) end\n' > h.lua
  ndjson 3 > in.ndjson
  local name="@outboxd-test-$$-$RANDOM"
  notify_listen "$name" notes || return 1
  NOTIFY_SOCKET=$name "$OUTBOXD" run h.lua --db ndjson:in.ndjson --log text 2> log || fail "exit $?"
  wait_for '^STOPPING=1' notes 60
  kill "$(cat listener.pid)"
  assert_grep '^READY=1\|STATUS=' notes "READY=1 on an abstract socket"
  assert_no_grep '^WATCHDOG' notes "no pings without WATCHDOG_USEC"
  WATCHDOG_USEC=1000 "$OUTBOXD" run h.lua --db ndjson:in.ndjson --log text 2> log2 || fail "no NOTIFY_SOCKET: exit $?"
  assert_grep 'stopped processed=3' log2 "runs without a notify socket"
}

t_make_install_unit_verifies_and_uninstall_removes_it() {
  local root prefix=$PWD/prefix; root=$(cd "$HERE/../.." && pwd)
  make -s -C "$root" -o "$OUTBOXD" BIN="$OUTBOXD" install PREFIX="$prefix" > install.log 2>&1 ||
    { cat install.log; fail "make install"; return 1; }
  local unit=$prefix/lib/systemd/system/outboxd.service
  [ -f "$unit" ] || { fail "no unit installed at $unit"; return 1; }
  assert_grep '^Type=notify$' "$unit" "Type=notify"
  assert_grep '^WatchdogSec=' "$unit" "WatchdogSec"
  assert_grep '^NoNewPrivileges=yes$' "$unit" "NoNewPrivileges"
  assert_grep '^ProtectSystem=strict$' "$unit" "ProtectSystem=strict"
  assert_grep '^ReadWritePaths=/var/lib/outboxd$' "$unit" "ReadWritePaths for the database"
  assert_grep "^ExecStart=$prefix/bin/outboxd run $prefix/share/outboxd/handlers/demo.lua\$" "$unit" "ExecStart follows PREFIX"
  if command -v systemd-analyze > /dev/null; then
    SYSTEMD_LOG_LEVEL=warning systemd-analyze verify "$unit" > verify.log 2>&1 ||
      { fail "systemd-analyze verify"; cat verify.log >&2; }
    assert_no_grep 'outboxd.service' verify.log "verify says nothing about the unit"
  else
    echo "systemd-analyze not installed: unit not verified"
  fi
  touch "$prefix/bin/other" # not ours: uninstall keeps it
  make -s -C "$root" uninstall PREFIX="$prefix" > uninstall.log 2>&1 || fail "make uninstall"
  (cd "$prefix" && find . -type f | sort) > left
  assert_eq "$(cat left)" "./bin/other" "uninstall removes exactly what install put"
}

t_outboxd_test_runs_the_example_handler() {
  OUTBOXD=$OUTBOXD bash "$HERE/../../examples/handler-test/run.sh" > out 2>&1 ||
    { sed 's/^/      | /' out | tail -20; fail "examples/handler-test/run.sh failed"; return 1; }
  assert_grep '^handler-test: ok \(12 attempts and 3 enqueued events as expected\)$' out "example outcomes match"
}

t_outboxd_test_fake_clock_stub_and_bad_input() {
  cat > h.lua <<'LUA'
return function(ev)
  local t0 = outbox.now()
  outbox.sleep(3600)
  local res, err = outbox.http.get("http://example.invalid/" .. ev.id)
  if not res then return false, err end
  if ev.attempt == 1 then return false, string.format("slept %d s, got %d %s", outbox.now() - t0, res.status, res.body) end
end
LUA
  printf 'return function(req) if req.url:match("/2$") then return nil, "stub: down" end return { status = 200, body = req.method } end\n' > stub.lua
  ndjson 2 > in.ndjson
  "$OUTBOXD" test h.lua in.ndjson --http-stub stub.lua --max-attempts 2 > out 2> err; local rc=$?
  assert_eq "$rc" 1 "exit 1: an event ended dead"
  sort -s -n -k1,1 out > sorted
  assert_eq "$(cat sorted)" "1 t retry 1: slept 3600 s, got 200 GET
1 t done
2 t retry 1: stub: down
2 t dead: stub: down" "one line per attempt, fake clock, stubbed HTTP"
  assert_grep '^outboxd test: 1 done, 1 dead, 4 attempts$' err "summary on stderr"
  "$OUTBOXD" test h.lua in.ndjson --http-stub stub.lua --max-attempts 2 --json > out.json 2> /dev/null
  assert_eq "$(jq -s 'map(select(.id == 2 and .outcome == "dead")) | .[0].error' out.json)" '"stub: down"' "--json objects"
  printf 'return function(ev) end\n' > ok.lua
  "$OUTBOXD" test ok.lua in.ndjson > out 2> err || fail "all done: exit $?"
  assert_eq "$(cat out)" "1 t done
2 t done" "all done"
  printf 'return 42\n' > bad_stub.lua
  "$OUTBOXD" test ok.lua in.ndjson --http-stub bad_stub.lua > out 2> err; rc=$?
  assert_eq "$rc" 2 "a stub that returns no function"
  assert_grep '^outboxd test: --http-stub bad_stub.lua: returned a number; return function\(req\) ... end$' err "names the stub"
  printf 'return function(req)\n' > broken_stub.lua
  "$OUTBOXD" test ok.lua in.ndjson --http-stub broken_stub.lua > out 2> err; rc=$?
  assert_eq "$rc" 2 "a stub that does not load"
  assert_grep '^outboxd test: --http-stub broken_stub.lua:2: ' err "names the stub's line"
  "$OUTBOXD" test ok.lua missing.ndjson > out 2> err; rc=$?
  assert_eq "$rc" 2 "missing fixture"
  assert_eq "$(cat err)" "outboxd test: missing.ndjson: cannot read the fixture" "names the fixture"
  "$OUTBOXD" test ok.lua > out 2> err; rc=$?
  assert_eq "$rc" 2 "no fixture given"
  assert_grep '^outboxd test: missing FIXTURE.ndjson ' err "says what is missing"
  : > empty.ndjson
  "$OUTBOXD" test ok.lua empty.ndjson > out 2> err || fail "empty fixture: exit $?"
  assert_grep '^outboxd test: empty.ndjson: no events in the fixture$' err "empty fixture said"
}

t_every_command_has_help_and_one_line_errors() {
  local c
  for c in run test check init enqueue status requeue; do
    "$OUTBOXD" $c --help > help.$c 2> err.$c || fail "outboxd $c --help: exit $?"
    assert_grep "^usage: outboxd $c" help.$c "outboxd $c --help prints its usage"
    [ -s err.$c ] && fail "outboxd $c --help wrote to stderr: $(cat err.$c)"
  done
  printf 'return function(ev) end\n' > h.lua
  for c in run test check init enqueue status requeue; do
    "$OUTBOXD" $c --bogus h.lua > out 2> err; local rc=$?
    assert_eq "$rc" 2 "outboxd $c --bogus exits 2"
    assert_eq "$(wc -l < err)" 1 "outboxd $c --bogus: one line"
    assert_grep "'--bogus'" err "outboxd $c names the flag"
  done
  "$OUTBOXD" check --help > /dev/null 2>&1; [ ! -e ./--help ] || fail "check --help made a file"
  "$OUTBOXD" check h.lua 2> err || fail "check ok"
  assert_eq "$(cat err)" "outboxd: h.lua: ok" "check ok line"
}

t_control_characters_escaped_in_status_and_text_logs() {
  printf 'return function(ev) return outbox.reject("bad \\27[2J\\7 \\194\\155 end") end\n' > h.lua
  "$OUTBOXD" init --db s.db 2> /dev/null || fail "init"
  "$OUTBOXD" enqueue --db s.db --topic $'t\e]0;pwned\a' --key $'k\e[31m' --payload '"x"' 2> /dev/null || fail "enqueue"
  "$OUTBOXD" run h.lua --db s.db --once --log text 2> log || fail "run: exit $?"
  "$OUTBOXD" status --db s.db > status.out 2>&1 || fail "status: exit $?"
  for f in log status.out; do
    assert_eq "$(grep -c $'\e' $f)" 0 "no raw ESC in $f"
    assert_eq "$(grep -c $'\a' $f)" 0 "no raw BEL in $f"
    assert_eq "$(grep -c $'\xc2\x9b' $f)" 0 "no raw C1 CSI in $f"
  done
  assert_grep 't\\u001b\]0;pwned\\u0007 ' status.out "topic escaped in status"
  assert_grep 'bad \\u001b\[2J\\u0007 \\u009b end' status.out "error escaped in status"
  assert_grep 'event dead id=1 topic="t\\u001b\]0;pwned\\u0007"' log "topic escaped in the text log"
}

t_webhook_headers_refused_at_load() {
  local h=$HERE/../../handlers/webhook.lua v
  export OUTBOX_WEBHOOK_URL=http://127.0.0.1:1/hook
  for v in '[1,2]' '"x"' '{"X-A":"a\r\nInjected: 1"}' '{"Bad Name":"x"}' '{"X-A":{"nested":1}}' '{"X-A":null}' '{'; do
    OUTBOX_WEBHOOK_HEADERS=$v "$OUTBOXD" check "$h" > out 2> err; local rc=$?
    assert_eq "$rc" 2 "OUTBOX_WEBHOOK_HEADERS=$v refused"
    assert_eq "$(wc -l < err)" 1 "one line for $v"
    assert_grep 'OUTBOX_WEBHOOK_HEADERS(:| must)' err "names the variable for $v"
  done
  OUTBOX_WEBHOOK_HEADERS='{"X-A":"a\r\nInjected: 1"}' "$OUTBOXD" check "$h" 2> err
  assert_grep 'the value of X-A holds a control character' err "says which header"
  OUTBOX_WEBHOOK_HEADERS='{"Authorization":"Bearer t","X-Retries":3}' "$OUTBOXD" check "$h" 2> err ||
    fail "valid headers refused: $(cat err)"
}

t_health_answers_while_idle_clients_hold_every_slot() {
  printf 'return function(ev) end\n' > h.lua
  "$OUTBOXD" init --db s.db 2> /dev/null || fail "init"
  "$OUTBOXD" run h.lua --db s.db --metrics 0 --log text 2> log &
  local pid=$! port i round ok=0 code
  port=$(wait_for 'metrics listening' log 60 && field port log) || return 1
  local -a fds=()
  for round in 1 2 3; do
    for fd in "${fds[@]}"; do exec {fd}>&-; done # slowloris: drop the idle ones, open new ones
    fds=()
    for i in $(seq 70); do
      exec {fd}<>"/dev/tcp/127.0.0.1/$port" || break
      printf 'GET /metrics HTTP/1.1\r\nHost: x\r\n' >&$fd # a head that never ends
      fds+=("$fd")
    done
    for i in $(seq 8); do
      code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://127.0.0.1:$port/health")
      [ "$code" = 200 ] && ok=$((ok + 1))
    done
  done
  for fd in "${fds[@]}"; do exec {fd}>&-; done
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "http://127.0.0.1:$port/ready")
  kill $pid; wait $pid
  assert_eq "$ok" 24 "/health probes answered 200 while 70 idle clients held the table"
  assert_eq "$code" 200 "/ready after"
}

t_requeue_says_when_nothing_matched() {
  "$OUTBOXD" init --db s.db 2> /dev/null || fail "init"
  "$OUTBOXD" requeue --db s.db --dead > out 2>&1 || fail "requeue --dead: exit $?"
  assert_eq "$(cat out)" "requeued 0 events: no dead events" "empty selection said"
  "$OUTBOXD" enqueue --db s.db --topic t --payload '"x"' 2> /dev/null
  "$OUTBOXD" requeue --db s.db --id 1 --id 999 > out 2>&1 || fail "requeue --id: exit $?"
  assert_eq "$(cat out)" "requeued 1 event; 1 of the 2 ids named no event (or one being processed)" "unknown id said"
}
