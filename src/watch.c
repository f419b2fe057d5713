/* watch — a folder watch (uv_fs_event, inotify) plus a debounce timer.
 * Invariant: however many change notifications arrive, the callback runs once,
 * debounce_ms after the last one. */
#include "watch.h"

#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

struct watch {
  uv_fs_event_t ev;
  uv_timer_t timer;
  unsigned debounce_ms;
  void (*cb)(void *);
  void *arg;
  int closing;
  char dir[PATH_MAX];
};

static int is_lua(const char *name) {
  size_t n = name ? strlen(name) : 0;
  return n > 4 && strcmp(name + n - 4, ".lua") == 0;
}

static void on_timer(uv_timer_t *t) {
  watch_t *w = t->data;
  w->cb(w->arg);
}

static void on_change(uv_fs_event_t *h, const char *name, int events, int status) {
  watch_t *w = h->data;
  (void)events;
  if (status < 0) {
    log_at(LOG_WARN, "watching scripts failed", KS("dir", w->dir),
           KS("error", uv_strerror(status)));
    return;
  }
  if (!is_lua(name)) return; /* editors' swap and backup files */
  uv_timer_start(&w->timer, on_timer, w->debounce_ms, 0);
}

int watch_start(watch_t **out, uv_loop_t *loop, const char *script, unsigned debounce_ms,
                void (*cb)(void *arg), void *arg) {
  char tmp[PATH_MAX];
  watch_t *w = calloc(1, sizeof *w);
  if (!w) return UV_ENOMEM;
  snprintf(tmp, sizeof tmp, "%s", script);
  snprintf(w->dir, sizeof w->dir, "%s", dirname(tmp));
  w->debounce_ms = debounce_ms;
  w->cb = cb;
  w->arg = arg;
  uv_fs_event_init(loop, &w->ev);
  uv_timer_init(loop, &w->timer);
  w->ev.data = w->timer.data = w;
  int rc = uv_fs_event_start(&w->ev, on_change, w->dir, 0);
  if (rc) {
    watch_stop(w);
    return rc;
  }
  uv_unref((uv_handle_t *)&w->ev); /* watching alone keeps no run alive */
  *out = w;
  return 0;
}

static void on_closed(uv_handle_t *h) {
  watch_t *w = h->data;
  if (++w->closing == 3) free(w);
}

void watch_stop(watch_t *w) {
  if (!w) return;
  w->closing = 1;
  uv_close((uv_handle_t *)&w->ev, on_closed);
  uv_close((uv_handle_t *)&w->timer, on_closed);
}
