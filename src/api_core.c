/* api_core — outbox.stats, configure, config, log, and the plumbing behind
 * outbox.emit, outbox.all and outbox.all_settled (the `core` table lua/outbox.lua
 * builds on). Uses host.h, the modules whose counters it reports, and the Lua C API.
 * Lua functions that fail at run time return nil, msg; misuse raises. */
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "host.h"
#include "http.h"
#include "json.h"
#include "log.h"
#include "nats.h"
#include "redis.h"
#include "store.h"
#include "store_open.h"

static int l_spawn(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  const char *name = luaL_optstring(L, 3, "emit");
  if (host_spawn(L, 1, 2, name, lua_toboolean(L, 4))) return luaL_error(L, "out of memory");
  return 0;
}

/* core.log_hook_error(name, err, is_timer) */
static int l_log_hook_error(lua_State *L) {
  int timer = lua_toboolean(L, 3);
  log_at(LOG_ERROR, timer ? "timer failed" : "hook failed",
         KS(timer ? "timer" : "hook", luaL_optstring(L, 1, "?")),
         KS("error", luaL_optstring(L, 2, "?")));
  return 0;
}

static int l_stats(lua_State *L) {
  host_push_stats(L);
  return 1;
}

/* core.current() -> task, token (nil outside a task). */
static int l_current(lua_State *L) {
  task_t *t = host_task(L);
  if (!t) return 0;
  lua_pushlightuserdata(L, t);
  lua_pushnumber(L, host_token(t));
  return 2;
}

static int l_wait_children(lua_State *L) {
  unsigned token = (unsigned)luaL_checknumber(L, 2);
  if (host_wait_token(L, token))
    return luaL_error(L, "outbox.all_settled must be called from a handler or hook coroutine");
  return lua_yield(L, 0);
}

/* core.me() -> task, serial of the running task (nil outside a task). */
static int l_me(lua_State *L) {
  task_t *t = host_task(L);
  if (!t) return 0;
  lua_pushlightuserdata(L, t);
  lua_pushnumber(L, host_task_serial(t));
  return 2;
}

/* core.cancel(task, serial) -> true when a running child was cancelled. */
static int l_cancel(lua_State *L) {
  task_t *t = lua_touserdata(L, 1);
  lua_pushboolean(L, host_cancel_task(L, t, (unsigned)luaL_checknumber(L, 2)));
  return 1;
}

static int l_resume_waiter(lua_State *L) {
  task_t *t = lua_touserdata(L, 1);
  if (t) host_wake_token(t, (unsigned)luaL_checknumber(L, 2));
  return 0;
}

/* outbox.configure{key = value, ...}: top level only; lowest precedence. */
static int l_configure(lua_State *L) {
  char err[256];
  luaL_checktype(L, 1, LUA_TTABLE);
  if (host_task(L)) return luaL_error(L, "outbox.configure is allowed only at the top level");
  config_t *c = host_config(L);
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    int i = k ? config_find(k, 1) : -1;
    if (i < 0) return luaL_error(L, "outbox.configure: unknown setting '%s'", k ? k : "?");
    int rc;
    if (lua_type(L, -1) == LUA_TNUMBER)
      rc = config_set_number(c, i, lua_tonumber(L, -1), CONFIG_SCRIPT, err, sizeof err);
    else if (lua_type(L, -1) == LUA_TBOOLEAN)
      rc = config_set(c, i, lua_toboolean(L, -1) ? "1" : "0", CONFIG_SCRIPT, err, sizeof err);
    else if (lua_type(L, -1) == LUA_TSTRING)
      rc = config_set(c, i, lua_tostring(L, -1), CONFIG_SCRIPT, err, sizeof err);
    else
      return luaL_error(L, "outbox.configure: '%s' has a %s value", k, luaL_typename(L, -1));
    if (rc) return luaL_error(L, "outbox.configure: %s", err);
    lua_pop(L, 1); /* value, keep key */
  }
  return 0;
}

static int l_readonly(lua_State *L) {
  return luaL_error(L, "outbox.config is read-only; use outbox.configure{} at the top level");
}

/* outbox.config: a fresh read-only copy of the effective settings (times in s). */
static int l_config(lua_State *L) {
  const config_t *c = host_config(L);
  lua_createtable(L, 0, 24);
#define SETN(k, v) (lua_pushnumber(L, (lua_Number)(v)), lua_setfield(L, -2, k))
  SETN("concurrency", c->concurrency);
  SETN("batch", c->batch);
  SETN("poll", c->poll_ms / 1000.0);
  SETN("max_attempts", c->max_attempts);
  SETN("backoff", c->backoff_base_ms / 1000.0);
  SETN("backoff_max", c->backoff_cap_ms / 1000.0);
  SETN("timeout", c->timeout_ms / 1000.0);
  SETN("breaker", c->breaker_pct);
  SETN("breaker_window", c->breaker_window);
  SETN("breaker_min_calls", c->breaker_min_calls);
  SETN("breaker_cooldown", c->breaker_cooldown_ms / 1000.0);
  SETN("memory_limit", c->memory_limit);
  SETN("memory_high", c->memory_high_pct);
  SETN("memory_interval", c->memory_interval_ms / 1000.0);
  SETN("lease", c->lease_ms / 1000.0);
  SETN("drain_timeout", c->drain_timeout_ms / 1000.0);
#undef SETN
  lua_pushstring(L, c->ordering_key ? "key" : "none");
  lua_setfield(L, -2, "ordering");
  lua_pushboolean(L, c->once);
  lua_setfield(L, -2, "once");
  lua_pushboolean(L, c->watch);
  lua_setfield(L, -2, "watch");
  if (c->topics[0]) {
    lua_pushstring(L, c->topics);
    lua_setfield(L, -2, "topics");
  }
  char safe[1024];
  lua_pushstring(L, store_url_redact(c->db, safe, sizeof safe)); /* scripts log it */
  lua_setfield(L, -2, "db");
  lua_newtable(L); /* proxy */
  lua_createtable(L, 0, 2);
  lua_pushvalue(L, -3);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, l_readonly);
  lua_setfield(L, -2, "__newindex");
  lua_setmetatable(L, -2); /* proxy's metatable */
  lua_remove(L, -2);       /* the data table lives on as __index */
  return 1;
}

static int kv_cmp(const void *a, const void *b) {
  return strcmp(((const log_kv_t *)a)->key, ((const log_kv_t *)b)->key);
}

/* ------------------------------------------------------------------ log */

#define TABLE_DEPTH 4  /* nested tables deeper than this are logged as a note */
#define TABLE_MAX 4096 /* bytes of JSON per table field at most */

/* A table field's JSON text, built in C (the stack stays balanced). */
typedef struct jbuf {
  char *p;
  size_t len, cap;
  int full; /* TABLE_MAX reached: the text is cut */
} jbuf_t;

static void jput(jbuf_t *j, const char *s, size_t n) {
  if (j->full) return;
  if (j->len + n > TABLE_MAX) {
    j->full = 1;
    return;
  }
  if (j->len + n + 1 > j->cap) {
    size_t cap = j->cap ? j->cap * 2 : 256;
    while (cap < j->len + n + 1) cap *= 2;
    char *p = realloc(j->p, cap);
    if (!p) {
      j->full = 1;
      return;
    }
    j->p = p, j->cap = cap;
  }
  memcpy(j->p + j->len, s, n);
  j->len += n;
  j->p[j->len] = 0;
}

/* A JSON string: only quotes and backslashes are escaped here; the log writer
 * escapes control characters and replaces invalid UTF-8 in JSON text it is given. */
static void jstr(jbuf_t *j, const char *s, size_t len) {
  jput(j, "\"", 1);
  for (size_t i = 0; i < len; i++) {
    if (s[i] == '"' || s[i] == '\\') jput(j, "\\", 1);
    jput(j, s + i, 1);
  }
  jput(j, "\"", 1);
}

static void jvalue(lua_State *L, int idx, int depth, jbuf_t *j);

/* The table at idx (absolute) as a JSON array when its keys are 1..n, else an object. */
static void jtable(lua_State *L, int idx, int depth, jbuf_t *j) {
  size_t n = lua_objlen(L, idx), count = 0;
  if (depth >= TABLE_DEPTH || !lua_checkstack(L, 4)) {
    jput(j, "\"[nested too deep]\"", 19);
    return;
  }
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    count++;
    lua_pop(L, 1); /* value */
  }
  if (n > 0 && count == n) {
    jput(j, "[", 1);
    for (size_t i = 1; i <= n && !j->full; i++) {
      if (i > 1) jput(j, ",", 1);
      lua_rawgeti(L, idx, (int)i);
      jvalue(L, lua_gettop(L), depth + 1, j);
      lua_pop(L, 1); /* element */
    }
    jput(j, "]", 1);
    return;
  }
  jput(j, "{", 1);
  int first = 1;
  lua_pushnil(L);
  while (!j->full && lua_next(L, idx)) {
    size_t klen;
    lua_pushvalue(L, -2); /* a copy: tostring on the key itself would confuse lua_next */
    const char *k = lua_tolstring(L, -1, &klen);
    if (k) {
      if (!first) jput(j, ",", 1);
      first = 0;
      jstr(j, k, klen);
      jput(j, ":", 1);
      jvalue(L, lua_gettop(L) - 1, depth + 1, j);
    }
    lua_pop(L, 2); /* key copy, value */
  }
  if (j->full) lua_pop(L, 1); /* the key lua_next did not get to consume */
  jput(j, "}", 1);
}

static void jvalue(lua_State *L, int idx, int depth, jbuf_t *j) {
  char num[64];
  size_t len;
  switch (lua_type(L, idx)) {
  case LUA_TNUMBER: {
    double v = lua_tonumber(L, idx);
    jput(j, num, (size_t)snprintf(num, sizeof num, isfinite(v) ? "%.14g" : "null", v));
    break;
  }
  case LUA_TSTRING: {
    const char *s = lua_tolstring(L, idx, &len);
    jstr(j, s, len);
    break;
  }
  case LUA_TBOOLEAN: lua_toboolean(L, idx) ? jput(j, "true", 4) : jput(j, "false", 5); break;
  case LUA_TNIL: jput(j, "null", 4); break;
  case LUA_TTABLE: jtable(L, idx, depth, j); break;
  default: jstr(j, luaL_typename(L, idx), strlen(luaL_typename(L, idx))); break;
  }
}

/* outbox.log.X(msg, fields): one line; inside an event the event id is added.
 * Nested tables are logged as JSON (depth and size limited). */
static int l_log(lua_State *L) {
  int level = (int)luaL_checkinteger(L, 1);
  const char *msg = luaL_checkstring(L, 2);
  log_kv_t kv[32];
  jbuf_t tables[32];
  int n = 0, nt = 0;
  if (!log_enabled(level)) return 0;
  task_t *t = host_task(L);
  int64_t id = t ? host_task_event(t) : -1;
  if (id >= 0) kv[n++] = KI("id", id);
  if (lua_istable(L, 3)) {
    lua_pushnil(L);
    while (n < 32 && lua_next(L, 3)) {
      if (lua_type(L, -2) == LUA_TSTRING && !(id >= 0 && !strcmp(lua_tostring(L, -2), "id"))) {
        const char *k = lua_tostring(L, -2);
        switch (lua_type(L, -1)) {
        case LUA_TNUMBER: kv[n++] = KF(k, lua_tonumber(L, -1)); break;
        case LUA_TSTRING: kv[n++] = KS(k, lua_tostring(L, -1)); break;
        case LUA_TBOOLEAN: kv[n++] = KS(k, lua_toboolean(L, -1) ? "true" : "false"); break;
        case LUA_TTABLE: {
          jbuf_t *j = &tables[nt++];
          memset(j, 0, sizeof *j);
          jvalue(L, lua_gettop(L), 0, j);
          kv[n++] = j->full ? KS(k, j->p) : KJ(k, j->p); /* a cut text is logged as a string */
          break;
        }
        default: kv[n++] = KS(k, luaL_typename(L, -1)); break;
        }
      }
      lua_pop(L, 1); /* value, keep key */
    }
  }
  /* Lua tables have no order: sort the fields so equal calls log equal lines */
  qsort(kv + (id >= 0), (size_t)(n - (id >= 0)), sizeof kv[0], kv_cmp);
  log_fields(level, msg, kv, n);
  for (int i = 0; i < nt; i++) free(tables[i].p);
  return 0;
}

void api_push_core(lua_State *L, void *done) {
  static const luaL_Reg fns[] = {
      {"spawn", l_spawn},
      {"log_hook_error", l_log_hook_error},
      {"stats", l_stats},
      {"current", l_current},
      {"wait_children", l_wait_children},
      {"resume_waiter", l_resume_waiter},
      {"me", l_me},
      {"cancel", l_cancel},
      {"configure", l_configure},
      {"config", l_config},
      {"log", l_log},
      {NULL, NULL},
  };
  lua_createtable(L, 0, 16);
  for (const luaL_Reg *r = fns; r->name; r++) {
    lua_pushcfunction(L, r->func);
    lua_setfield(L, -2, r->name);
  }
  lua_pushlightuserdata(L, done);
  lua_setfield(L, -2, "DONE");
  config_t *cfg = host_config(L);
  if (cfg && cfg->http_stub) { /* outboxd test --http-stub */
    lua_pushstring(L, cfg->http_stub);
    lua_setfield(L, -2, "http_stub");
  }
  api_time_register(L);
  api_enqueue_register(L);
  http_register(L);
  redis_register(L);
  nats_register(L);
  json_register(L);
}
