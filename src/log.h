/* log — one levelled function, one line per event, key=value fields (text) or one
 * JSON object per line (json). Lines about an event carry its id. Writes to stderr. */
#ifndef OUTBOXD_LOG_H
#define OUTBOXD_LOG_H

#include <stddef.h>
#include <stdint.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };
enum log_format { LOG_TEXT = 0, LOG_JSON = 1 };

typedef struct log_kv {
  const char *key;
  const char *str; /* string value, or NULL for a number */
  double num;
  int is_int;
  int raw; /* str is JSON text already (a table): written as it is when it fits */
} log_kv_t;

static inline const char *log_str_(const char *s) { return s ? s : ""; }
#define KS(k, v) ((log_kv_t){(k), log_str_(v), 0, 0, 0})
#define KI(k, v) ((log_kv_t){(k), NULL, (double)(v), 1, 0})
#define KF(k, v) ((log_kv_t){(k), NULL, (double)(v), 0, 0})
#define KJ(k, v) ((log_kv_t){(k), log_str_(v), 0, 0, 1})

/* Sets the format and the lowest level written. */
void log_setup(int format, int min_level);
/* The format set by log_setup (LOG_TEXT or LOG_JSON). */
int log_format(void);
int log_enabled(int level);

/* Writes one line: level, message, fields. The line is at most 8 KiB and always
 * whole: JSON lines are valid JSON (invalid UTF-8 becomes U+FFFD, control
 * characters are escaped, a value over 2 KiB is cut inside its string with
 * "...[cut N bytes]", fields past the line's room are counted in
 * "fields_dropped"); text lines escape control characters the same way. */
void log_fields(int level, const char *msg, const log_kv_t *kv, int n);

/* Writes bytes that are not a log line (the status line) the way lines go, in
 * order with them; dropped without a count when stderr is behind. */
void log_raw(const char *p, size_t n);

/* Waits until the lines handed over so far are written, stderr is gone, or
 * stderr took nothing for stall_ms. Runs at exit with 1 s; call it before
 * _exit or exec. Safe from any thread, also while the loop thread is frozen
 * (then a line is written directly rather than queued). Log calls never block on stderr: on a pipe,
 * socket or terminal the lines wait in a 1 MiB queue that a writer thread drains; when it is full a
 * line is dropped and counted, and once the queue drains a warning
 * "log lines dropped" gives the count. */
void log_flush(unsigned stall_ms);

/* log_at(LOG_INFO, "event done", KI("id", id), KS("topic", t)) */
#define log_at(level, msg, ...)                                                                    \
  do {                                                                                             \
    if (log_enabled(level)) {                                                                      \
      const log_kv_t log_kv_[] = {{0}, __VA_ARGS__};                                               \
      log_fields((level), (msg), log_kv_ + 1, (int)(sizeof(log_kv_) / sizeof(log_kv_[0])) - 1);    \
    }                                                                                              \
  } while (0)

/* Sets (or clears, with NULL) the provider of a status line kept at the bottom of
 * a terminal: every log line then erases it first ("\r\033[K") and redraws what
 * `fn` copies into buf (no newline, at most cap bytes, returns the length), all in
 * the line's one write. */
void log_set_status_line(size_t (*fn)(char *buf, size_t cap));

/* Writes s escaped as the body of a JSON string (no quotes) into out, the way log
 * lines escape values: control characters as \u00XX, invalid UTF-8 as \ufffd, cut
 * with "...[cut N bytes]" past cap-1 bytes (or 2 KiB). Safe to print on a terminal.
 * Returns the length written (out is NUL-terminated). */
size_t log_escape(const char *s, char *out, size_t cap);

/* Parses "debug|info|warn|error"; returns the level or -1. */
int log_level_parse(const char *s);

#endif
