/* store — the backend-neutral half of the interface: what every backend shares
 * (error text, the wall clock, time clamps, the topic filter, retention sizing). */
#include "store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "utf8.h"

void store_push(store_t *s, store_event_t *list) {
  if (!list) return;
  if (s->ops->push) {
    s->ops->push(s, list);
    return;
  }
  log_at(LOG_WARN, "outbox.enqueue: this source takes no new events; dropped",
         KS("topic", list->topic), KS("store", s->ops->name));
  store_event_list_free(list);
}

char *store_error_text(const char *err) {
  return err ? utf8_clean(err, strlen(err), STORE_ERROR_MAX, NULL) : NULL;
}

int64_t store_clamp_time(int64_t ms) {
  return ms < 0 ? 0 : ms > STORE_TIME_MAX ? STORE_TIME_MAX : ms;
}

size_t store_put_int(char *out, int64_t v) {
  char t[20];
  size_t n = 0, len = 0;
  uint64_t u = (uint64_t)v;
  if (v < 0) {
    out[len++] = '-';
    u = 0 - u;
  }
  do t[n++] = (char)('0' + u % 10);
  while ((u /= 10) != 0);
  while (n) out[len++] = t[--n];
  return len;
}

void store_counts_set(store_counts_t *c, const char *status, int64_t n) {
  if (!status) return;
  if (strcmp(status, "pending") == 0)
    c->pending = n;
  else if (strcmp(status, "processing") == 0)
    c->processing = n;
  else if (strcmp(status, "done") == 0)
    c->done = n;
  else if (strcmp(status, "dead") == 0)
    c->dead = n;
}

int64_t store_now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t store_now_ms(void) { return store_now_us() / 1000; }

int store_take_due(store_event_t **buf, int *n, int max, int64_t now, store_event_t **out,
                   int64_t *next) {
  int got = 0, kept = 0;
  *next = 0;
  for (int i = 0; i < *n; i++) {
    store_event_t *ev = buf[i];
    if (got < max && ev->available_at <= now) {
      out[got++] = ev;
      continue;
    }
    int64_t at = ev->available_at > now ? ev->available_at : now;
    if (!*next || at < *next) *next = at;
    buf[kept++] = ev;
  }
  *n = kept;
  return got;
}

const char *store_refuses(store_t *s, const store_event_t *ev) {
  return s->ops->refuses ? s->ops->refuses(s, ev) : NULL;
}

/* ------------------------------------------------------------ retention */

int64_t store_keep_ms(const store_opts_t *o, int dead) {
  int64_t keep = dead ? o->keep_dead_ms : o->keep_done_ms;
  if (keep < 0 || (!dead && keep == 0)) return -1; /* forever; done rows deleted on ack */
  return keep;
}

int store_prunes(const store_opts_t *o) {
  return store_keep_ms(o, 0) >= 0 || store_keep_ms(o, 1) >= 0;
}

int64_t store_prune_idle_ms(const store_opts_t *o) {
  int64_t shortest = INT64_MAX;
  for (int dead = 0; dead < 2; dead++) {
    int64_t keep = store_keep_ms(o, dead);
    if (keep >= 0 && keep < shortest) shortest = keep;
  }
  int64_t wait = shortest == INT64_MAX ? 60000 : shortest / 10;
  return wait < 1000 ? 1000 : wait > 60000 ? 60000 : wait;
}

int store_prune_batch(int batch, int64_t took_us, int64_t budget_ms) {
  if (batch <= 0) return STORE_PRUNE_FIRST;
  if (took_us > budget_ms * 1000)
    batch /= 2;
  else if (took_us < budget_ms * 250)
    batch *= 2;
  return batch < STORE_PRUNE_MIN   ? STORE_PRUNE_MIN
         : batch > STORE_PRUNE_MAX ? STORE_PRUNE_MAX
                                   : batch;
}

int store_topic_pattern(const char *topic, int *prefix) {
  size_t len = topic ? strlen(topic) : 0;
  *prefix = len && topic[len - 1] == '*';
  return topic ? (int)len - *prefix : -1;
}

/* ------------------------------------------------------------ topic filter */

/* claim = want − paused */
static int recompute_claim(store_t *s) {
  topics_t all = {0}, out = {0};
  const topics_t *want = &s->want;
  if (s->want_all) {
    if (topics_all(&all)) return -ENOMEM;
    want = &all;
  }
  int rc = topics_subtract(&out, want, &s->paused_set);
  topics_free(&all);
  if (rc) return rc;
  topics_free(&s->claim);
  s->claim = out;
  s->claim_all = topics_is_all(&s->claim);
  return 0;
}

static int copy_topics(topics_t *out, const topics_t *in) {
  topics_t all = {0};
  int rc = topics_all(&all);
  if (rc == 0) rc = topics_intersect(out, &all, in);
  topics_free(&all);
  return rc;
}

int store_set_topics(store_t *s, const topics_t *want) {
  topics_t old = s->want, copy = {0};
  int old_all = s->want_all;
  if (want && copy_topics(&copy, want)) return -ENOMEM;
  s->want = copy;
  s->want_all = !want;
  if (recompute_claim(s)) {
    topics_free(&s->want);
    s->want = old;
    s->want_all = old_all;
    return -ENOMEM;
  }
  topics_free(&old);
  return 0;
}

static void free_list(char **list, int n) {
  for (int i = 0; i < n; i++) free(list[i]);
  free(list);
}

int store_set_paused(store_t *s, char **list, int n) {
  int same = n == s->npaused;
  for (int i = 0; same && i < n; i++) same = strcmp(list[i], s->paused[i]) == 0;
  if (same) {
    free_list(list, n);
    return 0;
  }
  topics_t set = {0};
  for (int i = 0; i < n; i++)
    if (topics_add(&set, list[i])) {
      topics_free(&set);
      free_list(list, n);
      return -ENOMEM;
    }
  topics_t old = s->paused_set;
  s->paused_set = set;
  if (recompute_claim(s)) {
    s->paused_set = old;
    topics_free(&set);
    free_list(list, n);
    return -ENOMEM;
  }
  topics_free(&old);
  free_list(s->paused, s->npaused);
  s->paused = list;
  s->npaused = n;
  s->paused_gen++;
  return 1;
}

void store_topics_free(store_t *s) {
  topics_free(&s->want);
  topics_free(&s->paused_set);
  topics_free(&s->claim);
  free_list(s->paused, s->npaused);
  s->paused = NULL;
  s->npaused = 0;
}
