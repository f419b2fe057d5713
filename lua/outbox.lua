-- outbox: the Lua half of the `outbox` module, embedded in the binary.
-- The host calls this chunk once per Lua state with `core` (the C half) and gets
-- back the public module and the internals it drives: the worker coroutine body,
-- the event metatable and the hook table. No globals are set here.
local core = ...
local cjson = require "cjson"

-- outbox.json.decode is cjson.decode with a faster path for strict JSON (src/json.c)
local json_decode, json_encode = core.json_decoder(cjson.decode), cjson.encode
local decode_payload, unescape = core.payload_decoder(cjson.decode), core.unescape
local pcall, xpcall, type, tostring, setmetatable = pcall, xpcall, type, tostring, setmetatable
local getmetatable, rawget, rawset, select, error = getmetatable, rawget, rawset, select, error
local yield = coroutine.yield
local traceback = debug.traceback

local DONE = core.DONE              -- sentinel: "this yield ends a run"
local K_DONE, K_FAIL, K_RETRY, K_REJECT, K_SNOOZE = 0, 1, 2, 3, 4
local T_EVENT, T_TIMER = 1, 3   -- task kinds (src/host.c); anything else is a hook

local outbox = { json = { encode = json_encode, decode = json_decode, null = cjson.null,
                          valid = core.json_checker(cjson.decode) } }

---------------------------------------------------------------- routing
local routes = {}        -- exact topic -> fn
local prefixes = {}      -- { prefix, fn }, longest first
local default_handler    -- the function the script returned
local route_specs = {}   -- pattern -> what the C core isolates per route (see route_opts)

-- "N/s" or "N/m" (or a number, per second) -> starts per second.
local function parse_rate(v)
  if type(v) == "number" and v > 0 then return v end
  if type(v) ~= "string" then return nil end
  local n, unit = v:match("^%s*([%d%.]+)%s*/%s*([sm])%s*$")
  n = tonumber(n)
  if not n or n <= 0 then return nil end
  return unit == "m" and n / 60 or n
end

local function positive(v) return type(v) == "number" and v > 0 and v < 1e9 end

-- Checks outbox.handle's options; returns the route's spec for the C core.
local function route_opts(topic, opts)
  local spec = { pattern = topic }
  if opts == nil then return spec end
  if type(opts) ~= "table" then error("outbox.handle: options must be a table", 3) end
  for k, v in pairs(opts) do
    if k == "breaker" then
      if type(v) ~= "string" or v == "" then
        error("outbox.handle: breaker must be a non-empty name", 3)
      end
      spec.breaker = v
    elseif k == "concurrency" then
      if not positive(v) or v % 1 ~= 0 then
        error("outbox.handle: concurrency must be a whole number >= 1", 3)
      end
      spec.concurrency = v
    elseif k == "rate" then
      spec.rate = parse_rate(v)
      if not spec.rate then
        error("outbox.handle: rate must be \"N/s\" or \"N/m\", got " .. tostring(v), 3)
      end
    elseif k == "timeout" or k == "slow" then
      if not positive(v) then error("outbox.handle: " .. k .. " must be seconds > 0", 3) end
      spec[k] = v
    else
      error("outbox.handle: unknown option '" .. tostring(k) ..
            "' (breaker, concurrency, rate, timeout, slow)", 3)
    end
  end
  return spec
end

function outbox.handle(topic, fn, opts)
  if type(topic) ~= "string" or topic == "" then
    error("outbox.handle: topic must be a non-empty string", 2)
  end
  if type(fn) ~= "function" then error("outbox.handle: handler must be a function", 2) end
  route_specs[topic] = route_opts(topic, opts)
  if topic:sub(-1) == "*" then
    local p = topic:sub(1, -2)
    for i = #prefixes, 1, -1 do
      if prefixes[i][1] == p then table.remove(prefixes, i) end
    end
    prefixes[#prefixes + 1] = { p, fn }
    table.sort(prefixes, function(a, b) return #a[1] > #b[1] end)
  else
    routes[topic] = fn
  end
end

local function route(topic)
  local fn = routes[topic]
  if fn then return fn end
  for i = 1, #prefixes do
    local p = prefixes[i]
    if topic:sub(1, #p[1]) == p[1] then return p[2] end
  end
  return default_handler
end

---------------------------------------------------------------- outcomes
local retry_mt, reject_mt, poison_mt, snooze_mt = {}, {}, {}, {}

local function delay_of(name, seconds)
  local n = tonumber(seconds)
  -- NaN fails every comparison and inf would never come due: both are refused
  if not n or not (n >= 0) or n == math.huge then
    error("outbox." .. name .. ": seconds must be a finite number >= 0, got " .. tostring(seconds), 3)
  end
  return n
end

-- Failed; the next attempt after `seconds`. `reason` (optional) becomes last_error.
function outbox.retry(seconds, reason)
  return setmetatable({ delay = delay_of("retry", seconds),
                        reason = reason ~= nil and tostring(reason) or nil }, retry_mt)
end

-- Like retry, and this event's route starts no new event on this host for `seconds`
-- (a downstream answering 429 or 503 with Retry-After).
function outbox.snooze(seconds, reason)
  return setmetatable({ delay = delay_of("snooze", seconds),
                        reason = reason ~= nil and tostring(reason) or nil }, snooze_mt)
end

function outbox.reject(reason)
  return setmetatable({ reason = reason ~= nil and tostring(reason) or "rejected" }, reject_mt)
end

---------------------------------------------------------------- events
-- `payload`, `data` and `headers` are made on first access and cached in the event.
-- A string payload from NDJSON comes as its raw form, the body of the JSON string
-- with its escapes: most handlers never read it, so it is unescaped only when they
-- do. The raw form (and the headers' JSON text) waits in the event's own metatable,
-- not in the event, so `pairs(event)` shows only the event's fields.
local function event_index(ev, k)
  local mt = getmetatable(ev)
  if k == "data" then
    local p, ok, v = rawget(ev, "payload")
    if p ~= nil then
      ok, v = pcall(json_decode, p)
    else
      ok, v = pcall(decode_payload, mt.raw)
    end
    if not ok then
      error(setmetatable({ msg = "payload is not valid JSON: " .. tostring(v) }, poison_mt), 2)
    end
    rawset(ev, "data", v)
    return v
  elseif k == "payload" then
    local raw = mt.raw
    if raw == nil then return nil end
    local p = unescape(raw)
    rawset(ev, "payload", p)
    mt.raw = nil
    return p
  elseif k == "headers" then
    local raw = mt.headers
    if raw == nil then return nil end
    local ok, v = pcall(json_decode, raw)
    if not ok then v = nil end
    rawset(ev, "headers", v)
    mt.headers = nil
    return v
  end
end
local event_mt = { __index = event_index }  -- events with nothing held back

-- The event table of one claimed event, built by one table constructor; the host
-- passes the fields as arguments.
local function new_event(id, topic, key, payload, escaped, headers, attempt, created_at)
  if escaped then
    local mt = headers == nil and { __index = event_index, raw = payload }
      or { __index = event_index, raw = payload, headers = headers }
    return setmetatable({ id = id, topic = topic, key = key, attempt = attempt,
                          created_at = created_at }, mt)
  end
  local ev = { id = id, topic = topic, key = key, payload = payload, attempt = attempt,
               created_at = created_at }
  if headers == nil then return setmetatable(ev, event_mt) end
  return setmetatable(ev, { __index = event_index, headers = headers })
end

local function on_error(e)
  if getmetatable(e) == poison_mt then return e end
  if type(e) ~= "string" then
    if type(e) == "table" and e.msg then return tostring(e.msg) end
    return tostring(e)
  end
  return e
end

local function run_event(ev)
  local fn = route(ev.topic)
  if not fn then return K_REJECT, "no handler for topic " .. ev.topic end
  local ok, r, e = xpcall(fn, on_error, ev)
  if not ok then
    if getmetatable(r) == poison_mt then return K_REJECT, r.msg end
    return K_FAIL, r
  end
  if r == nil or r == true then return K_DONE end
  if r == false then return K_FAIL, e ~= nil and tostring(e) or "handler returned false" end
  local mt = getmetatable(r)
  if mt == retry_mt then return K_RETRY, r.delay, r.reason end
  if mt == snooze_mt then return K_SNOOZE, r.delay, r.reason end
  if mt == reject_mt then return K_REJECT, r.reason end
  return K_DONE
end

---------------------------------------------------------------- hooks
local hooks = {}         -- name -> array of fn

function outbox.on(name, fn)
  if type(name) ~= "string" then error("outbox.on: name must be a string", 2) end
  if type(fn) ~= "function" then error("outbox.on: handler must be a function", 2) end
  local list = hooks[name]
  if not list then list = {}; hooks[name] = list end
  list[#list + 1] = fn
  return fn
end

function outbox.off(name, fn)
  local list = hooks[name]
  if not list then return false end
  for i = #list, 1, -1 do
    if fn == nil or list[i] == fn then table.remove(list, i) end
  end
  if #list == 0 then hooks[name] = nil end
  return true
end

function outbox.emit(name, data)
  local list = hooks[name]
  if not list then return 0 end
  for i = 1, #list do core.spawn(list[i], data, name) end
  return #list
end

-- The body of every worker coroutine: runs one event, hook or timer run, yields
-- DONE with the outcome, and waits to be handed the next one. Coroutines are
-- recycled this way.
local function run_hook(fn, arg, name, kind)
  local ok, err = xpcall(fn, traceback, arg)
  if not ok then core.log_hook_error(name, tostring(err), kind == T_TIMER) end
end

-- An event run gets new_event's arguments (a..h); a hook or timer run gets fn, arg,
-- name.
local function worker(kind, a, b, c, d, e, f, g, h)
  while true do
    if kind == T_EVENT then
      kind, a, b, c, d, e, f, g, h = yield(DONE, run_event(new_event(a, b, c, d, e, f, g, h)))
    else
      run_hook(a, b, c, kind)
      kind, a, b, c, d, e, f, g, h = yield(DONE, K_DONE)
    end
  end
end

---------------------------------------------------------------- enqueue
-- outbox.enqueue{topic=, payload=, key=, headers=, delay=}: a new event. Inside a
-- handler it is written with that event's ack, and only when the run is done;
-- elsewhere (hooks, the top level) at once. payload: a string, or a table encoded as
-- JSON; headers: a table of names to strings, numbers or booleans; delay: seconds.
local enqueue_fields = { topic = true, payload = true, key = true, headers = true, delay = true }

-- JSON text of v, or nil and why not.
local function encode(what, v)
  local ok, text = pcall(json_encode, v)
  if not ok then return nil, what .. " cannot be encoded as JSON: " .. tostring(text) end
  return text
end

-- The headers column (a JSON object) of a table, or nil and why not.
local function enqueue_headers(h)
  if type(h) ~= "table" then return nil, "headers must be a table, got " .. type(h) end
  for k, v in pairs(h) do
    local tv = type(v)
    if type(k) ~= "string" then return nil, "headers must have string names" end
    if tv ~= "string" and tv ~= "number" and tv ~= "boolean" then
      return nil, "header '" .. k .. "' must be a string, number or boolean, got " .. tv
    end
  end
  if next(h) == nil then return "{}" end
  return encode("headers", h)
end

-- What is wrong with an outbox.enqueue table, or nil; with the payload and headers
-- as text.
local function enqueue_check(spec)
  if type(spec) ~= "table" then
    return "expects a table {topic=, payload=, key=, headers=, delay=}, got " .. type(spec)
  end
  for k in pairs(spec) do
    if not enqueue_fields[k] then
      return "unknown field '" .. tostring(k) .. "' (topic, payload, key, headers, delay)"
    end
  end
  local topic, payload, key, delay = spec.topic, spec.payload, spec.key, spec.delay
  if topic == nil then return "topic is missing" end
  if type(topic) ~= "string" or topic == "" then
    return "topic must be a non-empty string, got " .. (topic == "" and '""' or type(topic))
  end
  if payload == nil then return "payload is missing (a string, or a table encoded as JSON)" end
  local err, headers
  if type(payload) == "table" then
    payload, err = encode("payload", payload)
    if not payload then return err end
  elseif type(payload) ~= "string" then
    return "payload must be a string or a table, got " .. type(payload)
  end
  if type(key) == "number" then
    key = tostring(key)
  elseif key ~= nil and type(key) ~= "string" then
    return "key must be a string or a number, got " .. type(key)
  end
  if delay ~= nil and (type(delay) ~= "number" or not (delay >= 0) or delay == math.huge) then
    return "delay must be a finite number of seconds >= 0, got " .. tostring(delay)
  end
  if spec.headers ~= nil then
    headers, err = enqueue_headers(spec.headers)
    if not headers then return err end
  end
  return nil, topic, payload, key, headers, delay
end

function outbox.enqueue(spec)
  local err, topic, payload, key, headers, delay = enqueue_check(spec)
  if not err then
    local ok, why = core.enqueue(topic, payload, key, headers, delay)
    if ok then return true end
    err = why
  end
  error("outbox.enqueue: " .. err, 2)
end

---------------------------------------------------------------- time, stats, log
outbox.sleep = core.sleep
outbox.now = core.now
-- every(seconds, fn) / after(seconds, fn) -> handle (handle:cancel(), .runs,
-- .skipped, .scheduled, .running, .name); fn(handle) runs in its own coroutine
-- (src/api_time.c, scheduled by src/host.c and src/timers.c)
outbox.every = core.every
outbox.after = core.after
outbox.stats = core.stats
outbox.configure = core.configure
outbox.log = {
  debug = function(msg, fields) core.log(0, msg, fields) end,
  info = function(msg, fields) core.log(1, msg, fields) end,
  warn = function(msg, fields) core.log(2, msg, fields) end,
  error = function(msg, fields) core.log(3, msg, fields) end,
}
---------------------------------------------------------------- http
-- request{method=, url=, headers=, body=, timeout=} -> res {status, headers, body} or
-- nil, err; a non-2xx status is a response, not an error. get(url, opts) and
-- post(url, body, opts) are shorthands. All three live in src/http.c.
-- date(s) reads an HTTP date (Retry-After, Date) as seconds since the epoch, or nil.
outbox.http = { request = core.http_request, get = core.http_get, post = core.http_post,
                date = core.http_date }

---------------------------------------------------------------- brokers
-- outbox.redis.connect(url) -> client; client:call(cmd, ...) -> reply or nil, err
-- (src/redis.c). outbox.nats.connect(url) -> client; client:publish(subject, data),
-- client:request(subject, data, {msg_id=, timeout=}) (src/nats.c) and
-- client:js_publish(subject, data, {msg_id=, timeout=}) -> {stream=, seq=,
-- duplicate=} or nil, err: a request to a JetStream stream, answered by its ack.
outbox.redis = { connect = core.redis_connect, null = cjson.null }
outbox.nats = { connect = core.nats_connect }

local nats_request = core.nats_methods.request

local function js_error(ack, subject)
  local e = ack.error
  if type(e) ~= "table" then return "nats: JetStream error on '" .. subject .. "'" end
  return string.format("nats: JetStream rejected the message on '%s': %s (code %s, err_code %s)",
                       subject, tostring(e.description), tostring(e.code), tostring(e.err_code))
end

function core.nats_methods.js_publish(client, subject, data, opts)
  local raw, err = nats_request(client, subject, data, opts)
  if not raw then
    if err:find("no responders", 1, true) then
      err = err .. " (no JetStream stream takes this subject)"
    end
    return nil, err
  end
  local ok, ack = pcall(json_decode, raw)
  if not ok or type(ack) ~= "table" then
    return nil, "nats: not a JetStream ack on '" .. subject .. "': " .. raw:sub(1, 200)
  end
  if ack.error ~= nil then return nil, js_error(ack, subject) end
  if type(ack.stream) ~= "string" or type(ack.seq) ~= "number" then
    return nil, "nats: not a JetStream ack on '" .. subject .. "': " .. raw:sub(1, 200)
  end
  return { stream = ack.stream, seq = ack.seq, duplicate = ack.duplicate == true }
end

-- `outboxd test --http-stub FILE`: the function FILE returns answers every request
-- ({status=, headers=, body=}, or nil, err for a network error); nothing is sent.
if core.http_stub then
  local stub = dofile(core.http_stub)
  local function request(req)
    local res, err = stub({ method = req.method or "GET", url = req.url, headers = req.headers or {},
                            body = req.body, timeout = req.timeout })
    if res == nil then return nil, err or "no response from the HTTP stub" end
    return { status = res.status or 200, headers = res.headers or {}, body = res.body or "" }
  end
  outbox.http.request = request
  outbox.http.get = function(url, opts)
    opts = opts or {}
    return request({ method = "GET", url = url, headers = opts.headers, timeout = opts.timeout })
  end
  outbox.http.post = function(url, body, opts)
    opts = opts or {}
    return request({ method = "POST", url = url, body = body, headers = opts.headers,
                     timeout = opts.timeout })
  end
end

setmetatable(outbox, { __index = function(_, k) if k == "config" then return core.config() end end })

---------------------------------------------------------------- fan-out
-- Runs fn(item, i) for every item, at most `concurrency` at a time, each in its own
-- coroutine, and waits for them. Settled (outbox.all_settled): every outcome is kept,
-- { {ok=true, value=v} | {ok=false, err=e} }. Fail fast (outbox.all, the seed's
-- runAll): the list of values, or the first error, raised after cancelling the items
-- still running (what they wait on is dropped) and starting no more.
local function fan_out(name, items, fn, concurrency, fail_fast)
  if type(items) ~= "table" then error("outbox." .. name .. ": items must be a table", 3) end
  if type(fn) ~= "function" then error("outbox." .. name .. ": fn must be a function", 3) end
  local n = #items
  local limit = tonumber(concurrency) or n
  if limit < 1 then limit = 1 end
  local results, pending, nexti = {}, 0, 1
  if n == 0 then return results end
  local parent, seq = core.current()
  if fail_fast and not parent then
    error("outbox." .. name .. " must be called from a handler or hook", 3)
  end
  local running, failed, first_err = {}, false, nil
  local launch
  local function child(i)
    if failed then pending = pending - 1; return end
    if fail_fast then running[i] = { core.me() } end
    local ok, v = pcall(fn, items[i], i)
    running[i] = nil
    pending = pending - 1
    if failed then return end
    if not fail_fast then
      results[i] = ok and { ok = true, value = v } or { ok = false, err = v }
    elseif ok then
      results[i] = v
    else
      failed, first_err = true, v
      for j, r in pairs(running) do
        running[j] = nil
        if core.cancel(r[1], r[2]) then pending = pending - 1 end
      end
      core.resume_waiter(parent, seq)
      return
    end
    if nexti <= n then
      local j = nexti
      nexti = j + 1
      launch(j)
    elseif pending == 0 and parent then
      core.resume_waiter(parent, seq)
    end
  end
  launch = function(i)
    pending = pending + 1
    core.spawn(child, i, name, true)
  end
  while nexti <= n and pending < limit do
    local j = nexti
    nexti = j + 1
    launch(j)
  end
  if parent then core.wait_children(parent, seq) end
  if failed then error(first_err, 0) end
  return results
end

function outbox.all_settled(items, fn, concurrency)
  local results = fan_out("all_settled", items, fn, concurrency, false)
  return results
end

function outbox.all(items, fn, concurrency)
  local values = fan_out("all", items, fn, concurrency, true)
  return values
end

local internals = {
  worker = worker,
  new_event = new_event,
  hooks = hooks,
  set_handler = function(fn) default_handler = fn end,
  has_routes = function() return next(routes) ~= nil or #prefixes > 0 end,
  has_default = function() return default_handler ~= nil end,
  route_specs = function()
    local list = {}
    for _, spec in pairs(route_specs) do list[#list + 1] = spec end
    return list
  end,
}
return outbox, internals
