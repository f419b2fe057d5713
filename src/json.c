/* json — a JSON decoder into Lua tables, on the ndjson scanner's string grammar.
 * One pass: each table is created at the size the container in the same place had
 * in the previous document (events repeat their shape); numbers are scanned and
 * parsed together, without strtod for up to 19 significant digits; a short string
 * that is the same as the one in the same place of the previous document is taken
 * from a memo instead of being hashed and interned again. An NDJSON string payload
 * is decoded straight from its escaped form when its only escapes are its quotes.
 * Anything but strict JSON (or nesting deeper than MAX_DEPTH) unwinds the stack and
 * is left to cjson, so what users see is cjson's. */
#include "json.h"

#include <errno.h>
#include <lauxlib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ndjson.h"
#include "utf8.h"

#define MAX_DEPTH 256
#define SIZE_HINTS 64     /* containers of a document whose size is remembered */
#define MAX_HINT 1024     /* the largest table made ahead of its members */
#define STACK_TEXT 1024   /* documents this short unescape strings without the heap */
#define MEMO_SLOTS 64     /* strings of a document (keys and values, in order) memoised */
#define MEMO_LEN 24       /* strings shorter than this are */
#define MEMO_TRIES 4      /* misses in a row after which a slot is no longer refilled */
#define MEMO_RELEARN 1024 /* documents after which every slot may be refilled again */

/* What one decoder (one Lua closure, so one Lua state) carries from a document to
 * the next: the member counts of its containers, in opening order, and its short
 * strings, in the order they come; the strings themselves are held in a Lua table
 * (slot + 1 -> string), which keeps them alive. A wrong guess costs a rehash or a
 * string pushed the ordinary way, never a value. */
typedef struct memo {
  uint32_t size_hint[SIZE_HINTS];
  uint8_t len[MEMO_SLOTS]; /* length + 1 of the string in the slot, 0: empty */
  uint8_t misses[MEMO_SLOTS];
  unsigned documents;
  char text[MEMO_SLOTS][MEMO_LEN];
} memo_t;

typedef struct dec {
  lua_State *L; /* NULL: check the text, push nothing */
  const char *p, *end;
  char *buf;        /* unescaped strings: room for the document plus 16 bytes */
  memo_t *memo;     /* NULL: none */
  int memo_strings; /* with memo: stack index of the table of its strings (an upvalue) */
  int memo_at;      /* ... and where document() puts it */
  int top;          /* the stack top before the document */
  int raw;          /* the text is a JSON string's body: quotes come as \" (and no other escape) */
  int depth;
  unsigned opened;  /* containers opened so far */
  unsigned strings; /* strings pushed so far */
} dec_t;

static inline void skip_ws(dec_t *d) {
  if (d->p < d->end && (unsigned char)*d->p > ' ') return; /* the usual case: no blank */
  while (d->p < d->end && (*d->p == ' ' || *d->p == '\t' || *d->p == '\n' || *d->p == '\r')) d->p++;
}

static inline int is_digit(char c) { return c >= '0' && c <= '9'; }

static const double pow10_exact[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* Scans and pushes the number at d->p (RFC 8259 grammar). Up to 19 significant
 * digits and a power of ten at most 22 away are exact in one multiply or divide
 * (both operands are exact doubles, so the result is correctly rounded, as
 * strtod's is); anything else is strtod's (the text is NUL-terminated). */
static int number(dec_t *d) {
  const char *p = d->p, *end = d->end, *start = p;
  uint64_t m = 0;
  int neg = *p == '-', digits = 0, exp10 = 0, exact = 1;
  p += neg;
  if (p >= end || !is_digit(*p)) return -1;
  if (*p == '0') {
    p++;
  } else {
    for (; p < end && is_digit(*p); p++) {
      if (++digits > 19) exact = 0;
      m = m * 10 + (uint64_t)(*p - '0');
    }
  }
  if (p < end && *p == '.') {
    if (++p >= end || !is_digit(*p)) return -1;
    for (; p < end && is_digit(*p); p++) {
      if ((m || *p != '0') && ++digits > 19) exact = 0;
      m = m * 10 + (uint64_t)(*p - '0');
      exp10--;
    }
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    int eneg = 0, e = 0;
    p++;
    if (p < end && (*p == '+' || *p == '-')) eneg = *p++ == '-';
    if (p >= end || !is_digit(*p)) return -1;
    for (; p < end && is_digit(*p); p++)
      if (e < 10000) e = e * 10 + (*p - '0');
    exp10 += eneg ? -e : e;
  }
  d->p = p;
  if (!d->L) return 0;
  double v;
  if (exact && m <= (1ULL << 53) && exp10 >= -22 && exp10 <= 22) {
    v = (double)m;
    v = exp10 < 0 ? v / pow10_exact[-exp10] : v * pow10_exact[exp10];
    v = neg ? -v : v;
  } else {
    char *stop;
    v = strtod(start, &stop);
    if (stop != p) return -1;
  }
  lua_pushnumber(d->L, v);
  return 0;
}

/* 1 when the n bytes of the memo's text a and of b are the same; b_end is how far b
 * may be read (a, a memo text, has MEMO_LEN bytes). Short strings cost no call to
 * memcmp, and those under 8 bytes one masked compare where 8 bytes of b can be read. */
static inline int same_bytes(const char *a, const char *b, size_t n, const char *b_end) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  if (n < 8 && b_end - b >= 8) {
    uint64_t x, y;
    memcpy(&x, a, 8);
    memcpy(&y, b, 8);
    return ((x ^ y) & ((1ULL << (8 * n)) - 1)) == 0;
  }
#else
  (void)b_end;
#endif
  for (; n >= 8; a += 8, b += 8, n -= 8) {
    uint64_t x, y;
    memcpy(&x, a, 8);
    memcpy(&y, b, 8);
    if (x != y) return 0;
  }
  while (n--)
    if (*a++ != *b++) return 0;
  return 1;
}

/* Pushes the string s[0..n), from the memo when the string in the same place of the
 * previous document was the same. */
static inline __attribute__((always_inline)) void push_string(dec_t *d, const char *s, size_t n,
                                                              const char *s_end) {
  lua_State *L = d->L;
  memo_t *m = d->memo;
  unsigned slot = d->strings++;
  if (!m || slot >= MEMO_SLOTS || n >= MEMO_LEN) {
    lua_pushlstring(L, s, n);
    return;
  }
  if (m->len[slot] == n + 1 && same_bytes(m->text[slot], s, n, s_end)) {
    lua_rawgeti(L, d->memo_at, (int)slot + 1);
    m->misses[slot] = 0;
    return;
  }
  lua_pushlstring(L, s, n);
  if (m->misses[slot] >= MEMO_TRIES) return; /* a slot whose string keeps changing */
  m->misses[slot]++;
  lua_pushvalue(L, -1);
  lua_rawseti(L, d->memo_at, (int)slot + 1); /* memo[slot + 1] = the string */
  memcpy(m->text[slot], s, n);
  m->len[slot] = (uint8_t)(n + 1);
}

/* The string at d->p holds an escape: scanned again with the full grammar, pushed
 * unescaped. */
static int escaped_string(dec_t *d) {
  int escaped;
  const char *s = d->p + 1, *q = ndjson_skip_string(d->p, d->end, &escaped);
  if (!q) return -1;
  d->p = q;
  if (d->L) {
    size_t n = ndjson_unescape_to(d->buf, s, (size_t)(q - 1 - s));
    push_string(d, d->buf, n, d->buf + n);
  }
  return 0;
}

/* 1 when a string starts at d->p: a quote, or \" in a string body. */
static inline int at_string(const dec_t *d) {
  if (!d->raw) return d->p < d->end && *d->p == '"';
  return d->end - d->p >= 2 && d->p[0] == '\\' && d->p[1] == '"';
}

/* Scans and pushes the string at d->p (at_string). */
static int string(dec_t *d) {
  const char *s = d->p + 1 + d->raw, *q = s;
  for (;;) {
    q = ndjson_plain_span(q, d->end);
    if (q >= d->end) return -1;
    unsigned char c = (unsigned char)*q;
    if (c == '\\') {
      if (!d->raw) return escaped_string(d);
      if (d->end - q >= 2 && q[1] == '"') break; /* the closing \" */
      return -1;                                 /* an escape inside: not ours */
    }
    if (c == '"') {
      if (d->raw) return -1;
      break;
    }
    if (c < 0x80) return -1; /* a control byte */
    int n = utf8_len((const unsigned char *)q, (const unsigned char *)d->end, NULL);
    if (!n) return -1;
    q += n;
  }
  d->p = q + 1 + d->raw;
  if (d->L) push_string(d, s, (size_t)(q - s), d->end);
  return 0;
}

static int value(dec_t *d);

/* An array or object, built into a table created at the size the container in
 * the same place (the same opening order) had in the previous document. */
static int container(dec_t *d, int is_array) {
  lua_State *L = d->L;
  char close = is_array ? ']' : '}';
  unsigned slot = d->opened++;
  int n = 0;
  if (++d->depth > MAX_DEPTH) return -1;
  if (L) {
    int guess = d->memo && slot < SIZE_HINTS ? (int)d->memo->size_hint[slot] : 0;
    if (!lua_checkstack(L, 4)) return -1;
    lua_createtable(L, is_array ? guess : 0, is_array ? 0 : guess);
  }
  d->p++;
  skip_ws(d);
  if (d->p < d->end && *d->p == close) {
    d->p++;
  } else {
    for (;;) {
      if (!is_array) {
        if (!at_string(d) || string(d)) return -1;
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
      skip_ws(d);
      if (d->p >= d->end) return -1;
      if (*d->p == close) break;
      if (*d->p != ',') return -1;
      d->p++;
      skip_ws(d);
    }
    d->p++;
  }
  if (d->memo && slot < SIZE_HINTS)
    d->memo->size_hint[slot] = n < MAX_HINT ? (uint32_t)n : MAX_HINT;
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
  if (d->p >= d->end) return -1;
  switch (*d->p) {
  case '{': return container(d, 0);
  case '[': return container(d, 1);
  case '"':
  case '\\': return at_string(d) ? string(d) : -1;
  case 't': return literal(d, "true", 4);
  case 'f': return literal(d, "false", 5);
  case 'n': return literal(d, "null", 4);
  case '-':
  case '0' ... '9': return number(d);
  default: return -1;
  }
}

/* The whole text is one value between blanks; 0 with it pushed (when d->L), -1
 * with the stack as it was. */
static int document(dec_t *d) {
  lua_State *L = d->L;
  memo_t *m = d->memo;
  if (m) {
    if (++m->documents % MEMO_RELEARN == 0) memset(m->misses, 0, sizeof m->misses);
    lua_pushvalue(L, d->memo_strings); /* at a plain index, reached faster */
    d->memo_at = lua_gettop(L);
  }
  skip_ws(d);
  if (value(d) == 0) {
    skip_ws(d);
    if (d->p == d->end) {
      if (L) lua_replace(L, d->top + 1), lua_settop(L, d->top + 1); /* the value only */
      return 0;
    }
  }
  if (L) lua_settop(L, d->top);
  return -1;
}

/* Room for len + 16 bytes: `local` when it is big enough, else a userdata pushed
 * on the stack (collected with it). */
static char *scratch(lua_State *L, char *local, size_t local_size, size_t len) {
  return len + 16 <= local_size ? local : lua_newuserdata(L, len + 17);
}

/* Pushes the value of the JSON text s[0..len) (s[len] is a NUL, as in every Lua
 * string); 0, or -EINVAL with nothing pushed when it is not strict JSON. Raises only
 * on memory errors. */
static int push_text(lua_State *L, const char *s, size_t len, memo_t *memo, int memo_strings) {
  char local[STACK_TEXT];
  dec_t d = {.L = L, .p = s, .end = s + len, .memo = memo, .memo_strings = memo_strings};
  d.top = lua_gettop(L);
  d.buf = scratch(L, local, sizeof local, len); /* pushed when it is a userdata */
  return document(&d) ? -EINVAL : 0;
}

/* The same for the body of a JSON string whose only escapes are the quotes of the
 * document's strings (\"), read as it is: -EINVAL for any other body (it is then
 * unescaped and decoded as text). */
static int push_raw(lua_State *L, const char *raw, size_t len, memo_t *memo, int memo_strings) {
  dec_t d = {.L = L, .p = raw, .end = raw + len, .memo = memo, .memo_strings = memo_strings};
  d.raw = 1;
  d.top = lua_gettop(L);
  return document(&d) ? -EINVAL : 0;
}

int json_check(const char *s, size_t len) {
  dec_t d = {.L = NULL, .p = s, .end = s + len};
  return document(&d) ? -EINVAL : 0;
}

/* Asks cjson (upvalue 1) to decode text[0..len) and returns its one result. */
static int ask_cjson(lua_State *L, const char *text, size_t len) {
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushlstring(L, text, len);
  lua_call(L, 1, 1);
  return 1;
}

/* A decoder closure's upvalues: 1 cjson.decode, 2 the memo's string table, 3 the memo. */
#define MEMO_STRINGS lua_upvalueindex(2)
#define MEMO() ((memo_t *)lua_touserdata(L, lua_upvalueindex(3)))

/* decode(text): the value of the JSON text, as cjson.decode would give it. */
static int l_decode(lua_State *L) {
  size_t len;
  if (lua_type(L, 1) == LUA_TSTRING) {
    const char *s = lua_tolstring(L, 1, &len);
    if (push_text(L, s, len, MEMO(), MEMO_STRINGS) == 0) return 1;
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
  const char *raw = luaL_checklstring(L, 1, &len);
  if (push_raw(L, raw, len, MEMO(), MEMO_STRINGS) == 0) return 1;
  const char *text = unescaped(L, local, sizeof local, &len);
  if (push_text(L, text, len, MEMO(), MEMO_STRINGS) == 0) return 1;
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

/* Pushes fn as a decoder closure over argument 1 (cjson.decode) and a new memo. */
static int decoder_closure(lua_State *L, lua_CFunction fn) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_createtable(L, MEMO_SLOTS, 0); /* the memo's strings */
  memset(lua_newuserdata(L, sizeof(memo_t)), 0, sizeof(memo_t));
  lua_pushcclosure(L, fn, 3);
  return 1;
}

static int l_json_decoder(lua_State *L) { return decoder_closure(L, l_decode); }

static int l_payload_decoder(lua_State *L) { return decoder_closure(L, l_decode_payload); }

static int l_json_checker(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_pushcclosure(L, l_valid, 1);
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
