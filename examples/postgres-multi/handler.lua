-- Logs each event with the host that ran it; events of one key run in id order,
-- whichever host takes them.
local me = os.getenv("HOST_NAME") or "host"
return function(event)
  outbox.log.info("handled", { host = me, key = event.key, topic = event.topic })
  outbox.sleep(0.01) -- pretend to call something
end
