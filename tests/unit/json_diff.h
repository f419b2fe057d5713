/* json_diff.h — shared by tests/unit/test_json.c and tests/fuzz/fuzz_json.c: a Lua
 * state holding cjson.decode and outboxd's decoders (src/json.c), and `same`,
 * which decodes one text both ways and compares values or error messages. */
#ifndef OUTBOXD_JSON_DIFF_H
#define OUTBOXD_JSON_DIFF_H

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>

#include "json.h"

int luaopen_cjson(lua_State *L);

/* same(text) -> true, or false and what differs (values, errors, or valid()
 * against whether cjson decodes). same_payload(text) decodes the
 * body of the JSON string that holds `text` (as an NDJSON string payload would
 * come) with payload_decoder and compares it with cjson.decode(text). same_raw(raw)
 * takes any bytes as such a body: payload_decoder(raw) against
 * cjson.decode(unescape(raw)). */
static const char json_diff_lua[] =
    "local cjson, core = ...\n"
    "local decode = core.json_decoder(cjson.decode)\n"
    "local decode_payload = core.payload_decoder(cjson.decode)\n"
    "local valid = core.json_checker(cjson.decode)\n"
    "local function eq(a, b, path)\n"
    "  if type(a) ~= type(b) then return false, path .. ': ' .. type(a) .. ' vs ' .. type(b) end\n"
    "  if type(a) == 'number' then\n"
    "    if a ~= a and b ~= b then return true end\n"
    "    if a ~= b or 1 / a ~= 1 / b then\n"
    "      return false, path .. string.format(': %.17g vs %.17g', a, b)\n"
    "    end\n"
    "    return true\n"
    "  end\n"
    "  if type(a) ~= 'table' then\n"
    "    if a ~= b then return false, path .. ': ' .. tostring(a) .. ' vs ' .. tostring(b) end\n"
    "    return true\n"
    "  end\n"
    "  for k, v in pairs(a) do\n"
    "    local ok, why = eq(v, b[k], path .. '.' .. tostring(k))\n"
    "    if not ok then return false, why end\n"
    "  end\n"
    "  for k in pairs(b) do\n"
    "    if a[k] == nil then return false, path .. '.' .. tostring(k) .. ' missing' end\n"
    "  end\n"
    "  return true\n"
    "end\n"
    "local function compare(ok1, v1, ok2, v2)\n"
    "  if ok1 ~= ok2 then\n"
    "    return false, 'ours ' .. (ok1 and 'decoded' or tostring(v1)) .. ', cjson ' ..\n"
    "      (ok2 and 'decoded' or tostring(v2))\n"
    "  end\n"
    "  if not ok1 then\n"
    "    if v1 ~= v2 then return false, 'errors differ: ' .. v1 .. ' | ' .. v2 end\n"
    "    return true\n"
    "  end\n"
    "  return eq(v1, v2, '$')\n"
    "end\n"
    "function same(text)\n"
    "  local ok1, v1 = pcall(decode, text)\n"
    "  local ok2, v2 = pcall(cjson.decode, text)\n"
    "  if valid(text) ~= ok2 then\n"
    "    return false, 'valid() is ' .. tostring(valid(text)) .. ', cjson decodes: ' .. "
    "tostring(ok2)\n"
    "  end\n"
    "  return compare(ok1, v1, ok2, v2)\n"
    "end\n"
    "function same_raw(raw)\n"
    "  local ok1, v1 = pcall(decode_payload, raw)\n"
    "  local ok2, v2 = pcall(cjson.decode, core.unescape(raw))\n"
    "  return compare(ok1, v1, ok2, v2)\n"
    "end\n"
    "function same_payload(text)\n"
    "  local quoted = cjson.encode(text)\n"
    "  local ok1, v1 = pcall(decode_payload, quoted:sub(2, -2))\n"
    "  local ok2, v2 = pcall(cjson.decode, text)\n"
    "  return compare(ok1, v1, ok2, v2)\n"
    "end\n";

/* A Lua state with `same` and `same_payload` defined; NULL when it cannot be made. */
static lua_State *json_diff_state(void) {
  lua_State *L = luaL_newstate();
  if (!L) return NULL;
  luaL_openlibs(L);
  if (luaL_loadbuffer(L, json_diff_lua, sizeof json_diff_lua - 1, "=json_diff")) return NULL;
  lua_pushcfunction(L, luaopen_cjson);
  lua_call(L, 0, 1); /* cjson */
  lua_newtable(L);   /* core */
  json_register(L);
  lua_call(L, 2, 0);
  return L;
}

/* Runs fn(text) (fn = "same", "same_payload" or "same_raw"); returns NULL when the decoders
 * agree, else what differs (valid until the next call). */
static const char *json_diff(lua_State *L, const char *fn, const char *text, size_t len) {
  static char why[512];
  int agree;
  lua_getglobal(L, fn);
  lua_pushlstring(L, text, len);
  lua_call(L, 1, 2);
  agree = lua_toboolean(L, -2);
  if (!agree) snprintf(why, sizeof why, "%s", lua_tostring(L, -1));
  lua_pop(L, 2);
  return agree ? NULL : why;
}

#endif
