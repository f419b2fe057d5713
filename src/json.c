/* json — a JSON decoder into Lua tables, on the ndjson scanner's string and number
 * grammar. One pass: each table is created at the size of the container in the
 * same place in the previous document (events repeat their shape); integers
 * and short decimals are parsed without strtod; each string is pushed once, from
 * the text or from one unescaped copy. Anything but strict JSON (or nesting deeper
 * than MAX_DEPTH) unwinds the stack and is left to cjson. */
#include "json.h"

#include <errno.h>
#include <lauxlib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ndjson.h"

#define MAX_DEPTH 256
#define SIZE_HINTS 64   /* containers of a document whose size is remembered */
#define MAX_HINT 1024   /* the largest table made ahead of its members */
#define STACK_TEXT 1024 /* documents this short unescape strings without the heap */

typedef struct dec {
  lua_State *L; /* NULL: check the text, push nothing */
  const char *p, *end;
  char *buf; /* unescaped strings: room for the document plus 16 bytes */
  int depth;
  unsigned opened; /* containers opened so far */
} dec_t;

/* Member counts of the containers of the last document decoded, in opening order
 * (the loop is single-threaded; a wrong hint costs a rehash, never a value). */
static uint32_t size_hint[SIZE_HINTS];

static void skip_ws(dec_t *d) {
  while (d->p < d->end && (*d->p == ' ' || *d->p == '\t' || *d->p == '\n' || *d->p == '\r')) d->p++;
}

static const double pow10_exact[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* The number in [p, end), which ndjson_skip_number accepted. Up to 19 significant
 * digits and a power of ten at most 22 away are exact in one multiply or divide
 * (both operands are exact doubles, so the result is correctly rounded, as
 * strtod's is); anything else is strtod's. */
static double number(const char *p, const char *end) {
  const char *start = p;
  int neg = *p == '-', digits = 0, exp10 = 0;
  uint64_t m = 0;
  p += neg;
  for (; p < end && *p >= '0' && *p <= '9'; p++) {
    if (m || *p != '0') digits++;
    m = m * 10 + (uint64_t)(*p - '0');
    if (digits > 19) goto slow;
  }
  if (p < end && *p == '.') {
    for (p++; p < end && *p >= '0' && *p <= '9'; p++) {
      if (m || *p != '0') digits++;
      m = m * 10 + (uint64_t)(*p - '0');
      exp10--;
      if (digits > 19) goto slow;
    }
  }
  if (p < end) { /* an exponent */
    int eneg = 0, e = 0;
    p++;
    if (*p == '+' || *p == '-') eneg = *p++ == '-';
    for (; p < end; p++)
      if (e < 10000) e = e * 10 + (*p - '0');
    exp10 += eneg ? -e : e;
  }
  if (m > (1ULL << 53) || exp10 < -22 || exp10 > 22) goto slow;
  double v = (double)m;
  v = exp10 < 0 ? v / pow10_exact[-exp10] : v * pow10_exact[exp10];
  return neg ? -v : v;
slow:
  return strtod(start, NULL); /* the text is NUL-terminated past the number */
}

/* Pushes the string at d->p (its opening quote). */
static int string(dec_t *d) {
  int escaped;
  const char *s = d->p + 1, *q = ndjson_skip_string(d->p, d->end, &escaped);
  if (!q) return -1;
  d->p = q;
  if (!d->L) return 0;
  size_t n = (size_t)(q - 1 - s);
  if (escaped)
    lua_pushlstring(d->L, d->buf, ndjson_unescape_to(d->buf, s, n));
  else
    lua_pushlstring(d->L, s, n);
  return 0;
}

static int value(dec_t *d);

/* After a member: 1 past a comma, 0 past the closing byte, -1 on anything else. */
static int next_member(dec_t *d, char close) {
  skip_ws(d);
  if (d->p < d->end && *d->p == ',') {
    d->p++;
    skip_ws(d);
    return 1;
  }
  if (d->p < d->end && *d->p == close) {
    d->p++;
    return 0;
  }
  return -1;
}

/* An array or object, built into a table created at the size the container in
 * the same place (the same opening order) had in the previous document: a stream
 * of events mostly repeats one shape, so the table is made once at its size. */
static int container(dec_t *d, int is_array) {
  lua_State *L = d->L;
  char close = is_array ? ']' : '}';
  unsigned slot = d->opened++;
  uint32_t guess = slot < SIZE_HINTS ? size_hint[slot] : 0;
  int n = 0, more;
  if (++d->depth > MAX_DEPTH || (L && !lua_checkstack(L, 3))) return -1;
  if (L) lua_createtable(L, is_array ? (int)guess : 0, is_array ? 0 : (int)guess);
  d->p++;
  skip_ws(d);
  if (d->p < d->end && *d->p == close) {
    d->p++;
  } else {
    do {
      if (!is_array) {
        if (d->p >= d->end || *d->p != '"' || string(d)) return -1;
        skip_ws(d);
        if (d->p >= d->end || *d->p != ':') return -1;
        d->p++;
        skip_ws(d);
      }
      if (value(d)) return -1;
      n++;
      if (L && is_array)
        lua_rawseti(L, -2, n);
      else if (L)
        lua_rawset(L, -3);
    } while ((more = next_member(d, close)) == 1);
    if (more) return -1;
  }
  if (L && slot < SIZE_HINTS) size_hint[slot] = n < MAX_HINT ? (uint32_t)n : MAX_HINT;
  d->depth--;
  return 0;
}

/* true, false or null (pushed as cjson.null, the NULL light userdata). */
static int literal(dec_t *d, const char *lit, size_t n) {
  if ((size_t)(d->end - d->p) < n || memcmp(d->p, lit, n) != 0) return -1;
  d->p += n;
  if (!d->L) return 0;
  if (lit[0] == 'n')
    lua_pushlightuserdata(d->L, NULL);
  else
    lua_pushboolean(d->L, lit[0] == 't');
  return 0;
}

static int value(dec_t *d) {
  lua_State *L = d->L;
  if (d->p >= d->end) return -1;
  switch (*d->p) {
  case '{': return container(d, 0);
  case '[': return container(d, 1);
  case '"': return string(d);
  case 't': return literal(d, "true", 4);
  case 'f': return literal(d, "false", 5);
  case 'n': return literal(d, "null", 4);
  default: {
    const char *q = ndjson_skip_number(d->p, d->end);
    if (!q) return -1;
    if (L) lua_pushnumber(L, number(d->p, q));
    d->p = q;
    return 0;
  }
  }
}

/* Room for len + 16 bytes: `local` when it is big enough, else a userdata pushed
 * on the stack (collected with it). */
static char *scratch(lua_State *L, char *local, size_t local_size, size_t len) {
  return len + 16 <= local_size ? local : lua_newuserdata(L, len + 17);
}

int json_push(lua_State *L, const char *s, size_t len) {
  char local[STACK_TEXT];
  int top = lua_gettop(L);
  dec_t d = {.L = L, .p = s, .end = s + len};
  d.buf = scratch(L, local, sizeof local, len);
  skip_ws(&d);
  if (value(&d) == 0) {
    skip_ws(&d);
    if (d.p == d.end) {
      if (lua_gettop(L) > top + 1) lua_remove(L, top + 1); /* the scratch userdata */
      return 0;
    }
  }
  lua_settop(L, top);
  return -EINVAL;
}

int json_check(const char *s, size_t len) {
  dec_t d = {.L = NULL, .p = s, .end = s + len};
  skip_ws(&d);
  if (value(&d)) return -EINVAL;
  skip_ws(&d);
  return d.p == d.end ? 0 : -EINVAL;
}

/* Asks cjson (upvalue 1) to decode text[0..len) and returns its one result. */
static int ask_cjson(lua_State *L, const char *text, size_t len) {
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushlstring(L, text, len);
  lua_call(L, 1, 1);
  return 1;
}

/* decode(text): the value of the JSON text, as cjson.decode would give it. */
static int l_decode(lua_State *L) {
  size_t len;
  if (lua_type(L, 1) == LUA_TSTRING) {
    const char *s = lua_tolstring(L, 1, &len);
    if (json_push(L, s, len) == 0) return 1;
  }
  lua_pushvalue(L, lua_upvalueindex(1)); /* anything else is cjson's to judge */
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

/* valid(text): true when decode(text) would return a value, else false; strict
 * JSON is checked without building anything, the rest is cjson's to judge. */
static int l_valid(lua_State *L) {
  size_t len;
  if (lua_type(L, 1) == LUA_TSTRING) {
    const char *s = lua_tolstring(L, 1, &len);
    if (json_check(s, len) == 0) {
      lua_pushboolean(L, 1);
      return 1;
    }
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushvalue(L, 1);
  lua_pushboolean(L, lua_pcall(L, 1, 1, 0) == 0);
  return 1;
}

/* The unescaped text of the string body at argument 1, NUL-terminated, in local
 * or in a userdata pushed on the stack. */
static const char *unescaped(lua_State *L, char *local, size_t local_size, size_t *len) {
  size_t raw_len;
  const char *raw = luaL_checklstring(L, 1, &raw_len);
  char *buf = scratch(L, local, local_size, raw_len);
  *len = ndjson_unescape_to(buf, raw, raw_len);
  buf[*len] = 0;
  return buf;
}

/* decode(raw): decode(text) of the text of a JSON string body. */
static int l_decode_payload(lua_State *L) {
  char local[4096];
  size_t len;
  const char *text = unescaped(L, local, sizeof local, &len);
  if (json_push(L, text, len) == 0) return 1;
  return ask_cjson(L, text, len);
}

/* unescape(raw) -> text. */
static int l_unescape(lua_State *L) {
  char local[4096];
  size_t len;
  const char *text = unescaped(L, local, sizeof local, &len);
  lua_pushlstring(L, text, len);
  return 1;
}

static int l_json_decoder(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_pushcclosure(L, l_decode, 1);
  return 1;
}

static int l_json_checker(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_pushcclosure(L, l_valid, 1);
  return 1;
}

static int l_payload_decoder(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_pushcclosure(L, l_decode_payload, 1);
  return 1;
}

void json_register(lua_State *L) {
  lua_pushcfunction(L, l_json_decoder);
  lua_setfield(L, -2, "json_decoder");
  lua_pushcfunction(L, l_json_checker);
  lua_setfield(L, -2, "json_checker");
  lua_pushcfunction(L, l_payload_decoder);
  lua_setfield(L, -2, "payload_decoder");
  lua_pushcfunction(L, l_unescape);
  lua_setfield(L, -2, "unescape");
}
