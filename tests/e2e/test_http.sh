# outbox.http and handlers/webhook.lua against the real receiver (tests/tools/receiver.c)
# on 127.0.0.1: errors as nil, err; breaker, timeouts, Retry-After, exactly-once
# per 2xx, connection reuse and flat memory over 10,000 deliveries.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
RECEIVER=${RECEIVER:-$ROOT/build/receiver}
WEBHOOK=$ROOT/handlers/webhook.lua

# recv_start [receiver flags]: starts the receiver on a free port, logging to req.log;
# sets URL. It and every pid in BG are stopped when the test's subshell exits.
recv_start() {
  "$RECEIVER" --port-file port --log req.log "$@" > /dev/null 2> recv.err &
  BG="$BG $!"
  trap 'for p in $BG; do kill $p 2>/dev/null; done; wait 2>/dev/null' EXIT
  wait_for '^[0-9]+$' port || return 1
  URL="http://127.0.0.1:$(cat port)"
}

# recv_get PATH: one HTTP/1.0 request to the receiver, prints the body (bash /dev/tcp).
recv_get() {
  local port
  port=$(cat port)
  exec 3<> "/dev/tcp/127.0.0.1/$port" || return 1
  printf 'GET %s HTTP/1.0\r\n\r\n' "$1" >&3
  sed '1,/^\r$/d' <&3
  exec 3>&-
}

# recv_stat NAME: one figure of the receiver's /stats.
recv_stat() { recv_get /stats | grep -oE "\"$1\":[0-9]+" | cut -d: -f2; }

# ms_of_log_line PATTERN FILE: the time of the first matching text-log line, epoch ms.
ms_of_log_line() { date -d "$(grep -m1 -E -- "$1" "$2" | cut -d' ' -f1)" +%s%3N; }

# sql_is SQL VALUE: the query on x.db prints VALUE
sql_is() { [ "$(sqlite3 x.db "$1" 2>/dev/null)" = "$2" ]; }

# wait_sql SQL VALUE SECONDS: polls x.db until the query prints VALUE.
wait_sql() {
  wait_until "$3" "x.db: '$1' to print '$2'" sql_is "$1" "$2" ||
    { echo "      (prints '$(sqlite3 x.db "$1" 2>&1)')" >&2; return 1; }
}

t_http_errors_are_nil_err_and_misuse_raises() {
  recv_start --status 404 --delay 300 || return 1
  cat > h.lua <<'LUA'
local base = os.getenv("URL")
local ok, e = pcall(outbox.http.get, base)
outbox.log.info("TOPLEVEL", { err = e })
return function(ev)
  local cases = { refused = "http://127.0.0.1:1/", dns = "http://no-such-host.invalid/",
                  malformed = "http//not a url", scheme = "ftp://127.0.0.1/x" }
  for name, u in pairs(cases) do
    local r, err = outbox.http.get(u, { timeout = 5 })
    outbox.log.info("ERR " .. name, { got = tostring(r) .. ", " .. tostring(err) })
  end
  local r, err = outbox.http.get(base .. "/slow", { timeout = 0.1 })
  outbox.log.info("ERR timeout", { got = tostring(r) .. ", " .. tostring(err) })
  r = outbox.http.request { method = "PUT", url = base .. "/x", body = "b", timeout = 5 }
  outbox.log.info("RES", { status = r.status, body = r.body, len = r.headers["content-length"] })
  for name, f in pairs {
    nourl = function() local r = outbox.http.request {}; return r end,
    badtype = function() local r = outbox.http.get(42); return r end,
    badheader = function() local r = outbox.http.get(base, { headers = { ["a b"] = "x" } }); return r end,
    badtimeout = function() local r = outbox.http.get(base, { timeout = "soon" }); return r end,
  } do
    local okr, msg = pcall(f)
    outbox.log.info("RAISE " .. name, { ok = tostring(okr), msg = msg })
  end
end
LUA
  ndjson 1 > in.ndjson
  URL=$URL "$OUTBOXD" run h.lua --db ndjson:in.ndjson --log text 2> log || fail "exit $?" || return 1
  assert_grep 'TOPLEVEL err=".*can only wait inside a handler or hook"' log "top level" || return 1
  assert_grep 'ERR refused id=1 got="nil, connection refused by 127.0.0.1:1"' log "refused" || return 1
  assert_grep 'ERR dns id=1 got="nil, could not resolve host no-such-host.invalid"' log "dns" || return 1
  assert_grep 'ERR malformed id=1 got="nil, malformed URL: http//not a url"' log "malformed" || return 1
  assert_grep "ERR scheme id=1 got=\"nil, unsupported URL scheme 'ftp'" log "scheme" || return 1
  assert_grep 'ERR timeout id=1 got="nil, timeout after 100 ms"' log "timeout" || return 1
  assert_grep 'RES id=1 .*status=404' log "a 404 is a response" || return 1
  assert_grep 'RES id=1 .*body="fail\\n"' log "its body" || return 1
  assert_grep 'RES id=1 .*len=5' log "lower-case header names" || return 1
  assert_grep 'RAISE nourl id=1 .*msg="h.lua:[0-9]+: bad argument #1 to .request. \(url must be a string' log "missing url raises" || return 1
  assert_grep 'RAISE badtype id=1 .*msg="h.lua:[0-9]+: bad argument #1 to .get. \(string expected, got number' log "bad url type" || return 1
  assert_grep 'RAISE badheader id=1 .*msg="h.lua:[0-9]+: bad argument #2 to .get. \(header names must be tokens' log "bad header" || return 1
  assert_grep 'RAISE badtimeout id=1 .*msg="h.lua:[0-9]+: bad argument #2 to .get. \(timeout must be a number' log "bad timeout" || return 1
  assert_grep 'method=PUT path=/x .*body=b$' req.log "PUT with a body reached the receiver"
}

t_webhook_headers_body_and_reject() {
  recv_start || return 1
  printf '%s\n' '{"topic":"order.paid","key":"o-7","payload":{"order":7}}' \
    '{"topic":"note","payload":"plain text"}' '{"topic":"gone","payload":"{}"}' > in.ndjson
  OUTBOX_WEBHOOK_URL="$URL/hook" "$OUTBOXD" run "$WEBHOOK" --db ndjson:in.ndjson --log text 2> log ||
    fail "exit $?" || return 1
  assert_grep 'key=1 attempt=1 topic=order.paid status=200 .*body=\{"order":7\}$' req.log "JSON payload as is" || return 1
  assert_grep 'key=2 attempt=1 topic=note status=200 .*body="plain text"$' req.log "text payload as a JSON string" || return 1
  recv_get '/control?status=404' > /dev/null
  printf '%s\n' '{"topic":"gone","payload":"{}"}' > in2.ndjson
  OUTBOX_WEBHOOK_URL="$URL/hook" "$OUTBOXD" run "$WEBHOOK" --db ndjson:in2.ndjson --log text 2> log2 ||
    fail "exit $?" || return 1
  assert_grep 'event dead id=1 .*attempt=1 error="webhook: HTTP 404: fail"' log2 "404 is dead at once" || return 1
  OUTBOX_WEBHOOK_URL= "$OUTBOXD" check "$WEBHOOK" 2> err; assert_eq "$?" 2 "no URL: exit 2" || return 1
  assert_grep 'OUTBOX_WEBHOOK_URL is not set' err "names the variable" || return 1
  OUTBOX_WEBHOOK_URL=$URL OUTBOX_WEBHOOK_HEADERS='[1' "$OUTBOXD" check "$WEBHOOK" 2> err
  assert_eq "$?" 2 "bad extra headers: exit 2" || return 1
  assert_grep 'OUTBOX_WEBHOOK_HEADERS must be a JSON object' err "names the variable" || return 1
  OUTBOX_WEBHOOK_URL=$URL OUTBOX_WEBHOOK_TIMEOUT=soon "$OUTBOXD" check "$WEBHOOK" 2> err
  assert_grep 'OUTBOX_WEBHOOK_TIMEOUT must be a number' err "bad timeout named"
}

t_webhook_breaker_opens_releases_and_recovers() {
  recv_start --status 503 || return 1
  "$OUTBOXD" init --db x.db 2> /dev/null || fail "init" || return 1
  ndjson 20 t '{"n":1}' | "$OUTBOXD" enqueue --db x.db 2> /dev/null || fail "enqueue" || return 1
  OUTBOX_WEBHOOK_URL="$URL/hook" "$OUTBOXD" run "$WEBHOOK" --db x.db --concurrency 1 --backoff 10:10 \
    --breaker-window 4 --breaker-min-calls 4 --breaker-cooldown 3000 --poll 50 --no-watch \
    --log text 2> log &
  local pid=$!
  BG="$BG $pid"
  wait_for 'circuit breaker changed state=open' log || return 1
  # Released events are pending again with their attempts untouched: every row's
  # attempts equals the requests the receiver saw for it. (The 3 s cooldown keeps a
  # half-open probe out of this snapshot.)
  wait_sql "SELECT count(*) FROM outbox WHERE status <> 'pending'" 0 60 || return 1
  sqlite3 x.db "SELECT id, attempts FROM outbox ORDER BY id" | tr '|' ' ' > attempts
  local id n seen
  while read -r id n; do
    seen=$(grep -c "key=$id " req.log)
    assert_eq "$n" "$seen" "attempts of event $id while open" || return 1
  done < attempts
  assert_eq "$(awk '$2 == 0' attempts | wc -l)" 16 "events released without an attempt" || return 1
  recv_get '/control?status=200' > /dev/null
  wait_for 'circuit breaker changed state=half-open' log || return 1
  wait_for 'circuit breaker changed state=closed' log || return 1
  wait_sql "SELECT count(*) FROM outbox WHERE status IN ('pending', 'processing')" 0 60 || return 1
  kill -TERM $pid; wait $pid; assert_eq "$?" 0 "exit after SIGTERM" || return 1
  # No request reached the receiver while the breaker was open.
  local opened half
  opened=$(ms_of_log_line 'state=open' log)
  half=$(ms_of_log_line 'state=half-open' log)
  assert_eq "$(awk -v a="$opened" -v b="$half" '{ split($1, t, "="); if (t[2] > a && t[2] < b) n++ } END { print n + 0 }' req.log)" 0 \
    "requests between opened and half-open" || return 1
  # Every event got exactly one 2xx.
  assert_eq "$(grep 'status=200' req.log | grep -oE 'key=[0-9]+' | sort -u | wc -l)" 20 "distinct keys with a 2xx" || return 1
  assert_eq "$(grep -c 'status=200' req.log)" 20 "2xx responses"
}

t_webhook_slow_receiver_times_out_then_delivers() {
  recv_start --delay 2000 || return 1
  ndjson 3 > in.ndjson
  OUTBOX_WEBHOOK_URL="$URL/hook" OUTBOX_WEBHOOK_TIMEOUT=0.2 "$OUTBOXD" run "$WEBHOOK" --db ndjson:in.ndjson \
    --backoff 50:50 --log text 2> log &
  local pid=$!
  BG="$BG $pid"
  wait_for 'event failed id=3 .*error="webhook: timeout after 200 ms"' log || return 1
  recv_get '/control?delay=0' > /dev/null
  wait $pid; assert_eq "$?" 0 "exit" || return 1
  assert_eq "$(field done log)" 3 "all delivered after the receiver got fast" || return 1
  assert_eq "$(grep 'status=200' req.log | grep -oE 'key=[0-9]+' | sort -u | wc -l)" 3 "each key reached the receiver"
}

t_webhook_retry_after_is_honoured() {
  recv_start --fail-first 1 --fail-status 429 --retry-after 1 || return 1
  ndjson 1 > in.ndjson
  OUTBOX_WEBHOOK_URL="$URL/hook" "$OUTBOXD" run "$WEBHOOK" --db ndjson:in.ndjson --log text 2> log ||
    fail "exit $?" || return 1
  assert_grep 'event failed id=1 .*retry_in_ms=1000 ' log "retry(1) from Retry-After" || return 1
  assert_eq "$(grep -c 'key=1 ' req.log)" 2 "two attempts" || return 1
  local t1 t2
  t1=$(grep -m1 'key=1 attempt=1 ' req.log | grep -oE '^ts_ms=[0-9]+' | cut -d= -f2)
  t2=$(grep -m1 'key=1 attempt=2 ' req.log | grep -oE '^ts_ms=[0-9]+' | cut -d= -f2)
  [ $((t2 - t1)) -ge 1000 ] || fail "second attempt after $((t2 - t1)) ms, Retry-After was 1 s"
}

t_webhook_retry_after_http_date_is_honoured() {
  recv_start --fail-first 1 --fail-status 503 --retry-after 2 --retry-after-date 1 || return 1
  ndjson 1 > in.ndjson
  OUTBOX_WEBHOOK_URL="$URL/hook" "$OUTBOXD" run "$WEBHOOK" --db ndjson:in.ndjson --log text 2> log ||
    fail "exit $?" || return 1
  # An HTTP date has whole seconds: 2 s from the receiver's now is 1 to 2 s away.
  assert_grep 'event failed id=1 .*retry_in_ms=(1000|2000) ' log "retry from an HTTP-date Retry-After" || return 1
  assert_eq "$(grep -c 'key=1 ' req.log)" 2 "two attempts" || return 1
  local t1 t2
  t1=$(grep -m1 'key=1 attempt=1 ' req.log | grep -oE '^ts_ms=[0-9]+' | cut -d= -f2)
  t2=$(grep -m1 'key=1 attempt=2 ' req.log | grep -oE '^ts_ms=[0-9]+' | cut -d= -f2)
  [ $((t2 - t1)) -ge 900 ] || fail "second attempt after $((t2 - t1)) ms, Retry-After was a date 2 s ahead"
}

t_webhook_10000_at_concurrency_200_memory_flat() {
  recv_start || return 1
  "$OUTBOXD" init --db x.db 2> /dev/null || fail "init" || return 1
  ndjson 10000 t '{"n":1}' | "$OUTBOXD" enqueue --db x.db 2> /dev/null || fail "enqueue" || return 1
  cat > h.lua <<LUA
local deliver = dofile("$WEBHOOK")
local n = 0
return function(ev)
  local r = deliver(ev)
  n = n + 1
  if n == 2000 or n == 10000 then outbox.log.info("RSS", { n = n, rss = outbox.stats().rss }) end
  return r
end
LUA
  OUTBOX_WEBHOOK_URL="$URL/hook" "$OUTBOXD" run h.lua --db x.db --once --concurrency 200 --batch 200 \
    --memory-interval 50 --no-watch --log text 2> log || fail "exit $?" || return 1
  assert_eq "$(grep -oE 'stopped processed=[0-9]+ done=[0-9]+' log)" "stopped processed=10000 done=10000" "all delivered" || return 1
  assert_eq "$(recv_stat requests)" 10000 "requests seen" || return 1
  assert_eq "$(grep 'status=200' req.log | grep -oE 'key=[0-9]+' | sort -u | wc -l)" 10000 "distinct keys" || return 1
  local conns r2 r10
  conns=$(recv_stat connections)
  [ "$conns" -le 400 ] || fail "connections were not reused: $conns for 10000 requests" || return 1
  r2=$(grep -E ' RSS .*n=2000( |$)' log | grep -oE 'rss=[0-9]+' | cut -d= -f2)
  r10=$(grep -E ' RSS .*n=10000( |$)' log | grep -oE 'rss=[0-9]+' | cut -d= -f2)
  echo "connections=$conns rss_2000=$r2 rss_10000=$r10"
  [ "$r10" -lt $((1024 * 1024 * 1024)) ] || fail "RSS $r10 above 1 GiB" || return 1
  if ldd "$OUTBOXD" | grep -q libasan; then return 0; fi # ASan's quarantine grows RSS
  [ "$r10" -le $((r2 + r2 / 4 + 8 * 1024 * 1024)) ] || fail "RSS grew from $r2 to $r10"
}

# The proxy settings of the environment are curl's: http_proxy for http URLs, with
# hosts in no_proxy reached directly (outboxd reads them once, not per request).
t_http_proxy_from_the_environment() {
  recv_start || return 1
  cat > h.lua <<'LUA'
local direct = os.getenv("URL") .. "/direct"
return function(ev)
  local a, ea = outbox.http.post("http://hook.invalid/via-proxy", "{}")
  local b, eb = outbox.http.get(direct)
  outbox.log.info("PROXY", { a = a and a.status or ea, b = b and b.status or eb })
end
LUA
  ndjson 1 > in.ndjson
  URL=$URL http_proxy=$URL no_proxy=127.0.0.1 HTTPS_PROXY= ALL_PROXY= all_proxy= \
    "$OUTBOXD" run h.lua --db ndjson:in.ndjson --log text 2> log || fail "exit $?" || return 1
  assert_grep 'PROXY id=1 a=200 b=200' log "both answered" || return 1
  assert_grep 'method=POST path=http://hook.invalid/via-proxy ' req.log "through the proxy" || return 1
  assert_grep 'method=GET path=/direct ' req.log "no_proxy host reached directly" || return 1
}

t_http_abandoned_requests_are_cancelled() {
  recv_start --delay 60000 || return 1
  cat > h.lua <<'LUA'
return function(ev)
  outbox.log.info("WAITING")
  local r, err = outbox.http.get(os.getenv("URL") .. "/hang", { timeout = 60 })
  outbox.log.info("RETURNED", { err = err })
end
LUA
  ndjson 2 > in.ndjson
  URL=$URL timeout 30 "$OUTBOXD" run h.lua --db ndjson:in.ndjson --timeout 300 --max-attempts 1 \
    --log text 2> log || fail "exit $?" || return 1
  assert_grep 'event dead id=2 .*error="?(timeout|.*timeout after)' log "handler timeout ends the wait" || return 1
  # A signal while a request is in flight: drained, then cancelled and freed.
  mkfifo in.pipe
  ( ndjson 1; exec sleep 30 ) > in.pipe &
  BG="$BG $!"
  URL=$URL "$OUTBOXD" run h.lua --db ndjson:- --drain-timeout 100 --log text 2> log2 < in.pipe &
  local pid=$!
  BG="$BG $pid"
  wait_for 'WAITING' log2 || return 1
  kill -TERM $pid; wait $pid; assert_eq "$?" 0 "exit after SIGTERM with a request in flight" || return 1
  assert_no_grep 'RETURNED' log2 "the cancelled call never returns"
}

t_example_webhook_relay() {
  OUTBOXD=$OUTBOXD RECEIVER=$RECEIVER bash "$ROOT/examples/webhook-relay/run.sh" > out 2>&1 ||
    { sed 's/^/      | /' out | tail -20; fail "run.sh failed"; return 1; }
  assert_grep 'webhook-relay: ok' out "example finished"
}
