-- webhook.lua: POSTs each event's payload as JSON to OUTBOX_WEBHOOK_URL.
-- 2xx -> done; 408, 429, 5xx -> retried; a 429 or 503 with Retry-After (seconds or
-- an HTTP date, up to 5 minutes) snoozes: the event and every other event of its
-- route wait that long (outbox.snooze), with "HTTP <status>: <start of body>" as the
-- event's last_error (a longer Retry-After delays only the event);
-- other statuses -> dead now (retrying cannot help); network errors -> retried.
--
--   OUTBOX_WEBHOOK_URL=https://example.com/hook outboxd run handlers/webhook.lua
--   OUTBOX_WEBHOOK_TIMEOUT=10                      seconds per request (default 30)
--   OUTBOX_WEBHOOK_HEADERS='{"Authorization":"Bearer ..."}'   extra headers
--
-- Headers sent: Content-Type: application/json, Idempotency-Key: <event id>,
-- X-Outbox-Topic, X-Outbox-Key (when the event has a key), X-Outbox-Attempt.
local url = os.getenv("OUTBOX_WEBHOOK_URL")
if not url or url == "" then error("OUTBOX_WEBHOOK_URL is not set", 0) end

local timeout = nil
local t = os.getenv("OUTBOX_WEBHOOK_TIMEOUT")
if t and t ~= "" then
  timeout = tonumber(t)
  if not timeout or timeout <= 0 then
    error("OUTBOX_WEBHOOK_TIMEOUT must be a number of seconds > 0, got " .. t, 0)
  end
end

-- Extra headers: a JSON object of valid header names (RFC 9110 tokens) to strings or
-- numbers without control characters; anything else stops the script loading, so a
-- typo fails `outboxd check` and the start, not every delivery.
local extra = {}
local h = os.getenv("OUTBOX_WEBHOOK_HEADERS")
if h and h ~= "" then
  local function bad(why) error("OUTBOX_WEBHOOK_HEADERS: " .. why, 0) end
  local ok, v = pcall(outbox.json.decode, h)
  if not ok or type(v) ~= "table" or not h:match("^%s*{") then
    error("OUTBOX_WEBHOOK_HEADERS must be a JSON object of header names to strings", 0)
  end
  for name, value in pairs(v) do
    if type(name) ~= "string" or not name:match("^[%w!#$%%&'*+%-.^_`|~]+$") then
      bad(string.format("%q is not a valid header name", tostring(name)))
    end
    if type(value) ~= "string" and type(value) ~= "number" then
      bad(string.format("the value of %s must be a string, not a %s", name,
                        value == outbox.json.null and "null" or type(value)))
    end
    value = tostring(value)
    if value:find("[%z\1-\8\10-\31\127]") then
      bad(string.format("the value of %s holds a control character (CR, LF, ...)", name))
    end
    extra[name] = value
  end
end

local json_valid, json_encode = outbox.json.valid, outbox.json.encode
local SNOOZE_MAX = 300 -- seconds: the longest Retry-After that holds back the whole route

-- The payload as JSON: as it is when it is JSON already, else as a JSON string.
local function body_of(event)
  local p = event.payload
  if json_valid(p) then return p end
  return json_encode(p)
end

-- One headers table and one options table for every request: outbox.http copies
-- them before it yields, so the next event may refill them at once.
local hs = {}
for name, value in pairs(extra) do hs[name] = value end
hs["Content-Type"] = "application/json"
local opts = { headers = hs, timeout = timeout }

local function headers_for(event)
  hs["Idempotency-Key"] = string.format("%d", event.id)
  hs["X-Outbox-Topic"] = event.topic
  hs["X-Outbox-Attempt"] = tostring(event.attempt)
  hs["X-Outbox-Key"] = event.key or extra["X-Outbox-Key"]
  return hs
end

-- Seconds to wait from a Retry-After value, or nil.
local function retry_after(v)
  if not v then return nil end
  local n = tonumber(v)
  if n then return n >= 0 and n or nil end
  local at = outbox.http.date(v)
  if at then return math.max(0, at - os.time()) end
  return nil
end

local function snippet(body)
  body = (body or ""):gsub("%s+", " "):match("^ ?(.-) ?$")
  if #body > 200 then body = body:sub(1, 200) .. "..." end
  return body
end

return function(event)
  headers_for(event)
  local res, err = outbox.http.post(url, body_of(event), opts)
  if not res then error("webhook: " .. err, 0) end
  local s = res.status
  if s >= 200 and s <= 299 then return end
  local why = string.format("HTTP %d: %s", s, snippet(res.body))
  if s == 408 or s == 429 or s >= 500 then
    local after = retry_after(res.headers["retry-after"])
    -- the whole route waits, unless the downstream asks for more than SNOOZE_MAX
    -- seconds: one answer does not stop a route for longer; the event alone waits
    if after and (s == 429 or s == 503) and after <= SNOOZE_MAX then
      return outbox.snooze(after, why)
    end
    if after then return outbox.retry(after, why) end
    error("webhook: " .. why, 0)
  end
  return outbox.reject("webhook: " .. why)
end
