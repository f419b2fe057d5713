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

typedef struct buf {
  char data[LINE_ROOM + STATUS_ROOM];
  size_t len;
} buf_t;

static void put(buf_t *b, const char *s, size_t n) {
  if (n > LINE_ROOM - 2 - b->len) n = LINE_ROOM - 2 - b->len;
  memcpy(b->data + b->len, s, n);
  b->len += n;
}

static void puts_(buf_t *b, const char *s) { put(b, s, strlen(s)); }

static void putf(buf_t *b, const char *f, double v, int is_int) {
  char tmp[64];
  int n;
  if (is_int || (v == floor(v) && fabs(v) < 9e15))
    n = snprintf(tmp, sizeof tmp, "%lld", (long long)v);
  else if (isfinite(v))
    n = snprintf(tmp, sizeof tmp, "%.15g", v);
  else
    n = snprintf(tmp, sizeof tmp, f ? "null" : "%s", "null");
  put(b, tmp, (size_t)n);
}

/* JSON string body, escaped; control bytes as \u00XX. */
static void put_json_str(buf_t *b, const char *s) {
  put(b, "\"", 1);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    char esc[8];
    switch (*p) {
    case '"': put(b, "\\\"", 2); break;
    case '\\': put(b, "\\\\", 2); break;
    case '\n': put(b, "\\n", 2); break;
    case '\r': put(b, "\\r", 2); break;
    case '\t': put(b, "\\t", 2); break;
    default:
      if (*p < 0x20) {
        snprintf(esc, sizeof esc, "\\u%04x", *p);
        put(b, esc, 6);
      } else {
        put(b, (const char *)p, 1);
      }
    }
  }
  put(b, "\"", 1);
}

/* Text value: bare when it has no space, quote or '=', else quoted like JSON. */
static void put_text_val(buf_t *b, const char *s) {
  if (*s && strcspn(s, " \t\n\r\"=") == strlen(s)) {
    puts_(b, s);
    return;
  }
  put_json_str(b, s);
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
    put_json_str(&b, msg);
    for (int i = 0; i < n; i++) {
      put(&b, ",", 1);
      put_json_str(&b, kv[i].key);
      put(&b, ":", 1);
      if (kv[i].str)
        put_json_str(&b, kv[i].str);
      else
        putf(&b, "json", kv[i].num, kv[i].is_int);
    }
    put(&b, "}", 1);
  } else {
    puts_(&b, ts);
    put(&b, " ", 1);
    puts_(&b, names[level]);
    put(&b, " ", 1);
    puts_(&b, msg);
    for (int i = 0; i < n; i++) {
      put(&b, " ", 1);
      puts_(&b, kv[i].key);
      put(&b, "=", 1);
      if (kv[i].str)
        put_text_val(&b, kv[i].str);
      else
        putf(&b, NULL, kv[i].num, kv[i].is_int);
    }
  }
  b.data[b.len++] = '\n';
  if (status_line) b.len += status_line(b.data + b.len, sizeof(b.data) - b.len); /* redraw */
  ssize_t w = write(STDERR_FILENO, b.data, b.len);
  (void)w;
}
