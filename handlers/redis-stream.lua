-- redis-stream.lua: appends each event to a Redis stream with XADD.
-- The reply (the entry id) -> done; no connection or an error reply -> retried.
--
--   OUTBOX_REDIS_URL=redis://127.0.0.1:6379 outboxd run handlers/redis-stream.lua
--   OUTBOX_REDIS_URL      redis://[:password@]host[:port][/db] (default redis://127.0.0.1:6379)
--   OUTBOX_REDIS_STREAM   the stream; "<topic>" in it is the event's topic
--                         (default outbox:<topic>)
--
-- One entry per event with the fields id, topic, key (when the event has one) and
-- payload. At least once: an event whose XADD reached Redis but whose reply was
-- lost is added again when it is retried; readers dedupe by the id field.
local url = os.getenv("OUTBOX_REDIS_URL")
if not url or url == "" then url = "redis://127.0.0.1:6379" end
local stream = os.getenv("OUTBOX_REDIS_STREAM")
if not stream or stream == "" then stream = "outbox:<topic>" end

local client, err = outbox.redis.connect(url)
if not client then error("OUTBOX_REDIS_URL: " .. err, 0) end

local per_topic = stream:find("<topic>", 1, true) ~= nil
local function stream_of(topic)
  if not per_topic then return stream end
  return (stream:gsub("<topic>", function() return topic end))
end

local format = string.format

return function(event)
  local id = format("%d", event.id)
  local res, e
  if event.key then
    res, e = client:call("XADD", stream_of(event.topic), "*", "id", id, "topic", event.topic,
                         "key", event.key, "payload", event.payload)
  else
    res, e = client:call("XADD", stream_of(event.topic), "*", "id", id, "topic", event.topic,
                         "payload", event.payload)
  end
  if not res then error("redis-stream: " .. e, 0) end
end
