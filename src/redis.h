/* redis — outbox.redis.connect(url) -> client; client:call(cmd, ...) yields until
 * the reply: integers as numbers, bulk and status strings as strings, arrays as
 * tables (nested nil as outbox.redis.null), nil as nil; an error reply or a
 * connection failure returns nil, msg. On hiredis' async API and the libuv loop.
 * Clients are pooled per URL (broker.h) and closed by broker_shutdown. */
#ifndef OUTBOXD_REDIS_H
#define OUTBOXD_REDIS_H

#include <lua.h>

/* Adds redis_connect to the table on top of the stack (the `core` table) and
 * registers the client metatable in L. */
void redis_register(lua_State *L);

#endif
