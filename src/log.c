/* log — levelled, structured log lines on stderr.
 * Invariant: each call writes exactly one line with one write(2), so lines from
 * one process never interleave. */
#include "log.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "utf8.h"

static int fmt = LOG_TEXT;
static int min_level = LOG_INFO;
static const char *names[] = {"debug", "info", "warn", "error"};
static size_t (*status_line)(char *buf, size_t cap);

void log_set_status_line(size_t (*fn)(char *buf, size_t cap)) { status_line = fn; }

void log_setup(int format, int level) {
  fmt = format;
  min_level = level;
}

int log_format(void) { return fmt; }

int log_enabled(int level) { return level >= min_level; }

int log_level_parse(const char *s) {
  for (int i = 0; i < 4; i++)
    if (strcmp(s, names[i]) == 0) return i;
  if (strcmp(s, "warning") == 0) return LOG_WARN;
  return -1;
}

#define LINE_ROOM 8192   /* one log line at most */
#define STATUS_ROOM 1024 /* then the status line redrawn after it */
#define VALUE_ROOM 2048  /* one value at most, escaped; longer ones are cut inside */
#define KEY_ROOM 128     /* one field name at most */
#define TAIL_ROOM 64     /* kept for the line's end: a dropped-fields note, "}\n" */
#define CUT_ROOM 32      /* the cut marker: "...[cut 123456789 bytes]" */

typedef struct buf {
  char data[LINE_ROOM + STATUS_ROOM];
  size_t len;
} buf_t;

static size_t min_sz(size_t a, size_t b) { return a < b ? a : b; }

/* Bytes left for fields, keeping TAIL_ROOM for the end of the line. */
static size_t room(const buf_t *b) {
  return b->len < LINE_ROOM - TAIL_ROOM ? LINE_ROOM - TAIL_ROOM - b->len : 0;
}

/* Appends; callers size their writes with room() first, so this only guards. */
static void put(buf_t *b, const char *s, size_t n) {
  if (n > LINE_ROOM - 1 - b->len) n = LINE_ROOM - 1 - b->len;
  memcpy(b->data + b->len, s, n);
  b->len += n;
}

static void puts_(buf_t *b, const char *s) { put(b, s, strlen(s)); }

static void putf(buf_t *b, double v, int is_int) {
  char tmp[64];
  int n;
  if (is_int || (v == floor(v) && fabs(v) < 9e15))
    n = snprintf(tmp, sizeof tmp, "%lld", (long long)v);
  else if (isfinite(v))
    n = snprintf(tmp, sizeof tmp, "%.15g", v);
  else
    n = snprintf(tmp, sizeof tmp, "null");
  put(b, tmp, (size_t)n);
}

/* The escaped form of the character at p into out (at most 6 bytes); sets *used to
 * the bytes it stands for. Control characters (C0, DEL, C1) become \u00XX, invalid
 * UTF-8 becomes \ufffd; with `raw` (text that is JSON already) quotes and
 * backslashes pass as they are. */
static int esc_char(const unsigned char *p, const unsigned char *end, int raw, char *out,
                    int *used) {
  unsigned cp;
  *used = 1;
  switch (*p) {
  case '"':
  case '\\':
    if (raw) break;
    out[0] = '\\', out[1] = (char)*p;
    return 2;
  case '\n': memcpy(out, "\\n", 2); return 2;
  case '\r': memcpy(out, "\\r", 2); return 2;
  case '\t': memcpy(out, "\\t", 2); return 2;
  default: break;
  }
  if (*p < 0x80) {
    if (*p >= 0x20 && *p != 0x7f) {
      out[0] = (char)*p;
      return 1;
    }
    return snprintf(out, 7, "\\u%04x", *p);
  }
  int n = utf8_len(p, end, &cp);
  if (!n) {
    memcpy(out, UTF8_REPLACEMENT_JSON, 6);
    return 6;
  }
  *used = n;
  if (cp <= 0x9f) return snprintf(out, 7, "\\u%04x", cp); /* C1 controls */
  memcpy(out, p, (size_t)n);
  return n;
}

/* Length of s escaped. */
static size_t esc_len(const char *s, int raw) {
  const unsigned char *p = (const unsigned char *)s, *end = p + strlen(s);
  size_t n = 0;
  char tmp[8];
  int used;
  while (p < end) {
    n += (size_t)esc_char(p, end, raw, tmp, &used);
    p += used;
  }
  return n;
}

/* Writes s escaped in at most `budget` bytes; a longer value is cut at a character
 * boundary and ends with "...[cut N bytes]" (N: the bytes of s left out). */
static void put_esc(buf_t *b, const char *s, int raw, size_t budget) {
  const unsigned char *p = (const unsigned char *)s, *end = p + strlen(s);
  size_t limit = esc_len(s, raw) <= budget ? budget : budget > CUT_ROOM ? budget - CUT_ROOM : 0;
  size_t out = 0;
  char tmp[8];
  int used;
  while (p < end) {
    int n = esc_char(p, end, raw, tmp, &used);
    if (out + (size_t)n > limit) {
      char mark[CUT_ROOM + 8];
      int m = snprintf(mark, sizeof mark, "...[cut %zu bytes]", (size_t)(end - p));
      put(b, mark, (size_t)m);
      return;
    }
    put(b, tmp, (size_t)n);
    out += (size_t)n;
    p += used;
  }
}

size_t log_escape(const char *s, char *out, size_t cap) {
  buf_t b;
  if (!cap) return 0;
  b.len = 0;
  put_esc(&b, s ? s : "", 0, min_sz(cap - 1, VALUE_ROOM));
  memcpy(out, b.data, b.len);
  out[b.len] = 0;
  return b.len;
}

/* A JSON string of s within `budget` bytes, quotes included. */
static void put_json_str(buf_t *b, const char *s, size_t budget) {
  put(b, "\"", 1);
  put_esc(b, s, 0, budget > 2 ? budget - 2 : 0);
  put(b, "\"", 1);
}

/* Text value: bare when it is plain printable ASCII without space, quote or '=',
 * else quoted and escaped like JSON. */
static void put_text_val(buf_t *b, const char *s, size_t budget) {
  const unsigned char *p = (const unsigned char *)s;
  while (*p > 0x20 && *p < 0x7f && *p != '"' && *p != '=') p++;
  if (*s && !*p && (size_t)(p - (const unsigned char *)s) <= budget) {
    puts_(b, s);
    return;
  }
  put_json_str(b, s, budget);
}

/* One field's value in JSON: a number, a string, or JSON text (KJ) written as it is
 * when it fits, else as a cut string. */
static void put_json_val(buf_t *b, const log_kv_t *kv, size_t budget) {
  if (!kv->str)
    putf(b, kv->num, kv->is_int);
  else if (kv->raw && esc_len(kv->str, 1) <= budget)
    put_esc(b, kv->str, 1, budget);
  else
    put_json_str(b, kv->str, budget);
}

static void stamp(char *out, size_t n) {
  struct timeval tv;
  struct tm tm;
  gettimeofday(&tv, NULL);
  gmtime_r(&tv.tv_sec, &tm);
  size_t k = strftime(out, n, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out + k, n - k, ".%03dZ", (int)(tv.tv_usec / 1000));
}

void log_fields(int level, const char *msg, const log_kv_t *kv, int n) {
  buf_t b;
  char ts[40];
  int dropped = 0;
  if (level < min_level) return;
  if (level < 0 || level > LOG_ERROR) level = LOG_ERROR;
  b.len = 0;
  if (status_line) puts_(&b, "\r\033[K"); /* erase the status line first */
  stamp(ts, sizeof ts);
  if (fmt == LOG_JSON) {
    puts_(&b, "{\"ts\":\"");
    puts_(&b, ts);
    puts_(&b, "\",\"level\":\"");
    puts_(&b, names[level]);
    puts_(&b, "\",\"msg\":");
    put_json_str(&b, msg, VALUE_ROOM);
    for (int i = 0; i < n; i++) {
      size_t klen = min_sz(esc_len(kv[i].key, 0), KEY_ROOM) + 4; /* ,"key": */
      if (room(&b) < klen + CUT_ROOM + 24) { /* no room left for this field */
        dropped++;
        continue;
      }
      put(&b, ",", 1);
      put_json_str(&b, kv[i].key, KEY_ROOM);
      put(&b, ":", 1);
      put_json_val(&b, &kv[i], min_sz(VALUE_ROOM, room(&b)));
    }
    if (dropped) {
      char note[48];
      put(&b, note, (size_t)snprintf(note, sizeof note, ",\"fields_dropped\":%d", dropped));
    }
    put(&b, "}", 1);
  } else {
    puts_(&b, ts);
    put(&b, " ", 1);
    puts_(&b, names[level]);
    put(&b, " ", 1);
    put_esc(&b, msg, 0, VALUE_ROOM);
    for (int i = 0; i < n; i++) {
      size_t klen = min_sz(esc_len(kv[i].key, 0), KEY_ROOM) + 2;
      if (room(&b) < klen + CUT_ROOM + 24) {
        dropped++;
        continue;
      }
      put(&b, " ", 1);
      put_esc(&b, kv[i].key, 0, KEY_ROOM);
      put(&b, "=", 1);
      if (kv[i].str)
        put_text_val(&b, kv[i].str, min_sz(VALUE_ROOM, room(&b)));
      else
        putf(&b, kv[i].num, kv[i].is_int);
    }
    if (dropped) {
      char note[48];
      put(&b, note, (size_t)snprintf(note, sizeof note, " fields_dropped=%d", dropped));
    }
  }
  b.data[b.len++] = '\n';
  if (status_line) b.len += status_line(b.data + b.len, sizeof(b.data) - b.len); /* redraw */
  ssize_t w = write(STDERR_FILENO, b.data, b.len);
  (void)w;
}
