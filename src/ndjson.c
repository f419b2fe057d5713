/* ndjson — a one-pass scanner for outbox event lines.
 * It checks the full JSON grammar (RFC 8259) and UTF-8, but keeps only the spans of
 * the five top-level fields; a general parser would build a tree we would discard.
 * Plain string bytes are skipped 16 at a time with SSE2 where the compiler targets
 * it (a scalar loop otherwise). Invariant: unescaping writes at or before the read
 * position, so it is in place. */
#include "ndjson.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "utf8.h"

typedef struct scan {
  char *p;
  char *end;
  const char *err;
  int depth;
} scan_t;

#define MAX_DEPTH 256

static void skip_ws(scan_t *s) {
  while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\r' || *s->p == '\n')) s->p++;
}

static int fail(scan_t *s, const char *msg) {
  if (!s->err) s->err = msg;
  return -EINVAL;
}

static int hex4(const char *p, unsigned *out) {
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    v <<= 4;
    if (c >= '0' && c <= '9')
      v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f')
      v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F')
      v |= (unsigned)(c - 'A' + 10);
    else
      return -1;
  }
  *out = v;
  return 0;
}

/* 1 for bytes that stand for themselves inside a JSON string (printable ASCII but
 * the quote and the backslash). */
static const unsigned char plain[256] = {
    ['\x20'] = 1,
    ['!'] = 1,
    ['#' ... '['] = 1,
    [']' ... '\x7f'] = 1,
};

/* The byte a one-letter escape stands for ('u' for \uXXXX), 0 when it is not one. */
static const char simple_escape[256] = {
    ['"'] = '"',  ['\\'] = '\\', ['/'] = '/',  ['b'] = '\b', ['f'] = '\f',
    ['n'] = '\n', ['r'] = '\r',  ['t'] = '\t', ['u'] = 'u',
};

#if defined(__SSE2__)
/* Bit i set when byte i of v is not plain (a quote, a backslash, below 0x20 or above
 * 0x7f). */
static unsigned special16(__m128i v) {
  /* a signed compare: bytes above 0x7f are negative, so they are flagged with 0..0x1f */
  __m128i m = _mm_or_si128(
      _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')), _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))),
      _mm_cmplt_epi8(v, _mm_set1_epi8(0x20)));
  return (unsigned)_mm_movemask_epi8(m);
}

/* The escaped bytes of a block whose backslashes are at `bs`, when every one starts
 * a one-letter escape (\n, \") that lies in the block; else 0 (the block is then
 * stepped one escape at a time). */
static unsigned simple_escapes16(__m128i v, unsigned bs) {
  unsigned escaped = bs << 1;
  if ((bs & escaped) || (bs & 0x8000)) return 0; /* a backslash run, or an escape across blocks */
  __m128i ok =
      _mm_or_si128(_mm_cmpeq_epi8(v, _mm_set1_epi8('"')), _mm_cmpeq_epi8(v, _mm_set1_epi8('/')));
  ok = _mm_or_si128(ok, _mm_cmpeq_epi8(v, _mm_set1_epi8('b')));
  ok = _mm_or_si128(ok, _mm_cmpeq_epi8(v, _mm_set1_epi8('f')));
  ok = _mm_or_si128(ok, _mm_cmpeq_epi8(v, _mm_set1_epi8('n')));
  ok = _mm_or_si128(ok, _mm_cmpeq_epi8(v, _mm_set1_epi8('r')));
  ok = _mm_or_si128(ok, _mm_cmpeq_epi8(v, _mm_set1_epi8('t')));
  return (escaped & ~(unsigned)_mm_movemask_epi8(ok)) ? 0 : escaped;
}
#endif

/* First byte at or after p that is not plain, or end. One-letter escapes (\n, \")
 * are stepped over when they lie in the block at hand (they need no other check);
 * *esc is set to 1 when one was. A block whose escapes are all such is classified
 * at once (simple_escapes16), any other one escape at a time. */
static const unsigned char *plain_run(const unsigned char *p, const unsigned char *end, int *esc) {
#if defined(__SSE2__)
  while (end - p >= 16) {
    __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
    unsigned bs = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8('\\')));
    unsigned bits = special16(v), escaped;
    if (bs && (escaped = simple_escapes16(v, bs))) {
      bits &= ~(bs | escaped); /* what is left: an unescaped quote, a control or high byte */
      *esc = 1;
      if (bits) return p + __builtin_ctz(bits);
      p += 16;
      continue;
    }
    while (bits) {
      int k = __builtin_ctz(bits);
      char e;
      if (p[k] != '\\' || k == 15 || !(e = simple_escape[p[k + 1]]) || e == 'u') return p + k;
      bits &= ~(3u << k);
      *esc = 1;
    }
    p += 16;
  }
#endif
  while (p < end && plain[*p]) p++;
  return p;
}

const char *ndjson_plain_span(const char *p, const char *end) {
  const unsigned char *u = (const unsigned char *)p, *e = (const unsigned char *)end;
#if defined(__SSE2__)
  for (; e - u >= 16; u += 16) {
    unsigned bits = special16(_mm_loadu_si128((const __m128i *)(const void *)u));
    if (bits) return (const char *)(u + __builtin_ctz(bits));
  }
#endif
  while (u < e && plain[*u]) u++;
  return (const char *)u;
}

/* Next backslash at or after p, or end; the bytes before it are copied to *w,
 * which moves past them. In place (*w <= p) a block is stored only when it holds no
 * backslash, since the bytes after one are not read yet; otherwise the block is
 * stored whole and *w must have 16 bytes of room past the end. */
static const char *copy_to_backslash(const char *p, const char *end, char **w, int in_place) {
  char *o = *w;
#if defined(__SSE2__)
  while (end - p >= 16) {
    __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
    unsigned bits = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8('\\')));
    if (bits && in_place && o != p) break;
    _mm_storeu_si128((__m128i *)(void *)o, v);
    if (bits) {
      int k = __builtin_ctz(bits);
      *w = o + k;
      return p + k;
    }
    p += 16, o += 16;
  }
#endif
  while (p < end && *p != '\\') *o++ = *p++;
  *w = o;
  return p;
}

/* Reads the \uXXXX escape (or surrogate pair) whose 'u' is at p[0]. Returns the
 * number of bytes after the 'u' it used (4 or 10) and the code point, or -1 with
 * *why set. */
static int read_u(const char *p, const char *end, unsigned *cp, const char **why) {
  unsigned hi, lo;
  if (end - p < 5 || hex4(p + 1, &hi)) return *why = "bad \\u escape", -1;
  if (hi >= 0xDC00 && hi <= 0xDFFF) return *why = "unpaired surrogate in \\u escape", -1;
  if (hi < 0xD800 || hi > 0xDBFF) return *cp = hi, 4;
  if (end - p < 11 || p[5] != '\\' || p[6] != 'u' || hex4(p + 7, &lo) || lo < 0xDC00 || lo > 0xDFFF)
    return *why = "unpaired surrogate in \\u escape", -1;
  *cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
  return 10;
}

/* Scans a string starting at '"' to past its closing quote, validating escapes and
 * UTF-8; the buffer is left as it is. *escaped (when not NULL) gets 1 when the
 * string holds an escape, so its text differs from its bytes. */
static int skip_string(scan_t *s, int *escaped) {
  const unsigned char *p = (const unsigned char *)s->p + 1, *end = (const unsigned char *)s->end;
  int esc = 0;
  for (;;) {
    p = plain_run(p, end, &esc);
    if (p >= end) return fail(s, "unterminated string");
    unsigned char c = *p;
    if (c == '"') break;
    if (c == '\\') {
      esc = 1;
      if (end - p < 2) return fail(s, "unterminated string");
      char e = simple_escape[p[1]];
      if (!e) return fail(s, "bad escape in string");
      if (e == 'u') {
        unsigned cp;
        const char *why;
        int n = read_u((const char *)p + 1, (const char *)end, &cp, &why);
        if (n < 0) return fail(s, why);
        p += 2 + n;
      } else {
        p += 2;
      }
      continue;
    }
    if (c < 0x20) return fail(s, "control character in string");
    int n = utf8_len(p, end, NULL);
    if (!n) return fail(s, "invalid UTF-8");
    p += n;
  }
  s->p = (char *)(uintptr_t)(p + 1);
  if (escaped) *escaped = esc;
  return 0;
}

size_t ndjson_unescape_to(char *dst, const char *src, size_t len) {
  const char *r = src, *end = src + len;
  char *w = dst;
  int in_place = dst == src;
  while ((r = copy_to_backslash(r, end, &w, in_place)) < end) {
    char e = r + 1 < end ? simple_escape[(unsigned char)r[1]] : 0;
    if (e && e != 'u') {
      *w++ = e, r += 2;
      continue;
    }
    unsigned cp;
    const char *why;
    int n = e ? read_u(r + 1, end, &cp, &why) : -1;
    if (n < 0) { /* not validated: keep the byte as it is */
      *w++ = *r++;
      continue;
    }
    w = utf8_put(w, cp);
    r += 2 + n;
  }
  return (size_t)(w - dst);
}

size_t ndjson_unescape(char *s, size_t len) { return ndjson_unescape_to(s, s, len); }

static int skip_number(scan_t *s) {
  char *p = s->p;
  int minus = p < s->end && *p == '-';
  p += minus;
  if (p >= s->end || (minus && (*p < '0' || *p > '9'))) return fail(s, "bad number");
  if (*p == '0') {
    p++;
  } else if (*p >= '1' && *p <= '9') {
    while (p < s->end && *p >= '0' && *p <= '9') p++;
  } else {
    return fail(s, "unexpected character");
  }
  if (p < s->end && *p == '.') {
    p++;
    if (p >= s->end || *p < '0' || *p > '9') return fail(s, "bad number");
    while (p < s->end && *p >= '0' && *p <= '9') p++;
  }
  if (p < s->end && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < s->end && (*p == '+' || *p == '-')) p++;
    if (p >= s->end || *p < '0' || *p > '9') return fail(s, "bad number");
    while (p < s->end && *p >= '0' && *p <= '9') p++;
  }
  s->p = p;
  return 0;
}

static int skip_lit(scan_t *s, const char *lit, size_t n) {
  if ((size_t)(s->end - s->p) < n || memcmp(s->p, lit, n) != 0)
    return fail(s, "unexpected character");
  s->p += n;
  return 0;
}

static int skip_value(scan_t *s);

static int skip_container(scan_t *s, char close) {
  int first = 1;
  if (++s->depth > MAX_DEPTH) return fail(s, "nesting too deep");
  s->p++;
  for (;;) {
    skip_ws(s);
    if (s->p >= s->end) return fail(s, "unexpected end of line");
    if (*s->p == close && first) break;
    if (!first) {
      if (*s->p == close) break;
      if (*s->p != ',')
        return fail(s, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
      s->p++;
      skip_ws(s);
    }
    first = 0;
    if (close == '}') {
      if (s->p >= s->end || *s->p != '"') return fail(s, "expected a string key");
      if (skip_string(s, NULL)) return -EINVAL;
      skip_ws(s);
      if (s->p >= s->end || *s->p != ':') return fail(s, "expected ':'");
      s->p++;
      skip_ws(s);
    }
    if (skip_value(s)) return -EINVAL;
  }
  s->p++;
  s->depth--;
  return 0;
}

static int skip_value(scan_t *s) {
  if (s->p >= s->end) return fail(s, "unexpected end of line");
  switch (*s->p) {
  case '{': return skip_container(s, '}');
  case '[': return skip_container(s, ']');
  case '"': return skip_string(s, NULL);
  case 't': return skip_lit(s, "true", 4);
  case 'f': return skip_lit(s, "false", 5);
  case 'n': return skip_lit(s, "null", 4);
  default: return skip_number(s);
  }
}

static int validate(scan_t *s, const char **err) {
  skip_ws(s);
  if (skip_value(s)) goto bad;
  skip_ws(s);
  if (s->p != s->end) {
    fail(s, "trailing characters after the value");
    goto bad;
  }
  return 0;
bad:
  if (err) *err = s->err;
  return -EINVAL;
}

int ndjson_validate(const char *str, size_t len, const char **err) {
  scan_t s = {(char *)(uintptr_t)str, (char *)(uintptr_t)str + len, NULL, 0};
  return validate(&s, err);
}

const char *ndjson_skip_string(const char *p, const char *end, int *escaped) {
  scan_t s = {(char *)(uintptr_t)p, (char *)(uintptr_t)end, NULL, 0};
  return skip_string(&s, escaped) ? NULL : s.p;
}

static int key_is(const char *k, size_t n, const char *name, size_t name_len) {
  return n == name_len && memcmp(k, name, n) == 0;
}

/* Value of a top-level field: strings as the span between their quotes (*escaped
 * says whether it still holds escapes); others kept as text. */
static int field(scan_t *s, char **v, size_t *vlen, int *is_str, int *escaped) {
  char *start = s->p;
  *escaped = 0;
  *is_str = *start == '"';
  if (*is_str) {
    if (skip_string(s, escaped)) return -EINVAL;
    *v = start + 1;
    *vlen = (size_t)(s->p - start - 2);
    return 0;
  }
  if (skip_value(s)) return -EINVAL;
  *v = start;
  *vlen = (size_t)(s->p - start);
  return 0;
}

/* A validated JSON number that is an integer in int64 range. */
static int parse_id(const char *v, size_t n, int64_t *out) {
  const char *end = v + n;
  int minus = *v == '-';
  uint64_t x = 0, limit = minus ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
  v += minus;
  for (; v < end; v++) {
    if (*v < '0' || *v > '9') return -1;
    unsigned d = (unsigned)(*v - '0');
    if (x > (limit - d) / 10) return -1;
    x = x * 10 + d;
  }
  *out = minus ? (int64_t)(0 - x) : (int64_t)x;
  return 0;
}

int ndjson_parse(char *line, size_t len, ndjson_rec_t *rec, const char **err) {
  scan_t s = {line, line + len, NULL, 0};
  int have_topic = 0, have_payload = 0, first = 1;
  memset(rec, 0, sizeof *rec);
  skip_ws(&s);
  if (s.p == s.end) return -ENODATA;
  if (*s.p != '{') {
    fail(&s, "a line must be a JSON object");
    goto bad;
  }
  s.p++;
  s.depth = 1;
  for (;;) {
    char *k, *v;
    size_t klen, vlen;
    int is_str, esc;
    skip_ws(&s);
    if (s.p >= s.end) {
      fail(&s, "unexpected end of line");
      goto bad;
    }
    if (*s.p == '}') {
      if (!first && s.p[-1] == ',') {
        fail(&s, "trailing comma");
        goto bad;
      }
      s.p++;
      break;
    }
    if (!first) {
      if (*s.p != ',') {
        fail(&s, "expected ',' or '}'");
        goto bad;
      }
      s.p++;
      skip_ws(&s);
    }
    first = 0;
    if (s.p < s.end && *s.p == '}') {
      fail(&s, "trailing comma");
      goto bad;
    }
    if (s.p >= s.end || *s.p != '"') {
      fail(&s, "expected a string key");
      goto bad;
    }
    if (field(&s, &k, &klen, &is_str, &esc)) goto bad;
    if (esc) klen = ndjson_unescape(k, klen);
    skip_ws(&s);
    if (s.p >= s.end || *s.p != ':') {
      fail(&s, "expected ':'");
      goto bad;
    }
    s.p++;
    skip_ws(&s);
    if (s.p >= s.end) {
      fail(&s, "unexpected end of line");
      goto bad;
    }
    if (field(&s, &v, &vlen, &is_str, &esc)) goto bad;
    if (key_is(k, klen, "topic", 5)) {
      if (esc) vlen = ndjson_unescape(v, vlen);
      if (!is_str || vlen == 0) {
        fail(&s, "\"topic\" must be a non-empty string");
        goto bad;
      }
      if (esc && memchr(v, 0, vlen)) { /* only \u0000 puts a NUL there */
        fail(&s, "\"topic\" contains a NUL character (\\u0000)");
        goto bad;
      }
      rec->topic = v, rec->topic_len = vlen, have_topic = 1;
    } else if (key_is(k, klen, "payload", 7)) {
      if (!is_str && vlen == 4 && memcmp(v, "null", 4) == 0) {
        fail(&s, "\"payload\" is null");
        goto bad;
      }
      rec->payload = v, rec->payload_len = vlen, rec->payload_escaped = esc, have_payload = 1;
    } else if (key_is(k, klen, "key", 3)) {
      if (is_str) {
        rec->key = v, rec->key_len = esc ? ndjson_unescape(v, vlen) : vlen;
        if (esc && memchr(v, 0, rec->key_len)) {
          fail(&s, "\"key\" contains a NUL character (\\u0000)");
          goto bad;
        }
      } else if (!(vlen == 4 && memcmp(v, "null", 4) == 0)) {
        fail(&s, "\"key\" must be a string");
        goto bad;
      }
    } else if (key_is(k, klen, "headers", 7)) {
      if (!is_str && v[0] == '{')
        rec->headers = v, rec->headers_len = vlen;
      else if (!(vlen == 4 && memcmp(v, "null", 4) == 0)) {
        fail(&s, "\"headers\" must be an object");
        goto bad;
      }
    } else if (key_is(k, klen, "id", 2)) {
      if (is_str || parse_id(v, vlen, &rec->id)) {
        fail(&s, "\"id\" must be an integer");
        goto bad;
      }
      rec->has_id = 1;
    }
  }
  skip_ws(&s);
  if (s.p != s.end) {
    fail(&s, "trailing characters after the object");
    goto bad;
  }
  if (!have_topic) {
    fail(&s, "missing \"topic\"");
    goto bad;
  }
  if (!have_payload) {
    fail(&s, "missing \"payload\"");
    goto bad;
  }
  /* NUL-terminate the spans; each is followed by at least one byte we no longer need
   * (a quote, a comma, a brace or the line's own terminator). */
  rec->topic[rec->topic_len] = 0;
  if (rec->key) rec->key[rec->key_len] = 0;
  rec->payload[rec->payload_len] = 0;
  if (rec->headers) rec->headers[rec->headers_len] = 0;
  return 0;
bad:
  if (err) *err = s.err ? s.err : "malformed JSON";
  return -EINVAL;
}
