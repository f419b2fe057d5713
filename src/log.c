/* log — levelled, structured log lines on stderr.
 * Invariant: each line reaches stderr whole, with one write(2) when it fits in
 * PIPE_BUF, so lines never interleave; and the caller never blocks on stderr: on a
 * pipe, socket or terminal a writer thread drains a bounded queue, and a line that
 * does not fit is dropped and counted (a regular file is written directly). */
#include "log.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

/* Formats one line into b (empty first): the status line's erase and redraw
 * around it when `status` is set. */
static void format_line(buf_t *b, int status, int level, const char *msg, const log_kv_t *kv,
                        int n) {
  char ts[40];
  int dropped = 0;
  if (level < 0 || level > LOG_ERROR) level = LOG_ERROR;
  b->len = 0;
  if (status) puts_(b, "\r\033[K"); /* erase the status line first */
  stamp(ts, sizeof ts);
  if (fmt == LOG_JSON) {
    puts_(b, "{\"ts\":\"");
    puts_(b, ts);
    puts_(b, "\",\"level\":\"");
    puts_(b, names[level]);
    puts_(b, "\",\"msg\":");
    put_json_str(b, msg, VALUE_ROOM);
    for (int i = 0; i < n; i++) {
      size_t klen = min_sz(esc_len(kv[i].key, 0), KEY_ROOM) + 4; /* ,"key": */
      if (room(b) < klen + CUT_ROOM + 24) {                      /* no room left for this field */
        dropped++;
        continue;
      }
      put(b, ",", 1);
      put_json_str(b, kv[i].key, KEY_ROOM);
      put(b, ":", 1);
      put_json_val(b, &kv[i], min_sz(VALUE_ROOM, room(b)));
    }
    if (dropped) {
      char note[48];
      put(b, note, (size_t)snprintf(note, sizeof note, ",\"fields_dropped\":%d", dropped));
    }
    put(b, "}", 1);
  } else {
    puts_(b, ts);
    put(b, " ", 1);
    puts_(b, names[level]);
    put(b, " ", 1);
    put_esc(b, msg, 0, VALUE_ROOM);
    for (int i = 0; i < n; i++) {
      size_t klen = min_sz(esc_len(kv[i].key, 0), KEY_ROOM) + 2;
      if (room(b) < klen + CUT_ROOM + 24) {
        dropped++;
        continue;
      }
      put(b, " ", 1);
      put_esc(b, kv[i].key, 0, KEY_ROOM);
      put(b, "=", 1);
      if (kv[i].str)
        put_text_val(b, kv[i].str, min_sz(VALUE_ROOM, room(b)));
      else
        putf(b, kv[i].num, kv[i].is_int);
    }
    if (dropped) {
      char note[48];
      put(b, note, (size_t)snprintf(note, sizeof note, " fields_dropped=%d", dropped));
    }
  }
  b->data[b->len++] = '\n';
  if (status && status_line)
    b->len += status_line(b->data + b->len, sizeof(b->data) - b->len); /* redraw */
}

/* ------------------------------------------------------------------ the writer */

#define QUEUE_ROOM (1u << 20) /* bytes waiting for a slow stderr; a line past it is dropped */

enum { MODE_UNSET, MODE_DIRECT, MODE_QUEUE };

static struct {
  pthread_mutex_t mu;
  pthread_cond_t work; /* the writer waits for bytes */
  pthread_cond_t idle; /* log_flush waits for the writer */
  int mode;
  int dead; /* stderr is gone (EPIPE or another error): nothing is written any more */
  int busy; /* the writer holds bytes it took from the queue */
  char *q;  /* QUEUE_ROOM bytes; the waiting bytes are q[head, tail) */
  size_t head, tail;
  uint64_t written; /* bytes written so far: log_flush's measure of progress */
  int64_t dropped;  /* lines dropped since the last note about it */
} W = {.mu = PTHREAD_MUTEX_INITIALIZER,
       .work = PTHREAD_COND_INITIALIZER,
       .idle = PTHREAD_COND_INITIALIZER};

/* Writes all of p; waits out a descriptor someone else made non-blocking.
 * Returns 0, or -1 when stderr cannot take bytes any more. */
static int write_all(const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(STDERR_FILENO, p, n);
    if (w > 0) {
      p += w;
      n -= (size_t)w;
    } else if (w < 0 && errno == EINTR) {
      continue;
    } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      struct pollfd pfd = {.fd = STDERR_FILENO, .events = POLLOUT};
      if (poll(&pfd, 1, 1000) < 0 && errno != EINTR) return -1;
    } else {
      return -1;
    }
  }
  return 0;
}

/* Puts the note about dropped lines into the (empty) queue. Called locked. */
static void queue_note(void) {
  buf_t b;
  const log_kv_t kv[] = {KI("count", W.dropped)};
  format_line(&b, 0, LOG_WARN, "log lines dropped: stderr was not read", kv, 1);
  memcpy(W.q + W.tail, b.data, b.len);
  W.tail += b.len;
  W.dropped = 0;
}

/* The writer thread: takes whole lines, up to PIPE_BUF bytes at a time so that a
 * pipe gets each in one atomic write, and blocks in write(2) so nobody else does. */
static void *writer_main(void *arg) {
  char chunk[PIPE_BUF];
  (void)arg;
  pthread_mutex_lock(&W.mu);
  for (;;) {
    if (W.head == W.tail && W.dropped && !W.dead) queue_note(); /* the pipe drained */
    if (W.head == W.tail) {
      W.busy = 0;
      pthread_cond_broadcast(&W.idle);
      pthread_cond_wait(&W.work, &W.mu);
      continue;
    }
    size_t n = W.tail - W.head;
    if (n > sizeof chunk) {
      const char *nl = memrchr(W.q + W.head, '\n', sizeof chunk);
      n = nl ? (size_t)(nl - (W.q + W.head)) + 1 : sizeof chunk; /* else a long line, cut */
    }
    memcpy(chunk, W.q + W.head, n);
    W.head += n;
    if (W.head == W.tail) W.head = W.tail = 0;
    W.busy = 1;
    pthread_mutex_unlock(&W.mu);
    int rc = write_all(chunk, n);
    pthread_mutex_lock(&W.mu);
    W.written += n;
    if (rc) { /* the reader is gone: drop what waits, and all that comes */
      W.dead = 1;
      W.head = W.tail = 0;
    }
  }
  return NULL;
}

static void flush_at_exit(void) { log_flush(1000); }

/* Chooses how lines reach stderr, once: a regular file or a device that is not a
 * terminal (/dev/null) cannot stall, so it is written directly; anything else gets
 * the queue and the writer thread. Called locked. */
static void choose_mode(void) {
  struct stat st;
  pthread_t t;
  W.mode = MODE_DIRECT;
  if (fstat(STDERR_FILENO, &st) == 0 &&
      (S_ISREG(st.st_mode) || (S_ISCHR(st.st_mode) && !isatty(STDERR_FILENO))))
    return;
  W.q = malloc(QUEUE_ROOM);
  if (!W.q) return;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  int rc = pthread_create(&t, &attr, writer_main, NULL);
  pthread_attr_destroy(&attr);
  if (rc) {
    free(W.q);
    W.q = NULL;
    return;
  }
  W.mode = MODE_QUEUE;
  atexit(flush_at_exit);
}

/* Takes the writer's lock, waiting at most ms. Every holder only copies bytes, so
 * failing means the holder was frozen in place (the watchdog stops the loop thread
 * with a signal wherever it is): the caller then must not wait on. */
static int lock_within(unsigned ms) {
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += ms / 1000;
  until.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
  return pthread_mutex_timedlock(&W.mu, &until);
}

/* Hands bytes to stderr without blocking: queued whole, or dropped (a log line is
 * counted, the status line is not). */
static void emit(const char *p, size_t n, int is_line) {
  if (lock_within(1000)) { /* see lock_within: say it directly rather than hang */
    ssize_t w = write(STDERR_FILENO, p, n);
    (void)w;
    return;
  }
  if (W.mode == MODE_UNSET) choose_mode();
  if (W.mode == MODE_DIRECT) {
    pthread_mutex_unlock(&W.mu);
    ssize_t w = write(STDERR_FILENO, p, n);
    (void)w;
    return;
  }
  if (!W.dead) {
    if (W.tail + n > QUEUE_ROOM && W.head > 0) { /* compact */
      memmove(W.q, W.q + W.head, W.tail - W.head);
      W.tail -= W.head;
      W.head = 0;
    }
    if (W.tail + n <= QUEUE_ROOM) {
      memcpy(W.q + W.tail, p, n);
      W.tail += n;
      pthread_cond_signal(&W.work);
    } else if (is_line) {
      W.dropped++;
    }
  }
  pthread_mutex_unlock(&W.mu);
}

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void log_flush(unsigned stall_ms) {
  if (lock_within(1000)) return;
  uint64_t seen = W.written, give_up = mono_ms() + stall_ms;
  while (W.mode == MODE_QUEUE && !W.dead && (W.head != W.tail || W.busy || W.dropped)) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += 20 * 1000000L;
    if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(&W.idle, &W.mu, &until);
    uint64_t now = mono_ms();
    if (W.written != seen) { /* still moving: wait on */
      seen = W.written;
      give_up = now + stall_ms;
    } else if (now >= give_up) {
      break;
    }
  }
  pthread_mutex_unlock(&W.mu);
}

void log_raw(const char *p, size_t n) { emit(p, n, 0); }

void log_fields(int level, const char *msg, const log_kv_t *kv, int n) {
  buf_t b;
  if (level < min_level) return;
  format_line(&b, status_line != NULL, level, msg, kv, n);
  emit(b.data, b.len, 1);
}
