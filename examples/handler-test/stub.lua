-- Stands in for the shipping service in `outboxd test`: gets each request
-- ({method, url, headers, body}) and returns {status=, headers=, body=} or nil, err.
local cjson = require "cjson"
local calls = {}

return function(req)
  assert(req.method == "POST" and req.headers["idempotency-key"], "unexpected request")
  local order = cjson.decode(req.body)
  calls[order.id] = (calls[order.id] or 0) + 1
  if order.id == 2 and calls[2] <= 2 then return { status = 503 } end -- flaky, then fine
  if order.id == 3 then return { status = 422, body = "bad address" } end
  if order.id == 4 then return nil, "connection refused" end -- down for good
  if order.id == 5 and calls[5] == 1 then return { status = 429 } end -- throttled once
  return { status = 201, headers = { ["x-tracking"] = "T" .. order.id } }
end
