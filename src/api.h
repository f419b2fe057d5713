/* api — the C half of the `outbox` Lua module, one file per area:
 * api_core.c (hooks plumbing, stats, configure/config, log, all_settled support),
 * api_enqueue.c (outbox.enqueue) and api_time.c (sleep, now, every, after); http.c,
 * redis.c and nats.c add theirs. They reach the host through host.h; the host knows
 * none of them: it is handed api_push_core as its module opener, and releases the
 * state they keep per host (host_area_state) when it closes. */
#ifndef OUTBOXD_API_H
#define OUTBOXD_API_H

#include <lua.h>

#include "host.h"

/* Pushes the `core` table handed to lua/outbox.lua. `done` is the sentinel a
 * worker yields to say a run ended. */
void api_push_core(lua_State *L, void *done);

/* Adds enqueue (the C half of outbox.enqueue) to the table on top of the stack. */
void api_enqueue_register(lua_State *L);

/* Adds sleep and now to the table on top of the stack. */
void api_time_register(lua_State *L);

/* Fake clock (`outboxd test`): from now on sleep in host h takes no real time and
 * outbox.now() runs ahead by every second slept or advanced. */
void api_time_fake(host_t *h);

/* Moves h's fake clock `seconds` ahead (a retry delay skipped); a no-op otherwise. */
void api_time_advance(host_t *h, double seconds);

#endif
