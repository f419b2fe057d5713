-- nats.lua: publishes each event to NATS JetStream and waits for the stream's ack.
-- The ack -> done (a duplicate ack too: the stream has the event already); no
-- connection, no ack in time or a JetStream error -> retried.
--
--   OUTBOX_NATS_URL=nats://127.0.0.1:4222 outboxd run handlers/nats.lua
--   OUTBOX_NATS_URL       nats://[user:password@]host[:port] (default nats://127.0.0.1:4222)
--   OUTBOX_NATS_SUBJECT   the subject; "<topic>" in it is the event's topic
--                         (default outbox.<topic>)
--   OUTBOX_NATS_STREAM    the stream, created when missing with the subjects
--                         outbox.> (the subject with ">" for "<topic>") (default OUTBOX)
--
-- Each message carries Nats-Msg-Id = the event id, so JetStream drops a retried
-- event it already stored: effectively once within the stream's duplicate window
-- (2 minutes by default).
local url = os.getenv("OUTBOX_NATS_URL")
if not url or url == "" then url = "nats://127.0.0.1:4222" end
local subject = os.getenv("OUTBOX_NATS_SUBJECT")
if not subject or subject == "" then subject = "outbox.<topic>" end
local stream = os.getenv("OUTBOX_NATS_STREAM")
if not stream or stream == "" then stream = "OUTBOX" end
if stream:find("[%s%.%*>]") then
  error("OUTBOX_NATS_STREAM must be a name without spaces, '.', '*' or '>', got " .. stream, 0)
end

local client, err = outbox.nats.connect(url)
if not client then error("OUTBOX_NATS_URL: " .. err, 0) end

local json_encode, json_decode = outbox.json.encode, outbox.json.decode
local per_topic = subject:find("<topic>", 1, true) ~= nil
local stream_subjects = { (subject:gsub("<topic>.*$", ">")) }

local function subject_of(topic)
  if not per_topic then return subject end
  return (subject:gsub("<topic>", function() return topic end))
end

-- Creates the stream unless it exists; true, or nil, err. One run asks while the
-- others wait for its answer; it is asked again after a publish found no stream
-- (deleted meanwhile).
local stream_ok, asking, asked_err = false, false, nil

local function create_stream()
  local raw, e = client:request("$JS.API.STREAM.INFO." .. stream, "")
  if not raw then return nil, e end
  local ok, info = pcall(json_decode, raw)
  if ok and type(info) == "table" and info.error == nil then return true end
  local config = json_encode { name = stream, subjects = stream_subjects }
  raw, e = client:request("$JS.API.STREAM.CREATE." .. stream, config)
  if not raw then return nil, e end
  ok, info = pcall(json_decode, raw)
  if not ok or type(info) ~= "table" then return nil, "nats: unreadable reply: " .. raw:sub(1, 200) end
  -- 10058: the stream exists already (created by another host meanwhile)
  if info.error ~= nil and info.error.err_code ~= 10058 then
    return nil, "nats: cannot create stream " .. stream .. ": " .. tostring(info.error.description)
  end
  outbox.log.info("nats stream created", { stream = stream, subjects = stream_subjects[1] })
  return true
end

-- `asking` is when the asking run started: a run abandoned meanwhile (its timeout)
-- never clears it, so after ASK_WAIT seconds another run asks in its place.
local ASK_WAIT = 10
local function ensure_stream()
  if stream_ok then return true end
  while asking and outbox.now() - asking < ASK_WAIT do
    outbox.sleep(0.005)
    if not asking then
      if stream_ok then return true end
      return nil, asked_err
    end
  end
  asking = outbox.now()
  local ok, done, e = pcall(create_stream)
  asking = false
  if ok and done then
    stream_ok = true
    return true
  end
  asked_err = ok and e or tostring(done)
  return nil, asked_err
end

local format = string.format
local opts = { msg_id = "" }

return function(event)
  local ok, e = ensure_stream()
  if not ok then error(e, 0) end
  opts.msg_id = format("%d", event.id)
  local ack
  ack, e = client:js_publish(subject_of(event.topic), event.payload, opts)
  if not ack then
    if e:find("no responders", 1, true) then stream_ok = false end
    error(e, 0)
  end
end
