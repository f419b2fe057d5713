/* nats — outbox.nats.connect(url) -> client; client:publish(subject, data) (core
 * NATS, at most once); client:request(subject, data, {msg_id=, timeout=}) yields
 * until the reply (its data) or nil, msg; js_publish (lua/outbox.lua) builds on
 * request. On cnats with its libuv adapter; cnats' own threads never touch Lua or
 * a client: what they receive reaches the loop through a locked queue and
 * uv_async_send. Clients are pooled per URL (broker.h). */
#ifndef OUTBOXD_NATS_H
#define OUTBOXD_NATS_H

#include <lua.h>

/* Adds nats_connect and nats_methods (the client methods, which lua/outbox.lua
 * extends) to the table on top of the stack, and registers the client metatable. */
void nats_register(lua_State *L);

#endif
