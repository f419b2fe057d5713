/* store_ndjson — events from an NDJSON file or stdin, held in memory.
 * Nothing is persisted: retries wait in a heap, and the source is exhausted when
 * the input ended and every event settled. With key ordering only one event of a
 * key is out at a time; later ones wait in the key's queue, in line order. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "ndjson.h"
#include "store_backends.h"

#define READ_CHUNK (128 << 10) /* small enough to stay in cache between read and parse */
#define PIPE_HIGH (4 << 20)    /* complete lines buffered from a pipe before reading pauses */
#define LINE_MAX_BYTES (STORE_PAYLOAD_MAX + STORE_ENVELOPE_MAX) /* longer: skipped */
/* New events' ids start above it: past any line number, and short enough that Lua
 * prints them whole. */
#define NEW_ID_BASE INT64_C(1000000000000) /* 10^12 */

typedef struct node { /* per-event store data, after the event's strings */
  int64_t available_at;
  store_event_t *next;
} node_t;

typedef struct keystate {
  struct keystate *next;      /* hash chain */
  store_event_t *head, *tail; /* events waiting behind the one that is out */
  char key[];
} keystate_t;

typedef struct nd {
  store_t base;
  int fd;
  int is_pipe;
  int eof;
  int read_error; /* the input ended on a read error, not at its end */
  int reading;
  uv_pipe_t pipe;
  uv_timer_t timer; /* earliest retry */
  char *buf;
  size_t pos, len, cap;
  size_t tail;        /* just past the last newline in buf: [pos, tail) are whole lines */
  int skipping;       /* dropping the rest of a line over LINE_MAX_BYTES as it arrives */
  int64_t skip_line;  /* its line number */
  int64_t skip_bytes; /* its length so far */
  int64_t line;
  int64_t last_id; /* the largest event id handed out: new events (outbox.enqueue) follow it */
  int64_t now_ms;  /* wall clock at the current claim: created_at of new events */
  int64_t bad_lines;
  store_event_t *rhead, *rtail; /* released or unblocked: claimable first */
  store_event_t **heap;         /* retries by available_at */
  size_t nheap, capheap;
  keystate_t **keys;
  size_t nbuckets, nkeys;
  int64_t out;  /* claimed, not yet handed back */
  int64_t held; /* waiting in key queues */
  int closing;
  void (*close_cb)(void *);
  void *close_arg;
  int pending_closes;
} nd_t;

static node_t *node(store_event_t *ev) { return ev->priv; }

/* ------------------------------------------------------------------ keys */

static uint64_t hash(const char *s) {
  uint64_t h = 1469598103934665603ULL;
  while (*s) h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
  return h;
}

static keystate_t **key_slot(nd_t *d, const char *key) {
  keystate_t **pp = &d->keys[hash(key) & (d->nbuckets - 1)];
  while (*pp && strcmp((*pp)->key, key) != 0) pp = &(*pp)->next;
  return pp;
}

static int keys_grow(nd_t *d) {
  size_t n = d->nbuckets ? d->nbuckets * 2 : 1024;
  keystate_t **t = calloc(n, sizeof *t);
  if (!t) return -ENOMEM;
  for (size_t i = 0; i < d->nbuckets; i++) {
    for (keystate_t *k = d->keys[i], *next; k; k = next) {
      next = k->next;
      keystate_t **pp = &t[hash(k->key) & (n - 1)];
      k->next = *pp;
      *pp = k;
    }
  }
  free(d->keys);
  d->keys = t;
  d->nbuckets = n;
  return 0;
}

/* Marks the key busy; returns 1 when it already was (the event must wait). */
static int key_take(nd_t *d, store_event_t *ev) {
  if (d->nkeys >= d->nbuckets && keys_grow(d)) return 0;
  keystate_t **pp = key_slot(d, ev->key);
  if (*pp) {
    keystate_t *k = *pp;
    node(ev)->next = NULL;
    if (k->tail)
      node(k->tail)->next = ev;
    else
      k->head = ev;
    k->tail = ev;
    d->held++;
    return 1;
  }
  size_t n = strlen(ev->key);
  keystate_t *k = calloc(1, sizeof *k + n + 1);
  if (!k) return 0;
  memcpy(k->key, ev->key, n + 1);
  *pp = k;
  d->nkeys++;
  return 0;
}

static void ready_push(nd_t *d, store_event_t *ev, int front) {
  node(ev)->next = NULL;
  if (front) {
    node(ev)->next = d->rhead;
    d->rhead = ev;
    if (!d->rtail) d->rtail = ev;
    return;
  }
  if (d->rtail)
    node(d->rtail)->next = ev;
  else
    d->rhead = ev;
  d->rtail = ev;
}

static int heap_push(nd_t *d, store_event_t *ev);
static void arm_retry(nd_t *d);

/* The key's event settled for good: the next one of the key becomes claimable. */
static void key_done(nd_t *d, const char *key) {
  keystate_t **pp = key_slot(d, key);
  keystate_t *k = *pp;
  if (!k) return;
  if (k->head) {
    store_event_t *ev = k->head;
    k->head = node(ev)->next;
    if (!k->head) k->tail = NULL;
    d->held--;
    /* a scheduled new event waits in the heap */
    if (node(ev)->available_at > store_now_ms() && heap_push(d, ev) == 0) {
      arm_retry(d);
      return;
    }
    ready_push(d, ev, 0);
    return;
  }
  *pp = k->next;
  d->nkeys--;
  free(k);
}

/* ------------------------------------------------------------------ retry heap */

static int64_t at(nd_t *d, size_t i) { return node(d->heap[i])->available_at; }

static void swap(nd_t *d, size_t a, size_t b) {
  store_event_t *t = d->heap[a];
  d->heap[a] = d->heap[b];
  d->heap[b] = t;
}

static int heap_push(nd_t *d, store_event_t *ev) {
  if (d->nheap == d->capheap) {
    size_t n = d->capheap ? d->capheap * 2 : 256;
    store_event_t **h = realloc(d->heap, n * sizeof *h);
    if (!h) return -ENOMEM;
    d->heap = h;
    d->capheap = n;
  }
  size_t i = d->nheap++;
  d->heap[i] = ev;
  while (i && at(d, (i - 1) / 2) > at(d, i)) {
    swap(d, i, (i - 1) / 2);
    i = (i - 1) / 2;
  }
  return 0;
}

static store_event_t *heap_pop(nd_t *d) {
  store_event_t *top = d->heap[0];
  d->heap[0] = d->heap[--d->nheap];
  size_t i = 0;
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < d->nheap && at(d, l) < at(d, m)) m = l;
    if (r < d->nheap && at(d, r) < at(d, m)) m = r;
    if (m == i) break;
    swap(d, i, m);
    i = m;
  }
  return top;
}

static void on_retry_timer(uv_timer_t *t) {
  nd_t *d = t->data;
  if (d->base.opts.wake) d->base.opts.wake(d->base.opts.wake_arg);
}

static void arm_retry(nd_t *d) {
  if (!d->nheap || d->closing) {
    uv_timer_stop(&d->timer);
    return;
  }
  int64_t wait = at(d, 0) - store_now_ms();
  uv_timer_start(&d->timer, on_retry_timer, wait > 0 ? (uint64_t)wait : 0, 0);
}

/* ------------------------------------------------------------------ input */

static void compact(nd_t *d) {
  memmove(d->buf, d->buf + d->pos, d->len - d->pos);
  d->len -= d->pos;
  d->tail = d->tail > d->pos ? d->tail - d->pos : 0;
  d->pos = 0;
}

static int buf_reserve(nd_t *d, size_t extra) {
  if (d->pos > 0 && (d->pos == d->len || d->pos > d->cap / 2)) compact(d);
  if (d->len + extra + 1 <= d->cap) return 0;
  size_t n = d->cap ? d->cap : READ_CHUNK;
  while (n < d->len + extra + 1) n *= 2;
  char *b = realloc(d->buf, n);
  if (!b) return -ENOMEM;
  d->buf = b;
  d->cap = n;
  return 0;
}

/* The over-long line ended (or the input did): it is reported, not lost silently. */
static void skip_done(nd_t *d) {
  char msg[96];
  snprintf(msg, sizeof msg, "line too long: %lld bytes, limit %u", (long long)d->skip_bytes,
           (unsigned)LINE_MAX_BYTES);
  d->bad_lines++;
  d->skipping = 0;
  log_at(LOG_WARN, "bad NDJSON line skipped", KI("line", d->skip_line), KS("error", msg));
}

/* A line over LINE_MAX_BYTES: what arrived of it is dropped and an empty line takes
 * its place (the line numbers stay right); the rest is dropped as it arrives. */
static void skip_start(nd_t *d) {
  int64_t whole = 0; /* whole lines buffered before it */
  for (const char *p = d->buf + d->pos, *end = d->buf + d->tail;
       (p = memchr(p, '\n', (size_t)(end - p))) != NULL; p++)
    whole++;
  d->skipping = 1;
  d->skip_line = d->line + whole + 1;
  d->skip_bytes = (int64_t)(d->len - d->tail);
  d->len = d->tail;
  d->buf[d->len++] = '\n';
  d->tail = d->len;
  if (d->cap > 2 * (size_t)PIPE_HIGH) { /* give the line's memory back */
    compact(d);
    size_t n = READ_CHUNK;
    while (n < d->len + 65536 + 1) n *= 2;
    char *b = realloc(d->buf, n);
    if (b) d->buf = b, d->cap = n;
  }
}

/* Input landed in buf[from, len): keeps `tail`, and never holds more than
 * LINE_MAX_BYTES of one line. */
static void took(nd_t *d, size_t from) {
  if (d->skipping) {
    const char *nl = memchr(d->buf + from, '\n', d->len - from);
    size_t upto = nl ? (size_t)(nl - d->buf) + 1 : d->len;
    d->skip_bytes += (int64_t)(upto - from) - (nl ? 1 : 0);
    memmove(d->buf + from, d->buf + upto, d->len - upto);
    d->len -= upto - from;
    if (!nl) return;
    skip_done(d);
  }
  if (d->tail < d->pos) d->tail = d->pos;
  const char *nl = memrchr(d->buf + from, '\n', d->len - from);
  if (nl) d->tail = (size_t)(nl - d->buf) + 1;
  if (d->len - d->tail > LINE_MAX_BYTES) skip_start(d);
}

/* The input ended: a line being skipped ends with it. */
static void at_eof(nd_t *d) {
  d->eof = 1;
  if (d->skipping) skip_done(d);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out) {
  nd_t *d = h->data;
  (void)suggested;
  if (buf_reserve(d, 65536)) {
    out->base = NULL;
    out->len = 0;
    return;
  }
  out->base = d->buf + d->len;
  out->len = d->cap - d->len - 1;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  nd_t *d = s->data;
  (void)b;
  if (n > 0) {
    size_t from = d->len;
    d->len += (size_t)n;
    took(d, from);
    /* pause once whole lines wait to be claimed; a line still arriving is read on
     * (it ends, or is skipped at LINE_MAX_BYTES), so it never stalls the input */
    if (d->len - d->pos > PIPE_HIGH && d->tail > d->pos) {
      uv_read_stop(s);
      d->reading = 0;
    }
  } else if (n < 0) {
    if (n != UV_EOF) {
      log_at(LOG_ERROR, "reading NDJSON input failed", KS("error", uv_strerror((int)n)));
      d->read_error = 1;
    }
    at_eof(d);
    uv_read_stop(s);
    d->reading = 0;
  }
  if (n != 0 && d->base.opts.wake) d->base.opts.wake(d->base.opts.wake_arg);
}

/* Makes at least one complete line (or the final unterminated one) available.
 * Returns 1 when a line is there, 0 when we must wait for more input. */
static int fill(nd_t *d) {
  for (;;) {
    if (d->tail > d->pos) return 1;
    if (d->eof) return d->len > d->pos;
    if (d->is_pipe) {
      if (!d->reading) {
        d->reading = 1;
        uv_read_start((uv_stream_t *)&d->pipe, on_alloc, on_read);
      }
      return 0;
    }
    if (buf_reserve(d, READ_CHUNK)) return 0;
    ssize_t n = read(d->fd, d->buf + d->len, d->cap - d->len - 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n < 0) log_at(LOG_ERROR, "reading NDJSON input failed", KS("error", strerror(errno)));
      d->read_error = n < 0;
      at_eof(d);
    } else {
      size_t from = d->len;
      d->len += (size_t)n;
      took(d, from);
    }
  }
}

/* An event with its node_t at the end of the block, aligned. */
static store_event_t *new_event(nd_t *d, int64_t id, const char *topic, size_t topic_len,
                                const char *key, size_t key_len, const char *payload,
                                size_t payload_len, const char *headers, size_t headers_len) {
  store_event_t *ev = store_event_new(id, topic, topic_len, key, key_len, payload, payload_len,
                                      headers, headers_len, sizeof(node_t) + 8);
  if (!ev) return NULL;
  ev->created_at = d->now_ms; /* read once per claim */
  uintptr_t p = (uintptr_t)ev + sizeof *ev + topic_len + 1 + payload_len + 1 +
                (key ? key_len + 1 : 0) + (headers ? headers_len + 1 : 0);
  ev->priv = (void *)((p + 7) & ~(uintptr_t)7);
  node(ev)->available_at = 0;
  node(ev)->next = NULL;
  if (id > d->last_id) d->last_id = id;
  return ev;
}

/* Next parsed event from the input, or NULL when none is at hand. */
static store_event_t *next_line(nd_t *d) {
  while (fill(d)) {
    char *start = d->buf + d->pos;
    char *nl = memchr(start, '\n', d->len - d->pos);
    size_t n = nl ? (size_t)(nl - start) : d->len - d->pos;
    d->pos += n + (nl ? 1 : 0);
    d->line++;
    if (n && start[n - 1] == '\r') n--;
    if (!nl) d->buf[d->len] = 0; /* the slot after the final line */
    ndjson_rec_t r;
    const char *err = NULL;
    int rc = ndjson_parse(start, n, &r, &err);
    if (rc == -ENODATA) continue;
    if (rc) {
      d->bad_lines++;
      log_at(LOG_WARN, "bad NDJSON line skipped", KI("line", d->line), KS("error", err));
      continue;
    }
    store_event_t *ev = new_event(d, r.has_id ? r.id : d->line, r.topic, r.topic_len, r.key,
                                  r.key_len, r.payload, r.payload_len, r.headers, r.headers_len);
    if (!ev) return NULL;
    ev->payload_escaped = r.payload_escaped;
    return ev;
  }
  return NULL;
}

/* ------------------------------------------------------------------ ops */

static int nd_claim(store_t *s, int max, store_event_t **out, int *n) {
  nd_t *d = (nd_t *)s;
  int k = 0;
  int64_t now = d->now_ms = store_now_ms();
  while (k < max && d->nheap && at(d, 0) <= now) out[k++] = heap_pop(d);
  while (k < max && d->rhead) {
    store_event_t *ev = d->rhead;
    d->rhead = node(ev)->next;
    if (!d->rhead) d->rtail = NULL;
    out[k++] = ev;
  }
  while (k < max) {
    store_event_t *ev = next_line(d);
    if (!ev) break;
    if (ev->key && s->opts.ordering_key && key_take(d, ev)) continue;
    out[k++] = ev;
  }
  if (d->nheap) arm_retry(d);
  d->out += k;
  *n = k;
  return 0;
}

static void settle(nd_t *d, store_event_t *ev) {
  d->out--;
  if (ev->key && d->base.opts.ordering_key) key_done(d, ev->key);
  store_event_free(ev);
}

static int hold(nd_t *d, store_event_t *ev, int64_t available_at);

/* New events join the run: each gets the next id after every id seen so far and
 * after NEW_ID_BASE, so no line read later has it (the input is read as claims
 * go), waits for its available_at, and for its key like any other event. */
static void adopt(nd_t *d, store_event_t *list) {
  for (store_event_t *f = list; f; f = f->next) {
    d->now_ms = store_now_ms();
    int64_t id = (d->last_id > NEW_ID_BASE ? d->last_id : NEW_ID_BASE) + 1;
    store_event_t *ev =
        new_event(d, id, f->topic, strlen(f->topic), f->key, f->key ? strlen(f->key) : 0,
                  f->payload, f->payload_len, f->headers, f->headers ? strlen(f->headers) : 0);
    if (!ev) {
      log_at(LOG_ERROR, "out of memory: new event dropped", KS("topic", f->topic));
      continue;
    }
    node(ev)->available_at = f->available_at;
    if (ev->key && d->base.opts.ordering_key && key_take(d, ev)) continue;
    if (f->available_at > d->now_ms) {
      if (hold(d, ev, f->available_at) == 0) continue;
      log_at(LOG_ERROR, "out of memory: new event dropped", KS("topic", f->topic));
      if (ev->key && d->base.opts.ordering_key) key_done(d, ev->key);
      store_event_free(ev);
      continue;
    }
    ready_push(d, ev, 0);
  }
  store_event_list_free(list);
  /* a wake-up from the loop (never from inside a store call); claims re-arm the retry timer */
  if (!d->closing) uv_timer_start(&d->timer, on_retry_timer, 0, 0);
}

static void nd_ack(store_t *s, store_event_t *ev) {
  store_event_t *follow = ev->follow;
  ev->follow = NULL;
  settle((nd_t *)s, ev);
  if (follow) adopt((nd_t *)s, follow);
}

static void nd_push(store_t *s, store_event_t *list) { adopt((nd_t *)s, list); }

static void nd_dead(store_t *s, store_event_t *ev, int ran, const char *err) {
  (void)ran;
  (void)err;
  settle((nd_t *)s, ev);
}

/* Puts `ev` in the retry heap until `available_at`. Returns 0 or -ENOMEM. */
static int hold(nd_t *d, store_event_t *ev, int64_t available_at) {
  node(ev)->available_at = available_at;
  if (heap_push(d, ev)) return -ENOMEM;
  arm_retry(d);
  return 0;
}

/* Holds `ev` in the retry heap until `available_at`. */
static void hold_until(nd_t *d, store_event_t *ev, int64_t available_at) {
  d->out--;
  if (hold(d, ev, available_at)) {
    log_at(LOG_ERROR, "out of memory: retry dropped", KI("id", ev->id));
    settle(d, ev);
    d->out++;
  }
}

/* Only an ack writes follow-ups: an event kept for later loses them. */
static void drop_follow(store_event_t *ev) {
  store_event_list_free(ev->follow);
  ev->follow = NULL;
}

static void nd_fail(store_t *s, store_event_t *ev, int64_t available_at, const char *err) {
  (void)err;
  drop_follow(ev);
  ev->attempts++;
  hold_until((nd_t *)s, ev, available_at);
}

static void nd_defer(store_t *s, store_event_t *ev, int64_t available_at) {
  drop_follow(ev);
  hold_until((nd_t *)s, ev, available_at);
}

static void nd_release(store_t *s, store_event_t *ev) {
  nd_t *d = (nd_t *)s;
  d->out--;
  drop_follow(ev);
  ready_push(d, ev, 1);
}

static void nd_settle(store_t *s, store_event_t *ev, int kind, int64_t arg, const char *err) {
  switch (kind) {
  case STORE_ACK: nd_ack(s, ev); break;
  case STORE_FAIL: nd_fail(s, ev, arg, err); break;
  case STORE_DEAD: nd_dead(s, ev, (int)arg, err); break;
  case STORE_DEFER: nd_defer(s, ev, arg); break;
  default: nd_release(s, ev); break;
  }
}

static int nd_flush(store_t *s) {
  (void)s;
  return 0;
}

static int nd_exhausted(store_t *s) {
  nd_t *d = (nd_t *)s;
  if (!d->eof && !d->is_pipe && d->pos >= d->len) fill(d); /* learn of the end of a file */
  int done = d->eof && d->pos >= d->len && !d->rhead && !d->nheap && d->out == 0 && d->held == 0;
  return done && d->read_error ? -1 : done;
}

static int nd_counts(store_t *s, store_counts_t *c) {
  nd_t *d = (nd_t *)s;
  memset(c, 0, sizeof *c);
  c->pending = (int64_t)d->nheap + d->held;
  c->processing = d->out;
  return 0;
}

static void on_closed(uv_handle_t *h) {
  nd_t *d = h->data;
  if (--d->pending_closes) return;
  void (*cb)(void *) = d->close_cb;
  void *arg = d->close_arg;
  while (d->rhead) {
    store_event_t *ev = d->rhead;
    d->rhead = node(ev)->next;
    store_event_free(ev);
  }
  while (d->nheap) store_event_free(heap_pop(d));
  for (size_t i = 0; i < d->nbuckets; i++) {
    for (keystate_t *k = d->keys[i], *next; k; k = next) {
      next = k->next;
      while (k->head) {
        store_event_t *ev = k->head;
        k->head = node(ev)->next;
        store_event_free(ev);
      }
      free(k);
    }
  }
  free(d->keys);
  free(d->heap);
  free(d->buf);
  if (d->fd > 0) close(d->fd);
  free(d);
  if (cb) cb(arg);
}

static void nd_close(store_t *s, void (*cb)(void *), void *arg) {
  nd_t *d = (nd_t *)s;
  d->closing = 1;
  d->close_cb = cb;
  d->close_arg = arg;
  d->pending_closes = 1;
  uv_close((uv_handle_t *)&d->timer, on_closed);
  if (d->is_pipe) {
    d->pending_closes++;
    uv_close((uv_handle_t *)&d->pipe, on_closed);
  }
}

static const store_ops_t ops = {
    .name = "ndjson",
    .claim = nd_claim,
    .settle = nd_settle,
    .push = nd_push,
    .flush = nd_flush,
    .exhausted = nd_exhausted,
    .counts = nd_counts,
    .close = nd_close,
};

int store_ndjson_open(uv_loop_t *loop, const char *path, const store_opts_t *opts, store_t **out,
                      char *errbuf, size_t errlen) {
  nd_t *d = calloc(1, sizeof *d);
  if (!d) return -ENOMEM;
  d->base.ops = &ops;
  d->base.loop = loop;
  d->base.opts = *opts;
  d->base.want_all = d->base.claim_all = 1;
  d->fd = strcmp(path, "-") == 0 ? 0 : open(path, O_RDONLY | O_CLOEXEC);
  if (d->fd < 0) {
    snprintf(errbuf, errlen, "--db ndjson:%s: %s", path, strerror(errno));
    free(d);
    return -errno;
  }
  struct stat st;
  if (fstat(d->fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    snprintf(errbuf, errlen, "--db ndjson:%s: is a directory, not an NDJSON file", path);
    close(d->fd);
    free(d);
    return -EISDIR;
  }
  uv_handle_type t = uv_guess_handle(d->fd);
  if (t == UV_NAMED_PIPE || t == UV_TTY || t == UV_TCP) {
    d->is_pipe = 1;
    uv_pipe_init(loop, &d->pipe, 0);
    d->pipe.data = d;
    uv_pipe_open(&d->pipe, d->fd); /* the pipe owns the descriptor now */
    d->fd = -1;
  }
  uv_timer_init(loop, &d->timer);
  d->timer.data = d;
  *out = &d->base;
  return 0;
}
