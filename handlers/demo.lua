-- demo.lua: a handler to start from. It logs each event, shows the outcome forms
-- and a few hooks. Run it with `make run`, or `outboxd run handlers/demo.lua`.
local seen = 0

outbox.on("start", function(s)
  outbox.log.info("demo handler ready", { concurrency = s.concurrency, generation = s.generation })
end)

outbox.on("event:dead", function(a)
  outbox.log.warn("dead-lettered", { id = a.event.id, error = a.error })
end)

outbox.on("shutdown", function(s)
  outbox.log.info("demo handler done", { done = s.done, dead = s.dead, seen = seen })
end)

-- Events whose topic starts with "user." get their own route.
outbox.handle("user.*", function(event)
  local user = event.data -- the payload decoded as JSON on first access
  outbox.log.info("welcome mail", { id = event.id, email = user.email })
  outbox.sleep(0.05) -- stands in for a call to a mail service; never blocks the loop
end)

-- Everything else comes here.
return function(event)
  seen = seen + 1
  if event.topic == "poison" then
    return outbox.reject("this event can never succeed")
  end
  outbox.log.info("handled", { id = event.id, topic = event.topic, key = event.key,
                               attempt = event.attempt, bytes = #event.payload })
end
