/* api_time — outbox.sleep(seconds) and outbox.now().
 * sleep yields the calling coroutine on a libuv timer; timers are kept for reuse,
 * and an abandoned sleep (timeout, shutdown) stops its timer and returns it. */
#include <lauxlib.h>
#include <math.h>
#include <stdlib.h>
#include <sys/time.h>

#include "api.h"
#include "host.h"

typedef struct sleeper {
  uv_timer_t timer;
  task_t *task;
  struct sleeper *next; /* free list */
} sleeper_t;

static sleeper_t *pool;
static int fake;       /* outboxd test: sleeps return at once */
static double skipped; /* seconds the fake clock is ahead of the real one */

void api_time_fake(void) { fake = 1; }

void api_time_advance(double seconds) {
  if (fake && seconds > 0) skipped += seconds;
}

static void put(sleeper_t *s) {
  uv_timer_stop(&s->timer);
  s->task = NULL;
  s->next = pool;
  pool = s;
}

static void on_fire(uv_timer_t *timer) {
  sleeper_t *s = timer->data;
  task_t *t = s->task;
  put(s);
  host_wake(t, NULL, NULL);
}

static void on_cancel(task_t *t, void *data) {
  (void)t;
  put(data);
}

static int l_sleep(lua_State *L) {
  double secs = luaL_checknumber(L, 1);
  if (!(secs >= 0) || !isfinite(secs)) return luaL_argerror(L, 1, "seconds must be >= 0");
  sleeper_t *s = pool;
  if (s) {
    pool = s->next;
  } else {
    s = calloc(1, sizeof *s);
    if (!s) return luaL_error(L, "out of memory");
    uv_timer_init(host_loop(L), &s->timer);
    s->timer.data = s;
  }
  if (host_wait(L, on_cancel, s)) {
    s->next = pool;
    pool = s;
    return luaL_error(L, "outbox.sleep can only wait inside a handler or hook");
  }
  s->task = host_task(L);
  api_time_advance(secs);
  uv_timer_start(&s->timer, on_fire, fake ? 0 : (uint64_t)llround(secs * 1000.0), 0);
  return lua_yield(L, 0);
}

static int l_now(lua_State *L) {
  struct timeval tv;
  gettimeofday(&tv, NULL);
  lua_pushnumber(L, (lua_Number)tv.tv_sec + (lua_Number)tv.tv_usec / 1e6 + skipped);
  return 1;
}

void api_time_register(lua_State *L) {
  lua_pushcfunction(L, l_sleep);
  lua_setfield(L, -2, "sleep");
  lua_pushcfunction(L, l_now);
  lua_setfield(L, -2, "now");
}

static void on_closed(uv_handle_t *h) { free(h->data); }

void api_time_shutdown(void) {
  while (pool) {
    sleeper_t *s = pool;
    pool = s->next;
    uv_close((uv_handle_t *)&s->timer, on_closed);
  }
}
