-- Sends each order to the shipping service. `run.sh` tests it without a database
-- or a network: `outboxd test handler.lua fixtures.ndjson --http-stub stub.lua`.
local url = os.getenv("SHIPPING_URL") or "http://shipping.internal/orders"

outbox.handle("order.*", function(ev)
  local order = ev.data
  if type(order.id) ~= "number" then return outbox.reject("order without an id") end
  if order.hold then outbox.sleep(order.hold) end -- a fake clock: no real wait in tests
  local res, err = outbox.http.post(url, ev.payload, {
    headers = { ["content-type"] = "application/json", ["idempotency-key"] = tostring(ev.id) },
  })
  if not res then return false, err end
  if res.status == 429 then return outbox.retry(60) end -- 60 s later, at once in tests
  if res.status >= 500 then return false, "shipping answered " .. res.status end
  if res.status >= 400 then return outbox.reject("shipping refused: " .. res.status .. " " .. res.body) end
  outbox.log.info("shipped", { order = order.id, tracking = res.headers["x-tracking"] })
  -- the next step, written with this event's ack (a failed run writes nothing)
  outbox.enqueue{ topic = "order.shipped", key = order.id,
                  payload = { tracking = res.headers["x-tracking"] } }
end)
