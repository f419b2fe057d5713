/* api — the C half of the `outbox` Lua module, one file per area:
 * api_core.c (hooks plumbing, stats, configure/config, log, all_settled support),
 * api_enqueue.c (outbox.enqueue) and api_time.c (sleep, now). Uses only host.h and the Lua C API.
 */
#ifndef OUTBOXD_API_H
#define OUTBOXD_API_H

#include <lua.h>

/* Pushes the `core` table handed to lua/outbox.lua. `done` is the sentinel a
 * worker yields to say a run ended. */
void api_push_core(lua_State *L, void *done);

/* Adds enqueue (the C half of outbox.enqueue) to the table on top of the stack. */
void api_enqueue_register(lua_State *L);

/* Adds sleep and now to the table on top of the stack. */
void api_time_register(lua_State *L);

/* Fake clock (`outboxd test`): from now on sleep takes no real time and
 * outbox.now() runs ahead by every second slept or advanced. */
void api_time_fake(void);

/* Moves the fake clock `seconds` ahead (a retry delay skipped); a no-op otherwise. */
void api_time_advance(double seconds);

/* Closes the timers kept for reuse by sleep. */
void api_time_shutdown(void);

#endif
