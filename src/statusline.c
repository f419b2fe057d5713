/* statusline — a live one-line summary on a terminal's stderr.
 * Invariant: the line is only ever drawn as "\r\033[K" + text with one write, and
 * every log line erases it first and redraws it after, in the same write. */
#include "statusline.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "log.h"

static int active;
static char text[512];
static size_t text_len;
static uint64_t last_ms;
static int64_t last_processed;
static double last_rate;

int statusline_wanted(int log_json) { return !log_json && isatty(STDERR_FILENO); }

/* The hook log.c calls to redraw the line after a log line. */
static size_t current(char *buf, size_t cap) {
  size_t n = text_len < cap ? text_len : cap;
  memcpy(buf, text, n);
  return n;
}

static int columns(void) {
  struct winsize ws;
  if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 0;
}

/* "812K", "45.2M", "7.8G". */
static void human(uint64_t b, char *out, size_t n) {
  const char *unit = "KMGT";
  double v = (double)b / 1024.0;
  int i = 0;
  while (v >= 1024.0 && i < 3) {
    v /= 1024.0;
    i++;
  }
  snprintf(out, n, v < 10 ? "%.1f%c" : "%.0f%c", v, unit[i]);
}

size_t statusline_format(const statusline_figures_t *f, double rate, char *buf, size_t cap,
                         int width) {
  char rss[16], lim[16], pending[24] = "?";
  human(f->rss, rss, sizeof rss);
  human(f->memory_limit, lim, sizeof lim);
  if (f->pending >= 0) snprintf(pending, sizeof pending, "%" PRId64, f->pending);
  int n = snprintf(buf, cap,
                   "%.1f ev/s | in flight %" PRId64 "/%" PRId64 " | queued %" PRId64
                   " | pending %s | breaker %s | mem %s/%s | gen %d",
                   rate, f->inflight, f->limit, f->queued, pending,
                   f->breaker ? f->breaker : "closed", rss, lim, f->generation);
  size_t len = n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
  if (f->paused && *f->paused && len < cap - 1) {
    n = snprintf(buf + len, cap - len, " | paused %s", f->paused);
    len = n < 0 ? len : len + (size_t)n < cap ? len + (size_t)n : cap - 1;
  }
  if (width > 1 && len > (size_t)width - 1) len = (size_t)width - 1; /* never wrap */
  buf[len] = 0;
  return len;
}

int statusline_start(void) {
  if (!isatty(STDERR_FILENO)) return -ENOTTY;
  active = 1;
  text_len = 0;
  last_ms = 0;
  log_set_status_line(current);
  return 0;
}

double statusline_rate(const statusline_figures_t *f) {
  if (last_ms && f->now_ms > last_ms)
    last_rate = (double)(f->processed - last_processed) * 1000.0 / (double)(f->now_ms - last_ms);
  if (f->now_ms > last_ms) {
    last_ms = f->now_ms;
    last_processed = f->processed;
  }
  return last_rate;
}

void statusline_update(const statusline_figures_t *f) {
  char out[sizeof text + 8];
  if (!active) return;
  text_len = statusline_format(f, statusline_rate(f), text, sizeof text, columns());
  int n = snprintf(out, sizeof out, "\r\033[K%s", text);
  log_raw(out, (size_t)n);
}

void statusline_stop(void) {
  if (!active) return;
  active = 0;
  log_set_status_line(NULL);
  log_raw("\r\033[K", 4);
}
