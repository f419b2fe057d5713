/* statusline — one line at the bottom of a terminal, rewritten in place about once
 * a second with the dispatcher's figures. Log lines clear it and redraw it after
 * themselves (through log_set_status_line), so nothing is garbled. */
#ifndef OUTBOXD_STATUSLINE_H
#define OUTBOXD_STATUSLINE_H

#include <stddef.h>
#include <stdint.h>

typedef struct statusline_figures {
  uint64_t now_ms;   /* any monotonic clock */
  int64_t processed; /* handler runs finished, for events/s */
  int64_t inflight, limit, queued;
  int64_t pending;     /* in the store; -1 when not known */
  const char *breaker; /* "closed" | "open" | "half-open" */
  uint64_t rss, memory_limit;
  int generation;
  const char *paused; /* paused topic patterns, comma-separated; NULL or "": none */
} statusline_figures_t;

/* 1 when a status line belongs on stderr: it is a terminal and logs are text. */
int statusline_wanted(int log_json);

/* Starts drawing (hooks into log). Returns 0, or -ENOTTY when stderr is no terminal. */
int statusline_start(void);

/* Formats the figures and redraws the line; events/s is measured between calls. */
void statusline_update(const statusline_figures_t *f);

/* Events per second since the previous call with a later now_ms (the previous rate
 * when no time passed), so the status line and systemd's STATUS= agree. */
double statusline_rate(const statusline_figures_t *f);

/* Formats the figures into buf (NUL-terminated, at most `width` columns when
 * width > 0). Returns the length written. `rate` is events per second. */
size_t statusline_format(const statusline_figures_t *f, double rate, char *buf, size_t cap,
                         int width);

/* Clears the line and unhooks from log; a no-op when not started. */
void statusline_stop(void);

#endif
