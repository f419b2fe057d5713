/* api_enqueue — the C half of outbox.enqueue: checks the bytes of a new event and
 * hands it to the host, which ties it to the running event's outcome or writes it
 * at once. lua/outbox.lua checks the table and encodes JSON before this runs.
 * Invariant: every event that leaves here holds no NUL byte and only valid UTF-8
 * (what PostgreSQL text accepts), so no store refuses it later. */
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "api.h"
#include "host.h"
#include "store.h"
#include "utf8.h"

/* Why the `len` bytes of field `what` cannot be stored, into buf; NULL when they can. */
static const char *bad_text(const char *what, const char *s, size_t len, char *buf, size_t n) {
  if (!s) return NULL;
  if (memchr(s, 0, len))
    snprintf(buf, n, "%s contains a NUL byte", what);
  else if (!utf8_valid(s, len))
    snprintf(buf, n, "%s is not valid UTF-8", what);
  else
    return NULL;
  return buf;
}

/* core.enqueue(topic, payload, key|nil, headers_json|nil, delay_s) -> true, or
 * nil, "what is wrong" (outbox.lua raises it at the caller's line). */
static int l_enqueue(lua_State *L) {
  size_t tlen, plen, klen = 0, hlen = 0;
  const char *topic = luaL_checklstring(L, 1, &tlen);
  const char *payload = luaL_checklstring(L, 2, &plen);
  const char *key = luaL_optlstring(L, 3, NULL, &klen);
  const char *headers = luaL_optlstring(L, 4, NULL, &hlen);
  double delay = luaL_optnumber(L, 5, 0);
  char why[160];
  const char *err = bad_text("topic", topic, tlen, why, sizeof why);
  if (!err) err = bad_text("key", key, klen, why, sizeof why);
  if (!err) err = bad_text("headers", headers, hlen, why, sizeof why);
  if (!err && plen > STORE_PAYLOAD_MAX) {
    snprintf(why, sizeof why, "payload is %zu bytes, over the %u MiB limit", plen,
             STORE_PAYLOAD_MAX >> 20);
    err = why;
  }
  if (!err) err = bad_text("payload", payload, plen, why, sizeof why);
  if (!err && (!(delay >= 0) || !isfinite(delay))) {
    snprintf(why, sizeof why, "delay must be a finite number of seconds >= 0");
    err = why;
  }
  if (err) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  store_event_t *ev = store_event_new(0, topic, tlen, key, klen, payload, plen, headers, hlen, 0);
  if (!ev) return luaL_error(L, "out of memory");
  ev->created_at = store_now_ms(); /* available_at - created_at: the delay asked for */
  ev->available_at =
      delay > 0 ? store_clamp_time(ev->created_at + (int64_t)ceil(delay * 1000.0)) : 0;
  host_enqueue(L, ev);
  lua_pushboolean(L, 1);
  return 1;
}

void api_enqueue_register(lua_State *L) {
  lua_pushcfunction(L, l_enqueue);
  lua_setfield(L, -2, "enqueue");
}
