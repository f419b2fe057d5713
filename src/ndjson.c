/* ndjson — a one-pass scanner for outbox event lines.
 * It checks the full JSON grammar (RFC 8259) and UTF-8, but keeps only the spans of
 * the five top-level fields; a general parser would build a tree we would discard.
 * Invariant: unescaping writes at or before the read position, so it is in place. */
#include "ndjson.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

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
    ['\x20'] = 1, ['!'] = 1, ['#' ... '['] = 1, [']' ... '\x7f'] = 1,
};

/* Decodes one escape sequence at s->p (just past the backslash) into buf.
 * Returns the number of bytes (1..4) or -EINVAL. */
static int escape(scan_t *s, char *buf) {
  unsigned cp;
  char e = *s->p++;
  switch (e) {
  case '"':
  case '\\':
  case '/': buf[0] = e; return 1;
  case 'b': buf[0] = '\b'; return 1;
  case 'f': buf[0] = '\f'; return 1;
  case 'n': buf[0] = '\n'; return 1;
  case 'r': buf[0] = '\r'; return 1;
  case 't': buf[0] = '\t'; return 1;
  case 'u': break;
  default: return fail(s, "bad escape in string");
  }
  if (s->end - s->p < 4 || hex4(s->p, &cp)) return fail(s, "bad \\u escape");
  s->p += 4;
  if (cp >= 0xD800 && cp <= 0xDBFF) {
    unsigned lo;
    if (s->end - s->p < 6 || s->p[0] != '\\' || s->p[1] != 'u' || hex4(s->p + 2, &lo) ||
        lo < 0xDC00 || lo > 0xDFFF)
      return fail(s, "unpaired surrogate in \\u escape");
    s->p += 6;
    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
  } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
    return fail(s, "unpaired surrogate in \\u escape");
  }
  return (int)(utf8_put(buf, cp) - buf);
}

/* Scans a string starting at '"', validating escapes and UTF-8. With unescape,
 * the decoded bytes are written in place from the string's start and *out /
 * *out_len describe them; otherwise the buffer is left as it is. */
static int scan_string(scan_t *s, int unescape, char **out, size_t *out_len) {
  char *w = ++s->p; /* past the opening quote */
  char *start = w;
  while (s->p < s->end) {
    unsigned char c = (unsigned char)*s->p;
    char buf[4];
    int n;
    if (plain[c]) { /* a run of plain ASCII: the common case, kept tight */
      const unsigned char *p = (const unsigned char *)s->p + 1, *end = (const unsigned char *)s->end;
      while (p < end && plain[*p]) p++;
      char *run = s->p;
      s->p = (char *)(uintptr_t)p;
      if (unescape) {
        if (w != run) memmove(w, run, (size_t)(s->p - run));
        w += s->p - run;
      }
      continue;
    }
    if (c == '"') {
      s->p++;
      if (unescape) *out = start, *out_len = (size_t)(w - start);
      return 0;
    }
    if (c < 0x20) return fail(s, "control character in string");
    if (c == '\\') {
      if (s->end - s->p < 2) return fail(s, "unterminated string");
      s->p++;
      if ((n = escape(s, buf)) < 0) return n;
      if (unescape) memcpy(w, buf, (size_t)n), w += n;
      continue;
    }
    n = c < 0x80 ? 1 : utf8_len((const unsigned char *)s->p, (const unsigned char *)s->end, NULL);
    if (!n) return fail(s, "invalid UTF-8");
    if (unescape) memmove(w, s->p, (size_t)n), w += n;
    s->p += n;
  }
  return fail(s, "unterminated string");
}

/* Validates a string without changing the buffer. Most strings are plain ASCII
 * up to the closing quote: that case is one tight loop; any other byte sends the
 * string through scan_string from its start. */
static int skip_string(scan_t *s) {
  const unsigned char *p = (const unsigned char *)s->p + 1, *end = (const unsigned char *)s->end;
  while (p < end && plain[*p]) p++;
  if (p < end && *p == '"') {
    s->p = (char *)(uintptr_t)(p + 1);
    return 0;
  }
  return scan_string(s, 0, NULL, NULL);
}

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

static int skip_lit(scan_t *s, const char *lit) {
  size_t n = strlen(lit);
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
      if (skip_string(s)) return -EINVAL;
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
  case '"': return skip_string(s);
  case 't': return skip_lit(s, "true");
  case 'f': return skip_lit(s, "false");
  case 'n': return skip_lit(s, "null");
  default: return skip_number(s);
  }
}

int ndjson_validate(const char *str, size_t len, const char **err) {
  scan_t s = {(char *)(uintptr_t)str, (char *)(uintptr_t)str + len, NULL, 0};
  skip_ws(&s);
  if (skip_value(&s)) goto bad;
  skip_ws(&s);
  if (s.p != s.end) {
    fail(&s, "trailing characters after the value");
    goto bad;
  }
  return 0;
bad:
  if (err) *err = s.err;
  return -EINVAL;
}

static int key_is(const char *k, size_t n, const char *name) {
  return strlen(name) == n && memcmp(k, name, n) == 0;
}

/* Value of a top-level field: strings unescaped in place; others kept as text. */
static int field(scan_t *s, char **v, size_t *vlen, int *is_str) {
  if (*s->p == '"') {
    *is_str = 1;
    return scan_string(s, 1, v, vlen);
  }
  char *start = s->p;
  *is_str = 0;
  if (skip_value(s)) return -EINVAL;
  *v = start;
  *vlen = (size_t)(s->p - start);
  return 0;
}

static int parse_id(const char *v, size_t n, int64_t *out) {
  char tmp[32];
  char *end;
  if (n == 0 || n >= sizeof tmp) return -1;
  memcpy(tmp, v, n);
  tmp[n] = 0;
  errno = 0;
  long long x = strtoll(tmp, &end, 10);
  if (errno || *end) return -1;
  *out = x;
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
    int is_str;
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
    if (scan_string(&s, 1, &k, &klen)) goto bad;
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
    if (field(&s, &v, &vlen, &is_str)) goto bad;
    if (key_is(k, klen, "topic")) {
      if (!is_str || vlen == 0) {
        fail(&s, "\"topic\" must be a non-empty string");
        goto bad;
      }
      if (memchr(v, 0, vlen)) {
        fail(&s, "\"topic\" contains a NUL character (\\u0000)");
        goto bad;
      }
      rec->topic = v, rec->topic_len = vlen, have_topic = 1;
    } else if (key_is(k, klen, "payload")) {
      if (!is_str && vlen == 4 && memcmp(v, "null", 4) == 0) {
        fail(&s, "\"payload\" is null");
        goto bad;
      }
      rec->payload = v, rec->payload_len = vlen, have_payload = 1;
    } else if (key_is(k, klen, "key")) {
      if (is_str && memchr(v, 0, vlen)) {
        fail(&s, "\"key\" contains a NUL character (\\u0000)");
        goto bad;
      } else if (is_str)
        rec->key = v, rec->key_len = vlen;
      else if (!(vlen == 4 && memcmp(v, "null", 4) == 0)) {
        fail(&s, "\"key\" must be a string");
        goto bad;
      }
    } else if (key_is(k, klen, "headers")) {
      if (!is_str && v[0] == '{')
        rec->headers = v, rec->headers_len = vlen;
      else if (!(vlen == 4 && memcmp(v, "null", 4) == 0)) {
        fail(&s, "\"headers\" must be an object");
        goto bad;
      }
    } else if (key_is(k, klen, "id")) {
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
