/* api_time — outbox.sleep(seconds), outbox.now(), outbox.every and outbox.after.
 * sleep yields the calling coroutine on a libuv timer; timers are kept for reuse in
 * the host's state of this area (closed by host_close), and an abandoned sleep
 * (timeout, shutdown) stops its timer and returns it.
 * every/after hand their schedule to the host (host_timer_*), which runs each tick
 * in a coroutine of the generation that made the timer. */
#include <errno.h>
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "api.h"
#include "host.h"

typedef struct sleeps sleeps_t;

typedef struct sleeper {
  uv_timer_t timer;
  task_t *task;
  sleeps_t *owner;
  struct sleeper *next; /* free list */
} sleeper_t;

/* A host's clock state: its timers kept for reuse, and the fake clock. */
struct sleeps {
  sleeper_t *pool;
  int fake;       /* outboxd test: sleeps return at once */
  double skipped; /* seconds the fake clock is ahead of the real one */
};

static void on_closed(uv_handle_t *h) { free(h->data); }

static void sleeps_close(void *state) {
  sleeps_t *c = state;
  while (c->pool) {
    sleeper_t *s = c->pool;
    c->pool = s->next;
    uv_close((uv_handle_t *)&s->timer, on_closed);
  }
  free(c);
}

static const host_area_t area = {sizeof(sleeps_t), sleeps_close};

void api_time_fake(host_t *h) {
  sleeps_t *c = host_area_state(h, &area);
  if (c) c->fake = 1;
}

void api_time_advance(host_t *h, double seconds) {
  sleeps_t *c = host_area_state(h, &area);
  if (c && c->fake && seconds > 0) c->skipped += seconds;
}

static void put(sleeper_t *s) {
  uv_timer_stop(&s->timer);
  s->task = NULL;
  s->next = s->owner->pool;
  s->owner->pool = s;
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
  sleeps_t *c = host_area_state(host_of(L), &area);
  if (!c) return luaL_error(L, "out of memory");
  sleeper_t *s = c->pool;
  if (s) {
    c->pool = s->next;
  } else {
    s = calloc(1, sizeof *s);
    if (!s) return luaL_error(L, "out of memory");
    uv_timer_init(host_loop(L), &s->timer);
    s->timer.data = s;
    s->owner = c;
  }
  if (host_wait(L, on_cancel, s)) {
    s->next = c->pool;
    c->pool = s;
    return luaL_error(L, "outbox.sleep can only wait inside a handler or hook");
  }
  s->task = host_task(L);
  if (c->fake) c->skipped += secs;
  uv_timer_start(&s->timer, on_fire, c->fake ? 0 : (uint64_t)llround(secs * 1000.0), 0);
  return lua_yield(L, 0);
}

static int l_now(lua_State *L) {
  struct timeval tv;
  sleeps_t *c = host_area_state(host_of(L), &area);
  gettimeofday(&tv, NULL);
  lua_pushnumber(L, (lua_Number)tv.tv_sec + (lua_Number)tv.tv_usec / 1e6 + (c ? c->skipped : 0));
  return 1;
}

/* ------------------------------------------------------------------ timers */

#define TIMER_MAX_S 1e9 /* about 31 years: anything longer is a mistake */

/* outbox.every(seconds, fn) / outbox.after(seconds, fn) -> handle, or nil, err when
 * the host is stopping or the calling generation was replaced by a reload. */
static int start_timer(lua_State *L, int every) {
  const char *what = every ? "every" : "after";
  double secs = luaL_checknumber(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  if (!isfinite(secs) || secs > TIMER_MAX_S || !(every ? secs >= 0.001 : secs >= 0))
    return luaL_argerror(L, 1,
                         every ? "seconds must be a finite number >= 0.001"
                               : "seconds must be a finite number >= 0");
  lua_Debug ar;
  lua_pushvalue(L, 2);
  lua_getinfo(L, ">S", &ar); /* pops the copy */
  char name[HOST_TIMER_NAME];
  snprintf(name, sizeof name, "%s %g s %s:%d", what, secs, ar.short_src, ar.linedefined);
  uint64_t ms = (uint64_t)llround(secs * 1000.0);
  const char *why = NULL;
  int rc = host_timer_start(L, 2, ms, every ? ms : 0, name, &why);
  if (rc == -ENOMEM) return luaL_error(L, "outbox.%s: out of memory", what);
  if (rc) {
    lua_pushnil(L);
    lua_pushfstring(L, "outbox.%s: %s", what, why);
    return 2;
  }
  return 1;
}

static int l_every(lua_State *L) { return start_timer(L, 1); }

static int l_after(lua_State *L) { return start_timer(L, 0); }

/* handle:cancel() -> true when the timer would have run again. */
static int l_timer_cancel(lua_State *L) {
  lua_pushboolean(L, host_timer_cancel(luaL_checkudata(L, 1, HOST_TIMER_MT)));
  return 1;
}

/* handle.runs, handle.skipped, handle.scheduled, handle.running, handle.name,
 * handle:cancel(). */
static int l_timer_index(lua_State *L) {
  host_timer_info_t info;
  host_timer_info(luaL_checkudata(L, 1, HOST_TIMER_MT), &info);
  const char *k = luaL_checkstring(L, 2);
  if (!strcmp(k, "cancel"))
    lua_pushcfunction(L, l_timer_cancel);
  else if (!strcmp(k, "runs"))
    lua_pushnumber(L, (lua_Number)info.runs);
  else if (!strcmp(k, "skipped"))
    lua_pushnumber(L, (lua_Number)info.skipped);
  else if (!strcmp(k, "scheduled"))
    lua_pushboolean(L, info.scheduled);
  else if (!strcmp(k, "running"))
    lua_pushboolean(L, info.running);
  else if (!strcmp(k, "name"))
    lua_pushstring(L, info.name);
  else
    lua_pushnil(L);
  return 1;
}

static int l_timer_tostring(lua_State *L) {
  host_timer_info_t info;
  host_timer_info(luaL_checkudata(L, 1, HOST_TIMER_MT), &info);
  lua_pushfstring(L, "timer (%s)", info.name);
  return 1;
}

void api_time_register(lua_State *L) {
  lua_pushcfunction(L, l_sleep);
  lua_setfield(L, -2, "sleep");
  lua_pushcfunction(L, l_now);
  lua_setfield(L, -2, "now");
  lua_pushcfunction(L, l_every);
  lua_setfield(L, -2, "every");
  lua_pushcfunction(L, l_after);
  lua_setfield(L, -2, "after");
  luaL_newmetatable(L, HOST_TIMER_MT);
  lua_pushcfunction(L, l_timer_index);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, l_timer_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "outbox.timer");
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 1); /* the metatable, kept in the registry */
}
