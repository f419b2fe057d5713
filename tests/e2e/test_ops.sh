# Operations: /metrics against outbox.stats(), /ready following the breaker, bad
# requests, the terminal status line, and an installed binary run from elsewhere.

# metrics_port LOG: the port the server logged (it binds port 0: a free one)
metrics_port() { wait_for 'metrics listening' "$1" && field port "$1"; }

# scrape PORT PATH: the body of GET PATH; `code` gets the HTTP status (000 and an
# empty body when the request failed: never a previous answer)
scrape() {
  rm -f scrape.out
  curl -s --max-time 20 -o scrape.out -w '%{http_code}' "http://127.0.0.1:$1$2" > code
  [ -f scrape.out ] && cat scrape.out
}

# scrape_is PORT PATH CODE [PATTERN]: one GET gives CODE and a body matching PATTERN
scrape_is() { scrape "$1" "$2" > /dev/null; [ "$(cat code)" = "$3" ] && grep -qE -- "${4:-.}" scrape.out; }

# wait_scrape PORT PATH CODE [PATTERN]: until GET PATH answers so (30 s); the body
# is left in scrape.out
wait_scrape() {
  wait_until 30 "GET $2 to answer $3 ${4:+/$4/}" scrape_is "$@" ||
    { echo "      (last answer: $(cat code) $(head -c 200 scrape.out 2>/dev/null))" >&2; return 1; }
}

# metric NAME_WITH_LABELS FILE: its value in an exposition text
metric() { grep -F "$1 " "$2" | grep -v '^#' | head -1 | awk '{print $2}'; }

# The slow handlers hold until the test has scraped, so the figures hold still.
t_metrics_match_stats_during_run() {
  { gate_lua; cat <<'LUA'
return function(ev)
  if ev.topic == "fast" then return end
  if ev.id == 10 then
    while outbox.stats().done < 6 do outbox.sleep(0.02) end   -- every fast event is done
    local s = outbox.stats()
    outbox.log.info("STATS", { active = s.active, queued = s.queued, done = s.done, failed = s.failed })
  end
  wait_file("scraped")
end
LUA
  } > h.lua
  { ndjson 6 fast; ndjson 4 slow; } > in.ndjson
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --concurrency 4 --metrics 0 --log text 2> log &
  local pid=$! port
  port=$(metrics_port log) || { kill $pid; return 1; }
  wait_for 'STATS' log || { kill $pid; return 1; }
  scrape "$port" /metrics > m.txt
  assert_eq "$(cat code)" 200 "status of /metrics"
  assert_grep '^# TYPE outboxd_events_total counter' m.txt "TYPE line"
  assert_grep '^# HELP outboxd_inflight ' m.txt "HELP line"
  assert_eq "$(metric outboxd_inflight m.txt)" "$(field active log)" "inflight = stats().active"
  assert_eq "$(metric outboxd_queued m.txt)" "$(field queued log)" "queued = stats().queued"
  assert_eq "$(metric 'outboxd_events_total{outcome="done"}' m.txt)" "$(field done log)" "done"
  assert_eq "$(metric 'outboxd_events_total{outcome="failed"}' m.txt)" "$(field failed log)" "failed"
  assert_eq "$(metric outboxd_inflight m.txt)" 4 "four in flight"
  assert_eq "$(metric 'outboxd_handler_duration_seconds_count' m.txt)" 6 "one duration per finished run"
  assert_eq "$(metric 'outboxd_handler_duration_seconds_bucket{le="+Inf"}' m.txt)" 6 "+Inf bucket = count"
  assert_eq "$(metric outboxd_breaker_state m.txt)" 0 "breaker closed"
  assert_eq "$(metric outboxd_generation m.txt)" 1 "generation"
  assert_grep '^outboxd_memory_bytes\{kind="rss"\} [1-9]' m.txt "rss"
  assert_grep '^outboxd_memory_bytes\{kind="lua"\} [1-9]' m.txt "lua heap"
  assert_grep '^outboxd_oldest_pending_age_seconds ' m.txt "oldest pending age"
  assert_grep '^outboxd_reloads_total\{result="ok"\} 0' m.txt "reloads"
  assert_eq "$(scrape "$port" /health)" ok "health body"
  assert_eq "$(scrape "$port" /ready)" ready "ready body"
  touch scraped
  wait $pid || fail "exit $?"
}

t_sighup_reloads_are_counted() {
  printf 'return function(ev) outbox.sleep(30) end\n' > h.lua
  ndjson 1 > in.ndjson
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --metrics 127.0.0.1:0 --no-watch --drain-timeout 100 --log text 2> log &
  local pid=$! port
  port=$(metrics_port log) || return 1
  kill -HUP $pid; wait_for 'reloaded' log || { kill $pid; return 1; }
  printf 'return function(ev) (\n' > h.lua
  kill -HUP $pid; wait_for 'reload failed' log || { kill $pid; return 1; }
  scrape "$port" /metrics > m.txt
  assert_eq "$(metric 'outboxd_reloads_total{result="ok"}' m.txt)" 1 "ok reloads"
  assert_eq "$(metric 'outboxd_reloads_total{result="failed"}' m.txt)" 1 "failed reloads"
  assert_eq "$(metric outboxd_generation m.txt)" 2 "generation after one good reload"
  kill -TERM $pid; wait $pid || fail "exit $?"
}

# The handler waits for "go" before its first run and fails until "healthy"
# exists: the test, not the clock, moves the breaker from closed to open to closed.
t_ready_is_503_while_breaker_open() {
  { gate_lua; cat <<'LUA'
return function(ev)
  wait_file("go")
  outbox.sleep(0.05)
  if not exists("healthy") then error("downstream down") end
end
LUA
  } > h.lua
  mkfifo in.pipe
  ( ndjson 60; exec sleep 300 ) > in.pipe &
  local feeder=$!
  "$OUTBOXD" run h.lua --db ndjson:- --concurrency 1 --breaker-window 4 --breaker-min-calls 4 \
    --breaker-cooldown 800 --backoff 10:10 --metrics 0 --log text < in.pipe 2> log &
  local pid=$! port
  port=$(metrics_port log) || { kill $pid $feeder; return 1; }
  assert_eq "$(scrape "$port" /ready)" ready "ready before"
  assert_eq "$(cat code)" 200 "/ready before"
  touch go
  wait_for 'circuit breaker changed state=open' log || { kill $pid $feeder; return 1; }
  # open, then half-open for one probe (which fails), then open again: poll for open
  wait_scrape "$port" /ready 503 'breaker open' || { kill $pid $feeder; return 1; }
  wait_scrape "$port" /metrics 200 '^outboxd_breaker_state 1$' || { kill $pid $feeder; return 1; }
  assert_eq "$(scrape "$port" /health)" ok "health stays 200"
  assert_eq "$(cat code)" 200 "/health while open"
  touch healthy
  wait_for 'circuit breaker changed state=closed' log || { kill $pid $feeder; return 1; }
  scrape "$port" /ready > /dev/null
  assert_eq "$(cat code)" 200 "/ready after it closed"
  kill -TERM $pid; wait $pid || fail "exit $?"
  kill $feeder
}

t_bad_requests_get_4xx_and_server_goes_on() {
  printf 'return function(ev) outbox.sleep(30) end\n' > h.lua
  ndjson 1 > in.ndjson
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --metrics 0 --drain-timeout 100 --log text 2> log &
  local pid=$! port
  port=$(metrics_port log) || return 1
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  printf 'garbage\r\n\r\n' >&3
  timeout 5 cat <&3 > resp; exec 3<&-
  assert_grep '^HTTP/1.1 400 ' resp "garbage gets 400"
  exec 3<>"/dev/tcp/127.0.0.1/$port"
  { printf 'GET /metrics HTTP/1.1\r\nHost: x\r\n'; head -c 20000 /dev/zero | tr '\0' 'a'; } >&3 2>/dev/null
  timeout 5 cat <&3 > resp2; exec 3<&-
  assert_grep '^HTTP/1.1 4[0-9][0-9] ' resp2 "oversized request refused"
  exec 3<>"/dev/tcp/127.0.0.1/$port"               # a silent client holds nothing up
  scrape "$port" /nope > /dev/null; assert_eq "$(cat code)" 404 "unknown path"
  curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$port/metrics" > code
  assert_eq "$(cat code)" 405 "POST"
  scrape "$port" /metrics > m.txt
  assert_eq "$(cat code)" 200 "next scrape works"
  assert_eq "$(metric outboxd_inflight m.txt)" 1 "figures still served"
  exec 3<&-
  kill -TERM $pid; wait $pid || fail "exit $?"
}

t_metrics_flag_errors() {
  printf 'return function() end\n' > h.lua
  ndjson 1 > in.ndjson
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --metrics nothost:x 2> err; assert_eq "$?" 2 "bad spec exit"
  assert_grep '\-\-metrics' err "names the flag"
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --metrics 0 --log text 2> log || fail "exit $?"
  assert_grep 'metrics listening host=127.0.0.1 port=[1-9]' log "port 0 picks a free port"
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --metrics 10.255.255.1:0 2> err; assert_eq "$?" 1 "unbindable exit"
  assert_grep '\-\-metrics 10.255.255.1:0: ' err "names the flag and the cause"
}

t_status_line_on_a_terminal_only() {
  cat > h.lua <<'LUA'
return function(ev) outbox.sleep(0.01); if ev.id % 50 == 0 then outbox.log.info("TICK", { id = ev.id }) end end
LUA
  ndjson 200 > in.ndjson
  script -qfec "$OUTBOXD run h.lua --db ndjson:in.ndjson --concurrency 2" /dev/null > tty.out || fail "exit under a pty"
  assert_grep 'ev/s \| in flight [0-9]+/2 \| queued [0-9]+ \| pending [0-9?]+ \| breaker closed \| mem [0-9.]+[KMGT]/[0-9.]+[KMGT] \| gen 1' tty.out "status line drawn"
  assert_grep $'\r\033\\[K[0-9-]+T[0-9:.]+Z info TICK id=50' tty.out "log line erases the status line first"
  assert_no_grep $'\r\033\\[K[^\r]*ev/s' <(grep -a 'stopped processed=200' tty.out) "no status line after the last log"
  "$OUTBOXD" run h.lua --db ndjson:in.ndjson --concurrency 2 --log text 2> pipe.out || fail "exit in a pipe"
  assert_no_grep 'ev/s' pipe.out "no status line in a pipe"
  assert_no_grep $'\033' pipe.out "no escapes in a pipe"
  assert_eq "$(grep -c TICK pipe.out)" 4 "log lines intact"
}

t_installed_binary_runs_from_elsewhere() {
  local root; root=$(cd "$HERE/../.." && pwd)
  # BIN and -o: install the binary under test as it is, never rebuild it here
  make -s -C "$root" -o "$OUTBOXD" BIN="$OUTBOXD" install DESTDIR="$PWD/dest" PREFIX=/usr \
    > install.log 2>&1 || { cat install.log; fail "make install"; return 1; }
  [ -x dest/usr/bin/outboxd ] || { fail "no installed binary"; return 1; }
  [ -f dest/usr/share/outboxd/handlers/demo.lua ] || { fail "no installed handler"; return 1; }
  mkdir elsewhere && cd elsewhere || return 1
  printf '%s\n' '{"topic":"user.signed_up","payload":{"email":"a@b.c"}}' '{"topic":"order.created","payload":"1"}' > in.ndjson
  ../dest/usr/bin/outboxd run ../dest/usr/share/outboxd/handlers/demo.lua --db ndjson:in.ndjson --log text 2> log || fail "exit $?"
  assert_grep 'welcome mail .*email=a@b.c' log "routed handler ran"
  assert_grep 'stopped processed=2 done=2' log "both done"
  ../dest/usr/bin/outboxd --help > help.txt
  for f in $(grep -oE '^  --[a-z-]+' help.txt | tr -d ' '); do
    grep -qE -- "^  $f .*\(default: " help.txt || fail "$f has no default in --help"
  done
  assert_grep '^  --metrics \[HOST:\]PORT .*env OUTBOX_METRICS' help.txt "--metrics in --help"
}
