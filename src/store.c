/* store — the backend-neutral half: URL dispatch and event allocation.
 * Invariant: an event and all its strings are one allocation. */
#include "store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "utf8.h"

store_event_t *store_event_new(int64_t id, const char *topic, size_t topic_len, const char *key,
                               size_t key_len, const char *payload, size_t payload_len,
                               const char *headers, size_t headers_len, size_t extra) {
  size_t need = sizeof(store_event_t) + topic_len + 1 + payload_len + 1 + extra;
  if (key) need += key_len + 1;
  if (headers) need += headers_len + 1;
  store_event_t *ev = malloc(need);
  if (!ev) return NULL;
  char *p = (char *)(ev + 1);
  memset(ev, 0, sizeof *ev);
  ev->id = id;
  ev->topic = p;
  memcpy(p, topic, topic_len);
  p[topic_len] = 0;
  p += topic_len + 1;
  ev->payload = p;
  ev->payload_len = payload_len;
  memcpy(p, payload, payload_len);
  p[payload_len] = 0;
  p += payload_len + 1;
  if (key) {
    ev->key = p;
    memcpy(p, key, key_len);
    p[key_len] = 0;
    p += key_len + 1;
  }
  if (headers) {
    ev->headers = p;
    memcpy(p, headers, headers_len);
    p[headers_len] = 0;
  }
  return ev;
}

void store_event_list_free(store_event_t *list) {
  while (list) {
    store_event_t *next = list->next;
    store_event_list_free(list->follow); /* follow-ups have none of their own */
    free(list);
    list = next;
  }
}

void store_event_free(store_event_t *ev) {
  if (!ev) return;
  store_event_list_free(ev->follow);
  free(ev);
}

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

int64_t store_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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

/* ------------------------------------------------------------ redaction */

typedef struct sbuf {
  char *p;
  size_t len, cap;
} sbuf_t;

static void sput(sbuf_t *b, const char *s, size_t n) {
  if (b->len + n >= b->cap) n = b->cap - 1 - b->len;
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = 0;
}

/* Where the value of a password= at s ends: a quoted conninfo value runs to its
 * closing quote, others to a space or the next query parameter. */
static const char *password_end(const char *s) {
  if (*s == '\'') {
    for (s++; *s && *s != '\''; s++)
      if (*s == '\\' && s[1]) s++;
    return *s ? s + 1 : s;
  }
  return s + strcspn(s, " \t&#");
}

const char *store_url_redact(const char *url, char *out, size_t len) {
  sbuf_t b = {out, 0, len};
  const char *p = url, *scheme = strstr(url, "://");
  if (!len) return out;
  out[0] = 0;
  if (scheme) { /* scheme://user:PASSWORD@host... */
    const char *info = scheme + 3, *at = NULL;
    for (const char *q = info; *q && *q != '?' && *q != '#'; q++)
      if (*q == '@') at = q;
    const char *colon = at ? memchr(info, ':', (size_t)(at - info)) : NULL;
    if (colon) {
      sput(&b, url, (size_t)(colon + 1 - url));
      sput(&b, "***", 3);
      p = at;
    }
  }
  while (*p) { /* password=VALUE, at the start or after a space, '?' or '&' */
    const char *hit = strcasestr(p, "password=");
    while (hit && hit > url && !strchr(" \t?&", hit[-1])) hit = strcasestr(hit + 1, "password=");
    if (!hit) break;
    hit += strlen("password=");
    sput(&b, p, (size_t)(hit - p));
    sput(&b, "***", 3);
    p = password_end(hit);
  }
  sput(&b, p, strlen(p));
  return out;
}

/* Replaces each copy of `url` in the message errbuf with its redacted form, so a
 * backend's error never shows a password, whatever it quotes. */
static void scrub(char *errbuf, size_t errlen, const char *url) {
  char safe[1024], out[2048];
  const char *hit, *p = errbuf;
  size_t n = strlen(url);
  store_url_redact(url, safe, sizeof safe);
  if (!n || !errlen || strcmp(safe, url) == 0) return;
  sbuf_t b = {out, 0, sizeof out};
  out[0] = 0;
  while ((hit = strstr(p, url))) {
    sput(&b, p, (size_t)(hit - p));
    sput(&b, safe, strlen(safe));
    p = hit + n;
  }
  sput(&b, p, strlen(p));
  snprintf(errbuf, errlen, "%s", out);
}

/* ------------------------------------------------------------ opening */

static int has_prefix(const char *s, const char *prefix) {
  return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int is_pg(const char *url) {
  return has_prefix(url, "postgres://") || has_prefix(url, "postgresql://");
}

static int open_store(uv_loop_t *loop, const char *url, const store_opts_t *opts, store_t **out,
                      char *errbuf, size_t errlen) {
  if (has_prefix(url, "ndjson:"))
    return store_ndjson_open(loop, url + 7, opts, out, errbuf, errlen);
  if (is_pg(url)) return store_pg_open(loop, url, opts, out, errbuf, errlen);
  if (has_prefix(url, "sqlite:")) url += 7;
  return store_sqlite_open(loop, url, opts, out, errbuf, errlen);
}

int store_open(uv_loop_t *loop, const char *url, const store_opts_t *opts, store_t **out,
               char *errbuf, size_t errlen) {
  int rc = open_store(loop, url, opts, out, errbuf, errlen);
  if (rc) scrub(errbuf, errlen, url);
  if (rc && has_prefix(url, "sqlite:")) scrub(errbuf, errlen, url + 7);
  return rc;
}

static int init_schema(const char *url, char *errbuf, size_t errlen) {
  if (has_prefix(url, "ndjson:")) {
    snprintf(errbuf, errlen, "--db %s: an NDJSON source has no tables to create", url);
    return -EINVAL;
  }
  if (is_pg(url)) return store_pg_init_schema(url, errbuf, errlen);
  if (has_prefix(url, "sqlite:")) url += 7;
  return store_sqlite_init_schema(url, errbuf, errlen);
}

int store_init_schema(const char *url, char *errbuf, size_t errlen) {
  int rc = init_schema(url, errbuf, errlen);
  if (rc) scrub(errbuf, errlen, url);
  if (rc && has_prefix(url, "sqlite:")) scrub(errbuf, errlen, url + 7);
  return rc;
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
